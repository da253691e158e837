//! The batch control verbs against the real broker, Redis and worker
//! binaries, driven through the real `engage` CLI: `pause` and `resume
//! BATCH`, `cancel`, and `retry [--reason]`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::support::fleet::{
    Backend, Fleet, STAGES, amqp, assert_same_outputs, poll, queue_len, stage_progress,
    status_says_complete,
};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `engage ARGS` and fails unless it exits 0; returns its stdout.
fn ok(f: &Fleet, args: &[&str]) -> anyhow::Result<String> {
    let o = f.engage(args)?;
    if !o.status.success() {
        bail!("engage {args:?} failed: {}{}", stdout(&o), stderr(&o));
    }
    Ok(stdout(&o))
}

/// Jobs of the namespace parked on the wait ladder.
async fn parked(ns: &str) -> anyhow::Result<u32> {
    let conn = amqp().await?;
    let mut n = 0;
    for r in 0..engage_runtime::broker::WAIT_RUNGS {
        n += queue_len(&conn, &format!("{ns}.wait.{r}")).await?;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(n)
}

/// Messages ready in every queue of the namespace (work, retry, ladder).
async fn queued(ns: &str) -> anyhow::Result<u32> {
    let conn = amqp().await?;
    let mut n = parked(ns).await?;
    for s in STAGES {
        n += queue_len(&conn, &format!("{ns}.{s}")).await?;
        for t in 0..3 {
            n += queue_len(&conn, &format!("{ns}.{s}.retry.{t}")).await?;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(n)
}

/// Waits until the batch's items are all registered (clean and match done)
/// with none downloaded: the run-up of a test whose download and later
/// workers start afterwards. Returns the number of items.
async fn wait_registered(f: &Fleet, batch: &str) -> anyhow::Result<u64> {
    poll(
        "the batch to register its items",
        Duration::from_secs(90),
        || async {
            let text = f.status(batch)?;
            let clean = stage_progress(&text, "clean");
            let matched = stage_progress(&text, "match");
            let items = stage_progress(&text, "download").map(|(_, t)| t);
            Ok(match (clean, matched, items) {
                (Some((c, ct)), Some((m, mt)), Some(n))
                    if c == ct && m == mt && mt > 0 && n > 0 =>
                {
                    Some(n)
                }
                _ => None,
            })
        },
    )
    .await
}

/// Files under `dir` (recursively; 0 if it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// The count `engage status` shows for one failure reason.
fn failed_count(status: &str, reason: &str) -> u64 {
    status
        .split(&format!("\"{reason}\": "))
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_batch_makes_no_progress_and_completes_once_resumed() -> anyhow::Result<()> {
    let mut f = Fleet::new("pause", Backend::Local, 8, 6)?;
    f.start("clean")?;
    f.start("match")?;
    let batch = f.enqueue()?;
    let items = wait_registered(&f, &batch).await?;
    let out = ok(&f, &["pause", &batch])?;
    assert!(out.contains("paused"), "{out}");
    // A repeat changes nothing and says so.
    let again = ok(&f, &["pause", &batch])?;
    assert!(again.contains("paused already"), "{again}");
    let status = f.status(&batch)?;
    assert!(status.contains("paused"), "{status}");

    // The download, analyze and aggregate workers start now: every job of
    // the batch they receive is parked on the wait ladder instead of run.
    for s in ["download", "analyze", "aggregate"] {
        f.start(s)?;
    }
    f.wait_consuming("download").await?;
    let ns = f.ns.clone();
    poll(
        "the download jobs to be parked",
        Duration::from_secs(30),
        || async {
            let conn = amqp().await?;
            let waiting = queue_len(&conn, &format!("{ns}.download")).await?;
            let _ = conn.close(200, "bye".into()).await;
            Ok((waiting == 0 && parked(&ns).await? > 0).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", f.logs()))?;
    // No progress while paused (watched for a while, not slept on).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let text = f.status(&batch)?;
        assert_eq!(
            stage_progress(&text, "download"),
            Some((0, items)),
            "a paused batch downloaded: {text}"
        );
        assert_eq!(
            stage_progress(&text, "aggregate").map(|(d, _)| d),
            Some(0),
            "{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Resume: the parked jobs come back at once (not after their wait).
    let out = ok(&f, &["resume", &batch])?;
    assert!(out.contains("resumed"), "{out}");
    let sent: u64 = out
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(sent > 0, "no parked job was sent back: {out}");
    assert_eq!(parked(&f.ns).await?, 0, "jobs still parked after resume");
    let report = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &report);
    let again = ok(&f, &["resume", &batch])?;
    assert!(again.contains("not paused"), "{again}");

    // A complete batch can be neither paused nor cancelled: exit 3, no change.
    for verb in ["pause", "cancel"] {
        let o = f.engage(&[verb, &batch])?;
        assert_eq!(o.status.code(), Some(3), "{verb}: {}", stderr(&o));
        assert!(stderr(&o).contains("is complete"), "{}", stderr(&o));
    }
    assert!(status_says_complete(&f.status(&batch)?));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_ends_cancelled_and_its_jobs_are_dropped_unrun() -> anyhow::Result<()> {
    let mut f = Fleet::new("cancel", Backend::Local, 8, 6)?;
    f.env.insert("ENGAGE_RECONCILE_EVERY_S".into(), "1".into());
    for s in ["clean", "match", "download"] {
        f.start(s)?;
    }
    let batch = f.enqueue()?;
    let items = wait_registered(&f, &batch).await?;
    // Analyze jobs pile up (no analyze worker yet): the batch is mid-way.
    let ns = f.ns.clone();
    poll("analyze jobs to queue", Duration::from_secs(60), || async {
        let conn = amqp().await?;
        let n = queue_len(&conn, &format!("{ns}.analyze")).await?;
        let _ = conn.close(200, "bye".into()).await;
        Ok((n > 0).then_some(()))
    })
    .await?;
    f.assert_incomplete_after_fault(&batch, "the cancel")?;

    let out = ok(&f, &["cancel", &batch])?;
    assert!(out.contains(&format!("{batch} cancelled")), "{out}");
    assert!(out.contains("items final as cancelled"), "{out}");
    let again = ok(&f, &["cancel", &batch])?;
    assert!(again.contains("cancelled already"), "{again}");

    // The workers that receive the batch's queued jobs drop them unrun.
    for s in ["analyze", "aggregate"] {
        f.start(s)?;
    }
    poll(
        "every queue of the namespace to empty",
        Duration::from_secs(60),
        || async { Ok((queued(&ns).await? == 0).then_some(())) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", f.logs()))?;
    assert_eq!(
        files_under(&f.dir.path().join("store").join("results")),
        0,
        "a cancelled batch's item was analyzed"
    );

    // It ended as cancelled: every item final, no report.
    let text = f.status(&batch)?;
    assert!(text.contains("cancelled"), "{text}");
    assert_eq!(
        stage_progress(&text, "analyze"),
        Some((items, items)),
        "{text}"
    );
    assert!(failed_count(&text, "cancelled") > 0, "{text}");
    let wait = f.engage(&["status", &batch, "--wait", "--timeout", "5"])?;
    assert_eq!(wait.status.code(), Some(4), "{}", stdout(&wait));
    let out = f.dir.path().join("report");
    let report = f.engage(&["report", &batch, "--out", &out.display().to_string()])?;
    assert!(!report.status.success());
    assert!(
        stderr(&report).contains("was cancelled"),
        "{}",
        stderr(&report)
    );
    let listed = ok(&f, &["status"])?;
    assert!(listed.contains(&format!("{batch}\tcancelled")), "{listed}");

    // A cancel is final; an unknown batch is its own error.
    for verb in ["pause", "retry"] {
        let o = f.engage(&[verb, &batch])?;
        assert_eq!(o.status.code(), Some(3), "{verb}: {}", stderr(&o));
    }
    let o = f.engage(&["cancel", "no-such-batch"])?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown batch"), "{}", stderr(&o));

    // The store remembers the cancel once the ledger is gone (expired, or
    // lost with Redis).
    let keys = std::process::Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("{{{}:{batch}}}*", f.ns)])
        .output()?;
    let keys: Vec<String> = stdout(&keys).lines().map(str::to_string).collect();
    assert!(!keys.is_empty(), "no ledger keys found for the batch");
    let del = std::process::Command::new("redis-cli")
        .arg("DEL")
        .args(&keys)
        .output()?;
    assert!(del.status.success());
    // The reconciler (every second here) rebuilds the ledger from the store:
    // cancelled again, so the aggregate and report jobs its scan emits are
    // dropped and no report appears.
    let text = poll("the ledger's rebuild", Duration::from_secs(60), || async {
        let text = f.status(&batch)?;
        Ok(text.contains("clean: ").then_some(text))
    })
    .await?;
    assert!(
        text.contains("cancelled (no report"),
        "rebuilt uncancelled: {text}"
    );
    poll(
        "every queue of the namespace to empty",
        Duration::from_secs(60),
        || async { Ok((queued(&ns).await? == 0).then_some(())) },
    )
    .await?;
    let text = f.status(&batch)?;
    assert!(
        text.contains("cancelled (no report") && !status_says_complete(&text),
        "{text}"
    );
    let report = f.engage(&["report", &batch, "--out", &out.display().to_string()])?;
    assert!(!report.status.success(), "a cancelled batch got a report");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_failed_items_and_rewrites_the_report() -> anyhow::Result<()> {
    let mut f = Fleet::new("retry", Backend::Local, 8, 6)?;
    // Every audio object is missing at first: each item with a link fails.
    let audio = f.data.s3_root.join("learner-audio");
    let hidden = f.dir.path().join("hidden-audio");
    std::fs::rename(&audio, &hidden)?;
    std::fs::create_dir_all(&audio)?;
    f.start_all()?;
    let batch = f.enqueue()?;
    let first = f.wait_and_report(&batch, 120)?;
    let first_analysis = std::fs::read(first.join("analysis.csv"))?;
    let status = f.status(&batch)?;
    let missing = failed_count(&status, "audio_missing");
    assert!(missing > 0, "no item failed for its audio: {status}");

    // A reason no item failed with retries nothing.
    let none = ok(&f, &["retry", &batch, "--reason", "no_such_reason"])?;
    assert!(none.contains("retried 0 items"), "{none}");

    // The audio arrives; the failed items run again.
    std::fs::remove_dir(&audio)?;
    std::fs::rename(&hidden, &audio)?;
    let out = ok(&f, &["retry", &batch, "--reason", "audio_missing"])?;
    assert!(
        out.contains(&format!("retried {missing} items")),
        "expected {missing} retried: {out}"
    );
    let second = f.wait_and_report(&batch, 120)?;
    let reference = f.reference()?;
    assert_same_outputs(&reference, &second);
    assert_ne!(
        first_analysis,
        std::fs::read(reference.join("analysis.csv"))?,
        "the first report already had every item: the retry proved nothing"
    );
    let status = f.status(&batch)?;
    assert!(status.contains(&format!("reopened: {missing}")), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gemini_call_is_sent_for_a_batch_cancelled_while_its_calls_wait_for_quota()
-> anyhow::Result<()> {
    use fake_gemini::{FakeConfig, FakeGemini};
    const RPM: u64 = 3;
    let fake = FakeGemini::start(FakeConfig::default()).await?;
    let mut f = crate::gemini::gemini_fleet("cancel-paid", &fake, fake.api_key()).await?;
    // Three calls a minute: the first three go out, the next ones wait in
    // the analyze worker for slots booked a minute later.
    f.env.insert("ENGAGE_GEMINI_RPM".into(), RPM.to_string());
    f.start_all()?;
    let batch = f.enqueue()?;
    poll(
        "the first window's calls",
        Duration::from_secs(90),
        || async { Ok((fake.stats().generate_calls >= RPM).then_some(())) },
    )
    .await?;
    ok(&f, &["cancel", &batch])?;
    let sent = fake.stats().generate_calls;
    assert_eq!(sent, RPM, "more calls than the quota allows");
    // The booked slots come due a minute after the first calls: watch past
    // them; none of the waiting calls may be sent.
    let until = Instant::now() + Duration::from_secs(75);
    while Instant::now() < until {
        let now = fake.stats().generate_calls;
        assert_eq!(now, sent, "a call was paid for a cancelled batch");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ns = f.ns.clone();
    poll(
        "every queue of the namespace to empty",
        Duration::from_secs(60),
        || async { Ok((queued(&ns).await? == 0).then_some(())) },
    )
    .await?;
    assert!(f.status(&batch)?.contains("cancelled"));
    Ok(())
}
