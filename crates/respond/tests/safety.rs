//! Regression tests of the response-safety review: an alert's tenant, provider aliases and the
//! identity a lookup returns, the mode queued actions were decided in, retries of an
//! unavailable provider, and the bound on actions waiting for approval.

use crate::support::{Answer, Server, T0, alert, config, decisions, okta, responder, secret_file};
use authwatch_pipeline::config::{RespondMode, RespondTarget, ResponseAction};
use authwatch_respond::{Decision, Responder, ResponseClock};
use serde_json::json;
use std::time::Duration;

fn okta_config(
    dir: &std::path::Path,
    server: &Server,
) -> authwatch_pipeline::config::RespondConfig {
    let mut c = config(dir, RespondTarget::Okta);
    c.okta.base_url = Some(server.url.clone());
    c.okta.token = secret_file(dir, "okta", "okta-test-token");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    c
}

/// A Keycloak adapter serves its realm: an alert from another tenant naming a login that also
/// exists in the realm (`admin` in `customers` vs `admin` in `corp`) must not touch the realm's
/// account, and spends no rate-limit token.
#[tokio::test]
async fn an_alert_from_a_tenant_the_target_does_not_serve_is_refused_without_a_call() {
    let server = Server::start(|seen, _| {
        let t = seen.target.as_str();
        if t.ends_with("/token") {
            return Answer::Json(200, json!({"access_token": "kc", "expires_in": 60}));
        }
        match (seen.method.as_str(), t) {
            ("GET", "/admin/realms/corp/users?username=admin&exact=true") => Answer::Json(
                200,
                json!([{"id": "kc-admin", "username": "admin", "enabled": true}]),
            ),
            ("GET", "/admin/realms/corp/users?username=carol&exact=true") => Answer::Json(
                200,
                json!([{"id": "kc-carol", "username": "carol", "enabled": true}]),
            ),
            ("GET", t) if t.contains("/groups") => Answer::Json(200, json!([])),
            ("PUT", _) => Answer::Status(204),
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Keycloak);
    c.keycloak.base_url = Some(server.url.clone());
    c.keycloak.realm = Some("corp".to_owned());
    c.keycloak.client_secret = secret_file(dir.path(), "kc", "kc-secret");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    c.limits.global_actions = 1;
    let (mut r, audit, _) = responder(&c);

    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "admin",
            Some("customers"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Refused, Some("tenant_mismatch".to_owned()))]
    );
    assert!(server.lines().is_empty(), "{:?}", server.lines());
    let rec = &out[0];
    assert_eq!(rec.class_uid, 3001);
    assert_eq!(rec.status_id, 99);
    assert_eq!(rec.user.org.as_deref(), Some("customers"));
    assert!(rec.status_detail.contains("corp"), "{}", rec.status_detail);

    // The realm's own tenant still acts, with the one global token the refusal did not take.
    let out = r
        .handle(&alert("mfa_fatigue_success", "carol", Some("corp"), T0))
        .await
        .unwrap();
    assert_eq!(decisions(&out), vec![(Decision::Executed, None)]);
    assert!(
        !server.lines().iter().any(|l| l.contains("kc-admin")),
        "{:?}",
        server.lines()
    );
    assert_eq!(audit.records().len(), 2);
}

/// `GET /api/v1/users/me` is the API token's owner: the alias is never looked up.
#[tokio::test]
async fn okta_never_resolves_the_me_alias() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server);
    for name in ["me", "ME", " Me "] {
        let (mut r, _, _) = responder(&c);
        let out = r
            .handle(&alert("mfa_fatigue_success", name, None, T0))
            .await
            .unwrap();
        assert_eq!(
            decisions(&out),
            vec![(Decision::Refused, Some("identity_mismatch".to_owned()))],
            "{name}"
        );
    }
    assert!(server.lines().is_empty(), "{:?}", server.lines());
}

/// Whatever the provider resolves a name to, the account acted on must be the alert's: its
/// login (Okta), UPN (Entra) or username (Keycloak) or its id, ignoring case.
#[tokio::test]
async fn a_lookup_that_returns_another_account_is_refused() {
    // Okta: the login, in another case, is the account.
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server);
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "Alice@Example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(decisions(&out), vec![(Decision::Executed, None)]);

    // A short name Okta resolves to another login, and an answer without a login.
    let server = Server::start(
        |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("GET", "/api/v1/users/carol") => Answer::Json(
                200,
                json!({"id": "00uC", "status": "ACTIVE",
                       "profile": {"login": "carol.admin@example.com"}}),
            ),
            ("GET", "/api/v1/users/dave@example.com") => {
                Answer::Json(200, json!({"id": "00uD", "status": "ACTIVE"}))
            }
            ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server);
    let (mut r, _, _) = responder(&c);
    for name in ["carol", "dave@example.com"] {
        let out = r
            .handle(&alert("mfa_fatigue_success", name, None, T0))
            .await
            .unwrap();
        assert_eq!(
            decisions(&out),
            vec![(Decision::Refused, Some("identity_mismatch".to_owned()))],
            "{name}"
        );
    }
    assert!(server.seen().iter().all(|s| s.method == "GET"));

    // Graph: the UPN returned is not the one asked for.
    let server = Server::start(|seen, _| {
        let t = seen.target.as_str();
        if t.ends_with("/token") {
            return Answer::Json(200, json!({"access_token": "g", "expires_in": 600}));
        }
        match (seen.method.as_str(), t) {
            ("GET", t) if t.starts_with("/v1.0/users/erin@example.com?") => Answer::Json(
                200,
                json!({"id": "g-1", "userPrincipalName": "frank@example.com",
                       "accountEnabled": true}),
            ),
            ("GET", t) if t.contains("transitiveMemberOf") => {
                Answer::Json(200, json!({"value": []}))
            }
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Graph);
    c.graph.tenant_id = Some("dir-1".to_owned());
    c.graph.client_id = Some("app".to_owned());
    c.graph.client_secret = secret_file(dir.path(), "g", "s");
    c.graph.authority = server.url.clone();
    c.graph.api_url = format!("{}/v1.0", server.url);
    c.policy[0].actions = vec![ResponseAction::Suspend];
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "erin@example.com",
            Some("dir-1"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Refused, Some("identity_mismatch".to_owned()))]
    );
    assert!(server.seen().iter().all(|s| s.method != "PATCH"));

    // Keycloak: an e-mail two accounts share names neither.
    let server = Server::start(|seen, _| {
        let t = seen.target.as_str();
        if t.ends_with("/token") {
            return Answer::Json(200, json!({"access_token": "kc", "expires_in": 60}));
        }
        match (seen.method.as_str(), t) {
            ("GET", "/admin/realms/corp/users?username=ops%40corp.example&exact=true") => {
                Answer::Json(200, json!([]))
            }
            ("GET", "/admin/realms/corp/users?email=ops%40corp.example&exact=true") => {
                Answer::Json(
                    200,
                    json!([{"id": "k-1", "username": "root", "email": "ops@corp.example",
                            "enabled": true},
                           {"id": "k-2", "username": "ann", "email": "ops@corp.example",
                            "enabled": true}]),
                )
            }
            ("GET", t) if t.contains("/groups") => Answer::Json(200, json!([])),
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Keycloak);
    c.keycloak.base_url = Some(server.url.clone());
    c.keycloak.realm = Some("corp".to_owned());
    c.keycloak.client_secret = secret_file(dir.path(), "kc", "kc-secret");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "ops@corp.example",
            Some("corp"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Refused, Some("identity_mismatch".to_owned()))]
    );
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.method == "GET" || s.target.ends_with("/token"))
    );
}

/// Dry-run decides and changes nothing, also later: an alert over the limit in dry-run is not
/// queued, so a restart in automatic mode from that state has nothing to carry out.
#[tokio::test]
async fn actions_decided_in_dry_run_are_never_carried_out_after_a_switch_to_automatic() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::DryRun;
    c.limits.global_actions = 1;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::DryRun);
    let out = r
        .handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::DryRun, Some("rate_limited".to_owned()))],
        "{}",
        out[0].status_detail
    );
    assert_eq!(r.queued(), 0);
    let snapshot = r.snapshot().unwrap();

    c.mode = RespondMode::Automatic;
    let (mut live, _, clock) = responder(&c);
    live.restore(&snapshot).unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    assert!(live.tick().await.unwrap().is_empty());
    assert!(
        server.seen().iter().all(|s| s.method == "GET"),
        "{:?}",
        server.lines()
    );
}

/// An Okta outage: the call fails (a Retry-After beyond `max_retry_after`), the action goes
/// back to the queue not before the time the provider asked for, a human is paged once, and it
/// goes out when the provider is back.
#[tokio::test]
async fn an_unavailable_provider_gets_the_action_again_after_retry_after() {
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = down.clone();
    let server = Server::start(
        move |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("POST", _) if d.load(std::sync::atomic::Ordering::SeqCst) => {
                Answer::WithHeader(429, "retry-after", "600".to_owned())
            }
            ("POST", _) => Answer::Json(200, json!({})),
            ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
            ("GET", "/api/v1/users/alice@example.com") => Answer::Json(
                200,
                json!({"id": "00uA", "status": "ACTIVE",
                       "profile": {"login": "alice@example.com"}}),
            ),
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.pager.url = Some(pager.url.clone());
    let (mut r, _, clock) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (Decision::Failed, Some("provider_unavailable".to_owned())),
            (Decision::Queued, Some("retry_later".to_owned())),
        ]
    );
    assert!(out[1].unmapped.pending_id.is_some());
    assert_eq!(r.queued(), 1);
    let pages = pager.seen();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].json()["kind"], "retry_queued");

    // Not before the provider's 600 s, even with tokens and the provider back.
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::from_secs(300));
    assert!(r.tick().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(301));
    let out = r.tick().await.unwrap();
    assert_eq!(decisions(&out), vec![(Decision::Executed, None)]);
    assert_eq!(r.queued(), 0);
    let suspends = server
        .lines()
        .iter()
        .filter(|l| l.ends_with("/lifecycle/suspend"))
        .count();
    assert_eq!(suspends, 2);
    assert_eq!(pager.seen().len(), 1, "paged once");
}

/// The reviewer's case on Okta: the org serves the tenants listed; an alert of another tenant
/// is refused, and so is one without a tenant unless `""` is listed.
#[tokio::test]
async fn okta_serves_only_the_listed_tenants() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.okta.tenants = vec!["Example".to_owned()];
    let (mut r, _, _) = responder(&c);
    for (tenant, expected) in [
        (
            Some("customers"),
            (Decision::Refused, Some("tenant_mismatch")),
        ),
        (None, (Decision::Refused, Some("tenant_mismatch"))),
        (Some("example"), (Decision::Executed, None)),
    ] {
        let out = r
            .handle(&alert(
                "mfa_fatigue_success",
                "admin@example.com",
                tenant,
                T0,
            ))
            .await
            .unwrap();
        assert_eq!(
            decisions(&out),
            vec![(expected.0, expected.1.map(str::to_owned))],
            "{tenant:?}"
        );
    }
    let lookups: Vec<String> = server.lines();
    assert_eq!(
        lookups.len(),
        3,
        "only the served tenant's alert called: {lookups:?}"
    );
}

/// Rate-limited in automatic mode, then restarted in approval mode: the queued action is not
/// carried out by the queue (approval mode wants a human), but dropped with an audit record,
/// closed in the store, and the account's next alert is decided afresh (waits for a human).
#[tokio::test]
async fn a_queued_action_is_dropped_when_the_mode_changed() {
    let server = okta().await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.limits.global_actions = 1;
    c.pager.url = Some(pager.url.clone());
    let (mut r, _, _) = responder(&c);
    r.handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    let out = r
        .handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Queued);
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let snapshot = r.snapshot().unwrap();
    let pages_before = pager.seen().len();

    c.mode = RespondMode::Approval;
    let (mut next, audit, clock) = responder(&c);
    next.restore(&snapshot).unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let out = next.tick().await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Refused, Some("mode_changed".to_owned()))]
    );
    assert_eq!(out[0].unmapped.pending_id.as_deref(), Some(id.as_str()));
    assert!(
        out[0].status_detail.contains("automatic"),
        "{}",
        out[0].status_detail
    );
    assert_eq!(next.queued(), 0);
    assert_eq!(
        next.store().get(&id).unwrap().status,
        authwatch_respond::PendingStatus::Refused
    );
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.contains("id-bob/lifecycle"))
    );
    let pages = pager.seen();
    assert_eq!(pages.len(), pages_before + 1);
    assert_eq!(pages.last().unwrap().json()["kind"], "actions_dropped");
    let out = next
        .handle(&alert(
            "credential_compromise",
            "bob@example.com",
            None,
            T0 + 2 * 3_600_000 + 1,
        ))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::PendingApproval);
    assert_eq!(audit.records().len(), 2);
}

/// A state saved before queued actions recorded their mode: their mode is unknown (they may have
/// been queued in dry-run), so none is carried out.
#[tokio::test]
async fn a_queued_action_of_unknown_mode_is_never_carried_out() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server);
    let key = json!({"tenant": "", "account": "bob@example.com"});
    let alert_facts = json!({"alert_id": "a-1", "rule_id": "mfa_fatigue_success",
                             "severity": "critical", "tenant": null,
                             "account": "bob@example.com"});
    let old = json!({"version": 1, "state": {
        "incidents": [[key, {"alert_id": "a-1", "rule_id": "mfa_fatigue_success",
                             "opened_ms": T0, "status": "queued", "acted_ms": null,
                             "pending_id": "00000000000000b0"}]],
        "queue": [{"id": "00000000000000b0", "key": key, "alert": alert_facts,
                   "actions": ["suspend"], "queued_ms": T0}],
        "breaker": {"failures": 0, "open_until_ms": null},
        "last_page_ms": null, "clock_ms": T0}});
    let (mut r, _, clock) = responder(&c);
    r.restore(&serde_json::to_vec(&old).unwrap()).unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let out = r.tick().await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Refused, Some("mode_changed".to_owned()))]
    );
    assert!(server.lines().is_empty(), "{:?}", server.lines());
}

/// `respond approve` needs a responder that acts, and an action decided to be acted on: in
/// dry-run nothing is decided (an error; the action still waits); an action queued in dry-run
/// by an older version is refused, never carried out.
#[tokio::test]
async fn approval_needs_a_mode_that_acts_and_an_action_meant_to_act() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    let id = out[0].unmapped.pending_id.clone().unwrap();

    let mut dry = c.clone();
    dry.mode = RespondMode::DryRun;
    let (mut cli, audit, _) = responder(&dry);
    let e = cli.decide(&id, true, "sam").await.unwrap_err();
    assert!(e.to_string().contains("dry_run"), "{e}");
    assert!(audit.records().is_empty());
    assert_eq!(
        r.store().get(&id).unwrap().status,
        authwatch_respond::PendingStatus::AwaitingApproval
    );

    // An entry queued (rate-limited) without its mode, as dry-run used to queue them.
    let mut stale = r.store().get(&id).unwrap();
    stale.id = "00000000000000c0".to_owned();
    stale.status = authwatch_respond::PendingStatus::Queued;
    stale.reason = "rate_limited".to_owned();
    stale.mode = None;
    stale.alert.account = "bob@example.com".to_owned();
    r.store().create(&stale).unwrap();
    let mut automatic = c.clone();
    automatic.mode = RespondMode::Automatic;
    let (mut cli, _, _) = responder(&automatic);
    let (decided, records) = cli.decide(&stale.id, true, "sam").await.unwrap();
    assert_eq!(decided.status, authwatch_respond::PendingStatus::Refused);
    assert_eq!(records[0].unmapped.reason.as_deref(), Some("mode_changed"));
    // The approval-mode entry may be approved under automatic: a human decided it.
    let (decided, _) = cli.decide(&id, true, "sam").await.unwrap();
    assert_eq!(decided.status, authwatch_respond::PendingStatus::Executed);
    let posts: Vec<String> = server
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("POST"))
        .collect();
    assert_eq!(posts, ["POST /api/v1/users/id-alice/lifecycle/suspend"]);
}

/// Approvals are not rate-limited, so what waits for a human is bounded: beyond
/// `max_pending` new actions are refused (audited) and a human is paged; decisions taken in
/// another process make room again.
#[tokio::test]
async fn actions_waiting_for_approval_are_bounded() {
    let server = okta().await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    c.limits.max_pending = 2;
    c.pager.url = Some(pager.url.clone());
    c.pager.interval = authwatch_event::DurationText(Duration::ZERO);
    let (mut r, _, _) = responder(&c);
    let mut out = Vec::new();
    for user in ["a", "b", "c"] {
        out.extend(
            r.handle(&alert("mfa_fatigue_success", user, None, T0))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        decisions(&out),
        vec![
            (Decision::PendingApproval, Some("approval".to_owned())),
            (Decision::PendingApproval, Some("approval".to_owned())),
            (Decision::Refused, Some("pending_full".to_owned())),
        ]
    );
    assert_eq!(pager.seen().last().unwrap().json()["kind"], "pending_full");
    assert_eq!(r.store().list().unwrap().len(), 2);
    // A human rejects one (another process): there is room for the next.
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let (mut cli, _, _) = responder(&c);
    cli.decide(&id, false, "sam").await.unwrap();
    let out = r
        .handle(&alert("mfa_fatigue_success", "d", None, T0 + 1))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::PendingApproval);
}

/// Re-queued at most `max_requeues` times: then the action stays failed, and a human approving
/// an action while the provider is down gets it back to approve again later.
#[tokio::test]
async fn retries_are_bounded_and_an_approval_that_fails_can_be_approved_again() {
    let server = Server::start(
        |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("POST", _) => Answer::Status(503),
            ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
            ("GET", t) => {
                let login = t.rsplit('/').next().unwrap().replace("%40", "@");
                Answer::Json(
                    200,
                    json!({"id": "00uX", "status": "ACTIVE", "profile": {"login": login}}),
                )
            }
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.http.max_attempts = 1;
    c.http.max_requeues = 1;
    c.breaker.failures = 100;
    let (mut r, _, clock) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out.last().unwrap().unmapped.decision, Decision::Queued);
    clock.advance(Duration::from_secs(61));
    let out = r.tick().await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Failed, Some("provider_unavailable".to_owned()))]
    );
    assert_eq!(r.queued(), 0);
    let id = out[0].unmapped.pending_id.clone();
    assert!(id.is_none(), "the failure record names no pending action");
    let listed = r.store().list().unwrap();
    assert_eq!(listed[0].status, authwatch_respond::PendingStatus::Failed);

    c.mode = RespondMode::Approval;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let (mut cli, _, _) = responder(&c);
    let (decided, records) = cli.decide(&id, true, "sam").await.unwrap();
    assert_eq!(records[0].unmapped.decision, Decision::Failed);
    assert_eq!(
        decided.status,
        authwatch_respond::PendingStatus::AwaitingApproval
    );
    assert!(
        cli.decide(&id, true, "sam").await.is_ok(),
        "approvable again"
    );
}

/// Found by review: a provider answering `Retry-After: 31536000` queued the action for a year,
/// and the account's incident turned every later attack into a `duplicate` meanwhile.
#[tokio::test]
async fn a_provider_asking_for_a_year_gets_the_action_again_within_the_hour() {
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = down.clone();
    let server = Server::start(
        move |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("POST", _) if d.load(std::sync::atomic::Ordering::SeqCst) => {
                Answer::WithHeader(503, "retry-after", "31536000".to_owned())
            }
            ("POST", _) => Answer::Json(200, json!({})),
            ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
            ("GET", "/api/v1/users/alice@example.com") => Answer::Json(
                200,
                json!({"id": "00uA", "status": "ACTIVE",
                       "profile": {"login": "alice@example.com"}}),
            ),
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = okta_config(dir.path(), &server);
    let (mut r, _, clock) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert!(
        decisions(&out).contains(&(Decision::Queued, Some("retry_later".to_owned()))),
        "{:?}",
        decisions(&out)
    );
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::from_secs(3601));
    let out = r.tick().await.unwrap();
    assert_eq!(decisions(&out), vec![(Decision::Executed, None)]);
}

/// Found by review: an action a human held while the responder restarted in another mode was
/// skipped by the review and carried out by a later drain, in a mode that never decided it.
#[tokio::test]
async fn an_action_held_during_the_review_is_still_dropped_when_the_mode_changed() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.limits.global_actions = 1;
    let (mut r, _, _) = responder(&c);
    r.handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    let out = r
        .handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Queued);
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let snapshot = r.snapshot().unwrap();

    c.mode = RespondMode::Approval;
    let (mut next, _, clock) = responder(&c);
    next.restore(&snapshot).unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    // A human holds it while the restarted responder first reviews its queue.
    let (_, claim) = next.store().claim(&id).unwrap();
    assert!(next.tick().await.unwrap().is_empty());
    drop(claim);
    clock.advance(Duration::from_secs(1));
    let out = next.tick().await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Refused, Some("mode_changed".to_owned()))]
    );
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.contains("id-bob/lifecycle")),
        "carried out in a mode that never decided it"
    );
}

/// Found by review: with `tenants = ["corp", ""]` each name had its own tenant bucket, so the
/// one org got twice its limit (and case variants of a name would have too).
#[tokio::test]
async fn the_names_of_one_org_share_its_tenant_bucket() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.okta.tenants = vec!["example.com".into(), String::new()];
    c.limits.tenant_actions = 1;
    c.limits.global_actions = 100;
    let (mut r, _, _) = responder(&c);
    let first = alert(
        "mfa_fatigue_success",
        "alice@example.com",
        Some("example.com"),
        T0,
    );
    let out = r.handle(&first).await.unwrap();
    assert!(
        out.iter()
            .any(|x| x.unmapped.decision == Decision::Executed),
        "{out:#?}"
    );
    let second = alert("mfa_fatigue_success", "bob@example.com", None, T0);
    let out = r.handle(&second).await.unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Queued, "{out:#?}");
}

/// Found by review: `notify` on a provider target goes to the pager, and a pager that was down
/// opened the provider's circuit, so suspensions queued behind it.
#[tokio::test]
async fn a_pager_outage_does_not_open_the_providers_circuit() {
    let server = okta().await;
    let pager = Server::start(|_, _| Answer::Status(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.policy[0].actions = vec![ResponseAction::Suspend, ResponseAction::Notify];
    c.pager.url = Some(pager.url.clone());
    c.breaker.failures = 1;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert!(
        out.iter().any(|x| x.unmapped.decision == Decision::Failed),
        "the notify failed: {out:#?}"
    );
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "bob@example.com",
            None,
            T0 + 1_000,
        ))
        .await
        .unwrap();
    assert!(
        out.iter()
            .any(|x| x.unmapped.action == ResponseAction::Suspend
                && x.unmapped.decision == Decision::Executed),
        "{out:#?}"
    );
    assert_eq!(r.queued(), 0, "nothing queued behind the pager");
}

/// Found by review: one throttle for every kind of page, so the `approval_needed` page just
/// sent held back the `pending_full` page that says new actions are being refused.
#[tokio::test]
async fn a_full_approval_store_is_paged_even_right_after_another_page() {
    let server = okta().await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    c.limits.max_pending = 1;
    c.pager.url = Some(pager.url.clone());
    let (mut r, _, _) = responder(&c);
    for user in ["a", "b", "c"] {
        r.handle(&alert("mfa_fatigue_success", user, None, T0))
            .await
            .unwrap();
    }
    let kinds: Vec<String> = pager
        .seen()
        .iter()
        .map(|p| p.json()["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["approval_needed", "pending_full"],
        "one of each, once"
    );
}

/// A state saved before the page throttles were kept apart still throttles the shared one.
#[tokio::test]
async fn an_older_state_keeps_its_page_throttle() {
    let server = okta().await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    c.pager.url = Some(pager.url.clone());
    let (mut r, _, _) = responder(&c);
    r.handle(&alert("mfa_fatigue_success", "a", None, T0))
        .await
        .unwrap();
    assert_eq!(pager.seen().len(), 1);
    let mut state: serde_json::Value = serde_json::from_slice(&r.snapshot().unwrap()).unwrap();
    let removed = state
        .as_object_mut()
        .and_then(|o| o.get_mut("state").and_then(|s| s.as_object_mut()))
        .map(|s| s.remove("last_page_by_kind"));
    assert!(removed.flatten().is_some(), "{state:#}");
    let (mut next, _, _) = responder(&c);
    next.restore(&serde_json::to_vec(&state).unwrap()).unwrap();
    next.handle(&alert("mfa_fatigue_success", "b", None, T0 + 1_000))
        .await
        .unwrap();
    assert_eq!(pager.seen().len(), 1, "throttled as before the restart");
}

/// The suspend calls the server received.
fn suspends(server: &Server) -> usize {
    server
        .lines()
        .iter()
        .filter(|l| l.ends_with("/lifecycle/suspend"))
        .count()
}

/// Found by review: after the documented rollout (dry-run, then automatic) an account that had a
/// dry-run incident was not acted on for `incident_ttl`: its next alert was a `duplicate` of a
/// rehearsal.
#[tokio::test]
async fn after_dry_run_the_accounts_next_alert_is_decided_in_the_new_mode() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::DryRun;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::DryRun, Some("dry_run".to_owned()))]
    );
    // Within dry-run, the incident still holds the account (what the audit shows).
    let out = r
        .handle(&alert(
            "credential_compromise",
            "alice@example.com",
            None,
            T0 + 1_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Duplicate, Some("same_incident".to_owned()))]
    );
    let snapshot = r.snapshot().unwrap();

    c.mode = RespondMode::Automatic;
    let (mut live, _, _) = responder(&c);
    live.restore(&snapshot).unwrap();
    let out = live
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            None,
            T0 + 60_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Executed, None)],
        "{out:#?}"
    );
    assert_eq!(suspends(&server), 1);
}

/// Found by review: dry-run recorded the token it rehearsed with as spent, so the first restart
/// in automatic mode took those tokens again and queued real actions dry-run never made room
/// for. A state written so (by an older version) must not count either.
#[tokio::test]
async fn dry_run_leaves_no_token_for_a_restart_to_take_again() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::DryRun;
    c.limits.global_actions = 2;
    let (mut r, _, _) = responder(&c);
    for user in ["alice@example.com", "bob@example.com"] {
        let out = r
            .handle(&alert("mfa_fatigue_success", user, None, T0))
            .await
            .unwrap();
        assert_eq!(out[0].unmapped.decision, Decision::DryRun);
    }
    let snapshot = r.snapshot().unwrap();
    // The same state as an older version wrote it: dry-run incidents with a token time.
    let mut older: serde_json::Value = serde_json::from_slice(&snapshot).unwrap();
    for pair in older["state"]["incidents"].as_array_mut().unwrap() {
        let incident = pair[1].as_object_mut().unwrap();
        assert!(incident["acted_ms"].is_null(), "{incident:?}");
        incident.insert("acted_ms".into(), json!(T0));
        incident.remove("mode");
    }
    let older = serde_json::to_vec(&older).unwrap();

    c.mode = RespondMode::Automatic;
    for state in [snapshot, older] {
        let server_before = suspends(&server);
        let (mut live, _, _) = responder(&c);
        live.restore(&state).unwrap();
        for user in ["carol@example.com", "dave@example.com"] {
            let out = live
                .handle(&alert("mfa_fatigue_success", user, None, T0 + 1_000))
                .await
                .unwrap();
            assert_eq!(decisions(&out), vec![(Decision::Executed, None)], "{user}");
        }
        assert_eq!(suspends(&server), server_before + 2);
    }
}

/// Found by review: after a switch from approval to automatic, an account whose action still
/// waited for a human was never acted on again: every alert was a `duplicate` of the pending
/// approval. Now the pending action is closed (`mode_changed`, so no human approves it into a
/// second action later) and the alert is decided in automatic mode.
#[tokio::test]
async fn an_unanswered_approval_does_not_hold_the_account_after_the_switch_to_automatic() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::PendingApproval);
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let snapshot = r.snapshot().unwrap();

    c.mode = RespondMode::Automatic;
    let (mut live, _, _) = responder(&c);
    live.restore(&snapshot).unwrap();
    let out = live
        .handle(&alert(
            "credential_compromise",
            "alice@example.com",
            None,
            T0 + 60_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (Decision::Refused, Some("mode_changed".to_owned())),
            (Decision::Executed, None),
        ],
        "{out:#?}"
    );
    assert_eq!(out[0].unmapped.pending_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        live.store().get(&id).unwrap().status,
        authwatch_respond::PendingStatus::Refused
    );
    assert!(live.decide(&id, true, "alice-oncall").await.is_err());
    assert_eq!(suspends(&server), 1);
    // The new incident is automatic mode's: the next alert is a duplicate of it.
    let out = live
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            None,
            T0 + 120_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Duplicate, Some("same_incident".to_owned()))]
    );
}

/// Found by review: with `tenants = ["example", ""]` (Okta events without a tenant are the org's)
/// a restart took the tokens of alerts without a tenant back from a bucket `""` no action takes
/// from, so every restart (the Kafka runner restarts the responder after each transient error)
/// refilled the org's bucket.
#[tokio::test]
async fn a_restart_takes_the_org_token_an_alert_without_tenant_spent() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.okta.tenants = vec!["example".into(), String::new()];
    c.limits.tenant_actions = 2;
    let (mut r, _, _) = responder(&c);
    for user in ["u0@example.com", "u1@example.com"] {
        let out = r
            .handle(&alert("mfa_fatigue_success", user, None, T0))
            .await
            .unwrap();
        assert_eq!(decisions(&out), vec![(Decision::Executed, None)], "{user}");
    }
    let snapshot = r.snapshot().unwrap();
    let (mut next, _, _) = responder(&c);
    next.restore(&snapshot).unwrap();
    let out = next
        .handle(&alert(
            "mfa_fatigue_success",
            "u2@example.com",
            Some("example"),
            T0 + 1_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Queued, Some("rate_limited".to_owned()))],
        "{out:#?}"
    );
    assert_eq!(suspends(&server), 2);
}

/// Found by review: `Example` and `example` were one served tenant for matching and buckets but
/// two incidents, so the account was acted on twice.
#[tokio::test]
async fn case_variants_of_a_tenant_are_one_account() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.okta.tenants = vec!["example".into()];
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            Some("Example"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(decisions(&out), vec![(Decision::Executed, None)]);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            Some("example"),
            T0 + 1_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Duplicate, Some("same_incident".to_owned()))]
    );
    assert_eq!(suspends(&server), 1);
    // The audit keeps the tenant as the alert spelled it.
    assert_eq!(out[0].user.org.as_deref(), Some("example"));
}

/// A state saved before tenants were folded has its incident under `Example`: read, it is the
/// account's incident in `example` too (and a Keycloak realm, whose names are case-sensitive,
/// stays as it is).
#[tokio::test]
async fn an_older_state_with_an_unfolded_tenant_is_folded_on_load() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.okta.tenants = vec!["example".into()];
    let key = json!({"tenant": "Example", "account": "alice@example.com"});
    let old = json!({"version": 1, "state": {
        "incidents": [[key, {"alert_id": "a-1", "rule_id": "mfa_fatigue_success",
                             "opened_ms": T0, "status": "executed", "acted_ms": T0,
                             "pending_id": null}]],
        "queue": [],
        "breaker": {"failures": 0, "open_until_ms": null},
        "last_page_ms": null, "clock_ms": T0}});
    let (mut r, _, _) = responder(&c);
    r.restore(&serde_json::to_vec(&old).unwrap()).unwrap();
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            Some("example"),
            T0 + 1_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Duplicate, Some("same_incident".to_owned()))]
    );
    assert!(server.lines().is_empty(), "{:?}", server.lines());
    let saved: serde_json::Value = serde_json::from_slice(&r.snapshot().unwrap()).unwrap();
    assert_eq!(saved["state"]["incidents"][0][0]["tenant"], "example");
}

/// Found by review: Okta's suspend is not idempotent. An attempt that timed out but was carried
/// out made the retry get 400 ("Cannot suspend a user that is not active"), audited as a failed
/// suspension (`provider_refused`) of an account that was suspended. The status read back says
/// which.
#[tokio::test]
async fn a_suspend_that_timed_out_but_was_carried_out_is_not_a_failure() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for carried_out in [true, false] {
        let suspended = std::sync::Arc::new(AtomicBool::new(false));
        let s = suspended.clone();
        let server = Server::start(move |seen, n| {
            let status = if s.load(Ordering::SeqCst) {
                "SUSPENDED"
            } else {
                "ACTIVE"
            };
            match (seen.method.as_str(), seen.target.as_str()) {
                ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
                ("GET", "/api/v1/users/alice@example.com") => Answer::Json(
                    200,
                    json!({"id": "id-alice", "status": status,
                           "profile": {"login": "alice@example.com"}}),
                ),
                ("POST", "/api/v1/users/id-alice/lifecycle/suspend") if n == 0 => {
                    s.store(carried_out, Ordering::SeqCst);
                    Answer::Hang
                }
                ("POST", "/api/v1/users/id-alice/lifecycle/suspend") => Answer::Json(
                    400,
                    json!({"errorCode": "E0000001",
                           "errorSummary": "Api validation failed: Cannot suspend a user that \
                                            is not active"}),
                ),
                other => panic!("unexpected request {other:?}"),
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut c = okta_config(dir.path(), &server);
        c.http.timeout = authwatch_event::DurationText(Duration::from_millis(300));
        let (mut r, _, _) = responder(&c);
        let out = r
            .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
            .await
            .unwrap();
        let expected = if carried_out {
            (Decision::AlreadyDone, Some("already_done".to_owned()))
        } else {
            (Decision::Failed, Some("provider_refused".to_owned()))
        };
        assert_eq!(decisions(&out), vec![expected], "{out:#?}");
        assert_eq!(suspends(&server), 2);
        let lookups = server
            .lines()
            .iter()
            .filter(|l| *l == "GET /api/v1/users/alice@example.com")
            .count();
        assert_eq!(
            lookups,
            2,
            "looked up, then read back: {:?}",
            server.lines()
        );
    }
}

/// The same shape at Keycloak: deleting an MFA credential whose first attempt timed out but was
/// carried out gets 404 on the retry; the credential is gone, which is what was asked.
#[tokio::test]
async fn a_credential_deleted_by_an_unanswered_attempt_is_not_a_failure() {
    let server = Server::start(|seen, n| {
        let t = seen.target.as_str();
        if t.ends_with("/token") {
            return Answer::Json(200, json!({"access_token": "kc", "expires_in": 60}));
        }
        match (seen.method.as_str(), t) {
            ("GET", "/admin/realms/corp/users?username=carol&exact=true") => Answer::Json(
                200,
                json!([{"id": "kc-carol", "username": "carol", "enabled": true}]),
            ),
            ("GET", t) if t.contains("/groups") => Answer::Json(200, json!([])),
            ("GET", "/admin/realms/corp/users/kc-carol/credentials") => Answer::Json(
                200,
                json!([{"id": "cred-pw", "type": "password"}, {"id": "cred-otp", "type": "otp"}]),
            ),
            ("DELETE", "/admin/realms/corp/users/kc-carol/credentials/cred-otp") if n == 0 => {
                Answer::Hang
            }
            ("DELETE", "/admin/realms/corp/users/kc-carol/credentials/cred-otp") => {
                Answer::Json(404, json!({"error": "Credential not found"}))
            }
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Keycloak);
    c.keycloak.base_url = Some(server.url.clone());
    c.keycloak.realm = Some("corp".to_owned());
    c.keycloak.client_secret = secret_file(dir.path(), "kc", "kc-secret");
    c.policy[0].actions = vec![ResponseAction::ResetMfa];
    c.http.timeout = authwatch_event::DurationText(Duration::from_millis(300));
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "carol", Some("corp"), T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(Decision::Executed, None)],
        "{out:#?}"
    );
    let deletes = server
        .lines()
        .iter()
        .filter(|l| l.starts_with("DELETE"))
        .count();
    assert_eq!(deletes, 2);
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Found by review: a failed call's audit detail (and the `paging failed` log) named the whole
/// URL, and webhook and pager URLs (Slack, Teams) carry their credentials in the path or query.
#[tokio::test]
async fn a_failed_call_names_the_host_not_the_url() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!(
        "http://127.0.0.1:{port}/services/T0123/B0456/xoxSECRETpathTOKEN"
    ));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-secret");
    c.http.max_attempts = 1;
    c.http.max_requeues = 0;
    let (mut r, audit, _) = responder(&c);
    r.handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();

    // `notify` on a provider target goes to the pager.
    let okta = okta().await;
    let mut c = okta_config(dir.path(), &okta);
    c.policy[0].actions = vec![ResponseAction::Notify];
    c.pager.url = Some(format!(
        "http://127.0.0.1:{port}/pager/PAGERSECRETpath?token=PAGERSECRETquery"
    ));
    c.http.max_attempts = 1;
    let (mut p, pager_audit, _) = responder(&c);
    p.handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();

    let records: Vec<_> = audit
        .records()
        .into_iter()
        .chain(pager_audit.records())
        .collect();
    let failed: Vec<&str> = records
        .iter()
        .filter(|r| r.unmapped.decision == Decision::Failed)
        .map(|r| r.status_detail.as_str())
        .collect();
    assert_eq!(failed.len(), 3, "{records:#?}");
    for detail in failed {
        assert!(!detail.contains("SECRET"), "{detail}");
        assert!(!detail.contains("/services"), "{detail}");
        assert!(
            detail.contains(&format!("http://127.0.0.1:{port}")),
            "names the host: {detail}"
        );
    }
}

/// Found by review: the responder started with `incident_ttl = "0s"` (no incident lasts, so
/// every alert acts again) and with `notify` on a provider target without a pager (every such
/// alert fails).
#[tokio::test]
async fn a_responder_refuses_to_start_without_incidents_or_with_notify_and_no_pager() {
    let server = okta().await;
    let dir = tempfile::tempdir().unwrap();
    let new = |c: &authwatch_pipeline::config::RespondConfig| {
        Responder::new(c, ResponseClock::event_time(T0), Vec::new()).map(|_| ())
    };
    let mut c = okta_config(dir.path(), &server);
    c.incident_ttl = authwatch_event::DurationText(Duration::ZERO);
    let e = new(&c).unwrap_err().to_string();
    assert!(e.contains("respond.incident_ttl"), "{e}");

    let mut c = okta_config(dir.path(), &server);
    c.policy[0].actions = vec![ResponseAction::Suspend, ResponseAction::Notify];
    let e = new(&c).unwrap_err().to_string();
    assert!(
        e.contains("respond.pager.url") && e.contains("respond.policy[0]"),
        "{e}"
    );
    c.pager.url = Some("http://127.0.0.1:9/page".to_owned());
    new(&c).unwrap();
    // The webhook's receiver gets `notify` itself.
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some("http://127.0.0.1:9/hook".to_owned());
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-secret");
    c.policy[0].actions = vec![ResponseAction::Notify];
    new(&c).unwrap();
}
