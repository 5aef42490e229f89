//! Elastic Common Schema authentication events (`event.category: authentication`), with
//! authwatch's normalized fields in the custom field set `authwatch`.

use crate::common::{self, EncodeError, Str, domain_of, ip_or_null, or_null, t};
use crate::ocsf::{Extension, extension, vocab};
use crate::{Limits, Normalizer, Rejection};
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
    #[serde(borrow, rename = "type")]
    types: Option<Vec<Str<'a>>>,
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
        let is_end = event.types.iter().flatten().any(|t| t.as_ref() == "end");
        let derived_outcome = match event.outcome.as_deref() {
            Some("success") => Outcome::Success,
            _ => Outcome::Failure,
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
