//! The services a worker process shares between its jobs: configuration,
//! broker topology, Redis (idempotency and the batch ledger), the store and
//! metrics. Built once at start-up from [`FleetConfig`].

use std::sync::Arc;

use anyhow::Context;

use crate::broker::Topology;
use crate::config::FleetConfig;
use crate::health::Health;
use crate::idempotency::Idempotency;
use crate::item_log::ItemLog;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::redis_conn::RedisConn;
use crate::storage::{ObjectUri, Storage, StorageConfig};
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
}

impl Services {
    /// Connects to Redis and builds the store client. Fails with a clear
    /// message naming the endpoint (without credentials) if Redis is down.
    pub async fn connect(cfg: FleetConfig) -> anyhow::Result<Arc<Self>> {
        let redis = RedisConn::connect(cfg.redis_url.expose(), cfg.redis_cluster)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Redis at {}",
                    crate::secret::redact_url(cfg.redis_url.expose())
                )
            })?;
        let storage = Storage::new(&storage_config(&cfg))
            .await
            .context("cannot set up the object store")?;
        let store_root = ObjectUri::parse(&cfg.store)
            .with_context(|| format!("invalid store URI {:?}", cfg.store))?;
        let topology = Topology {
            namespace: cfg.namespace.clone(),
            retry_delays_ms: cfg.retry_delays_ms.clone(),
            delivery_limit: cfg.delivery_limit,
        };
        let metrics = Metrics::new();
        Ok(Arc::new(Self {
            idempotency: Idempotency::new(redis.clone(), cfg.namespace.clone()),
            ledger: Ledger::new(redis.clone(), cfg.namespace.clone()),
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

/// The store settings of a fleet configuration.
pub fn storage_config(cfg: &FleetConfig) -> StorageConfig {
    StorageConfig {
        s3_endpoint: cfg.s3_endpoint.clone(),
        // An explicit region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)
        // keeps the SDK from probing instance metadata at start-up, which
        // stalls and warns off EC2 and is pointless for a file:// store.
        s3_region: cfg
            .s3_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .or_else(|| Some("us-east-1".to_string())),
        s3_force_path_style: cfg.s3_force_path_style,
        s3_root: cfg.s3_root.clone(),
        inline_read_bytes: cfg.store_inline_read_bytes,
        ..StorageConfig::default()
    }
}
