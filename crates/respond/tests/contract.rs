//! Each adapter against a local server that checks method, path, headers and body, and
//! answers 429 (with Retry-After), 500 or nothing.

use crate::support::{Answer, Server, alert, config, secret_file};
use authwatch_pipeline::config::{KeycloakGrant, RespondMode, RespondTarget, ResponseAction};
use authwatch_respond::{Decision, JsonLinesAudit, MemoryAudit, Responder, ResponseClock};
use serde_json::json;
use std::time::{Duration, Instant};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn responder(
    c: &authwatch_pipeline::config::RespondConfig,
) -> (Responder, MemoryAudit, ResponseClock) {
    let audit = MemoryAudit::default();
    let clock = ResponseClock::event_time(T0);
    let r = Responder::new(c, clock.clone(), vec![Box::new(audit.clone())]).unwrap();
    (r, audit, clock)
}

fn decisions(records: &[authwatch_respond::AuditRecord]) -> Vec<(ResponseAction, Decision)> {
    records
        .iter()
        .map(|r| (r.unmapped.action, r.unmapped.decision))
        .collect()
}

/// An Okta target at `server` (answering [`okta_script`]), its token in `dir`.
fn okta_config(
    dir: &std::path::Path,
    server: &Server,
) -> authwatch_pipeline::config::RespondConfig {
    let mut c = config(dir, RespondTarget::Okta);
    c.okta.base_url = Some(server.url.clone());
    c.okta.token = secret_file(dir, "okta", "okta-test-token");
    c
}

fn okta_script(seen: &crate::support::Seen, _n: usize) -> Answer {
    assert_eq!(seen.header("authorization"), "SSWS okta-test-token");
    assert_eq!(seen.header("accept"), "application/json");
    match (seen.method.as_str(), seen.target.as_str()) {
        ("GET", "/api/v1/users/alice@example.com") => Answer::Json(
            200,
            json!({"id": "00u1", "status": "ACTIVE", "profile": {"login": "alice@example.com"}}),
        ),
        ("GET", "/api/v1/users/root@example.com") => Answer::Json(
            200,
            json!({"id": "00u9", "status": "ACTIVE", "profile": {"login": "root@example.com"}}),
        ),
        ("GET", "/api/v1/users/boss") => Answer::Json(
            200,
            json!({"id": "00u5", "status": "ACTIVE",
                   "profile": {"login": "boss@example.com", "email": "ceo@example.com"}}),
        ),
        ("GET", "/api/v1/users/gone@example.com") => Answer::Json(
            200,
            json!({"id": "00u7", "status": "SUSPENDED", "profile": {"login": "gone@example.com"}}),
        ),
        ("GET", "/api/v1/users/expired@example.com") => Answer::Json(
            200,
            json!({"id": "00u8", "status": "PASSWORD_EXPIRED",
                   "profile": {"login": "expired@example.com"}}),
        ),
        ("GET", "/api/v1/users/00u9/groups") => Answer::Json(
            200,
            json!([{"id": "00g1", "profile": {"name": "Everyone"}},
                   {"id": "00g2", "profile": {"name": "Super Admins"}}]),
        ),
        ("GET", t) if t.ends_with("/groups") => Answer::Json(
            200,
            json!([{"id": "00g1", "profile": {"name": "Everyone"}}]),
        ),
        ("POST", "/api/v1/users/00u1/lifecycle/suspend") => {
            assert!(seen.body.is_empty());
            Answer::Json(200, json!({}))
        }
        ("DELETE", "/api/v1/users/00u1/sessions?oauthTokens=true") => Answer::Status(204),
        ("DELETE", "/api/v1/users/00u7/sessions?oauthTokens=true") => Answer::Status(204),
        ("DELETE", "/api/v1/users/00u8/sessions?oauthTokens=true") => Answer::Status(204),
        other => panic!("unexpected request {other:?}"),
    }
}

/// Okta suspends only `ACTIVE` users: an account whose password expired (which the stolen
/// password can still renew) is refused `not_applicable` without a call, its sessions are
/// still cleared, and the account's next alert is a duplicate. Before, the suspend call failed
/// (400) on every alert again, each taking a rate-limit token.
#[tokio::test]
async fn okta_refuses_to_suspend_an_account_that_is_not_active_once() {
    let server = Server::start(okta_script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.limits.global_actions = 1;
    let memory = MemoryAudit::default();
    let mut r = Responder::new(
        &c,
        ResponseClock::event_time(T0),
        vec![Box::new(memory.clone())],
    )
    .unwrap();

    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "expired@example.com",
            None,
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::Refused),
            (ResponseAction::RevokeSessions, Decision::Executed)
        ]
    );
    assert_eq!(out[0].unmapped.reason.as_deref(), Some("not_applicable"));
    assert!(
        out[0].status_detail.contains("PASSWORD_EXPIRED"),
        "{}",
        out[0].status_detail
    );
    assert_eq!(
        server.lines(),
        vec![
            "GET /api/v1/users/expired@example.com",
            "GET /api/v1/users/00u8/groups",
            "DELETE /api/v1/users/00u8/sessions?oauthTokens=true",
        ]
    );

    // The next alert of the incident: a duplicate, no call, no token (the limit is 1).
    let out = r
        .handle(&alert(
            "credential_compromise",
            "expired@example.com",
            None,
            T0 + 60_000,
        ))
        .await
        .unwrap();
    assert!(
        out.iter()
            .all(|rec| rec.unmapped.decision == Decision::Duplicate),
        "{:?}",
        decisions(&out)
    );
    assert_eq!(server.lines().len(), 3, "{:?}", server.lines());

    // Asked only to suspend: refused once, and a later alert asking the same is a duplicate.
    // The refusal covers the suspension alone: an alert asking to clear the sessions still gets
    // it (a refused incident would cover every action).
    let mut c = okta_config(dir.path(), &server);
    let only = |rule: &str, action| authwatch_pipeline::config::RespondPolicy {
        rules: vec![rule.to_owned()],
        min_severity: authwatch_event::Severity::Critical,
        actions: vec![action],
    };
    c.policy = vec![
        only("mfa_fatigue_success", ResponseAction::Suspend),
        only("credential_compromise", ResponseAction::RevokeSessions),
    ];
    c.state_dir = dir.path().join("state-suspend-only");
    let mut r = Responder::new(&c, ResponseClock::event_time(T0), Vec::new()).unwrap();
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "expired@example.com",
            None,
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Refused)]
    );
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "expired@example.com",
            None,
            T0 + 60_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Duplicate)]
    );
    let out = r
        .handle(&alert(
            "credential_compromise",
            "expired@example.com",
            None,
            T0 + 120_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::RevokeSessions, Decision::Executed)]
    );
}

#[tokio::test]
async fn okta_suspends_and_clears_sessions() {
    let server = Server::start(okta_script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.allow_list.groups = vec!["super admins".to_owned()];
    c.allow_list.users = vec!["boss@example.com".to_owned()];
    c.audit_file = Some(dir.path().join("audit.jsonl"));
    let audit_file = JsonLinesAudit::open(&c.audit_path()).unwrap();
    let memory = MemoryAudit::default();
    let mut r = Responder::new(
        &c,
        ResponseClock::event_time(T0),
        vec![Box::new(audit_file), Box::new(memory.clone())],
    )
    .unwrap();

    let a = alert("mfa_fatigue_success", "alice@example.com", None, T0);
    let out = r.handle(&a).await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::Executed),
            (ResponseAction::RevokeSessions, Decision::Executed)
        ]
    );
    assert_eq!(
        server.lines(),
        vec![
            "GET /api/v1/users/alice@example.com",
            "GET /api/v1/users/00u1/groups",
            "POST /api/v1/users/00u1/lifecycle/suspend",
            "DELETE /api/v1/users/00u1/sessions?oauthTokens=true",
        ]
    );
    // The audit record is OCSF Account Change, linked to the alert.
    let rec = &out[0];
    assert_eq!(rec.class_uid, 3001);
    assert_eq!(rec.activity_id, 5);
    assert_eq!(rec.type_uid, 300105);
    assert_eq!(rec.status_id, 1);
    assert_eq!(rec.metadata.correlation_uid, a.alert_id);
    assert_eq!(rec.unmapped.alert_id, a.alert_id);
    assert_eq!(rec.user.uid.as_deref(), Some("00u1"));

    // A second alert for the same account in the same incident: no second action.
    let again = alert(
        "credential_compromise",
        "Alice@Example.com",
        None,
        T0 + 60_000,
    );
    let out = r.handle(&again).await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Duplicate)]
    );
    assert_eq!(
        out[0].unmapped.incident_alert_id.as_deref(),
        Some(a.alert_id.as_str())
    );

    // A member of an allow-listed group is looked up, never touched.
    let out = r
        .handle(&alert("mfa_fatigue_success", "root@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Refused)]
    );
    assert_eq!(
        out[0].unmapped.reason.as_deref(),
        Some("allow_listed_group")
    );
    assert!(!server.lines().iter().any(|l| l.contains("00u9/lifecycle")));

    // Okta resolves the short name to a login on the user allow-list: never touched.
    let out = r
        .handle(&alert("mfa_fatigue_success", "boss", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Refused)]
    );
    assert_eq!(out[0].unmapped.reason.as_deref(), Some("allow_listed_user"));
    assert!(
        out[0].status_detail.contains("\"boss@example.com\""),
        "{}",
        out[0].status_detail
    );
    assert!(!server.lines().iter().any(|l| l.contains("00u5/lifecycle")));

    // Already suspended: nothing to suspend, sessions still cleared.
    let out = r
        .handle(&alert("mfa_fatigue_success", "gone@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::AlreadyDone),
            (ResponseAction::RevokeSessions, Decision::Executed)
        ]
    );

    // Alerts the policy does not select write nothing.
    let mut low = alert("new_device_geo", "bob@example.com", None, T0);
    low.severity = authwatch_event::Severity::Medium;
    assert!(r.handle(&low).await.unwrap().is_empty());

    // The audit file has every record, and never the token.
    let text = std::fs::read_to_string(c.audit_path()).unwrap();
    assert!(!text.contains("okta-test-token"));
    let from_file = JsonLinesAudit::read_all(&c.audit_path()).unwrap();
    assert_eq!(from_file, memory.records());
    assert_eq!(from_file.len(), 7);
}

#[tokio::test]
async fn okta_retries_429_after_retry_after_and_gives_up_on_500() {
    let server = Server::start(
        |seen, n| match (seen.method.as_str(), seen.target.as_str()) {
            ("GET", "/api/v1/users/alice@example.com") => Answer::Json(
                200,
                json!({"id": "00u1", "status": "ACTIVE",
                       "profile": {"login": "alice@example.com"}}),
            ),
            ("GET", "/api/v1/users/bob@example.com") => Answer::Json(
                200,
                json!({"id": "00u2", "status": "ACTIVE", "profile": {"login": "bob@example.com"}}),
            ),
            ("GET", _) => Answer::Json(200, json!([])),
            ("POST", "/api/v1/users/00u1/lifecycle/suspend") if n == 0 => {
                Answer::WithHeader(429, "retry-after", "1".to_owned())
            }
            ("POST", "/api/v1/users/00u1/lifecycle/suspend") => Answer::Json(200, json!({})),
            ("POST", "/api/v1/users/00u2/lifecycle/suspend") => Answer::Status(500),
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Okta);
    c.okta.base_url = Some(server.url.clone());
    c.okta.token = secret_file(dir.path(), "okta", "t");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    let (mut r, _, _) = responder(&c);

    let started = Instant::now();
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After not honoured"
    );
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Executed)]
    );
    assert_eq!(out[0].unmapped.attempts, 2);

    let out = r
        .handle(&alert("mfa_fatigue_success", "bob@example.com", None, T0))
        .await
        .unwrap();
    // Failed after its retries; queued to be tried again later (the provider was unavailable).
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::Failed),
            (ResponseAction::Suspend, Decision::Queued)
        ]
    );
    assert_eq!(out[1].unmapped.reason.as_deref(), Some("retry_later"));
    assert_eq!(out[0].unmapped.attempts, 3, "max_attempts = 3");
    assert_eq!(out[0].status_id, 2);
    assert_eq!(
        out[0].unmapped.reason.as_deref(),
        Some("provider_unavailable")
    );
    let posts = server
        .lines()
        .iter()
        .filter(|l| l.as_str() == "POST /api/v1/users/00u2/lifecycle/suspend")
        .count();
    assert_eq!(posts, 3);
}

#[tokio::test]
async fn a_hanging_provider_times_out_and_a_429_beyond_the_bound_fails_fast() {
    let server = Server::start(|seen, _| match seen.target.as_str() {
        "/api/v1/users/slow@example.com" => Answer::Hang,
        "/api/v1/users/busy@example.com" => {
            Answer::WithHeader(429, "retry-after", "3600".to_owned())
        }
        other => panic!("unexpected request {other:?}"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Okta);
    c.okta.base_url = Some(server.url.clone());
    c.okta.token = secret_file(dir.path(), "okta", "t");
    c.http.timeout = authwatch_event::DurationText(Duration::from_millis(200));
    c.http.max_attempts = 2;
    let (mut r, _, _) = responder(&c);
    let started = Instant::now();
    let out = r
        .handle(&alert("mfa_fatigue_success", "slow@example.com", None, T0))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "timeout not applied: {took:?}"
    );
    let (failed, requeued): (Vec<_>, Vec<_>) = out
        .iter()
        .partition(|o| o.unmapped.decision == Decision::Failed);
    assert_eq!(failed.len(), 2, "{out:#?}");
    assert!(
        requeued
            .iter()
            .all(|o| o.unmapped.reason.as_deref() == Some("retry_later"))
    );
    assert!(
        out[0]
            .status_detail
            .contains("no answer within the timeout"),
        "{}",
        out[0].status_detail
    );
    assert_eq!(out[0].unmapped.attempts, 2);

    let started = Instant::now();
    let out = r
        .handle(&alert("mfa_fatigue_success", "busy@example.com", None, T0))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        out[0].status_detail.contains("retry after 3600s"),
        "{}",
        out[0].status_detail
    );
    // Back in the queue, not before the hour the provider asked for.
    let last = out.last().unwrap();
    assert_eq!(last.unmapped.decision, Decision::Queued);
    assert!(
        last.status_detail.contains("2026-01-01T01:00:00"),
        "{}",
        last.status_detail
    );
}

#[tokio::test]
async fn the_circuit_opens_queues_pages_and_recovers() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let idp = Server::start(move |seen, _| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            return Answer::Status(503);
        }
        match (seen.method.as_str(), seen.target.as_str()) {
            ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
            ("GET", t) => {
                let id = t.rsplit('/').next().unwrap().to_owned();
                Answer::Json(
                    200,
                    json!({"id": id, "status": "ACTIVE", "profile": {"login": id}}),
                )
            }
            ("POST", _) => Answer::Json(200, json!({})),
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Okta);
    c.okta.base_url = Some(idp.url.clone());
    c.okta.token = secret_file(dir.path(), "okta", "t");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    c.http.max_attempts = 1;
    c.breaker.failures = 2;
    c.pager.url = Some(pager.url.clone());
    c.pager.secret = secret_file(dir.path(), "pager", "pager-key");
    let (mut r, _, clock) = responder(&c);

    // Each failure (the provider unavailable) puts the action back in the queue.
    for user in ["u1", "u2"] {
        let out = r
            .handle(&alert("mfa_fatigue_success", user, None, T0))
            .await
            .unwrap();
        assert_eq!(
            decisions(&out),
            vec![
                (ResponseAction::Suspend, Decision::Failed),
                (ResponseAction::Suspend, Decision::Queued)
            ]
        );
    }
    let calls = idp.seen().len();
    let out = r
        .handle(&alert("mfa_fatigue_success", "u3", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Queued);
    assert_eq!(out[0].unmapped.reason.as_deref(), Some("circuit_open"));
    assert_eq!(idp.seen().len(), calls, "an open circuit makes no call");
    let pages = pager.seen();
    let kinds: Vec<_> = pages.iter().map(|p| p.json()["kind"].clone()).collect();
    // The first re-queue pages; the circuit opening pages whatever the interval; the queueing
    // right after is covered by those: at most one throttled page per pager.interval.
    assert_eq!(kinds, [json!("retry_queued"), json!("circuit_open")]);
    assert!(
        pages[1]
            .header("x-authwatch-signature")
            .starts_with("sha256=")
    );

    // After the cooldown (event time) the provider is back: the queued actions go out, the
    // failed ones included, oldest first; a later alert for u1 is a duplicate of that.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::from_secs(301));
    let out = r.tick().await.unwrap();
    assert_eq!(
        out.iter()
            .map(|o| (o.user.name.as_str(), o.unmapped.decision))
            .collect::<Vec<_>>(),
        [
            ("u1", Decision::Executed),
            ("u2", Decision::Executed),
            ("u3", Decision::Executed)
        ]
    );
    let out = r
        .handle(&alert("mfa_fatigue_success", "u1", None, T0 + 400_000))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Duplicate)]
    );
}

#[tokio::test]
async fn graph_disables_and_revokes_with_a_client_credentials_token() {
    let server = Server::start(|seen, n| {
        let t = seen.target.as_str();
        if t == "/tenant-1/oauth2/v2.0/token" {
            assert_eq!(seen.method, "POST");
            assert_eq!(seen.header("content-type"), "application/x-www-form-urlencoded");
            let form: Vec<(String, String)> = url_pairs(&seen.body);
            let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
            assert_eq!(get("grant_type"), Some("client_credentials"));
            assert_eq!(get("client_id"), Some("app-1"));
            assert_eq!(get("client_secret"), Some("graph-secret"));
            assert_eq!(get("scope"), Some("https://graph.microsoft.com/.default"));
            // The first token is revoked early; the adapter must renew it after a 401.
            let token = if n == 0 { "tok-old" } else { "tok-new" };
            return Answer::Json(200, json!({"access_token": token, "expires_in": 3599}));
        }
        let auth = seen.header("authorization").to_owned();
        match (seen.method.as_str(), t) {
            ("GET", "/v1.0/users/bob@example.com?%24select=id%2CuserPrincipalName%2CaccountEnabled") => {
                if auth == "Bearer tok-old" {
                    return Answer::Status(401);
                }
                Answer::Json(200, json!({"id": "b-1", "accountEnabled": true,
                    "userPrincipalName": "bob@example.com"}))
            }
            ("GET", "/v1.0/users/admin@example.com?%24select=id%2CuserPrincipalName%2CaccountEnabled") => {
                Answer::Json(200, json!({"id": "a-1", "accountEnabled": true,
                    "userPrincipalName": "admin@example.com"}))
            }
            ("GET", "/v1.0/users/b-1/transitiveMemberOf?%24select=id%2CdisplayName") => {
                Answer::Json(200, json!({"value": [{"id": "g-1", "displayName": "Sales"}]}))
            }
            ("GET", "/v1.0/users/a-1/transitiveMemberOf?%24select=id%2CdisplayName") => {
                // The protected group is on the second page.
                Answer::Json(200, json!({"value": [{"id": "g-1", "displayName": "Sales"}],
                    "@odata.nextLink": format!("http://{}/v1.0/users/a-1/transitiveMemberOf?page=2", seen.header("host"))}))
            }
            ("GET", "/v1.0/users/a-1/transitiveMemberOf?page=2") => {
                Answer::Json(200, json!({"value": [{"id": "g-9", "displayName": "Global Administrators"}]}))
            }
            ("GET", "/v1.0/users/ops@example.com?%24select=id%2CuserPrincipalName%2CaccountEnabled") => {
                Answer::Json(200, json!({"id": "o-1", "accountEnabled": true}))
            }
            ("GET", "/v1.0/users/o-1/transitiveMemberOf?%24select=id%2CdisplayName") => {
                // The rest of the list is announced on another host: it is not followed (the
                // token would go there), and the list is incomplete.
                Answer::Json(200, json!({"value": [{"id": "g-1", "displayName": "Sales"}],
                    "@odata.nextLink": "https://graph.example.net/v1.0/users/o-1/transitiveMemberOf?page=2"}))
            }
            ("PATCH", "/v1.0/users/b-1") => {
                assert_eq!(auth, "Bearer tok-new");
                assert_eq!(seen.header("content-type"), "application/json");
                assert_eq!(seen.json(), json!({"accountEnabled": false}));
                Answer::Status(204)
            }
            ("POST", "/v1.0/users/b-1/revokeSignInSessions") => {
                assert_eq!(auth, "Bearer tok-new");
                Answer::Json(200, json!({"value": true}))
            }
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Graph);
    c.graph.tenant_id = Some("tenant-1".to_owned());
    c.graph.client_id = Some("app-1".to_owned());
    c.graph.client_secret = secret_file(dir.path(), "graph", "graph-secret");
    c.graph.authority = server.url.clone();
    c.graph.api_url = format!("{}/v1.0", server.url);
    // The alerts' tenant is a name for the directory tenant-1.
    c.graph.tenants = vec!["ACME".to_owned()];
    c.allow_list.groups = vec!["Global Administrators".to_owned()];
    let (mut r, audit, _) = responder(&c);
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "bob@example.com",
            Some("acme"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::Executed),
            (ResponseAction::RevokeSessions, Decision::Executed)
        ]
    );
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "admin@example.com",
            Some("acme"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        out[0].unmapped.reason.as_deref(),
        Some("allow_listed_group")
    );
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.contains("PATCH /v1.0/users/a-1"))
    );
    // A group list that cannot be read to its end could hide a protected group: no action.
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "ops@example.com",
            Some("acme"),
            T0,
        ))
        .await
        .unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::Failed),
            (ResponseAction::RevokeSessions, Decision::Failed)
        ],
        "{out:#?}"
    );
    let why = &out[0].status_detail;
    assert!(why.contains("listing would be incomplete"), "{why}");
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.contains("users/o-1 ") || l.starts_with("PATCH /v1.0/users/o-1"))
    );
    // One token fetch for the revoked token, one renewal: cached afterwards.
    let tokens = server
        .lines()
        .iter()
        .filter(|l| l.contains("/token"))
        .count();
    assert_eq!(tokens, 2);
    let all = serde_json::to_string(&audit.records()).unwrap();
    assert!(!all.contains("graph-secret") && !all.contains("tok-new"));
}

fn url_pairs(body: &[u8]) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn keycloak_disables_and_logs_out_with_either_grant() {
    for grant in [KeycloakGrant::ClientCredentials, KeycloakGrant::Password] {
        let server = Server::start(move |seen, _| {
            let t = seen.target.as_str();
            if t == "/realms/master/protocol/openid-connect/token" {
                let form = url_pairs(&seen.body);
                let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
                match grant {
                    KeycloakGrant::ClientCredentials => {
                        assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
                        assert_eq!(get("client_id").as_deref(), Some("authwatch"));
                        assert_eq!(get("client_secret").as_deref(), Some("kc-secret"));
                    }
                    KeycloakGrant::Password => {
                        assert_eq!(get("grant_type").as_deref(), Some("password"));
                        assert_eq!(get("username").as_deref(), Some("responder"));
                        assert_eq!(get("password").as_deref(), Some("kc-password"));
                    }
                }
                return Answer::Json(200, json!({"access_token": "kc-token", "expires_in": 60}));
            }
            assert_eq!(seen.header("authorization"), "Bearer kc-token");
            match (seen.method.as_str(), t) {
                ("GET", "/admin/realms/acme/users?username=carol&exact=true") => Answer::Json(
                    200,
                    json!([{"id": "c-1", "username": "carol", "enabled": true}]),
                ),
                ("GET", "/admin/realms/acme/users/c-1/groups?first=0&max=500") => Answer::Json(
                    200,
                    json!([{"id": "kg-1", "name": "staff", "path": "/staff"}]),
                ),
                ("PUT", "/admin/realms/acme/users/c-1") => {
                    assert_eq!(seen.json(), json!({"enabled": false}));
                    Answer::Status(204)
                }
                ("POST", "/admin/realms/acme/users/c-1/logout") => Answer::Status(204),
                // The boss is allow-listed by username; the alert names the e-mail, which
                // Keycloak also resolves.
                ("GET", "/admin/realms/acme/users?username=boss%40acme.com&exact=true") => {
                    Answer::Json(200, json!([]))
                }
                ("GET", "/admin/realms/acme/users?email=boss%40acme.com&exact=true") => {
                    Answer::Json(
                        200,
                        json!([{"id": "b-1", "username": "boss", "email": "boss@acme.com",
                                "enabled": true}]),
                    )
                }
                ("GET", "/admin/realms/acme/users/b-1/groups?first=0&max=500") => {
                    Answer::Json(200, json!([]))
                }
                other => panic!("unexpected request {other:?}"),
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), RespondTarget::Keycloak);
        c.keycloak.base_url = Some(server.url.clone());
        c.keycloak.realm = Some("acme".to_owned());
        c.keycloak.grant = grant;
        match grant {
            KeycloakGrant::ClientCredentials => {
                c.keycloak.client_id = "authwatch".to_owned();
                c.keycloak.client_secret = secret_file(dir.path(), "kc", "kc-secret");
            }
            KeycloakGrant::Password => {
                c.keycloak.username = Some("responder".to_owned());
                c.keycloak.password = secret_file(dir.path(), "kc", "kc-password");
            }
        }
        c.allow_list.users = vec!["boss".to_owned()];
        let (mut r, _, _) = responder(&c);
        let out = r
            .handle(&alert("credential_compromise", "carol", Some("acme"), T0))
            .await
            .unwrap();
        assert_eq!(
            decisions(&out),
            vec![
                (ResponseAction::Suspend, Decision::Executed),
                (ResponseAction::RevokeSessions, Decision::Executed)
            ],
            "{grant:?}"
        );
        assert_eq!(
            server.lines(),
            vec![
                "POST /realms/master/protocol/openid-connect/token",
                "GET /admin/realms/acme/users?username=carol&exact=true",
                "GET /admin/realms/acme/users/c-1/groups?first=0&max=500",
                "PUT /admin/realms/acme/users/c-1",
                "POST /admin/realms/acme/users/c-1/logout",
            ]
        );
        let out = r
            .handle(&alert(
                "credential_compromise",
                "boss@acme.com",
                Some("acme"),
                T0,
            ))
            .await
            .unwrap();
        assert_eq!(
            decisions(&out),
            vec![(ResponseAction::Suspend, Decision::Refused)],
            "{grant:?}"
        );
        assert_eq!(out[0].unmapped.reason.as_deref(), Some("allow_listed_user"));
        assert!(
            !server
                .lines()
                .iter()
                .any(|l| l.contains("users/b-1 ")
                    || l.starts_with("PUT /admin/realms/acme/users/b-1")),
            "{:?}",
            server.lines()
        );
    }
}

/// A webhook or pager URL that carries its credential (an incoming-webhook URL) is read from a
/// file or the environment (`url_from`), never written in the config; giving both is refused.
#[tokio::test]
async fn webhook_and_pager_urls_can_come_from_secret_files() {
    let server = Server::start(|_, _| Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url_from = secret_file(
        dir.path(),
        "hook-url",
        &format!("{}/hooks/T0001/B0001/s3cr3t", server.url),
    );
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.pager.url_from = secret_file(
        dir.path(),
        "page-url",
        &format!("{}/page/routing-key", server.url),
    );
    c.policy[0].actions = vec![ResponseAction::Suspend];
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Executed);
    assert_eq!(server.lines(), vec!["POST /hooks/T0001/B0001/s3cr3t"]);

    // A value that is no URL is refused without being shown.
    let mut bad = c.clone();
    bad.webhook.url_from = secret_file(dir.path(), "bad-url", "hooks.example.com/T0001/s3cr3t");
    let e = Responder::new(&bad, ResponseClock::event_time(T0), Vec::new())
        .err()
        .expect("not a URL");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert!(e.to_string().contains("respond.webhook.url"), "{e}");

    for both in ["webhook", "pager"] {
        let mut twice = c.clone();
        match both {
            "webhook" => twice.webhook.url = Some(format!("{}/hook", server.url)),
            _ => twice.pager.url = Some(format!("{}/page", server.url)),
        }
        let e = Responder::new(&twice, ResponseClock::event_time(T0), Vec::new())
            .err()
            .expect("both url and url_from are refused");
        assert!(
            e.to_string().contains(&format!("respond.{both}.url"))
                && e.to_string().contains("url_from"),
            "{e}"
        );
    }
}

/// Rules keyed by user carry no tenant in their entity; the deciding event's tenant serves
/// instead, so per-tenant limits and incidents stay per tenant.
#[tokio::test]
async fn the_tenant_comes_from_the_deciding_event_when_the_rule_is_keyed_by_user() {
    let server = Server::start(|_, _| Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!("{}/hooks/authwatch", server.url));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    c.limits.tenant_actions = 1;
    let (mut r, _, _) = responder(&c);
    let keyed_by_user = |account: &str, tenant: &str, time: i64| {
        let mut a = alert("mfa_fatigue_success", account, None, time);
        a.alert_id = format!("{tenant}-{}", a.alert_id);
        a.observed.tenant = tenant.into();
        a
    };
    // One action per tenant and hour: acme's and globex's each go out.
    for (account, tenant) in [("alice", "acme"), ("jsmith", "globex")] {
        let out = r.handle(&keyed_by_user(account, tenant, T0)).await.unwrap();
        assert_eq!(out[0].unmapped.decision, Decision::Executed, "{tenant}");
        assert_eq!(out[0].user.org.as_deref(), Some(tenant));
    }
    // The same login in another tenant is another account: its own incident (queued here, as
    // acme's token is spent), not a duplicate of globex's.
    let out = r
        .handle(&keyed_by_user("jsmith", "acme", T0 + 60_000))
        .await
        .unwrap();
    assert_eq!(
        out[0].unmapped.decision,
        Decision::Queued,
        "{}",
        out[0].status_detail
    );
    let bodies: Vec<serde_json::Value> = server.seen().iter().map(|s| s.json()).collect();
    assert_eq!(bodies[0]["tenant"], "acme");
    assert_eq!(bodies[1]["tenant"], "globex");
}

/// Live, the caller saves the state after every call: an alert then drains nothing, and a tick
/// carries out one queued action, so that a crash repeats at most the action in flight.
#[tokio::test]
async fn one_at_a_time_a_tick_carries_out_one_queued_action() {
    let server = Server::start(|_, _| Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!("{}/hooks/authwatch", server.url));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    c.limits.global_actions = 2;
    let (mut r, _, _) = responder(&c);
    r.act_one_at_a_time();
    let mut decided = Vec::new();
    for account in ["a", "b", "c", "d", "e"] {
        let out = r
            .handle(&alert("mfa_fatigue_success", account, None, T0))
            .await
            .unwrap();
        decided.push(out[0].unmapped.decision);
    }
    use Decision::{Executed, Queued};
    assert_eq!(decided, [Executed, Executed, Queued, Queued, Queued]);
    // Two hours on, two tokens are back: an alert alone acts on none of the queue.
    let later = T0 + 2 * 3_600_000;
    let out = r
        .handle(&alert("new_device_geo", "z", None, later))
        .await
        .unwrap();
    assert!(out.is_empty(), "{out:#?}");
    let executed = |out: &[authwatch_respond::AuditRecord]| {
        out.iter()
            .filter(|x| x.unmapped.decision == Executed)
            .count()
    };
    assert_eq!(executed(&r.tick().await.unwrap()), 1);
    assert_eq!(executed(&r.tick().await.unwrap()), 1);
    assert!(r.tick().await.unwrap().is_empty(), "no token left");
    assert_eq!(server.seen().len(), 4);
}

/// The audit record of an action is written after the provider's call; when that write fails
/// (a full disk here), the responder stops, and the state it leaves knows the account's
/// incident: the next start does not act on the account again.
#[tokio::test]
async fn an_audit_write_that_fails_after_the_call_does_not_lead_to_a_second_call() {
    let server = Server::start(|_, _| Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!("{}/hooks/authwatch", server.url));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    let full = JsonLinesAudit::open(std::path::Path::new("/dev/full")).unwrap();
    let mut r = Responder::new(&c, ResponseClock::event_time(T0), vec![Box::new(full)]).unwrap();
    let a = alert("mfa_fatigue_success", "erin@example.com", Some("acme"), T0);
    let e = r.handle(&a).await.unwrap_err();
    assert!(e.to_string().contains("/dev/full"), "{e}");
    assert_eq!(server.seen().len(), 1);
    let state = r.snapshot().unwrap();

    let (mut next, _, _) = responder(&c);
    next.restore(&state).unwrap();
    let out = next.handle(&a).await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![(ResponseAction::Suspend, Decision::Duplicate)]
    );
    assert_eq!(server.seen().len(), 1, "the action was repeated");
}

#[tokio::test]
async fn webhook_actions_are_signed() {
    let server = Server::start(|seen, _| {
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/hooks/authwatch");
        Answer::Status(200)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!("{}/hooks/authwatch", server.url));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.policy[0].actions = vec![ResponseAction::Suspend, ResponseAction::Notify];
    let (mut r, _, _) = responder(&c);
    let a = alert("mfa_fatigue_success", "dave@example.com", Some("acme"), T0);
    let out = r.handle(&a).await.unwrap();
    assert_eq!(
        decisions(&out),
        vec![
            (ResponseAction::Suspend, Decision::Executed),
            (ResponseAction::Notify, Decision::Executed)
        ]
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for (s, action) in seen.iter().zip(["suspend", "notify"]) {
        let body = s.json();
        assert_eq!(body["action"], action);
        assert_eq!(body["account"], "dave@example.com");
        assert_eq!(body["tenant"], "acme");
        assert_eq!(body["alert_id"], a.alert_id.as_str());
        assert_eq!(s.header("content-type"), "application/json");
        assert_eq!(
            s.header("idempotency-key"),
            format!("{}:{action}", a.alert_id)
        );
        let ts: i64 = s.header("x-authwatch-timestamp").parse().unwrap();
        let expected = authwatch_respond::adapters::sign(
            &authwatch_respond::Secret::new("hook-key"),
            ts,
            &s.body,
        );
        assert_eq!(s.header("x-authwatch-signature"), expected);
    }
}

#[tokio::test]
async fn approval_mode_waits_for_a_human() {
    let server = Server::start(okta_script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::PendingApproval);
    assert!(server.lines().is_empty(), "nothing happens before approval");
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let pending = r.store().list().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);

    // Another process (the CLI) approves: a responder of its own on the same state dir.
    let (mut cli, _, _) = responder(&c);
    let (decided, records) = cli.decide(&id, true, "sam").await.unwrap();
    assert_eq!(decided.status, authwatch_respond::PendingStatus::Executed);
    assert_eq!(decided.decided_by.as_deref(), Some("sam"));
    assert_eq!(records[0].actor.user.as_deref(), Some("sam"));
    assert!(
        server
            .lines()
            .contains(&"POST /api/v1/users/00u1/lifecycle/suspend".to_owned())
    );
    assert!(
        cli.decide(&id, false, "sam").await.is_err(),
        "already decided"
    );

    // Without its state (lost, or a fresh process), the same alert finds the decision in the
    // store: no second pending action, nothing sent.
    let (mut fresh, _, _) = responder(&c);
    let out = fresh
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Duplicate);
    assert_eq!(out[0].unmapped.reason.as_deref(), Some("already_decided"));

    // A rejection changes nothing at the provider.
    let out = r
        .handle(&alert("mfa_fatigue_success", "root@example.com", None, T0))
        .await
        .unwrap();
    let id = out[0].unmapped.pending_id.clone().unwrap();
    let before = server.lines().len();
    let (decided, records) = cli.decide(&id, false, "sam").await.unwrap();
    assert_eq!(decided.status, authwatch_respond::PendingStatus::Rejected);
    assert_eq!(records[0].unmapped.decision, Decision::Rejected);
    assert_eq!(server.lines().len(), before);

    // The responder that asked (the pipeline) learns the decision from the store: its incident
    // stops waiting. Within the incident's time a new alert is a duplicate of the executed
    // incident; after it, the account can be acted on again (asked for again here).
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            None,
            T0 + 60_000,
        ))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Duplicate);
    assert!(
        out[0].status_detail.contains("(Executed)"),
        "{}",
        out[0].status_detail
    );
    let later = T0 + c.incident_ttl.millis() + 3_600_000;
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            None,
            later,
        ))
        .await
        .unwrap();
    assert_eq!(
        out[0].unmapped.decision,
        Decision::PendingApproval,
        "{}",
        out[0].status_detail
    );
}

/// A pending action the store lost (its directory reset) can no longer be decided: the
/// account's waiting incident fails, so the next alert asks again instead of being a duplicate of
/// it for ever.
#[tokio::test]
async fn an_approval_the_store_lost_does_not_wait_for_ever() {
    let server = Server::start(okta_script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.mode = RespondMode::Approval;
    let (mut r, _, _) = responder(&c);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    let id = out[0].unmapped.pending_id.clone().unwrap();
    std::fs::remove_file(c.state_dir.join("pending").join(format!("{id}.json"))).unwrap();
    let out = r
        .handle(&alert(
            "credential_compromise",
            "alice@example.com",
            None,
            T0 + 60_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        out[0].unmapped.decision,
        Decision::PendingApproval,
        "{}",
        out[0].status_detail
    );
}

/// The pipeline's queue and a human's `respond approve` never both carry out one action: the
/// queue drains only actions it can claim, and holds the claim while it acts.
/// Found by review: a queued action is marked executed in the store before its call; a run that
/// ended during the call (a crash, or a stop that abandoned it) left it so, and the next drain
/// closed it as done: the account was never suspended. It is carried out again now.
#[tokio::test]
async fn a_queued_action_interrupted_during_its_call_is_carried_out_again() {
    let server = Server::start(okta_script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.limits.global_actions = 1;
    let (mut r, _, _) = responder(&c);
    let first = r
        .handle(&alert("mfa_fatigue_success", "gone@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(first[0].unmapped.decision, Decision::AlreadyDone);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Queued);
    let id = out[0].unmapped.pending_id.clone().unwrap();
    // As a run leaves it that marked the action and ended before the call returned.
    let mut p = r.store().get(&id).unwrap();
    p.status = authwatch_respond::PendingStatus::Executed;
    p.detail = Some("being carried out".to_owned());
    r.store().update(&p).unwrap();

    let out = r
        .handle(&alert(
            "new_device_geo",
            "bob@example.com",
            None,
            T0 + 2 * 3_600_000,
        ))
        .await
        .unwrap();
    assert!(
        out.iter().any(|x| x.unmapped.decision == Decision::Executed
            && x.unmapped.action == ResponseAction::Suspend),
        "{out:#?}"
    );
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.contains("00u1/lifecycle/suspend"))
            .count(),
        1
    );
    let p = r.store().get(&id).unwrap();
    assert_eq!(p.status, authwatch_respond::PendingStatus::Executed);
    assert_ne!(p.detail.as_deref(), Some("being carried out"));
}

#[tokio::test]
async fn a_queued_action_a_human_is_deciding_is_left_to_the_human() {
    let server = Server::start(okta_script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = okta_config(dir.path(), &server);
    c.limits.global_actions = 1;
    let (mut r, _, _) = responder(&c);
    let first = r
        .handle(&alert("mfa_fatigue_success", "gone@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(first[0].unmapped.decision, Decision::AlreadyDone);
    let out = r
        .handle(&alert("mfa_fatigue_success", "alice@example.com", None, T0))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Queued);
    let id = out[0].unmapped.pending_id.clone().unwrap();
    // A human is deciding it (holds the claim) when tokens come back.
    let (_, claim) = r.store().claim(&id).unwrap();
    let later = T0 + 2 * 3_600_000;
    let out = r
        .handle(&alert("new_device_geo", "bob@example.com", None, later))
        .await
        .unwrap();
    assert!(out.is_empty(), "{out:#?}");
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.contains("00u1/lifecycle/suspend")),
        "the queue acted on an action a human held"
    );
    drop(claim);
    // Released (undecided): the next drain carries it out, once.
    let out = r
        .handle(&alert(
            "new_device_geo",
            "bob@example.com",
            None,
            later + 1_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .filter(|x| x.unmapped.decision == Decision::Executed)
            .count(),
        2,
        "{out:#?}"
    );
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.contains("00u1/lifecycle/suspend"))
            .count(),
        1
    );
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let server = Server::start(okta_script).await;
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
        vec![
            (ResponseAction::Suspend, Decision::DryRun),
            (ResponseAction::RevokeSessions, Decision::DryRun)
        ]
    );
    assert!(
        server.seen().iter().all(|s| s.method == "GET"),
        "read-only lookups only"
    );
}

#[tokio::test]
async fn refusals_without_an_account_and_beyond_the_queue() {
    let server = Server::start(|_, _| Answer::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Webhook);
    c.webhook.url = Some(format!("{}/hooks/authwatch", server.url));
    c.webhook.secret = secret_file(dir.path(), "hook", "hook-key");
    c.policy[0].actions = vec![ResponseAction::Suspend];
    c.limits.global_actions = 1;
    c.limits.max_queue = 1;
    let (mut r, _, _) = responder(&c);
    let mut by_ip = alert("credential_compromise", "x", None, T0);
    by_ip.entity.user = None;
    by_ip.entity.ip = Some("203.0.113.9".parse().unwrap());
    let out = r.handle(&by_ip).await.unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Refused);
    assert_eq!(out[0].unmapped.reason.as_deref(), Some("no_account"));

    let reasons: Vec<(Decision, Option<String>)> = {
        let mut all = Vec::new();
        for user in ["a", "b", "c"] {
            let out = r
                .handle(&alert("mfa_fatigue_success", user, None, T0))
                .await
                .unwrap();
            all.push((out[0].unmapped.decision, out[0].unmapped.reason.clone()));
        }
        all
    };
    assert_eq!(
        reasons,
        vec![
            (Decision::Executed, None),
            (Decision::Queued, Some("rate_limited".to_owned())),
            (Decision::Refused, Some("queue_full".to_owned())),
        ]
    );
    assert_eq!(r.queued(), 1);
    // Dry-run without a target says what it could not check.
    let mut c2 = c.clone();
    c2.mode = RespondMode::DryRun;
    c2.target = RespondTarget::None;
    c2.allow_list.groups = vec!["admins".to_owned()];
    c2.state_dir = dir.path().join("state2");
    let (mut r2, _, _) = responder(&c2);
    let out = r2
        .handle(&alert("mfa_fatigue_success", "d", None, T0))
        .await
        .unwrap();
    assert!(
        out[0]
            .status_detail
            .contains("group allow-list not checked"),
        "{}",
        out[0].status_detail
    );
}
