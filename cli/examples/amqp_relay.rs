//! Bare RabbitMQ relay baseline for the fleet pipeline-overhead benchmark
//! (`bench/pipeline/`): how many persistent messages per second the local
//! broker moves through quorum queues with publisher confirms and manual acks
//! when nothing else happens — no Redis, no store, no JSON handling.
//!
//! ```text
//! cargo run --release -p engage --example amqp_relay -- \
//!     --messages 40000 --inflight 256 --hops 1 --body-bytes 400
//! ```
//!
//! Shape of one run (every queue is a fresh durable quorum queue, deleted at
//! the end):
//!
//! - a **producer** on its own connection publishes `--messages` persistent,
//!   mandatory messages to queue 0 on a confirm-mode channel, keeping up to
//!   `--inflight` publishes unconfirmed (concurrent confirms);
//! - with `--hops H > 1`, `H - 1` **relays** mimic the fleet's worker loop with
//!   zero work: each, on its own connection, consumes queue `i` with prefetch
//!   `--inflight`, publishes the message to queue `i + 1`, waits for that
//!   publish's confirm and only then acks the delivery (one task per delivery,
//!   like `engage_runtime::worker`);
//! - a **sink** on its own connection consumes the last queue with prefetch
//!   `--inflight` and acks every delivery.
//!
//! The clock runs from the first publish to the sink's last ack. Messages
//! moved = `messages × hops` (each is published once, confirmed, delivered
//! once and acked). One JSON line is printed on stdout.
//!
//! Only loopback brokers are accepted: the benchmark is a local measurement.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use tokio::task::JoinSet;

/// Errors that stop the benchmark.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    /// The broker refused a connection, channel, declaration or publish.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker negatively confirmed a publish or returned it unroutable.
    #[error("publish to {queue} not accepted: {confirm:?}")]
    Rejected {
        /// The queue published to.
        queue: String,
        /// What the broker answered.
        confirm: String,
    },
    /// A consumer stream ended before every message arrived.
    #[error("consumer of {0} ended early")]
    ConsumerEnded(String),
    /// The run did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The URL names a broker that is not on loopback.
    #[error("refusing non-loopback broker URL {0:?}")]
    NotLoopback(String),
    /// A task of the run panicked or was cancelled.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Invalid arguments.
    #[error("invalid arguments: {0}")]
    Args(&'static str),
}

/// Bare RabbitMQ relay throughput through quorum queues with publisher confirms.
#[derive(Debug, Parser)]
struct Args {
    /// Messages the producer publishes (each then crosses every hop).
    #[arg(long, default_value_t = 40_000)]
    messages: u64,
    /// Unconfirmed publishes of the producer, and the prefetch of every consumer.
    #[arg(long, default_value_t = 256)]
    inflight: u16,
    /// Queues in the chain (1 = producer → queue → sink).
    #[arg(long, default_value_t = 1)]
    hops: u32,
    /// Body size in bytes (the fleet's job envelopes are 300-500 bytes).
    #[arg(long, default_value_t = 400)]
    body_bytes: usize,
    /// Broker URL (loopback only).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or("");
    let host = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

async fn connect(url: &str, name: &str) -> Result<Connection, RelayError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, RelayError> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

fn props() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Publishes one persistent mandatory message and waits for its confirm.
async fn publish_confirmed(ch: &Channel, queue: &str, body: &[u8]) -> Result<(), RelayError> {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props(),
        )
        .await?
        .await?;
    check(queue, confirm)
}

fn check(queue: &str, confirm: Confirmation) -> Result<(), RelayError> {
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        other => Err(RelayError::Rejected {
            queue: queue.to_string(),
            confirm: format!("{other:?}"),
        }),
    }
}

/// The producer: `n` publishes to `queue`, at most `window` unconfirmed.
/// Returns when every publish is confirmed.
async fn produce(
    url: String,
    queue: String,
    n: u64,
    window: usize,
    body: Vec<u8>,
) -> Result<Instant, RelayError> {
    let conn = connect(&url, "amqp-relay-producer").await?;
    let ch = confirm_channel(&conn).await?;
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        while pending.len() >= window {
            if let Some(r) = pending.next().await {
                check(&queue, r?)?;
            }
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props(),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(r) = pending.next().await {
        check(&queue, r?)?;
    }
    let done = Instant::now();
    let _ = conn.close(200, "bye".into()).await;
    Ok(done)
}

/// A zero-work worker: consume `from`, publish to `to` with confirm, then ack.
/// Stops after `n` deliveries.
async fn relay(
    url: String,
    from: String,
    to: String,
    n: u64,
    prefetch: u16,
) -> Result<(), RelayError> {
    let conn = connect(&url, "amqp-relay-hop").await?;
    let publisher = confirm_channel(&conn).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            from.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut tasks = JoinSet::new();
    let mut seen = 0u64;
    while seen < n {
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => done??,
            next = consumer.next() => {
                let delivery = next.ok_or_else(|| RelayError::ConsumerEnded(from.clone()))??;
                seen += 1;
                let p = publisher.clone();
                let to = to.clone();
                tasks.spawn(async move {
                    publish_confirmed(&p, &to, &delivery.data).await?;
                    delivery.ack(BasicAckOptions::default()).await?;
                    Ok::<(), RelayError>(())
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// The sink: consume and ack `n` deliveries; returns when the last is acked.
async fn sink(url: String, queue: String, n: u64, prefetch: u16) -> Result<Instant, RelayError> {
    let conn = connect(&url, "amqp-relay-sink").await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..n {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| RelayError::ConsumerEnded(queue.clone()))??;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let done = Instant::now();
    let _ = conn.close(200, "bye".into()).await;
    Ok(done)
}

async fn declare(ch: &Channel, queue: &str) -> Result<(), RelayError> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    Ok(())
}

async fn run(a: &Args) -> Result<serde_json::Value, RelayError> {
    if !is_loopback(&a.amqp) {
        return Err(RelayError::NotLoopback(a.amqp.clone()));
    }
    if a.hops == 0 || a.inflight == 0 || a.messages == 0 {
        return Err(RelayError::Args(
            "--hops, --inflight and --messages must be positive",
        ));
    }
    let ns = format!(
        "bench-relay-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let queues: Vec<String> = (0..a.hops).map(|i| format!("{ns}.q{i}")).collect();
    let admin = connect(&a.amqp, "amqp-relay-admin").await?;
    let ch = admin.create_channel().await?;
    for q in &queues {
        declare(&ch, q).await?;
    }
    let body: Vec<u8> = (0..a.body_bytes).map(|i| b'a' + (i % 26) as u8).collect();

    let mut hops = JoinSet::new();
    for w in queues.windows(2) {
        hops.spawn(relay(
            a.amqp.clone(),
            w[0].clone(),
            w[1].clone(),
            a.messages,
            a.inflight,
        ));
    }
    let last = queues.last().cloned().unwrap_or_default();
    let sink_task = tokio::spawn(sink(a.amqp.clone(), last, a.messages, a.inflight));
    // Let the consumers register before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let producer = tokio::spawn(produce(
        a.amqp.clone(),
        queues[0].clone(),
        a.messages,
        usize::from(a.inflight),
        body,
    ));
    let limit = Duration::from_secs(a.timeout_s);
    let outcome = tokio::time::timeout(limit, async {
        let published = producer.await??;
        let drained = sink_task.await??;
        while let Some(h) = hops.join_next().await {
            h??;
        }
        Ok::<_, RelayError>((published, drained))
    })
    .await;
    for q in &queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = admin.close(200, "bye".into()).await;
    let (published, drained) = outcome.map_err(|_| RelayError::Timeout(limit))??;
    let secs = drained.duration_since(start).as_secs_f64();
    let moved = a.messages * u64::from(a.hops);
    Ok(serde_json::json!({
        "mode": "amqp_relay",
        "queue_type": "quorum",
        "hops": a.hops,
        "inflight": a.inflight,
        "body_bytes": a.body_bytes,
        "published": a.messages,
        "messages": moved,
        "seconds": secs,
        "publish_seconds": published.duration_since(start).as_secs_f64(),
        "msgs_per_s": moved as f64 / secs,
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("amqp_relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_only() {
        assert!(is_loopback("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert!(is_loopback("amqp://localhost"));
        assert!(is_loopback("amqp://u:p@[::1]:5672/%2f"));
        assert!(!is_loopback("amqp://guest:guest@10.0.0.5:5672/%2f"));
        assert!(!is_loopback("amqp://rabbit.example.com"));
    }
}
