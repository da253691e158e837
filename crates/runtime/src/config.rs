//! Fleet configuration: defaults, then an optional TOML file (`ENGAGE_CONFIG`),
//! then `ENGAGE_*` environment variables (layered with the `config` crate).
//!
//! Every worker reads the same [`FleetConfig`]; a stage uses the parts it needs.
//! The `///` docs on each field are the user documentation (the README's
//! configuration table is generated from the same words).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or did not match the schema.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// A value is present but not acceptable.
    #[error("invalid configuration value for {field}: {why}")]
    Value { field: &'static str, why: String },
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

/// The whole fleet configuration (environment: `ENGAGE_<FIELD>` in upper case).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Path of the TOML file this configuration was read from, if any (`ENGAGE_CONFIG`).
    pub config: Option<PathBuf>,
    /// AMQP URL of RabbitMQ, with credentials. Secret: never logged.
    pub amqp_url: Secret<String>,
    /// Redis URL (`redis://host:port`), or a comma-separated list of cluster nodes
    /// when `redis_cluster` is true. Secret: never logged.
    pub redis_url: Secret<String>,
    /// Treat `redis_url` as the seed nodes of a Redis Cluster.
    pub redis_cluster: bool,
    /// Prefix of every queue, exchange and Redis key, so several fleets (and
    /// parallel tests) share one broker and one Redis.
    pub namespace: String,
    /// Root URI of the pipeline's own store (`file:///var/lib/engage` or `s3://bucket/prefix`).
    pub store: String,
    /// Local files (`file://` store, `s3_root`) of at most this many bytes are
    /// read without a thread hand-off; 0 when the local store is a network
    /// filesystem.
    pub store_inline_read_bytes: u64,
    /// Custom S3 endpoint (for S3-compatible servers); unset means AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region (default from the AWS chain, else `us-east-1`).
    pub s3_region: Option<String>,
    /// Use path-style S3 addressing (needed by most local S3-compatible servers).
    pub s3_force_path_style: bool,
    /// Read `s3://bucket/key` from `DIR/bucket/key` instead of S3 (local layout).
    pub s3_root: Option<PathBuf>,
    /// Buckets audio may be fetched from; any other bucket or host is rejected. Comma-separated in env.
    pub audio_buckets: Vec<String>,
    /// `acoustic` (default) or `gemini`.
    pub analyzer: AnalyzerKind,
    /// Jobs processed concurrently by one worker process (the AMQP prefetch is
    /// twice this, room for acks being batched).
    pub concurrency: u16,
    /// Address of the `/metrics`, `/healthz` and `/readyz` server.
    pub metrics_addr: String,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
    /// Attempts before a job that keeps failing transiently goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Delays of the retry tiers in milliseconds (attempt n waits tier n, ±20% jitter).
    pub retry_delays_ms: Vec<u64>,
    /// Redeliveries after worker crashes before RabbitMQ dead-letters a message (quorum `x-delivery-limit`).
    pub delivery_limit: u32,
    /// Seconds SIGTERM waits for in-flight jobs before exiting.
    pub drain_timeout_s: u64,
    /// How long a job may wait for a rate-limit permit before it is released with a delay (seconds).
    pub max_permit_wait_s: u64,
    /// Byte size of one clean piece when a big activity file is split across clean workers.
    pub clean_piece_bytes: u64,
    /// Number of learner partitions per clean piece (match jobs per piece).
    pub partitions: u32,
    /// Weights of the combined score (engagement, emotional, accuracy).
    pub weights: [f64; 3],
    /// Gemini client settings (`ENGAGE_GEMINI__MODEL`, `ENGAGE_GEMINI__BASE_URL`, …;
    /// see the README); the API key comes from `GEMINI_API_KEY`.
    pub gemini: serde_json::Value,
    /// Gemini quota of the API key, shared by every analyze worker: requests per minute.
    pub gemini_rpm: u32,
    /// Gemini quota: input tokens per minute (estimated at 32 tokens per second of audio plus the prompt).
    pub gemini_tpm: u64,
    /// Gemini quota: requests per day (0 = no daily limit).
    pub gemini_rpd: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            config: None,
            amqp_url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            redis_url: Secret::new("redis://127.0.0.1:6379".into()),
            redis_cluster: false,
            namespace: "engage".into(),
            store: "file:///var/lib/engage".into(),
            store_inline_read_bytes: crate::storage::DEFAULT_INLINE_READ_BYTES,
            s3_endpoint: None,
            s3_region: None,
            s3_force_path_style: false,
            s3_root: None,
            audio_buckets: Vec::new(),
            analyzer: AnalyzerKind::Acoustic,
            concurrency: 32,
            metrics_addr: "0.0.0.0:9464".into(),
            log_format: LogFormat::Text,
            max_attempts: 5,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000],
            delivery_limit: 5,
            drain_timeout_s: 30,
            max_permit_wait_s: 20,
            clean_piece_bytes: 256 * 1024 * 1024,
            partitions: 16,
            weights: [0.4, 0.2, 0.4],
            gemini: serde_json::Value::Object(Default::default()),
            gemini_rpm: 1_000,
            gemini_tpm: 1_000_000,
            gemini_rpd: 10_000,
        }
    }
}

impl FleetConfig {
    /// Loads defaults → `ENGAGE_CONFIG` file (if set) → `ENGAGE_*` environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("ENGAGE_CONFIG").map(PathBuf::from);
        Self::load_from(file.as_deref(), config::Environment::with_prefix("ENGAGE"))
    }

    /// Loads from an explicit file and environment source (tests pass their own).
    pub fn load_from(
        file: Option<&std::path::Path>,
        env: config::Environment,
    ) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&DefaultsForConfig(FleetConfig::default()))?;
        let mut b = config::Config::builder().add_source(defaults);
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).required(true));
        }
        let env = env
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("audio_buckets")
            .with_list_parse_key("retry_delays_ms")
            .with_list_parse_key("weights");
        let cfg: FleetConfig = b.add_source(env).build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that the schema alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why: &str| {
            Err(ConfigError::Value {
                field,
                why: why.to_string(),
            })
        };
        if self.namespace.is_empty()
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad("namespace", "must be non-empty [A-Za-z0-9._-]");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.retry_delays_ms.is_empty() {
            return bad("retry_delays_ms", "needs at least one delay");
        }
        if self.partitions == 0 {
            return bad("partitions", "must be at least 1");
        }
        if self.weights.iter().any(|w| !w.is_finite() || *w < 0.0)
            || self.weights.iter().sum::<f64>() <= 0.0
        {
            return bad("weights", "must be non-negative and not all zero");
        }
        Ok(())
    }

    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_s)
    }
}

/// Serialises defaults with the real secret values (the `Secret` serializer
/// redacts, which would make the redacted text the default).
struct DefaultsForConfig(FleetConfig);

impl Serialize for DefaultsForConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("amqp_url".into(), self.0.amqp_url.expose().clone().into());
            o.insert("redis_url".into(), self.0.redis_url.expose().clone().into());
            o.remove("config");
            o.retain(|_, v| !v.is_null());
        }
        v.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> config::Environment {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config::Environment::with_prefix("ENGAGE").source(Some(m))
    }

    #[test]
    fn defaults_then_env_overlay() {
        let c = FleetConfig::load_from(
            None,
            env(&[
                ("ENGAGE_NAMESPACE", "t1"),
                ("ENGAGE_AUDIO_BUCKETS", "a-bkt,b-bkt"),
                ("ENGAGE_CONCURRENCY", "8"),
                ("ENGAGE_ANALYZER", "gemini"),
                ("ENGAGE_AMQP_URL", "amqp://u:p@h:1/%2f"),
                ("ENGAGE_WEIGHTS", "0.5,0.25,0.25"),
                ("ENGAGE_RETRY_DELAYS_MS", "100,200"),
                ("ENGAGE_GEMINI__MODEL", "gemini-x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.namespace, "t1");
        assert_eq!(c.audio_buckets, vec!["a-bkt", "b-bkt"]);
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.analyzer, AnalyzerKind::Gemini);
        assert_eq!(c.amqp_url.expose(), "amqp://u:p@h:1/%2f");
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.weights, [0.5, 0.25, 0.25]);
        assert_eq!(c.retry_delays_ms, vec![100, 200]);
        assert_eq!(c.gemini["model"], "gemini-x");
        assert!(!format!("{c:?}").contains("u:p@"));
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("engage.toml");
        std::fs::write(&f, "namespace = \"from-file\"\nconcurrency = 3\n").unwrap();
        let c = FleetConfig::load_from(Some(&f), env(&[("ENGAGE_CONCURRENCY", "4")])).unwrap();
        assert_eq!(c.namespace, "from-file");
        assert_eq!(c.concurrency, 4);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("engage.toml");
        std::fs::write(&f, "namespase = \"typo\"\n").unwrap();
        assert!(FleetConfig::load_from(Some(&f), env(&[])).is_err());
        assert!(FleetConfig::load_from(None, env(&[("ENGAGE_CONCURRENCY", "0")])).is_err());
        assert!(FleetConfig::load_from(None, env(&[("ENGAGE_NAMESPACE", "a b")])).is_err());
    }
}
