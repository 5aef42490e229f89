//! The compiled rule engine of authwatch.
//!
//! Detection engineers write rules in YAML (see `docs/RULES.md`); [`RulePack`] loads and checks
//! them at start-up and compiles each into filters over bitmasks, group-by key extractors,
//! bounded sliding-window counters and templates, so that no rule text is interpreted per event.
//! The [`Engine`] then keeps per-key state, fires [`authwatch_event::Alert`]s with deterministic
//! ids, links escalations (`after:`), expires idle keys by watermark and can snapshot and restore
//! itself for checkpoints.
//!
//! ```
//! use authwatch_detect::{EngineLimits, RulePack};
//! use authwatch_event::AuthEvent;
//!
//! let pack = RulePack::builtin().unwrap();
//! let mut engine = pack.engine(EngineLimits::default());
//! let mut alerts = Vec::new();
//! for i in 0..6 {
//!     let line = format!(
//!         r#"{{"time":{},"provider":"okta","event_id":"p{i}","user":{{"name":"aiko@example.jp"}},
//!            "activity":"mfa_verify","factor":"push","outcome":"denied","reason":"push_denied"}}"#,
//!         1_767_603_600_000i64 + i * 30_000
//!     );
//!     let ev: AuthEvent = serde_json::from_str(&line).unwrap();
//!     engine.on_event(&ev, &mut alerts);
//! }
//! assert_eq!(alerts.len(), 1);
//! assert_eq!(alerts[0].category, "mfa_fatigue");
//! ```
#![deny(missing_docs)]

mod compile;
mod engine;
mod error;
mod key;
mod predicate;
pub mod ruletest;
pub mod sigma;
mod sketch;
pub mod spec;
mod template;

pub use compile::{CompiledRule, parse_duration_ms};
pub use engine::{Engine, EngineLimits, RuleStats, SnapshotError};
pub use error::RuleError;
pub use key::{Key, KeyField, KeyPart};
pub use predicate::filter_fields;

use std::path::{Path, PathBuf};

/// The rules shipped with authwatch (`rules/` in the repository), compiled into the binary so
/// that the demo and a fresh install work with no files around.
const BUILTIN: &[(&str, &str)] = &[
    (
        "rules/account_lockout.yaml",
        include_str!("../../../rules/account_lockout.yaml"),
    ),
    (
        "rules/account_lockout_wave.yaml",
        include_str!("../../../rules/account_lockout_wave.yaml"),
    ),
    (
        "rules/anonymizer_login.yaml",
        include_str!("../../../rules/anonymizer_login.yaml"),
    ),
    (
        "rules/brute_force.yaml",
        include_str!("../../../rules/brute_force.yaml"),
    ),
    (
        "rules/brute_force_distributed.yaml",
        include_str!("../../../rules/brute_force_distributed.yaml"),
    ),
    (
        "rules/credential_compromise.yaml",
        include_str!("../../../rules/credential_compromise.yaml"),
    ),
    (
        "rules/credential_stuffing.yaml",
        include_str!("../../../rules/credential_stuffing.yaml"),
    ),
    (
        "rules/credential_stuffing_asn.yaml",
        include_str!("../../../rules/credential_stuffing_asn.yaml"),
    ),
    (
        "rules/credential_stuffing_device.yaml",
        include_str!("../../../rules/credential_stuffing_device.yaml"),
    ),
    (
        "rules/impossible_travel.yaml",
        include_str!("../../../rules/impossible_travel.yaml"),
    ),
    (
        "rules/mfa_code_guessing.yaml",
        include_str!("../../../rules/mfa_code_guessing.yaml"),
    ),
    (
        "rules/mfa_fatigue.yaml",
        include_str!("../../../rules/mfa_fatigue.yaml"),
    ),
    (
        "rules/mfa_fatigue_ignored.yaml",
        include_str!("../../../rules/mfa_fatigue_ignored.yaml"),
    ),
    (
        "rules/mfa_fatigue_pushes.yaml",
        include_str!("../../../rules/mfa_fatigue_pushes.yaml"),
    ),
    (
        "rules/mfa_fatigue_slow.yaml",
        include_str!("../../../rules/mfa_fatigue_slow.yaml"),
    ),
    (
        "rules/mfa_fatigue_success.yaml",
        include_str!("../../../rules/mfa_fatigue_success.yaml"),
    ),
    (
        "rules/mfa_fraud_report.yaml",
        include_str!("../../../rules/mfa_fraud_report.yaml"),
    ),
    (
        "rules/new_device_geo.yaml",
        include_str!("../../../rules/new_device_geo.yaml"),
    ),
    (
        "rules/new_device_network.yaml",
        include_str!("../../../rules/new_device_network.yaml"),
    ),
    (
        "rules/password_spray.yaml",
        include_str!("../../../rules/password_spray.yaml"),
    ),
    (
        "rules/password_spray_asn.yaml",
        include_str!("../../../rules/password_spray_asn.yaml"),
    ),
    (
        "rules/password_spray_multi_source.yaml",
        include_str!("../../../rules/password_spray_multi_source.yaml"),
    ),
    (
        "rules/password_spray_one_try.yaml",
        include_str!("../../../rules/password_spray_one_try.yaml"),
    ),
    (
        "rules/risk_policy_block.yaml",
        include_str!("../../../rules/risk_policy_block.yaml"),
    ),
    (
        "rules/risk_policy_block_wave.yaml",
        include_str!("../../../rules/risk_policy_block_wave.yaml"),
    ),
    (
        "rules/triage_authenticator_error.yaml",
        include_str!("../../../rules/triage_authenticator_error.yaml"),
    ),
    (
        "rules/triage_clock_drift.yaml",
        include_str!("../../../rules/triage_clock_drift.yaml"),
    ),
    (
        "rules/triage_enrollment.yaml",
        include_str!("../../../rules/triage_enrollment.yaml"),
    ),
    (
        "rules/triage_lockout.yaml",
        include_str!("../../../rules/triage_lockout.yaml"),
    ),
    (
        "rules/triage_policy_block.yaml",
        include_str!("../../../rules/triage_policy_block.yaml"),
    ),
    (
        "rules/triage_provider_outage.yaml",
        include_str!("../../../rules/triage_provider_outage.yaml"),
    ),
    (
        "rules/triage_push_blocked_network.yaml",
        include_str!("../../../rules/triage_push_blocked_network.yaml"),
    ),
    (
        "rules/triage_push_not_delivered.yaml",
        include_str!("../../../rules/triage_push_not_delivered.yaml"),
    ),
    (
        "rules/triage_user_mistake.yaml",
        include_str!("../../../rules/triage_user_mistake.yaml"),
    ),
];

/// A checked set of rules.
#[derive(Debug, Clone)]
pub struct RulePack {
    rules: Vec<CompiledRule>,
    order: Vec<usize>,
}

impl RulePack {
    /// The built-in pack.
    pub fn builtin() -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        for (path, text) in BUILTIN {
            rules.extend(compile::compile_text(Path::new(path), text)?);
        }
        RulePack::from_rules(rules)
    }

    /// Loads every `*.yaml` / `*.yml` file of a directory (sorted by name), or one file.
    pub fn load(path: &Path) -> Result<Self, RuleError> {
        let io = |source| RuleError::Io {
            path: path.to_owned(),
            source,
        };
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io)? {
                let file = entry.map_err(io)?.path();
                let yaml = file.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml")
                });
                if yaml {
                    files.push(file);
                }
            }
            files.sort();
            files
        } else {
            vec![path.to_owned()]
        };
        let mut rules = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| RuleError::Io {
                path: file.clone(),
                source,
            })?;
            rules.extend(compile::compile_text(&file, &text)?);
        }
        // A pack with no rule detects nothing, silently: a wrong path, not a choice.
        if rules.is_empty() {
            return Err(RuleError::Pack(format!(
                "{}: no rules (a rules directory holds *.yaml or *.yml files; subdirectories \
                 are not read)",
                path.display()
            )));
        }
        RulePack::from_rules(rules)
    }

    /// Checks a pack: unique ids, `after:` references that exist and form no cycle. The
    /// evaluation order puts referenced rules first.
    pub fn from_rules(rules: Vec<CompiledRule>) -> Result<Self, RuleError> {
        for (i, r) in rules.iter().enumerate() {
            if let Some(dup) = rules[..i].iter().find(|o| o.id == r.id) {
                return Err(RuleError::Pack(format!(
                    "rule id {} is defined twice: {} and {}",
                    r.id,
                    dup.source.display(),
                    r.source.display()
                )));
            }
            for (what, seq) in [("after", &r.after), ("unless", &r.unless)] {
                let Some(seq) = seq else { continue };
                for target in &seq.rules {
                    let Some(t) = rules.iter().find(|o| &o.id == target) else {
                        return Err(RuleError::Pack(format!(
                            "{}: rule {} follows unknown rule {target}",
                            r.source.display(),
                            r.id
                        )));
                    };
                    // Incidents are found by their rule's key fields only: `on` fields none of
                    // which the target is keyed by would never find one of its incidents.
                    if !seq.on.iter().any(|f| t.key.contains(f)) {
                        return Err(RuleError::Pack(format!(
                            "{}: rule {}'s {what}.on {:?} names none of the key fields of {target} ({:?}), so it can never find {target}'s incidents",
                            r.source.display(),
                            r.id,
                            seq.on.iter().map(|f| f.name()).collect::<Vec<_>>(),
                            t.key.iter().map(|f| f.name()).collect::<Vec<_>>(),
                        )));
                    }
                }
            }
        }
        // Depth-first topological sort; rules are few, so clarity beats cleverness.
        let mut order = Vec::with_capacity(rules.len());
        let mut mark = vec![0u8; rules.len()]; // 0 new, 1 in progress, 2 done
        fn visit(
            i: usize,
            rules: &[CompiledRule],
            mark: &mut [u8],
            order: &mut Vec<usize>,
        ) -> Result<(), RuleError> {
            match mark[i] {
                2 => return Ok(()),
                1 => {
                    return Err(RuleError::Pack(format!(
                        "rules form a cycle through {}",
                        rules[i].id
                    )));
                }
                _ => {}
            }
            mark[i] = 1;
            for target in rules[i]
                .after
                .iter()
                .chain(&rules[i].unless)
                .flat_map(|a| &a.rules)
            {
                if let Some(j) = rules.iter().position(|o| &o.id == target) {
                    visit(j, rules, mark, order)?;
                }
            }
            mark[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..rules.len() {
            visit(i, &rules, &mut mark, &mut order)?;
        }
        Ok(RulePack { rules, order })
    }

    /// The rules.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// A fresh engine over this pack.
    pub fn engine(&self, limits: EngineLimits) -> Engine {
        Engine::new(self.rules.clone(), self.order.clone(), limits)
    }
}

#[cfg(test)]
mod tests;
