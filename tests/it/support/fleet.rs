//! `spawn_fleet`: a fleet of the five real worker binaries in a namespace of
//! its own, over the real RabbitMQ and Redis, with a generated dataset, plus
//! helpers to drive it through the real `engage` CLI.
//!
//! The binaries come from the same `target/` directory as this test binary;
//! the README's test command builds them first (`cargo build --workspace --bins`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::s3::S3Server;

/// The five stages.
pub const STAGES: [&str; 5] = ["clean", "match", "download", "analyze", "aggregate"];

/// The directory holding the workspace's binaries (next to `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in STAGES
        .iter()
        .map(|s| format!("engage-{s}"))
        .chain(["engage".to_string()])
    {
        assert!(
            dir.join(&b).exists(),
            "{b} is not built in {}: run `cargo build --workspace --bins` before the tests (the README's test command does)",
            dir.display()
        );
    }
    dir
}

/// A fresh namespace for one test.
pub fn namespace(test: &str) -> String {
    format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the fleet keeps its store and reads its inputs.
pub enum Backend {
    /// `file://` store, audio from a local S3 layout (`ENGAGE_S3_ROOT`).
    Local,
    /// Everything on a real S3-compatible server (s3s-fs) on loopback.
    S3(S3Server),
}

/// A generated dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Activity log path.
    pub activity: PathBuf,
    /// Sessions path.
    pub sessions: PathBuf,
    /// The local S3 layout (`DIR/s3`).
    pub s3_root: PathBuf,
}

/// Runs `engage gen-data` into `dir`.
pub fn gen_data(dir: &Path, learners: u32, responses: u32, seed: u64) -> anyhow::Result<Dataset> {
    let out = Command::new(bin_dir().join("engage"))
        .args([
            "gen-data",
            "--learners",
            &learners.to_string(),
            "--responses",
            &responses.to_string(),
        ])
        .args([
            "--seed",
            &seed.to_string(),
            "--bad-fraction",
            "0.05",
            "--out",
        ])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("gen-data failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Dataset {
        activity: dir.join("activity.jsonl"),
        sessions: dir.join("sessions.csv"),
        s3_root: dir.join("s3"),
    })
}

/// Runs `engage run` on a dataset; returns the output directory.
pub fn engage_run(data: &Dataset, out: &Path) -> anyhow::Result<PathBuf> {
    engage_run_with(data, 1, out, &[])?;
    Ok(out.to_path_buf())
}

/// Runs `engage run` on a dataset whose activity log is given `copies`
/// times (repeats across files), with `extra` arguments; fails unless it
/// succeeds.
pub fn engage_run_with(
    data: &Dataset,
    copies: usize,
    out: &Path,
    extra: &[&str],
) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin_dir().join("engage"));
    cmd.arg("run");
    for _ in 0..copies {
        cmd.arg("--activity").arg(&data.activity);
    }
    let o = cmd
        .arg("--sessions")
        .arg(&data.sessions)
        .arg("--s3-root")
        .arg(&data.s3_root)
        .args(["--audio-buckets", "learner-audio", "--out"])
        .arg(out)
        .args(extra)
        .output()?;
    if !o.status.success() {
        bail!(
            "engage run {extra:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// The files whose bytes must agree between `engage run` and the fleet.
pub const COMPARED: [&str; 5] = [
    "matched.csv",
    "analysis.csv",
    "report.csv",
    "report.json",
    "report.html",
];

/// Asserts two output directories hold identical compared files.
pub fn assert_same_outputs(a: &Path, b: &Path) {
    for f in COMPARED {
        let x = std::fs::read(a.join(f)).unwrap_or_else(|e| panic!("{}: {e}", a.join(f).display()));
        let y = std::fs::read(b.join(f)).unwrap_or_else(|e| panic!("{}: {e}", b.join(f).display()));
        assert!(
            x == y,
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// A running fleet.
pub struct Fleet {
    /// The namespace (queues and Redis keys).
    pub ns: String,
    /// Environment given to every worker and CLI call.
    pub env: BTreeMap<String, String>,
    /// Scratch directory (store, logs, outputs).
    pub dir: tempfile::TempDir,
    /// The generated data.
    pub data: Dataset,
    /// The S3 server, if any.
    pub backend: Backend,
    workers: Vec<(String, Child)>,
}

impl Fleet {
    /// A fleet over `backend` with generated data; no worker started yet.
    pub fn new(
        test: &str,
        backend: Backend,
        learners: u32,
        responses: u32,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = gen_data(&dir.path().join("data"), learners, responses, 7)?;
        let ns = namespace(test);
        let mut env = BTreeMap::new();
        env.insert("ENGAGE_NAMESPACE".into(), ns.clone());
        env.insert("ENGAGE_AUDIO_BUCKETS".into(), "learner-audio".into());
        env.insert("ENGAGE_METRICS_ADDR".into(), "127.0.0.1:0".into());
        env.insert("ENGAGE_CONCURRENCY".into(), "16".into());
        env.insert("ENGAGE_RETRY_DELAYS_MS".into(), "200,500,1000".into());
        env.insert("ENGAGE_MAX_ATTEMPTS".into(), "3".into());
        env.insert("ENGAGE_DRAIN_TIMEOUT_S".into(), "20".into());
        env.insert("RUST_LOG".into(), "info".into());
        match &backend {
            Backend::Local => {
                env.insert(
                    "ENGAGE_STORE".into(),
                    format!("file://{}", dir.path().join("store").display()),
                );
                env.insert("ENGAGE_S3_ROOT".into(), data.s3_root.display().to_string());
                // Inputs may come from anywhere in the test's own directory.
                env.insert(
                    "ENGAGE_INPUT_PREFIXES".into(),
                    format!("file://{}", dir.path().display()),
                );
            }
            Backend::S3(s3) => {
                // The audio bucket is the generated layout; inputs and the store are buckets too.
                let audio = s3.create_bucket("learner-audio")?;
                copy_tree(&data.s3_root.join("learner-audio"), &audio)?;
                let inputs = s3.create_bucket("inputs")?;
                std::fs::copy(&data.activity, inputs.join("activity.jsonl"))?;
                std::fs::copy(&data.sessions, inputs.join("sessions.csv"))?;
                s3.create_bucket("engage-store")?;
                env.insert("ENGAGE_STORE".into(), "s3://engage-store/fleet".into());
                env.insert("ENGAGE_INPUT_PREFIXES".into(), "s3://inputs".into());
                env.insert("ENGAGE_S3_ENDPOINT".into(), s3.endpoint.clone());
                env.insert("ENGAGE_S3_FORCE_PATH_STYLE".into(), "true".into());
                env.insert("ENGAGE_S3_REGION".into(), "us-east-1".into());
                env.insert("AWS_ACCESS_KEY_ID".into(), s3.access_key.clone());
                env.insert("AWS_SECRET_ACCESS_KEY".into(), s3.secret_key.clone());
                env.insert("AWS_REGION".into(), "us-east-1".into());
                env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
            }
        }
        std::fs::create_dir_all(dir.path().join("logs"))?;
        Ok(Self {
            ns,
            env,
            dir,
            data,
            backend,
            workers: Vec::new(),
        })
    }

    /// Input URIs as the producer names them.
    pub fn inputs(&self) -> (String, String) {
        match &self.backend {
            Backend::Local => (
                self.data.activity.display().to_string(),
                self.data.sessions.display().to_string(),
            ),
            Backend::S3(_) => (
                "s3://inputs/activity.jsonl".into(),
                "s3://inputs/sessions.csv".into(),
            ),
        }
    }

    /// Starts one worker process of `stage`.
    pub fn start(&mut self, stage: &str) -> anyhow::Result<u32> {
        let n = self.workers.iter().filter(|(s, _)| s == stage).count();
        let log = std::fs::File::create(
            self.dir
                .path()
                .join("logs")
                .join(format!("{stage}-{n}.log")),
        )?;
        let child = Command::new(bin_dir().join(format!("engage-{stage}")))
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting engage-{stage}"))?;
        let pid = child.id();
        self.workers.push((stage.to_string(), child));
        Ok(pid)
    }

    /// Starts one worker of every stage.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for s in STAGES {
            self.start(s)?;
        }
        Ok(())
    }

    /// Sends `signal` to the workers of `stage` and waits for them; returns their exit statuses.
    pub fn signal(&mut self, stage: &str, signal: &str) -> Vec<std::process::ExitStatus> {
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for (s, mut c) in self.workers.drain(..) {
            if s == stage {
                let _ = Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(c.id().to_string())
                    .status();
                if let Ok(st) = c.wait() {
                    out.push(st);
                }
            } else {
                keep.push((s, c));
            }
        }
        self.workers = keep;
        out
    }

    /// Runs the `engage` CLI with the fleet's environment.
    pub fn engage(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(bin_dir().join("engage"))
            .envs(&self.env)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// `engage enqueue` of the dataset; returns the batch id.
    pub fn enqueue(&self) -> anyhow::Result<String> {
        let (a, s) = self.inputs();
        let o = self.engage(&["enqueue", "--activity", &a, "--sessions", &s])?;
        if !o.status.success() {
            bail!("enqueue failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// `engage enqueue` of `activity` (a local path, which need not exist:
    /// the batch then halts at its plan) with this fleet's sessions; the
    /// batch id.
    pub fn enqueue_activity(&self, activity: &std::path::Path) -> anyhow::Result<String> {
        let o = self.engage(&[
            "enqueue",
            "--activity",
            &activity.display().to_string(),
            "--sessions",
            &self.data.sessions.display().to_string(),
        ])?;
        if !o.status.success() {
            bail!("enqueue failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// `engage status --wait`, then `engage report`; returns the report directory.
    pub fn wait_and_report(&self, batch: &str, timeout_s: u64) -> anyhow::Result<PathBuf> {
        let o = self.engage(&[
            "status",
            batch,
            "--wait",
            "--timeout",
            &timeout_s.to_string(),
        ])?;
        if !o.status.success() {
            bail!(
                "batch {batch} did not complete: {}\nlogs: {}",
                String::from_utf8_lossy(&o.stdout),
                self.logs()
            );
        }
        let out = self.dir.path().join(format!("report-{batch}"));
        let o = self.engage(&["report", batch, "--out", &out.display().to_string()])?;
        if !o.status.success() {
            bail!("report failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(out)
    }

    /// The reference outputs of `engage run` on the same data.
    pub fn reference(&self) -> anyhow::Result<PathBuf> {
        engage_run(&self.data, &self.dir.path().join("reference"))
    }

    /// The tail of every worker log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("logs")) {
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                s += &format!(
                    "\n--- {}\n{}",
                    e.file_name().to_string_lossy(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        s
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.workers {
            let _ = c.kill();
            let _ = c.wait();
        }
        delete_namespace(&self.ns);
    }
}

/// Deletes a test namespace's queues and exchange, so the broker does not
/// accumulate queues (and file handles) across test runs. Best effort.
pub fn delete_namespace(ns: &str) {
    let ns = ns.to_string();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), amqp()).await else {
                return;
            };
            let Ok(ch) = conn.create_channel().await else {
                return;
            };
            let mut queues = vec![format!("{ns}.tap")];
            for s in STAGES {
                queues.push(format!("{ns}.{s}"));
                queues.push(format!("{ns}.{s}.dlq"));
                queues.extend((0..8).map(|t| format!("{ns}.{s}.retry.{t}")));
            }
            queues
                .extend((0..engage_runtime::broker::WAIT_RUNGS).map(|r| format!("{ns}.wait.{r}")));
            for q in queues {
                // A missing queue closes the channel: use a fresh one per delete.
                let Ok(c) = conn.create_channel().await else {
                    return;
                };
                let _ = c.queue_delete(q.as_str().into(), Default::default()).await;
                let _ = c.close(200, "bye".into()).await;
            }
            for x in [format!("{ns}.jobs"), format!("{ns}.wait")] {
                let _ = ch
                    .exchange_delete(x.as_str().into(), Default::default())
                    .await;
            }
            let _ = conn.close(200, "bye".into()).await;
        });
    })
    .join();
}

/// Copies a directory tree (files and folders) from `from` into `to`.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Publishes `body` to `exchange` with routing key `rk`, persistent, and
/// waits for the broker's confirm (the channel must be in confirm mode).
pub async fn publish_persistent(
    ch: &lapin::Channel,
    exchange: &str,
    rk: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    ch.basic_publish(
        exchange.into(),
        rk.into(),
        lapin::options::BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default().with_delivery_mode(2),
    )
    .await?
    .await?;
    Ok(())
}

/// Connects to the test broker.
pub async fn amqp() -> anyhow::Result<lapin::Connection> {
    Ok(lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await?)
}

/// Messages ready in a queue (0 if it does not exist yet).
pub async fn queue_len(conn: &lapin::Connection, queue: &str) -> anyhow::Result<u32> {
    let ch = conn.create_channel().await?;
    let r = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    let n = match r {
        Ok(q) => q.message_count(),
        Err(_) => 0,
    };
    let _ = ch.close(200, "bye".into()).await;
    Ok(n)
}

/// Progress of one stage as `engage status` prints it (`analyze: 12/40`).
pub fn stage_progress(status_stdout: &str, stage: &str) -> Option<(u64, u64)> {
    let rest = status_stdout.rsplit(&format!("{stage}: ")).next()?;
    let word = rest.split_whitespace().next()?;
    let (d, t) = word.split_once('/')?;
    Some((d.parse().ok()?, t.parse().ok()?))
}

/// True if `engage status` output says the batch is complete.
pub fn status_says_complete(status_stdout: &str) -> bool {
    status_stdout
        .lines()
        .any(|l| l.ends_with(" complete") || l.contains(" complete (ledger expired"))
}

impl Fleet {
    /// `engage status BATCH` (no wait): its stdout.
    pub fn status(&self, batch: &str) -> anyhow::Result<String> {
        let o = self.engage(&["status", batch])?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Waits until `stage` has made some but not all progress; returns that
    /// progress. Fails if the batch completes first: a fault injected after
    /// this returns must hit a batch under way, or the test proves nothing.
    pub async fn wait_midway(&self, batch: &str, stage: &str) -> anyhow::Result<(u64, u64)> {
        poll(
            "the batch to be under way",
            std::time::Duration::from_secs(120),
            || async {
                let text = self.status(batch)?;
                if status_says_complete(&text) {
                    bail!(
                        "batch {batch} completed before {stage} was seen midway; \
                         the test needs a bigger batch to inject its fault mid-batch"
                    );
                }
                Ok(stage_progress(&text, stage).filter(|(d, t)| *d > 0 && d < t))
            },
        )
        .await
    }

    /// Asserts, right after a fault was injected, that the batch is not
    /// complete yet. Completion is final, so this proves the fault hit the
    /// batch mid-way (not a batch that had already finished).
    pub fn assert_incomplete_after_fault(&self, batch: &str, fault: &str) -> anyhow::Result<()> {
        let text = self.status(batch)?;
        if status_says_complete(&text) {
            bail!("batch {batch} was already complete when {fault} happened:\n{text}");
        }
        Ok(())
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private Redis server (for tests that flush or restart it), killed on drop.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port; `cluster` enables cluster mode.
    pub fn start(cluster: bool) -> anyhow::Result<Self> {
        Self::start_on(free_port(), cluster)
    }

    /// Starts `redis-server` on `port` (e.g. again after [`Self::stop`]).
    pub fn start_on(port: u16, cluster: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path());
        if cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let me = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while me
            .cli(&["ping"])
            .map(|o| o.trim() != "PONG")
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("redis-server on {port} did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// Runs `redis-cli -p PORT args…`, returning stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl PrivateRedis {
    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits for it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// Waits until the first worker of `stage` has declared its queues and consumes.
    pub async fn wait_consuming(&self, stage: &str) -> anyhow::Result<()> {
        let log = self.dir.path().join("logs").join(format!("{stage}-0.log"));
        poll(
            &format!("{stage} to consume"),
            Duration::from_secs(30),
            || async {
                Ok(std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("consuming")
                    .then_some(()))
            },
        )
        .await
    }
}
