//! Group-by keys: which entity a piece of state belongs to.

use authwatch_event::{AuthEvent, Entity, Text};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A field rules can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyField {
    /// `user`: the login name (else provider user id).
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

    /// The event's value for this field; `None` when the event does not carry it (the event
    /// then cannot be grouped by this field and the rule skips it).
    #[inline]
    pub fn extract(self, e: &AuthEvent) -> Option<KeyPart> {
        match self {
            KeyField::User => {
                let k = e.user.key();
                (!k.is_empty()).then(|| {
                    KeyPart::Text(if e.user.name.is_empty() {
                        e.user.id.clone()
                    } else {
                        e.user.name.clone()
                    })
                })
            }
            KeyField::Ip => e.src.ip.map(KeyPart::Ip),
            KeyField::Tenant => (!e.tenant.is_empty()).then(|| KeyPart::Text(e.tenant.clone())),
            KeyField::Asn => e.src.asn.map(KeyPart::Num),
            KeyField::Device => (!e.device.fingerprint.is_empty())
                .then(|| KeyPart::Text(e.device.fingerprint.clone())),
            KeyField::Country => e
                .src
                .geo
                .as_ref()
                .filter(|g| !g.country.is_empty())
                .map(|g| KeyPart::Text(g.country.clone())),
            KeyField::App => (!e.app.is_empty()).then(|| KeyPart::Text(e.app.clone())),
        }
    }
}

/// One component of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyPart {
    /// A text value (user, tenant, fingerprint).
    Text(Text),
    /// An address.
    Ip(IpAddr),
    /// A number (ASN).
    Num(u32),
}

impl KeyPart {
    /// A stable 64-bit hash, for distinct-count sketches.
    pub fn hash64(&self) -> u64 {
        match self {
            KeyPart::Text(t) => crate::sketch::hash64(t.as_bytes()),
            KeyPart::Ip(std::net::IpAddr::V4(ip)) => crate::sketch::hash64(&ip.octets()),
            KeyPart::Ip(std::net::IpAddr::V6(ip)) => crate::sketch::hash64(&ip.octets()),
            KeyPart::Num(n) => crate::sketch::hash64(&n.to_le_bytes()),
        }
    }
}

impl std::fmt::Display for KeyPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyPart::Text(t) => f.write_str(t),
            KeyPart::Ip(ip) => write!(f, "{ip}"),
            KeyPart::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A full group-by key. Single-field keys, by far the most common, need no allocation beyond
/// their value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Key {
    /// A one-field key.
    One(KeyPart),
    /// A multi-field key, in the rule's key order.
    Many(Box<[KeyPart]>),
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

    /// A canonical text form (`user=a@x ip=1.2.3.4`), used in alert ids.
    pub fn canonical(&self, fields: &[KeyField]) -> String {
        fields
            .iter()
            .zip(self.parts())
            .map(|(f, p)| format!("{}={p}", f.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The alert entity for this key.
    pub fn entity(&self, fields: &[KeyField]) -> Entity {
        let mut entity = Entity::default();
        for (f, p) in fields.iter().zip(self.parts()) {
            match (f, p) {
                (KeyField::User, KeyPart::Text(t)) => entity.user = Some(t.clone()),
                (KeyField::Tenant, KeyPart::Text(t)) => entity.tenant = Some(t.clone()),
                (KeyField::Device, KeyPart::Text(t)) => entity.device_fingerprint = Some(t.clone()),
                (KeyField::Ip, KeyPart::Ip(ip)) => entity.ip = Some(*ip),
                (KeyField::Asn, KeyPart::Num(n)) => entity.asn = Some(*n),
                _ => {}
            }
        }
        entity
    }
}
