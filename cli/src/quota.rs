//! The Gemini quota as the fleet sees it: whether the fleet is paused (and
//! until when), how many jobs are parked on the wait ladder, and `engage
//! resume`, which ends a pause early and brings the parked jobs back.

use anyhow::Context;
use engage_analyze::ratelimit::{FleetLimiter, FleetPause, Quota};
use engage_runtime::broker::{self, WAIT_RUNGS};
use engage_runtime::config::FleetConfig;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;

use crate::fleet::{publisher, redis, topology};

/// The fleet pause in force, if any (Redis only).
pub(crate) async fn fleet_pause(cfg: &FleetConfig) -> anyhow::Result<Option<FleetPause>> {
    let limiter = FleetLimiter::new(redis(cfg).await?, &cfg.fleet.namespace, Quota::default())?;
    Ok(limiter.paused().await?)
}

/// Jobs parked on the wait ladder, across stages and batches (`None` when
/// the broker cannot be asked).
pub(crate) async fn parked_jobs(cfg: &FleetConfig) -> Option<u64> {
    let conn = broker::connect(cfg.broker.amqp_url.expose(), "engage-cli")
        .await
        .ok()?;
    let ch = conn.create_channel().await.ok()?;
    let parked = topology(cfg).parked_jobs(&ch).await.ok();
    let _ = conn.close(200, "bye".into()).await;
    parked
}

/// One line for `engage status` while analysis waits for quota.
pub(crate) fn pause_line(pause: Option<&FleetPause>, parked: Option<u64>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(p) = pause {
        let until = chrono::DateTime::from_timestamp_millis(i64::try_from(p.until_ms).ok()?)?;
        parts.push(format!(
            "analyze paused until {} (Gemini {} quota, {}s left)",
            until.format("%Y-%m-%dT%H:%M:%SZ"),
            p.reason,
            p.remaining.as_secs()
        ));
    }
    if let Some(n) = parked.filter(|n| *n > 0) {
        parts.push(format!("{n} jobs parked until their wait is over"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `engage resume`: ends the fleet pause and the fleet's own daily count
/// (the quota was raised or reset early), then sends every parked job back
/// to its work queue now. Returns how many jobs it moved.
pub(crate) async fn resume(cfg: &FleetConfig) -> anyhow::Result<u64> {
    let conn = redis(cfg).await?;
    let limiter = FleetLimiter::new(conn.clone(), &cfg.fleet.namespace, Quota::default())?;
    let keys = limiter.keys();
    let mut c = conn;
    let _: () = redis::cmd("DEL")
        .arg(&keys.pause_until)
        .arg(&keys.pause_reason)
        .arg(&keys.requests_day)
        .query_async(&mut c)
        .await
        .context("clearing the fleet pause")?;
    let (amqp, p) = publisher(cfg).await?;
    let topo = topology(cfg);
    let mut moved = 0;
    for rung in 0..WAIT_RUNGS {
        let q = topo.wait_queue(rung);
        while let Some(m) = p
            .channel()
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await?
        {
            let d = &m.delivery;
            // The routing key is the job's stage; without its due header
            // the job runs as soon as a worker takes it.
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(d.properties.message_id().clone().unwrap_or_default())
                .with_headers(without_due(d.properties.headers().as_ref()));
            p.publish_raw(&topo.exchange(), d.routing_key.as_str(), &d.data, props)
                .await
                .with_context(|| format!("sending a parked job back from {q}"))?;
            p.channel()
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await?;
            moved += 1;
        }
    }
    let _ = amqp.close(200, "bye".into()).await;
    Ok(moved)
}

/// Headers of a parked job sent back now: without its due time, rung and
/// dead-letter history.
pub(crate) fn without_due(headers: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        let k = k.as_str();
        if k != broker::DUE_HEADER && k != broker::RUNG_HEADER && !k.starts_with("x-death") {
            out.insert(k.into(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;
    use std::time::Duration;

    #[test]
    fn the_status_line_says_until_when_and_how_many_wait() {
        let pause = FleetPause {
            remaining: Duration::from_secs(3_600),
            until_ms: 1_764_633_600_000,
            reason: "rpd".into(),
        };
        assert_eq!(
            pause_line(Some(&pause), Some(12)).as_deref(),
            Some(
                "analyze paused until 2025-12-02T00:00:00Z (Gemini rpd quota, 3600s left); 12 jobs parked until their wait is over"
            )
        );
        assert_eq!(pause_line(None, Some(0)), None);
        assert_eq!(pause_line(None, None), None);
    }

    #[test]
    fn resumed_jobs_lose_their_due_time_only() {
        let mut h = FieldTable::default();
        h.insert(broker::DUE_HEADER.into(), AMQPValue::LongLongInt(5));
        h.insert(
            broker::RUNG_HEADER.into(),
            AMQPValue::LongString("3".into()),
        );
        h.insert("x-death".into(), AMQPValue::LongString("..".into()));
        h.insert("x-keep".into(), AMQPValue::LongString("yes".into()));
        let out = without_due(Some(&h));
        assert_eq!(out.inner().len(), 1);
        assert!(out.inner().contains_key("x-keep"));
    }
}
