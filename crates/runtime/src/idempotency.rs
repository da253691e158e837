//! Idempotency keys in Redis: "this job already completed" markers and short
//! leases that keep two deliveries of one item from both doing an expensive
//! side effect at once.
//!
//! Redis is the fast path only: every effect is also written under a
//! deterministic key in the durable store, so a lost marker costs a repeated,
//! harmless re-run, never a wrong result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{AsyncCommands, Script};

use crate::redis_conn::RedisConn;
use engage_model::envelope::StageName;

/// How long completion markers are kept.
pub const DONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Redis failures of idempotency operations (transient for the job).
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Redis did not answer or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Completion markers and leases of one namespace.
#[derive(Clone, Debug)]
pub struct Idempotency {
    conn: RedisConn,
    ns: String,
}

/// A held lease; release it with [`Idempotency::release`].
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    token: String,
}

impl Idempotency {
    /// Markers under `{ns}:…`.
    pub fn new(conn: RedisConn, ns: impl Into<String>) -> Self {
        Self {
            conn,
            ns: ns.into(),
        }
    }

    fn done_key(&self, stage: StageName, job_id: &str) -> String {
        format!("{}:done:{}:{}", self.ns, stage, job_id)
    }

    /// True if this job's effects and follow-up messages are already complete.
    pub async fn is_done(&self, stage: StageName, job_id: &str) -> Result<bool, IdempotencyError> {
        let mut c = self.conn.clone();
        Ok(c.exists(self.done_key(stage, job_id)).await?)
    }

    /// The one command [`Self::is_done`] sends (`EXISTS`, answering a
    /// `bool`), for a caller that sends it with another in one round trip.
    pub fn is_done_cmd(&self, stage: StageName, job_id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.done_key(stage, job_id));
        cmd
    }

    /// Forgets that a job completed, so that a re-published copy runs again
    /// (the reconciler re-drives work whose follow-ups were lost).
    pub async fn forget(&self, stage: StageName, job_id: &str) -> Result<(), IdempotencyError> {
        let mut c = self.conn.clone();
        let _: () = c.del(self.done_key(stage, job_id)).await?;
        Ok(())
    }

    /// Records that a job completed (its effects and follow-ups are durable).
    /// The marker's value is the completion time (Unix ms), which `engage
    /// inspect` shows; only its existence decides [`Self::is_done`].
    pub async fn mark_done(&self, stage: StageName, job_id: &str) -> Result<(), IdempotencyError> {
        let mut c = self.conn.clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let _: () = c
            .set_ex(self.done_key(stage, job_id), now_ms, DONE_TTL.as_secs())
            .await?;
        Ok(())
    }

    /// When the job completed (Unix ms), if its marker is there and carries
    /// a time (markers written before times were recorded hold `1`).
    pub async fn done_at(
        &self,
        stage: StageName,
        job_id: &str,
    ) -> Result<Option<i64>, IdempotencyError> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.done_key(stage, job_id)).await?;
        Ok(v.and_then(|v| v.parse::<i64>().ok())
            .filter(|ms| *ms > 1_000_000_000_000))
    }

    /// Tries to take a lease on `item` for `ttl`. `None` means someone else holds it.
    pub async fn try_lease(
        &self,
        item: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, IdempotencyError> {
        let key = format!("{}:lease:{}", self.ns, item);
        let token = uuid::Uuid::new_v4().to_string();
        let mut c = self.conn.clone();
        let ok: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut c)
            .await?;
        Ok(ok.map(|_| Lease { key, token }))
    }

    /// Releases a lease if it is still ours (compare-and-delete).
    pub async fn release(&self, lease: Lease) -> Result<(), IdempotencyError> {
        let mut c = self.conn.clone();
        let _: i64 = RELEASE
            .key(&lease.key)
            .arg(&lease.token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Extends a lease to `ttl` from now if it is still ours. `false`: it
    /// expired and may be someone else's now.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, IdempotencyError> {
        let mut c = self.conn.clone();
        let kept: i64 = RENEW
            .key(&lease.key)
            .arg(&lease.token)
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await?;
        Ok(kept == 1)
    }

    /// Like [`Self::try_lease`], but the lease follows its holder: a task
    /// renews it every third of `ttl` for as long as the returned
    /// [`KeptLease`] lives, so a call that takes longer than `ttl` keeps it,
    /// while a holder that dies (or drops the guard) frees it within `ttl`.
    pub async fn try_keep_lease(
        &self,
        item: &str,
        ttl: Duration,
    ) -> Result<Option<KeptLease>, IdempotencyError> {
        let Some(lease) = self.try_lease(item, ttl).await? else {
            return Ok(None);
        };
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (me, lease) = (self.clone(), lease.clone());
            let lost = lost.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(ttl / 3);
                every.tick().await;
                loop {
                    every.tick().await;
                    match me.renew(&lease, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, Ordering::SeqCst);
                            tracing::warn!(
                                "a lease expired while held; another delivery may take it"
                            );
                            return;
                        }
                        // Redis unreachable for a moment: try again next tick;
                        // the lease only lapses if that lasts a whole ttl.
                        Err(e) => tracing::warn!(error = %e, "cannot renew a lease"),
                    }
                }
            })
        };
        Ok(Some(KeptLease {
            lease,
            renewer,
            lost,
        }))
    }

    /// Stops renewing and releases a kept lease (compare-and-delete).
    pub async fn release_kept(&self, kept: KeptLease) -> Result<(), IdempotencyError> {
        kept.renewer.abort();
        self.release(kept.lease.clone()).await
    }
}

/// A lease renewed in the background while this value lives (see
/// [`Idempotency::try_keep_lease`]); dropping it stops the renewal, so the
/// lease lapses after its ttl.
#[derive(Debug)]
pub struct KeptLease {
    lease: Lease,
    renewer: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl KeptLease {
    /// True once a renewal found the lease gone (it expired while held).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Compare-and-delete: only the holder's token releases a lease.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// Compare-and-extend: only the holder's token renews a lease.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    )
});
