//! The peer a user would otherwise pick: `cqrs-es` + `postgres-es` doing the same two
//! commands behind the same routes and JSON (`bench/peer-cqrs-es`), in this process like our
//! write-service, on the same PostgreSQL in a database of its own.

use crate::Ctx;
use crate::env::Scratch;

/// What the peer is and is not, for the report.
pub fn describe() -> String {
    "cqrs-es 0.5 + postgres-es 0.5 as their documentation sets them up (`bench/peer-cqrs-es`, \
     its README says which page each part follows): an order aggregate with the same create \
     and confirm rules, lines priced from a products table read by the aggregate's services, \
     axum routes `POST /orders` and `POST /orders/{id}/confirm` with the same JSON, in this \
     process on a database of its own on the same PostgreSQL, driven by the same clients. \
     It keeps no idempotency keys, has no If-Match over HTTP, checks no token, reserves no \
     stock (its confirm moves only the order) and its event table has no gap-safe global \
     order for tailers: ours does all of these"
        .to_owned()
}

/// The peer's service, started on a scratch database of its own.
pub struct Running {
    peer: peer_cqrs_es::Peer,
    scratch: Scratch,
}

impl Running {
    /// Starts the peer with the catalogue S1 uses: products `p-0` to `p-{products - 1}` at
    /// `price(p)` cents.
    pub async fn start(ctx: &Ctx, products: u64, price: fn(u64) -> i64) -> anyhow::Result<Self> {
        let scratch = Scratch::create_empty(&ctx.servers, "peer").await?;
        let started = async {
            let pool = peer_cqrs_es::prepare(&scratch.url).await?;
            let prices: Vec<(String, i64)> = (0..products)
                .map(|p| (format!("p-{p}"), price(p)))
                .collect();
            peer_cqrs_es::seed_products(&pool, &prices).await?;
            peer_cqrs_es::Peer::start(pool).await
        }
        .await;
        match started {
            Ok(peer) => Ok(Running { peer, scratch }),
            Err(e) => {
                let _ = scratch.drop().await;
                Err(e)
            }
        }
    }

    pub fn base(&self) -> &str {
        &self.peer.base
    }

    pub async fn stop(self) {
        self.peer.stop().await;
        let _ = self.scratch.drop().await;
    }
}
