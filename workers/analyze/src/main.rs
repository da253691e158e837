//! `engage-analyze`: the analyze stage worker binary.
//!
//! Its configuration is the common sections plus `[analyze]`, and `[gemini]`
//! when `analyze.analyzer` is `gemini` (then a missing `GEMINI_API_KEY`
//! fails start-up with a message naming it, and the configured model must
//! exist for the key before any job is taken: `gemini::require_model`).
#![forbid(unsafe_code)]

// mimalloc instead of glibc's malloc: allocation and free were ~9% of the
// machine's CPU in the pipeline benchmark's profile (many small, short-lived
// buffers per message across threads), which glibc's arenas handle poorly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use engage_analyze::gemini::{GeminiClient, require_model};
use engage_analyze::paid::Paid;
use engage_analyze::ratelimit::Quota;
use engage_analyze::{AnalyzeStage, Analyzer};
use engage_runtime::config::AnalyzerKind;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Freed audio memory must leave the process at once for the audio
    // budget to bound its RSS (see engage_runtime::allocator).
    engage_runtime::allocator::purge_freed_memory_at_once();
    engage_runtime::app::main(|svc| async move {
        let c = &svc.cfg;
        let analyzer = match c.analyze.analyzer {
            AnalyzerKind::Acoustic => Analyzer::Acoustic,
            AnalyzerKind::Gemini => {
                // `[gemini]` was validated by the loader (key present, quota > 0).
                let g = &c.gemini;
                // No job before the model is known to exist for the key: not
                // ready while checking; an unavailable model never returns.
                require_model(&GeminiClient::new(g.clone())?, &svc.health, &svc.metrics).await;
                let quota = Quota {
                    rpm: Some(g.rpm),
                    tpm: Some(g.tpm),
                    rpd: (g.rpd > 0).then_some(g.rpd),
                };
                Analyzer::Gemini(Box::new(Paid::new(
                    g.clone(),
                    &c.analyze,
                    svc.redis.clone(),
                    &c.fleet.namespace,
                    quota,
                    &svc.metrics.registry,
                )?))
            }
        };
        Ok(AnalyzeStage::new(analyzer))
    })
    .await
}
