//! The axum handlers: `generateContent`, `GET` of a model, the Files API
//! (resumable upload, get, delete) and the key/model checks, over the state
//! shared with [`crate::FakeGemini`].

use crate::answer::{audio_hash, expected_answer, input_tokens, output_tokens};
use crate::behaviour::{Behaviour, Fault};
use crate::quota::{Limits, QuotaState};
use crate::stats::{RequestTrace, Stats};
use crate::wire::{self, CreateFileRequest, GenerateContentRequest, QuotaKind};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The largest `generateContent` request body the real API accepts inline (20 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 20 * 1024 * 1024;

/// Bodies up to this size are read at all (uploads go up to it too).
const BODY_READ_LIMIT: usize = 256 * 1024 * 1024;

/// An uploaded file.
#[derive(Debug, Clone)]
struct StoredFile {
    id: String,
    display_name: String,
    mime_type: String,
    bytes: Arc<Vec<u8>>,
    polls_left: u32,
    fail: bool,
    created: String,
}

impl StoredFile {
    fn state(&self) -> &'static str {
        if self.polls_left > 0 {
            "PROCESSING"
        } else if self.fail {
            "FAILED"
        } else {
            "ACTIVE"
        }
    }

    fn to_json(&self, base_url: &str) -> Value {
        let mut v = json!({
            "name": format!("files/{}", self.id),
            "displayName": self.display_name,
            "mimeType": self.mime_type,
            "sizeBytes": self.bytes.len().to_string(),
            "createTime": self.created,
            "updateTime": self.created,
            "sha256Hash": B64.encode(audio_hash(&self.bytes)),
            "uri": format!("{base_url}/v1beta/files/{}", self.id),
            "state": self.state(),
            "source": "UPLOADED",
        });
        if self.state() == "FAILED" {
            v["error"] = json!({"code": 3, "message": "File processing failed."});
        }
        v
    }
}

/// A resumable upload between `start` and `finalize`.
#[derive(Debug)]
struct PendingUpload {
    declared_len: Option<u64>,
    mime_type: String,
    display_name: String,
}

/// Mutable state behind one lock.
pub(crate) struct Inner {
    pub(crate) behaviour: Behaviour,
    pub(crate) stats: Stats,
    quota: QuotaState,
    files: HashMap<String, StoredFile>,
    uploads: HashMap<String, PendingUpload>,
    rng: StdRng,
}

/// State shared by the handlers and the [`crate::FakeGemini`] handle.
pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) models: Vec<String>,
    pub(crate) base_url: String,
    pub(crate) max_request_bytes: usize,
    started: Instant,
    in_flight: AtomicU64,
    pub(crate) inner: Mutex<Inner>,
}

impl Shared {
    pub(crate) fn new(
        api_key: String,
        models: Vec<String>,
        base_url: String,
        max_request_bytes: usize,
        behaviour: Behaviour,
        seed: u64,
    ) -> Self {
        Self {
            api_key,
            models,
            base_url,
            max_request_bytes,
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                behaviour,
                stats: Stats::default(),
                quota: QuotaState::default(),
                files: HashMap::new(),
                uploads: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
        }
    }

    /// Locks the state; a poisoned lock (a panicking handler) is still usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Builds the router over the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v1beta/models/{model_action}",
            post(generate).get(get_model),
        )
        .route("/upload/v1beta/files", post(upload))
        .route("/v1beta/files/{id}", get(get_file).delete(delete_file))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_READ_LIMIT))
        .with_state(shared)
}

fn envelope(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn invalid_argument(message: &str) -> Response {
    envelope(400, wire::error_envelope(400, "INVALID_ARGUMENT", message))
}

async fn not_found() -> Response {
    envelope(
        404,
        wire::error_envelope(404, "NOT_FOUND", "Requested entity was not found."),
    )
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: Option<String>,
    upload_id: Option<String>,
}

/// Checks the API key from `x-goog-api-key` or `?key=`; `Some` is the rejection to send.
fn check_key(shared: &Shared, headers: &HeaderMap, query: &KeyQuery) -> Option<Response> {
    let given = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.key.clone());
    let failure = match given {
        None => Some((403, wire::unregistered_caller())),
        Some(k) if k != shared.api_key => Some((400, wire::api_key_invalid())),
        Some(_) => None,
    };
    let (code, body) = failure?;
    shared.lock().stats.auth_failures += 1;
    Some(envelope(code, body))
}

fn file_not_found(id: &str) -> Response {
    envelope(
        403,
        wire::error_envelope(
            403,
            "PERMISSION_DENIED",
            &format!("You do not have permission to access the File {id} or it may not exist."),
        ),
    )
}

fn usage(prompt_tokens: u64, text_tokens: u64, audio_tokens: u64, candidates: u64) -> Value {
    json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt_tokens + candidates,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": text_tokens},
            {"modality": "AUDIO", "tokenCount": audio_tokens}
        ]
    })
}

/// `POST /v1beta/models/{model}:generateContent`, logged to the behaviour's
/// request log (if any) when the request ends.
async fn generate(
    State(shared): State<Arc<Shared>>,
    Path(model_action): Path<String>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let log = shared.lock().behaviour.request_log.clone();
    let mut trace = RequestTrace::start(log);
    let response = generate_traced(shared, model_action, query, headers, body, &mut trace).await;
    trace.status = Some(response.status().as_u16());
    response
}

async fn generate_traced(
    shared: Arc<Shared>,
    model_action: String,
    query: KeyQuery,
    headers: HeaderMap,
    body: Bytes,
    trace: &mut RequestTrace,
) -> Response {
    let now_count = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&shared.in_flight);
    let arrived = Instant::now();
    {
        let mut inner = shared.lock();
        inner.stats.generate_calls += 1;
        inner.stats.max_concurrent = inner.stats.max_concurrent.max(now_count);
        let at = arrived.saturating_duration_since(shared.started);
        inner.stats.request_times.push(at);
    }
    if let Some(r) = check_key(&shared, &headers, &query) {
        return r;
    }
    let Some((model, action)) = model_action.split_once(':') else {
        return not_found().await;
    };
    if action != "generateContent" {
        return not_found().await;
    }
    if !shared.models.iter().any(|m| m == model) {
        return envelope(404, wire::model_not_found(model));
    }
    if body.len() > shared.max_request_bytes {
        return invalid_argument(&format!(
            "Request payload size exceeds the limit: {} bytes.",
            shared.max_request_bytes
        ));
    }
    let request: GenerateContentRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return invalid_argument(&format!("Invalid JSON payload received. {e}")),
    };
    drop(body);

    // Gather the text and the audio of the request.
    let mut text_chars = 0usize;
    let mut audio: Vec<Arc<Vec<u8>>> = Vec::new();
    for (ci, content) in request.contents.iter().enumerate() {
        for (pi, part) in content.parts.iter().enumerate() {
            if let Some(t) = &part.text {
                text_chars += t.chars().count();
            }
            if let Some(blob) = &part.inline_data {
                if !blob.mime_type.starts_with("audio/") {
                    return invalid_argument(&format!("Unsupported MIME type: {}", blob.mime_type));
                }
                match B64.decode(blob.data.as_bytes()) {
                    Ok(b) => audio.push(Arc::new(b)),
                    Err(_) => {
                        return invalid_argument(&format!(
                            "Invalid value at 'contents[{ci}].parts[{pi}].inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                        ));
                    }
                }
            }
            if let Some(fd) = &part.file_data {
                let id = fd
                    .file_uri
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let file = shared.lock().files.get(&id).cloned();
                let Some(file) = file else {
                    return file_not_found(&id);
                };
                if file.state() != "ACTIVE" {
                    return envelope(
                        400,
                        wire::error_envelope(
                            400,
                            "FAILED_PRECONDITION",
                            &format!(
                                "The File {id} is not in an ACTIVE state and usage is not allowed."
                            ),
                        ),
                    );
                }
                audio.push(file.bytes.clone());
            }
        }
    }
    let audio_slices: Vec<&[u8]> = audio.iter().map(|a| a.as_slice()).collect();
    let tokens = input_tokens(text_chars, &audio_slices);
    let text_tokens = input_tokens(text_chars, &[]);
    let hashes: Vec<String> = audio_slices.iter().map(|a| audio_hash(a)).collect();
    trace.audio.clone_from(&hashes);

    // Faults that replace the call, then the quota, then the "model".
    let (fault, latency) = {
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let fault = inner.behaviour.next_fault(&mut inner.rng);
        trace.cause = fault.as_ref().map(Fault::label);
        match &fault {
            Some(Fault::Status(code)) => {
                inner.stats.faults_injected += 1;
                if *code == 429 {
                    inner.stats.rate_limited += 1;
                }
                return envelope(*code, wire::server_error(*code));
            }
            Some(Fault::RateLimited {
                quota,
                retry_delay,
                retry_info_first,
            }) => {
                inner.stats.faults_injected += 1;
                inner.stats.rate_limited += 1;
                *inner
                    .stats
                    .rate_limited_by_quota
                    .entry(quota.as_str())
                    .or_default() += 1;
                let limit = match quota {
                    QuotaKind::Rpm => inner.behaviour.rpm.map(u64::from),
                    QuotaKind::Tpm => inner.behaviour.tpm,
                    QuotaKind::Rpd => inner.behaviour.rpd.map(u64::from),
                }
                .unwrap_or(10);
                return envelope(
                    429,
                    wire::quota_exceeded(
                        *quota,
                        model,
                        limit,
                        retry_delay.as_deref(),
                        *retry_info_first,
                    ),
                );
            }
            _ => {}
        }
        let limits = Limits {
            rpm: inner.behaviour.rpm,
            tpm: inner.behaviour.tpm,
            rpd: inner.behaviour.rpd,
            window: inner.behaviour.window,
            day: inner.behaviour.day,
        };
        if let Err(rejection) = inner.quota.admit(Instant::now(), tokens, &limits) {
            // A scripted answer fault waits for the next admitted call.
            if let Some(f) = fault {
                inner.behaviour.faults.push_front(f);
            }
            trace.cause = Some(format!("quota_{}", rejection.kind.as_str()));
            trace.retry = Some(rejection.retry_after);
            inner.stats.rate_limited += 1;
            *inner
                .stats
                .rate_limited_by_quota
                .entry(rejection.kind.as_str())
                .or_default() += 1;
            // Round up to whole milliseconds so a client honouring it is never early.
            let ms = rejection.retry_after.as_micros().div_ceil(1000) as u64;
            let delay = wire::format_proto_duration(Duration::from_millis(ms));
            let retry = (rejection.kind != QuotaKind::Rpd || inner.behaviour.rpd_retry_info)
                .then_some(delay.as_str());
            return envelope(
                429,
                wire::quota_exceeded(rejection.kind, model, rejection.limit, retry, false),
            );
        }
        let at = Instant::now().saturating_duration_since(shared.started);
        trace.admitted();
        inner.stats.admitted_times.push(at);
        inner.stats.input_tokens += tokens;
        for h in &hashes {
            *inner.stats.calls_by_hash.entry(h.clone()).or_default() += 1;
        }
        if fault.is_some() {
            inner.stats.faults_injected += 1;
        }
        let latency = inner.behaviour.latency.sample(&mut inner.rng);
        (fault, latency)
    };
    let extra = match &fault {
        Some(Fault::Delay(d)) => *d,
        _ => Duration::ZERO,
    };
    let wait = latency + extra;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }

    let audio_tokens = tokens - text_tokens;
    let model_version = model.to_owned();
    let first_audio = audio.first().map(|a| a.as_slice()).unwrap_or_default();
    let mut answer = expected_answer(first_audio);
    match fault {
        Some(Fault::Blocked(reason)) => {
            return (
                StatusCode::OK,
                axum::Json(json!({
                    "promptFeedback": {"blockReason": reason},
                    "usageMetadata": usage(tokens, text_tokens, audio_tokens, 0),
                    "modelVersion": model_version,
                })),
            )
                .into_response();
        }
        Some(Fault::FinishSafety) => {
            return (
                StatusCode::OK,
                axum::Json(json!({
                    "candidates": [{
                        "finishReason": "SAFETY",
                        "index": 0,
                        "safetyRatings": [{
                            "category": "HARM_CATEGORY_HARASSMENT",
                            "probability": "HIGH",
                            "blocked": true
                        }]
                    }],
                    "usageMetadata": usage(tokens, text_tokens, audio_tokens, 0),
                    "modelVersion": model_version,
                })),
            )
                .into_response();
        }
        Some(Fault::FinishMaxTokens) => {
            return (
                StatusCode::OK,
                axum::Json(json!({
                    "candidates": [{
                        "content": {"role": "model"},
                        "finishReason": "MAX_TOKENS",
                        "index": 0
                    }],
                    "usageMetadata": usage(tokens, text_tokens, audio_tokens, 0),
                    "modelVersion": model_version,
                })),
            )
                .into_response();
        }
        Some(Fault::OutOfRange) => {
            answer["emotional_score"] = json!(150.0);
            answer["engagement_score"] = json!(-5.0);
        }
        Some(Fault::UnknownEnum) => {
            answer["dominant_emotion"] = json!("ecstatic");
        }
        _ => {}
    }
    let mut text = answer.to_string();
    let json_mode = request
        .generation_config
        .as_ref()
        .and_then(|c| c.response_mime_type.as_deref())
        == Some("application/json");
    if !json_mode {
        text = format!("```json\n{text}\n```");
    }
    let mut finish = "STOP";
    if matches!(fault, Some(Fault::TruncatedJson)) {
        text.truncate(text.len() / 2);
    }
    if let Some(max) = request
        .generation_config
        .as_ref()
        .and_then(|c| c.max_output_tokens)
    {
        let max_chars = max as usize * 4;
        if text.len() > max_chars {
            text.truncate(max_chars);
            finish = "MAX_TOKENS";
        }
    }
    let out_tokens = output_tokens(&text);
    {
        let mut inner = shared.lock();
        inner.stats.successes += 1;
        for h in &hashes {
            *inner.stats.successes_by_hash.entry(h.clone()).or_default() += 1;
        }
    }
    (
        StatusCode::OK,
        axum::Json(json!({
            "candidates": [{
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": finish,
                "index": 0
            }],
            "usageMetadata": usage(tokens, text_tokens, audio_tokens, out_tokens),
            "modelVersion": model_version,
            "responseId": Alphanumeric.sample_string(&mut rand::rng(), 22),
        })),
    )
        .into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `POST /upload/v1beta/files`: resumable `start`, then `upload, finalize` on the upload URL.
async fn upload(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match query.upload_id.clone() {
        None => upload_start(&shared, &query, &headers, &body),
        Some(id) => upload_bytes(&shared, &id, &headers, body),
    }
}

fn upload_start(shared: &Shared, query: &KeyQuery, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Some(r) = check_key(shared, headers, query) {
        return r;
    }
    if header_str(headers, "x-goog-upload-protocol") != Some("resumable") {
        return invalid_argument("Only the resumable upload protocol is supported by this fake.");
    }
    if header_str(headers, "x-goog-upload-command") != Some("start") {
        return invalid_argument("Expected X-Goog-Upload-Command: start.");
    }
    let declared_len = match header_str(headers, "x-goog-upload-header-content-length") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return invalid_argument("Invalid X-Goog-Upload-Header-Content-Length."),
        },
    };
    let meta: CreateFileRequest = if body.is_empty() {
        CreateFileRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => return invalid_argument(&format!("Invalid JSON payload received. {e}")),
        }
    };
    let file = meta.file.unwrap_or_default();
    let mime_type = header_str(headers, "x-goog-upload-header-content-type")
        .map(str::to_owned)
        .or(file.mime_type)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let upload_id = {
        let mut inner = shared.lock();
        let id = Alphanumeric.sample_string(&mut inner.rng, 40);
        inner.uploads.insert(
            id.clone(),
            PendingUpload {
                declared_len,
                mime_type,
                display_name: file.display_name.unwrap_or_default(),
            },
        );
        inner.stats.uploads_started += 1;
        id
    };
    let url = format!(
        "{}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable",
        shared.base_url
    );
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        h.insert("x-goog-upload-url", v);
    }
    h.insert("x-goog-upload-status", HeaderValue::from_static("active"));
    h.insert(
        "x-goog-upload-chunk-granularity",
        HeaderValue::from_static("8388608"),
    );
    response
}

fn upload_bytes(shared: &Shared, upload_id: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let command = header_str(headers, "x-goog-upload-command").unwrap_or_default();
    let commands: Vec<&str> = command.split(',').map(str::trim).collect();
    if !commands.contains(&"upload") || !commands.contains(&"finalize") {
        return invalid_argument("This fake expects X-Goog-Upload-Command: upload, finalize.");
    }
    if header_str(headers, "x-goog-upload-offset") != Some("0") {
        return invalid_argument("This fake expects the whole file at X-Goog-Upload-Offset: 0.");
    }
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let Some(pending) = inner.uploads.remove(upload_id) else {
        return envelope(
            404,
            wire::error_envelope(404, "NOT_FOUND", "Upload session not found."),
        );
    };
    if let Some(n) = pending.declared_len
        && n != body.len() as u64
    {
        return invalid_argument(&format!(
            "Upload size {} does not match the declared X-Goog-Upload-Header-Content-Length {n}.",
            body.len()
        ));
    }
    let id = Alphanumeric
        .sample_string(&mut inner.rng, 12)
        .to_ascii_lowercase();
    let file = StoredFile {
        id: id.clone(),
        display_name: pending.display_name,
        mime_type: pending.mime_type,
        bytes: Arc::new(body.to_vec()),
        polls_left: inner.behaviour.files.polls_before_active,
        fail: inner.behaviour.files.fail,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    };
    let json = file.to_json(&shared.base_url);
    inner.files.insert(id, file);
    inner.stats.uploads_finalized += 1;
    inner.stats.files_live = inner.files.len() as u64;
    let mut response = (StatusCode::OK, axum::Json(json!({"file": json}))).into_response();
    response
        .headers_mut()
        .insert("x-goog-upload-status", HeaderValue::from_static("final"));
    response
}

/// `GET /v1beta/models/{model}`: the Model resource of a configured model
/// (Google's shape), the real `404 NOT_FOUND` envelope for any other; the key
/// is checked first, as for `generateContent`. Spends no quota.
async fn get_model(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_key(&shared, &headers, &query) {
        return r;
    }
    if model.contains(':') || !shared.models.contains(&model) {
        let message = format!(
            "models/{model} is not found for API version v1beta, or is not supported for getModel. Call ListModels to see the list of available models and their supported methods."
        );
        return envelope(404, wire::error_envelope(404, "NOT_FOUND", &message));
    }
    let resource = json!({
        "name": format!("models/{model}"),
        "version": "001",
        "displayName": format!("Fake {model}"),
        "description": "A model served by the Gemini-wire fake.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": [
            "generateContent", "countTokens", "createCachedContent", "batchGenerateContent"
        ],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": true,
    });
    (StatusCode::OK, axum::Json(resource)).into_response()
}

/// `GET /v1beta/files/{id}`: `PROCESSING` for the configured number of polls, then `ACTIVE` (or `FAILED`).
async fn get_file(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_key(&shared, &headers, &query) {
        return r;
    }
    let mut inner = shared.lock();
    inner.stats.file_polls += 1;
    let Some(file) = inner.files.get_mut(&id) else {
        return file_not_found(&id);
    };
    let json = file.to_json(&shared.base_url);
    file.polls_left = file.polls_left.saturating_sub(1);
    (StatusCode::OK, axum::Json(json)).into_response()
}

/// `DELETE /v1beta/files/{id}`.
async fn delete_file(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_key(&shared, &headers, &query) {
        return r;
    }
    let mut inner = shared.lock();
    if inner.files.remove(&id).is_none() {
        return file_not_found(&id);
    }
    inner.stats.files_deleted += 1;
    inner.stats.files_live = inner.files.len() as u64;
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}
