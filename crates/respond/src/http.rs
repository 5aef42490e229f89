//! Every outgoing call: a timeout per attempt, retries with exponential backoff and full jitter
//! on 429, 5xx, timeouts and connection errors, and `Retry-After` honoured up to a bound.

use authwatch_pipeline::config::RespondHttp;
use rand::Rng;
use rand::SeedableRng;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A call that did not succeed. Whose fault and whether to try again later are part of the
/// variant: [`CallError::retry_later`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Every attempt timed out.
    #[error("{what}: no answer within the timeout ({attempts} attempts)")]
    Timeout {
        /// The call.
        what: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The server answered with an error status (after retries if it was retryable).
    #[error("{what}: HTTP {status} after {attempts} attempts: {body}")]
    Status {
        /// The call.
        what: String,
        /// The last status.
        status: u16,
        /// The start of the answer's body.
        body: String,
        /// Attempts made.
        attempts: u32,
        /// The last answer's `Retry-After`, if it had one.
        retry_after: Option<Duration>,
        /// An earlier attempt got no answer after its request may have reached the server (a
        /// timeout, a connection broken after sending): the server may have carried that
        /// attempt out, and this answer may be its refusal of a repeat (Okta answers 400 to
        /// suspending a user it just suspended).
        after_unanswered: bool,
    },
    /// The connection failed (refused, reset, TLS).
    #[error("{what}: {message} ({attempts} attempts)")]
    Transport {
        /// The call.
        what: String,
        /// What failed.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The server asked to wait longer than `respond.http.max_retry_after`.
    #[error("{what}: the server asks to retry after {seconds}s, longer than allowed")]
    RetryAfterTooLong {
        /// The call.
        what: String,
        /// The requested wait.
        seconds: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// The answer was not what the API documents.
    #[error("{what}: unexpected answer: {message}")]
    Decode {
        /// The call.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The request could not be built (bad URL in config).
    #[error("{what}: {message}")]
    Request {
        /// The call.
        what: String,
        /// What is wrong.
        message: String,
    },
}

impl CallError {
    /// Whether the remote side was unavailable (timeouts, connection errors, 429, 5xx): the
    /// action may succeed later, and the failure counts towards the circuit breaker.
    pub fn retry_later(&self) -> bool {
        match self {
            CallError::Timeout { .. }
            | CallError::Transport { .. }
            | CallError::RetryAfterTooLong { .. } => true,
            CallError::Status { status, .. } => *status == 429 || *status >= 500,
            CallError::Decode { .. } | CallError::Request { .. } => false,
        }
    }

    /// HTTP attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::Timeout { attempts, .. }
            | CallError::Status { attempts, .. }
            | CallError::Transport { attempts, .. }
            | CallError::RetryAfterTooLong { attempts, .. } => *attempts,
            CallError::Decode { .. } | CallError::Request { .. } => 1,
        }
    }

    /// How long the server asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            CallError::RetryAfterTooLong { seconds, .. } => Some(Duration::from_secs(*seconds)),
            _ => None,
        }
    }

    /// Whether the server refused the call after an earlier attempt of it went unanswered, so
    /// that the refusal may be of a repeat of a request already carried out: a caller of a
    /// call that is not idempotent reads the state back before calling it a failure.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            CallError::Status {
                after_unanswered: true,
                ..
            }
        )
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status (2xx).
    pub status: u16,
    /// The `Link` header (Okta paging).
    pub link: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// Attempts it took.
    pub attempts: u32,
}

impl Reply {
    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| CallError::Decode {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }
}

/// The HTTP client with the retry policy.
pub struct Http {
    client: reqwest::Client,
    settings: RespondHttp,
    rng: Mutex<rand_chacha::ChaCha8Rng>,
}

impl Http {
    /// A client with `settings`. Installs rustls' ring provider as the process default if none
    /// is installed yet (the build carries no other).
    pub fn new(settings: &RespondHttp) -> Result<Http, CallError> {
        // Another component may have installed a provider first; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            // A redirect is never followed: an identity provider's API does not redirect its
            // actions, and one that does (an expired session at a proxy, a wrong base URL)
            // sends the call to a login page whose `200` would pass for the action's success,
            // with the token sent along to wherever it points. The 3xx is the answer: a
            // refusal (`CallError::Status`, not retried).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout.0)
            .connect_timeout(settings.timeout.0)
            .user_agent(concat!("authwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Request {
                what: "HTTP client".to_owned(),
                message: e.to_string(),
            })?;
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Http {
            client,
            settings: settings.clone(),
            rng: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    /// The underlying client, to build requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request `build` makes (called once per attempt), retrying as configured.
    /// `what` names the call in errors and logs (never with secrets).
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, CallError> {
        let max = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        // Whether an attempt may have reached the server without its answer reaching us.
        let mut unanswered = false;
        loop {
            attempt += 1;
            // reqwest's own timeout covers the request; this one also bounds reading the body.
            let outcome = tokio::time::timeout(self.settings.timeout.0, async {
                let response = build().send().await?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let link = response
                    .headers()
                    .get(reqwest::header::LINK)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>((status, retry_after, link, body))
            })
            .await;
            let (error, retry_after) = match outcome {
                Err(_elapsed) => {
                    unanswered = true;
                    (
                        CallError::Timeout {
                            what: what.to_owned(),
                            attempts: attempt,
                        },
                        None,
                    )
                }
                Ok(Err(e)) if e.is_timeout() => {
                    unanswered = true;
                    (
                        CallError::Timeout {
                            what: what.to_owned(),
                            attempts: attempt,
                        },
                        None,
                    )
                }
                Ok(Err(e)) if e.is_builder() => {
                    return Err(CallError::Request {
                        what: what.to_owned(),
                        message: describe(e),
                    });
                }
                Ok(Err(e)) => {
                    // A connection never made sent nothing; any other break may have come
                    // after the request was sent.
                    unanswered |= !e.is_connect();
                    (
                        CallError::Transport {
                            what: what.to_owned(),
                            message: describe(e),
                            attempts: attempt,
                        },
                        None,
                    )
                }
                Ok(Ok((status, retry_after, link, body))) => {
                    if (200..300).contains(&status) {
                        return Ok(Reply {
                            status,
                            link,
                            body,
                            attempts: attempt,
                        });
                    }
                    let error = CallError::Status {
                        what: what.to_owned(),
                        status,
                        body: snippet(&body),
                        attempts: attempt,
                        retry_after,
                        after_unanswered: unanswered,
                    };
                    if !error.retry_later() {
                        return Err(error);
                    }
                    (error, retry_after)
                }
            };
            if attempt >= max {
                return Err(error);
            }
            let wait = match retry_after {
                Some(wait) if wait > self.settings.max_retry_after.0 => {
                    return Err(CallError::RetryAfterTooLong {
                        what: what.to_owned(),
                        seconds: wait.as_secs(),
                        attempts: attempt,
                    });
                }
                Some(wait) => wait,
                None => self.backoff(attempt),
            };
            tracing::info!(
                call = what,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "responder call failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Full jitter: uniform in [0, min(max, base · 2^(attempt-1))] (AWS architecture blog,
    /// "Exponential Backoff And Jitter"), so that many clients do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.backoff_base.0.as_millis() as u64;
        let cap = self.settings.backoff_max.0.as_millis() as u64;
        let ceiling = base
            .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(30))
            .min(cap);
        let ms = match self.rng.lock() {
            Ok(mut rng) => rng.random_range(0..=ceiling),
            Err(_) => ceiling,
        };
        Duration::from_millis(ms)
    }
}

/// `Retry-After` is either seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.replace(['\n', '\r'], " ")
}

/// A transport error as a sentence without its URL: reqwest names the whole URL, and webhook
/// URLs (Slack, Teams, pager services) carry their credentials in the path or query. The
/// message goes to audit records (`status_detail`) and logs, so it names only the scheme, host
/// and port.
fn describe(e: reqwest::Error) -> String {
    let origin = e
        .url()
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .map(|o| o.ascii_serialization());
    let chain = error_chain(&e.without_url());
    match origin {
        Some(origin) => format!("{chain} (to {origin})"),
        None => chain,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let settings = RespondHttp {
            backoff_base: authwatch_event::DurationText(Duration::from_millis(100)),
            backoff_max: authwatch_event::DurationText(Duration::from_millis(1000)),
            ..RespondHttp::default()
        };
        let http = Http::new(&settings).unwrap();
        let waits: Vec<Duration> = (0..200).map(|_| http.backoff(3)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(400)));
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter");
        assert!((0..50).all(|_| http.backoff(20) <= Duration::from_millis(1000)));
    }
}
