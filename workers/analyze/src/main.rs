//! `engage-analyze`: the analyze stage worker binary.
#![forbid(unsafe_code)]

// mimalloc instead of glibc's malloc: allocation and free were ~9% of the
// machine's CPU in the pipeline benchmark's profile (many small, short-lived
// buffers per message across threads), which glibc's arenas handle poorly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use engage_analyze::gemini::GeminiConfig;
use engage_analyze::paid::Paid;
use engage_analyze::ratelimit::Quota;
use engage_analyze::{AnalyzeStage, Analyzer};
use engage_runtime::config::AnalyzerKind;
use engage_runtime::secret::Secret;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    engage_runtime::app::main(|svc| async move {
        let analyzer = match svc.cfg.analyzer {
            AnalyzerKind::Acoustic => Analyzer::Acoustic,
            AnalyzerKind::Gemini => {
                let mut gc: GeminiConfig = serde_json::from_value(svc.cfg.gemini.clone())
                    .context("ENGAGE_GEMINI__* settings")?;
                if let Ok(key) = std::env::var("GEMINI_API_KEY") {
                    gc.api_key = Secret::new(key);
                }
                anyhow::ensure!(
                    !gc.api_key.expose().is_empty(),
                    "ENGAGE_ANALYZER=gemini needs GEMINI_API_KEY"
                );
                let c = &svc.cfg;
                let quota = Quota {
                    rpm: Some(c.gemini_rpm),
                    tpm: Some(c.gemini_tpm),
                    rpd: (c.gemini_rpd > 0).then_some(c.gemini_rpd),
                };
                let wait = std::time::Duration::from_secs(c.max_permit_wait_s);
                Analyzer::Gemini(Box::new(Paid::new(
                    gc,
                    svc.redis.clone(),
                    &c.namespace,
                    quota,
                    wait,
                    &svc.metrics.registry,
                )?))
            }
        };
        Ok(AnalyzeStage::new(analyzer))
    })
    .await
}
