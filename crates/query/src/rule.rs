//! A windowed SQL detection: a `.sql` file whose leading block comment is a YAML header.
//!
//! ```sql
//! /*---
//! id: credential_stuffing
//! version: 1
//! severity: high
//! window: { kind: session, gap: 15m }
//! key: [ip]
//! ...
//! ---*/
//! SELECT … FROM events …
//! ```

use crate::QueryError;
use crate::udf::duration_text_ms;
use authwatch_event::{CauseClass, Localized, LocalizedSteps, Severity};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How a detection's events are cut into windows (event time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSpec {
    /// Aligned, non-overlapping windows of `size` ms (UTC epoch).
    Tumbling {
        /// Window length (ms).
        size_ms: i64,
    },
    /// Windows of `size` ms starting every `slide` ms.
    Hopping {
        /// Window length (ms).
        size_ms: i64,
        /// Distance between window starts (ms).
        slide_ms: i64,
    },
    /// Per key: a window lasts while the key's events come at most `gap` ms apart.
    Session {
        /// Longest quiet time inside one session (ms).
        gap_ms: i64,
        /// A session that goes on is decided in parts: once the part not decided yet spans
        /// more than this (ms), its rows are decided, with the `gap` of rows before the part
        /// as context (header `max_span`, default `gap`). Without it a key with steady
        /// traffic (a busy tenant) would never be decided.
        max_span_ms: i64,
    },
}

impl WindowSpec {
    /// Event time a window may still receive events after its start: how far back the
    /// buffered events must reach.
    pub fn span_ms(&self) -> i64 {
        match self {
            WindowSpec::Tumbling { size_ms } | WindowSpec::Hopping { size_ms, .. } => *size_ms,
            WindowSpec::Session { gap_ms, .. } => *gap_ms,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowHeader {
    kind: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    slide: Option<String>,
    #[serde(default)]
    gap: Option<String>,
    #[serde(default)]
    max_span: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    id: String,
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: Option<String>,
    severity: Severity,
    cause_class: CauseClass,
    #[serde(default)]
    attack_technique: Vec<String>,
    window: WindowHeader,
    key: Vec<String>,
    #[serde(default)]
    suppress: Option<String>,
    summary: Localized,
    steps: LocalizedSteps,
}

fn one() -> u32 {
    1
}

/// The key fields a detection may group by, as the compiled rules name them.
pub(crate) const KEY_FIELDS: &[&str] = &["user", "ip", "tenant", "asn", "device", "country", "app"];

/// One loaded SQL detection: its header and its query text.
#[derive(Debug, Clone)]
pub struct SqlRule {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Rule id: part of `alert_id`.
    pub id: String,
    /// Version: part of `alert_id`; bump it when the logic changes.
    pub version: u32,
    /// What it finds.
    pub description: String,
    /// Detection category (defaults to the id).
    pub category: String,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Cause class of its alerts.
    pub cause_class: CauseClass,
    /// ATT&CK technique ids.
    pub attack_technique: Vec<String>,
    /// The window.
    pub window: WindowSpec,
    /// Key fields: result columns of these names identify the entity.
    pub key: Vec<String>,
    /// An incident absorbs further findings of its key until this much quiet (ms).
    pub suppress_ms: i64,
    /// Summary templates.
    pub summary: Localized,
    /// Steps.
    pub steps: LocalizedSteps,
    /// The query (header removed).
    pub sql: String,
    /// Where the query starts in the file: line and column (1-based) of its first character,
    /// so that positions in the query can be reported as positions in the file.
    pub sql_start: (usize, usize),
}

impl SqlRule {
    /// Parses a detection from its text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<SqlRule, QueryError> {
        let bad = |message: String| QueryError::Rule {
            path: path.to_owned(),
            message,
        };
        let trimmed = text.trim_start();
        let Some(rest) = trimmed.strip_prefix("/*---") else {
            return Err(bad(
                "missing header: the file must start with a /*--- … ---*/ YAML block (id, window, key, severity, …)".into(),
            ));
        };
        let Some(end) = rest.find("---*/") else {
            return Err(bad("unterminated header: no closing ---*/".into()));
        };
        let header_text = &rest[..end];
        let after_header = &rest[end + 5..];
        let sql = after_header.trim().trim_end_matches(';').to_owned();
        // The query's first character in the file: DataFusion counts lines and columns from
        // the start of the query, an author reads them from the top of the file.
        let sql_at = text.len() - after_header.trim_start().len();
        let before = &text[..sql_at];
        let sql_start = (
            before.matches('\n').count() + 1,
            before
                .rsplit('\n')
                .next()
                .map_or(0, |line| line.chars().count())
                + 1,
        );
        // Header line numbers: the YAML starts on the file's line of "/*---".
        let offset_lines = text[..text.len() - trimmed.len()].matches('\n').count();
        let header: Header = serde_yaml_ng::from_str(header_text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {}, column {}: ", l.line() + offset_lines, l.column()))
                .unwrap_or_default();
            bad(format!("header: {at}{e}"))
        })?;
        if header.id.is_empty()
            || !header
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(bad(format!(
                "header: id {:?} must be [a-z0-9_]+",
                header.id
            )));
        }
        let dur = |field: &str, v: &Option<String>| -> Result<i64, QueryError> {
            let Some(v) = v else {
                return Err(bad(format!(
                    "header: window.{field} is required for this kind"
                )));
            };
            duration_text_ms(v)
                .ok_or_else(|| bad(format!("header: window.{field}: bad duration {v:?}")))
        };
        let w = &header.window;
        let window = match w.kind.as_str() {
            "tumbling" => WindowSpec::Tumbling {
                size_ms: dur("size", &w.size)?,
            },
            "hopping" => {
                let size_ms = dur("size", &w.size)?;
                let slide_ms = dur("slide", &w.slide)?;
                if slide_ms > size_ms || size_ms % slide_ms != 0 {
                    return Err(bad(
                        "header: window.slide must divide window.size (and not exceed it)".into(),
                    ));
                }
                WindowSpec::Hopping { size_ms, slide_ms }
            }
            "session" => {
                let gap_ms = dur("gap", &w.gap)?;
                let max_span_ms = match &w.max_span {
                    Some(_) => dur("max_span", &w.max_span)?,
                    None => gap_ms,
                };
                WindowSpec::Session {
                    gap_ms,
                    max_span_ms,
                }
            }
            other => {
                return Err(bad(format!(
                    "header: window.kind {other:?}: expected tumbling, hopping or session"
                )));
            }
        };
        if w.max_span.is_some() && w.kind != "session" {
            return Err(bad(
                "header: window.max_span is for session windows only".into()
            ));
        }
        if header.key.is_empty() {
            return Err(bad("header: key must name at least one field".into()));
        }
        for k in &header.key {
            if !KEY_FIELDS.contains(&k.as_str()) {
                return Err(bad(format!(
                    "header: key {k:?}: expected one of {}",
                    KEY_FIELDS.join(", ")
                )));
            }
        }
        let suppress_ms = match &header.suppress {
            Some(s) => duration_text_ms(s)
                .ok_or_else(|| bad(format!("header: suppress: bad duration {s:?}")))?,
            None => window.span_ms(),
        };
        if header.steps.en.len() != header.steps.ja.len() {
            return Err(bad(
                "header: steps.en and steps.ja must have the same number of steps".into(),
            ));
        }
        if sql.is_empty() {
            return Err(bad("no query after the header".into()));
        }
        Ok(SqlRule {
            path: path.to_owned(),
            category: header.category.unwrap_or_else(|| header.id.clone()),
            id: header.id,
            version: header.version,
            description: header.description,
            severity: header.severity,
            cause_class: header.cause_class,
            attack_technique: header.attack_technique,
            window,
            key: header.key,
            suppress_ms,
            summary: header.summary,
            steps: header.steps,
            sql,
            sql_start,
        })
    }

    /// Loads one file.
    pub fn load(path: &Path) -> Result<SqlRule, QueryError> {
        let text = std::fs::read_to_string(path).map_err(|source| QueryError::Io {
            path: path.to_owned(),
            source,
        })?;
        SqlRule::parse(path, &text)
    }
}

/// Every `.sql` file of a directory, sorted by name (a file is loaded as one detection).
pub fn load_dir(dir: &Path) -> Result<Vec<SqlRule>, QueryError> {
    let io = |source| QueryError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("sql"))
        {
            paths.push(path);
        }
    }
    paths.sort();
    // `sql.enabled` with no detection runs nothing, silently: a wrong directory, not a choice.
    if paths.is_empty() {
        return Err(QueryError::Rule {
            path: dir.to_owned(),
            message: "no detections (*.sql files) in this directory; subdirectories are not read"
                .to_owned(),
        });
    }
    let rules = paths
        .iter()
        .map(|p| SqlRule::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(QueryError::Rule {
            path: dir.to_owned(),
            message: format!("two detections have the id {:?}", w[0]),
        });
    }
    Ok(rules)
}
