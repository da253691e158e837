//! What a production queue must survive: redelivery of every message type,
//! poison messages, worker crashes (SIGKILL), graceful drains (SIGTERM),
//! Redis losing its data, a Redis Cluster, and crash-looping messages.

use std::time::Duration;

use engage_model::envelope::StageName;
use engage_runtime::broker::Topology;
use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

use crate::support::fleet::{
    Backend, Fleet, PrivateRedis, STAGES, amqp, assert_same_outputs, poll, publish_persistent,
    queue_len,
};

/// Publishes every tapped message again, with confirms.
async fn republish(
    ch: &lapin::Channel,
    exchange: &str,
    tapped: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    for (rk, body) in tapped {
        publish_persistent(ch, exchange, rk, body).await?;
    }
    Ok(())
}

/// Messages ready in the five work queues of a namespace.
/// The distinct response ids in a batch's item log (its JSON Lines chunks).
fn logged_items(dir: &std::path::Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        for line in std::fs::read_to_string(entry?.path())?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            ids.insert(v["response_id"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(ids)
}

async fn work_queued(conn: &lapin::Connection, ns: &str) -> anyhow::Result<u32> {
    let mut total = 0;
    for s in STAGES {
        total += queue_len(conn, &format!("{ns}.{s}")).await?;
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_of_every_message_type_has_no_duplicate_effect() -> anyhow::Result<()> {
    let mut f = Fleet::new("redeliver", Backend::Local, 8, 6)?;
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    // A tap: a copy of every job message published by anyone in the namespace.
    let exchange = format!("{}.jobs", f.ns);
    let tap = format!("{}.tap", f.ns);
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        tap.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    for s in STAGES {
        ch.queue_bind(
            tap.as_str().into(),
            exchange.as_str().into(),
            s.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    f.start_all()?;
    let batch = f.enqueue()?;
    let first = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &first);

    let mut tapped = Vec::new();
    while let Some(m) = ch
        .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
    {
        tapped.push((m.delivery.routing_key.to_string(), m.delivery.data.clone()));
    }
    let kinds = |k: &str| {
        tapped
            .iter()
            .filter(|(rk, body)| rk == "aggregate" && String::from_utf8_lossy(body).contains(k))
            .count()
    };
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("summary.json"))?)?;
    // Exactly one aggregate job per learner and one report per batch.
    assert_eq!(
        kinds("\"learner\"") as u64,
        summary["learners"].as_u64().unwrap_or(0)
    );
    assert_eq!(kinds("\"report\""), 1);
    for s in STAGES {
        assert!(
            tapped.iter().any(|(rk, _)| rk == s),
            "no {s} message was tapped"
        );
    }
    // Deliver every message again.
    republish(&ch, &exchange, &tapped).await?;
    // Every duplicate is skipped by its completion marker: nothing new is published.
    poll(
        "the duplicates to be consumed",
        Duration::from_secs(60),
        || async {
            let total = work_queued(&conn, &f.ns).await?;
            Ok((total == 0).then_some(()))
        },
    )
    .await?;
    let again = f.wait_and_report(&batch, 30)?;
    assert_same_outputs(&first, &again);
    let mut new_msgs = 0;
    while ch
        .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .is_some()
    {
        new_msgs += 1;
    }
    // The tap sees our own re-publications, and nothing else.
    assert_eq!(
        new_msgs,
        tapped.len(),
        "skipped duplicates published follow-ups"
    );

    // Now without the completion markers: every job really runs again. Effects
    // land on the same keys with the same bytes, and the fan-in claims keep the
    // report from being emitted a second time.
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")?
        .get_multiplexed_async_connection()
        .await?;
    let done: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:done:*", f.ns))
        .query_async(&mut redis)
        .await?;
    assert!(!done.is_empty());
    let _: () = redis::cmd("DEL").arg(&done).query_async(&mut redis).await?;
    let job_ids: std::collections::BTreeSet<String> = tapped
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter_map(|v| v["job_id"].as_str().map(str::to_string))
        .collect();
    let before_items = logged_items(&f.dir.path().join(format!("store/batches/{batch}/items")))?;
    assert!(!before_items.is_empty(), "the item log is empty");
    republish(&ch, &exchange, &tapped).await?;
    poll("the re-runs to settle", Duration::from_secs(90), || async {
        let total = work_queued(&conn, &f.ns).await?;
        let done: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:done:*", f.ns))
            .query_async(&mut redis.clone())
            .await?;
        Ok((total == 0 && done.len() >= job_ids.len()).then_some(()))
    })
    .await?;
    let third = f.wait_and_report(&batch, 30)?;
    assert_same_outputs(&first, &third);
    // The item log is append-only: re-runs add chunks, never new items.
    assert_eq!(
        logged_items(&f.dir.path().join(format!("store/batches/{batch}/items")))?,
        before_items
    );
    // A re-run job that held a fan-in claim re-emits its follow-up (that is
    // what makes a crash between claim and publish safe), but always the same
    // job: a learner's aggregate or the batch report has one stable id.
    let mut report_ids = std::collections::BTreeSet::new();
    while let Some(m) = ch
        .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let v: serde_json::Value = serde_json::from_slice(&m.delivery.data)?;
        if v["job"]["kind"] == "report" {
            report_ids.insert(v["job_id"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(
        report_ids.into_iter().collect::<Vec<_>>(),
        vec![format!("report:{batch}")]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_with_its_reason_and_replay_brings_it_back() -> anyhow::Result<()> {
    let mut f = Fleet::new("poison", Backend::Local, 6, 5)?;
    f.start_all()?;
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    let exchange = format!("{}.jobs", f.ns);
    let dlq = format!("{}.clean.dlq", f.ns);
    f.wait_consuming("clean").await?;
    ch.basic_publish(
        exchange.as_str().into(),
        "clean".into(),
        BasicPublishOptions::default(),
        b"{not json",
        BasicProperties::default(),
    )
    .await?
    .await?;
    poll(
        "the undecodable message in the DLQ",
        Duration::from_secs(30),
        || async { Ok((queue_len(&conn, &dlq).await? == 1).then_some(())) },
    )
    .await?;

    // A batch whose activity file does not exist yet: dead-lettered, not retried forever.
    let missing = f.dir.path().join("late-activity.jsonl");
    let batch = f.enqueue_activity(&missing)?;
    poll(
        "the failed batch in the DLQ",
        Duration::from_secs(30),
        || async { Ok((queue_len(&conn, &dlq).await? == 2).then_some(())) },
    )
    .await?;
    // The batch ends, halted, and says by what and what to do: `status
    // --wait` does not wait for work that sits in a dead-letter queue.
    let o = f.engage(&["status", &batch, "--wait", "--timeout", "60"])?;
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(3), "{said}");
    assert!(
        said.contains("halted") && said.contains("activity file not found"),
        "{said}"
    );
    assert!(said.contains("engage dlq replay clean"), "{said}");
    let list = f.engage(&["dlq", "list", "clean"])?;
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("clean: 2 dead-lettered"), "{text}");
    assert!(text.contains("reason=undecodable"), "{text}");
    assert!(
        text.contains("reason=poison") && text.contains("activity file not found"),
        "{text}"
    );

    // Fix the cause, replay: the batch completes; the undecodable message stays.
    std::fs::copy(&f.data.activity, &missing)?;
    let replay = f.engage(&["dlq", "replay", "clean"])?;
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("replayed 1; 1 undecodable left"),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    assert_eq!(queue_len(&conn, &dlq).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing() -> anyhow::Result<()> {
    let mut f = Fleet::new("sigkill", Backend::Local, 20, 10)?;
    f.start_all()?;
    let batch = f.enqueue()?;
    f.wait_midway(&batch, "analyze").await?;
    f.signal("analyze", "KILL");
    f.signal("download", "KILL");
    f.assert_incomplete_after_fault(&batch, "SIGKILL")?;
    f.start("download")?;
    f.start("analyze")?;
    let out = f.wait_and_report(&batch, 180)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() -> anyhow::Result<()> {
    let mut f = Fleet::new("sigterm", Backend::Local, 20, 10)?;
    f.start_all()?;
    let batch = f.enqueue()?;
    f.wait_midway(&batch, "download").await?;
    let started = std::time::Instant::now();
    let statuses = f.signal("analyze", "TERM");
    f.assert_incomplete_after_fault(&batch, "SIGTERM")?;
    assert_eq!(statuses.len(), 1);
    assert!(
        statuses[0].success(),
        "analyze exited with {:?}\n{}",
        statuses[0],
        f.logs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "drain took {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(f.dir.path().join("logs/analyze-0.log"))?;
    assert!(
        log.contains("SIGTERM: draining") && log.contains("worker stopped"),
        "{log}"
    );
    f.start("analyze")?;
    let out = f.wait_and_report(&batch, 180)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_mid_batch_still_completes_with_the_same_report() -> anyhow::Result<()> {
    let redis = PrivateRedis::start(false)?;
    let mut f = Fleet::new("flushall", Backend::Local, 20, 10)?;
    f.env.insert("ENGAGE_REDIS_URL".into(), redis.url());
    f.start_all()?;
    let batch = f.enqueue()?;
    f.wait_midway(&batch, "analyze").await?;
    assert!(redis.cli(&["flushall"])?.contains("OK"));
    // Right after the flush the ledger is gone: the status is "unknown batch"
    // unless the outputs were already written (the batch was over).
    f.assert_incomplete_after_fault(&batch, "FLUSHALL")?;
    let out = f.wait_and_report(&batch, 180)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_on_a_three_node_redis_cluster() -> anyhow::Result<()> {
    let nodes = [
        PrivateRedis::start(true)?,
        PrivateRedis::start(true)?,
        PrivateRedis::start(true)?,
    ];
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let created = nodes[0].cli(&args)?;
    assert!(created.contains("All 16384 slots covered"), "{created}");
    poll("the cluster to be ok", Duration::from_secs(30), || async {
        Ok(nodes
            .iter()
            .all(|n| {
                n.cli(&["cluster", "info"])
                    .unwrap_or_default()
                    .contains("cluster_state:ok")
            })
            .then_some(()))
    })
    .await?;
    let mut f = Fleet::new("cluster", Backend::Local, 8, 6)?;
    f.env.insert(
        "ENGAGE_REDIS_URL".into(),
        nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(","),
    );
    f.env.insert("ENGAGE_REDIS_CLUSTER".into(), "true".into());
    f.start_all()?;
    let batch = f.enqueue()?;
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}

/// A node list whose first node is dead: every process (workers, CLI) tries
/// the next node and the batch completes as usual. Without the failover in
/// `broker::connect` the URL list would not even parse as one URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_reaches_the_broker_through_a_node_list_with_a_dead_node() -> anyhow::Result<()> {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dead_port = dead.local_addr()?.port();
    drop(dead); // nothing listens there now: connections are refused
    let mut f = Fleet::new("nodelist", Backend::Local, 6, 4)?;
    f.env.insert(
        "ENGAGE_AMQP_URL".into(),
        format!(
            "amqp://guest:guest@127.0.0.1:{dead_port}/%2f,amqp://guest:guest@127.0.0.1:5672/%2f"
        ),
    );
    f.start_all()?;
    let batch = f.enqueue()?;
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_crashing_its_consumer_is_dead_lettered() -> anyhow::Result<()> {
    let ns = crate::support::fleet::namespace("crashloop");
    let topo = Topology {
        namespace: ns.clone(),
        retry_delays_ms: vec![100],
        delivery_limit: 2,
    };
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    topo.declare(&ch, &[StageName::Match]).await?;
    ch.basic_publish(
        topo.exchange().as_str().into(),
        "match".into(),
        BasicPublishOptions::default(),
        b"{}",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await?
    .await?;
    // A consumer that dies with the message unacked, again and again.
    for _ in 0..3 {
        let c = conn.create_channel().await?;
        let got = poll("a delivery", Duration::from_secs(10), || async {
            Ok(c.basic_get(
                topo.work_queue(StageName::Match).as_str().into(),
                BasicGetOptions::default(),
            )
            .await?)
        })
        .await?;
        drop(got);
        c.close(200, "crash".into()).await?;
    }
    let dlq = topo.dlq(StageName::Match);
    let m = poll(
        "the message in the DLQ",
        Duration::from_secs(10),
        || async {
            Ok(ch
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
                .await?)
        },
    )
    .await?;
    let reason = engage_runtime::broker::header_str(&m.delivery.properties, "x-first-death-reason");
    assert_eq!(reason.as_deref(), Some("delivery_limit"));
    crate::support::fleet::delete_namespace(&ns);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reconnect_when_the_broker_drops_their_connection() -> anyhow::Result<()> {
    let mut f = Fleet::new("reconnect", Backend::Local, 12, 8)?;
    // Aggregate starts only after the fault: listing and closing connections
    // with rabbitmqctl takes seconds, long enough for a small batch to finish,
    // and a fault that hits a finished batch proves nothing.
    for stage in ["clean", "match", "download", "analyze"] {
        f.start(stage)?;
    }
    f.wait_consuming("analyze").await?;
    let batch = f.enqueue()?;
    f.wait_midway(&batch, "download").await?;
    // Close every connection of this fleet's workers from the broker side.
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()?;
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("@{}", f.ns)))
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert!(ours.len() >= 4, "connections of {}: {text}", f.ns);
    for pid in ours {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "test: broker outage"])
            .output()?;
    }
    f.assert_incomplete_after_fault(&batch, "the connections were closed")?;
    f.start("aggregate")?;
    let out = f.wait_and_report(&batch, 180)?;
    assert_same_outputs(&f.reference()?, &out);
    let log = std::fs::read_to_string(f.dir.path().join("logs/analyze-0.log"))?;
    assert!(
        log.contains("broker connection lost; reconnecting"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_publishing_channel_is_rebuilt_not_turned_into_dead_letters() -> anyhow::Result<()> {
    use engage_model::envelope::Envelope;
    use engage_model::jobs::{BatchSpec, CleanJob, ids};
    let mut f = Fleet::new("pubdead", Backend::Local, 6, 4)?;
    f.start_all()?;
    f.wait_consuming("clean").await?;
    let topo = Topology {
        namespace: f.ns.clone(),
        retry_delays_ms: vec![200],
        delivery_limit: 20,
    };
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    // The jobs exchange disappears: the clean worker's next publish to it
    // is a channel error (404) that closes its publishing channel.
    ch.exchange_delete(topo.exchange().as_str().into(), Default::default())
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let (a, s) = f.inputs();
    let mut batches = Vec::new();
    for i in 0..3 {
        let b = format!("b-{}-{i}", f.ns);
        let spec = BatchSpec {
            activity: vec![format!("file://{a}")],
            sessions: format!("file://{s}"),
            selection: Default::default(),
        };
        let env = Envelope::new(&b, ids::plan(&b), "pubdead", CleanJob::Batch(spec));
        // Straight into the clean queue (the exchange is gone).
        publish_persistent(
            &ch,
            "",
            &topo.work_queue(StageName::Clean),
            &serde_json::to_vec(&env)?,
        )
        .await?;
        batches.push(b);
    }
    // The worker rebuilds its connection (declaring the exchange again) and
    // every batch completes; before, each job was requeued on the dead
    // channel until the delivery limit dead-lettered it.
    let reference = f.reference()?;
    for b in &batches {
        let out = f.wait_and_report(b, 180)?;
        assert_same_outputs(&reference, &out);
    }
    assert_eq!(queue_len(&conn, &topo.dlq(StageName::Clean)).await?, 0);
    let log = std::fs::read_to_string(f.dir.path().join("logs/clean-0.log"))?;
    assert!(log.contains("the publishing channel closed"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_dead_lettered_after_their_attempts_make_their_items_final_and_the_batch_ends()
-> anyhow::Result<()> {
    let mut f = Fleet::new("dlfinal", Backend::Local, 4, 3)?;
    // Audio comes from an S3 endpoint where nothing listens: every download
    // fails transiently until its attempts run out (an S3 outage longer than
    // the retry tiers).
    f.env.remove("ENGAGE_S3_ROOT");
    let endpoint = format!("http://127.0.0.1:{}", crate::support::fleet::free_port());
    for (k, v) in [
        ("ENGAGE_S3_ENDPOINT", endpoint.as_str()),
        ("ENGAGE_S3_FORCE_PATH_STYLE", "true"),
        ("ENGAGE_S3_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ENGAGE_MAX_ATTEMPTS", "2"),
    ] {
        f.env.insert(k.into(), v.into());
    }
    f.start_all()?;
    let batch = f.enqueue()?;
    // Before, the batch waited forever for items whose jobs sat in the DLQ.
    let out = f.wait_and_report(&batch, 180)?;
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)?;
    let dead = s["failed"]["dead_lettered:max_attempts"]
        .as_u64()
        .unwrap_or(0);
    assert!(dead > 0, "{s}");
    assert_eq!(s["analyzed"].as_u64(), Some(0), "{s}");
    // Every one of them is explained by a dead letter that replay can run again.
    let conn = amqp().await?;
    let dlq = format!("{}.download.dlq", f.ns);
    assert_eq!(u64::from(queue_len(&conn, &dlq).await?), dead);
    let analysis = std::fs::read_to_string(out.join("analysis.csv"))?;
    assert!(
        analysis.contains("dead_lettered:max_attempts"),
        "{analysis}"
    );

    // The outage is over: replaying the dead letters reopens their items and
    // the finished batch's report is rewritten, now equal to engage run's.
    f.signal("download", "TERM");
    for k in [
        "ENGAGE_S3_ENDPOINT",
        "ENGAGE_S3_FORCE_PATH_STYLE",
        "ENGAGE_S3_REGION",
    ] {
        f.env.remove(k);
    }
    let s3_root = f.data.s3_root.display().to_string();
    f.env.insert("ENGAGE_S3_ROOT".into(), s3_root);
    f.start("download")?;
    let replay = f.engage(&["dlq", "replay", "download", "--limit", "100000"])?;
    let said = String::from_utf8_lossy(&replay.stdout).into_owned();
    assert!(replay.status.success(), "{said}");
    assert!(
        said.contains(&format!("reopened {dead} dead-lettered items")),
        "{said}"
    );
    let again = f.wait_and_report(&batch, 180)?;
    assert_same_outputs(&f.reference()?, &again);
    let status = f.status(&batch)?;
    assert!(status.contains(&format!("reopened: {dead}")), "{status}");
    assert_eq!(queue_len(&conn, &dlq).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_republishes_work_that_no_queue_holds() -> anyhow::Result<()> {
    let mut f = Fleet::new("reconcile", Backend::Local, 6, 4)?;
    f.env.insert("ENGAGE_RECONCILE_EVERY_S".into(), "1".into());
    f.env.insert("ENGAGE_RECONCILE_STALL_S".into(), "2".into());
    for s in ["clean", "match"] {
        f.start(s)?;
    }
    f.wait_consuming("match").await?;
    let batch = f.enqueue()?;
    // Every match job is done: every download job is queued.
    poll("match to finish", Duration::from_secs(60), || async {
        let text = f.status(&batch)?;
        Ok(crate::support::fleet::stage_progress(&text, "match")
            .filter(|(d, t)| *t > 0 && d == t)
            .map(|_| ()))
    })
    .await?;
    let conn = amqp().await?;
    let q = format!("{}.download", f.ns);
    assert!(queue_len(&conn, &q).await? > 0);
    // Lose them all (a broker that lost its queue contents).
    let ch = conn.create_channel().await?;
    ch.queue_purge(q.as_str().into(), Default::default())
        .await?;
    assert_eq!(queue_len(&conn, &q).await?, 0);
    for s in ["download", "analyze", "aggregate"] {
        f.start(s)?;
    }
    // Before, the batch waited forever; the reconciler finds it stalled,
    // compares it with the store and publishes the lost jobs again.
    let out = f.wait_and_report(&batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    let status = f.status(&batch)?;
    assert!(status.contains("download_job"), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_its_last_allowed_delivery_is_given_up_and_its_item_ends() -> anyhow::Result<()> {
    let mut f = Fleet::new("dlimit", Backend::Local, 4, 3)?;
    f.env.insert("ENGAGE_DELIVERY_LIMIT".into(), "3".into());
    for s in ["clean", "match"] {
        f.start(s)?;
    }
    let batch = f.enqueue()?;
    // Take one download job before any download worker runs, and put it back
    // as the broker would on its last allowed delivery (the quorum queue's
    // `x-delivery-count` at the limit: it crashed its consumers before).
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = format!("{}.download", f.ns);
    let taken = poll("a download job", Duration::from_secs(60), || async {
        Ok(ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await?)
    })
    .await?;
    let job_id = taken
        .delivery
        .properties
        .message_id()
        .clone()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let mut headers = FieldTable::default();
    headers.insert(
        "x-delivery-count".into(),
        lapin::types::AMQPValue::LongLongInt(3),
    );
    ch.basic_publish(
        format!("{}.jobs", f.ns).as_str().into(),
        "download".into(),
        BasicPublishOptions::default(),
        &taken.delivery.data,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(job_id.clone().into())
            .with_headers(headers),
    )
    .await?
    .await?;
    for s in ["download", "analyze", "aggregate"] {
        f.start(s)?;
    }
    // The worker gave up on it itself: its item is final as dead-lettered,
    // so the batch ends, and the dead letter names the reason.
    let out = f.wait_and_report(&batch, 180)?;
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json"))?)?;
    assert_eq!(
        s["failed"]["dead_lettered:delivery_limit"].as_u64(),
        Some(1),
        "{s}"
    );
    let dlq = format!("{}.download.dlq", f.ns);
    let dead = poll("the dead letter", Duration::from_secs(10), || async {
        Ok(ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await?)
    })
    .await?;
    let props = &dead.delivery.properties;
    assert_eq!(
        engage_runtime::broker::header_str(props, "x-engage-reason").as_deref(),
        Some("delivery_limit")
    );
    assert_eq!(
        props.message_id().as_ref().map(|m| m.to_string()),
        Some(job_id)
    );
    Ok(())
}
