//! Turning rule files into compiled rules: every name is resolved, every value checked, and
//! every error points at the file, line and column.

use crate::error::{RuleError, locate};
use crate::key::KeyField;
use crate::predicate::Predicate;
use crate::spec::{ConditionSpec, RuleSpec};
use crate::template::Template;
use authwatch_event::{CauseClass, Severity};
use std::path::{Path, PathBuf};

/// A rule ready to run.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Rule id.
    pub id: String,
    /// Version.
    pub version: u32,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Severity.
    pub severity: Severity,
    /// Cause class.
    pub cause_class: CauseClass,
    /// ATT&CK ids.
    pub attack_technique: Vec<String>,
    /// Group-by fields.
    pub key: Vec<KeyField>,
    /// Which events the rule looks at.
    pub filter: Predicate,
    /// Window size (ms) and its text.
    pub window_ms: i64,
    /// The window as written.
    pub window_text: String,
    /// Counter names and filters.
    pub counters: Vec<(String, Predicate)>,
    /// How many recent events each counter keeps (the largest threshold that reads it, at least
    /// one); bounds per-key memory.
    pub counter_caps: Vec<usize>,
    /// When to fire.
    pub condition: Condition,
    /// Sequence requirement.
    pub after: Option<After>,
    /// Quiet time that ends an incident (ms).
    pub suppress_ms: i64,
    /// Counters whose events are evidence.
    pub evidence: Vec<usize>,
    /// Summary templates (en, ja).
    pub summary: (Template, Template),
    /// Steps (en, ja), fixed text.
    pub steps: (Vec<String>, Vec<String>),
    /// Where the rule came from.
    pub source: PathBuf,
}

/// `any`/`all` of comparisons.
#[derive(Debug, Clone)]
pub struct Condition {
    /// True for `all`.
    pub all: bool,
    /// The comparisons.
    pub comparisons: Vec<Comparison>,
}

/// `counter op value`.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// Counter index.
    pub counter: usize,
    /// Operator.
    pub op: Op,
    /// Right-hand side.
    pub value: u64,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
}

impl Op {
    fn holds(self, left: u64, right: u64) -> bool {
        match self {
            Op::Ge => left >= right,
            Op::Gt => left > right,
            Op::Le => left <= right,
            Op::Lt => left < right,
            Op::Eq => left == right,
        }
    }
}

impl Condition {
    /// Whether the condition holds for these counts.
    pub fn holds(&self, counts: &[u64]) -> bool {
        let mut results = self.comparisons.iter().map(|c| {
            c.op.holds(counts.get(c.counter).copied().unwrap_or(0), c.value)
        });
        if self.all {
            results.all(|r| r)
        } else {
            results.any(|r| r)
        }
    }
}

/// A compiled `after:`.
#[derive(Debug, Clone)]
pub struct After {
    /// Rule ids (resolved to indices by the engine).
    pub rules: Vec<String>,
    /// Window after the referenced incident's last event (ms).
    pub within_ms: i64,
    /// Entity fields that must match.
    pub on: Vec<KeyField>,
}

/// Parses a duration such as `10m`, `1h 30m`, `45s`.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("bad duration {text:?}: {e}"))?;
    i64::try_from(d.as_millis()).map_err(|_| format!("duration {text:?} is too long"))
}

/// Loads every rule document in a YAML text.
pub fn compile_text(path: &Path, text: &str) -> Result<Vec<CompiledRule>, RuleError> {
    let mut rules = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let spec: RuleSpec = serde::Deserialize::deserialize(document).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            RuleError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        rules.push(compile_spec(path, text, spec)?);
    }
    Ok(rules)
}

fn compile_spec(path: &Path, text: &str, spec: RuleSpec) -> Result<CompiledRule, RuleError> {
    // Semantic errors are found after parsing, when positions are gone; point at the first
    // occurrence of the offending token instead.
    let invalid = |needle: &str, message: String| {
        let (line, column) = locate(text, needle);
        RuleError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: format!("rule {}: {message}", spec.id),
        }
    };
    if spec.id.is_empty()
        || !spec
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(
            "id:",
            format!("rule id {:?} must match [a-z0-9_]+", spec.id),
        ));
    }
    let severity: Severity = spec
        .severity
        .parse()
        .map_err(|e: authwatch_event::VocabError| {
            invalid(&format!("severity: {}", spec.severity), e.to_string())
        })?;
    let cause_class: CauseClass =
        spec.cause_class
            .parse()
            .map_err(|e: authwatch_event::VocabError| {
                invalid(&format!("cause_class: {}", spec.cause_class), e.to_string())
            })?;
    let key_fields = |names: &[String], what: &str| -> Result<Vec<KeyField>, RuleError> {
        if names.is_empty() {
            return Err(invalid(what, format!("{what} needs at least one field")));
        }
        names
            .iter()
            .map(|n| {
                KeyField::parse(n).ok_or_else(|| {
                    let all: Vec<&str> = KeyField::ALL.iter().map(|(_, n)| *n).collect();
                    invalid(
                        n,
                        format!(
                            "unknown key field {n:?}; expected one of: {}",
                            all.join(", ")
                        ),
                    )
                })
            })
            .collect()
    };
    let key = key_fields(&spec.key, "key")?;
    let filter = Predicate::compile(&spec.filter)
        .map_err(|(field, msg)| invalid(&field, format!("filter {field}: {msg}")))?;
    let window_ms = parse_duration_ms(&spec.window).map_err(|m| invalid("window", m))?;
    if window_ms <= 0 {
        return Err(invalid("window", "window must be positive".to_owned()));
    }
    let counter_names: Vec<String> = spec.counters.keys().cloned().collect();
    if counter_names.is_empty() {
        return Err(invalid(
            "counters",
            "a rule needs at least one counter".to_owned(),
        ));
    }
    let counters = spec
        .counters
        .iter()
        .map(|(name, f)| {
            Predicate::compile(f)
                .map(|p| (name.clone(), p))
                .map_err(|(field, msg)| invalid(&field, format!("counter {name}, {field}: {msg}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (all, texts) = match &spec.fire_when {
        ConditionSpec {
            any: Some(v),
            all: None,
        } => (false, v),
        ConditionSpec {
            any: None,
            all: Some(v),
        } => (true, v),
        _ => {
            return Err(invalid(
                "fire_when",
                "fire_when takes exactly one of any: or all:".to_owned(),
            ));
        }
    };
    if texts.is_empty() {
        return Err(invalid(
            "fire_when",
            "fire_when needs at least one comparison".to_owned(),
        ));
    }
    let comparisons = texts
        .iter()
        .map(|t| parse_comparison(t, &counter_names).map_err(|m| invalid(t, m)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut counter_caps = vec![1usize; counters.len()];
    for c in &comparisons {
        let need = usize::try_from(c.value)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        counter_caps[c.counter] = counter_caps[c.counter].max(need.min(100_000));
    }
    let condition = Condition { all, comparisons };
    let after = spec
        .after
        .as_ref()
        .map(|a| -> Result<After, RuleError> {
            if a.rules.is_empty() {
                return Err(invalid(
                    "after",
                    "after.rules needs at least one rule id".to_owned(),
                ));
            }
            Ok(After {
                rules: a.rules.clone(),
                within_ms: parse_duration_ms(&a.within).map_err(|m| invalid("within", m))?,
                on: match &a.on {
                    Some(on) => key_fields(on, "on")?,
                    None => key.clone(),
                },
            })
        })
        .transpose()?;
    let suppress_ms = match &spec.suppress {
        Some(s) => parse_duration_ms(s).map_err(|m| invalid("suppress", m))?,
        None => window_ms,
    };
    let evidence = match &spec.evidence {
        None => (0..counters.len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                counter_names
                    .iter()
                    .position(|c| c == n)
                    .ok_or_else(|| invalid(n, format!("evidence names unknown counter {n:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let summary = (
        Template::compile(&spec.summary.en, &counter_names).map_err(|m| invalid("summary", m))?,
        Template::compile(&spec.summary.ja, &counter_names).map_err(|m| invalid("summary", m))?,
    );
    if spec.steps.en.is_empty() || spec.steps.en.len() != spec.steps.ja.len() {
        return Err(invalid(
            "steps",
            "steps need the same non-zero number of English and Japanese entries".to_owned(),
        ));
    }
    Ok(CompiledRule {
        category: spec.category.clone().unwrap_or_else(|| spec.id.clone()),
        id: spec.id,
        version: spec.version,
        description: spec.description,
        severity,
        cause_class,
        attack_technique: spec.attack_technique,
        key,
        filter,
        window_ms,
        window_text: spec.window,
        counters,
        counter_caps,
        condition,
        after,
        suppress_ms,
        evidence,
        summary,
        steps: (spec.steps.en, spec.steps.ja),
        source: path.to_owned(),
    })
}

fn parse_comparison(text: &str, counters: &[String]) -> Result<Comparison, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [name, op, value] = parts.as_slice() else {
        return Err(format!(
            "comparison {text:?} must read `<counter> <op> <number>`"
        ));
    };
    let counter = counters.iter().position(|c| c == name).ok_or_else(|| {
        format!(
            "comparison {text:?} names unknown counter {name:?}; counters: {}",
            counters.join(", ")
        )
    })?;
    let op = match *op {
        ">=" => Op::Ge,
        ">" => Op::Gt,
        "<=" => Op::Le,
        "<" => Op::Lt,
        "==" => Op::Eq,
        other => {
            return Err(format!(
                "unknown operator {other:?}; expected >=, >, <=, < or =="
            ));
        }
    };
    let value = value
        .parse()
        .map_err(|_| format!("comparison {text:?}: {value:?} is not a whole number"))?;
    Ok(Comparison { counter, op, value })
}
