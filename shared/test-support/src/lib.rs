//! What the tests of every crate share: where the test servers are, an event log written the
//! way the write-service writes it, a service's router called in-process, what a test can
//! check of PostgreSQL's sessions, and a TCP proxy that takes a server away and brings it back.

pub mod events;
pub mod http;
pub mod servers;
pub mod sessions;
mod tcp_switch;

pub use tcp_switch::TcpSwitch;
