//! Checks of the deployment files (`docker-compose.yml`, `Dockerfile`) against the code.
//! The checks are the tests in `tests/`; this library is empty.
