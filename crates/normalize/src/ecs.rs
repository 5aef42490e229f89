//! Elastic Common Schema authentication events (`event.category: authentication`), with
//! authwatch's normalized fields in the custom field set `authwatch`.

use crate::common::{self, EncodeError, Str, domain_of, ip_or_null, or_null, t};
use crate::ocsf::{Extension, extension, vocab};
use crate::{Limits, Normalizer, RejectKind, Rejection};
use authwatch_event::{
    Activity, AuthEvent, Device, DeviceType, Factor, Outcome, Reason, RiskLevel, Src, Text, User,
};
use serde::Deserialize;
use serde_json::json;

/// The ECS normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ecs;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, rename = "@timestamp")]
    timestamp: Option<Str<'a>>,
    #[serde(borrow)]
    event: Option<Event<'a>>,
    #[serde(borrow)]
    user: Option<WireUser<'a>>,
    #[serde(borrow)]
    source: Option<Source<'a>>,
    #[serde(borrow)]
    user_agent: Option<UserAgent<'a>>,
    #[serde(borrow)]
    organization: Option<Organization<'a>>,
    #[serde(borrow)]
    authwatch: Option<Extension<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    action: Option<Str<'a>>,
    #[serde(borrow)]
    outcome: Option<Str<'a>>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
    #[serde(borrow)]
    provider: Option<Str<'a>>,
    // ECS defines both as arrays, but shippers (and ECS's own examples) often write one string.
    #[serde(borrow, rename = "type")]
    types: Option<OneOrMany<'a>>,
    #[serde(borrow)]
    category: Option<OneOrMany<'a>>,
}

/// A keyword field that ECS allows as one string or an array of strings.
struct OneOrMany<'a>(Vec<Str<'a>>);

impl OneOrMany<'_> {
    fn contains(&self, word: &str) -> bool {
        self.0.iter().any(|w| w.as_ref() == word)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for OneOrMany<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = OneOrMany<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![Str::borrowed(s)]))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![Str::owned(s.to_owned())]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(w) = seq.next_element::<Str<'a>>()? {
                    all.push(w);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct WireUser<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    domain: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow)]
    ip: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct UserAgent<'a> {
    #[serde(borrow)]
    original: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Organization<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

impl Normalizer for Ecs {
    fn name(&self) -> &'static str {
        "ecs"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let w: Wire = common::parse(text)?;
        let time = common::rfc3339(
            "@timestamp",
            common::required("@timestamp", w.timestamp.as_ref())?,
        )?;
        let event = w.event.as_ref().ok_or_else(|| common::missing("event"))?;
        let event_id = common::required("event.id", event.id.as_ref())?;
        let empty = Extension::default();
        let ext = w.authwatch.as_ref().unwrap_or(&empty);
        // An ECS stream carries every kind of event (network flows, processes…); only
        // authentication events are sign-ins. A document that names its activity in the
        // `authwatch` extension says what it is (a lockout filed under `iam`, say).
        match &event.category {
            _ if ext.activity.is_some() => {}
            None => return Err(common::missing("event.category")),
            Some(c) if !c.contains("authentication") => {
                return Err(Rejection::new(
                    RejectKind::InvalidValue,
                    format!(
                        "`event.category` is {:?}, not an authentication event (it must contain \"authentication\", or `authwatch.activity` must say what it is)",
                        c.0.iter().map(|w| w.as_ref()).collect::<Vec<_>>()
                    ),
                ));
            }
            Some(_) => {}
        }
        let is_end = event.types.as_ref().is_some_and(|t| t.contains("end"));
        // Only `failure` is a failure: `unknown` (ECS's third value) or no outcome is neutral
        // (challenge, which no success- or failure-counting rule reads).
        let derived_outcome = match event.outcome.as_deref() {
            Some("success") => Outcome::Success,
            Some("failure") => Outcome::Failure,
            _ => Outcome::Challenge,
        };
        let outcome = vocab("authwatch.outcome", ext.outcome.as_ref(), derived_outcome)?;
        let derived_reason = match (outcome, event.reason.as_deref()) {
            (Outcome::Success | Outcome::Challenge, _) => Reason::None,
            (_, Some(r)) => crate::ocsf::reason_word(r),
            (_, None) => Reason::Other,
        };
        let user = w.user.as_ref();
        let name = t(user.and_then(|u| u.name.as_ref()));
        let domain = match user.and_then(|u| u.domain.as_ref()) {
            Some(d) if !d.is_empty() => Text::new(d.as_ref()),
            _ => domain_of(&name),
        };
        let provider = match event.provider.as_deref() {
            Some(p) if !p.is_empty() => Text::new(p),
            _ => Text::new("ecs"),
        };
        let ev = AuthEvent {
            time,
            provider,
            tenant: t(w.organization.as_ref().and_then(|o| o.name.as_ref())),
            event_id: Text::new(event_id),
            provider_event_type: t(event.action.as_ref()),
            user: User {
                id: t(user.and_then(|u| u.id.as_ref())),
                name,
                domain,
            },
            activity: vocab(
                "authwatch.activity",
                ext.activity.as_ref(),
                if is_end {
                    Activity::Logoff
                } else {
                    Activity::Logon
                },
            )?,
            factor: vocab("authwatch.factor", ext.factor.as_ref(), Factor::None)?,
            outcome,
            reason: vocab("authwatch.reason", ext.reason.as_ref(), derived_reason)?,
            reason_raw: t(event.reason.as_ref()),
            src: Src {
                ip: common::ip("source.ip", w.source.as_ref().and_then(|s| s.ip.as_ref()))?,
                ..Src::default()
            },
            device: Device {
                user_agent: t(w.user_agent.as_ref().and_then(|u| u.original.as_ref())),
                os: t(ext.os.as_ref()),
                browser: t(ext.browser.as_ref()),
                kind: vocab(
                    "authwatch.device_type",
                    ext.device_type.as_ref(),
                    DeviceType::Unknown,
                )?,
                id: t(ext.device_id.as_ref()),
                fingerprint: Text::default(),
            },
            session_id: t(ext.session_id.as_ref()),
            app: t(ext.app.as_ref()),
            provider_risk: vocab("authwatch.risk", ext.risk.as_ref(), RiskLevel::None)?,
            ..AuthEvent::default()
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// Writes `event` as an ECS 8 authentication event.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let ts = common::rfc3339_ms(ev.time)?;
    let kind = match ev.activity {
        Activity::Logoff => "end",
        Activity::Logon | Activity::MfaVerify => "start",
        Activity::PolicyEvaluation | Activity::MfaChallenge | Activity::Other => "info",
        _ => "change",
    };
    let outcome = match ev.outcome {
        Outcome::Success => "success",
        Outcome::Challenge => "unknown",
        _ => "failure",
    };
    let v = json!({
        "@timestamp": ts,
        "ecs": {"version": "8.11.0"},
        "event": {
            "id": ev.event_id.as_str(),
            "kind": "event",
            "category": ["authentication"],
            "type": [kind],
            "action": or_null(&ev.provider_event_type),
            "outcome": outcome,
            "reason": or_null(&ev.reason_raw),
            "provider": ev.provider.as_str(),
        },
        "user": {"id": or_null(&ev.user.id), "name": ev.user.name.as_str(), "domain": or_null(&ev.user.domain)},
        "source": {"ip": ip_or_null(ev.src.ip)},
        "user_agent": {"original": or_null(&ev.device.user_agent)},
        "organization": {"name": or_null(&ev.tenant)},
        "authwatch": extension(ev),
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(line: &str) -> Result<AuthEvent, Rejection> {
        Ecs.normalize(line.as_bytes(), 0, &Limits::default())
    }

    fn summary(e: &AuthEvent) -> String {
        format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
    }

    #[test]
    fn only_authentication_events_are_read() {
        let flow = r#"{"@timestamp":"2026-01-05T00:00:01Z","event":{"id":"x1","category":["network"],"type":["connection"],"outcome":"unknown","action":"flow"},"source":{"ip":"10.0.0.1"},"user":{"name":"ken"}}"#;
        let r = norm(flow).unwrap_err();
        assert_eq!(r.kind, RejectKind::InvalidValue);
        assert!(r.message.contains("event.category"), "{}", r.message);
        assert!(r.message.contains("network"), "{}", r.message);
        let none = r#"{"@timestamp":"2026-01-05T00:00:01Z","event":{"id":"x0","outcome":"success"},"user":{"name":"ken"}}"#;
        let r = norm(none).unwrap_err();
        assert_eq!(r.kind, RejectKind::MissingField);
        assert!(r.message.contains("event.category"), "{}", r.message);
        // A lockout filed under `iam` that names its activity in the extension is read.
        let lock = r#"{"@timestamp":"2026-01-05T00:00:01Z","event":{"id":"x7","category":["iam"],"type":["change"],"outcome":"success"},"authwatch":{"activity":"account_lock"},"user":{"name":"ken"}}"#;
        assert_eq!(norm(lock).unwrap().activity, Activity::AccountLock);
    }

    #[test]
    fn type_and_category_may_be_strings() {
        let line = r#"{"@timestamp":"2026-01-05T00:00:02Z","event":{"id":"x2","category":"authentication","type":"start","outcome":"success","action":"logged-in"},"source":{"ip":"10.0.0.1"},"user":{"name":"ken"}}"#;
        assert_eq!(summary(&norm(line).unwrap()), "logon/none/success/none");
        let end = r#"{"@timestamp":"2026-01-05T00:00:02Z","event":{"id":"x3","category":"authentication","type":"end","outcome":"success"},"user":{"name":"ken"}}"#;
        assert_eq!(summary(&norm(end).unwrap()), "logoff/none/success/none");
    }

    #[test]
    fn only_failure_is_a_failure() {
        let unknown = r#"{"@timestamp":"2026-01-05T00:00:02Z","event":{"id":"x4","category":["authentication"],"type":["start"],"outcome":"unknown"},"user":{"name":"ken"}}"#;
        assert_eq!(
            summary(&norm(unknown).unwrap()),
            "logon/none/challenge/none"
        );
        let missing = r#"{"@timestamp":"2026-01-05T00:00:02Z","event":{"id":"x5","category":["authentication"],"type":["start"]},"user":{"name":"ken"}}"#;
        assert_eq!(
            summary(&norm(missing).unwrap()),
            "logon/none/challenge/none"
        );
        let failed = r#"{"@timestamp":"2026-01-05T00:00:02Z","event":{"id":"x6","category":["authentication"],"type":["start"],"outcome":"failure","reason":"invalid_credentials"},"user":{"name":"ken"}}"#;
        assert_eq!(
            summary(&norm(failed).unwrap()),
            "logon/none/failure/invalid_credentials"
        );
    }
}
