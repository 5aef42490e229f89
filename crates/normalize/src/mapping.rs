//! Declarative custom mappings: a YAML file that turns any other JSON log into events, with no
//! code. Each event field names a JSON pointer into the line, a constant, or both (the constant
//! is the default when the pointer finds nothing); vocabulary fields add a value map; the time
//! names its format (`rfc3339`, `epoch_s`, `epoch_ms`, or a strftime pattern read as UTC
//! unless it has `%z`).
//!
//! ```yaml
//! provider: jumpcloud
//! fields:
//!   event_id: /id
//!   time: { path: /timestamp, format: rfc3339 }
//!   user.name: /initiated_by/username
//!   activity: { path: /event_type, map: { user_login_attempt: logon }, other: other }
//!   outcome: { path: /success, map: { "true": success, "false": failure } }
//! ```
//!
//! Values are found with JSON pointers over a parsed document, so a mapping costs a
//! `serde_json::Value` per line: fine for the long tail of providers, while the built-in
//! formats keep their borrowed, typed parsers.

use crate::common;
use crate::{Limits, Normalizer, RejectKind, Rejection};
use authwatch_event::{Activity, AuthEvent, DeviceType, Factor, Outcome, Reason, RiskLevel, Text};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A mapping file that cannot be loaded. Whose fault: the mapping author's; not retryable.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("{path}: cannot read mapping file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid mapping (YAML syntax, unknown key, bad pointer, unknown value).
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// A loaded mapping: a [`Normalizer`] for one custom JSON log format.
#[derive(Debug, Clone)]
pub struct Mapping {
    provider: Text,
    fields: Fields,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The `provider` value of every event.
    provider: String,
    fields: Fields,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    event_id: TextSpec,
    time: TimeSpec,
    #[serde(default)]
    tenant: Option<TextSpec>,
    #[serde(default)]
    provider_event_type: Option<TextSpec>,
    #[serde(default, rename = "user.id")]
    user_id: Option<TextSpec>,
    #[serde(default, rename = "user.name")]
    user_name: Option<TextSpec>,
    #[serde(default, rename = "user.domain")]
    user_domain: Option<TextSpec>,
    #[serde(default, rename = "src.ip")]
    src_ip: Option<TextSpec>,
    #[serde(default, rename = "device.user_agent")]
    user_agent: Option<TextSpec>,
    #[serde(default, rename = "device.os")]
    os: Option<TextSpec>,
    #[serde(default, rename = "device.browser")]
    browser: Option<TextSpec>,
    #[serde(default, rename = "device.id")]
    device_id: Option<TextSpec>,
    #[serde(default, rename = "device.type")]
    device_type: Option<VocabSpec<DeviceType>>,
    #[serde(default)]
    session_id: Option<TextSpec>,
    #[serde(default)]
    app: Option<TextSpec>,
    #[serde(default)]
    reason_raw: Option<TextSpec>,
    activity: VocabSpec<Activity>,
    #[serde(default)]
    factor: Option<VocabSpec<Factor>>,
    outcome: VocabSpec<Outcome>,
    #[serde(default)]
    reason: Option<VocabSpec<Reason>>,
    #[serde(default)]
    provider_risk: Option<VocabSpec<RiskLevel>>,
}

/// A JSON pointer, checked when the file is read.
#[derive(Debug, Clone)]
struct Pointer(String);

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            // The empty pointer is the whole document: never a field's value.
            return Err(de::Error::custom(format!(
                "{s:?} is not a JSON pointer to a field: it must start with `/` (e.g. \
                 `/actor/email`)"
            )));
        }
        // RFC 6901: `~` is only `~0` (a `~`) or `~1` (a `/`); serde_json finds nothing else.
        let bad_escape = s
            .match_indices('~')
            .any(|(i, _)| !matches!(s.as_bytes().get(i + 1), Some(b'0' | b'1')));
        if bad_escape {
            return Err(de::Error::custom(format!(
                "{s:?} is not a JSON pointer: `~` must be followed by 0 (for `~`) or 1 (for `/`)"
            )));
        }
        Ok(Pointer(s))
    }
}

/// A text field: `/pointer`, or `{path, const}` (the constant is the fallback).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextFull {
    #[serde(default)]
    path: Option<Pointer>,
    #[serde(default, rename = "const")]
    constant: Option<String>,
}

#[derive(Debug, Clone)]
struct TextSpec(TextFull);

impl<'de> Deserialize<'de> for TextSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a JSON pointer such as `/actor/email`, or a map with `path` and/or `const`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TextSpec, E> {
                let p = Pointer::deserialize(de::value::StrDeserializer::<E>::new(s))?;
                Ok(TextSpec(TextFull {
                    path: Some(p),
                    constant: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TextSpec, A::Error> {
                TextFull::deserialize(de::value::MapAccessDeserializer::new(map)).map(TextSpec)
            }
        }
        d.deserialize_any(V)
    }
}

/// A vocabulary value, checked against its closed list when the file is read.
#[derive(Debug, Clone, Copy)]
struct Word<T>(T);

impl<'de, T> Deserialize<'de> for Word<T>
where
    T: FromStr<Err = authwatch_event::VocabError>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Word).map_err(de::Error::custom)
    }
}

/// A vocabulary field: the raw value at `path` looked up in `map`; `other` when the value is
/// not in the map, `default` when there is no value; or `const`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound = "T: FromStr<Err = authwatch_event::VocabError>"
)]
struct VocabSpec<T> {
    #[serde(default)]
    path: Option<Pointer>,
    #[serde(default)]
    map: BTreeMap<String, Word<T>>,
    #[serde(default)]
    other: Option<Word<T>>,
    #[serde(default)]
    default: Option<Word<T>>,
    #[serde(default, rename = "const")]
    constant: Option<Word<T>>,
}

/// How the time field is written.
#[derive(Debug, Clone)]
enum TimeFormat {
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    /// A strftime pattern, and whether it has no time of day (then it reads as midnight UTC).
    Pattern(String, bool),
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "rfc3339" => Ok(TimeFormat::Rfc3339),
            "epoch_s" => Ok(TimeFormat::EpochSeconds),
            "epoch_ms" => Ok(TimeFormat::EpochMillis),
            p if p.contains('%') => {
                use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
                let items: Vec<Item<'_>> = StrftimeItems::new(p).collect();
                if items.iter().any(|i| matches!(i, Item::Error)) {
                    return Err(de::Error::custom(format!(
                        "time format {s:?} is not a valid strftime pattern (see \
                         https://docs.rs/chrono/latest/chrono/format/strftime/)"
                    )));
                }
                // Any part of a time of day, or a whole timestamp: not a date only.
                let timed = items.iter().any(|i| {
                    matches!(
                        i,
                        Item::Numeric(
                            Numeric::Hour
                                | Numeric::Hour12
                                | Numeric::Minute
                                | Numeric::Second
                                | Numeric::Nanosecond
                                | Numeric::Timestamp,
                            _
                        ) | Item::Fixed(
                            Fixed::LowerAmPm
                                | Fixed::UpperAmPm
                                | Fixed::Nanosecond
                                | Fixed::RFC2822
                                | Fixed::RFC3339
                        )
                    )
                });
                Ok(TimeFormat::Pattern(s, !timed))
            }
            _ => Err(de::Error::custom(format!(
                "unknown time format {s:?}; expected rfc3339, epoch_s, epoch_ms or a strftime pattern such as \"%Y-%m-%d %H:%M:%S\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeSpec {
    path: Pointer,
    #[serde(default = "default_time_format")]
    format: TimeFormat,
}

fn default_time_format() -> TimeFormat {
    TimeFormat::Rfc3339
}

impl Mapping {
    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Io {
            path: path.to_owned(),
            source,
        })?;
        Mapping::parse(&text, path)
    }

    /// Checks a mapping given as text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Mapping, MappingError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            MappingError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        // A vocabulary field with nothing to take its value from would reject every line for
        // a field the file never fills.
        let f = &file.fields;
        let vocab = [
            ("activity", Some(f.activity.is_empty())),
            ("outcome", Some(f.outcome.is_empty())),
            ("factor", f.factor.as_ref().map(VocabSpec::is_empty)),
            ("reason", f.reason.as_ref().map(VocabSpec::is_empty)),
            (
                "provider_risk",
                f.provider_risk.as_ref().map(VocabSpec::is_empty),
            ),
            (
                "device_type",
                f.device_type.as_ref().map(VocabSpec::is_empty),
            ),
        ];
        if let Some((name, _)) = vocab.iter().find(|(_, empty)| *empty == Some(true)) {
            return Err(MappingError::Invalid {
                path: path.to_owned(),
                line: line_of(text, name),
                column: 1,
                message: format!("fields.{name}: give `path` (with `map`), `const` or `default`"),
            });
        }
        if file.provider.is_empty() {
            return Err(MappingError::Invalid {
                path: path.to_owned(),
                line: line_of(text, "provider"),
                column: 1,
                message: "`provider` is empty".to_owned(),
            });
        }
        Ok(Mapping {
            provider: Text::new(&file.provider),
            fields: file.fields,
        })
    }

    /// The provider name events get.
    pub fn provider(&self) -> &str {
        &self.provider
    }
}

/// The line (1-based) of the first `key:` in a YAML text, 0 if none: serde has no position for
/// a value that parsed, and the key's own line serves for a check made after parsing.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

impl<T> VocabSpec<T> {
    /// Nothing to take the value from.
    fn is_empty(&self) -> bool {
        self.path.is_none() && self.constant.is_none() && self.default.is_none()
    }
}

/// The value at `p` as text: strings as they are, numbers and booleans in their JSON form.
fn lookup(doc: &serde_json::Value, p: &Pointer) -> Option<String> {
    match doc.pointer(&p.0)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn text_of(doc: &serde_json::Value, spec: Option<&TextSpec>) -> Text {
    let Some(TextSpec(spec)) = spec else {
        return Text::default();
    };
    spec.path
        .as_ref()
        .and_then(|p| lookup(doc, p))
        .or_else(|| spec.constant.clone())
        .map(Text::from)
        .unwrap_or_default()
}

fn vocab_of<T: Copy + Default>(
    doc: &serde_json::Value,
    field: &str,
    spec: Option<&VocabSpec<T>>,
) -> Result<T, Rejection> {
    let Some(spec) = spec else {
        return Ok(T::default());
    };
    if let Some(Word(c)) = spec.constant {
        return Ok(c);
    }
    let raw = spec.path.as_ref().and_then(|p| lookup(doc, p));
    if let Some(raw) = &raw
        && let Some(Word(v)) = spec.map.get(raw)
    {
        return Ok(*v);
    }
    match (raw, spec.other, spec.default) {
        (Some(_), Some(Word(o)), _) => Ok(o),
        (Some(raw), None, _) => Err(Rejection::new(
            RejectKind::InvalidValue,
            format!(
                "{field}: value {raw:?} is not in the mapping's value map, which has no `other`"
            ),
        )),
        (None, _, Some(Word(d))) => Ok(d),
        (None, _, None) => Err(common::missing(
            spec.path.as_ref().map(|p| p.0.as_str()).unwrap_or(field),
        )),
    }
}

fn time_of(doc: &serde_json::Value, spec: &TimeSpec) -> Result<i64, Rejection> {
    let value = doc
        .pointer(&spec.path.0)
        .ok_or_else(|| common::missing(&spec.path.0))?;
    let bad = || {
        Rejection::new(
            RejectKind::InvalidValue,
            format!("time at {} does not match its format: {value}", spec.path.0),
        )
    };
    let number = || match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match &spec.format {
        TimeFormat::Rfc3339 => value
            .as_str()
            .ok_or_else(bad)
            .and_then(|s| common::rfc3339(&spec.path.0, s)),
        TimeFormat::EpochSeconds => number()
            .filter(|n| n.is_finite())
            .map(|n| (n * 1000.0).round() as i64)
            .ok_or_else(bad),
        TimeFormat::EpochMillis => number()
            .filter(|n| n.is_finite())
            .map(|n| n.round() as i64)
            .ok_or_else(bad),
        TimeFormat::Pattern(p, date_only) => {
            let s = value.as_str().ok_or_else(bad)?;
            if p.contains("%z") || p.contains("%:z") {
                chrono::DateTime::parse_from_str(s, p)
                    .map(|t| t.timestamp_millis())
                    .map_err(|_| bad())
            } else {
                // A pattern with a date only (`%Y-%m-%d`) reads as midnight UTC; one with part
                // of a time must give a whole time.
                let time = if *date_only {
                    chrono::NaiveDate::parse_from_str(s, p)
                        .map(|d| d.and_time(chrono::NaiveTime::MIN))
                } else {
                    chrono::NaiveDateTime::parse_from_str(s, p)
                };
                time.map(|t| t.and_utc().timestamp_millis())
                    .map_err(|_| bad())
            }
        }
    }
}

impl Normalizer for Mapping {
    fn name(&self) -> &'static str {
        "mapping"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let doc: serde_json::Value = common::parse(text)?;
        let f = &self.fields;
        let name = text_of(&doc, f.user_name.as_ref());
        let domain = match text_of(&doc, f.user_domain.as_ref()) {
            d if d.is_empty() => common::domain_of(&name),
            d => d,
        };
        let ip_text = text_of(&doc, f.src_ip.as_ref());
        let ip_text = common::Str::borrowed(ip_text.as_str());
        let mut ev = AuthEvent {
            time: time_of(&doc, &f.time)?,
            provider: self.provider.clone(),
            tenant: text_of(&doc, f.tenant.as_ref()),
            event_id: text_of(&doc, Some(&f.event_id)),
            provider_event_type: text_of(&doc, f.provider_event_type.as_ref()),
            activity: vocab_of(&doc, "activity", Some(&f.activity))?,
            factor: vocab_of(&doc, "factor", f.factor.as_ref())?,
            outcome: vocab_of(&doc, "outcome", Some(&f.outcome))?,
            reason: vocab_of(&doc, "reason", f.reason.as_ref())?,
            reason_raw: text_of(&doc, f.reason_raw.as_ref()),
            session_id: text_of(&doc, f.session_id.as_ref()),
            app: text_of(&doc, f.app.as_ref()),
            provider_risk: vocab_of(&doc, "provider_risk", f.provider_risk.as_ref())?,
            ..AuthEvent::default()
        };
        ev.src.ip = common::ip("src.ip", Some(&ip_text))?;
        ev.user.id = text_of(&doc, f.user_id.as_ref());
        ev.user.name = name;
        ev.user.domain = domain;
        ev.device.user_agent = text_of(&doc, f.user_agent.as_ref());
        ev.device.os = text_of(&doc, f.os.as_ref());
        ev.device.browser = text_of(&doc, f.browser.as_ref());
        ev.device.id = text_of(&doc, f.device_id.as_ref());
        ev.device.kind = vocab_of(&doc, "device.type", f.device_type.as_ref())?;
        common::finish(ev, ingest_time, limits)
    }
}
