//! `authwatch explain`: the help-desk view of one user — recent sign-ins, every failure assigned a
//! cause class (`user`, `device`, `network`, `system`, `attack`) with the next steps, and the
//! alerts that concern the user.
//!
//! The files go through the very pipeline `authwatch replay` runs (normalize, enrich, profiles,
//! rules), so what the help desk reads is what the SOC's alerts say. The report is written only
//! once the whole input is read, so nothing forces reading it in the order it is given: it is
//! read in event-time order ([`OrderedSource`]), and day files named newest first or exports
//! concatenated into one file give the same answer as one ordered stream. A sink keeps the
//! user's events, the alerts that name the user or one of those events, and the alerts keyed by
//! an address, device or tenant that the user's failures may belong to; the report is built from
//! them once the input has ended, because an alert always arrives after the events it names.

use crate::RulesArg;
use crate::replay::{self, RunOptions};
use anyhow::{Context, Result};
use authwatch_detect::{CompiledRule, KeyField};
use authwatch_event::{
    Activity, Alert, AuthEvent, CauseClass, DurationText, Factor, Outcome, Reason, Severity,
    Timestamp, format_rfc3339_ms,
};
use authwatch_normalize::{Limits, Mapping, Normalizer, RejectKind};
use authwatch_pipeline::{
    Config, DeadLetter, Language, LateEvent, LineSource, Origin, Pipeline, RawBatch, RawLine,
    RunSummary, Sink, SinkError, Source, SourceError, Speed, Unreadable,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The user's events kept in memory: the report covers at most this many (the most recent), so
/// memory stays bounded whatever the input size.
const MAX_EVENTS: usize = 10_000;
/// Alerts kept that name the user or one of the user's events.
const MAX_ALERTS: usize = 1_000;
/// Alerts keyed by an address, ASN, device or tenant rather than a user, kept (the most recent)
/// until the end to be matched against the user's failures: such an alert may fire before the
/// user's own failure, or name other users' events only.
const MAX_KEYED_ALERTS: usize = 2_000;
/// Event ids listed per explanation in the JSON report.
const MAX_IDS_PER_EXPLANATION: usize = 50;
/// Sign-in names resembling the requested one, offered when it has no events.
const MAX_SIMILAR: usize = 5;
/// How long after an alert's last event the user's further failures still belong to it when
/// its rule is not in the pack (so its suppression is unknown): most rules suppress for an hour.
/// Also how long before a lockout the wrong passwords that led to it are looked for.
const FOLLOW_MS: i64 = 60 * 60 * 1000;
/// How far outside a network finding's window a push timeout behind the same address is still
/// put down to it: the finding's window closes on the events that decided it, while the block
/// lasts as long as the firewall rule does.
const NETWORK_MARGIN_MS: i64 = 60 * 60 * 1000;
/// Ordered runs one input is read as, at most. A file whose time goes back more often than this
/// is shuffled rather than a few ordered exports put together; the rest of it is read as it
/// comes, and what arrives too late for the rules is counted and noted, as in a replay.
const MAX_RUNS_PER_INPUT: usize = 64;
/// Lines each run reads ahead of the merge.
const LANE_LINES: usize = 256;

/// `authwatch explain`
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The user: login name (UPN or e-mail) or the provider's user id. Matched
    /// case-insensitively.
    #[arg(long, value_name = "USER", value_parser = parse_user)]
    user: String,
    /// Only the user's account in this tenant (org, realm), matched case-insensitively. Without
    /// it, a name found in several tenants is reported over all of them, with a warning first and
    /// the tenant on every row.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    /// Recorded files (JSON lines, optionally gzip-compressed); `-` reads standard input. They
    /// are read in event-time order, whatever order they are given in.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Language of the report: `en` or `ja` (default: output.language of the configuration).
    #[arg(long, value_name = "en|ja")]
    lang: Option<String>,
    /// Configuration file (TOML; see config/authwatch.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    rules: RulesArg,
    /// Only the last DURATION of the input (`24h`, `7days`), counted back from the input's
    /// newest event: event time, so that recorded streams give the same answer any day.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<DurationText>,
    /// How many of the user's most recent events the sign-in table shows.
    #[arg(long, default_value_t = 20, value_name = "N")]
    last: usize,
    /// Print one JSON document instead of text (for ticketing tools).
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<DurationText, String> {
    use serde::Deserialize;
    use serde::de::value::{Error, StrDeserializer};
    DurationText::deserialize(StrDeserializer::<Error>::new(s)).map_err(|e| e.to_string())
}

/// An empty name would match no one and report "no events" as if it had been misspelt.
fn parse_user(s: &str) -> Result<String, String> {
    let user = s.trim();
    if user.is_empty() {
        return Err("the user is empty: give a login name (UPN or e-mail) or a user id".to_owned());
    }
    Ok(user.to_owned())
}

/// An unknown user is an answer ("no events"), not a failure: the command exits 0 and says so
/// (`found: false` in JSON), as a directory search that finds nobody does. An input with no
/// readable event at all is a failure: there is nobody to search, and saying "check the
/// spelling" would send the help desk after the wrong problem.
pub fn run(args: ExplainArgs) -> Result<ExitCode> {
    let config = load_config(&args)?;
    let lang = config.output.language;
    let pack = replay::load_rules(&config)?;
    // Following an incident past its alert needs the rule's filter, key, evidence counters and
    // suppression, which the alert does not carry.
    let rules: HashMap<String, CompiledRule> = pack
        .rules()
        .iter()
        .map(|r| (r.id.clone(), r.clone()))
        .collect();
    let mut source = OrderedSource::open(&args.files, &config)?;
    let sink = UserSink::new(&args.user, args.tenant.as_deref());
    let pipeline = Pipeline::new(config, pack)?;
    let (summary, sink) = pipeline.run(&mut source, sink, Speed::Max)?;
    let input = InputFacts::new(&summary, &source, &sink);
    if summary.events == 0 {
        anyhow::bail!("{}", input.nothing_readable(lang));
    }
    let report = Report::build(sink, &args, input, &rules);
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report.to_json(lang))?;
        s.push('\n');
        s
    } else {
        report.render(lang)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A reader such as `head` that stops early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Resolves the configuration exactly as `replay` does (file or defaults, environment overrides,
/// `--rules` and `--lang`, validation). `replay::RunOptions` keeps its fields to itself and also
/// carries options that mean nothing here (speed, side outputs), so the options explain shares
/// with it are handed over through clap rather than duplicating the resolution.
fn load_config(args: &ExplainArgs) -> Result<Config> {
    use clap::{Args, FromArgMatches};
    fn opt(name: &str, value: impl Into<OsString>) -> OsString {
        // `--name=value`, so that a value starting with `-` is not read as an option.
        let mut arg = OsString::from(format!("--{name}="));
        arg.push(value.into());
        arg
    }
    let mut argv = vec![OsString::from("explain")];
    if let Some(p) = &args.config {
        argv.push(opt("config", p));
    }
    if let Some(p) = &args.rules.rules {
        argv.push(opt("rules", p));
    }
    if let Some(l) = &args.lang {
        argv.push(opt("lang", l));
    }
    let matches = RunOptions::augment_args(clap::Command::new("explain"))
        .try_get_matches_from(argv)
        .context("internal error: explain options rejected by the replay option parser")?;
    let options = RunOptions::from_arg_matches(&matches)
        .context("internal error: explain options rejected by the replay option parser")?;
    replay::load_config(&options)
}

// ─── The input, in event-time order ────────────────────────────────────────────────────────────

/// The input files merged into one stream in event-time order.
///
/// The pipeline drops an event that arrives more than `event_time.allowed_lateness` behind the
/// newest one, as a live stream must. Explain reports only at the end, so it need not accept
/// that loss: the day files named newest first, or a second tenant's export appended to the
/// first, would otherwise lose everything older than what came before. A first pass reads each
/// file and notes where its time goes back by more than the lateness: there a new ordered run
/// begins. The second pass reads every run as a lane of its own (the file opened once per run)
/// and hands the pipeline, line by line, the lane whose next event is the oldest. Memory stays
/// bounded: one read-ahead batch per lane. Standard input and pipes cannot be read twice; each
/// is one lane, read as it comes.
struct OrderedSource {
    names: Vec<String>,
    lanes: Vec<Lane>,
    normalizer: Arc<dyn Normalizer>,
    limits: Limits,
    max_line_bytes: usize,
    /// Lines handed on per input (its unreadable ones included), for the report's notes.
    lines: Vec<u64>,
}

/// One ordered run of an input.
struct Lane {
    input: u32,
    source: LineSource,
    /// The run's first line, and the first line of the next run of the same input.
    from: u64,
    until: Option<u64>,
    batch: RawBatch,
    /// Event time of each line of `batch` (`i64::MIN` when unreadable: it goes out at once and
    /// becomes a dead letter in the pipeline).
    times: Vec<i64>,
    next: usize,
    ended: bool,
    /// Where the input stopped being readable; handed on once the lane's lines are out, since
    /// they were read before it.
    unreadable: Vec<Unreadable>,
}

impl OrderedSource {
    fn open(paths: &[PathBuf], config: &Config) -> Result<OrderedSource> {
        let input = &config.input;
        let normalizer: Arc<dyn Normalizer> = match &input.mapping {
            Some(path) => Arc::new(Mapping::load(path)?),
            None => Arc::from(input.format.normalizer()),
        };
        let limits = Limits::default();
        let lateness = config.event_time.allowed_lateness.millis();
        let mut lanes = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let open = || {
                LineSource::open_files(
                    std::slice::from_ref(path),
                    input.max_line_bytes,
                    input.dead_letter_raw_bytes,
                )
            };
            let starts = if can_read_twice(path) {
                run_starts(open()?, normalizer.as_ref(), &limits, lateness)?
            } else {
                vec![1]
            };
            for (k, &from) in starts.iter().enumerate() {
                lanes.push(Lane {
                    input: u32::try_from(i).context("too many input files")?,
                    source: open()?,
                    from,
                    until: starts.get(k + 1).copied(),
                    batch: RawBatch::default(),
                    times: Vec::new(),
                    next: 0,
                    ended: false,
                    unreadable: Vec::new(),
                });
            }
        }
        Ok(OrderedSource {
            names: paths.iter().map(|p| p.display().to_string()).collect(),
            lanes,
            normalizer,
            limits,
            max_line_bytes: input.max_line_bytes,
            lines: vec![0; paths.len()],
        })
    }
}

fn can_read_twice(path: &Path) -> bool {
    path != Path::new("-") && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// The first line of each ordered run of one input: line 1, then every line whose event is
/// older than the run so far allows (by more than the lateness).
fn run_starts(
    mut source: LineSource,
    normalizer: &dyn Normalizer,
    limits: &Limits,
    lateness: i64,
) -> Result<Vec<u64>, SourceError> {
    let mut starts = vec![1];
    let mut newest = i64::MIN;
    let mut batch = RawBatch::default();
    while source.fill(&mut batch, 4 * LANE_LINES)? {
        for line in &batch.lines {
            let Ok(e) = normalizer.normalize(batch.bytes(line), 0, limits) else {
                continue;
            };
            if e.time < newest.saturating_sub(lateness) && starts.len() < MAX_RUNS_PER_INPUT {
                starts.push(line.origin.line);
                newest = e.time;
            } else {
                newest = newest.max(e.time);
            }
        }
    }
    Ok(starts)
}

impl Lane {
    /// Whether the lane has a line in hand, reading ahead when it has none.
    /// `timed`: whether the merge compares lanes at all (a single lane needs no event times,
    /// which cost a parse each).
    fn ready(
        &mut self,
        normalizer: &dyn Normalizer,
        limits: &Limits,
        max_line_bytes: usize,
        timed: bool,
    ) -> Result<bool, SourceError> {
        while self.next == self.batch.lines.len() {
            if self.ended {
                return Ok(false);
            }
            self.next = 0;
            self.times.clear();
            if !self.source.fill(&mut self.batch, LANE_LINES)? {
                self.batch.lines.clear();
                self.ended = true;
                return Ok(false);
            }
            let (from, until) = (self.from, self.until);
            let before_end = |line: u64| until.is_none_or(|u| line < u);
            let past_end = self
                .batch
                .lines
                .iter()
                .map(|l| l.origin.line)
                .chain(self.batch.unreadable.iter().map(|u| u.origin.line))
                .any(|line| !before_end(line));
            if past_end {
                // The next run reads the rest.
                self.ended = true;
            }
            self.batch
                .lines
                .retain(|l| l.origin.line >= from && before_end(l.origin.line));
            let input = self.input;
            self.unreadable.extend(
                self.batch
                    .unreadable
                    .drain(..)
                    .filter(|u| u.origin.line >= from && before_end(u.origin.line))
                    .map(|mut u| {
                        u.origin.input = input;
                        u
                    }),
            );
            let batch = &self.batch;
            self.times.extend(batch.lines.iter().map(|l| {
                if !timed || l.len > max_line_bytes as u64 {
                    return i64::MIN;
                }
                normalizer
                    .normalize(batch.bytes(l), 0, limits)
                    .map_or(i64::MIN, |e| e.time)
            }));
        }
        Ok(true)
    }
}

impl Source for OrderedSource {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn fill(&mut self, batch: &mut RawBatch, max_lines: usize) -> Result<bool, SourceError> {
        batch.data.clear();
        batch.lines.clear();
        batch.unreadable.clear();
        let timed = self.lanes.len() > 1;
        while batch.lines.len() < max_lines {
            let mut oldest: Option<(i64, usize)> = None;
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                let (normalizer, limits) = (self.normalizer.as_ref(), &self.limits);
                if !lane.ready(normalizer, limits, self.max_line_bytes, timed)? {
                    batch.unreadable.append(&mut lane.unreadable);
                    continue;
                }
                let t = lane.times.get(lane.next).copied().unwrap_or(i64::MIN);
                // Ties go to the earlier lane: the order the files were given in.
                if oldest.is_none_or(|(o, _)| t < o) {
                    oldest = Some((t, i));
                }
            }
            let Some(lane) = oldest.and_then(|(_, i)| self.lanes.get_mut(i)) else {
                break;
            };
            let Some(line) = lane.batch.lines.get(lane.next).copied() else {
                break;
            };
            lane.next += 1;
            let start = batch.data.len();
            batch.data.extend_from_slice(lane.batch.bytes(&line));
            batch.lines.push(RawLine {
                start,
                end: batch.data.len(),
                origin: Origin {
                    input: lane.input,
                    ..line.origin
                },
                len: line.len,
            });
            if let Some(n) = self.lines.get_mut(lane.input as usize) {
                *n += 1;
            }
        }
        Ok(!batch.lines.is_empty() || !batch.unreadable.is_empty())
    }

    fn bytes_read(&self) -> u64 {
        self.lanes.iter().map(|l| l.source.bytes_read()).sum()
    }
}

// ─── The sink ──────────────────────────────────────────────────────────────────────────────────

/// Who the report is about: the requested name or id, and the keys the rules know the account
/// by (its login name even when it was asked for by id).
struct Who {
    /// The requested user, trimmed and lower-cased.
    user: String,
    /// The lower-cased keys (`AuthEvent::user.key()`) of the events matched.
    keys: BTreeSet<String>,
}

impl Who {
    /// Whether an alert's `entity.user` is this account.
    fn is(&self, key: &str) -> bool {
        let key = key.to_lowercase();
        key == self.user || self.keys.contains(&key)
    }
}

fn same_text(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// Keeps one user's processed events (bounded, most recent) and the alerts that concern them.
struct UserSink {
    who: Who,
    /// `--tenant`, when given.
    tenant: Option<String>,
    /// The part of the requested name before `@`, to offer similar names when it has no events.
    stem: String,
    events: VecDeque<AuthEvent>,
    /// Tenant and id ([`event_key`]) of the kept events, counted (providers may repeat an
    /// id). With the tenant, since an id is unique only within the provider's tenant.
    ids: HashMap<String, u32>,
    /// The user's events that fell out of `events` because of [`MAX_EVENTS`].
    evicted: u64,
    /// The newest event time of the whole input: what `--since` counts back from.
    newest: Option<i64>,
    alerts: Vec<Alert>,
    alerts_dropped: u64,
    keyed_alerts: VecDeque<Alert>,
    similar: BTreeSet<String>,
    /// Events of the requested name or id per tenant, whether `--tenant` selects them or not.
    tenants: BTreeMap<String, u64>,
    /// Unreadable lines per input.
    unreadable: BTreeMap<String, u64>,
}

impl UserSink {
    fn new(user: &str, tenant: Option<&str>) -> UserSink {
        let user = user.trim().to_lowercase();
        let stem = user.split('@').next().unwrap_or_default().to_owned();
        UserSink {
            who: Who {
                user,
                keys: BTreeSet::new(),
            },
            tenant: tenant.map(|t| t.trim().to_owned()),
            stem,
            events: VecDeque::new(),
            ids: HashMap::new(),
            evicted: 0,
            newest: None,
            alerts: Vec::new(),
            alerts_dropped: 0,
            keyed_alerts: VecDeque::new(),
            similar: BTreeSet::new(),
            tenants: BTreeMap::new(),
            unreadable: BTreeMap::new(),
        }
    }

    /// Whether the event is the requested account's: by login name or by user id, since a
    /// ticket may quote either.
    fn is_user(&self, e: &AuthEvent) -> bool {
        let want = self.who.user.as_str();
        [e.user.name.as_str(), e.user.id.as_str()]
            .iter()
            .any(|have| !have.is_empty() && same_text(have, want))
    }

    fn in_tenant(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| same_text(t, tenant))
    }

    fn forget(&mut self, id: &str) {
        if let Some(n) = self.ids.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(id);
            }
        }
    }
}

impl Sink for UserSink {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let e = &alert.entity;
        // Rules key users by name alone, across tenants: with `--tenant`, an alert on the name
        // is this account's when its deciding event was in that tenant.
        let tenant = e
            .tenant
            .as_deref()
            .unwrap_or(alert.observed.tenant.as_str());
        let names_user =
            e.user.as_deref().is_some_and(|u| self.who.is(u)) && self.in_tenant(tenant);
        // The pipeline hands a batch's events to the sink before its alerts, so every event an
        // alert names is already here.
        let names_event = || {
            alert
                .evidence
                .iter()
                .any(|id| self.ids.contains_key(&event_key(tenant, id)))
        };
        if names_user || names_event() {
            if self.alerts.len() < MAX_ALERTS {
                self.alerts.push(alert.clone());
            } else {
                self.alerts_dropped += 1;
            }
        } else if (has_actor(alert)
            && matches!(alert.cause_class, CauseClass::Network | CauseClass::Attack))
            || (tenant_keyed(alert) && self.in_tenant(tenant))
        {
            if self.keyed_alerts.len() == MAX_KEYED_ALERTS {
                self.keyed_alerts.pop_front();
            }
            self.keyed_alerts.push_back(alert.clone());
        }
        Ok(())
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        if let Some(n) = self.unreadable.get_mut(&record.file) {
            *n += 1;
        } else {
            self.unreadable.insert(record.file.clone(), 1);
        }
        Ok(())
    }

    fn late_event(&mut self, _record: &LateEvent) -> Result<(), SinkError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn wants_events(&self) -> bool {
        true
    }

    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        self.newest = Some(self.newest.map_or(event.time, |n| n.max(event.time)));
        if self.is_user(event) {
            if let Some(n) = self.tenants.get_mut(event.tenant.as_str()) {
                *n += 1;
            } else {
                self.tenants.insert(event.tenant.to_string(), 1);
            }
            if !self.in_tenant(&event.tenant) {
                return Ok(());
            }
            let key = event.user.key();
            if !self.who.keys.contains(key) {
                self.who.keys.insert(key.to_lowercase());
            }
            if self.events.len() == MAX_EVENTS
                && let Some(old) = self.events.pop_front()
            {
                self.forget(&event_key(&old.tenant, &old.event_id));
                self.evicted += 1;
            }
            *self
                .ids
                .entry(event_key(&event.tenant, &event.event_id))
                .or_default() += 1;
            self.events.push_back(event.clone());
        } else {
            let key = event.user.key();
            if self.similar.len() < MAX_SIMILAR
                && !self.stem.is_empty()
                && !key.is_empty()
                && key.to_lowercase().contains(&self.stem)
            {
                self.similar.insert(key.to_owned());
            }
        }
        Ok(())
    }
}

/// An event's id within its tenant.
fn event_key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{1f}{id}")
}

/// Whether an alert is keyed by who sent the traffic (address, ASN, client) rather than whom it
/// targeted.
fn has_actor(a: &Alert) -> bool {
    let e = &a.entity;
    e.user.is_none() && (e.ip.is_some() || e.asn.is_some() || e.device_fingerprint.is_some())
}

/// Whether an alert is about a whole tenant (an outage, a policy or lockout wave): it concerns
/// every user of the tenant whose failures are of its kind, not only those its evidence names.
fn tenant_keyed(a: &Alert) -> bool {
    let e = &a.entity;
    e.tenant.is_some() && e.user.is_none() && !has_actor(a)
}

/// Whether `ev` came from the actor an address-, ASN- or device-keyed alert is about. An ASN
/// is shared by many honest users, so there the client must match the deciding event's too.
fn from_alert_actor(a: &Alert, ev: &AuthEvent) -> bool {
    let e = &a.entity;
    let fp = ev.device.fingerprint.as_str();
    (e.ip.is_some() && e.ip == ev.src.ip)
        || (!fp.is_empty() && e.device_fingerprint.as_deref() == Some(fp))
        || (e.asn.is_some()
            && e.asn == ev.src.asn
            && !fp.is_empty()
            && a.observed.device.fingerprint == fp)
}

/// Whether `ev` came from where an attack on this very account came from: the actor of an
/// address- or device-keyed alert, or the address or device of the deciding event of an alert
/// keyed by the user (`on_user`). A tenant-wide alert's deciding event is some other user's
/// (often behind the shared office egress), so it says nothing about this user's source.
fn from_attack_source(a: &Alert, ev: &AuthEvent, on_user: bool) -> bool {
    if has_actor(a) {
        return from_alert_actor(a, ev);
    }
    if !on_user {
        return false;
    }
    let fp = ev.device.fingerprint.as_str();
    (ev.src.ip.is_some() && (ev.src.ip == a.entity.ip || ev.src.ip == a.observed.src.ip))
        || (!fp.is_empty() && a.observed.device.fingerprint == fp)
}

/// Whether `e` has the alert's entity as its rule keys it: the entity fields the alert carries,
/// and the deciding event's values for the fields it does not (country, application).
fn same_key(rule: &CompiledRule, a: &Alert, e: &AuthEvent) -> bool {
    let entity = &a.entity;
    let fp = e.device.fingerprint.as_str();
    rule.key.iter().all(|field| match field {
        KeyField::User => entity
            .user
            .as_deref()
            .is_some_and(|u| same_text(u, e.user.key())),
        KeyField::Tenant => entity.tenant.as_deref() == Some(e.tenant.as_str()),
        KeyField::Ip => e.src.ip.is_some() && entity.ip == e.src.ip,
        KeyField::Asn => e.src.asn.is_some() && entity.asn == e.src.asn,
        KeyField::Device => !fp.is_empty() && entity.device_fingerprint.as_deref() == Some(fp),
        KeyField::Country => {
            let c = country(&e.src);
            !c.is_empty() && c == country(&a.observed.src)
        }
        KeyField::App => !e.app.is_empty() && e.app == a.observed.app,
    })
}

fn country(src: &authwatch_event::Src) -> &str {
    src.geo.as_ref().map_or("", |g| g.country.as_str())
}

/// Whether `e` is an event of the kind the alert's rule counts as evidence, for the same
/// entity: what keeps its incident going. The filter alone is not enough, since a triage rule
/// reads every sign-in step to see the user recover, while only the failures it counts are what
/// it explains.
fn of_kind(rule: &CompiledRule, a: &Alert, e: &AuthEvent) -> bool {
    rule.filter.matches(e)
        && rule.evidence.iter().any(|&c| {
            rule.counters
                .get(c)
                .is_some_and(|counter| counter.predicate.matches(e))
        })
        && same_key(rule, a, e)
}

// ─── Cause assignment ──────────────────────────────────────────────────────────────────────────

/// A generic explanation for a failure no alert explains, with localized steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Generic {
    WrongPassword,
    UnknownName,
    WrongCode,
    WrongMethod,
    MfaNotCompleted,
    PasswordExpired,
    UnexpectedPush,
    PushNotDelivered,
    AuthenticatorFault,
    NotEnrolled,
    ProviderFault,
    PolicyBlock,
    Lockout,
    Disabled,
    Throttled,
    Unclassified,
    PushDeniedDuringAttack,
    FraudReported,
}

/// Why a failure is put in its cause class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Basis {
    /// An alert (index into the report's alerts) names the event or covers it.
    Alert(usize),
    /// No alert does: the default mapping of its reason.
    Generic(Generic),
}

/// What the alerts say around one failure, for the default mapping.
struct Around {
    /// A network finding on the event's source address at about that time.
    network_alert: Option<usize>,
    /// An attack alert's incident was going on at the time, or its actor sent this event.
    attack_alert: bool,
}

fn is_failure(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failure | Outcome::Denied | Outcome::Timeout | Outcome::Blocked
    )
}

/// The account being locked: providers log it as a successful lock, yet it is exactly why the
/// user cannot sign in. Counted apart from failed steps, so that no figure holds both.
fn is_lockout(e: &AuthEvent) -> bool {
    e.activity == Activity::AccountLock && !is_failure(e.outcome)
}

/// What the help desk is asked about: a failed step or a lockout.
fn is_problem(e: &AuthEvent) -> bool {
    is_failure(e.outcome) || is_lockout(e)
}

/// The cause of a failure that no alert names, from its reason (and factor and outcome when the
/// provider gave no reason). Alerts see patterns across events and users; this sees one event,
/// so each arm picks the most common cause of that signal and its steps say how to confirm it.
fn default_cause(ev: &AuthEvent, around: &Around) -> (CauseClass, Basis) {
    use Basis::{Alert, Generic as G};
    use CauseClass::{Attack, Device, Network, System, User};
    use Generic::*;
    match (ev.reason, ev.factor, ev.outcome) {
        // A wrong password is a typo or an old password saved somewhere far more often than an
        // attack; attacks come with their own alerts (brute force, spraying, stuffing).
        (Reason::InvalidCredentials, ..) => (User, G(WrongPassword)),
        // From the user's own seat a name the provider does not know is a mistyped name or the
        // wrong domain; stuffing with unknown names is an IP-keyed alert.
        (Reason::UnknownUser, ..) => (User, G(UnknownName)),
        // One wrong or expired code is a user mistake; codes that keep failing over
        // hours are clock drift, which the triage rule reports (device) with an alert.
        (Reason::InvalidOtp, ..) => (User, G(WrongCode)),
        // Choosing a method that is not the user's or not allowed is the user's choice at the
        // prompt; the fix is showing them the right one.
        (Reason::MethodMismatch, ..) => (User, G(WrongMethod)),
        // The user stopped at the MFA step (closed the prompt, walked away).
        (Reason::MfaRequired, ..) => (User, G(MfaNotCompleted)),
        // An expired password is fixed by the user changing it, not by an administrator.
        (Reason::PasswordExpired, ..) => (User, G(PasswordExpired)),
        // An unanswered push usually never reached the phone (notifications off, battery
        // optimization): device. When a network finding names the address the push was sent
        // for, at about that time, several users behind that egress lost their pushes: network.
        (Reason::PushTimeout, ..)
        | (Reason::None | Reason::Other, Factor::Push, Outcome::Timeout) => {
            match around.network_alert {
                Some(i) => (Network, Alert(i)),
                None => (Device, G(PushNotDelivered)),
            }
        }
        // A security key or biometric reader that errors is hardware or its driver.
        (Reason::AuthenticatorError, ..) => (Device, G(AuthenticatorFault)),
        // Enrollment is kept by the identity system (removed after a phone change, never done):
        // an administrator fixes it, after verifying the user's identity.
        (Reason::DeviceNotRegistered | Reason::FactorNotEnrolled, ..) => (System, G(NotEnrolled)),
        // The provider failed, not the user; waves across users get an outage alert.
        (Reason::ProviderError, ..) => (System, G(ProviderFault)),
        // A sign-on or risk policy decided; only an administrator can review or except it.
        (Reason::PolicyDenied | Reason::RiskBlocked, ..) => (System, G(PolicyBlock)),
        // A lockout is the system's protection: unlocking and tuning it is an admin task
        // (lockouts caused by an attack come with brute-force alerts that claim them).
        (Reason::LockedOut, ..) => (System, G(Lockout)),
        (Reason::AccountDisabled, ..) => (System, G(Disabled)),
        // Throttling is the provider's limit; the retrying client behind it is found in logs.
        (Reason::RateLimited, ..) => (System, G(Throttled)),
        // A denied push: during an attack on the user, or from the attacker's address, the
        // push was most likely the attacker's; otherwise only the user knows why they denied
        // it, so ask them.
        (Reason::PushDenied, ..) | (Reason::None | Reason::Other, _, Outcome::Denied) => {
            if around.attack_alert {
                (Attack, G(PushDeniedDuringAttack))
            } else {
                (User, G(UnexpectedPush))
            }
        }
        // A fraud report is the user saying "this was not me": an attack even when no rule in
        // the pack turned it into an alert.
        (Reason::UserReportedFraud, ..) => (Attack, G(FraudReported)),
        // No usable reason, but the provider says a policy blocked it.
        (Reason::None | Reason::Other, _, Outcome::Blocked) => (System, G(PolicyBlock)),
        // No usable reason on a security key or biometric step: the hardware is the likely part.
        (
            Reason::None | Reason::Other,
            Factor::Webauthn | Factor::Biometric | Factor::HardwareToken,
            _,
        ) => (Device, G(AuthenticatorFault)),
        // Nothing to go on: the provider's own code (listed with the reasons) is looked up in
        // its admin console, which is the system side.
        (Reason::None | Reason::Other, ..) => (System, G(Unclassified)),
    }
}

/// The best-ranked of `candidates`: attacks before benign findings, then by severity, then the
/// alert that names more of the user's failures (a clock-drift finding over four failed codes
/// sees more than a user-mistake finding over the first three); the earliest wins a tie.
fn best(
    alerts: &[Alert],
    named: &[usize],
    candidates: impl Iterator<Item = usize>,
) -> Option<usize> {
    best_matched(alerts, named, candidates.map(|i| (i, Match::Named)))
}

/// How an alert matches a failure it does not name, strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    /// Only its source: the attacker's address or device, whatever the failure.
    Source,
    /// A lockout and the wrong passwords that led to it, one of which the alert names.
    Lockout,
    /// The kind of event the rule counts, for its entity.
    Kind,
    /// The alert names the event itself.
    Named,
}

/// As [`best`], with how each candidate matches ranked after the cause class: the brute force
/// whose kind a wrong password is explains it better than the compromise that only shares its
/// address, yet any attack outranks a benign finding.
fn best_matched(
    alerts: &[Alert],
    named: &[usize],
    candidates: impl Iterator<Item = (usize, Match)>,
) -> Option<usize> {
    let rank = |(i, m): (usize, Match)| {
        let a = &alerts[i];
        (a.cause_class == CauseClass::Attack, m, a.severity, named[i])
    };
    let mut best: Option<(usize, Match)> = None;
    for c in candidates {
        if best.is_none_or(|b| rank(c) > rank(b)) {
            best = Some(c);
        }
    }
    best.map(|(i, _)| i)
}

/// Reasons that are one signal for following an incident whose rule is not in the pack: an
/// attacker's pushes are denied or left unanswered at random, and a sprayer's guesses hit
/// existing and unknown names alike.
fn family(r: Reason) -> Reason {
    match r {
        Reason::PushDenied | Reason::PushTimeout | Reason::UserReportedFraud => Reason::PushTimeout,
        Reason::InvalidCredentials | Reason::UnknownUser => Reason::InvalidCredentials,
        r => r,
    }
}

/// The event-time span an alert covers when it fires: its window and its incident.
fn span(a: &Alert) -> (i64, i64) {
    (
        a.window.start.millis().min(a.first_seen.millis()),
        a.window.end.millis().max(a.last_seen.millis()),
    )
}

/// How far an alert reaches in the user's timeline. A rule alerts once per incident and the
/// incident absorbs further activity of its entity until the entity has been quiet for the
/// rule's `suppress`: an attack that goes on for hours keeps its one alert, whose window and
/// `last_seen` stay at the moment it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scope {
    start: i64,
    /// The last of the user's failures that kept the incident going (at least the alert's own
    /// last event).
    last: i64,
    /// Until when the incident is still open after `last`.
    until: i64,
}

impl Scope {
    fn covers(&self, t: i64) -> bool {
        t >= self.start && t <= self.until
    }
}

/// The alert's scope over the user's failures (`problems`, in time order): it goes on with each
/// failure of its kind and entity that comes less than the rule's `suppress` after the previous
/// one. Only the user's own events are seen here, so the scope may end earlier than the
/// incident at the engine, never later.
fn scope(a: &Alert, rule: Option<&CompiledRule>, problems: &[&AuthEvent]) -> Scope {
    let (start, end) = span(a);
    // Only a tumbling window ends after its deciding event, and its incident ends with its
    // bucket, however active the entity stays.
    if a.window.end > a.last_seen {
        return Scope {
            start,
            last: end,
            until: end,
        };
    }
    let Some(rule) = rule else {
        return Scope {
            start,
            last: end,
            until: end.saturating_add(FOLLOW_MS),
        };
    };
    let suppress = rule.suppress_ms;
    let mut last = end;
    for e in problems {
        if e.time <= last {
            continue;
        }
        if e.time > last.saturating_add(suppress) {
            break;
        }
        if of_kind(rule, a, e) {
            last = e.time;
        }
    }
    Scope {
        start,
        last,
        until: last.saturating_add(suppress),
    }
}

/// Whether a network finding is about this push timeout: the same egress address at about the
/// time of the burst it saw.
fn network_covers(a: &Alert, e: &AuthEvent) -> bool {
    let (start, end) = span(a);
    a.cause_class == CauseClass::Network
        && e.outcome == Outcome::Timeout
        && e.src.ip.is_some()
        && e.src.ip == a.entity.ip
        && e.time >= start.saturating_sub(NETWORK_MARGIN_MS)
        && e.time <= end.saturating_add(NETWORK_MARGIN_MS)
}

// ─── The report ────────────────────────────────────────────────────────────────────────────────

/// One input file's numbers.
struct FileFacts {
    name: String,
    /// Lines read (readable or not).
    lines: u64,
    unreadable: u64,
}

struct InputFacts {
    files: Vec<FileFacts>,
    events: u64,
    unreadable: u64,
    /// Unreadable lines by reason.
    rejected: Vec<(RejectKind, u64)>,
    late: u64,
}

impl InputFacts {
    fn new(summary: &RunSummary, source: &OrderedSource, sink: &UserSink) -> InputFacts {
        let files = source
            .names
            .iter()
            .zip(&source.lines)
            .map(|(name, &lines)| {
                let unreadable = sink.unreadable.get(name).copied().unwrap_or(0);
                FileFacts {
                    name: name.clone(),
                    lines: lines.max(unreadable),
                    unreadable,
                }
            })
            .collect();
        InputFacts {
            files,
            events: summary.events,
            unreadable: summary.dead_letters.iter().map(|(_, n)| n).sum(),
            rejected: summary
                .dead_letters
                .iter()
                .copied()
                .filter(|(_, n)| *n > 0)
                .collect(),
            late: summary.late_events,
        }
    }

    /// The error of a run in which no line was an event: which files, and what their lines were.
    fn nothing_readable(&self, lang: Language) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| match (lang, f.lines) {
                (Language::En, 0) => format!("{}: empty", f.name),
                (Language::En, n) => format!("{}: {n} line(s), none readable", f.name),
                (Language::Ja, 0) => format!("{}: 空", f.name),
                (Language::Ja, n) => format!("{}: {n} 行、読み取れる行なし", f.name),
            })
            .collect();
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            match lang {
                Language::En => format!("; rejected lines by reason: {}", reasons.join(", ")),
                Language::Ja => format!("。読み取れなかった行の理由: {}", reasons.join(", ")),
            }
        };
        match lang {
            Language::En => format!(
                "no event could be read from the input ({}){reasons}. Check that these are the \
                 identity provider's sign-in logs as JSON lines; `authwatch replay FILE \
                 --dead-letter dead.jsonl` says why each line was rejected",
                files.join("; ")
            ),
            Language::Ja => format!(
                "入力からイベントを 1 件も読み取れませんでした（{}）{reasons}。ID プロバイダーのサインインログ（JSON Lines）か確認してください。各行が読み取れなかった理由は `authwatch replay FILE --dead-letter dead.jsonl` で確認できます",
                files.join("、")
            ),
        }
    }
}

/// The failures and lockouts one explanation covers.
struct Explained {
    failures: usize,
    lockouts: usize,
    first: i64,
    last: i64,
    /// Their event ids, the first [`MAX_IDS_PER_EXPLANATION`], for tickets to link.
    ids: Vec<String>,
}

struct Group {
    class: CauseClass,
    failures: usize,
    lockouts: usize,
    first: i64,
    last: i64,
    /// Distinct reasons, each with the provider's raw codes seen with it.
    reasons: BTreeMap<Reason, BTreeSet<String>>,
    /// Each distinct explanation: how many failures, first and last time.
    explanations: BTreeMap<Basis, Explained>,
}

struct Report {
    user: String,
    /// `--tenant`.
    tenant: Option<String>,
    /// The tenants the name occurs in, with its events in each.
    tenants: Vec<(String, u64)>,
    since: Option<DurationText>,
    last: usize,
    input: InputFacts,
    /// The user's events in the period, by time.
    events: Vec<AuthEvent>,
    /// The user's events before `--since`.
    before_since: usize,
    evicted: u64,
    newest: Option<i64>,
    alerts: Vec<Alert>,
    /// Each alert's scope, by the index of `alerts`.
    scopes: Vec<Scope>,
    alerts_dropped: u64,
    /// Sign-in and MFA steps that succeeded or failed (not prompts, sign-outs or lockouts).
    steps: usize,
    successes: usize,
    failures: usize,
    lockouts: usize,
    groups: Vec<Group>,
    similar: Vec<String>,
}

impl Report {
    fn build(
        sink: UserSink,
        args: &ExplainArgs,
        input: InputFacts,
        rules: &HashMap<String, CompiledRule>,
    ) -> Report {
        let cutoff = match (args.since, sink.newest) {
            (Some(d), Some(n)) => n.saturating_sub(d.millis()),
            _ => i64::MIN,
        };
        let mut history: Vec<AuthEvent> = sink.events.into_iter().collect();
        // Providers deliver slightly out of order; the help desk reads a timeline.
        history.sort_by_key(|e| e.time);
        let before_since = history.iter().filter(|e| e.time < cutoff).count();
        // An incident that began before `--since` and goes on into the period is followed
        // through the failures before it too.
        let all_problems: Vec<&AuthEvent> = history.iter().filter(|e| is_problem(e)).collect();
        let rule = |a: &Alert| rules.get(&a.rule_id);
        let who = sink.who;
        // A network finding counts when one of the user's pushes timed out behind its address
        // at about that time; an attack keyed by its source when one of the user's failures
        // came from that source during the incident; any alert keyed by an actor or a tenant
        // when one of the user's failures is of its kind and entity during its incident.
        let concerns_user = |a: &Alert| {
            let s = scope(a, rule(a), &all_problems);
            all_problems.iter().any(|e| {
                network_covers(a, e)
                    || (s.covers(e.time)
                        && (rule(a).is_some_and(|r| of_kind(r, a, e))
                            || (a.cause_class == CauseClass::Attack
                                && has_actor(a)
                                && from_alert_actor(a, e))))
            })
        };
        let mut alerts: Vec<Alert> = sink.alerts;
        alerts.extend(sink.keyed_alerts.into_iter().filter(concerns_user));
        alerts.sort_by(|a, b| (a.first_seen, &a.alert_id).cmp(&(b.first_seen, &b.alert_id)));
        let period_problems: Vec<&AuthEvent> = all_problems
            .iter()
            .copied()
            .filter(|e| e.time >= cutoff)
            .collect();
        // An alert belongs to the period when it fired in it, or when its incident covers one
        // of the period's failures: an attack that started earlier and is still going on is
        // the period's most important fact.
        let mut scopes = Vec::with_capacity(alerts.len());
        alerts.retain(|a| {
            let s = scope(a, rule(a), &all_problems);
            let keep = span(a).1 >= cutoff || period_problems.iter().any(|e| s.covers(e.time));
            if keep {
                scopes.push(s);
            }
            keep
        });
        let groups = assign(&period_problems, &alerts, &scopes, rules, &who);

        let events: Vec<AuthEvent> = history.into_iter().filter(|e| e.time >= cutoff).collect();
        let successes = events.iter().filter(|e| is_sign_in_success(e)).count();
        let failures = events.iter().filter(|e| is_failure(e.outcome)).count();
        let lockouts = events.iter().filter(|e| is_lockout(e)).count();
        Report {
            user: args.user.trim().to_owned(),
            tenant: sink.tenant,
            tenants: sink.tenants.into_iter().collect(),
            since: args.since,
            last: args.last,
            input,
            events,
            before_since,
            evicted: sink.evicted,
            newest: sink.newest,
            alerts,
            scopes,
            alerts_dropped: sink.alerts_dropped,
            steps: successes + failures,
            successes,
            failures,
            lockouts,
            groups,
            similar: sink.similar.into_iter().collect(),
        }
    }

    /// Whether the name occurs in more than one tenant and the report covers all of them.
    fn mixes_tenants(&self) -> bool {
        self.tenant.is_none() && self.tenants.len() > 1
    }

    /// Alerts that explain failures in the cause groups (their steps are printed there).
    fn explaining(&self) -> BTreeSet<usize> {
        self.groups
            .iter()
            .flat_map(|g| g.explanations.keys())
            .filter_map(|b| match b {
                Basis::Alert(i) => Some(*i),
                Basis::Generic(_) => None,
            })
            .collect()
    }
}

/// A successful step of signing in (not a sign-out, an unlock or an enrollment).
fn is_sign_in_success(e: &AuthEvent) -> bool {
    e.outcome == Outcome::Success && matches!(e.activity, Activity::Logon | Activity::MfaVerify)
}

/// Puts every failure and lockout in one cause class: the best alert that names it in its
/// evidence; else the best alert whose incident it belongs to (an event of the alert's kind and
/// entity while the incident goes on, a failure from where an attack on the account came from
/// while that attack goes on, or the wrong passwords that led to a lockout the alert names);
/// else the default mapping of its reason.
fn assign(
    problems: &[&AuthEvent],
    alerts: &[Alert],
    scopes: &[Scope],
    rules: &HashMap<String, CompiledRule>,
    who: &Who,
) -> Vec<Group> {
    let by_id: HashMap<&str, &AuthEvent> =
        problems.iter().map(|e| (e.event_id.as_str(), *e)).collect();
    let rule: Vec<Option<&CompiledRule>> = alerts.iter().map(|a| rules.get(&a.rule_id)).collect();
    let mut naming: HashMap<&str, Vec<usize>> = HashMap::new();
    // Per alert: how many of the user's problems it names, their reasons, and who sent them
    // (source addresses and device fingerprints).
    let mut named = vec![0usize; alerts.len()];
    let mut named_reasons: Vec<BTreeSet<Reason>> = vec![BTreeSet::new(); alerts.len()];
    let mut named_actors: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); alerts.len()];
    let mut named_ips: Vec<BTreeSet<std::net::IpAddr>> = vec![BTreeSet::new(); alerts.len()];
    let mut named_locks: Vec<Vec<i64>> = vec![Vec::new(); alerts.len()];
    for (i, a) in alerts.iter().enumerate() {
        for id in &a.evidence {
            if let Some(e) = by_id.get(id.as_str()) {
                naming.entry(e.event_id.as_str()).or_default().push(i);
                named[i] += 1;
                named_reasons[i].insert(family(e.reason));
                named_ips[i].extend(e.src.ip);
                if is_lock(e) {
                    named_locks[i].push(e.time);
                }
                if !e.device.fingerprint.is_empty() {
                    named_actors[i].insert(e.device.fingerprint.as_str());
                }
            }
        }
    }
    let on_user: Vec<bool> = alerts
        .iter()
        .map(|a| a.entity.user.as_deref().is_some_and(|u| who.is(u)))
        .collect();
    // The same actor as the alert's incident: the incident is the user's own, or the failure
    // came from an address or device one of the user's events named by the alert came from (a
    // multi-source spray rotates addresses, not its client).
    let same_actor = |i: usize, ev: &AuthEvent| {
        on_user[i]
            || ev.src.ip.is_some_and(|ip| named_ips[i].contains(&ip))
            || (!ev.device.fingerprint.is_empty()
                && named_actors[i].contains(ev.device.fingerprint.as_str()))
    };
    let is_attack = |i: usize| alerts[i].cause_class == CauseClass::Attack;

    let mut groups: BTreeMap<CauseClass, Group> = BTreeMap::new();
    for &ev in problems {
        let by_evidence = naming
            .get(ev.event_id.as_str())
            .and_then(|v| best(alerts, &named, v.iter().copied()));
        let belongs = |i: usize| -> Option<Match> {
            let a = &alerts[i];
            let during = scopes[i].covers(ev.time);
            // More of what the rule counts, for the same entity, while the incident goes on.
            // A tenant-wide attack counts every user's wrong passwords alike, the user's own
            // typos among them: it claims only those from an actor it named. Without the rule:
            // more of the signal the alert named, from the same actor.
            let of_its_kind = match rule[i] {
                Some(r) => {
                    of_kind(r, a, ev) && (!(is_attack(i) && tenant_keyed(a)) || same_actor(i, ev))
                }
                None => named_reasons[i].contains(&family(ev.reason)) && same_actor(i, ev),
            };
            // Whatever the reason, a failure from where an attack on the account came from,
            // while it goes on: the attacker's own push after a compromise, say.
            let from_attacker = is_attack(i) && from_attack_source(a, ev, on_user[i]);
            // The lockout that a password attack or the user's own wrong passwords ran into.
            let lock_it_caused = is_lock(ev)
                && named_reasons[i].contains(&Reason::InvalidCredentials)
                && same_actor(i, ev);
            // The wrong passwords that led to a lockout belong to the lockout's story
            // (lockouts are a system cause: review the threshold, find the old password)
            // unless an attack claims them, which outranks it.
            let led_to_lock = family(ev.reason) == Reason::InvalidCredentials
                && same_actor(i, ev)
                && named_locks[i]
                    .iter()
                    .any(|&t| ev.time <= t && ev.time >= t.saturating_sub(FOLLOW_MS));
            if during && of_its_kind {
                Some(Match::Kind)
            } else if (during && lock_it_caused) || led_to_lock {
                Some(Match::Lockout)
            } else if during && from_attacker {
                Some(Match::Source)
            } else {
                None
            }
        };
        let following = |attacks_only: bool| {
            best_matched(
                alerts,
                &named,
                (0..alerts.len())
                    .filter(|&i| !attacks_only || is_attack(i))
                    .filter_map(|i| belongs(i).map(|m| (i, m))),
            )
        };
        // An alert naming the event wins, except that an attack still going on outranks a
        // benign finding (the lockout an attacker caused is the attack's, not a threshold's).
        let chosen = match by_evidence {
            Some(e) if is_attack(e) => Some(e),
            Some(e) => following(true).or(Some(e)),
            None => following(false),
        };
        let (class, basis) = match chosen {
            Some(i) => (alerts[i].cause_class, Basis::Alert(i)),
            None => {
                let network_alert = best(
                    alerts,
                    &named,
                    (0..alerts.len()).filter(|&i| network_covers(&alerts[i], ev)),
                );
                // Only an attack going on at the time, or one whose actor sent this very
                // event, makes a denied push the attacker's: an attack elsewhere in the period
                // says nothing about a push the next day.
                let attack_alert = (0..alerts.len()).any(|i| {
                    is_attack(i)
                        && (scopes[i].covers(ev.time)
                            || (has_actor(&alerts[i])
                                && from_alert_actor(&alerts[i], ev)
                                && ev.time >= scopes[i].start))
                });
                default_cause(
                    ev,
                    &Around {
                        network_alert,
                        attack_alert,
                    },
                )
            }
        };
        let lockout = usize::from(is_lockout(ev));
        let failure = 1 - lockout;
        let g = groups.entry(class).or_insert_with(|| Group {
            class,
            failures: 0,
            lockouts: 0,
            first: ev.time,
            last: ev.time,
            reasons: BTreeMap::new(),
            explanations: BTreeMap::new(),
        });
        g.failures += failure;
        g.lockouts += lockout;
        g.first = g.first.min(ev.time);
        g.last = g.last.max(ev.time);
        let raw = g.reasons.entry(ev.reason).or_default();
        if !ev.reason_raw.is_empty() && raw.len() < 5 {
            raw.insert(ev.reason_raw.to_string());
        }
        let x = g.explanations.entry(basis).or_insert(Explained {
            failures: 0,
            lockouts: 0,
            first: ev.time,
            last: ev.time,
            ids: Vec::new(),
        });
        x.failures += failure;
        x.lockouts += lockout;
        x.first = x.first.min(ev.time);
        x.last = x.last.max(ev.time);
        if x.ids.len() < MAX_IDS_PER_EXPLANATION {
            x.ids.push(ev.event_id.to_string());
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    // Attacks first, whatever their count: they are the reason to act now. Then the biggest.
    groups.sort_by_key(|g| {
        (
            g.class != CauseClass::Attack,
            std::cmp::Reverse(g.failures + g.lockouts),
        )
    });
    groups
}

fn is_lock(ev: &AuthEvent) -> bool {
    ev.activity == Activity::AccountLock || ev.reason == Reason::LockedOut
}

// ─── Words ─────────────────────────────────────────────────────────────────────────────────────

fn tr(lang: Language, en: &'static str, ja: &'static str) -> &'static str {
    match lang {
        Language::En => en,
        Language::Ja => ja,
    }
}

fn class_name(c: CauseClass, lang: Language) -> &'static str {
    match c {
        CauseClass::User => tr(lang, "User", "利用者"),
        CauseClass::Device => tr(lang, "Device", "端末"),
        CauseClass::Network => tr(lang, "Network", "ネットワーク"),
        CauseClass::System => tr(lang, "System", "システム"),
        CauseClass::Attack => tr(lang, "Attack", "攻撃"),
    }
}

fn class_meaning(c: CauseClass, lang: Language) -> &'static str {
    match c {
        CauseClass::User => tr(lang, "the user's own mistake", "本人の操作ミス"),
        CauseClass::Device => tr(
            lang,
            "the user's phone, security key or authenticator",
            "スマートフォン・セキュリティキー・認証アプリの問題",
        ),
        CauseClass::Network => tr(
            lang,
            "the network between the user and the MFA service",
            "利用者と MFA サービスの間のネットワークの問題",
        ),
        CauseClass::System => tr(
            lang,
            "enrollment, policy, lockout or the identity provider",
            "登録・ポリシー・ロックアウト・ID プロバイダー側の問題",
        ),
        CauseClass::Attack => tr(
            lang,
            "someone else is trying to get into the account",
            "第三者がアカウントへの侵入を試みています",
        ),
    }
}

fn severity_name(s: Severity, lang: Language) -> &'static str {
    match s {
        Severity::Critical => tr(lang, "CRITICAL", "緊急"),
        Severity::High => tr(lang, "HIGH", "高"),
        Severity::Medium => tr(lang, "MEDIUM", "中"),
        Severity::Low => tr(lang, "LOW", "低"),
        Severity::Info => tr(lang, "INFO", "情報"),
    }
}

fn activity_name(a: Activity, lang: Language) -> &'static str {
    match a {
        Activity::Other => tr(lang, "other", "その他"),
        Activity::Logon => tr(lang, "sign-in", "サインイン"),
        Activity::MfaChallenge => tr(lang, "MFA request", "MFA 要求"),
        Activity::MfaVerify => tr(lang, "MFA answer", "MFA 応答"),
        Activity::Logoff => tr(lang, "sign-out", "サインアウト"),
        Activity::AccountLock => tr(lang, "account locked", "ロック"),
        Activity::AccountUnlock => tr(lang, "account unlocked", "ロック解除"),
        Activity::PasswordReset => tr(lang, "password reset", "パスワード再設定"),
        Activity::MfaEnroll => tr(lang, "MFA enrolled", "MFA 登録"),
        Activity::MfaReset => tr(lang, "MFA reset", "MFA リセット"),
        Activity::PolicyEvaluation => tr(lang, "policy check", "ポリシー判定"),
        Activity::AccountDisable => tr(lang, "account disabled", "アカウント無効化"),
    }
}

fn factor_name(f: Factor, lang: Language) -> &'static str {
    match f {
        Factor::None => "–",
        Factor::Password => tr(lang, "password", "パスワード"),
        Factor::Push => tr(lang, "push", "プッシュ"),
        Factor::Totp => tr(lang, "app code", "アプリのコード"),
        Factor::Sms => tr(lang, "SMS code", "SMS コード"),
        Factor::Voice => tr(lang, "voice call", "音声通話"),
        Factor::Email => tr(lang, "e-mail", "メール"),
        Factor::Webauthn => tr(lang, "security key", "セキュリティキー"),
        Factor::HardwareToken => tr(lang, "hardware token", "ハードウェアトークン"),
        Factor::Biometric => tr(lang, "biometric", "生体認証"),
    }
}

fn outcome_name(o: Outcome, lang: Language) -> &'static str {
    match o {
        Outcome::Success => tr(lang, "ok", "成功"),
        Outcome::Failure => tr(lang, "FAILED", "失敗"),
        Outcome::Denied => tr(lang, "DENIED", "拒否"),
        Outcome::Timeout => tr(lang, "NO ANSWER", "無応答"),
        Outcome::Challenge => tr(lang, "asked", "要求"),
        Outcome::Blocked => tr(lang, "BLOCKED", "ブロック"),
    }
}

fn reason_name(r: Reason, lang: Language) -> &'static str {
    match r {
        Reason::None => "",
        Reason::InvalidCredentials => tr(lang, "wrong password", "パスワード誤り"),
        Reason::UnknownUser => tr(lang, "unknown user name", "存在しないユーザー名"),
        Reason::InvalidOtp => tr(lang, "wrong code", "コード誤り"),
        Reason::PushDenied => tr(lang, "push denied", "プッシュ拒否"),
        Reason::PushTimeout => tr(lang, "push not answered", "プッシュ無応答"),
        Reason::UserReportedFraud => tr(lang, "reported as fraud", "不正として報告"),
        Reason::DeviceNotRegistered => tr(lang, "device not registered", "端末未登録"),
        Reason::FactorNotEnrolled => tr(lang, "method not enrolled", "認証方式未登録"),
        Reason::MethodMismatch => tr(lang, "wrong method", "認証方式の誤り"),
        Reason::PolicyDenied => tr(lang, "denied by policy", "ポリシーで拒否"),
        Reason::RiskBlocked => tr(lang, "blocked as risky", "リスク判定でブロック"),
        Reason::LockedOut => tr(lang, "account locked", "ロックアウト"),
        Reason::MfaRequired => tr(lang, "MFA not completed", "MFA 未完了"),
        Reason::ProviderError => tr(lang, "provider error", "プロバイダーのエラー"),
        Reason::RateLimited => tr(lang, "too many attempts", "試行回数の制限"),
        Reason::AccountDisabled => tr(lang, "account disabled", "アカウント無効"),
        Reason::PasswordExpired => tr(lang, "password expired", "パスワード期限切れ"),
        Reason::AuthenticatorError => tr(lang, "key/biometric error", "キー・生体認証のエラー"),
        Reason::Other => tr(lang, "other", "その他"),
    }
}

/// A summary and steps in one language.
struct Text {
    summary: &'static str,
    steps: &'static [&'static str],
}

impl Generic {
    fn text(self, lang: Language) -> Text {
        let (en, ja) = self.texts();
        match lang {
            Language::En => en,
            Language::Ja => ja,
        }
    }

    fn texts(self) -> (Text, Text) {
        let t = |summary, steps| Text { summary, steps };
        match self {
            Generic::WrongPassword => (
                t(
                    "The password was wrong: a typo, or an old password still saved on a device.",
                    &[
                        "Ask the user to retype the password carefully (Caps Lock, keyboard layout).",
                        "If it was changed recently, have them update it wherever it is saved (phone mail app, browser, mapped drives).",
                        "If the user did not try to sign in at those times, treat it as a password attack and escalate.",
                    ],
                ),
                t(
                    "パスワードが誤っていました。入力ミスか、端末に古いパスワードが保存されたままになっている可能性があります。",
                    &[
                        "Caps Lock やキーボード配列に注意して、パスワードを入力し直すよう案内してください。",
                        "最近パスワードを変更した場合は、保存されている場所（スマートフォンのメールアプリ、ブラウザー、ネットワークドライブ）も更新してもらってください。",
                        "その時刻にユーザー本人がサインインしていなければ、パスワード攻撃として扱いエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::UnknownName => (
                t(
                    "The sign-in name was not recognised: a mistyped user name or the wrong domain.",
                    &[
                        "Confirm the exact sign-in name (UPN or e-mail address) the user should use.",
                        "Check in the admin console that the account exists and has not been renamed.",
                    ],
                ),
                t(
                    "サインイン名が認識されませんでした。ユーザー名の入力ミスか、ドメインの誤りと考えられます。",
                    &[
                        "ユーザーが使うべき正確なサインイン名（UPN またはメールアドレス）を確認してください。",
                        "管理コンソールで、アカウントが存在し名前が変更されていないか確認してください。",
                    ],
                ),
            ),
            Generic::WrongCode => (
                t(
                    "A one-time code was wrong or had expired.",
                    &[
                        "Ask the user to type the code shown right now, and to wait for a new one if it is about to expire (codes last about 30 seconds).",
                        "If correct codes keep failing, check the phone's automatic date and time setting (clock drift).",
                    ],
                ),
                t(
                    "ワンタイムコードが誤っているか、期限切れでした。",
                    &[
                        "いま表示されているコードを入力し、期限が切れそうなときは新しいコードを待つよう案内してください（コードの有効期間は約 30 秒です）。",
                        "正しいコードでも失敗が続く場合は、スマートフォンの日付と時刻の自動設定を確認してください（時刻ずれ）。",
                    ],
                ),
            ),
            Generic::WrongMethod => (
                t(
                    "The user chose an MFA method that is not theirs or not allowed.",
                    &[
                        "Confirm which MFA methods the user has enrolled and which the policy allows.",
                        "Show the user where to pick the right method at the prompt (\"Sign in another way\").",
                    ],
                ),
                t(
                    "ユーザーが、登録していない、または許可されていない MFA 方式を選びました。",
                    &[
                        "ユーザーが登録している MFA 方式と、ポリシーで許可されている方式を確認してください。",
                        "プロンプトで正しい方式を選ぶ場所（「別の方法でサインイン」など）を案内してください。",
                    ],
                ),
            ),
            Generic::MfaNotCompleted => (
                t(
                    "The sign-in stopped at the MFA step.",
                    &[
                        "Ask the user whether the MFA prompt appeared and whether they completed it.",
                        "If no prompt ever appears, check the user's enrolled methods in the admin console.",
                    ],
                ),
                t(
                    "サインインが MFA の手順で止まりました。",
                    &[
                        "MFA のプロンプトが表示されたか、最後まで操作したかをユーザーに確認してください。",
                        "プロンプトが表示されない場合は、管理コンソールで登録済みの方式を確認してください。",
                    ],
                ),
            ),
            Generic::PasswordExpired => (
                t(
                    "The password has expired.",
                    &[
                        "Guide the user through changing the password (self-service portal or admin console).",
                        "Remind them to update the password wherever it is saved.",
                    ],
                ),
                t(
                    "パスワードの有効期限が切れています。",
                    &[
                        "パスワードの変更手順（セルフサービスポータルまたは管理コンソール）を案内してください。",
                        "パスワードを保存している場所もすべて更新するよう伝えてください。",
                    ],
                ),
            ),
            Generic::UnexpectedPush => (
                t(
                    "The user denied a push request, probably one they did not expect; no attack on the account was going on at the time. Ask them.",
                    &[
                        "Ask the user why they denied it: a mis-tap, or a request they had not started?",
                        "If they had not started it, someone else has the password: reset it, revoke all sessions and escalate.",
                    ],
                ),
                t(
                    "ユーザーがプッシュ要求を拒否しました。心当たりのない要求だった可能性があります（その時点でアカウントへの攻撃は検知されていません）。本人に確認してください。",
                    &[
                        "拒否した理由（誤操作か、本人が始めていないサインインの要求か）をユーザーに確認してください。",
                        "本人が始めたものでなければ第三者がパスワードを知っています。パスワードをリセットし、すべてのセッションを無効化してエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::PushNotDelivered => (
                t(
                    "A push notification was not answered in time: the phone probably did not receive it.",
                    &[
                        "Check that notifications are allowed for the authenticator app and that battery optimization does not stop it.",
                        "Check the phone has a data connection; try mobile data instead of Wi-Fi.",
                        "Meanwhile the user can use the app's one-time code; re-register the device if pushes never arrive.",
                    ],
                ),
                t(
                    "プッシュ通知に時間内の応答がありませんでした。スマートフォンに通知が届いていない可能性があります。",
                    &[
                        "認証アプリの通知が許可され、バッテリー最適化で停止されていないか確認してください。",
                        "スマートフォンがデータ通信できるか確認し、Wi-Fi ではなくモバイル回線でも試してください。",
                        "当面はアプリのワンタイムコードを使えます。プッシュが届かないままなら端末を再登録してください。",
                    ],
                ),
            ),
            Generic::AuthenticatorFault => (
                t(
                    "A security key or biometric reader failed.",
                    &[
                        "Try another USB port or NFC position, and make sure the browser is up to date.",
                        "Re-register the fingerprint or face if the platform biometric keeps failing.",
                        "Use a backup method meanwhile; replace the key if it fails on several computers.",
                    ],
                ),
                t(
                    "セキュリティキーまたは生体認証の読み取りに失敗しました。",
                    &[
                        "別の USB ポートや NFC の位置で試し、ブラウザーが最新か確認してください。",
                        "生体認証が繰り返し失敗する場合は、指紋や顔を再登録してください。",
                        "その間はバックアップの方式を使い、複数の PC で失敗するならキーを交換してください。",
                    ],
                ),
            ),
            Generic::NotEnrolled => (
                t(
                    "The MFA method or device is not (or no longer) registered for the account, typically after a phone change.",
                    &[
                        "Check the user's enrolled methods in the admin console.",
                        "Verify the user's identity by a trusted channel, reset the old enrollment and have them enroll the new device.",
                    ],
                ),
                t(
                    "MFA の方式または端末がアカウントに登録されていません（登録が解除された可能性があります）。機種変更の後によく起こります。",
                    &[
                        "管理コンソールでユーザーの登録済みの方式を確認してください。",
                        "信頼できる経路で本人確認をしたうえで古い登録をリセットし、新しい端末を登録してもらってください。",
                    ],
                ),
            ),
            Generic::ProviderFault => (
                t(
                    "The MFA provider returned an error: a fault on the service side, not the user's.",
                    &[
                        "Check the MFA provider's status page and incident notices.",
                        "Have the user use another enrolled method until the service recovers.",
                        "Do not reset the user's MFA enrollment for this.",
                    ],
                ),
                t(
                    "MFA プロバイダーがエラーを返しました。ユーザーではなくサービス側の障害です。",
                    &[
                        "MFA プロバイダーのステータスページと障害情報を確認してください。",
                        "復旧するまで、登録済みの別の方式を使うようユーザーに案内してください。",
                        "このエラーを理由に MFA の登録をリセットしないでください。",
                    ],
                ),
            ),
            Generic::PolicyBlock => (
                t(
                    "A sign-on or risk policy blocked the sign-in: a policy decision, not a fault.",
                    &[
                        "Check in the admin console which policy blocked the sign-in and why (location, device, risk level).",
                        "If the user is travelling or on a new network, confirm by a trusted channel before making an exception.",
                        "Do not weaken the policy for everyone to fix one user.",
                    ],
                ),
                t(
                    "サインオンポリシーまたはリスクポリシーがサインインをブロックしました。障害ではなくポリシーによる判定です。",
                    &[
                        "どのポリシーがなぜサインインをブロックしたか（場所、端末、リスクレベル）を管理コンソールで確認してください。",
                        "出張中や新しいネットワークからの利用であれば、例外を設ける前に信頼できる経路で本人に確認してください。",
                        "1 人のためにポリシーを全員向けに緩めないでください。",
                    ],
                ),
            ),
            Generic::Lockout => (
                t(
                    "The account is locked after repeated failed sign-ins.",
                    &[
                        "Confirm with the user by a trusted channel whether the failures were theirs (an old password saved on a phone is common).",
                        "Unlock the account after verifying the user's identity.",
                        "If the failures were not theirs, treat it as a password attack and escalate.",
                    ],
                ),
                t(
                    "サインインの失敗が続いたため、アカウントがロックされています。",
                    &[
                        "信頼できる経路で、失敗が本人によるものか確認してください（スマートフォンに古いパスワードが残っていることがよくあります）。",
                        "本人確認のうえでロックを解除してください。",
                        "本人の失敗でなければパスワード攻撃として扱い、エスカレーションしてください。",
                    ],
                ),
            ),
            Generic::Disabled => (
                t(
                    "The account is disabled.",
                    &[
                        "Check in the admin console who disabled the account and why (leaver process, security suspension).",
                        "Re-enable it only once that reason is cleared; a security suspension needs the security team's approval.",
                    ],
                ),
                t(
                    "アカウントが無効化されています。",
                    &[
                        "誰がなぜアカウントを無効化したか（退職処理、セキュリティ上の停止など）を管理コンソールで確認してください。",
                        "その理由が解消してから有効化してください。セキュリティ上の停止であれば、セキュリティ担当の承認が必要です。",
                    ],
                ),
            ),
            Generic::Throttled => (
                t(
                    "The provider throttled the sign-ins: too many attempts in a short time.",
                    &[
                        "Ask the user to wait a few minutes before trying again.",
                        "Look for a device or script that keeps retrying with an old password.",
                        "If the attempts were not the user's, treat it as an attack and escalate.",
                    ],
                ),
                t(
                    "短時間の試行が多すぎたため、プロバイダーがサインインを制限しました。",
                    &[
                        "数分待ってから再度試すようユーザーに案内してください。",
                        "古いパスワードで再試行を続けている端末やスクリプトがないか確認してください。",
                        "本人の試行でなければ攻撃として扱い、エスカレーションしてください。",
                    ],
                ),
            ),
            Generic::Unclassified => (
                t(
                    "The provider gave a reason authwatch does not classify; its own code is listed with the reasons.",
                    &[
                        "Look up the provider's code in the admin console's sign-in log or the vendor's documentation.",
                    ],
                ),
                t(
                    "プロバイダーが authwatch の分類にない理由を返しました。プロバイダー独自のコードを理由の欄に示しています。",
                    &[
                        "管理コンソールのサインインログ、またはベンダーのドキュメントでそのコードを調べてください。",
                    ],
                ),
            ),
            Generic::PushDeniedDuringAttack => (
                t(
                    "The user denied a push request while an attack on the account was going on, or from the attacker's address: it was most likely not their own sign-in.",
                    &[
                        "Tell the user never to approve a push they did not start themselves.",
                        "Reset the password, revoke all sessions and refresh tokens, and review the account's recent sign-ins.",
                        "Escalate to the security team with the alerts below.",
                    ],
                ),
                t(
                    "アカウントへの攻撃が続いている間に、または攻撃者のアドレスからのプッシュ要求を、ユーザーが拒否しました。本人のサインインではなかった可能性が高いです。",
                    &[
                        "自分で始めていないプッシュは絶対に承認しないようユーザーに伝えてください。",
                        "パスワードをリセットし、すべてのセッションとリフレッシュトークンを無効化して、最近のサインインを確認してください。",
                        "下記のアラートを添えて、セキュリティ担当にエスカレーションしてください。",
                    ],
                ),
            ),
            Generic::FraudReported => (
                t(
                    "The user reported an MFA request as fraud: someone else is trying to sign in with their password.",
                    &[
                        "Treat the password as compromised: reset it and revoke all sessions and refresh tokens.",
                        "Thank the user and confirm by a trusted channel that they did not start the sign-in.",
                        "Escalate to the security team.",
                    ],
                ),
                t(
                    "ユーザーが MFA 要求を不正として報告しました。第三者がこのユーザーのパスワードでサインインを試みています。",
                    &[
                        "パスワードが漏えいしたものとして扱い、リセットしてすべてのセッションとリフレッシュトークンを無効化してください。",
                        "報告したユーザーに感謝し、信頼できる経路で本人のサインインでないことを確認してください。",
                        "セキュリティ担当にエスカレーションしてください。",
                    ],
                ),
            ),
        }
    }
}

// ─── Text output ───────────────────────────────────────────────────────────────────────────────

/// `2026-01-05 09:00:00` (UTC).
fn time(ms: i64) -> String {
    match format_rfc3339_ms(ms) {
        Ok(s) => s.get(..19).unwrap_or(&s).replace('T', " "),
        Err(_) => format!("{ms} ms"),
    }
}

/// `start → end`, the end without its date when it is the same day.
fn range(start: i64, end: i64) -> String {
    let (s, e) = (time(start), time(end));
    match (s.get(..10), e.get(..10), e.get(11..)) {
        (Some(a), Some(b), Some(clock)) if a == b => format!("{s} → {clock}"),
        _ => format!("{s} → {e}"),
    }
}

fn utc(lang: Language) -> &'static str {
    tr(lang, " UTC", "（UTC）")
}

/// Terminal columns of a character: East Asian wide and full-width characters take two.
fn char_width(c: char) -> usize {
    match c as u32 {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// At most `max` columns, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        if w + char_width(c) + 1 > max {
            break;
        }
        w += char_width(c);
        out.push(c);
    }
    out.push('…');
    out
}

fn pad(s: &str, to: usize) -> String {
    let mut out = s.to_owned();
    out.extend(std::iter::repeat_n(' ', to.saturating_sub(width(s))));
    out
}

fn source_text(e: &AuthEvent, lang: Language) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(ip) = e.src.ip {
        parts.push(ip.to_string());
    }
    if let Some(geo) = &e.src.geo {
        match (geo.country.is_empty(), geo.city.is_empty()) {
            (false, false) => parts.push(format!("{}/{}", geo.country, geo.city)),
            (false, true) => parts.push(geo.country.to_string()),
            (true, false) => parts.push(geo.city.to_string()),
            (true, true) => {}
        }
    }
    if !e.src.as_org.is_empty() {
        parts.push(clip(&e.src.as_org, 18));
    } else if let Some(asn) = e.src.asn {
        parts.push(format!("AS{asn}"));
    }
    let a = e.src.anonymizer;
    let kind = if a.tor {
        Some("Tor")
    } else if a.vpn || a.anonymous {
        Some(tr(lang, "anon. VPN", "匿名VPN"))
    } else if a.proxy {
        Some(tr(lang, "proxy", "プロキシ"))
    } else if a.hosting {
        Some(tr(lang, "hosting", "ホスティング"))
    } else {
        None
    };
    if let Some(k) = kind {
        parts.push(format!("[{k}]"));
    }
    if parts.is_empty() {
        "–".to_owned()
    } else {
        parts.join(" ")
    }
}

fn device_text(e: &AuthEvent) -> String {
    match (e.device.os.is_empty(), e.device.browser.is_empty()) {
        (false, false) => format!("{}/{}", e.device.os, e.device.browser),
        (false, true) => e.device.os.to_string(),
        (true, false) => e.device.browser.to_string(),
        (true, true) => "–".to_owned(),
    }
}

/// New-device and new-country flags, unless the user's profile is still learning: then every
/// device and country is new and a marker would cry wolf.
fn novelty(e: &AuthEvent, lang: Language) -> Vec<&'static str> {
    let c = &e.context;
    let mut out = Vec::new();
    if c.learning {
        return out;
    }
    if c.new_device {
        out.push(tr(lang, "new device", "新しい端末"));
    }
    if c.new_country {
        out.push(tr(lang, "new country", "新しい国"));
    }
    out
}

fn reason_cell(e: &AuthEvent, lang: Language) -> String {
    match e.reason {
        Reason::None => String::new(),
        Reason::Other if !e.reason_raw.is_empty() => e.reason_raw.to_string(),
        r => reason_name(r, lang).to_owned(),
    }
}

fn reasons_line(g: &Group, lang: Language) -> String {
    let sep = tr(lang, ", ", "、");
    let parts: Vec<String> = g
        .reasons
        .iter()
        .map(|(r, raw)| {
            let label = match r {
                Reason::None => tr(lang, "none given", "理由なし"),
                r => reason_name(*r, lang),
            };
            let mut codes = vec![r.as_str().to_owned()];
            codes.extend(raw.iter().cloned());
            match lang {
                Language::En => format!("{label} ({})", codes.join(", ")),
                Language::Ja => format!("{label}（{}）", codes.join(", ")),
            }
        })
        .collect();
    parts.join(sep)
}

fn write_steps(out: &mut String, steps: &[impl AsRef<str>], indent: &str, lang: Language) {
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{}", tr(lang, "Next steps:", "次の対応:"));
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(out, "{indent}  {}. {}", i + 1, s.as_ref());
    }
}

impl Report {
    fn render(&self, lang: Language) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "authwatch explain — {}", self.user);
        // What the input lacked and whose accounts are mixed change how everything below reads,
        // so they come before it, not after.
        self.render_notes(&mut out, lang);
        if self.events.is_empty() {
            self.render_not_found(&mut out, lang);
            return out;
        }
        self.render_header(&mut out, lang);
        self.render_recent(&mut out, lang);
        self.render_causes(&mut out, lang);
        self.render_alerts(&mut out, lang);
        out
    }

    fn render_notes(&self, out: &mut String, lang: Language) {
        if self.input.unreadable > 0 {
            let files: Vec<String> = self
                .input
                .files
                .iter()
                .filter(|f| f.unreadable > 0)
                .map(|f| match lang {
                    Language::En => format!("{} {} of {}", f.name, f.unreadable, f.lines),
                    Language::Ja => format!("{} {} 行中 {} 行", f.name, f.lines, f.unreadable),
                })
                .collect();
            let bad = self.input.unreadable;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {bad} input line(s) could not be read ({}); neither the rules nor this \
                     report saw them (authwatch replay --dead-letter FILE says why).",
                    files.join(", ")
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 読み取れない入力行が {bad} 行ありました（{}）。検知ルールもこのレポートもそれらの行を見ていません（理由は authwatch replay --dead-letter FILE で確認できます）。",
                    files.join("、")
                ),
            };
        }
        if self.input.late > 0 {
            let late = self.input.late;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {late} event(s) were too far out of time order to analyse (standard \
                     input or a pipe is read as it comes; a file only when its time goes back \
                     very often); authwatch replay --late-events FILE lists them."
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 時刻の順序が大きく乱れていたため分析できなかったイベントが {late} 件ありました（標準入力やパイプは届いた順に読みます。ファイルは時刻の逆行が非常に多い場合のみ）。authwatch replay の --late-events FILE で確認できます。"
                ),
            };
        }
        if self.mixes_tenants() {
            let tenants: Vec<String> = self
                .tenants
                .iter()
                .map(|(t, n)| {
                    let t = tenant_name(t, lang);
                    match lang {
                        Language::En => format!("{t} ({n} events)"),
                        Language::Ja => format!("{t}（{n} 件）"),
                    }
                })
                .collect();
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Warning: {} exists in {} tenants: {}. These may be different people's \
                     accounts; this report covers all of them, with the tenant on every row. \
                     Use --tenant to see one.",
                    self.user,
                    self.tenants.len(),
                    tenants.join(", ")
                ),
                Language::Ja => writeln!(
                    out,
                    "警告: {} は {} つのテナントに存在します: {}。別の人のアカウントかもしれません。このレポートはすべてを対象にし、各行にテナントを示します。1 つに絞るには --tenant を指定してください。",
                    self.user,
                    self.tenants.len(),
                    tenants.join("、")
                ),
            };
        }
    }

    fn render_not_found(&self, out: &mut String, lang: Language) {
        let (events, files) = (self.input.events, self.input.files.len());
        let user = &self.user;
        if self.before_since > 0 {
            let since = self.since.map(|d| d.0).unwrap_or_default();
            let since = humanize(since);
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "No events for {user} in the last {since} of the input; {} older event(s) exist \
                     (run without --since to see them).",
                    self.before_since
                ),
                Language::Ja => writeln!(
                    out,
                    "入力の最後の {since} に {user} のイベントはありません。それより前のイベントが {} 件あります（--since を付けずに実行すると表示されます）。",
                    self.before_since
                ),
            };
            return;
        }
        if let Some(tenant) = &self.tenant
            && !self.tenants.is_empty()
        {
            let elsewhere: Vec<String> = self
                .tenants
                .iter()
                .map(|(t, n)| {
                    let t = tenant_name(t, lang);
                    match lang {
                        Language::En => format!("{t} ({n} events)"),
                        Language::Ja => format!("{t}（{n} 件）"),
                    }
                })
                .collect();
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "No events for {user} in tenant {tenant}; the name occurs in: {}.",
                    elsewhere.join(", ")
                ),
                Language::Ja => writeln!(
                    out,
                    "テナント {tenant} に {user} のイベントはありません。この名前があるテナント: {}。",
                    elsewhere.join("、")
                ),
            };
            return;
        }
        let _ = match lang {
            Language::En => writeln!(
                out,
                "No events for {user} in the input ({events} events read from {files} file(s)).\n\
                 Check the spelling: the name is matched, ignoring case, against the login name \
                 (UPN or e-mail) and the user id."
            ),
            Language::Ja => writeln!(
                out,
                "入力に {user} のイベントはありません（{files} ファイルから {events} 件のイベントを読み込みました）。\n\
                 綴りを確認してください。ログイン名（UPN またはメールアドレス）とユーザー ID に、大文字・小文字を区別せずに照合しています。"
            ),
        };
        if !self.similar.is_empty() {
            let _ = writeln!(
                out,
                "{} {}",
                tr(lang, "Similar names in the input:", "入力にある似た名前:"),
                self.similar.join(", ")
            );
        }
    }

    fn render_header(&self, out: &mut String, lang: Language) {
        let (first, last) = match (self.events.first(), self.events.last()) {
            (Some(f), Some(l)) => (f.time, l.time),
            _ => return,
        };
        let _ = writeln!(
            out,
            "{} {}{}",
            tr(lang, "Period:", "期間:"),
            range(first, last),
            utc(lang)
        );
        if let Some(t) = &self.tenant {
            let _ = writeln!(out, "{} {t}", tr(lang, "Tenant:", "テナント:"));
        }
        // Steps, not sign-ins: one sign-in is a password step, an MFA step and often several
        // single sign-ons, and providers log each; counting "sign-ins" would be a guess.
        let (steps, ok, failed, locks) = (self.steps, self.successes, self.failures, self.lockouts);
        let _ = match lang {
            Language::En => write!(
                out,
                "Sign-in and MFA steps: {steps} ({ok} succeeded, {failed} failed)"
            ),
            Language::Ja => write!(
                out,
                "サインイン・MFA の手順: {steps} 件（成功 {ok} 件、失敗 {failed} 件）"
            ),
        };
        let _ = match (lang, locks) {
            (Language::En, 0) => writeln!(out, "."),
            (Language::En, _) => writeln!(
                out,
                "; the account was locked {}.",
                count_en(locks, "time", "times")
            ),
            (Language::Ja, 0) => writeln!(out, "。"),
            (Language::Ja, _) => writeln!(out, "。アカウントのロック: {locks} 回。"),
        };
        let by_class: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let n = g.failures + g.lockouts;
                match lang {
                    Language::En => format!("{n} {}", class_name(g.class, lang)),
                    Language::Ja => format!("{} {n} 件", class_name(g.class, lang)),
                }
            })
            .collect();
        let alerts = self.alerts.len();
        let _ = match (lang, failed + locks) {
            (Language::En, 0) => writeln!(
                out,
                "In short: no failures in this period; {}.",
                alerts_en(alerts)
            ),
            (Language::En, _) => writeln!(
                out,
                "In short: {} by cause: {}; {}.",
                problems_text(failed, locks, lang),
                by_class.join(", ").to_lowercase(),
                alerts_en(alerts)
            ),
            (Language::Ja, 0) => writeln!(
                out,
                "まとめ: この期間に失敗はありません。このユーザーに関するアラートは {alerts} 件です。"
            ),
            (Language::Ja, _) => writeln!(
                out,
                "まとめ: {}の原因の内訳は、{}です。このユーザーに関するアラートは {alerts} 件です。",
                problems_text(failed, locks, lang),
                by_class.join("、")
            ),
        };
        // A high or critical alert is the help desk's cue to stop troubleshooting and escalate.
        let worst = self
            .alerts
            .iter()
            .filter(|a| a.severity >= Severity::High)
            .max_by_key(|a| (a.severity, a.last_seen));
        if let Some(a) = worst {
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Act first on: [{}] {} at {} UTC (see \"Alerts concerning this user\" below).",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    time(a.last_seen.millis())
                ),
                Language::Ja => writeln!(
                    out,
                    "最優先の対応: [{}] {}（{}（UTC））。下の「このユーザーに関するアラート」を参照してください。",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    time(a.last_seen.millis())
                ),
            };
        }
        if let Some(d) = self.since {
            let since = humanize(d.0);
            let newest = self.newest.map(time).unwrap_or_default();
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Only the last {since} of the input (up to its newest event, {newest} UTC)."
                ),
                Language::Ja => writeln!(
                    out,
                    "入力の最後の {since} のみ（最新のイベント {newest}（UTC）まで）を対象にしています。"
                ),
            };
        }
        if self.evicted > 0 {
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: only the user's {MAX_EVENTS} most recent events are analysed; {} older ones were skipped.",
                    self.evicted
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 分析対象はこのユーザーの最新 {MAX_EVENTS} 件のイベントです。それより古い {} 件は省略しました。",
                    self.evicted
                ),
            };
        }
    }
    fn render_recent(&self, out: &mut String, lang: Language) {
        let n = self.last.min(self.events.len());
        if n == 0 {
            return;
        }
        let shown = &self.events[self.events.len() - n..];
        let _ = writeln!(out);
        let _ = match lang {
            Language::En => writeln!(
                out,
                "Recent sign-ins (last {n} of {} events, oldest first; times in UTC)",
                self.events.len()
            ),
            Language::Ja => writeln!(
                out,
                "最近のサインイン（全 {} 件のうち最新 {n} 件、古い順、時刻は UTC）",
                self.events.len()
            ),
        };
        let tenants = self.mixes_tenants();
        let header = [
            tr(lang, "TIME", "時刻"),
            tr(lang, "TENANT", "テナント"),
            tr(lang, "ACTIVITY", "操作"),
            tr(lang, "FACTOR", "方式"),
            tr(lang, "RESULT", "結果"),
            tr(lang, "REASON", "理由"),
            tr(lang, "SOURCE", "接続元"),
            tr(lang, "DEVICE", "端末"),
            "",
        ]
        .map(str::to_owned);
        let mut rows: Vec<[String; 9]> = vec![header];
        for e in shown {
            let marks = novelty(e, lang);
            rows.push([
                time(e.time),
                clip(tenant_name(&e.tenant, lang), 20),
                activity_name(e.activity, lang).to_owned(),
                factor_name(e.factor, lang).to_owned(),
                outcome_name(e.outcome, lang).to_owned(),
                clip(&reason_cell(e, lang), 24),
                clip(&source_text(e, lang), 52),
                clip(&device_text(e), 28),
                if marks.is_empty() {
                    String::new()
                } else {
                    format!("⚑ {}", marks.join(tr(lang, ", ", "、")))
                },
            ]);
        }
        let mut widths = [0usize; 9];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        for row in &rows {
            let mut line = String::from("  ");
            for (i, cell) in row.iter().enumerate() {
                // The tenant column only when the name is found in more than one.
                if i == 1 && !tenants {
                    continue;
                }
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&pad(cell, widths[i]));
                    line.push_str("  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }

    fn render_causes(&self, out: &mut String, lang: Language) {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", tr(lang, "Failures by cause", "原因別の失敗"));
        if self.groups.is_empty() {
            let _ = writeln!(
                out,
                "  {}",
                tr(
                    lang,
                    "No failures in this period.",
                    "この期間に失敗はありません。"
                )
            );
            return;
        }
        for g in &self.groups {
            let name = class_name(g.class, lang);
            let meaning = class_meaning(g.class, lang);
            let span = when(g.first, g.last);
            let _ = writeln!(out);
            let counted = problems_text(g.failures, g.lockouts, lang);
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "  {} — {meaning}: {counted}, {span} UTC",
                    name.to_uppercase(),
                ),
                Language::Ja => writeln!(out, "  【{name}】{meaning}: {counted}、{span}（UTC）"),
            };
            let _ = writeln!(
                out,
                "    {} {}",
                tr(lang, "Reasons:", "理由:"),
                reasons_line(g, lang)
            );
            for (basis, x) in &g.explanations {
                let span = when(x.first, x.last);
                let counted = problems_text(x.failures, x.lockouts, lang);
                let steps: Vec<&str> = match basis {
                    Basis::Alert(i) => {
                        let a = &self.alerts[*i];
                        let _ = writeln!(out, "    • {}", a.summary.get(lang.code()));
                        let name = alert_name(a);
                        let fired = time(a.last_seen.millis());
                        // The summary counts what the rule had seen when it fired; explain
                        // counts what the alert explains in this report, often more (the
                        // incident went on without a new alert): both are labelled.
                        let _ = match lang {
                            Language::En => writeln!(
                                out,
                                "      (alert {name}, severity {}, fired {fired} UTC with the \
                                 counts above; explained here: {counted}, {span} UTC)",
                                a.severity,
                            ),
                            Language::Ja => writeln!(
                                out,
                                "      （アラート {name}、重要度 {}。上の件数は {fired}（UTC）の発報時点のものです。ここで説明する対象: {counted}、{span}（UTC））",
                                severity_name(a.severity, lang),
                            ),
                        };
                        a.steps
                            .get(lang.code())
                            .iter()
                            .map(String::as_str)
                            .collect()
                    }
                    Basis::Generic(generic) => {
                        let text = generic.text(lang);
                        let _ = match lang {
                            Language::En => writeln!(
                                out,
                                "    • {}\n      (no alert explains these; judged from the reason: {counted}, {span} UTC)",
                                text.summary,
                            ),
                            Language::Ja => writeln!(
                                out,
                                "    • {}\n      （説明するアラートはなく、理由から判断しました。該当: {counted}、{span}（UTC））",
                                text.summary,
                            ),
                        };
                        text.steps.to_vec()
                    }
                };
                write_steps(out, &steps, "      ", lang);
            }
        }
    }

    fn render_alerts(&self, out: &mut String, lang: Language) {
        let _ = writeln!(out);
        let _ = match lang {
            Language::En => writeln!(out, "Alerts concerning this user ({})", self.alerts.len()),
            Language::Ja => writeln!(
                out,
                "このユーザーに関するアラート（{} 件）",
                self.alerts.len()
            ),
        };
        if self.alerts.is_empty() {
            let _ = writeln!(
                out,
                "  {}",
                tr(
                    lang,
                    "None: no detection rule fired for this user or their sign-ins.",
                    "ありません。このユーザーやそのサインインについて、検知ルールは発報していません。"
                )
            );
        }
        let explaining = self.explaining();
        for (i, a) in self.alerts.iter().enumerate() {
            let _ = writeln!(out);
            let span = when(a.window.start.millis(), a.window.end.millis());
            let e = &a.entity;
            // Alerts keyed by this user alone need no entity; others say what they are about
            // (an address, a tenant) since the user is only part of them.
            let only_user = e.tenant.is_none()
                && e.ip.is_none()
                && e.asn.is_none()
                && e.device_fingerprint.is_none();
            let entity = if only_user {
                String::new()
            } else {
                format!(" — {e}")
            };
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "  [{}] {} — cause: {} — {span} UTC{entity}",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    class_name(a.cause_class, lang).to_lowercase(),
                ),
                Language::Ja => writeln!(
                    out,
                    "  [{}] {} — 原因: {} — {span}（UTC）{entity}",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    class_name(a.cause_class, lang),
                ),
            };
            let _ = writeln!(out, "    {}", a.summary.get(lang.code()));
            if let Some(s) = self.scopes.get(i)
                && s.last > span_end(a)
            {
                let last = time(s.last);
                let _ = match lang {
                    Language::En => writeln!(
                        out,
                        "    The incident went on after the alert, without a new one: the user's \
                         last failure of its kind was at {last} UTC."
                    ),
                    Language::Ja => writeln!(
                        out,
                        "    インシデントはアラートの後も新たなアラートなしに続きました。この種類の最後の失敗は {last}（UTC）です。"
                    ),
                };
            }
            // Steps printed under "Failures by cause" are not repeated: one list per incident.
            if explaining.contains(&i) {
                let _ = writeln!(
                    out,
                    "    {}",
                    tr(
                        lang,
                        "Next steps: see \"Failures by cause\" above.",
                        "次の対応: 上の「原因別の失敗」を参照してください。"
                    )
                );
            } else {
                write_steps(out, a.steps.get(lang.code()), "    ", lang);
            }
        }
        if self.alerts_dropped > 0 {
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "  … and {} more alerts (only the first {MAX_ALERTS} are kept).",
                    self.alerts_dropped
                ),
                Language::Ja => writeln!(
                    out,
                    "  …ほかに {} 件のアラートがあります（保持するのは最初の {MAX_ALERTS} 件です）。",
                    self.alerts_dropped
                ),
            };
        }
    }
}

/// The category, and the rule when it says more (`mfa_triage/triage_clock_drift`).
fn alert_name(a: &Alert) -> String {
    if a.category == a.rule_id {
        a.category.clone()
    } else {
        format!("{}/{}", a.category, a.rule_id)
    }
}

/// `5 failures`, `1 lockout`, `5 failures and 1 lockout`: failed steps and lockouts are
/// counted apart everywhere, so that every figure says what it counts.
fn problems_text(failures: usize, lockouts: usize, lang: Language) -> String {
    match lang {
        Language::En => match (failures, lockouts) {
            (f, 0) => count_en(f, "failure", "failures"),
            (0, l) => count_en(l, "lockout", "lockouts"),
            (f, l) => format!(
                "{} and {}",
                count_en(f, "failure", "failures"),
                count_en(l, "lockout", "lockouts")
            ),
        },
        Language::Ja => match (failures, lockouts) {
            (f, 0) => format!("失敗 {f} 件"),
            (0, l) => format!("ロック {l} 件"),
            (f, l) => format!("失敗 {f} 件とロック {l} 件"),
        },
    }
}

fn span_end(a: &Alert) -> i64 {
    span(a).1
}

/// A tenant as shown: events of providers without tenants have none.
fn tenant_name(t: &str, lang: Language) -> &str {
    if t.is_empty() {
        tr(lang, "(no tenant)", "（テナントなし）")
    } else {
        t
    }
}

/// `1 failure`, `3 failures`.
fn count_en(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn alerts_en(n: usize) -> String {
    match n {
        0 => "no alert concerns this user".to_owned(),
        1 => "1 alert concerns this user".to_owned(),
        n => format!("{n} alerts concern this user"),
    }
}

/// `start → end`, or the one instant when they are equal.
fn when(start: i64, end: i64) -> String {
    if start == end {
        time(start)
    } else {
        range(start, end)
    }
}

fn humanize(d: std::time::Duration) -> String {
    // DurationText prints as humantime does (`1day 12h`), which reads fine in both languages.
    serde_json::to_value(DurationText(d))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{}s", d.as_secs()))
}

// ─── JSON output ───────────────────────────────────────────────────────────────────────────────

#[derive(Serialize)]
struct JsonReport<'a> {
    user: &'a str,
    language: &'static str,
    /// Whether the user has events in the period.
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<JsonSpan>,
    /// `--tenant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    /// Every tenant the name or id occurs in, with its events there (more than one and no
    /// `--tenant`: the report covers several accounts).
    tenants: Vec<JsonTenant<'a>>,
    /// Sign-in and MFA steps that succeeded or failed (`steps = successes + failures`); not
    /// sign-ins, since one sign-in takes several steps.
    steps: usize,
    successes: usize,
    /// Failed, denied, unanswered or blocked steps.
    failures: usize,
    /// Times the account was locked. The cause groups cover failures and lockouts, each
    /// counted once: the groups' `failures` add up to this `failures`, their `lockouts` to this.
    lockouts: usize,
    events: usize,
    /// The user's events left out: older than `--since`, or beyond the in-memory bound.
    events_before_since: usize,
    events_skipped: u64,
    input: JsonInput<'a>,
    recent: Vec<JsonEvent<'a>>,
    causes: Vec<JsonGroup<'a>>,
    alerts: Vec<JsonAlert<'a>>,
    alerts_not_kept: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    similar_users: &'a [String],
}

fn no_text(s: &&str) -> bool {
    s.is_empty()
}

#[derive(Serialize)]
struct JsonTenant<'a> {
    tenant: &'a str,
    events: u64,
}

#[derive(Serialize)]
struct JsonInput<'a> {
    files: usize,
    events: u64,
    unreadable_lines: u64,
    late_events: u64,
    /// The inputs with unreadable lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreadable_by_file: Vec<JsonFile<'a>>,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    file: &'a str,
    lines: u64,
    unreadable_lines: u64,
}

#[derive(Serialize)]
struct JsonSpan {
    start: Timestamp,
    end: Timestamp,
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    time: Timestamp,
    event_id: &'a str,
    #[serde(skip_serializing_if = "no_text")]
    tenant: &'a str,
    activity: Activity,
    factor: Factor,
    outcome: Outcome,
    reason: Reason,
    #[serde(skip_serializing_if = "no_text")]
    reason_raw: &'a str,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "no_text")]
    country: &'a str,
    #[serde(skip_serializing_if = "no_text")]
    city: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    asn: Option<u32>,
    #[serde(skip_serializing_if = "no_text")]
    as_org: &'a str,
    anonymizer: bool,
    device: String,
    new_device: bool,
    new_country: bool,
}

#[derive(Serialize)]
struct JsonGroup<'a> {
    cause_class: CauseClass,
    label: &'static str,
    meaning: &'static str,
    failures: usize,
    lockouts: usize,
    first: Timestamp,
    last: Timestamp,
    reasons: Vec<JsonReason>,
    explanations: Vec<JsonExplanation<'a>>,
}

#[derive(Serialize)]
struct JsonReason {
    reason: Reason,
    label: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    provider_codes: Vec<String>,
}

#[derive(Serialize)]
struct JsonExplanation<'a> {
    /// `alert` (an alert names or covers these failures) or `reason` (the default mapping).
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_id: Option<&'a str>,
    /// The failures and lockouts this report puts down to it; an alert's `summary` counts
    /// what its rule had seen when it fired (`fired_at` of the alert).
    failures: usize,
    lockouts: usize,
    first: Timestamp,
    last: Timestamp,
    summary: &'a str,
    steps: Vec<&'a str>,
    /// The failures' and lockouts' event ids (the first 50).
    event_ids: &'a [String],
}

#[derive(Serialize)]
struct JsonAlert<'a> {
    alert_id: &'a str,
    rule_id: &'a str,
    category: &'a str,
    cause_class: CauseClass,
    severity: Severity,
    entity: String,
    window: JsonSpan,
    /// When it fired: the deciding event's time, which its summary's counts reflect.
    fired_at: Timestamp,
    /// The user's last failure of its kind while its incident went on without a new alert,
    /// when later than the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    went_on_until: Option<Timestamp>,
    summary: &'a str,
    steps: &'a [String],
}

impl Report {
    fn to_json(&self, lang: Language) -> JsonReport<'_> {
        let code = lang.code();
        let n = self.last.min(self.events.len());
        let recent = self.events[self.events.len() - n..]
            .iter()
            .map(|e| {
                let geo = e.src.geo.as_ref();
                JsonEvent {
                    time: Timestamp(e.time),
                    event_id: &e.event_id,
                    tenant: &e.tenant,
                    activity: e.activity,
                    factor: e.factor,
                    outcome: e.outcome,
                    reason: e.reason,
                    reason_raw: &e.reason_raw,
                    source: source_text(e, lang),
                    ip: e.src.ip,
                    country: geo.map_or("", |g| g.country.as_str()),
                    city: geo.map_or("", |g| g.city.as_str()),
                    asn: e.src.asn,
                    as_org: &e.src.as_org,
                    anonymizer: e.src.anonymizer != Default::default(),
                    device: device_text(e),
                    new_device: !e.context.learning && e.context.new_device,
                    new_country: !e.context.learning && e.context.new_country,
                }
            })
            .collect();
        let causes = self
            .groups
            .iter()
            .map(|g| JsonGroup {
                cause_class: g.class,
                label: class_name(g.class, lang),
                meaning: class_meaning(g.class, lang),
                failures: g.failures,
                lockouts: g.lockouts,
                first: Timestamp(g.first),
                last: Timestamp(g.last),
                reasons: g
                    .reasons
                    .iter()
                    .map(|(r, raw)| JsonReason {
                        reason: *r,
                        label: reason_name(*r, lang),
                        provider_codes: raw.iter().cloned().collect(),
                    })
                    .collect(),
                explanations: g
                    .explanations
                    .iter()
                    .map(|(basis, x)| {
                        let (source, alert, summary, steps): (_, _, &str, Vec<&str>) = match basis {
                            Basis::Alert(i) => {
                                let a = &self.alerts[*i];
                                (
                                    "alert",
                                    Some(a),
                                    a.summary.get(code),
                                    a.steps.get(code).iter().map(String::as_str).collect(),
                                )
                            }
                            Basis::Generic(gen_) => {
                                let t = gen_.text(lang);
                                ("reason", None, t.summary, t.steps.to_vec())
                            }
                        };
                        JsonExplanation {
                            source,
                            alert_id: alert.map(|a| a.alert_id.as_str()),
                            rule_id: alert.map(|a| a.rule_id.as_str()),
                            failures: x.failures,
                            lockouts: x.lockouts,
                            first: Timestamp(x.first),
                            last: Timestamp(x.last),
                            event_ids: &x.ids,
                            summary,
                            steps,
                        }
                    })
                    .collect(),
            })
            .collect();
        let alerts = self
            .alerts
            .iter()
            .zip(&self.scopes)
            .map(|(a, s)| JsonAlert {
                alert_id: &a.alert_id,
                rule_id: &a.rule_id,
                category: &a.category,
                cause_class: a.cause_class,
                severity: a.severity,
                entity: a.entity.to_string(),
                window: JsonSpan {
                    start: a.window.start,
                    end: a.window.end,
                },
                fired_at: a.last_seen,
                went_on_until: (s.last > span_end(a)).then_some(Timestamp(s.last)),
                summary: a.summary.get(code),
                steps: a.steps.get(code),
            })
            .collect();
        JsonReport {
            user: &self.user,
            language: code,
            found: !self.events.is_empty(),
            since: self.since.map(|d| humanize(d.0)),
            period: match (self.events.first(), self.events.last()) {
                (Some(f), Some(l)) => Some(JsonSpan {
                    start: Timestamp(f.time),
                    end: Timestamp(l.time),
                }),
                _ => None,
            },
            tenant: self.tenant.as_deref(),
            tenants: self
                .tenants
                .iter()
                .map(|(tenant, events)| JsonTenant {
                    tenant,
                    events: *events,
                })
                .collect(),
            steps: self.steps,
            successes: self.successes,
            failures: self.failures,
            lockouts: self.lockouts,
            events: self.events.len(),
            events_before_since: self.before_since,
            events_skipped: self.evicted,
            input: JsonInput {
                files: self.input.files.len(),
                events: self.input.events,
                unreadable_lines: self.input.unreadable,
                late_events: self.input.late,
                unreadable_by_file: self
                    .input
                    .files
                    .iter()
                    .filter(|f| f.unreadable > 0)
                    .map(|f| JsonFile {
                        file: &f.name,
                        lines: f.lines,
                        unreadable_lines: f.unreadable,
                    })
                    .collect(),
            },
            recent,
            causes,
            alerts,
            alerts_not_kept: self.alerts_dropped,
            similar_users: if self.events.is_empty() {
                &self.similar
            } else {
                &[]
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(reason: Reason, factor: Factor, outcome: Outcome) -> AuthEvent {
        AuthEvent {
            reason,
            factor,
            outcome,
            activity: Activity::MfaVerify,
            ..AuthEvent::default()
        }
    }

    const QUIET: Around = Around {
        network_alert: None,
        attack_alert: false,
    };

    #[test]
    fn default_mapping_follows_the_cause_classes() {
        let cases = [
            (
                Reason::InvalidOtp,
                Factor::Totp,
                Outcome::Failure,
                CauseClass::User,
            ),
            (
                Reason::MethodMismatch,
                Factor::Sms,
                Outcome::Failure,
                CauseClass::User,
            ),
            (
                Reason::PushTimeout,
                Factor::Push,
                Outcome::Timeout,
                CauseClass::Device,
            ),
            (
                Reason::AuthenticatorError,
                Factor::Webauthn,
                Outcome::Failure,
                CauseClass::Device,
            ),
            (
                Reason::FactorNotEnrolled,
                Factor::Push,
                Outcome::Failure,
                CauseClass::System,
            ),
            (
                Reason::RiskBlocked,
                Factor::None,
                Outcome::Blocked,
                CauseClass::System,
            ),
            (
                Reason::PushDenied,
                Factor::Push,
                Outcome::Denied,
                CauseClass::User,
            ),
            (
                Reason::UserReportedFraud,
                Factor::Push,
                Outcome::Denied,
                CauseClass::Attack,
            ),
            (
                Reason::Other,
                Factor::None,
                Outcome::Failure,
                CauseClass::System,
            ),
        ];
        for (reason, factor, outcome, class) in cases {
            let (got, _) = default_cause(&failure(reason, factor, outcome), &QUIET);
            assert_eq!(got, class, "{reason}");
        }
    }

    #[test]
    fn context_changes_push_causes() {
        let timeout = failure(Reason::PushTimeout, Factor::Push, Outcome::Timeout);
        let net = Around {
            network_alert: Some(3),
            attack_alert: false,
        };
        assert_eq!(
            default_cause(&timeout, &net),
            (CauseClass::Network, Basis::Alert(3))
        );
        let denied = failure(Reason::PushDenied, Factor::Push, Outcome::Denied);
        let attacked = Around {
            network_alert: None,
            attack_alert: true,
        };
        assert_eq!(default_cause(&denied, &attacked).0, CauseClass::Attack);
    }

    fn builtin(id: &str) -> CompiledRule {
        let pack = authwatch_detect::RulePack::builtin().unwrap();
        pack.rules().iter().find(|r| r.id == id).unwrap().clone()
    }

    fn wrong_password(user: &str, time: i64) -> AuthEvent {
        let mut e = named(user, "");
        e.time = time;
        e.activity = Activity::Logon;
        e.factor = Factor::Password;
        e.outcome = Outcome::Failure;
        e.reason = Reason::InvalidCredentials;
        e
    }

    fn user_alert(rule: &CompiledRule, user: &str, start: i64, fired: i64) -> Alert {
        Alert {
            alert_id: "a".into(),
            rule_id: rule.id.clone(),
            rule_version: rule.version,
            category: rule.category.clone(),
            cause_class: rule.cause_class,
            severity: rule.severity,
            attack_technique: Vec::new(),
            entity: authwatch_event::Entity {
                user: Some(user.into()),
                ..Default::default()
            },
            window: authwatch_event::Window {
                start: Timestamp(start),
                end: Timestamp(fired),
            },
            metrics: BTreeMap::new(),
            evidence: Vec::new(),
            observed: Default::default(),
            first_seen: Timestamp(start),
            last_seen: Timestamp(fired),
            summary: Default::default(),
            steps: Default::default(),
            related: Vec::new(),
        }
    }

    /// The rule alerts once and its incident absorbs the rest of the attack: the alert's scope
    /// follows the failures of its kind while they come less than `suppress` apart, and ends
    /// `suppress` after the last; other kinds of failure and other accounts do not extend it.
    #[test]
    fn an_alerts_scope_goes_on_with_its_incident() {
        let rule = builtin("brute_force");
        const MIN: i64 = 60_000;
        let alert = user_alert(&rule, "jia@acme.example", 0, 3 * MIN);
        let mut events: Vec<AuthEvent> = (0..540)
            .map(|k| wrong_password("jia@acme.example", k * 20_000))
            .collect();
        // After a gap longer than the rule's suppression (1 h): a new story.
        let after_gap = wrong_password("jia@acme.example", 180 * MIN + 61 * MIN);
        let mut other_kind = wrong_password("jia@acme.example", 180 * MIN + 30 * MIN);
        other_kind.reason = Reason::InvalidOtp;
        other_kind.activity = Activity::MfaVerify;
        let other_user = wrong_password("someone@acme.example", 180 * MIN + 40 * MIN);
        events.extend([other_kind, other_user, after_gap]);
        events.sort_by_key(|e| e.time);
        let problems: Vec<&AuthEvent> = events.iter().collect();
        let s = scope(&alert, Some(&rule), &problems);
        let last = 539 * 20_000;
        assert_eq!(
            s,
            Scope {
                start: 0,
                last,
                until: last + rule.suppress_ms,
            }
        );
        assert!(s.covers(last + 59 * MIN) && !s.covers(last + 61 * MIN));
        // A rule the pack does not know: its alert is followed for an hour, no further.
        let s = scope(&alert, None, &problems);
        assert_eq!((s.last, s.until), (3 * MIN, 63 * MIN));
    }

    fn lines_of(source: &mut OrderedSource) -> Vec<(u32, u64, i64)> {
        let mut out = Vec::new();
        let mut batch = RawBatch::default();
        while source.fill(&mut batch, 3).unwrap() {
            for l in &batch.lines {
                let e = source
                    .normalizer
                    .normalize(batch.bytes(l), 0, &source.limits)
                    .map_or(-1, |e| e.time);
                out.push((l.origin.input, l.origin.line, e));
            }
        }
        out
    }

    /// Files given newest first, and an export appended to another in one file, come out in
    /// event-time order, each line with its own file and line number for dead letters.
    #[test]
    fn the_input_is_merged_in_event_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let line = |t: i64| {
            format!(
                "{{\"time\":{t},\"provider\":\"okta\",\"event_id\":\"e{t}\",\"activity\":\"logon\",\"outcome\":\"success\"}}\n"
            )
        };
        const DAY: i64 = 86_400_000;
        const MIN: i64 = 60_000;
        let t0 = 1_767_225_600_000;
        let newer = dir.path().join("day2.jsonl");
        std::fs::write(&newer, [line(t0 + DAY), line(t0 + DAY + 1)].concat()).unwrap();
        // Tenant A's day 1, then tenant B's day 1 appended (back by more than the 5 min of
        // lateness), with an unreadable line between.
        let older = dir.path().join("day1.jsonl");
        let text = [
            line(t0 + 10 * MIN),
            line(t0 + 30 * MIN),
            "nope\n".to_owned(),
            line(t0 + 20 * MIN),
            line(t0 + 40 * MIN),
        ];
        std::fs::write(&older, text.concat()).unwrap();
        let mut source = OrderedSource::open(&[newer, older], &Config::default()).unwrap();
        assert_eq!(source.lanes.len(), 3, "day1.jsonl is two runs");
        let got = lines_of(&mut source);
        assert_eq!(
            got,
            [
                (1, 1, t0 + 10 * MIN),
                (1, 4, t0 + 20 * MIN),
                (1, 2, t0 + 30 * MIN),
                (1, 3, -1),
                (1, 5, t0 + 40 * MIN),
                (0, 1, t0 + DAY),
                (0, 2, t0 + DAY + 1),
            ]
        );
        assert_eq!(source.lines, [2, 5]);
    }

    #[test]
    fn every_generic_explanation_has_steps_in_both_languages() {
        for g in [
            Generic::WrongPassword,
            Generic::UnknownName,
            Generic::WrongCode,
            Generic::WrongMethod,
            Generic::MfaNotCompleted,
            Generic::PasswordExpired,
            Generic::UnexpectedPush,
            Generic::PushNotDelivered,
            Generic::AuthenticatorFault,
            Generic::NotEnrolled,
            Generic::ProviderFault,
            Generic::PolicyBlock,
            Generic::Lockout,
            Generic::Disabled,
            Generic::Throttled,
            Generic::Unclassified,
            Generic::PushDeniedDuringAttack,
            Generic::FraudReported,
        ] {
            let (en, ja) = g.texts();
            assert!(
                !en.steps.is_empty() && en.steps.len() == ja.steps.len(),
                "{g:?}"
            );
            assert!(ja.summary.ends_with('。'), "{g:?}");
            assert!(ja.steps.iter().all(|s| s.ends_with('。')), "{g:?}");
        }
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("成功"), 4);
        assert_eq!(pad("成功", 6), "成功  ");
        assert_eq!(clip("プロバイダーのエラー", 7), "プロバ…");
    }

    fn named(name: &str, id: &str) -> AuthEvent {
        let mut e = AuthEvent::default();
        e.user.name = name.into();
        e.user.id = id.into();
        e
    }

    #[test]
    fn user_matching_ignores_case() {
        let sink = UserSink::new(" Ken@Contoso.JP ", None);
        assert!(sink.is_user(&named("ken@contoso.jp", "")));
        assert!(sink.is_user(&named("KEN@CONTOSO.JP", "")));
        assert!(!sink.is_user(&named("ken2@contoso.jp", "")));
    }

    /// A ticket may quote the provider's user id; events that carry a name match it too.
    #[test]
    fn the_user_id_matches_even_when_a_name_is_given() {
        let sink = UserSink::new("00u43B3A679F928EC09", None);
        assert!(sink.is_user(&named("akira@example.co.jp", "00u43b3a679f928ec09")));
        assert!(!sink.is_user(&named("akira@example.co.jp", "00u0000")));
    }

    #[test]
    fn an_empty_user_is_refused() {
        assert!(parse_user("  ").is_err());
        assert_eq!(
            parse_user(" ken@contoso.jp ").as_deref(),
            Ok("ken@contoso.jp")
        );
    }
}
