//! `engage purge`: tears a namespace down — its queues and exchanges on the
//! broker and its keys in Redis — after a confirmation. The store (outputs,
//! results cache) is left alone: it is the durable record, deleted with the
//! storage's own tools. `engage demo` purges its namespace when it is done.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Args;
use engage_model::envelope::StageName;
use engage_runtime::broker::WAIT_RUNGS;
use engage_runtime::config::FleetConfig;
use engage_runtime::redis_conn::RedisConn;

use crate::fleet::{connect, redis, topology};

/// Arguments of `engage purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Do not ask: purge at once (scripts).
    #[arg(long)]
    pub yes: bool,
}

/// What a purge removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Queues deleted (with the messages they held).
    pub queues: usize,
    /// Messages those queues held.
    pub messages: u64,
    /// Redis keys deleted.
    pub keys: usize,
}

/// Every queue and exchange name of the namespace.
fn names(cfg: &FleetConfig) -> (Vec<String>, Vec<String>) {
    let topo = topology(cfg);
    let mut queues = Vec::new();
    for s in StageName::ALL {
        queues.push(topo.work_queue(s));
        queues.push(topo.dlq(s));
        queues.extend((0..topo.retry_delays_ms.len()).map(|t| topo.retry_queue(s, t)));
    }
    queues.extend((0..WAIT_RUNGS).map(|r| topo.wait_queue(r)));
    (queues, vec![topo.exchange(), topo.wait_exchange()])
}

/// `engage purge`: asks (unless `--yes`), then deletes.
pub(crate) async fn purge(cfg: &FleetConfig, a: &PurgeArgs) -> anyhow::Result<Purged> {
    let ns = &cfg.fleet.namespace;
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "engage purge deletes namespace {ns:?}: pass --yes to confirm without a terminal"
            );
        }
        print!(
            "Delete every queue (with its messages), exchange and Redis key of namespace {ns:?}? Type the namespace to confirm: "
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != ns {
            bail!("not confirmed: nothing deleted");
        }
    }
    delete(cfg).await
}

/// Deletes the namespace's queues, exchanges and Redis keys.
pub(crate) async fn delete(cfg: &FleetConfig) -> anyhow::Result<Purged> {
    let mut purged = Purged::default();
    let conn = connect(cfg).await?;
    let (queues, exchanges) = names(cfg);
    for q in queues {
        // A missing queue closes the channel: one channel per delete.
        let ch = conn.create_channel().await?;
        if let Ok(n) = ch.queue_delete(q.as_str().into(), Default::default()).await {
            purged.queues += 1;
            purged.messages += u64::from(n);
        }
        let _ = ch.close(200, "bye".into()).await;
    }
    for x in exchanges {
        let ch = conn.create_channel().await?;
        let _ = ch
            .exchange_delete(x.as_str().into(), Default::default())
            .await;
        let _ = ch.close(200, "bye".into()).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    purged.keys = delete_keys(&redis(cfg).await?, &cfg.fleet.namespace).await?;
    Ok(purged)
}

/// Deletes `NS:*` (markers, leases, the batch index, leader leases) and
/// `{NS:*` (batch ledgers, the Gemini limiter). SCAN, so a single node only.
async fn delete_keys(conn: &RedisConn, ns: &str) -> anyhow::Result<usize> {
    if matches!(conn, RedisConn::Cluster(_)) {
        bail!(
            "queues deleted; Redis keys not: purging a Redis Cluster needs a SCAN on every primary \
             (redis-cli --cluster call HOST:PORT for the patterns '{ns}:*' and '{{{ns}:*')"
        );
    }
    let mut c = conn.clone();
    let mut deleted = 0;
    for pattern in [format!("{ns}:*"), format!("{{{ns}:*")] {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .context("scanning Redis keys")?;
            if !keys.is_empty() {
                let n: usize = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut c)
                    .await
                    .context("deleting Redis keys")?;
                deleted += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}
