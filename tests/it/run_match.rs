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

/// The response ids of a `cleaned.jsonl`, first occurrences only, in order.
fn first_ids(cleaned: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for line in cleaned.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)?;
        let id = v["response_id"].as_str().unwrap_or_default().to_string();
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// With `--stop-after clean`, a gzip or JSON-array log is cut into segments
/// that other threads clean (run_segments.rs). Cut into dozens of 2 KiB
/// segments, it gives what one segment gives: the same counts, the same
/// rejects (line numbers and offsets of the whole file), and the same
/// cleaned records in the same order (a repeat that straddles a cut is left
/// to the match, as across the byte ranges of a plain log).
#[test]
fn gzip_and_array_logs_cut_into_segments_clean_like_one_piece() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = gen_data(&dir.path().join("data"), 12, 20, 21)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &std::fs::read(&data.activity)?)?;
    let gz_log = dir.path().join("activity.jsonl.gz");
    std::fs::write(&gz_log, gz.finish()?)?;
    // The same learners as one gzip-compressed JSON array.
    let array_dir = dir.path().join("array");
    let o = std::process::Command::new(crate::support::fleet::bin_dir().join("engage"))
        .args([
            "gen-data",
            "--learners",
            "12",
            "--responses",
            "20",
            "--seed",
            "21",
        ])
        .args([
            "--bad-fraction",
            "0.05",
            "--format",
            "array",
            "--gzip",
            "--out",
        ])
        .arg(&array_dir)
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "gen-data: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for log in [gz_log, array_dir.join("activity.json.gz")] {
        let d = Dataset {
            activity: log.clone(),
            sessions: data.sessions.clone(),
            s3_root: data.s3_root.clone(),
        };
        let name = log.display().to_string();
        let one = dir.path().join("one");
        let cut = dir.path().join("cut");
        let a = run(&d, &one, &["--stop-after", "clean", "--force"])?;
        let b = run(
            &d,
            &cut,
            &[
                "--stop-after",
                "clean",
                "--force",
                "--segment-bytes",
                "2048",
            ],
        )?;
        for key in ["read", "non_english", "deselected", "rejected"] {
            assert_eq!(a["activity"][key], b["activity"][key], "{key}: {name}");
        }
        let kept = |s: &serde_json::Value| {
            s["activity"]["kept"].as_u64().unwrap_or(0)
                + s["activity"]["duplicates"].as_u64().unwrap_or(0)
        };
        assert_eq!(kept(&a), kept(&b), "kept + duplicates: {name}");
        assert!(
            std::fs::read(one.join("rejects.jsonl"))? == std::fs::read(cut.join("rejects.jsonl"))?,
            "rejects.jsonl differs: {name}"
        );
        let ids = first_ids(&std::fs::read(one.join("cleaned.jsonl"))?)?;
        assert!(ids.len() > 100, "{name}: {} records", ids.len());
        assert_eq!(
            ids,
            first_ids(&std::fs::read(cut.join("cleaned.jsonl"))?)?,
            "{name}"
        );
    }
    Ok(())
}
