//! authwatch's automated responder: severe alerts become account suspensions at the identity
//! provider — safely before quickly.
//!
//! ```text
//! alert ─► policy (rule, severity → actions) ─► tenant served? ─► allow-lists
//!       ─► one incident per account
//!       ─► mode (dry-run │ approval → pending store │ automatic)
//!       ─► circuit breaker ─► rate limits (governor: global, per tenant) ─┬─► adapter ─► IdP
//!                                                                         └─► queue + page
//! every decision ─► OCSF Account Change (3001) audit record ─► file / audit topic
//! ```
//!
//! - [`Responder`] is the whole decision path; its [`ResponseState`] (incidents, queue,
//!   breaker) snapshots to bytes for the runtime's checkpoint, so a restart repeats no action.
//! - [`Adapter`]: Okta, Microsoft Graph, Keycloak and a signed webhook, over one HTTP client
//!   with timeouts, retries (backoff + jitter, `Retry-After`) ([`http`]).
//! - [`ResponseClock`]: wall time live; event time in replay and tests.
//! - [`Secret`]: secrets from files or environment variables, never printed.
//! - [`PendingStore`]: what waits for a human (`authwatch respond list | approve | reject`).
//!
//! See docs/RESPONSE.md.
#![deny(missing_docs)]

pub mod adapters;
pub mod audit;
pub mod clock;
pub mod http;
pub mod policy;
pub mod responder;
pub mod secret;
pub mod state;
pub mod store;
pub mod tap;

pub use adapters::{Adapter, AdapterError};
pub use audit::{AuditRecord, AuditSink, Decision, JsonLinesAudit, MemoryAudit};
pub use clock::ResponseClock;
pub use responder::{RespondError, Responder};
pub use secret::{Secret, SecretError};
pub use state::ResponseState;
pub use store::{PendingAction, PendingStatus, PendingStore, StoreError};
pub use tap::{
    INBOX_PART, ResponderThread, RunReport, STATE_PART, SharedCounts, StateSaver, TeeSink,
    saved_inbox,
};

/// The metric of response decisions (Prometheus form), labelled `action` and `result`.
pub const ACTIONS_METRIC: &str = "authwatch_response_actions_total";
