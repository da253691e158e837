//! The fleet end to end: five worker processes over RabbitMQ, Redis and a real
//! S3-compatible server produce exactly what `engage run` produces.

use crate::support::fleet::{Backend, Fleet, assert_same_outputs, stage_progress};
use crate::support::s3::S3Server;

#[test]
fn fleet_on_s3_matches_engage_run_with_split_pieces() -> anyhow::Result<()> {
    let mut f = Fleet::new("e2e", Backend::S3(S3Server::start()?), 12, 8)?;
    // Small pieces: the activity log is cut into several byte ranges, so a
    // learner's records come from several clean pieces (the fan-in case).
    f.env
        .insert("ENGAGE_CLEAN_PIECE_BYTES".into(), "4096".into());
    f.env.insert("ENGAGE_PARTITIONS".into(), "4".into());
    f.start_all()?;
    let batch = f.enqueue()?;
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)?;
    assert!(summary["activity"]["kept"].as_u64() > Some(50), "{summary}");
    assert!(summary["analyzed"].as_u64() > Some(30), "{summary}");
    let status = f.status(&batch)?;
    assert!(status.contains("complete"), "{status}");
    // The plan really was split: otherwise this is the single-piece test again.
    let (done, pieces) = stage_progress(&status, "clean")
        .ok_or_else(|| anyhow::anyhow!("no clean progress in {status:?}"))?;
    assert!(pieces >= 2, "the activity log was not split: {status}");
    assert_eq!(done, pieces, "{status}");
    Ok(())
}

#[test]
fn fleet_on_local_store_matches_engage_run() -> anyhow::Result<()> {
    let mut f = Fleet::new("local", Backend::Local, 8, 6)?;
    f.start_all()?;
    let batch = f.enqueue()?;
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}
