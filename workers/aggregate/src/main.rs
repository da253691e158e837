//! `engage-aggregate`: the aggregate stage worker binary.
#![forbid(unsafe_code)]

// mimalloc instead of glibc's malloc: allocation and free were ~9% of the
// machine's CPU in the pipeline benchmark's profile (many small, short-lived
// buffers per message across threads), which glibc's arenas handle poorly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use engage_aggregate::{AggregateStage, Weights};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    engage_runtime::app::main(|svc| async move {
        let [engagement, emotional, accuracy] = svc.cfg.aggregate.weights;
        AggregateStage::new(Weights {
            engagement,
            emotional,
            accuracy,
        })
    })
    .await
}
