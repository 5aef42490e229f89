//! Per-line format detection: cheap key sniffing on the raw bytes, then the chosen format's
//! normalizer. Keys are matched as JSON keys (`"key"` followed by `:`), so a value that happens
//! to spell a key does not mislead the choice.

use crate::common;
use crate::{
    Auth0, Duo, Ecs, Entra, Format, Google, Keycloak, Limits, Native, Normalizer, Ocsf, Okta,
    RejectKind, Rejection,
};
use authwatch_event::AuthEvent;
use memchr::memmem::Finder;

/// The `auto` format: detects each line's format, then normalizes it with that format.
pub struct Auto {
    class_uid: Finder<'static>,
    google_kind: Finder<'static>,
    event_type: Finder<'static>,
    published: Finder<'static>,
    uuid: Finder<'static>,
    created: Finder<'static>,
    activity_name: Finder<'static>,
    txid: Finder<'static>,
    realm_id: Finder<'static>,
    log_id: Finder<'static>,
    date: Finder<'static>,
    kind: Finder<'static>,
    user_name: Finder<'static>,
    timestamp: Finder<'static>,
    activity: Finder<'static>,
    outcome: Finder<'static>,
}

impl std::fmt::Debug for Auto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auto")
    }
}

impl Default for Auto {
    fn default() -> Self {
        Auto::new()
    }
}

/// What the dead-letter reason lists when nothing matches.
const KEYS_HINT: &str = "class_uid (ocsf), kind admin#reports#activity (google), eventType+published or eventType+uuid (okta), \
createdDateTime or activityDisplayName (entra), txid (duo), realmId (keycloak), log_id or \
date+type+user_name (auth0), @timestamp (ecs), activity+outcome (native)";

impl Auto {
    /// A detector with its key searchers built once.
    pub fn new() -> Self {
        Auto {
            class_uid: Finder::new(b"\"class_uid\""),
            google_kind: Finder::new(b"\"kind\""),
            event_type: Finder::new(b"\"eventType\""),
            published: Finder::new(b"\"published\""),
            uuid: Finder::new(b"\"uuid\""),
            created: Finder::new(b"\"createdDateTime\""),
            activity_name: Finder::new(b"\"activityDisplayName\""),
            txid: Finder::new(b"\"txid\""),
            realm_id: Finder::new(b"\"realmId\""),
            log_id: Finder::new(b"\"log_id\""),
            date: Finder::new(b"\"date\""),
            kind: Finder::new(b"\"type\""),
            user_name: Finder::new(b"\"user_name\""),
            timestamp: Finder::new(b"\"@timestamp\""),
            activity: Finder::new(b"\"activity\""),
            outcome: Finder::new(b"\"outcome\""),
        }
    }

    /// The format a line looks like, or `None` when it has none of the distinctive keys.
    pub fn detect(&self, line: &[u8]) -> Option<Format> {
        if looks_native(line) {
            return Some(Format::Native);
        }
        let has = |f: &Finder<'_>| has_key(f, line);
        // Each miss scans the whole line, so the high-volume formats are tried first. OCSF
        // goes before them because its `unmapped` object may embed a provider's keys.
        if has(&self.class_uid) {
            Some(Format::Ocsf)
        } else if has(&self.event_type) && (has(&self.published) || has(&self.uuid)) {
            Some(Format::Okta)
        } else if has(&self.created) || has(&self.activity_name) {
            Some(Format::Entra)
        } else if self.provider_keyed(
            line,
            |at| value_follows(line, at + self.google_kind.needle().len(), GOOGLE_KIND),
            &self.google_kind,
        ) {
            Some(Format::Google)
        } else if self.provider_keyed(line, |_| true, &self.txid) {
            Some(Format::Duo)
        } else if self.provider_keyed(line, |_| true, &self.realm_id) {
            Some(Format::Keycloak)
        } else if self.provider_keyed(line, |_| true, &self.log_id)
            || (has(&self.date) && has(&self.kind) && has(&self.user_name))
        {
            Some(Format::Auth0)
        } else if has(&self.timestamp) {
            Some(Format::Ecs)
        } else if has(&self.activity) && has(&self.outcome) {
            Some(Format::Native)
        } else {
            None
        }
    }
}

impl Auto {
    /// Whether `finder`'s key occurs as a key (and `accept`s what follows it) the way the
    /// provider itself writes it. Elastic's integrations keep a provider's fields under a
    /// namespace of the ECS document (`cisco_duo.auth.txid`, `google_workspace.kind`): in a
    /// line with `@timestamp`, which no provider writes but every ECS document has, the key
    /// counts only at the top level, so those documents stay ECS while a provider's own line
    /// that a shipper stamped with `@timestamp` (Logstash) stays the provider's.
    fn provider_keyed(
        &self,
        line: &[u8],
        accept: impl Fn(usize) -> bool,
        finder: &Finder<'_>,
    ) -> bool {
        let mut keys = key_positions(finder, line)
            .filter(|&at| accept(at))
            .peekable();
        if keys.peek().is_none() {
            return false;
        }
        // Scanned only for the lines that got this far, and only those an ECS shipper touched.
        !has_key(&self.timestamp, line) || keys.any(|at| depth_at(line, at) == 1)
    }
}

/// Where `"key"` occurs as an object key (followed, after optional blanks, by `:`).
fn key_positions<'a>(finder: &'a Finder<'_>, line: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let n = finder.needle().len();
    finder.find_iter(line).filter(move |&at| {
        line[at + n..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b':')
    })
}

/// How many objects and arrays enclose byte `at` (outside strings): 1 for a key of the line's
/// own object.
fn depth_at(line: &[u8], at: usize) -> usize {
    common::bracket_depth(&line[..at.min(line.len())], |_| {})
}

/// Whether the JSON string `value` (quotes included) follows the `:` after a key ending at
/// `from`, blanks allowed around the `:`.
fn value_follows(line: &[u8], from: usize, value: &[u8]) -> bool {
    let after_blanks = |from: usize| {
        line.get(from..)
            .and_then(|rest| rest.iter().position(|b| !b.is_ascii_whitespace()))
            .map(|skip| from + skip)
    };
    after_blanks(from)
        .filter(|&colon| line[colon] == b':')
        .and_then(|colon| after_blanks(colon + 1))
        .is_some_and(|v| line[v..].starts_with(value))
}

/// Whether the line starts the way authwatch itself writes native events (`{"time":<ms>,` then
/// `"ingest_time"` or `"provider"`): recorded and enriched streams are mostly authwatch's own, and
/// this check costs a few bytes instead of a scan per candidate key. A native line written with
/// another key order still falls through to the full detection.
fn looks_native(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"{\"time\":") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && (rest[digits..].starts_with(b",\"provider\":")
            || rest[digits..].starts_with(b",\"ingest_time\":"))
}

/// The Reports API's `kind` of an activity, as a JSON string.
const GOOGLE_KIND: &[u8] = b"\"admin#reports#activity\"";

/// `"key"` occurs followed (after optional blanks) by `:`, i.e. as an object key.
fn has_key(finder: &Finder<'_>, line: &[u8]) -> bool {
    key_positions(finder, line).next().is_some()
}

impl Normalizer for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let Some(format) = self.detect(line) else {
            return Err(unknown(line));
        };
        // Static dispatch: the concrete normalizers are zero-sized, so this costs nothing.
        match format {
            Format::Okta => Okta.normalize(line, ingest_time, limits),
            Format::Entra => Entra.normalize(line, ingest_time, limits),
            Format::Duo => Duo.normalize(line, ingest_time, limits),
            Format::Auth0 => Auth0.normalize(line, ingest_time, limits),
            Format::Keycloak => Keycloak.normalize(line, ingest_time, limits),
            Format::Google => Google.normalize(line, ingest_time, limits),
            Format::Ocsf => Ocsf.normalize(line, ingest_time, limits),
            Format::Ecs => Ecs.normalize(line, ingest_time, limits),
            Format::Native | Format::Auto => Native.normalize(line, ingest_time, limits),
        }
    }
}

/// The rejection of a line no format recognizes: says what it looked like and what was missing.
fn unknown(line: &[u8]) -> Rejection {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Rejection::new(RejectKind::EmptyLine, "empty line".to_owned());
    }
    if std::str::from_utf8(line).is_err() {
        return Rejection::new(
            RejectKind::InvalidUtf8,
            "no known format: the line is not valid UTF-8".to_owned(),
        );
    }
    // A broken object (cut off, a stray comma) would look like "no known keys"; saying where the
    // JSON breaks is what the reader needs. Only rejected lines pay for this parse.
    if trimmed.first() == Some(&b'{')
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(trimmed)
    {
        return Rejection::from_json(&e);
    }
    let message = if trimmed.first() == Some(&b'{') {
        format!("no known format: looks like JSON but has none of the keys {KEYS_HINT}")
    } else {
        let head = String::from_utf8_lossy(&trimmed[..trimmed.len().min(16)]).into_owned();
        format!("no known format: not a JSON object (starts with {head:?})")
    };
    Rejection::new(RejectKind::UnknownFormat, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_needs_its_kind_as_a_key_and_ecs_wins_for_ecs_documents() {
        let auto = Auto::new();
        let google = br#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T00:00:01.000Z","uniqueQualifier":"111","applicationName":"login","customerId":"C01"},"actor":{"email":"ken@example.jp"},"events":[{"name":"login_success"}]}"#;
        assert_eq!(auto.detect(google), Some(Format::Google));
        let spaced = br#"{"kind" : "admin#reports#activity","id":{}}"#;
        assert_eq!(auto.detect(spaced), Some(Format::Google));
        // Elastic's Google Workspace integration: google_workspace.kind and event.original.
        let ecs = br#"{"@timestamp":"2026-01-05T00:00:03Z","event":{"id":"x3","category":["authentication"],"type":["start"],"outcome":"failure","action":"login_failure","original":"{\"kind\":\"admin#reports#activity\",\"id\":{\"time\":\"2026-01-05T00:00:03Z\"}}"},"google_workspace":{"kind":"admin#reports#activity"},"source":{"ip":"10.0.0.1"},"user":{"name":"ken"}}"#;
        assert_eq!(auto.detect(ecs), Some(Format::Ecs));
        // The text alone, in a value or under another key, is not Google's.
        let text = br#"{"@timestamp":"2026-01-05T00:00:03Z","message":"admin#reports#activity"}"#;
        assert_eq!(auto.detect(text), Some(Format::Ecs));
        let other_kind = br#"{"kind":"admin#reports#usageReport","x":1}"#;
        assert_eq!(auto.detect(other_kind), None);
        // A Reports API activity a shipper stamped with `@timestamp` is still Google's.
        let stamped = br#"{"@timestamp":"2026-01-05T00:00:01.000Z","@version":"1","kind":"admin#reports#activity","id":{"time":"2026-01-05T00:00:01.000Z","uniqueQualifier":"111","applicationName":"login","customerId":"C01"},"actor":{"email":"ken@example.jp"},"events":[{"name":"login_success"}]}"#;
        assert_eq!(auto.detect(stamped), Some(Format::Google));
    }

    #[test]
    fn an_ecs_document_keeping_provider_fields_is_ecs() {
        let auto = Auto::new();
        // Elastic's Cisco Duo integration: the Duo fields under `cisco_duo.auth`.
        let duo_ecs = br#"{"@timestamp":"2026-01-05T00:00:00.123Z","ecs":{"version":"8.11.0"},"data_stream":{"dataset":"cisco_duo.auth","namespace":"default","type":"logs"},"event":{"id":"340a23e3-23f3-4ab0-8e55-9ef5e1f8ebeb","category":["authentication"],"type":["info"],"kind":"event","outcome":"failure","reason":"user_cancelled","dataset":"cisco_duo.auth"},"cisco_duo":{"auth":{"txid":"340a23e3-23f3-4ab0-8e55-9ef5e1f8ebeb","factor":"duo_push","result":"denied","reason":"user_cancelled","event_type":"authentication"}},"source":{"ip":"198.51.100.7"},"user":{"name":"ken@example.jp"}}"#;
        assert_eq!(auto.detect(duo_ecs), Some(Format::Ecs));
        let ev = auto.normalize(duo_ecs, 0, &Limits::default()).unwrap();
        assert_eq!(ev.event_id, "340a23e3-23f3-4ab0-8e55-9ef5e1f8ebeb");
        // The same for Keycloak's and Auth0's keys kept under a namespace.
        let kc_ecs = br#"{"@timestamp":"2026-01-05T00:00:00.123Z","event":{"id":"k1","category":["authentication"],"outcome":"failure"},"keycloak":{"event":{"realmId":"acme","type":"LOGIN_ERROR"}},"user":{"name":"ken"}}"#;
        assert_eq!(auto.detect(kc_ecs), Some(Format::Ecs));
        let auth0_ecs = br#"{"@timestamp":"2026-01-05T00:00:00.123Z","event":{"id":"a1","category":["authentication"],"outcome":"failure"},"auth0":{"logs":{"log_id":"900200","data":{"type":"fp"}}},"user":{"name":"ken"}}"#;
        assert_eq!(auto.detect(auth0_ecs), Some(Format::Ecs));
        // A Duo line a shipper stamped with `@timestamp` (Logstash's json codec) is still Duo's.
        let stamped = br#"{"@timestamp":"2026-01-05T00:00:00.123Z","@version":"1","txid":"d1","timestamp":1767571200,"isotimestamp":"2026-01-05T00:00:00.123456+00:00","user":{"name":"ken"},"factor":"duo_push","result":"denied","reason":"user_cancelled","event_type":"authentication","access_device":{"ip":"198.51.100.7"}}"#;
        assert_eq!(auto.detect(stamped), Some(Format::Duo));
        // Without `@timestamp`, a provider's key counts wherever it is, as before.
        let plain =
            br#"{"txid":"d1","timestamp":1767571200,"user":{"name":"ken"},"result":"success"}"#;
        assert_eq!(auto.detect(plain), Some(Format::Duo));
    }
}
