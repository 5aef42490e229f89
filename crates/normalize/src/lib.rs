//! Normalizers: one provider log line in, one [`AuthEvent`] out, or a [`Rejection`] that says why.
//!
//! A normalizer never panics on input and never drops a line silently: every line either becomes
//! an event or a rejection with a stable [`RejectKind`] (for counters) and a human sentence (for
//! the dead-letter record). Checks that apply whatever the provider — an impossible timestamp,
//! an empty id — live in [`validate`], so every format shares them.
//!
//! ```
//! use authwatch_normalize::{Format, Limits, RejectKind};
//!
//! let norm = Format::Native.normalizer();
//! let limits = Limits::default();
//! let ok = norm.normalize(br#"{"time":1767603600000,"provider":"okta","event_id":"e1","activity":"logon","outcome":"success"}"#, 0, &limits);
//! assert!(ok.is_ok());
//! let bad = norm.normalize(br#"{"time":1767603600000,"provider":"okta""#, 0, &limits).unwrap_err();
//! assert_eq!(bad.kind, RejectKind::MalformedJson);
//! ```
#![deny(missing_docs)]

mod native;
mod reject;

pub use native::Native;
pub use reject::{RejectKind, Rejection};

use authwatch_event::AuthEvent;

/// Bounds every event must respect, whatever its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Earliest plausible event time (ms). Default 2000-01-01T00:00:00Z: no identity provider
    /// log the product ingests is older, and 0 or small numbers are unit mistakes (seconds).
    pub min_time_ms: i64,
    /// Latest plausible event time (ms). Default 2100-01-01T00:00:00Z.
    pub max_time_ms: i64,
    /// How far ahead of `ingest_time` an event may claim to be (clock skew); `None` disables the
    /// check (recorded files whose ingest time is meaningless).
    pub max_future_skew_ms: Option<i64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_time_ms: 946_684_800_000,
            max_time_ms: 4_102_444_800_000,
            max_future_skew_ms: None,
        }
    }
}

/// Turns one raw line into an event.
pub trait Normalizer: Send + Sync {
    /// The format's name, as used in config and on the command line.
    fn name(&self) -> &'static str;

    /// Parses and normalizes one line. `ingest_time` (ms) is stamped on the event.
    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection>;
}

/// The input formats authwatch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// authwatch's own JSON lines (the `AuthEvent` JSON Schema in `schemas/`).
    #[default]
    Native,
}

impl Format {
    /// Every format, for help texts.
    pub const ALL: &'static [Format] = &[Format::Native];

    /// The format's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Native => "native",
        }
    }

    /// The normalizer for this format.
    pub fn normalizer(self) -> Box<dyn Normalizer> {
        match self {
            Format::Native => Box::new(Native),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .iter()
            .copied()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown format {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// Checks every format shares: plausible time, non-empty identity of the event.
pub fn validate(event: &AuthEvent, limits: &Limits) -> Result<(), Rejection> {
    if event.time < limits.min_time_ms || event.time >= limits.max_time_ms {
        return Err(Rejection::new(
            RejectKind::ImpossibleTimestamp,
            format!(
                "event time {} ms is outside the plausible range [{}, {}) (seconds instead of milliseconds?)",
                event.time, limits.min_time_ms, limits.max_time_ms
            ),
        ));
    }
    if let Some(skew) = limits.max_future_skew_ms
        && event.ingest_time > 0
        && event.time > event.ingest_time.saturating_add(skew)
    {
        return Err(Rejection::new(
            RejectKind::ImpossibleTimestamp,
            format!(
                "event time {} ms is {} ms ahead of ingest time (limit {skew} ms)",
                event.time,
                event.time - event.ingest_time
            ),
        ));
    }
    if event.event_id.is_empty() {
        return Err(Rejection::new(
            RejectKind::MissingField,
            "event_id is empty".to_owned(),
        ));
    }
    if event.provider.is_empty() {
        return Err(Rejection::new(
            RejectKind::MissingField,
            "provider is empty".to_owned(),
        ));
    }
    Ok(())
}
