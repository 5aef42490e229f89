//! Sigma import: Sigma detection rules and Sigma correlation rules written over authwatch's
//! normalized event become native rules (see `docs/SIGMA.md` for the field mapping and for what
//! is rejected).
//!
//! A native filter is a conjunction of per-field any-of lists, each optionally negated; it has no
//! `or`. A Sigma condition is therefore brought to disjunctive normal form and each disjunct
//! becomes one native rule. Whatever the native language cannot express exactly is rejected with
//! the file, line and column: a condition is never dropped. Every generated rule is loaded by the
//! native compiler before it is returned, so a bad import is caught before anything is written.
//!
//! ```
//! use authwatch_detect::sigma;
//! use std::path::Path;
//!
//! let text = "title: Fraud report\nname: fraud_report\ndetection:\n  selection:\n    reason: user_reported_fraud\n  condition: selection\nlevel: high\ntags: [attack.t1621]\n";
//! let imported = sigma::import_text(Path::new("fraud.yml"), text).unwrap();
//! assert_eq!(imported.rules[0].id, "fraud_report");
//! assert_eq!(imported.rules[0].compiled.attack_technique, ["T1621"]);
//! ```

use crate::RulePack;
use crate::compile::{CompiledRule, compile_text, parse_duration_ms};
use crate::error::RuleError;
use crate::key::KeyField;
use authwatch_event::{Activity, Factor, Outcome, Reason, RiskLevel};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most native rules one Sigma condition may expand to; beyond that the DNF is almost certainly
/// not what the author meant to deploy.
const MAX_ALTERNATIVES: usize = 32;

/// Window and quiet time of an imported single-event detection: one alert per user until the
/// matching events stop for this long.
const DETECTION_WINDOW: &str = "1h";

/// A Sigma file that cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum SigmaError {
    /// The Sigma text is invalid, or uses something the native language cannot express.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The Sigma file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A generated native rule does not load (a value the native compiler rejects).
    #[error("{}: native rule {id} generated from this file does not load: {source}", path.display())]
    Generated {
        /// The Sigma file the rule came from.
        path: PathBuf,
        /// The generated rule id.
        id: String,
        /// The native compiler's error.
        #[source]
        source: RuleError,
    },
    /// The generated rules do not form a valid pack (duplicate ids, dangling `after`).
    #[error("the imported rules do not form a valid pack: {0}")]
    Pack(#[source] RuleError),
}

/// One Sigma document: a detection rule (`detection`) or a correlation rule (`correlation`).
/// Attributes authwatch does not use (status, author, references, …) are accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct SigmaRule {
    /// Title; becomes the native `description` and is quoted in summaries.
    #[serde(default)]
    pub title: String,
    /// Sigma id (usually a UUID); correlations may reference a rule by it.
    #[serde(default)]
    pub id: Option<String>,
    /// Sigma name; correlations reference rules by it, and it gives the native rule id.
    #[serde(default)]
    pub name: Option<String>,
    /// Description; becomes the first English step.
    #[serde(default)]
    pub description: Option<String>,
    /// `informational`, `low`, `medium`, `high` or `critical`.
    #[serde(default)]
    pub level: Option<String>,
    /// Tags: `attack.tNNNN[.NNN]` give ATT&CK ids, `authwatch.cause_class.<class>` the cause.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Known false positives; quoted in the steps.
    #[serde(default)]
    pub falsepositives: Vec<String>,
    /// Log source; informative only (every rule reads authwatch's normalized event).
    #[serde(default)]
    pub logsource: Option<Value>,
    /// Searches and condition of a detection rule.
    #[serde(default)]
    pub detection: Option<SigmaDetection>,
    /// A correlation over other rules.
    #[serde(default)]
    pub correlation: Option<SigmaCorrelation>,
}

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrList {
    /// One string.
    One(String),
    /// Several strings.
    List(Vec<String>),
}

impl OneOrList {
    /// The strings.
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrList::One(s) => vec![s.as_str()],
            OneOrList::List(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A Sigma `detection` block.
#[derive(Debug, Clone, Deserialize)]
pub struct SigmaDetection {
    /// The condition; a list means any of them.
    pub condition: OneOrList,
    /// Legacy aggregation time frame (rejected: use a correlation rule).
    #[serde(default)]
    pub timeframe: Option<String>,
    /// Named searches: a map (all fields match) or a list of maps (any map matches).
    #[serde(flatten)]
    pub searches: BTreeMap<String, Value>,
}

/// A Sigma `correlation` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaCorrelation {
    /// `event_count`, `value_count`, `temporal` or `temporal_ordered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Referenced rules, by `name` or `id`.
    pub rules: OneOrList,
    /// Group-by fields; they become the native key.
    #[serde(default, rename = "group-by")]
    pub group_by: Vec<String>,
    /// Time span, e.g. `30m`; becomes the native window.
    pub timespan: String,
    /// Count condition (`event_count`, `value_count`).
    #[serde(default)]
    pub condition: Option<SigmaCountCondition>,
    /// Whether the referenced rules also raise alerts of their own (Sigma default: false).
    #[serde(default)]
    pub generate: bool,
    /// Group-by aliases: alias → (rule → field).
    #[serde(default)]
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
}

/// A correlation's count condition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaCountCondition {
    /// Greater than.
    #[serde(default)]
    pub gt: Option<u64>,
    /// Greater than or equal.
    #[serde(default)]
    pub gte: Option<u64>,
    /// Less than.
    #[serde(default)]
    pub lt: Option<u64>,
    /// Less than or equal.
    #[serde(default)]
    pub lte: Option<u64>,
    /// Equal.
    #[serde(default)]
    pub eq: Option<u64>,
    /// Not equal (rejected).
    #[serde(default)]
    pub neq: Option<u64>,
    /// The field whose distinct values `value_count` counts.
    #[serde(default)]
    pub field: Option<String>,
}

/// The outcome of an import.
#[derive(Debug, Clone)]
pub struct SigmaImport {
    /// The native rules, in Sigma document order.
    pub rules: Vec<ImportedRule>,
    /// Things the user should know (rules not emitted on their own, ordering assumptions).
    pub notes: Vec<String>,
}

/// One generated native rule.
#[derive(Debug, Clone)]
pub struct ImportedRule {
    /// Native rule id.
    pub id: String,
    /// The Sigma file it came from.
    pub source: PathBuf,
    /// The native rule as YAML (one document, with a provenance comment).
    pub yaml: String,
    /// The rule as the native compiler loaded it.
    pub compiled: CompiledRule,
}

impl SigmaImport {
    /// Every rule as one multi-document YAML text.
    pub fn to_yaml(&self) -> String {
        self.rules
            .iter()
            .map(|r| r.yaml.as_str())
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// The compiled rules, e.g. for [`RulePack::from_rules`].
    pub fn compiled(&self) -> Vec<CompiledRule> {
        self.rules.iter().map(|r| r.compiled.clone()).collect()
    }
}

/// Imports the Sigma documents of one file.
pub fn import_text(path: &Path, text: &str) -> Result<SigmaImport, SigmaError> {
    import(&[(path.to_owned(), text.to_owned())])
}

/// Imports several Sigma files (path, text) together, so that correlations may reference rules
/// of any of them.
pub fn import(sources: &[(PathBuf, String)]) -> Result<SigmaImport, SigmaError> {
    let mut docs = Vec::new();
    for (file, (path, text)) in sources.iter().enumerate() {
        parse_file(file, path, text, &mut docs)?;
    }
    Importer {
        sources,
        docs,
        out: Vec::new(),
        notes: Vec::new(),
    }
    .run()
}

// ---------------------------------------------------------------------------------------------
// Field mapping: the one table from Sigma field names to native filter fields and key fields.

/// How a Sigma field's values are read.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A closed vocabulary: values are case-insensitive and wildcards/`contains`/`startswith`/
    /// `endswith` are expanded exactly over the vocabulary.
    Vocab,
    /// A foreign vocabulary (ECS, OCSF) mapped to sets of native values; the text lists the
    /// accepted values.
    Alias(fn(&str) -> Option<&'static [&'static str]>, &'static str),
    /// Free text compared whole, exactly.
    Text,
    /// `true` / `false`.
    Flag,
    /// A number compared with `gt`/`gte`/`lt`/`lte` or equality.
    Num,
}

/// Where a Sigma field lands: a native filter field (with its kind), a key field, or both.
#[derive(Debug, Clone, Copy)]
struct FieldMap {
    filter: Option<(&'static str, Kind)>,
    key: Option<KeyField>,
}

/// The field mapping (documented in `docs/SIGMA.md`; keep both in step).
fn map_field(name: &str) -> Option<FieldMap> {
    use Kind::{Alias, Flag, Num, Text, Vocab};
    let (filter, key): (Option<(&'static str, Kind)>, Option<KeyField>) = match name {
        "activity" => (Some(("activity", Vocab)), None),
        "activity_id" => (
            Some(("activity", Alias(ocsf_activity_id, "1, 2, 99"))),
            None,
        ),
        "factor" => (Some(("factor", Vocab)), None),
        "outcome" => (Some(("outcome", Vocab)), None),
        "event.outcome" => (
            Some(("outcome", Alias(ecs_outcome, "success, failure, unknown"))),
            None,
        ),
        "status" => (
            Some(("outcome", Alias(ocsf_status, "Success, Failure, Other"))),
            None,
        ),
        "status_id" => (Some(("outcome", Alias(ocsf_status_id, "1, 2, 99"))), None),
        "reason" => (Some(("reason", Vocab)), None),
        "provider_risk" => (Some(("provider_risk", Vocab)), None),
        "provider" => (Some(("provider", Text)), None),
        "tenant" => (Some(("tenant", Text)), Some(KeyField::Tenant)),
        "app" => (Some(("app", Text)), Some(KeyField::App)),
        "src.geo.country" | "source.geo.country_iso_code" | "src_endpoint.location.country" => {
            (Some(("src.geo.country", Text)), Some(KeyField::Country))
        }
        "src.internal" => (Some(("src.internal", Flag)), None),
        "src.anonymizer.anonymous" => (Some(("src.anonymizer.anonymous", Flag)), None),
        "src.anonymizer.vpn" => (Some(("src.anonymizer.vpn", Flag)), None),
        "src.anonymizer.tor" => (Some(("src.anonymizer.tor", Flag)), None),
        "src.anonymizer.hosting" => (Some(("src.anonymizer.hosting", Flag)), None),
        "src.anonymizer.proxy" => (Some(("src.anonymizer.proxy", Flag)), None),
        "context.known_user" => (Some(("context.known_user", Flag)), None),
        "context.learning" => (Some(("context.learning", Flag)), None),
        "context.new_device" => (Some(("context.new_device", Flag)), None),
        "context.new_country" => (Some(("context.new_country", Flag)), None),
        "context.new_asn" => (Some(("context.new_asn", Flag)), None),
        "context.unusual_hour" => (Some(("context.unusual_hour", Flag)), None),
        "context.speed_kmh" => (Some(("context.speed_kmh", Num)), None),
        "context.distance_km" => (Some(("context.distance_km", Num)), None),
        "user" | "user.name" => (None, Some(KeyField::User)),
        "src.ip" | "source.ip" | "src_endpoint.ip" => (None, Some(KeyField::Ip)),
        "src.asn" | "source.as.number" => (None, Some(KeyField::Asn)),
        "device.fingerprint" => (None, Some(KeyField::Device)),
        _ => return None,
    };
    Some(FieldMap { filter, key })
}

/// The failure outcomes, as authwatch's ECS and OCSF encoders fold them into one value.
const FAILURES: &[&str] = &["failure", "denied", "timeout", "blocked"];

// These alias tables mirror authwatch's own ECS/OCSF encoders (crates/normalize), so a rule
// written against authwatch's ECS or OCSF output means the same over the native event.
fn ecs_outcome(v: &str) -> Option<&'static [&'static str]> {
    match v {
        "success" => Some(&["success"]),
        "failure" => Some(FAILURES),
        "unknown" => Some(&["challenge"]),
        _ => None,
    }
}

fn ocsf_status(v: &str) -> Option<&'static [&'static str]> {
    match v {
        "success" => Some(&["success"]),
        "failure" => Some(FAILURES),
        "other" => Some(&["challenge"]),
        _ => None,
    }
}

fn ocsf_status_id(v: &str) -> Option<&'static [&'static str]> {
    match v {
        "1" => ocsf_status("success"),
        "2" => ocsf_status("failure"),
        "99" => ocsf_status("other"),
        _ => None,
    }
}

fn ocsf_activity_id(v: &str) -> Option<&'static [&'static str]> {
    match v {
        "1" => Some(&["logon", "mfa_verify", "mfa_challenge"]),
        "2" => Some(&["logoff"]),
        "99" => Some(&[
            "other",
            "account_lock",
            "account_unlock",
            "password_reset",
            "mfa_enroll",
            "mfa_reset",
            "policy_evaluation",
            "account_disable",
        ]),
        _ => None,
    }
}

/// The closed vocabulary of a native filter field, if it has one.
fn universe(native: &str) -> Option<Vec<&'static str>> {
    Some(match native {
        "activity" => Activity::ALL.iter().map(|v| v.as_str()).collect(),
        "factor" => Factor::ALL.iter().map(|v| v.as_str()).collect(),
        "outcome" => Outcome::ALL.iter().map(|v| v.as_str()).collect(),
        "reason" => Reason::ALL.iter().map(|v| v.as_str()).collect(),
        "provider_risk" => RiskLevel::ALL.iter().map(|v| v.as_str()).collect(),
        _ => return None,
    })
}

/// The value a vocabulary field takes when the provider gave none, if the vocabulary has one.
/// The event's JSON omits the field then, so it is Sigma's "absent" (`null`, `''`), and
/// wildcards, which match present values only, never reach it.
fn empty_value(native: &str) -> Option<&'static str> {
    match native {
        "factor" => Some(Factor::None.as_str()),
        "reason" => Some(Reason::None.as_str()),
        "provider_risk" => Some(RiskLevel::None.as_str()),
        _ => None,
    }
}

fn key_field_of(name: &str) -> Result<KeyField, String> {
    map_field(name).and_then(|m| m.key).ok_or_else(|| {
        format!(
            "cannot group or count by {name:?}; authwatch keys are user.name, src.ip, src.asn, \
             device.fingerprint, src.geo.country, app and tenant (see docs/SIGMA.md)"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Boolean structure: searches and conditions as expressions over per-field literals.

#[derive(Debug, Clone, Copy, PartialEq)]
enum NumOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Flag(bool),
    Num(NumOp, f64),
}

#[derive(Debug, Clone)]
struct Lit {
    field: &'static str,
    test: Test,
    /// The Sigma key it came from (`app|contains`), to point errors at it.
    origin: String,
}

#[derive(Debug, Clone)]
enum Expr {
    Const(bool),
    Lit(Lit),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

/// An error before positions are known: the text to look for, and the message.
type Located = (String, String);

fn located(needle: &str, message: impl Into<String>) -> Located {
    (needle.to_owned(), message.into())
}

/// A numeric bound: the value and whether it is inclusive.
type Bound = (f64, bool);

/// A native constraint on one field, after every literal on it was combined.
#[derive(Debug, Clone, PartialEq)]
enum Constraint {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Flag(bool),
    Range {
        low: Option<(f64, bool)>,
        high: Option<(f64, bool)>,
    },
}

/// A native filter: every field's constraint must hold.
type Conj = BTreeMap<&'static str, Constraint>;

fn selection_expr(name: &str, value: &Value) -> Result<Expr, Located> {
    match value {
        Value::Mapping(m) => mapping_expr(name, m),
        Value::Sequence(items) if !items.is_empty() && items.iter().all(Value::is_mapping) => {
            let mut alternatives = Vec::new();
            for item in items {
                if let Value::Mapping(m) = item {
                    alternatives.push(mapping_expr(name, m)?);
                }
            }
            Ok(Expr::Or(alternatives))
        }
        _ => Err(located(
            &format!("{name}:"),
            format!(
                "search {name}: keyword searches (values without a field) are not supported; \
                 name the field"
            ),
        )),
    }
}

fn mapping_expr(search: &str, m: &Mapping) -> Result<Expr, Located> {
    if m.is_empty() {
        return Err(located(
            &format!("{search}:"),
            format!("search {search} is empty"),
        ));
    }
    let mut all = Vec::new();
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            return Err(located(
                &format!("{search}:"),
                format!("search {search}: field names must be strings"),
            ));
        };
        all.push(field_expr(search, key, v)?);
    }
    Ok(Expr::And(all))
}

/// The text of a scalar value; `None` for null, maps and lists.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn field_expr(search: &str, key: &str, value: &Value) -> Result<Expr, Located> {
    let fail = |m: String| located(key, format!("search {search}, field {key}: {m}"));
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    let (mut all, mut pattern, mut num) = (false, None, None);
    for modifier in parts {
        match modifier {
            "all" => all = true,
            "contains" | "startswith" | "endswith" if pattern.is_none() => {
                pattern = Some(modifier);
            }
            "gt" => num = Some(NumOp::Gt),
            "gte" => num = Some(NumOp::Gte),
            "lt" => num = Some(NumOp::Lt),
            "lte" => num = Some(NumOp::Lte),
            other => {
                return Err(fail(format!(
                    "modifier |{other} is not supported (supported: |all, |gt, |gte, |lt, |lte, \
                     and |contains, |startswith, |endswith on vocabulary fields only)"
                )));
            }
        }
    }
    let Some(map) = map_field(field) else {
        return Err(fail(format!(
            "unknown field {field:?}; see docs/SIGMA.md for the fields authwatch maps"
        )));
    };
    let Some((native, kind)) = map.filter else {
        let key = map.key.map_or("?", KeyField::name);
        return Err(fail(format!(
            "{field} cannot be matched in a detection: native filters do not test it (it is the \
             key `{key}`); use it in a correlation's group-by or value_count field"
        )));
    };
    let values: Vec<&Value> = match value {
        Value::Sequence(s) if s.is_empty() => return Err(fail("empty value list".to_owned())),
        Value::Sequence(s) => s.iter().collect(),
        v => vec![v],
    };
    // `None` is Sigma's `null`: the field is absent.
    let texts = values
        .iter()
        .map(|v| match v {
            Value::Null => Ok(None),
            v => scalar_text(v)
                .map(Some)
                .ok_or_else(|| fail("values must be strings, numbers, booleans or null".into())),
        })
        .collect::<Result<Vec<Option<String>>, _>>()?;
    // Only fields whose missing value authwatch stores as a value of its own (`none`, empty
    // text) can say "absent"; flags read absent as false and numbers never match when absent.
    if texts.iter().any(Option::is_none) {
        if let Some(p) = pattern {
            return Err(fail(format!("null cannot take |{p}")));
        }
        let absent_has_a_value = match kind {
            Kind::Vocab => empty_value(native).is_some(),
            Kind::Text => true,
            _ => false,
        };
        if !absent_has_a_value {
            return Err(fail(match kind {
                Kind::Vocab => format!("{field} always has a value: null never matches"),
                _ => format!(
                    "null is not supported on {field}: authwatch does not tell a missing value \
                     from a present one there"
                ),
            }));
        }
    }
    if num.is_some() && !matches!(kind, Kind::Num) {
        return Err(fail(format!(
            "|gt, |gte, |lt and |lte apply to numeric fields only, not to {field}"
        )));
    }
    if let Some(p) = pattern
        && !matches!(kind, Kind::Vocab)
    {
        return Err(fail(format!(
            "|{p} is not supported on {field}: native filters compare whole values (only \
             vocabulary fields such as activity or reason accept |{p}, expanded over the \
             vocabulary)"
        )));
    }
    let lit = |test| {
        Expr::Lit(Lit {
            field: native,
            test,
            origin: key.to_owned(),
        })
    };
    let mut tests: Vec<Expr> = Vec::new();
    match kind {
        Kind::Vocab => {
            let words = universe(native).unwrap_or_default();
            let empty = empty_value(native);
            for t in &texts {
                let t = match t.as_deref() {
                    Some(t) if pattern.is_some() || !t.is_empty() => t,
                    // Sigma's null and '' both mean "no value": the vocabulary's `none` (null
                    // with a modifier was rejected above).
                    _ => {
                        let Some(empty) = empty else {
                            return Err(fail(format!(
                                "{field} always has a value: an empty value never matches"
                            )));
                        };
                        tests.push(lit(Test::In(BTreeSet::from([empty.to_owned()]))));
                        continue;
                    }
                };
                let lower = t.to_lowercase();
                let pat = match pattern {
                    Some("contains") => format!("*{lower}*"),
                    Some("startswith") => format!("{lower}*"),
                    Some("endswith") => format!("*{lower}"),
                    _ => lower,
                };
                let glob = Glob::parse(&pat);
                // In Sigma a wildcard or a contains/startswith/endswith matches a present,
                // non-empty value only; `none` is how authwatch writes an absent one, so a
                // pattern never reaches it (`reason: '*'` means "has a reason"). A literal
                // `none` still names it.
                let wildcard = pattern.is_some() || glob.literal().is_none();
                let set: BTreeSet<String> = words
                    .iter()
                    .filter(|w| glob.matches(w) && !(wildcard && Some(**w) == empty))
                    .map(|w| (*w).to_owned())
                    .collect();
                if set.is_empty() {
                    let hint = match empty {
                        Some(e) if wildcard && glob.matches(e) => format!(
                            " ({e}, the empty value, is left out of patterns: write \
                             {field}: null to match events without a {native})"
                        ),
                        _ => String::new(),
                    };
                    return Err(fail(format!(
                        "{t:?} matches no {native} value{hint}; expected one of: {}",
                        words.join(", ")
                    )));
                }
                tests.push(lit(Test::In(set)));
            }
        }
        Kind::Alias(map_value, accepted) => {
            for t in texts.iter().flatten() {
                let set = map_value(&t.to_lowercase()).ok_or_else(|| {
                    fail(format!(
                        "{t:?} is not a value authwatch maps; expected one of: {accepted}"
                    ))
                })?;
                tests.push(lit(Test::In(set.iter().map(|s| (*s).to_owned()).collect())));
            }
        }
        Kind::Text => {
            for t in &texts {
                // authwatch stores a missing text value as empty text.
                let Some(t) = t else {
                    tests.push(lit(Test::In(BTreeSet::from([String::new()]))));
                    continue;
                };
                let glob = Glob::parse(t);
                let Some(literal) = glob.literal() else {
                    return Err(fail(format!(
                        "wildcards in {t:?} are not supported on {field}: native filters compare \
                         whole values (escape a literal * or ? as \\* or \\?)"
                    )));
                };
                tests.push(lit(Test::In(BTreeSet::from([literal]))));
            }
        }
        Kind::Flag => {
            for t in texts.iter().flatten() {
                let b = match t.to_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(fail(format!("{field} takes true or false, not {t:?}"))),
                };
                tests.push(lit(Test::Flag(b)));
            }
        }
        Kind::Num => {
            for t in texts.iter().flatten() {
                let v: f64 = t
                    .parse()
                    .map_err(|_| fail(format!("{field} takes numbers, not {t:?}")))?;
                tests.push(match num {
                    Some(op) => lit(Test::Num(op, v)),
                    None => Expr::And(vec![
                        lit(Test::Num(NumOp::Gte, v)),
                        lit(Test::Num(NumOp::Lte, v)),
                    ]),
                });
            }
        }
    }
    if all {
        return Ok(Expr::And(tests));
    }
    // A value list is one any-of literal, not one rule per value.
    let mut union: Option<BTreeSet<String>> = None;
    let mut flags = BTreeSet::new();
    let mut others = Vec::new();
    for t in tests {
        match t {
            Expr::Lit(Lit {
                test: Test::In(s), ..
            }) => union.get_or_insert_with(BTreeSet::new).extend(s),
            Expr::Lit(Lit {
                test: Test::Flag(b),
                ..
            }) => {
                flags.insert(b);
            }
            other => others.push(other),
        }
    }
    if let Some(set) = union {
        others.push(lit(Test::In(set)));
    }
    match flags.len() {
        1 => others.extend(flags.into_iter().map(|b| lit(Test::Flag(b)))),
        2 => others.push(Expr::Const(true)),
        _ => {}
    }
    Ok(if others.len() == 1 {
        others.remove(0)
    } else {
        Expr::Or(others)
    })
}

/// A Sigma wildcard pattern: `*`, `?`, and `\*`, `\?`, `\\` for the literal characters.
struct Glob(Vec<GlobPart>);

#[derive(Clone, Copy)]
enum GlobPart {
    Any,
    One,
    Char(char),
}

impl Glob {
    fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '*' => GlobPart::Any,
                '?' => GlobPart::One,
                '\\' => match chars.peek() {
                    Some(&next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        GlobPart::Char(next)
                    }
                    _ => GlobPart::Char('\\'),
                },
                c => GlobPart::Char(c),
            });
        }
        Glob(parts)
    }

    /// The text, when the pattern has no wildcard.
    fn literal(&self) -> Option<String> {
        self.0
            .iter()
            .map(|p| match p {
                GlobPart::Char(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn matches(&self, text: &str) -> bool {
        fn go(p: &[GlobPart], t: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((GlobPart::Any, rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
                Some((GlobPart::One, rest)) => !t.is_empty() && go(rest, &t[1..]),
                Some((GlobPart::Char(c), rest)) => t.first() == Some(c) && go(rest, &t[1..]),
            }
        }
        let chars: Vec<char> = text.chars().collect();
        go(&self.0, &chars)
    }
}

/// Parses a condition string, resolving search names and `1 of`/`all of` patterns.
fn parse_condition(text: &str, searches: &BTreeMap<String, Expr>) -> Result<Expr, String> {
    if text.contains('|') {
        return Err(format!(
            "condition {text:?}: aggregation expressions (`| count() …`) are not supported; \
             write a Sigma correlation rule (event_count, value_count, temporal) instead"
        ));
    }
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c == '(' || c == ')' {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut p = CondParser {
        tokens,
        pos: 0,
        searches,
        text,
    };
    let e = p.or()?;
    match p.tokens.get(p.pos) {
        None => Ok(e),
        Some(t) => Err(format!("condition {text:?}: unexpected {t:?}")),
    }
}

struct CondParser<'a> {
    tokens: Vec<String>,
    pos: usize,
    searches: &'a BTreeMap<String, Expr>,
    text: &'a str,
}

impl CondParser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, String> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| format!("condition {:?} ends too early", self.text))?;
        self.pos += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.and()?];
        while self.peek() == Some("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.unary()?];
        while self.peek() == Some("and") {
            self.pos += 1;
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::And(v)
        })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let text = self.text;
        let t = self.next()?;
        match t.as_str() {
            "(" => {
                let e = self.or()?;
                if self.next()? != ")" {
                    return Err(format!("condition {text:?}: missing ')'"));
                }
                Ok(e)
            }
            "1" | "all" => {
                if self.next()? != "of" {
                    return Err(format!("condition {text:?}: expected `of` after {t:?}"));
                }
                let target = self.next()?;
                let glob = Glob::parse(&target);
                let matched: Vec<Expr> = self
                    .searches
                    .iter()
                    .filter(|(name, _)| {
                        if target == "them" {
                            !name.starts_with('_')
                        } else {
                            glob.matches(name)
                        }
                    })
                    .map(|(_, e)| e.clone())
                    .collect();
                if matched.is_empty() {
                    return Err(format!(
                        "condition {text:?}: {target:?} matches no search identifier"
                    ));
                }
                Ok(if t == "1" {
                    Expr::Or(matched)
                } else {
                    Expr::And(matched)
                })
            }
            ")" | "and" | "or" | "of" | "them" => {
                Err(format!("condition {text:?}: unexpected {t:?}"))
            }
            n if n.chars().all(|c| c.is_ascii_digit()) => Err(format!(
                "condition {text:?}: only `1 of` and `all of` are supported, not `{n} of`"
            )),
            name => self.searches.get(name).cloned().ok_or_else(|| {
                format!("condition {text:?} names unknown search identifier {name:?}")
            }),
        }
    }
}

/// Disjunctive normal form: a list of conjunctions, `not` pushed down to the literals.
fn to_dnf(e: &Expr, negate: bool) -> Result<Vec<Vec<Lit>>, Located> {
    match e {
        Expr::Const(b) => Ok(if *b != negate { vec![vec![]] } else { vec![] }),
        Expr::Lit(l) => Ok(vec![vec![if negate { negated(l)? } else { l.clone() }]]),
        Expr::Not(x) => to_dnf(x, !negate),
        Expr::And(xs) | Expr::Or(xs) => {
            let conjunction = matches!(e, Expr::And(_)) != negate;
            let parts = xs
                .iter()
                .map(|x| to_dnf(x, negate))
                .collect::<Result<Vec<_>, _>>()?;
            let too_many = || {
                located(
                    "condition",
                    format!(
                        "the condition expands to more than {MAX_ALTERNATIVES} native rules; \
                         simplify it"
                    ),
                )
            };
            if conjunction {
                let mut acc: Vec<Vec<Lit>> = vec![vec![]];
                for part in parts {
                    let mut next = Vec::new();
                    for a in &acc {
                        for b in &part {
                            let joined: Vec<Lit> = a.iter().chain(b).cloned().collect();
                            // Contradictions are dropped early so that they do not count
                            // against the limit.
                            if simplify(&joined).is_some() {
                                next.push(joined);
                            }
                        }
                    }
                    if next.len() > MAX_ALTERNATIVES {
                        return Err(too_many());
                    }
                    acc = next;
                }
                Ok(acc)
            } else {
                let all: Vec<Vec<Lit>> = parts.into_iter().flatten().collect();
                if all.len() > MAX_ALTERNATIVES {
                    return Err(too_many());
                }
                Ok(all)
            }
        }
    }
}

fn negated(l: &Lit) -> Result<Lit, Located> {
    let test = match &l.test {
        Test::In(s) => Test::NotIn(s.clone()),
        Test::NotIn(s) => Test::In(s.clone()),
        // Absent flags read as false, so `not flag: true` is exactly `flag: false`.
        Test::Flag(b) => Test::Flag(!b),
        Test::Num(..) => {
            return Err(located(
                &l.origin,
                format!(
                    "{} cannot be negated: `not` would also have to match events without the \
                     value, which native numeric filters never match; state the opposite bound",
                    l.origin
                ),
            ));
        }
    };
    Ok(Lit {
        field: l.field,
        test,
        origin: l.origin.clone(),
    })
}

/// Combines a conjunction's literals per field; `None` when it can never match.
fn simplify(lits: &[Lit]) -> Option<Conj> {
    let mut by_field: BTreeMap<&'static str, Vec<&Test>> = BTreeMap::new();
    for l in lits {
        by_field.entry(l.field).or_default().push(&l.test);
    }
    let mut conj = Conj::new();
    for (field, tests) in by_field {
        match tests[0] {
            Test::In(_) | Test::NotIn(_) => {
                let mut pos: Option<BTreeSet<String>> = None;
                let mut neg = BTreeSet::new();
                for t in &tests {
                    match t {
                        Test::In(s) => {
                            pos = Some(match pos {
                                None => s.clone(),
                                Some(p) => p.intersection(s).cloned().collect(),
                            });
                        }
                        Test::NotIn(s) => neg.extend(s.iter().cloned()),
                        _ => {}
                    }
                }
                if let Some(words) = universe(field) {
                    let all: BTreeSet<String> = words.iter().map(|w| (*w).to_owned()).collect();
                    let allowed: BTreeSet<String> = pos
                        .clone()
                        .unwrap_or_else(|| all.clone())
                        .difference(&neg)
                        .cloned()
                        .collect();
                    if allowed.is_empty() {
                        return None;
                    }
                    if allowed == all {
                        continue;
                    }
                    conj.insert(
                        field,
                        if pos.is_some() {
                            Constraint::In(allowed)
                        } else {
                            Constraint::NotIn(all.difference(&allowed).cloned().collect())
                        },
                    );
                } else {
                    match pos {
                        Some(p) => {
                            let allowed: BTreeSet<String> = p.difference(&neg).cloned().collect();
                            if allowed.is_empty() {
                                return None;
                            }
                            conj.insert(field, Constraint::In(allowed));
                        }
                        None if neg.is_empty() => {}
                        None => {
                            conj.insert(field, Constraint::NotIn(neg));
                        }
                    }
                }
            }
            Test::Flag(b) => {
                if tests.iter().any(|t| **t != Test::Flag(*b)) {
                    return None;
                }
                conj.insert(field, Constraint::Flag(*b));
            }
            Test::Num(..) => {
                let (mut low, mut high): (Option<Bound>, Option<Bound>) = (None, None);
                for t in &tests {
                    let Test::Num(op, v) = t else { continue };
                    match op {
                        NumOp::Gt | NumOp::Gte => {
                            let b = (*v, *op == NumOp::Gte);
                            // The larger bound is tighter; at a tie the exclusive one is.
                            if low.is_none_or(|(l, inc)| b.0 > l || (b.0 == l && inc && !b.1)) {
                                low = Some(b);
                            }
                        }
                        NumOp::Lt | NumOp::Lte => {
                            let b = (*v, *op == NumOp::Lte);
                            if high.is_none_or(|(h, inc)| b.0 < h || (b.0 == h && inc && !b.1)) {
                                high = Some(b);
                            }
                        }
                    }
                }
                if let (Some((l, li)), Some((h, hi))) = (low, high)
                    && (l > h || (l == h && !(li && hi)))
                {
                    return None;
                }
                conj.insert(field, Constraint::Range { low, high });
            }
        }
    }
    Some(conj)
}

/// Merges alternatives that differ in one field's any-of list into one filter; a counter can
/// only count one conjunction, so this is how a correlation over `1 of …` can still be exact.
fn merge_alternatives(mut alts: Vec<Conj>) -> Result<Conj, usize> {
    'outer: loop {
        if alts.len() <= 1 {
            return alts.pop().ok_or(0);
        }
        for i in 0..alts.len() {
            for j in i + 1..alts.len() {
                if let Some(m) = merge_pair(&alts[i], &alts[j]) {
                    alts[i] = m;
                    alts.remove(j);
                    continue 'outer;
                }
            }
        }
        return Err(alts.len());
    }
}

fn merge_pair(a: &Conj, b: &Conj) -> Option<Conj> {
    if a.keys().ne(b.keys()) {
        return None;
    }
    let differing: Vec<&&str> = a.keys().filter(|k| a.get(*k) != b.get(*k)).collect();
    match differing.as_slice() {
        [] => Some(a.clone()),
        [field] => {
            let mut merged = a.clone();
            match (a.get(**field), b.get(**field)) {
                (Some(Constraint::In(x)), Some(Constraint::In(y))) => {
                    let union: BTreeSet<String> = x.union(y).cloned().collect();
                    let everything = universe(field).is_some_and(|u| u.len() == union.len());
                    if everything {
                        merged.remove(**field);
                    } else {
                        merged.insert(field, Constraint::In(union));
                    }
                }
                (Some(Constraint::Flag(_)), Some(Constraint::Flag(_))) => {
                    merged.remove(**field);
                }
                _ => return None,
            }
            Some(merged)
        }
        _ => None,
    }
}

fn conj_yaml(c: &Conj) -> Mapping {
    let list = |s: &BTreeSet<String>| -> Value {
        if s.len() == 1 {
            Value::from(s.iter().next().cloned().unwrap_or_default())
        } else {
            Value::from(s.iter().cloned().collect::<Vec<String>>())
        }
    };
    let mut m = Mapping::new();
    for (field, constraint) in c {
        let v = match constraint {
            Constraint::In(s) => list(s),
            Constraint::NotIn(s) => {
                let mut ops = Mapping::new();
                ops.insert(
                    "not".into(),
                    s.iter().cloned().collect::<Vec<String>>().into(),
                );
                Value::Mapping(ops)
            }
            Constraint::Flag(b) => Value::Bool(*b),
            Constraint::Range { low, high } => {
                let mut ops = Mapping::new();
                if let Some((v, inclusive)) = low {
                    ops.insert((if *inclusive { "gte" } else { "gt" }).into(), (*v).into());
                }
                if let Some((v, inclusive)) = high {
                    ops.insert((if *inclusive { "lte" } else { "lt" }).into(), (*v).into());
                }
                Value::Mapping(ops)
            }
        };
        m.insert(Value::from(*field), v);
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Documents and the import itself.

struct Doc {
    file: usize,
    /// First content line of the document, so that errors point into the right document.
    start: usize,
    rule: SigmaRule,
    native_id: String,
    /// The detection's alternatives (empty for correlations).
    alternatives: Vec<Conj>,
}

/// First content line (1-based) of each YAML document in `text`.
fn document_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut current: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            if let Some(s) = current.take() {
                starts.push(s);
            }
        } else if current.is_none() && !line.trim().is_empty() && !line.trim().starts_with('#') {
            current = Some(i + 1);
        }
    }
    starts.extend(current);
    starts
}

/// Where `needle` first appears at or after line `from` (1-based), as (line, column); the
/// document's start when it does not appear.
fn locate_from(text: &str, from: usize, needle: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        if let Some(col) = line.find(needle) {
            return (i + 1, line[..col].chars().count() + 1);
        }
    }
    (from, 1)
}

/// A native rule id from a Sigma name or title: lower case, runs of other characters as `_`.
fn native_id(s: &str) -> String {
    let mut id = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
        } else if !id.is_empty() && !id.ends_with('_') {
            id.push('_');
        }
    }
    id.trim_end_matches('_').to_owned()
}

fn parse_file(file: usize, path: &Path, text: &str, docs: &mut Vec<Doc>) -> Result<(), SigmaError> {
    let starts = document_starts(text);
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let rule: Option<SigmaRule> = Deserialize::deserialize(document).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            SigmaError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let start = starts.get(index).copied().unwrap_or(1);
        let Some(rule) = rule else { continue };
        let fail = |needle: &str, message: String| {
            let (line, column) = locate_from(text, start, needle);
            SigmaError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        if rule.title.trim().is_empty() {
            return Err(fail("", "a Sigma rule needs a title".to_owned()));
        }
        let id = native_id(rule.name.as_deref().unwrap_or(&rule.title));
        if id.is_empty() || !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(fail(
                "name:",
                format!(
                    "cannot derive a native rule id from {:?}: give the rule a `name` starting \
                     with a letter",
                    rule.name.as_deref().unwrap_or(&rule.title)
                ),
            ));
        }
        let alternatives = match (&rule.detection, &rule.correlation) {
            (Some(d), None) => compile_detection(d).map_err(|(needle, m)| {
                fail(&needle, format!("Sigma rule {:?}: {m}", rule.title))
            })?,
            (None, Some(_)) => Vec::new(),
            _ => {
                return Err(fail(
                    "title:",
                    format!(
                        "Sigma rule {:?} needs exactly one of detection: or correlation:",
                        rule.title
                    ),
                ));
            }
        };
        docs.push(Doc {
            file,
            start,
            rule,
            native_id: id,
            alternatives,
        });
    }
    Ok(())
}

fn compile_detection(d: &SigmaDetection) -> Result<Vec<Conj>, Located> {
    if d.timeframe.is_some() {
        return Err(located(
            "timeframe",
            "timeframe (legacy aggregation) is not supported; write a Sigma correlation rule",
        ));
    }
    let mut searches = BTreeMap::new();
    for (name, value) in &d.searches {
        searches.insert(name.clone(), selection_expr(name, value)?);
    }
    let mut conditions = Vec::new();
    for c in d.condition.items() {
        conditions.push(parse_condition(c, &searches).map_err(|m| located("condition", m))?);
    }
    let mut alternatives: Vec<Conj> = Vec::new();
    for lits in to_dnf(&Expr::Or(conditions), false)? {
        if let Some(c) = simplify(&lits)
            && !alternatives.contains(&c)
        {
            alternatives.push(c);
        }
    }
    if alternatives.is_empty() {
        return Err(located("condition", "the condition can never match"));
    }
    Ok(alternatives)
}

/// Rule metadata shared by every native rule made from one Sigma document.
struct Meta {
    severity: &'static str,
    cause_class: String,
    techniques: Vec<String>,
    steps: (Vec<String>, Vec<String>),
    header: String,
}

/// A native rule before serialization.
struct NativeRule {
    id: String,
    category: String,
    description: String,
    severity: String,
    key: Vec<KeyField>,
    filter: Conj,
    window: String,
    counters: Vec<(String, Option<KeyField>)>,
    fire_when: (bool, Vec<String>),
    after: Option<(Vec<String>, String)>,
    summary: (String, String),
}

impl NativeRule {
    fn to_yaml(&self, meta: &Meta) -> Result<String, serde_yaml_ng::Error> {
        let strings = |v: &[String]| Value::from(v.to_vec());
        let keys = |k: &[KeyField]| Value::from(k.iter().map(|f| f.name()).collect::<Vec<_>>());
        let mut m = Mapping::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("version".into(), 1u32.into());
        m.insert("description".into(), self.description.clone().into());
        m.insert("category".into(), self.category.clone().into());
        m.insert("severity".into(), self.severity.clone().into());
        m.insert("cause_class".into(), meta.cause_class.clone().into());
        m.insert("attack_technique".into(), strings(&meta.techniques));
        m.insert("key".into(), keys(&self.key));
        if !self.filter.is_empty() {
            m.insert("filter".into(), Value::Mapping(conj_yaml(&self.filter)));
        }
        if let Some((rules, within)) = &self.after {
            let mut a = Mapping::new();
            a.insert("rules".into(), strings(rules));
            a.insert("within".into(), within.clone().into());
            a.insert("on".into(), keys(&self.key));
            m.insert("after".into(), Value::Mapping(a));
        }
        m.insert("window".into(), self.window.clone().into());
        let mut counters = Mapping::new();
        for (name, distinct) in &self.counters {
            let mut c = Mapping::new();
            if let Some(d) = distinct {
                c.insert("distinct".into(), d.name().into());
            }
            counters.insert(name.clone().into(), Value::Mapping(c));
        }
        m.insert("counters".into(), Value::Mapping(counters));
        let mut fire = Mapping::new();
        let (all, comparisons) = &self.fire_when;
        fire.insert(
            (if *all { "all" } else { "any" }).into(),
            strings(comparisons),
        );
        m.insert("fire_when".into(), Value::Mapping(fire));
        m.insert("suppress".into(), self.window.clone().into());
        let mut summary = Mapping::new();
        summary.insert("en".into(), self.summary.0.clone().into());
        summary.insert("ja".into(), self.summary.1.clone().into());
        m.insert("summary".into(), Value::Mapping(summary));
        let mut steps = Mapping::new();
        steps.insert("en".into(), strings(&meta.steps.0));
        steps.insert("ja".into(), strings(&meta.steps.1));
        m.insert("steps".into(), Value::Mapping(steps));
        Ok(format!(
            "{}{}",
            meta.header,
            serde_yaml_ng::to_string(&Value::Mapping(m))?
        ))
    }
}

/// Collapses whitespace (multi-line YAML descriptions) to one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text safe inside a summary template, which reads `{…}` as a placeholder.
fn template_safe(s: &str) -> String {
    s.replace('{', "(").replace('}', ")")
}

/// `{user}` or `user {user}, ip {ip}` for summaries.
fn key_text(key: &[KeyField]) -> String {
    match key {
        [one] => format!("{{{}}}", one.name()),
        many => many
            .iter()
            .map(|k| format!("{0} {{{0}}}", k.name()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

struct Importer<'a> {
    sources: &'a [(PathBuf, String)],
    docs: Vec<Doc>,
    out: Vec<(usize, NativeRule)>,
    notes: Vec<String>,
}

impl Importer<'_> {
    fn fail(&self, doc: usize, needle: &str, message: String) -> SigmaError {
        let d = &self.docs[doc];
        let (path, text) = &self.sources[d.file];
        let (line, column) = locate_from(text, d.start, needle);
        SigmaError::Invalid {
            path: path.clone(),
            line,
            column,
            message: format!("Sigma rule {:?}: {message}", d.rule.title),
        }
    }

    fn path(&self, doc: usize) -> &Path {
        &self.sources[self.docs[doc].file].0
    }

    fn meta(&self, doc: usize) -> Result<Meta, SigmaError> {
        let r = &self.docs[doc].rule;
        let severity = match r.level.as_deref() {
            None => "medium",
            Some("informational") => "info",
            Some("low") => "low",
            Some("medium") => "medium",
            Some("high") => "high",
            Some("critical") => "critical",
            Some(other) => {
                return Err(self.fail(
                    doc,
                    "level:",
                    format!(
                        "unknown level {other:?}; expected informational, low, medium, high or \
                         critical"
                    ),
                ));
            }
        };
        let mut cause_class = "attack".to_owned();
        let mut techniques = Vec::new();
        for tag in &r.tags {
            let tag = tag.to_lowercase();
            if let Some(class) = tag.strip_prefix("authwatch.cause_class.") {
                class.clone_into(&mut cause_class);
            } else if let Some(t) = tag.strip_prefix("attack.t") {
                let (main, sub) = t.split_once('.').unwrap_or((t, ""));
                let digits =
                    |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
                if digits(main, 4) && (sub.is_empty() || digits(sub, 3)) {
                    techniques.push(format!("T{}", t.to_uppercase()));
                }
            }
        }
        let title = one_line(&r.title);
        let mut en = vec![match &r.description {
            Some(d) if !d.trim().is_empty() => format!("Investigate: {}", one_line(d)),
            _ => format!("Review the events that matched the Sigma rule \"{title}\"."),
        }];
        let mut ja = vec![format!(
            "Sigma ルール「{title}」に一致したイベントを確認してください。"
        )];
        if !r.falsepositives.is_empty() {
            let fps = r
                .falsepositives
                .iter()
                .map(|f| one_line(f))
                .collect::<Vec<_>>()
                .join("; ");
            en.push(format!("Rule out the known false positives: {fps}."));
            ja.push(format!(
                "既知の誤検知（原文）に当たらないか確認してください: {fps}。"
            ));
        }
        let header = format!(
            "# Imported from Sigma rule \"{title}\"{} in {} by `authwatch rules import-sigma`.\n",
            r.id.as_deref()
                .map(|i| format!(" ({})", one_line(i)))
                .unwrap_or_default(),
            self.path(doc).display()
        );
        Ok(Meta {
            severity,
            cause_class,
            techniques,
            steps: (en, ja),
            header,
        })
    }

    fn resolve(&self, reference: &str) -> Option<usize> {
        let by = |f: fn(&SigmaRule) -> Option<&str>| {
            self.docs.iter().position(|d| f(&d.rule) == Some(reference))
        };
        by(|r| r.name.as_deref()).or_else(|| by(|r| r.id.as_deref()))
    }

    fn run(mut self) -> Result<SigmaImport, SigmaError> {
        for i in 0..self.docs.len() {
            if let Some(j) = (0..i).find(|&j| self.docs[j].native_id == self.docs[i].native_id) {
                return Err(self.fail(
                    i,
                    "name:",
                    format!(
                        "native rule id {} is already used by Sigma rule {:?}; give the rules \
                         distinct names",
                        self.docs[i].native_id, self.docs[j].rule.title
                    ),
                ));
            }
        }
        // Which detections correlations reference, and whether any of them lets the detection
        // alert on its own (`generate: true`).
        let mut referenced: Vec<Option<(bool, usize)>> = vec![None; self.docs.len()];
        let mut refs: Vec<Vec<usize>> = vec![Vec::new(); self.docs.len()];
        for (i, these) in refs.iter_mut().enumerate() {
            let Some(c) = &self.docs[i].rule.correlation else {
                continue;
            };
            for r in c.rules.items() {
                let j = self.resolve(r).ok_or_else(|| {
                    self.fail(
                        i,
                        r,
                        format!("correlation references unknown rule {r:?} (by name or id)"),
                    )
                })?;
                if j == i {
                    return Err(self.fail(i, r, "a correlation cannot reference itself".into()));
                }
                these.push(j);
                let generate = c.generate || referenced[j].is_some_and(|(g, _)| g);
                referenced[j] = Some((generate, referenced[j].map_or(i, |(_, first)| first)));
            }
        }
        for i in 0..self.docs.len() {
            if self.docs[i].rule.detection.is_some() {
                match referenced[i] {
                    Some((false, by)) => self.notes.push(format!(
                        "{}: Sigma rule {:?} raises no alert of its own: correlation {} uses it \
                         with generate: false, so it only feeds that correlation",
                        self.path(i).display(),
                        self.docs[i].rule.title,
                        self.docs[by].native_id
                    )),
                    _ => self.detection(i),
                }
            } else {
                self.correlation(i, &refs[i])?;
            }
        }
        self.finish()
    }

    fn detection(&mut self, doc: usize) {
        let d = &self.docs[doc];
        let n = d.alternatives.len();
        let title = template_safe(&one_line(&d.rule.title));
        let rules: Vec<NativeRule> = d
            .alternatives
            .iter()
            .enumerate()
            .map(|(k, alt)| NativeRule {
                id: if n == 1 {
                    d.native_id.clone()
                } else {
                    format!("{}_{}", d.native_id, k + 1)
                },
                category: d.native_id.clone(),
                description: one_line(&d.rule.title),
                severity: String::new(),
                key: vec![KeyField::User],
                filter: alt.clone(),
                window: DETECTION_WINDOW.to_owned(),
                counters: vec![("matches".to_owned(), None)],
                fire_when: (false, vec!["matches >= 1".to_owned()]),
                after: None,
                summary: (
                    format!(
                        "Sigma rule \"{title}\" matched for {{user}} at {{last_seen}} (source \
                         {{src_ip}})."
                    ),
                    format!(
                        "Sigma ルール「{title}」が {{user}} について {{last_seen}}に一致しました\
                         （送信元 {{src_ip}}）。"
                    ),
                ),
            })
            .collect();
        self.out.extend(rules.into_iter().map(|r| (doc, r)));
    }

    fn group_by(&self, doc: usize) -> Result<Vec<KeyField>, SigmaError> {
        let Some(c) = &self.docs[doc].rule.correlation else {
            return Ok(Vec::new());
        };
        if c.group_by.is_empty() {
            return Err(self.fail(
                doc,
                "correlation:",
                "group-by is required: authwatch counts per entity (user.name, src.ip, …)".into(),
            ));
        }
        let mut key = Vec::new();
        for g in &c.group_by {
            let field = match c.aliases.get(g) {
                Some(per_rule) => {
                    let fields = per_rule
                        .values()
                        .map(|f| key_field_of(f))
                        .collect::<Result<BTreeSet<_>, _>>()
                        .map_err(|m| self.fail(doc, g, m))?;
                    match fields.into_iter().collect::<Vec<_>>().as_slice() {
                        [one] => *one,
                        _ => {
                            return Err(self.fail(
                                doc,
                                g,
                                format!(
                                    "alias {g} maps to different authwatch keys in different \
                                     rules; over the normalized event they must be one field"
                                ),
                            ));
                        }
                    }
                }
                None => key_field_of(g).map_err(|m| self.fail(doc, g, m))?,
            };
            if !key.contains(&field) {
                key.push(field);
            }
        }
        Ok(key)
    }

    fn correlation(&mut self, doc: usize, refs: &[usize]) -> Result<(), SigmaError> {
        let Some(c) = self.docs[doc].rule.correlation.clone() else {
            return Ok(());
        };
        let key = self.group_by(doc)?;
        match parse_duration_ms(&c.timespan) {
            Ok(ms) if ms > 0 => {}
            Ok(_) => return Err(self.fail(doc, "timespan", "timespan must be positive".into())),
            Err(m) => return Err(self.fail(doc, "timespan", m)),
        }
        let id = self.docs[doc].native_id.clone();
        let title = template_safe(&one_line(&self.docs[doc].rule.title));
        let who = key_text(&key);
        let base = |summary: (String, String), counters, fire_when, filter| NativeRule {
            id: id.clone(),
            category: id.clone(),
            description: one_line(&self.docs[doc].rule.title),
            severity: String::new(),
            key: key.clone(),
            filter,
            window: c.timespan.clone(),
            counters,
            fire_when,
            after: None,
            summary,
        };
        match c.kind.as_str() {
            "event_count" | "value_count" => {
                let filter = self.counted_filter(doc, refs)?;
                let cond = c.condition.clone().ok_or_else(|| {
                    self.fail(doc, "correlation:", format!("{} needs a condition", c.kind))
                })?;
                let (counter, distinct) = if c.kind == "event_count" {
                    if cond.field.is_some() {
                        return Err(self.fail(
                            doc,
                            "field:",
                            "event_count takes no field (did you mean value_count?)".into(),
                        ));
                    }
                    ("events".to_owned(), None)
                } else {
                    let field = cond.field.as_deref().ok_or_else(|| {
                        self.fail(
                            doc,
                            "condition:",
                            "value_count needs condition.field".into(),
                        )
                    })?;
                    let k = key_field_of(field).map_err(|m| self.fail(doc, "field:", m))?;
                    (format!("distinct_{}", k.name()), Some(k))
                };
                let comparisons =
                    fire_when(&cond, &counter).map_err(|m| self.fail(doc, "condition:", m))?;
                let summary = match distinct {
                    None => (
                        format!(
                            "Sigma correlation \"{title}\": {{{counter}}} matching events for \
                             {who} within {{window}} (last from {{src_ip}})."
                        ),
                        format!(
                            "Sigma 相関ルール「{title}」: {{window}}以内に {who} について一致した\
                             イベントが {{{counter}}} 件ありました（最終送信元 {{src_ip}}）。"
                        ),
                    ),
                    Some(k) => (
                        format!(
                            "Sigma correlation \"{title}\": {{{counter}}} distinct {} values for \
                             {who} within {{window}}.",
                            k.name()
                        ),
                        format!(
                            "Sigma 相関ルール「{title}」: {{window}}以内に {who} について異なる {} \
                             の値が {{{counter}}} 個ありました。",
                            k.name()
                        ),
                    ),
                };
                let rule = base(
                    summary,
                    vec![(counter, distinct)],
                    (true, comparisons),
                    filter,
                );
                self.out.push((doc, rule));
            }
            "temporal" | "temporal_ordered" => {
                if c.condition.is_some() {
                    return Err(self.fail(
                        doc,
                        "condition:",
                        "a temporal correlation takes no condition".into(),
                    ));
                }
                if refs.len() < 2 {
                    return Err(self.fail(
                        doc,
                        "rules:",
                        "a temporal correlation needs at least two rules".into(),
                    ));
                }
                // Sigma's group-by means "the same value of every field", but a native
                // `after.on` list joins on any one of its fields, and the rule language has no
                // all-fields join: grouped by user and address, another user's success from the
                // same address would complete the sequence.
                if key.len() > 1 {
                    return Err(self.fail(
                        doc,
                        "group-by",
                        format!(
                            "temporal correlation {id} is grouped by {} fields ({}), which cannot \
                             be imported: Sigma joins the steps on the same value of every field, \
                             but a native `after:` sequence joins on any one of its `on` fields, so \
                             it would also match other entities sharing a single field; group by \
                             one field",
                            key.len(),
                            c.group_by.join(", ")
                        ),
                    ));
                }
                if c.kind == "temporal" {
                    self.notes.push(format!(
                        "{}: temporal correlation {id} is imported as an ordered sequence in the \
                         listed order (authwatch sequences are ordered)",
                        self.path(doc).display()
                    ));
                }
                let names: Vec<String> = refs
                    .iter()
                    .map(|&j| template_safe(&one_line(&self.docs[j].rule.title)))
                    .collect();
                let mut previous: Vec<String> = Vec::new();
                for (k, &j) in refs.iter().enumerate() {
                    let last = k + 1 == refs.len();
                    if self.docs[j].rule.correlation.is_some() {
                        let target = self.docs[j]
                            .rule
                            .correlation
                            .as_ref()
                            .map(|t| t.kind.clone());
                        if k != 0
                            || !matches!(target.as_deref(), Some("event_count" | "value_count"))
                        {
                            return Err(self.fail(
                                doc,
                                &self.docs[j].native_id.clone(),
                                "only the first rule of a temporal correlation may be a \
                                 correlation, and only an event_count or value_count one"
                                    .into(),
                            ));
                        }
                        let their_key = self.group_by(j)?;
                        if !key.iter().all(|f| their_key.contains(f)) {
                            return Err(self.fail(
                                doc,
                                "group-by",
                                format!(
                                    "the group-by of {} must include every group-by field of \
                                     this temporal correlation",
                                    self.docs[j].native_id
                                ),
                            ));
                        }
                        if !c.generate {
                            self.notes.push(format!(
                                "{}: correlation {} also raises alerts of its own: it is the \
                                 first step of sequence {id}",
                                self.path(doc).display(),
                                self.docs[j].native_id
                            ));
                        }
                        previous = vec![self.docs[j].native_id.clone()];
                        continue;
                    }
                    let stem = if last {
                        id.clone()
                    } else {
                        format!("{id}_step{}", k + 1)
                    };
                    let alts = self.docs[j].alternatives.clone();
                    let ids: Vec<String> = if alts.len() == 1 {
                        vec![stem.clone()]
                    } else {
                        (1..=alts.len()).map(|d| format!("{stem}_{d}")).collect()
                    };
                    let step = &names[k];
                    for (alt, rid) in alts.into_iter().zip(&ids) {
                        let summary = if last {
                            (
                                format!(
                                    "Sigma correlation \"{title}\": {} in sequence for {who} \
                                     (first {{first_seen}}, last {{last_seen}}).",
                                    names.join(" → ")
                                ),
                                format!(
                                    "Sigma 相関ルール「{title}」: {who} について {} が順に発生しました\
                                     （最初 {{first_seen}}、最後 {{last_seen}}）。",
                                    names.join(" → ")
                                ),
                            )
                        } else {
                            (
                                format!(
                                    "Step {} of Sigma correlation \"{title}\": \"{step}\" for \
                                     {who} at {{last_seen}}.",
                                    k + 1
                                ),
                                format!(
                                    "Sigma 相関ルール「{title}」のステップ {}: {who} について\
                                     「{step}」が {{last_seen}}に発生しました。",
                                    k + 1
                                ),
                            )
                        };
                        let mut rule = base(
                            summary,
                            vec![("matches".to_owned(), None)],
                            (false, vec!["matches >= 1".to_owned()]),
                            alt,
                        );
                        rule.id = rid.clone();
                        // Intermediate steps must exist for `after:` to see their incidents;
                        // at `info` they stay out of the way of the sequence's own alert.
                        if !last {
                            rule.severity = "info".to_owned();
                            rule.description = format!(
                                "Step {} of: {}",
                                k + 1,
                                one_line(&self.docs[doc].rule.title)
                            );
                        }
                        if k > 0 {
                            rule.after = Some((previous.clone(), c.timespan.clone()));
                        }
                        self.out.push((doc, rule));
                    }
                    if !last && !c.generate {
                        self.notes.push(format!(
                            "{}: sequence {id}: step rule(s) {} raise info alerts: the native \
                             language has no silent rules, and `after:` needs their incidents",
                            self.path(doc).display(),
                            ids.join(", ")
                        ));
                    }
                    previous = ids;
                }
            }
            other => {
                return Err(self.fail(
                    doc,
                    "type:",
                    format!(
                        "unknown correlation type {other:?}; expected event_count, value_count, \
                         temporal or temporal_ordered"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The one filter an event_count/value_count counts: the union of the referenced
    /// detections, which must fold into a single native filter.
    fn counted_filter(&self, doc: usize, refs: &[usize]) -> Result<Conj, SigmaError> {
        let mut alts = Vec::new();
        for &j in refs {
            if self.docs[j].rule.correlation.is_some() {
                return Err(self.fail(
                    doc,
                    &self.docs[j].native_id.clone(),
                    "event_count and value_count can only count detection rules, not correlations"
                        .into(),
                ));
            }
            alts.extend(self.docs[j].alternatives.iter().cloned());
        }
        merge_alternatives(alts).map_err(|n| {
            self.fail(
                doc,
                "rules:",
                format!(
                    "the referenced rules match {n} alternatives that do not fold into one native \
                     filter (they differ in more than one field); a native counter counts one \
                     filter"
                ),
            )
        })
    }

    fn finish(mut self) -> Result<SigmaImport, SigmaError> {
        let mut rules: Vec<ImportedRule> = Vec::new();
        for (doc, mut rule) in std::mem::take(&mut self.out) {
            let meta = self.meta(doc)?;
            if rule.severity.is_empty() {
                rule.severity = meta.severity.to_owned();
            }
            if rules.iter().any(|r| r.id == rule.id) {
                return Err(self.fail(
                    doc,
                    "name:",
                    format!(
                        "native rule id {} is generated twice; rename a rule",
                        rule.id
                    ),
                ));
            }
            let path = self.path(doc).to_owned();
            let yaml = rule.to_yaml(&meta).map_err(|e| {
                self.fail(doc, "title:", format!("cannot write the native rule: {e}"))
            })?;
            let generated = |source| SigmaError::Generated {
                path: path.clone(),
                id: rule.id.clone(),
                source,
            };
            let mut compiled =
                compile_text(Path::new(&format!("{}.yaml", rule.id)), &yaml).map_err(generated)?;
            let compiled = compiled.pop().ok_or_else(|| {
                generated(RuleError::Pack(format!(
                    "rule {} produced no document",
                    rule.id
                )))
            })?;
            rules.push(ImportedRule {
                id: rule.id.clone(),
                source: path,
                yaml,
                compiled,
            });
        }
        RulePack::from_rules(rules.iter().map(|r| r.compiled.clone()).collect())
            .map_err(SigmaError::Pack)?;
        Ok(SigmaImport {
            rules,
            notes: self.notes,
        })
    }
}

/// The native comparisons for a count condition: lower bounds only.
///
/// A native rule decides on the event that makes its condition true and cannot take the alert
/// back, so `{gte: 3, lte: 5}` would fire at the third event even when ten follow within the
/// time span. `settle` does not help: it delays the alert for an `unless` veto but does not
/// count again. Upper bounds (`lte`, `lt`, `eq`, `neq`) are therefore rejected.
fn fire_when(cond: &SigmaCountCondition, counter: &str) -> Result<Vec<String>, String> {
    let upper: Vec<&str> = [
        ("lte", cond.lte),
        ("lt", cond.lt),
        ("eq", cond.eq),
        ("neq", cond.neq),
    ]
    .into_iter()
    .filter_map(|(name, n)| n.map(|_| name))
    .collect();
    if !upper.is_empty() {
        return Err(format!(
            "condition {} cannot be imported: a native rule fires on the event whose count \
             reaches the lower bound, and cannot take the alert back when later events within \
             the time span pass an upper bound (lte, lt, eq) or reach an excluded count (neq); \
             use gte or gt only",
            upper.join(", ")
        ));
    }
    if cond.gte.is_none() && cond.gt.is_none() {
        return Err("the condition needs gte or gt".into());
    }
    Ok([(">=", cond.gte), (">", cond.gt)]
        .into_iter()
        .filter_map(|(op, n)| n.map(|n| format!("{counter} {op} {n}")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineLimits;
    use authwatch_event::{Alert, AuthEvent, Src, User};

    fn fixture(name: &str) -> (PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/sigma")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        (PathBuf::from(format!("tests/fixtures/sigma/{name}")), text)
    }

    fn import_fixture(name: &str) -> SigmaImport {
        let (path, text) = fixture(name);
        import_text(&path, &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(imported: &SigmaImport, events: &[AuthEvent]) -> Vec<Alert> {
        let pack = RulePack::from_rules(imported.compiled()).unwrap();
        let mut engine = pack.engine(EngineLimits::default());
        let mut alerts = Vec::new();
        for e in events {
            engine.on_event(e, &mut alerts);
        }
        alerts
    }

    const T0: i64 = 1_767_603_600_000;

    fn logon(i: i64, user: &str, ip: &str, outcome: Outcome, reason: Reason) -> AuthEvent {
        AuthEvent {
            time: T0 + i * 60_000,
            provider: "okta".into(),
            event_id: format!("e{i}-{user}").into(),
            user: User {
                name: user.into(),
                ..Default::default()
            },
            activity: Activity::Logon,
            factor: Factor::Password,
            outcome,
            reason,
            src: Src {
                ip: Some(ip.parse().unwrap()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn yaml_of(imported: &SigmaImport, id: &str) -> serde_yaml_ng::Value {
        let r = imported.rules.iter().find(|r| r.id == id).unwrap();
        serde_yaml_ng::from_str(&r.yaml).unwrap()
    }

    #[test]
    fn selection_and_not_filter_becomes_one_rule() {
        let imported = import_fixture("failed_logon_external.yml");
        assert_eq!(imported.rules.len(), 1);
        let r = &imported.rules[0];
        assert_eq!(r.id, "failed_logon_external");
        assert_eq!(r.compiled.severity.as_str(), "low");
        assert_eq!(r.compiled.cause_class.as_str(), "attack");
        assert_eq!(r.compiled.attack_technique, ["T1110.001"]);
        assert_eq!(
            r.compiled.steps.0.len(),
            2,
            "description and false positives"
        );
        let y = yaml_of(&imported, "failed_logon_external");
        assert_eq!(y["filter"]["activity"], "logon");
        assert_eq!(y["filter"]["factor"], "password");
        assert_eq!(
            y["filter"]["outcome"],
            serde_yaml_ng::from_str::<Value>("[blocked, failure]").unwrap()
        );
        assert_eq!(y["filter"]["src.internal"], false);
        assert!(r.yaml.starts_with("# Imported from Sigma rule"));

        let external = logon(
            0,
            "aiko@example.jp",
            "198.51.100.7",
            Outcome::Failure,
            Reason::InvalidCredentials,
        );
        let mut internal = logon(
            1,
            "ken@example.jp",
            "10.0.0.5",
            Outcome::Failure,
            Reason::InvalidCredentials,
        );
        internal.src.internal = true;
        let success = logon(
            2,
            "mei@example.jp",
            "198.51.100.8",
            Outcome::Success,
            Reason::None,
        );
        let alerts = run(&imported, &[external, internal, success]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].entity.user.as_deref(), Some("aiko@example.jp"));
    }

    #[test]
    fn one_of_selections_gives_one_rule_per_selection() {
        let imported = import_fixture("mfa_push_abuse.yml");
        let ids: Vec<&str> = imported.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["mfa_push_abuse_1", "mfa_push_abuse_2"]);
        for r in &imported.rules {
            assert_eq!(r.compiled.category, "mfa_push_abuse");
            assert_eq!(r.compiled.severity.as_str(), "high");
        }
        let denied = yaml_of(&imported, "mfa_push_abuse_1");
        assert_eq!(denied["filter"]["factor"], "push");
        assert_eq!(denied["filter"]["outcome"], "denied");
        let fraud = yaml_of(&imported, "mfa_push_abuse_2");
        assert_eq!(fraud["filter"]["reason"], "user_reported_fraud");
    }

    #[test]
    fn event_count_fires_at_ten_failures_per_user() {
        let imported = import_fixture("brute_force.yml");
        // The base rule has generate: false: it only feeds the correlation.
        let ids: Vec<&str> = imported.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["sigma_brute_force"]);
        assert!(
            imported.notes.iter().any(|n| n.contains("Wrong password")),
            "{:?}",
            imported.notes
        );
        let y = yaml_of(&imported, "sigma_brute_force");
        assert_eq!(y["window"], "30m");
        assert_eq!(y["key"][0], "user");
        // ECS event.outcome: failure covers every native failure outcome.
        assert_eq!(
            y["filter"]["outcome"],
            serde_yaml_ng::from_str::<Value>("[blocked, denied, failure, timeout]").unwrap()
        );

        let fail = |i, user: &str| {
            logon(
                i,
                user,
                "203.0.113.9",
                Outcome::Failure,
                Reason::InvalidCredentials,
            )
        };
        // Nine failures: quiet; the tenth fires.
        let nine: Vec<AuthEvent> = (0..9).map(|i| fail(i, "aiko@example.jp")).collect();
        assert!(run(&imported, &nine).is_empty());
        let mut ten = nine.clone();
        ten.push(fail(9, "aiko@example.jp"));
        let alerts = run(&imported, &ten);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].rule_id, "sigma_brute_force");
        assert_eq!(alerts[0].entity.user.as_deref(), Some("aiko@example.jp"));
        // Ten failures spread over users, or over more than 30 minutes, or of another kind: quiet.
        let spread: Vec<AuthEvent> = (0..10)
            .map(|i| fail(i, &format!("u{}@example.jp", i % 2)))
            .collect();
        assert!(run(&imported, &spread).is_empty());
        let slow: Vec<AuthEvent> = (0..10).map(|i| fail(i * 4, "aiko@example.jp")).collect();
        assert!(run(&imported, &slow).is_empty());
        let unknown: Vec<AuthEvent> = (0..10)
            .map(|i| {
                logon(
                    i,
                    "ghost@example.jp",
                    "203.0.113.9",
                    Outcome::Failure,
                    Reason::UnknownUser,
                )
            })
            .collect();
        assert!(run(&imported, &unknown).is_empty());
    }

    #[test]
    fn value_count_fires_at_five_users_per_address() {
        let imported = import_fixture("password_spray.yml");
        assert_eq!(imported.rules.len(), 1);
        let y = yaml_of(&imported, "sigma_password_spray");
        assert_eq!(y["key"][0], "ip");
        assert_eq!(y["counters"]["distinct_user"]["distinct"], "user");
        assert_eq!(y["fire_when"]["all"][0], "distinct_user >= 5");
        assert_eq!(imported.rules[0].compiled.attack_technique, ["T1110.003"]);

        let spray = |n: i64, ip: &str| -> Vec<AuthEvent> {
            (0..n)
                .map(|i| {
                    logon(
                        i,
                        &format!("user{i}@example.jp"),
                        ip,
                        Outcome::Failure,
                        Reason::InvalidCredentials,
                    )
                })
                .collect()
        };
        let alerts = run(&imported, &spray(5, "203.0.113.50"));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].entity.ip, Some("203.0.113.50".parse().unwrap()));
        assert!(run(&imported, &spray(4, "203.0.113.50")).is_empty());
        // One user hammered twenty times is not a spray.
        let same_user: Vec<AuthEvent> = (0..20)
            .map(|i| {
                logon(
                    i,
                    "aiko@example.jp",
                    "203.0.113.50",
                    Outcome::Failure,
                    Reason::InvalidCredentials,
                )
            })
            .collect();
        assert!(run(&imported, &same_user).is_empty());
        // Five users from five addresses: no single source.
        let spread: Vec<AuthEvent> = (0..5)
            .map(|i| {
                logon(
                    i,
                    &format!("user{i}@example.jp"),
                    &format!("203.0.113.{i}"),
                    Outcome::Failure,
                    Reason::InvalidCredentials,
                )
            })
            .collect();
        assert!(run(&imported, &spread).is_empty());
    }

    #[test]
    fn temporal_becomes_an_after_sequence() {
        let imported = import_fixture("failed_then_success.yml");
        let ids: Vec<&str> = imported.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["failed_then_success_step1", "failed_then_success"]);
        let step = &imported.rules[0].compiled;
        assert_eq!(step.severity.as_str(), "info");
        let last = &imported.rules[1].compiled;
        assert_eq!(last.severity.as_str(), "high");
        let after = last.after.as_ref().unwrap();
        assert_eq!(after.rules, ["failed_then_success_step1"]);
        assert_eq!(after.within_ms, 3_600_000);
        assert_eq!(after.on, [KeyField::User]);

        let events = [
            logon(
                0,
                "aiko@example.jp",
                "203.0.113.9",
                Outcome::Failure,
                Reason::InvalidCredentials,
            ),
            logon(
                1,
                "aiko@example.jp",
                "203.0.113.9",
                Outcome::Failure,
                Reason::InvalidCredentials,
            ),
            logon(
                5,
                "aiko@example.jp",
                "203.0.113.9",
                Outcome::Success,
                Reason::None,
            ),
            // Another user's success without failures: no sequence.
            logon(
                6,
                "ken@example.jp",
                "203.0.113.9",
                Outcome::Success,
                Reason::None,
            ),
        ];
        let alerts = run(&imported, &events);
        let seq: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.rule_id == "failed_then_success")
            .collect();
        assert_eq!(seq.len(), 1);
        assert_eq!(seq[0].entity.user.as_deref(), Some("aiko@example.jp"));
        assert_eq!(seq[0].related.len(), 1);
        // A success two hours after the failures is outside the time span.
        let late = [
            logon(
                0,
                "aiko@example.jp",
                "203.0.113.9",
                Outcome::Failure,
                Reason::InvalidCredentials,
            ),
            logon(
                120,
                "aiko@example.jp",
                "203.0.113.9",
                Outcome::Success,
                Reason::None,
            ),
        ];
        assert!(
            run(&imported, &late)
                .iter()
                .all(|a| a.rule_id != "failed_then_success")
        );
    }

    #[test]
    fn temporal_may_start_with_an_event_count() {
        let (bf_path, bf) = fixture("brute_force.yml");
        let text = "title: Success after brute force\nname: bf_then_success\ncorrelation:\n  type: temporal\n  rules: [sigma_brute_force, ok_logon]\n  group-by: [user.name]\n  timespan: 1h\nlevel: critical\n---\ntitle: OK logon\nname: ok_logon\ndetection:\n  sel:\n    status: Success\n    activity_id: 1\n  condition: sel\n";
        let imported = import(&[(bf_path, bf), (PathBuf::from("seq.yml"), text.to_owned())])
            .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = imported.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["sigma_brute_force", "bf_then_success"]);
        assert!(
            imported
                .notes
                .iter()
                .any(|n| n.contains("ordered sequence"))
        );
        let mut events: Vec<AuthEvent> = (0..10)
            .map(|i| {
                logon(
                    i,
                    "aiko@example.jp",
                    "203.0.113.9",
                    Outcome::Failure,
                    Reason::InvalidCredentials,
                )
            })
            .collect();
        events.push(logon(
            20,
            "aiko@example.jp",
            "203.0.113.9",
            Outcome::Success,
            Reason::None,
        ));
        let alerts = run(&imported, &events);
        let ids: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
        assert_eq!(ids, ["sigma_brute_force", "bf_then_success"]);
    }

    #[test]
    fn unsupported_modifier_is_an_error_with_position() {
        let (path, text) = fixture("unsupported_modifier.yml");
        let err = import_text(&path, &text).unwrap_err().to_string();
        assert!(
            err.starts_with("tests/fixtures/sigma/unsupported_modifier.yml:9:5: "),
            "{err}"
        );
        assert!(err.contains("app|contains"), "{err}");
    }

    fn import_err(text: &str) -> String {
        import_text(Path::new("x.yml"), text)
            .unwrap_err()
            .to_string()
    }

    fn rule_with(detection: &str) -> String {
        format!("title: T\nname: t\ndetection:\n{detection}")
    }

    #[test]
    fn vocabulary_wildcards_expand_exactly() {
        let text = rule_with(
            "  sel:\n    reason|startswith: PUSH_\n    outcome: '*i*'\n  condition: sel\n",
        );
        let imported = import_text(Path::new("x.yml"), &text).unwrap();
        let y = yaml_of(&imported, "t");
        assert_eq!(
            y["filter"]["reason"],
            serde_yaml_ng::from_str::<Value>("[push_denied, push_timeout]").unwrap()
        );
        assert_eq!(
            y["filter"]["outcome"],
            serde_yaml_ng::from_str::<Value>("[denied, failure, timeout]").unwrap()
        );
    }

    #[test]
    fn negation_of_a_vocabulary_list_and_numeric_bounds() {
        let text = rule_with(
            "  sel:\n    activity: logon\n    context.speed_kmh|gt: 900\n  noise:\n    outcome: [failure, denied]\n  condition: sel and not noise\n",
        );
        let imported = import_text(Path::new("x.yml"), &text).unwrap();
        let y = yaml_of(&imported, "t");
        assert_eq!(
            y["filter"]["outcome"]["not"],
            serde_yaml_ng::from_str::<Value>("[denied, failure]").unwrap()
        );
        assert_eq!(y["filter"]["context.speed_kmh"]["gt"], 900.0);
    }

    #[test]
    fn parentheses_and_all_of_them() {
        let text = rule_with(
            "  a:\n    activity: logon\n  b:\n    outcome: failure\n  c:\n    outcome: denied\n  condition: a and (b or c)\n",
        );
        let imported = import_text(Path::new("x.yml"), &text).unwrap();
        assert_eq!(imported.rules.len(), 2);
        let text = rule_with(
            "  a:\n    activity: logon\n  b:\n    outcome: failure\n  condition: all of them\n",
        );
        let imported = import_text(Path::new("x.yml"), &text).unwrap();
        assert_eq!(imported.rules.len(), 1);
        let text = rule_with(
            "  a:\n    activity: logon\n  b:\n    outcome: failure\n  condition: 1 of them\n",
        );
        assert_eq!(
            import_text(Path::new("x.yml"), &text).unwrap().rules.len(),
            2
        );
    }

    #[test]
    fn rejections_name_the_problem_and_the_place() {
        let err = import_err(&rule_with(
            "  sel:\n    user.name: aiko\n  condition: sel\n",
        ));
        assert!(
            err.starts_with("x.yml:5:5: ") && err.contains("group-by"),
            "{err}"
        );
        let err = import_err(&rule_with("  sel:\n    colour: red\n  condition: sel\n"));
        assert!(err.contains("unknown field \"colour\""), "{err}");
        let err = import_err(&rule_with(
            "  sel:\n    activity: logon\n  condition: sel | count() > 5\n",
        ));
        assert!(
            err.starts_with("x.yml:6:3: ") && err.contains("correlation"),
            "{err}"
        );
        let err = import_err(&rule_with("  sel:\n    app: 'Off*'\n  condition: sel\n"));
        assert!(err.contains("wildcards"), "{err}");
        let err = import_err(&rule_with(
            "  sel:\n    activity|re: 'log.*'\n  condition: sel\n",
        ));
        assert!(err.contains("modifier |re"), "{err}");
        let err = import_err(&rule_with(
            "  sel:\n    context.speed_kmh|gt: 900\n  condition: not sel\n",
        ));
        assert!(err.contains("cannot be negated"), "{err}");
        let err = import_err(&rule_with("  sel:\n    activity: logn\n  condition: sel\n"));
        assert!(err.contains("matches no activity value"), "{err}");
        let err = import_err(&rule_with("  sel:\n    - logon\n  condition: sel\n"));
        assert!(err.contains("keyword"), "{err}");
        let err = import_err(&rule_with(
            "  sel:\n    activity: logon\n  condition: sel and missing\n",
        ));
        assert!(
            err.contains("unknown search identifier \"missing\""),
            "{err}"
        );
        let err = import_err(&rule_with(
            "  a:\n    outcome: success\n  b:\n    outcome: failure\n  condition: a and b\n",
        ));
        assert!(err.contains("never match"), "{err}");
        let err = import_err(
            "title: C\nname: c\ncorrelation:\n  type: event_count\n  rules: [nope]\n  group-by: [user.name]\n  timespan: 1h\n  condition: {gte: 1}\n",
        );
        assert!(
            err.starts_with("x.yml:5:11: ") && err.contains("unknown rule \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn correlation_rejections() {
        let base = "title: B\nname: b\ndetection:\n  s1:\n    outcome: failure\n  s2:\n    activity: logoff\n  condition: 1 of s*\n---\n";
        let corr = |body: &str| {
            format!(
                "{base}title: C\nname: c\ncorrelation:\n  type: event_count\n  rules: [b]\n  timespan: 1h\n{body}"
            )
        };
        let err = import_err(&corr("  group-by: [user.name]\n  condition: {gte: 3}\n"));
        assert!(err.contains("do not fold into one native filter"), "{err}");
        let merged = "title: B\nname: b\ndetection:\n  s1:\n    outcome: failure\n  s2:\n    outcome: denied\n  condition: 1 of s*\n---\n";
        let ok = format!(
            "{merged}title: C\nname: c\ncorrelation:\n  type: event_count\n  rules: [b]\n  group-by: [src.ip]\n  timespan: 1h\n  condition: {{gte: 3}}\n"
        );
        let imported = import_text(Path::new("x.yml"), &ok).unwrap();
        let y = yaml_of(&imported, "c");
        assert_eq!(
            y["filter"]["outcome"],
            serde_yaml_ng::from_str::<Value>("[denied, failure]").unwrap()
        );
        let corr = |body: &str| {
            format!(
                "{merged}title: C\nname: c\ncorrelation:\n  type: event_count\n  rules: [b]\n  timespan: 1h\n{body}"
            )
        };
        let err = import_err(&corr("  group-by: [outcome]\n  condition: {gte: 3}\n"));
        assert!(
            err.contains("cannot group or count by \"outcome\""),
            "{err}"
        );
        let err = import_err(&corr("  condition: {gte: 3}\n"));
        assert!(err.contains("group-by is required"), "{err}");
        let err = import_err(&corr("  group-by: [user.name]\n  condition: {lt: 3}\n"));
        assert!(err.contains("upper bound"), "{err}");
        let err = import_err(&corr("  group-by: [user.name]\n  condition: {}\n"));
        assert!(err.contains("needs gte or gt"), "{err}");
    }

    /// Regression: `{gte: 3, lte: 5}` fired at the third of ten failures; the upper bound was
    /// read on the deciding event only, so it never held the alert back.
    #[test]
    fn count_upper_bounds_are_rejected() {
        let corr = |condition: &str| {
            format!(
                "title: Wrong password\nname: wrong_pw\ndetection:\n  sel: {{activity: logon, outcome: failure}}\n  condition: sel\n---\ntitle: A few wrong passwords\nname: few_wrong\ncorrelation:\n  type: event_count\n  rules: [wrong_pw]\n  group-by: [user.name]\n  timespan: 30m\n  condition: {condition}\n"
            )
        };
        for condition in [
            "{gte: 3, lte: 5}",
            "{gt: 2, lt: 6}",
            "{eq: 3}",
            "{gte: 3, neq: 4}",
        ] {
            let err = import_err(&corr(condition));
            assert!(
                err.starts_with("x.yml:14:3: ")
                    && err.contains("\"A few wrong passwords\"")
                    && err.contains("upper bound")
                    && err.contains("cannot take the alert back"),
                "{condition}: {err}"
            );
        }
        // Lower bounds alone keep their exact meaning.
        let imported = import_text(Path::new("x.yml"), &corr("{gte: 3, gt: 3}")).unwrap();
        let y = yaml_of(&imported, "few_wrong");
        assert_eq!(
            y["fire_when"]["all"],
            serde_yaml_ng::from_str::<Value>("[events >= 3, events > 3]").unwrap()
        );
    }

    /// Regression: a temporal correlation grouped by user and address became `after.on: [user,
    /// ip]`, which joins on either field, so another user's success from the same address (or
    /// the same user's from another address) completed the sequence.
    #[test]
    fn temporal_grouped_by_several_fields_is_rejected() {
        let text = "title: Wrong password\nname: wrong_pw\ndetection:\n  sel: {activity: logon, outcome: failure}\n  condition: sel\n---\ntitle: Good password\nname: good_pw\ndetection:\n  sel: {activity: logon, outcome: success}\n  condition: sel\n---\ntitle: Failure then success\nname: fail_then_success\ncorrelation:\n  type: temporal_ordered\n  rules: [wrong_pw, good_pw]\n  group-by: [user.name, src.ip]\n  timespan: 10m\n";
        let err = import_err(text);
        assert!(
            err.starts_with("x.yml:18:3: ")
                && err.contains("\"Failure then success\"")
                && err.contains("user.name, src.ip")
                && err.contains("any one"),
            "{err}"
        );
        let unordered = text.replace("temporal_ordered", "temporal");
        assert!(import_err(&unordered).contains("any one"));
        // One field (or aliases of one) still imports.
        let one = text.replace("[user.name, src.ip]", "[user.name, user]");
        let imported = import_text(Path::new("x.yml"), &one).unwrap();
        let last = &yaml_of(&imported, "fail_then_success");
        assert_eq!(
            last["after"]["on"],
            serde_yaml_ng::from_str::<Value>("[user]").unwrap()
        );
    }

    /// Regression: `reason: '*'` expanded over every reason including `none`, so the constraint
    /// vanished and every logon matched; `not provider_risk: '*'` was "can never match".
    #[test]
    fn vocabulary_star_means_present_and_null_means_none() {
        let text = "title: Logon with a reason\nname: with_reason\ndetection:\n  sel:\n    activity: logon\n    reason: '*'\n  condition: sel\n---\ntitle: Push without a risk verdict\nname: push_no_risk\ndetection:\n  sel:\n    factor: push\n  with_risk:\n    provider_risk: '*'\n  condition: sel and not with_risk\n";
        let imported = import_text(Path::new("x.yml"), text).unwrap_or_else(|e| panic!("{e}"));
        let y = yaml_of(&imported, "with_reason");
        let reasons = y["filter"]["reason"].as_sequence().unwrap();
        assert_eq!(reasons.len(), Reason::ALL.len() - 1);
        assert!(!reasons.contains(&Value::from("none")));
        let y = yaml_of(&imported, "push_no_risk");
        assert_eq!(
            y["filter"]["provider_risk"]["not"],
            serde_yaml_ng::from_str::<Value>("[high, low, medium]").unwrap()
        );

        let success = logon(
            0,
            "aiko@example.jp",
            "203.0.113.9",
            Outcome::Success,
            Reason::None,
        );
        let failure = logon(
            1,
            "ken@example.jp",
            "203.0.113.9",
            Outcome::Failure,
            Reason::InvalidCredentials,
        );
        let push = |i, user: &str, risk| AuthEvent {
            activity: Activity::MfaVerify,
            factor: Factor::Push,
            provider_risk: risk,
            ..logon(i, user, "203.0.113.9", Outcome::Success, Reason::None)
        };
        let alerts = run(
            &imported,
            &[
                success,
                failure,
                push(2, "mei@example.jp", RiskLevel::None),
                push(3, "sora@example.jp", RiskLevel::High),
            ],
        );
        let fired: Vec<(&str, Option<&str>)> = alerts
            .iter()
            .map(|a| (a.rule_id.as_str(), a.entity.user.as_deref()))
            .collect();
        assert_eq!(
            fired,
            [
                ("with_reason", Some("ken@example.jp")),
                ("push_no_risk", Some("mei@example.jp")),
            ]
        );

        // null and '' are the empty value; their negation is the same as '*'.
        for empty in ["null", "''", "[null]"] {
            let imported = import_text(
                Path::new("x.yml"),
                &rule_with(&format!("  sel:\n    reason: {empty}\n  condition: sel\n")),
            )
            .unwrap_or_else(|e| panic!("{empty}: {e}"));
            assert_eq!(
                yaml_of(&imported, "t")["filter"]["reason"],
                "none",
                "{empty}"
            );
        }
        let negated = import_text(
            Path::new("x.yml"),
            &rule_with("  sel:\n    factor: null\n  condition: not sel\n"),
        )
        .unwrap();
        assert_eq!(
            yaml_of(&negated, "t")["filter"]["factor"]["not"],
            serde_yaml_ng::from_str::<Value>("[none]").unwrap()
        );
        // Text fields store a missing value as empty text.
        let imported = import_text(
            Path::new("x.yml"),
            &rule_with("  sel:\n    app: null\n  condition: sel\n"),
        )
        .unwrap();
        assert_eq!(yaml_of(&imported, "t")["filter"]["app"], "");
        // Wildcards and modifiers never reach `none`; fields that always have a value, flags and
        // numbers reject null.
        let err = import_err(&rule_with(
            "  sel:\n    reason|startswith: no\n  condition: sel\n",
        ));
        assert!(err.contains("reason: null"), "{err}");
        for (field, why) in [
            ("outcome", "always has a value"),
            ("src.internal", "null is not supported"),
            ("context.speed_kmh", "null is not supported"),
        ] {
            let err = import_err(&rule_with(&format!(
                "  sel:\n    {field}: null\n  condition: sel\n"
            )));
            assert!(err.contains(why), "{field}: {err}");
        }
    }
}
