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
    #[serde(borrow)]
    status: Option<Status<'a>>,
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
    #[serde(borrow, rename = "targetResources")]
    targets: Option<Vec<TargetResource<'a>>>,
}

#[derive(Deserialize)]
struct Status<'a> {
    // `failureReason` is not read: it is a sentence for people and changes wording.
    #[serde(rename = "errorCode")]
    error_code: Option<i64>,
    /// Graph v1.0 has no `authenticationDetails`: the result of a failed MFA step
    /// ("MFA denied; user declined the authentication") is only here.
    #[serde(borrow, rename = "additionalDetails")]
    additional_details: Option<Str<'a>>,
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

/// An object a directory audit changed (`targetResources[]`).
#[derive(Deserialize)]
struct TargetResource<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, rename = "userPrincipalName")]
    upn: Option<Str<'a>>,
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
    // The on-premises password expired (password hash sync).
    (50144, None, Outcome::Failure, Reason::PasswordExpired),
    (50057, None, Outcome::Failure, Reason::AccountDisabled),
    (50072, None, Outcome::Failure, Reason::FactorNotEnrolled),
    (50079, None, Outcome::Failure, Reason::FactorNotEnrolled),
    (50097, None, Outcome::Failure, Reason::DeviceNotRegistered),
    (50125, None, Outcome::Challenge, Reason::Other),
    (50133, None, Outcome::Failure, Reason::Other),
    (50140, None, Outcome::Challenge, Reason::Other),
    // Interrupts, as 50125 and 50140 are: a silent single sign-on that found no session (the
    // user is then asked to sign in; among the commonest codes of any tenant) and a
    // confirmation asked for security reasons. Nothing was refused.
    (50058, None, Outcome::Challenge, Reason::Other),
    (50199, None, Outcome::Challenge, Reason::Other),
    (50158, None, Outcome::Failure, Reason::MfaRequired),
    (50196, None, Outcome::Failure, Reason::RateLimited),
    (
        53003,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    // BlockedByConditionalAccessOnSecurityPolicy: a tenant security policy, not a risk verdict.
    (
        530032,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    // Conditional Access requires a compliant device, a domain-joined device, an approved
    // client app: a policy's block, like 53003.
    (
        53000,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    (
        53001,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    (
        53002,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    // ProofUpBlockedDueToRisk: MFA registration refused because the sign-in is risky.
    (
        53004,
        Some(Activity::PolicyEvaluation),
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
    // "User blocked due to risk on home tenant."
    (
        53011,
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

/// The outcome and reason a 500121 detail phrase stands for, if it is a known one.
fn mfa_detail(detail: &str) -> Option<(Outcome, Reason)> {
    DETAILS
        .iter()
        .find(|(k, _, _)| contains_ci(detail, k))
        .map(|(_, o, r)| (*o, *r))
}

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
    let status = w.status.as_ref();
    let code = status.and_then(|s| s.error_code).unwrap_or(0);
    // The last authentication step is the one the record's status is about.
    let step = w.steps.as_ref().and_then(|s| s.0.as_ref());
    let method = step.and_then(|s| s.method.as_deref()).unwrap_or("");
    let step_factor = factor_of(method);
    let primary = step.is_none_or(|s| {
        s.requirement
            .as_deref()
            .is_some_and(|r| contains_ci(r, "primary"))
            || step_factor == Factor::Password
    });
    let step_activity = if primary {
        Activity::Logon
    } else {
        Activity::MfaVerify
    };
    // The second factor the record names, if its last step is one.
    let mfa_factor = if primary { Factor::None } else { step_factor };
    let (activity, factor, outcome, reason) = match code {
        // A record with code 0 is a completed sign-in, whatever its last step: Entra writes one
        // record for the password and the MFA that completed it. The MFA method stays as the
        // factor, so a push approval is logon/push/success (rules that look for approvals match
        // logon as well as mfa_verify).
        0 => (Activity::Logon, step_factor, Outcome::Success, Reason::None),
        // "Strong authentication is required": the MFA step was asked for, whatever the steps
        // say (Graph v1.0 has none). Without an MFA method the record says only that MFA is
        // required.
        50074 | 50076 => (
            Activity::MfaChallenge,
            mfa_factor,
            Outcome::Challenge,
            if mfa_factor == Factor::None {
                Reason::MfaRequired
            } else {
                Reason::None
            },
        ),
        // The MFA step failed, whatever the steps say (Graph v1.0 has none, and its detail is
        // only in `status.additionalDetails`). One exception: a passwordless primary step
        // (FIDO2, Windows Hello) is the sign-in and its strong authentication at once, so its
        // failure is a failed logon.
        500121 => {
            let (o, r) = step
                .and_then(|s| s.detail.as_deref())
                .and_then(mfa_detail)
                .or_else(|| {
                    status
                        .and_then(|s| s.additional_details.as_deref())
                        .and_then(mfa_detail)
                })
                .unwrap_or((Outcome::Failure, Reason::Other));
            let passwordless = primary && step.is_some() && step_factor != Factor::Password;
            let f = if step_factor == Factor::Password {
                Factor::None
            } else {
                step_factor
            };
            // Without a method (v1.0), a denied, unanswered or reported prompt is a push: the
            // details name the phone app's notification.
            let f = match (f, r) {
                (
                    Factor::None,
                    Reason::PushDenied | Reason::PushTimeout | Reason::UserReportedFraud,
                ) => Factor::Push,
                (f, _) => f,
            };
            let a = if passwordless && f != Factor::None {
                Activity::Logon
            } else {
                Activity::MfaVerify
            };
            (a, f, o, r)
        }
        _ => match CODES.iter().find(|(c, ..)| *c == code) {
            Some((_, a, o, r)) => (a.unwrap_or(step_activity), step_factor, *o, *r),
            None => (step_activity, step_factor, Outcome::Failure, Reason::Other),
        },
    };
    let name = t(w.upn.as_ref());
    // The user's own tenant ("the tenant that the user is a member of"), where their account
    // and profile live: a guest signing in to a partner's resources is still the same user.
    // The export's `tenantId` and `resourceTenantId` name the tenant signed in to, so they
    // only stand in for a record without `homeTenantId`.
    let home = t(w.home_tenant.as_ref());
    let tenant = if !home.is_empty() {
        home
    } else if !outer_tenant.is_empty() {
        outer_tenant
    } else {
        t(w.resource_tenant.as_ref())
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
    let initiator = w.initiated_by.as_ref().and_then(|i| i.user.as_ref());
    // An account change is about the account changed (the first `User` target), not the admin
    // who made it, as for Keycloak's admin events: an admin disabling ken is ken's
    // account_disable. A sign-out has no target; it is the initiator's.
    let target = w
        .targets
        .iter()
        .flatten()
        .filter(|_| activity != Activity::Logoff)
        .find(|r| {
            r.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("user"))
        });
    let (user_id, upn) = match target {
        Some(r) => (t(r.id.as_ref()), t(r.upn.as_ref())),
        None => (
            t(initiator.and_then(|u| u.id.as_ref())),
            t(initiator.and_then(|u| u.upn.as_ref())),
        ),
    };
    let failed = w.result.as_deref().is_some_and(|r| r != "success");
    let reason_raw = t(w.result_reason.as_ref());
    Ok(AuthEvent {
        time,
        provider: Text::new("entra"),
        tenant,
        event_id: Text::new(event_id),
        provider_event_type: Text::new(name),
        user: User {
            id: user_id,
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
        // Where the change came from: the initiator's address, as Keycloak's admin events.
        src: Src {
            ip: common::ip(
                "initiatedBy.user.ipAddress",
                initiator.and_then(|u| u.ip.as_ref()),
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
    let password = json!({"authenticationStepDateTime": time, "authenticationMethod": "Password", "succeeded": true, "authenticationStepResultDetail": "Correct password", "authenticationStepRequirement": primary_req});
    let is_primary = ev.activity == A::Logon || ev.factor == Factor::Password;
    // Entra writes the steps of the whole sign-in in one record: an MFA step comes after the
    // password that preceded it.
    let step = |succeeded: bool, detail: &str| {
        let req = if is_primary { primary_req } else { mfa_req };
        let this = json!({"authenticationStepDateTime": time, "authenticationMethod": method, "succeeded": succeeded, "authenticationStepResultDetail": detail, "authenticationStepRequirement": req});
        if is_primary {
            json!([this])
        } else {
            json!([password, this])
        }
    };
    let no_steps = json!([]);
    let (code, steps) = match (ev.activity, ev.outcome, ev.reason) {
        (A::AccountLock, _, _) => (50053, no_steps),
        (A::PolicyEvaluation, _, Reason::RiskBlocked) => (53011, no_steps),
        (A::PolicyEvaluation, Outcome::Blocked | Outcome::Failure, _) => (53003, no_steps),
        (A::PolicyEvaluation, _, _) => (0, no_steps),
        (A::MfaChallenge, _, _) => (50074, step(false, "MFA required in Azure AD")),
        (_, Outcome::Challenge, _) => (50076, json!([password])),
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
                step(false, detail)
            };
            (code, steps)
        }
    };
    // Graph repeats a failed MFA step's detail in `status.additionalDetails` (v1.0 has only that).
    let additional = if code == 500121 {
        json!(detail_text(ev.reason))
    } else {
        serde_json::Value::Null
    };
    let failure_reason = match code {
        0 => "Other.",
        50126 => "Error validating credentials due to invalid username or password.",
        50053 => {
            "Account is locked because user tried to sign in too many times with an incorrect user ID or password."
        }
        50074 => "Strong Authentication is required.",
        500121 => "Authentication failed during strong authentication request.",
        50076 => {
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource."
        }
        53003 => "Access has been blocked by Conditional Access policies.",
        53011 => "User blocked due to risk on home tenant.",
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
        "homeTenantId": or_null(&ev.tenant),
        "resourceTenantId": or_null(&ev.tenant),
        "status": {"errorCode": code, "failureReason": failure_reason, "additionalDetails": additional},
        "deviceDetail": {"deviceId": ev.device.id.as_str(), "displayName": "", "operatingSystem": ev.device.os.as_str(), "browser": ev.device.browser.as_str()},
        "location": {"city": null, "state": null, "countryOrRegion": null},
        "authenticationDetails": steps,
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(line: &str) -> AuthEvent {
        Entra
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap()
    }

    /// `activity/factor/outcome/reason user`.
    fn summary(e: &AuthEvent) -> String {
        format!(
            "{}/{}/{}/{} {}",
            e.activity, e.factor, e.outcome, e.reason, e.user.name
        )
    }

    #[test]
    fn a_sign_in_completed_by_mfa_is_a_successful_logon() {
        // Graph beta: the password step, then the push that completed the sign-in.
        let line = r#"{"id":"e-mfa-ok","createdDateTime":"2026-01-05T00:00:01Z","userPrincipalName":"aiko@contoso.co.jp","userId":"u1","appDisplayName":"Office 365 Exchange Online","ipAddress":"203.0.113.20","status":{"errorCode":0},"authenticationDetails":[{"authenticationMethod":"Password","succeeded":true,"authenticationStepResultDetail":"Correct password","authenticationStepRequirement":"Primary authentication"},{"authenticationMethod":"Mobile app notification","succeeded":true,"authenticationStepResultDetail":"MFA successfully completed","authenticationStepRequirement":"Multifactor authentication"}]}"#;
        let ev = norm(line);
        assert_eq!(summary(&ev), "logon/push/success/none aiko@contoso.co.jp");
        assert_eq!(ev.reason_raw, "");
    }

    #[test]
    fn graph_v1_failed_mfa_reads_status_additional_details() {
        // Graph v1.0 has no authenticationDetails.
        let declined = r#"{"id":"v1-500121","createdDateTime":"2026-01-05T00:00:01Z","userPrincipalName":"ken@contoso.co.jp","userId":"u2","ipAddress":"192.0.2.50","status":{"errorCode":500121,"failureReason":"Authentication failed during strong authentication request.","additionalDetails":"MFA denied; user declined the authentication"}}"#;
        assert_eq!(
            summary(&norm(declined)),
            "mfa_verify/push/denied/push_denied ken@contoso.co.jp"
        );
        let fraud = r#"{"id":"v1-fraud","createdDateTime":"2026-01-05T00:00:02Z","userPrincipalName":"ken@contoso.co.jp","userId":"u2","ipAddress":"192.0.2.50","status":{"errorCode":500121,"failureReason":"Authentication failed during strong authentication request.","additionalDetails":"MFA denied; Phone App Reported Fraud"}}"#;
        assert_eq!(
            summary(&norm(fraud)),
            "mfa_verify/push/denied/user_reported_fraud ken@contoso.co.jp"
        );
        // A detail that names no known cause: still the MFA step, with no factor guessed.
        let other = r#"{"id":"v1-other","createdDateTime":"2026-01-05T00:00:03Z","userPrincipalName":"ken@contoso.co.jp","ipAddress":"192.0.2.50","status":{"errorCode":500121,"additionalDetails":"Something new"}}"#;
        assert_eq!(
            summary(&norm(other)),
            "mfa_verify/none/failure/other ken@contoso.co.jp"
        );
    }

    #[test]
    fn failed_mfa_is_the_mfa_step_even_after_a_password_step() {
        // The step's own detail wins; the (vaguer) additionalDetails is the fallback.
        let line = r#"{"id":"b-500121","createdDateTime":"2026-01-05T00:01:00Z","userPrincipalName":"ken@contoso.co.jp","ipAddress":"192.0.2.50","status":{"errorCode":500121,"additionalDetails":"The user didn't complete the MFA prompt."},"authenticationDetails":[{"authenticationMethod":"Password","succeeded":true,"authenticationStepRequirement":"Primary authentication"}]}"#;
        assert_eq!(
            summary(&norm(line)),
            "mfa_verify/none/failure/other ken@contoso.co.jp"
        );
    }

    #[test]
    fn mfa_required_is_the_mfa_challenge_whatever_the_steps() {
        let password_only = r#"{"id":"e-50076","createdDateTime":"2026-01-05T00:08:00Z","userPrincipalName":"aiko@contoso.co.jp","ipAddress":"203.0.113.20","status":{"errorCode":50076,"additionalDetails":"MFA required"},"authenticationDetails":[{"authenticationMethod":"Password","succeeded":true,"authenticationStepResultDetail":"Correct password","authenticationStepRequirement":"Primary authentication"}]}"#;
        assert_eq!(
            summary(&norm(password_only)),
            "mfa_challenge/none/challenge/mfa_required aiko@contoso.co.jp"
        );
        let v1 = r#"{"id":"e-50074","createdDateTime":"2026-01-05T00:08:00Z","userPrincipalName":"aiko@contoso.co.jp","status":{"errorCode":50074}}"#;
        assert_eq!(
            summary(&norm(v1)),
            "mfa_challenge/none/challenge/mfa_required aiko@contoso.co.jp"
        );
    }

    #[test]
    fn risk_block_on_home_tenant_and_security_policy_block() {
        let risk = r#"{"id":"e-53011","createdDateTime":"2026-01-05T00:00:02Z","userPrincipalName":"aiko@contoso.co.jp","userId":"u1","ipAddress":"185.220.101.6","riskLevelDuringSignIn":"high","status":{"errorCode":53011,"failureReason":"User blocked due to risk on home tenant."}}"#;
        let ev = norm(risk);
        assert_eq!(
            summary(&ev),
            "policy_evaluation/none/blocked/risk_blocked aiko@contoso.co.jp"
        );
        assert_eq!(ev.reason_raw, "53011");
        let policy = r#"{"id":"e-530032","createdDateTime":"2026-01-05T00:00:03Z","userPrincipalName":"aiko@contoso.co.jp","userId":"u1","ipAddress":"203.0.113.20","status":{"errorCode":530032,"failureReason":"BlockedByConditionalAccessOnSecurityPolicy"}}"#;
        assert_eq!(
            summary(&norm(policy)),
            "policy_evaluation/none/blocked/policy_denied aiko@contoso.co.jp"
        );
    }

    #[test]
    fn device_policies_block_and_interrupts_refuse_nothing() {
        let line = |code: i64, reason: &str| {
            format!(
                r#"{{"id":"e-{code}","createdDateTime":"2026-01-05T00:00:02.1234567Z","userDisplayName":"Aiko","userPrincipalName":"aiko@contoso.co.jp","userId":"u1","appId":"00000002-0000-0ff1-ce00-000000000000","appDisplayName":"Office 365 Exchange Online","ipAddress":"203.0.113.20","clientAppUsed":"Browser","correlationId":"c1","conditionalAccessStatus":"failure","isInteractive":true,"riskLevelDuringSignIn":"none","status":{{"errorCode":{code},"failureReason":"{reason}","additionalDetails":null}},"deviceDetail":{{"deviceId":"","operatingSystem":"Windows10","browser":"Edge 131.0.0"}},"authenticationDetails":[]}}"#
            )
        };
        for code in [53000, 53001, 53002] {
            let ev = norm(&line(code, "Device is not in required device state."));
            assert_eq!(
                summary(&ev),
                "policy_evaluation/none/blocked/policy_denied aiko@contoso.co.jp"
            );
            assert_eq!(ev.reason_raw.as_str(), code.to_string());
        }
        assert_eq!(
            summary(&norm(&line(53004, "Proof up is blocked due to risk."))),
            "policy_evaluation/none/blocked/risk_blocked aiko@contoso.co.jp"
        );
        assert_eq!(
            summary(&norm(&line(
                50058,
                "Session information is not sufficient for single-sign-on."
            ))),
            "logon/none/challenge/other aiko@contoso.co.jp"
        );
        assert_eq!(
            summary(&norm(&line(
                50144,
                "User's Active Directory password has expired."
            ))),
            "logon/none/failure/password_expired aiko@contoso.co.jp"
        );
    }

    #[test]
    fn the_tenant_is_the_users_home_tenant() {
        // A guest sign-in to a partner tenant: the user's own tenant is the home one.
        let guest = r#"{"id":"e-guest","createdDateTime":"2026-01-05T00:00:01Z","userPrincipalName":"aiko@contoso.co.jp","userId":"u1","ipAddress":"81.2.69.142","homeTenantId":"T-HOME","resourceTenantId":"T-PARTNER","crossTenantAccessType":"b2bCollaboration","status":{"errorCode":0}}"#;
        assert_eq!(norm(guest).tenant, "T-HOME");
        // The Azure Monitor export of the partner's logs: the envelope names the partner.
        let export = r#"{"time":"2026-01-05T00:00:01.0000000Z","resourceId":"/tenants/T-PARTNER/providers/Microsoft.aadiam","operationName":"Sign-in activity","category":"SignInLogs","tenantId":"T-PARTNER","properties":{"id":"e-guest2","createdDateTime":"2026-01-05T00:00:01Z","userPrincipalName":"aiko@contoso.co.jp","userId":"u1","ipAddress":"81.2.69.142","homeTenantId":"T-HOME","resourceTenantId":"T-PARTNER","status":{"errorCode":0}}}"#;
        assert_eq!(norm(export).tenant, "T-HOME");
        // Without a home tenant: the export's tenant, else the resource tenant.
        let no_home = export.replace(r#""homeTenantId":"T-HOME","#, "");
        assert_eq!(norm(&no_home).tenant, "T-PARTNER");
        let bare = r#"{"id":"e-x","createdDateTime":"2026-01-05T00:00:01Z","userPrincipalName":"aiko@contoso.co.jp","resourceTenantId":"T-RES","homeTenantId":"","status":{"errorCode":0}}"#;
        assert_eq!(norm(bare).tenant, "T-RES");
    }

    #[test]
    fn an_admin_action_is_charged_to_the_account_changed() {
        let line = r#"{"time":"2026-01-05T00:10:00.0000000Z","category":"AuditLogs","tenantId":"t1","properties":{"id":"Directory_x1","result":"success","activityDisplayName":"Disable account","activityDateTime":"2026-01-05T00:10:00.0000000Z","initiatedBy":{"user":{"id":"admin-id","userPrincipalName":"admin@contoso.co.jp","ipAddress":"198.51.100.9"}},"targetResources":[{"id":"victim-id","type":"User","userPrincipalName":"ken@contoso.co.jp"}]}}"#;
        let ev = norm(line);
        assert_eq!(
            summary(&ev),
            "account_disable/none/success/none ken@contoso.co.jp"
        );
        assert_eq!(ev.user.id, "victim-id");
        // The change came from the admin's address.
        assert_eq!(ev.src.ip, "198.51.100.9".parse().ok());
        // A sign-out is the initiator's own.
        let logoff = r#"{"id":"Directory_x2","result":"success","activityDisplayName":"User signed out","activityDateTime":"2026-01-05T00:11:00Z","initiatedBy":{"user":{"id":"u1","userPrincipalName":"aiko@contoso.co.jp"}},"targetResources":[{"id":"app","type":"ServicePrincipal"}]}"#;
        assert_eq!(
            summary(&norm(logoff)),
            "logoff/none/success/none aiko@contoso.co.jp"
        );
    }

    #[test]
    fn an_mfa_answer_is_written_after_its_password_step() {
        let ev = AuthEvent {
            time: 1_767_571_200_000,
            provider: Text::new("okta"),
            event_id: Text::new("e1"),
            user: User {
                name: Text::new("aiko@contoso.co.jp"),
                ..User::default()
            },
            activity: Activity::MfaVerify,
            factor: Factor::Push,
            outcome: Outcome::Denied,
            reason: Reason::PushDenied,
            ..AuthEvent::default()
        };
        let mut out = Vec::new();
        encode(&ev, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let steps = v["authenticationDetails"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["authenticationMethod"], "Password");
        assert_eq!(steps[1]["authenticationMethod"], "Mobile app notification");
        assert_eq!(
            v["status"]["additionalDetails"],
            "MFA denied; user declined the authentication"
        );
        assert_eq!(
            summary(&norm(std::str::from_utf8(&out).unwrap())),
            "mfa_verify/push/denied/push_denied aiko@contoso.co.jp"
        );
    }
}
