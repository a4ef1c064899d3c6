//! The servers a run uses and each scenario's own scratch databases on them.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use event_store::MIGRATOR;
use mongodb::bson::{Document, doc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Where PostgreSQL and MongoDB are (`DATABASE_URL`, `MONGODB_URI`).
#[derive(Clone)]
pub struct Servers {
    pub database_url: String,
    pub mongodb_uri: String,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Servers { .. }")
    }
}

impl Servers {
    pub fn from_env() -> anyhow::Result<Servers> {
        let database_url = std::env::var("DATABASE_URL").context(
            "DATABASE_URL must name a PostgreSQL server (run under scripts/with-services.sh)",
        )?;
        let mongodb_uri = std::env::var("MONGODB_URI").context(
            "MONGODB_URI must name a MongoDB server (run under scripts/with-services.sh)",
        )?;
        Ok(Servers {
            database_url,
            mongodb_uri,
        })
    }

    pub async fn mongo_client(&self) -> anyhow::Result<mongodb::Client> {
        let mut options = mongodb::options::ClientOptions::parse(&self.mongodb_uri).await?;
        options.app_name = Some("bench".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        Ok(mongodb::Client::with_options(options)?)
    }
}

/// `url` pointed at another database on the same server.
pub fn database_url(url: &str, database: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after_scheme + i);
    let query = url[end..].find('?').map_or("", |i| &url[end + i..]);
    format!("{}/{database}{query}", &url[..end])
}

/// Scratch databases alive now (server URL, name), so an interrupted run can drop them.
static LIVE: std::sync::Mutex<Vec<(Servers, String)>> = std::sync::Mutex::new(Vec::new());

fn live(f: impl FnOnce(&mut Vec<(Servers, String)>)) {
    if let Ok(mut l) = LIVE.lock() {
        f(&mut l);
    }
}

/// Drops every scratch database still alive (PostgreSQL and MongoDB databases named
/// `<name>` or starting with `<name>_`): for a run interrupted by a signal.
pub async fn drop_live_scratch() {
    let mut all = Vec::new();
    live(|l| all = std::mem::take(l));
    for (servers, name) in all {
        if let Ok(client) = servers.mongo_client().await
            && let Ok(names) = client.list_database_names().await
        {
            for n in names {
                if n == name || n.starts_with(&format!("{name}_")) {
                    let _ = client.database(&n).drop().await;
                }
            }
        }
        if let Ok(mut admin) = PgConnection::connect(&servers.database_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists \"{name}\" with (force)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// A fresh PostgreSQL database (migrated) and a fresh MongoDB database, both named
/// `bench_<scenario>_<random>`, dropped by `drop`. Scenarios that need more MongoDB
/// databases name them `<name>_<suffix>`.
pub struct Scratch {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    pub mongo: mongodb::Database,
    servers: Servers,
}

impl Scratch {
    /// Fresh databases for `scenario`, the PostgreSQL one with the event store's migrations.
    pub async fn create(servers: &Servers, scenario: &str) -> anyhow::Result<Scratch> {
        Self::create_with(servers, scenario, true).await
    }

    /// Fresh databases for `scenario`, the PostgreSQL one empty (for another schema: the peer's).
    pub async fn create_empty(servers: &Servers, scenario: &str) -> anyhow::Result<Scratch> {
        Self::create_with(servers, scenario, false).await
    }

    async fn create_with(
        servers: &Servers,
        scenario: &str,
        migrate: bool,
    ) -> anyhow::Result<Scratch> {
        let name = format!(
            "bench_{}_{}",
            scenario.to_ascii_lowercase(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect(&servers.database_url)
            .await
            .context("connecting to DATABASE_URL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = admin.close().await;
        live(|l| l.push((servers.clone(), name.clone())));
        let url = database_url(&servers.database_url, &name);
        let options = PgConnectOptions::from_str(&url)?
            .application_name("bench")
            .options([("idle_in_transaction_session_timeout", "10s")]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        if migrate {
            MIGRATOR.run(&pool).await?;
        }
        let mongo = servers.mongo_client().await?.database(&name);
        Ok(Scratch {
            name,
            url,
            pool,
            mongo,
            servers: servers.clone(),
        })
    }

    /// Drops both databases; best effort, errors are returned for the report.
    pub async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mongo = self.mongo.drop().await;
        let mut admin = PgConnection::connect(&self.servers.database_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists \"{}\" with (force)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        let _ = admin.close().await;
        live(|l| l.retain(|(_, n)| *n != self.name));
        mongo?;
        Ok(())
    }
}

/// Runs a MongoDB command on `admin`, for machine facts.
pub async fn admin_command(client: &mongodb::Client, command: Document) -> Option<Document> {
    client.database("admin").run_command(command).await.ok()
}

pub fn build_info() -> Document {
    doc! {"buildInfo": 1}
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_urls_keep_credentials_and_options() {
        assert_eq!(
            database_url("postgres://u:p@h:5432/orders?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h", "x"), "postgres://h/x");
    }
}
