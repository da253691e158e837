//! The workers' heartbeat against the real Redis: a beat makes a worker
//! visible and live with its stage, host and pid; the jobs it carries land
//! in the current minute of its stage's throughput; leaving removes it and
//! still counts its last jobs; another namespace sees nothing.

use engage_model::envelope::StageName;
use engage_runtime::presence::{self, Presence};
use engage_runtime::redis_conn::RedisConn;

#[tokio::test]
async fn heartbeats_show_workers_and_jobs_per_minute() -> anyhow::Result<()> {
    let conn = RedisConn::connect("redis://127.0.0.1:6379", false).await?;
    let ns = crate::support::fleet::namespace("presence");
    let clean = Presence::new(conn.clone(), &ns, StageName::Clean);
    let analyze = Presence::new(conn.clone(), &ns, StageName::Analyze);
    assert!(
        clean.id().starts_with("clean/")
            && clean.id().ends_with(&format!("/{}", std::process::id())),
        "{}",
        clean.id()
    );

    let empty = presence::read(&conn, &ns, 5).await?;
    assert!(empty.workers.is_empty());
    assert!(empty.done_per_minute.iter().all(|(_, v)| v == &vec![0; 5]));

    clean.beat(3).await?;
    clean.beat(4).await?;
    analyze.beat(0).await?;
    let p = presence::read(&conn, &ns, 5).await?;
    let stages: Vec<StageName> = p.workers.iter().map(|w| w.stage).collect();
    assert_eq!(stages, vec![StageName::Clean, StageName::Analyze]);
    assert!(
        p.workers
            .iter()
            .all(|w| w.live() && w.pid == std::process::id())
    );
    let series = |p: &presence::FleetPresence, s: StageName| {
        p.done_per_minute
            .iter()
            .find(|(x, _)| *x == s)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Both beats are in this minute or (across a minute boundary) the one before.
    let c = series(&p, StageName::Clean);
    assert_eq!(c.len(), 5);
    assert_eq!(c[3] + c[4], 7, "{c:?}");
    assert_eq!(series(&p, StageName::Analyze).iter().sum::<u64>(), 0);

    clean.leave(2).await?;
    let p = presence::read(&conn, &ns, 5).await?;
    assert_eq!(p.workers.len(), 1);
    assert_eq!(p.workers[0].stage, StageName::Analyze);
    assert_eq!(series(&p, StageName::Clean).iter().sum::<u64>(), 9);

    let other = presence::read(&conn, &crate::support::fleet::namespace("presence"), 5).await?;
    assert!(other.workers.is_empty());
    Ok(())
}
