//! Rule test cases: events in, expected alerts out (`authwatch rules test`).
//!
//! A case file (`rules/tests/<rule_id>.yaml`, format in `docs/RULE_TESTS.md`) names the rule
//! under test and lists cases. Each case gives events compactly — offsets from a fixed base time,
//! defaults, `repeat`/`every` with `{i}` placeholders — and the alerts it expects. [`load_cases`]
//! parses and checks the files (errors name file, line and column, as rule loading does) and
//! builds every event up front; [`run_cases`] replays each case through a fresh engine of the
//! whole pack and compares what came out with what was expected.
//!
//! ```
//! use authwatch_detect::RulePack;
//! use authwatch_detect::ruletest::{parse_cases, run_cases};
//! use std::path::Path;
//!
//! let text = r#"
//! rule: mfa_fraud_report
//! cases:
//!   - name: a fraud report fires
//!     events:
//!       - { user: aiko@example.jp, activity: mfa_verify, factor: push, outcome: denied, reason: user_reported_fraud }
//!     expect:
//!       - { rule: mfa_fraud_report, entity: { user: aiko@example.jp } }
//!   - name: an ordinary denial does not
//!     events:
//!       - { user: aiko@example.jp, activity: mfa_verify, factor: push, outcome: denied, reason: push_denied }
//!     expect: []
//! "#;
//! let file = parse_cases(Path::new("fraud.yaml"), text).unwrap();
//! let report = run_cases(&RulePack::builtin().unwrap(), &[file]);
//! assert!(report.all_passed(), "{report}");
//! assert_eq!(report.passed(), 2);
//! ```

use crate::error::{RuleError, locate};
use crate::{EngineLimits, RulePack, parse_duration_ms};
use authwatch_event::{
    Activity, Alert, Anonymizer, AuthEvent, Device, Factor, Geo, MetricValue, Outcome, Reason,
    RiskLevel, Severity, Src, User, UserContext,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The time event offsets (`at`) count from unless a file sets `base:`: 2026-01-05T09:00:00Z.
pub const DEFAULT_BASE_MS: i64 = 1_767_603_600_000;

/// The most events one case may expand to (with `repeat`).
pub const MAX_CASE_EVENTS: u64 = 100_000;

/// How far the watermark trails each event while a case runs (5 minutes).
pub const WATERMARK_LAG_MS: i64 = 5 * 60_000;

/// The test cases of one file.
#[derive(Debug, Clone)]
pub struct CaseFile {
    /// Where the cases came from.
    pub path: PathBuf,
    /// The rule under test.
    pub rule: String,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One test case: its events, built, and the alerts it expects.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's name.
    pub name: String,
    /// Its line in the file (1-based; 0 when unknown).
    pub line: usize,
    /// The time offsets count from (epoch ms).
    pub base_ms: i64,
    /// The events, sorted by time (stable: equal times keep file order).
    pub events: Vec<AuthEvent>,
    /// What must come out.
    pub expect: Vec<Expectation>,
    /// Why the case is known to fail, from a `# FAILS: <why>` comment above or inside it: a bug
    /// in a rule or the engine the case was written to show. The case still runs and fails.
    pub known_failure: Option<String>,
}

/// An expected alert, or several equal ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// The rule that must fire.
    pub rule: String,
    /// Entity fields the alert must have (a subset match: fields left out are not compared).
    pub entity: EntityMatch,
    /// How many matching alerts (default 1; 0 asserts there is none).
    pub count: usize,
    /// The alert's severity, when given.
    pub severity: Option<Severity>,
    /// A rule whose alert's id must appear in this alert's `related`.
    pub related_to: Option<String>,
    /// Metric values the alert must carry (a subset match).
    pub metrics: Vec<(String, f64)>,
    /// The deciding event's time (the alert's `last_seen`, epoch ms), when given.
    pub at_ms: Option<i64>,
    /// The window start (epoch ms), when given.
    pub window_start_ms: Option<i64>,
}

/// Entity fields to compare; `None` is not compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityMatch {
    /// The user.
    #[serde(default)]
    pub user: Option<String>,
    /// The source address.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// The tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The autonomous system.
    #[serde(default)]
    pub asn: Option<u32>,
    /// The device fingerprint.
    #[serde(default)]
    pub device: Option<String>,
    /// The source country.
    #[serde(default)]
    pub country: Option<String>,
    /// The application.
    #[serde(default)]
    pub app: Option<String>,
}

impl EntityMatch {
    /// Whether the alert entity has every field given here.
    pub fn matches(&self, e: &authwatch_event::Entity) -> bool {
        fn same<A: PartialEq<B> + ?Sized, B: ?Sized>(want: Option<&A>, have: Option<&B>) -> bool {
            match (want, have) {
                (None, _) => true,
                (Some(w), Some(h)) => w == h,
                (Some(_), None) => false,
            }
        }
        same(self.user.as_deref(), e.user.as_deref())
            && same(self.ip.as_ref(), e.ip.as_ref())
            && same(self.tenant.as_deref(), e.tenant.as_deref())
            && same(self.asn.as_ref(), e.asn.as_ref())
            && same(self.device.as_deref(), e.device_fingerprint.as_deref())
            && same(self.country.as_deref(), e.country.as_deref())
            && same(self.app.as_deref(), e.app.as_deref())
    }
}

impl fmt::Display for EntityMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shown the way alerts show their entity.
        let entity = authwatch_event::Entity {
            tenant: self.tenant.as_deref().map(authwatch_event::Text::new),
            user: self.user.as_deref().map(authwatch_event::Text::new),
            ip: self.ip,
            asn: self.asn,
            device_fingerprint: self.device.as_deref().map(authwatch_event::Text::new),
            country: self.country.as_deref().map(authwatch_event::Text::new),
            app: self.app.as_deref().map(authwatch_event::Text::new),
        };
        let text = entity.to_string();
        f.write_str(if text.is_empty() { "any entity" } else { &text })
    }
}

impl Case {
    /// Whether the case expects at least one alert of `rule` (a positive case for it).
    pub fn is_positive_for(&self, rule: &str) -> bool {
        self.expect.iter().any(|x| x.rule == rule && x.count > 0)
    }
}

/// Loads the case files of a directory (every `*.yaml` / `*.yml`, sorted by name), or one file.
pub fn load_cases(path: &Path) -> Result<Vec<CaseFile>, RuleError> {
    let io = |path: &Path, source| RuleError::Io {
        path: path.to_owned(),
        source,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|e| io(file, e))?;
            parse_cases(file, &text)
        })
        .collect()
}

/// The case files shipped with authwatch (`rules/tests/` in the repository), compiled into the
/// binary so that `authwatch rules test` works from any directory.
const BUILTIN_CASES: &[(&str, &str)] = &[
    (
        "rules/tests/account_lockout.yaml",
        include_str!("../../../rules/tests/account_lockout.yaml"),
    ),
    (
        "rules/tests/account_lockout_wave.yaml",
        include_str!("../../../rules/tests/account_lockout_wave.yaml"),
    ),
    (
        "rules/tests/anonymizer_login.yaml",
        include_str!("../../../rules/tests/anonymizer_login.yaml"),
    ),
    (
        "rules/tests/brute_force.yaml",
        include_str!("../../../rules/tests/brute_force.yaml"),
    ),
    (
        "rules/tests/brute_force_distributed.yaml",
        include_str!("../../../rules/tests/brute_force_distributed.yaml"),
    ),
    (
        "rules/tests/credential_compromise.yaml",
        include_str!("../../../rules/tests/credential_compromise.yaml"),
    ),
    (
        "rules/tests/credential_stuffing.yaml",
        include_str!("../../../rules/tests/credential_stuffing.yaml"),
    ),
    (
        "rules/tests/credential_stuffing_asn.yaml",
        include_str!("../../../rules/tests/credential_stuffing_asn.yaml"),
    ),
    (
        "rules/tests/credential_stuffing_device.yaml",
        include_str!("../../../rules/tests/credential_stuffing_device.yaml"),
    ),
    (
        "rules/tests/impossible_travel.yaml",
        include_str!("../../../rules/tests/impossible_travel.yaml"),
    ),
    (
        "rules/tests/mfa_code_guessing.yaml",
        include_str!("../../../rules/tests/mfa_code_guessing.yaml"),
    ),
    (
        "rules/tests/mfa_fatigue.yaml",
        include_str!("../../../rules/tests/mfa_fatigue.yaml"),
    ),
    (
        "rules/tests/mfa_fatigue_ignored.yaml",
        include_str!("../../../rules/tests/mfa_fatigue_ignored.yaml"),
    ),
    (
        "rules/tests/mfa_fatigue_pushes.yaml",
        include_str!("../../../rules/tests/mfa_fatigue_pushes.yaml"),
    ),
    (
        "rules/tests/mfa_fatigue_slow.yaml",
        include_str!("../../../rules/tests/mfa_fatigue_slow.yaml"),
    ),
    (
        "rules/tests/mfa_fatigue_success.yaml",
        include_str!("../../../rules/tests/mfa_fatigue_success.yaml"),
    ),
    (
        "rules/tests/mfa_fraud_report.yaml",
        include_str!("../../../rules/tests/mfa_fraud_report.yaml"),
    ),
    (
        "rules/tests/new_device_geo.yaml",
        include_str!("../../../rules/tests/new_device_geo.yaml"),
    ),
    (
        "rules/tests/new_device_network.yaml",
        include_str!("../../../rules/tests/new_device_network.yaml"),
    ),
    (
        "rules/tests/password_spray.yaml",
        include_str!("../../../rules/tests/password_spray.yaml"),
    ),
    (
        "rules/tests/password_spray_asn.yaml",
        include_str!("../../../rules/tests/password_spray_asn.yaml"),
    ),
    (
        "rules/tests/password_spray_multi_source.yaml",
        include_str!("../../../rules/tests/password_spray_multi_source.yaml"),
    ),
    (
        "rules/tests/password_spray_one_try.yaml",
        include_str!("../../../rules/tests/password_spray_one_try.yaml"),
    ),
    (
        "rules/tests/risk_policy_block.yaml",
        include_str!("../../../rules/tests/risk_policy_block.yaml"),
    ),
    (
        "rules/tests/risk_policy_block_wave.yaml",
        include_str!("../../../rules/tests/risk_policy_block_wave.yaml"),
    ),
    (
        "rules/tests/triage_authenticator_error.yaml",
        include_str!("../../../rules/tests/triage_authenticator_error.yaml"),
    ),
    (
        "rules/tests/triage_clock_drift.yaml",
        include_str!("../../../rules/tests/triage_clock_drift.yaml"),
    ),
    (
        "rules/tests/triage_enrollment.yaml",
        include_str!("../../../rules/tests/triage_enrollment.yaml"),
    ),
    (
        "rules/tests/triage_lockout.yaml",
        include_str!("../../../rules/tests/triage_lockout.yaml"),
    ),
    (
        "rules/tests/triage_policy_block.yaml",
        include_str!("../../../rules/tests/triage_policy_block.yaml"),
    ),
    (
        "rules/tests/triage_provider_outage.yaml",
        include_str!("../../../rules/tests/triage_provider_outage.yaml"),
    ),
    (
        "rules/tests/triage_push_blocked_network.yaml",
        include_str!("../../../rules/tests/triage_push_blocked_network.yaml"),
    ),
    (
        "rules/tests/triage_push_not_delivered.yaml",
        include_str!("../../../rules/tests/triage_push_not_delivered.yaml"),
    ),
    (
        "rules/tests/triage_user_mistake.yaml",
        include_str!("../../../rules/tests/triage_user_mistake.yaml"),
    ),
];

/// The test cases of the built-in rules (see [`crate::RulePack::builtin`]).
pub fn builtin_cases() -> Result<Vec<CaseFile>, RuleError> {
    BUILTIN_CASES
        .iter()
        .map(|(path, text)| parse_cases(Path::new(path), text))
        .collect()
}

/// Parses one case file's text; `path` is only used in errors and reports.
pub fn parse_cases(path: &Path, text: &str) -> Result<CaseFile, RuleError> {
    let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        RuleError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: e.to_string(),
        }
    })?;
    let invalid = |(line, column): (usize, usize), message: String| RuleError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message,
    };
    let base_ms = match &spec.base {
        Some(b) => authwatch_event::parse_rfc3339_ms(b)
            .map_err(|e| invalid(locate(text, "base:"), format!("base: {e}")))?,
        None => DEFAULT_BASE_MS,
    };
    if spec.cases.is_empty() {
        return Err(invalid(
            locate(text, "cases"),
            "a case file needs at least one case".to_owned(),
        ));
    }
    let file_defaults = spec.defaults.unwrap_or_default();
    if file_defaults.has_timing() {
        return Err(invalid(
            locate(text, "defaults"),
            "defaults cannot set at, repeat or every".to_owned(),
        ));
    }
    let mut names = BTreeSet::new();
    let mut cases = Vec::with_capacity(spec.cases.len());
    for c in spec.cases {
        let line = case_line(text, &c.name);
        let here = (line, 1);
        if !names.insert(c.name.clone()) {
            return Err(invalid(here, format!("case {:?} is defined twice", c.name)));
        }
        let mut defaults = c.defaults.unwrap_or_default();
        if defaults.has_timing() {
            return Err(invalid(
                here,
                format!("case {:?}: defaults cannot set at, repeat or every", c.name),
            ));
        }
        defaults.fill_from(&file_defaults);
        let events = build_events(&c.events, &defaults, base_ms).map_err(|(needle, msg)| {
            let at = needle.map_or(here, |n| locate_after(text, line, &n));
            invalid(at, format!("case {:?}: {msg}", c.name))
        })?;
        let expect = c
            .expect
            .into_iter()
            .map(|x| Expectation {
                rule: x.rule,
                entity: x.entity,
                count: x.count,
                severity: x.severity,
                related_to: x.related_to,
                metrics: x.metrics,
                at_ms: x.at.map(|d| base_ms.saturating_add(d.0)),
                window_start_ms: x.window_start.map(|d| base_ms.saturating_add(d.0)),
            })
            .collect();
        cases.push(Case {
            name: c.name,
            line,
            base_ms,
            events,
            expect,
            known_failure: None,
        });
    }
    let lines: Vec<usize> = cases.iter().map(|c| c.line).collect();
    for (at, why) in known_failures(text) {
        // A mark belongs to the case right below it, else to the case it sits in.
        let next_code = text
            .lines()
            .enumerate()
            .skip(at)
            .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, _)| i + 1);
        let target = match next_code {
            Some(n) if lines.contains(&n) => lines.iter().position(|&l| l == n),
            _ => lines.iter().rposition(|&l| l <= at),
        };
        if let Some(case) = target.and_then(|i| cases.get_mut(i)) {
            case.known_failure = Some(why);
        }
    }
    Ok(CaseFile {
        path: path.to_owned(),
        rule: spec.rule,
        cases,
    })
}

/// The `# FAILS: <why>` comments of a file: their line (1-based) and text, continuation comment
/// lines included.
fn known_failures(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut marks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(first) = line.trim_start().strip_prefix("# FAILS:") else {
            continue;
        };
        let mut why = first.trim().to_owned();
        for more in lines[i + 1..].iter().map(|l| l.trim_start()) {
            match more.strip_prefix('#') {
                Some(m) if !m.trim_start().starts_with("FAILS:") => {
                    why.push(' ');
                    why.push_str(m.trim());
                }
                _ => break,
            }
        }
        marks.push((i + 1, why.trim().to_owned()));
    }
    marks
}

/// The line of a case: the first `name:` line that carries its name.
fn case_line(text: &str, name: &str) -> usize {
    text.lines()
        .position(|l| l.contains("name:") && l.contains(name))
        .map_or_else(|| locate(text, name).0, |i| i + 1)
}

/// Like [`locate`], but from `line` (1-based) on, so that an error points into its own case.
fn locate_after(text: &str, line: usize, needle: &str) -> (usize, usize) {
    for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        if let Some(col) = l.find(needle) {
            return (i + 1, col + 1);
        }
    }
    locate(text, needle)
}

// ---------------------------------------------------------------------------------------------
// The file format.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    rule: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    defaults: Option<EventSpec>,
    cases: Vec<CaseSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    #[serde(default)]
    defaults: Option<EventSpec>,
    events: Vec<EventSpec>,
    expect: Vec<ExpectSpec>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    rule: String,
    #[serde(default)]
    entity: EntityMatch,
    #[serde(default = "one")]
    count: usize,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    related_to: Option<String>,
    #[serde(default, deserialize_with = "metric_list")]
    metrics: Vec<(String, f64)>,
    #[serde(default)]
    at: Option<Dur>,
    #[serde(default)]
    window_start: Option<Dur>,
}

fn metric_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    let map: std::collections::BTreeMap<String, f64> = Deserialize::deserialize(d)?;
    Ok(map.into_iter().collect())
}

/// One event line (or, in `defaults`, values for every event line).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EventSpec {
    at: Option<Dur>,
    repeat: Option<u32>,
    every: Option<Dur>,
    provider: Option<Tmpl<String>>,
    tenant: Option<Tmpl<String>>,
    user: Option<Tmpl<String>>,
    ip: Option<Tmpl<IpAddr>>,
    app: Option<Tmpl<String>>,
    device: Option<Tmpl<String>>,
    user_agent: Option<Tmpl<String>>,
    activity: Option<Activity>,
    factor: Option<Factor>,
    outcome: Option<Outcome>,
    reason: Option<Reason>,
    provider_risk: Option<RiskLevel>,
    country: Option<Tmpl<String>>,
    city: Option<Tmpl<String>>,
    lat: Option<f64>,
    lon: Option<f64>,
    accuracy_km: Option<u32>,
    asn: Option<Tmpl<u32>>,
    internal: Option<bool>,
    anonymous: Option<bool>,
    vpn: Option<bool>,
    tor: Option<bool>,
    hosting: Option<bool>,
    proxy: Option<bool>,
    /// `src.tags`, the CIDR-list tags enrichment would have given the address (literal, no
    /// `{i}` placeholders; `[]` clears the defaults' list).
    tags: Option<Vec<String>>,
    context: Option<ContextSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ContextSpec {
    known_user: Option<bool>,
    learning: Option<bool>,
    new_device: Option<bool>,
    new_country: Option<bool>,
    new_asn: Option<bool>,
    unusual_hour: Option<bool>,
    speed_kmh: Option<f64>,
    distance_km: Option<f64>,
}

macro_rules! fill {
    ($to:expr, $from:expr; $($field:ident),+ $(,)?) => {
        $( if $to.$field.is_none() { $to.$field = $from.$field.clone(); } )+
    };
}

impl EventSpec {
    fn has_timing(&self) -> bool {
        self.at.is_some() || self.repeat.is_some() || self.every.is_some()
    }

    /// Takes every field this line leaves out from `defaults`.
    fn fill_from(&mut self, defaults: &EventSpec) {
        fill!(self, defaults; provider, tenant, user, ip, app, device, user_agent, activity,
              factor, outcome, reason, provider_risk, country, city, lat, lon, accuracy_km, asn,
              internal, anonymous, vpn, tor, hosting, proxy, tags);
        match (&mut self.context, &defaults.context) {
            (Some(mine), Some(theirs)) => {
                fill!(mine, theirs; known_user, learning, new_device, new_country, new_asn,
                      unusual_hour, speed_kmh, distance_km);
            }
            (None, Some(theirs)) => self.context = Some(theirs.clone()),
            _ => {}
        }
    }
}

/// A build error: the text to point at (if any) and the message.
type BuildError = (Option<String>, String);

fn build_events(
    lines: &[EventSpec],
    defaults: &EventSpec,
    base_ms: i64,
) -> Result<Vec<AuthEvent>, BuildError> {
    let mut events = Vec::new();
    for line in lines {
        let mut spec = line.clone();
        spec.fill_from(defaults);
        let repeat = spec.repeat.unwrap_or(1);
        if repeat == 0 {
            return Err((None, "repeat must be at least 1".to_owned()));
        }
        // Every event is built up front: a typo of a few digits would fill the memory.
        if events.len() as u64 + u64::from(repeat) > MAX_CASE_EVENTS {
            return Err((
                None,
                format!(
                    "repeat: {repeat} makes the case longer than {MAX_CASE_EVENTS} events; a \
                     rule test needs a few thresholds' worth"
                ),
            ));
        }
        let every = match (repeat, spec.every) {
            (_, Some(d)) => d.0,
            (1, None) => 0,
            (_, None) => {
                return Err((
                    None,
                    format!("repeat: {repeat} needs every: (e.g. every: 1m, or every: 0s)"),
                ));
            }
        };
        if let Some(bad) = spec.tags.iter().flatten().find(|t| !is_tag(t)) {
            return Err((
                Some(bad.clone()),
                format!(
                    "tags: {bad:?} is not a CIDR-list tag (1 to 64 lower-case letters, digits, \
                     `_`, `.` and `-`, as enrich.cidr_lists takes them)"
                ),
            ));
        }
        let at = spec.at.map_or(0, |d| d.0);
        for i in 0..i64::from(repeat) {
            let time = base_ms
                .saturating_add(at)
                .saturating_add(every.saturating_mul(i));
            let id = format!("case-{}", events.len() + 1);
            events.push(build_event(&spec, i, time, &id)?);
        }
    }
    events.sort_by_key(|e| e.time);
    Ok(events)
}

/// Whether `t` is a tag enrichment can give (`enrich.cidr_lists`: 1 to 64 of `[a-z0-9_.-]`).
fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

fn build_event(s: &EventSpec, i: i64, time: i64, id: &str) -> Result<AuthEvent, BuildError> {
    fn text(t: &Option<Tmpl<String>>, i: i64) -> authwatch_event::Text {
        t.as_ref()
            .map(|t| authwatch_event::Text::new(t.render(i)))
            .unwrap_or_default()
    }
    fn typed<T: FromStr>(t: &Option<Tmpl<T>>, i: i64) -> Result<Option<T>, BuildError>
    where
        T::Err: fmt::Display,
    {
        t.as_ref()
            .map(|t| t.value(i).map_err(|m| (Some(t.raw.clone()), m)))
            .transpose()
    }
    let has_geo = s.country.is_some()
        || s.city.is_some()
        || s.lat.is_some()
        || s.lon.is_some()
        || s.accuracy_km.is_some();
    let c = s.context.clone().unwrap_or_default();
    Ok(AuthEvent {
        time,
        provider: match &s.provider {
            Some(p) => p.render(i).into(),
            None => "okta".into(),
        },
        tenant: match &s.tenant {
            Some(t) => t.render(i).into(),
            None => "example".into(),
        },
        event_id: id.into(),
        user: User {
            name: text(&s.user, i),
            ..Default::default()
        },
        activity: s.activity.unwrap_or(Activity::Logon),
        factor: s.factor.unwrap_or_default(),
        outcome: s.outcome.unwrap_or_default(),
        reason: s.reason.unwrap_or_default(),
        src: Src {
            ip: typed(&s.ip, i)?,
            internal: s.internal.unwrap_or(false),
            geo: has_geo.then(|| Geo {
                country: text(&s.country, i),
                city: text(&s.city, i),
                lat: s.lat,
                lon: s.lon,
                accuracy_km: s.accuracy_km,
            }),
            asn: typed(&s.asn, i)?,
            anonymizer: Anonymizer {
                anonymous: s.anonymous.unwrap_or(false),
                vpn: s.vpn.unwrap_or(false),
                tor: s.tor.unwrap_or(false),
                hosting: s.hosting.unwrap_or(false),
                proxy: s.proxy.unwrap_or(false),
            },
            tags: s
                .tags
                .iter()
                .flatten()
                .map(authwatch_event::Text::new)
                .collect(),
            ..Default::default()
        },
        device: Device {
            fingerprint: text(&s.device, i),
            user_agent: text(&s.user_agent, i),
            ..Default::default()
        },
        app: text(&s.app, i),
        provider_risk: s.provider_risk.unwrap_or_default(),
        context: UserContext {
            known_user: c.known_user.unwrap_or(false),
            learning: c.learning.unwrap_or(false),
            new_device: c.new_device.unwrap_or(false),
            new_country: c.new_country.unwrap_or(false),
            new_asn: c.new_asn.unwrap_or(false),
            unusual_hour: c.unusual_hour.unwrap_or(false),
            previous: None,
            distance_km: c.distance_km,
            speed_kmh: c.speed_kmh,
        },
        ..Default::default()
    })
}

/// A duration in milliseconds, written `90s`, `4m 20s`, `1h` (or `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(i64);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 4m 20s or 1h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration_ms(v.trim()).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                if v == 0 {
                    Ok(Dur(0))
                } else {
                    Err(E::custom(format!(
                        "duration {v} needs a unit, e.g. {v}s or {v}m"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that may carry `{i}` placeholders (the repetition index of `repeat`), checked to
/// parse as `T`.
#[derive(Debug, Clone)]
struct Tmpl<T> {
    raw: String,
    segments: Vec<Segment>,
    _type: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    /// `{i}`, `{i%n}`, `{i/n}`, `{i+n}`.
    Index(char, i64),
}

impl<T> Tmpl<T> {
    fn parse(raw: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{raw:?}: unclosed {{"))?
                + open;
            let inner: String = rest[open + 1..close]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let bad = || {
                format!(
                    "{raw:?}: unknown placeholder {{{inner}}}; use {{i}}, {{i%N}}, {{i/N}} or {{i+N}}"
                )
            };
            let segment = match inner.strip_prefix('i') {
                Some("") => Segment::Index('+', 0),
                Some(op) => {
                    let mut chars = op.chars();
                    let sym = chars.next().ok_or_else(bad)?;
                    let n: i64 = chars.as_str().parse().map_err(|_| bad())?;
                    if !matches!(sym, '%' | '/' | '+') || (sym != '+' && n <= 0) {
                        return Err(bad());
                    }
                    Segment::Index(sym, n)
                }
                None => return Err(bad()),
            };
            segments.push(segment);
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Tmpl {
            raw: raw.to_owned(),
            segments,
            _type: PhantomData,
        })
    }

    fn render(&self, i: i64) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Index(op, n) => {
                    let v = match op {
                        '%' => i.rem_euclid(*n),
                        '/' => i.div_euclid(*n),
                        _ => i.saturating_add(*n),
                    };
                    out.push_str(&v.to_string());
                }
            }
        }
        out
    }
}

impl<T: FromStr> Tmpl<T>
where
    T::Err: fmt::Display,
{
    fn value(&self, i: i64) -> Result<T, String> {
        let text = self.render(i);
        text.parse().map_err(|e| format!("{text:?}: {e}"))
    }
}

impl<'de, T: FromStr> Deserialize<'de> for Tmpl<T>
where
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<fn() -> T>);
        impl<T: FromStr> Visitor<'_> for V<T>
        where
            T::Err: fmt::Display,
        {
            type Value = Tmpl<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or number (may use {i} placeholders)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tmpl<T>, E> {
                let t = Tmpl::parse(v).map_err(E::custom)?;
                // Check the first repetition now, where the parser still knows the position.
                t.value(0).map_err(E::custom)?;
                Ok(t)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Tmpl<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Tmpl<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Tmpl<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Tmpl<T>, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Running.

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case file.
    pub file: PathBuf,
    /// The case's line in it.
    pub line: usize,
    /// The rule under test.
    pub rule: String,
    /// The case's name.
    pub name: String,
    /// Whether the case expects an alert of the rule under test.
    pub positive: bool,
    /// What went wrong (empty: passed).
    pub failures: Vec<String>,
    /// The case's `# FAILS:` mark, if any.
    pub known_failure: Option<String>,
    /// Every alert the case produced, described (`rule entity window`), for failure reports.
    pub alerts: Vec<String>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of a test run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// One result per case, in file and case order.
    pub results: Vec<CaseResult>,
}

impl TestReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Whether every case passed.
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(CaseResult::passed)
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "ok" } else { "FAILED" };
        let note = match (&self.known_failure, self.passed()) {
            (Some(_), true) => " (marked FAILS, but passes: remove the mark)",
            (Some(_), false) => " (known: marked FAILS)",
            (None, _) => "",
        };
        writeln!(
            f,
            "{status:<6} {}:{} [{}] {}{note}",
            self.file.display(),
            self.line,
            self.rule,
            self.name
        )?;
        if !self.passed() {
            if let Some(why) = &self.known_failure {
                writeln!(f, "       FAILS: {why}")?;
            }
            for failure in &self.failures {
                writeln!(f, "       {failure}")?;
            }
            if self.alerts.is_empty() {
                writeln!(f, "       alerts: none")?;
            } else {
                writeln!(f, "       alerts:")?;
                for a in &self.alerts {
                    writeln!(f, "         {a}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            write!(f, "{r}")?;
        }
        writeln!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// How well a rule is covered by test cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The rule id.
    pub rule: String,
    /// Cases expecting at least one alert of it.
    pub positive: usize,
    /// Cases of its own file expecting none.
    pub negative: usize,
}

/// Positive and negative case counts for every rule of the pack, in pack order. A case counts
/// as positive for every rule it expects an alert of, and as negative for its own file's rule
/// when it expects none of it.
pub fn coverage(pack: &RulePack, files: &[CaseFile]) -> Vec<Coverage> {
    pack.rules()
        .iter()
        .map(|r| {
            let mut cov = Coverage {
                rule: r.id.clone(),
                positive: 0,
                negative: 0,
            };
            for file in files {
                for case in &file.cases {
                    if case.is_positive_for(&r.id) {
                        cov.positive += 1;
                    } else if file.rule == r.id {
                        cov.negative += 1;
                    }
                }
            }
            cov
        })
        .collect()
}

/// Runs every case through a fresh engine of the whole pack: each event in time order, the
/// watermark [`WATERMARK_LAG_MS`] behind it, and a flush at the end. A case passes when every
/// expectation matches exactly `count` alerts and no alert of the rule under test (or of any
/// rule named in `expect`) is left unmatched.
pub fn run_cases(pack: &RulePack, files: &[CaseFile]) -> TestReport {
    let known: BTreeSet<&str> = pack.rules().iter().map(|r| r.id.as_str()).collect();
    let mut report = TestReport::default();
    for file in files {
        for case in &file.cases {
            let mut result = CaseResult {
                file: file.path.clone(),
                line: case.line,
                rule: file.rule.clone(),
                name: case.name.clone(),
                positive: case.is_positive_for(&file.rule),
                failures: Vec::new(),
                known_failure: case.known_failure.clone(),
                alerts: Vec::new(),
            };
            let unknown: Vec<&str> = std::iter::once(file.rule.as_str())
                .chain(case.expect.iter().map(|x| x.rule.as_str()))
                .chain(case.expect.iter().filter_map(|x| x.related_to.as_deref()))
                .filter(|id| !known.contains(id))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !unknown.is_empty() {
                result.failures.push(format!(
                    "rule {} is not in the pack under test",
                    unknown.join(", ")
                ));
                report.results.push(result);
                continue;
            }
            let alerts = run_case(pack, case);
            result.failures = check(&file.rule, case, &alerts);
            result.alerts = alerts.iter().map(|a| describe(a, case.base_ms)).collect();
            report.results.push(result);
        }
    }
    report
}

/// The alerts one case produces.
pub fn run_case(pack: &RulePack, case: &Case) -> Vec<Alert> {
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    for e in &case.events {
        engine.on_event(e, &mut out);
        engine.on_watermark(e.time.saturating_sub(WATERMARK_LAG_MS), &mut out);
    }
    engine.flush(&mut out);
    out
}

fn matches(x: &Expectation, a: &Alert, all: &[Alert]) -> bool {
    a.rule_id == x.rule
        && x.entity.matches(&a.entity)
        && x.severity.is_none_or(|s| s == a.severity)
        && x.at_ms.is_none_or(|t| t == a.last_seen.millis())
        && x.window_start_ms
            .is_none_or(|t| t == a.window.start.millis())
        && x.metrics
            .iter()
            .all(|(name, want)| match a.metrics.get(name) {
                Some(MetricValue::Count(n)) => (*n as f64 - want).abs() < 1e-9,
                Some(MetricValue::Real(v)) => (v - want).abs() < 1e-9,
                // Test cases pin numbers; value metrics (first/last) are checked through
                // summaries instead.
                Some(MetricValue::Text(_)) | None => false,
            })
        && x.related_to.as_ref().is_none_or(|rel| {
            all.iter()
                .any(|o| &o.rule_id == rel && a.related.contains(&o.alert_id))
        })
}

fn check(rule: &str, case: &Case, alerts: &[Alert]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut matched = vec![false; alerts.len()];
    for x in &case.expect {
        let mut n = 0;
        for (i, a) in alerts.iter().enumerate() {
            if matches(x, a, alerts) {
                matched[i] = true;
                n += 1;
            }
        }
        if n != x.count {
            failures.push(format!(
                "expected {} × {}, got {n}",
                x.count,
                describe_expectation(x, case.base_ms)
            ));
        }
    }
    let strict: BTreeSet<&str> = std::iter::once(rule)
        .chain(case.expect.iter().map(|x| x.rule.as_str()))
        .collect();
    for (a, _) in alerts
        .iter()
        .zip(&matched)
        .filter(|(a, m)| !**m && strict.contains(a.rule_id.as_str()))
    {
        failures.push(format!("unexpected {}", describe(a, case.base_ms)));
    }
    failures
}

fn describe_expectation(x: &Expectation, base: i64) -> String {
    let mut s = format!("{} {}", x.rule, x.entity);
    if let Some(sev) = x.severity {
        s.push_str(&format!(" severity={sev}"));
    }
    if let Some(rel) = &x.related_to {
        s.push_str(&format!(" related_to={rel}"));
    }
    for (name, v) in &x.metrics {
        s.push_str(&format!(" {name}={v}"));
    }
    if let Some(t) = x.window_start_ms {
        s.push_str(&format!(" window_start={}", offset(t, base)));
    }
    if let Some(t) = x.at_ms {
        s.push_str(&format!(" at={}", offset(t, base)));
    }
    s
}

/// `rule entity window +a..+b severity [related]`, times relative to the case's base.
fn describe(a: &Alert, base: i64) -> String {
    let mut s = format!(
        "{} {} window {}..{} at {} {}",
        a.rule_id,
        a.entity,
        offset(a.window.start.millis(), base),
        offset(a.window.end.millis(), base),
        offset(a.last_seen.millis(), base),
        a.severity
    );
    if !a.related.is_empty() {
        s.push_str(&format!(" related {}", a.related.join(",")));
    }
    s
}

/// `+4m20s`, `-30s`, `+0s`: an instant as an offset from the base time.
fn offset(t: i64, base: i64) -> String {
    let d = t.saturating_sub(base);
    let (sign, mut ms) = if d < 0 { ('-', -d) } else { ('+', d) };
    let mut out = String::from(sign);
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    if out.len() == 1 {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CaseFile, RuleError> {
        parse_cases(Path::new("t.yaml"), text)
    }

    fn tests_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/tests")
    }

    #[test]
    fn shipped_rule_tests_pass() {
        let pack = RulePack::builtin().unwrap();
        let files = load_cases(&tests_dir()).unwrap();
        let report = run_cases(&pack, &files);
        // A case marked `# FAILS: <why>` shows a bug in a rule or the engine, reported to the
        // rules' owners: it must keep failing until the bug is fixed, then lose its mark.
        let unexpected: Vec<&CaseResult> = report
            .results
            .iter()
            .filter(|r| r.passed() == r.known_failure.is_some())
            .collect();
        assert!(
            unexpected.is_empty(),
            "{}\n{report}",
            unexpected.iter().map(|r| r.to_string()).collect::<String>()
        );
        let gaps: Vec<String> = coverage(&pack, &files)
            .into_iter()
            .filter(|c| c.positive == 0 || c.negative == 0)
            .map(|c| format!("{} (+{} -{})", c.rule, c.positive, c.negative))
            .collect();
        assert!(
            gaps.is_empty(),
            "rules without a positive and a negative case: {gaps:?}"
        );
        for file in &files {
            let stem = file.path.file_stem().and_then(|s| s.to_str());
            assert_eq!(stem, Some(file.rule.as_str()), "{}", file.path.display());
        }
    }

    #[test]
    fn builtin_cases_are_the_files_in_rules_tests() {
        let on_disk = load_cases(&tests_dir()).unwrap();
        let builtin = builtin_cases().unwrap();
        let names = |files: &[CaseFile]| -> Vec<String> {
            files
                .iter()
                .filter_map(|f| f.path.file_name()?.to_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(names(&builtin), names(&on_disk));
        for (a, b) in builtin.iter().zip(&on_disk) {
            assert_eq!(a.cases.len(), b.cases.len());
        }
    }

    #[test]
    fn events_expand_with_defaults_repeats_and_placeholders() {
        let file = parse(
            r#"
rule: credential_stuffing
base: 2026-02-01T00:00:00Z
defaults: { ip: 203.0.113.5, outcome: failure }
cases:
  - name: expansion
    defaults: { reason: unknown_user }
    events:
      - { at: 1m, user: "u{i%2}@x", repeat: 3, every: 10s }
      - { at: 0s, user: "v{i+1}", ip: "10.0.0.{i/2}", reason: invalid_credentials, asn: 64500,
          country: JP, anonymous: true, context: { new_device: true, speed_kmh: 1000 } }
    expect: []
"#,
        )
        .unwrap();
        let case = &file.cases[0];
        let base = authwatch_event::parse_rfc3339_ms("2026-02-01T00:00:00Z").unwrap();
        assert_eq!(case.line, 6);
        let e = &case.events;
        assert_eq!(e.len(), 4);
        // Sorted by time; ids follow the file order.
        assert_eq!(e[0].event_id.as_str(), "case-4");
        assert_eq!(e[0].time, base);
        assert_eq!(e[0].user.name.as_str(), "v1");
        assert_eq!(e[0].src.ip, Some("10.0.0.0".parse().unwrap()));
        assert_eq!(e[0].reason, Reason::InvalidCredentials);
        assert_eq!(e[0].src.asn, Some(64500));
        assert_eq!(e[0].src.geo.as_ref().unwrap().country.as_str(), "JP");
        assert!(e[0].src.anonymizer.anonymous);
        assert!(e[0].context.new_device);
        assert_eq!(e[0].context.speed_kmh, Some(1000.0));
        let users: Vec<&str> = e[1..].iter().map(|e| e.user.name.as_str()).collect();
        assert_eq!(users, ["u0@x", "u1@x", "u0@x"]);
        assert_eq!(e[3].time, base + 60_000 + 20_000);
        assert_eq!(e[3].event_id.as_str(), "case-3");
        assert_eq!(e[3].reason, Reason::UnknownUser);
        assert_eq!(e[3].outcome, Outcome::Failure);
        assert_eq!(e[3].activity, Activity::Logon);
        assert_eq!(e[3].tenant.as_str(), "example");
        assert_eq!(e[3].provider.as_str(), "okta");
        assert_eq!(e[3].src.ip, Some("203.0.113.5".parse().unwrap()));
    }

    // `tags:` stands for the CIDR-list tags enrichment gives an address (`src.tags`), so rules
    // that filter on them (`src.tags: {not: [corporate_egress]}`) can be tested: a list, taken
    // from the defaults like any field, replaced (not merged) by an event's own, `[]` clearing it.
    #[test]
    fn tags_set_the_source_tags() {
        let file = parse(
            r#"
rule: password_spray
defaults: { ip: 198.51.100.7, outcome: failure, tags: [corporate_egress] }
cases:
  - name: tags
    events:
      - { at: 0s, user: a }
      - { at: 1s, user: b, tags: [known_vpn, corporate_egress] }
      - { at: 2s, user: c, tags: [] }
    expect: []
"#,
        )
        .unwrap();
        let tags = |i: usize| -> Vec<&str> {
            file.cases[0].events[i]
                .src
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect()
        };
        assert_eq!(tags(0), ["corporate_egress"]);
        assert_eq!(tags(1), ["known_vpn", "corporate_egress"]);
        assert!(tags(2).is_empty());
        // A rule filtering on the tag sees them: the tagged failures are left out.
        let rule = r#"
id: outside_failures
severity: low
cause_class: attack
key: [user]
filter: { activity: logon, outcome: failure, src.tags: { not: [corporate_egress] } }
window: 1m
counters:
  n: {}
fire_when: { all: ["n >= 1"] }
summary: { en: "x", ja: "x" }
steps: { en: ["x"], ja: ["x"] }
"#;
        let rules = crate::compile::compile_text(Path::new("r.yaml"), rule).unwrap();
        let pack = RulePack::from_rules(rules).unwrap();
        let alerts = run_case(&pack, &file.cases[0]);
        let users: Vec<&str> = alerts
            .iter()
            .filter_map(|a| a.entity.user.as_deref())
            .collect();
        assert_eq!(users, ["c"]);
        // Not a tag enrichment could give: an error naming the line.
        let err = parse(
            "rule: x\ncases:\n  - name: bad tag\n    events:\n      - { tags: [Corporate Egress] }\n    expect: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":5:") && err.contains("not a CIDR-list tag"),
            "{err}"
        );
    }

    #[test]
    fn bad_files_fail_with_file_line_and_column() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let head = "rule: x\ncases:\n  - name: c\n    events:\n";
        let e = err(&format!(
            "{head}      - {{ outcome: failed }}\n    expect: []\n"
        ));
        assert!(e.starts_with("t.yaml:5:"), "{e}");
        assert!(e.contains("failed"), "{e}");
        let e = err(&format!(
            "{head}      - {{ ip: 10.0.0.300 }}\n    expect: []\n"
        ));
        assert!(e.starts_with("t.yaml:5:"), "{e}");
        let e = err(&format!("{head}      - {{ at: soon }}\n    expect: []\n"));
        assert!(
            e.starts_with("t.yaml:5:") && e.contains("bad duration"),
            "{e}"
        );
        let e = err(&format!(
            "{head}      - {{ user: \"u{{j}}\" }}\n    expect: []\n"
        ));
        assert!(e.contains("unknown placeholder {j}"), "{e}");
        let e = err(&format!(
            "{head}      - {{ colour: red }}\n    expect: []\n"
        ));
        assert!(e.starts_with("t.yaml:5:") && e.contains("colour"), "{e}");
        // Only later repetitions are invalid: found when building, pointed at by text.
        let e = err(&format!(
            "{head}      - {{ ip: \"10.0.0.{{i+250}}\", repeat: 9, every: 1s }}\n    expect: []\n"
        ));
        assert!(e.starts_with("t.yaml:5:"), "{e}");
        assert!(e.contains("10.0.0.256"), "{e}");
        let e = err(&format!(
            "{head}      - {{ repeat: 50000000, every: 1s }}\n    expect: []\n"
        ));
        assert!(e.contains("longer than 100000 events"), "{e}");
        let e = err(&format!("{head}      - {{ repeat: 3 }}\n    expect: []\n"));
        assert!(
            e.starts_with("t.yaml:3:") && e.contains("needs every"),
            "{e}"
        );
        let e = err(&format!("{head}      - {{}}\n"));
        assert!(e.contains("missing field `expect`"), "{e}");
    }

    #[test]
    fn failures_say_what_was_expected_and_what_came_out() {
        let pack = RulePack::builtin().unwrap();
        let file = parse(
            r#"
rule: mfa_fraud_report
cases:
  - name: wrong user expected
    events:
      - { user: a@x, activity: mfa_verify, factor: push, outcome: denied, reason: user_reported_fraud }
    expect:
      - { rule: mfa_fraud_report, entity: { user: b@x } }
  - name: silent case that fires
    events:
      - { at: 1m, user: a@x, activity: mfa_verify, factor: push, outcome: denied, reason: user_reported_fraud }
    expect: []
  - name: unknown rule
    events: []
    expect: [{ rule: no_such_rule }]
"#,
        )
        .unwrap();
        let report = run_cases(&pack, &[file]);
        assert_eq!(report.failed(), 3);
        let text = report.to_string();
        assert!(
            text.contains("expected 1 × mfa_fraud_report user=b@x, got 0"),
            "{text}"
        );
        assert!(
            text.contains("unexpected mfa_fraud_report tenant=example user=a@x window +0s..+0s"),
            "{text}"
        );
        assert!(
            text.contains("unexpected mfa_fraud_report tenant=example user=a@x window +1m..+1m"),
            "{text}"
        );
        assert!(
            text.contains("FAILED t.yaml:4 [mfa_fraud_report]"),
            "{text}"
        );
        assert!(text.contains("no_such_rule is not in the pack"), "{text}");
        assert!(text.ends_with("0 passed, 3 failed\n"), "{text}");
    }

    #[test]
    fn tumbling_windows_count_per_aligned_bucket() {
        let rule = r#"
id: hourly_denials
severity: low
cause_class: user
key: [user]
filter: { outcome: denied }
window: { kind: tumbling, size: 1h }
counters:
  denials: {}
fire_when: { any: ["denials >= 3"] }
summary: { en: "x", ja: "x" }
steps: { en: ["x"], ja: ["x"] }
"#;
        let rules = crate::compile::compile_text(Path::new("r.yaml"), rule).unwrap();
        let pack = RulePack::from_rules(rules).unwrap();
        let file = parse(
            r#"
rule: hourly_denials
defaults: { user: a@x, activity: mfa_verify, factor: push, outcome: denied }
cases:
  - name: three denials across the hour boundary are two buckets
    events: [{ at: 40m, repeat: 3, every: 12m }]
    expect: []
  - name: three in one hour fire, the window is the bucket
    events: [{ at: 65m, repeat: 3, every: 5m }]
    expect: [{ rule: hourly_denials, window_start: 1h, at: 75m }]
  - name: one incident per bucket, a new one in the next
    events: [{ at: 1h, repeat: 12, every: 10m }]
    expect:
      - { rule: hourly_denials, at: 1h20m }
      - { rule: hourly_denials, window_start: 2h, at: 2h20m }
"#,
        )
        .unwrap();
        let report = run_cases(&pack, &[file]);
        assert!(report.all_passed(), "{report}");
    }

    #[test]
    fn fails_marks_attach_to_their_case() {
        let file = parse(
            "rule: x\ncases:\n  - name: a\n    events: []\n    expect: []\n  # FAILS: first\n  \
             # line two\n  - name: b\n    events: []\n    # FAILS: inside\n    expect: []\n",
        )
        .unwrap();
        assert_eq!(file.cases[0].known_failure, None);
        assert_eq!(file.cases[1].known_failure.as_deref(), Some("inside"));
        let file = parse(
            "rule: x\ncases:\n  # FAILS: first\n  # line two\n  - name: a\n    events: []\n    expect: []\n",
        )
        .unwrap();
        assert_eq!(
            file.cases[0].known_failure.as_deref(),
            Some("first line two")
        );
    }

    #[test]
    fn offsets_read_naturally() {
        assert_eq!(offset(DEFAULT_BASE_MS, DEFAULT_BASE_MS), "+0s");
        assert_eq!(offset(DEFAULT_BASE_MS + 260_000, DEFAULT_BASE_MS), "+4m20s");
        assert_eq!(offset(DEFAULT_BASE_MS - 1_500, DEFAULT_BASE_MS), "-1s500ms");
        assert_eq!(offset(DEFAULT_BASE_MS + 3_600_000, DEFAULT_BASE_MS), "+1h");
    }
}
