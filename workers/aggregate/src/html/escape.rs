//! HTML escaping of untrusted text (learner ids, phase names, failure details,
//! reject excerpts). Everything from the data goes through [`push`] or
//! [`text`], in element content and in attribute values alike, so a learner id
//! such as `<script>` or `"><img onerror=…>` renders as text.

use std::fmt::Write as _;

/// Appends `s` to `out` with `& < > " '` escaped and control characters other
/// than tab and newline replaced by U+FFFD (they are not allowed in HTML text).
pub(crate) fn push(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// `s` escaped, as a new string.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push(&mut out, s);
    out
}

/// `s` cut to at most `max` characters (an ellipsis marks the cut), escaped.
pub(crate) fn clipped(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => text(s),
        Some((i, _)) => {
            let mut out = text(&s[..i]);
            out.push('…');
            out
        }
    }
}

/// Appends formatted text that is known to be safe (numbers, fixed words).
pub(crate) fn raw(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        let s = text(r#"<script>alert(1)</script>"><img src=x onerror='a'>&"#);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('"') && !s.contains('\''));
        assert_eq!(text("a&b"), "a&amp;b");
        assert_eq!(text("x\u{0}y\u{7f}"), "x\u{FFFD}y\u{FFFD}");
    }

    #[test]
    fn clipping_counts_characters_and_escapes() {
        assert_eq!(clipped("<<<<", 2), "&lt;&lt;…");
        assert_eq!(clipped("äöü", 3), "äöü");
        assert_eq!(clipped("", 0), "");
    }
}
