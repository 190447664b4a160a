//! PEFT-style target matching: which named projections an adapter attaches to.
//!
//! A pattern without wildcards matches a module name equal to it or ending in `.{pattern}`
//! (PEFT's suffix rule: `q_proj` matches `layers.3.self_attn.q_proj`); a pattern with `*`
//! matches the whole name with `*` standing for any run of characters (`layers.1*.mlp.*`).

/// Whether `name` is selected by `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains('*') {
        glob(pattern.as_bytes(), name.as_bytes())
    } else {
        name == pattern || name.ends_with(&format!(".{pattern}"))
    }
}

/// `*`-only glob over bytes (iterative, linear in practice).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The names among `names` selected by any of `patterns`, or an error that says how names look
/// when nothing matched.
pub fn select<'a>(patterns: &[String], names: &'a [String]) -> Result<Vec<&'a String>, String> {
    let chosen: Vec<&String> = names.iter().filter(|n| patterns.iter().any(|p| matches(p, n))).collect();
    if chosen.is_empty() {
        let example = names.first().map(String::as_str).unwrap_or("<none>");
        return Err(format!(
            "adapter.targets {patterns:?} matched 0 of {} linear layers; names look like `{example}`",
            names.len()
        ));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_and_glob_rules() {
        assert!(matches("q_proj", "layers.0.self_attn.q_proj"));
        assert!(!matches("proj", "layers.0.self_attn.q_proj"));
        assert!(matches("self_attn.q_proj", "layers.0.self_attn.q_proj"));
        assert!(matches("layers.1*.mlp.*", "layers.12.mlp.up_proj"));
        assert!(!matches("layers.1*.mlp.*", "layers.2.mlp.up_proj"));
        assert!(matches("*", "lm_head"));
    }

    #[test]
    fn empty_selection_explains_names() {
        let names = vec!["layers.0.self_attn.q_proj".to_string()];
        let err = select(&["qproj".into()], &names).unwrap_err();
        assert!(err.contains("matched 0 of 1") && err.contains("layers.0.self_attn.q_proj"), "{err}");
    }
}
