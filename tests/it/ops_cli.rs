//! The operator's CLI against the real broker and Redis, through the real
//! `engage` binary: reading dead-letter queues spends nothing, `dlq replay`
//! moves only what its filters match, `batches` and `inspect` (and their
//! `--json`) tell the truth about a real batch, read-only commands declare
//! nothing, and the global flags, completions and `--help` work.

use engage_runtime::broker::{Topology, dlq_arguments};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::Value;

use crate::support::fleet::{Backend, Fleet, amqp, queue_len};

/// The topology of a test fleet (its retry settings), declared as a worker would.
async fn declare(conn: &Connection, ns: &str) -> anyhow::Result<Topology> {
    let topo = Topology {
        namespace: ns.to_string(),
        retry_delays_ms: vec![200, 500, 1000],
        delivery_limit: 5,
    };
    let ch = conn.create_channel().await?;
    topo.declare(&ch, &engage_model::envelope::StageName::ALL)
        .await?;
    Ok(topo)
}

/// Publishes one dead letter of a clean job to `queue`, as a worker does
/// (persistent, with the `x-engage-*` headers), and waits for the confirm.
async fn dead_letter(
    ch: &Channel,
    queue: &str,
    batch: &str,
    job: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "v": 1, "batch_id": batch, "job_id": job, "attempt": 3, "trace_id": "t",
        "job": {"kind": "piece"}
    });
    let mut h = FieldTable::default();
    h.insert(
        "x-engage-reason".into(),
        AMQPValue::LongString(reason.into()),
    );
    h.insert("x-engage-attempts".into(), AMQPValue::LongLongInt(3));
    h.insert(
        "x-engage-error".into(),
        AMQPValue::LongString("boom".into()),
    );
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        &serde_json::to_vec(&body)?,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(job.into())
            .with_headers(h),
    )
    .await?
    .await?;
    Ok(())
}

fn json_of(o: &std::process::Output) -> anyhow::Result<Value> {
    anyhow::ensure!(
        o.status.success(),
        "engage failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

fn job_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list[0]["letters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["job_id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_dead_letter_queue_thirty_times_spends_nothing() -> anyhow::Result<()> {
    let f = Fleet::new("dlqlist", Backend::Local, 1, 1)?;
    let conn = amqp().await?;
    let topo = declare(&conn, &f.ns).await?;
    let dlq = topo.dlq(engage_model::envelope::StageName::Clean);

    // The dead-letter queue states its delivery limit: declaring it without
    // one is refused as inequivalent (so no broker default applies to it).
    let ch = conn.create_channel().await?;
    let mut bare = FieldTable::default();
    bare.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let refused = ch
        .queue_declare(dlq.as_str().into(), durable, bare)
        .await
        .expect_err("a DLQ without x-delivery-limit was accepted as equivalent");
    assert!(
        format!("{refused}").contains("x-delivery-limit"),
        "{refused}"
    );
    let ch = conn.create_channel().await?;
    ch.queue_declare(dlq.as_str().into(), durable, dlq_arguments())
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;

    let n: usize = 5;
    for i in 0..n {
        dead_letter(&ch, &dlq, "b-1", &format!("clean:b-1:p{i}"), "poison").await?;
    }
    let mut first = None;
    for round in 0..30 {
        let list = json_of(&f.engage(&["dlq", "list", "clean", "--limit", "100", "--json"])?)?;
        assert_eq!(list[0]["count"], n, "round {round}: {list}");
        let ids = job_ids(&list);
        assert_eq!(ids.len(), n, "round {round}: {list}");
        assert_eq!(
            list[0]["letters"][0]["batch"], "b-1",
            "round {round}: {list}"
        );
        assert_eq!(list[0]["letters"][0]["attempts"], "3");
        match &first {
            None => first = Some(ids),
            Some(f) => assert_eq!(f, &ids, "round {round}"),
        }
    }
    // Every message is still there, once.
    assert_eq!(queue_len(&conn, &dlq).await?, 5);
    // The text form too.
    let o = f.engage(&["dlq", "list", "clean"])?;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("clean: 5 dead-lettered") && text.contains("reason=poison"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_moves_only_the_messages_its_filters_match() -> anyhow::Result<()> {
    let f = Fleet::new("dlqreplay", Backend::Local, 1, 1)?;
    let conn = amqp().await?;
    let topo = declare(&conn, &f.ns).await?;
    let clean = engage_model::envelope::StageName::Clean;
    let (dlq, work) = (topo.dlq(clean), topo.work_queue(clean));
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    // Batch a: two poison, one max_attempts; batch b: two poison.
    for (batch, job, reason) in [
        ("a", "clean:a:1", "poison"),
        ("a", "clean:a:2", "poison"),
        ("a", "clean:a:3", "max_attempts"),
        ("b", "clean:b:1", "poison"),
        ("b", "clean:b:2", "poison"),
    ] {
        dead_letter(&ch, &dlq, batch, job, reason).await?;
    }
    let remaining = |f: &Fleet| -> anyhow::Result<Vec<String>> {
        Ok(job_ids(&json_of(&f.engage(&[
            "dlq", "list", "clean", "--limit", "100", "--json",
        ])?)?))
    };
    let replay = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = vec!["dlq", "replay", "clean"];
        all.extend_from_slice(args);
        let o = f.engage(&all)?;
        anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };

    // AND of batch and reason: a's two poison jobs only.
    let out = replay(&["--batch", "a", "--reason", "poison"])?;
    assert!(out.contains("replayed 2"), "{out}");
    assert!(out.contains("3 not matching"), "{out}");
    assert_eq!(
        remaining(&f)?,
        ["clean:a:3", "clean:b:1", "clean:b:2"],
        "{out}"
    );
    assert_eq!(queue_len(&conn, &work).await?, 2);

    // One job by id.
    let out = replay(&["--job", "clean:b:2"])?;
    assert!(out.contains("replayed 1"), "{out}");
    assert_eq!(remaining(&f)?, ["clean:a:3", "clean:b:1"]);

    // A filter nothing matches moves nothing.
    let out = replay(&["--batch", "zzz"])?;
    assert!(
        out.contains("replayed 0") && out.contains("2 not matching"),
        "{out}"
    );
    assert_eq!(remaining(&f)?, ["clean:a:3", "clean:b:1"]);

    // --limit caps what matches.
    let out = replay(&["--limit", "1"])?;
    assert!(out.contains("replayed 1"), "{out}");
    assert_eq!(remaining(&f)?.len(), 1);
    assert_eq!(queue_len(&conn, &work).await?, 4);
    assert_eq!(queue_len(&conn, &dlq).await?, 1);

    // The replayed jobs start again at attempt 0.
    let m = ch
        .basic_get(work.as_str().into(), Default::default())
        .await?
        .ok_or_else(|| anyhow::anyhow!("work queue empty"))?;
    let env: Value = serde_json::from_slice(&m.delivery.data)?;
    assert_eq!(env["attempt"], 0, "{env}");
    Ok(())
}

/// The item log's first state of `batch`: (response id, learner, analyzer).
fn first_logged_item(f: &Fleet, batch: &str) -> anyhow::Result<(String, String, String)> {
    let dir = f
        .dir
        .path()
        .join("store")
        .join("batches")
        .join(batch)
        .join("items");
    for e in std::fs::read_dir(&dir)? {
        let text = std::fs::read_to_string(e?.path())?;
        for line in text.lines() {
            let s: Value = serde_json::from_str(line)?;
            if s["outcome"]["status"] == "ok" {
                return Ok((
                    s["response_id"].as_str().unwrap_or_default().into(),
                    s["user_id"].as_str().unwrap_or_default().into(),
                    s["outcome"]["analyzer"].as_str().unwrap_or_default().into(),
                ));
            }
        }
    }
    anyhow::bail!("no analyzed item logged in {}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_inspect_tell_the_truth_about_a_real_batch() -> anyhow::Result<()> {
    let mut f = Fleet::new("opsread", Backend::Local, 3, 2)?;
    f.start_all()?;
    let batch = f.enqueue()?;
    f.wait_and_report(&batch, 120)?;

    // engage batches: the complete batch, with every filter that admits it.
    let rows = json_of(&f.engage(&["batches", "--json"])?)?;
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == batch.as_str()))
        .ok_or_else(|| anyhow::anyhow!("{batch} not listed: {rows}"))?
        .clone();
    assert_eq!(row["state"], "complete", "{row}");
    assert_eq!(row["items"], row["final_items"], "{row}");
    assert!(row["items"].as_u64() > Some(0), "{row}");
    assert_eq!(row["learners_aggregated"], row["learners"], "{row}");
    let listed = |args: &[&str]| -> anyhow::Result<bool> {
        let mut all = vec!["batches", "--json"];
        all.extend_from_slice(args);
        let v = json_of(&f.engage(&all)?)?;
        Ok(v.as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == batch.as_str())))
    };
    assert!(listed(&["--state", "complete"])?);
    assert!(!listed(&["--state", "open"])?);
    assert!(!listed(&["--state", "failed"])?);
    assert!(listed(&["--since", "1h"])?);
    assert!(listed(&["--since", "2000-01-01T00:00:00Z"])?);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert!(!listed(&["--since", &later])?);
    let o = f.engage(&["batches", "--since", "yesterday"])?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid --since"));
    let text = String::from_utf8_lossy(&f.engage(&["batches"])?.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&batch) && l.contains("complete")),
        "{text}"
    );

    // engage inspect BATCH (and status --json, the same view).
    let d = json_of(&f.engage(&["inspect", &batch, "--json"])?)?;
    assert_eq!(d["state"], "complete", "{d}");
    assert!(d["planned_at"].is_string(), "{d}");
    let analyze = d["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == "analyze"))
        .ok_or_else(|| anyhow::anyhow!("no analyze stage: {d}"))?;
    assert_eq!(analyze["done"], analyze["total"], "{d}");
    let st = json_of(&f.engage(&["status", &batch, "--json"])?)?;
    assert_eq!(st["state"], "complete", "{st}");
    assert_eq!(st["items"], d["items"], "{st}");

    // engage inspect --item: the item's path, outcome, analyzer and source.
    let (item, learner, analyzer) = first_logged_item(&f, &batch)?;
    let i = json_of(&f.engage(&["inspect", &batch, "--item", &item, "--json"])?)?;
    assert_eq!(i["outcome"], "analyzed", "{i}");
    assert_eq!(i["analyzer"], analyzer.as_str(), "{i}");
    assert_eq!(i["learner"], learner.as_str(), "{i}");
    assert!(i["source"].is_string(), "{i}");
    let path: Vec<(String, String)> = i["path"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["stage"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        path,
        [
            ("clean+match".to_string(), "done".to_string()),
            ("download".into(), "done".into()),
            ("analyze".into(), "done".into()),
            ("aggregate".into(), "done".into()),
        ],
        "{i}"
    );
    // Each per-item stage says when it finished, within this test. (Not in
    // order: a job's marker is written after its follow-ups are published,
    // so the next stage may finish first.)
    let started = chrono::Utc::now() - chrono::Duration::minutes(30);
    let now = chrono::Utc::now() + chrono::Duration::seconds(5);
    let times: Vec<chrono::DateTime<chrono::Utc>> = ["download", "analyze", "aggregate"]
        .iter()
        .map(|stage| {
            let step = i["path"]
                .as_array()
                .and_then(|p| p.iter().find(|s| s["stage"] == *stage))
                .ok_or_else(|| anyhow::anyhow!("no {stage} step: {i}"))?;
            let at = step["at"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{stage} has no time: {i}"))?;
            Ok(chrono::DateTime::parse_from_rfc3339(at)?.with_timezone(&chrono::Utc))
        })
        .collect::<anyhow::Result<_>>()?;
    assert!(
        times.iter().all(|t| *t >= started && *t <= now),
        "stage times outside the test: {times:?} {i}"
    );
    let text = String::from_utf8_lossy(&f.engage(&["inspect", &batch, "--item", &item])?.stdout)
        .into_owned();
    assert!(
        text.contains(&analyzer) && text.contains("analyze") && text.contains("(at "),
        "{text}"
    );

    // engage inspect --learner: the learner's items, this one among them.
    let l = json_of(&f.engage(&["inspect", &batch, "--learner", &learner, "--json"])?)?;
    assert_eq!(l["aggregated"], true, "{l}");
    assert!(
        l["items"]
            .as_array()
            .is_some_and(|is| is.iter().any(|x| x["item"] == item.as_str())),
        "{l}"
    );

    // Unknown item, learner, batch: named errors, exit 1.
    for (args, says) in [
        (
            vec!["inspect", &batch, "--item", "no-such-item"],
            "has no item",
        ),
        (
            vec!["inspect", &batch, "--learner", "no-such-learner"],
            "no such learner",
        ),
        (vec!["inspect", "no-such-batch"], "unknown batch"),
    ] {
        let o = f.engage(&args)?;
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // The global --namespace wins over ENGAGE_NAMESPACE.
    let o = std::process::Command::new(crate::support::fleet::bin_dir().join("engage"))
        .envs(&f.env)
        .env("ENGAGE_NAMESPACE", "t-some-other-namespace")
        .args(["--namespace", &f.ns, "batches", "--json"])
        .output()?;
    let v = json_of(&o)?;
    assert!(
        v.as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == batch.as_str())),
        "{v}"
    );
    let o = std::process::Command::new(crate::support::fleet::bin_dir().join("engage"))
        .envs(&f.env)
        .env("ENGAGE_NAMESPACE", "t-some-other-namespace")
        .args(["batches", "--json"])
        .output()?;
    assert_eq!(json_of(&o)?, serde_json::json!([]));

    // Read-only commands work whatever the caller's retry settings: they
    // declare nothing, so nothing can be inequivalent.
    let o = std::process::Command::new(crate::support::fleet::bin_dir().join("engage"))
        .envs(&f.env)
        .env("ENGAGE_RETRY_DELAYS_MS", "7,8")
        .env("ENGAGE_DELIVERY_LIMIT", "9")
        .args(["dlq", "list", "--json"])
        .output()?;
    let v = json_of(&o)?;
    assert_eq!(v.as_array().map(Vec::len), Some(5), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_declare_nothing_on_the_broker() -> anyhow::Result<()> {
    let f = Fleet::new("readonly", Backend::Local, 1, 1)?;
    for args in [
        vec!["status", "--json"],
        vec!["status"],
        vec!["status", "some-batch", "--json"],
        vec!["batches", "--json"],
        vec!["inspect", "some-batch"],
        vec!["inspect", "some-batch", "--item", "x"],
        vec!["dlq", "list", "--json"],
        vec!["config", "show", "--json"],
    ] {
        f.engage(&args)?;
    }
    let conn = amqp().await?;
    let ch = conn.create_channel().await?;
    for q in [
        format!("{}.clean", f.ns),
        format!("{}.clean.dlq", f.ns),
        format!("{}.wait.0", f.ns),
    ] {
        let ch = conn.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        assert!(
            ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .is_err(),
            "{q} was declared by a read-only command"
        );
    }
    let exchange = ch
        .exchange_declare(
            format!("{}.jobs", f.ns).as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(exchange.is_err(), "the jobs exchange was declared");
    Ok(())
}

#[test]
fn completions_and_help_name_the_commands_and_variables() -> anyhow::Result<()> {
    let engage = crate::support::fleet::bin_dir().join("engage");
    for (shell, marker) in [
        ("bash", "_engage()"),
        ("zsh", "#compdef engage"),
        ("fish", "complete -c engage"),
    ] {
        let o = std::process::Command::new(&engage)
            .args(["completions", shell])
            .output()?;
        assert!(o.status.success(), "{shell}");
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains(marker), "{shell}: {s}");
        assert!(s.contains("inspect") && s.contains("batches"), "{shell}");
    }
    let o = std::process::Command::new(&engage)
        .env_remove("ENGAGE_NAMESPACE")
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&o.stdout);
    for v in [
        "[env: ENGAGE_NAMESPACE",
        "[env: ENGAGE_CONFIG",
        "ENGAGE_AMQP_URL",
        "ENGAGE_REDIS_URL",
    ] {
        assert!(help.contains(v), "--help lacks {v}:\n{help}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_halted_before_its_plan_is_listed_as_failed() -> anyhow::Result<()> {
    let mut f = Fleet::new("opsfailed", Backend::Local, 1, 1)?;
    f.start("clean")?;
    f.wait_consuming("clean").await?;
    let missing = f.dir.path().join("no-such-activity.jsonl");
    let batch = f.enqueue_activity(&missing)?;
    let row = crate::support::fleet::poll(
        "the halted batch in `engage batches --state failed`",
        std::time::Duration::from_secs(60),
        || async {
            let v = json_of(&f.engage(&["batches", "--state", "failed", "--json"])?)?;
            Ok(v.as_array()
                .and_then(|r| r.iter().find(|r| r["id"] == batch.as_str()))
                .cloned())
        },
    )
    .await?;
    assert_eq!(row["halts"][0]["stage"], "clean", "{row}");
    let open = json_of(&f.engage(&["batches", "--state", "open", "--json"])?)?;
    assert_eq!(open, serde_json::json!([]), "{open}");
    let d = json_of(&f.engage(&["inspect", &batch, "--json"])?)?;
    assert_eq!(d["state"], "failed", "{d}");
    let text = String::from_utf8_lossy(&f.engage(&["batches"])?.stdout).into_owned();
    assert!(text.contains("engage dlq replay clean"), "{text}");
    Ok(())
}

#[test]
fn the_global_config_and_namespace_flags_reach_config_show() -> anyhow::Result<()> {
    let engage = crate::support::fleet::bin_dir().join("engage");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("engage.toml");
    std::fs::write(&file, "[fleet]\nnamespace = \"from-file\"\n")?;
    let namespace_of = |args: &[&str]| -> anyhow::Result<(Value, Value)> {
        let o = std::process::Command::new(&engage)
            .env_remove("ENGAGE_NAMESPACE")
            .env_remove("ENGAGE_CONFIG")
            .args(args)
            .output()?;
        let v = json_of(&o)?;
        let field = v["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["section"] == "fleet")
            .flat_map(|s| s["fields"].as_array().cloned().unwrap_or_default())
            .find(|f| f["field"] == "namespace")
            .ok_or_else(|| anyhow::anyhow!("no fleet.namespace in {v}"))?;
        Ok((v["file"].clone(), field["value"].clone()))
    };
    let path = file.display().to_string();
    let (f, ns) = namespace_of(&["--config", &path, "config", "show", "--json"])?;
    assert_eq!(
        (f.as_str(), ns.as_str()),
        (Some(path.as_str()), Some("from-file"))
    );
    // The flag wins over the file; global flags go before or after the command.
    let (_, ns) = namespace_of(&[
        "config",
        "show",
        "--json",
        "--config",
        &path,
        "--namespace",
        "flag",
    ])?;
    assert_eq!(ns, "flag");
    Ok(())
}
