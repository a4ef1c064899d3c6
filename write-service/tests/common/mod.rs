//! What the write-service's tests share: its settings and its access control as the tests
//! run them (tokens signed by `test_support::auth`).
#![allow(dead_code)]

use service_kit::auth::Auth;
use write_service::Settings;
use write_service::access::RULES;

/// The settings a test app is built with (each test gives it a pool of its own).
pub fn settings() -> Settings {
    Settings {
        database_url: "postgres://unused".into(),
        addr: "127.0.0.1:0".parse().unwrap(),
        snapshot_every: 100,
        database_max_connections: 10,
        command_max_retries: 10,
        auth: test_support::auth::settings(),
    }
}

/// Checks tokens with the tests' secret (the tokens `test_support::auth` signs).
pub fn auth() -> Auth {
    Auth::without_jwks(&test_support::auth::settings(), RULES).expect("the tests' secret")
}
