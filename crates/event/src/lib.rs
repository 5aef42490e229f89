//! The normalized authentication event and the alert of authwatch.
//!
//! Every provider's log line becomes one [`AuthEvent`] (aligned with OCSF Authentication,
//! class 3002); every detection becomes one [`Alert`] (OCSF Detection Finding 2004 in spirit).
//! Both are defined once, here, as Rust types. Their JSON Schemas ([`schema::event_json_schema`],
//! [`schema::alert_json_schema`]) and the Arrow schema used by SQL and Parquet
//! ([`schema::event_arrow_schema`]) are derived from these types, so they cannot drift apart.
//!
//! ```
//! use authwatch_event::{AuthEvent, Activity, Factor, Outcome};
//!
//! let line = r#"{"time":1767603600000,"provider":"okta","event_id":"e1",
//!   "user":{"name":"aiko@example.co.jp"},"activity":"mfa_verify","factor":"push","outcome":"denied",
//!   "reason":"push_denied"}"#;
//! let ev: AuthEvent = serde_json::from_str(line).unwrap();
//! assert_eq!(ev.activity, Activity::MfaVerify);
//! assert_eq!(ev.factor, Factor::Push);
//! assert_eq!(ev.outcome, Outcome::Denied);
//! ```
#![deny(missing_docs)]

mod alert;
mod duration;
mod event;
mod human;
pub mod schema;
mod text;
mod time;
mod vocab;

pub use alert::{
    Alert, Entity, Localized, LocalizedSteps, MetricValue, Observed, Window, entity_key_text,
};
pub use duration::DurationText;
pub use event::{Anonymizer, AuthEvent, Device, Geo, PreviousSignIn, Src, User, UserContext};
pub use human::{Lang, duration_text, time_text};
pub use text::Text;
pub use time::{TimeError, Timestamp, format_rfc3339_ms, parse_rfc3339_ms};
pub use vocab::{
    Activity, CauseClass, DeviceType, Factor, Outcome, Reason, RiskLevel, Severity, VocabError,
};
