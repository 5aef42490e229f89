//! Whom an alert is about and how far its incident reaches: actors, familiar sources, rule keys and scopes.

use super::*;

/// Whether an alert is keyed by who sent the traffic (address, ASN, client) rather than whom it
/// targeted.
pub(super) fn has_actor(a: &Alert) -> bool {
    let e = &a.entity;
    e.user.is_none() && (e.ip.is_some() || e.asn.is_some() || e.device_fingerprint.is_some())
}

/// Whether an alert is about a whole tenant (an outage, a policy or lockout wave): it concerns
/// every user of the tenant whose failures are of its kind, not only those its evidence names.
pub(super) fn tenant_keyed(a: &Alert) -> bool {
    let e = &a.entity;
    e.tenant.is_some() && e.user.is_none() && !has_actor(a)
}

/// A device's fingerprint when it tells one device from another. Without the provider's device
/// id a fingerprint is only the client's make ("Windows/Chrome 131/desktop"), which most of a
/// company's staff share, so it names no one.
pub(super) fn identifying(d: &authwatch_event::Device) -> Option<&str> {
    (!d.id.is_empty() && !d.fingerprint.is_empty()).then_some(d.fingerprint.as_str())
}

/// Addresses and identifying device fingerprints.
#[derive(Debug, Default, Clone)]
pub(super) struct Sources {
    pub(super) ips: BTreeSet<IpAddr>,
    pub(super) devices: BTreeSet<String>,
}

impl Sources {
    pub(super) fn has(&self, ev: &AuthEvent) -> bool {
        self.has_source(ev.src.ip, &ev.device)
    }

    /// Whether the address or the identifying device is one of these.
    pub(super) fn has_source(&self, ip: Option<IpAddr>, device: &authwatch_event::Device) -> bool {
        ip.is_some_and(|ip| self.ips.contains(&ip))
            || identifying(device).is_some_and(|fp| self.devices.contains(fp))
    }

    pub(super) fn add(&mut self, ev: &AuthEvent) {
        self.ips.extend(ev.src.ip);
        self.devices
            .extend(identifying(&ev.device).map(str::to_owned));
    }

    pub(super) fn extend(&mut self, other: Sources) {
        self.ips.extend(other.ips);
        self.devices.extend(other.devices);
    }
}

/// Whether `ev` came from the actor an address-, ASN- or device-keyed alert is about. An ASN
/// is shared by many honest users, so there the client must match the deciding event's too;
/// a device counts only when its fingerprint identifies one.
pub(super) fn from_alert_actor(a: &Alert, ev: &AuthEvent) -> bool {
    let e = &a.entity;
    let fp = identifying(&ev.device);
    let alert_fp = identifying(&a.observed.device);
    (e.ip.is_some() && e.ip == ev.src.ip)
        || (fp.is_some() && alert_fp.is_some() && e.device_fingerprint.as_deref() == fp)
        || (e.asn.is_some() && e.asn == ev.src.asn && fp.is_some() && alert_fp == fp)
}

/// Who may have sent the user's failures: what the report knows besides the alerts themselves.
pub(super) struct Actors<'a> {
    pub(super) who: &'a Who,
    /// Where the user signs in from: the addresses and devices of their successful sign-ins
    /// that no attack alert names, and the devices their profile already knew. An attacker
    /// behind the same office NAT or carrier-grade NAT cannot be told apart from the user by
    /// address, so failures from there are left to their own reasons.
    pub(super) familiar: Sources,
    /// Event keys of the user's successful sign-ins.
    pub(super) successes: HashSet<String>,
    /// By alert id: where the failures it names came from, other users' included.
    pub(super) sources: &'a HashMap<String, Sources>,
}

impl Actors<'_> {
    /// Whether `a` is about this user's account in `ev`'s tenant. A user key is an account
    /// within its tenant: the same name's alert in another tenant is another person's, and its
    /// attacker did not send this user's failures.
    pub(super) fn on_user(&self, a: &Alert, ev: &AuthEvent) -> bool {
        a.entity.user.as_deref().is_some_and(|u| self.who.is(u)) && same_tenant(&a.entity, ev)
    }

    /// Whether the attacker behind `a` may have sent `ev`: never from where the user signs in;
    /// otherwise from the actor the alert is keyed by, from where the failures it names came
    /// from, or from anywhere when the attack is on this very account. A benign alert has no
    /// attacker and is not asked.
    pub(super) fn attacker_sent(&self, a: &Alert, ev: &AuthEvent) -> bool {
        if a.cause_class != CauseClass::Attack || self.familiar.has(ev) {
            return false;
        }
        if has_actor(a) {
            return from_alert_actor(a, ev);
        }
        self.on_user(a, ev) || self.sources.get(&a.alert_id).is_some_and(|s| s.has(ev))
    }

    /// Whether `ev` keeps `a`'s incident going: of its rule's kind and entity and, for an
    /// attack, sent by its attacker (a tenant-wide spray counts every user's wrong passwords
    /// alike, the user's own typos among them).
    pub(super) fn of_incident(&self, rule: &CompiledRule, a: &Alert, ev: &AuthEvent) -> bool {
        of_kind(rule, a, ev) && (a.cause_class != CauseClass::Attack || self.attacker_sent(a, ev))
    }

    /// Whether `ev`, whatever its reason, came from where an attack on this account came from:
    /// the address or device the alert is keyed by, or its deciding event's unless that was the
    /// user's own sign-in. A successful sign-in is the user's own only when it came from one of
    /// their familiar sources (an impossible-travel finding deciding on the office sign-in
    /// after a sign-in from abroad): the anonymizer, impossible-travel, new-place and
    /// fatigue-success findings all decide on a success, and when that success is the
    /// attacker's, its address is exactly where the attack came from. A tenant-wide alert's
    /// deciding event is some other user's, so it says nothing about this user's source.
    pub(super) fn came_from_attack_source(&self, a: &Alert, ev: &AuthEvent) -> bool {
        if a.cause_class != CauseClass::Attack || self.familiar.has(ev) {
            return false;
        }
        if has_actor(a) {
            return from_alert_actor(a, ev);
        }
        if !self.on_user(a, ev) {
            return false;
        }
        let o = &a.observed;
        let decided_by_user = !o.event_id.is_empty()
            && self.successes.contains(&event_key(&o.tenant, &o.event_id))
            && self.familiar.has_source(o.src.ip, &o.device);
        let fp = identifying(&ev.device);
        (ev.src.ip.is_some() && ev.src.ip == a.entity.ip)
            || (!decided_by_user
                && ((ev.src.ip.is_some() && ev.src.ip == o.src.ip)
                    || (fp.is_some() && identifying(&o.device) == fp)))
    }
}

/// Whether `ev` is of the tenant of an alert's user: the engine keys a user as an account
/// within its tenant, and an alert without a tenant is of events without one.
fn same_tenant(entity: &authwatch_event::Entity, ev: &AuthEvent) -> bool {
    same_text(entity.tenant.as_deref().unwrap_or_default(), &ev.tenant)
}

/// Whether `e` has the alert's entity as its rule keys it: the entity fields the alert carries,
/// and the deciding event's values for the fields it does not (country, application).
pub(super) fn same_key(rule: &CompiledRule, a: &Alert, e: &AuthEvent) -> bool {
    let entity = &a.entity;
    let fp = e.device.fingerprint.as_str();
    rule.key.iter().all(|field| match field {
        // An account within its tenant, as the engine keys it.
        KeyField::User => {
            entity
                .user
                .as_deref()
                .is_some_and(|u| same_text(u, e.user.key()))
                && same_tenant(entity, e)
        }
        KeyField::Tenant => entity.tenant.as_deref() == Some(e.tenant.as_str()),
        KeyField::Ip => e.src.ip.is_some() && entity.ip == e.src.ip,
        KeyField::Asn => e.src.asn.is_some() && entity.asn == e.src.asn,
        KeyField::Device => !fp.is_empty() && entity.device_fingerprint.as_deref() == Some(fp),
        KeyField::Country => {
            let c = country(&e.src);
            !c.is_empty() && c == country(&a.observed.src)
        }
        KeyField::App => !e.app.is_empty() && e.app == a.observed.app,
    })
}

pub(super) fn country(src: &authwatch_event::Src) -> &str {
    src.geo.as_ref().map_or("", |g| g.country.as_str())
}

/// Whether `e` is an event of the kind the alert's rule counts as evidence, for the same
/// entity: what keeps its incident going. The filter alone is not enough, since a triage rule
/// reads every sign-in step to see the user recover, while only the failures it counts are what
/// it explains.
pub(super) fn of_kind(rule: &CompiledRule, a: &Alert, e: &AuthEvent) -> bool {
    rule.filter.matches(e)
        && rule.evidence.iter().any(|&c| {
            rule.counters
                .get(c)
                .is_some_and(|counter| counter.predicate.matches(e))
        })
        && same_key(rule, a, e)
}

/// Reasons that are one signal for following an incident whose rule is not in the pack: an
/// attacker's pushes are denied or left unanswered at random, and a sprayer's guesses hit
/// existing and unknown names alike.
pub(super) fn family(r: Reason) -> Reason {
    match r {
        Reason::PushDenied | Reason::PushTimeout | Reason::UserReportedFraud => Reason::PushTimeout,
        Reason::InvalidCredentials | Reason::UnknownUser => Reason::InvalidCredentials,
        r => r,
    }
}

/// The event-time span an alert covers when it fires: its window and its incident.
pub(super) fn span(a: &Alert) -> (i64, i64) {
    (
        a.window.start.millis().min(a.first_seen.millis()),
        a.window.end.millis().max(a.last_seen.millis()),
    )
}

/// How far an alert reaches in the user's timeline. A rule alerts once per incident and the
/// incident absorbs further activity of its entity until the entity has been quiet for the
/// rule's `suppress`: an attack that goes on for hours keeps its one alert, whose window and
/// `last_seen` stay at the moment it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scope {
    pub(super) start: i64,
    /// The last of the user's failures that kept the incident going (at least the alert's own
    /// last event).
    pub(super) last: i64,
    /// Until when the incident is still open after `last`.
    pub(super) until: i64,
}

impl Scope {
    pub(super) fn covers(&self, t: i64) -> bool {
        t >= self.start && t <= self.until
    }
}

/// The alert's scope over the user's failures (`problems`, in time order): it goes on with each
/// failure of its kind and entity (and, for an attack, from its attacker: [`Actors::of_incident`])
/// that comes less than the rule's `suppress` after the previous one. Only the user's own events
/// are seen here, so the scope may end earlier than the incident at the engine, never later.
pub(super) fn scope(
    a: &Alert,
    rule: Option<&CompiledRule>,
    problems: &[&AuthEvent],
    actors: &Actors<'_>,
) -> Scope {
    let (start, end) = span(a);
    // Only a tumbling window ends after its deciding event, and its incident ends with its
    // bucket, however active the entity stays.
    if a.window.end > a.last_seen {
        return Scope {
            start,
            last: end,
            until: end,
        };
    }
    let Some(rule) = rule else {
        return Scope {
            start,
            last: end,
            until: end.saturating_add(FOLLOW_MS),
        };
    };
    let suppress = rule.suppress_ms;
    let mut last = end;
    for e in problems {
        if e.time <= last {
            continue;
        }
        if e.time > last.saturating_add(suppress) {
            break;
        }
        if actors.of_incident(rule, a, e) {
            last = e.time;
        }
    }
    Scope {
        start,
        last,
        until: last.saturating_add(suppress),
    }
}

/// Whether a network finding is about this push timeout: the same egress address at about the
/// time of the burst it saw.
pub(super) fn network_covers(a: &Alert, e: &AuthEvent) -> bool {
    let (start, end) = span(a);
    a.cause_class == CauseClass::Network
        && e.outcome == Outcome::Timeout
        && e.src.ip.is_some()
        && e.src.ip == a.entity.ip
        && e.time >= start.saturating_sub(NETWORK_MARGIN_MS)
        && e.time <= end.saturating_add(NETWORK_MARGIN_MS)
}
