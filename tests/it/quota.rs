//! The Gemini quota as the fleet uses it, against the Gemini-wire fake:
//! waits served to the second (not rounded up to a retry tier), bookings that
//! never overfill the server's window, a per-day pause that parks work until
//! `engage resume`, and leases that follow their holder.

use std::time::{Duration, Instant};

use fake_gemini::{Behaviour, FakeConfig, FakeGemini, Fault, Latency, Stats};

use crate::gemini::{gemini_fleet, share_audio, summary};
use crate::support::fleet::poll;

/// Asserts that no item failed because of Gemini.
fn assert_no_gemini_failures(s: &serde_json::Value) {
    let failed = s["failed"].as_object().cloned().unwrap_or_default();
    assert!(failed.keys().all(|k| !k.starts_with("gemini_")), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_is_served_to_the_second_not_by_a_retry_tier() -> anyhow::Result<()> {
    let fake = FakeGemini::start(FakeConfig::default()).await?;
    // The first call is answered 429 with a 12 s retry delay.
    fake.push_faults(Fault::burst_429(1, "12s"));
    let mut f = gemini_fleet("quota-exact", &fake, fake.api_key()).await?;
    // Nothing waits inside a worker (every wait goes through the broker),
    // and a wait that spent an attempt would dead-letter the job.
    f.env.insert("ENGAGE_MAX_PERMIT_WAIT_S".into(), "0".into());
    f.env.insert("ENGAGE_MAX_ATTEMPTS".into(), "1".into());
    // The retry tiers a 12 s wait used to be rounded up to (30 s).
    f.env
        .insert("ENGAGE_RETRY_DELAYS_MS".into(), "1000,5000,30000".into());
    // One job at a time: no call is in flight beside the first.
    f.env.insert("ENGAGE_CONCURRENCY".into(), "1".into());
    f.start_all()?;
    let out = f.wait_and_report(&f.enqueue()?, 180)?;
    let stats = fake.stats();
    assert_eq!(stats.rate_limited, 1, "{stats:?}");
    let first = stats.request_times[0];
    let later = &stats.request_times[1..];
    assert!(!later.is_empty(), "{stats:?}");
    let (earliest, latest) = (
        later.iter().min().copied().unwrap_or_default() - first,
        later.iter().max().copied().unwrap_or_default() - first,
    );
    // Every job waited for the fleet pause (12 s, to within the ladder's
    // half second) and no longer: a 30 s tier would put the 429'd job's
    // second call 24 s or more after its first.
    assert!(earliest >= Duration::from_millis(11_500), "{earliest:?}");
    assert!(latest < Duration::from_secs(20), "{latest:?}: {stats:?}");
    let s = summary(&out)?;
    assert_no_gemini_failures(&s);
    assert!(s["analyzed"].as_u64() > Some(0), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_never_draw_a_429_at_the_window_edge() -> anyhow::Result<()> {
    const RPM: u32 = 20;
    let fake = FakeGemini::start(FakeConfig {
        behaviour: Behaviour {
            latency: Latency::Uniform {
                min: Duration::from_millis(200),
                max: Duration::from_millis(1_500),
            },
            rpm: Some(RPM),
            ..Behaviour::default()
        },
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("quota-edge", &fake, fake.api_key()).await?;
    f.env.insert("ENGAGE_GEMINI_RPM".into(), RPM.to_string());
    f.start_all()?;
    // Four analyze workers race for the same window.
    for _ in 0..3 {
        f.start("analyze")?;
    }
    let out = f.wait_and_report(&f.enqueue()?, 300)?;
    let stats = fake.stats();
    assert!(
        stats.successes > u64::from(RPM),
        "needs two windows: {stats:?}"
    );
    assert_eq!(stats.rate_limited, 0, "429s of our own making: {stats:?}");
    let window = Duration::from_secs(60);
    assert!(Stats::max_in_window(&stats.admitted_times, window) <= RPM as usize);
    // The first window was used whole: the quota is the throughput.
    let first = stats.admitted_times[0];
    let in_first = stats
        .admitted_times
        .iter()
        .filter(|t| **t < first + window)
        .count();
    assert_eq!(in_first, RPM as usize, "{stats:?}");
    assert_no_gemini_failures(&summary(&out)?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_day_quota_parks_the_batch_until_resumed() -> anyhow::Result<()> {
    let fake = FakeGemini::start(FakeConfig {
        behaviour: Behaviour {
            rpd: Some(5),
            ..Behaviour::default()
        },
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("quota-day", &fake, fake.api_key()).await?;
    // Parking must not spend attempts.
    f.env.insert("ENGAGE_MAX_ATTEMPTS".into(), "1".into());
    // A reconciler quick to call the paused batch stalled: parked jobs are
    // work in progress, and it must not re-drive their items.
    f.env.insert("ENGAGE_RECONCILE_EVERY_S".into(), "1".into());
    f.env.insert("ENGAGE_RECONCILE_STALL_S".into(), "2".into());
    f.start_all()?;
    let batch = f.enqueue()?;
    // The sixth call meets the per-day quota: the fleet pauses until the
    // daily reset, every job is parked, and status says so.
    let line = poll(
        "status to say the batch is paused",
        Duration::from_secs(120),
        || {
            let status = f.status(&batch);
            async move {
                let s = status?;
                Ok((s.contains("paused until")
                    && s.contains("Gemini rpd quota")
                    && s.contains("jobs parked"))
                .then_some(s))
            }
        },
    )
    .await?;
    assert!(!line.contains(" complete"), "{line}");
    // Parked, not polling: no call reaches Gemini while the pause lasts, each
    // job is parked once (not copied), and nothing is re-driven.
    let calls = fake.stats().generate_calls;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            fake.stats().generate_calls,
            calls,
            "a parked job called Gemini"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let line = f.status(&batch)?.trim().to_owned();
    let parked: u64 = line
        .split("; ")
        .find_map(|p| p.strip_suffix(" jobs parked until their wait is over"))
        .and_then(|n| n.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no parked count in {line}"))?;
    let items = crate::support::fleet::stage_progress(&line, "analyze").map_or(0, |(_, t)| t);
    assert!(
        parked > 0 && parked <= items,
        "{parked} parked for {items} items: {line}"
    );
    assert!(
        !line.contains("repaired"),
        "the reconciler re-drove a paused batch: {line}"
    );
    assert_eq!(fake.stats().successes, 5);
    // The quota is raised: `engage resume` brings every parked job back.
    fake.set_behaviour(|b| b.rpd = None);
    let o = f.engage(&["resume"])?;
    anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(said.contains("parked jobs sent back"), "{said}");
    let out = f.wait_and_report(&batch, 180)?;
    let s = summary(&out)?;
    assert_no_gemini_failures(&s);
    assert!(s["analyzed"].as_u64() > Some(5), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_follows_its_holder_through_a_slow_files_api_call() -> anyhow::Result<()> {
    // Every audio goes through the Files API, which stays PROCESSING for
    // six polls (about 9.5 s): three times the lease's lifetime.
    let mut behaviour = Behaviour::default();
    behaviour.files.polls_before_active = 6;
    let fake = FakeGemini::start(FakeConfig {
        behaviour,
        ..FakeConfig::default()
    })
    .await?;
    let mut f = gemini_fleet("quota-lease", &fake, fake.api_key()).await?;
    f.env
        .insert("ENGAGE_GEMINI__INLINE_MAX_BYTES".into(), "1000".into());
    f.env
        .insert("ENGAGE_ANALYZE__LEASE_TTL_S".into(), "3".into());
    // One audio behind every item: every delivery wants the same lease.
    share_audio(&f.data.s3_root, 1)?;
    f.start_all()?;
    f.start("analyze")?;
    let out = f.wait_and_report(&f.enqueue()?, 180)?;
    let stats = fake.stats();
    // Renewed while the holder polled: nobody else uploaded or paid.
    assert_eq!(stats.uploads_started, 1, "{stats:?}");
    assert_eq!(stats.max_calls_per_audio(), 1, "{stats:?}");
    assert!(stats.file_polls >= 6, "{stats:?}");
    let s = summary(&out)?;
    assert_no_gemini_failures(&s);
    assert!(s["cost"]["cache_hits"].as_u64() > Some(0), "{s}");
    Ok(())
}

#[tokio::test]
async fn a_lease_whose_holder_stopped_frees_within_its_ttl() -> anyhow::Result<()> {
    use engage_runtime::idempotency::Idempotency;
    use engage_runtime::redis_conn::RedisConn;
    let conn = RedisConn::connect("redis://127.0.0.1:6379", false).await?;
    let ns = crate::support::fleet::namespace("lease");
    let (holder, other) = (
        Idempotency::new(conn.clone(), ns.clone()),
        Idempotency::new(conn, ns),
    );
    let ttl = Duration::from_secs(1);
    let kept = holder
        .try_keep_lease("audio", ttl)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the lease was taken"))?;
    // Held well past its ttl while the holder lives.
    let until = Instant::now() + 3 * ttl;
    while Instant::now() < until {
        assert!(
            other.try_lease("audio", ttl).await?.is_none(),
            "the lease lapsed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!kept.lost());
    // The holder dies (its renewal stops, nothing is released): the lease
    // frees within one ttl.
    let died = Instant::now();
    drop(kept);
    let taken = poll("the lease to free", 3 * ttl, || async {
        Ok(other.try_lease("audio", ttl).await?)
    })
    .await?;
    assert!(
        died.elapsed() <= ttl + Duration::from_millis(500),
        "{:?}",
        died.elapsed()
    );
    other.release(taken).await?;
    Ok(())
}
