//! Starts a real S3-compatible server (s3s-fs) on a free loopback port for a test.
//!
//! Each [`S3Server`] is its own `s3s-fs` process with a fresh data directory
//! and fresh credentials; the process is killed when the value is dropped.
//! Credentials are handed to the storage layer through
//! [`StorageConfig::s3_credentials`], so tests never touch the process
//! environment (which parallel tests share).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engage_runtime::secret::Secret;
use engage_runtime::storage::{S3Credentials, StorageConfig};

/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts with a new port when the chosen port was taken in between.
const START_ATTEMPTS: usize = 3;

/// A running `s3s-fs` process.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key accepted by the server.
    pub access_key: String,
    /// Secret key accepted by the server.
    pub secret_key: String,
    /// The server's data directory: bucket `b`, key `k` is the file `root/b/k`.
    pub root: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `s3s-fs` on a free loopback port with a fresh data directory
    /// and waits (polling, bounded by a deadline) until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let dir = tempfile::tempdir().context("creating the s3s-fs data directory")?;
        let root = dir.path().to_path_buf();
        let access_key = format!("AK{}", uuid::Uuid::new_v4().simple());
        let secret_key = format!("SK{}", uuid::Uuid::new_v4().simple());
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawning {}", binary.display()))?;
            match wait_until_listening(&mut child, port) {
                Ok(()) => {
                    return Ok(Self {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        access_key,
                        secret_key,
                        root,
                        child,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("s3s-fs did not start")))
    }

    /// A storage configuration for this server: its endpoint, path-style
    /// addressing, its credentials, and two attempts per request.
    pub fn storage_config(&self) -> StorageConfig {
        StorageConfig {
            s3_endpoint: Some(self.endpoint.clone()),
            s3_region: Some("us-east-1".into()),
            s3_force_path_style: true,
            s3_max_attempts: 2,
            s3_credentials: Some(S3Credentials {
                access_key_id: self.access_key.clone(),
                secret_access_key: Secret::new(self.secret_key.clone()),
            }),
            ..StorageConfig::default()
        }
    }

    /// Creates a bucket directly in the data directory (s3s-fs treats each
    /// sub-directory of its root as a bucket).
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<PathBuf> {
        let path = self.root.join(bucket);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` from `PATH`, else from `~/.cargo/bin`.
fn find_binary() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
        .map(|dir| dir.join("s3s-fs"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "s3s-fs not found on PATH or in ~/.cargo/bin; .ci/run installs it with \
         `cargo install s3s-fs --version 0.14.1 --features binary --locked`"
    )
}

/// A port that was free a moment ago (the OS picks it).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// Polls until `port` accepts a connection, failing early if the child exits.
fn wait_until_listening(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("s3s-fs exited during startup with {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("s3s-fs did not accept connections on port {port} within {START_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
