//! End-to-end checks; they are the tests in `tests/` and this library is empty.
//!
//! - `tests/system.rs`: the write-service, projector and read-service binaries run as real
//!   processes on a fresh PostgreSQL and MongoDB database, driven and read over HTTP only.
//! - `tests/compose.rs`: `docker-compose.yml` and the `Dockerfile` against the code.
