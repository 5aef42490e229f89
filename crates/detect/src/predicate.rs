//! Compiled filters: vocabulary fields become bitmasks, so matching an event is a few AND
//! instructions, with no string comparison unless the rule filters on free-text fields.

use crate::spec::{FilterSpec, OneOrMany, Scalar};
use authwatch_event::{Activity, AuthEvent, Factor, Outcome, Reason, RiskLevel, Text};

/// A compiled filter. Every listed field must match; within a field, any listed value matches.
#[derive(Debug, Clone)]
pub struct Predicate {
    activity: u64,
    factor: u64,
    outcome: u64,
    reason: u64,
    risk: u64,
    texts: Vec<(TextField, Vec<Text>, bool)>,
    flags: Vec<(FlagField, bool)>,
    numbers: Vec<(NumField, Bound)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextField {
    Provider,
    Tenant,
    App,
    Country,
    /// `src.tags`, the only field with several values: it matches when any tag is listed.
    Tags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagField {
    Internal,
    Anonymous,
    Vpn,
    Tor,
    Hosting,
    Proxy,
    KnownUser,
    Learning,
    NewDevice,
    NewCountry,
    NewAsn,
    UnusualHour,
}

/// A numeric event field, for filters with bounds and for `min`/`max` aggregations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumField {
    /// `context.speed_kmh`
    SpeedKmh,
    /// `context.distance_km`
    DistanceKm,
}

impl NumField {
    /// The field for a rule-language name.
    pub fn parse(name: &str) -> Option<NumField> {
        NUM_FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The event's value, when it has one.
    #[inline]
    pub fn get(self, e: &AuthEvent) -> Option<f64> {
        match self {
            NumField::SpeedKmh => e.context.speed_kmh,
            NumField::DistanceKm => e.context.distance_km,
        }
    }
}

/// An interval; a missing value never matches.
#[derive(Debug, Clone, Copy)]
struct Bound {
    low: f64,
    low_inclusive: bool,
    high: f64,
    high_inclusive: bool,
}

impl Bound {
    fn contains(&self, v: f64) -> bool {
        (if self.low_inclusive {
            v >= self.low
        } else {
            v > self.low
        }) && (if self.high_inclusive {
            v <= self.high
        } else {
            v < self.high
        })
    }
}

const TEXT_FIELDS: &[(&str, TextField)] = &[
    ("provider", TextField::Provider),
    ("tenant", TextField::Tenant),
    ("app", TextField::App),
    ("src.geo.country", TextField::Country),
    ("src.tags", TextField::Tags),
];

const FLAG_FIELDS: &[(&str, FlagField)] = &[
    ("src.internal", FlagField::Internal),
    ("src.anonymizer.anonymous", FlagField::Anonymous),
    ("src.anonymizer.vpn", FlagField::Vpn),
    ("src.anonymizer.tor", FlagField::Tor),
    ("src.anonymizer.hosting", FlagField::Hosting),
    ("src.anonymizer.proxy", FlagField::Proxy),
    ("context.known_user", FlagField::KnownUser),
    ("context.learning", FlagField::Learning),
    ("context.new_device", FlagField::NewDevice),
    ("context.new_country", FlagField::NewCountry),
    ("context.new_asn", FlagField::NewAsn),
    ("context.unusual_hour", FlagField::UnusualHour),
];

const NUM_FIELDS: &[(&str, NumField)] = &[
    ("context.speed_kmh", NumField::SpeedKmh),
    ("context.distance_km", NumField::DistanceKm),
];

/// The fields a filter may name, for error messages and docs.
pub fn filter_fields() -> Vec<&'static str> {
    let mut v = vec!["activity", "factor", "outcome", "reason", "provider_risk"];
    v.extend(TEXT_FIELDS.iter().map(|(n, _)| *n));
    v.extend(FLAG_FIELDS.iter().map(|(n, _)| *n));
    v.extend(NUM_FIELDS.iter().map(|(n, _)| *n));
    v
}

const ANY: u64 = u64::MAX;

/// The listed values of a field, and whether they are negated (`{not: [...]}`).
fn listed(spec: &OneOrMany) -> Result<(Vec<&Scalar>, bool), String> {
    match spec {
        OneOrMany::Ops(ops) => {
            if ops.gt.is_some() || ops.gte.is_some() || ops.lt.is_some() || ops.lte.is_some() {
                return Err("gt/gte/lt/lte apply to numeric fields only".to_owned());
            }
            let not = ops
                .not
                .as_ref()
                .ok_or("an operator map needs not, gt, gte, lt or lte")?;
            Ok((not.iter().collect(), true))
        }
        other => Ok((other.values(), false)),
    }
}

fn mask_of<T: std::str::FromStr<Err = authwatch_event::VocabError> + Copy>(
    spec: &OneOrMany,
    index: fn(T) -> usize,
) -> Result<u64, String> {
    let (values, negated) = listed(spec)?;
    let mut mask = 0u64;
    for v in values {
        let parsed: T = v
            .to_string()
            .parse()
            .map_err(|e: authwatch_event::VocabError| e.to_string())?;
        mask |= 1 << index(parsed);
    }
    Ok(if negated { !mask } else { mask })
}

fn bound_of(spec: &OneOrMany) -> Result<Bound, String> {
    let OneOrMany::Ops(ops) = spec else {
        return Err("a numeric field takes {gt|gte|lt|lte: number}".to_owned());
    };
    if ops.not.is_some() {
        return Err("not applies to listed values, not to numeric fields".to_owned());
    }
    let mut b = Bound {
        low: f64::NEG_INFINITY,
        low_inclusive: true,
        high: f64::INFINITY,
        high_inclusive: true,
    };
    if let Some(v) = ops.gt {
        (b.low, b.low_inclusive) = (v, false);
    }
    if let Some(v) = ops.gte {
        (b.low, b.low_inclusive) = (v, true);
    }
    if let Some(v) = ops.lt {
        (b.high, b.high_inclusive) = (v, false);
    }
    if let Some(v) = ops.lte {
        (b.high, b.high_inclusive) = (v, true);
    }
    Ok(b)
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
            numbers: Vec::new(),
        }
    }

    /// Compiles a filter. The error names the field and the value at fault.
    pub fn compile(spec: &FilterSpec) -> Result<Self, (String, String)> {
        let mut p = Predicate::any();
        for (field, value) in spec {
            let fail = |msg: String| (field.clone(), msg);
            match field.as_str() {
                "activity" => {
                    p.activity = mask_of::<Activity>(value, Activity::index).map_err(fail)?
                }
                "factor" => p.factor = mask_of::<Factor>(value, Factor::index).map_err(fail)?,
                "outcome" => p.outcome = mask_of::<Outcome>(value, Outcome::index).map_err(fail)?,
                "reason" => p.reason = mask_of::<Reason>(value, Reason::index).map_err(fail)?,
                "provider_risk" => {
                    p.risk = mask_of::<RiskLevel>(value, RiskLevel::index).map_err(fail)?
                }
                name => {
                    if let Some((_, which)) = TEXT_FIELDS.iter().find(|(n, _)| *n == name) {
                        let (values, negated) = listed(value).map_err(fail)?;
                        let values = values.iter().map(|v| Text::new(v.to_string())).collect();
                        p.texts.push((*which, values, negated));
                    } else if let Some((_, which)) = FLAG_FIELDS.iter().find(|(n, _)| *n == name) {
                        match value.values().as_slice() {
                            [Scalar::Bool(b)] => p.flags.push((*which, *b)),
                            _ => return Err(fail("expects true or false".to_owned())),
                        }
                    } else if let Some((_, which)) = NUM_FIELDS.iter().find(|(n, _)| *n == name) {
                        p.numbers.push((*which, bound_of(value).map_err(fail)?));
                    } else {
                        return Err(fail(format!(
                            "unknown filter field; expected one of: {}",
                            filter_fields().join(", ")
                        )));
                    }
                }
            }
        }
        Ok(p)
    }

    /// The field on which no event can pass both this filter and `other`, if there is one: a
    /// vocabulary field whose accepted values do not meet (or are none), a flag wanted both
    /// true and false, text lists with nothing in common, or numeric bounds that leave no
    /// value. `self.conflict(&Predicate::any())` finds a filter that can never pass at all.
    ///
    /// Only what the filters say is compared: a pair this passes may still never meet on real
    /// events (a push factor with a password reason), but one it refuses certainly cannot.
    pub fn conflict(&self, other: &Predicate) -> Option<String> {
        let vocab = [
            (
                "activity",
                self.activity & other.activity,
                Activity::ALL.len(),
            ),
            ("factor", self.factor & other.factor, Factor::ALL.len()),
            ("outcome", self.outcome & other.outcome, Outcome::ALL.len()),
            ("reason", self.reason & other.reason, Reason::ALL.len()),
            (
                "provider_risk",
                self.risk & other.risk,
                RiskLevel::ALL.len(),
            ),
        ];
        for (name, both, len) in vocab {
            // A negated list sets the bits past the vocabulary too: only real values count.
            let values = if len >= 64 {
                u64::MAX
            } else {
                (1u64 << len) - 1
            };
            if both & values == 0 {
                return Some(name.to_owned());
            }
        }
        for (field, want) in &self.flags {
            if other
                .flags
                .iter()
                .chain(&self.flags)
                .any(|(f, w)| f == field && w != want)
            {
                return Some(flag_name(*field).to_owned());
            }
        }
        let texts = self.texts.iter().chain(&other.texts);
        for (i, (field, values, negated)) in texts.clone().enumerate() {
            if !negated && values.is_empty() {
                return Some(text_name(*field).to_owned());
            }
            for (other_field, other_values, other_negated) in texts.clone().skip(i + 1) {
                // An event can carry two tags, one from each list.
                if other_field == field
                    && *field != TextField::Tags
                    && !negated
                    && !other_negated
                    && !values.iter().any(|v| other_values.contains(v))
                {
                    return Some(text_name(*field).to_owned());
                }
            }
        }
        let numbers: Vec<&(NumField, Bound)> = self.numbers.iter().chain(&other.numbers).collect();
        for (field, _) in &numbers {
            let mut b = Bound {
                low: f64::NEG_INFINITY,
                low_inclusive: true,
                high: f64::INFINITY,
                high_inclusive: true,
            };
            for (_, x) in numbers.iter().filter(|(f, _)| f == field) {
                if x.low > b.low || (x.low == b.low && !x.low_inclusive) {
                    (b.low, b.low_inclusive) = (x.low, x.low_inclusive);
                }
                if x.high < b.high || (x.high == b.high && !x.high_inclusive) {
                    (b.high, b.high_inclusive) = (x.high, x.high_inclusive);
                }
            }
            let empty = b.low > b.high
                || (b.low == b.high && !(b.low_inclusive && b.high_inclusive))
                || b.low.is_nan()
                || b.high.is_nan();
            if empty {
                return Some(num_name(*field).to_owned());
            }
        }
        None
    }

    /// Whether any event of this activity can pass the filter (used to index rules).
    pub fn accepts_activity(&self, activity: Activity) -> bool {
        bit(self.activity, activity.index())
    }

    /// Whether the filter can accept an event of this activity and outcome.
    pub fn accepts(&self, activity: Activity, outcome: Outcome) -> bool {
        bit(self.activity, activity.index()) && bit(self.outcome, outcome.index())
    }

    /// Whether the event passes the filter.
    #[inline]
    pub fn matches(&self, e: &AuthEvent) -> bool {
        bit(self.activity, e.activity.index())
            && bit(self.factor, e.factor.index())
            && bit(self.outcome, e.outcome.index())
            && bit(self.reason, e.reason.index())
            && bit(self.risk, e.provider_risk.index())
            && self.texts.iter().all(|(field, accepted, negated)| {
                let listed = |value: &str| accepted.iter().any(|a| a.as_str() == value);
                let hit = match field {
                    TextField::Provider => listed(&e.provider),
                    TextField::Tenant => listed(&e.tenant),
                    TextField::App => listed(&e.app),
                    TextField::Country => listed(e.src.geo.as_ref().map_or("", |g| &g.country)),
                    TextField::Tags => e.src.tags.iter().any(|t| listed(t)),
                };
                hit != *negated
            })
            && self.flags.iter().all(|(field, want)| {
                let a = &e.src.anonymizer;
                let c = &e.context;
                let have = match field {
                    FlagField::Internal => e.src.internal,
                    FlagField::Anonymous => a.anonymous,
                    FlagField::Vpn => a.vpn,
                    FlagField::Tor => a.tor,
                    FlagField::Hosting => a.hosting,
                    FlagField::Proxy => a.proxy,
                    FlagField::KnownUser => c.known_user,
                    FlagField::Learning => c.learning,
                    FlagField::NewDevice => c.new_device,
                    FlagField::NewCountry => c.new_country,
                    FlagField::NewAsn => c.new_asn,
                    FlagField::UnusualHour => c.unusual_hour,
                };
                have == *want
            })
            && self
                .numbers
                .iter()
                .all(|(field, bound)| field.get(e).is_some_and(|v| bound.contains(v)))
    }
}

fn flag_name(field: FlagField) -> &'static str {
    FLAG_FIELDS
        .iter()
        .find(|(_, f)| *f == field)
        .map_or("a flag", |(n, _)| n)
}

fn text_name(field: TextField) -> &'static str {
    TEXT_FIELDS
        .iter()
        .find(|(_, f)| *f == field)
        .map_or("a text field", |(n, _)| n)
}

fn num_name(field: NumField) -> &'static str {
    NUM_FIELDS
        .iter()
        .find(|(_, f)| *f == field)
        .map_or("a numeric field", |(n, _)| n)
}

#[inline]
fn bit(mask: u64, index: usize) -> bool {
    mask & (1 << index) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{OneOrMany, OpsSpec};

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
    fn negation_and_numeric_bounds() {
        let p = Predicate::compile(&spec(&[
            (
                "outcome",
                OneOrMany::Ops(OpsSpec {
                    not: Some(vec![text("success")]),
                    ..Default::default()
                }),
            ),
            (
                "context.speed_kmh",
                OneOrMany::Ops(OpsSpec {
                    gt: Some(900.0),
                    ..Default::default()
                }),
            ),
        ]))
        .unwrap();
        let mut e = AuthEvent {
            outcome: Outcome::Failure,
            ..Default::default()
        };
        assert!(!p.matches(&e), "no speed known: no match");
        e.context.speed_kmh = Some(901.0);
        assert!(p.matches(&e));
        e.context.speed_kmh = Some(900.0);
        assert!(!p.matches(&e));
        e.context.speed_kmh = Some(5000.0);
        e.outcome = Outcome::Success;
        assert!(!p.matches(&e));
        let (_, msg) = Predicate::compile(&spec(&[(
            "context.speed_kmh",
            OneOrMany::One(Scalar::Int(5)),
        )]))
        .unwrap_err();
        assert!(msg.contains("numeric"), "{msg}");
    }

    // CIDR tags are the one field with several values: a listed tag among them matches, and
    // `not` passes only events with none of the listed tags (no tag at all included).
    #[test]
    fn tags_match_any_of_the_events_tags() {
        let tagged = |tags: &[&str]| {
            let mut e = AuthEvent::default();
            e.src.tags = tags.iter().map(|t| Text::new(*t)).collect();
            e
        };
        let with = Predicate::compile(&spec(&[(
            "src.tags",
            OneOrMany::Many(vec![text("pentest"), text("scanner")]),
        )]))
        .unwrap();
        let without = Predicate::compile(&spec(&[(
            "src.tags",
            OneOrMany::Ops(OpsSpec {
                not: Some(vec![text("corporate_egress")]),
                ..Default::default()
            }),
        )]))
        .unwrap();
        assert!(with.matches(&tagged(&["corporate_egress", "scanner"])));
        assert!(!with.matches(&tagged(&["corporate_egress"])));
        assert!(!with.matches(&tagged(&[])));
        assert!(without.matches(&tagged(&[])));
        assert!(without.matches(&tagged(&["known_vpn"])));
        assert!(!without.matches(&tagged(&["known_vpn", "corporate_egress"])));
        // Two tag lists with nothing in common can both hold: an event may carry both tags.
        let other =
            Predicate::compile(&spec(&[("src.tags", OneOrMany::One(text("known_vpn")))])).unwrap();
        assert_eq!(with.conflict(&other), None);
        assert!(with.matches(&tagged(&["known_vpn", "pentest"])));
        assert!(other.matches(&tagged(&["known_vpn", "pentest"])));
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
