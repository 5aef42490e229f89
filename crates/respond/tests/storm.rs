//! The storm: 10,000 suspension-worthy alerts over 1,000 accounts. No more actions than the
//! limits allow, allow-listed accounts untouched, the rest queued and a human paged; a restart
//! from the snapshot repeats no action. Time is the responder's event-time clock, so the test
//! is exact and fast.

use crate::support::{Answer, Server, alert, config, secret_file};
use authwatch_pipeline::config::{RespondTarget, ResponseAction};
use authwatch_respond::{Decision, MemoryAudit, Responder, ResponseClock};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const T0: i64 = 1_767_225_600_000;
const ACCOUNTS: usize = 1_000;
const ALERTS: usize = 10_000;
const GLOBAL: u32 = 50;
const PER_TENANT: u32 = 20;
const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn account(i: usize) -> String {
    // Every 100th account is a break-glass account (allow-listed by name); every 97th is in
    // the protected group at the provider.
    if i.is_multiple_of(100) {
        format!("breakglass-{i}@example.com")
    } else {
        format!("user{i}@example.com")
    }
}

fn storm() -> Vec<authwatch_event::Alert> {
    // Ten alerts per account, interleaved (account order scrambled by a fixed stride), within
    // one minute of event time.
    (0..ALERTS)
        .map(|n| {
            let i = (n * 7_919) % ACCOUNTS;
            let rule = if n % 2 == 0 {
                "mfa_fatigue_success"
            } else {
                "credential_compromise"
            };
            let time = T0 + (n as i64 * 60_000) / ALERTS as i64;
            alert(rule, &account(i), Some(TENANTS[i % 4]), time)
        })
        .collect()
}

async fn idp() -> Server {
    Server::start(
        |seen, _| match (seen.method.as_str(), seen.target.as_str()) {
            ("GET", t) if t.ends_with("/groups") => {
                let id = t.split('/').nth(4).unwrap();
                let n: usize = id.trim_start_matches("id-").parse().unwrap();
                let groups = if n.is_multiple_of(97) {
                    json!([{"id": "g-adm", "profile": {"name": "Administrators"}}])
                } else {
                    json!([{"id": "g-all", "profile": {"name": "Everyone"}}])
                };
                Answer::Json(200, groups)
            }
            ("GET", t) => {
                let name = t.rsplit('/').next().unwrap();
                let n: usize = name
                    .trim_start_matches("breakglass-")
                    .trim_start_matches("user")
                    .trim_end_matches("@example.com")
                    .parse()
                    .unwrap();
                Answer::Json(
                    200,
                    json!({"id": format!("id-{n}"), "status": "ACTIVE",
                           "profile": {"login": name.replace("%40", "@")}}),
                )
            }
            ("POST", _) => Answer::Json(200, json!({})),
            ("DELETE", _) => Answer::Status(204),
            other => panic!("unexpected request {other:?}"),
        },
    )
    .await
}

fn suspended(server: &Server) -> Vec<String> {
    server
        .lines()
        .into_iter()
        .filter(|l| l.ends_with("/lifecycle/suspend"))
        .collect()
}

#[tokio::test]
async fn storm_is_rate_limited_allow_lists_hold_and_a_restart_repeats_nothing() {
    let server = idp().await;
    let pager = Server::start(|_, _| Answer::Status(202)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), RespondTarget::Okta);
    c.okta.base_url = Some(server.url.clone());
    c.okta.token = secret_file(dir.path(), "okta", "t");
    c.okta.tenants = TENANTS.iter().map(|t| t.to_string()).collect();
    c.limits.global_actions = GLOBAL;
    c.limits.tenant_actions = PER_TENANT;
    c.allow_list.users = vec!["breakglass-*".to_owned()];
    c.allow_list.groups = vec!["Administrators".to_owned()];
    c.pager.url = Some(pager.url.clone());
    let alerts = storm();

    let audit = MemoryAudit::default();
    let clock = ResponseClock::event_time(T0);
    let mut r = Responder::new(&c, clock.clone(), vec![Box::new(audit.clone())]).unwrap();
    for a in &alerts {
        r.handle(a).await.unwrap();
    }
    let records = audit.records();
    let mut by_decision: BTreeMap<(ResponseAction, Decision), usize> = BTreeMap::new();
    for rec in &records {
        *by_decision
            .entry((rec.unmapped.action, rec.unmapped.decision))
            .or_default() += 1;
    }
    // Accounts that got a token: executed or refused by group at the provider.
    let acted: HashSet<&str> = records
        .iter()
        .filter(|r| {
            matches!(r.unmapped.decision, Decision::Executed)
                || r.unmapped.reason.as_deref() == Some("allow_listed_group")
        })
        .map(|r| r.user.name.as_str())
        .collect();
    assert_eq!(acted.len(), GLOBAL as usize, "{by_decision:?}");
    let calls = suspended(&server);
    assert!(calls.len() <= GLOBAL as usize);
    let distinct: HashSet<&String> = calls.iter().collect();
    assert_eq!(distinct.len(), calls.len(), "an account suspended twice");

    // No tenant above its own limit.
    let mut per_tenant: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        r.unmapped.decision == Decision::Executed && r.unmapped.action == ResponseAction::Suspend
    }) {
        *per_tenant.entry(r.user.org.clone().unwrap()).or_default() += 1;
    }
    assert!(
        per_tenant.values().all(|&n| n <= PER_TENANT as usize),
        "{per_tenant:?}"
    );

    // Allow-listed accounts: refused, never touched.
    let breakglass = ACCOUNTS / 100;
    let refused_by_name: HashSet<&str> = records
        .iter()
        .filter(|r| r.unmapped.reason.as_deref() == Some("allow_listed_user"))
        .map(|r| r.user.name.as_str())
        .collect();
    assert_eq!(refused_by_name.len(), breakglass);
    for l in server.lines() {
        assert!(
            !l.contains("breakglass"),
            "allow-listed account looked up: {l}"
        );
    }
    for i in (0..ACCOUNTS).filter(|i| i % 97 == 0) {
        assert!(
            !calls.iter().any(|l| l.contains(&format!("/id-{i}/"))),
            "allow-listed group member id-{i} suspended"
        );
    }

    // The rest queued (once per account), and a human paged.
    let queued: HashSet<&str> = records
        .iter()
        .filter(|r| r.unmapped.decision == Decision::Queued)
        .map(|r| r.user.name.as_str())
        .collect();
    assert_eq!(queued.len(), ACCOUNTS - breakglass - GLOBAL as usize);
    assert_eq!(r.queued(), queued.len());
    let pages = pager.seen();
    assert_eq!(pages.len(), 1, "one page per pager.interval");
    assert_eq!(pages[0].json()["kind"], "actions_queued");
    // Every other alert is a duplicate of its account's incident.
    let duplicates = records
        .iter()
        .filter(|r| r.unmapped.decision == Decision::Duplicate)
        .count();
    // (Break-glass accounts are refused on every alert: they never open an incident.)
    assert_eq!(
        duplicates,
        ALERTS - ACCOUNTS - breakglass * (ALERTS / ACCOUNTS - 1)
    );

    // Restart from the snapshot: the same storm again repeats no action.
    let snapshot = r.snapshot().unwrap();
    assert_eq!(snapshot, r.snapshot().unwrap(), "one state, one snapshot");
    drop(r);
    let calls_before = server.lines().len();
    let audit2 = MemoryAudit::default();
    let clock2 = ResponseClock::event_time(clock.now_ms());
    let mut r2 = Responder::new(&c, clock2.clone(), vec![Box::new(audit2.clone())]).unwrap();
    r2.restore(&snapshot).unwrap();
    for a in &alerts {
        r2.handle(a).await.unwrap();
    }
    assert_eq!(
        server.lines().len(),
        calls_before,
        "a restart called the provider"
    );
    assert!(
        audit2
            .records()
            .iter()
            .all(|r| matches!(r.unmapped.decision, Decision::Duplicate | Decision::Refused))
    );

    // An hour later the buckets are full again: the queue drains by the limit, oldest first,
    // and still no account is acted on twice.
    clock2.advance(Duration::from_secs(3_600));
    let drained = r2.tick().await.unwrap();
    let drained_accounts: HashSet<&str> = drained
        .iter()
        .filter(|r| r.unmapped.action == ResponseAction::Suspend)
        .map(|r| r.user.name.as_str())
        .collect();
    assert_eq!(drained_accounts.len(), GLOBAL as usize);
    let calls = suspended(&server);
    let distinct: HashSet<&String> = calls.iter().collect();
    assert_eq!(distinct.len(), calls.len(), "an account suspended twice");
    assert!(calls.len() <= 2 * GLOBAL as usize);
    assert_eq!(r2.queued(), queued.len() - GLOBAL as usize);
}
