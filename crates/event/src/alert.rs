//! The alert: one detection, self-explanatory for a SOC analyst (`schemas/alert.schema.json`).

use crate::{CauseClass, Device, Severity, Src, Text, Timestamp, UserContext};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One detection, in the spirit of OCSF Detection Finding (class 2004).
///
/// `alert_id` is derived from the rule, its version, the entity and the window start, so that a
/// replay or a restart never produces a second alert for the same incident: consumers deduplicate
/// by `alert_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Deterministic id (UUID v5 of rule, version, entity and window start).
    pub alert_id: String,
    /// The rule that fired.
    pub rule_id: String,
    /// The rule's version.
    pub rule_version: u32,
    /// Detection category (`mfa_fatigue`, `credential_stuffing`, …).
    pub category: String,
    /// Cause class for the help desk: `user`, `device`, `network`, `system` or `attack`.
    pub cause_class: CauseClass,
    /// Severity.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids (e.g. `T1621`); empty for benign triage findings.
    pub attack_technique: Vec<String>,
    /// What the alert is about.
    pub entity: Entity,
    /// The event-time window the detection covers.
    pub window: Window,
    /// The counts and ratios that fired it.
    pub metrics: BTreeMap<String, MetricValue>,
    /// Event ids of the deciding events (bounded; `metrics` holds the full counts).
    pub evidence: Vec<String>,
    /// What enrichment knew of the event that decided the alert: its source (geo, ASN,
    /// anonymizer, tags), device and the user's own history.
    pub observed: Observed,
    /// Time of the first event of the incident.
    pub first_seen: Timestamp,
    /// Time of the last event counted.
    pub last_seen: Timestamp,
    /// One-sentence summary, in English and Japanese.
    pub summary: Localized,
    /// What to do next, in English and Japanese.
    pub steps: LocalizedSteps,
    /// Alerts this one escalates or follows (e.g. the mfa_fatigue alert behind mfa_fatigue_success).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
}

/// The enriched facts of the deciding event, as they appear in the event itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    /// The deciding event's id.
    pub event_id: Text,
    /// Its tenant, whatever the rule's key: `entity.tenant` is set only for rules keyed by
    /// tenant, and a responder needs the tenant of every account it acts on (per-tenant limits,
    /// one incident per account and tenant).
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub tenant: Text,
    /// Its event time.
    pub time: Timestamp,
    /// Its source, with geo, ASN, anonymizer flags and tags.
    #[serde(default)]
    pub src: Src,
    /// Its device, with OS, browser, type and fingerprint.
    #[serde(default)]
    pub device: Device,
    /// The target application.
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub app: Text,
    /// What the user's history said of it (new device or country, travel speed, …).
    #[serde(default)]
    pub context: UserContext,
}

/// The entity an alert is keyed by. Only the fields of the rule's key are set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// Tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Text>,
    /// User (login name, else provider id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Text>,
    /// Source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Source autonomous system number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Device fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_fingerprint: Option<Text>,
    /// Source country (ISO 3166-1 alpha-2), for rules keyed by country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Text>,
    /// Application, for rules keyed by app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Text>,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant={t}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user={u}"));
        }
        if let Some(ip) = &self.ip {
            parts.push(format!("ip={ip}"));
        }
        if let Some(a) = &self.asn {
            parts.push(format!("asn={a}"));
        }
        if let Some(d) = &self.device_fingerprint {
            parts.push(format!("device={d}"));
        }
        if let Some(c) = &self.country {
            parts.push(format!("country={c}"));
        }
        if let Some(a) = &self.app {
            parts.push(format!("app={a}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// An event-time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
}

/// A metric value: a count, a real number (ratio, minimum, maximum) or a value (first, last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum MetricValue {
    /// A count.
    Count(u64),
    /// A ratio or other real number.
    Real(f64),
    /// A field's value (e.g. the first source address of an incident).
    Text(String),
}

/// A text in every supported language.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Localized {
    /// English.
    pub en: String,
    /// Japanese.
    pub ja: String,
}

impl Localized {
    /// The text in `lang` (`en` or `ja`); English for anything else.
    pub fn get(&self, lang: &str) -> &str {
        if lang == "ja" { &self.ja } else { &self.en }
    }
}

/// Ordered steps in every supported language.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalizedSteps {
    /// English.
    pub en: Vec<String>,
    /// Japanese.
    pub ja: Vec<String>,
}

impl LocalizedSteps {
    /// The steps in `lang` (`en` or `ja`); English for anything else.
    pub fn get(&self, lang: &str) -> &[String] {
        if lang == "ja" { &self.ja } else { &self.en }
    }
}

/// The canonical text of an entity key (`user=3:a@x ip=7:1.2.3.4`), the part of an
/// [`Alert::make_id`] that names the entity. Each value is prefixed with its length in bytes:
/// values come from the input (a user name is whatever an attacker typed), and without the
/// length a name such as `x ip=1.2.3.4` could spell another key's text. The compiled rules and
/// the SQL detections both build it here, so one incident found by both has one id.
///
/// ```
/// use authwatch_event::entity_key_text;
/// assert_eq!(entity_key_text([("user", "a@x"), ("tenant", "acme")]), "user=3:a@x tenant=4:acme");
/// ```
pub fn entity_key_text<'a, V: AsRef<str> + 'a>(
    parts: impl IntoIterator<Item = (&'a str, V)>,
) -> String {
    let mut text = String::new();
    for (field, value) in parts {
        let value = value.as_ref();
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(field);
        text.push('=');
        text.push_str(&value.len().to_string());
        text.push(':');
        text.push_str(value);
    }
    text
}

impl Alert {
    /// The deterministic id of an incident: UUID v5 over the rule, its version, the entity key
    /// ([`entity_key_text`]) and its window start. The same incident always gets the same id,
    /// whatever the replay speed, restart or instance that found it.
    pub fn make_id(rule_id: &str, rule_version: u32, entity_key: &str, at: i64) -> String {
        // A fixed namespace for authwatch alert ids (UUID v5 of the DNS name "alerts.authwatch").
        const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
            0x6b, 0x0e, 0x7f, 0x4c, 0x2a, 0x51, 0x5d, 0x8e, 0x9a, 0x43, 0x1c, 0x70, 0x3b, 0xd2,
            0x88, 0x15,
        ]);
        let name = format!("{rule_id}\u{1f}{rule_version}\u{1f}{entity_key}\u{1f}{at}");
        uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_id_is_deterministic_and_distinguishes_inputs() {
        let a = Alert::make_id("mfa_fatigue", 1, "user=a@x", 1000);
        assert_eq!(a, Alert::make_id("mfa_fatigue", 1, "user=a@x", 1000));
        assert_ne!(a, Alert::make_id("mfa_fatigue", 2, "user=a@x", 1000));
        assert_ne!(a, Alert::make_id("mfa_fatigue", 1, "user=b@x", 1000));
        assert_ne!(a, Alert::make_id("mfa_fatigue", 1, "user=a@x", 1001));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn metric_values_serialize_as_plain_numbers() {
        let m: BTreeMap<String, MetricValue> = [
            ("denied".to_string(), MetricValue::Count(7)),
            ("ratio".to_string(), MetricValue::Real(0.5)),
        ]
        .into();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"denied":7,"ratio":0.5}"#
        );
    }
}
