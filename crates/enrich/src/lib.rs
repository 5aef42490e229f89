//! Enrichment for authwatch: what the raw sign-in event does not say.
//!
//! Two parts, for the two kinds of pipeline stage (see `docs/ENRICHMENT.md`):
//!
//! - [`EventEnricher`] is stateless per event and shared by the parallel worker threads
//!   (`&self`, `Send + Sync`). For each event it writes an IPv6 spelling of an IPv4 source
//!   address (`::ffff:a.b.c.d`, [`canonical_ip`]) back as that IPv4 address, marks internal
//!   addresses ([`is_internal`], no lookup for those), looks the source address up in the
//!   geo-IP, ASN and anonymous-IP databases (MaxMind DB format, memory-mapped, swapped in place
//!   when a file is replaced), tags it from CIDR lists, parses the user agent (woothee, cached)
//!   and computes the device fingerprint ([`device_fingerprint`]).
//! - [`UserProfiles`] is the per-user history, run in stream order on the detect stage's single
//!   thread: it fills `event.context` (new device / country / ASN, unusual hour, distance and
//!   speed from the previous successful sign-in) from what came before, then learns from the
//!   event. Memory is bounded by configuration; the store snapshots to bytes for checkpoints.
//!
//! Database files are memory-mapped: replace them by writing a new file and renaming it over
//! the old path (as `geoipupdate` does), never by rewriting or truncating them in place.
//! [`EventEnricher::spawn_reloader`] checks them every `geo.reload_interval` and swaps changed
//! ones in without pausing lookups; [`EventEnricher::reload`] does the same on demand.
//!
//! ```
//! use authwatch_enrich::{EnrichConfig, EventEnricher, UserProfiles};
//! use authwatch_event::{Activity, AuthEvent, DeviceType, Outcome};
//!
//! let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/geo/");
//! let mut config = EnrichConfig::default();
//! config.geo.city_db = Some(format!("{geo}GeoIP2-City-Test.mmdb").into());
//! config.geo.asn_db = Some(format!("{geo}GeoLite2-ASN-Test.mmdb").into());
//! let enricher = EventEnricher::new(&config)?;
//! let mut profiles = UserProfiles::new(&config.profiles);
//!
//! let mut event = AuthEvent {
//!     time: 1_767_603_600_000,
//!     activity: Activity::Logon,
//!     outcome: Outcome::Success,
//!     ..AuthEvent::default()
//! };
//! event.user.name = "aiko@example.co.jp".into();
//! event.src.ip = Some("89.160.20.112".parse()?);
//! event.device.user_agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) \
//!     AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1".into();
//!
//! enricher.enrich(&mut event); // on a worker thread
//! profiles.observe(&mut event); // on the detect thread, in stream order
//!
//! let geo = event.src.geo.as_ref().unwrap();
//! assert_eq!((geo.country.as_str(), geo.city.as_str()), ("SE", "Linköping"));
//! assert_eq!(event.src.asn, Some(29518));
//! assert_eq!(event.device.os, "iOS 17");
//! assert_eq!(event.device.kind, DeviceType::Mobile);
//! assert_eq!(event.device.fingerprint.len(), 16);
//! assert!(event.context.new_country && event.context.learning);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod cidr;
mod config;
mod error;
mod geo;
mod intern;
mod internal;
mod ipcache;
mod profiles;
mod recency;
mod ua;

pub use cidr::CidrTagger;
pub use config::{
    CidrListConfig, ConfigError, DurationText, EnrichConfig, GeoConfig, MAX_CIDR_TAGS,
    ProfileConfig, UserAgentConfig,
};
pub use error::{EnrichError, SnapshotError};
pub use geo::{DatabaseInfo, DbKind, GeoDatabases, IpFacts};
pub use internal::{canonical_ip, is_internal};
pub use profiles::{MIN_SUCCESSES_FOR_HOURS, ProfileStats, UserProfiles, haversine_km};
pub use ua::{UserAgentFacts, UserAgentParser, device_fingerprint};

use authwatch_event::{AuthEvent, DeviceType};
use std::net::IpAddr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// The per-event enricher shared by the worker threads.
///
/// Order per event: internal-address check → geo / ASN / anonymizer lookups (skipped for
/// internal addresses) → CIDR tags (internal addresses too: corporate ranges are often
/// private) → user-agent parse → device fingerprint. Values already on the event (given by the
/// provider) are kept; enrichment only fills what is empty, and anonymizer flags are added to.
/// The one exception is the source address itself, which is rewritten to its IPv4 form when it
/// is an IPv6 spelling of one ([`canonical_ip`]; see [`EventEnricher::enrich`]).
pub struct EventEnricher {
    enabled: bool,
    geo: GeoDatabases,
    cidr: CidrTagger,
    ua: UserAgentParser,
    /// Slots of each worker thread's lookup cache (0: no cache).
    ip_cache_slots: usize,
    /// This instance's key in the per-thread caches.
    cache_owner: u64,
    reload_interval: Duration,
}

impl std::fmt::Debug for EventEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEnricher")
            .field("geo", &self.geo)
            .field("cidr_ranges", &self.cidr.ranges())
            .field("ua", &self.ua)
            .finish_non_exhaustive()
    }
}

impl EventEnricher {
    /// Validates the configuration, opens the databases and reads the CIDR lists.
    ///
    /// A geo database whose file does not exist is off (with a warning) until a reload finds
    /// it; a file that exists but is not a readable MaxMind DB, and any unreadable or malformed
    /// CIDR list, is an error naming the file.
    pub fn new(config: &EnrichConfig) -> Result<EventEnricher, EnrichError> {
        config.validate()?;
        let geo = GeoDatabases::open(&config.geo)?;
        if config.enabled && !geo.is_configured() {
            // Not an error (a lab may run without them), but the run would look complete while
            // a third of the detections cannot fire: say so once, at start.
            tracing::warn!(
                "no geo databases configured ([enrich.geo] city_db, asn_db, anonymous_db): \
                 events get no country, network or anonymizer flags, so impossible_travel, \
                 new_device_geo, anonymizer_login and the other geo-based rules cannot fire \
                 (config/dev.toml uses the test databases in data/geo)"
            );
        }
        let cidr = CidrTagger::load(&config.cidr_lists)?;
        Ok(EventEnricher {
            enabled: config.enabled,
            geo,
            cidr,
            ua: UserAgentParser::new(config.user_agents.cache_size),
            ip_cache_slots: config.geo.ip_cache_size,
            cache_owner: ipcache::new_owner(),
            reload_interval: config.geo.reload_interval.0,
        })
    }

    /// Enriches one event in place.
    ///
    /// An IPv6 address that carries an IPv4 one ([`canonical_ip`]: `::ffff:a.b.c.d` and the
    /// like) is replaced on the event by that IPv4 address, even with enrichment turned off.
    pub fn enrich(&self, event: &mut AuthEvent) {
        // `::ffff:a.b.c.d` is the IPv4 address a dual-stack listener saw (and NAT64 and
        // IPv4-compatible forms likewise). Written back, not only used for the lookups: rules
        // key counters and incidents by `src.ip`, and profiles remember it, so two spellings of
        // one address would be two sources (a stuffing run split across them stays under every
        // threshold). Done before the `enabled` check: it is the address's normal form, not a
        // fact added to it, and the rules run either way. This runs on every event before
        // detection; a later stage that skips enrichment (the detect side of a repartitioned
        // Kafka run) receives the address already in this form.
        if let Some(ip) = &mut event.src.ip {
            *ip = canonical_ip(*ip);
        }
        if !self.enabled {
            return;
        }
        if let Some(ip) = event.src.ip {
            let internal = is_internal(ip);
            event.src.internal |= internal;
            if !internal && self.geo.is_configured() {
                let src = &mut event.src;
                let mut fill = |facts: &IpFacts| {
                    if src.geo.is_none() {
                        src.geo.clone_from(&facts.geo);
                    }
                    if src.asn.is_none() {
                        src.asn = facts.asn;
                    }
                    if src.as_org.is_empty() {
                        src.as_org.clone_from(&facts.as_org);
                    }
                    let (a, f) = (&mut src.anonymizer, facts.anonymizer);
                    a.anonymous |= f.anonymous;
                    a.vpn |= f.vpn;
                    a.tor |= f.tor;
                    a.hosting |= f.hosting;
                    a.proxy |= f.proxy;
                };
                if self.ip_cache_slots == 0 {
                    fill(&self.geo.lookup(ip));
                } else {
                    // Read in place from this thread's cache: no reference count per event.
                    ipcache::with_facts(
                        self.cache_owner,
                        self.geo.generation(),
                        self.ip_cache_slots,
                        ip,
                        |ip| self.geo.lookup(ip),
                        |facts| fill(facts),
                    );
                }
            }
            let (tags, unlocated) = self.cidr.lookup(ip);
            for tag in tags {
                if !event.src.tags.contains(tag) {
                    event.src.tags.push(tag.clone());
                }
            }
            // Users from everywhere come out of a VPN egress in one place: its coordinates
            // would make impossible travel of every trip to and from the VPN.
            if unlocated && let Some(geo) = &mut event.src.geo {
                geo.lat = None;
                geo.lon = None;
                geo.accuracy_km = None;
            }
        }
        let device = &mut event.device;
        // A provider that already names the OS, browser and device type leaves the parse
        // nothing to fill (provider values are kept): skip it, and its cache lookup.
        let complete = !device.os.is_empty()
            && !device.browser.is_empty()
            && device.kind != DeviceType::Unknown;
        if !complete && !device.user_agent.is_empty() {
            let facts = self.ua.parse(&device.user_agent);
            ua::fill_device(device, &facts);
        }
        if device.fingerprint.is_empty()
            && let Some(fp) = device_fingerprint(device)
        {
            device.fingerprint = fp;
        }
    }

    /// The database facts of one public address, through this thread's lookup cache.
    pub fn lookup(&self, ip: IpAddr) -> Arc<IpFacts> {
        if self.ip_cache_slots == 0 {
            return Arc::new(self.geo.lookup(ip));
        }
        ipcache::get_or_insert(
            self.cache_owner,
            self.geo.generation(),
            self.ip_cache_slots,
            ip,
            |ip| self.geo.lookup(ip),
        )
    }

    /// Checks the database files now and swaps in those replaced on disk; returns how many
    /// were (re)loaded. Lookups continue on the previous databases meanwhile; cached results
    /// from them are not used again.
    pub fn reload(&self) -> usize {
        self.geo.reload()
    }

    /// The geo databases (for status and metrics).
    pub fn geo(&self) -> &GeoDatabases {
        &self.geo
    }

    /// The CIDR tag table.
    pub fn cidr(&self) -> &CidrTagger {
        &self.cidr
    }

    /// Starts a thread that calls [`reload`](Self::reload) every `geo.reload_interval`. It
    /// stops when the returned handle is dropped or when the enricher is gone. Without it,
    /// files are reloaded only by explicit calls.
    pub fn spawn_reloader(self: &Arc<Self>) -> std::io::Result<Reloader> {
        let weak: Weak<EventEnricher> = Arc::downgrade(self);
        let interval = self.reload_interval;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("geo-reload".into())
            .spawn(move || {
                // Any other outcome is a stop: the handle was dropped (disconnected).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    match weak.upgrade() {
                        Some(enricher) => {
                            enricher.reload();
                        }
                        None => break,
                    }
                }
            })?;
        Ok(Reloader {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The periodic reload thread of an [`EventEnricher`]; dropping it stops the thread.
#[derive(Debug)]
pub struct Reloader {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once, whatever the interval.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
