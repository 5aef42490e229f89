//! OCSF Authentication (class 3002) JSON events, and authwatch's normalized fields carried in
//! OCSF's `unmapped` object where OCSF has no attribute for them.

use crate::common::{self, EncodeError, Str, domain_of, ip_or_null, or_null, t};
use crate::{Limits, Normalizer, RejectKind, Rejection};
use authwatch_event::{
    Activity, AuthEvent, Device, DeviceType, Factor, Outcome, Reason, RiskLevel, Src, Text, User,
};
use serde::Deserialize;
use serde_json::json;

/// The OCSF 3002 normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ocsf;

#[derive(Deserialize)]
struct Wire<'a> {
    class_uid: Option<u32>,
    activity_id: Option<u32>,
    time: Option<i64>,
    status_id: Option<u32>,
    #[serde(borrow)]
    status_code: Option<Str<'a>>,
    #[serde(borrow)]
    status_detail: Option<Str<'a>>,
    is_mfa: Option<bool>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow)]
    user: Option<WireUser<'a>>,
    #[serde(borrow)]
    src_endpoint: Option<Endpoint<'a>>,
    #[serde(borrow)]
    http_request: Option<HttpRequest<'a>>,
    #[serde(borrow)]
    service: Option<Named<'a>>,
    #[serde(borrow)]
    session: Option<Session<'a>>,
    #[serde(borrow)]
    auth_factors: Option<Vec<AuthFactor<'a>>>,
    #[serde(borrow)]
    unmapped: Option<Unmapped<'a>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    uid: Option<Str<'a>>,
    #[serde(borrow)]
    product: Option<Named<'a>>,
    #[serde(borrow)]
    tenant_uid: Option<Str<'a>>,
    #[serde(borrow)]
    event_code: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct WireUser<'a> {
    #[serde(borrow)]
    uid: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    email_addr: Option<Str<'a>>,
    #[serde(borrow)]
    domain: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Endpoint<'a> {
    #[serde(borrow)]
    ip: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct HttpRequest<'a> {
    #[serde(borrow)]
    user_agent: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Session<'a> {
    #[serde(borrow)]
    uid: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct AuthFactor<'a> {
    #[serde(borrow)]
    factor_type: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Unmapped<'a> {
    #[serde(borrow)]
    authwatch: Option<Extension<'a>>,
}

/// authwatch's own fields, carried where the target schema has no attribute for them (OCSF
/// `unmapped.authwatch`, ECS custom field set `authwatch`).
#[derive(Deserialize, Default)]
pub(crate) struct Extension<'a> {
    #[serde(borrow)]
    pub activity: Option<Str<'a>>,
    #[serde(borrow)]
    pub factor: Option<Str<'a>>,
    #[serde(borrow)]
    pub outcome: Option<Str<'a>>,
    #[serde(borrow)]
    pub reason: Option<Str<'a>>,
    #[serde(borrow)]
    pub risk: Option<Str<'a>>,
    #[serde(borrow)]
    pub os: Option<Str<'a>>,
    #[serde(borrow)]
    pub browser: Option<Str<'a>>,
    #[serde(borrow)]
    pub device_type: Option<Str<'a>>,
    #[serde(borrow)]
    pub device_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub session_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub app: Option<Str<'a>>,
}

/// A vocabulary value from the extension: absent keeps `default`, unknown is rejected.
pub(crate) fn vocab<T: std::str::FromStr<Err = authwatch_event::VocabError>>(
    field: &str,
    v: Option<&Str<'_>>,
    default: T,
) -> Result<T, Rejection> {
    match v {
        None => Ok(default),
        Some(s) if s.is_empty() => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|e| Rejection::new(RejectKind::InvalidValue, format!("`{field}`: {e}"))),
    }
}

/// The extension object for an event (the fields OCSF and ECS have no place for).
pub(crate) fn extension(ev: &AuthEvent) -> serde_json::Value {
    json!({
        "activity": ev.activity.as_str(),
        "factor": ev.factor.as_str(),
        "outcome": ev.outcome.as_str(),
        "reason": ev.reason.as_str(),
        "risk": ev.provider_risk.as_str(),
        "os": ev.device.os.as_str(),
        "browser": ev.device.browser.as_str(),
        "device_type": ev.device.kind.as_str(),
        "device_id": ev.device.id.as_str(),
        "session_id": ev.session_id.as_str(),
        "app": ev.app.as_str(),
    })
}

/// A reason written as a vocabulary word in any case (`INVALID_CREDENTIALS`), else `other`.
pub(crate) fn reason_word(s: &str) -> Reason {
    s.parse()
        .or_else(|_| s.to_ascii_lowercase().parse())
        .unwrap_or(Reason::Other)
}

/// OCSF `auth_factor.factor_type` captions.
const FACTORS: &[(&str, Factor)] = &[
    ("SMS", Factor::Sms),
    ("Phone Call", Factor::Voice),
    ("Biometric", Factor::Biometric),
    ("Push Notification", Factor::Push),
    ("Hardware Token", Factor::HardwareToken),
    ("OTP/TOTP", Factor::Totp),
    ("Email", Factor::Email),
    ("WebAuthn", Factor::Webauthn),
    ("U2F", Factor::Webauthn),
    ("Password", Factor::Password),
];

impl Normalizer for Ocsf {
    fn name(&self) -> &'static str {
        "ocsf"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let w: Wire = common::parse(text)?;
        match w.class_uid {
            Some(3002) => {}
            Some(other) => {
                return Err(Rejection::new(
                    RejectKind::InvalidValue,
                    format!("class_uid {other} is not OCSF Authentication (3002)"),
                ));
            }
            None => return Err(common::missing("class_uid")),
        }
        let time = w.time.ok_or_else(|| common::missing("time"))?;
        let meta = w.metadata.as_ref();
        let event_id = common::required("metadata.uid", meta.and_then(|m| m.uid.as_ref()))?;
        let ext = w.unmapped.as_ref().and_then(|u| u.authwatch.as_ref());
        let empty = Extension::default();
        let ext = ext.unwrap_or(&empty);
        let factor_caption = w
            .auth_factors
            .as_ref()
            .and_then(|f| f.first())
            .and_then(|f| f.factor_type.as_deref())
            .unwrap_or("");
        let derived_factor = FACTORS
            .iter()
            .find(|(c, _)| factor_caption.eq_ignore_ascii_case(c))
            .map(|(_, f)| *f)
            .unwrap_or(Factor::None);
        let derived_activity = match w.activity_id {
            Some(1) if w.is_mfa == Some(true) && derived_factor != Factor::Password => {
                Activity::MfaVerify
            }
            Some(1) => Activity::Logon,
            Some(2) => Activity::Logoff,
            _ => Activity::Other,
        };
        // 0 Unknown, 99 Other (see `status`) or none: the producer did not say it failed. The
        // neutral outcome (challenge, which no success- or failure-counting rule reads), as
        // for Okta's UNKNOWN and ECS's unknown, not a failure for the password-attack rules.
        let derived_outcome = match w.status_id {
            Some(1) => Outcome::Success,
            Some(2) => Outcome::Failure,
            _ => Outcome::Challenge,
        };
        let detail = w.status_detail.as_deref().unwrap_or("");
        let outcome = vocab(
            "unmapped.authwatch.outcome",
            ext.outcome.as_ref(),
            derived_outcome,
        )?;
        let derived_reason = match outcome {
            Outcome::Success | Outcome::Challenge => Reason::None,
            _ => reason_word(detail),
        };
        let user = w.user.as_ref();
        let name = t(user.and_then(|u| u.name.as_ref().or(u.email_addr.as_ref())));
        let domain = match user.and_then(|u| u.domain.as_ref()) {
            Some(d) if !d.is_empty() => Text::new(d.as_ref()),
            _ => domain_of(&name),
        };
        let provider = match meta
            .and_then(|m| m.product.as_ref())
            .and_then(|p| p.name.as_deref())
        {
            Some(p) if !p.is_empty() => Text::new(p),
            _ => Text::new("ocsf"),
        };
        let session = w.session.as_ref().and_then(|s| s.uid.as_ref());
        let app = w.service.as_ref().and_then(|s| s.name.as_ref());
        let ev = AuthEvent {
            time,
            provider,
            tenant: t(meta.and_then(|m| m.tenant_uid.as_ref())),
            event_id: Text::new(event_id),
            provider_event_type: t(meta.and_then(|m| m.event_code.as_ref())),
            user: User {
                id: t(user.and_then(|u| u.uid.as_ref())),
                name,
                domain,
            },
            activity: vocab(
                "unmapped.authwatch.activity",
                ext.activity.as_ref(),
                derived_activity,
            )?,
            factor: vocab(
                "unmapped.authwatch.factor",
                ext.factor.as_ref(),
                derived_factor,
            )?,
            outcome,
            reason: vocab(
                "unmapped.authwatch.reason",
                ext.reason.as_ref(),
                derived_reason,
            )?,
            reason_raw: t(w.status_code.as_ref()),
            src: Src {
                ip: common::ip(
                    "src_endpoint.ip",
                    w.src_endpoint.as_ref().and_then(|e| e.ip.as_ref()),
                )?,
                ..Src::default()
            },
            device: Device {
                user_agent: t(w.http_request.as_ref().and_then(|h| h.user_agent.as_ref())),
                os: t(ext.os.as_ref()),
                browser: t(ext.browser.as_ref()),
                kind: vocab(
                    "unmapped.authwatch.device_type",
                    ext.device_type.as_ref(),
                    DeviceType::Unknown,
                )?,
                id: t(ext.device_id.as_ref()),
                fingerprint: Text::default(),
            },
            session_id: t(session.or(ext.session_id.as_ref())),
            app: t(app.or(ext.app.as_ref())),
            provider_risk: vocab(
                "unmapped.authwatch.risk",
                ext.risk.as_ref(),
                RiskLevel::None,
            )?,
            ..AuthEvent::default()
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// Writes `event` as an OCSF 1.3 Authentication event.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let (activity_id, activity_name) = match ev.activity {
        Activity::Logon | Activity::MfaVerify | Activity::MfaChallenge => (1, "Logon"),
        Activity::Logoff => (2, "Logoff"),
        _ => (99, "Other"),
    };
    let (status_id, status) = match ev.outcome {
        Outcome::Success => (1, "Success"),
        Outcome::Challenge => (99, "Other"),
        _ => (2, "Failure"),
    };
    let factor = FACTORS
        .iter()
        .find(|(_, f)| *f == ev.factor)
        .map(|(c, _)| *c);
    let auth_factors = match factor {
        Some(c) => json!([{"factor_type": c}]),
        None => json!([]),
    };
    let time_dt = common::rfc3339_ms(ev.time)?;
    let v = json!({
        "class_uid": 3002,
        "class_name": "Authentication",
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 300200 + activity_id,
        "time": ev.time,
        "time_dt": time_dt,
        "severity_id": if ev.outcome == Outcome::Success { 1 } else { 3 },
        "status_id": status_id,
        "status": status,
        "status_code": or_null(&ev.reason_raw),
        "status_detail": if ev.reason == Reason::None { serde_json::Value::Null } else { json!(ev.reason.as_str()) },
        "is_mfa": !matches!(ev.factor, Factor::None | Factor::Password),
        "auth_factors": auth_factors,
        "metadata": {
            "uid": ev.event_id.as_str(),
            "version": "1.3.0",
            "product": {"name": ev.provider.as_str(), "vendor_name": ev.provider.as_str()},
            "tenant_uid": or_null(&ev.tenant),
            "event_code": or_null(&ev.provider_event_type),
        },
        "user": {"uid": or_null(&ev.user.id), "name": ev.user.name.as_str(), "domain": or_null(&ev.user.domain)},
        "src_endpoint": {"ip": ip_or_null(ev.src.ip)},
        "http_request": {"user_agent": or_null(&ev.device.user_agent)},
        "service": {"name": or_null(&ev.app)},
        "session": {"uid": or_null(&ev.session_id)},
        "unmapped": {"authwatch": extension(ev)},
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(line: &str) -> String {
        let e = Ocsf
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap();
        format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
    }

    #[test]
    fn an_unknown_status_is_not_a_failure() {
        let with = |status: &str| {
            format!(
                r#"{{"class_uid":3002,"class_name":"Authentication","category_uid":3,"activity_id":1,"activity_name":"Logon","type_uid":300201,"time":1767571200000,{status}"metadata":{{"uid":"o1","version":"1.3.0","product":{{"name":"Acme IdP"}}}},"user":{{"name":"ken@example.jp"}},"src_endpoint":{{"ip":"81.2.69.142"}},"status_detail":"INVALID_CREDENTIALS"}}"#
            )
        };
        assert_eq!(
            summary(&with(r#""status_id":0,"status":"Unknown","#)),
            "logon/none/challenge/none"
        );
        assert_eq!(summary(&with("")), "logon/none/challenge/none");
        assert_eq!(
            summary(&with(r#""status_id":99,"status":"Other","#)),
            "logon/none/challenge/none"
        );
        assert_eq!(
            summary(&with(r#""status_id":2,"status":"Failure","#)),
            "logon/none/failure/invalid_credentials"
        );
        assert_eq!(
            summary(&with(r#""status_id":1,"status":"Success","#)),
            "logon/none/success/none"
        );
    }
}
