//! The sink: one user's events, the alerts that may concern them, and where recent failures came from.

use super::*;

/// Who the report is about: the requested name or id, and the keys the rules know the account
/// by (its login name even when it was asked for by id).
pub(super) struct Who {
    /// The requested user, trimmed and lower-cased.
    pub(super) user: String,
    /// The lower-cased keys (`AuthEvent::user.key()`) of the events matched.
    pub(super) keys: BTreeSet<String>,
}

impl Who {
    /// Whether an alert's `entity.user` is this account.
    pub(super) fn is(&self, key: &str) -> bool {
        let key = key.to_lowercase();
        key == self.user || self.keys.contains(&key)
    }
}

pub(super) fn same_text(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// Keeps one user's processed events (bounded, most recent) and the alerts that concern them.
pub(super) struct UserSink {
    pub(super) who: Who,
    /// `--tenant`, when given.
    pub(super) tenant: Option<String>,
    /// The part of the requested name before `@`, to offer similar names when it has no events.
    pub(super) stem: String,
    pub(super) events: VecDeque<AuthEvent>,
    /// Tenant and id ([`event_key`]) of the kept events, counted (providers may repeat an
    /// id). With the tenant, since an id is unique only within the provider's tenant.
    pub(super) ids: HashMap<String, u32>,
    /// The user's events that fell out of `events` because of [`MAX_EVENTS`].
    pub(super) evicted: u64,
    /// The newest event time of the whole input: what `--since` counts back from.
    pub(super) newest: Option<i64>,
    /// The most recent [`MAX_ALERTS`] alerts that name the user or one of the user's events,
    /// oldest first: like `events`, the newest are kept, since they are about the newest events.
    pub(super) alerts: VecDeque<Alert>,
    /// Alerts let go of from `alerts` (the oldest first) over [`MAX_ALERTS`].
    pub(super) alerts_dropped: u64,
    pub(super) keyed_alerts: VecDeque<KeyedAlert>,
    /// Keyed alerts dropped over [`MAX_KEYED_ALERTS`] while they could still concern the user.
    pub(super) keyed_dropped: u64,
    /// Each rule's `suppress`, by rule id.
    pub(super) suppress: HashMap<String, i64>,
    /// Source of recent failures of every user, by [`event_key`], oldest first.
    pub(super) recent: VecDeque<(i64, String)>,
    pub(super) recent_sources: HashMap<String, (Option<IpAddr>, Option<String>)>,
    /// How long a failure is remembered in `recent`: the longest rule window (with its
    /// settling time).
    pub(super) recent_ms: i64,
    /// `event_time.allowed_lateness`: how far behind the newest event a later alert's deciding
    /// event may be.
    pub(super) lateness: i64,
    /// Failures before this time are forgotten: set once a batch's alerts were handled (see
    /// [`UserSink::remember`]).
    pub(super) forget_before: i64,
    /// Whether alerts came since the last event: the batch they belong to is over.
    pub(super) settled: bool,
    /// The addresses and identifying devices of the failures each kept alert names, by alert id.
    pub(super) sources: HashMap<String, Sources>,
    pub(super) similar: BTreeSet<String>,
    /// Events of the requested name or id per tenant, whether `--tenant` selects them or not.
    pub(super) tenants: BTreeMap<String, u64>,
    /// Unreadable lines per input.
    pub(super) unreadable: BTreeMap<String, u64>,
    /// The user's events that came too far behind newer ones for the rules (and this report).
    pub(super) late: u64,
}

impl UserSink {
    pub(super) fn new(
        user: &str,
        tenant: Option<&str>,
        recent_ms: i64,
        lateness: i64,
        suppress: HashMap<String, i64>,
    ) -> UserSink {
        let user = user.trim().to_lowercase();
        let stem = user.split('@').next().unwrap_or_default().to_owned();
        UserSink {
            who: Who {
                user,
                keys: BTreeSet::new(),
            },
            tenant: tenant.map(|t| t.trim().to_owned()),
            stem,
            events: VecDeque::new(),
            ids: HashMap::new(),
            evicted: 0,
            newest: None,
            alerts: VecDeque::new(),
            alerts_dropped: 0,
            keyed_alerts: VecDeque::new(),
            keyed_dropped: 0,
            suppress,
            recent: VecDeque::new(),
            recent_sources: HashMap::new(),
            recent_ms,
            lateness,
            forget_before: i64::MIN,
            settled: false,
            sources: HashMap::new(),
            similar: BTreeSet::new(),
            tenants: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            late: 0,
        }
    }

    /// Whether the event is the requested account's: by login name or by user id, since a
    /// ticket may quote either.
    pub(super) fn is_user(&self, e: &AuthEvent) -> bool {
        let want = self.who.user.as_str();
        [e.user.name.as_str(), e.user.id.as_str()]
            .iter()
            .any(|have| !have.is_empty() && same_text(have, want))
    }

    pub(super) fn in_tenant(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| same_text(t, tenant))
    }

    /// Remembers who sent a failure, for the alerts that will name it.
    ///
    /// The pipeline hands the sink a batch's events before the batch's alerts, and a batch may
    /// span hours of event time (a quiet night), so a failure is not forgotten by the time of
    /// the events that follow it: an alert still to come may name it. Only once a batch's
    /// alerts were handled ([`UserSink::settle`]) are the failures no later alert can name
    /// forgotten: those older than the longest window (with its settling time) before the
    /// watermark the next alerts are decided after. The result is the same for any batch size;
    /// [`MAX_RECENT_FAILURES`] bounds the memory either way.
    pub(super) fn remember(&mut self, event: &AuthEvent) {
        while let Some((t, _)) = self.recent.front() {
            if self.recent.len() < MAX_RECENT_FAILURES && *t >= self.forget_before {
                break;
            }
            if let Some((_, key)) = self.recent.pop_front() {
                self.recent_sources.remove(&key);
            }
        }
        if !is_problem(event) {
            return;
        }
        let key = event_key(&event.tenant, &event.event_id);
        let source = (event.src.ip, identifying(&event.device).map(str::to_owned));
        if self.recent_sources.insert(key.clone(), source).is_none() {
            self.recent.push_back((event.time, key));
        }
    }

    /// The first event after alerts begins a new batch: the alerts of every event so far were
    /// handled, and the next ones are decided on events no older than the watermark (the newest
    /// time less the lateness) or on windows ending after it.
    pub(super) fn settle(&mut self) {
        if std::mem::take(&mut self.settled)
            && let Some(newest) = self.newest
        {
            self.forget_before = newest
                .saturating_sub(self.lateness)
                .saturating_sub(self.recent_ms);
        }
    }

    /// Lets go of the keyed alerts whose incident ended before `now` without a failure of the
    /// user in it: none of the user's failures can belong to them any more.
    pub(super) fn let_go_of_ended(&mut self, now: i64) {
        let sources = &mut self.sources;
        self.keyed_alerts.retain(|k| {
            let keep = k.touched || k.until >= now;
            if !keep {
                sources.remove(&k.alert.alert_id);
            }
            keep
        });
    }

    /// A failure of the user keeps the keyed alerts it falls in: their incident may go on with
    /// it, so they are followed as long as the rule's suppression after it.
    pub(super) fn touch_keyed(&mut self, t: i64) {
        for k in &mut self.keyed_alerts {
            if t >= k.start && t <= k.until {
                k.touched = true;
                k.until = k.until.max(t.saturating_add(k.follow));
            }
        }
    }

    /// Where the failures an alert names came from, as far as they are remembered.
    pub(super) fn sources_of(&self, alert: &Alert, tenant: &str) -> Sources {
        let mut s = Sources::default();
        for id in &alert.evidence {
            if let Some((ip, fp)) = self.recent_sources.get(&event_key(tenant, id)) {
                s.ips.extend(*ip);
                s.devices.extend(fp.iter().cloned());
            }
        }
        s
    }

    pub(super) fn forget(&mut self, id: &str) {
        if let Some(n) = self.ids.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(id);
            }
        }
    }
}

impl Sink for UserSink {
    fn alert(&mut self, alert: &Alert) -> Result<(), SinkError> {
        self.settled = true;
        let e = &alert.entity;
        // Rules key a user as an account within its tenant, and the alert names that tenant
        // (else its deciding event's): with `--tenant`, an alert on the name is this account's
        // only in that tenant.
        let tenant = e
            .tenant
            .as_deref()
            .unwrap_or(alert.observed.tenant.as_str());
        let names_user =
            e.user.as_deref().is_some_and(|u| self.who.is(u)) && self.in_tenant(tenant);
        // The pipeline hands a batch's events to the sink before its alerts, so every event an
        // alert names is already here.
        let names_event = || {
            alert
                .evidence
                .iter()
                .any(|id| self.ids.contains_key(&event_key(tenant, id)))
        };
        let kept = if names_user || names_event() {
            // The oldest goes: the events kept are the most recent, and so must be the alerts
            // about them.
            if self.alerts.len() == MAX_ALERTS
                && let Some(old) = self.alerts.pop_front()
            {
                self.sources.remove(&old.alert_id);
                self.alerts_dropped += 1;
            }
            self.alerts.push_back(alert.clone());
            true
        } else if (has_actor(alert)
            && matches!(alert.cause_class, CauseClass::Network | CauseClass::Attack))
            || (tenant_keyed(alert) && self.in_tenant(tenant))
        {
            if self.keyed_alerts.len() == MAX_KEYED_ALERTS {
                self.let_go_of_ended(self.newest.unwrap_or(i64::MIN));
            }
            if self.keyed_alerts.len() == MAX_KEYED_ALERTS {
                // One the user's failures touched is the report's evidence: drop the oldest
                // of the others first.
                let oldest = self
                    .keyed_alerts
                    .iter()
                    .position(|k| !k.touched)
                    .unwrap_or(0);
                if let Some(old) = self.keyed_alerts.remove(oldest) {
                    self.sources.remove(&old.alert.alert_id);
                    self.keyed_dropped += 1;
                }
            }
            let (start, end) = span(alert);
            let follow = self
                .suppress
                .get(&alert.rule_id)
                .copied()
                .unwrap_or(FOLLOW_MS)
                .max(NETWORK_MARGIN_MS);
            self.keyed_alerts.push_back(KeyedAlert {
                alert: alert.clone(),
                start,
                until: end.saturating_add(follow),
                follow,
                touched: false,
            });
            true
        } else {
            false
        };
        if kept {
            let s = self.sources_of(alert, tenant);
            self.sources
                .entry(alert.alert_id.clone())
                .or_default()
                .extend(s);
        }
        Ok(())
    }

    fn dead_letter(&mut self, record: &DeadLetter) -> Result<(), SinkError> {
        if let Some(n) = self.unreadable.get_mut(&record.file) {
            *n += 1;
        } else {
            self.unreadable.insert(record.file.clone(), 1);
        }
        Ok(())
    }

    /// Explain asks for late events (`late_events = side_output`) to tell the help desk that
    /// the user's events were out of order, rather than that the name is misspelt.
    fn late_event(&mut self, record: &LateEvent) -> Result<(), SinkError> {
        let e = &record.event;
        if self.is_user(e) && self.in_tenant(&e.tenant) {
            self.late += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn wants_events(&self) -> bool {
        true
    }

    fn event(&mut self, event: &AuthEvent) -> Result<(), SinkError> {
        self.settle();
        self.newest = Some(self.newest.map_or(event.time, |n| n.max(event.time)));
        self.remember(event);
        if self.is_user(event) {
            if let Some(n) = self.tenants.get_mut(event.tenant.as_str()) {
                *n += 1;
            } else {
                self.tenants.insert(event.tenant.to_string(), 1);
            }
            if !self.in_tenant(&event.tenant) {
                return Ok(());
            }
            let key = event.user.key();
            if !self.who.keys.contains(key) {
                self.who.keys.insert(key.to_lowercase());
            }
            if self.events.len() == MAX_EVENTS
                && let Some(old) = self.events.pop_front()
            {
                self.forget(&event_key(&old.tenant, &old.event_id));
                self.evicted += 1;
            }
            *self
                .ids
                .entry(event_key(&event.tenant, &event.event_id))
                .or_default() += 1;
            if is_problem(event) {
                self.touch_keyed(event.time);
            }
            self.events.push_back(event.clone());
        } else {
            let key = event.user.key();
            if self.similar.len() < MAX_SIMILAR
                && !self.stem.is_empty()
                && !key.is_empty()
                && key.to_lowercase().contains(&self.stem)
            {
                self.similar.insert(key.to_owned());
            }
        }
        Ok(())
    }
}

/// An alert keyed by an actor or a tenant, with how long the user's failures may still belong
/// to it: until its rule's suppression (at least [`NETWORK_MARGIN_MS`]) after its last event or
/// the last failure of the user within it.
pub(super) struct KeyedAlert {
    pub(super) alert: Alert,
    pub(super) start: i64,
    pub(super) until: i64,
    pub(super) follow: i64,
    /// Whether one of the user's failures fell within it.
    pub(super) touched: bool,
}

/// An event's id within its tenant.
pub(super) fn event_key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{1f}{id}")
}
