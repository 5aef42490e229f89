//! `authwatch explain`: the help-desk view of one user over a generated stream whose labels say
//! why each injected failure happened.
//!
//! An unknown user is an answer, not an error: exit 0, "No events" in text, `found: false` in
//! JSON.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Labels of the generated stream: JSON lines `{category, entity: {user|ip|tenant}, note, …}`.
fn labels(path: &Path) -> Vec<Value> {
    json_lines(path)
}

fn label_user(label: &Value) -> Option<&str> {
    label["entity"]["user"].as_str()
}

/// A user whose only labels are device-class triage findings, so the expected cause is unambiguous.
fn device_user(labels: &[Value]) -> String {
    let notes_of = |user: &str| -> Vec<String> {
        labels
            .iter()
            .filter(|l| label_user(l) == Some(user))
            .map(|l| format!("{}|{}", l["category"], l["note"].as_str().unwrap_or("")))
            .collect()
    };
    labels
        .iter()
        .filter(|l| l["category"] == "mfa_triage")
        .filter(|l| l["note"].as_str().is_some_and(|n| n.starts_with("device:")))
        .filter_map(label_user)
        .find(|u| {
            notes_of(u)
                .iter()
                .all(|n| n.starts_with("\"mfa_triage\"|device:"))
        })
        .expect("the generated stream has a device triage user")
        .to_owned()
}

fn fatigue_user(labels: &[Value]) -> String {
    labels
        .iter()
        .filter(|l| l["category"] == "mfa_fatigue")
        .find_map(label_user)
        .expect("the generated stream has an MFA fatigue victim")
        .to_owned()
}

fn stream(dir: &Path) -> (PathBuf, Vec<Value>) {
    let (events, labels_path) = generate(dir, 120, 3, 7);
    (events, labels(&labels_path))
}

fn explain(events: &Path, user: &str, extra: &[&str]) -> String {
    let out = run_ok(
        authwatch()
            .args(["explain", "--user", user])
            .args(extra)
            .arg(events),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The cause classes of the JSON report's groups.
fn classes(report: &Value) -> Vec<&str> {
    report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["cause_class"].as_str().unwrap())
        .collect()
}

#[test]
fn device_triage_user_gets_the_device_cause_and_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = stream(dir.path());
    let user = device_user(&labels);
    // Names are matched ignoring case, as the help desk types them.
    let text = explain(&events, &user.to_uppercase(), &[]);
    assert!(
        text.contains(&format!("authwatch explain — {}", user.to_uppercase())),
        "{text}"
    );
    assert!(text.contains("Recent sign-ins"), "{text}");
    assert!(text.contains("Failures by cause"), "{text}");
    assert!(
        text.contains("DEVICE — the user's phone, security key or authenticator"),
        "{text}"
    );
    assert!(text.contains("Next steps:"), "{text}");
    assert!(text.contains("  1. "), "{text}");
    // The triage alert that explains the failures is listed with the user's alerts.
    assert!(text.contains("mfa_triage/triage_"), "{text}");
    assert!(text.contains(" — cause: device — "), "{text}");

    let report: Value = serde_json::from_str(&explain(&events, &user, &["--json"])).unwrap();
    let device = report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["cause_class"] == "device")
        .unwrap_or_else(|| panic!("no device group: {report:#}"));
    let explanation = &device["explanations"][0];
    assert_eq!(explanation["source"], "alert", "{report:#}");
    assert!(
        explanation["rule_id"]
            .as_str()
            .unwrap()
            .starts_with("triage_"),
        "{report:#}"
    );
    assert!(!explanation["steps"].as_array().unwrap().is_empty());
    assert!(!classes(&report).contains(&"attack"), "{report:#}");
}

#[test]
fn fatigue_victim_gets_the_attack_cause_first() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = stream(dir.path());
    let user = fatigue_user(&labels);
    let text = explain(&events, &user, &[]);
    assert!(
        text.contains("ATTACK — someone else is trying to get into the account"),
        "{text}"
    );
    assert!(text.contains("mfa_fatigue — cause: attack"), "{text}");
    assert!(
        text.contains("never to approve an unexpected push"),
        "{text}"
    );

    let report: Value = serde_json::from_str(&explain(&events, &user, &["--json"])).unwrap();
    assert_eq!(classes(&report).first(), Some(&"attack"), "{report:#}");
    let attack = &report["causes"][0];
    assert!(
        attack["explanations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["rule_id"] == "mfa_fatigue"),
        "{report:#}"
    );
    let reasons: Vec<&str> = attack["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| *r == "push_denied" || *r == "push_timeout"),
        "{reasons:?}"
    );
    assert!(
        report["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["category"] == "mfa_fatigue" && a["severity"] == "high"),
        "{report:#}"
    );
}

#[test]
fn japanese_report_and_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = stream(dir.path());
    let user = device_user(&labels);
    let text = explain(&events, &user, &["--lang", "ja"]);
    for expected in [
        "最近のサインイン",
        "原因別の失敗",
        "【端末】",
        "次の対応:",
        "このユーザーに関するアラート",
        "してください。",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    assert!(!text.contains("Failures by cause"), "{text}");

    let report: Value = serde_json::from_str(&explain(
        &events,
        &user,
        &["--json", "--lang", "ja", "--last", "3"],
    ))
    .unwrap();
    assert_eq!(report["found"], true);
    assert_eq!(report["language"], "ja");
    assert_eq!(report["user"], user.as_str());
    assert_eq!(report["recent"].as_array().unwrap().len(), 3);
    let (attempts, successes, failures, lockouts) = (
        report["attempts"].as_u64().unwrap(),
        report["successes"].as_u64().unwrap(),
        report["failures"].as_u64().unwrap(),
        report["lockouts"].as_u64().unwrap(),
    );
    assert_eq!(attempts, successes + failures);
    let grouped: u64 = report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(
        grouped,
        failures + lockouts,
        "every failure and lockout is in exactly one group"
    );
    let device = report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["cause_class"] == "device")
        .unwrap();
    assert_eq!(device["label"], "端末");
    let step = device["explanations"][0]["steps"][0].as_str().unwrap();
    assert!(step.ends_with("ください。"), "{step}");
}

#[test]
fn unknown_user_is_an_answer_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = stream(dir.path());
    let text = explain(&events, "nobody@example.invalid", &[]);
    assert!(
        text.contains("No events for nobody@example.invalid in the input"),
        "{text}"
    );
    // A near miss offers the names that exist.
    let real = fatigue_user(&labels);
    let stem = real.split('@').next().unwrap();
    let text = explain(&events, &format!("{stem}@example.com"), &[]);
    assert!(text.contains("Similar names in the input:"), "{text}");
    assert!(text.contains(&real), "{text}");

    let report: Value =
        serde_json::from_str(&explain(&events, "nobody@example.invalid", &["--json"])).unwrap();
    assert_eq!(report["found"], false);
    assert_eq!(report["events"], 0);
    assert!(report["causes"].as_array().unwrap().is_empty());
    assert!(report["input"]["events"].as_u64().unwrap() > 1000);

    let text = explain(&events, "nobody@example.invalid", &["--lang", "ja"]);
    assert!(text.contains("のイベントはありません"), "{text}");
}

#[test]
fn since_limits_the_period_to_the_end_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = stream(dir.path());
    let user = fatigue_user(&labels);
    let all: Value = serde_json::from_str(&explain(&events, &user, &["--json"])).unwrap();
    let recent: Value =
        serde_json::from_str(&explain(&events, &user, &["--json", "--since", "1h"])).unwrap();
    let (n_all, n_recent) = (
        all["events"].as_u64().unwrap(),
        recent["events"].as_u64().unwrap(),
    );
    assert!(n_recent < n_all, "{n_recent} < {n_all}");
    assert_eq!(
        recent["events_before_since"].as_u64().unwrap() + n_recent,
        n_all
    );
    let out = authwatch()
        .args(["explain", "--user", &user, "--since", "soon"])
        .arg(&events)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}
