//! Repeated events: the same provider record delivered twice.
//!
//! Overlapping exports, a collector that re-sends after a timeout and an upstream producer
//! without idempotence all deliver some records twice. Counted twice, five wrong passwords
//! become ten (a brute force) and a locked-out user's sign-in follows "an attack" (a critical
//! `credential_compromise`). An event is a repeat when an event with the same provider, tenant,
//! provider event id and event time was seen before in the same task.
//!
//! A repeat carries its original's event time, so it is either behind the watermark (late, and
//! dropped as such) or within the allowed lateness of the newest event. Only events at or after
//! the watermark are remembered, and at most [`DetectConfig::dedup_capacity`] of them (the oldest
//! remembered go first), so the memory is bounded whatever the rate.
//!
//! [`DetectConfig::dedup_capacity`]: crate::config::DetectConfig::dedup_capacity

use authwatch_event::AuthEvent;
use rustc_hash::FxHashSet;
use std::collections::VecDeque;

use crate::checkpoint::{CheckpointError, Checkpointed};

/// What identifies a delivery of one provider record: its event time and a 64-bit hash of
/// provider, tenant and event id. Two records that differ share it with odds of about one in
/// 2^64 per pair with the same millisecond.
type Mark = (i64, u64);

/// The events of one task seen at or after its watermark.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    capacity: usize,
    set: FxHashSet<Mark>,
    /// The same marks in arrival order, for forgetting.
    order: VecDeque<Mark>,
}

/// Snapshot format version (a byte before the marks).
const VERSION: u8 = 1;

impl Seen {
    /// Remembers up to `capacity` events; 0 turns the check off.
    pub(crate) fn new(capacity: usize) -> Self {
        Seen {
            capacity,
            ..Seen::default()
        }
    }

    /// Whether `event` repeats one seen before; remembers it if not. Events without a provider
    /// event id are never repeats: nothing tells two of them apart.
    pub(crate) fn repeat(&mut self, event: &AuthEvent) -> bool {
        if self.capacity == 0 || event.event_id.is_empty() {
            return false;
        }
        let mark = (event.time, mark_hash(event));
        if !self.set.insert(mark) {
            return true;
        }
        self.order.push_back(mark);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        false
    }

    /// Forgets the events behind `watermark`: a repeat of one of them is late anyway.
    pub(crate) fn expire(&mut self, watermark: i64) {
        while self
            .order
            .front()
            .is_some_and(|&(time, _)| time < watermark)
        {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// A stable hash (the same in every process: it is part of snapshots).
fn mark_hash(event: &AuthEvent) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    // Length-prefixed, so that no two (provider, tenant, id) triples spell the same bytes.
    for part in [
        event.provider.as_str(),
        event.tenant.as_str(),
        event.event_id.as_str(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.digest()
}

impl Checkpointed for Seen {
    fn name(&self) -> &str {
        "seen"
    }

    fn snapshot(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut bytes = Vec::with_capacity(1 + self.order.len() * 16);
        bytes.push(VERSION);
        for (time, hash) in &self.order {
            bytes.extend_from_slice(&time.to_le_bytes());
            bytes.extend_from_slice(&hash.to_le_bytes());
        }
        Ok(bytes)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let bad = |message: String| CheckpointError::Restore {
            part: "seen".to_owned(),
            message,
        };
        let (version, marks) = bytes.split_first().ok_or_else(|| bad("empty".to_owned()))?;
        if *version != VERSION {
            return Err(bad(format!("unknown version {version}")));
        }
        if marks.len() % 16 != 0 {
            return Err(bad(format!(
                "{} bytes of marks, not a multiple of 16",
                marks.len()
            )));
        }
        // A smaller capacity than the snapshot's keeps the newest (0: none).
        let mut restored = Seen::new(self.capacity);
        let stored = marks.len() / 16;
        let skip = stored - stored.min(self.capacity);
        for chunk in marks.chunks_exact(16).skip(skip) {
            let (time, hash) = chunk.split_at(8);
            let time = i64::from_le_bytes(time.try_into().map_err(|_| bad("short".into()))?);
            let hash = u64::from_le_bytes(hash.try_into().map_err(|_| bad("short".into()))?);
            if restored.set.insert((time, hash)) {
                restored.order.push_back((time, hash));
            }
        }
        *self = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_event::Text;

    fn event(provider: &str, tenant: &str, id: &str, time: i64) -> AuthEvent {
        AuthEvent {
            time,
            provider: Text::new(provider),
            tenant: Text::new(tenant),
            event_id: Text::new(id),
            ..AuthEvent::default()
        }
    }

    #[test]
    fn the_same_record_twice_is_a_repeat_and_nothing_else_is() {
        let mut seen = Seen::new(10);
        assert!(!seen.repeat(&event("okta", "acme", "e1", 100)));
        assert!(seen.repeat(&event("okta", "acme", "e1", 100)));
        // Another provider, tenant, id or time is another record.
        assert!(!seen.repeat(&event("entra", "acme", "e1", 100)));
        assert!(!seen.repeat(&event("okta", "beta", "e1", 100)));
        assert!(!seen.repeat(&event("okta", "acme", "e2", 100)));
        assert!(!seen.repeat(&event("okta", "acme", "e1", 101)));
        // Parts cannot run into each other.
        assert!(!seen.repeat(&event("okta", "acmee", "1", 100)));
        // Without an id nothing tells two events apart.
        assert!(!seen.repeat(&event("okta", "acme", "", 100)));
        assert!(!seen.repeat(&event("okta", "acme", "", 100)));
    }

    #[test]
    fn events_behind_the_watermark_and_beyond_the_capacity_are_forgotten() {
        let mut seen = Seen::new(3);
        for (id, t) in [("a", 10), ("b", 20), ("c", 30)] {
            assert!(!seen.repeat(&event("okta", "", id, t)));
        }
        seen.expire(20);
        assert_eq!(seen.len(), 2);
        assert!(!seen.repeat(&event("okta", "", "a", 10)), "forgotten");
        // Full: the oldest remembered goes.
        assert!(!seen.repeat(&event("okta", "", "d", 40)));
        assert_eq!(seen.len(), 3);
        assert!(seen.repeat(&event("okta", "", "d", 40)));
        assert!(!seen.repeat(&event("okta", "", "b", 20)), "pushed out");
        // Off: nothing is remembered.
        let mut off = Seen::new(0);
        assert!(!off.repeat(&event("okta", "", "a", 10)));
        assert!(!off.repeat(&event("okta", "", "a", 10)));
    }

    #[test]
    fn a_snapshot_restores_what_was_seen() {
        let mut seen = Seen::new(100);
        for i in 0..5 {
            seen.repeat(&event("okta", "acme", &format!("e{i}"), 1000 + i));
        }
        let bytes = seen.snapshot().unwrap_or_default();
        assert_eq!(bytes.len(), 1 + 5 * 16);
        let mut restored = Seen::new(100);
        assert!(restored.restore(&bytes).is_ok());
        assert!(restored.repeat(&event("okta", "acme", "e3", 1003)));
        assert_eq!(restored.snapshot().ok(), Some(bytes.clone()));
        // A smaller capacity keeps the newest.
        let mut small = Seen::new(2);
        assert!(small.restore(&bytes).is_ok());
        assert_eq!(small.len(), 2);
        assert!(small.repeat(&event("okta", "acme", "e4", 1004)));
        assert!(!small.repeat(&event("okta", "acme", "e0", 1000)));
        // Damage is an error, not a panic.
        assert!(Seen::new(10).restore(&[]).is_err());
        assert!(Seen::new(10).restore(&[9]).is_err());
        assert!(Seen::new(10).restore(&bytes[..20]).is_err());
    }
}
