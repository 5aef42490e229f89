//! Push bombing as Okta Identity Engine logs it (`tests/fixtures/providers/okta_oie_push_bombing.jsonl`):
//! the password step and every push answer are `user.authentication.auth_via_mfa`, told apart
//! only by `debugData.factor`, and a denied push is `FAILURE` / `INVALID_CREDENTIALS`. The
//! events must read as the Classic ones do (`user.mfa.okta_verify.deny_push`), or the push
//! bombing rules see nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use authwatch_event::{Activity, AuthEvent, Factor, Outcome};
use authwatch_normalize::{Format, Limits};
use std::path::PathBuf;

fn events() -> Vec<AuthEvent> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/providers/okta_oie_push_bombing.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let okta = Format::Okta.normalizer();
    let auto = Format::Auto.normalizer();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let ev = okta
                .normalize(line.as_bytes(), 1, &Limits::default())
                .unwrap_or_else(|r| panic!("line {}: {r}", i + 1));
            let via_auto = auto
                .normalize(line.as_bytes(), 1, &Limits::default())
                .unwrap();
            assert_eq!(via_auto, ev, "line {}: auto chose another format", i + 1);
            ev
        })
        .collect()
}

fn summary(e: &AuthEvent) -> String {
    format!("{}/{}/{}/{}", e.activity, e.factor, e.outcome, e.reason)
}

#[test]
fn identity_engine_push_bombing_reads_as_push_bombing() {
    let evs = events();
    let got: Vec<String> = evs.iter().map(summary).collect();
    let mut want = vec!["mfa_verify/password/success/none".to_owned()];
    for _ in 0..6 {
        want.push("mfa_challenge/push/challenge/none".to_owned());
        want.push("mfa_verify/push/denied/push_denied".to_owned());
    }
    want.push("mfa_challenge/push/challenge/none".to_owned());
    want.push("mfa_verify/push/success/none".to_owned());
    assert_eq!(got, want);
    assert!(
        evs.iter()
            .all(|e| e.user.name == "ken.suzuki@example.co.jp")
    );
    assert!(
        evs.iter()
            .filter(|e| e.outcome == Outcome::Denied)
            .all(|e| e.reason_raw == "INVALID_CREDENTIALS")
    );

    // What `mfa_fatigue` counts (rules/mfa_fatigue.yaml): push answers denied or unanswered,
    // at least 5 within 10 minutes.
    let refused: Vec<i64> = evs
        .iter()
        .filter(|e| {
            e.factor == Factor::Push
                && e.activity == Activity::MfaVerify
                && matches!(e.outcome, Outcome::Denied | Outcome::Timeout)
        })
        .map(|e| e.time)
        .collect();
    assert!(refused.len() >= 5, "{refused:?}");
    let ten_minutes = 10 * 60_000;
    assert!(refused[4] - refused[0] <= ten_minutes);
    // What `mfa_fatigue_success` then looks for: a push approved within 10 minutes of the
    // campaign's last refused push.
    let last_refused = refused.last().copied().unwrap();
    let approval = evs
        .iter()
        .find(|e| {
            e.factor == Factor::Push
                && matches!(e.activity, Activity::MfaVerify | Activity::Logon)
                && e.outcome == Outcome::Success
        })
        .unwrap();
    assert!(approval.time > last_refused && approval.time - last_refused <= ten_minutes);
}
