//! Normalizers: one provider log line in, one [`AuthEvent`] out, or a [`Rejection`] that says why.
//!
//! Every provider has its own module and a [`Normalizer`]; [`Format::Auto`] picks one per line
//! by sniffing distinctive keys, and [`encode`] writes an event back in any format (for the
//! generator and for `authwatch normalize --to`). Parsing uses typed structs that borrow from
//! the line and name only the fields a normalizer reads: no `serde_json::Value` trees on the
//! hot path. [`Mapping`] turns any other JSON log into events from a YAML file, with no code.
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

mod auth0;
mod auto;
mod common;
mod duo;
mod ecs;
mod entra;
mod google;
mod keycloak;
pub mod mapping;
mod native;
mod ocsf;
mod okta;
mod reject;

pub use auth0::Auth0;
pub use auto::Auto;
pub use common::EncodeError;
pub use duo::Duo;
pub use ecs::Ecs;
pub use entra::Entra;
pub use google::Google;
pub use keycloak::Keycloak;
pub use mapping::{Mapping, MappingError};
pub use native::Native;
pub use ocsf::Ocsf;
pub use okta::Okta;
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Detect the format of each line from its keys (see [`Auto`]).
    #[default]
    Auto,
    /// authwatch's own JSON lines (the `AuthEvent` JSON Schema in `schemas/`).
    Native,
    /// Okta System Log (API objects and the Log Streaming / EventBridge envelope).
    Okta,
    /// Microsoft Entra ID sign-in logs (Graph and Azure Monitor export) and directory audits.
    Entra,
    /// Duo Admin API v2 authentication logs.
    Duo,
    /// Auth0 log events (plain and log-stream form).
    Auth0,
    /// Keycloak user and admin events.
    Keycloak,
    /// Google Workspace Admin SDK login activities.
    Google,
    /// OCSF Authentication (class 3002).
    Ocsf,
    /// Elastic Common Schema authentication events.
    Ecs,
}

impl Format {
    /// Every format, for help texts.
    pub const ALL: &'static [Format] = &[
        Format::Auto,
        Format::Native,
        Format::Okta,
        Format::Entra,
        Format::Duo,
        Format::Auth0,
        Format::Keycloak,
        Format::Google,
        Format::Ocsf,
        Format::Ecs,
    ];

    /// Every concrete format (all but [`Format::Auto`]): those that can be encoded.
    pub const CONCRETE: &'static [Format] = &[
        Format::Native,
        Format::Okta,
        Format::Entra,
        Format::Duo,
        Format::Auth0,
        Format::Keycloak,
        Format::Google,
        Format::Ocsf,
        Format::Ecs,
    ];

    /// The format's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Native => "native",
            Format::Okta => "okta",
            Format::Entra => "entra",
            Format::Duo => "duo",
            Format::Auth0 => "auth0",
            Format::Keycloak => "keycloak",
            Format::Google => "google",
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
        }
    }

    /// The normalizer for this format.
    pub fn normalizer(self) -> Box<dyn Normalizer> {
        match self {
            Format::Auto => Box::new(Auto::new()),
            Format::Native => Box::new(Native),
            Format::Okta => Box::new(Okta),
            Format::Entra => Box::new(Entra),
            Format::Duo => Box::new(Duo),
            Format::Auth0 => Box::new(Auth0),
            Format::Keycloak => Box::new(Keycloak),
            Format::Google => Box::new(Google),
            Format::Ocsf => Box::new(Ocsf),
            Format::Ecs => Box::new(Ecs),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `event` as one line of `format` (no trailing newline), appended to `out`.
///
/// Normalizing the line again gives back the event's detection-relevant fields (time, user,
/// activity, factor, outcome, reason, source address, event id, tenant, application, user
/// agent) wherever the format can carry them; docs/PROVIDERS.md lists what each format loses.
/// Enrichment fields (geo, ASN, user context) are never written.
///
/// ```
/// use authwatch_event::AuthEvent;
/// use authwatch_normalize::{Format, Limits, encode};
///
/// let ev = AuthEvent::sample_full();
/// let mut line = Vec::new();
/// encode(Format::Okta, &ev, &mut line)?;
/// let back = Format::Auto.normalizer().normalize(&line, 0, &Limits::default()).unwrap();
/// assert_eq!((back.activity, back.outcome, back.reason), (ev.activity, ev.outcome, ev.reason));
/// # Ok::<(), authwatch_normalize::EncodeError>(())
/// ```
pub fn encode(format: Format, event: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match format {
        Format::Auto => Err(EncodeError::NoEncoder("auto")),
        Format::Native => {
            // An `AuthEvent` always serializes: its map keys are strings and `Vec` writes
            // cannot fail.
            let _ = serde_json::to_writer(out, event);
            Ok(())
        }
        Format::Okta => okta::encode(event, out),
        Format::Entra => entra::encode(event, out),
        Format::Duo => duo::encode(event, out),
        Format::Auth0 => auth0::encode(event, out),
        Format::Keycloak => keycloak::encode(event, out),
        Format::Google => google::encode(event, out),
        Format::Ocsf => ocsf::encode(event, out),
        Format::Ecs => ecs::encode(event, out),
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
                "event time {} ms is {} ms ahead of ingest time (limit {skew} ms, \
                 input.max_future_skew): the source's clock or this host's is wrong",
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
