//! The Keycloak adapter against a real Keycloak (scripts/keycloak starts one; scripts/test runs
//! this with `--ignored`). The test makes a realm of its own, with a user and an allow-listed
//! group member, and checks the result through the admin API.

use crate::support::alert;
use authwatch_pipeline::config::{
    KeycloakGrant, RespondConfig, RespondMode, RespondTarget, ResponseAction, SecretRef,
};
use authwatch_respond::{Decision, MemoryAudit, Responder, ResponseClock};
use serde_json::{Value, json};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `scripts/keycloak start` and `eval \"$(scripts/keycloak env)\"`"
        )
    })
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn login(base: &str, user: &str, password: &str) -> Admin {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let answer: Value = http
            .post(format!(
                "{base}/realms/master/protocol/openid-connect/token"
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", user),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        Admin {
            http,
            base: base.to_owned(),
            token: answer["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// POSTs `body` and returns the new object's id (from `Location`).
    async fn create(&self, path: &str, body: Value) -> String {
        let response = self
            .http
            .post(format!("{}/admin/realms{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.rsplit('/').next())
            .unwrap_or_default()
            .to_owned()
    }

    async fn put(&self, path: &str) {
        self.http
            .put(format!("{}/admin/realms{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/admin/realms{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn delete(&self, path: &str) {
        let _ = self
            .http
            .delete(format!("{}/admin/realms{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await;
    }
}

#[tokio::test]
#[ignore = "needs a Keycloak server: scripts/keycloak start (scripts/test runs it)"]
async fn keycloak_real_server_disables_logs_out_and_spares_allow_listed_groups() {
    let base = env("AUTHWATCH_KEYCLOAK_URL");
    let admin_user = env("AUTHWATCH_KEYCLOAK_ADMIN");
    let admin = Admin::login(&base, &admin_user, &env("AUTHWATCH_KEYCLOAK_PASSWORD")).await;
    let realm = format!("authwatch-test-{}", std::process::id());
    admin
        .create("", json!({"realm": realm, "enabled": true}))
        .await;
    let group = admin
        .create(&format!("/{realm}/groups"), json!({"name": "breakglass"}))
        .await;
    let alice = admin
        .create(
            &format!("/{realm}/users"),
            json!({"username": "alice", "email": "alice@example.com", "enabled": true}),
        )
        .await;
    let root = admin
        .create(
            &format!("/{realm}/users"),
            json!({"username": "root", "enabled": true}),
        )
        .await;
    admin
        .put(&format!("/{realm}/users/{root}/groups/{group}"))
        .await;

    let dir = tempfile::tempdir().unwrap();
    let mut c = RespondConfig {
        enabled: true,
        mode: RespondMode::Automatic,
        target: RespondTarget::Keycloak,
        state_dir: dir.path().join("state"),
        ..RespondConfig::default()
    };
    c.keycloak.base_url = Some(base.clone());
    c.keycloak.realm = Some(realm.clone());
    c.keycloak.grant = KeycloakGrant::Password;
    c.keycloak.username = Some(admin_user);
    c.keycloak.password = SecretRef {
        file: None,
        env: Some("AUTHWATCH_KEYCLOAK_PASSWORD".to_owned()),
    };
    c.allow_list.groups = vec!["breakglass".to_owned()];
    let audit = MemoryAudit::default();
    let mut r = Responder::new(&c, ResponseClock::wall(), vec![Box::new(audit.clone())]).unwrap();
    let now = ResponseClock::wall().now_ms();

    // The alert names the account by its email (login with email).
    let out = r
        .handle(&alert(
            "mfa_fatigue_success",
            "alice@example.com",
            Some(&realm),
            now,
        ))
        .await
        .unwrap();
    let decisions: Vec<_> = out
        .iter()
        .map(|o| (o.unmapped.action, o.unmapped.decision))
        .collect();
    assert_eq!(
        decisions,
        vec![
            (ResponseAction::Suspend, Decision::Executed),
            (ResponseAction::RevokeSessions, Decision::Executed)
        ],
        "{out:#?}"
    );
    assert_eq!(out[0].user.uid.as_deref(), Some(alice.as_str()));
    let user = admin.get(&format!("/{realm}/users/{alice}")).await;
    assert_eq!(user["enabled"], false);

    let out = r
        .handle(&alert("mfa_fatigue_success", "root", Some(&realm), now))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Refused);
    assert_eq!(
        out[0].unmapped.reason.as_deref(),
        Some("allow_listed_group")
    );
    let user = admin.get(&format!("/{realm}/users/{root}")).await;
    assert_eq!(user["enabled"], true);

    let out = r
        .handle(&alert("mfa_fatigue_success", "nobody", Some(&realm), now))
        .await
        .unwrap();
    assert_eq!(out[0].unmapped.decision, Decision::Failed);
    assert!(
        out[0].status_detail.contains("no account"),
        "{}",
        out[0].status_detail
    );

    admin.delete(&format!("/{realm}")).await;
}
