//! The analyze worker with Gemini, against the Gemini-wire fake on loopback:
//! never paying twice, the free pre-filter, 429s pausing the fleet, faults
//! retried then recorded as failed items, and a bad key or a retired model
//! stopping the workers before they take any job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_gemini::{Behaviour, FakeConfig, FakeGemini, Fault, Latency};

use crate::support::fleet::{
    Backend, Fleet, amqp, free_port, http_get, poll, queue_len, stage_progress,
};

/// A fleet whose analyze workers use Gemini on `fake` with `key`, and the
/// product's default model (the fake serves it by default).
pub(crate) async fn gemini_fleet(
    test: &str,
    fake: &FakeGemini,
    key: &str,
) -> anyhow::Result<Fleet> {
    let mut f = Fleet::new(test, Backend::Local, 8, 6)?;
    f.env.insert("ENGAGE_ANALYZER".into(), "gemini".into());
    f.env.insert("GEMINI_API_KEY".into(), key.into());
    f.env.insert(
        "ENGAGE_GEMINI__BASE_URL".into(),
        fake.base_url().to_string(),
    );
    Ok(f)
}

pub(crate) fn summary(dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&std::fs::read(
        dir.join("summary.json"),
    )?)?)
}

/// Every `.wav` object under `dir`, sorted by path.
fn wav_objects(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(wav_objects(&p)?);
        } else if p.extension().is_some_and(|x| x == "wav") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Rewrites the generated audio so that only `distinct` contents remain (the
/// largest clips: speech, in the fixed-seed dataset), each behind many
/// objects of several learners. Returns how many objects now share them.
pub(crate) fn share_audio(s3_root: &Path, distinct: usize) -> anyhow::Result<usize> {
    let objects = wav_objects(s3_root)?;
    let mut by_size: Vec<(u64, &PathBuf)> = objects
        .iter()
        .map(|p| Ok((std::fs::metadata(p)?.len(), p)))
        .collect::<anyhow::Result<_>>()?;
    by_size.sort_by(|a, b| b.cmp(a));
    let pool: Vec<Vec<u8>> = by_size
        .iter()
        .take(distinct)
        .map(|(_, p)| std::fs::read(p))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(pool.len() == distinct, "only {} audio objects", pool.len());
    for (i, p) in objects.iter().enumerate() {
        std::fs::write(p, &pool[i % distinct])?;
    }
    Ok(objects.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_batches_never_pay_twice_for_the_same_audio() -> anyhow::Result<()> {
    // A slow model: calls overlap, so duplicates arrive while one is paying.
    let fake = FakeGemini::start(FakeConfig {
        behaviour: Behaviour {
            latency: Latency::Fixed(Duration::from_millis(800)),
            ..Behaviour::default()
        },
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("gem-once", &fake, fake.api_key()).await?;
    // A low inline limit sends bigger clips through the Files API.
    f.env
        .insert("ENGAGE_GEMINI__INLINE_MAX_BYTES".into(), "60000".into());
    // Three distinct audios behind every object of every learner.
    const DISTINCT: usize = 3;
    let objects = share_audio(&f.data.s3_root, DISTINCT)?;
    assert!(objects >= 10 * DISTINCT, "{objects} audio objects");
    // Two analyze workers, and two batches of the same data at once: the
    // same audio is delivered concurrently, across learners and batches.
    f.start_all()?;
    f.start("analyze")?;
    let (b1, b2) = (f.enqueue()?, f.enqueue()?);
    let first = f.wait_and_report(&b1, 180)?;
    let second = f.wait_and_report(&b2, 180)?;
    let stats = fake.stats();
    let (s1, s2) = (summary(&first)?, summary(&second)?);
    let sum = |k: &str| s1["cost"][k].as_u64().unwrap_or(0) + s2["cost"][k].as_u64().unwrap_or(0);
    assert!(stats.generate_calls > 0, "{stats:?}");
    assert_eq!(
        stats.max_calls_per_audio(),
        1,
        "an audio was paid for twice: {:?}",
        stats.calls_by_hash
    );
    assert!(stats.calls_by_hash.len() <= DISTINCT, "{stats:?}");
    // The same audio really was asked for many times: many more items were
    // analyzed than calls were paid for.
    let analyzed = s1["analyzed"].as_u64().unwrap_or(0) + s2["analyzed"].as_u64().unwrap_or(0);
    assert!(
        analyzed >= 5 * stats.generate_calls,
        "{analyzed} items analyzed for {} calls: {s1} {s2}",
        stats.generate_calls
    );
    assert_eq!(sum("calls"), stats.generate_calls, "{s1} {s2}");
    assert!(sum("cache_hits") > 0, "{s1} {s2}");
    // Some deliveries met another one paying for the same audio (the lease)
    // and waited for its answer: the deliveries were concurrent.
    let logs: String = (0..2)
        .map(|i| {
            std::fs::read_to_string(f.dir.path().join(format!("logs/analyze-{i}.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        logs.contains("holds the lease on this audio"),
        "no delivery met a paying one: {}",
        f.logs()
    );
    assert!(stats.uploads_finalized > 0, "{stats:?}");
    assert_eq!(stats.files_deleted, stats.uploads_finalized, "{stats:?}");
    let analysis = std::fs::read_to_string(first.join("analysis.csv"))?;
    let analyzer = engage_runtime::config::GeminiSection::default().analyzer_id();
    assert!(
        analysis.contains(&format!(",{analyzer},")),
        "{analyzer}: {analysis}"
    );
    assert_eq!(
        std::fs::read(first.join("report.csv"))?,
        std::fs::read(second.join("report.csv"))?
    );

    // The same data again, as a new batch: every answer comes from the durable cache.
    let third = f.wait_and_report(&f.enqueue()?, 120)?;
    assert_eq!(
        fake.stats().generate_calls,
        stats.generate_calls,
        "a re-run batch paid again"
    );
    let s3 = summary(&third)?;
    assert_eq!(s3["cost"]["calls"].as_u64(), Some(0), "{s3}");
    assert!(s3["cost"]["cache_hits"].as_u64() > Some(0), "{s3}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_429s_pause_the_fleet_and_transient_faults_are_retried() -> anyhow::Result<()> {
    let fake = FakeGemini::start(FakeConfig::default()).await?;
    let mut faults = Fault::burst_429(2, "1.5s");
    faults.extend([
        Fault::Status(503),
        Fault::Status(500),
        Fault::TruncatedJson,
        Fault::Blocked("OTHER".into()),
        Fault::OutOfRange,
    ]);
    fake.push_faults(faults);
    let mut f = gemini_fleet("gem-faults", &fake, fake.api_key()).await?;
    // More attempts than there are faults: even if one item's retries meet
    // every fault in turn (likelier on a loaded machine, where fewer calls
    // share the faults), it still ends analyzed.
    f.env.insert("ENGAGE_MAX_ATTEMPTS".into(), "10".into());
    f.start_all()?;
    let out = f.wait_and_report(&f.enqueue()?, 180)?;
    let stats = fake.stats();
    assert_eq!(stats.rate_limited, 2, "{stats:?}");
    // The first 429 paused every worker: no new call reached the fake within
    // the pause that followed it (the second 429 came from a call in flight).
    // The window starts 500 ms in: on a loaded 2-core CI box a call that took
    // its permit just before the pause can reach the fake a few hundred ms
    // late (CI twice saw 3 calls in a window starting at 200 ms); after that
    // only one straggler is allowed.
    let first_429 = stats.request_times[0];
    let during_pause = stats
        .request_times
        .iter()
        .filter(|t| {
            **t > first_429 + Duration::from_millis(500)
                && **t < first_429 + Duration::from_millis(1300)
        })
        .count();
    assert!(
        during_pause <= 1,
        "calls during the fleet pause: {during_pause}"
    );
    // Every fault was transient: all audio that was sent ends analyzed.
    let s = summary(&out)?;
    let failed = s["failed"].as_object().cloned().unwrap_or_default();
    assert!(failed.keys().all(|k| !k.starts_with("gemini_")), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_never_cached_as_the_answer() -> anyhow::Result<()> {
    // Every call answers 503 until the model "recovers".
    let behaviour = Behaviour {
        fault_probabilities: vec![(1.0, Fault::Status(503))],
        ..Behaviour::default()
    };
    let fake = FakeGemini::start(FakeConfig {
        behaviour,
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("gem-nocache", &fake, fake.api_key()).await?;
    f.env.insert("ENGAGE_MAX_ATTEMPTS".into(), "2".into());
    f.start_all()?;
    let first = summary(&f.wait_and_report(&f.enqueue()?, 180)?)?;
    let failed = first["failed"].as_object().cloned().unwrap_or_default();
    assert!(failed.keys().any(|k| k.starts_with("gemini_")), "{first}");
    assert_eq!(first["analyzed"].as_u64(), Some(0), "{first}");
    // The model is back: the same audio in a new batch is asked again and
    // analyzed, not failed from a cached 503.
    fake.set_behaviour(|b| b.fault_probabilities.clear());
    let calls_before = fake.stats().generate_calls;
    let second = summary(&f.wait_and_report(&f.enqueue()?, 180)?)?;
    let failed = second["failed"].as_object().cloned().unwrap_or_default();
    assert!(
        failed.keys().all(|k| !k.starts_with("gemini_")),
        "a transient failure was served from the cache: {second}"
    );
    assert!(second["analyzed"].as_u64() > Some(0), "{second}");
    assert!(fake.stats().generate_calls > calls_before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_stay_invalid_become_failed_items_and_the_batch_completes()
-> anyhow::Result<()> {
    let behaviour = Behaviour {
        fault_probabilities: vec![(1.0, Fault::UnknownEnum)],
        ..Behaviour::default()
    };
    let fake = FakeGemini::start(FakeConfig {
        behaviour,
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("gem-invalid", &fake, fake.api_key()).await?;
    f.env.insert("ENGAGE_MAX_ATTEMPTS".into(), "2".into());
    f.start_all()?;
    let out = f.wait_and_report(&f.enqueue()?, 120)?;
    let s = summary(&out)?;
    assert!(
        s["failed"]["gemini_invalid_answer"].as_u64() > Some(0),
        "{s}"
    );
    assert_eq!(s["analyzed"].as_u64(), Some(0), "{s}");
    let analysis = std::fs::read_to_string(out.join("analysis.csv"))?;
    assert!(
        analysis
            .lines()
            .any(|l| l.contains(",failed,") && l.contains("gemini_invalid_answer")),
        "{analysis}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_api_key_stops_the_analyze_workers_loudly() -> anyhow::Result<()> {
    let fake = FakeGemini::start(FakeConfig::default()).await?;
    let mut f = gemini_fleet("gem-badkey", &fake, "not-the-key").await?;
    let addr = format!("127.0.0.1:{}", free_port());
    for s in ["clean", "match", "download", "aggregate"] {
        f.start(s)?;
    }
    f.env.insert("ENGAGE_METRICS_ADDR".into(), addr.clone());
    f.start("analyze")?;
    let batch = f.enqueue()?;
    let (code, body) = poll(
        "analyze to turn not-ready",
        Duration::from_secs(60),
        || async {
            Ok(http_get(&addr, "/readyz")
                .ok()
                .filter(|(_, b)| b.contains("fatal")))
        },
    )
    .await?;
    assert_eq!(code, 503);
    assert!(body.contains("invalid_api_key"), "{body}");
    // Items are not failed one by one: nothing was recorded, the work waits in the queue.
    let status = String::from_utf8_lossy(&f.engage(&["status", &batch])?.stdout).into_owned();
    assert!(
        !status.contains("complete") && !status.contains("gemini_"),
        "{status}"
    );
    let log = std::fs::read_to_string(f.dir.path().join("logs/analyze-0.log"))?;
    assert!(
        log.contains("fatal error: this worker stops consuming"),
        "{log}"
    );
    assert!(!log.contains("not-the-key"), "the API key reached the log");
    // The start-up model check found the key bad: not one call was attempted.
    assert_eq!(fake.stats().generate_calls, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_model_keeps_the_analyze_worker_from_taking_any_job() -> anyhow::Result<()> {
    // Google serves only the current model; the fleet is configured with one
    // that was shut down.
    let fake = FakeGemini::start(FakeConfig {
        models: vec!["gemini-3.8-flash".to_owned()],
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("gem-retired", &fake, fake.api_key()).await?;
    f.env
        .insert("ENGAGE_GEMINI__MODEL".into(), "gemini-2.5-flash".into());
    for s in ["clean", "match", "download", "aggregate"] {
        f.start(s)?;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    f.env.insert("ENGAGE_METRICS_ADDR".into(), addr.clone());
    f.start("analyze")?;
    let (code, body) = poll(
        "analyze to turn not-ready",
        Duration::from_secs(60),
        || async {
            Ok(http_get(&addr, "/readyz")
                .ok()
                .filter(|(_, b)| b.contains("fatal")))
        },
    )
    .await?;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(r#"Gemini model "gemini-2.5-flash" is not available to this key"#)
            && body.contains("model_unavailable"),
        "{body}"
    );
    // A batch arrives: every downloaded item's analyze job waits in the
    // queue (one job per downloaded item), none is taken.
    let batch = f.enqueue()?;
    let conn = amqp().await?;
    let analyze_queue = format!("{}.analyze", f.ns);
    let queued = poll(
        "analyze jobs to queue up",
        Duration::from_secs(120),
        || async {
            let downloaded = stage_progress(&f.status(&batch)?, "download").map_or(0, |(d, _)| d);
            let queued = u64::from(queue_len(&conn, &analyze_queue).await?);
            Ok((downloaded > 0 && queued == downloaded).then_some(queued))
        },
    )
    .await?;
    let ch = conn.create_channel().await?;
    let queue = ch
        .queue_declare(
            analyze_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    assert_eq!(
        queue.consumer_count(),
        0,
        "the analyze queue has a consumer"
    );
    assert!(u64::from(queue.message_count()) >= queued);
    assert_eq!(fake.stats().generate_calls, 0, "a paid call was made");
    // Still not ready, still saying why.
    let (code, body) = http_get(&addr, "/readyz")?;
    assert_eq!(code, 503);
    assert!(body.contains("gemini-2.5-flash"), "{body}");
    let log = std::fs::read_to_string(f.dir.path().join("logs/analyze-0.log"))?;
    assert!(
        log.contains(r#"Gemini model "gemini-2.5-flash" is not available to this key"#),
        "{log}"
    );
    assert!(!log.contains(fake.api_key()), "the API key reached the log");
    Ok(())
}
