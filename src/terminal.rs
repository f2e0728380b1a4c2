//! Text meant for a terminal. Names and paths come from users (layer and
//! model names in spec, suite and model files, file names), and a control
//! character printed raw is an instruction to the terminal: `\x1b[…`
//! recolours or rewrites what is shown, `\r` overwrites the line. Every
//! such string the CLI prints in a table, a report line or an error goes
//! through [`escape`] first. JSON output needs none of this: `serde_json`
//! escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1) written as Rust's
/// `escape_debug` writes it (`\u{1b}`, `\r`, `\n`, `\t`), and every
/// bidirectional formatting character (which reorders what follows it on
/// the line) as `\u{202e}`; the rest as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether [`escape`] rewrites `c`.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_and_bidi_characters_are_escaped_the_rest_kept() {
        assert_eq!(escape("resnet50_3x3 ×2 é"), "resnet50_3x3 ×2 é");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[31mb\rc\nd\te\0f\x7fg"), r"a\u{1b}[31mb\rc\nd\te\0f\u{7f}g");
        assert_eq!(escape("x\u{9b}y\u{202e}z\u{2066}"), r"x\u{9b}y\u{202e}z\u{2066}");
        // Quotes and backslashes are not control characters: kept.
        assert_eq!(escape(r#"a"b'c\d"#), r#"a"b'c\d"#);
    }
}
