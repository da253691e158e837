//! Prometheus metrics of a worker process (the `prometheus` crate).
//!
//! Labels are bounded: stage, outcome, error class, reason names, service —
//! never a learner id, batch id or key. The names are listed in
//! `deploy/metrics.txt` and used by `deploy/prometheus/rules.yml`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family of the fleet runtime, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// Jobs finished, by stage and outcome (`ok`, `retry`, `dead_letter`, `failed_item`, `duplicate`, `delayed`).
    pub jobs: IntCounterVec,
    /// Job handling time, by stage.
    pub job_duration: HistogramVec,
    /// Jobs being handled now, by stage.
    pub in_flight: IntGaugeVec,
    /// Retries scheduled, by stage and error class.
    pub retries: IntCounterVec,
    /// Jobs parked on the wait ladder (no attempt spent), by stage and reason.
    pub delays: IntCounterVec,
    /// Messages sent to a dead-letter queue, by stage and reason.
    pub dead_lettered: IntCounterVec,
    /// Deliveries skipped because their job had already completed.
    pub idempotent_skips: IntCounterVec,
    /// Bytes read from the store or sources, by stage.
    pub bytes_read: IntCounterVec,
    /// Bytes written to the store, by stage.
    pub bytes_written: IntCounterVec,
    /// Reconnections, by stage and service (`amqp`, `redis`).
    pub reconnects: IntCounterVec,
    /// Input records rejected, by stage and reason.
    pub rejected_records: IntCounterVec,
    /// Items recorded as failed, by stage and reason.
    pub failed_items: IntCounterVec,
    /// 1 when the worker is ready (broker and Redis reachable, not stopped by a fatal error).
    pub ready: IntGaugeVec,
    /// Item states per item-log chunk (how well group commit batches).
    pub item_log_chunk_states: Histogram,
    /// Ack/nack frames sent, by stage and kind (`multiple`: one frame settling
    /// every finished delivery up to a tag; `single`; `requeue`). Fewer frames
    /// than jobs means acks are batching.
    pub ack_frames: IntCounterVec,
    /// Bytes of the audio memory budget reserved now (download and analyze).
    pub audio_memory_reserved: IntGauge,
    /// The audio memory budget (`[limits] audio_memory_bytes`).
    pub audio_memory_budget: IntGauge,
    /// Jobs that waited for audio memory to be given back.
    pub audio_memory_waits: IntCounter,
    /// Repairs the reconciler made to stalled batches, by kind.
    pub reconciler_repairs: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    /// Creates and registers every family in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let job_duration = HistogramVec::new(
            HistogramOpts::new("engage_job_duration_seconds", "Time to handle one job.").buckets(
                vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
            ),
            &["stage"],
        )
        .expect("static metric definition");
        r.register(Box::new(job_duration.clone()))
            .expect("metric registered once");
        let item_log_chunk_states = Histogram::with_opts(
            HistogramOpts::new(
                "engage_item_log_chunk_states",
                "Item states written per item-log chunk (group commit).",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )
        .expect("static metric definition");
        r.register(Box::new(item_log_chunk_states.clone()))
            .expect("metric registered once");
        let audio_memory_reserved = IntGauge::new(
            "engage_audio_memory_reserved_bytes",
            "Bytes of the audio memory budget reserved now.",
        )
        .expect("static metric definition");
        let audio_memory_budget = IntGauge::new(
            "engage_audio_memory_budget_bytes",
            "The worker's audio memory budget.",
        )
        .expect("static metric definition");
        let audio_memory_waits = IntCounter::new(
            "engage_audio_memory_waits_total",
            "Jobs that waited for audio memory.",
        )
        .expect("static metric definition");
        for m in [&audio_memory_reserved, &audio_memory_budget] {
            r.register(Box::new(m.clone()))
                .expect("metric registered once");
        }
        r.register(Box::new(audio_memory_waits.clone()))
            .expect("metric registered once");
        Self {
            reconciler_repairs: counter(
                &r,
                "engage_reconciler_repairs_total",
                "Repairs the reconciler made to stalled batches.",
                &["kind"],
            ),
            audio_memory_reserved,
            audio_memory_budget,
            audio_memory_waits,
            item_log_chunk_states,
            jobs: counter(
                &r,
                "engage_jobs_total",
                "Jobs finished by stage and outcome.",
                &["stage", "outcome"],
            ),
            job_duration,
            in_flight: gauge(
                &r,
                "engage_jobs_in_flight",
                "Jobs being handled.",
                &["stage"],
            ),
            retries: counter(
                &r,
                "engage_retries_total",
                "Retries scheduled.",
                &["stage", "error_class"],
            ),
            delays: counter(
                &r,
                "engage_delays_total",
                "Jobs parked on the wait ladder without spending an attempt (quota, lease, fleet pause, server retry-after, ledger rebuild).",
                &["stage", "reason"],
            ),
            dead_lettered: counter(
                &r,
                "engage_dead_lettered_total",
                "Messages dead-lettered.",
                &["stage", "reason"],
            ),
            idempotent_skips: counter(
                &r,
                "engage_idempotent_skips_total",
                "Deliveries of already completed jobs.",
                &["stage"],
            ),
            bytes_read: counter(&r, "engage_bytes_read_total", "Bytes read.", &["stage"]),
            bytes_written: counter(
                &r,
                "engage_bytes_written_total",
                "Bytes written.",
                &["stage"],
            ),
            reconnects: counter(
                &r,
                "engage_reconnects_total",
                "Reconnections.",
                &["stage", "service"],
            ),
            rejected_records: counter(
                &r,
                "engage_rejected_records_total",
                "Input records rejected.",
                &["stage", "reason"],
            ),
            failed_items: counter(
                &r,
                "engage_failed_items_total",
                "Items recorded as failed.",
                &["stage", "reason"],
            ),
            ready: gauge(
                &r,
                "engage_ready",
                "1 when the worker is ready.",
                &["stage"],
            ),
            ack_frames: counter(
                &r,
                "engage_ack_frames_total",
                "Ack/nack frames sent.",
                &["stage", "kind"],
            ),
            registry: r,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_bounded_labels() {
        let m = Metrics::new();
        m.jobs.with_label_values(&["clean", "ok"]).inc();
        m.job_duration.with_label_values(&["clean"]).observe(0.2);
        let text = m.render();
        assert!(text.contains("engage_jobs_total{outcome=\"ok\",stage=\"clean\"} 1"));
        assert!(text.contains("engage_job_duration_seconds_bucket"));
    }
}
