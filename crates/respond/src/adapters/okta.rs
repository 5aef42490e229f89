//! Okta: `POST /api/v1/users/{id}/lifecycle/suspend`, `DELETE /api/v1/users/{id}/sessions`,
//! `POST /api/v1/users/{id}/lifecycle/reset_factors`, with an API token (`SSWS`).

use super::{
    AdapterError, Outcome, Subject, base_url, endpoint, follow_next, next_link, push_group,
};
use crate::http::Http;
use crate::secret::Secret;
use authwatch_pipeline::config::{RespondOkta, ResponseAction};
use reqwest::{Method, Url};
use serde::Deserialize;
use std::sync::Arc;

/// The Okta adapter.
pub struct OktaAdapter {
    http: Arc<Http>,
    base: Url,
    token: Secret,
}

#[derive(Deserialize)]
struct OktaUser {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    profile: Option<OktaProfile>,
}

#[derive(Deserialize)]
struct OktaProfile {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Deserialize)]
struct OktaGroup {
    id: String,
    #[serde(default)]
    profile: Option<OktaGroupProfile>,
}

#[derive(Deserialize)]
struct OktaGroupProfile {
    #[serde(default)]
    name: Option<String>,
}

/// Okta answers a lookup by id, login or login short name; guard against a runaway paging loop.
const MAX_GROUP_PAGES: usize = 50;

/// Names `GET /api/v1/users/{name}` resolves to something else than a user of that name: `me`
/// is the API token's owner (an administrator), and `.`/`..` would leave the path.
const RESERVED: &[&str] = &["me", ".", ".."];

impl OktaAdapter {
    /// From `[respond.okta]`.
    pub fn from_config(config: &RespondOkta, http: Arc<Http>) -> Result<Self, AdapterError> {
        Ok(OktaAdapter {
            http,
            base: base_url("respond.okta.base_url", config.base_url.as_deref())?,
            token: Secret::load("respond.okta.token", &config.token)?,
        })
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .client()
            .request(method, url)
            .header("Authorization", format!("SSWS {}", self.token.expose()))
            .header("Accept", "application/json")
    }

    pub(super) async fn lookup(&self, account: &str) -> Result<Subject, AdapterError> {
        let trimmed = account.trim();
        if trimmed.is_empty() || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(trimmed)) {
            return Err(AdapterError::Identity {
                target: "okta",
                account: account.to_owned(),
                message: "is a name Okta resolves to another account (`me` is the API \
                          token's owner): not looked up"
                    .to_owned(),
            });
        }
        let url = endpoint(&self.base, &["api", "v1", "users", account]);
        let user: OktaUser = match self
            .http
            .send("okta get user", || self.request(Method::GET, url.clone()))
            .await
        {
            Ok(reply) => reply.json("okta get user")?,
            Err(e) if e.status() == Some(404) => {
                return Err(AdapterError::NotFound {
                    target: "okta",
                    account: account.to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut groups = Vec::new();
        let mut next = Some(endpoint(
            &self.base,
            &["api", "v1", "users", &user.id, "groups"],
        ));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let reply = self
                .http
                .send("okta list groups", || {
                    self.request(Method::GET, url.clone())
                })
                .await?;
            let page: Vec<OktaGroup> = reply.json("okta list groups")?;
            for g in &page {
                let name = g.profile.as_ref().and_then(|p| p.name.as_deref());
                push_group(&mut groups, &g.id, name);
            }
            next = follow_next(
                &self.base,
                next_link(reply.link.as_deref()),
                "okta list groups",
            )?;
            if next.is_some() && pages >= MAX_GROUP_PAGES {
                // An incomplete list could miss an allow-listed group: fail rather than act.
                return Err(AdapterError::Config {
                    key: "respond.allow_list.groups",
                    message: format!("okta: {account} is in more than {pages} pages of groups"),
                });
            }
        }
        let names = user.profile.and_then(|p| p.login).into_iter().collect();
        Ok(Subject {
            account: account.to_owned(),
            suspended: suspended(&user.status),
            status: Some(user.status),
            id: user.id,
            names,
            email_login: None,
            groups: Some(groups),
        })
    }

    pub(super) async fn execute(
        &self,
        action: ResponseAction,
        subject: &Subject,
    ) -> Result<Outcome, AdapterError> {
        let id = subject.id.as_str();
        let (what, method, url) = match action {
            ResponseAction::Suspend => {
                if subject.suspended {
                    return Ok(Outcome::AlreadyDone);
                }
                // Okta refuses to suspend any other status (400, "Cannot suspend a user that is
                // not active"), on every alert again; a password-expired or in-recovery
                // account can still be taken over (the expired password is changed with the
                // stolen one), so a human must act, and the refusal must say so once.
                if let Some(status) = subject
                    .status
                    .as_deref()
                    .filter(|s| !s.eq_ignore_ascii_case("ACTIVE"))
                {
                    return Ok(Outcome::Inapplicable(format!(
                        "Okta suspends only ACTIVE users and this one is {status}"
                    )));
                }
                (
                    "okta suspend user",
                    Method::POST,
                    endpoint(
                        &self.base,
                        &["api", "v1", "users", id, "lifecycle", "suspend"],
                    ),
                )
            }
            ResponseAction::RevokeSessions => {
                let mut url = endpoint(&self.base, &["api", "v1", "users", id, "sessions"]);
                // Also revoke the OAuth refresh and access tokens issued to the user.
                url.query_pairs_mut().append_pair("oauthTokens", "true");
                ("okta clear sessions", Method::DELETE, url)
            }
            ResponseAction::ResetMfa => (
                "okta reset factors",
                Method::POST,
                endpoint(
                    &self.base,
                    &["api", "v1", "users", id, "lifecycle", "reset_factors"],
                ),
            ),
            ResponseAction::Notify => {
                return Err(AdapterError::Unsupported {
                    target: "okta",
                    action: "notify",
                });
            }
        };
        match self
            .http
            .send(what, || self.request(method.clone(), url.clone()))
            .await
        {
            Ok(reply) => Ok(Outcome::Done {
                attempts: reply.attempts,
            }),
            // Suspending is not idempotent at Okta: an attempt that timed out may have been
            // carried out, and the retry is then refused (400, "Cannot suspend a user that is
            // not active"). The user's status says which.
            Err(e) if action == ResponseAction::Suspend && e.maybe_applied() => {
                if self.is_suspended(subject).await {
                    Ok(Outcome::AlreadyDone)
                } else {
                    Err(e.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `subject` is suspended now, read back as it was looked up (by the alert's name
    /// of the account, which the lookup checked resolves to this user) and only if the answer
    /// is the same user; false when it cannot be read: the refusal then stands.
    async fn is_suspended(&self, subject: &Subject) -> bool {
        let url = endpoint(&self.base, &["api", "v1", "users", &subject.account]);
        let user = match self
            .http
            .send("okta get user", || self.request(Method::GET, url.clone()))
            .await
        {
            Ok(reply) => reply.json::<OktaUser>("okta get user"),
            Err(e) => Err(e),
        };
        match user {
            Ok(user) => user.id == subject.id && suspended(&user.status),
            Err(e) => {
                tracing::warn!(error = %e, "okta: cannot read back the user's status");
                false
            }
        }
    }
}

/// Whether an Okta user status is suspended (or beyond: deprovisioned users cannot sign in).
fn suspended(status: &str) -> bool {
    matches!(status, "SUSPENDED" | "DEPROVISIONED")
}
