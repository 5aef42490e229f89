//! Microsoft Entra ID: Graph `auditLogs/signIns` objects, the Azure Monitor diagnostic export
//! (`{"time", "category": "SignInLogs" | "AuditLogs", "tenantId", "properties": {…}}`) and
//! directory audit records for the account changes sign-in logs do not carry.

use crate::common::{self, EncodeError, Str, contains_ci, domain_of, ip_or_null, or_null, t};
use crate::{Limits, Normalizer, Rejection};
use authwatch_event::{
    Activity, AuthEvent, Device, Factor, Outcome, Reason, RiskLevel, Src, Text, User,
};
use serde::Deserialize;
use serde_json::json;

/// The Entra ID sign-in (and directory audit) normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entra;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow, rename = "createdDateTime")]
    created: Option<Str<'a>>,
    #[serde(borrow, rename = "userPrincipalName")]
    upn: Option<Str<'a>>,
    #[serde(borrow, rename = "userId")]
    user_id: Option<Str<'a>>,
    #[serde(borrow, rename = "appDisplayName")]
    app: Option<Str<'a>>,
    #[serde(borrow, rename = "ipAddress")]
    ip: Option<Str<'a>>,
    #[serde(borrow, rename = "correlationId")]
    correlation_id: Option<Str<'a>>,
    #[serde(borrow, rename = "riskLevelDuringSignIn")]
    risk: Option<Str<'a>>,
    #[serde(borrow, rename = "userAgent")]
    user_agent: Option<Str<'a>>,
    status: Option<Status>,
    #[serde(borrow, rename = "deviceDetail")]
    device: Option<DeviceDetail<'a>>,
    #[serde(borrow, rename = "authenticationDetails")]
    steps: Option<LastStep<'a>>,
    #[serde(borrow, rename = "resourceTenantId")]
    resource_tenant: Option<Str<'a>>,
    #[serde(borrow, rename = "homeTenantId")]
    home_tenant: Option<Str<'a>>,
    // Azure Monitor export envelope.
    #[serde(borrow, rename = "tenantId")]
    tenant_id: Option<Str<'a>>,
    #[serde(borrow)]
    properties: Option<Box<Wire<'a>>>,
    // Directory audit records.
    #[serde(borrow, rename = "activityDisplayName")]
    activity_name: Option<Str<'a>>,
    #[serde(borrow, rename = "activityDateTime")]
    activity_time: Option<Str<'a>>,
    #[serde(borrow)]
    result: Option<Str<'a>>,
    #[serde(borrow, rename = "resultReason")]
    result_reason: Option<Str<'a>>,
    #[serde(borrow, rename = "initiatedBy")]
    initiated_by: Option<InitiatedBy<'a>>,
    #[serde(borrow, rename = "additionalDetails")]
    additional: Option<Vec<KeyValue<'a>>>,
}

#[derive(Deserialize)]
struct Status {
    // Only the code is read: `failureReason` is a sentence for people and changes wording.
    #[serde(rename = "errorCode")]
    error_code: Option<i64>,
}

#[derive(Deserialize)]
struct DeviceDetail<'a> {
    #[serde(borrow, rename = "deviceId")]
    device_id: Option<Str<'a>>,
    #[serde(borrow, rename = "operatingSystem")]
    os: Option<Str<'a>>,
    #[serde(borrow)]
    browser: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Step<'a> {
    #[serde(borrow, rename = "authenticationMethod")]
    method: Option<Str<'a>>,
    #[serde(borrow, rename = "authenticationStepResultDetail")]
    detail: Option<Str<'a>>,
    #[serde(borrow, rename = "authenticationStepRequirement")]
    requirement: Option<Str<'a>>,
}

/// The last element of `authenticationDetails`: the step the record's status is about. Kept
/// without collecting the array, which would cost an allocation per line.
struct LastStep<'a>(Option<Step<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for LastStep<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = LastStep<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of authentication steps")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LastStep<'a>, A::Error> {
                let mut last = None;
                while let Some(step) = seq.next_element::<Step<'a>>()? {
                    last = Some(step);
                }
                Ok(LastStep(last))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct InitiatedBy<'a> {
    #[serde(borrow)]
    user: Option<AuditUser<'a>>,
}

#[derive(Deserialize)]
struct AuditUser<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow, rename = "userPrincipalName")]
    upn: Option<Str<'a>>,
    #[serde(borrow, rename = "ipAddress")]
    ip: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow)]
    key: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<Str<'a>>,
}

impl Normalizer for Entra {
    fn name(&self) -> &'static str {
        "entra"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let wire: Wire = common::parse(text)?;
        // Borrowed, not moved: the wire struct is large and copying it shows in profiles.
        let (inner, outer_tenant) = match wire.properties.as_deref() {
            Some(p) => (p, t(wire.tenant_id.as_ref())),
            None => (&wire, Text::default()),
        };
        let ev = if inner.activity_name.is_some() {
            audit_event(inner, outer_tenant)?
        } else {
            sign_in_event(inner, outer_tenant)?
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// Sign-in error codes (`status.errorCode`): what each means in the closed vocabulary. `None`
/// activity means "the step's own activity" (primary sign-in or MFA).
const CODES: &[(i64, Option<Activity>, Outcome, Reason)] = &[
    (50126, None, Outcome::Failure, Reason::InvalidCredentials),
    (50034, None, Outcome::Failure, Reason::UnknownUser),
    (
        50053,
        Some(Activity::AccountLock),
        Outcome::Success,
        Reason::LockedOut,
    ),
    (50055, None, Outcome::Failure, Reason::PasswordExpired),
    (50057, None, Outcome::Failure, Reason::AccountDisabled),
    (50072, None, Outcome::Failure, Reason::FactorNotEnrolled),
    (50079, None, Outcome::Failure, Reason::FactorNotEnrolled),
    (50097, None, Outcome::Failure, Reason::DeviceNotRegistered),
    (50125, None, Outcome::Challenge, Reason::Other),
    (50133, None, Outcome::Failure, Reason::Other),
    (50140, None, Outcome::Challenge, Reason::Other),
    (50158, None, Outcome::Failure, Reason::MfaRequired),
    (50196, None, Outcome::Failure, Reason::RateLimited),
    (
        53003,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    (
        530032,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
];

/// `authenticationStepResultDetail` phrases of error 500121 (failed strong authentication),
/// checked in order.
const DETAILS: &[(&str, Outcome, Reason)] = &[
    ("fraud", Outcome::Denied, Reason::UserReportedFraud),
    ("declined", Outcome::Denied, Reason::PushDenied),
    ("did not respond", Outcome::Timeout, Reason::PushTimeout),
    ("timed out", Outcome::Timeout, Reason::PushTimeout),
    ("verification code", Outcome::Failure, Reason::InvalidOtp),
    ("not allowed", Outcome::Failure, Reason::MethodMismatch),
    ("unavailable", Outcome::Failure, Reason::ProviderError),
    ("security key", Outcome::Failure, Reason::AuthenticatorError),
    (
        "not registered",
        Outcome::Failure,
        Reason::DeviceNotRegistered,
    ),
    ("too many", Outcome::Failure, Reason::RateLimited),
];

/// The detail written for each reason of a failed strong authentication (500121).
fn detail_text(r: Reason) -> &'static str {
    match r {
        Reason::UserReportedFraud => "MFA denied; Phone App Reported Fraud",
        Reason::PushDenied => "MFA denied; user declined the authentication",
        Reason::PushTimeout => "MFA denied; user did not respond to mobile app notification",
        Reason::InvalidOtp => "MFA denied; invalid verification code",
        Reason::MethodMismatch => "MFA denied; authentication method not allowed by policy",
        Reason::ProviderError => "MFA denied; MFA service unavailable",
        Reason::AuthenticatorError => "Authentication failed; security key error",
        Reason::DeviceNotRegistered => "MFA denied; device not registered",
        Reason::RateLimited => "MFA denied; too many attempts",
        _ => "MFA denied",
    }
}

/// `authenticationMethod` names and the factor each is.
const METHODS: &[(&str, Factor)] = &[
    ("Password", Factor::Password),
    ("Mobile app notification", Factor::Push),
    ("OATH verification code", Factor::Totp),
    ("Text message", Factor::Sms),
    ("Phone call approval", Factor::Voice),
    ("Email", Factor::Email),
    ("FIDO2 security key", Factor::Webauthn),
    ("Hardware OATH token", Factor::HardwareToken),
    ("Windows Hello for Business", Factor::Biometric),
];

fn factor_of(method: &str) -> Factor {
    if let Some((_, f)) = METHODS.iter().find(|(m, _)| method.eq_ignore_ascii_case(m)) {
        return *f;
    }
    if contains_ci(method, "notification") || contains_ci(method, "passwordless") {
        Factor::Push
    } else if contains_ci(method, "code") {
        Factor::Totp
    } else if contains_ci(method, "fido") || contains_ci(method, "passkey") {
        Factor::Webauthn
    } else {
        Factor::None
    }
}

fn method_name(f: Factor) -> &'static str {
    METHODS
        .iter()
        .find(|(_, x)| *x == f)
        .map(|(m, _)| *m)
        .unwrap_or("")
}

fn risk_of(s: &str) -> RiskLevel {
    match s {
        "low" => RiskLevel::Low,
        "medium" => RiskLevel::Medium,
        "high" => RiskLevel::High,
        _ => RiskLevel::None,
    }
}

fn sign_in_event(w: &Wire<'_>, outer_tenant: Text) -> Result<AuthEvent, Rejection> {
    let event_id = common::required("id", w.id.as_ref())?;
    let time = common::rfc3339(
        "createdDateTime",
        common::required("createdDateTime", w.created.as_ref())?,
    )?;
    let code = w.status.as_ref().and_then(|s| s.error_code).unwrap_or(0);
    // The last authentication step is the one the record's status is about.
    let step = w.steps.as_ref().and_then(|s| s.0.as_ref());
    let method = step.and_then(|s| s.method.as_deref()).unwrap_or("");
    let factor = factor_of(method);
    let primary = step.is_none_or(|s| {
        s.requirement
            .as_deref()
            .is_some_and(|r| contains_ci(r, "primary"))
            || factor == Factor::Password
    });
    let step_activity = if primary {
        Activity::Logon
    } else {
        Activity::MfaVerify
    };
    let detail = step.and_then(|s| s.detail.as_deref()).unwrap_or("");
    let (activity, outcome, reason) = match code {
        0 => (step_activity, Outcome::Success, Reason::None),
        50074 | 50076 if !primary => (Activity::MfaChallenge, Outcome::Challenge, Reason::None),
        50074 | 50076 => (Activity::Logon, Outcome::Challenge, Reason::MfaRequired),
        500121 => {
            let (o, r) = DETAILS
                .iter()
                .find(|(k, _, _)| contains_ci(detail, k))
                .map(|(_, o, r)| (*o, *r))
                .unwrap_or((Outcome::Failure, Reason::Other));
            (step_activity, o, r)
        }
        _ => match CODES.iter().find(|(c, ..)| *c == code) {
            Some((_, a, o, r)) => (a.unwrap_or(step_activity), *o, *r),
            None => (step_activity, Outcome::Failure, Reason::Other),
        },
    };
    let name = t(w.upn.as_ref());
    let tenant = if outer_tenant.is_empty() {
        t(w.resource_tenant.as_ref().or(w.home_tenant.as_ref()))
    } else {
        outer_tenant
    };
    let device = w.device.as_ref();
    Ok(AuthEvent {
        time,
        provider: Text::new("entra"),
        tenant,
        event_id: Text::new(event_id),
        provider_event_type: Text::new("signIn"),
        user: User {
            id: t(w.user_id.as_ref()),
            domain: domain_of(&name),
            name,
        },
        activity,
        factor,
        outcome,
        reason,
        reason_raw: if code == 0 {
            Text::default()
        } else {
            code_text(code)
        },
        src: Src {
            ip: common::ip("ipAddress", w.ip.as_ref())?,
            ..Src::default()
        },
        device: Device {
            user_agent: t(w.user_agent.as_ref()),
            os: t(device.and_then(|d| d.os.as_ref())),
            browser: t(device.and_then(|d| d.browser.as_ref())),
            id: t(device.and_then(|d| d.device_id.as_ref())),
            ..Device::default()
        },
        session_id: t(w.correlation_id.as_ref()),
        app: t(w.app.as_ref()),
        provider_risk: risk_of(w.risk.as_deref().unwrap_or("")),
        ..AuthEvent::default()
    })
}

/// An error code as text, formatted on the stack (this runs for every failed sign-in).
fn code_text(code: i64) -> Text {
    use std::io::Write;
    let mut buf = [0u8; 24];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 24 bytes hold any i64, so the write cannot fail.
    let _ = write!(cursor, "{code}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    Text::new(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

/// Directory audit activities that are authentication-relevant account changes.
const AUDITS: &[(&str, Activity)] = &[
    ("User signed out", Activity::Logoff),
    ("Unlock user", Activity::AccountUnlock),
    ("Reset password (self-service)", Activity::PasswordReset),
    ("Reset user password", Activity::PasswordReset),
    ("Change user password", Activity::PasswordReset),
    ("User registered security info", Activity::MfaEnroll),
    ("User deleted security info", Activity::MfaReset),
    ("Admin deleted security info", Activity::MfaReset),
    ("Disable account", Activity::AccountDisable),
    ("Account locked", Activity::AccountLock),
];

fn audit_event(w: &Wire<'_>, tenant: Text) -> Result<AuthEvent, Rejection> {
    let event_id = common::required("id", w.id.as_ref())?;
    let time = common::rfc3339(
        "activityDateTime",
        common::required("activityDateTime", w.activity_time.as_ref())?,
    )?;
    let name = w.activity_name.as_deref().unwrap_or("");
    let activity = AUDITS
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, a)| *a)
        .unwrap_or(Activity::Other);
    let detail = |key: &str| {
        w.additional
            .iter()
            .flatten()
            .find(|kv| kv.key.as_deref() == Some(key))
            .map(|kv| t(kv.value.as_ref()))
            .unwrap_or_default()
    };
    let user = w.initiated_by.as_ref().and_then(|i| i.user.as_ref());
    let upn = t(user.and_then(|u| u.upn.as_ref()));
    let failed = w.result.as_deref().is_some_and(|r| r != "success");
    let reason_raw = t(w.result_reason.as_ref());
    Ok(AuthEvent {
        time,
        provider: Text::new("entra"),
        tenant,
        event_id: Text::new(event_id),
        provider_event_type: Text::new(name),
        user: User {
            id: t(user.and_then(|u| u.id.as_ref())),
            domain: domain_of(&upn),
            name: upn,
        },
        activity,
        factor: factor_of(&detail("AuthenticationMethod")),
        outcome: if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        reason: if failed { Reason::Other } else { Reason::None },
        reason_raw,
        src: Src {
            ip: common::ip(
                "initiatedBy.user.ipAddress",
                user.and_then(|u| u.ip.as_ref()),
            )?,
            ..Src::default()
        },
        device: Device {
            user_agent: detail("User-Agent"),
            ..Device::default()
        },
        session_id: t(w.correlation_id.as_ref()),
        ..AuthEvent::default()
    })
}

/// Graph's `createdDateTime` form: seven fractional digits.
fn graph_time(ms: i64) -> Result<String, EncodeError> {
    let s = common::rfc3339_ms(ms)?;
    // `…T09:00:00.123Z` → `…T09:00:00.1230000Z`
    Ok(format!("{}0000Z", s.trim_end_matches('Z')))
}

/// Writes a sign-in as a Graph `signIn` object, or an account change as an Azure Monitor
/// `AuditLogs` record.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use Activity as A;
    let time = graph_time(ev.time)?;
    let audit = match ev.activity {
        A::Logoff => Some("User signed out"),
        A::AccountUnlock => Some("Unlock user"),
        A::PasswordReset => Some("Reset password (self-service)"),
        A::MfaEnroll => Some("User registered security info"),
        A::MfaReset => Some("User deleted security info"),
        A::AccountDisable => Some("Disable account"),
        A::Other => Some("Update user"),
        _ => None,
    };
    if let Some(name) = audit {
        let failed = ev.outcome != Outcome::Success;
        let v = json!({
            "time": time,
            "resourceId": "/tenants/authwatch/providers/Microsoft.aadiam",
            "operationName": name,
            "category": "AuditLogs",
            "tenantId": or_null(&ev.tenant),
            "resultSignature": "None",
            "properties": {
                "id": ev.event_id.as_str(),
                "category": "UserManagement",
                "correlationId": or_null(&ev.session_id),
                "result": if failed { "failure" } else { "success" },
                "resultReason": ev.reason_raw.as_str(),
                "activityDisplayName": name,
                "activityDateTime": time,
                "loggedByService": "Core Directory",
                "initiatedBy": {"user": {"id": or_null(&ev.user.id), "userPrincipalName": ev.user.name.as_str(), "ipAddress": ip_or_null(ev.src.ip)}},
                "targetResources": [{"id": or_null(&ev.user.id), "type": "User", "userPrincipalName": ev.user.name.as_str()}],
                "additionalDetails": [
                    {"key": "AuthenticationMethod", "value": method_name(ev.factor)},
                    {"key": "User-Agent", "value": ev.device.user_agent.as_str()},
                ],
            },
        });
        common::write_json(out, &v);
        return Ok(());
    }
    let primary_req = "Primary authentication";
    let mfa_req = "Multifactor authentication";
    let method = method_name(ev.factor);
    let step = |succeeded: bool, detail: &str, req: &str| json!([{"authenticationStepDateTime": time, "authenticationMethod": method, "succeeded": succeeded, "authenticationStepResultDetail": detail, "authenticationStepRequirement": req}]);
    let is_primary = ev.activity == A::Logon || ev.factor == Factor::Password;
    let req = if is_primary { primary_req } else { mfa_req };
    let no_steps = json!([]);
    let (code, steps) = match (ev.activity, ev.outcome, ev.reason) {
        (A::AccountLock, _, _) => (50053, no_steps),
        (A::PolicyEvaluation, _, Reason::RiskBlocked) => (530032, no_steps),
        (A::PolicyEvaluation, Outcome::Blocked | Outcome::Failure, _) => (53003, no_steps),
        (A::PolicyEvaluation, _, _) => (0, no_steps),
        (A::MfaChallenge, _, _) => (50074, step(false, "MFA required in Azure AD", mfa_req)),
        (_, Outcome::Challenge, _) => (50076, step(true, "Correct password", primary_req)),
        (_, Outcome::Success, _) if ev.factor == Factor::None => (0, no_steps),
        (_, Outcome::Success, _) => (
            0,
            step(
                true,
                if is_primary {
                    "Correct password"
                } else {
                    "MFA successfully completed"
                },
                req,
            ),
        ),
        (_, _, r) => {
            let code = CODES
                .iter()
                .find(|(_, a, o, x)| a.is_none() && *x == r && *o == ev.outcome)
                .map(|(c, ..)| *c)
                .unwrap_or(500121);
            let detail = if code == 500121 { detail_text(r) } else { "" };
            let steps = if ev.factor == Factor::None {
                no_steps
            } else {
                step(false, detail, req)
            };
            (code, steps)
        }
    };
    let failure_reason = match code {
        0 => "Other.",
        50126 => "Error validating credentials due to invalid username or password.",
        50053 => {
            "Account is locked because user tried to sign in too many times with an incorrect user ID or password."
        }
        50074 => "Strong Authentication is required.",
        500121 => "Authentication failed during strong authentication request.",
        53003 => "Access has been blocked by Conditional Access policies.",
        _ => "See error code.",
    };
    let v = json!({
        "id": ev.event_id.as_str(),
        "createdDateTime": time,
        "userDisplayName": ev.user.name.as_str(),
        "userPrincipalName": ev.user.name.as_str(),
        "userId": or_null(&ev.user.id),
        "appId": "00000002-0000-0ff1-ce00-000000000000",
        "appDisplayName": or_null(&ev.app),
        "ipAddress": ip_or_null(ev.src.ip),
        "clientAppUsed": "Browser",
        "userAgent": or_null(&ev.device.user_agent),
        "correlationId": or_null(&ev.session_id),
        "conditionalAccessStatus": if code == 53003 { "failure" } else { "notApplied" },
        "isInteractive": true,
        "riskLevelDuringSignIn": if ev.provider_risk == RiskLevel::None { "none" } else { ev.provider_risk.as_str() },
        "riskState": "none",
        "resourceTenantId": or_null(&ev.tenant),
        "status": {"errorCode": code, "failureReason": failure_reason, "additionalDetails": null},
        "deviceDetail": {"deviceId": ev.device.id.as_str(), "displayName": "", "operatingSystem": ev.device.os.as_str(), "browser": ev.device.browser.as_str()},
        "location": {"city": null, "state": null, "countryOrRegion": null},
        "authenticationDetails": steps,
    });
    common::write_json(out, &v);
    Ok(())
}
