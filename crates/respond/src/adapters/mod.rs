//! Identity-provider adapters: look an account up (id, state, groups) and carry out one action.
//!
//! Registration is an explicit `match` over [`Adapter`]; each provider lives in its own module
//! and speaks only the documented REST API.

mod graph;
mod keycloak;
mod okta;
pub(crate) mod webhook;

pub use graph::GraphAdapter;
pub use keycloak::KeycloakAdapter;
pub use okta::OktaAdapter;
pub use webhook::{WebhookAdapter, sign};

use crate::http::{CallError, Http, Reply};
use crate::secret::{Secret, SecretError};
use authwatch_pipeline::config::{RespondConfig, RespondTarget, ResponseAction};
use reqwest::Url;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An account as the identity provider knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The name the alert gave.
    pub account: String,
    /// The provider's id.
    pub id: String,
    /// The provider's unique login of the account (Okta `login`, Keycloak `username`, Entra
    /// UPN). The alert may spell the account another way the provider also resolves (an e-mail
    /// where the allow-list has the username), so the user allow-list is checked against this
    /// too. E-mail addresses are not: users can often set their own, and one matching the
    /// allow-list would exempt a compromised account.
    pub names: Vec<String>,
    /// The account's e-mail when the provider lets users sign in with it and it belongs to this
    /// account alone (Keycloak, found by `email=`): an alert may name the account by it. Not
    /// used for the allow-list (see `names`).
    pub email_login: Option<String>,
    /// Whether the account is already suspended / disabled.
    pub suspended: bool,
    /// The provider's own status of the account, where its actions depend on it (Okta
    /// `status`: only an `ACTIVE` user can be suspended).
    pub status: Option<String>,
    /// Names and ids of the groups it belongs to (directly or not, as the provider reports
    /// them); `None` when the target cannot tell (webhook).
    pub groups: Option<Vec<String>>,
}

impl Subject {
    /// Whether the provider's answer is the account `account` names: its id, its unique login
    /// or its sign-in e-mail, ignoring case. A provider resolves more than that — Okta a login's
    /// short name, or `me` (the API token's owner) — and acting on what such a name resolved to
    /// would act on another account than the alert's.
    pub fn is_account(&self, account: &str) -> bool {
        let account = account.to_lowercase();
        std::iter::once(&self.id)
            .chain(&self.names)
            .chain(&self.email_login)
            .any(|n| n.to_lowercase() == account)
    }
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out.
    Done {
        /// HTTP attempts it took, all calls together.
        attempts: u32,
    },
    /// Nothing to do: the account was already in the target state.
    AlreadyDone,
    /// The action cannot apply to the account as it stands (Okta suspends only `ACTIVE`
    /// users; one whose password expired or is in recovery is not). Nothing was called, and
    /// calling again would fail the same way: a human has to act. The reason says why.
    Inapplicable(String),
}

/// The facts of the alert an action answers, for targets that forward them (webhook).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionContext {
    /// The alert.
    pub alert_id: String,
    /// Its rule.
    pub rule_id: String,
    /// Its severity.
    pub severity: authwatch_event::Severity,
    /// The tenant.
    pub tenant: Option<String>,
}

/// An adapter could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// An HTTP call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The account does not exist at the provider. Not retryable.
    #[error("{target}: no account {account:?}")]
    NotFound {
        /// The provider.
        target: &'static str,
        /// The account.
        account: String,
    },
    /// A secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The adapter's configuration is incomplete or wrong.
    #[error("config key {key}: {message}")]
    Config {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The name does not name exactly one account the responder may act on: a reserved alias
    /// (Okta's `me`), or several accounts share it. Not retryable; refused as
    /// `identity_mismatch`.
    #[error("{target}: {account:?} {message}")]
    Identity {
        /// The provider.
        target: &'static str,
        /// The account as the alert names it.
        account: String,
        /// Why it is not one account.
        message: String,
    },
    /// The provider has no such action.
    #[error("{target} cannot {action}")]
    Unsupported {
        /// The provider.
        target: &'static str,
        /// The action.
        action: &'static str,
    },
}

impl AdapterError {
    /// Whether the provider was unavailable, so that the action may work later and the
    /// failure counts towards the circuit breaker.
    pub fn retry_later(&self) -> bool {
        matches!(self, AdapterError::Call(e) if e.retry_later())
    }

    /// How long the provider asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AdapterError::Call(e) => e.retry_after(),
            _ => None,
        }
    }

    /// HTTP attempts made by the failed call.
    pub fn attempts(&self) -> u32 {
        match self {
            AdapterError::Call(e) => e.attempts(),
            _ => 0,
        }
    }
}

/// The configured identity provider.
pub enum Adapter {
    /// Okta.
    Okta(OktaAdapter),
    /// Microsoft Graph.
    Graph(GraphAdapter),
    /// Keycloak.
    Keycloak(KeycloakAdapter),
    /// Generic webhook.
    Webhook(WebhookAdapter),
}

impl Adapter {
    /// Builds the adapter `config.target` names, loading its secrets; `None` for target
    /// `none`.
    pub fn from_config(
        config: &RespondConfig,
        http: Arc<Http>,
    ) -> Result<Option<Adapter>, AdapterError> {
        Ok(Some(match config.target {
            RespondTarget::None => return Ok(None),
            RespondTarget::Okta => Adapter::Okta(OktaAdapter::from_config(&config.okta, http)?),
            RespondTarget::Graph => Adapter::Graph(GraphAdapter::from_config(&config.graph, http)?),
            RespondTarget::Keycloak => {
                Adapter::Keycloak(KeycloakAdapter::from_config(&config.keycloak, http)?)
            }
            RespondTarget::Webhook => {
                Adapter::Webhook(WebhookAdapter::from_config(&config.webhook, http)?)
            }
        }))
    }

    /// The provider's name in audit records.
    pub fn name(&self) -> &'static str {
        match self {
            Adapter::Okta(_) => "okta",
            Adapter::Graph(_) => "graph",
            Adapter::Keycloak(_) => "keycloak",
            Adapter::Webhook(_) => "webhook",
        }
    }

    /// Looks the account up: id, state and groups. Read-only.
    pub async fn lookup(&self, account: &str) -> Result<Subject, AdapterError> {
        match self {
            Adapter::Okta(a) => a.lookup(account).await,
            Adapter::Graph(a) => a.lookup(account).await,
            Adapter::Keycloak(a) => a.lookup(account).await,
            Adapter::Webhook(a) => Ok(a.lookup(account)),
        }
    }

    /// Carries out `action` on `subject`.
    pub async fn execute(
        &self,
        action: ResponseAction,
        subject: &Subject,
        context: &ActionContext,
    ) -> Result<Outcome, AdapterError> {
        match self {
            Adapter::Okta(a) => a.execute(action, subject).await,
            Adapter::Graph(a) => a.execute(action, subject).await,
            Adapter::Keycloak(a) => a.execute(action, subject).await,
            Adapter::Webhook(a) => a.execute(action, subject, context).await,
        }
    }
}

/// `base` with `segments` appended, each percent-encoded (an account name can hold `/`, `?`
/// or `#`; it must never change the path).
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Parses a configured base URL.
/// The URL configured as `url`, or read from `url_from` (a file or an environment variable:
/// for a URL that carries its credential, which must not sit in the config file). Both set is a
/// configuration error; neither is `None`.
pub(crate) fn configured_url(
    key: &'static str,
    url: Option<&str>,
    url_from: &authwatch_pipeline::config::SecretRef,
) -> Result<Option<String>, AdapterError> {
    match (url, url_from.is_set()) {
        (Some(_), true) => Err(AdapterError::Config {
            key,
            message: "is set twice: give `url` or `url_from`, not both".to_owned(),
        }),
        (Some(url), false) => Ok(Some(url.to_owned())),
        (None, true) => {
            let url = crate::secret::Secret::load(key, url_from)?
                .expose()
                .to_owned();
            // Checked here, where the error can leave the value out: `base_url` quotes it.
            if base_url(key, Some(&url)).is_err() {
                return Err(AdapterError::Config {
                    key,
                    message: "from url_from is not an http(s) URL (the value is a secret: not \
                              shown)"
                        .to_owned(),
                });
            }
            Ok(Some(url))
        }
        (None, false) => Ok(None),
    }
}

pub(crate) fn base_url(key: &'static str, value: Option<&str>) -> Result<Url, AdapterError> {
    let value = value.ok_or(AdapterError::Config {
        key,
        message: "is required for this target".to_owned(),
    })?;
    let url = Url::parse(value).map_err(|e| AdapterError::Config {
        key,
        message: format!("{value:?} is not a URL: {e}"),
    })?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(AdapterError::Config {
            key,
            message: format!("{value:?} is not an http(s) URL"),
        });
    }
    Ok(url)
}

/// Whether a paging link stays on the origin of `base`: a provider's `next` link is followed
/// with the credentials, so it must never lead elsewhere.
/// The next page of a paged listing, from the link the provider gave (`None`: the last page).
///
/// A next page that cannot be followed — a link that does not parse, or one that leaves the
/// configured API's origin (the request would carry the API token elsewhere) — fails the call:
/// the listing would be incomplete, and for group memberships an incomplete list could miss an
/// allow-listed group.
pub(crate) fn follow_next(
    base: &Url,
    next: Option<&str>,
    what: &str,
) -> Result<Option<Url>, AdapterError> {
    let Some(link) = next else {
        return Ok(None);
    };
    let refuse = |why: String| AdapterError::Config {
        key: "respond.allow_list.groups",
        message: format!("{what}: the next page {link:?} {why}; the listing would be incomplete"),
    };
    let url = Url::parse(link).map_err(|e| refuse(format!("is not a URL ({e})")))?;
    if url.origin() != base.origin() {
        return Err(refuse(format!(
            "is not on {}",
            base.origin().ascii_serialization()
        )));
    }
    Ok(Some(url))
}

/// An OAuth access token and when to stop using it.
pub(crate) struct CachedToken {
    token: Secret,
    renew_at: Instant,
}

/// A token cache for the client-credentials and password grants.
#[derive(Default)]
pub(crate) struct TokenCache {
    slot: tokio::sync::Mutex<Option<CachedToken>>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` (a token endpoint call).
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, AdapterError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Reply, CallError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let reply = fetch().await?;
        let answer: TokenAnswer = reply.json("token endpoint")?;
        // Renew a minute early (or at half-life for short tokens) so no call races the expiry.
        let lifetime = answer.expires_in.unwrap_or(300);
        let margin = 60.min(lifetime / 2);
        let token = Secret::new(answer.access_token);
        *slot = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + Duration::from_secs(lifetime - margin),
        });
        Ok(token)
    }

    /// Forgets the token (after a 401).
    pub(crate) async fn invalidate(&self) {
        *self.slot.lock().await = None;
    }
}

/// Lower-cased group names and ids, for case-insensitive allow-list checks.
/// One call with a bearer token from `cache` (fetched by `fetch`); on 401 the token is renewed
/// once, as it may have been revoked before its expiry.
pub(crate) async fn bearer_call<F, Fut>(
    http: &Http,
    cache: &TokenCache,
    fetch: F,
    what: &str,
    method: reqwest::Method,
    url: &Url,
    body: Option<&serde_json::Value>,
) -> Result<Reply, AdapterError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Secret, AdapterError>>,
{
    for renewed in [false, true] {
        let token = fetch().await?;
        let result = http
            .send(what, || {
                let r = http
                    .client()
                    .request(method.clone(), url.clone())
                    .bearer_auth(token.expose())
                    .header("Accept", "application/json");
                match body {
                    Some(b) => r.json(b),
                    None => r,
                }
            })
            .await;
        match result {
            Err(e) if e.status() == Some(401) && !renewed => cache.invalidate().await,
            other => return Ok(other?),
        }
    }
    Err(AdapterError::Call(CallError::Status {
        what: what.to_owned(),
        status: 401,
        body: "unauthorized after renewing the token".to_owned(),
        attempts: 2,
        retry_after: None,
        after_unanswered: false,
    }))
}

/// The attempts of the deletion of one item (a credential, an authentication method), which
/// is done when the item is gone: a 404 that answers the retry of an attempt that went
/// unanswered (a timeout) says that attempt deleted it, not that the action failed.
pub(crate) fn deleted(result: Result<Reply, AdapterError>) -> Result<u32, AdapterError> {
    match result {
        Ok(reply) => Ok(reply.attempts),
        Err(AdapterError::Call(e)) if e.status() == Some(404) && e.maybe_applied() => {
            Ok(e.attempts())
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn push_group(groups: &mut Vec<String>, id: &str, name: Option<&str>) {
    groups.push(id.to_lowercase());
    if let Some(n) = name {
        groups.push(n.to_lowercase());
    }
}

/// The `rel="next"` target of an RFC 8288 `Link` header, as given (see [`follow_next`]).
pub(crate) fn next_link(header: Option<&str>) -> Option<&str> {
    header?.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim();
        is_next.then(|| target.strip_prefix('<')?.strip_suffix('>'))?
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn account_names_cannot_change_the_path() {
        let base = Url::parse("https://x.okta.com/").unwrap();
        let url = endpoint(&base, &["api", "v1", "users", "a/../b?c#d"]);
        assert_eq!(
            url.as_str(),
            "https://x.okta.com/api/v1/users/a%2F..%2Fb%3Fc%23d"
        );
        let base = Url::parse("https://graph.microsoft.com/v1.0").unwrap();
        assert_eq!(
            endpoint(&base, &["users", "u@x.com"]).as_str(),
            "https://graph.microsoft.com/v1.0/users/u@x.com"
        );
    }

    #[test]
    fn link_headers() {
        let h = "<https://x.okta.com/api/v1/users/1/groups?limit=2>; rel=\"self\", \
                 <https://x.okta.com/api/v1/users/1/groups?after=g2&limit=2>; rel=\"next\"";
        assert_eq!(
            next_link(Some(h)),
            Some("https://x.okta.com/api/v1/users/1/groups?after=g2&limit=2")
        );
        assert!(next_link(Some("<https://x/a>; rel=\"self\"")).is_none());
        let base = Url::parse("https://x.okta.com/").unwrap();
        assert_eq!(
            follow_next(&base, next_link(Some(h)), "okta")
                .unwrap()
                .unwrap()
                .as_str(),
            "https://x.okta.com/api/v1/users/1/groups?after=g2&limit=2"
        );
        assert!(follow_next(&base, None, "okta").unwrap().is_none());
        // A next page elsewhere, or one that does not parse, is an incomplete listing.
        for bad in [
            "https://evil.example/api/v1/users/1/groups?after=g2",
            "http://x.okta.com/api/v1/users/1/groups?after=g2",
            "/api/v1/users/1/groups?after=g2",
        ] {
            let e = follow_next(&base, Some(bad), "okta list groups").unwrap_err();
            assert!(
                e.to_string().contains("listing would be incomplete"),
                "{bad}: {e}"
            );
        }
    }
}
