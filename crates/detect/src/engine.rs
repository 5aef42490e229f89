//! The rule engine: compiled rules over keyed, event-time state.
//!
//! Events arrive one at a time in stream order. For each rule whose filter passes, the event is
//! added to its key's sliding-window counters; when the fire condition holds and no incident is
//! open for that key, an [`Alert`] is produced at once (the deciding event is in hand, so there
//! is no need to wait for the watermark, which keeps latency to one event). The watermark only
//! drives housekeeping: keys idle for longer than their window plus suppression are expired, and
//! per-rule key counts are bounded by configuration, with evictions counted.

use crate::compile::{Aggregate, CompiledRule, WindowKind};
use crate::key::{EventParts, HashedPart, IncidentKey, IncidentKeyRef, KeyPartRef, KeyRef};
use crate::key::{Key, KeyField, KeyPart};
use crate::sketch::WindowedSketch;
use authwatch_event::{
    Activity, Alert, AuthEvent, Localized, LocalizedSteps, MetricValue, Observed, Outcome, Text,
    Timestamp, Window,
};
use rustc_hash::FxBuildHasher;

/// State maps are probed with keys borrowed from the event (`hashbrown::Equivalent`).
type FxHashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Evidence event ids per alert, at most.
pub const MAX_EVIDENCE: usize = 20;

/// Engine limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Live keys per rule; past it the least recently active keys are evicted (counted).
    pub max_keys_per_rule: usize,
    /// How often, in event time, idle keys are swept (ms).
    pub sweep_interval_ms: i64,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_keys_per_rule: 1_000_000,
            sweep_interval_ms: 60_000,
        }
    }
}

/// Counts per rule, for metrics and `rules` tooling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Events that passed the rule's filter.
    pub events_matched: u64,
    /// Alerts produced.
    pub alerts: u64,
    /// Firings suppressed because an incident was open for the key.
    pub suppressed: u64,
    /// Keys expired by the watermark (normal end of state).
    pub expired: u64,
    /// Keys evicted because the rule reached `max_keys_per_rule` (state lost early).
    pub evicted: u64,
    /// Live keys now.
    pub keys: u64,
}

/// One counted event. Distinct counters keep one entry per value (its latest event), so their
/// count in the window is the number of entries in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    time: i64,
    id: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<KeyPart>,
    /// The numeric field of `min`/`max` counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    num: Option<f64>,
    /// For `unless` with `scope: events`: the event's values of the `unless.on` fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    veto: Vec<(KeyField, KeyPart)>,
    /// The verdict on `veto`, kept because recomputing it is a hash lookup per value and
    /// vetoing rule, for every entry of a busy key on every event: the entry is vetoed when the
    /// deciding event's time is at least this ([`veto_from`]; `i64::MAX`: not vetoed). Valid as
    /// of the key's `veto_checked`.
    #[serde(skip, default = "never")]
    veto_from: i64,
    /// One bit per `veto` value ([`veto_bit`]), to find the entries a changed incident may
    /// concern without hashing their values again.
    #[serde(skip)]
    veto_bits: u64,
}

fn never() -> i64 {
    i64::MAX
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Incident {
    alert_id: String,
    first_seen: i64,
    /// The latest event the incident absorbed: `after` and `unless` measure `within` from it.
    last_seen: i64,
    /// The latest event at which the rule's condition held. The incident ends after `suppress`
    /// without one, not after `suppress` without any event of the key: on a busy key (a tenant,
    /// a shared egress address) stray matching events never stop, and would otherwise keep
    /// one incident open for ever, absorbing every later attack on the key unreported. `None`
    /// in snapshots from before it was kept: `last_seen` then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<i64>,
    /// Tumbling windows: the incident ends with its bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ends: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct KeyState {
    last_time: i64,
    /// Session windows: when the current session began.
    #[serde(default)]
    session_start: i64,
    recent: Vec<VecDeque<Entry>>,
    /// Distinct counters whose values overflowed their exact bound count with a sketch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sketches: Vec<Option<WindowedSketch>>,
    incident: Option<Incident>,
    /// The last event of the key's previous incident, once it closed: a new incident's id is
    /// named by a time after it (see `apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed: Option<i64>,
    /// Up to which [`VetoLog`] sequence number the entries' veto verdicts are current (`None`:
    /// never computed, as after a restore).
    #[serde(skip)]
    veto_checked: Option<u64>,
}

/// An alert waiting for its rule's `settle` time to pass before it is emitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Pending {
    rule: usize,
    /// The key whose incident the alert opened (absent in snapshots of before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<Key>,
    due: i64,
    /// The deciding event's values of the `unless` fields.
    veto_keys: Vec<(KeyField, KeyPart)>,
    alert: Alert,
}

#[derive(Debug, Default)]
struct RuleState {
    keys: FxHashMap<Key, KeyState>,
    stats: RuleStats,
}

/// Changes to incidents that per-event vetoes (`unless` with `scope: events`) read, as the
/// [`veto_hash`] of the changed `(field, value)`, so that each key brings its entries' kept
/// verdicts up to date when it is next touched, recomputing only the entries a change may
/// concern. Incidents change far less often than busy keys see events.
#[derive(Debug, Default)]
struct VetoLog {
    /// The most recent changes, oldest first.
    changed: VecDeque<u64>,
    /// The sequence number of `changed[0]`.
    base: u64,
}

impl VetoLog {
    /// Changes kept: a key that last looked further back recomputes all its verdicts.
    const LEN: usize = 4096;

    /// The sequence number of the next change.
    fn next(&self) -> u64 {
        self.base + self.changed.len() as u64
    }

    fn push(&mut self, field: KeyField, part: KeyPartRef<'_>) {
        if self.changed.len() == Self::LEN {
            self.changed.pop_front();
            self.base += 1;
        }
        self.changed.push_back(veto_hash(field, part));
    }

    /// Forgets every change, so that every key recomputes its verdicts.
    fn reset(&mut self) {
        self.base = self.next() + 1;
        self.changed.clear();
    }

    /// The union of the bits of the changes since `seq`, or `None` when they are no longer
    /// all kept.
    fn bits_since(&self, seq: u64) -> Option<u64> {
        let from = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        Some(
            self.changed
                .range(from.min(self.changed.len())..)
                .fold(0, |bits, &h| bits | veto_bit(h)),
        )
    }
}

/// The rule engine.
pub struct Engine {
    rules: Vec<CompiledRule>,
    /// Evaluation order per (activity, outcome): the rules whose filter accepts both, with rules
    /// referenced by `after`/`unless` before the rules that reference them. Most rules look at
    /// one or two activities and outcomes, so an event visits only a few rules.
    by_signature: Vec<Vec<usize>>,
    /// For each rule, the indices of the rules its `after` names.
    after_refs: Vec<Vec<usize>>,
    /// For each rule, the indices of the rules its `unless` names.
    unless_refs: Vec<Vec<usize>>,
    /// For each rule, how long its incidents must stay findable by `after` (0 = not referenced).
    keep_incidents_ms: Vec<i64>,
    /// For each rule that a per-event veto names: the shortest `within` of those vetoes.
    veto_watch: Vec<Option<i64>>,
    /// Changes to the incidents of the rules in `veto_watch`.
    veto_log: VetoLog,
    /// The latest event time seen: no entry is later.
    max_time: i64,
    states: Vec<RuleState>,
    /// Open and recent incidents of referenced rules, by (rule, entity field, value).
    incidents: FxHashMap<IncidentKey, Incident>,
    /// Alerts of settling rules, in decision order.
    pending: VecDeque<Pending>,
    limits: EngineLimits,
    watermark: i64,
    next_sweep: i64,
    /// Events since the last sweep: a sweep visits every live key, so it waits until enough
    /// events arrived to pay for it (amortized constant cost per event).
    events_since_sweep: u64,
}

/// A snapshot could not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Encoding or decoding failed.
    #[error("detector snapshot encoding: {0}")]
    Codec(#[from] serde_json::Error),
    /// The snapshot's parts do not fit together (a damaged or hand-edited snapshot).
    #[error("detector snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// `id@version` of each rule, in the engine's order.
    rules: Vec<String>,
    /// What each rule's state is laid out by ([`state_shape`]); absent in snapshots of before
    /// it was recorded.
    #[serde(default)]
    shapes: Vec<String>,
    watermark: i64,
    next_sweep: i64,
    states: Vec<Vec<(Key, KeyState)>>,
    stats: Vec<RuleStats>,
    incidents: Vec<((usize, KeyField, KeyPart), Incident)>,
    #[serde(default)]
    pending: Vec<Pending>,
}

impl Engine {
    /// Builds an engine; the rules must already be checked as a pack (see [`crate::RulePack`]).
    pub(crate) fn new(rules: Vec<CompiledRule>, order: Vec<usize>, limits: EngineLimits) -> Self {
        let index_of = |id: &str| rules.iter().position(|r| r.id == id);
        let refs_of = |seq: Option<&crate::compile::After>| -> Vec<usize> {
            seq.map(|a| a.rules.iter().filter_map(|id| index_of(id)).collect())
                .unwrap_or_default()
        };
        let after_refs: Vec<Vec<usize>> = rules.iter().map(|r| refs_of(r.after.as_ref())).collect();
        let unless_refs: Vec<Vec<usize>> =
            rules.iter().map(|r| refs_of(r.unless.as_ref())).collect();
        let mut keep_incidents_ms = vec![0i64; rules.len()];
        for (r, rule) in rules.iter().enumerate() {
            for (refs, seq) in [
                (&after_refs[r], &rule.after),
                (&unless_refs[r], &rule.unless),
            ] {
                let within = seq.as_ref().map_or(0, |a| a.within_ms);
                for &target in refs {
                    keep_incidents_ms[target] = keep_incidents_ms[target].max(within);
                }
            }
        }
        let mut veto_watch: Vec<Option<i64>> = vec![None; rules.len()];
        for (rule, refs) in rules.iter().zip(&unless_refs) {
            if let Some(u) = rule.unless.as_ref().filter(|u| u.per_event) {
                for &target in refs {
                    veto_watch[target] =
                        Some(veto_watch[target].map_or(u.within_ms, |w| w.min(u.within_ms)));
                }
            }
        }
        let states = rules.iter().map(|_| RuleState::default()).collect();
        let by_signature = Activity::ALL
            .iter()
            .flat_map(|a| Outcome::ALL.iter().map(move |o| (*a, *o)))
            .map(|(a, o)| {
                order
                    .iter()
                    .copied()
                    .filter(|&r| rules[r].filter.accepts(a, o))
                    .collect()
            })
            .collect();
        Engine {
            rules,
            by_signature,
            after_refs,
            unless_refs,
            keep_incidents_ms,
            veto_watch,
            veto_log: VetoLog::default(),
            max_time: i64::MIN,
            states,
            incidents: FxHashMap::default(),
            pending: VecDeque::new(),
            limits,
            watermark: i64::MIN,
            next_sweep: i64::MIN,
            events_since_sweep: 0,
        }
    }

    /// The loaded rules.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Per-rule counters, in rule order.
    pub fn stats(&self) -> Vec<(&str, RuleStats)> {
        self.rules
            .iter()
            .zip(&self.states)
            .map(|(r, s)| {
                let mut stats = s.stats;
                stats.keys = s.keys.len() as u64;
                (r.id.as_str(), stats)
            })
            .collect()
    }

    /// Live state keys and evictions so far per rule, in rule order: `(rule id, keys, evicted)`.
    /// Allocates nothing, so metrics can read it after every batch.
    pub fn state_gauges(&self) -> impl ExactSizeIterator<Item = (&str, u64, u64)> + '_ {
        self.rules
            .iter()
            .zip(&self.states)
            .map(|(r, s)| (r.id.as_str(), s.keys.len() as u64, s.stats.evicted))
    }

    /// Processes one event; alerts it decides are pushed to `out`.
    pub fn on_event(&mut self, e: &AuthEvent, out: &mut Vec<Alert>) {
        self.events_since_sweep += 1;
        self.max_time = self.max_time.max(e.time);
        let candidates = signature(e.activity, e.outcome);
        // Every rule keyed or vetoed by a field looks the event up under the same part: each
        // part is extracted and hashed once, at its first use.
        let parts = EventParts::new(e);
        for oi in 0..self.by_signature[candidates].len() {
            let r = self.by_signature[candidates][oi];
            if self.rules[r].filter.matches(e) {
                self.apply(r, &parts, out);
                self.enforce_capacity(r);
            }
        }
    }

    fn apply(&mut self, r: usize, parts: &EventParts<'_>, out: &mut Vec<Alert>) {
        let e = parts.event();
        let rule = &self.rules[r];
        let Some(key) = KeyRef::extract(&rule.key, parts) else {
            return;
        };
        let after = match &rule.after {
            Some(a) => {
                match find_incident(
                    &self.incidents,
                    &self.after_refs[r],
                    &a.on,
                    a.within_ms,
                    parts,
                ) {
                    Some(found) => Some(found.clone()),
                    // A sequence rule only keeps state once its opening incident exists.
                    None => {
                        self.states[r].stats.events_matched += 1;
                        return;
                    }
                }
            }
            None => None,
        };
        let state_map = &mut self.states[r];
        state_map.stats.events_matched += 1;
        if let Some(read) = &rule.lazy_state
            && !state_map.keys.contains_key(&key)
            && !rule
                .counters
                .iter()
                .zip(read)
                .any(|(c, read)| *read && c.predicate.matches(e))
        {
            return;
        }
        // Look up before inserting: a key longer than 24 bytes lives on the heap, and most
        // events find their key already there, so only a new key pays for a clone.
        if !state_map.keys.contains_key(&key) {
            state_map.keys.insert(
                key.to_owned(),
                KeyState {
                    last_time: e.time,
                    session_start: e.time,
                    recent: vec![VecDeque::new(); rule.counters.len()],
                    sketches: Vec::new(),
                    incident: None,
                    closed: None,
                    veto_checked: None,
                },
            );
        }
        let Some(state) = state_map.keys.get_mut(&key) else {
            return;
        };
        if rule.window_kind == WindowKind::Session && e.time - state.last_time > rule.window_ms {
            state.session_start = e.time;
        }
        state.last_time = state.last_time.max(e.time);
        let horizon = window_start(rule, state, state.last_time);
        let now = e.time;
        // `unless` with `scope: events`: whether an entry is activity another rule already
        // reported, for keeping the entries that still count and for counting them.
        let per_event = rule.unless.as_ref().filter(|u| u.per_event);
        let (veto_keys, this_from, this_bits) = match per_event {
            Some(u) => {
                let refs = &self.unless_refs[r];
                refresh_vetoes(state, &self.veto_log, &self.incidents, refs, u.within_ms);
                // The kept verdicts must be what a fresh look gives (checked in debug builds,
                // which the rule tests and the replay tests run on).
                #[cfg(debug_assertions)]
                for x in state.recent.iter().flatten() {
                    let fresh = veto_from(&self.incidents, refs, u.within_ms, &x.veto, x.time);
                    debug_assert_eq!(x.veto_from, fresh, "stale veto verdict on entry {}", x.id);
                }
                let keys: Vec<(KeyField, KeyPart)> =
                    u.on.iter()
                        .filter_map(|f| parts.get(*f).map(|p| (*f, p.part.into_owned())))
                        .collect();
                let from = veto_from(&self.incidents, refs, u.within_ms, &keys, e.time);
                let bits = veto_bits(&keys);
                (keys, from, bits)
            }
            None => (Vec::new(), i64::MAX, 0),
        };
        let veto_within = per_event.map(|u| u.within_ms);
        let vetoed = |x: &Entry| veto_within.is_some() && now >= x.veto_from;
        let this_vetoed = veto_within.is_some() && now >= this_from;
        for (c, (counter, recent)) in rule.counters.iter().zip(&mut state.recent).enumerate() {
            if counter.predicate.matches(e) {
                let value = counter.value_field().and_then(|f| f.extract(e));
                let num = match counter.aggregate {
                    Aggregate::Min(f) | Aggregate::Max(f) => f.get(e),
                    _ => None,
                };
                let mut counted = match counter.aggregate {
                    Aggregate::Count => true,
                    Aggregate::Distinct(_) | Aggregate::First(_) | Aggregate::Last(_) => {
                        value.is_some()
                    }
                    Aggregate::Min(_) | Aggregate::Max(_) => num.is_some(),
                };
                if let (Aggregate::Distinct(_), Some(v)) = (counter.aggregate, &value) {
                    let active = state.sketches.get(c).is_some_and(Option::is_some);
                    if active
                        || (recent.len() >= counter.cap
                            && !recent.iter().any(|x| x.value.as_ref() == Some(v)))
                    {
                        sketch_insert(&mut state.sketches, c, rule, recent, v, e.time);
                    }
                    // One entry per value: its latest event, so the value stays in the window as
                    // long as any of its events does. A late event older than the entry leaves
                    // it. Under a per-event veto, the latest event that still counts: a user
                    // sprayed from a clean address and later from a reported one is still one
                    // of the clean spray's users.
                    if let Some(at) = recent.iter().position(|x| x.value.as_ref() == Some(v)) {
                        let held = &recent[at];
                        let held_counts = !vetoed(held);
                        let this_counts = !this_vetoed;
                        let keep_held = if held_counts == this_counts {
                            held.time > e.time
                        } else {
                            held_counts
                        };
                        if keep_held {
                            counted = false;
                        } else {
                            recent.remove(at);
                        }
                    }
                }
                if counted {
                    // Keep entries sorted by time: streams are mostly ordered, so the insert
                    // point is almost always the back.
                    let at = recent.partition_point(|x| x.time <= e.time);
                    recent.insert(
                        at,
                        Entry {
                            time: e.time,
                            id: e.event_id.clone(),
                            value,
                            num,
                            veto: veto_keys.clone(),
                            veto_from: this_from,
                            veto_bits: this_bits,
                        },
                    );
                }
            }
            while recent.front().is_some_and(|x| x.time < horizon) {
                recent.pop_front();
            }
            while recent.len() > counter.cap {
                // Activity another rule already reported goes first: it must not push out the
                // entries that still count (a reported address spraying on would otherwise
                // hide a distributed spray around it).
                let drop = match veto_within {
                    Some(_) => recent.iter().position(vetoed).unwrap_or(0),
                    None => 0,
                };
                recent.remove(drop);
            }
        }
        let start = window_start(rule, state, e.time);
        // Counters the condition reads, on every event; the ones only shown, once an alert is
        // built (they may hold thousands of entries on a tenant-wide key).
        let counted = |all: bool| {
            let (mut counts, first, last) =
                window_values(rule, &state.recent, start, e.time, &vetoed, all);
            for ((count, sketch), counter) in
                counts.iter_mut().zip(&state.sketches).zip(&rule.counters)
            {
                // Below its bound the exact set is exact (everything it dropped is older than
                // what it kept); only a saturated set needs the sketch's estimate.
                if let Some(sketch) = sketch
                    && *count >= counter.cap as f64
                {
                    *count = count.max(sketch.estimate(start, e.time) as f64);
                }
            }
            (counts, first, last)
        };
        let (counts, first, last) = counted(false);
        let span = last.saturating_sub(first).max(0);
        // An open incident absorbs further activity of the key: one alert per incident.
        let holds = rule.condition.holds(&counts, span);
        if let Some(inc) = &mut state.incident {
            let held = inc.held.unwrap_or(inc.last_seen);
            let open = match inc.ends {
                Some(end) => e.time < end,
                None => e.time <= held.saturating_add(rule.suppress_ms),
            };
            if open {
                inc.last_seen = inc.last_seen.max(e.time);
                if holds {
                    inc.held = Some(held.max(e.time));
                }
                let inc = inc.clone();
                if self.keep_incidents_ms[r] > 0 {
                    let watch = self.veto_watch[r].map(|within| Watch {
                        log: &mut self.veto_log,
                        within,
                        max_time: self.max_time,
                    });
                    let parts = key.parts();
                    index_incident(&mut self.incidents, r, &rule.key, parts, &inc, watch);
                }
                if holds {
                    state_map.stats.suppressed += 1;
                }
                return;
            }
            // Its last decision, not its last absorbed event: events it absorbed below the
            // condition may already be the next incident's (`named_at` below).
            state.closed = Some(held);
            state.incident = None;
        }
        if !holds {
            return;
        }
        if let Some(t) = rule.trigger
            && !rule.counters[t].predicate.matches(e)
        {
            return;
        }
        if let Some(u) = &rule.unless
            && find_incident(
                &self.incidents,
                &self.unless_refs[r],
                &u.on,
                u.within_ms,
                parts,
            )
            .is_some()
        {
            state_map.stats.suppressed += 1;
            return;
        }
        let own_start = if rule.window_kind == WindowKind::Tumbling {
            start
        } else {
            first.min(e.time)
        };
        let window_start = after
            .as_ref()
            .map_or(own_start, |a| a.first_seen.min(own_start));
        let window_end = match rule.window_kind {
            WindowKind::Tumbling => start.saturating_add(rule.window_ms),
            _ => e.time,
        };
        let key = key.to_owned();
        let key_text = key.canonical(&rule.key);
        // Named by the start of the rule's own window (the SQL detections name theirs alike, so
        // one incident found by both has one id), but never by a time at or before the key's
        // previous incident's last decision (the last event at which its condition held): with
        // `suppress` shorter than the window, a new incident's window
        // still holds the old one's events, and a shared id would let a consumer that
        // deduplicates by id drop the second incident. A sequence rule's window starts at the
        // incident it follows, which two of its incidents can share (two approvals in one long
        // push-bombing campaign): its id takes its own part of the window.
        let named_at = match state.closed {
            Some(closed) => own_start.max(closed.saturating_add(1)),
            None => own_start,
        };
        let alert_id = Alert::make_id(&rule.id, rule.version, &key_text, named_at);
        let incident = Incident {
            alert_id: alert_id.clone(),
            first_seen: window_start,
            last_seen: e.time,
            held: Some(e.time),
            ends: (rule.window_kind == WindowKind::Tumbling).then_some(window_end),
        };
        state.incident = Some(incident.clone());
        state_map.stats.alerts += 1;
        let mut evidence: Vec<&Entry> = rule
            .evidence
            .iter()
            .flat_map(|&c| state.recent[c].iter())
            .filter(|x| x.time >= start && x.time <= e.time && !vetoed(x))
            .collect();
        evidence.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        evidence.dedup_by(|a, b| a.id == b.id);
        // Bounded: the deciding (latest) events matter most.
        let skip = evidence.len().saturating_sub(MAX_EVIDENCE);
        // What each counter shows in metrics and summaries.
        let shown: Vec<Shown> = rule
            .counters
            .iter()
            .zip(&counted(true).0)
            .zip(&state.recent)
            .map(|((counter, value), q)| match counter.aggregate {
                Aggregate::Count | Aggregate::Distinct(_) => Shown::Count(*value as u64),
                Aggregate::Min(_) | Aggregate::Max(_) => Shown::Real(*value),
                Aggregate::First(_) | Aggregate::Last(_) => {
                    Shown::Text(edge_value(q, counter.aggregate, start, e.time))
                }
            })
            .collect();
        let alert = build_alert(
            rule,
            &key,
            e,
            &shown,
            evidence[skip..].iter().map(|x| x.id.to_string()).collect(),
            Window {
                start: Timestamp(window_start),
                end: Timestamp(window_end),
            },
            alert_id,
            after.map(|a| a.alert_id).into_iter().collect(),
        );
        if self.keep_incidents_ms[r] > 0 {
            let parts: Vec<HashedPart<'_>> = key
                .parts()
                .iter()
                .map(|p| HashedPart::new(p.as_ref()))
                .collect();
            let watch = self.veto_watch[r].map(|within| Watch {
                log: &mut self.veto_log,
                within,
                max_time: self.max_time,
            });
            index_incident(&mut self.incidents, r, &rule.key, &parts, &incident, watch);
        }
        if rule.settle_ms > 0 {
            let veto_keys = rule
                .unless
                .iter()
                .flat_map(|u| &u.on)
                .filter_map(|f| parts.get(*f).map(|p| (*f, p.part.into_owned())))
                .collect();
            // Decisions are made in stream order and all share one settle time per rule, so the
            // queue stays ordered by decision; `due` only grows within a rule.
            self.pending.push_back(Pending {
                rule: r,
                key: Some(key.clone()),
                due: e.time.saturating_add(rule.settle_ms),
                veto_keys,
                alert,
            });
        } else {
            out.push(alert);
        }
    }

    /// Emits settled alerts whose `settle` time the watermark has passed, unless an `unless`
    /// incident appeared around them meanwhile.
    fn release(&mut self, watermark: i64, out: &mut Vec<Alert>) {
        // Rules settle for different times, so scan for due entries instead of popping the
        // front only; the queue holds only the few alerts of the last minutes.
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].due > watermark {
                i += 1;
                continue;
            }
            let Some(p) = self.pending.remove(i) else {
                break;
            };
            let rule = &self.rules[p.rule];
            let decided = p.alert.last_seen.millis();
            let vetoed = rule.unless.as_ref().is_some_and(|u| {
                p.veto_keys.iter().any(|(f, v)| {
                    self.unless_refs[p.rule].iter().any(|&target| {
                        self.incidents
                            .get(&IncidentKeyRef {
                                rule: target,
                                field: *f,
                                part: HashedPart::new(v.as_ref()),
                            })
                            .is_some_and(|inc| {
                                // An incident that began only after the finding was
                                // decided (a network block starting ten minutes after one
                                // phone's failure) is a later, separate story.
                                inc.first_seen <= decided
                                    && inc.last_seen.saturating_add(u.within_ms) >= decided
                            })
                    })
                })
            });
            if vetoed {
                let state = &mut self.states[p.rule];
                state.stats.alerts -= 1;
                state.stats.suppressed += 1;
                // The vetoed finding opened no incident after all: the key's later activity is
                // judged afresh (and vetoed again while the other story lasts), instead of being
                // absorbed, unreported, for as long as it goes on. Rules that follow this one
                // must not find it either.
                let id = &p.alert.alert_id;
                if let Some(st) = p.key.as_ref().and_then(|k| state.keys.get_mut(k))
                    && st.incident.as_ref().is_some_and(|i| &i.alert_id == id)
                {
                    st.incident = None;
                }
                let (log, watch) = (&mut self.veto_log, &self.veto_watch);
                forget_incidents(&mut self.incidents, log, watch, |k, inc| {
                    k.rule == p.rule && &inc.alert_id == id
                });
            } else {
                out.push(p.alert);
            }
        }
    }

    /// End of input: every settling alert is decided now.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        self.release(i64::MAX, out);
    }

    /// Bounds the rule's key count: past the limit, the least recently active tenth is evicted,
    /// so the cost of finding them is paid once per many insertions.
    fn enforce_capacity(&mut self, r: usize) {
        let max = self.limits.max_keys_per_rule.max(1);
        let state = &mut self.states[r];
        if state.keys.len() <= max {
            return;
        }
        let target = max - max / 10;
        let excess = state.keys.len() - target;
        let mut times: Vec<i64> = state.keys.values().map(|s| s.last_time).collect();
        let (_, cutoff, _) = times.select_nth_unstable(excess.saturating_sub(1));
        let cutoff = *cutoff;
        let mut removed = 0usize;
        state.keys.retain(|_, s| {
            if removed < excess && s.last_time <= cutoff {
                removed += 1;
                false
            } else {
                true
            }
        });
        state.stats.evicted += removed as u64;
    }

    /// Advances event time. Keys idle past their window and suppression are dropped, and
    /// incidents no sequence can still reference are forgotten. Returns whether it swept (once
    /// per `sweep_interval_ms` of event time), so that callers can piggyback their own
    /// housekeeping.
    pub fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>) -> bool {
        if watermark <= self.watermark {
            return false;
        }
        self.watermark = watermark;
        if !self.pending.is_empty() {
            self.release(watermark, out);
        }
        if watermark < self.next_sweep {
            return false;
        }
        let live: usize = self.states.iter().map(|s| s.keys.len()).sum();
        if self.events_since_sweep < (live / 4) as u64 {
            return false;
        }
        self.events_since_sweep = 0;
        self.next_sweep = watermark.saturating_add(self.limits.sweep_interval_ms);
        for (rule, state) in self.rules.iter().zip(&mut self.states) {
            let ttl = rule.window_ms.max(rule.suppress_ms);
            let before = state.keys.len();
            state
                .keys
                .retain(|_, s| s.last_time.saturating_add(ttl) >= watermark);
            state.stats.expired += (before - state.keys.len()) as u64;
        }
        let (keep, watch) = (&self.keep_incidents_ms, &self.veto_watch);
        forget_incidents(&mut self.incidents, &mut self.veto_log, watch, |k, inc| {
            inc.last_seen.saturating_add(keep[k.rule]) < watermark
        });
        true
    }

    /// Serializes all detector state (for checkpoints). Keys are sorted, so the same state always
    /// gives the same bytes.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let snapshot = Snapshot {
            rules: self.rule_versions(),
            shapes: self.rules.iter().map(state_shape).collect(),
            watermark: self.watermark,
            next_sweep: self.next_sweep,
            states: self
                .states
                .iter()
                .map(|s| {
                    let mut v: Vec<(Key, KeyState)> = s
                        .keys
                        .iter()
                        .map(|(k, st)| (k.clone(), st.clone()))
                        .collect();
                    v.sort_by(|a, b| a.0.parts().cmp(b.0.parts()));
                    v
                })
                .collect(),
            stats: self.states.iter().map(|s| s.stats).collect(),
            incidents: {
                let mut v: Vec<_> = self
                    .incidents
                    .iter()
                    .map(|(k, i)| ((k.rule, k.field, k.part.clone()), i.clone()))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            },
            pending: self.pending.iter().cloned().collect(),
        };
        Ok(serde_json::to_vec(&snapshot)?)
    }

    /// Restores state saved by [`Engine::snapshot`], rule by rule: a loaded rule takes the
    /// state the snapshot holds for the same id and version, laid out the same way (its key
    /// fields and counters, [`state_shape`]). Other loaded rules start empty, and state of
    /// rules no longer loaded is dropped: a changed rule pack costs the changed rules one window
    /// of history, not the whole detector's. Returns the ids of the rules that started empty.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<Vec<String>, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        let n = snapshot.rules.len();
        if snapshot.states.len() != n
            || snapshot.stats.len() != n
            || !(snapshot.shapes.is_empty() || snapshot.shapes.len() == n)
        {
            return Err(SnapshotError::Inconsistent(format!(
                "{n} rules, {} rule states, {} rule counters, {} shapes",
                snapshot.states.len(),
                snapshot.stats.len(),
                snapshot.shapes.len()
            )));
        }
        // Where each loaded rule's state is in the snapshot, if it is there and fits.
        let versions = self.rule_versions();
        let from: Vec<Option<usize>> = self
            .rules
            .iter()
            .zip(&versions)
            .map(|(rule, version)| {
                let j = snapshot.rules.iter().position(|v| v == version)?;
                let shape_fits = snapshot
                    .shapes
                    .get(j)
                    .is_none_or(|shape| *shape == state_shape(rule));
                // Snapshots without shapes: every key's state must still have one queue per
                // counter, or the rule starts empty rather than read past its counters.
                let layout_fits = snapshot.states[j].iter().all(|(_, st)| {
                    st.recent.len() == rule.counters.len()
                        && st.sketches.len() <= rule.counters.len()
                });
                (shape_fits && layout_fits).then_some(j)
            })
            .collect();
        let mut to = vec![None; n];
        for (r, j) in from.iter().enumerate() {
            if let Some(j) = *j {
                to[j] = Some(r);
            }
        }
        let mut states: Vec<Option<Vec<(Key, KeyState)>>> =
            snapshot.states.into_iter().map(Some).collect();
        let mut started_empty = Vec::new();
        for (r, state) in self.states.iter_mut().enumerate() {
            match from[r] {
                Some(j) => {
                    state.keys = states[j].take().unwrap_or_default().into_iter().collect();
                    state.stats = snapshot.stats[j];
                }
                None => {
                    *state = RuleState::default();
                    started_empty.push(self.rules[r].id.clone());
                }
            }
        }
        self.watermark = snapshot.watermark;
        self.next_sweep = snapshot.next_sweep;
        // Restored entries carry no verdicts: every key computes them when next touched.
        self.veto_log.reset();
        self.max_time = self
            .states
            .iter()
            .flat_map(|s| s.keys.values().map(|k| k.last_time))
            .fold(self.watermark, i64::max);
        let rules = &self.rules;
        self.incidents = snapshot
            .incidents
            .into_iter()
            .filter_map(|((j, field, part), i)| {
                let rule = to.get(j).copied().flatten()?;
                // Indexed under a plain name before user values carried their tenant: no
                // lookup finds it again, so it is not kept.
                if field == KeyField::User && !matches!(part, KeyPart::Account(..)) {
                    return None;
                }
                // An incident is indexed by one of its rule's key fields.
                rules[rule]
                    .key
                    .contains(&field)
                    .then_some((IncidentKey { rule, field, part }, i))
            })
            .collect();
        self.pending = snapshot
            .pending
            .into_iter()
            .filter_map(|mut p| {
                p.rule = to.get(p.rule).copied().flatten()?;
                Some(p)
            })
            .collect();
        Ok(started_empty)
    }

    fn rule_versions(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| format!("{}@{}", r.id, r.version))
            .collect()
    }
}

/// What a rule's saved state is laid out by: its key fields (which key and incident parts it
/// holds) and its counters (one queue and sketch each, by position, with what they keep). A
/// rule edited without a version bump that changes these must not read the old state.
fn state_shape(rule: &CompiledRule) -> String {
    let counters: Vec<String> = rule
        .counters
        .iter()
        .map(|c| format!("{}={:?}", c.name, c.aggregate))
        .collect();
    // Since user values carry their tenant, state saved with plain names (a user key, or a
    // counter's users: `distinct: user` would count each user twice, once per form) must not
    // be read with accounts: the marker makes such a rule start empty once.
    let holds_users = rule.key.contains(&KeyField::User)
        || rule
            .counters
            .iter()
            .any(|c| c.value_field() == Some(KeyField::User));
    let accounts = if holds_users { ";user=account" } else { "" };
    format!(
        "key={:?}{accounts};window={:?};counters={}",
        rule.key,
        rule.window_kind,
        counters.join(",")
    )
}

/// Adds a distinct value to counter `c`'s sketch, creating it (seeded with the exact values still
/// held) when the exact set first overflows.
fn sketch_insert(
    sketches: &mut Vec<Option<WindowedSketch>>,
    c: usize,
    rule: &CompiledRule,
    exact: &VecDeque<Entry>,
    value: &KeyPart,
    time: i64,
) {
    if sketches.len() <= c {
        sketches.resize(c + 1, None);
    }
    let sketch = sketches[c].get_or_insert_with(|| {
        let mut s = WindowedSketch::new(rule.window_ms);
        for x in exact {
            if let Some(v) = &x.value {
                s.insert(v.hash64(), x.time);
            }
        }
        s
    });
    sketch.insert(value.hash64(), time);
}

/// Where the window that ends at `t` starts, for this key.
fn window_start(rule: &CompiledRule, state: &KeyState, t: i64) -> i64 {
    match rule.window_kind {
        WindowKind::Sliding => t.saturating_sub(rule.window_ms),
        WindowKind::Tumbling => t - t.rem_euclid(rule.window_ms),
        WindowKind::Session => state.session_start,
    }
}

/// Each counter's value over `[start, now]` — a count, a distinct count, a minimum or maximum
/// (NaN when no event had the field, so no comparison holds), or for `first`/`last` the number of
/// entries — and the first and last counted times.
fn window_values(
    rule: &CompiledRule,
    recent: &[VecDeque<Entry>],
    start: i64,
    now: i64,
    vetoed: &dyn Fn(&Entry) -> bool,
    all: bool,
) -> (Vec<f64>, i64, i64) {
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    let per_event_veto = rule.unless.as_ref().is_some_and(|u| u.per_event);
    let values = rule
        .counters
        .iter()
        .zip(recent)
        .zip(&rule.shown_only)
        .map(|((counter, q), &shown_only)| {
            if shown_only && !all && !per_event_veto {
                // Not counted now, but its entries still bound the window (first, last): the
                // queue is sorted by time, so the edges are two binary searches.
                let from = q.partition_point(|x| x.time < start);
                let to = q.partition_point(|x| x.time <= now);
                if from < to {
                    first = first.min(q[from].time);
                    last = last.max(q[to - 1].time);
                }
                return 0.0;
            }
            let mut n = 0u64;
            let mut low = f64::INFINITY;
            let mut high = f64::NEG_INFINITY;
            for x in q
                .iter()
                .filter(|x| x.time >= start && x.time <= now && !vetoed(x))
            {
                n += 1;
                first = first.min(x.time);
                last = last.max(x.time);
                if let Some(v) = x.num {
                    low = low.min(v);
                    high = high.max(v);
                }
            }
            match counter.aggregate {
                Aggregate::Min(_) if n > 0 => low,
                Aggregate::Max(_) if n > 0 => high,
                Aggregate::Min(_) | Aggregate::Max(_) => f64::NAN,
                _ => n as f64,
            }
        })
        .collect();
    (values, first, last)
}

/// From which deciding-event time on an entry is vetoed: the earliest start of an incident of a
/// vetoing rule that names one of its `unless.on` values (`veto`) and was recent when it
/// happened (`time`); `i64::MAX` when there is none. An entry is vetoed at `now` exactly when an
/// incident that had begun by `now` names it, so one number holds the verdict for every `now`
/// until the incidents change.
fn veto_from(
    incidents: &FxHashMap<IncidentKey, Incident>,
    refs: &[usize],
    within_ms: i64,
    veto: &[(KeyField, KeyPart)],
    time: i64,
) -> i64 {
    let mut from = i64::MAX;
    for (f, v) in veto {
        let part = HashedPart::new(v.as_ref());
        for &target in refs {
            let probe = IncidentKeyRef {
                rule: target,
                field: *f,
                part,
            };
            if let Some(inc) = incidents.get(&probe)
                && inc.last_seen.saturating_add(within_ms) >= time
            {
                from = from.min(inc.first_seen);
            }
        }
    }
    from
}

/// The hash under which [`VetoLog`] records a change to the incidents naming `part`.
fn veto_hash(field: KeyField, part: KeyPartRef<'_>) -> u64 {
    use std::hash::BuildHasher;
    FxBuildHasher.hash_one((field, part))
}

/// One of 64 bits for a [`veto_hash`]; from its top bits, which Fx mixes best.
fn veto_bit(hash: u64) -> u64 {
    1 << (hash >> 58)
}

/// The bits of an entry's `unless.on` values.
fn veto_bits(veto: &[(KeyField, KeyPart)]) -> u64 {
    veto.iter()
        .fold(0, |bits, (f, v)| bits | veto_bit(veto_hash(*f, v.as_ref())))
}

/// Brings the kept veto verdicts of a key's entries up to date with the incidents: the entries
/// whose values a change since the last look may concern are recomputed (all of them when the
/// log no longer reaches back that far).
fn refresh_vetoes(
    state: &mut KeyState,
    log: &VetoLog,
    incidents: &FxHashMap<IncidentKey, Incident>,
    refs: &[usize],
    within_ms: i64,
) {
    let next = log.next();
    if state.veto_checked == Some(next) {
        return;
    }
    // Folding a long stretch of the log costs more than looking up the few entries of a quiet
    // key again (a lookup is worth some 64 folds).
    let entries: usize = state.recent.iter().map(VecDeque::len).sum();
    let changed = state
        .veto_checked
        .filter(|seq| next - seq <= (entries as u64).saturating_mul(64))
        .and_then(|seq| log.bits_since(seq));
    for x in state.recent.iter_mut().flatten() {
        match changed {
            Some(bits) if x.veto_bits & bits == 0 => {}
            Some(_) => x.veto_from = veto_from(incidents, refs, within_ms, &x.veto, x.time),
            None => {
                x.veto_bits = veto_bits(&x.veto);
                x.veto_from = veto_from(incidents, refs, within_ms, &x.veto, x.time);
            }
        }
    }
    state.veto_checked = Some(next);
}

/// The value of a `first`/`last` counter in `[start, now]`, as text.
fn edge_value(q: &VecDeque<Entry>, aggregate: Aggregate, start: i64, now: i64) -> Option<String> {
    let mut in_window = q.iter().filter(|x| x.time >= start && x.time <= now);
    let entry = match aggregate {
        Aggregate::First(_) => in_window.next(),
        Aggregate::Last(_) => in_window.next_back(),
        _ => None,
    };
    entry.and_then(|x| x.value.as_ref()).map(|v| v.to_string())
}

/// Drops the incidents `forget` selects, recording in `log` those of the rules that per-event
/// vetoes read (`watch`, [`Engine::veto_watch`]).
fn forget_incidents(
    incidents: &mut FxHashMap<IncidentKey, Incident>,
    log: &mut VetoLog,
    watch: &[Option<i64>],
    forget: impl Fn(&IncidentKey, &Incident) -> bool,
) {
    incidents.retain(|k, inc| {
        if !forget(k, inc) {
            return true;
        }
        if watch[k.rule].is_some() {
            log.push(k.field, k.part.as_ref());
        }
        false
    });
}

/// Where [`index_incident`] records changes that per-event vetoes must see.
struct Watch<'a> {
    log: &'a mut VetoLog,
    /// The shortest `within` of the vetoes naming the rule.
    within: i64,
    /// [`Engine::max_time`].
    max_time: i64,
}

fn index_incident(
    index: &mut FxHashMap<IncidentKey, Incident>,
    r: usize,
    fields: &[KeyField],
    parts: &[HashedPart<'_>],
    incident: &Incident,
    mut watch: Option<Watch<'_>>,
) {
    for (f, p) in fields.iter().zip(parts) {
        let probe = IncidentKeyRef {
            rule: r,
            field: *f,
            part: *p,
        };
        // An open incident is re-indexed on every event it absorbs: update in place, and clone
        // the key only for a new entry.
        let changes_verdicts = match index.get_mut(&probe) {
            Some(existing) => {
                // A verdict reads `first_seen`, and `last_seen + within` against the entry's
                // time. Absorbing one more event only moves `last_seen` on: that concerns only
                // entries later than `within` after the incident's previous event, and no entry
                // is later than the latest event seen.
                let changes = watch.as_ref().is_some_and(|w| {
                    existing.first_seen != incident.first_seen
                        || incident.last_seen < existing.last_seen
                        || (incident.last_seen > existing.last_seen
                            && existing.last_seen.saturating_add(w.within) < w.max_time)
                });
                existing.clone_from(incident);
                changes
            }
            None => {
                index.insert(
                    IncidentKey {
                        rule: r,
                        field: *f,
                        part: p.part.into_owned(),
                    },
                    incident.clone(),
                );
                true
            }
        };
        if changes_verdicts && let Some(w) = watch.as_mut() {
            w.log.push(*f, p.part);
        }
    }
}

/// The index of an (activity, outcome) pair in `Engine::by_signature`.
#[inline]
fn signature(activity: Activity, outcome: Outcome) -> usize {
    activity.index() * Outcome::ALL.len() + outcome.index()
}

/// The most recent incident of any referenced rule sharing one of the `on` fields with the
/// event, whose last event is at most `within_ms` before it.
fn find_incident<'a>(
    index: &'a FxHashMap<IncidentKey, Incident>,
    refs: &[usize],
    on: &[KeyField],
    within_ms: i64,
    parts: &EventParts<'_>,
) -> Option<&'a Incident> {
    let e = parts.event();
    let mut best: Option<&Incident> = None;
    for &r in refs {
        for &f in on {
            let Some(part) = parts.get(f) else {
                continue;
            };
            if let Some(inc) = index.get(&IncidentKeyRef {
                rule: r,
                field: f,
                part,
            }) && e.time >= inc.first_seen
                && e.time - inc.last_seen <= within_ms
                && best.is_none_or(|b| (inc.last_seen, &inc.alert_id) > (b.last_seen, &b.alert_id))
            {
                best = Some(inc);
            }
        }
    }
    best
}

/// A counter's value as an alert shows it.
enum Shown {
    Count(u64),
    /// NaN when no counted event had the field.
    Real(f64),
    Text(Option<String>),
}

impl Shown {
    fn text(&self) -> String {
        match self {
            Shown::Count(n) => n.to_string(),
            Shown::Real(v) if v.is_nan() => String::new(),
            Shown::Real(v) => format!("{v:.0}"),
            Shown::Text(t) => t.clone().unwrap_or_default(),
        }
    }

    fn metric(&self) -> Option<MetricValue> {
        match self {
            Shown::Count(n) => Some(MetricValue::Count(*n)),
            Shown::Real(v) if v.is_nan() => None,
            Shown::Real(v) => Some(MetricValue::Real(*v)),
            Shown::Text(t) => t.clone().map(MetricValue::Text),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_alert(
    rule: &CompiledRule,
    key: &Key,
    e: &AuthEvent,
    shown: &[Shown],
    evidence: Vec<String>,
    window: Window,
    alert_id: String,
    related: Vec<String>,
) -> Alert {
    let window_start = window.start.millis();
    let entity = key.entity(&rule.key);
    let key_value = |f: KeyField| {
        rule.key
            .iter()
            .zip(key.parts())
            .find(|(k, _)| **k == f)
            .map(|(_, p)| p.to_string())
            .or_else(|| f.extract(e).map(|p| p.to_string()))
            .unwrap_or_default()
    };
    let src_ip = e.src.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let country = e
        .src
        .geo
        .as_ref()
        .map(|g| g.country.to_string())
        .unwrap_or_default();
    let texts: Vec<String> = shown.iter().map(Shown::text).collect();
    let values = crate::template::Values {
        counters: &texts,
        key: &key_value,
        window_ms: rule.window_ms,
        first_seen_ms: window_start,
        last_seen_ms: e.time,
        src_ip: &src_ip,
        country: &country,
        app: &e.app,
    };
    let metrics: BTreeMap<String, MetricValue> = rule
        .counters
        .iter()
        .zip(shown)
        .filter_map(|(c, v)| v.metric().map(|m| (c.name.clone(), m)))
        .collect();
    Alert {
        alert_id,
        rule_id: rule.id.clone(),
        rule_version: rule.version,
        category: rule.category.clone(),
        cause_class: rule.cause_class,
        severity: rule.severity,
        attack_technique: rule.attack_technique.clone(),
        entity,
        window,
        metrics,
        evidence,
        observed: Observed {
            event_id: e.event_id.clone(),
            tenant: e.tenant.clone(),
            time: Timestamp(e.time),
            src: e.src.clone(),
            device: e.device.clone(),
            app: e.app.clone(),
            context: e.context.clone(),
        },
        first_seen: Timestamp(window_start),
        last_seen: Timestamp(e.time),
        summary: Localized {
            en: rule.summary.0.render(&values),
            ja: rule.summary.1.render(&values),
        },
        steps: LocalizedSteps {
            en: rule.steps.0.clone(),
            ja: rule.steps.1.clone(),
        },
        related,
    }
}
