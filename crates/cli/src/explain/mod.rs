//! `authwatch explain`: the help-desk view of one user — recent sign-ins, every failure assigned a
//! cause class (`user`, `device`, `network`, `system`, `attack`) with the next steps, and the
//! alerts that concern the user.
//!
//! The files go through the very pipeline `authwatch replay` runs (normalize, enrich, profiles,
//! rules), so what the help desk reads is what the SOC's alerts say. The report is written only
//! once the whole input is read, so nothing forces reading it in the order it is given: it is
//! read in event-time order ([`OrderedSource`]), and day files named newest first, exports
//! concatenated into one file or sorted newest first give the same answer as one ordered
//! stream. A sink keeps the user's events, the alerts that name the user or one of those events,
//! and the alerts keyed by an address, device or tenant that the user's failures may belong to;
//! the report is built from them once the input has ended, because an alert always arrives after
//! the events it names.

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
    Config, DeadLetter, Language, LateEvent, LatePolicy, LineSource, Origin, Pipeline, RawBatch,
    RawLine, RunSummary, Sink, SinkError, Source, SourceError, Speed, Unreadable,
};
use serde::Serialize;
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

mod assign;
mod incident;
mod ordered_source;
mod render_json;
mod render_text;
mod report;
mod sink;
mod texts;
use assign::*;
use incident::*;
use ordered_source::*;
use render_text::*;
use report::*;
use sink::*;
use texts::*;

/// The user's events kept in memory: the report covers at most this many (the most recent), so
/// memory stays bounded whatever the input size.
const MAX_EVENTS: usize = 10_000;
/// Alerts kept that name the user or one of the user's events: the most recent, as for events;
/// older ones are let go of, counted and noted in the report.
const MAX_ALERTS: usize = 1_000;
/// Alerts keyed by an address, ASN, device or tenant rather than a user, kept at once to be
/// matched against the user's failures at the end: such an alert may fire before the user's own
/// failure, or name other users' events only. One is let go once the input's time has passed its
/// incident's possible end with no failure of the user in it ([`KeyedAlert`]), so this bounds
/// only those still open or touching the user; beyond it the oldest are dropped, counted and
/// noted in the report.
const MAX_KEYED_ALERTS: usize = 2_000;
/// Failures of any user remembered with their source, so that a tenant-wide alert's actors are
/// known: its evidence names other users' events, which the sink does not keep. Only those
/// within the longest rule window are needed (an alert names events of its window), and never
/// more than this many.
const MAX_RECENT_FAILURES: usize = 200_000;
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
/// Ordered runs one input is read as, at most (a run going back in time counts once, however
/// many blocks it is read in): a file whose time turns up to 63 times is read in order. One
/// whose time turns 64 times or more is shuffled rather than a few ordered exports put
/// together; from its 64th turn on it is read as it comes, and what arrives too late for the
/// rules is counted and noted, as in a replay.
const MAX_RUNS_PER_INPUT: usize = 64;
/// A run whose time goes back (an export sorted newest first) is read backwards in blocks of
/// at most this many lines, each held whole in memory while the merge reads it…
const BLOCK_LINES: usize = 2048;
/// …and of about this many bytes (a block ends at the line that reaches it).
const BLOCK_BYTES: u64 = 2 << 20;
/// Lines each run reads ahead of the merge.
const LANE_LINES: usize = 256;
/// Runs read at once, at most: each holds a file open and a read-ahead batch. Runs that overlap
/// in time beyond this are read after their time (counted and noted in the report).
const MAX_OPEN_LANES: usize = 32;

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
    /// Time zone of the text report's times: an IANA name such as `Asia/Tokyo` (default UTC).
    /// Every time is labelled with its zone; alert summaries, written by the rules, stay in
    /// UTC, and so do the times of `--json`.
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    tz: Option<chrono_tz::Tz>,
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
    let mut config = load_config(&args)?;
    // Late events come to the sink, which counts the user's: nothing is written anywhere.
    config.event_time.late_events = LatePolicy::SideOutput;
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
    // An alert names events of its window, decided up to its settling time after the window.
    let longest_window = rules
        .values()
        .map(|r| r.window_ms.saturating_add(r.settle_ms))
        .max()
        .unwrap_or(0);
    let lateness = config.event_time.allowed_lateness.millis();
    let suppress = rules
        .values()
        .map(|r| (r.id.clone(), r.suppress_ms))
        .collect();
    let sink = UserSink::new(
        &args.user,
        args.tenant.as_deref(),
        longest_window,
        lateness,
        suppress,
    );
    // The same detections as `replay`: the compiled rules, and the windowed SQL ones when
    // `[sql]` is enabled.
    let (pipeline, sql_failures) =
        replay::with_sql_detections(Pipeline::new(config.clone(), pack)?, &config)?;
    let (summary, sink) = pipeline.run(&mut source, sink, Speed::Max)?;
    // A failed SQL execution is logged as it happens; its windows' alerts may be missing from
    // the report, which says so on standard error as replay does.
    sql_failures.report();
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

/// A duration in words, for sentences: `24 hours`, `1 hour 30 minutes`, `7 days` /
/// `24 時間`, `1 時間 30 分`, `7 日`. Up to two days read in hours (`--since 24h` is "the last
/// 24 hours", not "the last 1day"), longer ones in days and hours.
pub(crate) fn duration_words(d: std::time::Duration, lang: Language) -> String {
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    let total = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let units: &[(u64, &str, &str, &str)] = &[
        (DAY, "day", "days", "日"),
        (HOUR, "hour", "hours", "時間"),
        (MINUTE, "minute", "minutes", "分"),
        (SECOND, "second", "seconds", "秒"),
        (1, "millisecond", "milliseconds", "ミリ秒"),
    ];
    let units = if total > 2 * DAY { units } else { &units[1..] };
    let mut rest = total;
    let mut parts = Vec::new();
    for &(unit, one, many, ja) in units {
        let n = rest / unit;
        rest %= unit;
        if n > 0 {
            parts.push(match lang {
                Language::En => format!("{n} {}", if n == 1 { one } else { many }),
                Language::Ja => format!("{n} {ja}"),
            });
        }
    }
    if parts.is_empty() {
        return tr(lang, "0 seconds", "0 秒").to_owned();
    }
    parts.join(" ")
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
            // The providers' "method not allowed": a policy restriction, system in the brief.
            (
                Reason::MethodMismatch,
                Factor::Sms,
                Outcome::Failure,
                CauseClass::System,
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

    /// Found by review: an unanswered push during an attack on the account was put down to
    /// the user's phone ("it probably did not receive it") unless a network finding named its
    /// address, though MFA fatigue counts unanswered pushes as it counts denied ones. An
    /// attack outranks a network finding here as everywhere.
    #[test]
    fn an_unanswered_push_during_an_attack_is_the_attack() {
        let timeout = failure(Reason::PushTimeout, Factor::Push, Outcome::Timeout);
        let mut unreasoned = failure(Reason::None, Factor::Push, Outcome::Timeout);
        unreasoned.activity = Activity::MfaVerify;
        for around in [
            Around {
                network_alert: None,
                attack_alert: true,
            },
            Around {
                network_alert: Some(2),
                attack_alert: true,
            },
        ] {
            for ev in [&timeout, &unreasoned] {
                assert_eq!(
                    default_cause(ev, &around),
                    (
                        CauseClass::Attack,
                        Basis::Generic(Generic::UnansweredDuringAttack)
                    )
                );
            }
        }
        let (en, ja) = Generic::UnansweredDuringAttack.texts();
        assert!(!en.summary.contains("did not receive"), "{}", en.summary);
        assert!(en.steps.iter().all(|s| !s.contains("notifications")));
        assert!(ja.summary.contains("攻撃"), "{}", ja.summary);
        // Without an attack around, still the phone.
        assert_eq!(
            default_cause(&timeout, &QUIET),
            (
                CauseClass::Device,
                Basis::Generic(Generic::PushNotDelivered)
            )
        );
    }

    /// Found by review: a denied push with no attack around was filed under "USER — the user's
    /// own mistake" while its text said it was probably a request they did not expect and that
    /// someone may have the password. The class and the text now say the same: the user's own
    /// action, for a reason only they know (a mis-tap, or a request they had not started).
    #[test]
    fn a_denied_push_without_an_attack_is_neither_called_a_mistake_nor_probably_unexpected() {
        let denied = failure(Reason::PushDenied, Factor::Push, Outcome::Denied);
        assert_eq!(
            default_cause(&denied, &QUIET),
            (CauseClass::User, Basis::Generic(Generic::UnexpectedPush))
        );
        let (en, ja) = Generic::UnexpectedPush.texts();
        assert!(!en.summary.contains("probably"), "{}", en.summary);
        assert!(en.summary.contains("mis-tap"), "{}", en.summary);
        assert!(en.summary.contains("Ask them"), "{}", en.summary);
        assert!(!ja.summary.contains("可能性があります"), "{}", ja.summary);
        assert_ne!(
            class_meaning(CauseClass::User, Language::En),
            "the user's own mistake"
        );
        assert!(class_meaning(CauseClass::User, Language::En).contains("action"));
        assert!(class_meaning(CauseClass::User, Language::Ja).contains("操作"));
    }

    /// Found by review: the generic texts assumed a factor. A wrong SMS code got clock-drift
    /// advice, a declined SMS step with no reason "denied a push request", and a failure with
    /// no reason at all "its own code is listed" beside `none given (none)`.
    #[test]
    fn generic_texts_follow_the_factor_and_a_missing_reason() {
        let cause =
            |reason, factor, outcome| default_cause(&failure(reason, factor, outcome), &QUIET);
        let generic = |(_, basis): (CauseClass, Basis)| match basis {
            Basis::Generic(g) => g,
            Basis::Alert(i) => panic!("alert {i}"),
        };
        for factor in [Factor::Sms, Factor::Voice, Factor::Email] {
            let g = generic(cause(Reason::InvalidOtp, factor, Outcome::Failure));
            assert_eq!(g, Generic::WrongSentCode, "{factor}");
            let (en, ja) = g.texts();
            assert!(en.steps.iter().all(|s| !s.contains("clock")), "{factor}");
            assert!(ja.steps.iter().all(|s| !s.contains("時刻")), "{factor}");
        }
        assert_eq!(
            generic(cause(Reason::InvalidOtp, Factor::Totp, Outcome::Failure)),
            Generic::WrongCode
        );
        let declined = generic(cause(Reason::None, Factor::Sms, Outcome::Denied));
        assert_eq!(declined, Generic::DeclinedRequest);
        assert!(!declined.texts().0.summary.contains("denied a push"));
        assert_eq!(
            generic(cause(Reason::None, Factor::Push, Outcome::Denied)),
            Generic::UnexpectedPush
        );
        let (_, basis) = default_cause(
            &failure(Reason::None, Factor::Sms, Outcome::Denied),
            &Around {
                network_alert: None,
                attack_alert: true,
            },
        );
        let Basis::Generic(during) = basis else {
            panic!("{basis:?}")
        };
        assert!(!during.texts().0.summary.contains("push"), "{during:?}");
        let none = generic(cause(Reason::None, Factor::None, Outcome::Failure));
        assert_eq!(none, Generic::NoReason);
        assert!(!none.texts().0.summary.contains("code is listed"));
        // A code outside the vocabulary is listed with the reasons; an empty one is no reason.
        let mut coded = failure(Reason::Other, Factor::None, Outcome::Failure);
        coded.reason_raw = "E0000119".into();
        assert_eq!(
            generic(default_cause(&coded, &QUIET)),
            Generic::Unclassified
        );
        coded.reason_raw = "".into();
        assert_eq!(generic(default_cause(&coded, &QUIET)), Generic::NoReason);
        assert_eq!(reason_label(Reason::None, Language::En), "none given");
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
        let who = Who {
            user: "jia@acme.example".into(),
            keys: BTreeSet::new(),
        };
        let sources = HashMap::new();
        let actors = Actors {
            who: &who,
            familiar: Sources::default(),
            successes: HashSet::new(),
            sources: &sources,
        };
        let s = scope(&alert, Some(&rule), &problems, &actors);
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
        let s = scope(&alert, None, &problems, &actors);
        assert_eq!((s.last, s.until), (3 * MIN, 63 * MIN));
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn no_one<'a>(who: &'a Who, sources: &'a HashMap<String, Sources>) -> Actors<'a> {
        Actors {
            who,
            familiar: Sources::default(),
            successes: HashSet::new(),
            sources,
        }
    }

    fn who(user: &str) -> Who {
        Who {
            user: user.into(),
            keys: BTreeSet::new(),
        }
    }

    /// Without the provider's device id a fingerprint is the browser most staff use: an alert
    /// keyed by it names no one. An address the user signs in from is never the attacker's,
    /// even when an attack came through the same NAT.
    #[test]
    fn only_an_identifying_device_and_an_unfamiliar_address_make_an_actor() {
        let rule = builtin("credential_stuffing_device");
        let mut alert = user_alert(&rule, "", 0, 60_000);
        alert.entity.user = None;
        alert.entity.device_fingerprint = Some("fp-chrome".into());
        alert.observed.device.fingerprint = "fp-chrome".into();
        let mut ev = wrong_password("jia@acme.example", 30_000);
        ev.device.fingerprint = "fp-chrome".into();
        let who = who("jia@acme.example");
        let sources = HashMap::new();
        let actors = no_one(&who, &sources);
        assert!(!actors.attacker_sent(&alert, &ev));
        assert!(!actors.came_from_attack_source(&alert, &ev));
        assert!(!actors.of_incident(&rule, &alert, &ev));
        alert.observed.device.id = "dev-1".into();
        ev.device.id = "dev-1".into();
        assert!(actors.attacker_sent(&alert, &ev));

        let rule = builtin("credential_stuffing");
        let mut alert = user_alert(&rule, "", 0, 60_000);
        alert.entity.user = None;
        alert.entity.ip = ip("198.51.100.10");
        let mut ev = wrong_password("jia@acme.example", 30_000);
        ev.src.ip = ip("198.51.100.10");
        assert!(actors.attacker_sent(&alert, &ev));
        let mut actors = no_one(&who, &sources);
        actors.familiar.ips.extend(ip("198.51.100.10"));
        assert!(!actors.attacker_sent(&alert, &ev));
        assert!(!actors.came_from_attack_source(&alert, &ev));
    }

    /// Impossible travel may decide on the user's own sign-in (the office one after a sign-in
    /// from abroad): from a familiar source, its address and device are not the attacker's.
    /// Found by review: any successful sign-in counted as the user's own, the attacker's
    /// included, so an anonymizer, impossible-travel, new-place or fatigue-success finding,
    /// which all decide on a success, never claimed the failures from where it came.
    #[test]
    fn an_attack_decided_on_the_users_own_sign_in_does_not_claim_its_source() {
        let rule = builtin("impossible_travel");
        let mut alert = user_alert(&rule, "jia@acme.example", 0, 60_000);
        alert.observed.event_id = "s1".into();
        alert.observed.src.ip = ip("203.0.113.7");
        alert.observed.device.id = "dev-9".into();
        alert.observed.device.fingerprint = "fp-9".into();
        let mut from_there = wrong_password("jia@acme.example", 30_000);
        from_there.src.ip = ip("203.0.113.7");
        let mut same_device = wrong_password("jia@acme.example", 40_000);
        same_device.src.ip = ip("192.0.2.44");
        same_device.device.id = "dev-9".into();
        same_device.device.fingerprint = "fp-9".into();
        let who = who("jia@acme.example");
        let sources = HashMap::new();
        let mut actors = no_one(&who, &sources);
        assert!(actors.came_from_attack_source(&alert, &from_there));
        // A success, but from nowhere the user signs in from: the attacker's way in.
        actors.successes.insert(event_key("", "s1"));
        assert!(actors.came_from_attack_source(&alert, &from_there));
        assert!(actors.came_from_attack_source(&alert, &same_device));
        // The same success from the user's familiar address: theirs, and so is its device.
        actors.familiar.ips.extend(ip("203.0.113.7"));
        assert!(!actors.came_from_attack_source(&alert, &from_there));
        assert!(!actors.came_from_attack_source(&alert, &same_device));
    }

    /// A benign finding naming the failure keeps it when an attack only shares its address;
    /// and an alert names an event of its own tenant only, however the ids collide.
    #[test]
    fn a_source_only_match_does_not_overrule_the_alert_naming_the_event() {
        let mistake = builtin("triage_user_mistake");
        let mut named = user_alert(&mistake, "jia@acme.example", 0, 60_000);
        named.alert_id = "m".into();
        named.evidence = vec!["e1".into()];
        named.observed.tenant = "t1".into();
        let mut attack = user_alert(&mistake, "", 0, 60_000);
        attack.alert_id = "x".into();
        attack.rule_id = "not_in_the_pack".into();
        attack.cause_class = CauseClass::Attack;
        attack.entity.user = None;
        attack.entity.ip = ip("203.0.113.9");
        let mut ev = wrong_password("jia@acme.example", 30_000);
        ev.tenant = "t1".into();
        ev.event_id = "e1".into();
        ev.src.ip = ip("203.0.113.9");
        let mut other = ev.clone();
        other.tenant = "t2".into();
        other.src.ip = ip("192.0.2.1");
        other.time = 500_000;
        let alerts = vec![named, attack];
        let scopes = vec![
            Scope {
                start: 0,
                last: 60_000,
                until: 120_000,
            };
            2
        ];
        let rules: HashMap<String, CompiledRule> = [(mistake.id.clone(), mistake)].into();
        let who = who("jia@acme.example");
        let sources = HashMap::new();
        let actors = no_one(&who, &sources);
        let groups = assign(&[&ev, &other], &alerts, &scopes, &rules, &actors);
        let user = groups
            .iter()
            .find(|g| g.class == CauseClass::User)
            .unwrap_or_else(|| panic!("no user group"));
        assert!(groups.iter().all(|g| g.class != CauseClass::Attack));
        // Named by the finding: explained by it. The other tenant's e1: by its reason.
        assert_eq!(
            user.explanations.get(&Basis::Alert(0)).map(|x| x.failures),
            Some(1)
        );
        assert_eq!(
            user.explanations
                .get(&Basis::Generic(Generic::WrongPassword))
                .map(|x| x.failures),
            Some(1)
        );
    }

    /// Keyed alerts are let go by time, not by count: one a failure of the user fell in
    /// survives thousands of later alerts, and only alerts still open beyond the cap are
    /// dropped, counted.
    #[test]
    fn keyed_alerts_are_let_go_when_their_incident_is_over() {
        let rule = builtin("credential_stuffing");
        let keyed = |k: i64, t: i64| {
            let mut a = user_alert(&rule, "", t - 60_000, t);
            a.alert_id = format!("k{k}");
            a.entity.user = None;
            a.entity.ip = ip("203.0.113.9");
            a
        };
        let mut sink = UserSink::new("jia@acme.example", None, 0, 0, HashMap::new());
        sink.alert(&keyed(0, 60_000)).unwrap();
        sink.event(&wrong_password("jia@acme.example", 120_000))
            .unwrap();
        const HOUR: i64 = 3_600_000;
        // The pipeline hands the sink each batch's events before its alerts.
        for k in 1..=3 * MAX_KEYED_ALERTS as i64 {
            let t = 10 * HOUR + k * 60_000;
            sink.event(&wrong_password("ken@acme.example", t)).unwrap();
            sink.alert(&keyed(k, t)).unwrap();
        }
        assert_eq!(sink.keyed_dropped, 0);
        assert_eq!(
            sink.keyed_alerts.front().map(|k| k.alert.alert_id.as_str()),
            Some("k0")
        );
        // All open at once: beyond the cap the oldest untouched one goes, counted.
        for k in 0..=MAX_KEYED_ALERTS as i64 {
            sink.event(&wrong_password("ken@acme.example", 200 * HOUR))
                .unwrap();
            sink.alert(&keyed(100_000 + k, 200 * HOUR)).unwrap();
        }
        assert!(sink.keyed_dropped > 0);
        assert_eq!(sink.keyed_alerts.len(), MAX_KEYED_ALERTS);
        assert_eq!(
            sink.keyed_alerts.front().map(|k| k.alert.alert_id.as_str()),
            Some("k0")
        );
    }

    /// The pipeline hands the sink a batch's events before its alerts, and a batch of a quiet
    /// night spans hours: the sources of the failures an alert names are still known when the
    /// alert comes after the rest of its batch, whatever the batch size; once the batch's
    /// alerts were handled, failures older than the window before the watermark are forgotten.
    #[test]
    fn an_alerts_sources_outlive_the_rest_of_its_batch() {
        const MIN: i64 = 60_000;
        const HOUR: i64 = 60 * MIN;
        let t0 = 1_767_225_600_000;
        let spray = |id: &str, start: i64, fired: i64, evidence: &[&str]| Alert {
            alert_id: id.into(),
            rule_id: "password_spray_multi_source".into(),
            rule_version: 1,
            category: "password_spray".into(),
            cause_class: CauseClass::Attack,
            severity: Severity::High,
            attack_technique: Vec::new(),
            entity: authwatch_event::Entity {
                tenant: Some("acme".into()),
                ..Default::default()
            },
            window: authwatch_event::Window {
                start: Timestamp(start),
                end: Timestamp(fired),
            },
            metrics: BTreeMap::new(),
            evidence: evidence.iter().map(|&e| e.into()).collect(),
            observed: authwatch_event::Observed {
                tenant: "acme".into(),
                ..Default::default()
            },
            first_seen: Timestamp(start),
            last_seen: Timestamp(fired),
            summary: Default::default(),
            steps: Default::default(),
            related: Vec::new(),
        };
        let failure = |user: &str, t: i64, id: &str, addr: &str| {
            let mut e = wrong_password(user, t);
            e.tenant = "acme".into();
            e.event_id = id.into();
            e.src.ip = ip(addr);
            e
        };
        let mut sink = UserSink::new("jia@acme.example", None, 6 * HOUR, 5 * MIN, HashMap::new());
        // One batch: the spray's failure, then ten hours of other failures, then its alert.
        sink.event(&failure("ken@acme.example", t0, "s1", "45.155.205.7"))
            .unwrap();
        for k in 1..=60 {
            let id = format!("n{k}");
            sink.event(&failure(
                "aoi@acme.example",
                t0 + k * 10 * MIN,
                &id,
                "198.51.100.10",
            ))
            .unwrap();
        }
        sink.alert(&spray("a1", t0 - MIN, t0 + MIN, &["s1"]))
            .unwrap();
        let ips = |sink: &UserSink, id: &str| -> Vec<String> {
            sink.sources
                .get(id)
                .map(|s| s.ips.iter().map(ToString::to_string).collect())
                .unwrap_or_default()
        };
        assert_eq!(ips(&sink, "a1"), ["45.155.205.7"]);
        // The next batch: failures from before the window and the lateness before the newest
        // event are forgotten, the rest kept.
        sink.event(&failure(
            "aoi@acme.example",
            t0 + 10 * HOUR,
            "m1",
            "198.51.100.10",
        ))
        .unwrap();
        assert!(
            sink.recent
                .iter()
                .all(|(t, _)| *t >= t0 + 4 * HOUR - 5 * MIN)
        );
        assert_eq!(sink.recent.front().map(|(t, _)| *t), Some(t0 + 4 * HOUR));
        sink.alert(&spray("a2", t0 + 9 * HOUR, t0 + 10 * HOUR, &["n55", "s1"]))
            .unwrap();
        assert_eq!(ips(&sink, "a2"), ["198.51.100.10"]);
    }

    /// The user's own sign-ins make their sources familiar; the attacker's way in during a
    /// push-bombing does not, though no alert names it and the profile learnt its device.
    #[test]
    fn the_attackers_way_in_is_not_a_familiar_source() {
        let success = |t: i64, addr: &str| {
            let mut e = named("jia@acme.example", "");
            e.time = t;
            e.activity = Activity::Logon;
            e.outcome = Outcome::Success;
            e.src.ip = ip(addr);
            e.event_id = format!("s{t}").into();
            e
        };
        const HOUR: i64 = 3_600_000;
        let mut first_from_attacker = success(10 * HOUR, "45.155.205.7");
        first_from_attacker.context.new_asn = true;
        let history = [
            success(HOUR, "198.51.100.10"),
            success(2 * HOUR, "198.51.100.10"),
            first_from_attacker,
            success(10 * HOUR + 60_000, "45.155.205.7"),
        ];
        let rule = builtin("mfa_fatigue");
        let fatigue = user_alert(&rule, "jia@acme.example", 10 * HOUR - 600_000, 10 * HOUR);
        let rules: HashMap<String, CompiledRule> = [(rule.id.clone(), rule)].into();
        let f = familiar(
            &history,
            std::slice::from_ref(&fatigue),
            std::iter::empty(),
            &rules,
        );
        assert_eq!(
            f.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["198.51.100.10"]
        );
    }

    /// Found by review: an MFA-fatigue attacker's password step comes just before the first
    /// push the alert counts, outside its incident and named by no alert; when the profile
    /// found nothing new in it, its address became the user's own, and the attacker's later
    /// pushes from there were no longer the attack's. A sign-in that stopped at MFA is not
    /// where the user signs in from, nor one whose only approval is the attack's; one with no
    /// MFA step after it (no MFA asked) still is.
    #[test]
    fn a_sign_in_that_stopped_at_mfa_is_not_a_familiar_source() {
        const HOUR: i64 = 3_600_000;
        let step = |t: i64, activity, factor, outcome, reason, addr: &str| {
            let mut e = named("jia@acme.example", "");
            e.time = t;
            e.activity = activity;
            e.factor = factor;
            e.outcome = outcome;
            e.reason = reason;
            e.src.ip = ip(addr);
            e.event_id = format!("e{t}").into();
            e
        };
        let office = "198.51.100.10";
        let sign_in = |t: i64, addr: &str| {
            [
                step(
                    t,
                    Activity::Logon,
                    Factor::Password,
                    Outcome::Success,
                    Reason::None,
                    addr,
                ),
                step(
                    t + 5_000,
                    Activity::MfaVerify,
                    Factor::Push,
                    Outcome::Success,
                    Reason::None,
                    addr,
                ),
            ]
        };
        let bombing = |t: i64, addr: &str, pushes: i64| {
            let mut events = vec![step(
                t,
                Activity::Logon,
                Factor::Password,
                Outcome::Success,
                Reason::None,
                addr,
            )];
            for k in 0..pushes {
                let at = t + 30_000 + k * 40_000;
                events.push(step(
                    at,
                    Activity::MfaChallenge,
                    Factor::Push,
                    Outcome::Challenge,
                    Reason::None,
                    addr,
                ));
                events.push(step(
                    at + 5_000,
                    Activity::MfaVerify,
                    Factor::Push,
                    Outcome::Timeout,
                    Reason::PushTimeout,
                    addr,
                ));
            }
            events
        };
        let mut history: Vec<AuthEvent> = Vec::new();
        history.extend(sign_in(HOUR, office));
        history.extend(sign_in(2 * HOUR, office));
        // A hotel where no MFA is asked (a remembered device): still the user's.
        history.push(step(
            3 * HOUR,
            Activity::Logon,
            Factor::Password,
            Outcome::Success,
            Reason::None,
            "192.0.2.80",
        ));
        // Push bombing from an address the profile found nothing new in.
        history.extend(bombing(10 * HOUR, "45.155.205.7", 9));
        // Push bombing that worked: its approval is the alert's deciding event.
        let mut worked = bombing(20 * HOUR, "45.155.205.8", 6);
        let approval = step(
            20 * HOUR + 5 * 60_000,
            Activity::MfaVerify,
            Factor::Push,
            Outcome::Success,
            Reason::None,
            "45.155.205.8",
        );
        worked.push(approval.clone());
        history.extend(worked);
        history.sort_by_key(|e| e.time);

        let fatigue = builtin("mfa_fatigue");
        let success = builtin("mfa_fatigue_success");
        let alerts = vec![
            user_alert(
                &fatigue,
                "jia@acme.example",
                10 * HOUR + 30_000,
                10 * HOUR + 195_000,
            ),
            {
                let mut a = user_alert(
                    &success,
                    "jia@acme.example",
                    20 * HOUR + 30_000,
                    approval.time,
                );
                a.observed.event_id = approval.event_id.clone();
                a
            },
        ];
        // Without the rules each incident is followed for an hour after its alert: the password
        // steps just before the alerts' windows are outside them, as in the review's stream.
        let rules: HashMap<String, CompiledRule> = HashMap::new();
        let f = familiar(&history, &alerts, std::iter::empty(), &rules);
        assert_eq!(
            f.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["192.0.2.80", office]
        );
    }

    fn explain_args(user: &str) -> ExplainArgs {
        ExplainArgs {
            user: user.into(),
            tenant: None,
            files: Vec::new(),
            lang: None,
            config: None,
            rules: crate::RulesArg { rules: None },
            since: None,
            tz: None,
            last: 20,
            json: false,
        }
    }

    /// The report of what a sink kept, as `run` builds it after the pipeline.
    fn report_from(sink: UserSink, user: &str) -> Report {
        let input = InputFacts {
            files: vec![FileFacts {
                name: "in.jsonl".into(),
                lines: 10,
                unreadable: 0,
            }],
            events: 10,
            unreadable: 0,
            rejected: Vec::new(),
            late: 0,
            deferred: (0, 0),
        };
        let rules: HashMap<String, CompiledRule> = authwatch_detect::RulePack::builtin()
            .unwrap()
            .rules()
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        Report::build(sink, &explain_args(user), input, &rules)
    }

    /// Found by review: the sink kept the first 1,000 alerts on the user but the newest 10,000
    /// events, so the alerts about the newest incidents were the ones dropped.
    #[test]
    fn the_most_recent_alerts_about_the_user_are_kept() {
        let rule = builtin("mfa_fatigue");
        let mut sink = UserSink::new("jia@acme.example", None, 0, 0, HashMap::new());
        let n = MAX_ALERTS as i64 + 3;
        for k in 0..n {
            let mut e = wrong_password("jia@acme.example", k * 60_000);
            e.event_id = format!("f{k}").into();
            sink.event(&e).unwrap();
            let mut a = user_alert(&rule, "jia@acme.example", k * 60_000, k * 60_000);
            a.alert_id = format!("a{k}");
            a.evidence = vec![format!("f{k}")];
            sink.alert(&a).unwrap();
        }
        assert_eq!(sink.alerts.len(), MAX_ALERTS);
        assert_eq!(sink.alerts_dropped, 3);
        assert_eq!(sink.alerts.front().map(|a| a.alert_id.as_str()), Some("a3"));
        let newest = format!("a{}", n - 1);
        assert_eq!(
            sink.alerts.back().map(|a| a.alert_id.as_str()),
            Some(newest.as_str())
        );
        assert!(!sink.sources.contains_key("a0"));
    }

    /// Found by review: with alerts let go of, the report still said "no alert concerns this
    /// user" and "None: no detection rule fired", and noted the dropped ones only at the bottom.
    #[test]
    fn no_none_claims_when_alerts_were_let_go_of() {
        let mut sink = UserSink::new("jia@acme.example", None, 0, 0, HashMap::new());
        let mut ok = named("jia@acme.example", "");
        ok.activity = Activity::Logon;
        ok.outcome = Outcome::Success;
        ok.event_id = "s1".into();
        sink.event(&ok).unwrap();
        let mut wrong = wrong_password("jia@acme.example", 60_000);
        wrong.event_id = "f1".into();
        sink.event(&wrong).unwrap();
        let mut report = report_from(sink, "jia@acme.example");
        assert!(report.alerts.is_empty());
        report.alerts_dropped = 200;
        for (lang, note, top) in [
            (Language::En, "Note: 200 older alert(s)", "Period:"),
            (
                Language::Ja,
                "注: このユーザーに関する古いアラート 200 件",
                "期間:",
            ),
        ] {
            let text = report.render(lang);
            for claim in [
                "no alert concerns this user",
                "None: no detection rule fired",
                "(no alert explains these",
                "ありません。このユーザーやそのサインインについて",
                "アラートは 0 件です",
                "（説明するアラートはなく",
            ] {
                assert!(!text.contains(claim), "{claim}:\n{text}");
            }
            let at = text.find(note).unwrap_or_else(|| panic!("{text}"));
            assert!(at < text.find(top).unwrap(), "{text}");
        }
    }

    /// Found by review: login names, browser and OS strings, provider codes and the alert
    /// texts that quote them were written to the terminal as they came, so an escape sequence
    /// in a sign-in could recolour or clear the screen and hide rows.
    #[test]
    fn input_derived_text_cannot_drive_the_terminal() {
        fn harmless(text: &str) -> bool {
            text.chars().all(|c| {
                c == '\n'
                    || !(c.is_control()
                        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
            })
        }
        assert_eq!(
            printable("a\u{1b}[31mb\u{202e}c"),
            "a\\u{1b}[31mb\\u{202e}c"
        );
        assert!(matches!(
            printable("ken@acme.example 成功"),
            Cow::Borrowed(_)
        ));

        let user = "jia\u{202e}@acme.example";
        let tenant = "acme\u{1b}]0;pwned\u{7}";
        let mut sink = UserSink::new(user, None, 0, 0, HashMap::new());
        let mut ev = wrong_password(user, 60_000);
        ev.event_id = "f1".into();
        ev.tenant = tenant.into();
        ev.reason = Reason::Other;
        ev.reason_raw = "E\u{1b}[2Jcleared".into();
        ev.device.os = "Win\u{9b}31m".into();
        ev.device.browser = "Edge\u{1b}[5m131\r".into();
        ev.src.ip = ip("203.0.113.9");
        ev.src.as_org = "Org\u{2066}x".into();
        ev.src.geo = Some(authwatch_event::Geo {
            country: "JP".into(),
            city: "To\u{7f}kyo\u{0}".into(),
            ..Default::default()
        });
        sink.event(&ev).unwrap();
        let rule = builtin("mfa_fatigue");
        let mut a = user_alert(&rule, user, 0, 60_000);
        a.entity.tenant = Some(tenant.into());
        a.observed.tenant = tenant.into();
        a.evidence = vec!["f1".into()];
        a.summary.en = format!("attack on {user}\u{1b}[8m hidden");
        a.summary.ja = format!("{user} への攻撃\u{1b}[8m");
        a.steps.en = vec!["step\u{1b}[2K".into()];
        a.steps.ja = vec!["手順\u{1b}[2K".into()];
        sink.alert(&a).unwrap();
        let report = report_from(sink, user);
        assert_eq!(report.alerts.len(), 1);
        for lang in [Language::En, Language::Ja] {
            let text = report.render(lang);
            assert!(harmless(&text), "{}", text.escape_debug());
            assert!(text.contains("\\u{1b}[2Jcleared"), "{text}");
        }

        // Names offered as similar, and the file names of a run with nothing readable.
        let mut sink = UserSink::new("ken@acme.example", None, 0, 0, HashMap::new());
        sink.event(&named("ken\u{1b}[31m@acme.example", ""))
            .unwrap();
        let mut report = report_from(sink, "ken@acme.example");
        report.input.files[0].name = "in\u{1b}[2J.jsonl".into();
        report.input.files[0].unreadable = 1;
        report.input.unreadable = 1;
        for lang in [Language::En, Language::Ja] {
            let text = report.render(lang);
            assert!(harmless(&text), "{}", text.escape_debug());
            assert!(text.contains("ken\\u{1b}[31m@acme.example"), "{text}");
            assert!(harmless(&report.input.nothing_readable(lang)));
        }
    }

    /// Found by review: the JSON report flattened each alert's entity into a string, where the
    /// alert schema has an object; listed the reason `none` with an empty label; and named the
    /// count of steps `steps`, a list everywhere else.
    #[test]
    fn the_json_report_keeps_the_alert_schemas_shapes() {
        let user = "jia@acme.example";
        let mut sink = UserSink::new(user, None, 0, 0, HashMap::new());
        let mut ev = wrong_password(user, 60_000);
        ev.event_id = "f1".into();
        ev.tenant = "acme".into();
        ev.reason = Reason::None;
        sink.event(&ev).unwrap();
        let rule = builtin("mfa_fatigue");
        let mut a = user_alert(&rule, user, 0, 60_000);
        a.entity.tenant = Some("acme".into());
        sink.alert(&a).unwrap();
        let report = report_from(sink, user);
        let json = serde_json::to_value(report.to_json(Language::En)).unwrap();
        assert_eq!(json["alerts"][0]["entity"]["user"], user, "{json:#}");
        assert_eq!(json["alerts"][0]["entity"]["tenant"], "acme", "{json:#}");
        assert_eq!(json["step_count"], 1, "{json:#}");
        assert!(json.get("steps").is_none(), "{json:#}");
        let reasons = &json["causes"][0]["reasons"];
        assert_eq!(reasons[0]["reason"], "none", "{json:#}");
        assert_eq!(reasons[0]["label"], "none given", "{json:#}");
    }

    /// Found by review: the code read a file as it comes from its 63rd turn of time on, while
    /// the documentation says from more than 64. A file turning 63 times is 64 ordered runs,
    /// read in order, its last one going back in time included; from the 64th turn on, the
    /// rest is read as it comes.
    #[test]
    fn a_file_is_read_in_order_up_to_sixty_four_runs() {
        const MIN: i64 = 60_000;
        const HOUR: i64 = 60 * MIN;
        let t0 = 1_767_225_600_000;
        let dir = tempfile::tempdir().unwrap();
        // 63 runs going forward, each an hour before the one above it, then one going back.
        let mut times: Vec<i64> = Vec::new();
        for k in 1..=63 {
            let slot = t0 + (200 - 2 * k) * HOUR;
            times.extend([slot, slot + 10 * MIN, slot + 20 * MIN]);
        }
        let last = t0 + 10 * HOUR;
        times.extend([last + 20 * MIN, last + 10 * MIN, last]);
        let path = dir.path().join("runs.jsonl");
        let write = |times: &[i64]| {
            let text: String = times.iter().map(|&t| event_line(t)).collect();
            std::fs::write(&path, text).unwrap();
        };
        write(&times);
        let mut source =
            OrderedSource::open(std::slice::from_ref(&path), &Config::default()).unwrap();
        assert_eq!(source.lanes.len(), MAX_RUNS_PER_INPUT);
        assert!(source.lanes.last().is_some_and(|l| l.start.reversed));
        let got: Vec<i64> = lines_of(&mut source)
            .into_iter()
            .map(|(_, _, t)| t)
            .collect();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "read in time order");

        // One more turn: from it on, the rest is one run read as it comes.
        times.extend([t0 + 5 * HOUR, t0 + 5 * HOUR + 10 * MIN]);
        write(&times);
        let source = OrderedSource::open(std::slice::from_ref(&path), &Config::default()).unwrap();
        assert_eq!(source.lanes.len(), MAX_RUNS_PER_INPUT + 1);
        assert!(source.lanes.last().is_some_and(|l| !l.start.reversed));
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

    fn event_line(t: i64) -> String {
        format!(
            "{{\"time\":{t},\"provider\":\"okta\",\"event_id\":\"e{t}\",\"activity\":\"logon\",\"outcome\":\"success\"}}\n"
        )
    }

    /// Ten tenants' exports of one day appended into one file: each run is entered at its own
    /// offset, so the file is read once in the second pass, not once per run from its start;
    /// gzip is read from its start per run and gives the same lines.
    #[test]
    fn a_files_runs_are_read_from_their_offsets() {
        use std::io::Write as _;
        const MIN: i64 = 60_000;
        let t0 = 1_767_225_600_000;
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..10)
            .flat_map(|_| (0..50).map(move |k| event_line(t0 + k * MIN)))
            .collect();
        let plain = dir.path().join("tenants.jsonl");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("tenants.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();

        let mut source = OrderedSource::open(&[plain], &Config::default()).unwrap();
        assert_eq!(source.lanes.len(), 10);
        let got = lines_of(&mut source);
        assert_eq!(got.len(), 500);
        assert!(got.windows(2).all(|w| w[0].2 <= w[1].2), "in time order");
        assert_eq!(
            source.bytes_read(),
            text.len() as u64,
            "each byte read once"
        );
        let mut source = OrderedSource::open(&[gz], &Config::default()).unwrap();
        assert_eq!(lines_of(&mut source), got);
    }

    /// An export sorted newest first, with neighbours swapped here and there (within the
    /// lateness) as exports sorted by a coarser time do, is read backwards block by block:
    /// oldest first, nothing too far behind, every line once with its own line number, never
    /// more than two blocks open. A gzip one is decompressed once and gives the same lines.
    #[test]
    fn a_newest_first_file_is_read_oldest_first() {
        use std::io::Write as _;
        const MIN: i64 = 60_000;
        let t0 = 1_767_225_600_000;
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * BLOCK_LINES + 100;
        let mut times: Vec<i64> = (0..n as i64).rev().map(|k| t0 + k * MIN).collect();
        for k in (0..n - 1).step_by(7) {
            times.swap(k, k + 1);
        }
        let text: String = times.iter().map(|&t| event_line(t)).collect();
        let plain = dir.path().join("newest-first.jsonl");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("newest-first.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();

        let mut source = OrderedSource::open(&[plain], &Config::default()).unwrap();
        assert_eq!(source.lanes.len(), 4, "blocks of {BLOCK_LINES} lines");
        assert!(source.lanes.iter().all(|l| l.start.reversed));
        let mut got = Vec::new();
        let mut batch = RawBatch::default();
        let mut most_open = 0;
        while source.fill(&mut batch, 100).unwrap() {
            most_open = most_open.max(source.open_lanes);
            for l in &batch.lines {
                let e = source
                    .normalizer
                    .normalize(batch.bytes(l), 0, &source.limits)
                    .unwrap();
                got.push((l.origin.line, e.time));
            }
        }
        assert!(most_open <= 2, "{most_open} blocks open at once");
        let lateness = Config::default().event_time.allowed_lateness.millis();
        let mut newest = i64::MIN;
        for &(_, t) in &got {
            assert!(t >= newest.saturating_sub(lateness), "{t} behind {newest}");
            newest = newest.max(t);
        }
        assert_eq!(got.first().map(|g| g.1), Some(t0));
        let mut by_line = got.clone();
        by_line.sort_unstable();
        let expected: Vec<(u64, i64)> = (1..).zip(times.iter().copied()).collect();
        assert_eq!(by_line, expected);

        let mut source = OrderedSource::open(&[gz], &Config::default()).unwrap();
        assert_eq!(source._spills.len(), 1);
        let lines: Vec<(u64, i64)> = lines_of(&mut source)
            .into_iter()
            .map(|(_, line, t)| (line, t))
            .collect();
        assert_eq!(lines, got);
    }

    /// Day files are opened one at a time as the merge reaches them, not all up front; runs
    /// overlapping beyond the cap are read late, counted, and nothing is lost.
    #[test]
    fn lanes_open_when_due_and_no_more_than_the_cap() {
        const DAY: i64 = 86_400_000;
        const MIN: i64 = 60_000;
        let t0 = 1_767_225_600_000;
        let dir = tempfile::tempdir().unwrap();
        let days: Vec<PathBuf> = (0..40)
            .map(|d| {
                let p = dir.path().join(format!("day{d:02}.jsonl"));
                let text: String = (0..5).map(|k| event_line(t0 + d * DAY + k * MIN)).collect();
                std::fs::write(&p, text).unwrap();
                p
            })
            .rev()
            .collect();
        let mut source = OrderedSource::open(&days, &Config::default()).unwrap();
        let mut batch = RawBatch::default();
        let mut most_open = 0;
        let mut n = 0;
        while source.fill(&mut batch, 1).unwrap() {
            most_open = most_open.max(source.open_lanes);
            n += batch.lines.len();
        }
        assert_eq!((n, most_open, source.deferred), (200, 1, (0, 0)));

        // Forty runs over the same hour in one file: 32 read together, 8 after them.
        let text: String = (0..40)
            .flat_map(|_| (0..30).map(move |k| event_line(t0 + k * 2 * MIN)))
            .collect();
        let same = dir.path().join("same.jsonl");
        std::fs::write(&same, text).unwrap();
        let mut source = OrderedSource::open(&[same], &Config::default()).unwrap();
        let got = lines_of(&mut source);
        assert_eq!(got.len(), 1200);
        assert_eq!(source.deferred, (8, 8 * 30));
        assert_eq!(source.open_lanes, 0);
    }

    #[test]
    fn every_generic_explanation_has_steps_in_both_languages() {
        for g in Generic::ALL {
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
    fn durations_read_as_words_in_both_languages() {
        use std::time::Duration;
        let h = |n: u64| Duration::from_secs(n * 3600);
        let cases = [
            (h(24), "24 hours", "24 時間"),
            (h(1), "1 hour", "1 時間"),
            (h(48), "48 hours", "48 時間"),
            (h(7 * 24), "7 days", "7 日"),
            (h(60), "2 days 12 hours", "2 日 12 時間"),
            (
                Duration::from_secs(5400),
                "1 hour 30 minutes",
                "1 時間 30 分",
            ),
            (Duration::from_secs(300), "5 minutes", "5 分"),
            (Duration::from_secs(1), "1 second", "1 秒"),
            (
                Duration::from_millis(1500),
                "1 second 500 milliseconds",
                "1 秒 500 ミリ秒",
            ),
            (Duration::ZERO, "0 seconds", "0 秒"),
        ];
        for (d, en, ja) in cases {
            assert_eq!(duration_words(d, Language::En), en);
            assert_eq!(duration_words(d, Language::Ja), ja);
        }
    }

    /// Times in the zone asked for, each labelled with the zone's abbreviation at that instant
    /// (or its offset where it has none); a span across a change of daylight saving time labels
    /// both ends; UTC stays as it always was.
    #[test]
    fn the_clock_writes_and_labels_times_in_its_zone() {
        // 2026-01-05T09:00:00Z.
        const T: i64 = 1_767_603_600_000;
        const HOUR: i64 = 3_600_000;
        let zone = |name: &str| Clock::new(Some(parse_zone(name).unwrap()));
        let utc = Clock::new(None);
        assert_eq!(utc.at(T, Language::En), "2026-01-05 09:00:00 UTC");
        assert_eq!(utc.at(T, Language::Ja), "2026-01-05 09:00:00（UTC）");
        assert!(!zone("UTC").is_local());
        let tokyo = zone("asia/TOKYO");
        assert_eq!(tokyo.name(), "Asia/Tokyo");
        assert_eq!(tokyo.at(T, Language::En), "2026-01-05 18:00:00 JST");
        assert_eq!(
            tokyo.span(T, T + 5 * HOUR, Language::Ja),
            "2026-01-05 18:00:00 → 23:00:00（JST）"
        );
        assert_eq!(
            tokyo.span(T, T + 6 * HOUR, Language::En),
            "2026-01-05 18:00:00 → 2026-01-06 00:00:00 JST"
        );
        assert_eq!(zone("Asia/Dubai").label(T), "UTC+04:00");
        // Daylight saving time in New York begins on 2026-03-08 at 02:00 EST.
        let dst = 1_772_953_200_000; // 2026-03-08T07:00:00Z, 03:00 EDT
        let ny = zone("America/New_York");
        assert_eq!(
            ny.span(dst - 2 * HOUR, dst, Language::En),
            "2026-03-08 00:00:00 EST → 2026-03-08 03:00:00 EDT"
        );
        assert!(parse_zone("Asia/Tokio").is_err());
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
        let sink = UserSink::new(" Ken@Contoso.JP ", None, 0, 0, HashMap::new());
        assert!(sink.is_user(&named("ken@contoso.jp", "")));
        assert!(sink.is_user(&named("KEN@CONTOSO.JP", "")));
        assert!(!sink.is_user(&named("ken2@contoso.jp", "")));
    }

    /// A ticket may quote the provider's user id; events that carry a name match it too.
    #[test]
    fn the_user_id_matches_even_when_a_name_is_given() {
        let sink = UserSink::new("00u43B3A679F928EC09", None, 0, 0, HashMap::new());
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
