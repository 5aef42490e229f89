//! Compiled filters: vocabulary fields become bitmasks, so matching an event is a few AND
//! instructions, with no string comparison unless the rule filters on free-text fields.

use crate::spec::{FilterSpec, Scalar};
use authwatch_event::{Activity, AuthEvent, Factor, Outcome, Reason, RiskLevel, Text};

/// A compiled filter. Every listed field must match; within a field, any listed value matches.
#[derive(Debug, Clone)]
pub struct Predicate {
    activity: u64,
    factor: u64,
    outcome: u64,
    reason: u64,
    risk: u64,
    texts: Vec<(TextField, Vec<Text>)>,
    flags: Vec<(FlagField, bool)>,
}

#[derive(Debug, Clone, Copy)]
enum TextField {
    Provider,
    Tenant,
    App,
    Country,
}

#[derive(Debug, Clone, Copy)]
enum FlagField {
    Internal,
    Anonymous,
    Vpn,
    Tor,
    Hosting,
    Proxy,
}

/// The fields a filter may name, for error messages and docs.
pub const FILTER_FIELDS: &[&str] = &[
    "activity",
    "factor",
    "outcome",
    "reason",
    "provider_risk",
    "provider",
    "tenant",
    "app",
    "src.geo.country",
    "src.internal",
    "src.anonymizer.anonymous",
    "src.anonymizer.vpn",
    "src.anonymizer.tor",
    "src.anonymizer.hosting",
    "src.anonymizer.proxy",
];

const ANY: u64 = u64::MAX;

fn mask_of<T: std::str::FromStr<Err = authwatch_event::VocabError> + Copy>(
    values: &[&Scalar],
    index: fn(T) -> usize,
) -> Result<u64, String> {
    let mut mask = 0u64;
    for v in values {
        let parsed: T = v
            .to_string()
            .parse()
            .map_err(|e: authwatch_event::VocabError| e.to_string())?;
        mask |= 1 << index(parsed);
    }
    Ok(mask)
}

impl Predicate {
    /// A filter that accepts every event.
    pub fn any() -> Self {
        Predicate {
            activity: ANY,
            factor: ANY,
            outcome: ANY,
            reason: ANY,
            risk: ANY,
            texts: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// Compiles a filter. The error names the field and the value at fault.
    pub fn compile(spec: &FilterSpec) -> Result<Self, (String, String)> {
        let mut p = Predicate::any();
        for (field, values) in spec {
            let values = values.values();
            let fail = |msg: String| (field.clone(), msg);
            match field.as_str() {
                "activity" => {
                    p.activity = mask_of::<Activity>(&values, Activity::index).map_err(fail)?
                }
                "factor" => p.factor = mask_of::<Factor>(&values, Factor::index).map_err(fail)?,
                "outcome" => {
                    p.outcome = mask_of::<Outcome>(&values, Outcome::index).map_err(fail)?
                }
                "reason" => p.reason = mask_of::<Reason>(&values, Reason::index).map_err(fail)?,
                "provider_risk" => {
                    p.risk = mask_of::<RiskLevel>(&values, RiskLevel::index).map_err(fail)?
                }
                "provider" | "tenant" | "app" | "src.geo.country" => {
                    let which = match field.as_str() {
                        "provider" => TextField::Provider,
                        "tenant" => TextField::Tenant,
                        "app" => TextField::App,
                        _ => TextField::Country,
                    };
                    p.texts.push((
                        which,
                        values.iter().map(|v| Text::new(v.to_string())).collect(),
                    ));
                }
                "src.internal"
                | "src.anonymizer.anonymous"
                | "src.anonymizer.vpn"
                | "src.anonymizer.tor"
                | "src.anonymizer.hosting"
                | "src.anonymizer.proxy" => {
                    let which = match field.as_str() {
                        "src.internal" => FlagField::Internal,
                        "src.anonymizer.anonymous" => FlagField::Anonymous,
                        "src.anonymizer.vpn" => FlagField::Vpn,
                        "src.anonymizer.tor" => FlagField::Tor,
                        "src.anonymizer.hosting" => FlagField::Hosting,
                        _ => FlagField::Proxy,
                    };
                    match values.as_slice() {
                        [Scalar::Bool(b)] => p.flags.push((which, *b)),
                        _ => return Err(fail("expects true or false".to_owned())),
                    }
                }
                _ => {
                    return Err(fail(format!(
                        "unknown filter field; expected one of: {}",
                        FILTER_FIELDS.join(", ")
                    )));
                }
            }
        }
        Ok(p)
    }

    /// Whether the event passes the filter.
    #[inline]
    pub fn matches(&self, e: &AuthEvent) -> bool {
        bit(self.activity, e.activity.index())
            && bit(self.factor, e.factor.index())
            && bit(self.outcome, e.outcome.index())
            && bit(self.reason, e.reason.index())
            && bit(self.risk, e.provider_risk.index())
            && self.texts.iter().all(|(field, accepted)| {
                let value: &str = match field {
                    TextField::Provider => &e.provider,
                    TextField::Tenant => &e.tenant,
                    TextField::App => &e.app,
                    TextField::Country => e.src.geo.as_ref().map_or("", |g| &g.country),
                };
                accepted.iter().any(|a| a.as_str() == value)
            })
            && self.flags.iter().all(|(field, want)| {
                let a = &e.src.anonymizer;
                let have = match field {
                    FlagField::Internal => e.src.internal,
                    FlagField::Anonymous => a.anonymous,
                    FlagField::Vpn => a.vpn,
                    FlagField::Tor => a.tor,
                    FlagField::Hosting => a.hosting,
                    FlagField::Proxy => a.proxy,
                };
                have == *want
            })
    }
}

#[inline]
fn bit(mask: u64, index: usize) -> bool {
    mask & (1 << index) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::OneOrMany;

    fn spec(pairs: &[(&str, OneOrMany)]) -> FilterSpec {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
    fn text(s: &str) -> Scalar {
        Scalar::Text(s.to_owned())
    }

    #[test]
    fn vocabulary_masks_match_any_listed_value() {
        let p = Predicate::compile(&spec(&[
            ("factor", OneOrMany::One(text("push"))),
            (
                "outcome",
                OneOrMany::Many(vec![text("denied"), text("timeout")]),
            ),
        ]))
        .unwrap();
        let mut e = AuthEvent {
            factor: Factor::Push,
            outcome: Outcome::Denied,
            ..Default::default()
        };
        assert!(p.matches(&e));
        e.outcome = Outcome::Timeout;
        assert!(p.matches(&e));
        e.outcome = Outcome::Success;
        assert!(!p.matches(&e));
        e.outcome = Outcome::Denied;
        e.factor = Factor::Totp;
        assert!(!p.matches(&e));
    }

    #[test]
    fn unknown_field_and_value_are_reported() {
        let (field, msg) =
            Predicate::compile(&spec(&[("colour", OneOrMany::One(text("red")))])).unwrap_err();
        assert_eq!(field, "colour");
        assert!(msg.contains("unknown filter field"));
        let (field, msg) =
            Predicate::compile(&spec(&[("outcome", OneOrMany::One(text("deny")))])).unwrap_err();
        assert_eq!(field, "outcome");
        assert!(msg.contains("\"deny\" is not a valid outcome"), "{msg}");
    }

    #[test]
    fn flags_and_texts() {
        let p = Predicate::compile(&spec(&[
            ("src.anonymizer.tor", OneOrMany::One(Scalar::Bool(true))),
            ("tenant", OneOrMany::One(text("acme"))),
        ]))
        .unwrap();
        let mut e = AuthEvent {
            tenant: "acme".into(),
            ..Default::default()
        };
        assert!(!p.matches(&e));
        e.src.anonymizer.tor = true;
        assert!(p.matches(&e));
    }
}
