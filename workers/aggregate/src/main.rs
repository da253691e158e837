//! `engage-aggregate`: the aggregate stage worker binary.
#![forbid(unsafe_code)]

use engage_aggregate::{AggregateStage, Weights};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    engage_shared::app::main(|svc| async move {
        let [engagement, emotional, accuracy] = svc.cfg.weights;
        AggregateStage::new(Weights {
            engagement,
            emotional,
            accuracy,
        })
    })
    .await
}
