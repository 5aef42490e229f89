//! Turning rule files into compiled rules: every name is resolved, every value checked, and
//! every error points at the file, line and column.

use crate::error::{RuleError, locate};
use crate::key::KeyField;
use crate::predicate::{NumField, Predicate};
use crate::spec::{ConditionSpec, RuleSpec, WindowSpec};
use crate::template::Template;
use authwatch_event::Lang;
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
    /// The window kind.
    pub window_kind: WindowKind,
    /// Window size, or the session gap (ms).
    pub window_ms: i64,
    /// The window as written (`10m`), for listings; summaries render `window_ms` in their
    /// own language.
    pub window_text: String,
    /// The aggregations.
    pub counters: Vec<Counter>,
    /// When to fire.
    pub condition: Condition,
    /// Sequence requirement.
    pub after: Option<After>,
    /// Negative sequence: no firing while such an incident is recent.
    pub unless: Option<After>,
    /// The counter whose events may fire the rule.
    pub trigger: Option<usize>,
    /// Event time to wait before deciding (0 = at once).
    pub settle_ms: i64,
    /// Counters the fire condition reads. When the condition cannot hold on zero counts, an
    /// event that matches none of them cannot make a new key fire, so no state is created for
    /// it: ordinary successes that a triage rule only uses as its trigger cost no memory.
    pub lazy_state: Option<Vec<bool>>,
    /// Quiet time that ends an incident (ms).
    pub suppress_ms: i64,
    /// Counters whose events are evidence.
    pub evidence: Vec<usize>,
    /// Counters the fire condition does not read: only shown (summaries, metrics), so counted
    /// only when an alert is built.
    pub shown_only: Vec<bool>,
    /// Summary templates (en, ja).
    pub summary: (Template, Template),
    /// Steps (en, ja), fixed text.
    pub steps: (Vec<String>, Vec<String>),
    /// Where the rule came from.
    pub source: PathBuf,
}

impl CompiledRule {
    /// How much event time the rule reads back from a deciding event: its window, how far back
    /// an `after` or `unless` incident counts, and its `settle` time, whichever is longest. A
    /// rule that starts with empty state (a new version after an upgrade) is whole again after
    /// this long; the window alone understates it (`credential_compromise` has a 1m window but
    /// follows sprays of up to 3h before).
    pub fn history_ms(&self) -> i64 {
        let within = |seq: &Option<After>| seq.as_ref().map_or(0, |a| a.within_ms);
        self.window_ms
            .max(within(&self.after))
            .max(within(&self.unless))
            .max(self.settle_ms)
    }
}

/// How a rule's window moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `size` before each event.
    Sliding,
    /// Fixed, aligned buckets of `size` (epoch-aligned, UTC); one incident per bucket.
    Tumbling,
    /// Activity separated by less than `gap`.
    Session,
}

/// One compiled aggregation.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Its name in conditions and templates.
    pub name: String,
    /// Which filtered events it counts.
    pub predicate: Predicate,
    /// What it computes.
    pub aggregate: Aggregate,
    /// How many recent events (or distinct values) it keeps per key: the largest threshold that
    /// reads it, plus one; more when it is used in a ratio or the rule reads `span`.
    pub cap: usize,
}

impl Counter {
    /// The field whose values it keeps per entry (distinct, first, last).
    pub fn value_field(&self) -> Option<KeyField> {
        match self.aggregate {
            Aggregate::Distinct(f) | Aggregate::First(f) | Aggregate::Last(f) => Some(f),
            _ => None,
        }
    }

    /// The distinct field, for distinct counters.
    pub fn distinct(&self) -> Option<KeyField> {
        match self.aggregate {
            Aggregate::Distinct(f) => Some(f),
            _ => None,
        }
    }
}

/// What a counter computes over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Matching events.
    Count,
    /// Distinct values of a field (exact up to the bound, then a HyperLogLog sketch).
    Distinct(KeyField),
    /// The smallest value of a numeric field.
    Min(NumField),
    /// The largest value of a numeric field.
    Max(NumField),
    /// A field's value in the first counted event (for metrics and summaries).
    First(KeyField),
    /// A field's value in the last counted event.
    Last(KeyField),
}

/// How many events `first`/`last` counters keep per key: beyond it, `first` is the earliest of
/// the most recent ones.
pub const FIRST_LAST_CAP: usize = 64;

/// The most a counter keeps per key when it is used in a ratio or span: ratios need exact
/// counts beyond any threshold. Beyond it, counts saturate (and a ratio uses the saturated
/// value), which bounds memory per key.
pub const EXACT_CAP: usize = 4096;

/// `any`/`all` of comparisons.
#[derive(Debug, Clone)]
pub struct Condition {
    /// True for `all`.
    pub all: bool,
    /// The comparisons.
    pub comparisons: Vec<Comparison>,
}

/// What a comparison reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// A counter's value.
    Counter(usize),
    /// Milliseconds between the first and the last counted event in the window.
    Span,
}

/// `operand [/ operand] op value`.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// Left-hand side.
    pub left: Operand,
    /// Optional divisor (a ratio); a zero divisor makes the comparison false.
    pub divisor: Option<Operand>,
    /// Operator.
    pub op: Op,
    /// Right-hand side (a number, or milliseconds for a duration).
    pub value: f64,
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
    fn holds(self, left: f64, right: f64) -> bool {
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
    /// Whether the condition holds for these counter values and span (ms).
    pub fn holds(&self, counts: &[f64], span_ms: i64) -> bool {
        let read = |o: Operand| match o {
            Operand::Counter(i) => counts.get(i).copied().unwrap_or(0.0),
            Operand::Span => span_ms as f64,
        };
        let mut results = self.comparisons.iter().map(|c| {
            let left = read(c.left);
            match c.divisor.map(read) {
                Some(0.0) => false,
                Some(d) => c.op.holds(left / d, c.value),
                None => c.op.holds(left, c.value),
            }
        });
        if self.all {
            results.all(|r| r)
        } else {
            results.any(|r| r)
        }
    }

    /// Whether any comparison reads `span`.
    pub fn reads_span(&self) -> bool {
        self.comparisons
            .iter()
            .any(|c| c.left == Operand::Span || c.divisor == Some(Operand::Span))
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
    /// `unless` with `scope: events`: every counted event is checked, not only the deciding one.
    pub per_event: bool,
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
    if let Some(field) = filter.conflict(&Predicate::any()) {
        return Err(invalid(
            &field,
            format!("filter {field}: no value is left, so the rule can never match"),
        ));
    }
    let (window_kind, window_text) = match &spec.window {
        WindowSpec::Sliding(size) => (WindowKind::Sliding, size.clone()),
        WindowSpec::Kind(k) => {
            let kind = match k.kind.as_str() {
                "sliding" => WindowKind::Sliding,
                "tumbling" => WindowKind::Tumbling,
                "session" => WindowKind::Session,
                other => {
                    return Err(invalid(
                        other,
                        format!(
                            "unknown window kind {other:?}; expected sliding, tumbling or session"
                        ),
                    ));
                }
            };
            let text = match (kind, &k.size, &k.gap) {
                (WindowKind::Session, None, Some(gap)) => gap.clone(),
                (WindowKind::Sliding | WindowKind::Tumbling, Some(size), None) => size.clone(),
                _ => {
                    return Err(invalid(
                        "window",
                        "sliding and tumbling windows take size:, session windows take gap:"
                            .to_owned(),
                    ));
                }
            };
            (kind, text)
        }
    };
    let window_ms = parse_duration_ms(&window_text).map_err(|m| invalid("window", m))?;
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
    let mut counters = spec
        .counters
        .iter()
        .map(|(name, c)| {
            let predicate = Predicate::compile(&c.filter).map_err(|(field, msg)| {
                invalid(&field, format!("counter {name}, {field}: {msg}"))
            })?;
            // The counter sees only events the filter let through.
            if let Some(field) = filter.conflict(&predicate) {
                return Err(invalid(
                    &field,
                    format!(
                        "counter {name}, {field}: no event the rule's filter accepts can match it, so it can never count"
                    ),
                ));
            }
            let key_field = |d: &String, what: &str| {
                KeyField::parse(d).ok_or_else(|| {
                    invalid(d, format!("counter {name}: {what} takes a key field, not {d:?}"))
                })
            };
            let num_field = |d: &String, what: &str| {
                NumField::parse(d).ok_or_else(|| {
                    invalid(d, format!("counter {name}: {what} takes a numeric field (context.speed_kmh, context.distance_km), not {d:?}"))
                })
            };
            let chosen = [&c.distinct, &c.min, &c.max, &c.first, &c.last]
                .iter()
                .filter(|x| x.is_some())
                .count();
            if chosen > 1 {
                return Err(invalid(
                    name,
                    format!("counter {name}: choose one of distinct, min, max, first, last"),
                ));
            }
            let (aggregate, cap) = if let Some(d) = &c.distinct {
                (Aggregate::Distinct(key_field(d, "distinct")?), 1)
            } else if let Some(d) = &c.min {
                (Aggregate::Min(num_field(d, "min")?), EXACT_CAP)
            } else if let Some(d) = &c.max {
                (Aggregate::Max(num_field(d, "max")?), EXACT_CAP)
            } else if let Some(d) = &c.first {
                (Aggregate::First(key_field(d, "first")?), FIRST_LAST_CAP)
            } else if let Some(d) = &c.last {
                (Aggregate::Last(key_field(d, "last")?), FIRST_LAST_CAP)
            } else {
                (Aggregate::Count, 1)
            };
            Ok(Counter {
                name: name.clone(),
                predicate,
                aggregate,
                cap,
            })
        })
        .collect::<Result<Vec<_>, RuleError>>()?;
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
    for c in &comparisons {
        for operand in [Some(c.left), c.divisor].into_iter().flatten() {
            if let Operand::Counter(i) = operand
                && matches!(
                    counters[i].aggregate,
                    Aggregate::First(_) | Aggregate::Last(_)
                )
            {
                return Err(invalid(
                    &counters[i].name,
                    format!(
                        "counter {} holds a value, not a number: use it in summaries, not in fire_when",
                        counters[i].name
                    ),
                ));
            }
        }
    }
    let condition = Condition { all, comparisons };
    let exact_all = condition.reads_span();
    for c in &condition.comparisons {
        for (operand, in_ratio) in [(Some(c.left), c.divisor.is_some()), (c.divisor, true)] {
            if let Some(Operand::Counter(i)) = operand {
                let need = if in_ratio || exact_all {
                    EXACT_CAP
                } else {
                    (c.value.max(0.0) as usize).saturating_add(1).min(EXACT_CAP)
                };
                if matches!(
                    counters[i].aggregate,
                    Aggregate::Count | Aggregate::Distinct(_)
                ) {
                    counters[i].cap = counters[i].cap.max(need);
                }
            }
        }
    }
    // A counter the condition does not read is only shown (summaries, metrics): it needs no
    // threshold's worth of events, but its exact value up to the bound, or every alert would
    // show it as 1.
    let read: Vec<bool> = (0..counters.len())
        .map(|i| {
            condition.comparisons.iter().any(|c| {
                [Some(c.left), c.divisor]
                    .into_iter()
                    .flatten()
                    .any(|o| o == Operand::Counter(i))
            })
        })
        .collect();
    let shown_only: Vec<bool> = read.iter().map(|r| !r).collect();
    for (c, read) in counters.iter_mut().zip(&read) {
        let shown_only = !read && matches!(c.aggregate, Aggregate::Count | Aggregate::Distinct(_));
        if exact_all || shown_only {
            c.cap = EXACT_CAP;
        }
    }
    let sequence = |a: &crate::spec::AfterSpec, what: &str| -> Result<After, RuleError> {
        if a.rules.is_empty() {
            return Err(invalid(
                what,
                format!("{what}.rules needs at least one rule id"),
            ));
        }
        let per_event = match a.scope.as_deref() {
            None | Some("decision") => false,
            Some("events") if what == "unless" => true,
            Some(other) => {
                return Err(invalid(
                    "scope",
                    format!(
                        "{what}.scope {other:?}: expected decision or events (events only for unless)"
                    ),
                ));
            }
        };
        Ok(After {
            rules: a.rules.clone(),
            within_ms: parse_duration_ms(&a.within).map_err(|m| invalid("within", m))?,
            on: match &a.on {
                Some(on) => key_fields(on, "on")?,
                None => key.clone(),
            },
            per_event,
        })
    };
    let after = spec
        .after
        .as_ref()
        .map(|a| sequence(a, "after"))
        .transpose()?;
    let unless = spec
        .unless
        .as_ref()
        .map(|a| sequence(a, "unless"))
        .transpose()?;
    let trigger = spec
        .trigger
        .as_ref()
        .map(|t| {
            counter_names
                .iter()
                .position(|c| c == t)
                .ok_or_else(|| invalid(t, format!("trigger names unknown counter {t:?}")))
        })
        .transpose()?;
    let settle_ms = match &spec.settle {
        Some(s) => parse_duration_ms(s).map_err(|m| invalid("settle", m))?,
        None => 0,
    };
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
        Template::compile(&spec.summary.en, &counter_names, Lang::En)
            .map_err(|m| invalid("summary", m))?,
        Template::compile(&spec.summary.ja, &counter_names, Lang::Ja)
            .map_err(|m| invalid("summary", m))?,
    );
    if spec.steps.en.is_empty() || spec.steps.en.len() != spec.steps.ja.len() {
        return Err(invalid(
            "steps",
            "steps need the same non-zero number of English and Japanese entries".to_owned(),
        ));
    }
    let lazy_state = {
        let zeros = vec![0.0; counters.len()];
        let mut read = vec![false; counters.len()];
        for c in &condition.comparisons {
            for operand in [Some(c.left), c.divisor].into_iter().flatten() {
                if let Operand::Counter(i) = operand {
                    read[i] = true;
                }
            }
        }
        (!condition.holds(&zeros, 0) && !condition.reads_span() && after.is_none()).then_some(read)
    };
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
        window_kind,
        window_ms,
        window_text,
        counters,
        condition,
        after,
        unless,
        trigger,
        settle_ms,
        lazy_state,
        suppress_ms,
        evidence,
        shown_only,
        summary,
        steps: (spec.steps.en, spec.steps.ja),
        source: path.to_owned(),
    })
}

fn parse_comparison(text: &str, counters: &[String]) -> Result<Comparison, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (left, divisor, op, value) = match parts.as_slice() {
        [l, op, v] => (*l, None, *op, *v),
        [l, "/", d, op, v] => (*l, Some(*d), *op, *v),
        _ => {
            return Err(format!(
                "comparison {text:?} must read `<counter> <op> <value>` or `<counter> / <counter> <op> <value>`"
            ));
        }
    };
    let operand = |name: &str| -> Result<Operand, String> {
        if name == "span" {
            return Ok(Operand::Span);
        }
        counters
            .iter()
            .position(|c| c == name)
            .map(Operand::Counter)
            .ok_or_else(|| {
                format!(
                    "comparison {text:?} names unknown counter {name:?}; counters: {} (and span)",
                    counters.join(", ")
                )
            })
    };
    let left = operand(left)?;
    let divisor = divisor.map(operand).transpose()?;
    let op = match op {
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
    // `span` compares with durations (`5m`); counters and ratios with numbers.
    let value = if left == Operand::Span && divisor.is_none() {
        parse_duration_ms(value).map(|ms| ms as f64)?
    } else {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("comparison {text:?}: {value:?} is not a number"))?
    };
    Ok(Comparison {
        left,
        divisor,
        op,
        value,
    })
}
