//! Neutralising spreadsheet formulas in CSV text cells (CSV injection).
//!
//! Learner ids, phases, lessons and URLs come from uploaded data and end up in
//! `report.csv`, `matched.csv` and `analysis.csv`, which people open in
//! spreadsheets. A cell such as `=HYPERLINK(…)` or `@SUM(1+1)*cmd|' /C calc'!A0`
//! is a formula there. [`csv_safe`] defuses such cells the way OWASP
//! recommends; the `csv` crate's quoting handles embedded separators, quotes
//! and line breaks.

use std::borrow::Cow;

/// Characters that make a spreadsheet read a cell as a formula (or, for tab
/// and carriage return, can hide one after leading whitespace).
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// True when `cell` begins with one of [`FORMULA_TRIGGERS`].
pub fn is_formula_like(cell: &str) -> bool {
    // Every trigger is ASCII, so the first byte decides (a byte test, not a
    // char-set search: this runs for every text cell of every output row).
    matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// A text cell safe to open in a spreadsheet: a cell beginning with `=`, `+`,
/// `-`, `@`, tab or carriage return gets a single quote `'` in front (the
/// spreadsheet shows it as text); any other cell is returned unchanged.
///
/// Apply it to *text* columns only (ids, phases, URLs, messages), never to
/// numeric columns: a negative number such as `-12.5` must stay a number.
///
/// There is deliberately no setting to turn this off: the CSV files are meant
/// for people and spreadsheets, and the JSON outputs (`report.json`,
/// `rejects.jsonl`, `summary.json`) are the raw, machine-readable channel
/// that keeps every value exactly as it arrived. A switch would only be a way
/// to ship a file that runs formulas on the reader's machine.
pub fn csv_safe(cell: &str) -> Cow<'_, str> {
    if is_formula_like(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_test_is_the_trigger_list() {
        for c in (0u32..0x250).filter_map(char::from_u32) {
            let cell = format!("{c}x");
            assert_eq!(
                is_formula_like(&cell),
                FORMULA_TRIGGERS.contains(&c),
                "{c:?}"
            );
        }
        assert!(!is_formula_like(""));
    }

    #[test]
    fn every_trigger_is_prefixed_with_a_quote() {
        for (raw, safe) in [
            ("=1+2", "'=1+2"),
            ("+1", "'+1"),
            ("-1+1", "'-1+1"),
            (
                "@SUM(1+1)*cmd|' /C calc'!A0",
                "'@SUM(1+1)*cmd|' /C calc'!A0",
            ),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
        ] {
            assert_eq!(csv_safe(raw), safe, "{raw:?}");
            assert!(is_formula_like(raw));
        }
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for raw in ["", "learner-42", "phase 1", "a=b", " =1", "'=1", "s3://b/k"] {
            assert!(
                matches!(csv_safe(raw), Cow::Borrowed(s) if s == raw),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn quoting_survives_a_csv_round_trip() {
        let mut w = csv::Writer::from_writer(Vec::new());
        let cell = csv_safe("=1,\"2\"\n3");
        w.write_record([cell.as_ref(), "-12.5"]).unwrap();
        let bytes = w.into_inner().unwrap();
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!(&rec[0], "'=1,\"2\"\n3");
        assert_eq!(&rec[1], "-12.5");
    }
}
