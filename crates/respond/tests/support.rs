//! A scripted HTTP server on 127.0.0.1:0 that records every request and answers as the test
//! says (any status, headers and body, or no answer at all), and alert and config builders.

use authwatch_event::{Alert, CauseClass, Entity, Severity, Timestamp, Window};
use authwatch_pipeline::config::{RespondConfig, RespondMode, RespondTarget, SecretRef};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent (percent-encoded).
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// What the server answers.
pub enum Answer {
    Json(u16, serde_json::Value),
    Status(u16),
    WithHeader(u16, &'static str, String),
    Hang,
}

type Script = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
}

pub struct Server {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts a server whose answers come from `script(request, how many requests with the
    /// same method and target came before)`.
    pub async fn start(script: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Server {
        let shared = Shared {
            seen: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(script),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            url,
            seen: shared.seen,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.seen().iter().map(Seen::line).collect()
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        target: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers,
        body: body.to_vec(),
    };
    let before = {
        let mut all = shared.seen.lock().unwrap();
        let n = all
            .iter()
            .filter(|s| s.method == seen.method && s.target == seen.target)
            .count();
        all.push(seen.clone());
        n
    };
    match (shared.script)(&seen, before) {
        Answer::Json(status, value) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            value.to_string(),
        )
            .into_response(),
        Answer::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Answer::WithHeader(status, name, value) => {
            (StatusCode::from_u16(status).unwrap(), [(name, value)]).into_response()
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// A critical alert of `rule` naming `account` in `tenant`, at `time_ms`.
pub fn alert(rule: &str, account: &str, tenant: Option<&str>, time_ms: i64) -> Alert {
    Alert {
        alert_id: Alert::make_id(rule, 1, &format!("{tenant:?}/{account}"), time_ms),
        rule_id: rule.to_owned(),
        rule_version: 1,
        category: rule.to_owned(),
        cause_class: CauseClass::Attack,
        severity: Severity::Critical,
        attack_technique: vec!["T1621".to_owned()],
        entity: Entity {
            tenant: tenant.map(Into::into),
            user: Some(account.into()),
            ..Entity::default()
        },
        window: Window {
            start: Timestamp(time_ms - 600_000),
            end: Timestamp(time_ms),
        },
        metrics: BTreeMap::new(),
        evidence: vec![],
        observed: Default::default(),
        first_seen: Timestamp(time_ms - 600_000),
        last_seen: Timestamp(time_ms),
        summary: Default::default(),
        steps: Default::default(),
        related: vec![],
    }
}

/// A secret file in `dir`.
pub fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> SecretRef {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    SecretRef {
        file: Some(path),
        env: None,
    }
}

/// An automatic-mode config with fast retries, state in `dir`.
pub fn config(dir: &std::path::Path, target: RespondTarget) -> RespondConfig {
    let mut c = RespondConfig {
        enabled: true,
        mode: RespondMode::Automatic,
        target,
        state_dir: dir.join("state"),
        ..RespondConfig::default()
    };
    c.http.timeout = authwatch_event::DurationText(Duration::from_millis(500));
    c.http.max_attempts = 3;
    c.http.backoff_base = authwatch_event::DurationText(Duration::from_millis(10));
    c.http.backoff_max = authwatch_event::DurationText(Duration::from_millis(50));
    c.limits.global_actions = 100;
    c.limits.tenant_actions = 100;
    // Most alerts of these tests name no tenant: the Okta org serves those (a test of other
    // tenants lists them).
    c.okta.tenants = vec![String::new()];
    c
}

/// 2026-01-01T00:00:00Z, where the tests' event-time clocks start.
pub const T0: i64 = 1_767_225_600_000;
pub const MINUTE: i64 = 60_000;

/// A responder on an event-time clock at [`T0`], auditing to memory.
pub fn responder(
    c: &RespondConfig,
) -> (
    authwatch_respond::Responder,
    authwatch_respond::MemoryAudit,
    authwatch_respond::ResponseClock,
) {
    let audit = authwatch_respond::MemoryAudit::default();
    let clock = authwatch_respond::ResponseClock::event_time(T0);
    let r =
        authwatch_respond::Responder::new(c, clock.clone(), vec![Box::new(audit.clone())]).unwrap();
    (r, audit, clock)
}

/// Each record's decision and reason.
pub fn decisions(
    records: &[authwatch_respond::AuditRecord],
) -> Vec<(authwatch_respond::Decision, Option<String>)> {
    records
        .iter()
        .map(|r| (r.unmapped.decision, r.unmapped.reason.clone()))
        .collect()
}

/// How many times the server saw exactly this request line.
pub fn count(server: &Server, line: &str) -> usize {
    server.lines().iter().filter(|l| *l == line).count()
}

/// An Okta org whose users are `<name>@example.com` → id `id-<name>`, login as asked.
pub async fn okta() -> Server {
    Server::start(|seen, _| okta_answer(seen)).await
}

/// What [`okta`]'s org answers `seen`.
pub fn okta_answer(seen: &Seen) -> Answer {
    match (seen.method.as_str(), seen.target.as_str()) {
        // What Okta answers for the alias: the API token's owner.
        ("GET", "/api/v1/users/me") => Answer::Json(
            200,
            json!({"id": "00uOWNER", "status": "ACTIVE",
                       "profile": {"login": "okta-api-admin@example.com"}}),
        ),
        ("GET", t) if t.ends_with("/groups") => Answer::Json(200, json!([])),
        ("GET", t) => {
            let login = t.rsplit('/').next().unwrap().replace("%40", "@");
            let name = login.trim_end_matches("@example.com");
            Answer::Json(
                200,
                json!({"id": format!("id-{name}"), "status": "ACTIVE",
                           "profile": {"login": login}}),
            )
        }
        ("POST", _) => Answer::Json(200, json!({})),
        ("DELETE", _) => Answer::Status(204),
        other => panic!("unexpected request {other:?}"),
    }
}
