//! Deterministic authentication traffic with injected attacks, and the scorer of detections.
//!
//! [`generate`] simulates the Okta System Log of a company with offices in several time zones:
//! users sign in on weekdays during their local working hours, pass their MFA factor and open
//! SSO applications; some work from home or over the corporate VPN, some travel between offices.
//! Into that traffic it mixes every ordinary MFA failure cause the `triage_*` rules know (typos,
//! clock drift, undelivered pushes, blocked push at an office firewall, provider outages,
//! lockouts …) and
//! attacks (push bombing, credential stuffing, password spraying, brute force, impossible
//! travel …). Besides the classic shapes of each attack it injects evasive variants that stay
//! under the usual thresholds (push bombing paced over an hour, a spray of one try per account,
//! a slow spray rotating over one network's addresses, a brute force cycling the login's letter
//! case) and benign look-alikes that cross them (colleagues mistyping a changed password behind
//! one office egress, a user approving ten pushes an application asks for in minutes), so that
//! a detector tuned to the classic shapes does not score perfectly by construction. Benign
//! geography that a naive detector takes for an attack is there too (a corporate VPN that
//! comes out in another country, new laptops at home, a loaner laptop on a trip, which
//! new_device_geo reports by design and is labelled), and attackers do not all give themselves
//! away by their client: many name a current browser, some the victim's own. It streams
//! the events in time order and returns the [`Label`]s: the alerts a perfect detector raises,
//! one that knows the tenant's corporate VPN egress ([`vpn_egress`]) as a deployment knows its
//! own (benign look-alikes carry none, so an attack alert on them is a false positive).
//! [`evaluate`] scores a detector's alerts against those labels.
//!
//! The same [`GenConfig`] always produces byte-identical output: all randomness comes from
//! ChaCha8 streams seeded from `seed`, and nothing depends on the clock or hash-map order.
//!
//! ```
//! use authwatch_gen::{GenConfig, generate, evaluate, EvalOptions};
//!
//! let cfg = GenConfig { users: 40, days: 1, ..GenConfig::default() };
//! let mut events = Vec::new();
//! let labels = generate(&cfg, &mut |ev| {
//!     events.push(ev.clone());
//!     Ok::<(), std::convert::Infallible>(())
//! })
//! .unwrap();
//! assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
//! assert!(!labels.is_empty());
//!
//! // A detector that raised nothing finds nothing.
//! let report = evaluate(&labels, &[], &EvalOptions::default());
//! assert_eq!(report.total.true_positives, 0);
//! println!("{report}");
//! ```
#![deny(missing_docs)]

mod attacks;
mod benign;
mod config;
mod engine;
mod eval;
mod label;
mod plan;
mod population;
mod variants;
mod world;

pub use config::{ConfigError, DEFAULT_START_MS, GenConfig};
pub use engine::generate;
pub use eval::{CategoryScore, EvalOptions, EvalReport, entities_compatible, evaluate};
pub use label::{Label, categories};

/// The egress addresses of the generated tenant's corporate VPN concentrators (the same for
/// every [`GenConfig`]).
///
/// Some users come out of a concentrator in another country than where they are (a regional
/// hub; travellers working through the VPN back home), as in real sign-in logs. A deployment
/// lists its own VPN egress in `enrich.cidr_lists` with `located = false`, so that a sign-in
/// through it never counts as where the user is; without that, the generated traffic holds
/// benign impossible travel through the VPN, unlabelled.
pub fn vpn_egress() -> Vec<std::net::IpAddr> {
    world::OFFICES.iter().map(|o| o.vpn).collect()
}

/// Why generation stopped.
#[derive(Debug, thiserror::Error)]
pub enum GenError<E> {
    /// The configuration is invalid (the caller's fault; not retryable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The event sink failed (typically I/O); generation stopped at that event.
    #[error("event sink failed: {0}")]
    Sink(#[source] E),
    /// The generator broke one of its own guarantees (a bug; please report it).
    #[error("internal generator error: {0}")]
    Internal(String),
}
