//! Running an external package client and turning its failures into errors that quote what it
//! said and what to do.

use std::path::Path;
use std::process::Command;

use super::AssetError;
use crate::Result;

/// How many trailing lines of a failing tool's output an error quotes.
const QUOTED_LINES: usize = 12;

/// Runs `cmd` to completion with its output captured; a spawn failure or a non-zero exit
/// becomes [`AssetError::Download`] carrying `label`, the tool's last lines and `hint`.
pub(crate) fn run_tool(asset: &str, mut cmd: Command, label: &str, hint: &str) -> Result<()> {
    let fail = |detail: String| AssetError::Download {
        name: asset.to_string(),
        command: label.to_string(),
        detail,
        hint: hint.to_string(),
    };
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let program = cmd.get_program().to_string_lossy().into_owned();
            return Err(fail(format!("`{program}` was not found on PATH")).into());
        }
        Err(e) => return Err(fail(format!("could not start: {e}")).into()),
    };
    if output.status.success() {
        return Ok(());
    }
    // stdout first: the tools print their error lines last, on stderr.
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(QUOTED_LINES)..].join("\n  ");
    Err(fail(format!("exited with {}:\n  {tail}", output.status)).into())
}

/// The file name of a program path, for messages (`/usr/bin/python3` -> `python3`).
pub(crate) fn tool_name(program: &str) -> String {
    Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| program.to_string())
}
