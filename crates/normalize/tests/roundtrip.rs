//! `normalize(encode(e))` gives back `e` on the fields each format can carry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_event::{
    Activity as A, AuthEvent, Device, DeviceType, Factor as F, Outcome as O, Reason as R,
    RiskLevel, Src, Text, User,
};
use authwatch_normalize::{Format, Limits, encode};
use std::net::IpAddr;

/// Every (activity, factor, outcome, reason) the generator emits, and a few more.
const STEPS: &[(A, F, O, R)] = &[
    (A::Logon, F::Password, O::Success, R::None),
    (A::Logon, F::Password, O::Failure, R::InvalidCredentials),
    (A::Logon, F::Password, O::Failure, R::UnknownUser),
    (A::Logon, F::Webauthn, O::Success, R::None),
    (A::Logon, F::Webauthn, O::Failure, R::AuthenticatorError),
    (A::MfaChallenge, F::Push, O::Challenge, R::None),
    (A::MfaVerify, F::Push, O::Success, R::None),
    (A::MfaVerify, F::Push, O::Denied, R::PushDenied),
    (A::MfaVerify, F::Push, O::Timeout, R::PushTimeout),
    (A::MfaVerify, F::Push, O::Denied, R::UserReportedFraud),
    (A::MfaVerify, F::Push, O::Failure, R::DeviceNotRegistered),
    (A::MfaVerify, F::Push, O::Failure, R::ProviderError),
    (A::MfaVerify, F::Totp, O::Success, R::None),
    (A::MfaVerify, F::Totp, O::Failure, R::InvalidOtp),
    (A::MfaChallenge, F::Sms, O::Challenge, R::None),
    (A::MfaVerify, F::Sms, O::Success, R::None),
    (A::MfaVerify, F::Sms, O::Failure, R::InvalidOtp),
    (A::MfaVerify, F::Sms, O::Failure, R::MethodMismatch),
    (A::MfaVerify, F::Push, O::Failure, R::FactorNotEnrolled),
    (A::MfaReset, F::Push, O::Success, R::None),
    (A::MfaVerify, F::Totp, O::Failure, R::MethodMismatch),
    (A::MfaEnroll, F::Push, O::Success, R::None),
    (A::Logon, F::None, O::Success, R::None),
    (A::Logoff, F::None, O::Success, R::None),
    (A::AccountLock, F::None, O::Success, R::LockedOut),
    (A::AccountUnlock, F::None, O::Success, R::None),
    (A::PolicyEvaluation, F::None, O::Blocked, R::RiskBlocked),
    (A::PolicyEvaluation, F::None, O::Blocked, R::PolicyDenied),
    (A::PasswordReset, F::None, O::Success, R::None),
];

fn events() -> Vec<AuthEvent> {
    let users = [
        ("00u1", "aiko@example.co.jp"),
        ("00u2", "ken.suzuki@contoso.jp"),
        ("", "unknown-user@example.com"),
    ];
    let ips: [IpAddr; 3] = [
        "203.0.113.9".parse().unwrap(),
        "2001:db8::42".parse().unwrap(),
        "198.51.100.77".parse().unwrap(),
    ];
    let uas = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \"quoted\"",
        "python-requests/2.32",
    ];
    let apps = ["Office 365", "Salesforce", ""];
    let tenants = ["example", "acme-corp", "t3"];
    let mut out = Vec::new();
    for (i, &(activity, factor, outcome, reason)) in STEPS.iter().enumerate() {
        for v in 0..3 {
            let (id, name) = users[(i + v) % 3];
            out.push(AuthEvent {
                time: 1_767_603_600_000 + (i as i64) * 61_123 + v as i64 * 7,
                provider: Text::new("okta"),
                tenant: Text::new(tenants[v]),
                event_id: Text::new(format!("ev-{i}-{v}")),
                provider_event_type: Text::new("x"),
                user: User {
                    id: Text::new(id),
                    name: Text::new(name),
                    domain: Text::new(name.rsplit_once('@').map(|(_, d)| d).unwrap_or("")),
                },
                activity,
                factor,
                outcome,
                reason,
                reason_raw: Text::default(),
                src: Src {
                    ip: Some(ips[(i + 2 * v) % 3]),
                    ..Src::default()
                },
                device: Device {
                    user_agent: Text::new(uas[(i + v) % 3]),
                    os: Text::new("Windows 10"),
                    browser: Text::new("Chrome 131"),
                    kind: DeviceType::Desktop,
                    id: Text::new(if v == 0 { "dev-1" } else { "" }),
                    fingerprint: Text::default(),
                },
                session_id: Text::new(if v == 2 { "" } else { "sess-42" }),
                app: Text::new(apps[(i + v) % 3]),
                provider_risk: if outcome == O::Blocked {
                    RiskLevel::High
                } else {
                    RiskLevel::None
                },
                ..AuthEvent::default()
            });
        }
    }
    out
}

/// The detection-relevant fields, as text, with the ones `format` cannot carry blanked.
fn key(format: Format, e: &AuthEvent) -> Vec<(&'static str, String)> {
    let audit_only = matches!(
        e.activity,
        A::Logoff | A::AccountUnlock | A::PasswordReset | A::MfaEnroll | A::MfaReset | A::Other
    );
    let mut activity = e.activity;
    // Duo logs every non-password factor as the MFA step.
    if format == Format::Duo && activity == A::Logon && !matches!(e.factor, F::Password | F::None) {
        activity = A::MfaVerify;
    }
    // Entra writes one record per sign-in: the MFA answer that completed it is that record, a
    // successful logon (with the MFA method as its factor).
    if format == Format::Entra && activity == A::MfaVerify && e.outcome == O::Success {
        activity = A::Logon;
    }
    let lost_ua =
        matches!(format, Format::Duo | Format::Google) || (format == Format::Entra && audit_only);
    let lost_app = format == Format::Google || (format == Format::Entra && audit_only);
    vec![
        ("time", e.time.to_string()),
        ("event_id", e.event_id.to_string()),
        ("tenant", e.tenant.to_string()),
        ("user.name", e.user.name.to_string()),
        ("activity", activity.to_string()),
        ("factor", e.factor.to_string()),
        ("outcome", e.outcome.to_string()),
        ("reason", e.reason.to_string()),
        ("src.ip", format!("{:?}", e.src.ip)),
        (
            "app",
            if lost_app {
                String::new()
            } else {
                e.app.to_string()
            },
        ),
        (
            "user_agent",
            if lost_ua {
                String::new()
            } else {
                e.device.user_agent.to_string()
            },
        ),
    ]
}

#[test]
fn every_format_round_trips_the_detection_fields() {
    let limits = Limits::default();
    let auto = Format::Auto.normalizer();
    let mut failures = Vec::new();
    for &format in Format::CONCRETE {
        let norm = format.normalizer();
        for ev in events() {
            let mut line = Vec::new();
            encode(format, &ev, &mut line).unwrap();
            let back = match norm.normalize(&line, 5, &limits) {
                Ok(b) => b,
                Err(r) => {
                    failures.push(format!(
                        "{format}: {r}\n  {}",
                        String::from_utf8_lossy(&line)
                    ));
                    continue;
                }
            };
            let via_auto = auto.normalize(&line, 5, &limits).unwrap();
            assert_eq!(via_auto, back, "{format}: auto differs");
            let want = key(format, &ev);
            let got = key(format, &back);
            for (w, g) in want.iter().zip(&got) {
                if w != g {
                    failures.push(format!(
                        "{format} {}/{}/{}/{}: {} want {:?} got {:?}\n  {}",
                        ev.activity,
                        ev.factor,
                        ev.outcome,
                        ev.reason,
                        w.0,
                        w.1,
                        g.1,
                        String::from_utf8_lossy(&line)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn native_ocsf_and_ecs_round_trip_every_field_they_write() {
    let limits = Limits::default();
    for format in [Format::Native, Format::Ocsf, Format::Ecs] {
        for ev in events() {
            let mut line = Vec::new();
            encode(format, &ev, &mut line).unwrap();
            let mut back = format.normalizer().normalize(&line, 0, &limits).unwrap();
            back.ingest_time = ev.ingest_time;
            assert_eq!(back, ev, "{format}: {}", String::from_utf8_lossy(&line));
        }
    }
}

#[test]
fn auto_cannot_be_encoded() {
    let mut out = Vec::new();
    assert!(encode(Format::Auto, &AuthEvent::sample_full(), &mut out).is_err());
}

/// The generator's own stream (what `authwatch gen --format` will write): every event keeps
/// its detection fields through every format, so one seed gives the same alerts in each.
#[test]
fn generated_stream_round_trips_in_every_format() {
    let cfg = authwatch_gen::GenConfig {
        users: 300,
        days: 2,
        seed: 11,
        max_events: Some(8_000),
        ..authwatch_gen::GenConfig::default()
    };
    let mut events = Vec::new();
    authwatch_gen::generate(&cfg, &mut |ev: &AuthEvent| {
        events.push(ev.clone());
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    assert!(events.len() > 1_000, "{} events", events.len());
    let limits = Limits::default();
    let mut line = Vec::new();
    for &format in Format::CONCRETE {
        let norm = format.normalizer();
        let mut mismatches = Vec::new();
        for ev in &events {
            line.clear();
            encode(format, ev, &mut line).unwrap();
            let back = norm
                .normalize(&line, 0, &limits)
                .unwrap_or_else(|r| panic!("{format}: {r}\n{}", String::from_utf8_lossy(&line)));
            if key(format, ev) != key(format, &back) && mismatches.len() < 5 {
                mismatches.push(format!(
                    "{:?}\n  != {:?}",
                    key(format, ev),
                    key(format, &back)
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{format}:\n{}",
            mismatches.join("\n")
        );
    }
}
