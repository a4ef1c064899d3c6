//! What the tests of every crate share: tokens signed as the services under test expect, where the test servers are, an event log written the
//! way the write-service writes it, a service's router called in-process, what a test can
//! check of PostgreSQL's sessions, a TCP proxy that takes a server away and brings it back,
//! an SMTP server that keeps every message it receives, a headless Chromium, and a
//! Server-Sent Events client.

use std::path::{Path, PathBuf};

pub mod auth;
pub mod browser;
pub mod events;
pub mod http;
pub mod mail;
pub mod servers;
pub mod sessions;
pub mod sse;
mod tcp_switch;

pub use tcp_switch::TcpSwitch;

/// The workspace's target directory (`CARGO_TARGET_DIR`, a relative one taken from the
/// workspace root, else `target/`), where tests leave logs and screenshots.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("test-support lives in shared/ of the workspace");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}
