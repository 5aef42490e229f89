//! Microsoft Graph (Entra ID): `PATCH /users/{id}` `{"accountEnabled": false}`,
//! `POST /users/{id}/revokeSignInSessions`, authentication-method deletion for MFA reset; an
//! app-only token from the client-credentials grant.

use super::{
    AdapterError, Outcome, Subject, TokenCache, base_url, bearer_call, endpoint, follow_next,
    push_group,
};
use crate::http::{Http, Reply};
use crate::secret::Secret;
use authwatch_pipeline::config::{RespondGraph, ResponseAction};
use reqwest::{Method, Url};
use serde::Deserialize;
use std::sync::Arc;

/// The Microsoft Graph adapter.
pub struct GraphAdapter {
    http: Arc<Http>,
    api: Url,
    token_url: Url,
    client_id: String,
    client_secret: Secret,
    token: TokenCache,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    #[serde(default)]
    account_enabled: Option<bool>,
    #[serde(default)]
    user_principal_name: Option<String>,
}

#[derive(Deserialize)]
struct GraphPage {
    #[serde(default)]
    value: Vec<GraphObject>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct GraphObject {
    #[serde(default)]
    id: String,
    #[serde(rename = "displayName", default)]
    display_name: Option<String>,
    #[serde(rename = "@odata.type", default)]
    odata_type: Option<String>,
}

const MAX_PAGES: usize = 50;

/// Authentication-method types that are second factors, and the collection each is deleted
/// from (`DELETE /users/{id}/authentication/{collection}/{method id}`). Passwords stay.
const MFA_METHODS: &[(&str, &str)] = &[
    (
        "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
        "microsoftAuthenticatorMethods",
    ),
    ("#microsoft.graph.phoneAuthenticationMethod", "phoneMethods"),
    (
        "#microsoft.graph.softwareOathAuthenticationMethod",
        "softwareOathMethods",
    ),
    ("#microsoft.graph.fido2AuthenticationMethod", "fido2Methods"),
    ("#microsoft.graph.emailAuthenticationMethod", "emailMethods"),
    (
        "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod",
        "windowsHelloForBusinessMethods",
    ),
    (
        "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
        "temporaryAccessPassMethods",
    ),
];

impl GraphAdapter {
    /// From `[respond.graph]`.
    pub fn from_config(config: &RespondGraph, http: Arc<Http>) -> Result<Self, AdapterError> {
        let tenant = config.tenant_id.as_deref().ok_or(AdapterError::Config {
            key: "respond.graph.tenant_id",
            message: "is required for target graph".to_owned(),
        })?;
        let client_id = config.client_id.clone().ok_or(AdapterError::Config {
            key: "respond.graph.client_id",
            message: "is required for target graph".to_owned(),
        })?;
        let authority = base_url("respond.graph.authority", Some(&config.authority))?;
        Ok(GraphAdapter {
            http,
            api: base_url("respond.graph.api_url", Some(&config.api_url))?,
            token_url: endpoint(&authority, &[tenant, "oauth2", "v2.0", "token"]),
            client_id,
            client_secret: Secret::load("respond.graph.client_secret", &config.client_secret)?,
            token: TokenCache::default(),
        })
    }

    async fn token(&self) -> Result<Secret, AdapterError> {
        self.token
            .get(|| {
                self.http.send("graph token", || {
                    self.http.client().post(self.token_url.clone()).form(&[
                        ("client_id", self.client_id.as_str()),
                        ("client_secret", self.client_secret.expose()),
                        ("scope", "https://graph.microsoft.com/.default"),
                        ("grant_type", "client_credentials"),
                    ])
                })
            })
            .await
    }

    /// One Graph call; on 401 the token is renewed once (it may have been revoked early).
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

    async fn pages(&self, what: &str, first: Url) -> Result<Vec<GraphObject>, AdapterError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let page: GraphPage = self.call(what, Method::GET, &url, None).await?.json(what)?;
            out.extend(page.value);
            next = follow_next(&self.api, page.next_link.as_deref(), what)?;
            if next.is_some() && pages >= MAX_PAGES {
                return Err(AdapterError::Config {
                    key: "respond.allow_list.groups",
                    message: format!("graph: more than {pages} pages for {what}"),
                });
            }
        }
        Ok(out)
    }

    pub(super) async fn lookup(&self, account: &str) -> Result<Subject, AdapterError> {
        let mut url = endpoint(&self.api, &["users", account]);
        url.query_pairs_mut()
            .append_pair("$select", "id,userPrincipalName,accountEnabled");
        let user: GraphUser = match self.call("graph get user", Method::GET, &url, None).await {
            Ok(reply) => reply.json("graph get user")?,
            Err(AdapterError::Call(e)) if e.status() == Some(404) => {
                return Err(AdapterError::NotFound {
                    target: "graph",
                    account: account.to_owned(),
                });
            }
            Err(e) => return Err(e),
        };
        // Transitive: a member of a nested group of an allow-listed group is protected too.
        let mut url = endpoint(&self.api, &["users", &user.id, "transitiveMemberOf"]);
        url.query_pairs_mut()
            .append_pair("$select", "id,displayName");
        let mut groups = Vec::new();
        for g in self.pages("graph list groups", url).await? {
            push_group(&mut groups, &g.id, g.display_name.as_deref());
        }
        Ok(Subject {
            account: account.to_owned(),
            suspended: user.account_enabled == Some(false),
            id: user.id,
            names: user.user_principal_name.into_iter().collect(),
            email_login: None,
            status: None,
            groups: Some(groups),
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
                let body = serde_json::json!({ "accountEnabled": false });
                let url = endpoint(&self.api, &["users", id]);
                self.call("graph disable user", Method::PATCH, &url, Some(&body))
                    .await?
            }
            ResponseAction::RevokeSessions => {
                let url = endpoint(&self.api, &["users", id, "revokeSignInSessions"]);
                self.call("graph revoke sessions", Method::POST, &url, None)
                    .await?
            }
            ResponseAction::ResetMfa => {
                let url = endpoint(&self.api, &["users", id, "authentication", "methods"]);
                let methods = self.pages("graph list methods", url).await?;
                let mut attempts = 0;
                for m in methods {
                    let Some((_, collection)) = MFA_METHODS
                        .iter()
                        .find(|(t, _)| Some(*t) == m.odata_type.as_deref())
                    else {
                        continue;
                    };
                    let url = endpoint(
                        &self.api,
                        &["users", id, "authentication", collection, &m.id],
                    );
                    let deleted = self
                        .call("graph delete method", Method::DELETE, &url, None)
                        .await;
                    attempts += super::deleted(deleted)?;
                }
                return Ok(Outcome::Done { attempts });
            }
            ResponseAction::Notify => {
                return Err(AdapterError::Unsupported {
                    target: "graph",
                    action: "notify",
                });
            }
        };
        Ok(Outcome::Done {
            attempts: reply.attempts,
        })
    }
}
