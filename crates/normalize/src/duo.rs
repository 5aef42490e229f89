//! Duo Admin API v2 authentication logs (`/admin/v2/logs/authentication` items).

use crate::common::{self, EncodeError, Str, domain_of, or_null, t};
use crate::{Limits, Normalizer, RejectKind, Rejection};
use authwatch_event::{Activity, AuthEvent, Device, Factor, Outcome, Reason, Src, Text, User};
use serde::Deserialize;
use serde_json::json;

/// The Duo authentication log normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Duo;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    txid: Option<Str<'a>>,
    timestamp: Option<i64>,
    #[serde(borrow)]
    isotimestamp: Option<Str<'a>>,
    #[serde(borrow)]
    user: Option<WireUser<'a>>,
    #[serde(borrow)]
    factor: Option<Str<'a>>,
    #[serde(borrow)]
    result: Option<Str<'a>>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
    #[serde(borrow)]
    event_type: Option<Str<'a>>,
    #[serde(borrow)]
    access_device: Option<AccessDevice<'a>>,
    #[serde(borrow)]
    auth_device: Option<AuthDevice<'a>>,
    #[serde(borrow)]
    application: Option<Application<'a>>,
    // Not in Duo's schema: Duo logs are per account, so shippers add the account name.
    #[serde(borrow)]
    tenant: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct WireUser<'a> {
    #[serde(borrow)]
    key: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct AccessDevice<'a> {
    #[serde(borrow)]
    ip: Option<Str<'a>>,
    #[serde(borrow)]
    browser: Option<Str<'a>>,
    #[serde(borrow)]
    os: Option<Str<'a>>,
    #[serde(borrow)]
    epkey: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct AuthDevice<'a> {
    #[serde(borrow)]
    key: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Application<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

/// `factor` values.
pub(crate) const FACTORS: &[(&str, Factor)] = &[
    ("duo_push", Factor::Push),
    ("verified_duo_push", Factor::Push),
    ("phone_call", Factor::Voice),
    ("sms_passcode", Factor::Sms),
    ("sms_refresh", Factor::Sms),
    ("duo_mobile_passcode", Factor::Totp),
    // Duo Mobile's passcodes by algorithm: both are codes from the app, a software OTP.
    ("duo_mobile_passcode_totp", Factor::Totp),
    ("duo_mobile_passcode_hotp", Factor::Totp),
    ("passcode", Factor::Totp),
    ("hardware_token", Factor::HardwareToken),
    ("yubikey_code", Factor::HardwareToken),
    ("yubikey_passcode", Factor::HardwareToken),
    ("digipass_go_7_token", Factor::HardwareToken),
    // A one-time code an admin issued: an MFA answer like other providers' backup codes
    // (Google `backup_code`, Auth0 `recovery-code`), not a sign-in without MFA.
    ("bypass_code", Factor::HardwareToken),
    ("webauthn_security_key", Factor::Webauthn),
    ("u2f_token", Factor::Webauthn),
    ("webauthn_credential", Factor::Biometric),
    ("email_passcode", Factor::Email),
    ("password", Factor::Password),
    ("remembered_device", Factor::None),
    ("trusted_network", Factor::None),
    ("not_available", Factor::None),
];

/// `reason` values: the reason, and whether Duo writes it for a denial the user made.
pub(crate) const REASONS: &[(&str, Reason)] = &[
    ("user_approved", Reason::None),
    ("valid_passcode", Reason::None),
    ("allowed_by_policy", Reason::None),
    ("remembered_device", Reason::None),
    ("trusted_network", Reason::None),
    ("bypass_user", Reason::None),
    ("allow_unenrolled_user", Reason::None),
    ("trusted_location", Reason::None),
    ("allow_unenrolled_user_on_trusted_network", Reason::None),
    ("user_mistake", Reason::PushDenied),
    ("user_cancelled", Reason::PushDenied),
    ("user_marked_fraud", Reason::UserReportedFraud),
    ("no_response", Reason::PushTimeout),
    ("call_timed_out", Reason::PushTimeout),
    // The call was answered, but no key pressed: as unanswered as a call that timed out.
    ("no_keys_pressed", Reason::PushTimeout),
    ("invalid_passcode", Reason::InvalidOtp),
    ("deny_unenrolled_user", Reason::FactorNotEnrolled),
    (
        "no_activated_duo_mobile_account",
        Reason::DeviceNotRegistered,
    ),
    ("invalid_device", Reason::DeviceNotRegistered),
    ("factor_restricted", Reason::MethodMismatch),
    ("denied_by_policy", Reason::PolicyDenied),
    ("location_restricted", Reason::PolicyDenied),
    ("platform_restricted", Reason::PolicyDenied),
    ("version_restricted", Reason::PolicyDenied),
    ("software_restricted", Reason::PolicyDenied),
    ("user_not_in_permitted_group", Reason::PolicyDenied),
    // Device health and Trusted Endpoints policies: the device was refused, not the user's
    // answer.
    ("rooted_device", Reason::PolicyDenied),
    ("no_screen_lock", Reason::PolicyDenied),
    ("touch_id_disabled", Reason::PolicyDenied),
    ("no_disk_encryption", Reason::PolicyDenied),
    ("out_of_date", Reason::PolicyDenied),
    ("endpoint_is_not_trusted", Reason::PolicyDenied),
    ("endpoint_is_not_in_management_system", Reason::PolicyDenied),
    ("endpoint_failed_google_verification", Reason::PolicyDenied),
    (
        "could_not_determine_if_endpoint_was_trusted",
        Reason::PolicyDenied,
    ),
    ("no_duo_certificate_present", Reason::PolicyDenied),
    ("user_provided_invalid_certificate", Reason::PolicyDenied),
    (
        "invalid_management_certificate_collection_state",
        Reason::PolicyDenied,
    ),
    ("anonymous_ip", Reason::RiskBlocked),
    ("anomalous_push", Reason::RiskBlocked),
    ("locked_out", Reason::LockedOut),
    ("user_disabled", Reason::AccountDisabled),
    ("frequent_attempts", Reason::RateLimited),
    ("error", Reason::ProviderError),
    // authwatch extensions: Duo does not do primary authentication in these logs.
    ("invalid_password", Reason::InvalidCredentials),
    ("unknown_user", Reason::UnknownUser),
    ("authenticator_error", Reason::AuthenticatorError),
    ("mfa_required", Reason::MfaRequired),
    ("password_expired", Reason::PasswordExpired),
];

/// `event_type` values; those past `enrollment` are authwatch extensions for account changes
/// Duo's authentication log does not carry.
const EVENT_TYPES: &[(&str, Activity)] = &[
    ("enrollment", Activity::MfaEnroll),
    ("logoff", Activity::Logoff),
    ("account_unlock", Activity::AccountUnlock),
    ("password_reset", Activity::PasswordReset),
    ("mfa_reset", Activity::MfaReset),
    ("account_disable", Activity::AccountDisable),
    ("other", Activity::Other),
];

impl Normalizer for Duo {
    fn name(&self) -> &'static str {
        "duo"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let w: Wire = common::parse(text)?;
        let event_id = common::required("txid", w.txid.as_ref())?;
        let time = match (&w.isotimestamp, w.timestamp) {
            (Some(iso), _) if !iso.is_empty() => common::rfc3339("isotimestamp", iso)?,
            (_, Some(secs)) => secs.checked_mul(1000).ok_or_else(|| {
                Rejection::new(
                    RejectKind::ImpossibleTimestamp,
                    format!("timestamp {secs} s is out of range"),
                )
            })?,
            _ => return Err(common::missing("isotimestamp")),
        };
        let factor_raw = w.factor.as_deref().unwrap_or("");
        let factor = FACTORS
            .iter()
            .find(|(c, _)| *c == factor_raw)
            .map(|(_, f)| *f)
            .unwrap_or(Factor::None);
        let result = w.result.as_deref().unwrap_or("");
        let reason_raw = w.reason.as_deref().unwrap_or("");
        let mut reason = REASONS
            .iter()
            .find(|(c, _)| *c == reason_raw)
            .map(|(_, r)| *r)
            .unwrap_or(if reason_raw.is_empty() {
                Reason::None
            } else {
                Reason::Other
            });
        let event_type = w.event_type.as_deref().unwrap_or("authentication");
        let base = EVENT_TYPES
            .iter()
            .find(|(c, _)| *c == event_type)
            .map(|(_, a)| *a);
        let (activity, outcome) = match result {
            "success" => {
                // Duo says why it let the user in (`trusted_location`, and whatever it adds
                // next): never a failure's reason.
                reason = Reason::None;
                (
                    // No factor (a remembered device, a trusted network) is a sign-in without MFA.
                    base.unwrap_or(if matches!(factor, Factor::Password | Factor::None) {
                        Activity::Logon
                    } else {
                        Activity::MfaVerify
                    }),
                    Outcome::Success,
                )
            }
            // authwatch extension: Duo logs only the answer, never the push sent.
            "challenge" => (base.unwrap_or(Activity::MfaChallenge), Outcome::Challenge),
            "fraud" => {
                reason = Reason::UserReportedFraud;
                (base.unwrap_or(Activity::MfaVerify), Outcome::Denied)
            }
            _ => classify_failure(base, factor, reason),
        };
        let dev = w.access_device.as_ref();
        let name = t(w.user.as_ref().and_then(|u| u.name.as_ref()));
        let ev = AuthEvent {
            time,
            provider: Text::new("duo"),
            tenant: t(w.tenant.as_ref()),
            event_id: Text::new(event_id),
            provider_event_type: Text::new(event_type),
            user: User {
                id: t(w.user.as_ref().and_then(|u| u.key.as_ref())),
                domain: domain_of(&name),
                name,
            },
            activity,
            factor,
            outcome,
            reason,
            reason_raw: Text::new(reason_raw),
            src: Src {
                ip: common::ip("access_device.ip", dev.and_then(|d| d.ip.as_ref()))?,
                ..Src::default()
            },
            device: Device {
                os: t(dev.and_then(|d| d.os.as_ref())),
                browser: t(dev.and_then(|d| d.browser.as_ref())),
                id: t(w.auth_device.as_ref().and_then(|d| d.key.as_ref())),
                ..Device::default()
            },
            session_id: t(dev.and_then(|d| d.epkey.as_ref())),
            app: t(w.application.as_ref().and_then(|a| a.name.as_ref())),
            ..AuthEvent::default()
        };
        common::finish(ev, ingest_time, limits)
    }
}

/// A denied or failed authentication: which activity and outcome its reason stands for.
fn classify_failure(base: Option<Activity>, factor: Factor, reason: Reason) -> (Activity, Outcome) {
    // Every Duo entry is the second-factor step, unless its factor is a password.
    let step = base.unwrap_or(if factor == Factor::Password {
        Activity::Logon
    } else {
        Activity::MfaVerify
    });
    match reason {
        Reason::PushDenied | Reason::UserReportedFraud => (step, Outcome::Denied),
        Reason::PushTimeout => (step, Outcome::Timeout),
        Reason::PolicyDenied | Reason::RiskBlocked => {
            (base.unwrap_or(Activity::PolicyEvaluation), Outcome::Blocked)
        }
        // A denial because the account is locked is how Duo reports the lockout.
        Reason::LockedOut => (base.unwrap_or(Activity::AccountLock), Outcome::Success),
        _ => (step, Outcome::Failure),
    }
}

/// Writes `event` as a Duo v2 authentication log item.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use Activity as A;
    let iso = common::rfc3339_ms(ev.time)?;
    // Duo writes microseconds and an explicit offset: `2026-01-05T09:00:00.123000+00:00`.
    let isotimestamp = format!("{}000+00:00", iso.trim_end_matches('Z'));
    let event_type = match ev.activity {
        A::Logon | A::MfaChallenge | A::MfaVerify | A::AccountLock | A::PolicyEvaluation => {
            "authentication"
        }
        a => EVENT_TYPES
            .iter()
            .find(|(_, x)| *x == a)
            .map(|(c, _)| *c)
            .unwrap_or("other"),
    };
    let result = match ev.outcome {
        Outcome::Success if ev.activity == A::AccountLock => "denied",
        Outcome::Success => "success",
        Outcome::Challenge => "challenge",
        Outcome::Denied if ev.reason == Reason::UserReportedFraud => "fraud",
        Outcome::Denied | Outcome::Blocked | Outcome::Timeout => "denied",
        Outcome::Failure => "failure",
    };
    let reason = match (ev.outcome, ev.reason) {
        (Outcome::Success, Reason::None) if ev.factor == Factor::Password => "valid_passcode",
        (Outcome::Success, Reason::None) if ev.factor == Factor::None => "remembered_device",
        (Outcome::Success, Reason::None) => "user_approved",
        (_, Reason::None) => "",
        (_, Reason::PushDenied) => "user_mistake",
        (_, Reason::Other) => ev.reason_raw.as_str(),
        (_, r) => REASONS
            .iter()
            .find(|(_, x)| *x == r)
            .map(|(c, _)| *c)
            .unwrap_or(""),
    };
    let factor = match ev.factor {
        Factor::None if ev.activity == A::Logon && ev.outcome == Outcome::Success => {
            "remembered_device"
        }
        Factor::None => "not_available",
        f => FACTORS
            .iter()
            .find(|(_, x)| *x == f)
            .map(|(c, _)| *c)
            .unwrap_or("not_available"),
    };
    let v = json!({
        "txid": ev.event_id.as_str(),
        "timestamp": ev.time.div_euclid(1000),
        "isotimestamp": isotimestamp,
        "event_type": event_type,
        "result": result,
        "reason": or_null(reason),
        "factor": factor,
        "user": {"key": or_null(&ev.user.id), "name": ev.user.name.as_str(), "groups": []},
        "access_device": {
            "ip": common::ip_or_null(ev.src.ip),
            "browser": or_null(&ev.device.browser),
            "os": or_null(&ev.device.os),
            "epkey": or_null(&ev.session_id),
            "location": {"city": null, "country": null, "state": null},
        },
        "auth_device": {"key": or_null(&ev.device.id), "name": null, "ip": null},
        "application": {"key": "DIAPP", "name": or_null(&ev.app)},
        "trusted_endpoint_status": "unknown",
        "tenant": or_null(&ev.tenant),
    });
    common::write_json(out, &v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(line: &str) -> String {
        let e = Duo
            .normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap();
        format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
    }

    #[test]
    fn duo_mobile_passcodes_and_bypass_codes_are_one_time_codes() {
        let totp = r#"{"txid":"d1","timestamp":1767571200,"isotimestamp":"2026-01-05T00:00:00.123456+00:00","user":{"name":"ken"},"factor":"duo_mobile_passcode_totp","result":"denied","reason":"invalid_passcode","access_device":{"ip":"198.51.100.7"}}"#;
        assert_eq!(summary(totp), "mfa_verify/totp/failure/invalid_otp");
        let hotp = r#"{"txid":"d1h","timestamp":1767571200,"user":{"name":"ken"},"factor":"duo_mobile_passcode_hotp","result":"success","reason":"valid_passcode"}"#;
        assert_eq!(summary(hotp), "mfa_verify/totp/success/none");
        let bypass = r#"{"txid":"d2","timestamp":1767571200,"isotimestamp":"2026-01-05T00:00:00+00:00","user":{"name":"ken"},"factor":"bypass_code","result":"success","reason":"valid_passcode","access_device":{"ip":"198.51.100.7"}}"#;
        assert_eq!(summary(bypass), "mfa_verify/hardware_token/success/none");
    }

    /// A v2 authentication log item as Duo writes it.
    fn item(factor: &str, result: &str, reason: &str) -> String {
        format!(
            r#"{{"access_device":{{"browser":"Chrome","browser_version":"131.0","epkey":null,"hostname":null,"ip":"198.51.100.7","location":{{"city":"Tokyo","country":"Japan","state":"Tokyo"}},"os":"Windows","os_version":"11"}},"alias":"unknown","application":{{"key":"DIAPP","name":"VPN"}},"auth_device":{{"ip":null,"location":{{"city":null,"country":null,"state":null}},"name":"iPhone"}},"email":null,"event_type":"authentication","factor":"{factor}","isotimestamp":"2026-01-05T00:00:00.123456+00:00","ood_software":null,"reason":"{reason}","result":"{result}","timestamp":1767571200,"trusted_endpoint_status":"not trusted","txid":"d-{reason}","user":{{"groups":[],"key":"DU1","name":"ken@example.jp"}}}}"#
        )
    }

    #[test]
    fn every_reason_duo_gives_is_read() {
        // Why Duo let the user in is no failure.
        assert_eq!(
            summary(&item("duo_push", "success", "trusted_location")),
            "mfa_verify/push/success/none"
        );
        assert_eq!(
            summary(&item(
                "not_available",
                "success",
                "allow_unenrolled_user_on_trusted_network"
            )),
            "logon/none/success/none"
        );
        // A call answered but never confirmed.
        assert_eq!(
            summary(&item("phone_call", "denied", "no_keys_pressed")),
            "mfa_verify/voice/timeout/push_timeout"
        );
        // Device health and Trusted Endpoints refusals are the policy's.
        for reason in [
            "endpoint_is_not_trusted",
            "rooted_device",
            "no_disk_encryption",
            "out_of_date",
        ] {
            assert_eq!(
                summary(&item("duo_push", "denied", reason)),
                "policy_evaluation/push/blocked/policy_denied",
                "{reason}"
            );
        }
    }
}
