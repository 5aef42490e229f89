//! `gen` determinism, `rules`, `schema`.

use crate::common::*;

#[test]
fn gen_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, la) = generate(dir.path(), 80, 2, 5);
    let first = (std::fs::read(&a).unwrap(), std::fs::read(&la).unwrap());
    let (b, lb) = generate(dir.path(), 80, 2, 5);
    assert_eq!(
        first,
        (std::fs::read(&b).unwrap(), std::fs::read(&lb).unwrap())
    );
    let (c, _) = generate(dir.path(), 80, 2, 6);
    assert_ne!(first.0, std::fs::read(&c).unwrap());
}

#[test]
fn rules_list_and_check() {
    let out = run_ok(authwatch().args(["rules", "list"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mfa_fatigue ") && text.contains("T1621"),
        "{text}"
    );
    run_ok(
        authwatch()
            .args(["rules", "check"])
            .arg(repo().join("rules")),
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let good = std::fs::read_to_string(repo().join("rules/mfa_fatigue.yaml")).unwrap();
    std::fs::write(&bad, good.replace("window: 10m", "window: 10m\nwindw: 5m")).unwrap();
    let out = run_fail(authwatch().args(["rules", "check"]).arg(&bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("unknown field `windw`"), "{err}");
}

#[test]
fn schema_command_prints_the_checked_in_schemas() {
    let out = run_ok(authwatch().args(["schema", "event"]));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schemas/auth_event.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, file);
    let out = run_ok(authwatch().args(["schema", "arrow"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Dictionary"));
}
