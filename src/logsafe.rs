//! Text a client or an upstream chose, made safe to put in a log line:
//! control characters (C0, DEL and C1, which a terminal may act on) and
//! the invisible bidirectional overrides are written as `\u{..}` escapes,
//! so a request path can neither forge a line nor garble the terminal
//! that shows it.

use std::fmt;

/// Displays its text with the dangerous characters escaped.
pub struct Clean<'a>(pub &'a str);

fn dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(dangerous) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            write!(f, "\\u{{{:x}}}", c as u32)?;
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::Clean;

    #[test]
    fn control_characters_are_escaped() {
        for (raw, logged) in [
            ("/v2/golden/app/manifests/v1", "/v2/golden/app/manifests/v1"),
            ("/v2/a\nfake line", "/v2/a\\u{a}fake line"),
            ("/v2/\u{1b}[31mred", "/v2/\\u{1b}[31mred"),
            ("/v2/\u{9b}31m", "/v2/\\u{9b}31m"),
            ("/v2/\u{85}\u{7f}\0", "/v2/\\u{85}\\u{7f}\\u{0}"),
            ("/v2/\u{202e}gnp.exe", "/v2/\\u{202e}gnp.exe"),
            ("/v2/é✓", "/v2/é✓"),
        ] {
            assert_eq!(Clean(raw).to_string(), logged);
        }
    }
}
