//! Event time: milliseconds since the Unix epoch, UTC, and its RFC 3339 form.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

/// A timestamp that could not be read or is outside the representable range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    /// The text is not an RFC 3339 timestamp.
    #[error("not an RFC 3339 timestamp: {0:?}")]
    Unparseable(String),
    /// The value does not name a real instant (out of range).
    #[error("timestamp {0} ms is out of range")]
    OutOfRange(i64),
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision
/// (`2026-01-05T09:00:00.000Z`).
pub fn format_rfc3339_ms(ms: i64) -> Result<String, TimeError> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or(TimeError::OutOfRange(ms))
}

/// Parses an RFC 3339 timestamp (any offset) into epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, TimeError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| TimeError::Unparseable(s.to_owned()))
}

/// An instant in alerts: epoch milliseconds in memory, RFC 3339 on the wire, so that an analyst
/// reading the alert topic does not have to convert numbers. Deserialization also accepts epoch
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Epoch milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match format_rfc3339_ms(self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = format_rfc3339_ms(self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire<'a> {
            Millis(i64),
            #[serde(borrow)]
            Text(Cow<'a, str>),
        }
        match Wire::deserialize(d)? {
            Wire::Millis(ms) => Ok(Timestamp(ms)),
            Wire::Text(s) => parse_rfc3339_ms(&s)
                .map(Timestamp)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 UTC instant with millisecond precision"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let ms = 1_767_603_600_123;
        let s = format_rfc3339_ms(ms).unwrap();
        assert_eq!(s, "2026-01-05T09:00:00.123Z");
        assert_eq!(parse_rfc3339_ms(&s).unwrap(), ms);
        assert_eq!(
            parse_rfc3339_ms("2026-01-05T18:00:00.123+09:00").unwrap(),
            ms
        );
    }

    #[test]
    fn timestamp_accepts_millis_and_text() {
        let a: Timestamp = serde_json::from_str("1767603600123").unwrap();
        let b: Timestamp = serde_json::from_str("\"2026-01-05T09:00:00.123Z\"").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"2026-01-05T09:00:00.123Z\""
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
