//! Opaque keyset cursors: the sort key and id of the last item of a page, bound to the
//! listing (and sort) that issued them, and signed, so that only cursors this service
//! issued come back in.
//!
//! A cursor is `2|<scope>|<key>|<id>` in hex followed by 32 hex digits: the first 128 bits
//! of its HMAC-SHA256. The HMAC key is `READ_CURSOR_SECRET` when it is set (give every
//! instance behind one address the same secret, and cursors work across instances and
//! restarts); otherwise 32 random bytes drawn at start-up, so a cursor lasts as long as the
//! process that issued it. Anything else (forged, altered, truncated, from another instance
//! or from before a restart) is a 400 `invalid_cursor` telling the client to start paging
//! again. The keys inside are also checked after the signature (see `decode`), so even a
//! leaked secret cannot push a value the paging arithmetic was not made for.

use secrecy::SecretString;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use service_kit::api_error::ApiError;
use sha2::Sha256;

const VERSION: &str = "2";
/// Longer input is not a cursor of ours; refuse it before decoding. The longest we issue
/// (a user's history: a 64-character user id in the scope) is under 400 characters.
const MAX_LEN: usize = 512;
/// Bytes of the HMAC a cursor carries (128 bits), as 32 hex digits at its end.
const TAG_LEN: usize = 16;
/// Shortest `READ_CURSOR_SECRET` accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort key of the last item: milliseconds for times, cents or units otherwise.
    pub key: i64,
    /// The id of the last item, the tie-breaker.
    pub id: String,
}

/// Issues and checks cursors with one HMAC key.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// `READ_CURSOR_SECRET`: at least [`MIN_SECRET_LEN`] bytes.
pub fn parse_secret(s: &str) -> Result<SecretString, String> {
    if s.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the cursor secret must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(SecretString::from(s))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn malformed() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "malformed cursor: pass `nextCursor` as given",
    )
    .with_field("cursor")
}

fn unrecognised() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "this cursor was not issued by this service, or was issued before it restarted: \
         start paging again without `cursor`",
    )
    .with_field("cursor")
}

impl Signer {
    /// A signer with this key (any length; `READ_CURSOR_SECRET` is checked by `parse_secret`).
    pub fn new(key: &[u8]) -> Self {
        Self {
            // HMAC accepts keys of every length: this cannot fail.
            mac: Hmac::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
        }
    }

    /// A signer with 32 random bytes: its cursors are good in this process only.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0_u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self::new(&key))
    }

    /// The configured secret, or a random key when there is none.
    pub fn from_secret(secret: Option<&str>) -> Result<Self, getrandom::Error> {
        match secret {
            Some(s) => Ok(Self::new(s.as_bytes())),
            None => Self::random(),
        }
    }

    fn tag(&self, plain: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(plain);
        mac
    }

    pub fn encode(&self, scope: &str, key: i64, id: &str) -> String {
        let plain = format!("{VERSION}|{scope}|{key}|{id}");
        let tag = self.tag(plain.as_bytes()).finalize().into_bytes();
        let mut token = hex(plain.as_bytes());
        token.push_str(&hex(&tag[..TAG_LEN]));
        token
    }

    /// Decodes a cursor this signer issued for `scope`; `valid` checks its key and id.
    pub fn decode(
        &self,
        token: &str,
        scope: &str,
        valid: impl Fn(i64, &str) -> bool,
    ) -> Result<Cursor, ApiError> {
        if token.len() > MAX_LEN || token.len() <= 2 * TAG_LEN || !token.is_ascii() {
            return Err(malformed());
        }
        let (plain, tag) = token.split_at(token.len() - 2 * TAG_LEN);
        let (Some(plain), Some(tag)) = (unhex(plain), unhex(tag)) else {
            return Err(malformed());
        };
        self.tag(&plain)
            .verify_truncated_left(&tag)
            .map_err(|_| unrecognised())?;
        // Signed by us: from here on a refusal means a cursor of another version or listing.
        let plain = String::from_utf8(plain).map_err(|_| malformed())?;
        let mut parts = plain.split('|');
        let (Some(VERSION), Some(issued_for), Some(key), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        if issued_for != scope {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "this cursor belongs to another listing or sort order; start again without it",
            )
            .with_field("cursor"));
        }
        let key: i64 = key.parse().map_err(|_| malformed())?;
        if !valid(key, id) {
            return Err(malformed());
        }
        Ok(Cursor {
            key,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: i64, _: &str) -> bool {
        true
    }

    #[test]
    fn round_trips_within_its_scope_only() {
        let s = Signer::random().unwrap();
        let c = s.encode("orders:-createdAt", -42, "abc");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            s.decode(&c, "orders:-createdAt", any).unwrap(),
            Cursor {
                key: -42,
                id: "abc".into()
            }
        );
        let other = s.decode(&c, "orders:totalCents", any).unwrap_err();
        assert_eq!(other.code, "invalid_cursor");
        assert!(other.message.contains("another"), "{}", other.message);
    }

    #[test]
    fn only_the_same_key_accepts_a_cursor() {
        let secret = "s".repeat(MIN_SECRET_LEN);
        let (a, b) = (
            Signer::new(secret.as_bytes()),
            Signer::new(secret.as_bytes()),
        );
        let c = a.encode("s", 7, "id");
        assert_eq!(b.decode(&c, "s", any).unwrap().key, 7, "same secret");
        for other in [Signer::random().unwrap(), Signer::new(b"another secret")] {
            let e = other.decode(&c, "s", any).unwrap_err();
            assert_eq!((e.code, e.status.as_u16()), ("invalid_cursor", 400));
            assert!(e.message.contains("start paging again"), "{}", e.message);
        }
        assert!(parse_secret(&"x".repeat(MIN_SECRET_LEN - 1)).is_err());
        assert!(parse_secret(&secret).is_ok());
    }

    #[test]
    fn garbage_forgeries_and_bad_keys_are_refused() {
        let s = Signer::random().unwrap();
        let scope = "s";
        let good = s.encode(scope, 1, "id");
        let mut flipped = good.clone().into_bytes();
        flipped[0] ^= 1;
        for bad in [
            String::new(),
            "zz".into(),
            "abc".into(),
            "ff".into(),
            // The unsigned cursors of earlier versions, and forgeries of every shape.
            hex(b"1|s|1|id"),
            hex(b"2|s|9223372036854775807|id"),
            hex(b"2|s|1|id") + &"0".repeat(2 * TAG_LEN),
            String::from_utf8(flipped).unwrap(),
            good[..good.len() - 2].to_owned(),
            good[2..].to_owned(),
            format!("{good}00"),
            good.to_uppercase()
                .replace(|c: char| c.is_ascii_digit(), "x"),
            "é".repeat(40),
            "0".repeat(MAX_LEN + 2),
        ] {
            let e = s.decode(&bad, scope, any).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("invalid_cursor", Some("cursor")),
                "{bad}"
            );
        }
        // Signed, but not what this listing could have issued.
        for (key, id) in [(1, "bad id"), (i64::MAX, "id"), (i64::MIN, "id")] {
            let c = s.encode(scope, key, id);
            let valid = |k: i64, id: &str| (-999..1000).contains(&k) && !id.contains(' ');
            assert!(s.decode(&c, scope, valid).is_err(), "{key} {id}");
        }
        // A signed cursor with fields we never write.
        let mut plain = b"2|s|1|id|extra".to_vec();
        let tag = s.tag(&plain).finalize().into_bytes();
        let token = hex(&plain) + &hex(&tag[..TAG_LEN]);
        assert_eq!(
            s.decode(&token, scope, any).unwrap_err().code,
            "invalid_cursor"
        );
        plain.truncate(5);
        let tag = s.tag(&plain).finalize().into_bytes();
        let token = hex(&plain) + &hex(&tag[..TAG_LEN]);
        assert_eq!(
            s.decode(&token, scope, any).unwrap_err().code,
            "invalid_cursor"
        );
    }
}
