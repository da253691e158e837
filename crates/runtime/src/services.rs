//! The services a worker process shares between its jobs: configuration,
//! broker topology, Redis (idempotency and the batch ledger), the store and
//! metrics. Built once at start-up from [`FleetConfig`].

use std::sync::Arc;

use anyhow::Context;

use crate::audio_budget::{AudioBudget, BudgetMetrics};
use crate::broker::Topology;
use crate::config::FleetConfig;
use crate::health::Health;
use crate::idempotency::Idempotency;
use crate::item_log::ItemLog;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::redis_conn::RedisConn;
use crate::storage::{ObjectUri, S3Credentials, Storage, StorageConfig};
use engage_model::layout::Layout;

/// Everything a job handler may touch besides its own message.
#[derive(Debug)]
pub struct Services {
    /// The loaded configuration.
    pub cfg: Arc<FleetConfig>,
    /// Queue names of the namespace.
    pub topology: Topology,
    /// Redis connection (single node or cluster).
    pub redis: RedisConn,
    /// Completion markers and leases.
    pub idempotency: Idempotency,
    /// Batch progress and fan-in.
    pub ledger: Ledger,
    /// Object storage.
    pub storage: Storage,
    /// Root URI of the pipeline's own store.
    pub store_root: ObjectUri,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Group-committed log of item final states.
    pub item_log: ItemLog,
    /// Readiness facts.
    pub health: Arc<Health>,
    /// Bytes of audio this worker may hold at once.
    pub audio_budget: AudioBudget,
}

impl Services {
    /// Connects to Redis and builds the store client. Fails with a clear
    /// message naming the endpoint (without credentials) if Redis is down.
    pub async fn connect(cfg: FleetConfig) -> anyhow::Result<Arc<Self>> {
        let redis = RedisConn::connect(cfg.redis.url.expose(), cfg.redis.cluster)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Redis at {}",
                    crate::secret::redact_url(cfg.redis.url.expose())
                )
            })?;
        let storage = Storage::new(&storage_config(&cfg))
            .await
            .context("cannot set up the object store")?;
        let store_root = ObjectUri::parse(&cfg.store.root)
            .with_context(|| format!("invalid store URI {:?}", cfg.store.root))?;
        let topology = topology(&cfg);
        let metrics = Metrics::new();
        metrics
            .audio_memory_budget
            .set(i64::try_from(cfg.limits.audio_memory_bytes).unwrap_or(i64::MAX));
        let audio_budget =
            AudioBudget::new(cfg.limits.audio_memory_bytes).with_metrics(BudgetMetrics {
                reserved: metrics.audio_memory_reserved.clone(),
                waits: metrics.audio_memory_waits.clone(),
            });
        Ok(Arc::new(Self {
            audio_budget,
            idempotency: Idempotency::new(redis.clone(), cfg.fleet.namespace.clone()),
            ledger: Ledger::new(redis.clone(), cfg.fleet.namespace.clone()),
            topology,
            redis,
            item_log: ItemLog::new(
                storage.clone(),
                Layout::new(store_root.clone()),
                metrics.item_log_chunk_states.clone(),
            ),
            storage,
            store_root,
            metrics,
            health: Arc::new(Health::default()),
            cfg: Arc::new(cfg),
        }))
    }
}

/// The queue topology of a fleet configuration (workers and the CLI must agree on it).
pub fn topology(cfg: &FleetConfig) -> Topology {
    Topology {
        namespace: cfg.fleet.namespace.clone(),
        retry_delays_ms: cfg.broker.retry_delays_ms.clone(),
        delivery_limit: cfg.broker.delivery_limit,
    }
}

/// The store settings of a fleet configuration.
pub fn storage_config(cfg: &FleetConfig) -> StorageConfig {
    let st = &cfg.store;
    let s3_credentials = match (&st.s3_access_key_id, &st.s3_secret_access_key) {
        (Some(id), Some(secret)) => Some(S3Credentials {
            access_key_id: id.expose().clone(),
            secret_access_key: secret.clone(),
        }),
        _ => None,
    };
    StorageConfig {
        s3_endpoint: st.s3_endpoint.clone(),
        // An explicit region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)
        // keeps the SDK from probing instance metadata at start-up, which
        // stalls and warns off EC2 and is pointless for a file:// store.
        s3_region: st
            .s3_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .or_else(|| Some("us-east-1".to_string())),
        s3_force_path_style: st.s3_force_path_style,
        s3_root: st.s3_root.clone(),
        s3_credentials,
        inline_read_bytes: st.inline_read_bytes,
        ..StorageConfig::default()
    }
}
