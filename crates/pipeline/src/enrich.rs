//! The enrich stage: context the raw event lacks.
//!
//! Stateless enrichment (geo-IP, ASN, anonymizers, CIDR tags, user agents, device fingerprints,
//! internal addresses) runs on the parallel workers through [`Enricher`]; the configured
//! implementation is `authwatch_enrich::EventEnricher`. Per-user profiles are stateful and
//! order-dependent, so the detect stage applies them (see the runtime).

use authwatch_event::AuthEvent;

/// Adds context to an event in place. Runs on the parallel worker threads, so it must be cheap
/// and thread-safe.
pub trait Enricher: Send + Sync {
    /// Enriches one event.
    fn enrich(&self, event: &mut AuthEvent);
}

impl Enricher for authwatch_enrich::EventEnricher {
    fn enrich(&self, event: &mut AuthEvent) {
        authwatch_enrich::EventEnricher::enrich(self, event);
    }
}
