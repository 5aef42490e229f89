//! Per-user sign-in profiles: what is normal for each user, bounded, in event time.
//!
//! [`UserProfiles::observe`] runs in stream order on the detect stage's single thread. For each
//! event it first writes what the profile says into `event.context`, then learns from the
//! event — so an event is always judged against the history before it, and replaying a stream
//! gives the same contexts.

use crate::config::ProfileConfig;
use crate::error::SnapshotError;
use crate::recency::RecencyMap;
use authwatch_event::{
    Activity, AuthEvent, Factor, Outcome, PreviousSignIn, Text, User, UserContext,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::net::IpAddr;

const MS_PER_HOUR: i64 = 3_600_000;
const MIN_INTERVAL_MS: i64 = 60_000;
/// Successful sign-ins before the hour-of-day mask is trusted.
pub const MIN_SUCCESSES_FOR_HOURS: u32 = 5;
/// Version 2 keys profiles by tenant ([`ProfileKey`]); version 1 snapshots are still read.
const SNAPSHOT_VERSION: u32 = 2;

/// A small set that forgets its least recently seen member when full. At the sizes used
/// (tens of members) a linear scan beats hashing, and the order is the recency order.
///
/// The first few members are stored inside the profile: most users have one or two countries
/// and devices, and every event reads all three sets, so a heap buffer per set would be up to
/// three more cache misses per event on the detect thread. Serialized as a plain list.
#[derive(Debug, Clone, PartialEq, Default)]
struct RecentSet<T, const N: usize>(SmallVec<[T; N]>);

// By hand rather than through smallvec's `serde` feature: turning that feature on changes the
// build of every crate that shares smallvec (DataFusion's among them).
impl<T: Serialize, const N: usize> Serialize for RecentSet<T, N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for RecentSet<T, N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(|v| RecentSet(SmallVec::from_vec(v)))
    }
}

impl<T: PartialEq, const N: usize> RecentSet<T, N> {
    fn contains(&self, v: &T) -> bool {
        self.0.contains(v)
    }

    /// Marks `v` most recently seen, adding it (a clone) when absent.
    #[inline]
    fn touch(&mut self, v: &T, max: usize)
    where
        T: Clone,
    {
        // Users sign in again from where they just were: the newest member is the usual hit,
        // and then there is nothing to move or clone.
        if self.0.last() == Some(v) {
            return;
        }
        if let Some(i) = self.0.iter().position(|x| x == v) {
            self.0[i..].rotate_left(1);
        } else {
            self.0.push(v.clone());
            if self.0.len() > max {
                self.0.remove(0);
            }
        }
    }
}

fn text_is_empty(t: &Text) -> bool {
    t.is_empty()
}

/// The last successful sign-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LastSuccess {
    time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "text_is_empty")]
    country: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lon: Option<f64>,
    /// The location's accuracy radius (km), 0 when unknown.
    #[serde(default)]
    accuracy_km: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    internal: bool,
}

/// One user's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    /// Event time of the first sign-in learned ([`learn`]), from which the learning period
    /// runs. While `successes` is 0 nothing has been learned and this means nothing: the
    /// profile exists only to hold a password step back, and counts as learning. (Set at
    /// creation for the snapshot's sake: the field has always been there, so checkpoints in
    /// either direction keep loading.)
    first_seen: i64,
    /// Event time of the newest event of any kind (the TTL runs from here).
    last_seen: i64,
    /// Order of last use, for restoring the LRU order exactly.
    touched: u64,
    countries: RecentSet<Text, 2>,
    asns: RecentSet<u32, 4>,
    devices: RecentSet<Text, 2>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_success: Option<LastSuccess>,
    /// Bit h set: a successful sign-in happened in UTC hour h.
    hours: u32,
    successes: u32,
    /// A password-only sign-in that has not yet taught the profile (see [`Lesson`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unconfirmed: Option<Unconfirmed>,
    /// Restored from a snapshot of before profiles had tenants: the first tenant whose user
    /// of this name signs in takes it over (see [`UserProfiles::restore`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unscoped: bool,
}

/// Separates the tenant from the user in a profile's key: a control character neither holds.
const TENANT_SEP: u8 = 0x1f;

/// Starts the key of a profile restored from a version 1 snapshot, followed by the user key
/// exactly as version 1 wrote it (login or id, case kept): no tenant-scoped key can start so.
const UNSCOPED: char = '\u{1e}';

/// A profile's key, `tenant \x1f user`, built on the stack (one per event on the detect
/// thread). The tenant keeps two realms' `admin` apart. The user is the login name, lower-cased
/// (ASCII) as identity providers compare logins, else the provider's id, which is opaque and
/// kept exactly.
struct ProfileKey {
    bytes: SmallVec<[u8; 96]>,
}

impl ProfileKey {
    fn of(event: &AuthEvent) -> Option<ProfileKey> {
        ProfileKey::new(&event.tenant, &event.user)
    }

    fn new(tenant: &str, user: &User) -> Option<ProfileKey> {
        let (part, fold) = if user.name.is_empty() {
            (user.id.as_str(), false)
        } else {
            (user.name.as_str(), true)
        };
        if part.is_empty() {
            return None;
        }
        let mut bytes = SmallVec::with_capacity(tenant.len() + 1 + part.len());
        bytes.extend_from_slice(tenant.as_bytes());
        bytes.push(TENANT_SEP);
        let user_at = bytes.len();
        bytes.extend_from_slice(part.as_bytes());
        if fold {
            bytes[user_at..].make_ascii_lowercase();
        }
        Some(ProfileKey { bytes })
    }

    /// For lookups: no UTF-8 check on the per-event path.
    fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// For storing a new profile's key.
    fn as_str(&self) -> &str {
        // UTF-8 strings joined by an ASCII byte, and ASCII-only case changes: always valid.
        std::str::from_utf8(&self.bytes).unwrap_or_default()
    }
}

/// Where a version 1 snapshot's profile of `user_key` (`User::key`, verbatim) is held.
fn unscoped_key(user_key: &str) -> String {
    let mut key = String::with_capacity(UNSCOPED.len_utf8() + user_key.len());
    key.push(UNSCOPED);
    key.push_str(user_key);
    key
}

/// What a successful sign-in teaches a profile, taken from the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lesson {
    time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "text_is_empty")]
    country: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    asn: Option<u32>,
    #[serde(default, skip_serializing_if = "text_is_empty")]
    fingerprint: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lon: Option<f64>,
    #[serde(default)]
    accuracy_km: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    internal: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    anonymous: bool,
}

impl Lesson {
    /// Where and when the sign-in happened, as travel is measured from it.
    fn place(&self) -> LastSuccess {
        LastSuccess {
            time: self.time,
            ip: self.ip,
            country: self.country.clone(),
            lat: self.lat,
            lon: self.lon,
            accuracy_km: self.accuracy_km,
            internal: self.internal,
        }
    }

    fn of(event: &AuthEvent) -> Lesson {
        let geo = event.src.geo.as_ref();
        Lesson {
            time: event.time,
            ip: event.src.ip,
            country: geo.map(|g| g.country.clone()).unwrap_or_default(),
            asn: event.src.asn,
            fingerprint: event.device.fingerprint.clone(),
            lat: geo.and_then(|g| g.lat),
            lon: geo.and_then(|g| g.lon),
            accuracy_km: geo.and_then(|g| g.accuracy_km).unwrap_or(0),
            internal: event.src.internal,
            anonymous: event.src.anonymizer.anonymous,
        }
    }
}

/// A successful password-only sign-in, held back until the sign-in turns out to be complete.
///
/// Providers log the password step as a successful sign-in before the MFA prompt (Okta's
/// `user.session.start`). An attacker with a stolen password gets that far, and then the victim
/// denies the push: had the password step taught the profile, the attacker's device, country and
/// network would be "known" from then on, and the victim's next sign-in from home would be
/// measured against the attacker's place as impossible travel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unconfirmed {
    lesson: Lesson,
    /// An MFA prompt or answer for the user followed the sign-in: only a successful MFA step
    /// confirms it now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    challenged: bool,
    /// xxh3-64 of the sign-in's session id, 0 when it had none: tells an MFA step of this
    /// sign-in from one of another (see [`may_confirm`]). A hash rather than the id: 8 bytes in
    /// every profile instead of 24, and only equality is asked of it. Absent from snapshots
    /// written before it existed, which read as "no session".
    #[serde(default, skip_serializing_if = "is_zero")]
    session: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The hash [`Unconfirmed::session`] holds for a session id; 0 for none.
fn session_hash(id: &str) -> u64 {
    if id.is_empty() {
        0
    } else {
        xxhash_rust::xxh3::xxh3_64(id.as_bytes())
    }
}

/// Whether `event`, a successful MFA step, may be the second step of the held sign-in `u`:
/// nothing it carries says it belongs to another sign-in. It does when both name a session and
/// the sessions differ, or both carry a source address and the addresses differ.
///
/// Without this, the victim's own MFA approval elsewhere (another session, from the office)
/// minutes after an attacker's password step and denied push would confirm the attacker's
/// step and teach the profile their device, country and network. An MFA step that carries
/// neither (some MFA services log approvals so) cannot be told apart and confirms, as the
/// approval of the sign-in it most likely answers.
///
/// Only confirmations are checked, not prompts and denials: a prompt that wrongly marks a
/// sign-in challenged costs at worst one sign-in not learned, while a provider whose prompt
/// and password step disagree on the session would otherwise let an attacker's step go
/// unchallenged and teach.
fn may_confirm(u: &Unconfirmed, event: &AuthEvent) -> bool {
    let other_session = u.session != 0
        && !event.session_id.is_empty()
        && session_hash(&event.session_id) != u.session;
    // Both are in canonical form after enrichment; a held step restored from a checkpoint of
    // before that may not be.
    let other_address = matches!(
        (u.lesson.ip, event.src.ip),
        (Some(held), Some(here)) if crate::canonical_ip(held) != crate::canonical_ip(here)
    );
    !other_session && !other_address
}

/// Counters of the profile store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProfileStats {
    /// Profiles held now.
    pub users: usize,
    /// Profiles created.
    pub created: u64,
    /// Profiles dropped because `max_users` was reached (least recently active first).
    pub evictions: u64,
    /// Profiles dropped because they saw no event for `ttl`.
    pub expiries: u64,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    touch_counter: u64,
    max_time: i64,
    created: u64,
    evictions: u64,
    expiries: u64,
    /// Sorted by user key, so equal state gives equal bytes.
    users: Vec<(Text, Profile)>,
}

/// The per-user profile store. Not thread-safe by design: it runs in stream order.
pub struct UserProfiles {
    config: ProfileConfig,
    ttl_ms: i64,
    learning_ms: i64,
    users: RecencyMap<Profile>,
    /// Profiles held with `unscoped` set: while there are any, a user not found in their
    /// tenant is looked for in no tenant.
    unscoped: usize,
    touch_counter: u64,
    /// Newest event time seen: the store's notion of "now" for expiry.
    max_time: i64,
    created: u64,
    evictions: u64,
    expiries: u64,
}

impl std::fmt::Debug for UserProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserProfiles")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How long a password-only sign-in waits for an MFA prompt before it counts as complete. MFA
/// prompts follow the password within seconds and expire after a few minutes (Okta and Entra
/// push: 5 minutes); a sign-in with no prompt by then needed none.
const CONFIRM_MS: i64 = 10 * 60_000;

/// What an event means for the profile's learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A completed sign-in: it teaches the profile at once.
    Complete,
    /// A successful sign-in by password alone (or by no factor the provider named): it teaches
    /// the profile once it proves complete.
    PasswordOnly,
    /// A successful MFA step: it confirms an unconfirmed sign-in.
    MfaSuccess,
    /// An MFA prompt, or an MFA step that did not succeed.
    MfaOther,
    /// Anything else.
    Other,
}

fn kind(event: &AuthEvent) -> Kind {
    match (event.activity, event.outcome) {
        (Activity::Logon, Outcome::Success) => match event.factor {
            Factor::Password | Factor::None => Kind::PasswordOnly,
            _ => Kind::Complete,
        },
        // A verification whose factor is the password (Okta Identity Engine logs the password
        // as one of the authenticators it checks) is the password step, not a second factor:
        // held back like a password-only sign-in, and neither a confirmation nor a prompt for
        // the one before it. Taken as an MFA success, an attacker's stolen-password step would
        // teach the profile their place and device at once.
        (Activity::MfaVerify, Outcome::Success) if event.factor == Factor::Password => {
            Kind::PasswordOnly
        }
        (Activity::MfaChallenge | Activity::MfaVerify, _) if event.factor == Factor::Password => {
            Kind::Other
        }
        (Activity::MfaVerify, Outcome::Success) => Kind::MfaSuccess,
        (Activity::MfaChallenge | Activity::MfaVerify, _) => Kind::MfaOther,
        _ => Kind::Other,
    }
}

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    // Most sign-ins come from where the last one did. Zero differences (finite, equal
    // coordinates) give exactly +0.0 below too; this only skips the trigonometry.
    if lat2 - lat1 == 0.0 && lon2 - lon1 == 0.0 {
        return 0.0;
    }
    haversine_trig(lat1, lon1, lat2, lon2, EARTH_RADIUS_KM)
}

fn haversine_trig(lat1: f64, lon1: f64, lat2: f64, lon2: f64, radius_km: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * radius_km * a.sqrt().min(1.0).asin()
}

fn utc_hour(time_ms: i64) -> u32 {
    // rem_euclid keeps pre-1970 times in 0..24; the cast cannot truncate.
    time_ms.div_euclid(MS_PER_HOUR).rem_euclid(24) as u32
}

impl UserProfiles {
    /// An empty store. `config` is assumed validated ([`crate::EnrichConfig::validate`]);
    /// out-of-range values are clamped to the nearest usable one.
    pub fn new(config: &ProfileConfig) -> UserProfiles {
        UserProfiles {
            ttl_ms: config.ttl.millis().max(1),
            learning_ms: config.learning_period.millis(),
            config: ProfileConfig {
                max_per_user_set: config.max_per_user_set.max(1),
                ..config.clone()
            },
            users: RecencyMap::new(config.max_users),
            unscoped: 0,
            touch_counter: 0,
            max_time: i64::MIN,
            created: 0,
            evictions: 0,
            expiries: 0,
        }
    }

    /// Counters and size.
    pub fn stats(&self) -> ProfileStats {
        ProfileStats {
            users: self.users.len(),
            created: self.created,
            evictions: self.evictions,
            expiries: self.expiries,
        }
    }

    /// Drops profiles idle for longer than the TTL as of event time `now`. Called by
    /// [`observe`](Self::observe) with the newest event time seen; the pipeline may also call
    /// it with its watermark when input is idle.
    pub fn expire(&mut self, now: i64) {
        // The LRU order is the order of activity, which in a time-ordered stream is also the
        // order of `last_seen`: expired profiles gather at the cold end. Events a few minutes
        // out of order can leave one slightly out of place; it is still caught when its user
        // comes back (see `observe`) or once the ones before it go.
        let ttl_ms = self.ttl_ms;
        while let Some(p) = self.users.peek_lru() {
            if now.saturating_sub(p.last_seen) <= ttl_ms {
                break;
            }
            if let Some((_, p)) = self.users.pop_lru() {
                self.unscoped = self.unscoped.saturating_sub(usize::from(p.unscoped));
            }
            self.expiries += 1;
        }
    }

    /// Starts loading the profile of `event`'s user into the cache, for an [`observe`] of it
    /// shortly after: the pipeline calls this for the next event before it runs the rules on
    /// the current one. Changes nothing; a user without a profile costs one probe.
    ///
    /// [`observe`]: Self::observe
    #[inline]
    pub fn prefetch(&self, event: &AuthEvent) {
        if let Some(key) = ProfileKey::of(event) {
            self.users.prefetch(key.as_bytes());
        }
    }

    /// Fills `event.context` from the user's profile, then updates the profile with the event.
    ///
    /// Keyed by tenant and user (the login name, case-insensitive, else the provider id): a
    /// user name in two tenants is two users. Events without a user are left alone. Only
    /// successful sign-ins create a profile (a password-only one to hold it back), only completed
    /// ones teach it places, devices, hours and the last sign-in, and the learning period runs
    /// from the first one learned; other events only keep an existing profile alive. So
    /// failures for made-up user names (credential stuffing) cannot flush real users out of the
    /// store.
    ///
    /// A sign-in is complete when it used a second factor, when an MFA step of it succeeded
    /// within 10 minutes (after a prompt or a denial too), or when no MFA prompt followed its
    /// password within 10 minutes. A password step followed by a denied, failed or unanswered
    /// prompt and no successful MFA step of its own teaches nothing: that is what an attacker
    /// with a stolen password looks like (see [`Unconfirmed`], [`may_confirm`]).
    ///
    /// The hour check uses the event's UTC hour: the user's time zone is not known, and a
    /// user's working hours are as regular in UTC as in local time.
    pub fn observe(&mut self, event: &mut AuthEvent) {
        // On the stack: only a new profile stores its key.
        let Some(key) = ProfileKey::of(event) else {
            return;
        };
        let now = event.time;
        self.max_time = self.max_time.max(now);
        self.expire(self.max_time);

        self.touch_counter += 1;
        let touched = self.touch_counter;
        let kind = kind(event);
        let max_set = self.config.max_per_user_set;
        let (ttl_ms, clock) = (self.ttl_ms, self.max_time);
        if self.unscoped > 0 {
            self.take_over_unscoped(&key, event.user.key(), touched);
        }
        // One hash lookup for the usual case, a known user whose profile is alive.
        if let Some(p) = self.users.get_mut(key.as_bytes(), touched) {
            if clock.saturating_sub(p.last_seen) <= ttl_ms {
                // A held-back sign-in this event decides teaches before the event is judged,
                // as it would have had it been complete when it happened.
                settle(p, event, kind, max_set);
                event.context = context(Some(&*p), event, true, self.learning_ms);
                p.last_seen = p.last_seen.max(now);
                p.touched = touched;
                take(p, event, kind, max_set);
                return;
            }
            // An expired profile that was not yet swept is expired now, before it is read.
            if let Some(p) = self.users.remove(key.as_bytes()) {
                self.unscoped = self.unscoped.saturating_sub(usize::from(p.unscoped));
            }
            self.expiries += 1;
        }

        event.context = context(None, event, false, self.learning_ms);
        if !matches!(kind, Kind::Complete | Kind::MfaSuccess | Kind::PasswordOnly) {
            return;
        }
        let mut p = Profile {
            // Replaced by the first sign-in learned (see `learn`): a password-only sign-in
            // creates the profile only to hold it back, and may never teach it.
            first_seen: now,
            last_seen: now,
            touched,
            countries: RecentSet::default(),
            asns: RecentSet::default(),
            devices: RecentSet::default(),
            last_success: None,
            hours: 0,
            successes: 0,
            unconfirmed: None,
            unscoped: false,
        };
        take(&mut p, event, kind, max_set);
        self.created += 1;
        if let Some((_, evicted)) = self.users.insert(key.as_str(), p, touched) {
            self.unscoped = self.unscoped.saturating_sub(usize::from(evicted.unscoped));
            self.evictions += 1;
        }
    }

    /// Moves the profile a version 1 snapshot holds for `key`'s user into `key`'s tenant, if
    /// the tenant has none of its own yet: the first tenant to see the user again is the one
    /// the profile was learned in, as far as anything can tell.
    fn take_over_unscoped(&mut self, key: &ProfileKey, user_key: &str, touched: u64) {
        if self.users.get(key.as_bytes()).is_some() {
            return;
        }
        let unscoped = unscoped_key(user_key);
        if let Some(mut p) = self.users.remove(&unscoped) {
            p.unscoped = false;
            self.unscoped = self.unscoped.saturating_sub(1);
            // One out, one in: nothing is evicted.
            self.users.insert(key.as_str(), p, touched);
        }
    }

    /// The whole store as bytes, for checkpoints: deterministic (users sorted by key), so
    /// equal state gives equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut users: Vec<(Text, Profile)> = self
            .users
            .iter()
            .map(|(k, p)| (Text::new(k), p.clone()))
            .collect();
        users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            touch_counter: self.touch_counter,
            max_time: self.max_time,
            created: self.created,
            evictions: self.evictions,
            expiries: self.expiries,
            users,
        };
        // Serializing plain structs with string keys into memory cannot fail; an empty
        // snapshot would be refused by `restore`, never silently accepted.
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    /// Replaces the store with a snapshot. The recency order is restored too, so evictions
    /// after a restore are the ones that would have happened without it. A snapshot larger
    /// than `max_users` loses its least recently active users (counted as evictions).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut s: Snapshot = serde_json::from_slice(bytes)?;
        match s.version {
            SNAPSHOT_VERSION => {}
            // Keyed by the user alone: each profile goes into no tenant, marked for the first
            // tenant that sees the user to take over, so an upgrade forgets no one.
            1 => {
                for (key, profile) in &mut s.users {
                    *key = Text::new(unscoped_key(key));
                    profile.unscoped = true;
                }
            }
            found => {
                return Err(SnapshotError::Version {
                    found,
                    supported: SNAPSHOT_VERSION,
                });
            }
        }
        s.users.sort_unstable_by_key(|(_, p)| p.touched);
        self.users.clear();
        self.unscoped = 0;
        self.touch_counter = s.touch_counter;
        self.max_time = s.max_time;
        self.created = s.created;
        self.evictions = s.evictions;
        self.expiries = s.expiries;
        for (key, profile) in s.users {
            let touched = profile.touched;
            self.unscoped += usize::from(profile.unscoped);
            if let Some((_, evicted)) = self.users.insert(key.as_str(), profile, touched) {
                self.unscoped = self.unscoped.saturating_sub(usize::from(evicted.unscoped));
                self.evictions += 1;
            }
        }
        Ok(())
    }
}

/// What the profile says about `event`, before learning from it.
fn context(p: Option<&Profile>, event: &AuthEvent, known: bool, learning_ms: i64) -> UserContext {
    let country = event
        .src
        .geo
        .as_ref()
        .map(|g| &g.country)
        .filter(|c| !c.is_empty());
    let fingerprint = Some(&event.device.fingerprint).filter(|f| !f.is_empty());
    let Some(p) = p else {
        // No history: everything present is new, and the profile is (about to be) learning.
        return UserContext {
            known_user: false,
            learning: true,
            new_device: fingerprint.is_some(),
            new_country: country.is_some(),
            new_asn: event.src.asn.is_some(),
            ..UserContext::default()
        };
    };
    let mut ctx = UserContext {
        known_user: known,
        // Learning until the first sign-in is learned, then for `learning_period` after it: a
        // profile that only holds a password step (perhaps an attacker's, whose push was then
        // denied) knows nothing, and its empty sets would make every fact "new".
        learning: p.successes == 0 || event.time.saturating_sub(p.first_seen) < learning_ms,
        new_device: fingerprint.is_some_and(|f| !p.devices.contains(f)),
        new_country: country.is_some_and(|c| !p.countries.contains(c)),
        new_asn: event.src.asn.is_some_and(|a| !p.asns.contains(&a)),
        unusual_hour: p.successes >= MIN_SUCCESSES_FOR_HOURS
            && p.hours & (1 << utc_hour(event.time)) == 0,
        ..UserContext::default()
    };
    // Where travel is measured from: the last located sign-in, and a held-back password-only
    // sign-in after it (not yet confirmed, so it teaches nothing, but it did happen there: a
    // sign-in from far away minutes later is still impossible travel). The faster one counts.
    let held = p
        .unconfirmed
        .as_ref()
        .filter(|u| !u.challenged && !u.lesson.anonymous)
        .map(|u| u.lesson.place())
        .filter(|h| p.last_success.as_ref().is_none_or(|l| h.time > l.time));
    let mut best: Option<(&LastSuccess, f64, f64)> = None;
    for from in p.last_success.iter().chain(held.as_ref()) {
        if let Some((km, kmh)) = travel(from, event)
            && best.is_none_or(|(_, _, fastest)| kmh > fastest)
        {
            best = Some((from, km, kmh));
        }
    }
    let shown = best.map(|(from, _, _)| from).or(p.last_success.as_ref());
    if let Some(from) = shown {
        ctx.previous = Some(PreviousSignIn {
            time: from.time,
            ip: from.ip,
            country: from.country.clone(),
            lat: from.lat,
            lon: from.lon,
        });
    }
    if let Some((_, km, kmh)) = best {
        ctx.distance_km = Some(km);
        ctx.speed_kmh = Some(kmh);
    }
    ctx
}

/// Distance (km) and speed (km/h) from `from` to `event`'s place, when both have coordinates
/// and neither is internal.
fn travel(from: &LastSuccess, event: &AuthEvent) -> Option<(f64, f64)> {
    let geo = event.src.geo.as_ref().filter(|_| !event.src.internal)?;
    let (lat2, lon2) = (geo.lat?, geo.lon?);
    let (lat1, lon1) = from.lat.zip(from.lon).filter(|_| !from.internal)?;
    let km = haversine_km(lat1, lon1, lat2, lon2);
    // At least a minute: two sign-ins in the same second are not infinitely fast, and
    // coordinates are only city-precise anyway.
    let ms = event.time.abs_diff(from.time).max(MIN_INTERVAL_MS as u64);
    // Speed is judged on the distance the databases are sure of: both points may lie anywhere
    // within their accuracy radius (country-level records have large ones).
    let here_accuracy = geo.accuracy_km.unwrap_or(0);
    let sure_km = (km - f64::from(here_accuracy) - f64::from(from.accuracy_km)).max(0.0);
    Some((km, sure_km / (ms as f64 / MS_PER_HOUR as f64)))
}

/// Decides a held-back password-only sign-in as far as `event`, of kind `kind`, tells: a
/// successful MFA step of the same sign-in ([`may_confirm`]) confirms it, a prompt or a failed
/// MFA step marks it challenged and keeps it held (then only such a successful step within
/// [`CONFIRM_MS`] of it confirms it), and once it is older than [`CONFIRM_MS`] or another
/// password-only sign-in follows it, it teaches unless it was challenged.
fn settle(p: &mut Profile, event: &AuthEvent, kind: Kind, max_set: usize) {
    let Some(u) = &mut p.unconfirmed else {
        return;
    };
    let now = event.time;
    // Events up to a few minutes out of order: an MFA step logged before the password step it
    // belongs to still counts. Only time after the sign-in tells that no prompt came: a late
    // event from before it says nothing about that.
    let near = now.abs_diff(u.lesson.time) <= CONFIRM_MS as u64;
    let over = now > u.lesson.time.saturating_add(CONFIRM_MS);
    let confirmed = match kind {
        Kind::MfaSuccess if near && may_confirm(u, event) => true,
        // Another sign-in's MFA step: it says nothing about this one, which waits on.
        Kind::MfaSuccess if near => return,
        // Held on, not dropped: the prompt is what a real sign-in with MFA looks like too, and
        // the approval that follows is what confirms it. MFA services often log the prompt and
        // the approval without the address or user agent, so the approval alone would teach
        // nothing of the sign-in's device and place. Dropping the step here lost them for
        // every sign-in that had an MFA prompt.
        Kind::MfaOther if near => {
            u.challenged = true;
            return;
        }
        _ if over || kind == Kind::PasswordOnly => !u.challenged,
        _ => return,
    };
    if let Some(u) = p.unconfirmed.take()
        && confirmed
    {
        learn(p, &u.lesson, max_set);
    }
}

/// Lets the profile take what `event` teaches, once `settle` has run for it.
fn take(p: &mut Profile, event: &AuthEvent, kind: Kind, max_set: usize) {
    match kind {
        Kind::Complete | Kind::MfaSuccess => learn(p, &Lesson::of(event), max_set),
        Kind::PasswordOnly => {
            p.unconfirmed = Some(Unconfirmed {
                lesson: Lesson::of(event),
                challenged: false,
                session: session_hash(&event.session_id),
            });
        }
        Kind::MfaOther | Kind::Other => {}
    }
}

/// Learns from a completed sign-in.
fn learn(p: &mut Profile, lesson: &Lesson, max_set: usize) {
    // The learning period runs from the first sign-in actually learned, not from the event that
    // created the profile: a held-back password step creates it too, and may never teach.
    if p.successes == 0 {
        p.first_seen = lesson.time;
    }
    if !lesson.country.is_empty() {
        p.countries.touch(&lesson.country, max_set);
    }
    if let Some(asn) = lesson.asn {
        p.asns.touch(&asn, max_set);
    }
    if !lesson.fingerprint.is_empty() {
        p.devices.touch(&lesson.fingerprint, max_set);
    }
    p.hours |= 1 << utc_hour(lesson.time);
    p.successes = p.successes.saturating_add(1);
    // Travel is measured from the last sign-in with a place: one without coordinates (an
    // address the databases lack, an internal one) would otherwise leave the next far-away
    // sign-in with nothing to measure against, and an attacker could send one on purpose. An
    // anonymizer (VPN, Tor, proxy, hosting) says nothing about where the user is. Out-of-order
    // events still teach places and devices, but "last" stays the newest.
    let located = lesson.lat.is_some() && lesson.lon.is_some() && !lesson.internal;
    if located
        && !lesson.anonymous
        && p.last_success
            .as_ref()
            .is_none_or(|l| lesson.time >= l.time)
    {
        p.last_success = Some(lesson.place());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymizer_sign_ins_are_not_a_place_to_travel_from() {
        let mut profiles = UserProfiles::new(&ProfileConfig::default());
        let at = |t: i64, lat: f64, lon: f64, anonymous: bool| {
            let mut e = AuthEvent {
                time: t,
                activity: authwatch_event::Activity::Logon,
                outcome: authwatch_event::Outcome::Success,
                ..AuthEvent::default()
            };
            e.user.name = "u@x".into();
            e.src.geo = Some(authwatch_event::Geo {
                lat: Some(lat),
                lon: Some(lon),
                ..Default::default()
            });
            e.src.anonymizer.anonymous = anonymous;
            e
        };
        let h = 3_600_000;
        // Singapore, then a Tor exit "in London", then Manila three hours after Singapore.
        profiles.observe(&mut at(0, 1.35, 103.8, false));
        profiles.observe(&mut at(h, 51.5, -0.09, true));
        let mut manila = at(3 * h, 14.6, 121.0, false);
        profiles.observe(&mut manila);
        let previous = manila.context.previous.unwrap();
        assert_eq!(
            previous.time, 0,
            "measured from Singapore, not the Tor exit"
        );
        assert!(manila.context.speed_kmh.unwrap() < 900.0);
    }

    #[test]
    fn speed_discounts_the_accuracy_radius() {
        let mut profiles = UserProfiles::new(&ProfileConfig::default());
        let mut first = AuthEvent {
            time: 0,
            activity: authwatch_event::Activity::Logon,
            outcome: authwatch_event::Outcome::Success,
            ..AuthEvent::default()
        };
        first.user.name = "u@x".into();
        first.src.geo = Some(authwatch_event::Geo {
            lat: Some(0.0),
            lon: Some(0.0),
            accuracy_km: Some(500),
            ..Default::default()
        });
        let mut second = first.clone();
        second.time = 3_600_000;
        second.src.geo = Some(authwatch_event::Geo {
            lat: Some(0.0),
            lon: Some(9.0), // about 1000 km east
            accuracy_km: Some(400),
            ..Default::default()
        });
        profiles.observe(&mut first);
        profiles.observe(&mut second);
        let km = second.context.distance_km.unwrap();
        assert!((990.0..1010.0).contains(&km), "{km}");
        // Only the ~100 km beyond both radii count: about 100 km/h.
        assert!(second.context.speed_kmh.unwrap() < 120.0);
    }
    use crate::config::DurationText;
    use authwatch_event::Geo;
    use std::time::Duration;

    const T0: i64 = 1_767_603_600_000; // 2026-01-05T09:00:00Z
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    fn place(country: &str, lat: f64, lon: f64, asn: u32) -> (Geo, u32) {
        (
            Geo {
                country: country.into(),
                city: "".into(),
                lat: Some(lat),
                lon: Some(lon),
                accuracy_km: None,
            },
            asn,
        )
    }

    fn linkoping() -> (Geo, u32) {
        place("SE", 58.4167, 15.6167, 29518)
    }
    fn changchun() -> (Geo, u32) {
        place("CN", 43.88, 125.3228, 4837)
    }
    fn milton() -> (Geo, u32) {
        place("US", 47.2513, -122.3149, 209)
    }

    fn ev(user: &str, time: i64, outcome: Outcome, at: (Geo, u32), fp: &str) -> AuthEvent {
        let mut e = AuthEvent {
            time,
            activity: Activity::Logon,
            outcome,
            ..AuthEvent::default()
        };
        e.user.name = user.into();
        e.src.geo = Some(at.0);
        e.src.asn = Some(at.1);
        e.device.fingerprint = fp.into();
        e
    }

    fn ok(user: &str, time: i64, at: (Geo, u32), fp: &str) -> AuthEvent {
        ev(user, time, Outcome::Success, at, fp)
    }

    fn store() -> UserProfiles {
        UserProfiles::new(&ProfileConfig::default())
    }

    /// `s`'s snapshot as version 1 wrote it: keyed by the user alone, `key` mapping each
    /// tenant-less key of today to the one version 1 had.
    fn as_version_1(s: &UserProfiles, key: impl Fn(String) -> String) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&s.snapshot()).unwrap();
        v["version"] = 1.into();
        for entry in v["users"].as_array_mut().unwrap() {
            let today = entry[0].as_str().unwrap().trim_start_matches('\u{1f}');
            entry[0] = key(today.to_string()).into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn first_success_creates_a_learning_profile() {
        let mut s = store();
        let mut e = ok("aiko", T0, linkoping(), "fp1");
        s.observe(&mut e);
        assert!(!e.context.known_user);
        assert!(e.context.learning);
        assert!(e.context.new_device && e.context.new_country && e.context.new_asn);
        assert_eq!(e.context.previous, None);
        assert_eq!(s.stats().users, 1);
        assert_eq!(s.stats().created, 1);

        let mut e = ok("aiko", T0 + HOUR, linkoping(), "fp1");
        s.observe(&mut e);
        assert!(e.context.known_user);
        assert!(e.context.learning, "one hour old");
        assert!(!e.context.new_device && !e.context.new_country && !e.context.new_asn);
        assert_eq!(e.context.distance_km, Some(0.0));
        assert_eq!(e.context.previous.as_ref().map(|p| p.time), Some(T0));
    }

    #[test]
    fn new_device_and_country_after_the_learning_period() {
        let mut s = store();
        for d in 0..3 {
            s.observe(&mut ok("aiko", T0 + d * DAY, linkoping(), "laptop"));
        }
        let mut e = ok("aiko", T0 + 3 * DAY, milton(), "phone");
        s.observe(&mut e);
        assert!(e.context.known_user);
        assert!(!e.context.learning, "3 days > 2 days");
        assert!(e.context.new_device);
        assert!(e.context.new_country);
        assert!(e.context.new_asn);
        // Learned now: the same place and device are no longer new.
        let mut e = ok("aiko", T0 + 3 * DAY + HOUR, milton(), "phone");
        s.observe(&mut e);
        assert!(!e.context.new_device && !e.context.new_country && !e.context.new_asn);
        // An event without a fingerprint or geo is not "new".
        let mut e = ok("aiko", T0 + 3 * DAY + 2 * HOUR, milton(), "");
        e.src.geo = None;
        e.src.asn = None;
        s.observe(&mut e);
        assert!(!e.context.new_device && !e.context.new_country && !e.context.new_asn);
    }

    #[test]
    fn learning_period_is_in_event_time() {
        let mut s = store();
        s.observe(&mut ok("ken", T0, linkoping(), "a"));
        let mut e = ok("ken", T0 + 2 * DAY - 1, linkoping(), "a");
        s.observe(&mut e);
        assert!(e.context.learning);
        let mut e = ok("ken", T0 + 2 * DAY, linkoping(), "a");
        s.observe(&mut e);
        assert!(!e.context.learning);
    }

    #[test]
    fn failures_do_not_create_or_teach() {
        let mut s = store();
        let mut e = ev("ghost", T0, Outcome::Failure, linkoping(), "x");
        s.observe(&mut e);
        assert!(!e.context.known_user && e.context.learning);
        assert_eq!(
            s.stats().users,
            0,
            "failures for unknown users leave no state"
        );

        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        s.observe(&mut ev("aiko", T0 + MIN, Outcome::Failure, milton(), "bot"));
        let mut e = ok("aiko", T0 + 2 * MIN, milton(), "bot");
        s.observe(&mut e);
        assert!(
            e.context.new_country && e.context.new_device,
            "the failure taught nothing"
        );
        // A challenge or a logoff is not a sign-in either.
        let mut e = ok("aiko", T0 + 3 * MIN, changchun(), "z");
        e.activity = Activity::MfaChallenge;
        s.observe(&mut e);
        let mut e = ok("aiko", T0 + 4 * MIN, changchun(), "z");
        s.observe(&mut e);
        assert!(e.context.new_country);
        // mfa_verify success does teach.
        let mut e = ok("aiko", T0 + 5 * MIN, changchun(), "z");
        e.activity = Activity::MfaVerify;
        s.observe(&mut e);
        assert!(!e.context.new_country);
    }

    #[test]
    fn impossible_travel_speed() {
        let mut s = store();
        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        let mut e = ok("aiko", T0 + 20 * MIN, changchun(), "laptop");
        s.observe(&mut e);
        let km = e.context.distance_km.unwrap();
        let kmh = e.context.speed_kmh.unwrap();
        // Linköping → Changchun is about 7,000 km great-circle.
        assert!((6_800.0..7_300.0).contains(&km), "{km}");
        assert!(
            (km * 3.0 - kmh).abs() < 1e-6,
            "20 minutes: speed = 3 × distance"
        );
        assert!(kmh > 2_000.0, "{kmh}");
        let prev = e.context.previous.as_ref().unwrap();
        assert_eq!((prev.time, prev.country.as_str()), (T0, "SE"));

        // Same-second sign-ins are divided by one minute, not zero.
        let mut e = ok("aiko", T0 + 20 * MIN, linkoping(), "laptop");
        s.observe(&mut e);
        let (km, kmh) = (e.context.distance_km.unwrap(), e.context.speed_kmh.unwrap());
        assert!((kmh - km * 60.0).abs() < 1e-6);

        // No distance when either side is internal or lacks coordinates.
        let mut e = ok("aiko", T0 + 30 * MIN, changchun(), "laptop");
        e.src.internal = true;
        s.observe(&mut e);
        assert_eq!(e.context.distance_km, None);
        // The internal sign-in is not a place to measure from: the next one is measured from
        // the last located sign-in (Linköping), so an address without a place cannot reset it.
        let mut e = ok("aiko", T0 + 40 * MIN, changchun(), "laptop");
        s.observe(&mut e);
        assert!(e.context.distance_km.is_some_and(|km| km > 6_800.0));
        let prev = e.context.previous.as_ref().unwrap();
        assert_eq!((prev.time, prev.country.as_str()), (T0 + 20 * MIN, "SE"));
    }

    #[test]
    fn a_sign_in_without_a_place_keeps_the_travel_anchor() {
        let mut s = store();
        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        // An IPv6 address the databases lack, five minutes later: no coordinates.
        let mut nowhere = ok("aiko", T0 + 5 * MIN, linkoping(), "laptop");
        nowhere.src.geo = None;
        nowhere.src.asn = None;
        s.observe(&mut nowhere);
        let mut far = ok("aiko", T0 + 20 * MIN, changchun(), "laptop");
        s.observe(&mut far);
        assert!(
            far.context.speed_kmh.is_some_and(|v| v > 2_000.0),
            "{:?}",
            far.context
        );
        assert_eq!(far.context.previous.as_ref().map(|p| p.time), Some(T0));
    }

    /// The attacker's steps in push bombing: the stolen password works, the push is denied.
    fn attacker_push_denied(s: &mut UserProfiles, at: i64) {
        s.observe(&mut ok("aiko", at, changchun(), "attacker"));
        let mut denied = ev("aiko", at + MIN, Outcome::Denied, changchun(), "attacker");
        denied.activity = Activity::MfaVerify;
        denied.factor = Factor::Push;
        s.observe(&mut denied);
    }

    #[test]
    fn a_password_step_whose_push_is_denied_teaches_nothing() {
        let mut s = store();
        for d in 0..3 {
            s.observe(&mut ok("aiko", T0 + d * DAY, linkoping(), "laptop"));
        }
        attacker_push_denied(&mut s, T0 + 3 * DAY);
        // The victim, from home two hours later: no travel from the attacker's place.
        let mut home = ok("aiko", T0 + 3 * DAY + 2 * HOUR, linkoping(), "laptop");
        s.observe(&mut home);
        assert_eq!(
            home.context.previous.as_ref().map(|p| p.country.as_str()),
            Some("SE")
        );
        assert!(
            home.context.speed_kmh.is_some_and(|v| v < 1.0),
            "{:?}",
            home.context
        );
        // The attacker, a day later: still a new device, country and network.
        let mut again = ok("aiko", T0 + 4 * DAY, changchun(), "attacker");
        s.observe(&mut again);
        let c = &again.context;
        assert!(c.new_device && c.new_country && c.new_asn, "{c:?}");
    }

    /// An Okta Identity Engine sign-in: the password is verified as a factor too, then the push.
    fn verified(
        user: &str,
        time: i64,
        outcome: Outcome,
        factor: Factor,
        at: (Geo, u32),
    ) -> AuthEvent {
        let mut e = ev(
            user,
            time,
            outcome,
            at,
            if factor == Factor::Push {
                "phone"
            } else {
                "browser"
            },
        );
        e.activity = Activity::MfaVerify;
        e.factor = factor;
        e
    }

    #[test]
    fn a_password_verification_is_no_mfa_success() {
        let mut s = store();
        for d in 0..3 {
            s.observe(&mut verified(
                "ken",
                T0 + d * DAY,
                Outcome::Success,
                Factor::Password,
                linkoping(),
            ));
            s.observe(&mut verified(
                "ken",
                T0 + d * DAY + MIN,
                Outcome::Success,
                Factor::Push,
                linkoping(),
            ));
        }
        // The attacker has the password; the push is denied.
        let attack = T0 + 3 * DAY;
        let mut password = verified(
            "ken",
            attack,
            Outcome::Success,
            Factor::Password,
            changchun(),
        );
        password.device.fingerprint = "attacker".into();
        s.observe(&mut password);
        let mut denied = verified(
            "ken",
            attack + MIN,
            Outcome::Denied,
            Factor::Push,
            changchun(),
        );
        denied.device.fingerprint = "attacker".into();
        s.observe(&mut denied);
        assert!(
            denied.context.new_country,
            "the password step taught CN: {:?}",
            denied.context
        );
        // The victim, from home two hours later: measured from home, not from the attacker.
        let mut home = verified(
            "ken",
            attack + 2 * HOUR,
            Outcome::Success,
            Factor::Password,
            linkoping(),
        );
        s.observe(&mut home);
        assert_eq!(
            home.context.previous.as_ref().map(|p| p.country.as_str()),
            Some("SE"),
            "{:?}",
            home.context
        );
        assert!(
            home.context.speed_kmh.is_some_and(|v| v < 1.0),
            "{:?}",
            home.context
        );
        // The attacker a day later: still a new country and device.
        let mut again = verified(
            "ken",
            attack + DAY,
            Outcome::Success,
            Factor::Password,
            changchun(),
        );
        again.device.fingerprint = "attacker".into();
        s.observe(&mut again);
        assert!(
            again.context.new_country && again.context.new_device,
            "{:?}",
            again.context
        );
        // A wrong password is no MFA prompt: the held password step before it still teaches
        // once no prompt follows.
        let mut s = store();
        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        s.observe(&mut ok("aiko", T0 + DAY, milton(), "tablet"));
        let mut typo = verified(
            "aiko",
            T0 + DAY + MIN,
            Outcome::Failure,
            Factor::Password,
            milton(),
        );
        typo.device.fingerprint = "tablet".into();
        s.observe(&mut typo);
        let mut next = ok("aiko", T0 + DAY + HOUR, milton(), "tablet");
        s.observe(&mut next);
        assert!(
            !next.context.new_country && !next.context.new_device,
            "{:?}",
            next.context
        );
    }

    /// A challenged password step is held on, so the victim's own MFA approval in another
    /// sign-in minutes after the attacker's denied push must not confirm the attacker's step.
    #[test]
    fn another_sign_ins_mfa_approval_does_not_confirm_a_held_step() {
        let attack = T0 + 3 * DAY;
        // The victim's approval: another session, another address, or both.
        let approvals = [
            ("victim", Some(linkoping())),
            ("victim", None),
            ("", Some(linkoping())),
        ];
        for (session, at) in approvals {
            let mut s = store();
            for d in 0..3 {
                s.observe(&mut ok("aiko", T0 + d * DAY, linkoping(), "laptop"));
            }
            let mut password = ok("aiko", attack, changchun(), "attacker");
            password.src.ip = "175.16.199.5".parse().ok();
            password.session_id = "s1".into();
            s.observe(&mut password);
            for (minute, activity, outcome) in [
                (0, Activity::MfaChallenge, Outcome::Challenge),
                (1, Activity::MfaVerify, Outcome::Denied),
            ] {
                let mut e = bare_mfa("aiko", attack + minute * MIN, activity, outcome);
                e.session_id = "s1".into();
                s.observe(&mut e);
            }
            let mut approval = bare_mfa(
                "aiko",
                attack + 3 * MIN,
                Activity::MfaVerify,
                Outcome::Success,
            );
            approval.session_id = session.into();
            if let Some(at) = at {
                approval.src.ip = "89.160.20.113".parse().ok();
                approval.src.geo = Some(at.0);
                approval.src.asn = Some(at.1);
                approval.device.fingerprint = "laptop".into();
            }
            s.observe(&mut approval);
            let mut again = ok("aiko", attack + 2 * DAY, changchun(), "attacker");
            s.observe(&mut again);
            let c = &again.context;
            assert!(
                c.new_device && c.new_country && c.new_asn,
                "{session:?} {:?}: {c:?}",
                approval.src.ip
            );
        }

        // The same sign-in's approval, in its session or from its address, does confirm.
        for (session, ip) in [
            ("s1", None),
            ("", Some("175.16.199.5")),
            ("s1", Some("::ffff:175.16.199.5")),
        ] {
            let mut s = store();
            s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
            let mut password = ok("aiko", attack, changchun(), "travel");
            password.src.ip = "175.16.199.5".parse().ok();
            password.session_id = "s1".into();
            s.observe(&mut password);
            let mut prompt = bare_mfa("aiko", attack, Activity::MfaChallenge, Outcome::Challenge);
            prompt.session_id = "s1".into();
            s.observe(&mut prompt);
            let mut approval =
                bare_mfa("aiko", attack + MIN, Activity::MfaVerify, Outcome::Success);
            approval.session_id = session.into();
            approval.src.ip = ip.and_then(|ip| ip.parse().ok());
            s.observe(&mut approval);
            let mut again = ok("aiko", attack + DAY, changchun(), "travel");
            s.observe(&mut again);
            let c = &again.context;
            assert!(!c.new_device && !c.new_country, "{session:?} {ip:?}: {c:?}");
        }
    }

    /// Regression: the profile an attacker's password step created started the learning clock,
    /// so two days after a denied push the victim's first sign-in met a "not learning" profile
    /// with nothing in it, and was new device and new country.
    #[test]
    fn learning_starts_at_the_first_sign_in_learned() {
        let mut s = store();
        attacker_push_denied(&mut s, T0);
        let first = T0 + 3 * DAY;
        let mut e = ok("aiko", first, linkoping(), "laptop");
        e.factor = Factor::Push;
        s.observe(&mut e);
        assert!(e.context.learning, "nothing learned yet: {:?}", e.context);
        // The clock runs from that first sign-in.
        let mut e = ok("aiko", first + 2 * DAY - 1, milton(), "phone");
        e.factor = Factor::Push;
        s.observe(&mut e);
        assert!(e.context.learning, "{:?}", e.context);
        let mut e = ok("aiko", first + 2 * DAY, changchun(), "tablet");
        e.factor = Factor::Push;
        s.observe(&mut e);
        assert!(!e.context.learning, "{:?}", e.context);

        // A held-back password step that proves complete starts it at its own time.
        let mut s = store();
        s.observe(&mut ok("ken", T0, linkoping(), "laptop"));
        let mut e = ok("ken", T0 + 2 * DAY, linkoping(), "laptop");
        s.observe(&mut e);
        assert!(!e.context.learning, "{:?}", e.context);
    }

    /// A checkpoint written before the fix holds profiles that learned nothing but carry the
    /// time of the password step that created them: they still load (held steps without a
    /// session hash too), count as learning, and their clock starts at the first sign-in learned.
    #[test]
    fn an_older_checkpoint_with_an_empty_profile_is_learning() {
        let old = serde_json::json!({
            "version": 2,
            "touch_counter": 2,
            "max_time": T0 + MIN,
            "created": 1,
            "evictions": 0,
            "expiries": 0,
            "users": [["\u{1f}aiko", {
                "first_seen": T0,
                "last_seen": T0 + MIN,
                "touched": 2,
                "countries": [],
                "asns": [],
                "devices": [],
                "hours": 0,
                "successes": 0,
                // Held before held steps had a session hash.
                "unconfirmed": {
                    "lesson": { "time": T0, "country": "CN", "fingerprint": "attacker" },
                    "challenged": true
                }
            }]]
        });
        let mut s = store();
        s.restore(&serde_json::to_vec(&old).unwrap()).unwrap();
        let first = T0 + 3 * DAY;
        let mut e = ok("aiko", first, linkoping(), "laptop");
        e.factor = Factor::Push;
        s.observe(&mut e);
        assert!(
            e.context.known_user && e.context.learning,
            "{:?}",
            e.context
        );
        let mut e = ok("aiko", first + DAY, milton(), "phone");
        e.factor = Factor::Push;
        s.observe(&mut e);
        assert!(e.context.learning, "{:?}", e.context);
    }

    /// An MFA step as some MFA services log it: no address, no user agent.
    fn bare_mfa(user: &str, time: i64, activity: Activity, outcome: Outcome) -> AuthEvent {
        let mut e = AuthEvent {
            time,
            activity,
            outcome,
            factor: Factor::Push,
            ..AuthEvent::default()
        };
        e.user.name = user.into();
        e
    }

    /// Regression: the prompt marked the held password step challenged and then dropped it, so
    /// the approval after it had nothing to confirm and any MFA prompt lost the sign-in's
    /// device and place.
    #[test]
    fn a_challenged_password_step_is_learned_when_the_mfa_step_succeeds() {
        let mut s = store();
        for d in 0..3 {
            s.observe(&mut ok("aiko", T0 + d * DAY, linkoping(), "laptop"));
        }
        let at = T0 + 3 * DAY;
        s.observe(&mut ok("aiko", at, milton(), "browser"));
        let mut prompt = bare_mfa(
            "aiko",
            at + MIN / 2,
            Activity::MfaChallenge,
            Outcome::Challenge,
        );
        s.observe(&mut prompt);
        let mut approved = bare_mfa("aiko", at + MIN, Activity::MfaVerify, Outcome::Success);
        s.observe(&mut approved);
        let mut next_day = ok("aiko", at + DAY, milton(), "browser");
        s.observe(&mut next_day);
        let c = &next_day.context;
        assert!(!c.new_device && !c.new_country && !c.new_asn, "{c:?}");
        assert_eq!(c.previous.as_ref().map(|p| p.time), Some(at), "{c:?}");

        // Challenged and then denied, or never answered: still nothing learned.
        for last in [Some(Outcome::Denied), None] {
            let mut s = store();
            for d in 0..3 {
                s.observe(&mut ok("aiko", T0 + d * DAY, linkoping(), "laptop"));
            }
            s.observe(&mut ok("aiko", at, changchun(), "attacker"));
            s.observe(&mut bare_mfa(
                "aiko",
                at + MIN / 2,
                Activity::MfaChallenge,
                Outcome::Challenge,
            ));
            if let Some(outcome) = last {
                s.observe(&mut bare_mfa(
                    "aiko",
                    at + MIN,
                    Activity::MfaVerify,
                    outcome,
                ));
            }
            // An approval after the window is no answer to this prompt.
            s.observe(&mut bare_mfa(
                "aiko",
                at + 11 * MIN,
                Activity::MfaVerify,
                Outcome::Success,
            ));
            let mut again = ok("aiko", at + DAY, changchun(), "attacker");
            s.observe(&mut again);
            let c = &again.context;
            assert!(
                c.new_device && c.new_country && c.new_asn,
                "{last:?}: {c:?}"
            );
        }
    }

    #[test]
    fn a_password_step_confirmed_by_mfa_or_by_no_prompt_teaches() {
        let mut s = store();
        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        // Approved push: the sign-in is confirmed at once, and the push itself is familiar.
        s.observe(&mut ok("aiko", T0 + DAY, changchun(), "phone"));
        let mut push = ev(
            "aiko",
            T0 + DAY + MIN,
            Outcome::Success,
            changchun(),
            "phone",
        );
        push.activity = Activity::MfaVerify;
        push.factor = Factor::Push;
        s.observe(&mut push);
        assert!(
            !push.context.new_device && !push.context.new_country,
            "{:?}",
            push.context
        );
        // A password-only sign-in (no MFA prompt follows) teaches at the user's next event.
        s.observe(&mut ok("aiko", T0 + 2 * DAY, milton(), "tablet"));
        let mut next = ok("aiko", T0 + 2 * DAY + HOUR, milton(), "tablet");
        s.observe(&mut next);
        assert!(
            !next.context.new_device && !next.context.new_country,
            "{:?}",
            next.context
        );
        // A denied push followed by an approved one within minutes: the user's own sign-in.
        s.observe(&mut ok(
            "aiko",
            T0 + 3 * DAY,
            place("JP", 35.7, 139.7, 2516),
            "kiosk",
        ));
        for (minute, outcome) in [(1, Outcome::Denied), (2, Outcome::Success)] {
            let mut e = ev(
                "aiko",
                T0 + 3 * DAY + minute * MIN,
                outcome,
                place("JP", 35.7, 139.7, 2516),
                "kiosk",
            );
            e.activity = Activity::MfaVerify;
            s.observe(&mut e);
        }
        let mut later = ok(
            "aiko",
            T0 + 4 * DAY,
            place("JP", 35.7, 139.7, 2516),
            "kiosk",
        );
        s.observe(&mut later);
        assert!(!later.context.new_device, "{:?}", later.context);
    }

    #[test]
    fn profiles_are_per_tenant_and_logins_ignore_case() {
        let mut s = store();
        let mut acme = ok("Admin", T0, linkoping(), "laptop");
        acme.tenant = "acme".into();
        s.observe(&mut acme);
        // The same name in another tenant, far away 20 minutes later: another user.
        let mut globex = ok("admin", T0 + 20 * MIN, changchun(), "pc");
        globex.tenant = "globex".into();
        s.observe(&mut globex);
        assert!(!globex.context.known_user, "{:?}", globex.context);
        assert_eq!(globex.context.speed_kmh, None);
        // The same login in another case, in the first tenant: the same user.
        let mut again = ok("ADMIN", T0 + DAY, linkoping(), "laptop");
        again.tenant = "acme".into();
        s.observe(&mut again);
        assert!(
            again.context.known_user && !again.context.new_device,
            "{:?}",
            again.context
        );
        // A provider id is opaque: case counts.
        let id = |id: &str, t: i64| {
            let mut e = ok("", t, linkoping(), "laptop");
            e.user.id = id.into();
            e
        };
        s.observe(&mut id("00uAbC", T0));
        let mut other = id("00uabc", T0 + DAY);
        s.observe(&mut other);
        assert!(!other.context.known_user);
    }

    #[test]
    fn a_snapshot_of_before_tenants_is_taken_over_by_the_first_tenant() {
        let mut old = store();
        old.observe(&mut ok("Aiko@x", T0, linkoping(), "laptop"));
        old.observe(&mut ok("aiko@x", T0 + HOUR, linkoping(), "laptop"));
        // The same store as version 1 wrote it: keyed by the user alone.
        let v1 = as_version_1(&old, |key| key);
        let mut s = store();
        s.restore(&v1).unwrap();
        // Taken over under the user key exactly as version 1 wrote it.
        let mut acme = ok("aiko@x", T0 + DAY, linkoping(), "laptop");
        acme.tenant = "acme".into();
        s.observe(&mut acme);
        assert!(
            acme.context.known_user && !acme.context.new_device,
            "{:?}",
            acme.context
        );
        let mut globex = ok("aiko@x", T0 + DAY, linkoping(), "laptop");
        globex.tenant = "globex".into();
        s.observe(&mut globex);
        assert!(
            !globex.context.known_user,
            "taken over by acme: {:?}",
            globex.context
        );
        assert_eq!(s.unscoped, 0);
        // Version 3 is refused.
        let mut v: serde_json::Value = serde_json::from_slice(&v1).unwrap();
        v["version"] = 3.into();
        assert!(store().restore(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn a_held_password_step_is_still_a_place_to_measure_travel_from() {
        let mut s = store();
        let mut push = |t: i64, at: (Geo, u32)| {
            let mut e = ok("aiko", t, at, "laptop");
            e.factor = Factor::Push;
            s.observe(&mut e);
            e
        };
        push(T0, linkoping());
        // A password-only sign-in from home, then five minutes later a full sign-in from China.
        s.observe(&mut ok("aiko", T0 + DAY, linkoping(), "laptop"));
        let mut far = ok("aiko", T0 + DAY + 5 * MIN, changchun(), "laptop");
        far.factor = Factor::Push;
        s.observe(&mut far);
        assert!(
            far.context.speed_kmh.is_some_and(|v| v > 50_000.0),
            "{:?}",
            far.context
        );
        assert_eq!(far.context.previous.map(|p| p.time), Some(T0 + DAY));
    }

    #[test]
    fn a_late_event_from_before_a_password_step_does_not_confirm_it() {
        let mut s = store();
        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        // The attacker's password step, a late failure from eleven minutes before it, then the
        // denied push.
        s.observe(&mut ok("aiko", T0 + DAY, changchun(), "attacker"));
        s.observe(&mut ev(
            "aiko",
            T0 + DAY - 11 * MIN,
            Outcome::Failure,
            linkoping(),
            "laptop",
        ));
        let mut denied = ev(
            "aiko",
            T0 + DAY + MIN,
            Outcome::Denied,
            changchun(),
            "attacker",
        );
        denied.activity = Activity::MfaVerify;
        s.observe(&mut denied);
        let mut home = ok("aiko", T0 + DAY + 2 * HOUR, linkoping(), "laptop");
        s.observe(&mut home);
        assert!(
            home.context.speed_kmh.is_some_and(|v| v < 1.0),
            "{:?}",
            home.context
        );
    }

    #[test]
    fn version_1_profiles_are_found_under_their_exact_key() {
        let mut old = store();
        let mut by_id = ok("", T0, linkoping(), "laptop");
        by_id.user.id = "00uAbC".into();
        old.observe(&mut by_id);
        old.observe(&mut ok("ken@x", T0, linkoping(), "pc"));
        // Version 1 kept the id's case; the name here was already lower case.
        let v1 = as_version_1(&old, |key| {
            if key == "00uabc" {
                "00uAbC".to_string()
            } else {
                key
            }
        });
        let mut s = store();
        s.restore(&v1).unwrap();
        assert_eq!(s.unscoped, 2);
        // A mixed-case provider id finds its profile.
        let mut again = ok("", T0 + DAY, linkoping(), "laptop");
        again.user.id = "00uAbC".into();
        s.observe(&mut again);
        assert!(
            again.context.known_user && !again.context.new_device,
            "{:?}",
            again.context
        );
        // An event without a tenant takes its profile over too, so no tenant can later.
        s.observe(&mut ok("ken@x", T0 + DAY, linkoping(), "pc"));
        assert_eq!(s.unscoped, 0);
        let mut acme = ok("ken@x", T0 + DAY, linkoping(), "pc");
        acme.tenant = "acme".into();
        s.observe(&mut acme);
        assert!(!acme.context.known_user);
    }

    #[test]
    fn an_unconfirmed_sign_in_survives_a_snapshot() {
        let mut s = store();
        s.observe(&mut ok("aiko", T0, linkoping(), "laptop"));
        s.observe(&mut ok("aiko", T0 + DAY, changchun(), "attacker"));
        let mut restored = store();
        restored.restore(&s.snapshot()).unwrap();
        assert_eq!(restored.snapshot(), s.snapshot());
        for store in [&mut s, &mut restored] {
            let mut denied = ev(
                "aiko",
                T0 + DAY + MIN,
                Outcome::Denied,
                changchun(),
                "attacker",
            );
            denied.activity = Activity::MfaVerify;
            store.observe(&mut denied);
            let mut again = ok("aiko", T0 + 2 * DAY, changchun(), "attacker");
            store.observe(&mut again);
            assert!(again.context.new_device, "{:?}", again.context);
        }
    }

    #[test]
    fn unusual_hour_after_five_successes() {
        let mut s = store();
        for d in 0..5 {
            let mut e = ok("aiko", T0 + d * DAY, linkoping(), "a");
            s.observe(&mut e);
            assert!(
                !e.context.unusual_hour,
                "fewer than 5 successes: no verdict"
            );
        }
        let mut e = ok("aiko", T0 + 5 * DAY, linkoping(), "a"); // 09 UTC again
        s.observe(&mut e);
        assert!(!e.context.unusual_hour);
        let mut e = ok("aiko", T0 + 5 * DAY + 17 * HOUR, linkoping(), "a"); // 02 UTC
        s.observe(&mut e);
        assert!(e.context.unusual_hour);
        assert_eq!(utc_hour(T0), 9);
        assert_eq!(utc_hour(-1), 23);
    }

    #[test]
    fn bounded_sets_drop_the_least_recently_seen() {
        let mut s = UserProfiles::new(&ProfileConfig {
            max_per_user_set: 2,
            ..ProfileConfig::default()
        });
        for (i, fp) in ["a", "b", "a", "c"].iter().enumerate() {
            s.observe(&mut ok("u", T0 + i as i64 * MIN, linkoping(), fp));
        }
        // "a" was seen again after "b", so "b" is the one dropped for "c".
        let mut e = ok("u", T0 + 10 * MIN, linkoping(), "a");
        s.observe(&mut e);
        assert!(!e.context.new_device);
        let mut e = ok("u", T0 + 11 * MIN, linkoping(), "b");
        s.observe(&mut e);
        assert!(e.context.new_device);
    }

    #[test]
    fn eviction_is_bounded_and_counted() {
        let mut s = UserProfiles::new(&ProfileConfig {
            max_users: 3,
            ..ProfileConfig::default()
        });
        for (i, u) in ["a", "b", "c"].iter().enumerate() {
            s.observe(&mut ok(u, T0 + i as i64, linkoping(), "x"));
        }
        // "a" is active again, so "b" is the least recently active when "d" arrives.
        s.observe(&mut ev("a", T0 + 10, Outcome::Failure, linkoping(), "x"));
        s.observe(&mut ok("d", T0 + 11, linkoping(), "x"));
        assert_eq!(s.stats().users, 3);
        assert_eq!(s.stats().evictions, 1);
        let mut e = ok("b", T0 + 12, linkoping(), "x");
        s.observe(&mut e);
        assert!(!e.context.known_user, "b was evicted");
        assert_eq!(s.stats().evictions, 2, "b's return evicted c");
        let mut e = ok("a", T0 + 13, linkoping(), "x");
        s.observe(&mut e);
        assert!(e.context.known_user, "a stayed: it was active");
        let mut e = ok("c", T0 + 14, linkoping(), "x");
        s.observe(&mut e);
        assert!(!e.context.known_user);
        assert_eq!(s.stats().evictions, 3);
        assert_eq!(s.stats().users, 3);
        assert_eq!(s.stats().created, 6);
    }

    #[test]
    fn idle_profiles_expire_in_event_time() {
        let mut s = UserProfiles::new(&ProfileConfig {
            ttl: DurationText(Duration::from_secs(7 * 86_400)),
            ..ProfileConfig::default()
        });
        s.observe(&mut ok("a", T0, linkoping(), "x"));
        s.observe(&mut ok("b", T0 + DAY, linkoping(), "x"));
        // "a" idles past its TTL: swept when another user's event moves time on.
        s.observe(&mut ok("c", T0 + 7 * DAY + 1, linkoping(), "x"));
        assert_eq!(s.stats().expiries, 1);
        assert_eq!(s.stats().users, 2);
        // "b" comes back after its TTL: expired on access, judged as unknown.
        let mut e = ok("b", T0 + 8 * DAY + 2, linkoping(), "x");
        s.observe(&mut e);
        assert!(!e.context.known_user);
        assert_eq!(s.stats().expiries, 2);
        // Any activity, even a failure, keeps a profile alive.
        s.observe(&mut ev(
            "c",
            T0 + 14 * DAY,
            Outcome::Failure,
            linkoping(),
            "x",
        ));
        let mut e = ok("c", T0 + 20 * DAY, linkoping(), "x");
        s.observe(&mut e);
        assert!(e.context.known_user);
        s.expire(T0 + 40 * DAY);
        assert_eq!(s.stats().users, 0);
    }

    #[test]
    fn snapshot_restore_gives_the_same_contexts() {
        let cfg = ProfileConfig {
            max_users: 4,
            ..ProfileConfig::default()
        };
        let places = [linkoping(), changchun(), milton()];
        let history: Vec<AuthEvent> = (0..40)
            .map(|i: i64| {
                let user = ["aiko", "ken", "yui", "sho", "mei", "taro"][(i * 7 % 6) as usize];
                let mut e = ok(
                    user,
                    T0 + i * 3 * HOUR,
                    places[(i % 3) as usize].clone(),
                    "",
                );
                e.device.fingerprint = format!("fp{}", i % 4).into();
                if i % 5 == 0 {
                    e.outcome = Outcome::Failure;
                }
                e
            })
            .collect();
        let (before, after) = history.split_at(25);

        let mut a = UserProfiles::new(&cfg);
        for e in before {
            a.observe(&mut e.clone());
        }
        let bytes = a.snapshot();
        assert_eq!(bytes, a.snapshot(), "deterministic");
        let mut b = UserProfiles::new(&cfg);
        b.restore(&bytes).unwrap();
        assert_eq!(b.snapshot(), bytes, "restore → snapshot is the identity");
        assert_eq!(a.stats(), b.stats());
        for e in after {
            let (mut x, mut y) = (e.clone(), e.clone());
            a.observe(&mut x);
            b.observe(&mut y);
            assert_eq!(x.context, y.context, "{}", e.user.name);
        }
        assert_eq!(a.snapshot(), b.snapshot());

        assert!(matches!(b.restore(b"{}"), Err(SnapshotError::Decode(_))));
        let other = String::from_utf8(bytes)
            .unwrap()
            .replacen("\"version\":2", "\"version\":9", 1);
        assert!(matches!(
            b.restore(other.as_bytes()),
            Err(SnapshotError::Version { found: 9, .. })
        ));
    }

    #[test]
    fn the_same_place_shortcut_is_what_the_formula_gives() {
        let coords = [
            0.0, -0.0, 1.35, -33.87, 58.4167, 89.9999, 90.0, -90.0, 180.0, -180.0, 1e-300,
        ];
        for &lat in &coords {
            for &lon in &coords {
                let formula = haversine_trig(lat, lon, lat, lon, 6371.0088);
                let fast = haversine_km(lat, lon, lat, lon);
                assert_eq!(fast.to_bits(), formula.to_bits(), "{lat} {lon}");
                assert_eq!(fast.to_bits(), 0.0f64.to_bits());
            }
        }
        // Signed zeros are the same place; anything else takes the formula.
        assert_eq!(
            haversine_km(0.0, -0.0, -0.0, 0.0).to_bits(),
            haversine_trig(0.0, -0.0, -0.0, 0.0, 6371.0088).to_bits()
        );
        let d = haversine_km(10.0, 10.0, 10.0, 10.000001);
        assert!(d > 0.0 && d < 0.001, "{d}");
        // Non-finite input (never from a database) is not "the same place" either.
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                haversine_km(bad, 0.0, bad, 0.0).to_bits(),
                haversine_trig(bad, 0.0, bad, 0.0, 6371.0088).to_bits()
            );
        }
    }

    #[test]
    fn recent_set_keeps_recency_order_without_cloning_repeats() {
        // The order the profile snapshots depend on: the old remove-and-push recipe.
        fn reference(set: &mut Vec<u32>, v: u32, max: usize) {
            if let Some(i) = set.iter().position(|x| *x == v) {
                let v = set.remove(i);
                set.push(v);
            } else {
                set.push(v);
                if set.len() > max {
                    set.remove(0);
                }
            }
        }
        for max in [1, 2, 3, 16] {
            let mut fast = RecentSet::<u32, 4>::default();
            let mut slow = Vec::new();
            let mut x = 12345u64;
            for _ in 0..2000 {
                // A small LCG: repeats, recent hits and new members in a fixed sequence.
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((x >> 33) % 24) as u32;
                fast.touch(&v, max);
                reference(&mut slow, v, max);
                assert_eq!(fast.0.as_slice(), slow.as_slice(), "max {max}");
                assert!(fast.contains(&v));
            }
        }
    }

    #[test]
    fn haversine_known_distance() {
        // London → Paris, about 344 km.
        let d = haversine_km(51.5074, -0.1278, 48.8566, 2.3522);
        assert!((340.0..348.0).contains(&d), "{d}");
        assert_eq!(haversine_km(10.0, 10.0, 10.0, 10.0), 0.0);
    }
}
