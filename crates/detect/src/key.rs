//! Group-by keys: which entity a piece of state belongs to.

use authwatch_event::{AuthEvent, Entity, Text};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// A field rules can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyField {
    /// `user`: the account, i.e. the login name (else provider user id) within its tenant: the
    /// same name in two tenants (Okta orgs, Keycloak realms, Entra directories) is two
    /// accounts, in counts, incidents and `after`/`unless` matches. Logins compare without
    /// ASCII case, as identity providers compare them (Entra and Keycloak log the name as
    /// typed: `Ken@`, `ken@` and `KEN@` are one account, and guessing at one must count as
    /// one); the key keeps the lower-case form.
    User,
    /// `ip`: the source address.
    Ip,
    /// `tenant`.
    Tenant,
    /// `asn`: the source autonomous system.
    Asn,
    /// `device`: the device fingerprint.
    Device,
    /// `country`: the source country.
    Country,
    /// `app`: the target application.
    App,
}

impl KeyField {
    /// Every key field with its rule-language name.
    pub const ALL: &'static [(KeyField, &'static str)] = &[
        (KeyField::User, "user"),
        (KeyField::Ip, "ip"),
        (KeyField::Tenant, "tenant"),
        (KeyField::Asn, "asn"),
        (KeyField::Device, "device"),
        (KeyField::Country, "country"),
        (KeyField::App, "app"),
    ];

    /// The field for a rule-language name.
    pub fn parse(name: &str) -> Option<KeyField> {
        KeyField::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| *f)
    }

    /// The rule-language name.
    pub fn name(self) -> &'static str {
        KeyField::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("?", |(_, n)| n)
    }

    /// The event's value for this field, borrowed from the event (for lookups).
    #[inline]
    pub fn extract_ref(self, e: &AuthEvent) -> Option<KeyPartRef<'_>> {
        fn text(t: &Text) -> Option<KeyPartRef<'_>> {
            (!t.is_empty()).then(|| KeyPartRef::Text(t.as_str()))
        }
        match self {
            KeyField::User => {
                let user = if e.user.name.is_empty() {
                    &e.user.id
                } else {
                    &e.user.name
                };
                (!user.is_empty()).then(|| KeyPartRef::Account(e.tenant.as_str(), user.as_str()))
            }
            KeyField::Ip => e.src.ip.map(KeyPartRef::Ip),
            KeyField::Tenant => text(&e.tenant),
            KeyField::Asn => e.src.asn.map(KeyPartRef::Num),
            KeyField::Device => text(&e.device.fingerprint),
            KeyField::Country => e.src.geo.as_ref().and_then(|g| text(&g.country)),
            KeyField::App => text(&e.app),
        }
    }

    /// The event's value for this field; `None` when the event does not carry it (the event
    /// then cannot be grouped by this field and the rule skips it).
    #[inline]
    pub fn extract(self, e: &AuthEvent) -> Option<KeyPart> {
        self.extract_ref(e).map(KeyPartRef::into_owned)
    }
}

/// One component of a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyPart {
    /// A text value (tenant, fingerprint, country, app).
    Text(Text),
    /// An account: its tenant (empty when the provider names none) and its login or id.
    Account(Text, Text),
    /// An address.
    Ip(IpAddr),
    /// A number (ASN).
    Num(u32),
}

// Hashed by hand, identically to `KeyPartRef`, so that state maps can be probed with a key
// borrowed from the event: most events find their key already there, and cloning a user name
// longer than 24 bytes would cost an allocation per rule per event just to look it up.
impl Hash for KeyPart {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl KeyPart {
    /// The borrowed form of this part.
    pub fn as_ref(&self) -> KeyPartRef<'_> {
        match self {
            KeyPart::Text(t) => KeyPartRef::Text(t.as_str()),
            KeyPart::Account(tenant, user) => KeyPartRef::Account(tenant.as_str(), user.as_str()),
            KeyPart::Ip(ip) => KeyPartRef::Ip(*ip),
            KeyPart::Num(n) => KeyPartRef::Num(*n),
        }
    }

    /// A stable 64-bit hash, for distinct-count sketches.
    pub fn hash64(&self) -> u64 {
        match self {
            KeyPart::Text(t) => crate::sketch::hash64(t.as_bytes()),
            KeyPart::Account(tenant, user) => {
                crate::sketch::hash64(format!("{tenant}\u{1f}{user}").as_bytes())
            }
            KeyPart::Ip(std::net::IpAddr::V4(ip)) => crate::sketch::hash64(&ip.octets()),
            KeyPart::Ip(std::net::IpAddr::V6(ip)) => crate::sketch::hash64(&ip.octets()),
            KeyPart::Num(n) => crate::sketch::hash64(&n.to_le_bytes()),
        }
    }
}

/// What summaries and texts show: an account as its login alone (its tenant is in the alert's
/// entity).
impl std::fmt::Display for KeyPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyPart::Text(t) => f.write_str(t),
            KeyPart::Account(_, user) => f.write_str(user),
            KeyPart::Ip(ip) => write!(f, "{ip}"),
            KeyPart::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A full group-by key. Single-field keys, by far the most common, need no allocation beyond
/// their value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Key {
    /// A one-field key.
    One(KeyPart),
    /// A multi-field key, in the rule's key order.
    Many(Box<[KeyPart]>),
}

// Each part's `part_hash`, so that a `KeyRef` probe can reuse the hashes of its event.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for p in self.parts() {
            state.write_u64(p.as_ref().part_hash());
        }
    }
}

impl Key {
    /// Extracts the key of `fields` from an event; `None` if any field is missing.
    #[inline]
    pub fn extract(fields: &[KeyField], e: &AuthEvent) -> Option<Key> {
        match fields {
            [one] => one.extract(e).map(Key::One),
            many => many
                .iter()
                .map(|f| f.extract(e))
                .collect::<Option<Vec<_>>>()
                .map(|v| Key::Many(v.into_boxed_slice())),
        }
    }

    /// The parts, in key order.
    pub fn parts(&self) -> &[KeyPart] {
        match self {
            Key::One(p) => std::slice::from_ref(p),
            Key::Many(ps) => ps,
        }
    }

    /// The canonical text form (`user=3:a@x ip=7:1.2.3.4`, [`authwatch_event::entity_key_text`]),
    /// used in alert ids.
    pub fn canonical(&self, fields: &[KeyField]) -> String {
        let mut parts: Vec<(&str, String)> = Vec::with_capacity(fields.len() + 1);
        for (f, p) in fields.iter().zip(self.parts()) {
            match p {
                // An account's tenant is part of what it is: the same login in two tenants
                // must not name one alert.
                KeyPart::Account(tenant, user) => {
                    if !tenant.is_empty() && !fields.contains(&KeyField::Tenant) {
                        parts.push(("tenant", tenant.to_string()));
                    }
                    parts.push((f.name(), user.to_string()));
                }
                p => parts.push((f.name(), p.to_string())),
            }
        }
        authwatch_event::entity_key_text(parts)
    }

    /// The alert entity for this key.
    pub fn entity(&self, fields: &[KeyField]) -> Entity {
        let mut entity = Entity::default();
        for (f, p) in fields.iter().zip(self.parts()) {
            match (f, p) {
                (KeyField::User, KeyPart::Account(tenant, user)) => {
                    entity.user = Some(user.clone());
                    if !tenant.is_empty() {
                        entity.tenant = Some(tenant.clone());
                    }
                }
                (KeyField::Tenant, KeyPart::Text(t)) => entity.tenant = Some(t.clone()),
                (KeyField::Device, KeyPart::Text(t)) => entity.device_fingerprint = Some(t.clone()),
                (KeyField::Ip, KeyPart::Ip(ip)) => entity.ip = Some(*ip),
                (KeyField::Asn, KeyPart::Num(n)) => entity.asn = Some(*n),
                (KeyField::Country, KeyPart::Text(t)) => entity.country = Some(t.clone()),
                (KeyField::App, KeyPart::Text(t)) => entity.app = Some(t.clone()),
                _ => {}
            }
        }
        entity
    }
}

/// A key part borrowed from an event: what state maps are probed with.
///
/// An account's login is borrowed as the event spells it, and hashes and compares without ASCII
/// case, like the lower-cased owned [`KeyPart::Account`] it finds, so that a lookup needs no
/// folded copy.
#[derive(Debug, Clone, Copy)]
pub enum KeyPartRef<'a> {
    /// A text value.
    Text(&'a str),
    /// An account: tenant, login or id (compared without ASCII case).
    Account(&'a str, &'a str),
    /// An address.
    Ip(IpAddr),
    /// A number (ASN).
    Num(u32),
}

impl PartialEq for KeyPartRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeyPartRef::Text(a), KeyPartRef::Text(b)) => a == b,
            (KeyPartRef::Account(t1, u1), KeyPartRef::Account(t2, u2)) => {
                t1 == t2 && u1.eq_ignore_ascii_case(u2)
            }
            (KeyPartRef::Ip(a), KeyPartRef::Ip(b)) => a == b,
            (KeyPartRef::Num(a), KeyPartRef::Num(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for KeyPartRef<'_> {}

impl Hash for KeyPartRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            KeyPartRef::Text(t) => t.hash(state),
            KeyPartRef::Account(tenant, user) => {
                tenant.hash(state);
                hash_ascii_lowercase(user, state);
            }
            KeyPartRef::Ip(ip) => ip.hash(state),
            KeyPartRef::Num(n) => n.hash(state),
        }
    }
}

/// Hashes `s` as `str::hash` would hash its ASCII lower-case form, without allocating it. The
/// pieces written depend only on the folded bytes, so `Ken` and `ken` hash alike under any
/// hasher, including those whose result depends on how the bytes are split between writes.
fn hash_ascii_lowercase<H: Hasher>(s: &str, state: &mut H) {
    let mut buf = [0u8; 64];
    for chunk in s.as_bytes().chunks(buf.len()) {
        let folded = &mut buf[..chunk.len()];
        folded.copy_from_slice(chunk);
        folded.make_ascii_lowercase();
        state.write(folded);
    }
    // `str::hash`'s terminator: keeps `("ab", "c")` and `("a", "bc")` apart.
    state.write_u8(0xff);
}

impl KeyPartRef<'_> {
    /// The part's own 64-bit hash (an account's login folded to lower case), which keys
    /// and incident keys hash in place of the part's bytes.
    #[inline]
    pub fn part_hash(self) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(self)
    }

    /// The owned part.
    pub fn into_owned(self) -> KeyPart {
        match self {
            KeyPartRef::Text(t) => KeyPart::Text(Text::new(t)),
            KeyPartRef::Account(tenant, user) => {
                KeyPart::Account(Text::new(tenant), Text::ascii_lowercase(user))
            }
            KeyPartRef::Ip(ip) => KeyPart::Ip(ip),
            KeyPartRef::Num(n) => KeyPart::Num(n),
        }
    }
}

impl hashbrown::Equivalent<KeyPart> for KeyPartRef<'_> {
    fn equivalent(&self, key: &KeyPart) -> bool {
        *self == key.as_ref()
    }
}

/// A key part with its hash, computed once per event: an event is looked up under the same
/// part by every rule keyed or vetoed by that field, so hashing the part once (a user name is
/// folded to lower case byte by byte) instead of once per lookup saves most of the hashing.
#[derive(Debug, Clone, Copy)]
pub struct HashedPart<'a> {
    /// The part.
    pub part: KeyPartRef<'a>,
    /// [`KeyPartRef::part_hash`] of it.
    pub hash: u64,
}

impl<'a> HashedPart<'a> {
    /// Hashes `part`.
    #[inline]
    pub fn new(part: KeyPartRef<'a>) -> Self {
        HashedPart {
            part,
            hash: part.part_hash(),
        }
    }
}

impl PartialEq for HashedPart<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.part == other.part
    }
}

impl Eq for HashedPart<'_> {}

/// The key parts of one event, each extracted and hashed at its first use.
pub struct EventParts<'a> {
    event: &'a AuthEvent,
    cache: [Cell<Option<Option<HashedPart<'a>>>>; KeyField::ALL.len()],
}

impl<'a> EventParts<'a> {
    /// Nothing is extracted yet.
    pub fn new(event: &'a AuthEvent) -> Self {
        EventParts {
            event,
            cache: Default::default(),
        }
    }

    /// The event.
    pub fn event(&self) -> &'a AuthEvent {
        self.event
    }

    /// The event's value for `field` with its hash; `None` when the event does not carry it.
    #[inline]
    pub fn get(&self, field: KeyField) -> Option<HashedPart<'a>> {
        let cell = &self.cache[field as usize];
        if let Some(known) = cell.get() {
            return known;
        }
        let part = field.extract_ref(self.event).map(HashedPart::new);
        cell.set(Some(part));
        part
    }
}

/// A full key borrowed from an event, with its parts' hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef<'a> {
    // Rule keys have one to three fields; more spill to the heap.
    parts: SmallVec<[HashedPart<'a>; 3]>,
}

// The same bytes as `Key`'s hash: each part's `part_hash`.
impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for p in &self.parts {
            state.write_u64(p.hash);
        }
    }
}

impl<'a> KeyRef<'a> {
    /// The key of `fields` from an event's parts; `None` if any field is missing.
    #[inline]
    pub fn extract(fields: &[KeyField], parts: &EventParts<'a>) -> Option<KeyRef<'a>> {
        let mut out = SmallVec::new();
        for f in fields {
            out.push(parts.get(*f)?);
        }
        Some(KeyRef { parts: out })
    }

    /// The parts, in key order.
    pub fn parts(&self) -> &[HashedPart<'a>] {
        &self.parts
    }

    /// The owned key.
    pub fn to_owned(&self) -> Key {
        match self.parts.as_slice() {
            [one] => Key::One(one.part.into_owned()),
            many => Key::Many(many.iter().map(|p| p.part.into_owned()).collect()),
        }
    }
}

impl hashbrown::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        let theirs = key.parts();
        self.parts.len() == theirs.len()
            && self
                .parts
                .iter()
                .zip(theirs)
                .all(|(x, y)| x.part == y.as_ref())
    }
}

/// Where an incident of a referenced rule is indexed: (rule, entity field, value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentKey {
    /// The rule's index in the engine.
    pub rule: usize,
    /// The entity field.
    pub field: KeyField,
    /// Its value.
    pub part: KeyPart,
}

impl Hash for IncidentKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        IncidentKeyRef {
            rule: self.rule,
            field: self.field,
            part: HashedPart::new(self.part.as_ref()),
        }
        .hash(state);
    }
}

/// The borrowed form of [`IncidentKey`], for lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentKeyRef<'a> {
    /// The rule's index in the engine.
    pub rule: usize,
    /// The entity field.
    pub field: KeyField,
    /// Its value.
    pub part: HashedPart<'a>,
}

impl Hash for IncidentKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rule.hash(state);
        self.field.hash(state);
        state.write_u64(self.part.hash);
    }
}

impl hashbrown::Equivalent<IncidentKey> for IncidentKeyRef<'_> {
    fn equivalent(&self, key: &IncidentKey) -> bool {
        self.rule == key.rule && self.field == key.field && self.part.part == key.part.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxBuildHasher;

    // Owned keys and keys borrowed from an event must hash and compare alike, or state lookups
    // would silently miss and every event would open fresh state.
    #[test]
    fn borrowed_keys_find_owned_ones() {
        let mut e = AuthEvent::default();
        e.user.name = Text::new("a-rather-long-user-name@example.co.jp");
        e.src.ip = Some("192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        e.src.asn = Some(64500);
        let fields_sets: [&[KeyField]; 4] = [
            &[KeyField::User],
            &[KeyField::Ip],
            &[KeyField::Asn],
            &[KeyField::User, KeyField::Ip, KeyField::Asn],
        ];
        for fields in fields_sets {
            let mut map: hashbrown::HashMap<Key, usize, FxBuildHasher> = Default::default();
            let owned = Key::extract(fields, &e);
            assert!(owned.is_some(), "{fields:?}");
            map.extend(owned.map(|k| (k, 1)));
            let parts = EventParts::new(&e);
            let probe = KeyRef::extract(fields, &parts);
            assert_eq!(
                probe.as_ref().map(KeyRef::to_owned),
                Key::extract(fields, &e)
            );
            assert_eq!(
                probe.and_then(|p| map.get(&p).copied()),
                Some(1),
                "{fields:?}"
            );
        }
        // A different value of the same field is a different key.
        let mut other = e.clone();
        other.user.name = Text::new("someone-else@example.co.jp");
        let mut map: hashbrown::HashMap<Key, usize, FxBuildHasher> = Default::default();
        map.extend(Key::extract(&[KeyField::User], &e).map(|k| (k, 1)));
        let parts = EventParts::new(&other);
        let probe = KeyRef::extract(&[KeyField::User], &parts);
        assert_eq!(probe.and_then(|p| map.get(&p).copied()), None);
    }

    // Every key field names the alert's entity: a rule keyed by country or app (the SQL
    // detection failure_burst_by_country) otherwise alerted on an empty entity, which is an
    // empty Kafka record key and nothing for a SIEM to group by.
    #[test]
    fn every_key_field_is_in_the_entity() {
        let mut e = AuthEvent {
            tenant: Text::new("acme"),
            app: Text::new("payroll"),
            ..Default::default()
        };
        e.user.name = Text::new("ken@acme.example");
        e.src.ip = Some(IpAddr::from([192, 0, 2, 7]));
        e.src.asn = Some(64500);
        e.src.geo = Some(authwatch_event::Geo {
            country: Text::new("JP"),
            ..Default::default()
        });
        e.device.fingerprint = Text::new("fp-1");
        for (f, name) in KeyField::ALL {
            let key = Key::extract(&[*f], &e);
            let entity = key.map(|k| k.entity(&[*f])).unwrap_or_default();
            assert!(!entity.to_string().is_empty(), "{name}: {entity:?}");
        }
        let key = Key::extract(&[KeyField::Country, KeyField::App], &e);
        let entity = key
            .map(|k| k.entity(&[KeyField::Country, KeyField::App]))
            .unwrap_or_default();
        assert_eq!(entity.to_string(), "country=JP app=payroll");
    }

    // Entra and Keycloak log the login as typed: guesses at `Ken@`, `ken@` and `KEN@` are
    // guesses at one account, and must land in one state (a long name too: the hash folds in
    // pieces). Another tenant's `ken@` stays another account.
    #[test]
    fn logins_differing_in_case_are_one_account() {
        let event = |user: &str, tenant: &str| {
            let mut e = AuthEvent::default();
            e.user.name = Text::new(user);
            e.tenant = Text::new(tenant);
            e
        };
        let long = "Ken.Takahashi.".repeat(10) + "@Example.co.jp";
        for name in ["Ken@example.co.jp", long.as_str()] {
            let fields = [KeyField::User];
            let mut map: hashbrown::HashMap<Key, usize, FxBuildHasher> = Default::default();
            let first = Key::extract(&fields, &event(name, "acme"));
            assert_eq!(
                first.as_ref().map(|k| k.canonical(&fields)),
                Some(format!(
                    "tenant=4:acme user={}:{}",
                    name.len(),
                    name.to_ascii_lowercase()
                ))
            );
            map.extend(first.map(|k| (k, 1)));
            for variant in [name.to_ascii_lowercase(), name.to_ascii_uppercase()] {
                let e = event(&variant, "acme");
                let parts = EventParts::new(&e);
                let probe = KeyRef::extract(&fields, &parts);
                assert_eq!(
                    probe.and_then(|p| map.get(&p).copied()),
                    Some(1),
                    "{variant}"
                );
                assert_eq!(
                    Key::extract(&fields, &e).and_then(|k| map.get(&k).copied()),
                    Some(1)
                );
            }
            let elsewhere = event(name, "other");
            let parts = EventParts::new(&elsewhere);
            let probe = KeyRef::extract(&fields, &parts);
            assert_eq!(probe.and_then(|p| map.get(&p).copied()), None);
        }
    }

    #[test]
    fn a_value_cannot_spell_another_keys_text() {
        let fields = [KeyField::User, KeyField::Tenant];
        let key = |user: &str, tenant: &str| {
            let mut e = AuthEvent::default();
            e.user.name = Text::new(user);
            e.tenant = Text::new(tenant);
            Key::extract(&fields, &e).map(|k| k.canonical(&fields))
        };
        assert_eq!(
            key("a@x", "acme").as_deref(),
            Some("user=3:a@x tenant=4:acme")
        );
        assert_ne!(key("a@x tenant=4:acme", "b"), key("a@x", "acme tenant=1:b"));
        assert_ne!(key("x tenant=", "y"), key("x", "tenant=y"));
    }
}
