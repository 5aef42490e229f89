//! The responder: alert → policy → allow-lists → incident (idempotency) → mode → circuit
//! breaker → rate limits → adapter, with every decision audited.

use crate::adapters::{ActionContext, Adapter, AdapterError, Outcome, Subject};
use crate::adapters::{base_url, configured_url, webhook};
use crate::audit::{AuditFacts, AuditRecord, AuditSink, Decision};
use crate::clock::ResponseClock;
use crate::http::{CallError, Http};
use crate::policy::Policy;
use crate::secret::{Secret, SecretError};
use crate::state::{
    AccountKey, AlertFacts, Incident, IncidentStatus, QueuedAction, ResponseState, SnapshotError,
};
use crate::store::{PendingAction, PendingStatus, PendingStore, StoreError};
use authwatch_event::Alert;
use authwatch_pipeline::config::{RespondConfig, RespondMode, RespondTarget, ResponseAction};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::Url;
use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;

/// The responder could not start or could not record a decision. Whose fault: the operator's
/// (configuration, secrets) or the environment's (disk); an audit or store failure stops the
/// responder rather than let it act unrecorded.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The adapter could not be built.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// A secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// An audit record could not be written.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The pending store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] CallError),
    /// A snapshot could not be restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A human's decision that the responder's configuration cannot carry out (approving in
    /// `dry_run`, or without a target): nothing was decided, the action still waits.
    #[error("cannot approve: {0}")]
    CannotApprove(String),
    /// A limit cannot be expressed as a rate.
    #[error("config key {key}: {message}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, ResponseClock, NoOpMiddleware<Nanos>>;
type KeyedLimiter =
    RateLimiter<String, HashMapStateStore<String>, ResponseClock, NoOpMiddleware<Nanos>>;

/// The global and per-tenant token buckets (governor, GCRA): `n` tokens at once, refilled at
/// `n` per period.
struct Limits {
    global: DirectLimiter,
    tenant: KeyedLimiter,
    global_period_ms: i64,
    tenant_period_ms: i64,
}

fn quota(key: &'static str, n: u32, period: std::time::Duration) -> Result<Quota, RespondError> {
    let n = NonZeroU32::new(n).ok_or(RespondError::Config {
        key,
        message: "must be positive".to_owned(),
    })?;
    Quota::with_period(period / n.get())
        .map(|q| q.allow_burst(n))
        .ok_or(RespondError::Config {
            key,
            message: "the period is too short for that many actions".to_owned(),
        })
}

impl Limits {
    fn new(config: &RespondConfig, clock: &ResponseClock) -> Result<Limits, RespondError> {
        let l = &config.limits;
        Ok(Limits {
            global: RateLimiter::direct_with_clock(
                quota(
                    "respond.limits.global_actions",
                    l.global_actions,
                    l.global_period.0,
                )?,
                clock.clone(),
            ),
            tenant: RateLimiter::hashmap_with_clock(
                quota(
                    "respond.limits.tenant_actions",
                    l.tenant_actions,
                    l.tenant_period.0,
                )?,
                clock.clone(),
            ),
            global_period_ms: l.global_period.millis(),
            tenant_period_ms: l.tenant_period.millis(),
        })
    }

    /// The longest time a token taken counts against a limit (ms).
    fn longest_period_ms(&self) -> i64 {
        self.global_period_ms.max(self.tenant_period_ms)
    }
}

struct Pager {
    url: Url,
    secret: Option<Secret>,
    interval_ms: i64,
}

/// The tenants the target serves (an adapter talks to one org, directory or realm; the same
/// login in another tenant is another person).
#[derive(Debug, Clone)]
struct TenantScope {
    /// The key that configures them, for audit details.
    key: &'static str,
    tenants: Vec<String>,
    /// Okta org names and Entra directory ids are case-insensitive; Keycloak realm ids are not.
    ignore_case: bool,
}

impl TenantScope {
    fn from_config(config: &RespondConfig) -> Option<TenantScope> {
        let (key, tenants) = config.target_tenants()?;
        Some(TenantScope {
            key,
            tenants,
            ignore_case: config.target != RespondTarget::Keycloak,
        })
    }

    /// The tenant rate-limit bucket of a served `tenant`. Records without a tenant (`""`, a
    /// System Log record without EventBridge's source) are the configured org's own, and case
    /// variants of a case-insensitive name are one name: each alias must not add a tenant's
    /// worth of actions.
    fn bucket(&self, tenant: &str) -> String {
        match self.tenants.iter().find(|t| !t.is_empty()) {
            Some(org) if tenant.is_empty() => self.fold(org),
            _ => self.fold(tenant),
        }
    }

    fn fold(&self, name: &str) -> String {
        if self.ignore_case {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        }
    }

    /// Whether an alert of `tenant` (`None`: the alert names none, listed as `""`) is served.
    fn serves(&self, tenant: Option<&str>) -> bool {
        let tenant = tenant.unwrap_or_default();
        self.tenants.iter().any(|t| {
            if self.ignore_case {
                t.eq_ignore_ascii_case(tenant)
            } else {
                t == tenant
            }
        })
    }
}

/// The pending store's detail of an action marked executed before its call: still there after
/// the call means the run ended before the call did (a crash, or a stop that abandoned it).
const IN_FLIGHT: &str = "being carried out";

/// Why an action that waits is dropped without acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    /// Decided in another mode than the responder's.
    ModeChanged,
    /// For a tenant the target does not serve (any more).
    TenantMismatch,
}

impl DropReason {
    fn code(self) -> &'static str {
        match self {
            DropReason::ModeChanged => "mode_changed",
            DropReason::TenantMismatch => "tenant_mismatch",
        }
    }
}

/// What carrying out one unit of work came to.
struct Carried {
    status: IncidentStatus,
    records: Vec<AuditRecord>,
    /// Actions that failed because the provider was unavailable, and how long it asked to
    /// wait: they may work later.
    retry: Option<(Vec<ResponseAction>, Option<std::time::Duration>)>,
}

/// The mode's name as in the config.
fn mode_name(mode: RespondMode) -> String {
    match mode {
        RespondMode::DryRun => "dry_run",
        RespondMode::Approval => "approval",
        RespondMode::Automatic => "automatic",
    }
    .to_owned()
}

/// The automated responder. Feed it alerts with [`Responder::handle`]; call
/// [`Responder::tick`] now and then on a live stream so queued actions go out as tokens free
/// up; [`Responder::snapshot`] / [`Responder::restore`] join the runtime's checkpoint.
pub struct Responder {
    config: RespondConfig,
    clock: ResponseClock,
    policy: Policy,
    limits: Limits,
    http: Arc<Http>,
    adapter: Option<Adapter>,
    pager: Option<Pager>,
    audit: Vec<Box<dyn AuditSink>>,
    state: ResponseState,
    store: PendingStore,
    counts: BTreeMap<(ResponseAction, Decision), u64>,
    handled: u64,
    last_drain_ms: Option<i64>,
    global_blocked_until_ms: Option<i64>,
    /// Alerts do not drain the queue, and a drain acts on one queued action: the caller drains
    /// it with `tick`, saving the state after every action (see
    /// [`Responder::act_one_at_a_time`]).
    one_at_a_time: bool,
    /// The tenants the target serves; `None`: any (webhook, no target).
    tenants: Option<TenantScope>,
    /// The queue was restored: its actions are checked against this responder's mode and
    /// tenants at the next drain, before any goes out.
    review_queue: bool,
}

/// One unit of work: an alert's actions on one account.
struct Work {
    key: AccountKey,
    alert: AlertFacts,
    actions: Vec<ResponseAction>,
    pending_id: Option<String>,
    approver: Option<String>,
    /// Times it went back to the queue after its provider was unavailable.
    requeues: u32,
}

impl Responder {
    /// Builds the responder from `[respond]`: loads secrets, opens the pending store under
    /// `state_dir`. Audit records go to every sink in `audit`.
    pub fn new(
        config: &RespondConfig,
        clock: ResponseClock,
        audit: Vec<Box<dyn AuditSink>>,
    ) -> Result<Responder, RespondError> {
        check_config(config)?;
        let http = Arc::new(Http::new(&config.http)?);
        let adapter = Adapter::from_config(config, http.clone())?;
        let pager_url = configured_url(
            "respond.pager.url",
            config.pager.url.as_deref(),
            &config.pager.url_from,
        )?;
        let pager = match pager_url {
            Some(url) => Some(Pager {
                url: base_url("respond.pager.url", Some(&url))?,
                secret: if config.pager.secret.is_set() {
                    Some(Secret::load("respond.pager.secret", &config.pager.secret)?)
                } else {
                    None
                },
                interval_ms: config.pager.interval.millis(),
            }),
            None => {
                tracing::warn!(
                    "respond.pager.url is not set: queued actions and an open circuit will \
                     page nobody (audit records only)"
                );
                None
            }
        };
        let tenants = TenantScope::from_config(config);
        if let Some(scope) = tenants.as_ref().filter(|s| s.tenants.is_empty()) {
            // Only dry-run gets here (the config check refuses it in the other modes).
            tracing::warn!(
                key = scope.key,
                "{} is empty: every alert will be refused (tenant_mismatch); list the tenants \
                 the target serves (docs/RESPONSE.md, \"Tenants\")",
                scope.key
            );
        }
        Ok(Responder {
            tenants,
            review_queue: false,
            policy: Policy::from_config(config),
            limits: Limits::new(config, &clock)?,
            store: PendingStore::open(&config.state_dir)?,
            config: config.clone(),
            clock,
            http,
            adapter,
            pager,
            audit,
            state: ResponseState::default(),
            counts: BTreeMap::new(),
            handled: 0,
            last_drain_ms: None,
            global_blocked_until_ms: None,
            one_at_a_time: false,
        })
    }

    /// The clock the responder runs on.
    pub fn clock(&self) -> &ResponseClock {
        &self.clock
    }

    /// The pending store.
    pub fn store(&self) -> &PendingStore {
        &self.store
    }

    /// Audit records written so far, by action and decision (the
    /// `authwatch_response_actions_total{action,result}` counter).
    pub fn counts(&self) -> &BTreeMap<(ResponseAction, Decision), u64> {
        &self.counts
    }

    /// Actions waiting for a token.
    pub fn queued(&self) -> usize {
        self.state.queue.len()
    }

    /// The state as bytes, for the checkpoint (the same state gives the same bytes).
    pub fn snapshot(&self) -> Result<Vec<u8>, RespondError> {
        Ok(self.state.snapshot()?)
    }

    /// Restores the state of [`Responder::snapshot`]. Tokens taken within the last period
    /// before the snapshot are taken again, so that a restart (or a crash loop) cannot act on
    /// more accounts than the limits allow.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RespondError> {
        let mut state = ResponseState::restore(bytes)?;
        self.clock.observe(state.clock_ms);
        let now = self.clock.now_ms();
        // From the bucket `take_token` took it from: with `tenants = ["example", ""]` an alert
        // without a tenant spent the org's token, and a restart (the Kafka runner restarts the
        // responder after every transient error) must take that one again, not refill it. What
        // dry-run decided spent nothing.
        // An incident that took more actions later spent a token for each alert that added
        // to it.
        for (key, incident) in &state.incidents {
            for _ in 0..incident.spent_within(now, self.limits.tenant_period_ms) {
                let _ = self.limits.tenant.check_key(&self.bucket(&key.tenant));
            }
            for _ in 0..incident.spent_within(now, self.limits.global_period_ms) {
                let _ = self.limits.global.check();
            }
        }
        // A state saved before tenants were folded in account keys: its case variants of one
        // tenant become one account, as they are for the alerts from now on.
        if let Some(scope) = &self.tenants {
            state.fold_tenants(|t| scope.fold(t));
        }
        self.state = state;
        self.last_drain_ms = None;
        self.global_blocked_until_ms = None;
        self.review_queue = !self.state.queue.is_empty();
        Ok(())
    }

    /// The rate-limit bucket of `tenant` (see [`TenantScope::bucket`]): the one name under
    /// which tokens are taken and, after a restart, taken again.
    fn bucket(&self, tenant: &str) -> String {
        match &self.tenants {
            Some(scope) => scope.bucket(tenant),
            None => tenant.to_owned(),
        }
    }

    /// `tenant` as the target compares tenant names: folded for Okta and Entra, whose names
    /// ignore case, as given for Keycloak realms and for targets without tenants.
    fn fold_tenant(&self, tenant: &str) -> String {
        match &self.tenants {
            Some(scope) => scope.fold(tenant),
            None => tenant.to_owned(),
        }
    }

    /// The key of `account` in `tenant`, the tenant folded: `Example` and `example` are one
    /// served tenant for matching and buckets, so one account and one incident too.
    fn account_key(&self, tenant: Option<&str>, account: &str) -> AccountKey {
        AccountKey::new(
            Some(self.fold_tenant(tenant.unwrap_or_default()).as_str()),
            account,
        )
    }

    /// The pending-store id of `alert`'s action, the tenant folded as in the account key.
    fn pending_id(&self, alert: &AlertFacts) -> String {
        let tenant = alert.tenant.as_deref().map(|t| self.fold_tenant(t));
        PendingAction::make_id(&alert.alert_id, tenant.as_deref(), &alert.account)
    }

    /// Whether the target serves `tenant`.
    fn serves(&self, tenant: Option<&str>) -> bool {
        self.tenants.as_ref().is_none_or(|s| s.serves(tenant))
    }

    /// The audit detail of a `tenant_mismatch` refusal.
    fn tenant_detail(&self, alert: &AlertFacts) -> String {
        let (key, listed) = self
            .tenants
            .as_ref()
            .map_or(("respond", String::new()), |s| {
                (s.key, format!("{:?}", s.tenants))
            });
        format!(
            "{} is in tenant {:?}, which the {} target does not serve ({key} = {listed}): the \
             same name there is another account; nothing called",
            alert.account,
            alert.tenant.as_deref().unwrap_or(""),
            self.target_name()
        )
    }

    fn target_name(&self) -> &'static str {
        self.adapter.as_ref().map_or("none", Adapter::name)
    }

    fn emit(
        &mut self,
        mut record: AuditRecord,
        approver: Option<&str>,
    ) -> Result<AuditRecord, RespondError> {
        record.actor.user = approver.map(str::to_owned);
        for sink in &mut self.audit {
            sink.record(&record)?;
        }
        *self
            .counts
            .entry((record.unmapped.action, record.unmapped.decision))
            .or_default() += 1;
        tracing::info!(
            alert_id = %record.unmapped.alert_id,
            account = %record.user.name,
            action = record.unmapped.action.as_str(),
            decision = record.unmapped.decision.as_str(),
            reason = record.unmapped.reason.as_deref().unwrap_or(""),
            "response decision"
        );
        Ok(record)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        alert: &AlertFacts,
        account_uid: Option<&str>,
        actions: &[ResponseAction],
        action: ResponseAction,
        decision: Decision,
        reason: Option<&str>,
        detail: String,
    ) -> AuditRecord {
        let facts = AuditFacts {
            time: self.clock.now_ms(),
            alert_id: &alert.alert_id,
            rule_id: &alert.rule_id,
            severity: alert.severity,
            account: &alert.account,
            account_uid,
            tenant: alert.tenant.as_deref(),
            mode: self.config.mode,
            target: self.target_name(),
            actions,
        };
        AuditRecord::new(&facts, action, decision, reason, detail)
    }

    /// Advances an event-time clock to `alert` (as [`Responder::handle`] does first), so that
    /// queued actions can be let out at its time before it is handled.
    pub fn observe(&mut self, alert: &Alert) {
        if self.clock.is_event_time() {
            self.clock.observe(alert.last_seen.0);
        }
        self.state.clock_ms = self.clock.now_ms();
    }

    /// Acts on one alert (after letting queued actions go out if tokens freed up). Returns the
    /// audit records written; an alert the policy does not select writes none.
    pub async fn handle(&mut self, alert: &Alert) -> Result<Vec<AuditRecord>, RespondError> {
        self.observe(alert);
        let mut out = if self.one_at_a_time {
            Vec::new()
        } else {
            self.drain().await?
        };
        let Some(actions) = self.policy.select(alert).map(<[ResponseAction]>::to_vec) else {
            return Ok(out);
        };
        let now = self.clock.now_ms();
        self.handled += 1;
        if self.handled.is_multiple_of(1024)
            || self.state.incidents.len() > self.config.max_incidents
        {
            self.state.sweep(
                now,
                self.config.incident_ttl.millis(),
                self.limits.longest_period_ms(),
                self.config.max_incidents,
            );
        }
        let first = primary(&actions);
        let facts = AlertFacts {
            alert_id: alert.alert_id.clone(),
            rule_id: alert.rule_id.clone(),
            severity: alert.severity,
            // The rule's key has the tenant only when it is keyed by tenant; the deciding
            // event always has it (when the provider gives one).
            tenant: alert
                .entity
                .tenant
                .as_ref()
                .or(Some(&alert.observed.tenant).filter(|t| !t.is_empty()))
                .map(|t| t.to_string()),
            account: alert
                .entity
                .user
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_default(),
        };
        if facts.account.is_empty() {
            let r = self.record(
                &facts,
                None,
                &actions,
                first,
                Decision::Refused,
                Some("no_account"),
                format!(
                    "alert {} names no account (entity {}): nothing to act on",
                    alert.alert_id, alert.entity
                ),
            );
            out.push(self.emit(r, None)?);
            return Ok(out);
        }
        // Before anything else is spent on it: no incident, no token, no call.
        if !self.serves(facts.tenant.as_deref()) {
            let detail = self.tenant_detail(&facts);
            let r = self.record(
                &facts,
                None,
                &actions,
                first,
                Decision::Refused,
                Some("tenant_mismatch"),
                detail,
            );
            out.push(self.emit(r, None)?);
            return Ok(out);
        }
        if self.policy.protects_user(&facts.account) {
            let r = self.record(
                &facts,
                None,
                &actions,
                first,
                Decision::Refused,
                Some("allow_listed_user"),
                format!(
                    "{} is on respond.allow_list.users: never touched",
                    facts.account
                ),
            );
            out.push(self.emit(r, None)?);
            return Ok(out);
        }
        let key = self
            .state
            .incident_key(self.account_key(facts.tenant.as_deref(), &facts.account));
        self.settle_decided(&key)?;
        out.extend(self.supersede(&key)?);
        let (ttl, mode) = (self.config.incident_ttl.millis(), self.config.mode);
        let mut actions = actions;
        if let Some(open) = self
            .state
            .incidents
            .get(&key)
            .filter(|i| i.holds(now, ttl, mode))
        {
            let (first_alert, status) = (open.alert_id.clone(), open.status);
            // Only what the incident covers is a duplicate: a milder earlier action (a
            // notification, revoked sessions) must not hold back the suspension a later, more
            // severe alert asks for. The rest goes on as any alert's actions would.
            let (covered, missing): (Vec<ResponseAction>, Vec<ResponseAction>) =
                if open.covers(&actions) {
                    (actions.clone(), Vec::new())
                } else {
                    actions.iter().copied().partition(|a| open.covers(&[*a]))
                };
            if let Some(&action) = covered.first() {
                let rest = if missing.is_empty() {
                    "no second action".to_owned()
                } else {
                    format!(
                        "not repeated; the incident goes on with {}",
                        names(&missing)
                    )
                };
                let mut r = self.record(
                    &facts,
                    None,
                    &covered,
                    action,
                    Decision::Duplicate,
                    Some("same_incident"),
                    format!(
                        "{} already has an incident ({status:?}) opened by alert {first_alert} \
                         that covers {}: {rest}",
                        facts.account,
                        names(&covered)
                    ),
                );
                r.unmapped.incident_alert_id = Some(first_alert);
                out.push(self.emit(r, None)?);
            }
            if missing.is_empty() {
                return Ok(out);
            }
            actions = missing;
        }
        let work = Work {
            key,
            alert: facts,
            actions,
            pending_id: None,
            approver: None,
            requeues: 0,
        };
        let dry = self.config.mode == RespondMode::DryRun;
        if self.config.mode == RespondMode::Approval {
            if let Some(r) = self.pending_full(&work).await? {
                out.push(r);
                return Ok(out);
            }
            out.extend(
                self.wait(work, PendingStatus::AwaitingApproval, "approval")
                    .await?,
            );
            return Ok(out);
        }
        let reason = if self.state.breaker.is_open(now) {
            "circuit_open"
        } else if self.take_token(&work.key.tenant, None) {
            out.extend(self.act(work, now).await?);
            return Ok(out);
        } else {
            "rate_limited"
        };
        if dry {
            // Dry-run queues nothing: a queued action outlives the mode it was decided in.
            out.extend(self.dry_run_wait(work, now, reason)?);
        } else {
            out.extend(self.wait(work, PendingStatus::Queued, reason).await?);
        }
        Ok(out)
    }

    /// Dry-run over the limit (or with the circuit open): audited as what would have queued;
    /// nothing is stored or queued, and no one is paged.
    fn dry_run_wait(
        &mut self,
        work: Work,
        now: i64,
        reason: &'static str,
    ) -> Result<Vec<AuditRecord>, RespondError> {
        let mut out = Vec::new();
        for &action in &work.actions {
            let r = self.record(
                &work.alert,
                None,
                &work.actions,
                action,
                Decision::DryRun,
                Some(reason),
                format!(
                    "dry-run: would queue {} {} ({reason}); nothing is queued in dry-run",
                    action.as_str(),
                    work.alert.account
                ),
            );
            out.push(self.emit(r, None)?);
        }
        self.put_incident(
            work.key,
            Incident {
                alert_id: work.alert.alert_id.clone(),
                rule_id: work.alert.rule_id.clone(),
                opened_ms: now,
                status: IncidentStatus::DryRun,
                acted_ms: None,
                pending_id: None,
                mode: Some(RespondMode::DryRun),
                actions: work.actions.clone(),
                earlier_acted_ms: Vec::new(),
            },
        );
        Ok(out)
    }

    /// Refuses `work` (audited, paged) when `respond.limits.max_pending` actions already wait
    /// for a human: approvals are not rate-limited, and an unbounded store would let an attack
    /// on the pipeline bury the reviewers (and the disk).
    async fn pending_full(&mut self, work: &Work) -> Result<Option<AuditRecord>, RespondError> {
        let max = self.config.limits.max_pending;
        let waiting = |s: &ResponseState| {
            s.incidents
                .values()
                .filter(|i| i.status == IncidentStatus::PendingApproval)
                .count()
        };
        if waiting(&self.state) >= max {
            // Humans decide in another process: learn those decisions before refusing.
            let keys: Vec<AccountKey> = self
                .state
                .incidents
                .iter()
                .filter(|(_, i)| i.status == IncidentStatus::PendingApproval)
                .map(|(k, _)| k.clone())
                .collect();
            for key in &keys {
                self.settle_decided(key)?;
            }
        }
        if waiting(&self.state) < max {
            return Ok(None);
        }
        let r = self.record(
            &work.alert,
            None,
            &work.actions,
            primary(&work.actions),
            Decision::Refused,
            Some("pending_full"),
            format!(
                "{max} actions already await approval (respond.limits.max_pending): {} is not \
                 acted on",
                work.alert.account
            ),
        );
        let r = self.emit(r, None)?;
        self.page(
            "pending_full",
            "approval",
            work.alert.tenant.as_deref(),
            true,
        )
        .await;
        Ok(Some(r))
    }

    /// Takes a tenant token, then a global one. governor cannot look without taking, so a
    /// tenant token taken when the global bucket is empty is lost (erring on the side of
    /// acting less); remembering until when the global bucket is empty keeps that to once per
    /// emptying. `exhausted` collects tenants found empty during one queue pass.
    fn take_token(&mut self, tenant: &str, exhausted: Option<&mut HashSet<String>>) -> bool {
        let now = self.clock.now_ms();
        if self
            .global_blocked_until_ms
            .is_some_and(|until| now < until)
        {
            return false;
        }
        let bucket = self.bucket(tenant);
        if self.limits.tenant.check_key(&bucket).is_err() {
            if let Some(e) = exhausted {
                e.insert(tenant.to_owned());
            }
            return false;
        }
        match self.limits.global.check() {
            Ok(()) => true,
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.clock));
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                self.global_blocked_until_ms = Some(now.saturating_add(wait_ms.max(1)));
                false
            }
        }
    }

    fn global_blocked(&self) -> bool {
        let now = self.clock.now_ms();
        self.global_blocked_until_ms
            .is_some_and(|until| now < until)
    }

    /// Lets queued actions go out while tokens and the circuit allow. Called before every
    /// alert and by [`Responder::tick`].
    async fn drain(&mut self) -> Result<Vec<AuditRecord>, RespondError> {
        let mut out = Vec::new();
        if self.review_queue {
            self.review_queue = false;
            out.extend(self.review().await?);
        }
        if self.state.queue.is_empty() {
            return Ok(out);
        }
        let now = self.clock.now_ms();
        // Tokens only come back with time: a second pass at the same instant finds none.
        if self.last_drain_ms == Some(now) {
            return Ok(out);
        }
        self.last_drain_ms = Some(now);
        if self.global_blocked() {
            return Ok(out);
        }
        let mut exhausted = HashSet::new();
        let mut i = 0;
        while i < self.state.queue.len() {
            if self.state.breaker.is_open(now) {
                break;
            }
            let tenant = self.state.queue[i].key.tenant.clone();
            let not_yet = self.state.queue[i].not_before_ms.is_some_and(|t| now < t);
            if not_yet || exhausted.contains(&tenant) {
                i += 1;
                continue;
            }
            // Only what this mode decided, for a tenant the target serves, is carried out here,
            // whatever got it into the queue (a human's failed approval, an older state): the
            // rest waits for `review`, which drops it with its audit record.
            let q = &self.state.queue[i];
            if q.mode != Some(self.config.mode) || !self.serves(q.alert.tenant.as_deref()) {
                self.review_queue = true;
                i += 1;
                continue;
            }
            // A human may have approved (and carried out) or rejected it meanwhile, or be
            // deciding it right now: the claim (the lock `respond approve` takes too) keeps
            // both from carrying it out, and is held until the store has the outcome.
            let id = self.state.queue[i].id.clone();
            let claim = match self.store.claim(&id) {
                Ok((_, claim)) => Some(claim),
                Err(StoreError::Decided {
                    status: PendingStatus::Executed,
                    ..
                }) if self.interrupted(&id)? => {
                    // Whether the provider got the call is unknown, and the state still queues
                    // it: carried out again (as after a crash between a call and its record),
                    // not closed as done when it may never have been.
                    continue;
                }
                Err(StoreError::Decided { status, .. }) => {
                    if let Some(q) = self.state.queue.remove(i)
                        && let Some(inc) = self.state.incidents.get_mut(&q.key)
                        && inc.pending_id.as_deref() == Some(q.id.as_str())
                    {
                        inc.status = IncidentStatus::decided(status);
                    }
                    continue;
                }
                Err(StoreError::Busy(_)) => {
                    i += 1;
                    continue;
                }
                Err(StoreError::Unknown(_)) => None,
                Err(e) => return Err(e.into()),
            };
            if self.global_blocked() {
                break;
            }
            if !self.take_token(&tenant, Some(&mut exhausted)) {
                if self.global_blocked() {
                    break;
                }
                i += 1;
                continue;
            }
            let Some(q) = self.state.queue.remove(i) else {
                break;
            };
            let work = Work {
                key: q.key,
                alert: q.alert,
                actions: q.actions,
                pending_id: Some(q.id),
                approver: None,
                requeues: q.requeues,
            };
            out.extend(self.act(work, now).await?);
            drop(claim);
            if self.one_at_a_time {
                // The rest waits for the next call, at the same instant too.
                self.last_drain_ms = None;
                break;
            }
        }
        Ok(out)
    }

    /// Drops restored queued actions this responder must not carry out: decided in another mode
    /// (e.g. queued in dry-run, or under automatic before a switch to approval), or for a tenant
    /// the target does not serve. Each is audited (`refused`, `mode_changed` or
    /// `tenant_mismatch`), closed in the pending store, and its account's incident cancelled so
    /// that the account's next alert is decided afresh; a human is paged once.
    async fn review(&mut self) -> Result<Vec<AuditRecord>, RespondError> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.state.queue.len() {
            let q = &self.state.queue[i];
            let reason = if q.mode != Some(self.config.mode) {
                DropReason::ModeChanged
            } else if !self.serves(q.alert.tenant.as_deref()) {
                DropReason::TenantMismatch
            } else {
                i += 1;
                continue;
            };
            let id = q.id.clone();
            // Claimed like any queued action: one a human is deciding is left to the human, and
            // reviewed again at the next drain (the human may give it back to the queue).
            let claim = match self.store.claim(&id) {
                Ok((_, claim)) => Some(claim),
                Err(StoreError::Busy(_)) => {
                    self.review_queue = true;
                    i += 1;
                    continue;
                }
                // A human decided it meanwhile: that decision stands, as in the drain.
                Err(StoreError::Decided { status, .. }) => {
                    if let Some(q) = self.state.queue.remove(i)
                        && let Some(inc) = self.state.incidents.get_mut(&q.key)
                        && inc.pending_id.as_deref() == Some(q.id.as_str())
                    {
                        inc.status = IncidentStatus::decided(status);
                    }
                    continue;
                }
                Err(StoreError::Unknown(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let Some(q) = self.state.queue.remove(i) else {
                break;
            };
            out.push(self.drop_waiting(&q, reason)?);
            drop(claim);
        }
        if let Some(first) = out.first() {
            let reason = first.unmapped.reason.clone().unwrap_or_default();
            tracing::warn!(
                dropped = out.len(),
                mode = ?self.config.mode,
                "restored queued actions decided in another mode, or for a tenant the target \
                 does not serve, dropped without acting"
            );
            self.page("actions_dropped", &reason, None, true).await;
        }
        Ok(out)
    }

    /// Whether the queued action `id` was marked executed by a run that ended during its call
    /// ([`IN_FLIGHT`]); if so it is put back to `Queued` in the store, to be claimed again.
    fn interrupted(&mut self, id: &str) -> Result<bool, RespondError> {
        let mut p = match self.store.get(id) {
            Ok(p) => p,
            Err(StoreError::Unknown(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if p.status != PendingStatus::Executed || p.detail.as_deref() != Some(IN_FLIGHT) {
            return Ok(false);
        }
        p.status = PendingStatus::Queued;
        p.decided_by = None;
        p.decided_ms = None;
        p.detail = Some("interrupted while being carried out: carried out again".to_owned());
        self.store.update(&p)?;
        Ok(true)
    }

    /// Audits and closes one waiting action dropped for `reason` (see [`Responder::review`]).
    fn drop_waiting(
        &mut self,
        q: &QueuedAction,
        reason: DropReason,
    ) -> Result<AuditRecord, RespondError> {
        let detail = match reason {
            DropReason::ModeChanged => format!(
                "the action on {} was decided in mode {} and the responder now runs in mode {}: \
                 an action is only carried out in the mode that decided it; dropped, nothing \
                 called",
                q.alert.account,
                q.mode.map_or("unknown (older state)".to_owned(), mode_name),
                mode_name(self.config.mode)
            ),
            DropReason::TenantMismatch => self.tenant_detail(&q.alert),
        };
        let mut r = self.record(
            &q.alert,
            None,
            &q.actions,
            primary(&q.actions),
            Decision::Refused,
            Some(reason.code()),
            detail,
        );
        r.unmapped.pending_id = Some(q.id.clone());
        let r = self.emit(r, None)?;
        match self.store.get(&q.id) {
            Ok(mut p) if p.status.is_open() => {
                p.status = PendingStatus::Refused;
                p.decided_ms = Some(self.clock.now_ms());
                p.detail = Some(r.status_detail.clone());
                self.store.update(&p)?;
            }
            Ok(_) | Err(StoreError::Unknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(inc) = self.state.incidents.get_mut(&q.key)
            && inc.pending_id.as_deref() == Some(q.id.as_str())
            && matches!(
                inc.status,
                IncidentStatus::Queued | IncidentStatus::PendingApproval
            )
        {
            inc.status = IncidentStatus::Cancelled;
        }
        Ok(r)
    }

    /// Closes the account's pending approval when it was decided in another mode than this
    /// responder's (approval mode, before a switch to automatic — or back to dry-run), so that
    /// the account's new alert is decided in the current mode instead of waiting for ever for a
    /// human: audited `refused` (`mode_changed`), closed as `Refused` in the pending store (a
    /// human can no longer approve it, which would act a second time), the incident cancelled.
    /// One a human is deciding right now is left to the human: it still holds the account.
    fn supersede(&mut self, key: &AccountKey) -> Result<Option<AuditRecord>, RespondError> {
        let Some(inc) = self.state.incidents.get(key) else {
            return Ok(None);
        };
        if inc.status != IncidentStatus::PendingApproval
            || inc.decided_in() == Some(self.config.mode)
        {
            return Ok(None);
        }
        let Some(id) = inc.pending_id.clone() else {
            // Nothing in the store to close, nothing anyone can approve.
            if let Some(inc) = self.state.incidents.get_mut(key) {
                inc.status = IncidentStatus::Cancelled;
            }
            return Ok(None);
        };
        let (pending, claim) = match self.store.claim(&id) {
            Ok(claimed) => claimed,
            Err(StoreError::Busy(_)) => return Ok(None),
            Err(StoreError::Decided { status, .. }) => {
                if let Some(inc) = self.state.incidents.get_mut(key) {
                    inc.status = IncidentStatus::decided(status);
                }
                return Ok(None);
            }
            Err(StoreError::Unknown(_)) => {
                if let Some(inc) = self.state.incidents.get_mut(key) {
                    inc.status = IncidentStatus::Cancelled;
                }
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let waiting = QueuedAction {
            id,
            key: key.clone(),
            alert: pending.alert,
            actions: pending.actions,
            queued_ms: pending.created_ms,
            mode: pending.mode.or(Some(RespondMode::Approval)),
            not_before_ms: None,
            requeues: 0,
        };
        let r = self.drop_waiting(&waiting, DropReason::ModeChanged)?;
        drop(claim);
        Ok(Some(r))
    }

    /// Takes over what a human decided (`respond approve`/`reject`, another process) for the
    /// account's waiting incident, so that it stops waiting: until then every alert for the
    /// account is a duplicate of it.
    fn settle_decided(&mut self, key: &AccountKey) -> Result<(), RespondError> {
        let Some(inc) = self.state.incidents.get(key) else {
            return Ok(());
        };
        if !matches!(
            inc.status,
            IncidentStatus::PendingApproval | IncidentStatus::Queued
        ) {
            return Ok(());
        }
        let Some(id) = inc.pending_id.clone() else {
            return Ok(());
        };
        let queued = inc.status == IncidentStatus::Queued;
        let status = match self.store.get(&id) {
            Ok(p) if !p.status.is_open() => IncidentStatus::decided(p.status),
            // Waiting for the queue, which no longer holds it: nothing would ever act on it.
            Ok(_) if queued && !self.state.queue.iter().any(|q| q.id == id) => {
                IncidentStatus::Failed
            }
            Ok(_) => return Ok(()),
            // The store lost it (its directory reset): no one can decide it any more. Failed
            // lets a later alert for the account act, rather than wait for ever.
            Err(StoreError::Unknown(_)) => IncidentStatus::Failed,
            Err(e) => return Err(e.into()),
        };
        if let Some(inc) = self.state.incidents.get_mut(key) {
            inc.status = status;
        }
        self.state.queue.retain(|q| q.id != id);
        Ok(())
    }

    /// Lets queued actions go out as tokens free up: every few seconds on a live stream, and
    /// before an alert once [`Responder::observe`] has moved the clock to it.
    pub async fn tick(&mut self) -> Result<Vec<AuditRecord>, RespondError> {
        self.drain().await
    }

    /// For a caller that saves the state after each call (the responder thread, live or
    /// replay): from now on an
    /// alert carries out at most its own actions, and [`Responder::tick`] at most one queued
    /// action; call `tick` again (saving in between) while it returns records. A crash then
    /// repeats at most the one action in flight, where a drain that acted on many accounts
    /// before the next save would repeat them all.
    pub fn act_one_at_a_time(&mut self) {
        self.one_at_a_time = true;
    }

    /// Puts `work` in the pending store (and, when queued, in the queue), audits it and pages.
    async fn wait(
        &mut self,
        work: Work,
        status: PendingStatus,
        reason: &'static str,
    ) -> Result<Vec<AuditRecord>, RespondError> {
        let now = self.clock.now_ms();
        let first = primary(&work.actions);
        if status == PendingStatus::Queued && self.state.queue.len() >= self.config.limits.max_queue
        {
            let r = self.record(
                &work.alert,
                None,
                &work.actions,
                first,
                Decision::Refused,
                Some("queue_full"),
                format!(
                    "the queue holds respond.limits.max_queue = {} actions: {} is not acted on",
                    self.config.limits.max_queue, work.alert.account
                ),
            );
            let r = self.emit(r, None)?;
            self.page("queue_full", reason, work.alert.tenant.as_deref(), true)
                .await;
            return Ok(vec![r]);
        }
        let id = self.pending_id(&work.alert);
        // Before tenants were folded the id was made of the tenant as the alert spelled it: a
        // store written then may hold this action under that id.
        let legacy = PendingAction::make_id(
            &work.alert.alert_id,
            work.alert.tenant.as_deref(),
            &work.alert.account,
        );
        // The store outlives the process: a human may already have decided this very action
        // (e.g. the state was lost, or a replay runs again without its state file).
        let found = match self.store.get(&id) {
            Err(StoreError::Unknown(_)) if legacy != id => self.store.get(&legacy),
            other => other,
        };
        match found {
            Ok(existing) if !existing.status.is_open() => {
                let mut r = self.record(
                    &work.alert,
                    None,
                    &work.actions,
                    first,
                    Decision::Duplicate,
                    Some("already_decided"),
                    format!(
                        "action {id} on {} was already decided: {:?}",
                        work.alert.account, existing.status
                    ),
                );
                r.unmapped.pending_id = Some(existing.id.clone());
                self.put_incident(
                    work.key,
                    Incident {
                        alert_id: work.alert.alert_id.clone(),
                        rule_id: work.alert.rule_id.clone(),
                        opened_ms: now,
                        status: IncidentStatus::decided(existing.status),
                        acted_ms: None,
                        pending_id: Some(existing.id.clone()),
                        mode: existing.mode,
                        actions: existing.actions.clone(),
                        earlier_acted_ms: Vec::new(),
                    },
                );
                return Ok(vec![self.emit(r, None)?]);
            }
            Ok(_) | Err(StoreError::Unknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.create(&PendingAction {
            id: id.clone(),
            status,
            alert: work.alert.clone(),
            actions: work.actions.clone(),
            reason: reason.to_owned(),
            created_ms: now,
            decided_by: None,
            decided_ms: None,
            detail: None,
            mode: Some(self.config.mode),
            not_before_ms: None,
        })?;
        self.put_incident(
            work.key.clone(),
            Incident {
                alert_id: work.alert.alert_id.clone(),
                rule_id: work.alert.rule_id.clone(),
                opened_ms: now,
                status: if status == PendingStatus::Queued {
                    IncidentStatus::Queued
                } else {
                    IncidentStatus::PendingApproval
                },
                acted_ms: None,
                pending_id: Some(id.clone()),
                mode: Some(self.config.mode),
                actions: work.actions.clone(),
                earlier_acted_ms: Vec::new(),
            },
        );
        let (decision, detail) = if status == PendingStatus::Queued {
            self.state.queue.push_back(QueuedAction {
                id: id.clone(),
                key: work.key,
                alert: work.alert.clone(),
                actions: work.actions.clone(),
                queued_ms: now,
                mode: Some(self.config.mode),
                not_before_ms: None,
                requeues: 0,
            });
            (
                Decision::Queued,
                format!(
                    "{} queued ({reason}) as {id}; {} actions wait",
                    work.alert.account,
                    self.state.queue.len()
                ),
            )
        } else {
            (
                Decision::PendingApproval,
                format!(
                    "{} awaits approval: authwatch respond approve {id}",
                    work.alert.account
                ),
            )
        };
        let mut r = self.record(
            &work.alert,
            None,
            &work.actions,
            first,
            decision,
            Some(reason),
            detail,
        );
        r.unmapped.pending_id = Some(id);
        let r = self.emit(r, None)?;
        let kind = if decision == Decision::Queued {
            "actions_queued"
        } else {
            "approval_needed"
        };
        self.page(kind, reason, work.alert.tenant.as_deref(), true)
            .await;
        Ok(vec![r])
    }

    /// Carries out `work` (a token was taken at `now`, or a human approved it). Actions that
    /// fail because the provider is unavailable go back to the queue (see
    /// [`Responder::requeue`]).
    async fn act(&mut self, work: Work, now: i64) -> Result<Vec<AuditRecord>, RespondError> {
        // Recorded as done before the provider is called, in the state and in the pending
        // store. The audit record of an action can only be written after the call; if that
        // write fails, the responder stops, and neither its next start (the state is saved even
        // after an error) nor a human's `respond approve` carries the action out again.
        let dry = self.config.mode == RespondMode::DryRun;
        let done = if dry {
            IncidentStatus::DryRun
        } else {
            IncidentStatus::Executed
        };
        // The account's incident as it held before this work extended it (a milder action
        // carried out earlier): what a failure of this work leaves standing.
        let (ttl, mode) = (self.config.incident_ttl.millis(), self.config.mode);
        let before = self
            .state
            .incidents
            .get(&work.key)
            // A waiting incident is this work's own (queued or awaiting approval): its failure
            // is recorded as before.
            .filter(|p| {
                p.holds(now, ttl, mode)
                    && !p.status.reopens()
                    && !p.waiting()
                    && !p.actions.is_empty()
            })
            .cloned();
        self.record_incident(&work, now, done);
        let mut pending = match &work.pending_id {
            Some(id) => match self.store.get(id) {
                Ok(p) => Some(p),
                Err(StoreError::Unknown(_)) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let waited_as = pending.as_ref().map(|p| p.status);
        if let Some(p) = pending.as_mut().filter(|_| !dry) {
            p.status = PendingStatus::Executed;
            p.decided_by = work.approver.clone();
            p.decided_ms = Some(self.clock.now_ms());
            p.detail = Some(IN_FLIGHT.to_owned());
            self.store.update(p)?;
        }
        let Carried {
            status,
            mut records,
            retry,
        } = self.carry_out(&work).await?;
        if let Some((actions, retry_after)) = retry {
            if let Some(p) = pending.as_mut()
                && work.approver.is_some()
            {
                // A human's approval runs in another process than the pipeline's queue: the
                // action waits again as it waited before, for the human to approve again (or,
                // if it was queued, for the pipeline's queue).
                let reopened = waited_as
                    .filter(|s| s.is_open())
                    .unwrap_or(PendingStatus::AwaitingApproval);
                p.status = reopened;
                p.decided_by = None;
                p.decided_ms = None;
                p.detail = Some(format!(
                    "{}; the provider was unavailable: still {reopened:?}, approve again later",
                    records.last().map_or("", |r| r.status_detail.as_str())
                ));
                self.store.update(p)?;
                self.record_incident(&work, now, IncidentStatus::Failed);
                return Ok(records);
            }
            if let Some(r) = self.requeue(&work, actions, retry_after, now).await? {
                records.push(r);
                return Ok(records);
            }
        }
        match before {
            Some(before) if status == IncidentStatus::Failed => {
                self.keep_after_failure(&work, before, &records)
            }
            _ => self.record_incident(&work, now, status),
        }
        if let Some(mut p) = pending {
            p.status = match status {
                IncidentStatus::Failed => PendingStatus::Failed,
                // Never `Executed` for what was not carried out (dry-run changes nothing).
                IncidentStatus::Refused | IncidentStatus::Cancelled | IncidentStatus::DryRun => {
                    PendingStatus::Refused
                }
                _ => PendingStatus::Executed,
            };
            p.detail = records.last().map(|r| r.status_detail.clone());
            self.store.update(&p)?;
        }
        Ok(records)
    }

    /// Puts the actions of `work` that failed because the provider was unavailable back in the
    /// queue, not to be tried before the provider's `Retry-After` or
    /// `respond.http.requeue_delay` (the longer), audited as `queued` (`retry_later`) and paged
    /// (at most once per `pager.interval`). Automatic mode only, at most
    /// `respond.http.max_requeues` times and while the queue has room; `None` otherwise (the
    /// actions stay failed, and the account's next alert tries again).
    async fn requeue(
        &mut self,
        work: &Work,
        actions: Vec<ResponseAction>,
        retry_after: Option<std::time::Duration>,
        now: i64,
    ) -> Result<Option<AuditRecord>, RespondError> {
        let requeues = work.requeues.saturating_add(1);
        if self.config.mode != RespondMode::Automatic
            || actions.is_empty()
            || requeues > self.config.http.max_requeues
            || self.state.queue.len() >= self.config.limits.max_queue
        {
            return Ok(None);
        }
        let asked = retry_after.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // A queued action's incident holds the account's later alerts as duplicates: a
        // provider asking for a year (or a broken header) must not keep an attacked account
        // unprotected that long. After the bounded tries it is `failed`, and the account's
        // next alert decides afresh.
        let wait = asked
            .min(MAX_REQUEUE_WAIT_MS)
            .max(self.config.http.requeue_delay.millis());
        let not_before = now.saturating_add(wait);
        let id = work
            .pending_id
            .clone()
            .unwrap_or_else(|| self.pending_id(&work.alert));
        let detail = format!(
            "{} back in the queue as {id} after the provider was unavailable: {} tried again \
             not before {} (retry {requeues} of respond.http.max_requeues = {})",
            work.alert.account,
            actions
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            authwatch_event::Timestamp(not_before),
            self.config.http.max_requeues
        );
        let created_ms = match self.store.get(&id) {
            Ok(p) => p.created_ms,
            Err(StoreError::Unknown(_)) => now,
            Err(e) => return Err(e.into()),
        };
        self.store.update(&PendingAction {
            id: id.clone(),
            status: PendingStatus::Queued,
            alert: work.alert.clone(),
            actions: actions.clone(),
            reason: "retry_later".to_owned(),
            created_ms,
            decided_by: None,
            decided_ms: None,
            detail: Some(detail.clone()),
            mode: Some(self.config.mode),
            not_before_ms: Some(not_before),
        })?;
        self.put_incident(
            work.key.clone(),
            Incident {
                alert_id: work.alert.alert_id.clone(),
                rule_id: work.alert.rule_id.clone(),
                opened_ms: now,
                status: IncidentStatus::Queued,
                // A token was taken for it: a restart takes it again.
                acted_ms: Some(now),
                pending_id: Some(id.clone()),
                mode: Some(self.config.mode),
                actions: work.actions.clone(),
                earlier_acted_ms: Vec::new(),
            },
        );
        self.state.queue.push_back(QueuedAction {
            id: id.clone(),
            key: work.key.clone(),
            alert: work.alert.clone(),
            actions: actions.clone(),
            queued_ms: now,
            mode: Some(self.config.mode),
            not_before_ms: Some(not_before),
            requeues,
        });
        let mut r = self.record(
            &work.alert,
            None,
            &actions,
            primary(&actions),
            Decision::Queued,
            Some("retry_later"),
            detail,
        );
        r.unmapped.pending_id = Some(id);
        let r = self.emit(r, None)?;
        self.page(
            "retry_queued",
            "provider_unavailable",
            work.alert.tenant.as_deref(),
            true,
        )
        .await;
        Ok(Some(r))
    }

    /// Records the account's incident `new` (opened now, with only its own work's actions and
    /// tokens). When the account's incident still holds and `new` is not a failure, `new`
    /// extends it: it covers the actions of both, and one of the account's actions that still
    /// waits (a token, a human) keeps the incident waiting for it. The tokens of the earlier
    /// incident within the longest limit period are kept in any case, so that a restart takes
    /// every one of them again.
    fn put_incident(&mut self, key: AccountKey, mut new: Incident) {
        let now = new.opened_ms;
        let (ttl, mode) = (self.config.incident_ttl.millis(), self.config.mode);
        let longest = self.limits.longest_period_ms();
        if let Some(prev) = self.state.incidents.get(&key) {
            // What dry-run decided spent nothing, even if an older version recorded it.
            if prev.decided_in() != Some(RespondMode::DryRun) {
                // The same alert's incident recorded again (before and after its call) took
                // one token, not two.
                let same = prev.alert_id == new.alert_id && prev.acted_ms == new.acted_ms;
                new.earlier_acted_ms = prev
                    .earlier_acted_ms
                    .iter()
                    .copied()
                    .chain(prev.acted_ms.filter(|_| !same))
                    .filter(|t| now.saturating_sub(*t) < longest)
                    .collect();
            }
            if prev.holds(now, ttl, mode) && !new.status.reopens() {
                if prev.actions.is_empty() {
                    // Saved before actions were recorded: it covers every action, and so does
                    // what extends it.
                    new.actions.clear();
                } else {
                    for &a in &prev.actions {
                        if !new.actions.contains(&a) {
                            new.actions.push(a);
                        }
                    }
                }
                if prev.waiting() && !new.waiting() && prev.pending_id != new.pending_id {
                    new.status = prev.status;
                    new.pending_id = prev.pending_id.clone();
                    new.mode = prev.mode;
                }
            }
        }
        self.state.incidents.insert(key, new);
    }

    /// `work` extended the account's holding incident `before` (a later, more severe action
    /// after a milder one) and an action of it failed: the incident stands as it was, with the
    /// actions of `work` that did not fail now covered too and the tokens it took counted, so
    /// the account's next alert tries the failed action again, alone. Recording the failure
    /// over the incident reopened it: the next alert repeated the milder actions (a second
    /// notification, sessions revoked again) as if nothing had been done.
    fn keep_after_failure(&mut self, work: &Work, before: Incident, records: &[AuditRecord]) {
        let failed: Vec<ResponseAction> = records
            .iter()
            .filter(|r| r.unmapped.decision == Decision::Failed)
            .map(|r| r.unmapped.action)
            .collect();
        // Recorded before the call, merged with `before`: its actions and tokens are right but
        // for the failed actions, and it is the new alert's.
        if let Some(incident) = self.state.incidents.get_mut(&work.key) {
            incident
                .actions
                .retain(|a| !failed.contains(a) || before.actions.contains(a));
            incident.alert_id = before.alert_id;
            incident.rule_id = before.rule_id;
            incident.opened_ms = before.opened_ms;
            incident.status = before.status;
            incident.pending_id = before.pending_id;
            incident.mode = before.mode;
        }
    }

    fn record_incident(&mut self, work: &Work, now: i64, status: IncidentStatus) {
        // A human's approval takes no token; nor does dry-run, whose buckets only rehearse the
        // limits within its own process: neither leaves a token for a restart to take again
        // (which, after a switch from dry-run, would hold back real actions).
        let spent = work.approver.is_none() && self.config.mode != RespondMode::DryRun;
        self.put_incident(
            work.key.clone(),
            Incident {
                alert_id: work.alert.alert_id.clone(),
                rule_id: work.alert.rule_id.clone(),
                opened_ms: now,
                status,
                acted_ms: spent.then_some(now),
                pending_id: work.pending_id.clone(),
                mode: Some(self.config.mode),
                actions: work.actions.clone(),
                earlier_acted_ms: Vec::new(),
            },
        );
    }

    /// One `refused` record for `work` (its first action).
    fn refuse(
        &mut self,
        work: &Work,
        uid: Option<&str>,
        reason: &str,
        detail: String,
    ) -> Result<AuditRecord, RespondError> {
        let r = self.record(
            &work.alert,
            uid,
            &work.actions,
            primary(&work.actions),
            Decision::Refused,
            Some(reason),
            detail,
        );
        self.emit(r, work.approver.as_deref())
    }

    /// Checks the tenant, looks the account up, checks the allow-lists and that the provider's
    /// account is the alert's, runs each action; feeds the breaker. Dry-run looks up
    /// (read-only) but changes nothing.
    async fn carry_out(&mut self, work: &Work) -> Result<Carried, RespondError> {
        let dry = self.config.mode == RespondMode::DryRun;
        let approver = work.approver.as_deref();
        let mut out = Vec::new();
        let refused = |records| Carried {
            status: IncidentStatus::Refused,
            records,
            retry: None,
        };
        // Checked here too, for queued and approved actions: the alert was decided by a
        // responder that may have served other tenants.
        if !self.serves(work.alert.tenant.as_deref()) {
            let detail = self.tenant_detail(&work.alert);
            out.push(self.refuse(work, None, "tenant_mismatch", detail)?);
            return Ok(refused(out));
        }
        let subject = match &self.adapter {
            Some(adapter) => match adapter.lookup(&work.alert.account).await {
                Ok(s) => Some(s),
                Err(e @ AdapterError::Identity { .. }) => {
                    out.push(self.refuse(work, None, "identity_mismatch", e.to_string())?);
                    return Ok(refused(out));
                }
                Err(e) => {
                    let retry = e.retry_later();
                    for &action in &work.actions {
                        let mut r = self.record(
                            &work.alert,
                            None,
                            &work.actions,
                            action,
                            Decision::Failed,
                            Some(if retry {
                                "provider_unavailable"
                            } else {
                                "lookup_failed"
                            }),
                            format!("looking up {} failed: {e}", work.alert.account),
                        );
                        r.unmapped.attempts = e.attempts();
                        out.push(self.emit(r, approver)?);
                    }
                    if retry && !dry {
                        self.breaker_failure().await;
                    }
                    return Ok(Carried {
                        status: IncidentStatus::Failed,
                        records: out,
                        retry: retry.then(|| (work.actions.clone(), e.retry_after())),
                    });
                }
            },
            None => None,
        };
        if let Some(s) = &subject {
            let protected_group = s
                .groups
                .as_deref()
                .and_then(|g| self.policy.protecting_group(g))
                .map(str::to_owned);
            let listed = std::iter::once(&s.id)
                .chain(&s.names)
                .find(|n| self.policy.protects_user(n));
            let reason = if let Some(listed) = listed {
                Some((
                    "allow_listed_user",
                    format!(
                        "{} (id {}) is on respond.allow_list.users as {listed:?}: never touched",
                        s.account, s.id
                    ),
                ))
            } else if let Some(g) = protected_group {
                Some((
                    "allow_listed_group",
                    format!(
                        "{} is a member of allow-listed group {g:?}: never touched",
                        s.account
                    ),
                ))
            } else if !s.is_account(&work.alert.account) {
                // The provider resolved the name to an account the alert does not name (a
                // short login, an alias): acting on it would act on someone else.
                Some((
                    "identity_mismatch",
                    format!(
                        "{} resolved {:?} to the account {} (id {}), which the alert does not \
                         name: nothing done",
                        self.target_name(),
                        work.alert.account,
                        s.names.first().map_or("without a login", String::as_str),
                        s.id
                    ),
                ))
            } else {
                None
            };
            if let Some((reason, detail)) = reason {
                let id = s.id.clone();
                out.push(self.refuse(work, Some(&id), reason, detail)?);
                return Ok(refused(out));
            }
        }
        let groups_note = match (&subject, self.policy.has_group_allow_list()) {
            (Some(Subject { groups: None, .. }), true) => {
                " (the target cannot list groups: the receiver must apply the group allow-list)"
            }
            (None, true) => " (no target: group allow-list not checked)",
            _ => "",
        };
        let context = ActionContext {
            alert_id: work.alert.alert_id.clone(),
            rule_id: work.alert.rule_id.clone(),
            severity: work.alert.severity,
            tenant: work.alert.tenant.clone(),
        };
        let uid = subject.as_ref().map(|s| s.id.clone());
        let mut failed = false;
        let mut unavailable = Vec::new();
        let mut retry_after: Option<std::time::Duration> = None;
        for &action in &work.actions {
            let (decision, reason, detail, attempts) = if dry {
                (
                    Decision::DryRun,
                    Some("dry_run"),
                    format!(
                        "dry-run: would {} {}{groups_note}",
                        action.as_str(),
                        work.alert.account
                    ),
                    0,
                )
            } else {
                match self
                    .execute(action, subject.as_ref(), &work.alert, &context)
                    .await
                {
                    Ok(Outcome::Done { attempts }) => (
                        Decision::Executed,
                        None,
                        format!("{} {}{groups_note}", action.as_str(), work.alert.account),
                        attempts,
                    ),
                    Ok(Outcome::AlreadyDone) => (
                        Decision::AlreadyDone,
                        Some("already_done"),
                        format!("{} was already suspended", work.alert.account),
                        0,
                    ),
                    // Not a failure of the provider: no breaker, no retry, and the incident
                    // holds the account like a done action, so later alerts are duplicates
                    // instead of the same refusal again (each spending a token).
                    Ok(Outcome::Inapplicable(why)) => (
                        Decision::Refused,
                        Some("not_applicable"),
                        format!(
                            "{} {} is not possible: {why}; act on the account by hand",
                            action.as_str(),
                            work.alert.account
                        ),
                        0,
                    ),
                    Err(e) => {
                        failed = true;
                        // `notify` on a provider target went to the pager: the pager being down
                        // says nothing of the provider, so it neither opens the provider's
                        // circuit nor goes back to the queue (the account is not waiting on it).
                        let pager = action == ResponseAction::Notify
                            && !matches!(self.adapter.as_ref(), Some(Adapter::Webhook(_)));
                        if e.retry_later() && !pager {
                            unavailable.push(action);
                            retry_after = retry_after.max(e.retry_after());
                        }
                        (
                            Decision::Failed,
                            Some(if e.retry_later() {
                                "provider_unavailable"
                            } else {
                                "provider_refused"
                            }),
                            format!("{} {} failed: {e}", action.as_str(), work.alert.account),
                            e.attempts(),
                        )
                    }
                }
            };
            let mut r = self.record(
                &work.alert,
                uid.as_deref(),
                &work.actions,
                action,
                decision,
                reason,
                detail,
            );
            r.unmapped.attempts = attempts;
            out.push(self.emit(r, approver)?);
        }
        if !dry {
            if !unavailable.is_empty() {
                self.breaker_failure().await;
            } else if !failed {
                self.state.breaker.success();
            }
        }
        let status = match (dry, failed) {
            (true, _) => IncidentStatus::DryRun,
            (false, true) => IncidentStatus::Failed,
            // Actions refused `not_applicable` are covered like done ones (asking again would
            // be refused again, each time taking a token), but only those: a *refused*
            // incident would cover every action, and a later alert asking to revoke the
            // sessions or reset the factors must still get them.
            (false, false) => IncidentStatus::Executed,
        };
        Ok(Carried {
            status,
            records: out,
            retry: (!unavailable.is_empty()).then_some((unavailable, retry_after)),
        })
    }

    async fn execute(
        &self,
        action: ResponseAction,
        subject: Option<&Subject>,
        alert: &AlertFacts,
        context: &ActionContext,
    ) -> Result<Outcome, AdapterError> {
        let adapter = self.adapter.as_ref();
        if action == ResponseAction::Notify && !matches!(adapter, Some(Adapter::Webhook(_))) {
            return self.notify(alert).await;
        }
        match (adapter, subject) {
            (Some(a), Some(s)) => a.execute(action, s, context).await,
            _ => Err(AdapterError::Config {
                key: "respond.target",
                message: "no target to act on".to_owned(),
            }),
        }
    }

    /// The `notify` action on a provider target: the alert goes to the pager.
    async fn notify(&self, alert: &AlertFacts) -> Result<Outcome, AdapterError> {
        let Some(pager) = &self.pager else {
            return Err(AdapterError::Config {
                key: "respond.pager.url",
                message: "the notify action needs a pager".to_owned(),
            });
        };
        let body = serde_json::json!({
            "kind": "notify",
            "alert_id": alert.alert_id,
            "rule_id": alert.rule_id,
            "severity": alert.severity,
            "tenant": alert.tenant,
            "account": alert.account,
            "time": self.clock.now_ms(),
        });
        let key = format!("{}:notify", alert.alert_id);
        let reply = webhook::post_signed(
            &self.http,
            "pager notify",
            &pager.url,
            pager.secret.as_ref(),
            &key,
            &body,
        )
        .await?;
        Ok(Outcome::Done {
            attempts: reply.attempts,
        })
    }

    async fn breaker_failure(&mut self) {
        let now = self.clock.now_ms();
        let opened = self.state.breaker.failure(
            now,
            self.config.breaker.failures,
            self.config.breaker.cooldown.millis(),
        );
        if opened {
            tracing::warn!(
                target = self.target_name(),
                cooldown_ms = self.config.breaker.cooldown.millis(),
                "identity provider keeps failing: circuit open, actions queue"
            );
            self.page("circuit_open", "provider_unavailable", None, false)
                .await;
        }
    }

    /// Pages a human; `throttled` pages at most once per `respond.pager.interval`.
    async fn page(&mut self, kind: &str, reason: &str, tenant: Option<&str>, throttled: bool) {
        let Some(pager) = &self.pager else {
            return;
        };
        let now = self.clock.now_ms();
        // Pages saying that actions are now refused for want of room have a throttle each: an
        // `approval_needed` page just sent must not hold back the first `pending_full`. The
        // others share one, so that one event (a circuit opening and the queueing after it)
        // pages once.
        let slot = if matches!(kind, "pending_full" | "queue_full") {
            kind
        } else {
            ""
        };
        // A state from before the throttles were kept apart has only the shared time.
        let last = self
            .state
            .last_page_by_kind
            .get(slot)
            .copied()
            .or(self.state.last_page_ms.filter(|_| slot.is_empty()));
        if throttled && last.is_some_and(|last| now.saturating_sub(last) < pager.interval_ms) {
            return;
        }
        self.state.last_page_ms = Some(now);
        self.state.last_page_by_kind.insert(slot.to_owned(), now);
        let summary = match kind {
            "actions_queued" => format!(
                "authwatch: response actions over the rate limit are queued ({} waiting); \
                 review with `authwatch respond list`",
                self.state.queue.len()
            ),
            "approval_needed" => "authwatch: response actions await approval; review with \
                                  `authwatch respond list`"
                .to_owned(),
            "circuit_open" => format!(
                "authwatch: {} keeps failing; the circuit is open and actions queue",
                self.target_name()
            ),
            "retry_queued" => format!(
                "authwatch: {} was unavailable; the failed actions are queued to be tried again \
                 ({} waiting); review with `authwatch respond list`",
                self.target_name(),
                self.state.queue.len()
            ),
            "actions_dropped" => format!(
                "authwatch: queued actions decided in another mode, or for a tenant {} does not \
                 serve, were dropped without acting ({reason}); see the audit records",
                self.target_name()
            ),
            "pending_full" => format!(
                "authwatch: {} actions await approval (respond.limits.max_pending); new ones are \
                 refused until humans decide: `authwatch respond list`",
                self.config.limits.max_pending
            ),
            _ => format!("authwatch: responder needs attention ({kind})"),
        };
        let body = serde_json::json!({
            "kind": kind,
            "reason": reason,
            "summary": summary,
            "queued": self.state.queue.len(),
            "tenant": tenant,
            "mode": self.config.mode,
            "target": self.target_name(),
            "time": now,
        });
        let key = format!("{kind}:{now}");
        if let Err(e) = webhook::post_signed(
            &self.http,
            "pager",
            &pager.url,
            pager.secret.as_ref(),
            &key,
            &body,
        )
        .await
        {
            tracing::error!(error = %e, kind, "paging failed");
        }
    }

    /// A human's decision on a pending or queued action (`authwatch respond approve|reject`).
    /// Approval carries the actions out at once — the human is the limit — with the tenant and
    /// the allow-lists checked again; rejection cancels them. Both are audited with the human's
    /// name.
    ///
    /// Approval needs a responder that acts: in mode `dry_run` or without a target it fails
    /// with [`RespondError::CannotApprove`] and leaves the action waiting. An action decided in
    /// dry-run (or recorded without its mode, unless it waited for approval) is refused
    /// (`mode_changed`): it was never meant to be carried out.
    pub async fn decide(
        &mut self,
        id: &str,
        approve: bool,
        who: &str,
    ) -> Result<(PendingAction, Vec<AuditRecord>), RespondError> {
        if approve && (self.config.mode == RespondMode::DryRun || self.adapter.is_none()) {
            return Err(RespondError::CannotApprove(format!(
                "the configuration has respond.mode = {:?} and respond.target = {:?}: approving \
                 would carry nothing out. Run it with the pipeline's configuration (--config \
                 or AUTHWATCH_CONFIG), in mode \"approval\" or \"automatic\" with a target; \
                 action {id} still waits",
                mode_name(self.config.mode),
                self.target_name()
            )));
        }
        let (mut pending, _claim) = self.store.claim(id)?;
        // Only approval mode writes reason "approval": such an entry from before modes were
        // recorded was decided for a human.
        let decided_in = pending
            .mode
            .or((pending.reason == "approval").then_some(RespondMode::Approval));
        if approve
            && !matches!(
                decided_in,
                Some(RespondMode::Approval | RespondMode::Automatic)
            )
        {
            let mut r = self.record(
                &pending.alert,
                None,
                &pending.actions,
                primary(&pending.actions),
                Decision::Refused,
                Some("mode_changed"),
                format!(
                    "{who} approved the action on {}, which was decided in mode {}: only \
                     actions decided in approval or automatic mode are carried out; nothing \
                     called",
                    pending.alert.account,
                    decided_in.map_or("unknown (older state)".to_owned(), mode_name)
                ),
            );
            r.unmapped.pending_id = Some(id.to_owned());
            let r = self.emit(r, Some(who))?;
            pending.status = PendingStatus::Refused;
            pending.decided_by = Some(who.to_owned());
            pending.decided_ms = Some(self.clock.now_ms());
            pending.detail = Some(r.status_detail.clone());
            self.store.update(&pending)?;
            return Ok((pending, vec![r]));
        }
        let key = self.account_key(pending.alert.tenant.as_deref(), &pending.alert.account);
        self.state.queue.retain(|q| q.id != id);
        if !approve {
            let mut r = self.record(
                &pending.alert,
                None,
                &pending.actions,
                primary(&pending.actions),
                Decision::Rejected,
                Some("rejected"),
                format!("{who} rejected the action on {}", pending.alert.account),
            );
            r.unmapped.pending_id = Some(id.to_owned());
            let r = self.emit(r, Some(who))?;
            pending.status = PendingStatus::Rejected;
            pending.decided_by = Some(who.to_owned());
            pending.decided_ms = Some(self.clock.now_ms());
            pending.detail = Some(r.status_detail.clone());
            self.store.update(&pending)?;
            // Only the incident waiting for this action: another of the account's actions may
            // be what it waits for now.
            if let Some(inc) = self.state.incidents.get_mut(&key)
                && inc.pending_id.as_deref() == Some(id)
            {
                inc.status = IncidentStatus::Rejected;
            }
            return Ok((pending, vec![r]));
        }
        if self.policy.protects_user(&pending.alert.account) {
            let r = self.record(
                &pending.alert,
                None,
                &pending.actions,
                primary(&pending.actions),
                Decision::Refused,
                Some("allow_listed_user"),
                format!(
                    "{} is on respond.allow_list.users: never touched",
                    pending.alert.account
                ),
            );
            let r = self.emit(r, Some(who))?;
            pending.status = PendingStatus::Refused;
            pending.decided_by = Some(who.to_owned());
            pending.detail = Some(r.status_detail.clone());
            self.store.update(&pending)?;
            return Ok((pending, vec![r]));
        }
        let work = Work {
            key,
            alert: pending.alert.clone(),
            actions: pending.actions.clone(),
            pending_id: Some(id.to_owned()),
            approver: Some(who.to_owned()),
            requeues: 0,
        };
        let now = self.clock.now_ms();
        let records = self.act(work, now).await?;
        Ok((self.store.get(id)?, records))
    }

    /// The configured target.
    pub fn target(&self) -> RespondTarget {
        self.config.target
    }
}

/// What the configuration check of `[respond]` (`RespondConfig::validate`, run when the
/// configuration loads) lets through but a responder must not start with; every way of building
/// one (`run`, `replay`, `respond approve`) goes through [`Responder::new`], which calls this.
/// The policy's rule ids need the loaded rules: [`crate::policy::check_rule_ids`].
pub fn check_config(config: &RespondConfig) -> Result<(), RespondError> {
    if config.incident_ttl.0.is_zero() {
        return Err(RespondError::Config {
            key: "respond.incident_ttl",
            message: "must be positive: an incident that lasts no time makes every alert for \
                      an account act on it again, and one action per account per incident is \
                      what keeps a burst of alerts from repeating an action"
                .to_owned(),
        });
    }
    let provider = match config.target {
        RespondTarget::Okta => Some("okta"),
        RespondTarget::Graph => Some("graph"),
        RespondTarget::Keycloak => Some("keycloak"),
        // The webhook's receiver gets `notify` itself; `none` calls nothing (dry-run only).
        RespondTarget::Webhook | RespondTarget::None => None,
    };
    if let Some(target) = provider
        && config.pager.url.is_none()
        && !config.pager.url_from.is_set()
    {
        let notify = config
            .policy
            .iter()
            .position(|p| p.actions.contains(&ResponseAction::Notify));
        if let Some(i) = notify {
            // Otherwise every alert the entry selects fails its `notify`, and says so only in
            // the audit.
            return Err(RespondError::Config {
                key: "respond.pager.url",
                message: format!(
                    "is not set, but respond.policy[{i}] has the action \"notify\", which on a \
                     provider target (here {target}) goes to the pager: set \
                     respond.pager.url (or url_from), or remove \"notify\" from the policy"
                ),
            });
        }
    }
    Ok(())
}

/// The actions' names, for audit details.
fn names(actions: &[ResponseAction]) -> String {
    actions
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The action an audit record is about: the first of an alert's actions. A list read back from
/// a pending file or a restored state may be empty (edited, damaged); its records then name
/// `notify`, the action that changes nothing, instead of the responder stopping on it.
fn primary(actions: &[ResponseAction]) -> ResponseAction {
    actions.first().copied().unwrap_or(ResponseAction::Notify)
}

/// The longest a failed action waits in the queue before it is tried again, whatever the
/// provider's `Retry-After` says.
const MAX_REQUEUE_WAIT_MS: i64 = 3_600_000;
