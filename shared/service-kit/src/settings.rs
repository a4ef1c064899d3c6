//! Helpers for the services' typed settings.

use secrecy::SecretString;

/// Reads a setting that must not show in `Debug` output or logs (a URL with a password, a
/// signing key): use as a clap `value_parser`.
pub fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}
