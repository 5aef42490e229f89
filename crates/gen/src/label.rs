//! Labels: the alerts a perfect detector raises on generated traffic.

use authwatch_event::{Entity, Timestamp};
use serde::{Deserialize, Serialize};

/// One incident the generator injected on purpose, as the detector should report it.
///
/// `entity` holds the key fields of the rule (`user`, `ip`, `asn` or `tenant`; both `tenant` and
/// `asn` for a spray rotating over one network, which a tenant-wide or a network-keyed detector
/// may report). A label names its `tenant` only when a tenant-wide alert reports it: an alert
/// about one user never reports a tenant-wide label (see [`crate::evaluate`]). `start..=end` is
/// the span of the events that make up the incident (see each category in [`categories`]).
///
/// Benign look-alikes of attacks carry no attack label (at most the `mfa_triage` label of what
/// they are), so that `evaluate` counts an attack alert on them as a false positive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Detection category (a built-in rule's category, e.g. `mfa_fatigue`).
    pub category: String,
    /// What the alert is about.
    pub entity: Entity,
    /// Time of the first event of the incident.
    pub start: Timestamp,
    /// Time of the last event of the incident.
    pub end: Timestamp,
    /// What was injected, for humans (for `mfa_triage`: `<cause class>: <cause>`).
    pub note: String,
}

impl Label {
    /// The order labels are returned in: by start, category, entity, end, note.
    pub(crate) fn sort_key(&self) -> (Timestamp, &str, String, Timestamp, &str) {
        (
            self.start,
            &self.category,
            self.entity.to_string(),
            self.end,
            &self.note,
        )
    }
}

/// The category ids the generator labels.
pub mod categories {
    /// ≥ 5 denied/unanswered pushes (or ≥ 10 sent) in 10 min, or ≥ 10 refusals paced over
    /// about an hour; entity user.
    pub const MFA_FATIGUE: &str = "mfa_fatigue";
    /// A push bombing that ended in an approval; entity user.
    pub const MFA_FATIGUE_SUCCESS: &str = "mfa_fatigue_success";
    /// The user pressed "report fraud"; entity user.
    pub const MFA_FRAUD_REPORT: &str = "mfa_fraud_report";
    /// Leaked-list password failures over many users; entity ip (asn for rotating IPs).
    pub const CREDENTIAL_STUFFING: &str = "credential_stuffing";
    /// Few passwords over many accounts, or one password once each; entity ip (tenant for the
    /// multi-source variant, tenant + asn for one rotating over a network's addresses).
    pub const PASSWORD_SPRAY: &str = "password_spray";
    /// One account hammered (whatever the letter case of the login typed); entity user.
    pub const BRUTE_FORCE: &str = "brute_force";
    /// A success after stuffing/spray/brute force; entity user + ip.
    pub const CREDENTIAL_COMPROMISE: &str = "credential_compromise";
    /// Each lock (entity user) and lockout waves (entity tenant).
    pub const ACCOUNT_LOCKOUT: &str = "account_lockout";
    /// Two successes too far apart for the time between them; entity user.
    pub const IMPOSSIBLE_TRAVEL: &str = "impossible_travel";
    /// A success from a never-seen device and country; entity user.
    pub const NEW_DEVICE_GEO: &str = "new_device_geo";
    /// A burst of risk blocks for one user (entity user) or a wave across users (tenant).
    pub const RISK_POLICY_BLOCK: &str = "risk_policy_block";
    /// A success through Tor / anonymous VPN / hosting / proxy; entity user + ip.
    pub const ANONYMIZER_LOGIN: &str = "anonymizer_login";
    /// An ordinary MFA failure and its cause class; entity user, egress ip or tenant.
    pub const MFA_TRIAGE: &str = "mfa_triage";

    /// Every category, sorted.
    pub const ALL: &[&str] = &[
        ACCOUNT_LOCKOUT,
        ANONYMIZER_LOGIN,
        BRUTE_FORCE,
        CREDENTIAL_COMPROMISE,
        CREDENTIAL_STUFFING,
        IMPOSSIBLE_TRAVEL,
        MFA_FATIGUE,
        MFA_FATIGUE_SUCCESS,
        MFA_FRAUD_REPORT,
        MFA_TRIAGE,
        NEW_DEVICE_GEO,
        PASSWORD_SPRAY,
        RISK_POLICY_BLOCK,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_round_trips_as_a_json_line() {
        let l = Label {
            category: categories::MFA_FATIGUE.into(),
            entity: Entity {
                user: Some("aiko.sato@example.co.jp".into()),
                ..Entity::default()
            },
            start: Timestamp(1_767_603_600_000),
            end: Timestamp(1_767_604_000_000),
            note: "8 pushes".into(),
        };
        let line = serde_json::to_string(&l).unwrap();
        assert_eq!(
            line,
            r#"{"category":"mfa_fatigue","entity":{"user":"aiko.sato@example.co.jp"},"start":"2026-01-05T09:00:00.000Z","end":"2026-01-05T09:06:40.000Z","note":"8 pushes"}"#
        );
        assert_eq!(serde_json::from_str::<Label>(&line).unwrap(), l);
    }

    #[test]
    fn category_list_is_sorted_and_unique() {
        assert!(categories::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
