//! S6: queries against views holding many orders, each read-service endpoint at fixed rates.

use crate::Ctx;
use crate::report::Scenario;

pub async fn run(_ctx: &Ctx) -> anyhow::Result<Scenario> {
    Ok(Scenario::not_yet(
        "S6",
        "Queries",
        "To measure: each read-service endpoint at fixed request rates with 100k orders in the \
         views, latency p50/p99.",
    ))
}
