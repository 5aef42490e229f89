//! The responder's time source: wall time when live, event time in replay and in tests.

use governor::nanos::Nanos;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where "now" comes from, for rate limits, incident expiry, the circuit breaker and paging.
///
/// - [`ResponseClock::wall`]: the system clock (live pipeline, `respond approve`).
/// - [`ResponseClock::event_time`]: a clock that only moves when told, to the newest alert time
///   seen ([`ResponseClock::observe`]) or by [`ResponseClock::advance`]. `replay` uses it, so
///   that the limits act as they would have on the live stream, whatever the replay speed, and
///   the outcome is the same on every run; tests use it to be deterministic and fast.
///
/// HTTP timeouts and retry backoff always use real time: they are about the remote server.
#[derive(Debug, Clone)]
pub struct ResponseClock {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Wall { origin: Instant, origin_ms: i64 },
    Manual(Arc<AtomicI64>),
}

impl ResponseClock {
    /// The system clock.
    pub fn wall() -> ResponseClock {
        ResponseClock {
            kind: Kind::Wall {
                origin: Instant::now(),
                origin_ms: system_ms(),
            },
        }
    }

    /// A manual clock starting at `start_ms` (milliseconds since the Unix epoch).
    pub fn event_time(start_ms: i64) -> ResponseClock {
        ResponseClock {
            kind: Kind::Manual(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Whether this clock follows event time.
    pub fn is_event_time(&self) -> bool {
        matches!(self.kind, Kind::Manual(_))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.kind {
            // Derived from a monotonic instant so that a system clock step cannot refill or
            // drain the buckets.
            Kind::Wall { origin, origin_ms } => {
                let elapsed = i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX);
                origin_ms.saturating_add(elapsed)
            }
            Kind::Manual(ms) => ms.load(Ordering::Acquire),
        }
    }

    /// Moves an event-time clock forward to `time_ms` if that is later (never backwards: alerts
    /// arrive slightly out of order). No effect on the wall clock.
    pub fn observe(&self, time_ms: i64) {
        if let Kind::Manual(ms) = &self.kind {
            ms.fetch_max(time_ms, Ordering::AcqRel);
        }
    }

    /// Moves an event-time clock forward by `by`. No effect on the wall clock.
    pub fn advance(&self, by: std::time::Duration) {
        if let Kind::Manual(ms) = &self.kind {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            ms.fetch_add(by, Ordering::AcqRel);
        }
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl governor::clock::Clock for ResponseClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let ms = u64::try_from(self.now_ms()).unwrap_or(0);
        Nanos::from(ms.saturating_mul(1_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_only_moves_forward() {
        let c = ResponseClock::event_time(1_000);
        c.observe(5_000);
        c.observe(3_000);
        assert_eq!(c.now_ms(), 5_000);
        c.advance(std::time::Duration::from_secs(1));
        assert_eq!(c.now_ms(), 6_000);
        let shared = c.clone();
        shared.observe(7_000);
        assert_eq!(c.now_ms(), 7_000);
    }

    #[test]
    fn wall_clock_is_near_system_time() {
        let c = ResponseClock::wall();
        assert!((c.now_ms() - system_ms()).abs() < 1_000);
        c.observe(0);
        assert!(c.now_ms() > 1_600_000_000_000);
    }
}
