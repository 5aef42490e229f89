//! Which alerts act, with which actions, and which accounts are never touched.

use authwatch_event::Alert;
use authwatch_pipeline::config::{RespondConfig, RespondPolicy, ResponseAction};
use std::collections::HashSet;

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    entries: Vec<RespondPolicy>,
    users: Vec<Pattern>,
    groups: HashSet<String>,
}

/// A case-insensitive pattern where `*` matches any run of characters.
#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        let lower = text.to_lowercase();
        Pattern {
            anchored_start: !lower.starts_with('*'),
            anchored_end: !lower.ends_with('*'),
            parts: lower
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    fn matches(&self, value: &str) -> bool {
        let value = value.to_lowercase();
        if self.parts.is_empty() {
            // "*" (or "**") matches anything; "" matches only "".
            return !(self.anchored_start && self.anchored_end) || value.is_empty();
        }
        let mut rest = value.as_str();
        let last = self.parts.len() - 1;
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 && self.anchored_start {
                let Some(r) = rest.strip_prefix(part.as_str()) else {
                    return false;
                };
                rest = r;
                if i == last && self.anchored_end {
                    return rest.is_empty();
                }
                continue;
            }
            if i == last && self.anchored_end {
                return rest.ends_with(part.as_str());
            }
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

impl Policy {
    /// From `[respond]`.
    pub fn from_config(config: &RespondConfig) -> Policy {
        Policy {
            entries: config.policy.clone(),
            users: config
                .allow_list
                .users
                .iter()
                .map(|u| Pattern::new(u))
                .collect(),
            groups: config
                .allow_list
                .groups
                .iter()
                .map(|g| g.to_lowercase())
                .collect(),
        }
    }

    /// The actions for `alert`: those of the first entry naming its rule (or naming none)
    /// whose `min_severity` it reaches.
    pub fn select(&self, alert: &Alert) -> Option<&[ResponseAction]> {
        self.entries
            .iter()
            .find(|e| {
                (e.rules.is_empty() || e.rules.iter().any(|r| r == &alert.rule_id))
                    && alert.severity >= e.min_severity
            })
            .map(|e| e.actions.as_slice())
    }

    /// Whether the account (name or provider id) is on the user allow-list.
    pub fn protects_user(&self, account: &str) -> bool {
        self.users.iter().any(|p| p.matches(account))
    }

    /// The allow-listed group among `groups` (lower-cased names and ids), if any.
    pub fn protecting_group<'a>(&self, groups: &'a [String]) -> Option<&'a str> {
        groups
            .iter()
            .find(|g| self.groups.contains(g.as_str()))
            .map(String::as_str)
    }

    /// Whether a group allow-list is configured.
    pub fn has_group_allow_list(&self) -> bool {
        !self.groups.is_empty()
    }
}

/// Refuses a policy that names a rule no loaded rule or SQL detection has (`known`: the ids of
/// the rule pack and of the windowed SQL detections the run loads). Alerts carry only those ids,
/// so such an entry never selects an alert: a typo in `mfa_fatigue_success` would leave
/// automatic mode silently never acting. The error names every unknown id and, when one known
/// id is obviously meant (a small edit away), that id. The responder itself cannot check this
/// (it does not see the rules): the commands that load rules and start a responder call it.
pub fn check_rule_ids(config: &RespondConfig, known: &[&str]) -> Result<(), crate::RespondError> {
    let mut unknown = Vec::new();
    for (i, entry) in config.policy.iter().enumerate() {
        for id in entry.rules.iter().filter(|r| !known.contains(&r.as_str())) {
            let hint = closest(id, known)
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            unknown.push(format!("respond.policy[{i}].rules: {id:?}{hint}"));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(crate::RespondError::Config {
        key: "respond.policy",
        message: format!(
            "names rules that no loaded rule or SQL detection has, so the entry would never act: \
             {}. Alerts carry the ids of the rule pack (`authwatch rules list`) and of the \
             [sql] detections",
            unknown.join("; ")
        ),
    })
}

/// The known id `id` most likely misspells: the only one at the smallest edit distance, when
/// that distance is small for the id's length (at most 1 for ids of up to 5 characters, 2 up
/// to 12, 3 beyond).
fn closest<'a>(id: &str, known: &[&'a str]) -> Option<&'a str> {
    let bound = match id.chars().count() {
        0..=5 => 1,
        6..=12 => 2,
        _ => 3,
    };
    let lower = id.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    // Two ids equally close: neither is obviously meant.
    let mut tied = false;
    for &k in known {
        let d = edit_distance(&lower, &k.to_lowercase());
        match best {
            Some((b, _)) if d > b => {}
            Some((b, kept)) if d == b => tied |= k != kept,
            _ => {
                best = Some((d, k));
                tied = false;
            }
        }
    }
    best.filter(|&(d, _)| d <= bound && !tied).map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions, substitutions), over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |t: &str, v: &str| Pattern::new(t).matches(v);
        assert!(p("breakglass@x.com", "BreakGlass@X.com"));
        assert!(!p("breakglass@x.com", "breakglass@x.com.evil"));
        assert!(p("admin-*", "admin-alice"));
        assert!(!p("admin-*", "alice-admin-"));
        assert!(p("*@admins.example.com", "bob@admins.example.com"));
        assert!(!p("*@admins.example.com", "bob@admins.example.com.evil"));
        assert!(p("svc-*-prod", "svc-db-prod"));
        assert!(!p("svc-*-prod", "svc-db-dev"));
        assert!(p("*", "anyone"));
        assert!(p("a*b*c", "axxbyyc"));
        assert!(!p("a*b*c", "axxbyy"));
    }

    #[test]
    fn policy_rule_ids_must_be_loaded_and_typos_are_named() {
        let known = [
            "mfa_fatigue_success",
            "credential_compromise",
            "brute_force",
            "fails_per_user",
        ];
        let mut c = RespondConfig::default();
        assert!(check_rule_ids(&c, &known).is_ok());
        c.policy[0].rules = vec![
            "mfa_fatigue_sucess".to_owned(),
            "credential_compromize".to_owned(),
            "fails_per_user".to_owned(),
            "something_else_entirely".to_owned(),
        ];
        let e = check_rule_ids(&c, &known).unwrap_err().to_string();
        assert!(e.contains("respond.policy"), "{e}");
        assert!(
            e.contains(r#""mfa_fatigue_sucess" (did you mean "mfa_fatigue_success"?)"#),
            "{e}"
        );
        assert!(
            e.contains(r#""credential_compromize" (did you mean "credential_compromise"?)"#),
            "{e}"
        );
        assert!(e.contains(r#""something_else_entirely""#), "{e}");
        assert!(
            !e.contains(r#""fails_per_user""#),
            "a loaded SQL id is known: {e}"
        );
        assert!(!e.contains("something_else_entirely\" (did"), "{e}");
        // An entry naming no rule selects every rule: nothing to check.
        c.policy[0].rules.clear();
        assert!(check_rule_ids(&c, &known).is_ok());
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(closest("brute_forc", &["brute_force", "brute_forcx"]), None);
        assert_eq!(
            closest("brute_forse", &["brute_force"]),
            Some("brute_force")
        );
        assert_eq!(closest("xyz", &["brute_force"]), None);
    }
}
