//! The consistency token: where an event sits in the order the projector reads the log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An event's place in the global read order: `(tx_id, global_position)`.
///
/// The projector applies events in this order, so "has the view applied the event at `p`"
/// is `checkpoint >= p`. Rendered as two fixed-width hex numbers so the string sorts like
/// the tuple and clients can treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub tx_id: u64,
    pub global_position: i64,
}

impl Position {
    pub const ZERO: Position = Position {
        tx_id: 0,
        global_position: 0,
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.tx_id, self.global_position)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed position token: expected two 16-digit hex numbers joined by '-'")]
pub struct InvalidPosition;

impl FromStr for Position {
    type Err = InvalidPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, pos) = s.split_once('-').ok_or(InvalidPosition)?;
        let parse = |p: &str| {
            if p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
                u64::from_str_radix(p, 16).map_err(|_| InvalidPosition)
            } else {
                Err(InvalidPosition)
            }
        };
        let global = i64::try_from(parse(pos)?).map_err(|_| InvalidPosition)?;
        Ok(Position {
            tx_id: parse(tx)?,
            global_position: global,
        })
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_sorts_like_the_tuple() {
        let a = Position {
            tx_id: 9,
            global_position: 300,
        };
        let b = Position {
            tx_id: 10,
            global_position: 2,
        };
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<Position>().unwrap(), a);
        assert_eq!(b.to_string(), "000000000000000a-0000000000000002");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "12",
            "000000000000000a",
            "000000000000000a-2",
            "zzzzzzzzzzzzzzzz-0000000000000002",
            "000000000000000a-ffffffffffffffff",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}
