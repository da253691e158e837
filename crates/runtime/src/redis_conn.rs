//! One Redis connection type for a single node or a Redis Cluster.
//!
//! Both the `ConnectionManager` (single node, reconnects by itself) and the
//! cluster connection are cheap to clone and reconnect on their own; this enum
//! lets every module take one type. Keys that one script touches share a hash
//! tag (`{ns:batch}`), so scripts work on a cluster.

use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value, aio::ConnectionLike};

/// Errors opening a Redis connection.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnError {
    /// The URL is malformed or the server did not answer.
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
}

/// A single-node or cluster connection.
#[derive(Clone)]
pub enum RedisConn {
    /// One Redis server (auto-reconnecting manager).
    Single(redis::aio::ConnectionManager),
    /// A Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Connects to `url` (one node) or, with `cluster`, to the comma-separated seed nodes.
    pub async fn connect(url: &str, cluster: bool) -> Result<Self, RedisConnError> {
        if cluster {
            let nodes: Vec<&str> = url
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let c = redis::cluster::ClusterClient::new(nodes)?;
            Ok(Self::Cluster(c.get_async_connection().await?))
        } else {
            let c = redis::Client::open(url)?;
            let cfg = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
                .set_response_timeout(Some(std::time::Duration::from_secs(10)));
            Ok(Self::Single(
                c.get_connection_manager_with_config(cfg).await?,
            ))
        }
    }

    /// Sends two commands in one round trip and returns both answers: one
    /// pipeline on a single node; on a Redis Cluster, where their keys may
    /// hash to different slots (a pipeline must stay on one), both at once,
    /// each to its own node.
    pub async fn query_pair<A, B>(&self, a: &Cmd, b: &Cmd) -> Result<(A, B), redis::RedisError>
    where
        A: FromRedisValue,
        B: FromRedisValue,
    {
        match self {
            Self::Single(_) => {
                let mut c = self.clone();
                let mut p = redis::pipe();
                p.add_command(a.clone()).add_command(b.clone());
                p.query_async(&mut c).await
            }
            Self::Cluster(_) => {
                let (mut ca, mut cb) = (self.clone(), self.clone());
                futures::try_join!(a.query_async(&mut ca), b.query_async(&mut cb))
            }
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut c = self.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(p, offset, count),
            Self::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
