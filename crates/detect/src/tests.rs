//! Engine and pack tests over hand-written event sequences.

use super::*;
use authwatch_event::{Activity, Alert, AuthEvent, Factor, Outcome, Severity};

const T0: i64 = 1_767_603_600_000; // 2026-01-05T09:00:00Z
const MIN: i64 = 60_000;

fn push(user: &str, t: i64, activity: Activity, outcome: Outcome, id: &str) -> AuthEvent {
    AuthEvent {
        time: t,
        provider: "okta".into(),
        event_id: id.into(),
        user: authwatch_event::User {
            name: user.into(),
            ..Default::default()
        },
        activity,
        factor: Factor::Push,
        outcome,
        src: authwatch_event::Src {
            ip: Some("198.51.100.7".parse().unwrap()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `n` push challenges each answered with `outcome`, `gap` apart, starting at `start`.
fn campaign(user: &str, start: i64, n: usize, gap: i64, outcome: Outcome) -> Vec<AuthEvent> {
    (0..n)
        .flat_map(|i| {
            let t = start + i as i64 * gap;
            [
                push(
                    user,
                    t,
                    Activity::MfaChallenge,
                    Outcome::Challenge,
                    &format!("{user}-c{t}"),
                ),
                push(
                    user,
                    t + 20_000,
                    Activity::MfaVerify,
                    outcome,
                    &format!("{user}-v{t}"),
                ),
            ]
        })
        .collect()
}

fn run(engine: &mut Engine, events: &[AuthEvent]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in events {
        engine.on_event(e, &mut out);
        engine.on_watermark(e.time - 30_000, &mut out);
    }
    out
}

fn engine() -> Engine {
    RulePack::builtin().unwrap().engine(EngineLimits::default())
}

#[test]
fn builtin_pack_orders_referenced_rules_first() {
    let pack = RulePack::builtin().unwrap();
    let ids: Vec<&str> = pack
        .order
        .iter()
        .map(|&i| pack.rules[i].id.as_str())
        .collect();
    let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    for r in &pack.rules {
        for target in r.after.iter().chain(&r.unless).flat_map(|a| &a.rules) {
            assert!(
                pos(target) < pos(&r.id),
                "{target} must run before {}",
                r.id
            );
        }
    }
    assert!(pos("mfa_fatigue") < pos("mfa_fatigue_success"));
}

#[test]
fn fatigue_fires_once_at_the_fifth_unanswered_push() {
    let alerts = run(
        &mut engine(),
        &campaign("aiko@x.jp", T0, 8, MIN, Outcome::Denied),
    );
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.rule_id, "mfa_fatigue");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.attack_technique, ["T1621"]);
    assert_eq!(a.entity.user.as_deref(), Some("aiko@x.jp"));
    assert_eq!(
        a.metrics["unanswered"],
        authwatch_event::MetricValue::Count(5)
    );
    // Decided by the fifth verify, 4 minutes and 20 s after the first push.
    assert_eq!(a.window.start.millis(), T0);
    assert_eq!(a.window.end.millis(), T0 + 4 * MIN + 20_000);
    assert_eq!(a.evidence.len(), 10);
    assert!(
        a.summary
            .en
            .contains("5 push requests denied or unanswered"),
        "{}",
        a.summary.en
    );
    assert!(a.summary.ja.contains("aiko@x.jp"));
    assert_eq!(a.steps.en.len(), a.steps.ja.len());
}

#[test]
fn ordinary_retries_do_not_fire() {
    // Four timeouts in ten minutes is a phone problem, not an attack.
    let alerts = run(
        &mut engine(),
        &campaign("ken@x.jp", T0, 4, 2 * MIN, Outcome::Timeout),
    );
    assert!(alerts.is_empty());
    // Five timeouts spread over an hour never sit in one 10-minute window.
    let alerts = run(
        &mut engine(),
        &campaign("ken@x.jp", T0, 5, 12 * MIN, Outcome::Timeout),
    );
    assert!(alerts.is_empty());
}

// Entra and Keycloak log the login as the user (or an attacker) typed it: pushes to `Ken@`
// and `ken@` are pushes to one account, and the alert names it in lower case.
#[test]
fn push_bombing_across_letter_cases_is_one_account() {
    let mut events = campaign("Ken@X.jp", T0, 3, MIN, Outcome::Timeout);
    events.extend(campaign("ken@x.jp", T0 + 3 * MIN, 3, MIN, Outcome::Timeout));
    let alerts = run(&mut engine(), &events);
    let fatigue: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule_id == "mfa_fatigue")
        .collect();
    assert_eq!(fatigue.len(), 1, "{alerts:#?}");
    assert_eq!(fatigue[0].entity.user.as_deref(), Some("ken@x.jp"));
}

#[test]
fn ten_pushes_sent_and_approved_are_reported_but_not_as_a_bombing_that_worked() {
    // A user opening ten applications, approving each push at once: the pushes sent are
    // reported (mfa_fatigue_pushes, after its settle time), but no push was refused, so the
    // approvals are not a bombing that worked.
    let mut engine = engine();
    let mut alerts = run(
        &mut engine,
        &campaign("mia@x.jp", T0, 10, 30_000, Outcome::Success),
    );
    engine.flush(&mut alerts);
    let rules: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(rules, ["mfa_fatigue_pushes"], "{alerts:#?}");
    assert_eq!(
        alerts[0].metrics["sent"],
        authwatch_event::MetricValue::Count(10)
    );
}

#[test]
fn one_alert_per_incident_and_a_new_one_after_quiet() {
    let mut events = campaign("aiko@x.jp", T0, 20, MIN, Outcome::Denied);
    events.extend(campaign(
        "aiko@x.jp",
        T0 + 3 * 60 * MIN,
        6,
        MIN,
        Outcome::Denied,
    ));
    let alerts = run(&mut engine(), &events);
    assert_eq!(alerts.len(), 2);
    assert_ne!(alerts[0].alert_id, alerts[1].alert_id);
}

#[test]
fn stray_activity_below_the_condition_does_not_keep_an_incident_open() {
    // A tenant-wide rule: a tenant always has a few wrong passwords somewhere. Those must not
    // stretch the first spray's incident over the second spray, three hours later.
    let text = r#"
id: tenant_fails
severity: high
cause_class: attack
key: [tenant]
filter: { activity: logon, outcome: failure }
window: 15m
counters:
  n: {}
fire_when: { any: ["n >= 5"] }
suppress: 1h
summary: { en: "x", ja: "x" }
steps: { en: ["x"], ja: ["x"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let fail = |t: i64, user: &str| {
        let mut e = push(
            user,
            t,
            Activity::Logon,
            Outcome::Failure,
            &format!("{user}-{t}"),
        );
        e.factor = Factor::Password;
        e.tenant = "t1".into();
        e
    };
    let spray = |start: i64, tag: &str| -> Vec<AuthEvent> {
        (0..8)
            .map(|i| fail(start + i * MIN, &format!("{tag}{i}@x")))
            .collect()
    };
    let mut events = spray(T0, "a");
    // A typo every 20 minutes for four hours: one within any 15 minutes, never five.
    events.extend((1..=12).map(|i| fail(T0 + 10 * MIN + i * 20 * MIN, "typo@x")));
    // Still within an hour of the first spray's last event: absorbed.
    events.extend(spray(T0 + 50 * MIN, "b"));
    events.extend(spray(T0 + 4 * 60 * MIN + 30 * MIN, "c"));
    events.sort_by_key(|e| e.time);
    let mut engine = pack.engine(EngineLimits::default());
    let alerts = run(&mut engine, &events);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[0].window.start.millis(), T0);
    assert_eq!(alerts[1].last_seen.millis(), T0 + 270 * MIN + 4 * MIN);
    assert_ne!(alerts[0].alert_id, alerts[1].alert_id);

    // A snapshot from before `held` was kept (no such field) still loads, and the run goes on
    // to the same alert.
    let mut engine = pack.engine(EngineLimits::default());
    let first = run(&mut engine, &events[..8]);
    assert_eq!(first.len(), 1);
    let snap = String::from_utf8(engine.snapshot().unwrap()).unwrap();
    assert!(snap.contains("\"held\""), "{snap}");
    let old = snap.replace(&format!(",\"held\":{}", T0 + 7 * MIN), "");
    assert!(!old.contains("\"held\""), "{old}");
    let mut restored = pack.engine(EngineLimits::default());
    assert!(restored.restore(old.as_bytes()).unwrap().is_empty());
    assert_eq!(run(&mut restored, &events[8..]), alerts[1..]);
}

#[test]
fn approval_after_bombing_escalates_and_links_the_fatigue_alert() {
    let mut events = campaign("aiko@x.jp", T0, 7, MIN, Outcome::Denied);
    let last = events.last().unwrap().time;
    events.push(push(
        "aiko@x.jp",
        last + 3 * MIN,
        Activity::MfaVerify,
        Outcome::Success,
        "ok",
    ));
    let alerts = run(&mut engine(), &events);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let (fatigue, success) = (&alerts[0], &alerts[1]);
    assert_eq!(success.rule_id, "mfa_fatigue_success");
    assert_eq!(success.severity, Severity::Critical);
    assert_eq!(success.related, std::slice::from_ref(&fatigue.alert_id));
    assert_eq!(success.window.start, fatigue.window.start);
    assert_eq!(success.evidence, ["ok"]);
}

#[test]
fn approval_long_after_or_without_bombing_is_quiet() {
    let mut events = campaign("aiko@x.jp", T0, 7, MIN, Outcome::Denied);
    let last = events.last().unwrap().time;
    events.push(push(
        "aiko@x.jp",
        last + 45 * MIN,
        Activity::MfaVerify,
        Outcome::Success,
        "late",
    ));
    events.push(push(
        "ken@x.jp",
        last + 46 * MIN,
        Activity::MfaVerify,
        Outcome::Success,
        "k",
    ));
    let alerts = run(&mut engine(), &events);
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.rule_id == "mfa_fatigue_success")
            .count(),
        0
    );
}

#[test]
fn alert_ids_are_deterministic() {
    let events = campaign("aiko@x.jp", T0, 8, MIN, Outcome::Denied);
    let a = run(&mut engine(), &events);
    let b = run(&mut engine(), &events);
    assert_eq!(a, b);
}

#[test]
fn snapshot_and_restore_mid_stream_gives_the_same_alerts() {
    let mut events = campaign("aiko@x.jp", T0, 7, MIN, Outcome::Denied);
    events.push(push(
        "aiko@x.jp",
        T0 + 9 * MIN,
        Activity::MfaVerify,
        Outcome::Success,
        "ok",
    ));
    events.extend(campaign(
        "ken@x.jp",
        T0 + 2 * MIN,
        12,
        40_000,
        Outcome::Timeout,
    ));
    events.sort_by_key(|e| e.time);
    let whole = run(&mut engine(), &events);
    for cut in [3, 9, 14, events.len() - 2] {
        let mut first = engine();
        let mut alerts = run(&mut first, &events[..cut]);
        let snapshot = first.snapshot().unwrap();
        let mut second = engine();
        second.restore(&snapshot).unwrap();
        assert_eq!(second.snapshot().unwrap(), snapshot, "restore is lossless");
        alerts.extend(run(&mut second, &events[cut..]));
        assert_eq!(alerts, whole, "cut at {cut}");
    }
}

#[test]
fn restore_keeps_the_rules_that_did_not_change_and_starts_the_others_empty() {
    // Three denied pushes in the built-in pack's state.
    let mut full = engine();
    let mut out = Vec::new();
    for i in 0..3 {
        let e = push(
            "aiko@x.jp",
            T0 + i * MIN,
            Activity::MfaVerify,
            Outcome::Denied,
            &format!("d{i}"),
        );
        full.on_event(&e, &mut out);
    }
    let snapshot = full.snapshot().unwrap();
    let fatigue = |version: u32, counter: &str| {
        let text = include_str!("../../../rules/mfa_fatigue.yaml")
            .replacen("version: 3", &format!("version: {version}"), 1)
            .replace("unanswered", counter);
        let rules = compile::compile_text(Path::new("x.yaml"), &text).unwrap();
        RulePack::from_rules(rules)
            .unwrap()
            .engine(EngineLimits::default())
    };
    let keys = |e: &Engine| {
        e.stats()
            .iter()
            .find(|(id, _)| *id == "mfa_fatigue")
            .map(|(_, s)| s.keys)
    };
    // The same rule alone: its state is kept; the rules no longer loaded are dropped.
    let mut same = fatigue(3, "unanswered");
    assert_eq!(same.restore(&snapshot).unwrap(), Vec::<String>::new());
    assert_eq!(keys(&same), Some(1));
    // Re-versioned, or its counters changed without a version bump: it starts empty.
    for mut changed in [fatigue(4, "unanswered"), fatigue(3, "refused")] {
        assert_eq!(changed.restore(&snapshot).unwrap(), ["mfa_fatigue"]);
        assert_eq!(keys(&changed), Some(0));
    }
    assert!(matches!(
        engine().restore(b"{\"rules\":[\"a@1\"],\"watermark\":0,\"next_sweep\":0,\"states\":[],\"stats\":[],\"incidents\":[]}"),
        Err(SnapshotError::Inconsistent(_))
    ));
}

#[test]
fn idle_keys_expire_and_capacity_evicts() {
    let limits = EngineLimits {
        max_keys_per_rule: 100,
        sweep_interval_ms: MIN,
    };
    let mut engine = RulePack::builtin().unwrap().engine(limits);
    let mut out = Vec::new();
    for i in 0..250 {
        let e = push(
            &format!("u{i}@x.jp"),
            T0 + i,
            Activity::MfaVerify,
            Outcome::Timeout,
            &format!("e{i}"),
        );
        engine.on_event(&e, &mut out);
    }
    let fatigue_stats = |engine: &Engine| {
        engine
            .stats()
            .into_iter()
            .find(|(id, _)| *id == "mfa_fatigue")
            .unwrap()
            .1
    };
    let fatigue = fatigue_stats(&engine);
    assert!(fatigue.keys <= 100, "{fatigue:?}");
    assert_eq!(fatigue.keys + fatigue.evicted, 250);
    // The allocation-free gauges that metrics read agree with the full counters.
    let gauges: Vec<(String, u64, u64)> = engine
        .state_gauges()
        .map(|(id, keys, evicted)| (id.to_owned(), keys, evicted))
        .collect();
    let stats: Vec<(String, u64, u64)> = engine
        .stats()
        .into_iter()
        .map(|(id, s)| (id.to_owned(), s.keys, s.evicted))
        .collect();
    assert_eq!(gauges, stats);
    assert!(gauges.iter().any(|(_, _, evicted)| *evicted > 0));
    engine.on_watermark(T0 + 2 * 60 * MIN, &mut Vec::new());
    let fatigue = fatigue_stats(&engine);
    assert_eq!(fatigue.keys, 0);
    assert_eq!(fatigue.expired + fatigue.evicted, 250);
}

fn load_err(text: &str) -> String {
    compile::compile_text(Path::new("bad.yaml"), text)
        .unwrap_err()
        .to_string()
}

const GOOD: &str = include_str!("../../../rules/mfa_fatigue.yaml");

/// A directory without rules (wrong path, files with another extension, rules one level down)
/// is an error naming it, not a pack that detects nothing; extensions match in any case.
#[test]
fn a_rules_directory_without_rules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
    std::fs::create_dir(dir.path().join("more")).unwrap();
    std::fs::write(dir.path().join("more/mfa_fatigue.yaml"), GOOD).unwrap();
    let e = RulePack::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no rules"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    std::fs::write(dir.path().join("MFA_FATIGUE.YAML"), GOOD).unwrap();
    let pack = RulePack::load(dir.path()).unwrap();
    assert_eq!(pack.rules().len(), 1);
}

#[test]
fn bad_rules_fail_with_file_line_and_column() {
    let line_of =
        |text: &str, needle: &str| 1 + text.lines().position(|l| l.contains(needle)).unwrap();
    let bad = GOOD.replace("severity: high", "severity: hihg");
    let e = load_err(&bad);
    assert!(
        e.starts_with(&format!("bad.yaml:{}:1:", line_of(&bad, "hihg"))),
        "{e}"
    );
    assert!(e.contains("\"hihg\" is not a valid severity"), "{e}");

    let bad = GOOD.replace("suppress: 30m", "supress: 30m");
    let e = load_err(&bad);
    assert!(
        e.starts_with(&format!("bad.yaml:{}:1:", line_of(&bad, "supress"))),
        "{e}"
    );
    assert!(e.contains("unknown field `supress`"), "{e}");

    let bad = GOOD.replace("unanswered >= 5", "unanswerd >= 5");
    let e = load_err(&bad);
    assert!(e.contains("unknown counter \"unanswerd\""), "{e}");
    assert!(
        e.starts_with(&format!("bad.yaml:{}:7:", line_of(&bad, "unanswerd"))),
        "{e}"
    );

    let e = load_err(&GOOD.replace(
        "outcome: [denied, timeout] }",
        "outcome: [denied, timedout] }",
    ));
    assert!(e.contains("\"timedout\" is not a valid outcome"), "{e}");

    let e = load_err(&GOOD.replace("{src_ip}", "{source}"));
    assert!(e.contains("unknown placeholder {source}"), "{e}");

    let e = load_err(&GOOD.replace("window: 10m", "window: ten minutes"));
    assert!(e.contains("bad duration"), "{e}");

    let e = load_err("id: [unclosed");
    assert!(e.starts_with("bad.yaml:1:"), "{e}");
}

#[test]
fn pack_rejects_duplicates_unknown_references_and_cycles() {
    let a = compile::compile_text(Path::new("a.yaml"), GOOD).unwrap();
    let dup: Vec<_> = a.iter().chain(a.iter()).cloned().collect();
    assert!(
        RulePack::from_rules(dup)
            .unwrap_err()
            .to_string()
            .contains("defined twice")
    );
    let success = include_str!("../../../rules/mfa_fatigue_success.yaml");
    let lonely = compile::compile_text(Path::new("s.yaml"), success).unwrap();
    assert!(
        RulePack::from_rules(lonely)
            .unwrap_err()
            .to_string()
            .contains("unknown rule mfa_fatigue")
    );
    let cyc = success.replace(
        "rules: [mfa_fatigue, mfa_fatigue_slow, mfa_fatigue_ignored]",
        "rules: [mfa_fatigue_success]",
    );
    // The rule's `after` list is spelled out above: a change to it must show here, not leave
    // the rule as it is and the cycle untested.
    assert_ne!(cyc, success, "mfa_fatigue_success's after list changed");
    let cyc = compile::compile_text(Path::new("c.yaml"), &cyc).unwrap();
    assert!(
        RulePack::from_rules(cyc)
            .unwrap_err()
            .to_string()
            .contains("cycle")
    );
}

#[test]
fn settling_alerts_wait_for_the_watermark_and_can_be_vetoed() {
    let text = r#"
id: quiet_then_loud
severity: info
cause_class: device
key: [user]
filter: { activity: mfa_verify }
window: 10m
counters:
  timeouts: { where: { outcome: timeout } }
fire_when: { any: ["timeouts >= 1"] }
settle: 5m
unless: { rules: [loud], within: 10m, on: [ip] }
summary: { en: "x", ja: "x" }
steps: { en: ["x"], ja: ["x"] }
---
id: loud
severity: low
cause_class: network
key: [ip]
filter: { activity: mfa_verify, outcome: timeout }
window: 20m
counters:
  users: { distinct: user }
fire_when: { any: ["users >= 2"] }
summary: { en: "y", ja: "y" }
steps: { en: ["y"], ja: ["y"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let ev =
        |user: &str, t: i64, id: &str| push(user, t, Activity::MfaVerify, Outcome::Timeout, id);

    // Alone, the finding is emitted once the watermark passes its settle time.
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    engine.on_event(&ev("a@x", T0, "1"), &mut out);
    assert!(out.is_empty(), "not before the settle time");
    engine.on_watermark(T0 + 4 * MIN, &mut out);
    assert!(out.is_empty());
    engine.on_watermark(T0 + 5 * MIN, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule_id, "quiet_then_loud");

    // A second user timing out behind the same address within the settle time vetoes it.
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    engine.on_event(&ev("a@x", T0, "1"), &mut out);
    engine.on_event(&ev("b@x", T0 + 3 * MIN, "2"), &mut out);
    engine.flush(&mut out);
    let rules: Vec<&str> = out.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(rules, ["loud"], "the network finding vetoes the device one");

    // The vetoed finding leaves no incident behind: when the user goes on failing from another
    // network, where nothing explains it, that is reported, not absorbed into the vetoed one.
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    let elsewhere = |t: i64, id: &str| {
        let mut e = ev("a@x", t, id);
        e.src.ip = Some("203.0.113.50".parse().unwrap());
        e
    };
    let steps = [
        ev("a@x", T0, "1"),
        ev("b@x", T0 + 3 * MIN, "2"),
        elsewhere(T0 + 6 * MIN, "3"),
        elsewhere(T0 + 10 * MIN, "4"),
        elsewhere(T0 + 14 * MIN, "5"),
    ];
    for e in &steps {
        engine.on_event(e, &mut out);
        engine.on_watermark(e.time, &mut out);
    }
    engine.flush(&mut out);
    let rules: Vec<&str> = out.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(rules, ["loud", "quiet_then_loud"]);
    assert_eq!(
        out[1].last_seen.millis(),
        T0 + 10 * MIN,
        "decided afresh after the veto"
    );
}

#[test]
fn distinct_counts_beyond_the_exact_bound_use_a_sketch() {
    let text = r#"
id: many_users
severity: low
cause_class: attack
key: [ip]
filter: { activity: logon, outcome: failure }
window: 15m
counters:
  users: { distinct: user }
fire_when: { any: ["users >= 5000"] }
summary: { en: "{users}", ja: "{users}" }
steps: { en: ["x"], ja: ["x"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    for i in 0..6000i64 {
        let mut e = push(
            &format!("u{i}@x.jp"),
            T0 + i * 100,
            Activity::Logon,
            Outcome::Failure,
            &format!("e{i}"),
        );
        e.factor = Factor::Password;
        engine.on_event(&e, &mut out);
    }
    // The exact set holds 5001 values; the rest is estimated, so the alert fires near 5000.
    assert_eq!(out.len(), 1, "fires once");
    let authwatch_event::MetricValue::Count(n) = out[0].metrics["users"] else {
        panic!()
    };
    assert!((4500..=5600).contains(&n), "{n}");
    // The sketch survives a snapshot.
    let snapshot = engine.snapshot().unwrap();
    let mut restored = pack.engine(EngineLimits::default());
    restored.restore(&snapshot).unwrap();
    assert_eq!(restored.snapshot().unwrap(), snapshot);
}

#[test]
fn min_max_first_last_aggregations() {
    let text = r#"
id: fast_hops
severity: medium
cause_class: attack
key: [user]
filter: { activity: logon, outcome: success }
window: 1h
counters:
  hops: {}
  fastest: { max: context.speed_kmh }
  slowest: { min: context.speed_kmh }
  from: { first: ip }
  to: { last: ip }
fire_when: { all: ["hops >= 3", "fastest > 900"] }
summary: { en: "{user}: {hops} sign-ins, up to {fastest} km/h, from {from} to {to}", ja: "{user}" }
steps: { en: ["x"], ja: ["x"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    for (i, (ip, speed)) in [
        ("192.0.2.1", None),
        ("192.0.2.2", Some(300.0)),
        ("192.0.2.3", Some(2500.0)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = push(
            "aiko@x.jp",
            T0 + i as i64 * MIN,
            Activity::Logon,
            Outcome::Success,
            &format!("e{i}"),
        );
        e.factor = Factor::Password;
        e.src.ip = Some(ip.parse().unwrap());
        e.context.speed_kmh = speed;
        engine.on_event(&e, &mut out);
    }
    assert_eq!(out.len(), 1);
    let a = &out[0];
    assert_eq!(
        a.metrics["fastest"],
        authwatch_event::MetricValue::Real(2500.0)
    );
    assert_eq!(
        a.metrics["slowest"],
        authwatch_event::MetricValue::Real(300.0)
    );
    assert_eq!(
        a.metrics["from"],
        authwatch_event::MetricValue::Text("192.0.2.1".into())
    );
    assert_eq!(
        a.metrics["to"],
        authwatch_event::MetricValue::Text("192.0.2.3".into())
    );
    assert_eq!(
        a.summary.en,
        "aiko@x.jp: 3 sign-ins, up to 2500 km/h, from 192.0.2.1 to 192.0.2.3"
    );

    // first/last hold values, not numbers: comparing them is a load error.
    let bad = text.replace("\"fastest > 900\"", "\"from > 1\"");
    let e = compile::compile_text(Path::new("t.yaml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds a value, not a number"), "{e}");
    // One aggregation per counter, on a field of the right kind.
    let bad = text.replace(
        "{ max: context.speed_kmh }",
        "{ max: context.speed_kmh, distinct: ip }",
    );
    assert!(
        compile::compile_text(Path::new("t.yaml"), &bad)
            .unwrap_err()
            .to_string()
            .contains("choose one of")
    );
    let bad = text.replace("{ max: context.speed_kmh }", "{ max: ip }");
    assert!(
        compile::compile_text(Path::new("t.yaml"), &bad)
            .unwrap_err()
            .to_string()
            .contains("numeric field")
    );
}

#[test]
fn summaries_show_durations_and_times_in_their_own_language() {
    let text = r#"
id: push_burst
severity: low
cause_class: attack
key: [user]
filter: { activity: mfa_verify }
window: 1d6h
counters:
  denied: {}
fire_when: { any: ["denied >= 3"] }
summary:
  en: "{user}: {denied} denials within {window}, {first_seen} to {last_seen}."
  ja: "{user}: {window} 以内に {denied} 件（{first_seen}〜{last_seen}）。"
steps: { en: ["x"], ja: ["x"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let alerts = run(
        &mut pack.engine(EngineLimits::default()),
        &campaign("aiko@x.jp", T0, 3, MIN, Outcome::Denied),
    );
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(
        a.summary.en,
        "aiko@x.jp: 3 denials within 1day 6h, 2026-01-05 09:00:20 UTC to 2026-01-05 09:02:20 UTC."
    );
    assert_eq!(
        a.summary.ja,
        "aiko@x.jp: 1 日 6 時間 以内に 3 件（2026-01-05 09:00:20（UTC）〜2026-01-05 09:02:20（UTC））。"
    );
    // The machine-readable fields keep their exact values.
    assert_eq!(a.first_seen.millis(), T0 + 20_000);
    assert_eq!(a.last_seen.millis(), T0 + 2 * MIN + 20_000);
    let json = serde_json::to_value(a).unwrap();
    assert_eq!(json["last_seen"], "2026-01-05T09:02:20.000Z");
}

#[test]
fn two_incidents_of_one_key_never_share_an_alert_id() {
    // One campaign of denied pushes for 90 minutes; the user approves at +6 and at +80 minutes.
    // Both approvals are compromises, and both take their window's start from the campaign.
    let mut events = campaign("aiko@x.jp", T0, 90, MIN, Outcome::Denied);
    for (minute, id) in [(6, "ok1"), (80, "ok2")] {
        events.push(push(
            "aiko@x.jp",
            T0 + minute * MIN + 30_000,
            Activity::MfaVerify,
            Outcome::Success,
            id,
        ));
    }
    events.sort_by_key(|e| e.time);
    let alerts = run(&mut engine(), &events);
    let success: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule_id == "mfa_fatigue_success")
        .collect();
    assert_eq!(success.len(), 2, "{success:#?}");
    assert_ne!(success[0].alert_id, success[1].alert_id);
    // Still deterministic: the same input gives the same ids.
    assert_eq!(run(&mut engine(), &events), alerts);
}

#[test]
fn a_late_repeat_of_a_value_does_not_move_it_back_in_time() {
    let text = r#"
id: distinct_users
severity: high
cause_class: attack
key: [ip]
filter: { activity: logon, outcome: failure }
window: 10m
counters:
  users: { distinct: user }
fire_when: { all: ["users >= 3"] }
summary: { en: "{users} users from {ip}", ja: "{users} users from {ip}" }
steps: { en: ["x"], ja: ["x"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let fail = |user: &str, t: i64, id: &str| {
        let mut e = push(user, t, Activity::Logon, Outcome::Failure, id);
        e.factor = Factor::Password;
        e
    };
    // a@x at 09:00, then a late a@x from 08:58 (within the allowed lateness), then b and c at
    // 09:09: a@x is still in the 10-minute window through its 09:00 event.
    let events = [
        fail("a@x", T0, "e0"),
        fail("a@x", T0 - 2 * MIN, "late"),
        fail("b@x", T0 + 9 * MIN, "e1"),
        fail("c@x", T0 + 9 * MIN + 30_000, "e2"),
    ];
    let mut engine = pack.engine(EngineLimits::default());
    let mut out = Vec::new();
    for e in &events {
        engine.on_event(e, &mut out);
    }
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(
        out[0].metrics.get("users"),
        Some(&authwatch_event::MetricValue::Count(3))
    );
}

#[test]
fn rules_that_can_never_fire_are_refused() {
    let rule = |id: &str, key: &str, filter: &str, counters: &str, extra: &str| {
        format!(
            "id: {id}\nseverity: info\ncause_class: user\nkey: [{key}]\nfilter: {filter}\n{extra}\
             window: 15m\ncounters: {counters}\nfire_when: {{ any: [\"n >= 1\"] }}\n\
             summary: {{ en: \"x\", ja: \"x\" }}\nsteps: {{ en: [\"x\"], ja: [\"x\"] }}\n"
        )
    };
    let refused = |text: &str, says: &str| {
        let err = compile::compile_text(Path::new("t.yaml"), text)
            .and_then(RulePack::from_rules)
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(err.to_string().contains(says), "{err}");
    };
    // A counter that wants what the filter keeps out.
    refused(
        &rule(
            "a",
            "user",
            "{ outcome: failure }",
            "{ n: { where: { outcome: success } } }",
            "",
        ),
        "can never count",
    );
    // No value left in a filter.
    refused(
        &rule("b", "user", "{ outcome: [] }", "{ n: {} }", ""),
        "can never match",
    );
    refused(
        &rule(
            "c",
            "user",
            "{ context.speed_kmh: { gt: 900, lt: 100 } }",
            "{ n: {} }",
            "",
        ),
        "can never match",
    );
    refused(
        &rule(
            "d",
            "user",
            "{ outcome: { not: [success, failure, denied, timeout, challenge, blocked] } }",
            "{ n: {} }",
            "",
        ),
        "can never match",
    );
    // A sequence whose `on` fields the rule it follows is not keyed by.
    let first = rule("first", "user", "{ outcome: denied }", "{ n: {} }", "");
    let second = rule(
        "second",
        "ip",
        "{ outcome: success }",
        "{ n: {} }",
        "after: { rules: [first], within: 10m, on: [ip] }\n",
    );
    refused(
        &format!("{first}---\n{second}"),
        "can never find first's incidents",
    );
    // What can match is accepted.
    let ok = rule(
        "e",
        "user",
        "{ activity: logon, context.speed_kmh: { gte: 900 } }",
        "{ n: { where: { outcome: [success, failure] } } }",
        "",
    );
    assert!(compile::compile_text(Path::new("t.yaml"), &ok).is_ok());
}

#[test]
fn a_new_incident_overlapping_the_last_ones_window_gets_its_own_id() {
    // `suppress` (5m) shorter than the window (1h): after five quiet minutes, new failures open
    // a second incident whose window still starts at the first incident's events.
    let text = r#"
id: fails
severity: low
cause_class: user
key: [user]
filter: { activity: logon, outcome: failure }
window: 1h
counters:
  n: {}
fire_when: { any: ["n >= 3"] }
suppress: 5m
summary: { en: "x", ja: "x" }
steps: { en: ["x"], ja: ["x"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let fail = |t: i64, id: &str| {
        let mut e = push("a@x", t, Activity::Logon, Outcome::Failure, id);
        e.factor = Factor::Password;
        e
    };
    let events: Vec<AuthEvent> = [0, 1, 2, 20, 21]
        .iter()
        .map(|m| fail(T0 + m * MIN, &format!("f{m}")))
        .collect();
    let alerts = run(&mut pack.engine(EngineLimits::default()), &events);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(
        alerts[0].window.start, alerts[1].window.start,
        "both windows start at 09:00"
    );
    assert_ne!(alerts[0].alert_id, alerts[1].alert_id);
}

#[test]
fn an_account_is_its_login_within_its_tenant() {
    // Push bombing on `admin` in one tenant; an ordinary approval by `admin` in another.
    let mut events = campaign("admin", T0, 6, MIN, Outcome::Denied);
    for e in &mut events {
        e.tenant = "customers".into();
    }
    let mut approval = push(
        "admin",
        T0 + 7 * MIN,
        Activity::MfaVerify,
        Outcome::Success,
        "corp-ok",
    );
    approval.tenant = "corp".into();
    events.push(approval);
    let alerts = run(&mut engine(), &events);
    let rules: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(rules, ["mfa_fatigue"], "{alerts:#?}");
    // The alert names the account's tenant, from its key.
    assert_eq!(alerts[0].entity.tenant.as_deref(), Some("customers"));
    assert_eq!(alerts[0].entity.user.as_deref(), Some("admin"));
}

#[test]
fn state_saved_with_plain_user_names_starts_empty() {
    // A snapshot as written before user values carried their tenant: no marker in the shapes.
    let mut full = engine();
    let mut out = Vec::new();
    for e in campaign("aiko@x.jp", T0, 3, MIN, Outcome::Denied) {
        full.on_event(&e, &mut out);
    }
    let mut v: serde_json::Value = serde_json::from_slice(&full.snapshot().unwrap()).unwrap();
    for shape in v["shapes"].as_array_mut().unwrap() {
        let old = shape.as_str().unwrap().replace(";user=account", "");
        *shape = old.into();
    }
    let mut restored = engine();
    let empty = restored.restore(&serde_json::to_vec(&v).unwrap()).unwrap();
    // Keyed by user, or counting users: both start empty (every built-in rule does one or
    // the other).
    for id in ["mfa_fatigue", "password_spray", "credential_stuffing"] {
        assert!(empty.iter().any(|r| r == id), "{id}: {empty:?}");
    }
    // Its current form is kept.
    let mut again = engine();
    assert!(again.restore(&full.snapshot().unwrap()).unwrap().is_empty());
}

/// Per-event vetoes (`unless` with `scope: events`) keep each counted event's verdict and bring
/// it up to date when the vetoing incidents change: an incident that opens after an event was
/// counted takes it out of the count, however many other incidents opened meanwhile (more than
/// the engine's change log holds), and after a restore.
#[test]
fn per_event_vetoes_follow_incidents_opened_after_the_events() {
    let text = r#"
id: reported
severity: low
cause_class: attack
key: [user]
filter: { activity: mfa_verify, outcome: timeout }
window: 10m
counters: { n: {} }
fire_when: { any: ["n >= 1"] }
summary: { en: "x", ja: "x" }
steps: { en: ["x"], ja: ["x"] }
---
id: spread
severity: medium
cause_class: attack
key: [ip]
filter: { activity: mfa_challenge }
window: 6h
counters:
  users: { distinct: user }
fire_when: { any: ["users >= 3"] }
unless: { rules: [reported], within: 10m, on: [user], scope: events }
evidence: [users]
summary: { en: "y", ja: "y" }
steps: { en: ["y"], ja: ["y"] }
"#;
    let rules = compile::compile_text(Path::new("t.yaml"), text).unwrap();
    let pack = RulePack::from_rules(rules).unwrap();
    let challenge =
        |user: &str, t: i64| push(user, t, Activity::MfaChallenge, Outcome::Challenge, user);
    let timeout = |user: &str, t: i64| {
        let id = format!("{user}-timeout");
        push(user, t, Activity::MfaVerify, Outcome::Timeout, &id)
    };
    let noise: Vec<AuthEvent> = (0..5_000)
        .map(|i| timeout(&format!("n{i}@x"), T0 + MIN + 1 + i))
        .collect();
    let before = [challenge("a@x", T0), challenge("b@x", T0 + 1)];
    let after = [
        challenge("c@x", T0 + 2 * MIN),
        challenge("d@x", T0 + 3 * MIN),
    ];

    let spread = |with_noise: bool, restore: bool| -> Vec<Vec<String>> {
        let mut engine = pack.engine(EngineLimits::default());
        let mut out = Vec::new();
        for e in &before {
            engine.on_event(e, &mut out);
        }
        // a's events are counted by `spread` before `reported` names a.
        engine.on_event(&timeout("a@x", T0 + MIN), &mut out);
        if with_noise {
            for e in &noise {
                engine.on_event(e, &mut out);
            }
        }
        if restore {
            let snapshot = engine.snapshot().unwrap();
            engine = pack.engine(EngineLimits::default());
            assert!(engine.restore(&snapshot).unwrap().is_empty());
        }
        for e in &after {
            engine.on_event(e, &mut out);
        }
        engine.flush(&mut out);
        out.iter()
            .filter(|a| a.rule_id == "spread")
            .map(|a| a.evidence.clone())
            .collect()
    };
    let expected = vec![vec!["b@x".to_string(), "c@x".into(), "d@x".into()]];
    assert_eq!(spread(false, false), expected, "a is left out, d decides");
    assert_eq!(spread(true, false), expected, "past the change log");
    assert_eq!(spread(false, true), expected, "after a restore");
    assert_eq!(spread(true, true), expected);
}

/// How far back a rule reads is its longest look: the window, an `after`/`unless` incident's
/// `within`, or `settle` (operators size upgrades and restores by it, `authwatch rules list`).
#[test]
fn a_rules_history_is_its_longest_look_back() {
    let pack = RulePack::builtin().unwrap();
    let history = |id: &str| {
        let rule = pack.rules().iter().find(|r| r.id == id).unwrap();
        (rule.window_ms, rule.history_ms())
    };
    assert_eq!(
        history("credential_compromise"),
        (MIN, 180 * MIN),
        "after.within"
    );
    assert_eq!(
        history("triage_user_mistake"),
        (15 * MIN, 360 * MIN),
        "unless.within"
    );
    assert_eq!(
        history("risk_policy_block"),
        (60 * MIN, 120 * MIN),
        "settle"
    );
    assert_eq!(
        history("brute_force"),
        (30 * MIN, 30 * MIN),
        "the window alone"
    );
}
