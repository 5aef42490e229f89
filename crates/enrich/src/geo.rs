//! Geo-IP, ASN and anonymizer lookups over memory-mapped MaxMind DB files, reloaded in place.
//!
//! The three readers live together behind one [`ArcSwap`]. A lookup takes a cheap guard on the
//! current set and reads from it; a reload builds a new set next to it and swaps the pointer.
//! Lookups in flight finish on the old set, whose maps are released when its last guard goes,
//! so a reload never pauses the workers and never frees a map under a reader.

use crate::config::GeoConfig;
use crate::error::EnrichError;
use arc_swap::ArcSwap;
use authwatch_event::{Anonymizer, Geo, Text};
use maxminddb::{Mmap, Reader};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// City or Country database.
    City,
    /// ASN database.
    Asn,
    /// Anonymous-IP database.
    Anonymous,
}

impl DbKind {
    const ALL: [DbKind; 3] = [DbKind::City, DbKind::Asn, DbKind::Anonymous];

    fn index(self) -> usize {
        self as usize
    }

    /// The config key naming its file.
    pub fn config_key(self) -> &'static str {
        match self {
            DbKind::City => "geo.city_db",
            DbKind::Asn => "geo.asn_db",
            DbKind::Anonymous => "geo.anonymous_db",
        }
    }
}

/// What the databases say about one address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IpFacts {
    /// Country, city and coordinates, when the city database knows the address.
    pub geo: Option<Geo>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    pub as_org: Text,
    /// Anonymizer flags.
    pub anonymizer: Anonymizer,
}

/// What identifies one version of a file on disk. A rename over the path changes the inode;
/// the modification time and size catch tools that copy over it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (inode, device) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev())
        };
        #[cfg(not(unix))]
        let (inode, device) = (0, 0);
        FileIdentity {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
            device,
        }
    }
}

/// One opened database file.
struct LoadedDb {
    reader: Reader<Mmap>,
    identity: FileIdentity,
}

/// The databases in use at one moment.
#[derive(Default)]
struct GeoSet {
    dbs: [Option<Arc<LoadedDb>>; 3],
    /// Bumped by every reload that changed something; cached lookups from an older
    /// generation are stale.
    generation: u64,
}

/// Per-kind memory of the last reload check, so a broken or missing file is reported once per
/// change, not at every check.
#[derive(Default, Clone, Copy)]
struct CheckState {
    missing_reported: bool,
    failed: Option<FileIdentity>,
}

/// Description of a loaded database, for logs and status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// Which database.
    pub kind: DbKind,
    /// Its file.
    pub path: PathBuf,
    /// The type the file declares (`GeoIP2-City`, `GeoLite2-ASN`, `DBIP-City-Lite`, …).
    pub database_type: String,
    /// When the file was built, seconds since the Unix epoch.
    pub build_epoch: u64,
}

/// The geo databases, swappable at run time.
pub struct GeoDatabases {
    paths: [Option<PathBuf>; 3],
    current: ArcSwap<GeoSet>,
    /// `current`'s generation, readable with one plain load: every event checks it (to drop
    /// stale cache entries), and an `ArcSwap` load costs several atomic operations. Stored
    /// after the swap, so a reader that sees a new generation also sees the new databases.
    generation: AtomicU64,
    /// Serializes reloads (a timer thread and an explicit call may race); lookups never take it.
    checks: Mutex<[CheckState; 3]>,
}

impl std::fmt::Debug for GeoDatabases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDatabases")
            .field("loaded", &self.info())
            .finish_non_exhaustive()
    }
}

/// Opens a database by memory-mapping it.
fn open(path: &Path) -> Result<LoadedDb, maxminddb::MaxMindDbError> {
    // The identity is read before the file is opened: if the file is replaced in between, the
    // recorded identity is the older one and the next check simply loads the file again.
    // The other order could record the new identity over a map of the old file, and miss it.
    let identity = FileIdentity::of(&std::fs::metadata(path)?);
    // SAFETY: `open_mmap` is unsafe because a mapped file changed or truncated by someone else
    // while mapped would change bytes under `&[u8]` references (undefined behaviour) or fault
    // with SIGBUS. That cannot happen under the contract this crate documents for database
    // files (crate docs, `GeoConfig`, docs/ENRICHMENT.md): a database is replaced only by
    // writing a new file and renaming it over the path — what `geoipupdate`, `mv` and
    // Kubernetes ConfigMap/Secret updates do — never rewritten or truncated in place. A rename
    // gives the path a new inode; the old inode, which our map refers to, is neither modified
    // nor freed while mapped (the kernel keeps an unlinked file's data alive until the last
    // map goes), so every byte the reader can see stays as it was when mapped. This process
    // itself only ever maps the file read-only and never writes to it.
    #[allow(unsafe_code)]
    let reader = unsafe { Reader::open_mmap(path)? };
    Ok(LoadedDb { reader, identity })
}

/// An expected word in the declared database type, to catch a file given for the wrong key.
fn type_matches(kind: DbKind, database_type: &str) -> bool {
    let t = database_type.to_ascii_lowercase();
    match kind {
        DbKind::City => t.contains("city") || t.contains("country"),
        DbKind::Asn => t.contains("asn") || t.contains("isp"),
        DbKind::Anonymous => t.contains("anonymous"),
    }
}

impl GeoDatabases {
    /// Opens the configured databases. A missing file disables its lookup (with a warning)
    /// until a reload finds it; a file that exists but cannot be read as a MaxMind DB is an
    /// error, as it is a deployment mistake worth stopping for.
    pub fn open(config: &GeoConfig) -> Result<GeoDatabases, EnrichError> {
        let paths = [
            config.city_db.clone(),
            config.asn_db.clone(),
            config.anonymous_db.clone(),
        ];
        let mut set = GeoSet::default();
        let mut checks = [CheckState::default(); 3];
        for kind in DbKind::ALL {
            let Some(path) = &paths[kind.index()] else {
                continue;
            };
            if !path.exists() {
                tracing::warn!(
                    path = %path.display(),
                    key = kind.config_key(),
                    "geo database not found; this enrichment is off until the file appears"
                );
                checks[kind.index()].missing_reported = true;
                continue;
            }
            let db = open(path).map_err(|source| EnrichError::GeoDatabase {
                path: path.clone(),
                source,
            })?;
            warn_on_type(kind, path, &db);
            tracing::info!(
                path = %path.display(),
                database_type = %db.reader.metadata().database_type,
                build_epoch = db.reader.metadata().build_epoch,
                "geo database loaded"
            );
            set.dbs[kind.index()] = Some(Arc::new(db));
        }
        Ok(GeoDatabases {
            paths,
            current: ArcSwap::from_pointee(set),
            generation: AtomicU64::new(0),
            checks: Mutex::new(checks),
        })
    }

    /// True when any database is configured (loaded or awaited).
    pub fn is_configured(&self) -> bool {
        self.paths.iter().any(Option::is_some)
    }

    /// The loaded databases.
    pub fn info(&self) -> Vec<DatabaseInfo> {
        let set = self.current.load();
        DbKind::ALL
            .iter()
            .filter_map(|&kind| {
                let db = set.dbs[kind.index()].as_ref()?;
                let path = self.paths[kind.index()].clone()?;
                let meta = db.reader.metadata();
                Some(DatabaseInfo {
                    kind,
                    path,
                    database_type: meta.database_type.clone(),
                    build_epoch: meta.build_epoch,
                })
            })
            .collect()
    }

    /// Generation of the current set: changes whenever a reload swapped a database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Checks every configured file and swaps in those that changed. Returns how many were
    /// (re)loaded. Never fails: a file that cannot be read keeps the previous version in use,
    /// with a warning.
    pub fn reload(&self) -> usize {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let mut dbs = old.dbs.clone();
        let mut changed = 0;
        for kind in DbKind::ALL {
            let Some(path) = &self.paths[kind.index()] else {
                continue;
            };
            let check = &mut checks[kind.index()];
            let loaded = &old.dbs[kind.index()];
            let identity = match std::fs::metadata(path) {
                Ok(meta) => FileIdentity::of(&meta),
                Err(e) => {
                    if !check.missing_reported {
                        check.missing_reported = true;
                        if loaded.is_some() {
                            tracing::warn!(path = %path.display(), error = %e,
                                "geo database file is gone; keeping the loaded copy");
                        } else {
                            tracing::warn!(path = %path.display(), error = %e,
                                "geo database not found; this enrichment stays off");
                        }
                    }
                    continue;
                }
            };
            check.missing_reported = false;
            if loaded.as_ref().is_some_and(|db| db.identity == identity)
                || check.failed == Some(identity)
            {
                continue;
            }
            match open(path) {
                Ok(db) => {
                    warn_on_type(kind, path, &db);
                    tracing::info!(
                        path = %path.display(),
                        database_type = %db.reader.metadata().database_type,
                        build_epoch = db.reader.metadata().build_epoch,
                        "geo database reloaded"
                    );
                    check.failed = None;
                    dbs[kind.index()] = Some(Arc::new(db));
                    changed += 1;
                }
                Err(e) => {
                    check.failed = Some(identity);
                    tracing::warn!(path = %path.display(), error = %e,
                        "geo database changed but cannot be opened; keeping the previous one");
                }
            }
        }
        if changed > 0 {
            let generation = old.generation + 1;
            self.current.store(Arc::new(GeoSet { dbs, generation }));
            self.generation.store(generation, Ordering::Release);
        }
        changed
    }

    /// Looks an address up in every loaded database. Addresses a database does not know, or
    /// whose record cannot be decoded, give empty facts: enrichment is best effort and never
    /// drops an event.
    pub fn lookup(&self, ip: IpAddr) -> IpFacts {
        let set = self.current.load();
        let mut facts = IpFacts::default();
        if let Some(db) = &set.dbs[DbKind::City.index()] {
            facts.geo = decode::<CityRecord>(&db.reader, ip).and_then(CityRecord::into_geo);
        }
        if let Some(db) = &set.dbs[DbKind::Asn.index()]
            && let Some(r) = decode::<AsnRecord>(&db.reader, ip)
        {
            facts.asn = r.autonomous_system_number;
            facts.as_org = r
                .autonomous_system_organization
                .map(crate::intern::name)
                .unwrap_or_default();
        }
        if let Some(db) = &set.dbs[DbKind::Anonymous.index()]
            && let Some(r) = decode::<AnonymousRecord>(&db.reader, ip)
        {
            let vpn = r.is_anonymous_vpn.unwrap_or(false);
            let tor = r.is_tor_exit_node.unwrap_or(false);
            let hosting = r.is_hosting_provider.unwrap_or(false);
            let proxy =
                r.is_public_proxy.unwrap_or(false) || r.is_residential_proxy.unwrap_or(false);
            facts.anonymizer = Anonymizer {
                anonymous: r.is_anonymous.unwrap_or(false) || vpn || tor || proxy,
                vpn,
                tor,
                hosting,
                proxy,
            };
        }
        facts
    }
}

fn warn_on_type(kind: DbKind, path: &Path, db: &LoadedDb) {
    let t = &db.reader.metadata().database_type;
    if !type_matches(kind, t) {
        tracing::warn!(
            path = %path.display(),
            key = kind.config_key(),
            database_type = %t,
            "geo database type does not look like what this key expects"
        );
    }
}

fn decode<'a, T: Deserialize<'a>>(reader: &'a Reader<Mmap>, ip: IpAddr) -> Option<T> {
    let found = reader.lookup(ip).and_then(|r| r.decode::<T>());
    match found {
        Ok(record) => record,
        Err(e) => {
            // An IPv6 address in an IPv4-only database lands here too: not worth more than debug.
            tracing::debug!(%ip, error = %e, "geo lookup failed");
            None
        }
    }
}

// Only the fields authwatch uses: decoding the full GeoIP2 records would allocate (subdivision
// lists) and decode names in eight languages for nothing. Two layouts are read: the nested
// one of GeoIP2, GeoLite2 and DB-IP (`country.iso_code`, `city.names.en`, `location.*`), and
// the flat one of the ip-location-db builds (`country_code`, `city`, `latitude`, `longitude`)
// used for full-size benchmarks.

#[derive(Deserialize)]
struct CityRecord<'a> {
    /// Where the address is. (`registered_country`, where the block's holder registered it,
    /// is not read: it is no place of the user's; see [`CityRecord::into_geo`].)
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    city: Option<CityField<'a>>,
    #[serde(default)]
    location: Option<LocationRecord>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(default)]
    latitude: Option<Coordinate>,
    #[serde(default)]
    longitude: Option<Coordinate>,
}

/// A latitude or longitude. The decoder is strict about number types, and builds differ:
/// MaxMind stores doubles, the flat builds single-precision floats.
#[derive(Clone, Copy)]
struct Coordinate(f64);

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Coordinate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Coordinate, E> {
                Ok(Coordinate(v))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Coordinate, E> {
                Ok(Coordinate(f64::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Coordinate, E> {
                Ok(Coordinate(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Coordinate, E> {
                Ok(Coordinate(v as f64))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `city` is a record with localized names in the MaxMind layout, a plain string in the flat
/// one. A hand-written visitor reads either without buffering the record.
enum CityField<'a> {
    Name(&'a str),
    Record(Option<Names<'a>>),
}

impl<'a> CityField<'a> {
    fn english(self) -> Option<&'a str> {
        match self {
            CityField::Name(n) => Some(n),
            CityField::Record(names) => names.and_then(|n| n.en),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for CityField<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = CityField<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a city name or a city record")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CityField::Name(v))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut names = None;
                while let Some(key) = map.next_key::<&'de str>()? {
                    if key == "names" {
                        names = Some(map.next_value::<Names<'a>>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(CityField::Record(names))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct LocationRecord {
    #[serde(default)]
    latitude: Option<Coordinate>,
    #[serde(default)]
    longitude: Option<Coordinate>,
    #[serde(default)]
    accuracy_radius: Option<u16>,
}

impl CityRecord<'_> {
    fn into_geo(self) -> Option<Geo> {
        // The country the address is in, never the one it is registered to. Records without a
        // `country` (blocks the database cannot place, such as some anycast and satellite
        // ranges) may still carry a `registered_country`: the holder's home, often an ISP or
        // cloud provider abroad. Taken as the place, it made a "new country" for a user who
        // never left, and once learned a country of theirs: profiles and the new-device /
        // new-country rules read `geo.country` as where the user is. No country is "not
        // known", which is never new.
        let country = self
            .country
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .unwrap_or("");
        let city = self.city.and_then(CityField::english).unwrap_or("");
        let (lat, lon, accuracy_km) = match self.location {
            Some(l) => (l.latitude, l.longitude, l.accuracy_radius.map(u32::from)),
            None => (self.latitude, self.longitude, None),
        };
        let (lat, lon) = (lat.map(|c| c.0), lon.map(|c| c.0));
        if country.is_empty() && city.is_empty() && lat.is_none() {
            return None;
        }
        Some(Geo {
            country: Text::new(country),
            city: crate::intern::name(city),
            lat,
            lon,
            accuracy_km,
        })
    }
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize)]
struct AnonymousRecord {
    #[serde(default)]
    is_anonymous: Option<bool>,
    #[serde(default)]
    is_anonymous_vpn: Option<bool>,
    #[serde(default)]
    is_hosting_provider: Option<bool>,
    #[serde(default)]
    is_public_proxy: Option<bool>,
    #[serde(default)]
    is_residential_proxy: Option<bool>,
    #[serde(default)]
    is_tor_exit_node: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo_of(record: &str) -> Option<Geo> {
        serde_json::from_str::<CityRecord<'_>>(record)
            .unwrap()
            .into_geo()
    }

    /// Regression: a record without `country` took `registered_country` (where the block's
    /// holder registered it) as the place, so a user behind such a block got a "new country"
    /// they were never in, and the profile learned it as one of theirs.
    #[test]
    fn the_registered_country_is_not_where_the_address_is() {
        // Registered only (a block the database cannot place): no place.
        assert_eq!(geo_of(r#"{"registered_country":{"iso_code":"US"}}"#), None);
        // Coordinates without a country: located, with no country.
        let g = geo_of(
            r#"{"registered_country":{"iso_code":"US"},
                "location":{"latitude":1.5,"longitude":2.5,"accuracy_radius":1000}}"#,
        )
        .unwrap();
        assert_eq!(g.country, "");
        assert_eq!(
            (g.lat, g.lon, g.accuracy_km),
            (Some(1.5), Some(2.5), Some(1000))
        );
        // Both: the country the address is in (the test databases' 89.160.20.112 is so).
        let g = geo_of(r#"{"country":{"iso_code":"SE"},"registered_country":{"iso_code":"DE"}}"#);
        assert_eq!(g.map(|g| g.country), Some("SE".into()));
        // The flat builds' `country_code` is the location's country.
        let g = geo_of(r#"{"country_code":"JP","latitude":35.7,"longitude":139.7}"#);
        assert_eq!(g.map(|g| g.country), Some("JP".into()));
    }
}
