//! The YAML rule language as written by detection engineers (see docs/RULES.md).
//!
//! These types only mirror the file; [`crate::compile`] checks them and turns them into the
//! engine's compiled form, so nothing here is looked at per event.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One rule file document.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique rule id (`[a-z0-9_]+`).
    pub id: String,
    /// Rule version; part of the alert id, so bump it when the logic changes.
    #[serde(default = "default_version")]
    pub version: u32,
    /// One-line description for `rules list`.
    #[serde(default)]
    pub description: String,
    /// Detection category (e.g. `mfa_fatigue`, `credential_stuffing`); defaults to the rule id.
    #[serde(default)]
    pub category: Option<String>,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// `user`, `device`, `network`, `system` or `attack`.
    pub cause_class: String,
    /// MITRE ATT&CK technique ids.
    #[serde(default)]
    pub attack_technique: Vec<String>,
    /// Group-by fields: `user`, `ip`, `tenant`, `asn`, `device`.
    pub key: Vec<String>,
    /// Which events the rule looks at.
    #[serde(default)]
    pub filter: FilterSpec,
    /// Event-time window: `10m` (sliding), or `{kind: tumbling, size: 1h}`,
    /// `{kind: sliding, size: 10m}`, `{kind: session, gap: 30m}`.
    pub window: WindowSpec,
    /// Named aggregations over the window.
    pub counters: BTreeMap<String, CounterSpec>,
    /// When the rule fires.
    pub fire_when: ConditionSpec,
    /// Optional sequence: fire only within `within` after an incident of another rule for the
    /// same entity.
    #[serde(default)]
    pub after: Option<AfterSpec>,
    /// Suppress firing while an incident of one of these rules is recent for the same entity
    /// (e.g. do not call a lockout "benign" during a brute-force attack).
    #[serde(default)]
    pub unless: Option<AfterSpec>,
    /// Wait this long in event time (by watermark) before deciding, so that an `unless`
    /// incident appearing meanwhile can still veto the alert (help-desk triage, where minutes
    /// do not matter but a wrong cause does). Default: decide at once.
    #[serde(default)]
    pub settle: Option<String>,
    /// Only the events that match this counter can fire the rule (e.g. the success that ends a
    /// series of failures); default: any filtered event.
    #[serde(default)]
    pub trigger: Option<String>,
    /// One alert per entity per incident: after firing, the key stays quiet until no filtered
    /// event arrived for this long. Defaults to the window.
    #[serde(default)]
    pub suppress: Option<String>,
    /// Counters whose events are listed as evidence (default: all).
    #[serde(default)]
    pub evidence: Option<Vec<String>>,
    /// Summary template, `{placeholder}`s filled at firing.
    pub summary: LocalizedSpec,
    /// Next steps.
    pub steps: LocalizedStepsSpec,
}

fn default_version() -> u32 {
    1
}

/// A window.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum WindowSpec {
    /// A duration: a sliding window of that size.
    Sliding(String),
    /// An explicit kind.
    Kind(WindowKindSpec),
}

/// `{kind, size}` or `{kind: session, gap}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowKindSpec {
    /// `sliding`, `tumbling` or `session`.
    pub kind: String,
    /// Window size (sliding, tumbling).
    #[serde(default)]
    pub size: Option<String>,
    /// Inactivity gap that closes a session.
    #[serde(default)]
    pub gap: Option<String>,
}

/// One aggregation: a count of matching events, or a count of distinct values of a field.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterSpec {
    /// Which of the rule's filtered events count (empty: all).
    #[serde(default, rename = "where")]
    pub filter: FilterSpec,
    /// Count distinct values of this field (`user`, `ip`, `asn`, `device`, `country`, `app`,
    /// `tenant`) instead of events.
    #[serde(default)]
    pub distinct: Option<String>,
    /// The smallest value of a numeric field (`context.speed_kmh`, `context.distance_km`).
    #[serde(default)]
    pub min: Option<String>,
    /// The largest value of a numeric field.
    #[serde(default)]
    pub max: Option<String>,
    /// The value of a key field (`user`, `ip`, …) in the window's first counted event.
    #[serde(default)]
    pub first: Option<String>,
    /// The value of a key field in the window's last counted event.
    #[serde(default)]
    pub last: Option<String>,
}

/// A field → accepted values map; a value can be a scalar, a list (any of), or an operator map
/// (`{not: [..]}`, `{gt: 900}`, `{gte: 1, lt: 5}`).
pub type FilterSpec = BTreeMap<String, OneOrMany>;

/// A scalar, a list of scalars, or operators.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(Scalar),
    /// Any of several values.
    Many(Vec<Scalar>),
    /// Operators.
    Ops(OpsSpec),
}

/// Filter operators on one field.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsSpec {
    /// None of these values.
    #[serde(default)]
    pub not: Option<Vec<Scalar>>,
    /// Greater than.
    #[serde(default)]
    pub gt: Option<f64>,
    /// Greater than or equal.
    #[serde(default)]
    pub gte: Option<f64>,
    /// Less than.
    #[serde(default)]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default)]
    pub lte: Option<f64>,
}

impl OneOrMany {
    /// The listed values (empty for operators).
    pub fn values(&self) -> Vec<&Scalar> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v.iter().collect(),
            OneOrMany::Ops(_) => Vec::new(),
        }
    }
}

/// A YAML scalar.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// true / false.
    Bool(bool),
    /// A number.
    Int(i64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

/// `any:` or `all:` (exactly one) of comparisons such as `unanswered >= 5`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// Fires when any comparison holds.
    #[serde(default)]
    pub any: Option<Vec<String>>,
    /// Fires when every comparison holds.
    #[serde(default)]
    pub all: Option<Vec<String>>,
}

/// A sequence step: the rule fires only after an incident of one of `rules`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterSpec {
    /// Rule ids whose incidents open the sequence.
    pub rules: Vec<String>,
    /// How long after that incident's last event this rule may still fire.
    pub within: String,
    /// Entity fields that must be equal (default: this rule's key).
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// For `unless` only: `decision` (the default) vetoes the firing when the deciding event
    /// matches an incident; `events` also leaves out of every counter each event that does, so
    /// activity already reported by another rule never adds up to this one's thresholds.
    #[serde(default)]
    pub scope: Option<String>,
}

/// English and Japanese text.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalizedSpec {
    /// English.
    pub en: String,
    /// Japanese.
    pub ja: String,
}

/// English and Japanese steps.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalizedStepsSpec {
    /// English.
    pub en: Vec<String>,
    /// Japanese.
    pub ja: Vec<String>,
}

/// JSON Schema (draft 2020-12) of a rule document, for editors and CI of rule repositories.
pub fn rule_json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<RuleSpec>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            serde_json::Value::String("https://authwatch.dev/schemas/rule.schema.json".into()),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_json_schema_matches_checked_in_file() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/rule.schema.json");
        if let Err(e) = authwatch_event::schema::sync_checked_in(&path, &rule_json_schema()) {
            panic!("{e}");
        }
    }
}
