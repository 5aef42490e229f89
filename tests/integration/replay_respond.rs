//! `authwatch replay` with a responder configured as in production: mode `automatic` acts only
//! with `--respond-live`, and a policy naming a rule no loaded rule has is refused at start.

use crate::common::authwatch;
use crate::respond::receiver;
use std::path::{Path, PathBuf};
use std::process::Output;

/// An MFA push-fatigue attack that succeeds on each of `users` (native events): six denied
/// pushes a minute apart, then a challenge and an approval — `mfa_fatigue_success`, critical.
fn fatigue_events(path: &Path, users: &[&str]) {
    const T0: i64 = 1_767_600_000_000; // 2026-01-05T08:00:00Z
    let mut lines = Vec::new();
    let mut n = 0;
    for user in users {
        let mut event = |time: i64, activity: &str, outcome: &str| {
            n += 1;
            let mut e = serde_json::json!({
                "time": time, "provider": "okta", "event_id": format!("ev{n:08}"),
                "provider_event_type": "user.authentication.auth_via_mfa",
                "user": {"name": user}, "activity": activity, "factor": "push",
                "outcome": outcome, "src": {"ip": "198.51.100.7"}, "tenant": "example",
            });
            if outcome == "denied" {
                e["reason"] = "push_denied".into();
            }
            (time, e.to_string())
        };
        for i in 0..6 {
            lines.push(event(T0 + i * 60_000, "mfa_verify", "denied"));
        }
        lines.push(event(T0 + 480_000, "mfa_challenge", "challenge"));
        lines.push(event(T0 + 490_000, "mfa_verify", "success"));
    }
    lines.sort();
    let text: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

/// A configuration in mode `automatic`, acting through a signed webhook at `url`.
fn write_config(dir: &Path, url: &str, policy: &str) -> PathBuf {
    std::fs::write(dir.join("hook-secret"), "integration-secret\n").unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[input]\nmax_future_skew = \"0s\"\n\
             [respond]\nenabled = true\nmode = \"automatic\"\ntarget = \"webhook\"\n\
             state_dir = \"{state}\"\n\
             [respond.webhook]\nurl = \"{url}\"\nsecret = {{ file = \"{secret}\" }}\n{policy}",
            state = dir.join("state").display(),
            secret = dir.join("hook-secret").display(),
        ),
    )
    .unwrap();
    path
}

fn replay(config: &Path, events: &Path, extra: &[&str]) -> Output {
    authwatch()
        .env_remove("AUTHWATCH_CONFIG")
        .arg("replay")
        .arg(events)
        .arg("--config")
        .arg(config)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("authwatch runs")
}

fn decisions(audit: &Path) -> Vec<String> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["unmapped"]["decision"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Found by review: `replay` with the live configuration (mode `automatic`) made real provider
/// calls paced only by the alerts' own times, so replaying last month suspended a month's worth
/// of accounts within seconds. Now it rehearses, says so, and acts only with `--respond-live`
/// — and the rehearsal's incidents do not hold the accounts when it does.
#[test]
fn replay_in_automatic_mode_is_a_dry_run_without_respond_live() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver();
    let config = write_config(dir.path(), &url, "");
    let events = dir.path().join("events.jsonl");
    fatigue_events(&events, &["alice@example.com", "bob@example.com"]);
    let audit = dir.path().join("state/audit.jsonl");

    let out = replay(&config, &events, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing sent without --respond-live"
    );
    assert!(
        stderr.contains("respond (DryRun, not the configured Automatic")
            && stderr.contains("--respond-live"),
        "{stderr}"
    );
    let rehearsed = decisions(&audit);
    assert_eq!(
        rehearsed.len(),
        4,
        "2 accounts × suspend, revoke: {rehearsed:?}"
    );
    assert!(rehearsed.iter().all(|d| d == "dry_run"), "{rehearsed:?}");

    let out = replay(&config, &events, &["--respond-live"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("respond (Automatic)"), "{stderr}");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 4, "{sent:?}");
    let acted: Vec<String> = decisions(&audit).split_off(rehearsed.len());
    assert!(acted.iter().all(|d| d == "executed"), "{acted:?}");
}

/// Found by review: a policy naming a rule id no loaded rule has (a typo) was accepted, and
/// automatic mode then silently never acted.
#[test]
fn replay_refuses_a_policy_naming_an_unknown_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver();
    let config = write_config(
        dir.path(),
        &url,
        "[[respond.policy]]\nrules = [\"mfa_fatigue_sucess\"]\nmin_severity = \"critical\"\n\
         actions = [\"suspend\"]\n",
    );
    let events = dir.path().join("events.jsonl");
    fatigue_events(&events, &["alice@example.com"]);
    // Refused whatever the replay would do with the mode: the typo is in the configuration.
    let out = replay(&config, &events, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#""mfa_fatigue_sucess" (did you mean "mfa_fatigue_success"?)"#),
        "{stderr}"
    );
    assert!(seen.lock().unwrap().is_empty());
}
