//! RabbitMQ: the topology of one namespace and a publisher with confirms.
//!
//! Per stage (namespace `ns`):
//! - `ns.STAGE` — quorum work queue bound to exchange `ns.jobs` with key `STAGE`;
//!   `x-delivery-limit` dead-letters a message that crashed its worker too often
//!   (at-least-once dead-lettering, which needs `x-overflow: reject-publish`);
//! - `ns.STAGE.retry.N` — classic durable delay queues, one per retry tier, whose
//!   `x-message-ttl` returns messages to `ns.STAGE` through the default exchange
//!   (delayed retry that survives a broker restart and blocks no consumer);
//! - `ns.STAGE.dlq` — quorum dead-letter queue; messages carry `x-engage-*`
//!   headers with the reason, stage, attempts and last error. Its
//!   `x-delivery-limit` is [`DLQ_DELIVERY_LIMIT`], stated explicitly: with no
//!   argument RabbitMQ ≥ 4.0 applies a limit of 20 and *drops* a message past
//!   it, so reading a dead-letter queue (`basic.get`, then requeue) twenty
//!   times would empty it;
//! - `ns.wait.R` (R = 0..12) — the wait ladder, shared by every stage: rung R
//!   holds a message 2^R seconds, then dead-letters it to `ns.jobs` under its
//!   own routing key (its stage). A job told to wait `d` carries its due time
//!   (`x-engage-due`, ms since the epoch) and hops down the rungs, largest
//!   first, until it is due: any wait, to the second, with 13 queues, apart
//!   from the retry tiers of failing jobs (see [`rung_for`]).
//!
//! Delivery limits: every quorum queue (work and dead-letter) states its
//! `x-delivery-limit`, so no broker default applies. The retry tiers and the
//! wait ladder are classic queues, which count no deliveries (RabbitMQ refuses
//! `x-delivery-limit` on a classic queue with `PRECONDITION_FAILED`) and which
//! nothing consumes: their messages only expire back to a work queue.
//!
//! Every publish is persistent, mandatory and waits for its publisher confirm.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde::Serialize;

use engage_model::envelope::{Envelope, StageName};

/// Broker failures. All are transient from a job's point of view: the worker
/// reconnects and the message is redelivered.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting, opening a channel or declaring the topology failed.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] lapin::Error),
    /// A publish or its confirm failed at the protocol level.
    #[error("publish failed: {0}")]
    Publish(#[source] lapin::Error),
    /// The broker refused the message (negative confirm, e.g. queue full).
    #[error("broker nacked the publish to {0}")]
    Nacked(String),
    /// No queue is bound for the routing key (mandatory publish returned).
    #[error("unroutable publish to {0}: topology not declared?")]
    Unroutable(String),
    /// The message could not be serialised.
    #[error("cannot serialise message: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Names and arguments of one namespace's queues.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Queue and exchange prefix.
    pub namespace: String,
    /// Retry tier delays, in milliseconds.
    pub retry_delays_ms: Vec<u64>,
    /// Quorum `x-delivery-limit`.
    pub delivery_limit: u32,
}

/// What a dead-lettered message says about itself (stored as headers).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Short stable reason: `undecodable`, `max_attempts`, `poison` (a panic
    /// is a transient error: retried, then `max_attempts`).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, one line.
    pub error: String,
}

/// The `x-delivery-limit` of every dead-letter queue: the largest the
/// argument holds, so that no number of reads reaches it.
///
/// Not `-1`: RabbitMQ 4.x reads `-1` as "no limit", but 3.x compares the
/// delivery count with it: on RabbitMQ 3.10.8 a quorum queue declared with
/// `-1` dropped its message on the first `basic.nack` with requeue. A requeue counts as a delivery on
/// RabbitMQ < 4.3 (`basic.nack` no longer does from 4.3 on); a message listed
/// once a second would reach this limit after 68 years.
pub const DLQ_DELIVERY_LIMIT: i32 = i32::MAX;

/// The arguments of a dead-letter queue: quorum (replicated), and
/// [`DLQ_DELIVERY_LIMIT`].
pub fn dlq_arguments() -> FieldTable {
    let mut dlq = FieldTable::default();
    put_str(&mut dlq, "x-queue-type", "quorum");
    dlq.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DLQ_DELIVERY_LIMIT),
    );
    dlq
}

/// Rungs of the wait ladder: rung `r` holds a message `2^r` seconds.
pub const WAIT_RUNGS: u32 = 13;

/// Header carrying a waiting job's due time (ms since the epoch).
pub const DUE_HEADER: &str = "x-engage-due";

/// Header the wait ladder routes on. Not `x-` prefixed: a headers exchange
/// ignores `x-` headers when it matches, so such a binding would match every
/// message and copy each parked job into every rung.
pub const RUNG_HEADER: &str = "engage-rung";

/// The rung a job with `left` to wait goes to next: the longest rung not
/// past it (rung 0 for less than a second), or `None` when it is due (less
/// than half a second left). Hops from a wait `d` land within half a second
/// of it: 45 s is 32 + 8 + 4 + 1, never a 120 s tier.
pub fn rung_for(left: Duration) -> Option<u32> {
    if left < Duration::from_millis(500) {
        return None;
    }
    let secs = left.as_secs().max(1);
    Some((u64::BITS - 1 - secs.leading_zeros()).min(WAIT_RUNGS - 1))
}

impl Topology {
    /// The headers exchange of the wait ladder.
    pub fn wait_exchange(&self) -> String {
        format!("{}.wait", self.namespace)
    }
    /// The queue of one rung of the wait ladder.
    pub fn wait_queue(&self, rung: u32) -> String {
        format!("{}.wait.{}", self.namespace, rung)
    }
    /// The direct exchange that routes jobs to stage queues.
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }
    /// The work queue of a stage.
    pub fn work_queue(&self, s: StageName) -> String {
        format!("{}.{}", self.namespace, s)
    }
    /// The delay queue of a retry tier.
    pub fn retry_queue(&self, s: StageName, tier: usize) -> String {
        format!("{}.{}.retry.{}", self.namespace, s, tier)
    }
    /// The dead-letter queue of a stage.
    pub fn dlq(&self, s: StageName) -> String {
        format!("{}.{}.dlq", self.namespace, s)
    }
    /// The tier used for the n-th retry (0-based), capped at the last tier.
    pub fn tier_for_attempt(&self, attempt: u32) -> usize {
        (attempt as usize).min(self.retry_delays_ms.len().saturating_sub(1))
    }

    /// Declares exchange and queues for the given stages. Idempotent: the same
    /// arguments can be declared any number of times by any number of workers.
    pub async fn declare(&self, ch: &Channel, stages: &[StageName]) -> Result<(), BrokerError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.exchange().into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(BrokerError::Unavailable)?;
        self.declare_wait_ladder(ch).await?;
        for &s in stages {
            let mut work = FieldTable::default();
            put_str(&mut work, "x-queue-type", "quorum");
            work.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(self.delivery_limit as i32),
            );
            put_str(&mut work, "x-dead-letter-exchange", "");
            put_str(&mut work, "x-dead-letter-routing-key", &self.dlq(s));
            put_str(&mut work, "x-dead-letter-strategy", "at-least-once");
            put_str(&mut work, "x-overflow", "reject-publish");
            ch.queue_declare(self.work_queue(s).into(), durable, work)
                .await
                .map_err(BrokerError::Unavailable)?;
            ch.queue_bind(
                self.work_queue(s).into(),
                self.exchange().into(),
                s.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::Unavailable)?;
            ch.queue_declare(self.dlq(s).into(), durable, dlq_arguments())
                .await
                .map_err(BrokerError::Unavailable)?;
            for (tier, ms) in self.retry_delays_ms.iter().enumerate() {
                let mut retry = FieldTable::default();
                retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(*ms as i64));
                put_str(&mut retry, "x-dead-letter-exchange", "");
                put_str(&mut retry, "x-dead-letter-routing-key", &self.work_queue(s));
                ch.queue_declare(self.retry_queue(s, tier).into(), durable, retry)
                    .await
                    .map_err(BrokerError::Unavailable)?;
            }
        }
        Ok(())
    }

    /// Jobs parked on the wait ladder now (passive declares: nothing is
    /// created; an error if the ladder is not declared yet).
    pub async fn parked_jobs(&self, ch: &Channel) -> Result<u64, BrokerError> {
        let mut parked = 0;
        for rung in 0..WAIT_RUNGS {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let q = ch
                .queue_declare(
                    self.wait_queue(rung).as_str().into(),
                    passive,
                    FieldTable::default(),
                )
                .await
                .map_err(BrokerError::Unavailable)?;
            parked += u64::from(q.message_count());
        }
        Ok(parked)
    }

    /// The wait ladder: a headers exchange routing on [`RUNG_HEADER`] to one
    /// classic queue per rung, each returning its messages to `ns.jobs`
    /// under their own routing key after `2^rung` seconds.
    async fn declare_wait_ladder(&self, ch: &Channel) -> Result<(), BrokerError> {
        ch.exchange_declare(
            self.wait_exchange().into(),
            lapin::ExchangeKind::Headers,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(BrokerError::Unavailable)?;
        for rung in 0..WAIT_RUNGS {
            let mut q = FieldTable::default();
            q.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(1_000_i64 << rung),
            );
            put_str(&mut q, "x-dead-letter-exchange", &self.exchange());
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare(self.wait_queue(rung).into(), durable, q)
                .await
                .map_err(BrokerError::Unavailable)?;
            let mut bind = FieldTable::default();
            put_str(&mut bind, "x-match", "all");
            put_str(&mut bind, RUNG_HEADER, &rung.to_string());
            ch.queue_bind(
                self.wait_queue(rung).into(),
                self.wait_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                bind,
            )
            .await
            .map_err(BrokerError::Unavailable)?;
        }
        Ok(())
    }
}

fn put_str(t: &mut FieldTable, k: &str, v: &str) {
    t.insert(
        ShortString::from(k),
        AMQPValue::LongString(LongString::from(v)),
    );
}

/// Adds `heartbeat=30` to an AMQP URL that does not set one, so a dead peer is
/// noticed within a minute.
pub fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&heartbeat=30")
    } else {
        format!("{url}?heartbeat=30")
    }
}

/// The node URLs of `url`: one AMQP URL, or the comma-separated URLs of a
/// cluster's nodes.
pub fn node_urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Where the next connection attempt starts in a node list: each attempt
/// starts one node further, from a per-process offset, so that a fleet spreads
/// over a cluster's nodes and a reconnect after a node's loss tries another
/// node first.
fn next_start(nodes: usize) -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (n + std::process::id() as usize) % nodes.max(1)
}

/// Opens a connection named after the process (visible in the management UI).
///
/// `url` may list several nodes of a cluster, comma-separated: they are tried
/// in turn (starting one node further at each call) until one accepts; the
/// error is the last node's. Lapin has no failover of its own.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let nodes = node_urls(url);
    let start = next_start(nodes.len());
    let mut last = None;
    for i in 0..nodes.len() {
        let node = nodes[(start + i) % nodes.len()];
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(&with_heartbeat(node), props).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::debug!(node = i, error = %e, "broker node refused the connection");
                last = Some(e);
            }
        }
    }
    Err(BrokerError::Unavailable(last.unwrap_or_else(|| {
        lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no AMQP URL given",
        )))
        .into()
    })))
}

/// A channel in confirm mode that publishes jobs, retries and dead letters.
#[derive(Clone)]
pub struct Publisher {
    ch: Channel,
    topo: Topology,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("namespace", &self.topo.namespace)
            .finish()
    }
}

impl Publisher {
    /// Opens a confirm-mode channel on `conn`.
    pub async fn open(conn: &Connection, topo: Topology) -> Result<Self, BrokerError> {
        let ch = conn
            .create_channel()
            .await
            .map_err(BrokerError::Unavailable)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::Unavailable)?;
        Ok(Self { ch, topo })
    }

    /// The topology this publisher routes by.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The underlying channel (for declarations and `basic_get`).
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// Publishes a job to a stage's work queue and waits for the confirm.
    pub async fn publish_job<J: Serialize>(
        &self,
        stage: StageName,
        env: &Envelope<J>,
    ) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(env)?;
        self.publish_raw(
            &self.topo.exchange(),
            stage.as_str(),
            &body,
            job_props(&env.job_id, FieldTable::default()),
        )
        .await
    }

    /// Publishes a body to a retry tier; it returns to the work queue after the
    /// tier's delay (the message TTL is 80-100% of the tier's delay: jitter).
    pub async fn publish_retry(
        &self,
        stage: StageName,
        tier: usize,
        body: &[u8],
        job_id: &str,
    ) -> Result<(), BrokerError> {
        let tier = tier.min(self.topo.retry_delays_ms.len().saturating_sub(1));
        let ttl = self
            .topo
            .retry_delays_ms
            .get(tier)
            .copied()
            .unwrap_or(1_000);
        let jittered = (ttl as f64 * rand::random_range(0.8..=1.0)).max(1.0) as u64;
        let props =
            job_props(job_id, FieldTable::default()).with_expiration(jittered.to_string().into());
        self.publish_raw("", &self.topo.retry_queue(stage, tier), body, props)
            .await
    }

    /// Parks a job on rung `rung` of the wait ladder; it comes back to the
    /// stage's work queue after `2^rung` seconds, still due at `due_ms`
    /// (the worker sends it down the ladder again until it is due).
    pub async fn publish_wait(
        &self,
        stage: StageName,
        rung: u32,
        body: &[u8],
        job_id: &str,
        due_ms: i64,
    ) -> Result<(), BrokerError> {
        let mut h = FieldTable::default();
        put_str(&mut h, RUNG_HEADER, &rung.min(WAIT_RUNGS - 1).to_string());
        h.insert(DUE_HEADER.into(), AMQPValue::LongLongInt(due_ms));
        // The ladder's exchange routes by header; the routing key is the
        // stage's, which the rung's dead-lettering keeps.
        self.publish_raw(
            &self.topo.wait_exchange(),
            stage.as_str(),
            body,
            job_props(job_id, h),
        )
        .await
    }

    /// Publishes a body to the stage's dead-letter queue with its reason headers.
    pub async fn publish_dead_letter(
        &self,
        stage: StageName,
        body: &[u8],
        job_id: &str,
        dl: &DeadLetter,
    ) -> Result<(), BrokerError> {
        let mut h = FieldTable::default();
        put_str(&mut h, "x-engage-reason", &dl.reason);
        put_str(&mut h, "x-engage-stage", stage.as_str());
        h.insert(
            "x-engage-attempts".into(),
            AMQPValue::LongLongInt(dl.attempts as i64),
        );
        put_str(&mut h, "x-engage-error", &truncate(&dl.error, 1000));
        put_str(
            &mut h,
            "x-engage-dead-lettered-at",
            &chrono::Utc::now().to_rfc3339(),
        );
        self.publish_raw("", &self.topo.dlq(stage), body, job_props(job_id, h))
            .await
    }

    /// Publishes and waits for the broker's confirm; a nack or return is an error.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .ch
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(BrokerError::Publish)?
            .await
            .map_err(BrokerError::Publish)?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(key.to_string())),
            Confirmation::Nack(_) => Err(BrokerError::Nacked(key.to_string())),
        }
    }
}

fn job_props(job_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(job_id.into())
        .with_headers(headers)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Reads a string header (long or short string) from message properties.
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    let h = props.headers().as_ref()?;
    match h.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_list_splits_on_commas() {
        assert_eq!(
            node_urls("amqp://a:1/%2f, amqp://b:2/%2f,"),
            vec!["amqp://a:1/%2f", "amqp://b:2/%2f"]
        );
        assert_eq!(node_urls("amqp://x/%2f"), vec!["amqp://x/%2f"]);
        assert!(node_urls(" , ").is_empty());
    }

    #[test]
    fn each_connection_attempt_starts_one_node_further() {
        let a = next_start(3);
        let b = next_start(3);
        assert_eq!((a + 1) % 3, b);
        assert_eq!(next_start(1), 0);
    }

    #[test]
    fn the_wait_ladder_reaches_any_wait_within_half_a_second() {
        assert_eq!(rung_for(Duration::from_millis(499)), None);
        assert_eq!(rung_for(Duration::from_millis(500)), Some(0));
        assert_eq!(rung_for(Duration::from_millis(1_999)), Some(0));
        assert_eq!(rung_for(Duration::from_secs(2)), Some(1));
        assert_eq!(rung_for(Duration::from_secs(45)), Some(5));
        assert_eq!(rung_for(Duration::from_secs(86_400)), Some(WAIT_RUNGS - 1));
        // Follow the hops of every wait up to two hours (and a day): each
        // lands within half a second of the wait, never past it by more.
        let hops_of = |wait_ms: u64| {
            let (mut left, mut waited, mut hops) = (wait_ms as i64, 0_i64, Vec::new());
            while let Some(r) = rung_for(Duration::from_millis(left.max(0) as u64)) {
                let rung_ms = 1_000_i64 << r;
                waited += rung_ms;
                left -= rung_ms;
                hops.push(r);
            }
            (waited, hops)
        };
        for wait_ms in (0..7_200_000).step_by(250).chain([86_400_000]) {
            let (waited, _) = hops_of(wait_ms);
            let error = waited - wait_ms as i64;
            assert!(
                error.abs() <= 500,
                "wait {wait_ms} ms served as {waited} ms"
            );
        }
        assert_eq!(hops_of(45_000), (45_000, vec![5, 3, 2, 0]));
    }

    fn topo() -> Topology {
        Topology {
            namespace: "t".into(),
            retry_delays_ms: vec![1000, 5000, 30000],
            delivery_limit: 3,
        }
    }

    #[test]
    fn names() {
        let t = topo();
        assert_eq!(t.work_queue(StageName::Match), "t.match");
        assert_eq!(t.retry_queue(StageName::Match, 2), "t.match.retry.2");
        assert_eq!(t.dlq(StageName::Analyze), "t.analyze.dlq");
        assert_eq!(t.exchange(), "t.jobs");
    }

    #[test]
    fn tiers() {
        let t = topo();
        assert_eq!(t.tier_for_attempt(0), 0);
        assert_eq!(t.tier_for_attempt(9), 2);
    }

    #[test]
    fn heartbeat_added_once() {
        assert_eq!(with_heartbeat("amqp://h"), "amqp://h?heartbeat=30");
        assert_eq!(with_heartbeat("amqp://h?x=1"), "amqp://h?x=1&heartbeat=30");
        assert_eq!(
            with_heartbeat("amqp://h?heartbeat=5"),
            "amqp://h?heartbeat=5"
        );
    }
}
