//! What operators and producers touch: a batch published by a plain AMQP
//! client in another language (Python/pika), and the workers' `/metrics`,
//! `/healthz` and `/readyz`.

use std::process::Command;
use std::time::Duration;

use crate::support::fleet::{
    Backend, Fleet, PrivateRedis, assert_same_outputs, free_port, http_get, poll,
};

/// The documented producer message, published with pika (not our Rust code).
const PIKA_PRODUCER: &str = r#"
import json, sys, pika
ns, batch, activity, sessions = sys.argv[1:5]
msg = {"v": 1, "batch_id": batch, "job_id": "plan:" + batch, "attempt": 0, "trace_id": "py-" + batch,
       "job": {"kind": "batch", "activity": [activity], "sessions": sessions, "selection": {"kind": "all"}}}
conn = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
ch = conn.channel()
ch.confirm_delivery()
ch.basic_publish(exchange=ns + ".jobs", routing_key="clean", body=json.dumps(msg),
                 properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"), mandatory=True)
conn.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_starts_a_batch_with_the_documented_message() -> anyhow::Result<()> {
    let mut f = Fleet::new("pika", Backend::Local, 6, 5)?;
    f.start_all()?;
    f.wait_consuming("clean").await?;
    let batch = "py-batch-1";
    let activity = format!("file://{}", f.data.activity.display());
    let sessions = format!("file://{}", f.data.sessions.display());
    let o = Command::new("python3")
        .args(["-c", PIKA_PRODUCER, &f.ns, batch, &activity, &sessions])
        .output()?;
    assert!(
        o.status.success(),
        "pika producer failed (pip install pika): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = f.wait_and_report(batch, 120)?;
    assert_same_outputs(&f.reference()?, &out);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_serve_metrics_health_and_readiness_without_learner_ids() -> anyhow::Result<()> {
    let mut f = Fleet::new("metrics", Backend::Local, 6, 5)?;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    f.env.insert("ENGAGE_METRICS_ADDR".into(), addr.clone());
    f.start("clean")?;
    // The match worker's readiness is never probed: its gauge must still say ready.
    let unprobed = format!("127.0.0.1:{}", free_port());
    f.env.insert("ENGAGE_METRICS_ADDR".into(), unprobed.clone());
    f.start("match")?;
    f.env
        .insert("ENGAGE_METRICS_ADDR".into(), "127.0.0.1:0".into());
    for s in ["download", "analyze", "aggregate"] {
        f.start(s)?;
    }
    poll(
        "engage_ready without a probe",
        Duration::from_secs(30),
        || async {
            Ok(http_get(&unprobed, "/metrics")
                .ok()
                .filter(|(_, m)| m.contains(r#"engage_ready{stage="match"} 1"#)))
        },
    )
    .await?;
    let ready = poll("/readyz to say ready", Duration::from_secs(30), || async {
        Ok(http_get(&addr, "/readyz")
            .ok()
            .filter(|(code, _)| *code == 200))
    })
    .await?;
    assert!(
        ready.1.contains("amqp: up") && ready.1.contains("redis: up"),
        "{}",
        ready.1
    );
    assert_eq!(http_get(&addr, "/healthz")?.0, 200);
    let batch = f.enqueue()?;
    let out = f.wait_and_report(&batch, 120)?;
    let (code, metrics) = http_get(&addr, "/metrics")?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"engage_jobs_total{outcome="ok",stage="clean"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("engage_job_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"engage_ready{stage="clean"} 1"#),
        "{metrics}"
    );
    // No learner id (nor batch id) in any label.
    let matched = std::fs::read_to_string(out.join("matched.csv"))?;
    for user in matched.lines().skip(1).filter_map(|l| l.split(',').nth(1)) {
        assert!(
            !metrics.contains(&format!("\"{user}\"")),
            "learner id {user} in metrics"
        );
    }
    assert!(!metrics.contains(&batch));

    // Not ready when the worker is stopped by SIGTERM: the endpoint goes away with it.
    let st = f.signal("clean", "TERM");
    assert!(st[0].success());
    let gone = http_get(&addr, "/healthz").expect_err("the endpoint outlived its worker");
    assert_eq!(
        gone.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{gone:#}"
    );
    Ok(())
}

/// Polls `/readyz` until it answers `code`; returns the body.
async fn readyz_turns(addr: &str, code: u16, what: &str) -> anyhow::Result<String> {
    poll(what, Duration::from_secs(30), || async {
        Ok(http_get(addr, "/readyz")
            .ok()
            .filter(|(c, _)| *c == code)
            .map(|(_, body)| body))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_while_redis_is_down_and_200_when_it_is_back() -> anyhow::Result<()> {
    let redis = PrivateRedis::start(false)?;
    let redis_port = redis.port;
    let mut f = Fleet::new("readyz", Backend::Local, 2, 2)?;
    let addr = format!("127.0.0.1:{}", free_port());
    f.env.insert("ENGAGE_REDIS_URL".into(), redis.url());
    f.env.insert("ENGAGE_METRICS_ADDR".into(), addr.clone());
    f.start("clean")?;
    let body = readyz_turns(&addr, 200, "/readyz to say ready").await?;
    assert!(body.contains("redis: up"), "{body}");

    // Redis dies: the worker stays alive but is not ready.
    redis.stop();
    let body = readyz_turns(&addr, 503, "/readyz to say not ready").await?;
    assert!(
        body.contains("redis: down") && body.contains("amqp: up"),
        "{body}"
    );
    assert_eq!(http_get(&addr, "/healthz")?.0, 200, "the process is up");
    let (_, metrics) = http_get(&addr, "/metrics")?;
    assert!(
        metrics.contains(r#"engage_ready{stage="clean"} 0"#),
        "{metrics}"
    );

    // Redis is back on the same address: ready again, without a restart.
    let _redis = PrivateRedis::start_on(redis_port, false)?;
    let body = readyz_turns(&addr, 200, "/readyz to say ready again").await?;
    assert!(body.contains("redis: up"), "{body}");
    Ok(())
}

/// `engage enqueue` refuses, before publishing, a batch naming an input
/// outside the allow-list (the clean worker's refusal of the same batch sent
/// straight to the broker is a corpus case). The broker URL points at a closed
/// port: the refusal must come before any connection is tried.
#[test]
fn enqueue_refuses_inputs_outside_the_allow_list() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let o = Command::new(crate::support::fleet::bin_dir().join("engage"))
        .env(
            "ENGAGE_NAMESPACE",
            crate::support::fleet::namespace("enqueue-refuses"),
        )
        .env("ENGAGE_STORE", format!("file://{}", dir.path().display()))
        .env(
            "ENGAGE_INPUT_PREFIXES",
            format!("file://{}/in", dir.path().display()),
        )
        .env(
            "ENGAGE_AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        )
        .args([
            "enqueue",
            "--activity",
            "file:///proc/self/environ",
            "--sessions",
            &format!("file://{}/in/sessions.csv", dir.path().display()),
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("input_not_allowed"), "{stderr}");
    assert!(
        !stderr.contains("environ"),
        "the key is not printed: {stderr}"
    );
    assert!(o.stdout.is_empty(), "no batch id was printed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_tears_a_namespace_down_after_confirmation() -> anyhow::Result<()> {
    let mut f = Fleet::new("purge", Backend::Local, 4, 3)?;
    f.start_all()?;
    let batch = f.enqueue()?;
    f.wait_and_report(&batch, 120)?;
    for s in crate::support::fleet::STAGES {
        f.signal(s, "TERM");
    }
    // Without a terminal and without --yes nothing is deleted.
    let o = f.engage(&["purge"])?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let conn = crate::support::fleet::amqp().await?;
    let exists = |q: String| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await?;
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let found = ch
                .queue_declare(q.as_str().into(), passive, Default::default())
                .await
                .is_ok();
            anyhow::Ok(found)
        }
    };
    let clean = format!("{}.clean", f.ns);
    assert!(exists(clean.clone()).await?);
    let o = f.engage(&["purge", "--yes"])?;
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("purged:"), "{said}");
    // The queues are gone (a passive declare fails) and so are the keys.
    for q in [
        clean,
        format!("{}.analyze.dlq", f.ns),
        format!("{}.wait.12", f.ns),
    ] {
        assert!(!exists(q.clone()).await?, "{q} is still there");
    }
    let client = redis::Client::open("redis://127.0.0.1:6379")?;
    let mut c = client.get_multiplexed_async_connection().await?;
    for pattern in [format!("{}:*", f.ns), format!("{{{}:*", f.ns)] {
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await?;
        assert!(keys.is_empty(), "{pattern}: {keys:?}");
    }
    Ok(())
}
