//! The fast path of [`parse`](super::parse): a hand-written scanner for the
//! shape nearly every activity line has — one flat JSON object whose values
//! are strings without escapes, plain non-negative numbers, `true`, `false`
//! or `null`.
//!
//! It fills the same [`Fields`] the serde pass fills, and answers only when
//! it read the whole line as exactly that shape; anything else (escapes,
//! nested values, negative numbers, exponents, long significands, malformed
//! JSON, …) makes it give up, and the line takes the serde pass, which then
//! decides as before. So it changes speed, never results: wherever it
//! answers, its fields equal serde_json's (a property test in parse.rs
//! compares the two on mutated records).
//!
//! serde_json was about a third of clean's CPU time; this scanner reads a
//! typical 260-byte record several times faster, 8 bytes at a time inside
//! strings (the same word-at-a-time search serde_json uses for escapes).

use std::borrow::Cow;

use super::parse::{FIELD_COUNT, FIELDS, Fields, Val, lookup_key};

/// A value as the scanner found it: small and `Copy`, so keeping the best
/// spelling of a field costs a few bytes' store; turned into a [`Val`] once,
/// for the fields that were present.
#[derive(Debug, Clone, Copy)]
enum Lite {
    /// A string without escapes: its byte range in the line.
    Str(u32, u32),
    U64(u64),
    F64(f64),
    Bool(bool),
    Null,
}

/// Fills `fields` (which must be empty) from `text` if it is a flat object
/// the scanner reads completely; `None` otherwise, with `fields` untouched.
pub(super) fn read_flat<'a>(text: &'a str, fields: &mut Fields<'a>) -> Option<()> {
    let b = text.as_bytes();
    // Offsets are kept as u32; longer lines (beyond any sane limit) go to serde.
    if b.len() > u32::MAX as usize {
        return None;
    }
    // Per field, the best rank seen (NONE: absent) and its value. Values are
    // scanned straight into their slot: building them elsewhere and moving
    // them in stalled on store forwarding.
    const NONE: u8 = u8::MAX;
    let mut ranks = [NONE; FIELD_COUNT];
    let mut vals = [Lite::Null; FIELD_COUNT];
    let mut skipped = Lite::Null;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) != Some(&b'}') {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (key, after) = string(b, i + 1)?;
            i = skip_ws(b, after);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            // Lower rank wins; for the same key, the later occurrence wins
            // (as `Fields::put` decides).
            let into = match lookup_key(&text[key]) {
                Some((field, rank)) if rank <= ranks[field as usize] => {
                    ranks[field as usize] = rank;
                    &mut vals[field as usize]
                }
                _ => &mut skipped,
            };
            i = skip_ws(b, value(b, i, into)?);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => break,
                _ => return None,
            }
        }
    }
    // Only whitespace may follow the object.
    if skip_ws(b, i + 1) != b.len() {
        return None;
    }
    for ((f, rank), lite) in FIELDS.into_iter().zip(ranks).zip(vals) {
        if rank != NONE {
            let val = match lite {
                Lite::Str(s, e) => Val::Str(Cow::Borrowed(&text[s as usize..e as usize])),
                Lite::U64(u) => Val::U64(u),
                Lite::F64(x) => Val::F64(x),
                Lite::Bool(v) => Val::Bool(v),
                Lite::Null => Val::Null,
            };
            fields.put(f, rank, val);
        }
    }
    Some(())
}

/// JSON whitespace: space, tab, line feed, carriage return.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Scans one value starting at `i` into `out`; the index after it.
fn value(b: &[u8], i: usize, out: &mut Lite) -> Option<usize> {
    let (v, after) = match *b.get(i)? {
        b'"' => {
            let (r, after) = string(b, i + 1)?;
            (Lite::Str(r.start as u32, r.end as u32), after)
        }
        b'0'..=b'9' => number(b, i)?,
        b't' => literal(b, i, b"true", Lite::Bool(true))?,
        b'f' => literal(b, i, b"false", Lite::Bool(false))?,
        b'n' => literal(b, i, b"null", Lite::Null)?,
        // Objects, arrays, negative numbers and anything malformed.
        _ => return None,
    };
    *out = v;
    Some(after)
}

fn literal(b: &[u8], i: usize, word: &[u8], v: Lite) -> Option<(Lite, usize)> {
    (b.get(i..i + word.len())? == word).then_some((v, i + word.len()))
}

/// Exact powers of ten: `sig / 10^k` with `sig < 2^53` and `k <= 22` is one
/// correctly rounded IEEE division, which is what serde_json (with
/// `float_roundtrip`) and `str::parse` give for the same text.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `0|[1-9][0-9]*`, optionally `.[0-9]+`; no sign, no exponent. Integers are
/// `U64` (at most 19 digits, so they fit), decimals `F64` when exact as
/// above. serde_json gives the same variants and values for these texts.
fn number(b: &[u8], start: usize) -> Option<(Lite, usize)> {
    let digits_from = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let int_end = digits_from(start);
    // A leading zero must stand alone ("01" is not JSON).
    if b[start] == b'0' && int_end > start + 1 {
        return None;
    }
    let (frac_start, end) = if b.get(int_end) == Some(&b'.') {
        let e = digits_from(int_end + 1);
        if e == int_end + 1 {
            return None;
        }
        (Some(int_end + 1), e)
    } else {
        (None, int_end)
    };
    // Exponents and anything glued to the number go to serde.
    if !matches!(
        b.get(end),
        None | Some(b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
    ) {
        return None;
    }
    let frac_len = frac_start.map_or(0, |f| end - f);
    if (int_end - start) + frac_len > 19 {
        return None;
    }
    let mut sig: u64 = 0;
    for &c in b[start..int_end]
        .iter()
        .chain(frac_start.map_or(&[][..], |f| &b[f..end]))
    {
        sig = sig * 10 + u64::from(c - b'0');
    }
    match frac_start {
        None => Some((Lite::U64(sig), end)),
        Some(_) if sig < (1 << 53) && frac_len < POW10.len() => {
            Some((Lite::F64(sig as f64 / POW10[frac_len]), end))
        }
        Some(_) => None,
    }
}

/// The body of a string whose opening quote is just before `start`: its
/// byte range and the index after the closing quote. `None` if it holds an
/// escape or a control character (serde decides those) or never closes.
fn string(b: &[u8], start: usize) -> Option<(std::ops::Range<usize>, usize)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bytes equal to zero / less than 0x20 set their high bit here; borrows
    // may also mark bytes *after* the first hit, never before it, so the
    // lowest mark is exact.
    let special = |w: u64| {
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        (quote.wrapping_sub(ONES) & !quote
            | slash.wrapping_sub(ONES) & !slash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH
    };
    let mut i = start;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let m = special(w);
        if m != 0 {
            i += (m.trailing_zeros() / 8) as usize;
            return close(b, start, i);
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return close(b, start, i);
        }
        i += 1;
    }
    None
}

/// The first special byte of a string is at `i`: only a quote closes it.
fn close(b: &[u8], start: usize, i: usize) -> Option<(std::ops::Range<usize>, usize)> {
    (b[i] == b'"').then_some((start..i, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> Option<Fields<'_>> {
        let mut f = Fields::default();
        read_flat(text, &mut f).map(|()| f)
    }

    #[test]
    fn reads_the_common_shape() {
        assert!(flat(r#" {"user_id":"u1", "accuracy": 87.5,"n":12,"t":true,"x":null} "#).is_some());
        assert!(flat("{}").is_some());
        assert!(flat("{ }\r\n").is_some());
    }

    #[test]
    fn gives_up_on_what_serde_must_decide() {
        for text in [
            r#"{"a":"x\"y"}"#,
            r#"{"a":"tab	here"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":-1}"#,
            r#"{"a":1e3}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":12345678901234567890}"#,
            r#"{"a":0.12345678901234567}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"open"#,
            r#"[1]"#,
            r#""s""#,
            "",
        ] {
            assert!(flat(text).is_none(), "{text}");
        }
    }

    #[test]
    fn the_first_special_byte_is_found_in_any_position() {
        for n in 0..20 {
            let body = "a".repeat(n);
            assert!(flat(&format!(r#"{{"k":"{body}"}}"#)).is_some(), "{n}");
            assert!(flat(&format!(r#"{{"k":"{body}\n"}}"#)).is_none(), "{n}");
            assert!(flat(&format!("{{\"k\":\"{body}\u{1}\"}}")).is_none(), "{n}");
            assert!(flat(&format!(r#"{{"k":"{body}\"x"}}"#)).is_none(), "{n}");
        }
    }
}
