//! A generic webhook: each action is POSTed as JSON, signed with HMAC-SHA256.
//!
//! Headers: `X-Authwatch-Timestamp: <unix seconds>`, `X-Authwatch-Signature: sha256=<hex>` over
//! `"<timestamp>.<body>"` (the timestamp is signed so that a captured request cannot be replayed
//! later), and `Idempotency-Key` (the same for every retry of one action).

use super::{ActionContext, AdapterError, Outcome, Subject, base_url, configured_url};
use crate::http::Http;
use crate::secret::Secret;
use authwatch_pipeline::config::{RespondWebhook, ResponseAction};
use hmac::{KeyInit, Mac};
use reqwest::Url;
use std::sync::Arc;

/// The webhook adapter.
pub struct WebhookAdapter {
    http: Arc<Http>,
    url: Url,
    secret: Secret,
}

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error branch cannot happen but is not unwrapped.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A signed JSON POST (shared by the webhook target and the pager).
pub(crate) async fn post_signed(
    http: &Http,
    what: &str,
    url: &Url,
    secret: Option<&Secret>,
    idempotency_key: &str,
    body: &serde_json::Value,
) -> Result<crate::http::Reply, crate::http::CallError> {
    let bytes = serde_json::to_vec(body).map_err(|e| crate::http::CallError::Request {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    http.send(what, || {
        // A fresh timestamp and signature per attempt: receivers reject stale timestamps.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut r = http
            .client()
            .post(url.clone())
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", idempotency_key)
            .header("X-Authwatch-Timestamp", now.to_string())
            .body(bytes.clone());
        if let Some(secret) = secret {
            r = r.header("X-Authwatch-Signature", sign(secret, now, &bytes));
        }
        r
    })
    .await
}

impl WebhookAdapter {
    /// From `[respond.webhook]`; the secret is required.
    pub fn from_config(config: &RespondWebhook, http: Arc<Http>) -> Result<Self, AdapterError> {
        Ok(WebhookAdapter {
            http,
            url: base_url(
                "respond.webhook.url",
                configured_url(
                    "respond.webhook.url",
                    config.url.as_deref(),
                    &config.url_from,
                )?
                .as_deref(),
            )?,
            secret: Secret::load("respond.webhook.secret", &config.secret)?,
        })
    }

    /// The receiver resolves accounts itself; group allow-lists cannot be checked here.
    pub(super) fn lookup(&self, account: &str) -> Subject {
        Subject {
            account: account.to_owned(),
            id: account.to_owned(),
            names: Vec::new(),
            email_login: None,
            suspended: false,
            status: None,
            groups: None,
        }
    }

    pub(super) async fn execute(
        &self,
        action: ResponseAction,
        subject: &Subject,
        context: &ActionContext,
    ) -> Result<Outcome, AdapterError> {
        let body = serde_json::json!({
            "version": 1,
            "action": action.as_str(),
            "account": subject.account,
            "tenant": context.tenant,
            "alert_id": context.alert_id,
            "rule_id": context.rule_id,
            "severity": context.severity,
        });
        let key = format!("{}:{}", context.alert_id, action.as_str());
        let reply = post_signed(
            &self.http,
            "webhook action",
            &self.url,
            Some(&self.secret),
            &key,
            &body,
        )
        .await?;
        Ok(Outcome::Done {
            attempts: reply.attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value from Python: hmac.new(b"key", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            sign(&Secret::new("key"), 1_700_000_000, br#"{"a":1}"#),
            "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        assert_ne!(
            sign(&Secret::new("key"), 1_700_000_001, br#"{"a":1}"#),
            sign(&Secret::new("key"), 1_700_000_000, br#"{"a":1}"#)
        );
    }
}
