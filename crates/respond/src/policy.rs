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
}
