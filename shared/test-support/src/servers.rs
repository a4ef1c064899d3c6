//! The servers a test talks to, as `make test` (scripts/with-services.sh) names them.

/// The MongoDB server (`MONGODB_URI`).
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI")
        .expect("MONGODB_URI must name a MongoDB server: run the tests with `make test`")
}

/// `DATABASE_URL` pointed at another database on the same server.
pub fn database_url(database: &str) -> String {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a PostgreSQL server: run the tests with `make test`");
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let end = base[after_scheme..]
        .find(['/', '?'])
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{database}", &base[..end])
}
