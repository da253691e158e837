//! `engage run --stop-after match` streams the match (partitions spooled,
//! matched two at a time, sorted runs merged), while the full run holds every
//! record in memory: both must write the same `matched.csv` and the same
//! match counts, whatever the partition count, with repeats across files.

use std::path::Path;

use crate::support::fleet::{Dataset, engage_run_with, gen_data};

/// Runs `engage run` on the dataset's log given twice (every response
/// repeated in a second file: repeats across pieces), with extra arguments.
fn run(data: &Dataset, out: &Path, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    engage_run_with(data, 2, out, extra)?;
    Ok(serde_json::from_slice(&std::fs::read(
        out.join("summary.json"),
    )?)?)
}

#[test]
fn streamed_match_writes_the_full_runs_matched_csv_and_counts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = gen_data(&dir.path().join("data"), 12, 20, 14)?;
    let full_out = dir.path().join("full");
    let full = run(&data, &full_out, &[])?;
    let want = std::fs::read(full_out.join("matched.csv"))?;
    assert!(
        full["activity"]["duplicates"].as_u64().unwrap_or(0)
            >= full["activity"]["kept"].as_u64().unwrap_or(u64::MAX),
        "the second copy of the log is all repeats: {full}"
    );
    for partitions in [None, Some("1"), Some("3"), Some("64")] {
        let out = dir.path().join(format!("streamed-{partitions:?}"));
        let mut extra = vec!["--stop-after", "match"];
        if let Some(p) = partitions {
            extra.extend(["--partitions", p]);
        }
        let got = run(&data, &out, &extra)?;
        assert!(
            std::fs::read(out.join("matched.csv"))? == want,
            "matched.csv differs with --partitions {partitions:?}"
        );
        for key in [
            "activity",
            "sessions",
            "matched",
            "unmatched",
            "no_audio",
            "learners",
        ] {
            assert_eq!(
                got[key], full[key],
                "{key} with --partitions {partitions:?}"
            );
        }
        assert!(
            !out.join("work").exists(),
            "spool files are removed after the run"
        );
    }
    Ok(())
}

/// `--stop-after clean` streams the sessions too (for their counts, rejects
/// and milestone selection): the same session counts as the full run, and
/// nothing left in the work directory.
#[test]
fn stop_after_clean_counts_sessions_like_the_full_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = gen_data(&dir.path().join("data"), 12, 20, 14)?;
    let full = run(&data, &dir.path().join("full"), &[])?;
    let out = dir.path().join("clean");
    let got = run(&data, &out, &["--stop-after", "clean"])?;
    assert_eq!(got["sessions"], full["sessions"]);
    assert!(
        got["sessions"]["kept"].as_u64().unwrap_or(0) > 0,
        "sessions counted: {got}"
    );
    let cleaned = std::fs::read(out.join("cleaned.jsonl"))?;
    let lines: Vec<&[u8]> = cleaned.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(
        lines.len() as u64,
        got["activity"]["kept"].as_u64().unwrap_or(u64::MAX),
        "cleaned.jsonl holds the kept records"
    );
    // The log was given twice (repeats across files are left to the match):
    // each file's records in order, the first file's first.
    let (first, second) = lines.split_at(lines.len() / 2);
    assert!(
        !first.is_empty() && first == second,
        "cleaned.jsonl in input order"
    );
    assert!(!out.join("work").exists(), "spool files are removed");

    // A gzip log (inflated on its own thread) cleans to the same bytes.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &std::fs::read(&data.activity)?)?;
    let gz_data = Dataset {
        activity: dir.path().join("activity.jsonl.gz"),
        sessions: data.sessions.clone(),
        s3_root: data.s3_root.clone(),
    };
    std::fs::write(&gz_data.activity, gz.finish()?)?;
    let gz_out = dir.path().join("clean-gz");
    let from_gz = run(&gz_data, &gz_out, &["--stop-after", "clean"])?;
    assert_eq!(from_gz["activity"], got["activity"]);
    assert!(
        std::fs::read(gz_out.join("cleaned.jsonl"))? == cleaned,
        "cleaned.jsonl from the gzip log differs"
    );
    Ok(())
}
