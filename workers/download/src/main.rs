//! `engage-download`: the download stage worker binary.
#![forbid(unsafe_code)]

// mimalloc instead of glibc's malloc: allocation and free were ~9% of the
// machine's CPU in the pipeline benchmark's profile (many small, short-lived
// buffers per message across threads), which glibc's arenas handle poorly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Freed audio memory must leave the process at once for the audio
    // budget to bound its RSS (see engage_runtime::allocator).
    engage_runtime::allocator::purge_freed_memory_at_once();
    engage_runtime::app::main(|_svc| async { Ok(engage_download::DownloadStage) }).await
}
