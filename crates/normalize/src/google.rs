//! Google Workspace Admin SDK Reports API, `login` application: `activities.list` items
//! (`{"kind": "admin#reports#activity", "id": {"time", "uniqueQualifier", "customerId"},
//! "actor": {"email", "profileId"}, "ipAddress", "events": [{"name", "parameters"}]}`).

use crate::common::{self, EncodeError, Str, contains_ci, domain_of, ip_or_null, t};
use crate::{Limits, Normalizer, Rejection};
use authwatch_event::{Activity, AuthEvent, Factor, Outcome, Reason, Src, Text, User};
use serde::Deserialize;
use serde_json::json;

/// The Google Workspace login audit normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Google;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    id: Option<Id<'a>>,
    #[serde(borrow)]
    actor: Option<Actor<'a>>,
    #[serde(borrow, rename = "ipAddress")]
    ip: Option<Str<'a>>,
    #[serde(borrow)]
    events: Option<Vec<Event<'a>>>,
}

#[derive(Deserialize)]
struct Id<'a> {
    #[serde(borrow)]
    time: Option<Str<'a>>,
    #[serde(borrow, rename = "uniqueQualifier")]
    unique: Option<Str<'a>>,
    #[serde(borrow, rename = "customerId")]
    customer: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Actor<'a> {
    #[serde(borrow)]
    email: Option<Str<'a>>,
    #[serde(borrow, rename = "profileId")]
    profile_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    parameters: Option<Vec<Parameter<'a>>>,
}

#[derive(Deserialize)]
struct Parameter<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    value: Option<Str<'a>>,
    #[serde(borrow, rename = "multiValue")]
    multi_value: Option<Vec<Str<'a>>>,
}

/// Event names. `account_locked`, `account_unlocked` and `login_other` are authwatch extensions
/// (Google does not lock accounts; it disables them).
const EVENTS: &[(&str, Activity, Outcome, Reason)] = &[
    (
        "login_success",
        Activity::Logon,
        Outcome::Success,
        Reason::None,
    ),
    (
        "login_failure",
        Activity::Logon,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "login_challenge",
        Activity::MfaChallenge,
        Outcome::Challenge,
        Reason::None,
    ),
    (
        "login_verification",
        Activity::MfaChallenge,
        Outcome::Challenge,
        Reason::None,
    ),
    ("logout", Activity::Logoff, Outcome::Success, Reason::None),
    (
        "suspicious_login",
        Activity::PolicyEvaluation,
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
    (
        "suspicious_login_less_secure_app",
        Activity::PolicyEvaluation,
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
    (
        "suspicious_programmatic_login",
        Activity::PolicyEvaluation,
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
    (
        "account_disabled_generic",
        Activity::AccountDisable,
        Outcome::Success,
        Reason::AccountDisabled,
    ),
    (
        "account_disabled_hijacked",
        Activity::AccountDisable,
        Outcome::Success,
        Reason::AccountDisabled,
    ),
    (
        "account_disabled_password_leak",
        Activity::AccountDisable,
        Outcome::Success,
        Reason::AccountDisabled,
    ),
    (
        "account_disabled_spamming",
        Activity::AccountDisable,
        Outcome::Success,
        Reason::AccountDisabled,
    ),
    (
        "password_edit",
        Activity::PasswordReset,
        Outcome::Success,
        Reason::None,
    ),
    (
        "2sv_enroll",
        Activity::MfaEnroll,
        Outcome::Success,
        Reason::None,
    ),
    (
        "titanium_enroll",
        Activity::MfaEnroll,
        Outcome::Success,
        Reason::None,
    ),
    (
        "2sv_disable",
        Activity::MfaReset,
        Outcome::Success,
        Reason::None,
    ),
    (
        "titanium_unenroll",
        Activity::MfaReset,
        Outcome::Success,
        Reason::None,
    ),
    (
        "account_locked",
        Activity::AccountLock,
        Outcome::Success,
        Reason::LockedOut,
    ),
    (
        "account_unlocked",
        Activity::AccountUnlock,
        Outcome::Success,
        Reason::None,
    ),
    (
        "login_other",
        Activity::Other,
        Outcome::Success,
        Reason::None,
    ),
];

/// `login_failure_type` values; past `login_failure_unknown` they are authwatch extensions for
/// second-factor outcomes Google reports only as "Challenge Failed".
const FAILURES: &[(&str, Outcome, Reason)] = &[
    (
        "login_failure_invalid_password",
        Outcome::Failure,
        Reason::InvalidCredentials,
    ),
    (
        "login_failure_invalid_second_factor",
        Outcome::Failure,
        Reason::InvalidOtp,
    ),
    (
        "login_failure_missing_second_factor",
        Outcome::Failure,
        Reason::MfaRequired,
    ),
    (
        "login_failure_account_disabled",
        Outcome::Failure,
        Reason::AccountDisabled,
    ),
    (
        "login_failure_access_code_disallowed",
        Outcome::Blocked,
        Reason::PolicyDenied,
    ),
    ("login_failure_unknown", Outcome::Failure, Reason::Other),
    (
        "login_failure_unknown_user",
        Outcome::Failure,
        Reason::UnknownUser,
    ),
    (
        "login_failure_push_denied",
        Outcome::Denied,
        Reason::PushDenied,
    ),
    (
        "login_failure_push_timeout",
        Outcome::Timeout,
        Reason::PushTimeout,
    ),
    (
        "login_failure_reported_fraud",
        Outcome::Denied,
        Reason::UserReportedFraud,
    ),
    (
        "login_failure_device_not_registered",
        Outcome::Failure,
        Reason::DeviceNotRegistered,
    ),
    (
        "login_failure_not_enrolled",
        Outcome::Failure,
        Reason::FactorNotEnrolled,
    ),
    (
        "login_failure_method_not_allowed",
        Outcome::Failure,
        Reason::MethodMismatch,
    ),
    (
        "login_failure_provider_error",
        Outcome::Failure,
        Reason::ProviderError,
    ),
    (
        "login_failure_security_key_error",
        Outcome::Failure,
        Reason::AuthenticatorError,
    ),
    (
        "login_failure_rate_limited",
        Outcome::Failure,
        Reason::RateLimited,
    ),
    (
        "login_failure_password_expired",
        Outcome::Failure,
        Reason::PasswordExpired,
    ),
    (
        "login_failure_risk_blocked",
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
    (
        "login_failure_locked_out",
        Outcome::Failure,
        Reason::LockedOut,
    ),
];

/// `login_failure_type` values that are the second factor's failure, not the password's: the
/// failed step is the MFA answer (`mfa_verify`), as a "Challenge Failed" verification is. Past
/// the first two they are authwatch extensions. A security-key error is not among them: a
/// passkey can be the first factor.
const SECOND_FACTOR_FAILURES: &[&str] = &[
    "login_failure_invalid_second_factor",
    "login_failure_missing_second_factor",
    "login_failure_push_denied",
    "login_failure_push_timeout",
    "login_failure_reported_fraud",
    "login_failure_device_not_registered",
];

/// `login_challenge_method` values.
const METHODS: &[(&str, Factor)] = &[
    ("password", Factor::Password),
    ("google_prompt", Factor::Push),
    ("internal_two_factor", Factor::Push),
    ("google_authenticator", Factor::Totp),
    ("totp", Factor::Totp),
    ("idv_preregistered_phone", Factor::Sms),
    ("idv_any_phone", Factor::Sms),
    ("voice", Factor::Voice),
    ("email", Factor::Email),
    ("security_key", Factor::Webauthn),
    ("passkey", Factor::Biometric),
    ("backup_code", Factor::HardwareToken),
];

/// What "Challenge Failed" means for the challenge's method: Google gives no finer result, so
/// a failed prompt is a denied push, a failed password a wrong password and a failed code a
/// wrong code. A security key or an unknown method says nothing about why.
fn challenge_failed(factor: Factor) -> (Outcome, Reason) {
    match factor {
        Factor::Push => (Outcome::Denied, Reason::PushDenied),
        Factor::Password => (Outcome::Failure, Reason::InvalidCredentials),
        Factor::Totp | Factor::Sms | Factor::Voice | Factor::Email | Factor::HardwareToken => {
            (Outcome::Failure, Reason::InvalidOtp)
        }
        Factor::Webauthn | Factor::Biometric | Factor::None => (Outcome::Failure, Reason::Other),
    }
}

impl Normalizer for Google {
    fn name(&self) -> &'static str {
        "google"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let w: Wire = common::parse(text)?;
        let id = w.id.as_ref().ok_or_else(|| common::missing("id"))?;
        let event_id = common::required("id.uniqueQualifier", id.unique.as_ref())?;
        let logged = common::rfc3339("id.time", common::required("id.time", id.time.as_ref())?)?;
        // One activity can list several events; the first one is the login step.
        let event = w
            .events
            .as_ref()
            .and_then(|e| e.first())
            .ok_or_else(|| common::missing("events"))?;
        let name = common::required("events[0].name", event.name.as_ref())?;
        let parameter = |key: &str| {
            event
                .parameters
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(key))
        };
        let param = |key: &str| -> Option<&str> {
            parameter(key).and_then(|p| {
                p.value
                    .as_deref()
                    .or_else(|| p.multi_value.as_ref().and_then(|m| m.first()).map(|s| &**s))
            })
        };
        // The event time is when Google logged it (`id.time`), not the warned-of login's
        // `login_timestamp`: a warning comes hours after that login, and dated back it would
        // fall behind the watermark and never be detected on.
        let time = logged;
        let (mut activity, mut outcome, mut reason) = EVENTS
            .iter()
            .find(|(c, ..)| *c == name)
            .map(|(_, a, o, r)| (*a, *o, *r))
            .unwrap_or((Activity::Other, Outcome::Success, Reason::None));
        // Google lists every challenge of the login in order (`["password", "google_prompt"]`):
        // the last is the step this record is about, the second factor of a completed login.
        let method = parameter("login_challenge_method")
            .and_then(|p| {
                p.multi_value
                    .as_ref()
                    .and_then(|m| m.last())
                    .map(|s| &**s)
                    .or(p.value.as_deref())
            })
            .unwrap_or("");
        let mut factor = METHODS
            .iter()
            .find(|(c, _)| *c == method)
            .map(|(_, f)| *f)
            .unwrap_or(Factor::None);
        let failure_type = param("login_failure_type").unwrap_or("");
        let second_factor = SECOND_FACTOR_FAILURES.contains(&failure_type);
        if matches!(name, "login_success" | "login_failure")
            && factor == Factor::None
            && !second_factor
        {
            factor = match param("login_type") {
                Some("google_password") | None => Factor::Password,
                Some(_) => Factor::None,
            };
        }
        if matches!(name, "login_challenge" | "login_verification") {
            // A password challenge ("verify it's you" with the password) checks the primary
            // credential: a sign-in step, as for the other providers.
            let answered = if factor == Factor::Password {
                Activity::Logon
            } else {
                Activity::MfaVerify
            };
            match param("login_challenge_status") {
                Some(s) if contains_ci(s, "passed") => {
                    activity = answered;
                    outcome = Outcome::Success;
                }
                Some(s) if contains_ci(s, "failed") => {
                    activity = answered;
                    (outcome, reason) = challenge_failed(factor);
                }
                _ => {}
            }
        }
        if let Some((_, o, r)) = FAILURES.iter().find(|(c, ..)| *c == failure_type) {
            outcome = *o;
            reason = *r;
            match r {
                Reason::PolicyDenied | Reason::RiskBlocked => activity = Activity::PolicyEvaluation,
                Reason::LockedOut => {
                    activity = Activity::AccountLock;
                    outcome = Outcome::Success;
                }
                _ => {}
            }
        }
        if second_factor && activity == Activity::Logon {
            activity = Activity::MfaVerify;
            // With no method named, a push's refusal still names the push.
            if factor == Factor::None
                && matches!(
                    reason,
                    Reason::PushDenied | Reason::PushTimeout | Reason::UserReportedFraud
                )
            {
                factor = Factor::Push;
            }
        }
        let actor = w.actor.as_ref();
        let actor_email = actor.and_then(|a| a.email.as_deref()).unwrap_or("");
        // An account warning (suspicious login, account disabled…) is about the account in
        // `affected_email_address`; its actor is whoever Google names, an admin or no one.
        let (user_name, user_id) = match param("affected_email_address") {
            Some(affected) if !affected.is_empty() => (
                Text::new(affected),
                if affected.eq_ignore_ascii_case(actor_email) {
                    t(actor.and_then(|a| a.profile_id.as_ref()))
                } else {
                    Text::default()
                },
            ),
            _ => (
                Text::new(actor_email),
                t(actor.and_then(|a| a.profile_id.as_ref())),
            ),
        };
        let reason_raw = if reason == Reason::None {
            ""
        } else if failure_type.is_empty() {
            name
        } else {
            failure_type
        };
        let ev = AuthEvent {
            time,
            provider: Text::new("google"),
            tenant: t(id.customer.as_ref()),
            event_id: Text::new(event_id),
            provider_event_type: Text::new(name),
            user: User {
                id: user_id,
                domain: domain_of(&user_name),
                name: user_name,
            },
            activity,
            factor,
            outcome,
            reason,
            reason_raw: Text::new(reason_raw),
            src: Src {
                ip: common::ip("ipAddress", w.ip.as_ref())?,
                ..Src::default()
            },
            ..AuthEvent::default()
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// Writes `event` as a Reports API `login` activity.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use Activity as A;
    let time = common::rfc3339_ms(ev.time)?;
    let mut params = Vec::new();
    let method = METHODS
        .iter()
        .find(|(_, f)| *f == ev.factor)
        .map(|(c, _)| *c);
    let name = match (ev.activity, ev.outcome) {
        (A::Logon, Outcome::Success) => "login_success",
        (A::Logon, _) => "login_failure",
        (A::MfaChallenge, _) => "login_challenge",
        (A::MfaVerify, _) => "login_verification",
        (A::PolicyEvaluation, _) if ev.reason == Reason::RiskBlocked => "suspicious_login",
        (A::PolicyEvaluation, _) => "login_failure",
        (a, _) => EVENTS
            .iter()
            .find(|(_, x, ..)| *x == a)
            .map(|(c, ..)| *c)
            .unwrap_or("login_other"),
    };
    if matches!(name, "login_success" | "login_failure") {
        let login_type = if matches!(ev.factor, Factor::Password) {
            "google_password"
        } else {
            "saml"
        };
        params.push(json!({"name": "login_type", "value": login_type}));
    }
    if let Some(m) = method
        && ev.factor != Factor::Password
    {
        params.push(json!({"name": "login_challenge_method", "multiValue": [m]}));
    }
    if ev.activity == A::MfaVerify {
        let status = if ev.outcome == Outcome::Success {
            "Challenge Passed"
        } else {
            "Challenge Failed"
        };
        params.push(json!({"name": "login_challenge_status", "value": status}));
    }
    let table_reason = EVENTS
        .iter()
        .find(|(c, ..)| *c == name)
        .map(|(_, _, _, r)| *r)
        .unwrap_or(Reason::None);
    // The reason "Challenge Failed" implies for the method written: only a different one needs a
    // `login_failure_type`.
    let default_reason = if name == "login_verification" && ev.outcome != Outcome::Success {
        let written = if method.is_some() && ev.factor != Factor::Password {
            ev.factor
        } else {
            Factor::None
        };
        challenge_failed(written).1
    } else {
        table_reason
    };
    if ev.reason != default_reason
        && ev.reason != Reason::None
        && let Some((c, ..)) = FAILURES.iter().find(|(_, _, r)| *r == ev.reason)
    {
        params.push(json!({"name": "login_failure_type", "value": c}));
    }
    params.push(json!({"name": "is_suspicious", "boolValue": ev.provider_risk == authwatch_event::RiskLevel::High}));
    // Account warnings name their account in a parameter, as Google writes them.
    let warning = name.starts_with("account_") || name.starts_with("suspicious_");
    if warning {
        params.push(json!({"name": "affected_email_address", "value": ev.user.name.as_str()}));
    }
    let v = json!({
        "kind": "admin#reports#activity",
        "id": {
            "time": time,
            "uniqueQualifier": ev.event_id.as_str(),
            "applicationName": "login",
            "customerId": ev.tenant.as_str(),
        },
        "etag": "\"authwatch\"",
        "actor": {"callerType": "USER", "email": ev.user.name.as_str(), "profileId": ev.user.id.as_str()},
        "ipAddress": ip_or_null(ev.src.ip),
        "events": [{"type": if warning { "account_warning" } else { "login" }, "name": name, "parameters": params}],
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(line: &str) -> AuthEvent {
        Google
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap()
    }

    fn summary(line: &str) -> String {
        let e = norm(line);
        format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
    }

    #[test]
    fn an_account_warning_is_about_the_affected_account_when_it_happened() {
        // Google's own warning: the actor is an admin (or no one); the account is a parameter.
        let warning = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T10:00:00.000Z","uniqueQualifier":"-721","applicationName":"login","customerId":"C01"},"etag":"\"x/y\"","actor":{"callerType":"USER","email":"it-admin@example.jp","profileId":"p9"},"ipAddress":"81.2.69.142","events":[{"type":"account_warning","name":"suspicious_login","parameters":[{"name":"affected_email_address","value":"ken@example.jp"},{"name":"login_timestamp","intValue":"1767600000123456"}]}]}"#;
        let e = norm(warning);
        assert_eq!(
            (
                e.user.name.as_str(),
                e.user.id.as_str(),
                e.user.domain.as_str()
            ),
            ("ken@example.jp", "", "example.jp")
        );
        // Dated when Google logged it, not at the warned-of login hours before.
        assert_eq!(e.time, 1_767_607_200_000);
        assert_eq!(
            format!("{}/{}/{}", e.activity, e.outcome, e.reason),
            "policy_evaluation/blocked/risk_blocked"
        );
        // No actor at all (Google acted).
        let disabled = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T10:00:00.000Z","uniqueQualifier":"-722","applicationName":"login","customerId":"C01"},"actor":{"callerType":"KEY","key":"Google"},"events":[{"type":"account_warning","name":"account_disabled_password_leak","parameters":[{"name":"affected_email_address","value":"ken@example.jp"}]}]}"#;
        let e = norm(disabled);
        assert_eq!(e.user.name, "ken@example.jp");
        assert_eq!(e.time, 1_767_607_200_000);
        // The user's own warning keeps their profile id; a numeric intValue reads too.
        let own = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T10:00:00.000Z","uniqueQualifier":"-723","applicationName":"login","customerId":"C01"},"actor":{"email":"Ken@example.jp","profileId":"p1"},"events":[{"type":"account_warning","name":"suspicious_login","parameters":[{"name":"affected_email_address","value":"ken@example.jp"},{"name":"login_timestamp","intValue":1767600000000000}]}]}"#;
        let e = norm(own);
        assert_eq!((e.user.id.as_str(), e.time), ("p1", 1_767_607_200_000));
    }

    #[test]
    fn a_second_factor_failure_is_the_mfa_step() {
        let line = |failure: &str, method: &str| {
            let method = if method.is_empty() {
                String::new()
            } else {
                format!(r#"{{"name":"login_challenge_method","multiValue":["{method}"]}},"#)
            };
            format!(
                r#"{{"kind":"admin#reports#activity","id":{{"time":"2026-01-05T10:00:00.000Z","uniqueQualifier":"-731","applicationName":"login","customerId":"C01"}},"actor":{{"email":"ken@example.jp","profileId":"p1"}},"ipAddress":"81.2.69.142","events":[{{"type":"login","name":"login_failure","parameters":[{{"name":"login_type","value":"google_password"}},{method}{{"name":"login_failure_type","value":"{failure}"}},{{"name":"is_second_factor","boolValue":true}}]}}]}}"#
            )
        };
        assert_eq!(
            summary(&line(
                "login_failure_invalid_second_factor",
                "google_authenticator"
            )),
            "mfa_verify/totp/failure/invalid_otp"
        );
        // No method named: not the password either.
        assert_eq!(
            summary(&line("login_failure_invalid_second_factor", "")),
            "mfa_verify/none/failure/invalid_otp"
        );
        assert_eq!(
            summary(&line("login_failure_missing_second_factor", "")),
            "mfa_verify/none/failure/mfa_required"
        );
        assert_eq!(
            summary(&line("login_failure_push_denied", "")),
            "mfa_verify/push/denied/push_denied"
        );
        // The password's own failure stays the sign-in's.
        assert_eq!(
            summary(&line("login_failure_invalid_password", "")),
            "logon/password/failure/invalid_credentials"
        );
    }

    #[test]
    fn the_factor_is_the_last_challenge_of_the_login() {
        let line = |name: &str, methods: &str, extra: &str| {
            format!(
                r#"{{"kind":"admin#reports#activity","id":{{"time":"2026-01-05T10:00:00.000Z","uniqueQualifier":"-741","applicationName":"login","customerId":"C01"}},"actor":{{"callerType":"USER","email":"ken@example.jp","profileId":"p1"}},"ipAddress":"81.2.69.142","events":[{{"type":"login","name":"{name}","parameters":[{{"name":"login_type","value":"google_password"}},{{"name":"login_challenge_method","multiValue":[{methods}]}},{extra}{{"name":"is_suspicious","boolValue":false}}]}}]}}"#
            )
        };
        // The password, then the prompt the user approved: a push approval.
        assert_eq!(
            summary(&line("login_success", r#""password","google_prompt""#, "")),
            "logon/push/success/none"
        );
        assert_eq!(
            summary(&line(
                "login_success",
                r#""password","password","password","security_key""#,
                ""
            )),
            "logon/webauthn/success/none"
        );
        assert_eq!(
            summary(&line(
                "login_failure",
                r#""password","idv_preregistered_phone""#,
                r#"{"name":"login_failure_type","value":"login_failure_invalid_second_factor"},"#
            )),
            "mfa_verify/sms/failure/invalid_otp"
        );
        assert_eq!(
            summary(&line(
                "login_failure",
                r#""password""#,
                r#"{"name":"login_failure_type","value":"login_failure_invalid_password"},"#
            )),
            "logon/password/failure/invalid_credentials"
        );
    }

    #[test]
    fn a_failed_challenge_is_read_by_its_method() {
        let prompt = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T00:00:01.000Z","uniqueQualifier":"111","applicationName":"login","customerId":"C01"},"actor":{"email":"ken@example.jp","profileId":"p1"},"ipAddress":"198.51.100.7","events":[{"type":"login","name":"login_verification","parameters":[{"name":"login_challenge_method","multiValue":["google_prompt"]},{"name":"login_challenge_status","value":"Challenge Failed"}]}]}"#;
        assert_eq!(summary(prompt), "mfa_verify/push/denied/push_denied");
        let password = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T00:00:02.000Z","uniqueQualifier":"112","applicationName":"login","customerId":"C01"},"actor":{"email":"ken@example.jp","profileId":"p1"},"ipAddress":"198.51.100.7","events":[{"type":"login","name":"login_challenge","parameters":[{"name":"login_challenge_method","multiValue":["password"]},{"name":"login_challenge_status","value":"Challenge Failed"}]}]}"#;
        assert_eq!(
            summary(password),
            "logon/password/failure/invalid_credentials"
        );
        let code = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T00:00:03.000Z","uniqueQualifier":"113","applicationName":"login","customerId":"C01"},"actor":{"email":"ken@example.jp","profileId":"p1"},"ipAddress":"198.51.100.7","events":[{"type":"login","name":"login_verification","parameters":[{"name":"login_challenge_method","multiValue":["google_authenticator"]},{"name":"login_challenge_status","value":"Challenge Failed"}]}]}"#;
        assert_eq!(summary(code), "mfa_verify/totp/failure/invalid_otp");
        let key = r#"{"kind":"admin#reports#activity","id":{"time":"2026-01-05T00:00:04.000Z","uniqueQualifier":"114","applicationName":"login","customerId":"C01"},"actor":{"email":"ken@example.jp","profileId":"p1"},"ipAddress":"198.51.100.7","events":[{"type":"login","name":"login_verification","parameters":[{"name":"login_challenge_method","multiValue":["security_key"]},{"name":"login_challenge_status","value":"Challenge Failed"}]}]}"#;
        assert_eq!(summary(key), "mfa_verify/webauthn/failure/other");
    }
}
