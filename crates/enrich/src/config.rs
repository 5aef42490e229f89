//! `EnrichConfig`: what the enricher reads, and how much memory it may use.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that is out of range or inconsistent with another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("enrich config: {key}: {message}")]
pub struct ConfigError {
    /// The offending key, dotted (e.g. `profiles.max_users`).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

pub use authwatch_event::DurationText;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Most distinct CIDR tags: an address's tags are kept as a 64-bit set.
pub const MAX_CIDR_TAGS: usize = 64;

/// The enricher's configuration (`[enrich]` in the pipeline config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Enrich events at all. Default true; turn it off when the input is already enriched
    /// upstream (and to measure what enrichment costs).
    pub enabled: bool,
    /// Geo-IP, ASN and anonymizer databases.
    pub geo: GeoConfig,
    /// CIDR list files whose matching source addresses get a tag. Default: none.
    pub cidr_lists: Vec<CidrListConfig>,
    /// User-agent parsing.
    pub user_agents: UserAgentConfig,
    /// Per-user sign-in profiles.
    pub profiles: ProfileConfig,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            enabled: true,
            geo: GeoConfig::default(),
            cidr_lists: Vec::new(),
            user_agents: UserAgentConfig::default(),
            profiles: ProfileConfig::default(),
        }
    }
}

/// `[enrich.geo]`: MaxMind DB files (GeoIP2, GeoLite2 or DB-IP). Each is optional; a path that
/// does not exist disables that lookup with a warning until the file appears.
///
/// Files are memory-mapped: replace them by writing a new file and renaming it over the old
/// one (as `geoipupdate` does), never by truncating or rewriting the file in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// City (or Country) database: country, city, coordinates. Default: none.
    pub city_db: Option<PathBuf>,
    /// ASN database: autonomous system number and organisation. Default: none.
    pub asn_db: Option<PathBuf>,
    /// Anonymous-IP database: VPN, Tor, hosting and proxy flags. Default: none.
    pub anonymous_db: Option<PathBuf>,
    /// How often the files are checked for replacement (modification time, inode, size).
    /// Default `1m` ([`GeoConfig::DEFAULT_RELOAD_INTERVAL`]).
    pub reload_interval: DurationText,
    /// Slots of the lookup-result cache each worker thread keeps (direct-mapped, by source
    /// address); 0 disables it. Memory is about 40 bytes per slot plus the cached results, per
    /// worker thread. Default 16384 ([`GeoConfig::DEFAULT_IP_CACHE_SIZE`]).
    pub ip_cache_size: usize,
}

impl GeoConfig {
    /// Default of `reload_interval`.
    pub const DEFAULT_RELOAD_INTERVAL: Duration = MINUTE;
    /// Default of `ip_cache_size`.
    pub const DEFAULT_IP_CACHE_SIZE: usize = 16_384;
}

impl Default for GeoConfig {
    fn default() -> Self {
        GeoConfig {
            city_db: None,
            asn_db: None,
            anonymous_db: None,
            reload_interval: DurationText(Self::DEFAULT_RELOAD_INTERVAL),
            ip_cache_size: Self::DEFAULT_IP_CACHE_SIZE,
        }
    }
}

/// One `[[enrich.cidr_lists]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrListConfig {
    /// The file: one CIDR (`10.0.0.0/8`) or address per line; `#` starts a comment.
    pub path: PathBuf,
    /// The tag added to `src.tags` of matching events (`corporate_egress`, `known_vpn`,
    /// `tor_exit`, `deny`, …): lower-case letters, digits, `_`, `-` and `.`.
    pub tag: String,
    /// Whether an address on the list says where the user is. `false` for corporate VPN
    /// egress, secure web gateways and cloud proxies, where users from everywhere come out of
    /// one place: such events keep their country and network but lose their coordinates, so
    /// travel is never measured to or from them (no impossible travel between the office VPN
    /// and home). A tag any of whose lists says `false` is not located. Default `true`.
    #[serde(default = "located_default")]
    pub located: bool,
}

fn located_default() -> bool {
    true
}

/// `[enrich.user_agents]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserAgentConfig {
    /// Distinct user-agent strings whose parse result is cached; 0 disables the cache.
    /// Default 10000 ([`UserAgentConfig::DEFAULT_CACHE_SIZE`]).
    pub cache_size: usize,
}

impl UserAgentConfig {
    /// Default of `cache_size`.
    pub const DEFAULT_CACHE_SIZE: usize = 10_000;
}

impl Default for UserAgentConfig {
    fn default() -> Self {
        UserAgentConfig {
            cache_size: Self::DEFAULT_CACHE_SIZE,
        }
    }
}

/// `[enrich.profiles]`: per-user history, bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Most users with a profile; the least recently active is evicted beyond it.
    /// Default 1000000 ([`ProfileConfig::DEFAULT_MAX_USERS`]).
    pub max_users: usize,
    /// A profile with no event for this long (event time) is forgotten.
    /// Default `30days` ([`ProfileConfig::DEFAULT_TTL`]).
    pub ttl: DurationText,
    /// A profile younger than this (event time since its first successful sign-in) is still
    /// learning: its "new country / device / ASN" flags are not yet meaningful.
    /// Default `2days` ([`ProfileConfig::DEFAULT_LEARNING_PERIOD`]).
    pub learning_period: DurationText,
    /// Most countries, ASNs and device fingerprints remembered per user (each); the least
    /// recently seen is dropped beyond it. Default 16 ([`ProfileConfig::DEFAULT_MAX_PER_USER_SET`]).
    pub max_per_user_set: usize,
}

impl ProfileConfig {
    /// Default of `max_users`.
    pub const DEFAULT_MAX_USERS: usize = 1_000_000;
    /// Default of `ttl`.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 86_400);
    /// Default of `learning_period`.
    pub const DEFAULT_LEARNING_PERIOD: Duration = Duration::from_secs(2 * 86_400);
    /// Default of `max_per_user_set`.
    pub const DEFAULT_MAX_PER_USER_SET: usize = 16;
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            max_users: Self::DEFAULT_MAX_USERS,
            ttl: DurationText(Self::DEFAULT_TTL),
            learning_period: DurationText(Self::DEFAULT_LEARNING_PERIOD),
            max_per_user_set: Self::DEFAULT_MAX_PER_USER_SET,
        }
    }
}

impl EnrichConfig {
    /// Range and cross-field checks, in one place. File contents are checked when the
    /// enricher is built, not here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: impl Into<String>, message: &str) -> Result<(), ConfigError> {
            Err(ConfigError {
                key: key.into(),
                message: message.to_owned(),
            })
        }
        if self.geo.reload_interval.0 < Duration::from_secs(1) {
            return invalid("geo.reload_interval", "must be at least 1s");
        }
        if self.geo.ip_cache_size > 1 << 20 {
            return invalid("geo.ip_cache_size", "must be at most 1048576");
        }
        for (name, path) in [
            ("geo.city_db", &self.geo.city_db),
            ("geo.asn_db", &self.geo.asn_db),
            ("geo.anonymous_db", &self.geo.anonymous_db),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(name, "must not be empty (leave it out to disable)");
            }
        }
        let mut tags = BTreeSet::new();
        for (i, list) in self.cidr_lists.iter().enumerate() {
            if list.path.as_os_str().is_empty() {
                return invalid(format!("cidr_lists[{i}].path"), "must not be empty");
            }
            let tag_ok = !list.tag.is_empty()
                && list.tag.len() <= 64
                && list.tag.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                });
            if !tag_ok {
                return invalid(
                    format!("cidr_lists[{i}].tag"),
                    "must be 1 to 64 of a-z, 0-9, '_', '-', '.'",
                );
            }
            tags.insert(list.tag.as_str());
        }
        if tags.len() > MAX_CIDR_TAGS {
            return invalid("cidr_lists", "at most 64 distinct tags");
        }
        if self.user_agents.cache_size > 16 << 20 {
            return invalid("user_agents.cache_size", "must be at most 16777216");
        }
        let p = &self.profiles;
        if p.max_users == 0 {
            return invalid("profiles.max_users", "must be at least 1");
        }
        if p.ttl.0 < MINUTE {
            return invalid("profiles.ttl", "must be at least 1m");
        }
        if p.learning_period.0 >= p.ttl.0 {
            return invalid(
                "profiles.learning_period",
                "must be shorter than profiles.ttl (else every profile expires while learning)",
            );
        }
        if p.learning_period.0 > 365 * DAY {
            return invalid("profiles.learning_period", "must be at most 365days");
        }
        if !(1..=256).contains(&p.max_per_user_set) {
            return invalid("profiles.max_per_user_set", "must be between 1 and 256");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_named() {
        let c = EnrichConfig::default();
        c.validate().unwrap();
        assert_eq!(c.geo.reload_interval.0, Duration::from_secs(60));
        assert_eq!(c.user_agents.cache_size, 10_000);
        assert_eq!(c.profiles.max_users, 1_000_000);
        assert_eq!(c.profiles.ttl.millis(), 30 * 86_400_000);
        assert_eq!(c.profiles.learning_period.millis(), 2 * 86_400_000);
        assert_eq!(c.profiles.max_per_user_set, 16);
    }

    #[test]
    fn parses_text_durations_and_rejects_unknown_keys() {
        let c: EnrichConfig = serde_json::from_str(
            r#"{"geo":{"city_db":"/x/city.mmdb","reload_interval":"30s"},
                "cidr_lists":[{"path":"egress.txt","tag":"corporate_egress"}],
                "profiles":{"ttl":"7days","learning_period":"1day"}}"#,
        )
        .unwrap();
        assert_eq!(c.geo.reload_interval.0, Duration::from_secs(30));
        assert_eq!(c.profiles.ttl.millis(), 7 * 86_400_000);
        assert_eq!(c.profiles.max_users, 1_000_000, "unset keys keep defaults");
        c.validate().unwrap();

        let e = serde_json::from_str::<EnrichConfig>(r#"{"profiles":{"max_user":5}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `max_user`"), "{e}");
        let e = serde_json::from_str::<EnrichConfig>(r#"{"geo":{"reload_interval":"soon"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad duration"), "{e}");
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = EnrichConfig::default();
        c.profiles.learning_period = DurationText(Duration::from_secs(40 * 86_400));
        assert_eq!(c.validate().unwrap_err().key, "profiles.learning_period");

        let mut c = EnrichConfig::default();
        c.cidr_lists.push(CidrListConfig {
            path: "x".into(),
            tag: "Bad Tag".into(),
            located: true,
        });
        assert_eq!(c.validate().unwrap_err().key, "cidr_lists[0].tag");

        let mut c = EnrichConfig::default();
        c.profiles.max_users = 0;
        assert_eq!(c.validate().unwrap_err().key, "profiles.max_users");
    }
}
