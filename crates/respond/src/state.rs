//! The responder's state: one incident per account (idempotency), the queue of actions waiting
//! for a token, the circuit breaker and the last page. Snapshot/restore as bytes, so that it
//! joins the runtime's checkpoint and a restart repeats no action.

use authwatch_pipeline::config::{RespondMode, ResponseAction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// An account, per tenant. Names are compared case-insensitively (providers do). The tenant is
/// as the responder's target compares it: the responder builds keys with the tenant folded
/// (Okta org names and Entra directory ids ignore case), so that case variants of one served
/// tenant are one account, not two incidents and two actions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountKey {
    /// The tenant (`""` when the alert names none).
    pub tenant: String,
    /// The account, lower-cased.
    pub account: String,
}

impl AccountKey {
    /// The key of `account` in `tenant`, the tenant as given (the caller folds it as its
    /// target compares tenants).
    pub fn new(tenant: Option<&str>, account: &str) -> AccountKey {
        AccountKey {
            tenant: tenant.unwrap_or_default().to_owned(),
            account: account.to_lowercase(),
        }
    }
}

/// Where an account's incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Actions carried out (or the account was already in the target state).
    Executed,
    /// Dry-run: recorded as if carried out.
    DryRun,
    /// Refused (allow-listed group found at the provider).
    Refused,
    /// Waiting for a token.
    Queued,
    /// Waiting for a human.
    PendingApproval,
    /// Rejected by a human.
    Rejected,
    /// Failed; a later alert for the account tries again.
    Failed,
    /// Dropped without acting: decided under another mode, or for a tenant the target no
    /// longer serves. A later alert for the account is decided afresh.
    Cancelled,
}

impl IncidentStatus {
    /// Whether the incident leaves the account open to the next alert (nothing was done, and
    /// nothing waits).
    pub fn reopens(self) -> bool {
        matches!(self, IncidentStatus::Failed | IncidentStatus::Cancelled)
    }

    /// The incident's status for its pending action's: decided ones map to their outcome, open
    /// ones to waiting.
    pub fn decided(status: crate::store::PendingStatus) -> IncidentStatus {
        use crate::store::PendingStatus as P;
        match status {
            P::Rejected => IncidentStatus::Rejected,
            P::Failed => IncidentStatus::Failed,
            P::Refused => IncidentStatus::Refused,
            P::Executed => IncidentStatus::Executed,
            P::AwaitingApproval => IncidentStatus::PendingApproval,
            P::Queued => IncidentStatus::Queued,
        }
    }
}

/// One account's incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The alert that opened it.
    pub alert_id: String,
    /// Its rule.
    pub rule_id: String,
    /// When it opened (responder clock, ms).
    pub opened_ms: i64,
    /// Where it stands.
    pub status: IncidentStatus,
    /// When a rate-limit token was taken for it (ms), if one was.
    pub acted_ms: Option<i64>,
    /// Its pending-approval / queue id.
    pub pending_id: Option<String>,
    /// The mode that decided it. `None` in a state saved before it was recorded: see
    /// [`Incident::decided_in`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RespondMode>,
    /// The actions the incident carried out or owes (queued, awaiting approval), of every
    /// alert that added to it: a later alert is a duplicate only for these, and its other
    /// actions (a suspension after a notification) are still carried out. Empty in a state
    /// saved before it was recorded: what such an incident covers is unknown, so it covers
    /// every action, as it did then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ResponseAction>,
    /// When the incident took rate-limit tokens before the one in `acted_ms` (ms): an incident
    /// that took more actions later took a token for each alert that added to it, and a
    /// restart must take all of them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_acted_ms: Vec<i64>,
}

impl Incident {
    /// The mode that decided the incident: the one recorded, or, for a state saved before the
    /// mode was recorded, the one its status tells (only dry-run records `DryRun`, only approval
    /// mode waits for approval).
    pub fn decided_in(&self) -> Option<RespondMode> {
        self.mode.or(match self.status {
            IncidentStatus::DryRun => Some(RespondMode::DryRun),
            IncidentStatus::PendingApproval => Some(RespondMode::Approval),
            _ => None,
        })
    }

    /// Whether the incident makes the account's next alert a duplicate for a responder in
    /// `mode`, at `now_ms`: a waiting one always (its action is still owed), a finished one
    /// within `ttl_ms` of its opening. A failed or cancelled one never (nothing was done), nor
    /// one decided in dry-run once the responder acts: dry-run changed nothing, and after the
    /// documented rollout (dry-run, then approval or automatic) the account's next alert must
    /// be decided in the new mode, not be held for `incident_ttl` by a rehearsal.
    pub fn holds(&self, now_ms: i64, ttl_ms: i64, mode: RespondMode) -> bool {
        if self.status.reopens()
            || (self.decided_in() == Some(RespondMode::DryRun) && mode != RespondMode::DryRun)
        {
            return false;
        }
        matches!(
            self.status,
            IncidentStatus::Queued | IncidentStatus::PendingApproval
        ) || now_ms.saturating_sub(self.opened_ms) < ttl_ms
    }

    /// Whether the incident covers every one of `actions`: they were carried out or are owed
    /// within it, so an alert asking for them is a duplicate. A refused incident covers every
    /// action (the refusal is about the account: an allow-listed group, another identity), and
    /// so does one saved before incidents recorded their actions.
    pub fn covers(&self, actions: &[ResponseAction]) -> bool {
        self.status == IncidentStatus::Refused
            || self.actions.is_empty()
            || actions.iter().all(|a| self.actions.contains(a))
    }

    /// Whether the incident waits for its action (a token, a human).
    pub fn waiting(&self) -> bool {
        matches!(
            self.status,
            IncidentStatus::Queued | IncidentStatus::PendingApproval
        )
    }

    /// How many rate-limit tokens were taken for the incident within `period_ms` before
    /// `now_ms`. What dry-run decided took none that counts (its buckets are a rehearsal within
    /// its own process), even in a state written before dry-run stopped recording `acted_ms`.
    pub fn spent_within(&self, now_ms: i64, period_ms: i64) -> usize {
        if self.decided_in() == Some(RespondMode::DryRun) {
            return 0;
        }
        self.tokens_ms()
            .filter(|acted| now_ms.saturating_sub(*acted) < period_ms)
            .count()
    }

    /// When each rate-limit token of the incident was taken (ms).
    pub fn tokens_ms(&self) -> impl Iterator<Item = i64> + '_ {
        self.earlier_acted_ms.iter().copied().chain(self.acted_ms)
    }
}

/// The alert facts a queued or pending action keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertFacts {
    /// The alert.
    pub alert_id: String,
    /// Its rule.
    pub rule_id: String,
    /// Its severity.
    pub severity: authwatch_event::Severity,
    /// The tenant.
    pub tenant: Option<String>,
    /// The account as the alert names it.
    pub account: String,
}

/// An action waiting for a rate-limit token or a closed circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedAction {
    /// Its id in the pending store (humans can approve or reject it there).
    pub id: String,
    /// The account.
    pub key: AccountKey,
    /// The alert.
    pub alert: AlertFacts,
    /// The actions.
    pub actions: Vec<ResponseAction>,
    /// When it was queued (ms).
    pub queued_ms: i64,
    /// The mode it was decided in. Only a responder in that mode carries it out; `None` (a
    /// state saved before the mode was recorded) matches no mode.
    #[serde(default)]
    pub mode: Option<RespondMode>,
    /// Not tried again before this time (ms): an action whose provider was unavailable waits
    /// as long as the provider asked (`Retry-After`) or `respond.http.requeue_delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// How many times it went back to the queue after its provider was unavailable.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeues: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The circuit breaker: closed, open until a time, then half-open for one trial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    /// Consecutive failed actions.
    pub failures: u32,
    /// Open until this time (ms); after it, one trial action is let through.
    pub open_until_ms: Option<i64>,
}

impl BreakerState {
    /// Whether an action may be tried now (closed, or half-open).
    pub fn allows(&self, now_ms: i64) -> bool {
        self.open_until_ms.is_none_or(|until| now_ms >= until)
    }

    /// Whether the circuit is open now.
    pub fn is_open(&self, now_ms: i64) -> bool {
        !self.allows(now_ms)
    }

    /// Records a success: closes the circuit.
    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until_ms = None;
    }

    /// Records a failure; returns true when this failure opened the circuit.
    pub fn failure(&mut self, now_ms: i64, threshold: u32, cooldown_ms: i64) -> bool {
        self.failures = self.failures.saturating_add(1);
        let half_open_trial = self.open_until_ms.is_some();
        if half_open_trial || self.failures >= threshold {
            self.open_until_ms = Some(now_ms.saturating_add(cooldown_ms));
            return true;
        }
        false
    }
}

/// Everything the responder must not forget across a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseState {
    /// Incidents by account (a list in JSON: its keys are not strings).
    #[serde(with = "as_pairs")]
    pub incidents: BTreeMap<AccountKey, Incident>,
    /// Actions waiting for a token, oldest first.
    pub queue: VecDeque<QueuedAction>,
    /// The circuit breaker.
    pub breaker: BreakerState,
    /// When the pager was last called (ms), of any kind.
    pub last_page_ms: Option<i64>,
    /// When the pager was last called (ms) per throttle: the pages that say actions are
    /// refused for want of room (`pending_full`, `queue_full`) have one each, all others share
    /// `""`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_page_by_kind: BTreeMap<String, i64>,
    /// The responder clock at the last alert handled (ms): an event-time clock resumes from
    /// it. Part of the state (not read at snapshot time) so that one state gives one snapshot.
    #[serde(default)]
    pub clock_ms: i64,
}

mod as_pairs {
    use super::{AccountKey, Incident};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<AccountKey, Incident>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<AccountKey, Incident>, D::Error> {
        Ok(Vec::<(AccountKey, Incident)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// The snapshot format's version; a snapshot of another version is refused, not misread.
const SNAPSHOT_VERSION: u32 = 1;

#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    state: &'a ResponseState,
}

#[derive(Deserialize)]
struct SnapshotIn {
    version: u32,
    state: ResponseState,
}

/// A snapshot could not be restored. Whose fault: the checkpoint's (corrupt or from another
/// version); not retryable.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a responder snapshot.
    #[error("responder snapshot: {0}")]
    Corrupt(String),
    /// The state could not be encoded.
    #[error("responder snapshot: cannot encode: {0}")]
    Encode(String),
    /// Written by another format version.
    #[error("responder snapshot: format version {found}, expected {SNAPSHOT_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
}

impl ResponseState {
    /// The key the account's incident is kept under: `key` itself, or the key of an incident
    /// that differs from it only in whether the tenant is known. An alert may lack the tenant
    /// its account's incident has (a SQL detection without its deciding event), or an incident
    /// may predate alerts that carry the tenant (a state saved by an older version): either way
    /// it is the same account's incident, and acting again would repeat the action.
    pub fn incident_key(&self, key: AccountKey) -> AccountKey {
        if self.incidents.contains_key(&key) {
            return key;
        }
        if key.tenant.is_empty() {
            // The account in some tenant: only when that is unambiguous.
            let mut same = self.incidents.keys().filter(|k| k.account == key.account);
            return match (same.next(), same.next()) {
                (Some(only), None) => only.clone(),
                _ => key,
            };
        }
        let bare = AccountKey::new(None, &key.account);
        if self.incidents.contains_key(&bare) {
            bare
        } else {
            key
        }
    }

    /// Rewrites every account key's tenant with `fold` (the target's comparison of tenant
    /// names), for a state saved before keys were folded: its `Example` and `example` incidents
    /// become one account's. When two incidents meet, the one that waits (its action is still
    /// owed), else the later one, is kept.
    pub fn fold_tenants(&mut self, fold: impl Fn(&str) -> String) {
        if self.incidents.keys().all(|k| fold(&k.tenant) == k.tenant)
            && self
                .queue
                .iter()
                .all(|q| fold(&q.key.tenant) == q.key.tenant)
        {
            return;
        }
        let waiting = |i: &Incident| {
            matches!(
                i.status,
                IncidentStatus::Queued | IncidentStatus::PendingApproval
            )
        };
        let mut folded: BTreeMap<AccountKey, Incident> = BTreeMap::new();
        for (key, incident) in std::mem::take(&mut self.incidents) {
            let key = AccountKey {
                tenant: fold(&key.tenant),
                account: key.account,
            };
            match folded.get(&key) {
                Some(kept)
                    if (waiting(kept), kept.opened_ms)
                        >= (waiting(&incident), incident.opened_ms) => {}
                _ => {
                    folded.insert(key, incident);
                }
            }
        }
        self.incidents = folded;
        for q in &mut self.queue {
            q.key.tenant = fold(&q.key.tenant);
        }
    }

    /// The state as bytes (versioned JSON: small, and readable when investigating).
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        serde_json::to_vec(&SnapshotOut {
            version: SNAPSHOT_VERSION,
            state: self,
        })
        .map_err(|e| SnapshotError::Encode(e.to_string()))
    }

    /// The state from [`ResponseState::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<ResponseState, SnapshotError> {
        let s: SnapshotIn =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found: s.version });
        }
        Ok(s.state)
    }

    /// Forgets finished incidents older than `ttl_ms`, then the oldest finished ones beyond
    /// `max`. Waiting incidents (queued, pending) are kept: their actions are still owed. So
    /// are incidents that took a rate-limit token within `token_period_ms` (the longest limit
    /// period), past their ttl and beyond `max`: a restart takes back only the tokens of the
    /// incidents in the state, and forgetting one would let it act on more accounts than the
    /// limits allow. (They are bounded by the limits themselves; past its ttl such an incident
    /// no longer holds the account.) Returns how many were forgotten.
    pub fn sweep(&mut self, now_ms: i64, ttl_ms: i64, token_period_ms: i64, max: usize) -> usize {
        let before = self.incidents.len();
        let kept = |i: &Incident| i.waiting() || i.spent_within(now_ms, token_period_ms) > 0;
        self.incidents
            .retain(|_, i| kept(i) || now_ms.saturating_sub(i.opened_ms) < ttl_ms);
        if self.incidents.len() > max {
            let mut finished: Vec<(i64, AccountKey)> = self
                .incidents
                .iter()
                .filter(|(_, i)| !kept(i))
                .map(|(k, i)| (i.opened_ms, k.clone()))
                .collect();
            finished.sort();
            let excess = self.incidents.len() - max;
            for (_, k) in finished.into_iter().take(excess) {
                self.incidents.remove(&k);
            }
        }
        before - self.incidents.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn incident(opened_ms: i64, status: IncidentStatus) -> Incident {
        Incident {
            alert_id: "a".into(),
            rule_id: "r".into(),
            opened_ms,
            status,
            acted_ms: None,
            pending_id: None,
            mode: None,
            actions: vec![],
            earlier_acted_ms: vec![],
        }
    }

    #[test]
    fn an_incident_is_found_whether_or_not_the_tenant_is_known() {
        let mut s = ResponseState::default();
        let key = |t: Option<&str>, a: &str| AccountKey::new(t, a);
        // Saved before alerts carried the tenant: found by an alert that has it.
        s.incidents
            .insert(key(None, "bob"), incident(1, IncidentStatus::Executed));
        assert_eq!(s.incident_key(key(Some("acme"), "bob")), key(None, "bob"));
        // An alert without the tenant finds the account's one incident in a tenant.
        s.incidents.insert(
            key(Some("acme"), "eve"),
            incident(1, IncidentStatus::Executed),
        );
        assert_eq!(s.incident_key(key(None, "eve")), key(Some("acme"), "eve"));
        // Two tenants with that login: ambiguous, so the alert's own key.
        s.incidents.insert(
            key(Some("globex"), "eve"),
            incident(1, IncidentStatus::Executed),
        );
        assert_eq!(s.incident_key(key(None, "eve")), key(None, "eve"));
        // The exact key wins; a new account keeps its own.
        assert_eq!(
            s.incident_key(key(Some("globex"), "eve")),
            key(Some("globex"), "eve")
        );
        assert_eq!(
            s.incident_key(key(Some("acme"), "zed")),
            key(Some("acme"), "zed")
        );
    }

    #[test]
    fn what_dry_run_decided_holds_only_in_dry_run_and_spent_nothing() {
        let ttl = 1_000;
        let mut dry = incident(0, IncidentStatus::DryRun);
        dry.acted_ms = Some(0); // as a state of an older version has it
        assert!(dry.holds(10, ttl, RespondMode::DryRun));
        assert!(!dry.holds(10, ttl, RespondMode::Approval));
        assert!(!dry.holds(10, ttl, RespondMode::Automatic));
        assert_eq!(dry.spent_within(10, ttl), 0);
        // Refused in dry-run (mode recorded): a rehearsal too.
        let mut refused = incident(0, IncidentStatus::Refused);
        refused.mode = Some(RespondMode::DryRun);
        assert!(!refused.holds(10, ttl, RespondMode::Automatic));
        // What a mode that acts decided holds in every mode, for the ttl.
        let mut done = incident(0, IncidentStatus::Executed);
        done.acted_ms = Some(0);
        done.mode = Some(RespondMode::Automatic);
        for mode in [
            RespondMode::DryRun,
            RespondMode::Approval,
            RespondMode::Automatic,
        ] {
            assert!(done.holds(10, ttl, mode));
            assert!(!done.holds(ttl, ttl, mode));
        }
        assert_eq!(done.spent_within(10, ttl), 1);
        assert_eq!(done.spent_within(ttl, ttl), 0);
        // A waiting one holds past the ttl (its action is owed; a pending approval of another
        // mode is closed by the responder before the account's next alert is decided).
        let pending = incident(0, IncidentStatus::PendingApproval);
        assert_eq!(pending.decided_in(), Some(RespondMode::Approval));
        assert!(pending.holds(10 * ttl, ttl, RespondMode::Approval));
    }

    #[test]
    fn an_older_states_tenant_case_variants_fold_into_one_account() {
        let mut s = ResponseState::default();
        let key = |t: &str| AccountKey::new(Some(t), "bob");
        s.incidents
            .insert(key("Example"), incident(5, IncidentStatus::Executed));
        s.incidents
            .insert(key("EXAMPLE"), incident(1, IncidentStatus::Queued));
        s.incidents
            .insert(key("example"), incident(9, IncidentStatus::Failed));
        s.incidents
            .insert(key("Other"), incident(1, IncidentStatus::Executed));
        s.fold_tenants(|t| t.to_ascii_lowercase());
        assert_eq!(s.incidents.len(), 2);
        // The waiting one wins over later finished ones: its action is still owed.
        assert_eq!(s.incidents[&key("example")].status, IncidentStatus::Queued);
        assert!(s.incidents.contains_key(&key("other")));
        // Already folded: nothing changes.
        let before = s.clone();
        s.fold_tenants(|t| t.to_ascii_lowercase());
        assert_eq!(s, before);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_garbage() {
        let mut s = ResponseState::default();
        s.incidents.insert(
            AccountKey::new(Some("t"), "Alice@X"),
            incident(5, IncidentStatus::Executed),
        );
        s.breaker.failures = 2;
        let back = ResponseState::restore(&s.snapshot().unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(
            back.incidents
                .contains_key(&AccountKey::new(Some("t"), "alice@x"))
        );
        assert!(matches!(
            ResponseState::restore(b"{\"version\":9,\"state\":{}}"),
            Err(SnapshotError::Version { found: 9 }) | Err(SnapshotError::Corrupt(_))
        ));
        assert!(ResponseState::restore(b"nope").is_err());
    }

    #[test]
    fn sweep_keeps_owed_actions() {
        let mut s = ResponseState::default();
        s.incidents.insert(
            AccountKey::new(None, "old"),
            incident(0, IncidentStatus::Executed),
        );
        s.incidents.insert(
            AccountKey::new(None, "waiting"),
            incident(0, IncidentStatus::Queued),
        );
        s.incidents.insert(
            AccountKey::new(None, "new"),
            incident(900, IncidentStatus::Executed),
        );
        assert_eq!(s.sweep(1_000, 500, 500, 10), 1);
        assert!(s.incidents.contains_key(&AccountKey::new(None, "waiting")));
        assert_eq!(s.sweep(1_000, 500, 500, 1), 1);
        assert_eq!(s.incidents.len(), 1);
    }

    #[test]
    fn sweep_keeps_tokens_within_the_longest_period() {
        let mut s = ResponseState::default();
        let mut spent = incident(0, IncidentStatus::Executed);
        spent.acted_ms = Some(0);
        spent.mode = Some(RespondMode::Automatic);
        let mut rehearsed = spent.clone();
        rehearsed.mode = Some(RespondMode::DryRun);
        let mut escalated = incident(0, IncidentStatus::Executed);
        escalated.earlier_acted_ms = vec![900];
        escalated.acted_ms = Some(100);
        escalated.mode = Some(RespondMode::Automatic);
        s.incidents.insert(AccountKey::new(None, "spent"), spent);
        s.incidents
            .insert(AccountKey::new(None, "rehearsed"), rehearsed);
        s.incidents
            .insert(AccountKey::new(None, "escalated"), escalated);
        // Past the ttl (500), one within the token period (1000): only dry-run's goes.
        assert_eq!(s.sweep(999, 500, 1_000, 0), 1);
        assert!(
            !s.incidents
                .contains_key(&AccountKey::new(None, "rehearsed"))
        );
        // Past the period of `spent`'s token; `escalated` took another at 900.
        assert_eq!(s.sweep(1_000, 500, 1_000, 0), 1);
        assert_eq!(
            s.incidents
                .keys()
                .map(|k| k.account.as_str())
                .collect::<Vec<_>>(),
            vec!["escalated"]
        );
        assert_eq!(
            s.incidents[&AccountKey::new(None, "escalated")].spent_within(1_000, 1_000),
            2
        );
        assert_eq!(s.sweep(1_900, 500, 1_000, 0), 1);
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut b = BreakerState::default();
        assert!(!b.failure(0, 3, 100));
        assert!(!b.failure(0, 3, 100));
        assert!(b.failure(10, 3, 100));
        assert!(b.is_open(50));
        assert!(b.allows(110), "half-open after the cooldown");
        assert!(b.failure(110, 3, 100), "a failed trial reopens at once");
        assert!(b.is_open(150));
        b.success();
        assert!(b.allows(150));
    }
}
