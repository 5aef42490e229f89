//! Regression tests of an account's incident taking a later, more severe action: a milder
//! earlier action (notify, revoke sessions) must not make the account's next alert, whose
//! policy entry suspends, a `duplicate` for `incident_ttl`.

use crate::support::{
    Answer, MINUTE, Server, T0, alert, config, count, okta, okta_answer, responder, secret_file,
};
use authwatch_event::Severity;
use authwatch_pipeline::config::{RespondPolicy, RespondTarget, ResponseAction};
use authwatch_respond::Decision;
use serde_json::json;

fn entry(rules: &[&str], min: Severity, actions: &[ResponseAction]) -> RespondPolicy {
    RespondPolicy {
        rules: rules.iter().map(|r| (*r).to_owned()).collect(),
        min_severity: min,
        actions: actions.to_vec(),
    }
}

pub fn okta_config(
    dir: &std::path::Path,
    server: &Server,
    policy: Vec<RespondPolicy>,
) -> authwatch_pipeline::config::RespondConfig {
    let mut c = config(dir, RespondTarget::Okta);
    c.okta.base_url = Some(server.url.clone());
    c.okta.token = secret_file(dir, "okta", "okta-test-token");
    c.pager.url = Some(format!("{}/page", server.url));
    c.policy = policy;
    c
}

/// The policy of the finding: suspension for the severe rules, a notification for anything
/// `high`.
fn notify_then_suspend() -> Vec<RespondPolicy> {
    use ResponseAction::{Notify, RevokeSessions, Suspend};
    vec![
        entry(
            &["mfa_fatigue_success", "credential_compromise"],
            Severity::Critical,
            &[Suspend, RevokeSessions],
        ),
        entry(&[], Severity::High, &[Notify]),
    ]
}

fn decisions(
    records: &[authwatch_respond::AuditRecord],
) -> Vec<(ResponseAction, Decision, Option<String>)> {
    records
        .iter()
        .map(|r| {
            (
                r.unmapped.action,
                r.unmapped.decision,
                r.unmapped.reason.clone(),
            )
        })
        .collect()
}

fn high(rule: &str, account: &str, time_ms: i64) -> authwatch_event::Alert {
    let mut a = alert(rule, account, None, time_ms);
    a.severity = Severity::High;
    a
}

const SUSPEND_BOB: &str = "POST /api/v1/users/id-bob/lifecycle/suspend";
const REVOKE_BOB: &str = "DELETE /api/v1/users/id-bob/sessions?oauthTokens=true";

/// Found by review: the `mfa_fatigue` alert's notification opened bob's incident, and the
/// `mfa_fatigue_success` alert five minutes later was recorded `duplicate`: bob was never
/// suspended within `incident_ttl`.
#[tokio::test]
async fn a_notification_does_not_hold_back_the_accounts_suspension() {
    use ResponseAction::{Notify, RevokeSessions, Suspend};
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server, notify_then_suspend());
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&high("mfa_fatigue", "bob@example.com", T0))
        .await
        .unwrap();
    assert_eq!(decisions(&out), vec![(Notify, Decision::Executed, None)]);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "bob@example.com",
            None,
            T0 + 5 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (Suspend, Decision::Executed, None),
            (RevokeSessions, Decision::Executed, None)
        ],
        "{out:#?}"
    );
    // Now everything the policy can ask is done: the account's next alerts are duplicates.
    for (i, rule) in ["credential_compromise", "mfa_fatigue"].iter().enumerate() {
        let out = r
            .handle(&alert(
                rule,
                "bob@example.com",
                None,
                T0 + (10 + i as i64) * MINUTE,
            ))
            .await
            .unwrap();
        assert_eq!(
            out.iter().map(|r| r.unmapped.decision).collect::<Vec<_>>(),
            vec![Decision::Duplicate],
            "{rule}: {out:#?}"
        );
    }
    assert_eq!(count(&server, SUSPEND_BOB), 1);
    assert_eq!(count(&server, REVOKE_BOB), 1);
}

/// Found by review: `brute_force` revoked bob's sessions, and `credential_compromise` (suspend,
/// revoke sessions) was a `duplicate`. Only the missing suspension is carried out; the
/// sessions are not revoked twice, which the audit says.
#[tokio::test]
async fn revoked_sessions_do_not_hold_back_the_accounts_suspension() {
    use ResponseAction::{RevokeSessions, Suspend};
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = vec![
        entry(&["brute_force"], Severity::Critical, &[RevokeSessions]),
        entry(
            &["credential_compromise"],
            Severity::Critical,
            &[Suspend, RevokeSessions],
        ),
    ];
    let c = okta_config(dir.path(), &server, policy);
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("brute_force", "bob@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(RevokeSessions, Decision::Executed, None)]
    );
    let out = r
        .handle(&alert(
            "credential_compromise",
            "bob@example.com",
            None,
            T0 + 5 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (
                RevokeSessions,
                Decision::Duplicate,
                Some("same_incident".to_owned())
            ),
            (Suspend, Decision::Executed, None),
        ],
        "{out:#?}"
    );
    assert_eq!(count(&server, SUSPEND_BOB), 1);
    assert_eq!(count(&server, REVOKE_BOB), 1);
}

/// The missing actions go through the same limits as any: over the global limit they queue
/// (and go out when a token comes back), and a restart takes back both tokens the account's
/// incident spent.
#[tokio::test]
async fn an_escalation_takes_a_token_and_a_restart_takes_it_back() {
    use ResponseAction::{Notify, Suspend};
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server, notify_then_suspend());
    c.limits.global_actions = 2;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&high("mfa_fatigue", "bob@example.com", T0))
        .await
        .unwrap();
    assert_eq!(decisions(&out), vec![(Notify, Decision::Executed, None)]);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "bob@example.com",
            None,
            T0 + 1,
        ))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Executed, "{out:#?}");
    // Both tokens are spent: after a restart carol's suspension waits.
    let snapshot = r.snapshot().unwrap();
    let (mut next, _, _) = responder(&c);
    next.restore(&snapshot).unwrap();
    let out = next
        .handle(&alert(
            "mfa_fatigue_success",
            "carol@example.com",
            None,
            T0 + 2,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Suspend, Decision::Queued, Some("rate_limited".to_owned()))],
        "{out:#?}"
    );
    // And an escalation over the limit queues like any action.
    let out = next
        .handle(&high("mfa_fatigue", "dave@example.com", T0 + 3))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Notify, Decision::Queued, Some("rate_limited".to_owned()))],
        "{out:#?}"
    );
    assert_eq!(count(&server, SUSPEND_BOB), 1);
}

/// A state saved before incidents recorded their actions: what the incident covered is
/// unknown, so it holds the account against every action, as it did.
#[tokio::test]
async fn an_older_incident_without_its_actions_still_holds_the_account() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server, notify_then_suspend());
    let key = json!({"tenant": "", "account": "bob@example.com"});
    let old = json!({"version": 1, "state": {
        "incidents": [[key, {"alert_id": "a-1", "rule_id": "mfa_fatigue",
                             "opened_ms": T0, "status": "executed", "acted_ms": T0,
                             "pending_id": null, "mode": "automatic"}]],
        "queue": [],
        "breaker": {"failures": 0, "open_until_ms": null},
        "last_page_ms": null, "clock_ms": T0}});
    let (mut r, _, _) = responder(&c);
    r.restore(&serde_json::to_vec(&old).unwrap()).unwrap();
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "bob@example.com",
            None,
            T0 + MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        out.iter().map(|r| r.unmapped.decision).collect::<Vec<_>>(),
        vec![Decision::Duplicate],
        "{out:#?}"
    );
    assert!(server.lines().is_empty(), "{:?}", server.lines());
    // Saved again, the incident says what it covers no more than it knew.
    let saved: serde_json::Value = serde_json::from_slice(&r.snapshot().unwrap()).unwrap();
    assert!(
        saved["state"]["incidents"][0][1].get("actions").is_none(),
        "{saved}"
    );
}

/// Found by review: a failed escalation reopened the whole incident. bob's notification stood,
/// the suspension five minutes later failed (403), and the account's next alerts were decided
/// afresh: a second notification, sessions revoked again. Now the incident keeps what was done
/// and only the failed suspension is tried again.
#[tokio::test]
async fn a_failed_suspension_is_tried_again_alone() {
    use ResponseAction::{Notify, RevokeSessions, Suspend};
    let server = Server::start(|seen, n| {
        if seen.line() == SUSPEND_BOB && n == 0 {
            return Answer::Status(403);
        }
        okta_answer(seen)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server, notify_then_suspend());
    let (mut r, _, _) = responder(&c);
    let page = "POST /page";

    let out = r
        .handle(&high("mfa_fatigue", "bob@example.com", T0))
        .await
        .unwrap();
    assert_eq!(decisions(&out), vec![(Notify, Decision::Executed, None)]);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "bob@example.com",
            None,
            T0 + 5 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (
                Suspend,
                Decision::Failed,
                Some("provider_refused".to_owned())
            ),
            (RevokeSessions, Decision::Executed, None),
        ]
    );

    // Another high alert: the notification was made, it is not made again.
    let out = r
        .handle(&high(
            "mfa_fatigue_slow",
            "bob@example.com",
            T0 + 8 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(
            Notify,
            Decision::Duplicate,
            Some("same_incident".to_owned())
        )]
    );
    // The next critical alert: the failed suspension alone is tried again.
    let out = r
        .handle(&alert(
            "credential_compromise",
            "bob@example.com",
            None,
            T0 + 10 * MINUTE,
        ))
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .filter(|rec| rec.unmapped.decision == Decision::Executed)
            .map(|rec| rec.unmapped.action)
            .collect::<Vec<_>>(),
        vec![Suspend],
        "{:?}",
        decisions(&out)
    );
    assert_eq!(count(&server, SUSPEND_BOB), 2);
    assert_eq!(count(&server, REVOKE_BOB), 1);
    assert_eq!(count(&server, page), 1, "{:?}", server.lines());
}
