//! Okta System Log: the `/api/v1/logs` objects and the Log Streaming (EventBridge) envelope
//! `{"source": "aws.partner/okta.com/<org>/…", "detail": {…event…}}`.

use crate::common::{
    self, EncodeError, Str, contains_ci, domain_of, ip_or_null, or_null, required, t,
};
use crate::{Limits, Normalizer, Rejection};
use authwatch_event::{
    Activity, AuthEvent, Device, DeviceType, Factor, Outcome, Reason, RiskLevel, Src, Text, User,
};
use serde::Deserialize;
use serde_json::json;

/// The Okta System Log normalizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Okta;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    uuid: Option<Str<'a>>,
    #[serde(borrow)]
    published: Option<Str<'a>>,
    #[serde(borrow, rename = "eventType")]
    event_type: Option<Str<'a>>,
    #[serde(borrow)]
    actor: Option<Actor<'a>>,
    #[serde(borrow)]
    client: Option<Client<'a>>,
    #[serde(borrow)]
    device: Option<WireDevice<'a>>,
    #[serde(borrow)]
    outcome: Option<WireOutcome<'a>>,
    #[serde(borrow, rename = "authenticationContext")]
    authentication_context: Option<AuthContext<'a>>,
    #[serde(borrow, rename = "debugContext")]
    debug_context: Option<DebugContext<'a>>,
    #[serde(borrow)]
    target: Option<Vec<Target<'a>>>,
    // EventBridge envelope.
    #[serde(borrow)]
    source: Option<Str<'a>>,
    #[serde(borrow)]
    detail: Option<Box<Wire<'a>>>,
}

#[derive(Deserialize)]
struct Actor<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow, rename = "alternateId")]
    alternate_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Client<'a> {
    #[serde(borrow, rename = "ipAddress")]
    ip_address: Option<Str<'a>>,
    #[serde(borrow, rename = "userAgent")]
    user_agent: Option<UserAgent<'a>>,
    #[serde(borrow)]
    device: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct UserAgent<'a> {
    #[serde(borrow, rename = "rawUserAgent")]
    raw: Option<Str<'a>>,
    #[serde(borrow)]
    os: Option<Str<'a>>,
    #[serde(borrow)]
    browser: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct WireDevice<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct WireOutcome<'a> {
    #[serde(borrow)]
    result: Option<Str<'a>>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct AuthContext<'a> {
    #[serde(borrow, rename = "externalSessionId")]
    external_session_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct DebugContext<'a> {
    #[serde(borrow, rename = "debugData")]
    debug_data: Option<DebugData<'a>>,
}

#[derive(Deserialize)]
struct DebugData<'a> {
    #[serde(borrow)]
    factor: Option<Str<'a>>,
    #[serde(borrow)]
    risk: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Target<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, rename = "alternateId")]
    alternate_id: Option<Str<'a>>,
    #[serde(borrow, rename = "displayName")]
    display_name: Option<Str<'a>>,
}

impl Normalizer for Okta {
    fn name(&self) -> &'static str {
        "okta"
    }

    fn normalize(
        &self,
        line: &[u8],
        ingest_time: i64,
        limits: &Limits,
    ) -> Result<AuthEvent, Rejection> {
        let text = common::text(line)?;
        let wire: Wire = common::parse(text)?;
        let tenant = tenant_of(wire.source.as_deref());
        // Borrowed, not moved: the wire struct is large and copying it shows in profiles.
        let ev = to_event(wire.detail.as_deref().unwrap_or(&wire), tenant)?;
        common::finish(ev, ingest_time, limits)
    }
}

/// The org name in an EventBridge partner source `aws.partner/okta.com/<org>/<stream>`.
fn tenant_of(source: Option<&str>) -> Text {
    source
        .and_then(|s| s.strip_prefix("aws.partner/okta.com/"))
        .and_then(|rest| rest.split('/').next())
        .map(Text::new)
        .unwrap_or_default()
}

fn to_event(w: &Wire<'_>, tenant: Text) -> Result<AuthEvent, Rejection> {
    let event_id = required("uuid", w.uuid.as_ref())?;
    let time = common::rfc3339("published", required("published", w.published.as_ref())?)?;
    let event_type = required("eventType", w.event_type.as_ref())?;
    let (result, reason_raw) = match &w.outcome {
        Some(o) => (
            o.result.as_deref().unwrap_or(""),
            o.reason.as_deref().unwrap_or(""),
        ),
        None => ("", ""),
    };
    let debug = w.debug_context.as_ref().and_then(|d| d.debug_data.as_ref());
    let named_factor = factor_of(debug.and_then(|d| d.factor.as_deref()).unwrap_or(""));
    let (activity, type_factor, forced) = classify_type(event_type, result);
    let factor = match named_factor {
        Factor::None => type_factor,
        f => f,
    };
    let reason = match reason_of(reason_raw, factor) {
        Reason::None => forced.map(|(_, r)| r).unwrap_or(Reason::None),
        r => r,
    };
    let outcome = match forced {
        Some((o, _)) => o,
        None => outcome_of(result, reason),
    };
    // Okta explains successes too ("Sign-on policy evaluation resulted in AUTHENTICATED" on an
    // ALLOW): read as words, that sentence is a policy denial. A success is no failure of any
    // kind, save the lockout it records.
    let reason = if outcome == Outcome::Success && activity != Activity::AccountLock {
        Reason::None
    } else {
        reason
    };
    // An account change is about the account changed (`target[]` of type `User`), not the
    // actor, who is often an admin: an admin suspending ken is ken's account_disable. Keycloak's
    // admin events are read the same way.
    let changed = is_account_change(activity)
        .then(|| {
            w.target
                .iter()
                .flatten()
                .find(|t| t.kind.as_deref() == Some("User"))
        })
        .flatten();
    let (name, id) = match (changed, &w.actor) {
        (Some(u), _) => (t(u.alternate_id.as_ref()), t(u.id.as_ref())),
        (None, Some(a)) => (t(a.alternate_id.as_ref()), t(a.id.as_ref())),
        (None, None) => (Text::default(), Text::default()),
    };
    let (src_ip, ua, os, browser, kind) = match &w.client {
        Some(c) => {
            let ua = c.user_agent.as_ref();
            (
                common::ip("client.ipAddress", c.ip_address.as_ref())?,
                t(ua.and_then(|u| u.raw.as_ref())),
                t(ua.and_then(|u| u.os.as_ref())),
                t(ua.and_then(|u| u.browser.as_ref())),
                device_kind(c.device.as_deref().unwrap_or("")),
            )
        }
        None => (
            None,
            Text::default(),
            Text::default(),
            Text::default(),
            DeviceType::Unknown,
        ),
    };
    let app = w
        .target
        .iter()
        .flatten()
        .find(|t| t.kind.as_deref() == Some("AppInstance"))
        .map(|t| common::t(t.display_name.as_ref()))
        .unwrap_or_default();
    Ok(AuthEvent {
        time,
        provider: Text::new("okta"),
        tenant,
        event_id: Text::new(event_id),
        provider_event_type: Text::new(event_type),
        user: User {
            domain: domain_of(&name),
            id,
            name,
        },
        activity,
        factor,
        outcome,
        reason,
        reason_raw: Text::new(reason_raw),
        src: Src {
            ip: src_ip,
            ..Src::default()
        },
        device: Device {
            user_agent: ua,
            os,
            browser,
            kind,
            id: t(w.device.as_ref().and_then(|d| d.id.as_ref())),
            fingerprint: Text::default(),
        },
        session_id: t(w
            .authentication_context
            .as_ref()
            .and_then(|a| a.external_session_id.as_ref())),
        app,
        provider_risk: risk_of(debug.and_then(|d| d.risk.as_deref()).unwrap_or("")),
        ..AuthEvent::default()
    })
}

/// The activity an `eventType` stands for (given the factor `debugData` names), the factor it
/// implies, and — for event types that are themselves the verdict (a denied push) — the outcome
/// and reason.
fn classify_type(event_type: &str, result: &str) -> (Activity, Factor, Option<(Outcome, Reason)>) {
    use Activity as A;
    match event_type {
        "user.session.start" => (A::Logon, Factor::Password, None),
        "user.authentication.sso" => (A::Logon, Factor::None, None),
        // Identity Engine logs every authenticator it checks as a factor verification, the
        // password too (`PASSWORD_AS_FACTOR`), and logs the same wrong password again as
        // `user.session.start` (same transaction, milliseconds apart): the password step stays
        // an `mfa_verify` with the password factor, so the password-attack rules (activity
        // `logon`) count each try once, and profiles hold it back like a password-only sign-in.
        "user.authentication.verify" => (A::MfaVerify, Factor::None, None),
        "user.authentication.auth_via_mfa" if result == "CHALLENGE" => {
            (A::MfaChallenge, Factor::None, None)
        }
        "user.authentication.auth_via_mfa" => (A::MfaVerify, Factor::None, None),
        "system.push.send_factor_verify_push" => (A::MfaChallenge, Factor::Push, sent(result)),
        "system.sms.send_factor_verify_message" => (A::MfaChallenge, Factor::Sms, sent(result)),
        "system.voice.send_factor_verify_call" => (A::MfaChallenge, Factor::Voice, sent(result)),
        "system.email.send_factor_verify_message" => (A::MfaChallenge, Factor::Email, sent(result)),
        // The second is logged instead when the denying Okta Verify is out of date.
        "user.mfa.okta_verify.deny_push" | "user.mfa.okta_verify.deny_push_upgrade_needed" => (
            A::MfaVerify,
            Factor::Push,
            Some((Outcome::Denied, Reason::PushDenied)),
        ),
        "user.account.report_suspicious_activity_by_enduser" => (
            A::MfaVerify,
            Factor::Push,
            Some((Outcome::Denied, Reason::UserReportedFraud)),
        ),
        "user.mfa.attempt_bypass" => (A::MfaVerify, Factor::None, None),
        "user.session.end" => (A::Logoff, Factor::None, None),
        "user.account.lock" | "user.account.lock.limit" => (A::AccountLock, Factor::None, None),
        "user.account.unlock" | "user.account.unlock_by_admin" | "user.account.unlock_token" => {
            (A::AccountUnlock, Factor::None, None)
        }
        "user.account.reset_password" | "user.account.update_password" => {
            (A::PasswordReset, Factor::None, None)
        }
        "user.mfa.factor.activate" => (A::MfaEnroll, Factor::None, None),
        "user.mfa.factor.deactivate" | "user.mfa.factor.reset_all" => {
            (A::MfaReset, Factor::None, None)
        }
        "policy.evaluate_sign_on" => (A::PolicyEvaluation, Factor::None, None),
        "user.lifecycle.suspend" | "user.lifecycle.deactivate" => {
            (A::AccountDisable, Factor::None, None)
        }
        _ => (A::Other, Factor::None, None),
    }
}

/// Activities that change an account, which may be done to it by someone else.
fn is_account_change(a: Activity) -> bool {
    matches!(
        a,
        Activity::AccountLock
            | Activity::AccountUnlock
            | Activity::PasswordReset
            | Activity::MfaEnroll
            | Activity::MfaReset
            | Activity::AccountDisable
    )
}

/// A factor message that was sent is a challenge issued, not a success of the sign-in.
fn sent(result: &str) -> Option<(Outcome, Reason)> {
    matches!(result, "SUCCESS" | "").then_some((Outcome::Challenge, Reason::None))
}

/// `debugContext.debugData.factor` (e.g. `OKTA_VERIFY_PUSH`, `PASSWORD_AS_FACTOR`).
fn factor_of(raw: &str) -> Factor {
    if raw.is_empty() {
        return Factor::None;
    }
    // Order matters: `OKTA_VERIFY_PUSH` also names Okta Verify, whose TOTP is a different factor.
    const KEYS: &[(&str, Factor)] = &[
        ("PUSH", Factor::Push),
        ("SIGNED_NONCE", Factor::Biometric),
        ("WEBAUTHN", Factor::Webauthn),
        ("FIDO", Factor::Webauthn),
        ("U2F", Factor::Webauthn),
        ("YUBIKEY", Factor::HardwareToken),
        ("HOTP", Factor::HardwareToken),
        ("RSA", Factor::HardwareToken),
        ("SMS", Factor::Sms),
        ("CALL", Factor::Voice),
        ("VOICE", Factor::Voice),
        ("EMAIL", Factor::Email),
        ("PASSWORD", Factor::Password),
        ("OTP", Factor::Totp),
        ("SOFT_TOKEN", Factor::Totp),
    ];
    KEYS.iter()
        .find(|(k, _)| contains_ci(raw, k))
        .map(|(_, f)| *f)
        .unwrap_or(Factor::None)
}

fn factor_code(f: Factor) -> &'static str {
    match f {
        Factor::None => "",
        Factor::Password => "PASSWORD_AS_FACTOR",
        Factor::Push => "OKTA_VERIFY_PUSH",
        Factor::Totp => "OKTA_VERIFY_TOTP",
        Factor::Sms => "SMS_FACTOR",
        Factor::Voice => "CALL_FACTOR",
        Factor::Email => "EMAIL_FACTOR",
        Factor::Webauthn => "FIDO_WEBAUTHN",
        Factor::HardwareToken => "YUBIKEY_TOKEN",
        Factor::Biometric => "SIGNED_NONCE",
    }
}

/// `outcome.reason` codes and the messages Okta writes for them.
const REASONS: &[(&str, Reason)] = &[
    ("INVALID_CREDENTIALS", Reason::InvalidCredentials),
    ("UNKNOWN_USER", Reason::UnknownUser),
    ("WEBAUTHN_AUTHENTICATOR_ERROR", Reason::AuthenticatorError),
    ("USER_REJECTED_PUSH", Reason::PushDenied),
    ("PUSH_TIMEOUT", Reason::PushTimeout),
    (
        "USER_REPORTED_SUSPICIOUS_ACTIVITY",
        Reason::UserReportedFraud,
    ),
    ("DEVICE_NOT_REGISTERED", Reason::DeviceNotRegistered),
    ("PUSH_PROVIDER_UNAVAILABLE", Reason::ProviderError),
    ("INVALID_PASSCODE", Reason::InvalidOtp),
    ("FACTOR_NOT_ALLOWED", Reason::MethodMismatch),
    ("FACTOR_NOT_ENROLLED", Reason::FactorNotEnrolled),
    ("LOCKED_OUT", Reason::LockedOut),
    ("HIGH_RISK_SIGN_ON", Reason::RiskBlocked),
    ("DENY", Reason::PolicyDenied),
    ("MFA_REQUIRED", Reason::MfaRequired),
    ("RATE_LIMIT_EXCEEDED", Reason::RateLimited),
    ("USER_SUSPENDED", Reason::AccountDisabled),
    ("PASSWORD_EXPIRED", Reason::PasswordExpired),
];

/// Free-text reasons Okta writes in place of codes in some event types, matched in order at the
/// start of a word (so "rate limit" still finds "rate limited", but "locked" is not found in
/// "unlocked"). An unlock comes first and is no failure at all: "User unlocked by admin" must
/// not read as a lockout.
const REASON_WORDS: &[(&str, Reason)] = &[
    ("unlock", Reason::None),
    ("rejected", Reason::PushDenied),
    ("suspicious", Reason::UserReportedFraud),
    ("timeout", Reason::PushTimeout),
    ("timed out", Reason::PushTimeout),
    ("locked", Reason::LockedOut),
    ("risk", Reason::RiskBlocked),
    ("policy", Reason::PolicyDenied),
    ("rate limit", Reason::RateLimited),
    ("passcode", Reason::InvalidOtp),
    ("not enrolled", Reason::FactorNotEnrolled),
    ("unknown user", Reason::UnknownUser),
    ("user not found", Reason::UnknownUser),
];

/// How `policy.evaluate_sign_on` words its `outcome.reason`, before the verdict
/// (`AUTHENTICATED`, `CHALLENGE`, `DENY`, `DENIED`).
const POLICY_VERDICT: &str = "Sign-on policy evaluation resulted in ";

fn reason_of(raw: &str, factor: Factor) -> Reason {
    if raw.is_empty() {
        return Reason::None;
    }
    // `INVALID_CREDENTIALS` is the wrong password, but Identity Engine writes it for any
    // authenticator that failed (`user.authentication.auth_via_mfa`): a denied Okta Verify push
    // too, which the push-bombing rules must see as one.
    if raw.eq_ignore_ascii_case("INVALID_CREDENTIALS") {
        return match factor {
            Factor::Push => Reason::PushDenied,
            Factor::Totp | Factor::Sms | Factor::Voice | Factor::Email | Factor::HardwareToken => {
                Reason::InvalidOtp
            }
            // The password, no factor named (Classic's `user.session.start`), or an
            // authenticator with no secret to mistype (WebAuthn, FastPass): as Okta says.
            Factor::Password | Factor::None | Factor::Webauthn | Factor::Biometric => {
                Reason::InvalidCredentials
            }
        };
    }
    if let Some((_, r)) = REASONS.iter().find(|(c, _)| raw.eq_ignore_ascii_case(c)) {
        return *r;
    }
    // `policy.evaluate_sign_on` names the policy's verdict: only a denial is one; a challenge
    // is the policy asking for another factor.
    if let Some(verdict) = raw
        .get(..POLICY_VERDICT.len())
        .filter(|head| head.eq_ignore_ascii_case(POLICY_VERDICT))
        .and_then(|_| raw.get(POLICY_VERDICT.len()..))
        .map(str::trim)
    {
        return if verdict.eq_ignore_ascii_case("CHALLENGE") {
            Reason::MfaRequired
        } else if starts_a_word_ci(verdict, "DENY") || starts_a_word_ci(verdict, "DENIED") {
            Reason::PolicyDenied
        } else {
            Reason::None
        };
    }
    // `VERIFICATION_ERROR` is Okta's generic wrong-secret code: which secret depends on the factor.
    if raw.eq_ignore_ascii_case("VERIFICATION_ERROR") {
        return match factor {
            Factor::Password | Factor::None => Reason::InvalidCredentials,
            _ => Reason::InvalidOtp,
        };
    }
    REASON_WORDS
        .iter()
        .find(|(w, _)| starts_a_word_ci(raw, w))
        .map(|(_, r)| *r)
        .unwrap_or(Reason::Other)
}

/// `phrase` occurs in `text` (ASCII case-insensitive) where a word starts, i.e. not right after
/// a letter or digit: "locked" is in "Account locked" but not in "unlocked".
fn starts_a_word_ci(text: &str, phrase: &str) -> bool {
    let (t, p) = (text.as_bytes(), phrase.as_bytes());
    if p.is_empty() || t.len() < p.len() {
        return false;
    }
    (0..=t.len() - p.len()).any(|i| {
        t[i..i + p.len()].eq_ignore_ascii_case(p)
            && i.checked_sub(1)
                .and_then(|j| t.get(j))
                .is_none_or(|b| !b.is_ascii_alphanumeric())
    })
}

fn reason_code(r: Reason, raw: &str) -> String {
    match REASONS.iter().find(|(_, x)| *x == r) {
        Some((c, _)) => (*c).to_owned(),
        None if r == Reason::ProviderError => "PUSH_PROVIDER_UNAVAILABLE".to_owned(),
        None if r == Reason::None => String::new(),
        None if !raw.is_empty() => raw.to_owned(),
        None => "OTHER".to_owned(),
    }
}

fn outcome_of(result: &str, reason: Reason) -> Outcome {
    match (result, reason) {
        ("SUCCESS" | "ALLOW" | "SKIPPED", _) => Outcome::Success,
        ("CHALLENGE", _) => Outcome::Challenge,
        ("DENY", _) => Outcome::Blocked,
        (_, Reason::PushTimeout) => Outcome::Timeout,
        (_, Reason::PushDenied | Reason::UserReportedFraud) => Outcome::Denied,
        ("FAILURE", _) => Outcome::Failure,
        // UNKNOWN, absent or new: Okta does not say it failed. A neutral outcome (challenge,
        // which no success- or failure-counting rule reads) rather than a failure that would
        // feed the password-attack rules, or a success that would count as an approval.
        _ => Outcome::Challenge,
    }
}

fn device_kind(raw: &str) -> DeviceType {
    match raw {
        "Computer" => DeviceType::Desktop,
        "Mobile" => DeviceType::Mobile,
        "Tablet" => DeviceType::Tablet,
        "Bot" => DeviceType::Bot,
        _ => DeviceType::Unknown,
    }
}

fn risk_of(raw: &str) -> RiskLevel {
    if contains_ci(raw, "level=HIGH") {
        RiskLevel::High
    } else if contains_ci(raw, "level=MEDIUM") {
        RiskLevel::Medium
    } else if contains_ci(raw, "level=LOW") {
        RiskLevel::Low
    } else {
        RiskLevel::None
    }
}

/// Writes `event` as a Log Streaming (EventBridge) record, the envelope carrying the org name.
pub(crate) fn encode(ev: &AuthEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use Activity as A;
    let published = common::rfc3339_ms(ev.time)?;
    let (event_type, result) = match (ev.activity, ev.outcome, ev.reason) {
        (A::Logon, _, _) if ev.factor == Factor::None => ("user.authentication.sso", None),
        (A::Logon, _, _) => ("user.session.start", None),
        (A::MfaChallenge, _, _) => match ev.factor {
            Factor::Push => ("system.push.send_factor_verify_push", Some("SUCCESS")),
            Factor::Sms => ("system.sms.send_factor_verify_message", Some("SUCCESS")),
            Factor::Voice => ("system.voice.send_factor_verify_call", Some("SUCCESS")),
            Factor::Email => ("system.email.send_factor_verify_message", Some("SUCCESS")),
            _ => ("user.authentication.auth_via_mfa", Some("CHALLENGE")),
        },
        (A::MfaVerify, Outcome::Denied, Reason::PushDenied) => {
            ("user.mfa.okta_verify.deny_push", Some("FAILURE"))
        }
        (A::MfaVerify, Outcome::Denied, Reason::UserReportedFraud) => (
            "user.account.report_suspicious_activity_by_enduser",
            Some("SUCCESS"),
        ),
        (A::MfaVerify, _, _) => ("user.authentication.auth_via_mfa", None),
        (A::Logoff, _, _) => ("user.session.end", None),
        (A::AccountLock, _, _) => ("user.account.lock", None),
        (A::AccountUnlock, _, _) => ("user.account.unlock_by_admin", None),
        (A::PasswordReset, _, _) => ("user.account.reset_password", None),
        (A::MfaEnroll, _, _) => ("user.mfa.factor.activate", None),
        (A::MfaReset, _, _) => ("user.mfa.factor.reset_all", None),
        (A::PolicyEvaluation, _, _) => ("policy.evaluate_sign_on", None),
        (A::AccountDisable, _, _) => ("user.lifecycle.suspend", None),
        (A::Other, _, _) => ("system.event", None),
    };
    let result = result.unwrap_or(match ev.outcome {
        Outcome::Success => {
            if ev.activity == A::PolicyEvaluation {
                "ALLOW"
            } else {
                "SUCCESS"
            }
        }
        Outcome::Challenge => "CHALLENGE",
        Outcome::Blocked => "DENY",
        Outcome::Failure | Outcome::Denied | Outcome::Timeout => "FAILURE",
    });
    let reason = reason_code(ev.reason, &ev.reason_raw);
    let risk = match ev.provider_risk {
        RiskLevel::None => serde_json::Value::Null,
        r => json!(format!(
            "{{reasons=Anomalous Location, level={}}}",
            r.as_str().to_ascii_uppercase()
        )),
    };
    let device = match ev.device.kind {
        DeviceType::Desktop => "Computer",
        DeviceType::Mobile => "Mobile",
        DeviceType::Tablet => "Tablet",
        DeviceType::Bot => "Bot",
        DeviceType::Unknown => "Unknown",
    };
    let mut debug = serde_json::Map::new();
    debug.insert("requestId".into(), json!(format!("req-{}", ev.event_id)));
    let factor = factor_code(ev.factor);
    if !factor.is_empty() {
        debug.insert("factor".into(), json!(factor));
    }
    if !risk.is_null() {
        debug.insert("risk".into(), risk);
    }
    let mut targets = Vec::new();
    // Okta names the account an account change is about as a `User` target.
    if is_account_change(ev.activity) {
        targets.push(json!({"id": or_null(&ev.user.id), "type": "User", "alternateId": ev.user.name.as_str(), "displayName": ev.user.name.as_str()}));
    }
    if !ev.app.is_empty() {
        targets.push(json!({"id": "0oa-app", "type": "AppInstance", "alternateId": ev.app.as_str(), "displayName": ev.app.as_str()}));
    }
    let event = json!({
        "uuid": ev.event_id.as_str(),
        "published": published,
        "eventType": event_type,
        "version": "0",
        "severity": if ev.outcome == Outcome::Success { "INFO" } else { "WARN" },
        "displayMessage": event_type,
        "actor": {"id": or_null(&ev.user.id), "type": "User", "alternateId": ev.user.name.as_str(), "displayName": ev.user.name.as_str()},
        "client": {
            "userAgent": {"rawUserAgent": or_null(&ev.device.user_agent), "os": or_null(&ev.device.os), "browser": or_null(&ev.device.browser)},
            "zone": "null",
            "device": device,
            "ipAddress": ip_or_null(ev.src.ip),
        },
        "device": if ev.device.id.is_empty() { serde_json::Value::Null } else { json!({"id": ev.device.id.as_str()}) },
        "outcome": {"result": result, "reason": or_null(&reason)},
        "authenticationContext": {"authenticationStep": 0, "externalSessionId": or_null(&ev.session_id)},
        "securityContext": {"asNumber": ev.src.asn, "asOrg": or_null(&ev.src.as_org), "isProxy": ev.src.anonymizer.proxy},
        "debugContext": {"debugData": debug},
        "target": targets,
    });
    // Without an org name there is nothing the envelope would add: write the API object.
    if ev.tenant.is_empty() {
        common::write_json(out, &event);
        return Ok(());
    }
    let envelope = json!({
        "version": "0",
        "id": ev.event_id.as_str(),
        "detail-type": "SystemLog",
        "source": format!("aws.partner/okta.com/{}/authwatch", ev.tenant),
        "time": published,
        "detail": event,
    });
    common::write_json(out, &envelope);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(line: &str) -> AuthEvent {
        Okta.normalize(line.as_bytes(), 0, &Limits::default())
            .unwrap()
    }

    fn summary(e: &AuthEvent) -> String {
        format!(
            "{}/{}/{}/{} {}",
            e.activity, e.factor, e.outcome, e.reason, e.user.name
        )
    }

    #[test]
    fn an_admin_action_is_charged_to_the_target_user() {
        let suspend = r#"{"uuid":"o7","published":"2026-01-05T00:00:00.000Z","eventType":"user.lifecycle.suspend","outcome":{"result":"SUCCESS"},"actor":{"id":"00uADMIN","type":"User","alternateId":"admin@example.jp"},"target":[{"id":"00uVICTIM","type":"User","alternateId":"ken@example.jp","displayName":"Ken"}],"client":{"ipAddress":"198.51.100.9"}}"#;
        let ev = norm(suspend);
        assert_eq!(
            summary(&ev),
            "account_disable/none/success/none ken@example.jp"
        );
        assert_eq!(ev.user.id, "00uVICTIM");
        assert_eq!(ev.user.domain, "example.jp");
        let reset = r#"{"uuid":"o8","published":"2026-01-05T00:00:00.000Z","eventType":"user.mfa.factor.reset_all","outcome":{"result":"SUCCESS"},"actor":{"id":"00uADMIN","type":"User","alternateId":"admin@example.jp"},"target":[{"id":"00uVICTIM","type":"User","alternateId":"ken@example.jp","displayName":"Ken"}]}"#;
        assert_eq!(
            summary(&norm(reset)),
            "mfa_reset/none/success/none ken@example.jp"
        );
        // A sign-in is the actor's own, whatever its targets.
        let sso = r#"{"uuid":"o9","published":"2026-01-05T00:00:00.000Z","eventType":"user.authentication.sso","outcome":{"result":"SUCCESS"},"actor":{"id":"00uA","type":"User","alternateId":"aiko@example.jp"},"target":[{"id":"0oa1","type":"AppInstance","displayName":"Slack"}]}"#;
        assert_eq!(
            summary(&norm(sso)),
            "logon/none/success/none aiko@example.jp"
        );
    }

    #[test]
    fn unlocked_is_not_a_lockout() {
        let unlock = r#"{"uuid":"o1","published":"2026-01-05T00:00:00.000Z","eventType":"user.account.unlock","outcome":{"result":"SUCCESS","reason":"User unlocked by admin"},"actor":{"alternateId":"ken@example.jp"}}"#;
        assert_eq!(
            summary(&norm(unlock)),
            "account_unlock/none/success/none ken@example.jp"
        );
        assert_eq!(
            reason_of("Account locked after 5 attempts", Factor::None),
            Reason::LockedOut
        );
        assert_eq!(
            reason_of("User unlocked by admin", Factor::None),
            Reason::None
        );
        assert_eq!(reason_of("Unlocked", Factor::None), Reason::None);
        // At the start of a word, so inflections still match.
        assert_eq!(
            reason_of("Request rate limited", Factor::None),
            Reason::RateLimited
        );
        assert_eq!(
            reason_of("Sign-on policy: deny", Factor::None),
            Reason::PolicyDenied
        );
    }

    /// An Identity Engine factor verification (`user.authentication.auth_via_mfa`).
    fn oie(uuid: &str, result: &str, reason: &str, factor: &str) -> String {
        let reason = if reason.is_empty() {
            "null".to_owned()
        } else {
            format!("\"{reason}\"")
        };
        format!(
            r#"{{"actor":{{"id":"00u1","type":"User","alternateId":"ken@example.jp","displayName":"Ken"}},"client":{{"zone":"null","device":"Computer","ipAddress":"175.16.199.5"}},"authenticationContext":{{"authenticationStep":0,"externalSessionId":"idxAb1"}},"displayMessage":"Authentication of user via MFA","eventType":"user.authentication.auth_via_mfa","outcome":{{"result":"{result}","reason":{reason}}},"published":"2026-01-05T01:00:30.000Z","severity":"WARN","debugContext":{{"debugData":{{"factor":"{factor}","factorIntent":"AUTHENTICATION"}}}},"uuid":"{uuid}","version":"0","target":[{{"id":"pfd1","type":"AuthenticatorEnrollment","alternateId":"unknown","displayName":"Okta Verify"}}]}}"#
        )
    }

    #[test]
    fn identity_engine_wrong_secrets_are_read_by_factor() {
        // A denied Okta Verify push: Identity Engine says only INVALID_CREDENTIALS.
        let denied = norm(&oie(
            "i1",
            "FAILURE",
            "INVALID_CREDENTIALS",
            "OKTA_VERIFY_PUSH",
        ));
        assert_eq!(
            summary(&denied),
            "mfa_verify/push/denied/push_denied ken@example.jp"
        );
        assert_eq!(denied.reason_raw, "INVALID_CREDENTIALS");
        // A wrong code, whatever delivered it.
        for factor in [
            "OKTA_VERIFY_TOTP",
            "GOOGLE_OTP",
            "SMS_FACTOR",
            "CALL_FACTOR",
            "EMAIL_FACTOR",
            "YUBIKEY_TOKEN",
        ] {
            let e = norm(&oie("i2", "FAILURE", "INVALID_CREDENTIALS", factor));
            assert_eq!(
                (e.activity, e.outcome, e.reason),
                (Activity::MfaVerify, Outcome::Failure, Reason::InvalidOtp),
                "{factor}"
            );
        }
        // Classic's wrong password keeps its meaning.
        let classic = r#"{"uuid":"c1","published":"2026-01-05T00:00:00.000Z","eventType":"user.session.start","outcome":{"result":"FAILURE","reason":"INVALID_CREDENTIALS"},"actor":{"alternateId":"ken@example.jp"}}"#;
        assert_eq!(
            summary(&norm(classic)),
            "logon/password/failure/invalid_credentials ken@example.jp"
        );
        // An out-of-date Okta Verify logs its denials under another event type.
        let upgrade = r#"{"uuid":"u1","published":"2026-01-05T00:00:00.000Z","eventType":"user.mfa.okta_verify.deny_push_upgrade_needed","outcome":{"result":"FAILURE","reason":null},"actor":{"alternateId":"ken@example.jp"},"client":{"ipAddress":"175.16.199.5"}}"#;
        assert_eq!(
            summary(&norm(upgrade)),
            "mfa_verify/push/denied/push_denied ken@example.jp"
        );
    }

    #[test]
    fn identity_engine_password_step_is_no_second_sign_in() {
        // Identity Engine logs a wrong password twice: as `user.session.start` and as this
        // factor verification. Only the first is a logon, or every try would count twice.
        let ok = norm(&oie("p1", "SUCCESS", "", "PASSWORD_AS_FACTOR"));
        assert_eq!(
            summary(&ok),
            "mfa_verify/password/success/none ken@example.jp"
        );
        let bad = norm(&oie(
            "p2",
            "FAILURE",
            "INVALID_CREDENTIALS",
            "PASSWORD_AS_FACTOR",
        ));
        assert_eq!(
            summary(&bad),
            "mfa_verify/password/failure/invalid_credentials ken@example.jp"
        );
        // The push step of the same sign-in is the MFA answer.
        let push = norm(&oie("p4", "SUCCESS", "", "OKTA_VERIFY_PUSH"));
        assert_eq!(
            summary(&push),
            "mfa_verify/push/success/none ken@example.jp"
        );
    }

    #[test]
    fn a_sign_on_policy_verdict_is_a_denial_only_when_it_denies() {
        let policy = |result: &str, verdict: &str| {
            format!(
                r#"{{"actor":{{"id":"00u1","type":"User","alternateId":"ken@example.jp","displayName":"Ken"}},"client":{{"device":"Computer","ipAddress":"175.16.199.5"}},"displayMessage":"Evaluation of sign-on policy","eventType":"policy.evaluate_sign_on","outcome":{{"reason":"Sign-on policy evaluation resulted in {verdict}","result":"{result}"}},"published":"2026-01-05T01:00:00.000Z","severity":"INFO","debugContext":{{"debugData":{{"risk":"{{level=LOW}}"}}}},"uuid":"pol-{verdict}","version":"0"}}"#
            )
        };
        assert_eq!(
            summary(&norm(&policy("ALLOW", "AUTHENTICATED"))),
            "policy_evaluation/none/success/none ken@example.jp"
        );
        assert_eq!(
            summary(&norm(&policy("CHALLENGE", "CHALLENGE"))),
            "policy_evaluation/none/challenge/mfa_required ken@example.jp"
        );
        assert_eq!(
            summary(&norm(&policy("DENY", "DENY"))),
            "policy_evaluation/none/blocked/policy_denied ken@example.jp"
        );
        assert_eq!(
            summary(&norm(&policy("DENY", "DENIED"))),
            "policy_evaluation/none/blocked/policy_denied ken@example.jp"
        );
    }

    #[test]
    fn unknown_or_missing_result_is_not_a_failure() {
        let unknown = r#"{"uuid":"o2","published":"2026-01-05T00:00:00.000Z","eventType":"user.authentication.auth_via_mfa","outcome":{"result":"UNKNOWN"},"actor":{"alternateId":"ken@example.jp"},"debugContext":{"debugData":{"factor":"OKTA_VERIFY_PUSH"}}}"#;
        assert_eq!(
            summary(&norm(unknown)),
            "mfa_verify/push/challenge/none ken@example.jp"
        );
        let missing = r#"{"uuid":"o3","published":"2026-01-05T00:00:00.000Z","eventType":"user.session.start","actor":{"alternateId":"ken@example.jp"}}"#;
        assert_eq!(
            summary(&norm(missing)),
            "logon/password/challenge/none ken@example.jp"
        );
        let failure = r#"{"uuid":"o4","published":"2026-01-05T00:00:00.000Z","eventType":"user.session.start","outcome":{"result":"FAILURE","reason":"INVALID_CREDENTIALS"},"actor":{"alternateId":"ken@example.jp"}}"#;
        assert_eq!(
            summary(&norm(failure)),
            "logon/password/failure/invalid_credentials ken@example.jp"
        );
    }
}
