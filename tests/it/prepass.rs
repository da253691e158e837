//! The clean pre-pass: a gzip or JSON-array activity log is cut into
//! segments that several clean workers take, and the batch's outputs are
//! still byte for byte those of `engage run` on the same file (which reads
//! it whole), also when the ledger is lost after the cut.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fleet::{
    Backend, Dataset, Fleet, PrivateRedis, assert_same_outputs, engage_run_with, poll,
    stage_progress,
};

/// The dataset's log gzip-compressed, next to it.
fn gzip_log(data: &Dataset) -> anyhow::Result<PathBuf> {
    let path = data.activity.with_extension("jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&path)?,
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(&data.activity)?)?;
    enc.finish()?;
    Ok(path)
}

/// The dataset's log as one JSON array (each line an element), next to it.
fn array_log(data: &Dataset) -> anyhow::Result<PathBuf> {
    let path = data.activity.with_extension("json");
    let text = std::fs::read(&data.activity)?;
    let elements: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .collect();
    let mut out = b"[\n".to_vec();
    out.extend(elements.join(&b",\n"[..]));
    out.extend_from_slice(b"\n]\n");
    std::fs::write(&path, out)?;
    Ok(path)
}

/// `engage run` on `activity` with the dataset's sessions and audio.
fn reference(f: &Fleet, activity: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let data = Dataset {
        activity: activity.to_path_buf(),
        ..f.data.clone()
    };
    let out = f.dir.path().join(format!("reference-{name}"));
    engage_run_with(&data, 1, &out, &[])?;
    Ok(out)
}

/// Clean pieces done and expected, once the batch is complete.
fn clean_pieces(f: &Fleet, batch: &str) -> anyhow::Result<(u64, u64)> {
    let status = f.status(batch)?;
    stage_progress(&status, "clean").ok_or_else(|| anyhow::anyhow!("no clean line in {status}"))
}

#[test]
fn gzip_and_json_array_logs_are_cut_into_segments_and_match_engage_run() -> anyhow::Result<()> {
    let mut f = Fleet::new("prepass", Backend::Local, 12, 8)?;
    f.env
        .insert("ENGAGE_CLEAN_PIECE_BYTES".into(), "4096".into());
    f.start_all()?;
    f.start("clean")?;
    for (name, log) in [("gzip", gzip_log(&f.data)?), ("array", array_log(&f.data)?)] {
        let batch = f.enqueue_activity(&log)?;
        let out = f.wait_and_report(&batch, 120)?;
        let want = reference(&f, &log, name)?;
        assert_same_outputs(&want, &out);
        // Rejects keep the line numbers and offsets of the whole file.
        assert!(
            std::fs::read(want.join("rejects.jsonl"))? == std::fs::read(out.join("rejects.jsonl"))?,
            "{name}: rejects.jsonl differs"
        );
        let activity = |dir: &Path| -> anyhow::Result<serde_json::Value> {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("summary.json"))?)?;
            Ok(v["activity"].clone())
        };
        assert_eq!(activity(&want)?, activity(&out)?, "{name}: clean counters");
        // One pre-pass piece plus its segments: the log really was cut.
        let (done, pieces) = clean_pieces(&f, &batch)?;
        assert!(pieces >= 4, "{name}: the log was not cut: {pieces} pieces");
        assert_eq!(done, pieces, "{name}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_lost_after_the_cut_is_rebuilt_with_every_segment() -> anyhow::Result<()> {
    let redis = PrivateRedis::start(false)?;
    let mut f = Fleet::new("prepass-lost", Backend::Local, 12, 8)?;
    f.env.insert("ENGAGE_REDIS_URL".into(), redis.url());
    f.env
        .insert("ENGAGE_CLEAN_PIECE_BYTES".into(), "4096".into());
    let log = gzip_log(&f.data)?;
    f.start("clean")?;
    let batch = f.enqueue_activity(&log)?;
    // Every segment cleaned; their match jobs wait (no match worker yet).
    let (_, pieces) = poll(
        "the pre-pass and its segments",
        Duration::from_secs(60),
        || async {
            Ok(clean_pieces(&f, &batch)
                .ok()
                .filter(|(d, t)| *t >= 4 && d == t))
        },
    )
    .await?;
    assert!(redis.cli(&["flushall"])?.contains("OK"));
    for s in ["match", "download", "analyze", "aggregate"] {
        f.start(s)?;
    }
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&reference(&f, &log, "gzip")?, &out);
    assert_eq!(clean_pieces(&f, &batch)?, (pieces, pieces));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_pass_killed_mid_file_resumes_from_its_checkpoint() -> anyhow::Result<()> {
    let mut f = Fleet::new("prepass-kill", Backend::Local, 30, 10)?;
    // Many small segments: the pre-pass runs long enough to be killed in it.
    f.env
        .insert("ENGAGE_CLEAN_PIECE_BYTES".into(), "2048".into());
    f.env.insert("ENGAGE_PARTITIONS".into(), "2".into());
    let log = gzip_log(&f.data)?;
    f.start("clean")?;
    let batch = f.enqueue_activity(&log)?;
    let segments = f
        .dir
        .path()
        .join("store/batches")
        .join(&batch)
        .join("segments");
    let checkpoint = segments.join("f000-r0000.next.json");
    poll("a few segments stored", Duration::from_secs(60), || async {
        let c: Option<serde_json::Value> = std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(c.filter(|c| c["index"].as_u64() >= Some(3)))
    })
    .await?;
    f.signal("clean", "KILL");
    let done = f
        .dir
        .path()
        .join("store/batches")
        .join(&batch)
        .join("clean/f000-r0000/done.json");
    assert!(!done.exists(), "the pre-pass had finished before the kill");
    f.start_all()?;
    let out = f.wait_and_report(&batch, 180)?;
    assert_same_outputs(&reference(&f, &log, "gzip")?, &out);
    let clean_log = std::fs::read_to_string(f.dir.path().join("logs/clean-0.log"))?;
    assert!(
        clean_log.contains("pre-pass resumes from its checkpoint"),
        "the redelivered pre-pass started over: {clean_log}"
    );
    Ok(())
}
