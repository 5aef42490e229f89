//! Regression tests of the second response-safety review: redirects, the rate-limit tokens a
//! sweep must not forget, and a durable audit file.

use crate::escalation::okta_config;
use crate::support::{Answer, MINUTE, Server, T0, alert, count, decisions, okta, responder};
use authwatch_event::{DurationText, Severity};
use authwatch_pipeline::config::{RespondPolicy, ResponseAction};
use authwatch_respond::Decision;
use serde_json::json;
use std::time::Duration;

fn suspend_only() -> Vec<RespondPolicy> {
    vec![RespondPolicy {
        rules: vec!["mfa_fatigue_success".to_owned()],
        min_severity: Severity::Critical,
        actions: vec![ResponseAction::Suspend],
    }]
}

/// Found by review: redirects were followed, so a suspension answered `302` to the login page
/// (an expired session at a proxy, a misconfigured base URL) was audited `executed` after the
/// page answered `200`, although nothing was suspended. A redirect is a refusal, and is not
/// followed (the token would go along).
#[tokio::test]
async fn a_redirected_action_is_a_refusal_not_an_execution() {
    let server = Server::start(
        |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("GET", "/login") => Answer::Json(200, json!({"page": "sign in"})),
            ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
            ("GET", "/api/v1/users/bob@example.com") => Answer::Json(
                200,
                json!({"id": "id-bob", "status": "ACTIVE",
                       "profile": {"login": "bob@example.com"}}),
            ),
            ("POST", _) => Answer::WithHeader(302, "location", "/login".to_owned()),
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server, suspend_only());
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Failed, Some("provider_refused".to_owned()))],
        "{out:#?}"
    );
    assert!(
        out[0].status_detail.contains("302"),
        "{}",
        out[0].status_detail
    );
    assert_eq!(count(&server, "GET /login"), 0, "{:?}", server.lines());
    assert_eq!(
        count(&server, "POST /api/v1/users/id-bob/lifecycle/suspend"),
        1,
        "a refusal is not retried"
    );
}

/// Found by review: with `incident_ttl` shorter than a rate-limit period, a sweep forgot the
/// incidents whose tokens were still within the period, and a restart (which takes back only
/// the tokens of incidents in the state) then acted on more accounts than the limit allows.
#[tokio::test]
async fn a_sweep_keeps_the_tokens_a_restart_must_take_back() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server, suspend_only());
    c.incident_ttl = DurationText(Duration::from_secs(60));
    c.limits.global_actions = 2;
    c.max_incidents = 1;
    let (mut r, _, _) = responder(&c);
    for user in ["u0", "u1"] {
        let out = r
            .handle(&alert(
                "mfa_fatigue_success",
                &format!("{user}@example.com"),
                None,
                T0,
            ))
            .await
            .unwrap();
        assert_eq!(decisions(&out), vec![(Decision::Executed, None)], "{user}");
    }
    // Past the ttl (more incidents than max_incidents: this alert sweeps), within the hour.
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "u2@example.com",
            None,
            T0 + 2 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Queued, Some("rate_limited".to_owned()))]
    );
    let snapshot = r.snapshot().unwrap();
    let (mut next, _, _) = responder(&c);
    next.restore(&snapshot).unwrap();
    let out = next
        .handle(&alert(
            "mfa_fatigue_success",
            "u3@example.com",
            None,
            T0 + 3 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Queued, Some("rate_limited".to_owned()))],
        "{out:#?}"
    );
    let suspended = server
        .lines()
        .iter()
        .filter(|l| l.starts_with("POST") && l.ends_with("/lifecycle/suspend"))
        .count();
    assert_eq!(suspended, 2, "{:?}", server.lines());
}
