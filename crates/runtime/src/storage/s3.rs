//! The S3 backend: aws-sdk-s3 against AWS or any S3-compatible endpoint.
//!
//! Credentials come from the standard AWS chain (environment, profile, web
//! identity, instance role) unless [`StorageConfig::s3_credentials`] is set;
//! they are never logged. Transient failures (connection errors, timeouts,
//! throttling, 5xx) are retried inside the SDK with its *standard* retry mode
//! (exponential backoff with jitter, `s3_max_attempts` attempts in total);
//! what still fails afterwards is returned as
//! [`StorageError::Transient`] for the job-level retry, and nothing here
//! loops on its own.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncRead;

use super::config::StorageConfig;
use super::error::StorageError;
use engage_model::uri::ObjectUri;

/// Time allowed to establish a TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed until the first byte of a response (not the whole body:
/// large downloads are bounded by the SDK's stalled-stream protection).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Parts of one multipart upload sent concurrently.
const UPLOAD_CONCURRENCY: usize = 4;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: u64 = 10_000;

/// What [`S3Store::put_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes uploaded.
    pub bytes: u64,
    /// Number of parts when a multipart upload was used; `None` for a single request.
    pub parts: Option<u32>,
}

/// An S3 client with the upload settings.
#[derive(Debug, Clone)]
pub(crate) struct S3Store {
    client: Client,
    multipart_threshold: u64,
    part_size: u64,
}

impl S3Store {
    /// Builds the client from the AWS chain plus the overrides in `cfg`.
    pub(crate) async fn new(cfg: &StorageConfig) -> Self {
        let region = RegionProviderChain::first_try(cfg.s3_region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(cfg.s3_max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &cfg.s3_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(c) = &cfg.s3_credentials {
            loader = loader.credentials_provider(Credentials::new(
                &c.access_key_id,
                c.secret_access_key.expose(),
                None,
                None,
                "engage-storage-config",
            ));
        }
        let sdk = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.s3_force_path_style)
            .build();
        Self {
            client: Client::from_conf(conf),
            multipart_threshold: cfg.multipart_threshold,
            part_size: cfg.part_size,
        }
    }

    /// Reads a whole object, refusing objects larger than `limit`.
    pub(crate) async fn get(
        &self,
        bucket: &str,
        uri: &ObjectUri,
        limit: u64,
    ) -> Result<Bytes, StorageError> {
        const OP: &str = "get";
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(uri.key())
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, uri, e))?;
        let declared = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        if declared > limit {
            return Err(StorageError::TooLarge {
                uri: uri.clone(),
                size: declared,
                limit,
            });
        }
        let mut buf = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
        let mut body = out.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| transient(OP, uri, &e))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(StorageError::TooLarge {
                    uri: uri.clone(),
                    size: (buf.len() + chunk.len()) as u64,
                    limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Streams an object, or the byte range `range` of it (clamped to the object).
    pub(crate) async fn reader(
        &self,
        bucket: &str,
        uri: &ObjectUri,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
        const OP: &str = "read";
        let header = match &range {
            Some(r) if r.start >= r.end => return Ok(Box::new(tokio::io::empty())),
            // An open end (`start..u64::MAX`) reads to the end of the object.
            Some(r) if r.end == u64::MAX => Some(format!("bytes={}-", r.start)),
            Some(r) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
            None => None,
        };
        let result = self
            .client
            .get_object()
            .bucket(bucket)
            .key(uri.key())
            .set_range(header)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Box::new(out.body.into_async_read())),
            // 416: the range starts at or after the end of the object.
            Err(SdkError::ServiceError(ctx)) if ctx.raw().status().as_u16() == 416 => {
                Ok(Box::new(tokio::io::empty()))
            }
            Err(e) => Err(map_sdk_error(OP, uri, e)),
        }
    }

    /// The object's size, `None` if it does not exist.
    pub(crate) async fn size(
        &self,
        bucket: &str,
        uri: &ObjectUri,
    ) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(uri.key())
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            )),
            Err(e) => match map_sdk_error("size", uri, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Writes an object in one request.
    pub(crate) async fn put(
        &self,
        bucket: &str,
        uri: &ObjectUri,
        bytes: Bytes,
    ) -> Result<(), StorageError> {
        let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        self.client
            .put_object()
            .bucket(bucket)
            .key(uri.key())
            .content_length(len)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| map_sdk_error("put", uri, e))?;
        Ok(())
    }

    /// Uploads a local file, streaming it from disk: one request up to the
    /// multipart threshold, else a multipart upload whose parts are read
    /// straight from the file (a few parts in flight, never the whole file in
    /// memory). A failed multipart upload is aborted.
    pub(crate) async fn put_file(
        &self,
        bucket: &str,
        uri: &ObjectUri,
        path: &Path,
    ) -> Result<Uploaded, StorageError> {
        const OP: &str = "put_file";
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|source| source_io(OP, uri, source))?
            .len();
        if len <= self.multipart_threshold {
            let body = ByteStream::read_from()
                .path(path)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| source_io(OP, uri, std::io::Error::other(e)))?;
            self.client
                .put_object()
                .bucket(bucket)
                .key(uri.key())
                .content_length(i64::try_from(len).unwrap_or(i64::MAX))
                .body(body)
                .send()
                .await
                .map_err(|e| map_sdk_error(OP, uri, e))?;
            return Ok(Uploaded {
                bytes: len,
                parts: None,
            });
        }

        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(uri.key())
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, uri, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::Rejected {
                op: OP,
                uri: uri.clone(),
                detail: "CreateMultipartUpload returned no upload id".into(),
            })?
            .to_string();

        let part_size = self.part_size.max(len.div_ceil(MAX_PARTS));
        let result = async {
            let parts = self
                .upload_parts(bucket, uri, path, &upload_id, len, part_size)
                .await?;
            let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(uri.key())
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_sdk_error(OP, uri, e))?;
            Ok(count)
        }
        .await;

        match result {
            Ok(count) => Ok(Uploaded {
                bytes: len,
                parts: Some(count),
            }),
            Err(e) => {
                // Best effort: an unfinished upload only costs storage until
                // the bucket's lifecycle rule removes it.
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(uri.key())
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(
                        target: "engage::storage",
                        location = %uri.redacted(),
                        error = %error_chain(&abort),
                        "could not abort a failed multipart upload"
                    );
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        bucket: &str,
        uri: &ObjectUri,
        path: &Path,
        upload_id: &str,
        len: u64,
        part_size: u64,
    ) -> Result<Vec<CompletedPart>, StorageError> {
        const OP: &str = "put_file";
        let count = len.div_ceil(part_size);
        let parts = (0..count).map(|i| {
            let offset = i * part_size;
            (i + 1, offset, part_size.min(len - offset))
        });
        futures::stream::iter(parts)
            .map(|(number, offset, size)| async move {
                let number = i32::try_from(number).unwrap_or(i32::MAX);
                // The body re-reads this slice of the file on each retry.
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(size))
                    .build()
                    .await
                    .map_err(|e| source_io(OP, uri, std::io::Error::other(e)))?;
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(uri.key())
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(OP, uri, e))?;
                Ok::<_, StorageError>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_owned))
                        .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_owned))
                        .set_checksum_sha1(out.checksum_sha1().map(str::to_owned))
                        .set_checksum_sha256(out.checksum_sha256().map(str::to_owned))
                        .build(),
                )
            })
            .buffered(UPLOAD_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Every key under `prefix` (a directory-like prefix: `prefix/…`), all pages.
    pub(crate) async fn list(
        &self,
        bucket: &str,
        prefix: &ObjectUri,
    ) -> Result<Vec<String>, StorageError> {
        let key_prefix = if prefix.is_root() {
            None
        } else {
            Some(format!("{}/", prefix.key()))
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix(key_prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk_error("list", prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    /// Deletes an object; a missing object or bucket is not an error.
    pub(crate) async fn delete(&self, bucket: &str, uri: &ObjectUri) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(uri.key())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_sdk_error("delete", uri, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Creates the bucket unless it exists already.
    pub(crate) async fn ensure_bucket(
        &self,
        bucket: &str,
        uri: &ObjectUri,
    ) -> Result<(), StorageError> {
        const OP: &str = "ensure_bucket";
        match self.ping(bucket, uri).await {
            Ok(()) => return Ok(()),
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let constraint = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref())
            .filter(|r| *r != "us-east-1")
            .map(|r| {
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(r))
                    .build()
            });
        match self
            .client
            .create_bucket()
            .bucket(bucket)
            .set_create_bucket_configuration(constraint)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Created concurrently by another worker.
            Err(SdkError::ServiceError(ctx))
                if ctx.err().code() == Some("BucketAlreadyOwnedByYou") =>
            {
                Ok(())
            }
            Err(e) => Err(map_sdk_error(OP, uri, e)),
        }
    }

    /// Checks that the bucket exists and is reachable with these credentials.
    pub(crate) async fn ping(&self, bucket: &str, uri: &ObjectUri) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_error("ping", uri, e))
    }
}

/// Classifies an SDK error: not found, access denied, transient (network,
/// timeouts, throttling, 5xx), or rejected.
fn map_sdk_error<E>(op: &'static str, uri: &ObjectUri, err: SdkError<E>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => classify(
            op,
            uri,
            ctx.raw().status().as_u16(),
            ctx.err().code(),
            ctx.err().message(),
        ),
        SdkError::ConstructionFailure(_) => {
            StorageError::Config(format!("{op}: {}", error_chain(&err)))
        }
        SdkError::DispatchFailure(d) if d.is_user() => {
            StorageError::Config(format!("{op}: {}", error_chain(&err)))
        }
        // Timeouts, connection failures, truncated or garbled responses.
        _ => transient(op, uri, &err),
    }
}

/// Classifies an S3 error answer by status and error code.
fn classify(
    op: &'static str,
    uri: &ObjectUri,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
) -> StorageError {
    let code_str = code.unwrap_or("");
    let detail = match (code, message) {
        (Some(c), Some(m)) => format!("HTTP {status} {c}: {m}"),
        (Some(c), None) => format!("HTTP {status} {c}"),
        (None, _) => format!("HTTP {status}"),
    };
    let uri = uri.clone();
    match (status, code_str) {
        (404, _) | (_, "NoSuchKey" | "NoSuchBucket" | "NotFound") => {
            StorageError::NotFound { op, uri }
        }
        (403, _)
        | (
            _,
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "AllAccessDisabled",
        ) => StorageError::AccessDenied { op, uri, detail },
        (408 | 429 | 500..=599, _)
        | (
            _,
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeTooSkewed",
        ) => StorageError::Transient { op, uri, detail },
        _ => StorageError::Rejected { op, uri, detail },
    }
}

fn transient(
    op: &'static str,
    uri: &ObjectUri,
    err: &(dyn std::error::Error + 'static),
) -> StorageError {
    StorageError::Transient {
        op,
        uri: uri.clone(),
        detail: error_chain(err),
    }
}

/// The messages of an error and its sources, `: `-separated, without the
/// Debug dump that `DisplayErrorContext` appends.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let msg = e.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = e.source();
    }
    out
}

/// An error reading the local source file of an upload (not a storage-side failure).
fn source_io(op: &'static str, uri: &ObjectUri, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op,
        uri: uri.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri() -> ObjectUri {
        ObjectUri::parse("s3://bkt/k").unwrap()
    }

    #[test]
    fn classifies_service_answers() {
        let c = |status, code| classify("get", &uri(), status, code, None);
        assert!(c(404, None).is_not_found());
        assert!(c(400, Some("NoSuchBucket")).is_not_found());
        assert_eq!(c(403, None).class(), "access_denied");
        assert_eq!(c(400, Some("InvalidAccessKeyId")).class(), "access_denied");
        assert_eq!(
            c(403, Some("SignatureDoesNotMatch")).class(),
            "access_denied"
        );
        for (status, code) in [
            (500, None),
            (503, Some("SlowDown")),
            (429, None),
            (408, None),
            (400, Some("RequestTimeout")),
        ] {
            let e = c(status, code);
            assert!(e.is_transient(), "{status} {code:?}");
        }
        let bad = c(400, Some("InvalidArgument"));
        assert_eq!(bad.class(), "rejected");
        assert!(!bad.is_transient());
        assert!(bad.to_string().contains("InvalidArgument"));
    }
}
