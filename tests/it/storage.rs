//! Storage against a real S3-compatible server and the local file store.
//!
//! The same test bodies run on three backends: s3s-fs over HTTP (signed
//! requests, real multipart), the local emulation of S3 (`s3_root`) and plain
//! `file://` URIs. One test also checks that the s3s-fs data directory and
//! the `s3_root` layout are the same, so `engage run --s3-root DIR` reads what
//! an S3 server wrote into DIR.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use engage_runtime::storage::{ObjectUri, Storage, StorageConfig, StorageError, UriError};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::support::s3::S3Server;

/// A fresh bucket name per test (tests share nothing).
fn bucket() -> String {
    format!("it-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn s3_storage(server: &S3Server) -> anyhow::Result<Storage> {
    Ok(Storage::new(&server.storage_config()).await?)
}

async fn read_all(
    store: &Storage,
    uri: &ObjectUri,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .reader(uri, range)
        .await
        .expect("open reader")
        .read_to_end(&mut out)
        .await
        .expect("read stream");
    out
}

/// put / get / size / list / overwrite / delete, the same on every backend.
async fn round_trip(store: &Storage, base: &ObjectUri) -> anyhow::Result<()> {
    store.ensure_bucket(base).await?;
    store.ping(base).await?;
    let dir = base.join("batch-1")?;
    let a = dir.join("a.json")?;
    let b = dir.join("sub/b.bin")?;
    let sibling = base.join("batch-10/c.json")?;
    store.put(&a, Bytes::from_static(b"{\"a\":1}")).await?;
    store.put(&b, Bytes::from(vec![0u8, 1, 2, 255])).await?;
    store.put(&sibling, Bytes::from_static(b"c")).await?;

    assert_eq!(store.get(&a).await?, Bytes::from_static(b"{\"a\":1}"));
    assert_eq!(store.get(&b).await?.as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(store.size(&b).await?, Some(4));
    assert_eq!(store.size(&dir.join("missing")?).await?, None);

    // Directory-like prefix: batch-1 does not list batch-10; results are sorted.
    assert_eq!(store.list(&dir).await?, vec![a.clone(), b.clone()]);
    assert_eq!(
        store.list(base).await?,
        vec![a.clone(), b.clone(), sibling.clone()]
    );
    assert!(store.list(&base.join("nothing-here")?).await?.is_empty());

    // Overwrite replaces the whole object.
    store.put(&a, Bytes::from_static(b"{}")).await?;
    assert_eq!(store.get(&a).await?, Bytes::from_static(b"{}"));

    store.delete(&a).await?;
    store.delete(&a).await?; // deleting a missing object succeeds
    let err = store
        .get(&a)
        .await
        .expect_err("deleted object must be gone");
    assert!(err.is_not_found() && !err.is_transient(), "{err:?}");
    assert_eq!(err.class(), "not_found");
    assert_eq!(store.size(&a).await?, None);
    assert_eq!(store.list(&dir).await?, vec![b.clone()]);
    Ok(())
}

/// Half-open byte ranges, clamped to the object.
async fn byte_ranges(store: &Storage, base: &ObjectUri) -> anyhow::Result<()> {
    store.ensure_bucket(base).await?;
    let u = base.join("ranges/digits.txt")?;
    store.put(&u, Bytes::from_static(b"0123456789")).await?;
    assert_eq!(read_all(store, &u, Some(0..1)).await, b"0");
    assert_eq!(read_all(store, &u, Some(3..7)).await, b"3456");
    assert_eq!(read_all(store, &u, Some(8..1000)).await, b"89");
    assert_eq!(read_all(store, &u, Some(7..u64::MAX)).await, b"789");
    assert_eq!(read_all(store, &u, Some(12..u64::MAX)).await, b"");
    assert_eq!(read_all(store, &u, Some(10..20)).await, b"");
    assert_eq!(read_all(store, &u, Some(4..4)).await, b"");
    assert_eq!(read_all(store, &u, None).await, b"0123456789");
    let missing = store.reader(&base.join("ranges/none")?, Some(0..4)).await;
    assert!(matches!(missing, Err(StorageError::NotFound { .. })));
    Ok(())
}

#[tokio::test]
async fn round_trip_on_s3s_fs() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let store = s3_storage(&server).await?;
    let base = ObjectUri::s3(&bucket(), "fleet")?;
    round_trip(&store, &base).await
}

#[tokio::test]
async fn round_trip_on_local_s3_root() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Storage::local(Some(dir.path().to_path_buf()));
    let bkt = bucket();
    round_trip(&store, &ObjectUri::s3(&bkt, "fleet")?).await?;
    assert!(
        dir.path()
            .join(&bkt)
            .join("fleet/batch-1/sub/b.bin")
            .is_file()
    );
    Ok(())
}

#[tokio::test]
async fn round_trip_on_file_uris() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Storage::new(&StorageConfig::default()).await?;
    round_trip(&store, &ObjectUri::file(dir.path().join("store"))?).await
}

#[tokio::test]
async fn byte_ranges_on_s3s_fs_and_local() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    byte_ranges(&s3_storage(&server).await?, &ObjectUri::s3(&bucket(), "")?).await?;
    let dir = tempfile::tempdir()?;
    byte_ranges(
        &Storage::local(Some(dir.path().into())),
        &ObjectUri::s3(&bucket(), "")?,
    )
    .await?;
    byte_ranges(
        &Storage::local(None),
        &ObjectUri::file(dir.path().join("f"))?,
    )
    .await
}

#[tokio::test]
async fn s3s_fs_data_dir_is_the_s3_root_layout() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let s3 = s3_storage(&server).await?;
    let bkt = bucket();
    let u = ObjectUri::s3(&bkt, "audio/learner/x.wav")?;
    s3.ensure_bucket(&u).await?;
    s3.put(&u, Bytes::from_static(b"RIFF....")).await?;
    // Written over HTTP, read from the same directory as a local s3_root …
    let local = Storage::local(Some(server.root.clone()));
    assert_eq!(local.get(&u).await?, Bytes::from_static(b"RIFF...."));
    assert_eq!(
        local.list(&ObjectUri::s3(&bkt, "")?).await?,
        vec![u.clone()]
    );
    // … and written locally, served over HTTP.
    let v = ObjectUri::s3(&bkt, "audio/learner/y.wav")?;
    local.put(&v, Bytes::from_static(b"local")).await?;
    assert_eq!(s3.get(&v).await?, Bytes::from_static(b"local"));
    Ok(())
}

/// Writes `len` bytes of a non-repeating pattern and returns their SHA-256.
fn write_big_file(path: &Path, len: usize) -> anyhow::Result<[u8; 32]> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for b in chunk.iter_mut() {
            // xorshift: cheap bytes that differ across parts, so a part
            // uploaded at the wrong offset changes the hash.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])?;
        hasher.update(&chunk[..n]);
        left -= n;
    }
    file.flush()?;
    Ok(hasher.finalize().into())
}

async fn streamed_sha256(store: &Storage, uri: &ObjectUri) -> anyhow::Result<([u8; 32], u64)> {
    let mut reader = store.reader(uri, None).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total))
}

#[tokio::test]
async fn put_file_streams_large_files_with_multipart() -> anyhow::Result<()> {
    const LEN: usize = 20 * 1024 * 1024 + 12_345;
    let server = S3Server::start()?;
    let cfg = server.storage_config();
    let store = Storage::new(&cfg).await?;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("big.bin");
    let digest = write_big_file(&src, LEN)?;

    let u = ObjectUri::s3(&bucket(), "uploads/big.bin")?;
    store.ensure_bucket(&u).await?;
    let up = store.put_file(&u, &src).await?;
    assert_eq!(up.bytes, LEN as u64);
    // 20 MiB over a 16 MiB threshold with 8 MiB parts: three parts, read
    // from the file one slice at a time.
    assert_eq!(up.parts, Some(3), "expected the multipart path");
    assert_eq!(store.size(&u).await?, Some(LEN as u64));
    assert_eq!(streamed_sha256(&store, &u).await?, (digest, LEN as u64));

    // The server saw a multipart upload: its ETag has the `-<parts>` suffix.
    let client = raw_client(&server);
    let head = client
        .head_object()
        .bucket(u.bucket().unwrap_or_default())
        .key(u.key())
        .send()
        .await?;
    let etag = head.e_tag().unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "ETag {etag}");

    // Small files go in one request.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"small")?;
    let su = u.join("../small.bin");
    assert_eq!(su, Err(UriError::InvalidKey), "join must refuse `..`");
    let su = ObjectUri::s3(u.bucket().unwrap_or_default(), "uploads/small.bin")?;
    assert_eq!(store.put_file(&su, &small).await?.parts, None);
    assert_eq!(store.get(&su).await?, Bytes::from_static(b"small"));

    // The whole-object read refuses what is over the limit.
    let limited = Storage::new(&StorageConfig {
        max_object_bytes: 1024 * 1024,
        ..cfg
    })
    .await?;
    let err = limited.get(&u).await.expect_err("over the limit");
    assert_eq!(err.class(), "too_large");

    // Locally: an atomic copy with the same bytes.
    let local = Storage::local(None);
    let lu = ObjectUri::file(dir.path().join("copy/big.bin"))?;
    assert_eq!(local.put_file(&lu, &src).await?.bytes, LEN as u64);
    assert_eq!(streamed_sha256(&local, &lu).await?, (digest, LEN as u64));
    Ok(())
}

/// A bare SDK client for assertions on what the server stored.
fn raw_client(server: &S3Server) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(&server.endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            &server.access_key,
            &server.secret_key,
            None,
            None,
            "it",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn missing_objects_and_buckets_are_not_found_not_transient() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let store = s3_storage(&server).await?;
    let bkt = bucket();
    server.create_bucket(&bkt)?;
    for uri in [
        ObjectUri::s3(&bkt, "no/such/key")?,
        ObjectUri::s3("no-such-bucket-x", "k")?,
    ] {
        let err = store.get(&uri).await.expect_err("missing");
        assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(store.size(&uri).await?, None);
    }
    let err = store
        .ping(&ObjectUri::s3("no-such-bucket-y", "")?)
        .await
        .expect_err("missing bucket");
    assert!(err.is_not_found(), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_access_denied_not_transient() -> anyhow::Result<()> {
    let server = S3Server::start()?;
    let bkt = bucket();
    server.create_bucket(&bkt)?;
    let mut cfg = server.storage_config();
    if let Some(c) = cfg.s3_credentials.as_mut() {
        c.secret_access_key = engage_runtime::secret::Secret::new("wrong-secret".into());
    }
    let store = Storage::new(&cfg).await?;
    let uri = ObjectUri::s3(&bkt, "learner-4242/k")?;
    for err in [
        store
            .put(&uri, Bytes::from_static(b"x"))
            .await
            .expect_err("put"),
        store.get(&uri).await.expect_err("get"),
        store
            .list(&ObjectUri::s3(&bkt, "")?)
            .await
            .expect_err("list"),
    ] {
        assert!(matches!(err, StorageError::AccessDenied { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(err.class(), "access_denied");
        let msg = err.to_string();
        assert!(
            !msg.contains("wrong-secret") && !msg.contains("learner-4242"),
            "{msg}"
        );
    }
    // An unknown access key too.
    if let Some(c) = cfg.s3_credentials.as_mut() {
        c.access_key_id = "AKNOBODY".into();
    }
    let err = Storage::new(&cfg).await?.get(&uri).await.expect_err("get");
    assert_eq!(err.class(), "access_denied", "{err:?}");
    Ok(())
}

#[tokio::test]
async fn unreachable_endpoint_is_transient() -> anyhow::Result<()> {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = StorageConfig {
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        s3_region: Some("us-east-1".into()),
        s3_force_path_style: true,
        s3_max_attempts: 1,
        s3_credentials: Some(engage_runtime::storage::S3Credentials {
            access_key_id: "AK".into(),
            secret_access_key: engage_runtime::secret::Secret::new("SK".into()),
        }),
        ..StorageConfig::default()
    };
    let store = Storage::new(&cfg).await?;
    let uri = ObjectUri::s3("some-bucket", "learner-4242/answer.wav")?;
    for err in [
        store.get(&uri).await.expect_err("get"),
        store
            .put(&uri, Bytes::from_static(b"x"))
            .await
            .expect_err("put"),
        store.size(&uri).await.expect_err("size"),
        store.ping(&uri).await.expect_err("ping"),
    ] {
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(err.class(), "transient");
        // Messages are safe to log: no key (it may embed a learner id).
        let msg = err.to_string();
        assert!(!msg.contains("learner-4242"), "{msg}");
        assert!(msg.contains("s3://some-bucket/"), "{msg}");
    }
    Ok(())
}

#[tokio::test]
async fn path_traversal_is_rejected_before_touching_disk() -> anyhow::Result<()> {
    let outer = tempfile::tempdir()?;
    let root = outer.path().join("root");
    std::fs::create_dir(&root)?;
    let store = Storage::local(Some(root.clone()));
    let base = ObjectUri::s3("bkt", "fleet")?;
    for evil in [
        "../escape",
        "../../escape",
        "a/../../escape",
        "a/..",
        "..",
        "a\\..\\..\\escape",
        "a/\0/escape",
    ] {
        assert_eq!(base.join(evil), Err(UriError::InvalidKey), "join {evil:?}");
        let parsed = ObjectUri::parse(&format!("s3://bkt/{evil}"));
        assert_eq!(parsed, Err(UriError::InvalidKey), "parse {evil:?}");
        let file = ObjectUri::parse(&format!("file://{}/{evil}", root.display()));
        assert_eq!(file, Err(UriError::InvalidKey), "file {evil:?}");
    }
    assert_eq!(
        ObjectUri::parse("s3://../escape"),
        Err(UriError::InvalidBucket),
        "a bucket named `..` must be refused"
    );
    // Absolute-looking and dotted keys are normalised *inside* the root.
    for odd in ["/escape", "//escape", "./escape", "x/./escape"] {
        let u = base.join(odd)?;
        store.put(&u, Bytes::from_static(b"in")).await?;
    }
    assert!(!outer.path().join("escape").exists());
    assert!(!root.join("escape").exists());
    assert!(root.join("bkt/fleet/escape").is_file());
    assert!(root.join("bkt/fleet/x/escape").is_file());
    let entries: Vec<_> = std::fs::read_dir(outer.path())?.collect();
    assert_eq!(entries.len(), 1, "nothing written beside the root");
    Ok(())
}
