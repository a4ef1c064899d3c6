//! Identifiers and bounded values, parsed once at the edge so the domain never sees bad input.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value was refused; the message names the rule, the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn stream_id(&self) -> String {
        format!("order-{}", self.0)
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for OrderId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidValue(format!("`{}` is not a UUID", truncate(s))))
    }
}

/// A key such as a user or product id: 1..=64 characters of `[A-Za-z0-9_.:-]`.
fn parse_key(kind: &str, s: &str) -> Result<Arc<str>, InvalidValue> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
        return Err(InvalidValue(format!(
            "{kind} must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )));
    }
    Ok(Arc::from(s))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

macro_rules! key_newtype {
    ($name:ident, $kind:literal) => {
        /// Shared, immutable text: a replay copies ids into state for every line it adds,
        /// and a copy is then a reference count, not an allocation.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                parse_key($kind, &s).map(Self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_key($kind, s).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

key_newtype!(UserId, "userId");
key_newtype!(ProductId, "productId");

impl ProductId {
    pub fn stream_id(&self) -> String {
        format!("product-{}", self.0)
    }
}

/// Free-text fields (cancel reason, carrier, tracking number) are bounded so a client
/// cannot store megabytes in one event.
pub const MAX_TEXT_LEN: usize = 200;

/// What is wrong with a free text, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextProblem {
    BlankOrTooLong,
    ControlCharacter,
}

/// The free-text rule: not blank, at most [`MAX_TEXT_LEN`] characters, and no control
/// characters but tab and line breaks. PostgreSQL's jsonb refuses NUL outright (a 500 when it
/// got that far); the other control characters only ever garble logs, terminals and exports.
pub fn text_problem(s: &str) -> Option<TextProblem> {
    if s.trim().is_empty() || s.chars().count() > MAX_TEXT_LEN {
        return Some(TextProblem::BlankOrTooLong);
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Some(TextProblem::ControlCharacter);
    }
    None
}

/// Free text that keeps [`text_problem`]'s rule, checked as a request is read, so a bad one
/// is refused before anything else is looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FreeText(String);

impl FreeText {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for FreeText {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match text_problem(&s) {
            None => Ok(Self(s)),
            Some(TextProblem::BlankOrTooLong) => Err(InvalidValue(format!(
                "must be at most {MAX_TEXT_LEN} characters and not blank"
            ))),
            Some(TextProblem::ControlCharacter) => Err(InvalidValue(
                "must not contain control characters such as NUL (U+0000); tab and line breaks are fine"
                    .into(),
            )),
        }
    }
}

impl From<FreeText> for String {
    fn from(t: FreeText) -> String {
        t.0
    }
}

/// ISO 4217-shaped currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self::USD
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err(InvalidValue(
                "currency must be three upper-case letters, e.g. USD".into(),
            )),
        }
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $min:expr, $max:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name($ty);

        impl $name {
            pub const MIN: $ty = $min;
            pub const MAX: $ty = $max;

            pub fn get(self) -> $ty {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = InvalidValue;
            fn try_from(v: i64) -> Result<Self, Self::Error> {
                if (Self::MIN as i64..=Self::MAX as i64).contains(&v) {
                    Ok(Self(v as $ty))
                } else {
                    Err(InvalidValue(format!(
                        concat!($what, " must be between {} and {}"),
                        Self::MIN,
                        Self::MAX
                    )))
                }
            }
        }

        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0 as i64
            }
        }
    };
}

bounded_int!(
    /// Units of one product on one order line.
    Quantity, u32, 1, 10_000, "quantity"
);
bounded_int!(
    /// Units received into stock in one delivery.
    StockQuantity, u32, 1, 1_000_000, "quantity"
);
bounded_int!(
    /// Units added to (positive) or removed from (negative) stock by a count or a write-off.
    StockDelta, i64, -1_000_000, 1_000_000, "quantity"
);
bounded_int!(
    /// Price of one unit in minor units of the order's currency.
    UnitPriceCents, i64, 0, 100_000_000, "unitPriceCents"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_accept_the_documented_alphabet_only() {
        assert!("user-1.a:b_C".parse::<UserId>().is_ok());
        assert!("x".repeat(64).parse::<ProductId>().is_ok());
        assert!("x".repeat(65).parse::<ProductId>().is_err());
        assert!("".parse::<UserId>().is_err());
        assert!("a b".parse::<UserId>().is_err());
        assert!("é".parse::<UserId>().is_err());
        assert!("{\"$gt\":\"\"}".parse::<UserId>().is_err());
    }

    #[test]
    fn free_text_is_bounded_not_blank_and_free_of_control_characters() {
        for ok in [
            "DHL",
            "line one\r\n\tline two",
            "ünïcödé",
            &"x".repeat(MAX_TEXT_LEN),
        ] {
            assert!(FreeText::try_from(ok.to_string()).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            " \t",
            &"x".repeat(MAX_TEXT_LEN + 1),
            "DH\0L",
            "\u{1b}[2J",
            "x\u{7f}",
            "\u{9b}",
        ] {
            assert!(FreeText::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        let t: Result<FreeText, _> = serde_json::from_str("\"a\\u0000b\"");
        assert!(t.is_err());
    }

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert!(Currency::try_from("EUR".to_string()).is_ok());
        for bad in ["eur", "EURO", "E1R", "", "ÉUR"] {
            assert!(Currency::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert_eq!(Currency::default().as_str(), "USD");
    }

    #[test]
    fn bounded_values_enforce_their_ranges() {
        assert!(Quantity::try_from(0).is_err());
        assert!(Quantity::try_from(1).is_ok());
        assert!(Quantity::try_from(10_000).is_ok());
        assert!(Quantity::try_from(10_001).is_err());
        assert!(UnitPriceCents::try_from(-1).is_err());
        assert!(UnitPriceCents::try_from(0).is_ok());
        assert!(UnitPriceCents::try_from(100_000_000).is_ok());
        assert!(UnitPriceCents::try_from(100_000_001).is_err());
        assert!(StockQuantity::try_from(1_000_000).is_ok());
        assert!(StockQuantity::try_from(1_000_001).is_err());
    }

    #[test]
    fn json_round_trip_validates() {
        let q: Result<Quantity, _> = serde_json::from_str("0");
        assert!(q.is_err());
        let p: ProductId = serde_json::from_str("\"sku-1\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"sku-1\"");
    }
}
