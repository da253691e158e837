//! Passwords never reach the output: a worker and the CLI (`engage enqueue`,
//! `engage status`) run with a secret password in every supported URL form
//! against an unreachable or wrong endpoint; every byte they print to stdout
//! and stderr is searched for the password (raw and percent-decoded).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fleet::{bin_dir, namespace};

/// The password used in every form; distinctive so a hit cannot be a coincidence.
const PW: &str = "S3cretPW7q";
/// A percent-encoded password and its decoded form.
const PW_ENC: &str = "Zx%2FS3cret";
const PW_DEC: &str = "Zx/S3cret";

/// Unreachable broker URLs (port 1), one per supported form.
fn amqp_forms() -> Vec<String> {
    vec![
        format!("amqp://guest:{PW}@127.0.0.1:1/%2f"),
        format!("amqp:guest:{PW}@127.0.0.1:1"),
        format!("guest:{PW}@127.0.0.1:1"),
        format!("amqp://guest:{PW_ENC}@127.0.0.1:1/%2f"),
        format!("amqps://guest:{PW}@127.0.0.1:1/%2f"),
        format!("amqp://127.0.0.1:1/%2f?password={PW}"),
    ]
}

/// Unreachable or malformed Redis URLs, one per supported form.
fn redis_forms() -> Vec<String> {
    vec![
        format!("redis://:{PW}@127.0.0.1:1"),
        format!("rediss://u:{PW}@127.0.0.1:1/0"),
        format!("redis:default:{PW}@127.0.0.1:1"),
        format!("redis://:{PW_ENC}@127.0.0.1:1"),
        format!("redis://:{PW}@127.0.0.1:1,redis://:{PW}@127.0.0.1:2"),
    ]
}

const GOOD_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const GOOD_REDIS: &str = "redis://127.0.0.1:6379";

fn assert_clean(what: &str, output: &str) {
    for needle in [PW, PW_ENC, PW_DEC] {
        assert!(
            !output.contains(needle),
            "{what}: the password {needle:?} was printed:\n{output}"
        );
    }
}

fn command(bin: &str, dir: &Path, amqp: &str, redis: &str) -> Command {
    let mut c = Command::new(bin_dir().join(bin));
    c.env("ENGAGE_NAMESPACE", namespace("secrets"))
        .env("ENGAGE_AMQP_URL", amqp)
        .env("ENGAGE_REDIS_URL", redis)
        .env("ENGAGE_METRICS_ADDR", "127.0.0.1:0")
        .env("ENGAGE_STORE", format!("file://{}", dir.display()))
        .env("RUST_LOG", "info")
        .env_remove("ENGAGE_CONFIG")
        .stdin(Stdio::null());
    c
}

/// Runs a worker until it has logged `until` (or exited), at most 30 s;
/// returns everything it printed.
fn run_worker(dir: &Path, amqp: &str, redis: &str, until: &str) -> String {
    let log = dir.join(format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child: Child = command("engage-clean", dir, amqp, redis)
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("spawn the worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = false;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(until) || exited {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker never logged {until:?}:\n{text}"
        );
        exited = matches!(child.try_wait(), Ok(Some(_)));
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap_or_default()
}

fn run_cli(dir: &Path, amqp: &str, redis: &str, args: &[&str]) -> String {
    let out = command("engage", dir, amqp, redis)
        .args(args)
        .output()
        .expect("run engage");
    assert!(!out.status.success(), "{args:?} should fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn worker_logs_never_contain_the_broker_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in amqp_forms() {
        // Redis is reachable, the broker is not: the worker retries and logs each attempt.
        let out = run_worker(dir.path(), &url, GOOD_REDIS, "reconnecting");
        assert!(out.contains("reconnecting"), "{url}: {out}");
        assert_clean(&format!("worker with ENGAGE_AMQP_URL={url}"), &out);
    }
}

#[test]
fn worker_exit_errors_never_contain_the_redis_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in redis_forms() {
        let out = run_worker(dir.path(), GOOD_AMQP, &url, "\u{0}never");
        assert!(!out.is_empty(), "{url}: the worker printed nothing");
        assert_clean(&format!("worker with ENGAGE_REDIS_URL={url}"), &out);
    }
}

#[test]
fn cli_output_never_contains_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let enqueue = [
        "enqueue",
        "--activity",
        "file:///nonexistent/activity.jsonl",
        "--sessions",
        "file:///nonexistent/sessions.csv",
    ];
    for url in amqp_forms() {
        let out = run_cli(dir.path(), &url, GOOD_REDIS, &enqueue);
        assert!(out.contains("engage:"), "{url}: {out}");
        assert_clean(&format!("engage enqueue with ENGAGE_AMQP_URL={url}"), &out);
    }
    for url in redis_forms() {
        let out = run_cli(dir.path(), GOOD_AMQP, &url, &["status"]);
        assert!(out.contains("engage:"), "{url}: {out}");
        assert_clean(&format!("engage status with ENGAGE_REDIS_URL={url}"), &out);
    }
}
