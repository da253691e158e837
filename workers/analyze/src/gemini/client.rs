//! [`GeminiClient`]: one analysis = one `generateContent` call over REST
//! (reqwest), with the audio inline or, above a size threshold, uploaded
//! through the Files API first.
//!
//! The client makes a single attempt and never retries or sleeps on errors:
//! the worker decides from [`GeminiError::disposition`] whether to retry, pause
//! the fleet, stop or fail the item, and takes rate-limit permits before
//! calling. The API key travels only in the `x-goog-api-key` header (marked
//! sensitive), redirects are not followed, the resumable-upload URL must be on
//! the configured API origin, and errors are stripped of URLs before they are
//! returned, so the key and upload capabilities never reach a log.

use super::answer::parse_generate_response;
use super::config::GeminiConfig;
use super::error::{GeminiError, ModelCheckError, classify_http_error};
use super::prompt::{KNOWN_PROMPT_VERSIONS, PROMPT, estimate_tokens, response_schema};
use super::wire::{
    Blob, Content, File, FileData, GenerateContentRequest, GenerationConfig, Model, Part,
    ThinkingConfig, UploadResponse, UsageMetadata,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use engage_model::AnalysisResult;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Response, Url};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Bytes of a request besides the base64 audio: prompt, schema and framing.
const REQUEST_OVERHEAD_BYTES: usize = PROMPT.len() + 4096;

/// Bytes of memory a Gemini call on `audio` can hold at its peak: the audio,
/// its base64 text (4/3 of it) and the serialised JSON request carrying that
/// text (another 4/3) for inline requests, or the audio and its upload body
/// copy for the Files API, plus the answer; rounded up to four times the
/// audio plus 1 MiB. What an analyze job reserves in the audio budget.
pub fn gemini_memory_need(audio: &[u8]) -> u64 {
    (audio.len() as u64).saturating_mul(4) + (1 << 20)
}

/// Longest wait for the answer to the start-up model check: it is a small
/// GET, retried by the caller, so a slow network is not waited on for the
/// whole `request_timeout_s`.
const MODEL_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest pause between file state polls.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How the audio reached the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTransport {
    /// Base64 inside the `generateContent` request.
    Inline,
    /// Uploaded with the Files API and referenced by URI (then deleted).
    FilesApi,
}

/// A successful analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiAnswer {
    /// The validated result (`analyzer` = `gemini:<model>:<prompt-version>`).
    pub result: AnalysisResult,
    /// Tokens Google counted for the call (`usageMetadata`).
    pub usage: UsageMetadata,
    /// How the audio was sent.
    pub transport: AudioTransport,
}

/// A request ready to send ([`GeminiClient::prepare`]): the audio inline or
/// uploaded. Hand it back to [`GeminiClient::discard`] when done.
#[derive(Debug)]
pub enum Prepared {
    /// Base64 audio for the request body.
    Inline {
        /// MIME type.
        mime: String,
        /// The audio, base64.
        data: String,
    },
    /// An uploaded, `ACTIVE` file.
    File {
        /// MIME type the file was stored with.
        mime: String,
        /// The file.
        file: File,
    },
}

/// A Gemini REST client for one model and prompt version. Cheap to clone.
#[derive(Clone)]
pub struct GeminiClient {
    http: Client,
    config: GeminiConfig,
    base: Url,
    model_url: Url,
    generate_url: Url,
    upload_start_url: Url,
    analyzer: String,
    schema: Value,
}

impl std::fmt::Debug for GeminiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiClient")
            .field("base", &self.base.as_str())
            .field("analyzer", &self.analyzer)
            .field("api_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl Into<String>) -> GeminiError {
    GeminiError::Config(what.into())
}

/// Whether two URLs share scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `body` with every occurrence of `secret` replaced by `[REDACTED]`.
fn scrub_secret<'a>(body: &'a [u8], secret: &str) -> std::borrow::Cow<'a, [u8]> {
    let needle = secret.as_bytes();
    if needle.is_empty() || !body.windows(needle.len()).any(|w| w == needle) {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(needle) {
            out.extend_from_slice(b"[REDACTED]");
            i += needle.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A Files API resource name the client is willing to put in a URL path.
fn valid_file_name(name: &str) -> bool {
    name.strip_prefix("files/").is_some_and(|id| {
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

impl GeminiClient {
    /// Validates the configuration and builds the HTTP client.
    pub fn new(config: GeminiConfig) -> Result<Self, GeminiError> {
        let key = config.api_key.expose().trim();
        if key.is_empty() {
            return Err(config_error("api_key is empty (set GEMINI_API_KEY)"));
        }
        let mut key_header = HeaderValue::from_str(key)
            .map_err(|_| config_error("api_key contains characters not allowed in a header"))?;
        key_header.set_sensitive(true);
        if !KNOWN_PROMPT_VERSIONS.contains(&config.prompt_version.as_str()) {
            return Err(config_error(format!(
                "unknown prompt_version {:?} (known: {KNOWN_PROMPT_VERSIONS:?})",
                config.prompt_version
            )));
        }
        let model = config.model_id();
        if model.is_empty()
            || !model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(config_error(format!("invalid model id {model:?}")));
        }
        let base = Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|e| config_error(format!("base_url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(config_error("base_url must be an http(s) URL"));
        }
        let root = base.as_str().trim_end_matches('/').to_owned();
        let model_url = Url::parse(&format!("{root}/v1beta/models/{model}"))
            .map_err(|e| config_error(format!("model URL: {e}")))?;
        let generate_url = Url::parse(&format!("{root}/v1beta/models/{model}:generateContent"))
            .map_err(|e| config_error(format!("generate URL: {e}")))?;
        let upload_start_url = Url::parse(&format!("{root}/upload/v1beta/files"))
            .map_err(|e| config_error(format!("upload URL: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert("x-goog-api-key", key_header);
        let http = Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout())
            .connect_timeout(Duration::from_secs(config.connect_timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("engage-analyze/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_error(format!("HTTP client: {}", e.without_url())))?;
        let analyzer = config.analyzer_id();
        Ok(Self {
            http,
            config,
            base,
            model_url,
            generate_url,
            upload_start_url,
            analyzer,
            schema: response_schema(),
        })
    }

    /// The analyzer id results are recorded under (`gemini:<model>:<prompt-version>`).
    pub fn analyzer_id(&self) -> &str {
        &self.analyzer
    }

    /// The configuration in use.
    pub fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// Estimated input tokens for `duration_s` seconds of audio (32 tokens a
    /// second plus the prompt): what to charge the TPM quota before calling.
    pub fn estimate_tokens(duration_s: f64) -> u64 {
        estimate_tokens(duration_s)
    }

    /// Checks that the configured model exists for this key and serves
    /// `generateContent`: `GET {base}/v1beta/models/{model}`, which spends no
    /// tokens. A single attempt; [`ModelCheckError::is_fatal`] tells whether
    /// asking again can help. Returns the model's resource.
    pub async fn check_model(&self) -> Result<Model, ModelCheckError> {
        let id = self.config.model_id();
        let asked = async {
            let response = self
                .http
                .get(self.model_url.clone())
                .timeout(MODEL_CHECK_TIMEOUT.min(self.config.request_timeout()))
                .send()
                .await
                .map_err(GeminiError::transport)?;
            self.success_body(response).await
        };
        let body = asked.await.map_err(|e| ModelCheckError::from_call(id, e))?;
        let model: Model =
            serde_json::from_slice(&body).map_err(|e| ModelCheckError::Transient {
                model: id.to_owned(),
                source: GeminiError::MalformedResponse(format!("model resource: {e}")),
            })?;
        let methods = &model.supported_generation_methods;
        if !methods.is_empty() && !methods.iter().any(|m| m == "generateContent") {
            return Err(ModelCheckError::ModelUnavailable {
                model: id.to_owned(),
                message: format!("it does not serve generateContent (only {methods:?})"),
            });
        }
        Ok(model)
    }

    /// Analyzes one spoken answer: a single attempt, no internal retry
    /// ([`Self::prepare`], [`Self::send`], then [`Self::discard`]).
    pub async fn analyze(&self, audio: &[u8], mime: &str) -> Result<GeminiAnswer, GeminiError> {
        let prepared = self.prepare(audio, mime).await?;
        let answer = self.send(&prepared).await;
        self.discard(prepared).await;
        answer
    }

    /// Everything before the `generateContent` call: checks, and either the
    /// base64 part (inline) or an upload through the Files API, polled until
    /// `ACTIVE`. The rate-limit permit is taken after this, so a slow upload
    /// does not sit between a booked send time and the send.
    pub async fn prepare(&self, audio: &[u8], mime: &str) -> Result<Prepared, GeminiError> {
        let mime = mime.trim();
        if !mime.starts_with("audio/") || mime.len() <= "audio/".len() {
            return Err(GeminiError::UnsupportedMime(mime.to_owned()));
        }
        if audio.is_empty() {
            return Err(GeminiError::EmptyAudio);
        }
        let inline_size = audio.len().div_ceil(3) * 4 + REQUEST_OVERHEAD_BYTES;
        if inline_size <= self.config.inline_max_bytes {
            debug!(
                bytes = audio.len(),
                mode = "inline",
                "gemini request prepared"
            );
            return Ok(Prepared::Inline {
                mime: mime.to_owned(),
                data: B64.encode(audio),
            });
        }
        debug!(
            bytes = audio.len(),
            mode = "files_api",
            "gemini request prepared"
        );
        let file = self.upload(audio, mime).await?;
        match self.wait_active(file.clone()).await {
            Ok(active) => Ok(Prepared::File {
                mime: active.mime_type.clone().unwrap_or_else(|| mime.to_owned()),
                file: active,
            }),
            Err(e) => {
                self.delete_file(&file.name).await;
                Err(e)
            }
        }
    }

    /// The `generateContent` call for a prepared request.
    pub async fn send(&self, prepared: &Prepared) -> Result<GeminiAnswer, GeminiError> {
        let (part, transport) = match prepared {
            Prepared::Inline { mime, data } => (
                Part::InlineData(Blob {
                    mime_type: mime,
                    data: data.clone(),
                }),
                AudioTransport::Inline,
            ),
            Prepared::File { mime, file } => (
                Part::FileData(FileData {
                    mime_type: mime,
                    file_uri: &file.uri,
                }),
                AudioTransport::FilesApi,
            ),
        };
        let (result, usage) = self.generate(part).await?;
        Ok(GeminiAnswer {
            result,
            usage,
            transport,
        })
    }

    /// Releases what [`Self::prepare`] created (deletes an uploaded file).
    pub async fn discard(&self, prepared: Prepared) {
        if let Prepared::File { file, .. } = prepared {
            self.delete_file(&file.name).await;
        }
    }

    /// One `generateContent` call with the prompt and the given audio part.
    async fn generate(
        &self,
        audio: Part<'_>,
    ) -> Result<(AnalysisResult, UsageMetadata), GeminiError> {
        let request = GenerateContentRequest {
            contents: vec![Content {
                role: "user",
                parts: vec![Part::Text(PROMPT), audio],
            }],
            generation_config: GenerationConfig {
                response_mime_type: "application/json",
                response_schema: self.schema.clone(),
                max_output_tokens: self.config.max_output_tokens,
                temperature: self.config.temperature,
                thinking_config: self
                    .config
                    .thinking_budget
                    .map(|thinking_budget| ThinkingConfig { thinking_budget }),
            },
        };
        let response = self
            .http
            .post(self.generate_url.clone())
            .json(&request)
            .send()
            .await
            .map_err(GeminiError::transport)?;
        let body = self.success_body(response).await?;
        parse_generate_response(&body, &self.analyzer)
    }

    /// The body of a 2xx answer, or the classified error of any other.
    async fn success_body(&self, response: Response) -> Result<Vec<u8>, GeminiError> {
        let status = response.status();
        let body = response.bytes().await.map_err(GeminiError::transport)?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(self.classify(status.as_u16(), &body))
        }
    }

    /// Classifies an error answer, first scrubbing the key should the body echo it.
    fn classify(&self, status: u16, body: &[u8]) -> GeminiError {
        let scrubbed = scrub_secret(body, self.config.api_key.expose());
        classify_http_error(status, &scrubbed, chrono::Utc::now())
    }

    /// Resumable upload: `start` (metadata), then the bytes with `upload, finalize`.
    async fn upload(&self, audio: &[u8], mime: &str) -> Result<File, GeminiError> {
        let start = self
            .http
            .post(self.upload_start_url.clone())
            .header("X-Goog-Upload-Protocol", "resumable")
            .header("X-Goog-Upload-Command", "start")
            .header(
                "X-Goog-Upload-Header-Content-Length",
                audio.len().to_string(),
            )
            .header("X-Goog-Upload-Header-Content-Type", mime)
            .json(&json!({"file": {"display_name": "engage-audio"}}))
            .send()
            .await
            .map_err(GeminiError::transport)?;
        if !start.status().is_success() {
            let status = start.status().as_u16();
            let body = start.bytes().await.map_err(GeminiError::transport)?;
            return Err(self.classify(status, &body));
        }
        let upload_url = start
            .headers()
            .get("x-goog-upload-url")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| GeminiError::UploadUrl("no x-goog-upload-url header".to_owned()))?;
        let upload_url = Url::parse(upload_url)
            .map_err(|_| GeminiError::UploadUrl("unparseable x-goog-upload-url".to_owned()))?;
        if !same_origin(&upload_url, &self.base) {
            return Err(GeminiError::UploadUrl(format!(
                "upload host {:?} is not the API host",
                upload_url.host_str().unwrap_or_default()
            )));
        }
        let finalize = self
            .http
            .post(upload_url)
            .header("X-Goog-Upload-Offset", "0")
            .header("X-Goog-Upload-Command", "upload, finalize")
            .body(audio.to_vec())
            .send()
            .await
            .map_err(GeminiError::transport)?;
        let body = self.success_body(finalize).await?;
        let uploaded: UploadResponse = serde_json::from_slice(&body)
            .map_err(|e| GeminiError::MalformedResponse(format!("upload answer: {e}")))?;
        let file = uploaded.file.ok_or_else(|| {
            GeminiError::MalformedResponse("upload answer has no file".to_owned())
        })?;
        if !valid_file_name(&file.name) || file.uri.is_empty() {
            return Err(GeminiError::MalformedResponse(format!(
                "upload answer has an unusable file name {:?}",
                file.name
            )));
        }
        Ok(file)
    }

    /// `GET /v1beta/files/{id}`.
    async fn get_file(&self, name: &str) -> Result<File, GeminiError> {
        let url = self.file_url(name)?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(GeminiError::transport)?;
        let body = self.success_body(response).await?;
        serde_json::from_slice(&body)
            .map_err(|e| GeminiError::MalformedResponse(format!("file resource: {e}")))
    }

    fn file_url(&self, name: &str) -> Result<Url, GeminiError> {
        if !valid_file_name(name) {
            return Err(GeminiError::MalformedResponse(format!(
                "unusable file name {name:?}"
            )));
        }
        let root = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{root}/v1beta/{name}"))
            .map_err(|e| GeminiError::MalformedResponse(format!("file URL: {e}")))
    }

    /// Polls the file until `ACTIVE` (bounded by `file_poll_timeout_ms`).
    async fn wait_active(&self, mut file: File) -> Result<File, GeminiError> {
        let started = Instant::now();
        let deadline = started + self.config.file_poll_timeout();
        let mut interval = Duration::from_millis(self.config.file_poll_interval_ms.max(1));
        loop {
            match file.state.as_deref() {
                Some("ACTIVE") => return Ok(file),
                Some("FAILED") => {
                    return Err(GeminiError::FileProcessingFailed { name: file.name });
                }
                _ => {}
            }
            if Instant::now() + interval > deadline {
                return Err(GeminiError::FileProcessingTimeout {
                    name: file.name,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
            file = self.get_file(&file.name).await?;
        }
    }

    /// Best-effort `DELETE` of an uploaded file (Google also expires files after 48 h).
    async fn delete_file(&self, name: &str) {
        let outcome = match self.file_url(name) {
            Ok(url) => match self.http.delete(url).send().await {
                Ok(response) => self.success_body(response).await.map(|_| ()),
                Err(e) => Err(GeminiError::transport(e)),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            warn!(file = name, error = %e, class = e.class(), "could not delete uploaded Gemini file");
        }
    }
}

#[cfg(test)]
mod tests;
