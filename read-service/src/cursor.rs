//! Opaque keyset cursors: the sort key and id of the last item of a page, bound to the
//! listing (and sort) that issued them.
//!
//! A cursor is `1|<scope>|<key>|<id>` in hex: opaque to clients, validated on the way back
//! in. It is not signed: forging one only moves the start of a page, never reaches data the
//! listing could not show anyway.

use shared::api_error::ApiError;

const VERSION: &str = "1";
/// Longer input is not a cursor of ours; refuse it before decoding.
const MAX_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort key of the last item: milliseconds for times, cents or units otherwise.
    pub key: i64,
    /// The id of the last item, the tie-breaker.
    pub id: String,
}

pub fn encode(scope: &str, key: i64, id: &str) -> String {
    let plain = format!("{VERSION}|{scope}|{key}|{id}");
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

fn malformed() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "malformed cursor: pass `nextCursor` as given",
    )
    .with_field("cursor")
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

/// Decodes a cursor issued for `scope`; `valid_id` checks the id's shape.
pub fn decode(
    token: &str,
    scope: &str,
    valid_id: impl Fn(&str) -> bool,
) -> Result<Cursor, ApiError> {
    if token.len() > MAX_LEN {
        return Err(malformed());
    }
    let plain = unhex(token)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(malformed)?;
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
    let key = key.parse().map_err(|_| malformed())?;
    if !valid_id(id) {
        return Err(malformed());
    }
    Ok(Cursor {
        key,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_its_scope_only() {
        let c = encode("orders:-createdAt", -42, "abc");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            decode(&c, "orders:-createdAt", |_| true).unwrap(),
            Cursor {
                key: -42,
                id: "abc".into()
            }
        );
        let other = decode(&c, "orders:totalCents", |_| true).unwrap_err();
        assert_eq!(other.code, "invalid_cursor");
        assert!(other.message.contains("another"), "{}", other.message);
    }

    #[test]
    fn garbage_is_refused() {
        let scope = "s";
        for bad in [
            String::new(),
            "zz".into(),
            "abc".into(),
            "ff".into(),
            encode(scope, 1, "id").replacen("31", "32", 1),
            hex("1|s|notanumber|id"),
            hex("1|s|1|id|extra"),
            hex("1|s|1"),
            "0".repeat(MAX_LEN + 2),
        ] {
            let e = decode(&bad, scope, |_| true).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("invalid_cursor", Some("cursor")),
                "{bad}"
            );
        }
        assert!(decode(&encode(scope, 1, "bad id"), scope, |id| !id.contains(' ')).is_err());
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }
}
