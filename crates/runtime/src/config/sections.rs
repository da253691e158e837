//! The configuration sections, one struct per concern. The `///` docs on each
//! field are the user documentation (`docs/configuration.md` repeats them with
//! the environment variable and default of every field).
//!
//! Every section has defaults for every field, rejects unknown keys, and
//! checks the values its schema cannot express in [`SectionSpec::validate`].

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use engage_model::input_policy::InputPolicy;

pub use super::gemini::GeminiSection;

/// A field whose value the schema accepts but the fleet cannot use:
/// `(field name inside the section, why)`.
pub type Invalid = (&'static str, String);

/// What the loader needs to know about a section.
pub trait SectionSpec: Serialize + DeserializeOwned + Default {
    /// The TOML table name and the middle of `ENGAGE_<SECTION>__<FIELD>`.
    const NAME: &'static str;
    /// Checks values that the schema alone cannot.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

fn bad(field: &'static str, why: &str) -> Result<(), Invalid> {
    Err((field, why.to_owned()))
}

/// Which analyzer the analyze stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnalyzerKind {
    /// The offline acoustic analyzer (free, local, hears loudness and prosody).
    #[default]
    Acoustic,
    /// Google Gemini over its REST API (needs `GEMINI_API_KEY`).
    Gemini,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// `[fleet]`: the identity every process of one fleet shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// Prefix of every queue, exchange and Redis key, so several fleets (and
    /// parallel tests) share one broker and one Redis. `[A-Za-z0-9._-]`.
    pub namespace: String,
    /// The input allow-list: prefixes (`s3://bucket/prefix` or
    /// `file:///dir`) that a batch's activity logs, sessions CSV and users
    /// file must lie under. The store's own `inputs/` folder is always
    /// allowed. Anything else is refused before a byte is read (`engage
    /// enqueue` refuses to publish it; the clean worker dead-letters it as
    /// `input_not_allowed`). Comma-separated in the environment.
    pub input_prefixes: Vec<String>,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            namespace: "engage".into(),
            input_prefixes: Vec::new(),
        }
    }
}

impl SectionSpec for FleetSection {
    const NAME: &'static str = "fleet";
    fn validate(&self) -> Result<(), Invalid> {
        let ok = !self.namespace.is_empty()
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return bad("namespace", "must be non-empty [A-Za-z0-9._-]");
        }
        if let Err(e) = InputPolicy::parse_list(&self.input_prefixes.join(",")) {
            return bad(
                "input_prefixes",
                &format!("not an s3:// or file:/// prefix: {e}"),
            );
        }
        Ok(())
    }
}

/// `[broker]`: RabbitMQ and the queue topology (the CLI declares the same
/// queues, so it must agree with the workers on these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// AMQP URL of RabbitMQ, with credentials (a 30 s heartbeat is added);
    /// for a cluster, the nodes' URLs comma-separated: a connection tries them
    /// in turn, so a worker whose node stops reconnects to another one.
    /// Secret: never logged or shown.
    pub amqp_url: Secret<String>,
    /// Delays of the retry tiers in milliseconds (attempt n waits tier n,
    /// ±20% jitter). Comma-separated in the environment.
    pub retry_delays_ms: Vec<u64>,
    /// Redeliveries after worker crashes before RabbitMQ dead-letters a
    /// message (quorum `x-delivery-limit`).
    pub delivery_limit: u32,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            amqp_url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000],
            delivery_limit: 5,
        }
    }
}

impl SectionSpec for BrokerSection {
    const NAME: &'static str = "broker";
    fn validate(&self) -> Result<(), Invalid> {
        if crate::broker::node_urls(self.amqp_url.expose()).is_empty() {
            return bad("amqp_url", "must not be empty");
        }
        if self.retry_delays_ms.is_empty() {
            return bad("retry_delays_ms", "needs at least one delay");
        }
        Ok(())
    }
}

/// `[redis]`: idempotency markers, the batch ledger and the Gemini limiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// Redis URL (`redis://host:port`), or a comma-separated list of cluster
    /// nodes when `cluster` is true. Secret: never logged or shown.
    pub url: Secret<String>,
    /// Treat `url` as the seed nodes of a Redis Cluster.
    pub cluster: bool,
    /// Seconds a finished batch's ledger keys live after its report is
    /// written (`engage status` answers for it that long; its outputs stay
    /// in the store). Completion markers and leases expire on their own.
    pub finished_batch_ttl_s: u64,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:6379".into()),
            cluster: false,
            finished_batch_ttl_s: 7 * 24 * 3600,
        }
    }
}

impl RedisSection {
    /// [`finished_batch_ttl_s`](Self::finished_batch_ttl_s) as a duration.
    pub fn finished_batch_ttl(&self) -> Duration {
        Duration::from_secs(self.finished_batch_ttl_s)
    }
}

impl SectionSpec for RedisSection {
    const NAME: &'static str = "redis";
    fn validate(&self) -> Result<(), Invalid> {
        if self.url.expose().is_empty() {
            return bad("url", "must not be empty");
        }
        if self.finished_batch_ttl_s == 0 {
            return bad("finished_batch_ttl_s", "must be at least 1");
        }
        Ok(())
    }
}

/// `[store]`: the pipeline's own store and how S3 is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Root URI of the pipeline's own store (`file:///var/lib/engage` or
    /// `s3://bucket/prefix`).
    pub root: String,
    /// Local files (`file://` store, `s3_root`) of at most this many bytes are
    /// read without a thread hand-off; 0 when the local store is a network
    /// filesystem.
    pub inline_read_bytes: u64,
    /// Custom S3 endpoint (for S3-compatible servers); unset means AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region; unset means `AWS_REGION`, else `AWS_DEFAULT_REGION`, else
    /// `us-east-1`.
    pub s3_region: Option<String>,
    /// Use path-style S3 addressing (needed by most local S3-compatible servers).
    pub s3_force_path_style: bool,
    /// Read and write `s3://bucket/key` at `DIR/bucket/key` instead of S3
    /// (local layout of s3s-fs); takes precedence over every other `s3_*` setting.
    pub s3_root: Option<PathBuf>,
    /// Static S3 access key id. Set it together with `s3_secret_access_key`,
    /// or leave both unset to use the standard AWS chain (`AWS_ACCESS_KEY_ID`,
    /// profile, web identity, instance role). Secret: never shown.
    pub s3_access_key_id: Option<Secret<String>>,
    /// Static S3 secret access key (see `s3_access_key_id`). Secret: never shown.
    pub s3_secret_access_key: Option<Secret<String>>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            root: "file:///var/lib/engage".into(),
            inline_read_bytes: crate::storage::DEFAULT_INLINE_READ_BYTES,
            s3_endpoint: None,
            s3_region: None,
            s3_force_path_style: false,
            s3_root: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
        }
    }
}

impl SectionSpec for StoreSection {
    const NAME: &'static str = "store";
    fn validate(&self) -> Result<(), Invalid> {
        if self.root.is_empty() {
            return bad("root", "must not be empty");
        }
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(_), None) => bad(
                "s3_secret_access_key",
                "must be set together with s3_access_key_id",
            ),
            (None, Some(_)) => bad(
                "s3_access_key_id",
                "must be set together with s3_secret_access_key",
            ),
            _ => Ok(()),
        }
    }
}

/// `[limits]`: how much one worker process takes on, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Jobs processed concurrently by one worker process (the AMQP prefetch is
    /// twice this, room for acks being batched).
    pub concurrency: u16,
    /// Attempts before a job that keeps failing transiently goes to the
    /// dead-letter queue.
    pub max_attempts: u32,
    /// Seconds SIGTERM waits for in-flight jobs before exiting.
    pub drain_timeout_s: u64,
    /// Bytes of audio (fetched objects plus decoding and feature working
    /// memory) one download or analyze worker may hold at once, whatever its
    /// concurrency: jobs wait for bytes, not slots. Audio needing more than
    /// the whole budget fails as `audio_too_large`. The default fits the
    /// largest object the store reads (256 MiB) with its worst-case decode.
    pub audio_memory_bytes: u64,
}

/// The default audio memory budget per worker: 1.5 GiB.
pub const DEFAULT_AUDIO_MEMORY_BYTES: u64 = 1536 << 20;

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            concurrency: 32,
            max_attempts: 5,
            drain_timeout_s: 30,
            audio_memory_bytes: DEFAULT_AUDIO_MEMORY_BYTES,
        }
    }
}

impl LimitsSection {
    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_s)
    }
}

impl SectionSpec for LimitsSection {
    const NAME: &'static str = "limits";
    fn validate(&self) -> Result<(), Invalid> {
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.audio_memory_bytes < 16 << 20 {
            return bad("audio_memory_bytes", "must be at least 16 MiB (16777216)");
        }
        if self.audio_memory_bytes > 1 << 42 {
            return bad("audio_memory_bytes", "must be at most 4 TiB");
        }
        Ok(())
    }
}

/// `[telemetry]`: logs, metrics and health endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Address of the `/metrics`, `/healthz` and `/readyz` server
    /// (`127.0.0.1:0` picks a free port).
    pub metrics_addr: String,
    /// `text` or `json` logs; filter them with `RUST_LOG`.
    pub log_format: LogFormat,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            metrics_addr: "0.0.0.0:9464".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl SectionSpec for TelemetrySection {
    const NAME: &'static str = "telemetry";
    fn validate(&self) -> Result<(), Invalid> {
        if self.metrics_addr.is_empty() {
            return bad("metrics_addr", "must not be empty");
        }
        Ok(())
    }
}

/// `[clean]`: how the clean stage splits activity logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanSection {
    /// Byte size of one clean piece when a big activity file is split across
    /// clean workers: byte ranges of plain JSON Lines files, and the segments
    /// the pre-pass cuts from the decompressed bytes of gzip and JSON-array
    /// files.
    pub piece_bytes: u64,
    /// Number of learner partitions per clean piece (match jobs per piece).
    pub partitions: u32,
    /// Seconds a clean job may hold its delivery before RabbitMQ gives up on
    /// the consumer, sent as the consumer's `x-consumer-timeout` argument (0:
    /// the broker's `consumer_timeout`, 30 min by default). The pre-pass of a
    /// gzip or JSON-array log decompresses the whole file in one job, so the
    /// clean stage asks for longer than the other stages. Honoured by RabbitMQ 3.12 and later
    /// (and 3.11.15+); older brokers ignore it and apply their global timeout.
    pub consumer_timeout_s: u64,
}

impl Default for CleanSection {
    fn default() -> Self {
        Self {
            piece_bytes: 256 * 1024 * 1024,
            partitions: 16,
            consumer_timeout_s: 6 * 3600,
        }
    }
}

impl SectionSpec for CleanSection {
    const NAME: &'static str = "clean";
    fn validate(&self) -> Result<(), Invalid> {
        if self.partitions == 0 || self.partitions > engage_model::job_ids::MAX_PARTITIONS {
            return bad("partitions", "must be within 1..=4096");
        }
        if self.piece_bytes == 0 {
            return bad("piece_bytes", "must be at least 1");
        }
        Ok(())
    }
}

/// `[download]`: where audio may come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadSection {
    /// Buckets audio may be fetched from; any other bucket or host is
    /// rejected. Comma-separated in the environment.
    pub audio_buckets: Vec<String>,
}

impl SectionSpec for DownloadSection {
    const NAME: &'static str = "download";
}

/// `[analyze]`: which analyzer runs, and how Gemini jobs wait for quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzeSection {
    /// `acoustic` (offline, default) or `gemini` (needs the `[gemini]`
    /// section and `GEMINI_API_KEY`).
    pub analyzer: AnalyzerKind,
    /// How long a job may hold its delivery waiting for its Gemini slot
    /// (seconds). A slot further away releases the job to the wait queues
    /// for exactly the predicted wait. The default (90) covers a whole
    /// minute window, so per-minute waits never leave the worker; keep it
    /// far below the broker's `consumer_timeout` (RabbitMQ: 30 min).
    pub max_permit_wait_s: u64,
    /// Lifetime of the lease that keeps two deliveries of one audio from
    /// both paying (seconds). The holder renews it every third of this for
    /// as long as its call runs, Files API upload and polling included, so
    /// this is how soon a lease whose holder died frees, not a cap on a call.
    pub lease_ttl_s: u64,
    /// Transit allowance added to every quota window (milliseconds): the
    /// part of the time between a permit's booked send time and Gemini
    /// counting the request that a worker cannot measure (the network, and
    /// how much it varies). The measured part (Redis round trip, timer
    /// overshoot) is added on top, fleet-wide.
    pub transit_margin_ms: u64,
}

impl Default for AnalyzeSection {
    fn default() -> Self {
        Self {
            analyzer: AnalyzerKind::Acoustic,
            max_permit_wait_s: 90,
            lease_ttl_s: 15,
            transit_margin_ms: 250,
        }
    }
}

impl SectionSpec for AnalyzeSection {
    const NAME: &'static str = "analyze";

    fn validate(&self) -> Result<(), Invalid> {
        if self.max_permit_wait_s > 900 {
            return bad(
                "max_permit_wait_s",
                "must be at most 900 s: a held delivery must stay far below the broker's consumer timeout",
            );
        }
        if self.lease_ttl_s < 3 {
            return bad("lease_ttl_s", "must be at least 3 s (renewed every third)");
        }
        if self.transit_margin_ms > 10_000 {
            return bad("transit_margin_ms", "must be at most 10,000 ms");
        }
        Ok(())
    }
}

/// `[aggregate]`: how the per-learner scores combine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateSection {
    /// Weights of the combined score (engagement, emotional, accuracy).
    /// Comma-separated in the environment.
    pub weights: [f64; 3],
    /// Seconds between the reconciler's sweeps of open batches (the
    /// reconciler runs in aggregate workers, one leader at a time).
    pub reconcile_every_s: u64,
    /// Seconds an open batch must make no progress before the reconciler
    /// repairs it (restores lost ledger entries from the store, re-publishes
    /// work no queue holds). Longer than a normal pause between progress.
    pub reconcile_stall_s: u64,
}

impl Default for AggregateSection {
    fn default() -> Self {
        Self {
            weights: [0.4, 0.2, 0.4],
            reconcile_every_s: 15,
            reconcile_stall_s: 120,
        }
    }
}

impl AggregateSection {
    /// The sweep interval.
    pub fn reconcile_every(&self) -> Duration {
        Duration::from_secs(self.reconcile_every_s)
    }
    /// How long a batch must stall before it is repaired.
    pub fn reconcile_stall(&self) -> Duration {
        Duration::from_secs(self.reconcile_stall_s)
    }
}

impl SectionSpec for AggregateSection {
    const NAME: &'static str = "aggregate";
    fn validate(&self) -> Result<(), Invalid> {
        if self.weights.iter().any(|w| !w.is_finite() || *w < 0.0)
            || self.weights.iter().sum::<f64>() <= 0.0
        {
            return bad("weights", "must be non-negative and not all zero");
        }
        if self.reconcile_every_s == 0 {
            return bad("reconcile_every_s", "must be at least 1");
        }
        Ok(())
    }
}
