//! Keycloak events: user events (`LOGIN`, `LOGIN_ERROR`, …) and admin events
//! (`operationType`, `resourceType`, `representation`), as the event listener SPI and
//! `/admin/realms/{realm}/events` give them.

use crate::common::{self, EncodeError, Str, domain_of, or_null, t};
use crate::{Limits, Normalizer, Rejection};
use authwatch_event::{Activity, AuthEvent, Device, Factor, Outcome, Reason, Src, Text, User};
use serde::Deserialize;
use serde_json::json;

/// The Keycloak event normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keycloak;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    time: Option<i64>,
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, rename = "realmId")]
    realm_id: Option<Str<'a>>,
    #[serde(borrow, rename = "clientId")]
    client_id: Option<Str<'a>>,
    #[serde(borrow, rename = "userId")]
    user_id: Option<Str<'a>>,
    #[serde(borrow, rename = "sessionId")]
    session_id: Option<Str<'a>>,
    #[serde(borrow, rename = "ipAddress")]
    ip: Option<Str<'a>>,
    #[serde(borrow)]
    error: Option<Str<'a>>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    // Admin events.
    #[serde(borrow, rename = "operationType")]
    operation: Option<Str<'a>>,
    #[serde(borrow, rename = "resourceType")]
    resource_type: Option<Str<'a>>,
    #[serde(borrow, rename = "resourcePath")]
    resource_path: Option<Str<'a>>,
    #[serde(borrow)]
    representation: Option<Str<'a>>,
    #[serde(borrow, rename = "authDetails")]
    auth_details: Option<AuthDetails<'a>>,
}

#[derive(Deserialize)]
struct Details<'a> {
    #[serde(borrow)]
    username: Option<Str<'a>>,
    #[serde(borrow)]
    credential_type: Option<Str<'a>>,
    #[serde(borrow)]
    user_agent: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct AuthDetails<'a> {
    #[serde(borrow, rename = "realmId")]
    realm_id: Option<Str<'a>>,
    #[serde(borrow, rename = "ipAddress")]
    ip: Option<Str<'a>>,
}

/// Event types. `MFA_CHALLENGE` and `USER_UNLOCKED` are authwatch extensions: Keycloak has no
/// push authenticator of its own (push SPIs log their prompts under the first), and unlocks are
/// admin events.
const TYPES: &[(&str, Activity, Outcome)] = &[
    ("LOGIN", Activity::Logon, Outcome::Success),
    ("LOGIN_ERROR", Activity::Logon, Outcome::Failure),
    ("LOGOUT", Activity::Logoff, Outcome::Success),
    ("LOGOUT_ERROR", Activity::Logoff, Outcome::Failure),
    ("UPDATE_PASSWORD", Activity::PasswordReset, Outcome::Success),
    ("RESET_PASSWORD", Activity::PasswordReset, Outcome::Success),
    ("UPDATE_TOTP", Activity::MfaEnroll, Outcome::Success),
    ("UPDATE_CREDENTIAL", Activity::MfaEnroll, Outcome::Success),
    ("REMOVE_TOTP", Activity::MfaReset, Outcome::Success),
    ("REMOVE_CREDENTIAL", Activity::MfaReset, Outcome::Success),
    (
        "USER_DISABLED_BY_TEMPORARY_LOCKOUT",
        Activity::AccountLock,
        Outcome::Success,
    ),
    (
        "USER_DISABLED_BY_PERMANENT_LOCKOUT",
        Activity::AccountDisable,
        Outcome::Success,
    ),
    ("MFA_CHALLENGE", Activity::MfaChallenge, Outcome::Challenge),
    ("USER_UNLOCKED", Activity::AccountUnlock, Outcome::Success),
];

/// `error` strings, with the outcome they give a failed step.
const ERRORS: &[(&str, Outcome, Reason)] = &[
    (
        "invalid_user_credentials",
        Outcome::Failure,
        Reason::InvalidCredentials,
    ),
    ("user_not_found", Outcome::Failure, Reason::UnknownUser),
    ("user_disabled", Outcome::Failure, Reason::AccountDisabled),
    (
        "user_temporarily_disabled",
        Outcome::Success,
        Reason::LockedOut,
    ),
    ("invalid_totp", Outcome::Failure, Reason::InvalidOtp),
    // Not one-time passwords: the login-action code of a form (expired after a back button or a
    // long pause) and the OAuth authorization code. Nothing the user typed was wrong.
    ("invalid_code", Outcome::Failure, Reason::Other),
    ("expired_code", Outcome::Failure, Reason::Other),
    ("access_denied", Outcome::Blocked, Reason::PolicyDenied),
    ("not_allowed", Outcome::Blocked, Reason::PolicyDenied),
    (
        "credential_setup_required",
        Outcome::Failure,
        Reason::FactorNotEnrolled,
    ),
    (
        "password_expired",
        Outcome::Failure,
        Reason::PasswordExpired,
    ),
    // authwatch extensions, as written by push-authenticator SPIs.
    ("push_rejected", Outcome::Denied, Reason::PushDenied),
    ("push_timeout", Outcome::Timeout, Reason::PushTimeout),
    (
        "push_fraud_reported",
        Outcome::Denied,
        Reason::UserReportedFraud,
    ),
    (
        "device_not_registered",
        Outcome::Failure,
        Reason::DeviceNotRegistered,
    ),
    (
        "method_not_allowed",
        Outcome::Failure,
        Reason::MethodMismatch,
    ),
    ("provider_error", Outcome::Failure, Reason::ProviderError),
    (
        "authenticator_error",
        Outcome::Failure,
        Reason::AuthenticatorError,
    ),
    ("risk_blocked", Outcome::Blocked, Reason::RiskBlocked),
    ("rate_limited", Outcome::Failure, Reason::RateLimited),
    ("mfa_required", Outcome::Challenge, Reason::MfaRequired),
];

/// `details.credential_type` values.
const CREDENTIALS: &[(&str, Factor)] = &[
    ("password", Factor::Password),
    ("otp", Factor::Totp),
    ("webauthn", Factor::Webauthn),
    ("webauthn-passwordless", Factor::Biometric),
    ("push", Factor::Push),
    ("sms", Factor::Sms),
    ("voice", Factor::Voice),
    ("email", Factor::Email),
    ("hardware-otp", Factor::HardwareToken),
];

impl Normalizer for Keycloak {
    fn name(&self) -> &'static str {
        "keycloak"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let w: Wire = common::parse(text)?;
        let time = w.time.ok_or_else(|| common::missing("time"))?;
        let ev = if w.operation.is_some() {
            admin_event(&w, time)?
        } else {
            user_event(&w, time)?
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// Keycloak before 24 gives events no id: a stable one is derived from what identifies them,
/// and also from what tells two of them apart in one millisecond (the address, the client and the
/// error): the pipeline drops a repeated id as a second delivery of one record, and a distributed
/// brute force makes failures of one account from many addresses in the same millisecond.
fn synthetic_id(parts: &[&str], time: i64) -> Text {
    let mut id = format!("kc-{time}");
    for p in parts {
        id.push(':');
        id.push_str(p);
    }
    Text::new(id)
}

fn user_event(w: &Wire<'_>, time: i64) -> Result<AuthEvent, Rejection> {
    let kind = common::required("type", w.kind.as_ref())?;
    let details = w.details.as_ref();
    let credential = details
        .and_then(|d| d.credential_type.as_deref())
        .unwrap_or("");
    let factor = CREDENTIALS
        .iter()
        .find(|(c, _)| *c == credential)
        .map(|(_, f)| *f)
        .unwrap_or(Factor::None);
    let (mut activity, mut outcome) = TYPES
        .iter()
        .find(|(c, ..)| *c == kind)
        .map(|(_, a, o)| (*a, *o))
        .unwrap_or((Activity::Other, Outcome::Success));
    // The generic credential events (the account console's "Signing in" page) are about any
    // credential: which one is `credential_type`, and a password's is a password change.
    if matches!(kind, "UPDATE_CREDENTIAL" | "REMOVE_CREDENTIAL") && factor == Factor::Password {
        activity = Activity::PasswordReset;
    }
    // A login step whose credential is a second factor is the MFA answer, not the sign-in.
    // WebAuthn and passkeys can be the first factor, so they leave the step a sign-in.
    if activity == Activity::Logon
        && !matches!(
            factor,
            Factor::Password | Factor::None | Factor::Webauthn | Factor::Biometric
        )
    {
        activity = Activity::MfaVerify;
    }
    let error = w.error.as_deref().unwrap_or("");
    let mut reason = Reason::None;
    if !error.is_empty() {
        let (o, r) = ERRORS
            .iter()
            .find(|(c, ..)| *c == error)
            .map(|(_, o, r)| (*o, *r))
            .unwrap_or((Outcome::Failure, Reason::Other));
        outcome = o;
        // Keycloak reports a wrong OTP as `invalid_user_credentials` too; the credential
        // type says which secret was wrong.
        reason = match r {
            Reason::InvalidCredentials if !matches!(factor, Factor::Password | Factor::None) => {
                Reason::InvalidOtp
            }
            r => r,
        };
        match r {
            Reason::LockedOut => activity = Activity::AccountLock,
            Reason::PolicyDenied | Reason::RiskBlocked => activity = Activity::PolicyEvaluation,
            _ => {}
        }
    }
    let name = t(details.and_then(|d| d.username.as_ref()));
    let realm = t(w.realm_id.as_ref());
    let user_id = t(w.user_id.as_ref());
    let event_id = match w.id.as_deref() {
        Some(id) if !id.is_empty() => Text::new(id),
        _ => synthetic_id(
            &[
                &realm,
                kind,
                &user_id,
                &name,
                w.session_id.as_deref().unwrap_or(""),
                w.ip.as_deref().unwrap_or(""),
                w.client_id.as_deref().unwrap_or(""),
                w.error.as_deref().unwrap_or(""),
            ],
            time,
        ),
    };
    Ok(AuthEvent {
        time,
        provider: Text::new("keycloak"),
        tenant: realm,
        event_id,
        provider_event_type: Text::new(kind),
        user: User {
            id: user_id,
            domain: domain_of(&name),
            name,
        },
        activity,
        factor,
        outcome,
        reason,
        reason_raw: Text::new(error),
        src: Src {
            ip: common::ip("ipAddress", w.ip.as_ref())?,
            ..Src::default()
        },
        device: Device {
            user_agent: t(details.and_then(|d| d.user_agent.as_ref())),
            ..Device::default()
        },
        session_id: t(w.session_id.as_ref()),
        app: t(w.client_id.as_ref()),
        ..AuthEvent::default()
    })
}

fn admin_event(w: &Wire<'_>, time: i64) -> Result<AuthEvent, Rejection> {
    let operation = w.operation.as_deref().unwrap_or("");
    let resource = w.resource_type.as_deref().unwrap_or("");
    let path = w.resource_path.as_deref().unwrap_or("");
    let repr = w.representation.as_deref().unwrap_or("");
    // The representation is the changed object as a JSON string; only a few facts of it
    // matter, so it is searched, not parsed.
    let activity = match (operation, resource) {
        ("DELETE", _) if path.starts_with("attack-detection/brute-force/users") => {
            Activity::AccountUnlock
        }
        ("DELETE", "USER") if path.contains("/credentials/") => Activity::MfaReset,
        ("ACTION", "USER") if path.ends_with("/reset-password") => Activity::PasswordReset,
        ("UPDATE", "USER")
            if repr.contains("\"enabled\":false") || repr.contains("\"enabled\" : false") =>
        {
            Activity::AccountDisable
        }
        ("DELETE", "USER") => Activity::AccountDisable,
        _ => Activity::Other,
    };
    let auth = w.auth_details.as_ref();
    let realm = t(w
        .realm_id
        .as_ref()
        .or(auth.and_then(|a| a.realm_id.as_ref())));
    // The account changed is the one in the path (`users/<id>/…`), not the admin who acted.
    let target = path
        .split('/')
        .skip_while(|s| *s != "users")
        .nth(1)
        .unwrap_or("");
    let kind = format!("{operation}:{resource}");
    let event_id = match w.id.as_deref() {
        Some(id) if !id.is_empty() => Text::new(id),
        _ => synthetic_id(&[&realm, &kind, path], time),
    };
    let error = w.error.as_deref().unwrap_or("");
    Ok(AuthEvent {
        time,
        provider: Text::new("keycloak"),
        tenant: realm,
        event_id,
        provider_event_type: Text::new(kind),
        user: User {
            id: Text::new(target),
            ..User::default()
        },
        activity,
        outcome: if error.is_empty() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        reason: if error.is_empty() {
            Reason::None
        } else {
            Reason::Other
        },
        reason_raw: Text::new(error),
        src: Src {
            ip: common::ip("authDetails.ipAddress", auth.and_then(|a| a.ip.as_ref()))?,
            ..Src::default()
        },
        ..AuthEvent::default()
    })
}

/// Writes `event` as a Keycloak user event (the form the event listener SPI gives).
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use Activity as A;
    let kind = match (ev.activity, ev.outcome) {
        (A::Logon | A::MfaVerify | A::PolicyEvaluation | A::Other, Outcome::Success) => "LOGIN",
        (A::Logon | A::MfaVerify | A::PolicyEvaluation | A::Other, _) => "LOGIN_ERROR",
        (A::AccountLock, _) => "LOGIN_ERROR",
        (A::Logoff, Outcome::Success) => "LOGOUT",
        (A::Logoff, _) => "LOGOUT_ERROR",
        (A::MfaChallenge, _) => "MFA_CHALLENGE",
        (A::PasswordReset, _) => "UPDATE_PASSWORD",
        (A::MfaEnroll, _) => "UPDATE_CREDENTIAL",
        (A::MfaReset, _) => "REMOVE_CREDENTIAL",
        (A::AccountUnlock, _) => "USER_UNLOCKED",
        (A::AccountDisable, _) => "USER_DISABLED_BY_PERMANENT_LOCKOUT",
    };
    let error = match ev.reason {
        Reason::None => "",
        Reason::LockedOut => "user_temporarily_disabled",
        Reason::Other => ev.reason_raw.as_str(),
        r => ERRORS
            .iter()
            .find(|(_, _, x)| *x == r)
            .map(|(c, ..)| *c)
            .unwrap_or(""),
    };
    let credential = CREDENTIALS
        .iter()
        .find(|(_, f)| *f == ev.factor)
        .map(|(c, _)| *c);
    let mut details = serde_json::Map::new();
    details.insert("auth_method".into(), json!("openid-connect"));
    details.insert("username".into(), json!(ev.user.name.as_str()));
    if let Some(c) = credential {
        details.insert("credential_type".into(), json!(c));
    }
    if !ev.device.user_agent.is_empty() {
        details.insert("user_agent".into(), json!(ev.device.user_agent.as_str()));
    }
    let v = json!({
        "id": ev.event_id.as_str(),
        "time": ev.time,
        "type": kind,
        "realmId": ev.tenant.as_str(),
        "clientId": or_null(&ev.app),
        "userId": or_null(&ev.user.id),
        "sessionId": or_null(&ev.session_id),
        "ipAddress": common::ip_or_null(ev.src.ip),
        "error": or_null(error),
        "details": details,
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(line: &str) -> String {
        let e = Keycloak
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap();
        format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
    }

    #[test]
    fn expired_and_invalid_codes_are_not_one_time_passwords() {
        let expired = r#"{"id":"k1","time":1767571200000,"type":"LOGIN_ERROR","realmId":"r","clientId":"app","userId":"u1","ipAddress":"198.51.100.7","error":"expired_code","details":{"username":"ken","auth_method":"openid-connect"}}"#;
        assert_eq!(summary(expired), "logon/none/failure/other");
        let invalid = r#"{"id":"k2","time":1767571200001,"type":"CODE_TO_TOKEN_ERROR","realmId":"r","clientId":"app","userId":"u1","ipAddress":"198.51.100.7","error":"invalid_code","details":{"username":"ken"}}"#;
        assert_eq!(summary(invalid), "other/none/failure/other");
        // A wrong one-time password is still one.
        let otp = r#"{"id":"k3","time":1767571200002,"type":"LOGIN_ERROR","realmId":"r","userId":"u1","error":"invalid_user_credentials","details":{"username":"ken","credential_type":"otp"}}"#;
        assert_eq!(summary(otp), "mfa_verify/totp/failure/invalid_otp");
    }

    #[test]
    fn a_password_credential_change_is_a_password_change() {
        let event = |kind: &str, credential: &str| {
            format!(
                r#"{{"id":"k-{kind}-{credential}","time":1767571200000,"type":"{kind}","realmId":"acme","clientId":"account-console","userId":"u1","sessionId":"s1","ipAddress":"198.51.100.7","details":{{"username":"ken","credential_type":"{credential}","auth_method":"openid-connect"}}}}"#
            )
        };
        assert_eq!(
            summary(&event("UPDATE_CREDENTIAL", "password")),
            "password_reset/password/success/none"
        );
        assert_eq!(
            summary(&event("REMOVE_CREDENTIAL", "password")),
            "password_reset/password/success/none"
        );
        // A second factor's are enrollments and resets.
        assert_eq!(
            summary(&event("UPDATE_CREDENTIAL", "otp")),
            "mfa_enroll/totp/success/none"
        );
        assert_eq!(
            summary(&event("REMOVE_CREDENTIAL", "webauthn")),
            "mfa_reset/webauthn/success/none"
        );
    }

    // Without an id (Keycloak before 24), two failures of one account in one millisecond from two
    // addresses are two events, not one record delivered twice; one record read twice is one.
    #[test]
    fn derived_ids_tell_apart_what_differs_in_one_millisecond() {
        let id = |line: &str| {
            Keycloak
                .normalize(line.as_bytes(), 0, &Limits::default())
                .map(|e| e.event_id.to_string())
                .unwrap_or_default()
        };
        let from = |ip: &str, error: &str| {
            format!(
                r#"{{"time":1767571200000,"type":"LOGIN_ERROR","realmId":"r","clientId":"app","userId":"u1","ipAddress":"{ip}","error":"{error}","details":{{"username":"ken"}}}}"#
            )
        };
        let a = id(&from("198.51.100.7", "invalid_user_credentials"));
        assert!(a.starts_with("kc-1767571200000:"), "{a}");
        assert_eq!(a, id(&from("198.51.100.7", "invalid_user_credentials")));
        assert_ne!(a, id(&from("198.51.100.8", "invalid_user_credentials")));
        assert_ne!(a, id(&from("198.51.100.7", "user_not_found")));
    }
}
