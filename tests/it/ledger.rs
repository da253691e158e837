//! The batch ledger's fan-in against the real Redis: registration waits for
//! every piece and match job; exactly one claim per learner and per report,
//! even under concurrent duplicates; a redelivered claimer re-emits.

use std::collections::BTreeMap;

use engage_runtime::ledger::{FanIn, LearnerItems, Ledger};
use engage_runtime::redis_conn::RedisConn;

async fn ledger() -> anyhow::Result<(Ledger, String)> {
    let conn = RedisConn::connect("redis://127.0.0.1:6379", false).await?;
    Ok((
        Ledger::new(conn, crate::support::fleet::namespace("ledger")),
        "b1".to_string(),
    ))
}

fn items(user: &str, ids: &[&str], final_ids: &[&str]) -> BTreeMap<String, LearnerItems> {
    BTreeMap::from([(
        user.to_string(),
        LearnerItems {
            items: ids.iter().map(|s| s.to_string()).collect(),
            final_items: final_ids.iter().map(|s| s.to_string()).collect(),
        },
    )])
}

#[tokio::test]
async fn a_learner_is_complete_only_after_every_piece_and_item() -> anyhow::Result<()> {
    let (l, b) = ledger().await?;
    l.open_batch(&b, 2).await?;
    // Piece 1 done, its match job registers u's items; piece 2 is still running.
    assert_eq!(
        l.piece_done(&b, "p1", &["p1:0".into()], "clean:p1").await?,
        FanIn::Wait
    );
    l.register_items(&b, &items("u", &["r1", "r2"], &["r2"]))
        .await?;
    assert_eq!(l.match_done(&b, "p1:0", "match:p1:0").await?, FanIn::Wait);
    // r1 final too: but piece 2 may still bring u's records, so not complete.
    assert_eq!(
        l.finalize_item(&b, "u", "r1", None, "{\"first\":1}", "analyze:r1")
            .await?,
        FanIn::Wait
    );
    assert_eq!(
        l.piece_done(&b, "p2", &["p2:0".into()], "clean:p2").await?,
        FanIn::Wait
    );
    l.register_items(&b, &items("u", &["r3"], &[])).await?;
    // The last match job completes registration and must scan.
    assert_eq!(l.match_done(&b, "p2:0", "match:p2:0").await?, FanIn::Emit);
    assert!(
        l.scan(&b, "match:p2:0").await?.learners.is_empty(),
        "r3 is not final yet"
    );
    // A redelivered registration claimer is told to scan again.
    assert_eq!(l.match_done(&b, "p2:0", "match:p2:0").await?, FanIn::Emit);
    assert_eq!(
        l.finalize_item(&b, "u", "r3", Some("audio_missing"), "{}", "download:r3")
            .await?,
        FanIn::Emit
    );
    // The claimer redelivered re-emits; anyone else does not.
    assert_eq!(
        l.finalize_item(&b, "u", "r3", Some("audio_missing"), "{}", "download:r3")
            .await?,
        FanIn::Emit
    );
    assert_eq!(
        l.finalize_item(&b, "u", "r1", None, "{\"again\":1}", "analyze:r1")
            .await?,
        FanIn::Wait
    );
    assert_eq!(
        l.learner_aggregated(&b, Some("u"), "aggregate:u").await?,
        FanIn::Emit
    );
    let p = l.progress(&b).await?.expect("ledger exists");
    assert_eq!(
        (p.items, p.final_items, p.learners, p.learners_aggregated),
        (3, 3, 1, 1)
    );
    assert_eq!(p.failed.get("audio_missing"), Some(&1));
    // Each item keeps the first state recorded for it: a redelivery's does not replace it.
    let states = l.item_states(&b, "u").await?;
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        vec![
            ("r1".to_string(), "{\"first\":1}".to_string()),
            ("r3".to_string(), "{}".to_string())
        ]
    );
    // Once the report is written the states are dropped (the learner files hold them).
    l.complete(&b, std::time::Duration::from_secs(60)).await?;
    assert!(l.item_states(&b, "u").await?.is_empty());
    assert!(l.progress(&b).await?.expect("ledger exists").complete);
    Ok(())
}

#[tokio::test]
async fn concurrent_duplicate_completions_claim_exactly_once() -> anyhow::Result<()> {
    let (l, b) = ledger().await?;
    l.open_batch(&b, 1).await?;
    l.piece_done(&b, "p", &["p:0".into()], "clean:p").await?;
    let ids: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    l.register_items(&b, &items("u", &refs, &[])).await?;
    l.match_done(&b, "p:0", "match:p:0").await?;
    // Every item finalised three times, by three different jobs, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        for j in 0..3 {
            let (l, b, id) = (l.clone(), b.clone(), id.clone());
            tasks.spawn(async move {
                l.finalize_item(&b, "u", &id, None, "{}", &format!("job-{id}-{j}"))
                    .await
            });
        }
    }
    let mut emits = 0;
    while let Some(r) = tasks.join_next().await {
        if r?? == FanIn::Emit {
            emits += 1;
        }
    }
    assert_eq!(emits, 1, "exactly one aggregate emission per learner");
    Ok(())
}

#[tokio::test]
async fn a_missing_ledger_is_reported_as_lost() -> anyhow::Result<()> {
    let (l, b) = ledger().await?;
    assert!(matches!(
        l.finalize_item(&b, "u", "r", None, "{}", "j").await,
        Err(engage_runtime::ledger::LedgerError::Lost)
    ));
    assert!(l.progress(&b).await?.is_none());
    assert!(matches!(
        l.item_states(&b, "u").await,
        Err(engage_runtime::ledger::LedgerError::Lost)
    ));
    Ok(())
}

#[tokio::test]
async fn a_finished_batch_leaves_no_key_without_a_time_to_live() -> anyhow::Result<()> {
    let (l, b) = ledger().await?;
    l.open_batch(&b, 1).await?;
    assert_eq!(
        l.piece_done(&b, "p1", &["p1:0".into()], "clean:p1").await?,
        FanIn::Wait
    );
    l.register_items(&b, &items("u", &["r1"], &[])).await?;
    assert_eq!(l.match_done(&b, "p1:0", "match:p1:0").await?, FanIn::Emit);
    l.finalize_item(&b, "u", "r1", Some("audio_missing"), "{}", "download:r1")
        .await?;
    let _ = l.scan(&b, "download:r1").await?;
    let prefix = l.prefix(&b);
    let mut c = redis::Client::open("redis://127.0.0.1:6379")?
        .get_multiplexed_async_connection()
        .await?;
    let keys = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        let pattern = format!("{prefix}:*");
        async move {
            let mut keys: Vec<String> =
                redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await?;
            keys.sort();
            anyhow::Ok(keys)
        }
    };
    let before = keys(&mut c).await?;
    assert!(before.len() >= 8, "{before:?}");
    l.complete(&b, std::time::Duration::from_secs(3600)).await?;
    let after = keys(&mut c).await?;
    assert!(!after.is_empty());
    for k in &after {
        let ttl: i64 = redis::cmd("TTL").arg(k).query_async(&mut c).await?;
        assert!(
            (1..=3600).contains(&ttl),
            "{k} has no time to live after the batch finished (TTL {ttl})"
        );
    }
    // Nothing finished lives forever: delete what this test made.
    let _: () = redis::cmd("DEL").arg(&after).query_async(&mut c).await?;
    Ok(())
}

#[tokio::test]
async fn one_leader_at_a_time_and_it_keeps_the_lead() -> anyhow::Result<()> {
    let (l, _) = ledger().await?;
    assert!(l.lead("reconciler", "a", 60_000).await?);
    assert!(!l.lead("reconciler", "b", 60_000).await?, "two leaders");
    assert!(
        l.lead("reconciler", "a", 60_000).await?,
        "the leader lost its lead"
    );
    // A leader that stops renewing loses the lead when its time runs out.
    assert!(l.lead("reconciler", "a", 1).await?);
    crate::support::fleet::poll(
        "the lead to expire",
        std::time::Duration::from_secs(5),
        || async { Ok(l.lead("reconciler", "b", 60_000).await?.then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_lock_is_released_only_by_its_holder() -> anyhow::Result<()> {
    let (l, b) = ledger().await?;
    assert!(l.try_lock(&b, "rebuild", "job-a", 1).await?);
    // job-a's lock expires and job-b takes it; job-a finishing late must not
    // release job-b's lock (before, unlock was an unconditional DEL).
    crate::support::fleet::poll(
        "the lock to expire",
        std::time::Duration::from_secs(5),
        || async {
            Ok(l.try_lock(&b, "rebuild", "job-b", 60_000)
                .await?
                .then_some(()))
        },
    )
    .await?;
    l.unlock(&b, "rebuild", "job-a").await?;
    assert!(
        !l.try_lock(&b, "rebuild", "job-c", 60_000).await?,
        "job-a released job-b's lock"
    );
    l.unlock(&b, "rebuild", "job-b").await?;
    assert!(l.try_lock(&b, "rebuild", "job-c", 60_000).await?);
    Ok(())
}

#[tokio::test]
async fn segments_a_pre_pass_announced_hold_registration_until_each_is_done() -> anyhow::Result<()>
{
    let (l, b) = ledger().await?;
    // One planned piece: the pre-pass of a gzip log.
    l.open_batch(&b, 1).await?;
    let segs = [
        "f000-r0000-s000000".to_string(),
        "f000-r0000-s000001".to_string(),
    ];
    l.expect_pieces(&b, &segs[..1], "clean:split").await?;
    // The first segment finishes before the pre-pass has cut the second.
    assert_eq!(
        l.piece_done(&b, &segs[0], &[], "clean:s0").await?,
        FanIn::Wait
    );
    l.expect_pieces(&b, &segs[1..], "clean:split").await?;
    // The pre-pass ends (announcing all its segments again, idempotently):
    // one segment is still running, so registration waits.
    l.expect_pieces(&b, &segs, "clean:split").await?;
    assert_eq!(
        l.piece_done(&b, "f000-r0000", &[], "clean:split").await?,
        FanIn::Wait
    );
    let p = l
        .progress(&b)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ledger"))?;
    assert_eq!((p.pieces_done, p.pieces_expected), (2, 3));
    assert_eq!(
        l.piece_done(&b, &segs[1], &[], "clean:s1").await?,
        FanIn::Emit
    );
    Ok(())
}
