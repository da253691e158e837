//! `engage-analyze`: the analyze stage worker binary.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    engage_shared::app::main(|_svc| async { Ok(engage_analyze::AnalyzeStage) }).await
}
