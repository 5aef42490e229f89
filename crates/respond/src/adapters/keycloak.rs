//! Keycloak admin REST API: `PUT /admin/realms/{realm}/users/{id}` `{"enabled": false}`,
//! `POST …/users/{id}/logout`, OTP/WebAuthn credential deletion for MFA reset; a token from the
//! client-credentials or password grant.

use super::{
    AdapterError, Outcome, Subject, TokenCache, base_url, bearer_call, endpoint, push_group,
};
use crate::http::{Http, Reply};
use crate::secret::Secret;
use authwatch_pipeline::config::{KeycloakGrant, RespondKeycloak, ResponseAction};
use reqwest::{Method, Url};
use serde::Deserialize;
use std::sync::Arc;

/// The Keycloak adapter.
pub struct KeycloakAdapter {
    http: Arc<Http>,
    base: Url,
    realm: String,
    token_url: Url,
    client_id: String,
    grant: Grant,
    token: TokenCache,
}

enum Grant {
    ClientCredentials { secret: Secret },
    Password { username: String, password: Secret },
}

#[derive(Deserialize)]
struct KcUser {
    id: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize)]
struct KcGroup {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
struct KcCredential {
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
}

/// Credential types that are second factors; `password` stays.
const MFA_CREDENTIALS: &[&str] = &[
    "otp",
    "webauthn",
    "webauthn-passwordless",
    "recovery-authn-codes",
];
const GROUP_PAGE: usize = 500;
const MAX_PAGES: usize = 50;

impl KeycloakAdapter {
    /// From `[respond.keycloak]`.
    pub fn from_config(config: &RespondKeycloak, http: Arc<Http>) -> Result<Self, AdapterError> {
        let base = base_url("respond.keycloak.base_url", config.base_url.as_deref())?;
        let realm = config.realm.clone().ok_or(AdapterError::Config {
            key: "respond.keycloak.realm",
            message: "is required for target keycloak".to_owned(),
        })?;
        let grant = match config.grant {
            KeycloakGrant::ClientCredentials => Grant::ClientCredentials {
                secret: Secret::load("respond.keycloak.client_secret", &config.client_secret)?,
            },
            KeycloakGrant::Password => Grant::Password {
                username: config.username.clone().ok_or(AdapterError::Config {
                    key: "respond.keycloak.username",
                    message: "is required with grant = \"password\"".to_owned(),
                })?,
                password: Secret::load("respond.keycloak.password", &config.password)?,
            },
        };
        let token_url = endpoint(
            &base,
            &[
                "realms",
                &config.auth_realm,
                "protocol",
                "openid-connect",
                "token",
            ],
        );
        Ok(KeycloakAdapter {
            http,
            base,
            realm,
            token_url,
            client_id: config.client_id.clone(),
            grant,
            token: TokenCache::default(),
        })
    }

    async fn token(&self) -> Result<Secret, AdapterError> {
        self.token
            .get(|| {
                self.http.send("keycloak token", || {
                    let request = self.http.client().post(self.token_url.clone());
                    match &self.grant {
                        Grant::ClientCredentials { secret } => request.form(&[
                            ("grant_type", "client_credentials"),
                            ("client_id", self.client_id.as_str()),
                            ("client_secret", secret.expose()),
                        ]),
                        Grant::Password { username, password } => request.form(&[
                            ("grant_type", "password"),
                            ("client_id", self.client_id.as_str()),
                            ("username", username.as_str()),
                            ("password", password.expose()),
                        ]),
                    }
                })
            })
            .await
    }

    fn admin(&self, segments: &[&str]) -> Url {
        let mut all = vec!["admin", "realms", self.realm.as_str()];
        all.extend_from_slice(segments);
        endpoint(&self.base, &all)
    }

    async fn call(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, AdapterError> {
        bearer_call(
            &self.http,
            &self.token,
            || self.token(),
            what,
            method,
            url,
            body,
        )
        .await
    }

    async fn users_by(&self, field: &str, account: &str) -> Result<Vec<KcUser>, AdapterError> {
        let mut url = self.admin(&["users"]);
        url.query_pairs_mut()
            .append_pair(field, account)
            .append_pair("exact", "true");
        Ok(self
            .call("keycloak find user", Method::GET, &url, None)
            .await?
            .json("keycloak find user")?)
    }

    /// The user `account` names, and whether it was found by its e-mail.
    async fn find_user(&self, account: &str) -> Result<Option<(KcUser, bool)>, AdapterError> {
        // Alerts name accounts by login; in Keycloak that is the username or, with
        // "login with email", the email.
        let by_name = self.users_by("username", account).await?;
        if let Some(u) = by_name
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(account))
        {
            return Ok(Some((u, false)));
        }
        let mut by_email: Vec<KcUser> = self
            .users_by("email", account)
            .await?
            .into_iter()
            .filter(|u| {
                u.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(account))
            })
            .collect();
        // A realm may allow duplicate e-mails: then the e-mail names no one account, and
        // picking one could act on another person.
        if by_email.len() > 1 {
            return Err(AdapterError::Identity {
                target: "keycloak",
                account: account.to_owned(),
                message: format!(
                    "is the e-mail of {} accounts in the realm: not one account",
                    by_email.len()
                ),
            });
        }
        Ok(by_email.pop().map(|u| (u, true)))
    }

    pub(super) async fn lookup(&self, account: &str) -> Result<Subject, AdapterError> {
        let (user, by_email) =
            self.find_user(account)
                .await?
                .ok_or_else(|| AdapterError::NotFound {
                    target: "keycloak",
                    account: account.to_owned(),
                })?;
        let mut groups = Vec::new();
        for page in 0..MAX_PAGES {
            let mut url = self.admin(&["users", &user.id, "groups"]);
            url.query_pairs_mut()
                .append_pair("first", &(page * GROUP_PAGE).to_string())
                .append_pair("max", &GROUP_PAGE.to_string());
            let batch: Vec<KcGroup> = self
                .call("keycloak list groups", Method::GET, &url, None)
                .await?
                .json("keycloak list groups")?;
            let n = batch.len();
            for g in batch {
                push_group(&mut groups, &g.id, g.name.as_deref());
                if let Some(path) = g.path {
                    // A subgroup's path names its parents: membership of /admins/oncall
                    // protects like membership of /admins.
                    for parent in path.split('/').filter(|p| !p.is_empty()) {
                        groups.push(parent.to_lowercase());
                    }
                    groups.push(path.to_lowercase());
                }
            }
            if n < GROUP_PAGE {
                let names = Some(user.username)
                    .filter(|n| !n.is_empty())
                    .into_iter()
                    .collect();
                return Ok(Subject {
                    account: account.to_owned(),
                    id: user.id,
                    names,
                    email_login: if by_email { user.email } else { None },
                    suspended: !user.enabled,
                    status: None,
                    groups: Some(groups),
                });
            }
        }
        Err(AdapterError::Config {
            key: "respond.allow_list.groups",
            message: format!("keycloak: {account} is in too many groups to check"),
        })
    }

    pub(super) async fn execute(
        &self,
        action: ResponseAction,
        subject: &Subject,
    ) -> Result<Outcome, AdapterError> {
        let id = subject.id.as_str();
        let reply = match action {
            ResponseAction::Suspend => {
                if subject.suspended {
                    return Ok(Outcome::AlreadyDone);
                }
                let body = serde_json::json!({ "enabled": false });
                self.call(
                    "keycloak disable user",
                    Method::PUT,
                    &self.admin(&["users", id]),
                    Some(&body),
                )
                .await?
            }
            ResponseAction::RevokeSessions => {
                self.call(
                    "keycloak logout user",
                    Method::POST,
                    &self.admin(&["users", id, "logout"]),
                    None,
                )
                .await?
            }
            ResponseAction::ResetMfa => {
                let credentials: Vec<KcCredential> = self
                    .call(
                        "keycloak list credentials",
                        Method::GET,
                        &self.admin(&["users", id, "credentials"]),
                        None,
                    )
                    .await?
                    .json("keycloak list credentials")?;
                let mut attempts = 0;
                for c in credentials
                    .iter()
                    .filter(|c| MFA_CREDENTIALS.contains(&c.kind.as_str()))
                {
                    let deleted = self
                        .call(
                            "keycloak delete credential",
                            Method::DELETE,
                            &self.admin(&["users", id, "credentials", &c.id]),
                            None,
                        )
                        .await;
                    attempts += super::deleted(deleted)?;
                }
                return Ok(Outcome::Done { attempts });
            }
            ResponseAction::Notify => {
                return Err(AdapterError::Unsupported {
                    target: "keycloak",
                    action: "notify",
                });
            }
        };
        Ok(Outcome::Done {
            attempts: reply.attempts,
        })
    }
}
