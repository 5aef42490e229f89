//! Auth0 log events: the Management API `/api/v2/logs` objects and the log-stream form
//! `{"log_id": …, "data": {…}}`.

use crate::common::{self, EncodeError, Str, contains_ci, domain_of, ip_or_null, or_null, t};
use crate::{Limits, Normalizer, Rejection};
use authwatch_event::{
    Activity, AuthEvent, Device, Factor, Outcome, Reason, RiskLevel, Src, Text, User,
};
use serde::Deserialize;
use serde_json::json;

/// The Auth0 log normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth0;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    log_id: Option<Str<'a>>,
    #[serde(borrow, rename = "_id")]
    legacy_id: Option<Str<'a>>,
    #[serde(borrow)]
    date: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    description: Option<Str<'a>>,
    #[serde(borrow)]
    user_id: Option<Str<'a>>,
    #[serde(borrow)]
    user_name: Option<Str<'a>>,
    #[serde(borrow)]
    ip: Option<Str<'a>>,
    #[serde(borrow)]
    user_agent: Option<Str<'a>>,
    #[serde(borrow)]
    client_name: Option<Str<'a>>,
    #[serde(borrow)]
    tenant_name: Option<Str<'a>>,
    #[serde(borrow)]
    session_id: Option<Str<'a>>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
    #[serde(borrow)]
    data: Option<Box<Wire<'a>>>,
}

#[derive(Deserialize)]
struct Details<'a> {
    #[serde(borrow)]
    authenticator: Option<Str<'a>>,
    #[serde(borrow)]
    risk: Option<Str<'a>>,
    /// Adaptive MFA's verdict on a login (`s`, `f`, `mfar`, …).
    #[serde(borrow, rename = "riskAssessment")]
    risk_assessment: Option<RiskAssessment<'a>>,
}

#[derive(Deserialize)]
struct RiskAssessment<'a> {
    /// How well the login matches the user's past ones: `low`, `medium`, `high`, `neutral`.
    #[serde(borrow)]
    confidence: Option<Str<'a>>,
}

/// The risk level of Adaptive MFA's overall `confidence`. Auth0 rates how much a login looks
/// like the user's own (low confidence: nothing matches, MFA is required), which is the inverse
/// of the risk level the other providers give; `neutral` is reserved and says nothing.
fn confidence_risk(confidence: &str) -> RiskLevel {
    let is = |word: &str| confidence.eq_ignore_ascii_case(word);
    if is("low") {
        RiskLevel::High
    } else if is("medium") {
        RiskLevel::Medium
    } else if is("high") {
        RiskLevel::Low
    } else {
        RiskLevel::None
    }
}

/// Log type codes: activity, the factor the code implies, outcome, reason.
const TYPES: &[(&str, Activity, Factor, Outcome, Reason)] = &[
    (
        "s",
        Activity::Logon,
        Factor::Password,
        Outcome::Success,
        Reason::None,
    ),
    (
        "ssa",
        Activity::Logon,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "f",
        Activity::Logon,
        Factor::Password,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "fp",
        Activity::Logon,
        Factor::Password,
        Outcome::Failure,
        Reason::InvalidCredentials,
    ),
    (
        "fu",
        Activity::Logon,
        Factor::Password,
        Outcome::Failure,
        Reason::UnknownUser,
    ),
    // Cross-origin authentication (embedded login from a SPA): the same sign-in as `s` / `f`.
    (
        "scoa",
        Activity::Logon,
        Factor::Password,
        Outcome::Success,
        Reason::None,
    ),
    (
        "fcoa",
        Activity::Logon,
        Factor::Password,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "fsa",
        Activity::Logon,
        Factor::None,
        Outcome::Failure,
        Reason::Other,
    ),
    // Logins through an AD/LDAP connector and native social logins: the same sign-in as `s` /
    // `f`, which Auth0 files under the same "Login - Success / Failure" categories.
    (
        "fc",
        Activity::Logon,
        Factor::Password,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "sens",
        Activity::Logon,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "fens",
        Activity::Logon,
        Factor::None,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "pwd_leak",
        Activity::Logon,
        Factor::Password,
        Outcome::Blocked,
        Reason::RiskBlocked,
    ),
    (
        "limit_mu",
        Activity::Logon,
        Factor::None,
        Outcome::Blocked,
        Reason::RateLimited,
    ),
    // "Blocked Account - Logins per IP": the user reached the maximum logins per time period
    // from one address, and is refused there for a while. Throttling of that address, as
    // `limit_wc`, not a lockout: the account is usable from anywhere else.
    (
        "limit_sul",
        Activity::Logon,
        Factor::None,
        Outcome::Blocked,
        Reason::RateLimited,
    ),
    // "Blocked Account": brute-force protection blocks one IP address from one account after
    // 10 failed logins. The account is not locked (the user still signs in from elsewhere): a
    // login of that user refused to that address, as `limit_mu` is for an address blocked for
    // all accounts. After `limit_mu`, so that the encoder writes `limit_mu`.
    (
        "limit_wc",
        Activity::Logon,
        Factor::None,
        Outcome::Blocked,
        Reason::RateLimited,
    ),
    (
        "mfar",
        Activity::Logon,
        Factor::Password,
        Outcome::Challenge,
        Reason::MfaRequired,
    ),
    (
        "gd_send_pn",
        Activity::MfaChallenge,
        Factor::Push,
        Outcome::Challenge,
        Reason::None,
    ),
    (
        "gd_send_sms",
        Activity::MfaChallenge,
        Factor::Sms,
        Outcome::Challenge,
        Reason::None,
    ),
    (
        "gd_send_voice",
        Activity::MfaChallenge,
        Factor::Voice,
        Outcome::Challenge,
        Reason::None,
    ),
    (
        "gd_send_email",
        Activity::MfaChallenge,
        Factor::Email,
        Outcome::Challenge,
        Reason::None,
    ),
    (
        "gd_send_pn_failure",
        Activity::MfaChallenge,
        Factor::Push,
        Outcome::Failure,
        Reason::ProviderError,
    ),
    (
        "gd_send_sms_failure",
        Activity::MfaChallenge,
        Factor::Sms,
        Outcome::Failure,
        Reason::ProviderError,
    ),
    (
        "gd_send_voice_failure",
        Activity::MfaChallenge,
        Factor::Voice,
        Outcome::Failure,
        Reason::ProviderError,
    ),
    (
        "gd_auth_succeed",
        Activity::MfaVerify,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "gd_auth_failed",
        Activity::MfaVerify,
        Factor::None,
        Outcome::Failure,
        Reason::InvalidOtp,
    ),
    (
        "gd_auth_rejected",
        Activity::MfaVerify,
        Factor::Push,
        Outcome::Denied,
        Reason::PushDenied,
    ),
    // A wrong recovery code: the recovery code stands in for the second factor
    // (`details.authenticator` recovery-code is hardware_token).
    (
        "gd_recovery_failed",
        Activity::MfaVerify,
        Factor::HardwareToken,
        Outcome::Failure,
        Reason::InvalidOtp,
    ),
    (
        "gd_recovery_succeed",
        Activity::MfaVerify,
        Factor::HardwareToken,
        Outcome::Success,
        Reason::None,
    ),
    (
        "gd_recovery_rate_limit_exceed",
        Activity::MfaVerify,
        Factor::HardwareToken,
        Outcome::Failure,
        Reason::RateLimited,
    ),
    (
        "gd_otp_rate_limit_exceed",
        Activity::MfaVerify,
        Factor::Totp,
        Outcome::Failure,
        Reason::RateLimited,
    ),
    (
        "gd_webauthn_challenge_failed",
        Activity::MfaVerify,
        Factor::Webauthn,
        Outcome::Failure,
        Reason::AuthenticatorError,
    ),
    (
        "gd_enrollment_complete",
        Activity::MfaEnroll,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "gd_unenroll",
        Activity::MfaReset,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "gd_user_delete",
        Activity::MfaReset,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "slo",
        Activity::Logoff,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "flo",
        Activity::Logoff,
        Factor::None,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "scp",
        Activity::PasswordReset,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    (
        "fcp",
        Activity::PasswordReset,
        Factor::None,
        Outcome::Failure,
        Reason::Other,
    ),
    (
        "ublkdu",
        Activity::AccountUnlock,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
    // "Successful User Deletion": the account is gone, which no activity names; not a disable
    // (a disabled account still exists and can be enabled again).
    (
        "sdu",
        Activity::Other,
        Factor::None,
        Outcome::Success,
        Reason::None,
    ),
];

/// Log types whose failure is generic and refined by [`PHRASES`] of the description.
const REFINED: &[&str] = &["f", "fcoa", "fc", "gd_auth_failed"];

/// Description phrases that refine a generic failure code ([`REFINED`]), in order.
const PHRASES: &[(&str, Outcome, Reason)] = &[
    ("fraud", Outcome::Denied, Reason::UserReportedFraud),
    ("timed out", Outcome::Timeout, Reason::PushTimeout),
    (
        "not registered",
        Outcome::Failure,
        Reason::DeviceNotRegistered,
    ),
    ("not enrolled", Outcome::Failure, Reason::FactorNotEnrolled),
    ("not allowed", Outcome::Failure, Reason::MethodMismatch),
    ("unavailable", Outcome::Failure, Reason::ProviderError),
    (
        "authenticator error",
        Outcome::Failure,
        Reason::AuthenticatorError,
    ),
    (
        "wrong email or password",
        Outcome::Failure,
        Reason::InvalidCredentials,
    ),
    (
        "wrong password",
        Outcome::Failure,
        Reason::InvalidCredentials,
    ),
    ("user does not exist", Outcome::Failure, Reason::UnknownUser),
    // A user an administrator blocked (`blocked: true`, how Auth0 offboards): the sign-in of a
    // disabled account, not a lockout. Before "blocked", which is brute-force protection's
    // "Your account has been blocked after multiple consecutive login attempts".
    ("user is blocked", Outcome::Failure, Reason::AccountDisabled),
    ("blocked", Outcome::Success, Reason::LockedOut),
    ("expired", Outcome::Failure, Reason::PasswordExpired),
    ("risk", Outcome::Blocked, Reason::RiskBlocked),
    ("denied", Outcome::Blocked, Reason::PolicyDenied),
    ("disabled", Outcome::Failure, Reason::AccountDisabled),
];

/// The description written for a reason carried by a generic failure code.
fn phrase_of(r: Reason) -> &'static str {
    match r {
        Reason::UserReportedFraud => "User reported the push notification as fraud",
        Reason::PushTimeout => "Push notification timed out",
        Reason::DeviceNotRegistered => "Guardian device not registered",
        Reason::FactorNotEnrolled => "User is not enrolled in MFA",
        Reason::MethodMismatch => "Authentication method not allowed",
        Reason::ProviderError => "MFA provider unavailable",
        Reason::AuthenticatorError => "WebAuthn authenticator error",
        Reason::InvalidCredentials => "Wrong email or password.",
        Reason::UnknownUser => "User does not exist",
        Reason::LockedOut => "Account blocked after too many failed attempts",
        Reason::PasswordExpired => "Password expired",
        Reason::RiskBlocked => "Access denied: high risk sign-in",
        Reason::PolicyDenied => "Access denied by Action",
        Reason::AccountDisabled => "User is disabled",
        Reason::InvalidOtp => "Invalid OTP code",
        _ => "",
    }
}

/// `details.authenticator`: Auth0's MFA authenticator names.
const AUTHENTICATORS: &[(&str, Factor)] = &[
    ("push-notification", Factor::Push),
    ("otp", Factor::Totp),
    ("sms", Factor::Sms),
    ("voice", Factor::Voice),
    ("email", Factor::Email),
    ("webauthn-roaming", Factor::Webauthn),
    ("webauthn-platform", Factor::Biometric),
    ("recovery-code", Factor::HardwareToken),
    ("password", Factor::Password),
];

impl Normalizer for Auth0 {
    fn name(&self) -> &'static str {
        "auth0"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let outer: Wire = common::parse(text)?;
        let outer_id = outer.log_id.clone();
        let w = match outer.data {
            Some(d) => *d,
            None => outer,
        };
        let event_id = common::required(
            "log_id",
            w.log_id
                .as_ref()
                .or(outer_id.as_ref())
                .or(w.legacy_id.as_ref()),
        )?;
        let time = common::rfc3339("date", common::required("date", w.date.as_ref())?)?;
        let kind = common::required("type", w.kind.as_ref())?;
        let description = w.description.as_deref().unwrap_or("");
        let (mut activity, type_factor, mut outcome, mut reason) = TYPES
            .iter()
            .find(|(c, ..)| *c == kind)
            .map(|(_, a, f, o, r)| (*a, *f, *o, *r))
            .unwrap_or_else(|| unknown_type(kind));
        if REFINED.contains(&kind)
            && let Some((_, o, r)) = PHRASES.iter().find(|(p, ..)| contains_ci(description, p))
        {
            outcome = *o;
            reason = *r;
            match r {
                Reason::LockedOut => activity = Activity::AccountLock,
                Reason::PolicyDenied | Reason::RiskBlocked => activity = Activity::PolicyEvaluation,
                _ => {}
            }
        }
        let details = w.details.as_ref();
        let factor = details
            .and_then(|d| d.authenticator.as_deref())
            .and_then(|a| AUTHENTICATORS.iter().find(|(n, _)| *n == a))
            .map(|(_, f)| *f)
            .unwrap_or(
                if activity == Activity::AccountLock || activity == Activity::PolicyEvaluation {
                    Factor::None
                } else {
                    type_factor
                },
            );
        let name = t(w.user_name.as_ref());
        // An explicit level (authwatch's own encoding) wins over Adaptive MFA's confidence.
        let risk = match details.and_then(|d| d.risk.as_deref()) {
            Some(level) => level.parse().unwrap_or_default(),
            None => details
                .and_then(|d| d.risk_assessment.as_ref())
                .and_then(|r| r.confidence.as_deref())
                .map_or(RiskLevel::None, confidence_risk),
        };
        let ev = AuthEvent {
            time,
            provider: Text::new("auth0"),
            tenant: t(w.tenant_name.as_ref()),
            event_id: Text::new(event_id),
            provider_event_type: Text::new(kind),
            user: User {
                id: t(w.user_id.as_ref()),
                domain: domain_of(&name),
                name,
            },
            activity,
            factor,
            outcome,
            reason,
            reason_raw: if reason == Reason::None {
                Text::default()
            } else if description.is_empty() {
                Text::new(kind)
            } else {
                Text::new(description)
            },
            src: Src {
                ip: common::ip("ip", w.ip.as_ref())?,
                ..Src::default()
            },
            device: Device {
                user_agent: t(w.user_agent.as_ref()),
                ..Device::default()
            },
            session_id: t(w.session_id.as_ref()),
            app: t(w.client_name.as_ref()),
            provider_risk: risk,
            ..AuthEvent::default()
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// A log type authwatch does not know (Auth0 adds them often): Auth0 names successes `s…` and
/// failures `f…` (`sertft`, `fertft`, `scoa`, `fcoa`, …), so the first letter gives the outcome.
/// Other types (`cls` code sent, `w` warning, `du` user deleted, …) are no attempt at all: a
/// neutral outcome (challenge, which no success- or failure-counting rule reads), never a
/// failure that would feed the password-attack rules.
fn unknown_type(kind: &str) -> (Activity, Factor, Outcome, Reason) {
    match kind.as_bytes().first() {
        Some(b's') => (
            Activity::Other,
            Factor::None,
            Outcome::Success,
            Reason::None,
        ),
        Some(b'f') => (
            Activity::Other,
            Factor::None,
            Outcome::Failure,
            Reason::Other,
        ),
        _ => (
            Activity::Other,
            Factor::None,
            Outcome::Challenge,
            Reason::None,
        ),
    }
}

/// Writes `event` in the log-stream form.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let date = common::rfc3339_ms(ev.time)?;
    let exact = TYPES.iter().find(|(_, a, f, o, r)| {
        *a == ev.activity
            && *o == ev.outcome
            && *r == ev.reason
            && (*f == ev.factor || *f == Factor::None)
    });
    let (kind, description) = match exact {
        Some((c, ..)) => (*c, ""),
        None => {
            let kind = match ev.activity {
                Activity::MfaVerify | Activity::MfaChallenge => {
                    if ev.outcome == Outcome::Success {
                        "gd_auth_succeed"
                    } else {
                        "gd_auth_failed"
                    }
                }
                _ => "f",
            };
            (kind, phrase_of(ev.reason))
        }
    };
    let type_factor = TYPES
        .iter()
        .find(|(c, ..)| *c == kind)
        .map(|(_, _, f, ..)| *f)
        .unwrap_or(Factor::None);
    let mut details = serde_json::Map::new();
    if ev.factor != type_factor {
        let name = AUTHENTICATORS
            .iter()
            .find(|(_, f)| *f == ev.factor)
            .map(|(n, _)| *n)
            .unwrap_or("none");
        details.insert("authenticator".into(), json!(name));
    }
    if ev.provider_risk != authwatch_event::RiskLevel::None {
        details.insert("risk".into(), json!(ev.provider_risk.as_str()));
    }
    let log_id = ev.event_id.as_str();
    let v = json!({
        "log_id": log_id,
        "data": {
            "date": date,
            "type": kind,
            "description": description,
            "connection": "Username-Password-Authentication",
            "client_id": "aw0client",
            "client_name": or_null(&ev.app),
            "ip": ip_or_null(ev.src.ip),
            "user_agent": or_null(&ev.device.user_agent),
            "details": details,
            "hostname": "login.example.auth0.com",
            "user_id": or_null(&ev.user.id),
            "user_name": ev.user.name.as_str(),
            "strategy": "auth0",
            "strategy_type": "database",
            "session_id": or_null(&ev.session_id),
            "tenant_name": or_null(&ev.tenant),
            "log_id": log_id,
        }
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(line: &str) -> String {
        let e = Auth0
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap();
        format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
    }

    #[test]
    fn cross_origin_logins_are_logons() {
        let failed = r#"{"log_id":"a-fcoa","data":{"date":"2026-01-05T00:00:01.000Z","type":"fcoa","description":"Wrong email or password.","connection":"Username-Password-Authentication","client_name":"SPA","ip":"198.51.100.7","user_name":"ken@example.jp","user_id":"","log_id":"a-fcoa"}}"#;
        assert_eq!(
            summary(failed),
            "logon/password/failure/invalid_credentials"
        );
        let unknown = r#"{"log_id":"a-fcoa2","data":{"date":"2026-01-05T00:00:01.000Z","type":"fcoa","description":"User does not exist.","ip":"198.51.100.7","user_name":"nobody@example.jp","log_id":"a-fcoa2"}}"#;
        assert_eq!(summary(unknown), "logon/password/failure/unknown_user");
        let ok = r#"{"log_id":"a-scoa","data":{"date":"2026-01-05T00:00:02.000Z","type":"scoa","description":"","client_name":"SPA","ip":"203.0.113.5","user_name":"ken@example.jp","user_id":"auth0|1","log_id":"a-scoa"}}"#;
        assert_eq!(summary(ok), "logon/password/success/none");
    }

    /// A log-stream record of `type` with `description`, as Auth0 writes it.
    fn line(kind: &str, description: &str) -> String {
        format!(
            r#"{{"log_id":"a-{kind}","data":{{"date":"2026-01-05T00:00:01.000Z","type":"{kind}","description":"{description}","connection":"Username-Password-Authentication","client_id":"c1","client_name":"Portal","ip":"198.51.100.7","user_agent":"Chrome 131.0.0 / Windows 10.0.0","details":{{}},"hostname":"example.jp.auth0.com","user_id":"auth0|1","user_name":"ken@example.jp","strategy":"auth0","strategy_type":"database","log_id":"a-{kind}"}}}}"#
        )
    }

    #[test]
    fn blocks_are_no_lockouts_and_deletions_no_disables() {
        // An administrator blocked the user: every attempt is a disabled account's.
        assert_eq!(
            summary(&line("f", "user is blocked")),
            "logon/password/failure/account_disabled"
        );
        // Brute-force protection's block of the account is still a lockout.
        assert_eq!(
            summary(&line(
                "f",
                "Your account has been blocked after multiple consecutive login attempts."
            )),
            "account_lock/none/success/locked_out"
        );
        // One address blocked from one account: that address's logins are refused.
        assert_eq!(
            summary(&line("limit_wc", "")),
            "logon/none/blocked/rate_limited"
        );
        assert_eq!(summary(&line("sdu", "")), "other/none/success/none");
        // Too many logins of one user from one address: that address is throttled for them.
        assert_eq!(
            summary(&line("limit_sul", "")),
            "logon/none/blocked/rate_limited"
        );
        assert_eq!(
            summary(&line("gd_send_voice_failure", "")),
            "mfa_challenge/voice/failure/provider_error"
        );
        assert_eq!(
            summary(&line("gd_recovery_failed", "")),
            "mfa_verify/hardware_token/failure/invalid_otp"
        );
    }

    /// Adaptive MFA's `riskAssessment` (as Auth0 documents it in its log events): a low
    /// confidence is a high risk. It was not read: every Auth0 login had no risk level.
    #[test]
    fn adaptive_mfa_confidence_is_the_risk_level() {
        let risk = |confidence: &str| {
            let line = format!(
                r#"{{"log_id":"a-s","data":{{"date":"2026-01-05T00:00:01.000Z","type":"s","description":"Successful login","connection":"Username-Password-Authentication","client_name":"Portal","ip":"198.51.100.7","details":{{"riskAssessment":{{"confidence":"{confidence}","version":"1","assessments":{{"UntrustedIP":{{"confidence":"high","code":"not_found_on_deny_list"}},"NewDevice":{{"confidence":"low","code":"no_match","details":{{"device":"unknown","useragent":"unknown"}}}},"ImpossibleTravel":{{"confidence":"low","code":"impossible_travel_from_last_login"}}}}}}}},"user_id":"auth0|1","user_name":"ken@example.jp","log_id":"a-s"}}}}"#
            );
            Auth0
                .normalize(line.as_bytes(), 0, &Limits::default())
                .unwrap()
                .provider_risk
        };
        assert_eq!(risk("low"), RiskLevel::High);
        assert_eq!(risk("medium"), RiskLevel::Medium);
        assert_eq!(risk("high"), RiskLevel::Low);
        assert_eq!(risk("neutral"), RiskLevel::None);
        // No assessment at all (Adaptive MFA off): no level, as before.
        let plain = Auth0
            .normalize(line("s", "").as_bytes(), 0, &Limits::default())
            .unwrap();
        assert_eq!(plain.provider_risk, RiskLevel::None);
    }

    #[test]
    fn connector_and_native_social_logins_are_logons() {
        assert_eq!(
            summary(&line("fc", "Wrong email or password.")),
            "logon/password/failure/invalid_credentials"
        );
        assert_eq!(summary(&line("fc", "")), "logon/password/failure/other");
        assert_eq!(summary(&line("sens", "")), "logon/none/success/none");
        assert_eq!(summary(&line("fens", "")), "logon/none/failure/other");
        assert_eq!(
            summary(&line("gd_recovery_succeed", "")),
            "mfa_verify/hardware_token/success/none"
        );
        assert_eq!(
            summary(&line("gd_recovery_rate_limit_exceed", "")),
            "mfa_verify/hardware_token/failure/rate_limited"
        );
    }

    #[test]
    fn unknown_types_take_their_outcome_from_the_prefix() {
        let s = r#"{"log_id":"a-seacft","data":{"date":"2026-01-05T00:00:03.000Z","type":"seacft","description":"Authorization Code for Access Token","client_name":"SPA","ip":"203.0.113.5","user_name":"ken@example.jp","user_id":"auth0|1","log_id":"a-seacft"}}"#;
        assert_eq!(summary(s), "other/none/success/none");
        let f = r#"{"log_id":"a-feacft","data":{"date":"2026-01-05T00:00:03.000Z","type":"feacft","description":"Invalid authorization code","ip":"203.0.113.5","user_name":"ken@example.jp","log_id":"a-feacft"}}"#;
        assert_eq!(summary(f), "other/none/failure/other");
        let neutral = r#"{"log_id":"a-cls","data":{"date":"2026-01-05T00:00:04.000Z","type":"cls","description":"","ip":"203.0.113.5","user_name":"ken@example.jp","log_id":"a-cls"}}"#;
        assert_eq!(summary(neutral), "other/none/challenge/none");
    }
}
