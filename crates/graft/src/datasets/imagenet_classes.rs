//! The 1,000 ImageNet-1k class names (asset `imagenet-classes`), read from the JavaScript module
//! of the TensorFlow.js MobileNet package: an object literal `{0: 'tench, Tinca tinca', ...}`
//! whose values are single-quoted strings, long ones joined with `+`.

use std::path::Path;

use crate::{GraftError, Result};

/// How many classes ImageNet-1k has.
pub const COUNT: usize = 1000;

/// The class names of the `imagenet-classes` asset, in class-index order (fetched unless
/// `offline`).
pub fn load(offline: bool) -> Result<Vec<String>> {
    read(&crate::assets::ensure("imagenet-classes", offline)?)
}

/// Reads the class names from the JavaScript file at `path`; the keys must be 0, 1, ..., 999 in
/// order.
pub fn read(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let names = parse(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    if names.len() != COUNT {
        return Err(GraftError::Input(format!("{}: {} class names, expected {COUNT}", path.display(), names.len())));
    }
    Ok(names)
}

/// What the object literal follows in the module.
const ASSIGNMENT: &str = "IMAGENET_CLASSES = {";

/// The values of the object literal assigned to `IMAGENET_CLASSES` in `text`, checking that its
/// keys count up from 0.
fn parse(text: &str) -> Result<Vec<String>, String> {
    let start = text.find(ASSIGNMENT).ok_or("no `IMAGENET_CLASSES = {...}` object literal")?;
    let mut p = Parser { s: text.as_bytes(), pos: start + ASSIGNMENT.len() };
    let mut names = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            return Ok(names);
        }
        let key = p.number()?;
        if key != names.len() {
            return Err(format!("key {key} where {} was expected (byte {})", names.len(), p.pos));
        }
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let mut name = p.string()?;
        loop {
            p.skip_ws();
            if !p.eat(b'+') {
                break;
            }
            p.skip_ws();
            name.push_str(&p.string()?);
        }
        names.push(name);
        if !p.eat(b',') {
            p.skip_ws();
            p.expect(b'}')?;
            return Ok(names);
        }
    }
}

/// A cursor over the JavaScript text.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// Skips whitespace.
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `b` if it is next.
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.get(self.pos) == Some(&b);
        self.pos += usize::from(hit);
        hit
    }

    /// Consumes `b` or fails naming it.
    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", char::from(b), self.pos))
        }
    }

    /// A decimal key.
    fn number(&mut self) -> Result<usize, String> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("expected a class index at byte {start}"))
    }

    /// A single-quoted string with backslash escapes of quotes and backslashes.
    fn string(&mut self) -> Result<String, String> {
        let start = self.pos;
        self.expect(b'\'')?;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err(format!("string at byte {start} is not closed")),
                Some(b'\'') => break,
                Some(b'\\') => {
                    let escaped =
                        *self.s.get(self.pos + 1).ok_or_else(|| format!("string at byte {start} is not closed"))?;
                    out.push(escaped);
                    self.pos += 2;
                }
                Some(&b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        String::from_utf8(out).map_err(|_| format!("string at byte {start} is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn object_literals_with_joined_and_escaped_strings() {
        let js = "x({ a: 1 });\nexports.IMAGENET_CLASSES = {\n  0: 'tench, Tinca tinca',\n  1: 'devil\\'s ' +\n    'needle',\n  2: 'c'\n};";
        assert_eq!(parse(js).unwrap(), ["tench, Tinca tinca", "devil's needle", "c"]);
        let bad = |body: &str| parse(&format!("IMAGENET_CLASSES = {{{body}")).unwrap_err();
        assert!(bad("0: 'a', 2: 'b'}").contains("key 2 where 1"), "{}", bad("0: 'a', 2: 'b'}"));
        assert!(bad("0: 'a").contains("not closed"));
        assert!(bad("0: 'a' 1: 'b'}").contains("expected `}`"));
        assert!(parse("{0: 'a'}").unwrap_err().contains("no `IMAGENET_CLASSES"));
    }
}
