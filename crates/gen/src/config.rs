//! What to generate.

use serde::{Deserialize, Serialize};

/// 2026-01-05T00:00:00Z, a Monday.
pub const DEFAULT_START_MS: i64 = 1_767_571_200_000;

/// The generator's settings. The same settings always give the same output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenConfig {
    /// Number of user accounts in the tenant (≥ 1).
    pub users: usize,
    /// Number of simulated days (≥ 1). Day `i` is each office's own local calendar day `i`
    /// after `start_ms`, so events span from about `start_ms − 10 h` (the UTC+10 office's
    /// morning) to `start_ms + days × 24 h + 8 h` (the UTC−8 offices' evening).
    pub days: u32,
    /// Seed of every random stream.
    pub seed: u64,
    /// Start of day 0, epoch milliseconds UTC; a UTC midnight (default 2026-01-05, a Monday).
    pub start_ms: i64,
    /// Tenant (Okta org) name; users are `first.last@<tenant>.co.jp`.
    pub tenant: String,
    /// Stop after this many events (benchmarks); only the labels of incidents whose events were
    /// all emitted are then returned.
    pub max_events: Option<u64>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            users: 300,
            days: 2,
            seed: 7,
            start_ms: DEFAULT_START_MS,
            tenant: "example".to_owned(),
            max_events: None,
        }
    }
}

/// An invalid [`GenConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `users` is out of range.
    #[error("users must be between 1 and 5000000, got {0}")]
    Users(usize),
    /// `days` is out of range.
    #[error("days must be between 1 and 3660, got {0}")]
    Days(u32),
    /// `start_ms` is not a UTC midnight or out of range.
    #[error("start_ms must be a UTC midnight between 1971 and 9000, got {0}")]
    Start(i64),
    /// The tenant name cannot form a domain.
    #[error("tenant must be 1-40 characters of a-z, 0-9 or '-', got {0:?}")]
    Tenant(String),
}

impl GenConfig {
    /// Checks every field once, before anything is generated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.users == 0 || self.users > 5_000_000 {
            return Err(ConfigError::Users(self.users));
        }
        if self.days == 0 || self.days > 3660 {
            return Err(ConfigError::Days(self.days));
        }
        const DAY: i64 = 86_400_000;
        if self.start_ms.rem_euclid(DAY) != 0
            || !(365 * DAY..=257_000_000_000_000).contains(&self.start_ms)
        {
            return Err(ConfigError::Start(self.start_ms));
        }
        let ok = !self.tenant.is_empty()
            && self.tenant.len() <= 40
            && self
                .tenant
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ConfigError::Tenant(self.tenant.clone()));
        }
        Ok(())
    }

    /// The e-mail domain of the tenant's users.
    pub fn domain(&self) -> String {
        format!("{}.co.jp", self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_starts_on_a_monday() {
        let cfg = GenConfig::default();
        cfg.validate().unwrap();
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        assert_eq!((cfg.start_ms / 86_400_000 + 3) % 7, 0);
        assert_eq!(
            authwatch_event::format_rfc3339_ms(cfg.start_ms).unwrap(),
            "2026-01-05T00:00:00.000Z"
        );
    }

    #[test]
    fn bad_fields_are_rejected() {
        let bad = |f: fn(&mut GenConfig)| {
            let mut c = GenConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.users = 0), ConfigError::Users(0));
        assert_eq!(bad(|c| c.days = 0), ConfigError::Days(0));
        assert!(matches!(bad(|c| c.start_ms += 1), ConfigError::Start(_)));
        assert!(matches!(
            bad(|c| c.tenant = "Ex ample".into()),
            ConfigError::Tenant(_)
        ));
    }
}
