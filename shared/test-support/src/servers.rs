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

/// A name for a database of the test's own (MongoDB or PostgreSQL), unique across runs.
pub fn fresh_database_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Host and port of a server URL (`scheme://[user@]host[:port][/...]`), for a proxy in front
/// of it.
pub fn host_port(url: &str, default_port: u16) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().expect("a numeric port")),
        None => (host_port.to_owned(), default_port),
    }
}
