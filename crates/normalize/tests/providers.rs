//! Real-format fixtures (tests/fixtures/providers/<provider>.jsonl, written from each
//! provider's public schema documentation): what every line normalizes to, and that no input
//! — truncated, bit-flipped — makes any normalizer panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_event::AuthEvent;
use authwatch_normalize::{Format, Limits, Normalizer, RejectKind};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/providers")
        .join(format!("{name}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `activity/factor/outcome/reason user ip` — the fields every detection reads.
fn summary(e: &AuthEvent) -> String {
    format!(
        "{}/{}/{}/{} {} {}",
        e.activity,
        e.factor,
        e.outcome,
        e.reason,
        e.user.name,
        e.src
            .ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into())
    )
}

fn check(format: Format, name: &str, want: &[&str]) -> Vec<AuthEvent> {
    let lines = fixture(name);
    assert_eq!(lines.len(), want.len(), "{name}: one expectation per line");
    let norm = format.normalizer();
    let auto = Format::Auto.normalizer();
    let mut out = Vec::new();
    for (i, (line, want)) in lines.iter().zip(want).enumerate() {
        let ev = norm
            .normalize(line.as_bytes(), 1, &Limits::default())
            .unwrap_or_else(|r| panic!("{name}:{}: {r}", i + 1));
        assert_eq!(summary(&ev), *want, "{name}:{}", i + 1);
        assert_eq!(ev.ingest_time, 1);
        assert!(!ev.event_id.is_empty());
        let via_auto = auto
            .normalize(line.as_bytes(), 1, &Limits::default())
            .unwrap();
        assert_eq!(via_auto, ev, "{name}:{}: auto chose another format", i + 1);
        out.push(ev);
    }
    out
}

#[test]
fn okta_fixtures() {
    let evs = check(
        Format::Okta,
        "okta",
        &[
            "logon/password/success/none aiko.tanaka@example.co.jp 203.0.113.10",
            "logon/password/failure/invalid_credentials aiko.tanaka@example.co.jp 203.0.113.10",
            "logon/password/failure/invalid_credentials admin@example.co.jp 198.51.100.23",
            "mfa_challenge/push/challenge/none aiko.tanaka@example.co.jp 203.0.113.10",
            "mfa_verify/push/success/none aiko.tanaka@example.co.jp 203.0.113.10",
            "mfa_verify/push/denied/push_denied ken.suzuki@example.co.jp 192.0.2.44",
            "mfa_verify/push/timeout/push_timeout ken.suzuki@example.co.jp 192.0.2.44",
            "mfa_verify/push/denied/user_reported_fraud ken.suzuki@example.co.jp 192.0.2.45",
            "account_lock/none/success/locked_out ken.suzuki@example.co.jp 198.51.100.23",
            "policy_evaluation/none/blocked/policy_denied aiko.tanaka@example.co.jp 185.220.101.5",
            "mfa_verify/totp/failure/invalid_otp ken.suzuki@example.co.jp 192.0.2.44",
            "logoff/none/success/none aiko.tanaka@example.co.jp 203.0.113.10",
            "mfa_challenge/sms/challenge/none ken.suzuki@example.co.jp 192.0.2.44",
            // An admin suspends ken: ken's account is the one disabled.
            "account_disable/none/success/none ken.suzuki@example.co.jp 198.51.100.9",
        ],
    );
    let first = &evs[0];
    assert_eq!(first.provider, "okta");
    assert_eq!(first.time, 1_767_571_201_123);
    assert_eq!(first.event_id, "5b2f2a1e-ca1a-11f0-9f55-0b1f3c4d5e01");
    assert_eq!(first.provider_event_type, "user.session.start");
    assert_eq!(first.user.id, "00u1a2b3c4D5e6F7g8h9");
    assert_eq!(first.user.domain, "example.co.jp");
    assert_eq!(first.session_id, "102bZDNFfWaQSyEZQuDgWt-uQ");
    assert_eq!(first.device.os, "Windows 10");
    assert!(
        first
            .device
            .user_agent
            .starts_with("Mozilla/5.0 (Windows NT 10.0")
    );
    assert_eq!(evs[1].reason_raw, "INVALID_CREDENTIALS");
    assert_eq!(evs[2].provider_risk, authwatch_event::RiskLevel::Medium);
    assert_eq!(evs[4].app, "Microsoft Office 365");
    assert_eq!(evs[9].provider_risk, authwatch_event::RiskLevel::High);
    // The EventBridge envelope names the org.
    assert_eq!(evs[10].tenant, "example-corp");
    assert_eq!(evs[10].time, 1_767_571_560_321);
    assert_eq!(evs[13].user.id, "00u9z8y7x6W5v4U3t2s1");
}

#[test]
fn entra_fixtures() {
    let evs = check(
        Format::Entra,
        "entra",
        &[
            "logon/password/success/none aiko@contoso.co.jp 203.0.113.20",
            "logon/password/failure/invalid_credentials aiko@contoso.co.jp 198.51.100.30",
            "mfa_challenge/push/challenge/none aiko@contoso.co.jp 203.0.113.20",
            // One record for the password and the push that completed the sign-in.
            "logon/push/success/none aiko@contoso.co.jp 203.0.113.20",
            "mfa_verify/push/denied/push_denied ken@contoso.co.jp 192.0.2.50",
            "mfa_verify/push/timeout/push_timeout ken@contoso.co.jp 192.0.2.50",
            "mfa_verify/push/denied/user_reported_fraud ken@contoso.co.jp 192.0.2.50",
            "account_lock/none/success/locked_out ken@contoso.co.jp 198.51.100.31",
            "policy_evaluation/none/blocked/policy_denied aiko@contoso.co.jp 185.220.101.6",
            "policy_evaluation/none/blocked/risk_blocked aiko@contoso.co.jp 185.220.101.6",
            "logon/password/failure/account_disabled former@contoso.co.jp 192.0.2.51",
            "mfa_challenge/none/challenge/mfa_required aiko@contoso.co.jp 203.0.113.20",
            "mfa_verify/totp/failure/invalid_otp ken@contoso.co.jp 192.0.2.50",
            "mfa_enroll/push/success/none aiko@contoso.co.jp 203.0.113.20",
            "policy_evaluation/none/blocked/policy_denied aiko@contoso.co.jp 198.51.100.32",
            // Graph v1.0: no authenticationDetails, the detail in status.additionalDetails.
            "mfa_verify/push/denied/push_denied ken@contoso.co.jp 192.0.2.50",
            // An admin disables ken, from the admin's address.
            "account_disable/none/success/none ken@contoso.co.jp 198.51.100.9",
        ],
    );
    assert_eq!(evs[0].time, 1_767_571_201_123, "7-digit fractions keep ms");
    assert_eq!(evs[0].app, "Office 365 Exchange Online");
    assert_eq!(evs[0].session_id, "d79f5bee-5860-4832-928f-3133e22ae912");
    assert_eq!(evs[0].device.browser, "Edge 131.0.0");
    assert_eq!(evs[1].reason_raw, "50126");
    assert_eq!(evs[9].provider_risk, authwatch_event::RiskLevel::High);
    assert_eq!(evs[9].reason_raw, "53011");
    assert_eq!(evs[14].reason_raw, "530032");
    // Azure Monitor export: the tenant is the envelope's.
    assert_eq!(evs[10].tenant, "72f988bf-86f1-41af-91ab-2d7cd011db47");
    assert!(evs[10].device.user_agent.starts_with("Mozilla/5.0"));
    assert_eq!(evs[13].provider_event_type, "User registered security info");
    assert_eq!(evs[16].user.id, "1f0e2d3c-0000-0000-0000-00000000beef");
}

#[test]
fn duo_fixtures() {
    let evs = check(
        Format::Duo,
        "duo",
        &[
            "mfa_verify/push/success/none hana@example.co.jp 203.0.113.30",
            "mfa_verify/push/denied/push_denied hana@example.co.jp 203.0.113.30",
            "mfa_verify/push/denied/user_reported_fraud hana@example.co.jp 185.220.101.7",
            "mfa_verify/push/timeout/push_timeout hana@example.co.jp 185.220.101.7",
            "mfa_verify/none/failure/factor_not_enrolled newhire@example.co.jp 198.51.100.40",
            "mfa_verify/totp/failure/invalid_otp taro@example.co.jp 203.0.113.31",
            "account_lock/none/success/locked_out taro@example.co.jp 203.0.113.31",
            "policy_evaluation/none/blocked/risk_blocked hana@example.co.jp 185.220.101.8",
            "policy_evaluation/none/blocked/policy_denied jiro@example.co.jp 192.0.2.61",
            "mfa_verify/push/failure/provider_error saburo@example.co.jp 203.0.113.32",
            "mfa_verify/sms/success/none shiro@example.co.jp 203.0.113.33",
            "mfa_enroll/push/success/none newhire@example.co.jp 203.0.113.34",
            "mfa_verify/voice/timeout/push_timeout goro@example.co.jp 203.0.113.35",
            "mfa_verify/totp/failure/invalid_otp taro@example.co.jp 203.0.113.31",
        ],
    );
    assert_eq!(evs[0].time, 1_767_571_201_512, "isotimestamp keeps ms");
    assert_eq!(evs[0].app, "Microsoft Azure Active Directory");
    assert_eq!(evs[0].user.id, "DU3KC77WJ06Y5HIV7XKQ");
    assert_eq!(evs[0].device.id, "DP5BJ8PP1I3KIA4S8L5O");
    assert_eq!(evs[1].reason_raw, "user_mistake");
    // Only the epoch-seconds timestamp: second precision.
    assert_eq!(evs[12].time, 1_767_571_920_000);
}

#[test]
fn auth0_fixtures() {
    let evs = check(
        Format::Auth0,
        "auth0",
        &[
            "logon/password/success/none mei@example.co.jp 203.0.113.40",
            "logon/password/failure/invalid_credentials mei@example.co.jp 198.51.100.50",
            "logon/password/failure/unknown_user ceo@example.co.jp 198.51.100.50",
            "mfa_challenge/push/challenge/none mei@example.co.jp 203.0.113.40",
            "mfa_verify/push/success/none mei@example.co.jp 203.0.113.40",
            "mfa_verify/push/denied/push_denied mei@example.co.jp 185.220.101.9",
            "mfa_verify/totp/failure/invalid_otp yui@example.co.jp 203.0.113.41",
            "mfa_verify/totp/failure/rate_limited yui@example.co.jp 203.0.113.41",
            // limit_wc: brute-force protection blocks this address from this account, the
            // account itself is not locked.
            "logon/none/blocked/rate_limited yui@example.co.jp 198.51.100.50",
            "logon/none/blocked/rate_limited  198.51.100.50",
            "logon/password/blocked/risk_blocked sora@example.co.jp 203.0.113.42",
            "logoff/none/success/none mei@example.co.jp 203.0.113.40",
            // Cross-origin (embedded) login.
            "logon/password/failure/invalid_credentials mei@example.co.jp 198.51.100.50",
        ],
    );
    assert_eq!(evs[0].tenant, "example-jp");
    assert_eq!(evs[0].app, "Example Portal");
    assert_eq!(evs[0].event_id, "90020260105000001000000000000001");
    assert_eq!(evs[0].user.id, "auth0|6123456789abcdef01234567");
    assert_eq!(evs[0].provider_event_type, "s");
    assert_eq!(evs[11].event_id, "90020260105000001000000000000012");
    assert_eq!(evs[11].tenant, "");
}

#[test]
fn keycloak_fixtures() {
    let evs = check(
        Format::Keycloak,
        "keycloak",
        &[
            "logon/none/success/none riku@example.co.jp 203.0.113.50",
            "logon/none/failure/invalid_credentials riku@example.co.jp 198.51.100.60",
            "logon/none/failure/unknown_user administrator 198.51.100.60",
            "logon/none/failure/account_disabled former@example.co.jp 203.0.113.51",
            "account_lock/none/success/locked_out riku@example.co.jp 198.51.100.60",
            "mfa_verify/totp/failure/invalid_otp umi@example.co.jp 203.0.113.52",
            "mfa_verify/totp/success/none umi@example.co.jp 203.0.113.52",
            "logoff/none/success/none  203.0.113.52",
            "password_reset/none/success/none umi@example.co.jp 203.0.113.52",
            "logon/none/failure/invalid_credentials riku@example.co.jp 198.51.100.61",
            "account_disable/none/success/none  192.0.2.70",
            "account_unlock/none/success/none  192.0.2.70",
            // A login-action code that expired: no secret was wrong.
            "logon/none/failure/other riku@example.co.jp 203.0.113.50",
        ],
    );
    assert_eq!(evs[0].tenant, "acme");
    assert_eq!(evs[0].app, "account-console");
    assert_eq!(evs[0].time, 1_767_571_201_234);
    assert_eq!(evs[0].session_id, "9a8b7c6d-0000-0000-0000-000000000001");
    assert_eq!(evs[1].reason_raw, "invalid_user_credentials");
    // No id before Keycloak 24: a stable one is derived.
    assert_eq!(
        evs[9].event_id,
        "kc-1767571210000:acme:LOGIN_ERROR::riku@example.co.jp::198.51.100.61:legacy-app:invalid_user_credentials"
    );
    assert_eq!(evs[10].user.id, "f2a3b4c5-0000-0000-0000-000000000002");
    assert_eq!(evs[11].user.id, "f2a3b4c5-0000-0000-0000-000000000001");
}

#[test]
fn google_fixtures() {
    let evs = check(
        Format::Google,
        "google",
        &[
            // The password, then the Google prompt: the prompt completed the login.
            "logon/push/success/none nao@example.co.jp 203.0.113.60",
            "logon/password/failure/invalid_credentials nao@example.co.jp 198.51.100.70",
            "mfa_challenge/push/challenge/none nao@example.co.jp 203.0.113.60",
            "mfa_verify/push/success/none nao@example.co.jp 203.0.113.60",
            "mfa_verify/totp/failure/invalid_otp kai@example.co.jp 192.0.2.80",
            "logoff/none/success/none kai@example.co.jp 192.0.2.80",
            "policy_evaluation/none/blocked/risk_blocked kai@example.co.jp 185.220.101.10",
            "account_disable/none/success/account_disabled kai@example.co.jp -",
            "mfa_enroll/none/success/none nao@example.co.jp 203.0.113.60",
            "policy_evaluation/password/blocked/policy_denied nao@example.co.jp 198.51.100.71",
            "password_reset/none/success/none nao@example.co.jp 203.0.113.60",
            // A Google prompt that failed: the user said no.
            "mfa_verify/push/denied/push_denied kai@example.co.jp 192.0.2.80",
        ],
    );
    assert_eq!(evs[0].tenant, "C03az79cb");
    assert_eq!(evs[0].event_id, "-4013240389437208541");
    assert_eq!(evs[0].time, 1_767_571_201_202);
    assert_eq!(evs[0].user.id, "110234567890123456789");
    assert_eq!(evs[1].reason_raw, "login_failure_invalid_password");
}

#[test]
fn ocsf_fixtures() {
    let evs = check(
        Format::Ocsf,
        "ocsf",
        &[
            "logon/password/success/none aiko.tanaka@example.co.jp 203.0.113.10",
            "logon/none/failure/invalid_credentials aiko.tanaka@example.co.jp 198.51.100.23",
            "logon/none/failure/other someone@example.com 198.51.100.24",
            "mfa_verify/push/success/none ken@contoso.co.jp 192.0.2.50",
            "logoff/none/success/none ken@contoso.co.jp 192.0.2.50",
            "mfa_verify/push/denied/push_denied ken@contoso.co.jp 192.0.2.50",
            "mfa_verify/push/timeout/push_timeout ken@contoso.co.jp 192.0.2.50",
            "mfa_verify/push/denied/user_reported_fraud hana@example.co.jp 185.220.101.7",
            "account_lock/none/success/locked_out ken.suzuki@example.co.jp 198.51.100.23",
            "policy_evaluation/none/blocked/risk_blocked aiko.tanaka@example.co.jp 185.220.101.5",
            "mfa_challenge/push/challenge/none aiko.tanaka@example.co.jp 203.0.113.10",
        ],
    );
    assert_eq!(evs[0].provider, "Okta System Log");
    assert_eq!(evs[0].tenant, "example-corp");
    assert_eq!(evs[0].app, "Okta Dashboard");
    assert_eq!(evs[0].session_id, "102bZDNFfWaQSyEZQuDgWt-uQ");
    assert_eq!(evs[0].provider_event_type, "user.session.start");
    assert_eq!(evs[2].provider, "Amazon Cognito");
    assert_eq!(evs[4].provider, "ocsf");
    assert_eq!(evs[9].provider_risk, authwatch_event::RiskLevel::High);
}

#[test]
fn ecs_fixtures() {
    let evs = check(
        Format::Ecs,
        "ecs",
        &[
            "logon/none/success/none aiko.tanaka@example.co.jp 203.0.113.10",
            "logon/none/failure/invalid_credentials aiko.tanaka@example.co.jp 198.51.100.23",
            "logon/none/failure/invalid_credentials root 198.51.100.25",
            "logoff/none/success/none ken@contoso.co.jp 192.0.2.50",
            "mfa_challenge/push/challenge/none ken.suzuki@example.co.jp 192.0.2.44",
            "mfa_verify/push/denied/push_denied ken.suzuki@example.co.jp 192.0.2.44",
            "mfa_verify/push/timeout/push_timeout hana@example.co.jp 185.220.101.7",
            "mfa_verify/push/denied/user_reported_fraud hana@example.co.jp 185.220.101.7",
            "account_lock/none/success/locked_out ken.suzuki@example.co.jp 198.51.100.23",
            "policy_evaluation/none/blocked/policy_denied aiko.tanaka@example.co.jp 185.220.101.5",
            // One string for category and type; an unknown outcome is no failure.
            "logon/none/challenge/none ken@contoso.jp 192.0.2.52",
        ],
    );
    assert_eq!(evs[0].provider, "okta");
    assert_eq!(evs[0].tenant, "example-corp");
    assert_eq!(evs[0].user.domain, "example.co.jp");
    assert_eq!(evs[2].provider, "sshd");
    assert_eq!(evs[3].provider, "ecs");
}

#[test]
fn auto_names_what_it_looked_for() {
    let auto = Format::Auto.normalizer();
    let r = auto
        .normalize(br#"{"hello":"world"}"#, 0, &Limits::default())
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::UnknownFormat);
    assert!(
        r.message
            .starts_with("no known format: looks like JSON but has none of the keys"),
        "{}",
        r.message
    );
    assert!(r.message.contains("txid (duo)"), "{}", r.message);
    let r = auto
        .normalize(
            b"<14>Jan  5 sshd[1]: Failed password",
            0,
            &Limits::default(),
        )
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::UnknownFormat);
    assert!(r.message.contains("not a JSON object"), "{}", r.message);
    assert_eq!(
        auto.normalize(b"  ", 0, &Limits::default())
            .unwrap_err()
            .kind,
        RejectKind::EmptyLine
    );
    // A recognizable line that lacks a required field gets that format's reason.
    let r = auto
        .normalize(
            br#"{"uuid":"u1","eventType":"user.session.start","outcome":{"result":"SUCCESS"}}"#,
            0,
            &Limits::default(),
        )
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::MissingField);
    assert!(r.message.contains("published"), "{}", r.message);
    // A value that spells a key does not count as the key.
    let r = auto
        .normalize(br#"{"note":"txid","x":1}"#, 0, &Limits::default())
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::UnknownFormat);
}

#[test]
fn format_names_round_trip() {
    for f in Format::ALL {
        assert_eq!(f.as_str().parse::<Format>().unwrap(), *f);
        assert_eq!(
            serde_json::to_string(f).unwrap(),
            format!("\"{}\"", f.as_str())
        );
        assert_eq!(f.normalizer().name(), f.as_str());
    }
    assert_eq!(Format::default(), Format::Auto);
    assert!("splunk".parse::<Format>().unwrap_err().contains("okta"));
}

/// A small deterministic PRNG (xorshift64*): the test needs no dependency and is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn no_input_panics() {
    const PROVIDERS: &[&str] = &[
        "okta", "entra", "duo", "auth0", "keycloak", "google", "ocsf", "ecs",
    ];
    let mut normalizers: Vec<Box<dyn Normalizer>> =
        Format::ALL.iter().map(|f| f.normalizer()).collect();
    let mapping =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/mappings/jumpcloud.yaml");
    normalizers.push(Box::new(
        authwatch_normalize::Mapping::load(&mapping).unwrap(),
    ));
    let limits = Limits::default();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut calls = 0u64;
    let mut run = |bytes: &[u8], all: bool| {
        if all {
            for n in &normalizers {
                // Either outcome is fine; reaching here without a panic is the test.
                let _ = n.normalize(bytes, 0, &limits);
                calls += 1;
            }
        } else {
            let _ = normalizers[0].normalize(bytes, 0, &limits);
            calls += 1;
        }
    };
    for p in PROVIDERS {
        for line in fixture(p) {
            let b = line.as_bytes();
            // Every truncation through `auto` (which reaches the right parser), every
            // thirteenth through every normalizer.
            for cut in 0..=b.len() {
                run(&b[..cut], cut % 13 == 0);
            }
            for _ in 0..64 {
                let mut m = b.to_vec();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() % m.len() as u64) as usize;
                    m[at] = match rng.next() % 4 {
                        0 => rng.next() as u8,
                        1 => b'"',
                        2 => b'{',
                        _ => m[at] ^ (1 << (rng.next() % 8)),
                    };
                }
                run(&m, true);
            }
        }
    }
    assert!(calls > 100_000, "{calls}");
}

/// A line nesting brackets far deeper than any log does, in a field the normalizer never
/// reads, is normalized as the same line without that nesting would be (the field ignored, or
/// refused where the format is strict): never a stack overflow. sonic-rs skips unread values by
/// recursion without a limit, which once aborted the process on such a line. The test thread's
/// stack is no larger than a worker's, so an overflow here fails the test run.
#[test]
fn deep_nesting_in_an_unread_field_changes_nothing() {
    let limits = Limits::default();
    let outcome = |r: Result<AuthEvent, authwatch_normalize::Rejection>| match r {
        Ok(mut e) => Ok({
            e.ingest_time = 0;
            e
        }),
        Err(r) => Err(r.kind),
    };
    for p in [
        "okta", "entra", "duo", "auth0", "keycloak", "google", "ocsf", "ecs",
    ] {
        let format: Format = p.parse().unwrap();
        let line = fixture(p).into_iter().next().unwrap();
        let body = line.trim_end().strip_suffix('}').unwrap();
        let with = |depth: usize| {
            format!(
                "{body},\"zz_unread\":{}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        for norm in [format.normalizer(), Format::Auto.normalizer()] {
            let shallow = outcome(norm.normalize(with(1).as_bytes(), 0, &limits));
            for depth in [20, 31, 32, 33, 100, 20_000] {
                let deep = outcome(norm.normalize(with(depth).as_bytes(), 0, &limits));
                assert_eq!(deep, shallow, "{p} via {}, depth {depth}", norm.name());
            }
        }
    }
}
