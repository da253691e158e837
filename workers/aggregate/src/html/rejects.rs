//! A few examples of each rejection reason, picked from `rejects.jsonl` lines
//! so that the choice does not depend on the order the lines arrive in (the
//! fleet concatenates its pieces' rejects, `engage run` writes them while
//! cleaning in parallel): per source and reason, the examples with the
//! smallest position. Line numbers are left out, as in a byte-range piece
//! they count from the piece's start; byte offsets and session rows are
//! absolute.

use std::collections::BTreeMap;

/// Examples kept per (source, reason).
pub const EXAMPLES_PER_REASON: usize = 3;

/// One rejected record, as shown in the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RejectExample {
    /// Byte offset (activity) or 0-based row (sessions).
    pub position: u64,
    /// The reason's detail.
    pub detail: String,
    /// The start of the rejected line (activity only).
    pub excerpt: String,
}

/// Examples of rejected records by `(source, reason)`, `source` being
/// `activity` or `sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectExamples {
    by_reason: BTreeMap<(String, String), Vec<RejectExample>>,
}

impl RejectExamples {
    /// Collects examples from the bytes of a `rejects.jsonl` file.
    pub fn from_jsonl(bytes: &[u8]) -> Self {
        let mut ex = Self::default();
        for line in bytes.split(|b| *b == b'\n') {
            ex.add_line(line);
        }
        ex
    }

    /// Collects examples from a `rejects.jsonl` stream, one line at a time.
    pub fn from_reader(mut r: impl std::io::BufRead) -> std::io::Result<Self> {
        let mut ex = Self::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(ex);
            }
            ex.add_line(line.strip_suffix(b"\n").unwrap_or(&line));
        }
    }

    /// Adds one `rejects.jsonl` line; blank or unparseable lines are ignored.
    pub fn add_line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        if !v.is_object() {
            return;
        }
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let (source, position) = if v["source"].as_str() == Some("sessions") {
            ("sessions", v["row"].as_u64().unwrap_or(0))
        } else {
            ("activity", v["offset"].as_u64().unwrap_or(0))
        };
        let example = RejectExample {
            position,
            detail: s("detail"),
            excerpt: s("excerpt"),
        };
        let list = self
            .by_reason
            .entry((source.to_string(), s("reason")))
            .or_default();
        let at = list.partition_point(|e| e <= &example);
        if at < EXAMPLES_PER_REASON {
            list.insert(at, example);
            list.truncate(EXAMPLES_PER_REASON);
        }
    }

    /// The examples of one source and reason, smallest position first.
    pub fn get(&self, source: &str, reason: &str) -> &[RejectExample] {
        self.by_reason
            .get(&(source.to_string(), reason.to_string()))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: [&str; 5] = [
        r#"{"line":9,"offset":900,"reason":"invalid_json","detail":"d9","excerpt":"x9"}"#,
        r#"{"line":1,"offset":100,"reason":"invalid_json","detail":"d1","excerpt":"x1"}"#,
        r#"{"line":5,"offset":500,"reason":"invalid_json","detail":"d5","excerpt":"x5"}"#,
        r#"{"line":3,"offset":300,"reason":"invalid_json","detail":"d3","excerpt":"x3"}"#,
        r#"{"source":"sessions","row":4,"reason":"bad_timestamp","detail":"t"}"#,
    ];

    #[test]
    fn the_choice_does_not_depend_on_order() {
        let forward = RejectExamples::from_jsonl(LINES.join("\n").as_bytes());
        let mut rev = LINES;
        rev.reverse();
        let backward = RejectExamples::from_jsonl(format!("\n{}\n\n", rev.join("\n")).as_bytes());
        assert_eq!(forward, backward);
        let streamed = RejectExamples::from_reader(LINES.join("\n").as_bytes()).expect("read");
        assert_eq!(forward, streamed);
        let got: Vec<u64> = forward
            .get("activity", "invalid_json")
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(got, [100, 300, 500]);
        assert_eq!(forward.get("sessions", "bad_timestamp")[0].position, 4);
        assert!(forward.get("activity", "nope").is_empty());
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let ex = RejectExamples::from_jsonl(b"not json\n\xff\n[1]\n");
        assert!(ex.get("activity", "").is_empty());
    }
}
