//! What the tests of every crate share: tokens signed as the services under test expect, where the test servers are, an event log written the
//! way the write-service writes it, a service's router called in-process, what a test can
//! check of PostgreSQL's sessions, a TCP proxy that takes a server away and brings it back, and
//! an SMTP server that keeps every message it receives.

pub mod auth;
pub mod events;
pub mod http;
pub mod mail;
pub mod servers;
pub mod sessions;
mod tcp_switch;

pub use tcp_switch::TcpSwitch;
