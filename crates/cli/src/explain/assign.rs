//! Cause assignment: each failure and lockout put in one cause class, by the alert that explains it or by its reason.

use super::*;

/// A generic explanation for a failure no alert explains, with localized steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Generic {
    WrongPassword,
    UnknownName,
    /// A wrong code of an authenticator app or token (or of a factor not given).
    WrongCode,
    /// A wrong code of one sent by SMS, voice call or e-mail: no clock involved.
    WrongSentCode,
    MethodNotAllowed,
    MfaNotCompleted,
    PasswordExpired,
    /// A push the user denied, no attack around.
    UnexpectedPush,
    /// Another MFA request (call, message) the user declined, no attack around.
    DeclinedRequest,
    PushNotDelivered,
    AuthenticatorFault,
    NotEnrolled,
    ProviderFault,
    PolicyBlock,
    Lockout,
    Disabled,
    Throttled,
    /// A reason outside the vocabulary, whose provider code is listed.
    Unclassified,
    /// No reason at all.
    NoReason,
    /// An MFA request denied while an attack on the account goes on.
    DeniedDuringAttack,
    /// A push left unanswered while an attack on the account goes on.
    UnansweredDuringAttack,
    FraudReported,
}

impl Generic {
    /// Every generic explanation, for tests that check their texts.
    #[cfg(test)]
    pub(super) const ALL: [Generic; 22] = [
        Generic::WrongPassword,
        Generic::UnknownName,
        Generic::WrongCode,
        Generic::WrongSentCode,
        Generic::MethodNotAllowed,
        Generic::MfaNotCompleted,
        Generic::PasswordExpired,
        Generic::UnexpectedPush,
        Generic::DeclinedRequest,
        Generic::PushNotDelivered,
        Generic::AuthenticatorFault,
        Generic::NotEnrolled,
        Generic::ProviderFault,
        Generic::PolicyBlock,
        Generic::Lockout,
        Generic::Disabled,
        Generic::Throttled,
        Generic::Unclassified,
        Generic::NoReason,
        Generic::DeniedDuringAttack,
        Generic::UnansweredDuringAttack,
        Generic::FraudReported,
    ];
}

/// Why a failure is put in its cause class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Basis {
    /// An alert (index into the report's alerts) names the event or covers it.
    Alert(usize),
    /// No alert does: the default mapping of its reason.
    Generic(Generic),
}

/// What the alerts say around one failure, for the default mapping.
pub(super) struct Around {
    /// A network finding on the event's source address at about that time.
    pub(super) network_alert: Option<usize>,
    /// An attack alert's incident was going on at the time, or its actor sent this event.
    pub(super) attack_alert: bool,
}

pub(super) fn is_failure(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failure | Outcome::Denied | Outcome::Timeout | Outcome::Blocked
    )
}

/// The account being locked: providers log it as a successful lock, yet it is exactly why the
/// user cannot sign in. Counted apart from failed steps, so that no figure holds both.
pub(super) fn is_lockout(e: &AuthEvent) -> bool {
    e.activity == Activity::AccountLock && !is_failure(e.outcome)
}

/// What the help desk is asked about: a failed step or a lockout.
pub(super) fn is_problem(e: &AuthEvent) -> bool {
    is_failure(e.outcome) || is_lockout(e)
}

/// The cause of a failure that no alert names, from its reason (and factor and outcome when the
/// provider gave no reason). Alerts see patterns across events and users; this sees one event,
/// so each arm picks the most common cause of that signal and its steps say how to confirm it.
/// The text is chosen by the factor where the advice differs (an SMS code has no clock to
/// drift; a declined call is not a push).
pub(super) fn default_cause(ev: &AuthEvent, around: &Around) -> (CauseClass, Basis) {
    use Basis::{Alert, Generic as G};
    use CauseClass::{Attack, Device, Network, System, User};
    use Generic::*;
    let sent_code = matches!(ev.factor, Factor::Sms | Factor::Voice | Factor::Email);
    match (ev.reason, ev.factor, ev.outcome) {
        // A wrong password is a typo or an old password saved somewhere far more often than an
        // attack; attacks come with their own alerts (brute force, spraying, stuffing).
        (Reason::InvalidCredentials, ..) => (User, G(WrongPassword)),
        // From the user's own seat a name the provider does not know is a mistyped name or the
        // wrong domain; stuffing with unknown names is an IP-keyed alert.
        (Reason::UnknownUser, ..) => (User, G(UnknownName)),
        // One wrong or expired code is a user mistake; app codes that keep failing over
        // hours are clock drift, which the triage rule reports (device) with an alert. A code
        // sent by SMS, call or e-mail has no clock on the phone to drift: an old message.
        (Reason::InvalidOtp, ..) if sent_code => (User, G(WrongSentCode)),
        (Reason::InvalidOtp, ..) => (User, G(WrongCode)),
        // The providers log a method the policy does not allow for the sign-in (Okta
        // FACTOR_NOT_ALLOWED, Duo factor_restricted, Entra and Auth0 "not allowed") as a
        // mismatch: a policy restriction, which the brief puts under system; the administrator
        // checks the policy and the enrollment, then shows the user the allowed method.
        (Reason::MethodMismatch, ..) => (System, G(MethodNotAllowed)),
        // The user stopped at the MFA step (closed the prompt, walked away).
        (Reason::MfaRequired, ..) => (User, G(MfaNotCompleted)),
        // An expired password is fixed by the user changing it, not by an administrator.
        (Reason::PasswordExpired, ..) => (User, G(PasswordExpired)),
        // An unanswered push usually never reached the phone (notifications off, battery
        // optimization): device. During an attack on the account, or from its attacker, it was
        // the attacker's push, which the user ignored or never saw: MFA fatigue counts
        // unanswered pushes as it counts denied ones. When a network finding names the address
        // the push was sent for, at about that time, several users behind that egress lost
        // their pushes: network. An attack outranks the benign finding, as everywhere.
        (Reason::PushTimeout, ..)
        | (Reason::None | Reason::Other, Factor::Push, Outcome::Timeout) => {
            if around.attack_alert {
                (Attack, G(UnansweredDuringAttack))
            } else if let Some(i) = around.network_alert {
                (Network, Alert(i))
            } else {
                (Device, G(PushNotDelivered))
            }
        }
        // A security key or biometric reader that errors is hardware or its driver.
        (Reason::AuthenticatorError, ..) => (Device, G(AuthenticatorFault)),
        // Enrollment is kept by the identity system (removed after a phone change, never done):
        // an administrator fixes it, after verifying the user's identity.
        (Reason::DeviceNotRegistered | Reason::FactorNotEnrolled, ..) => (System, G(NotEnrolled)),
        // The provider failed, not the user; waves across users get an outage alert.
        (Reason::ProviderError, ..) => (System, G(ProviderFault)),
        // A sign-on or risk policy decided; only an administrator can review or except it.
        (Reason::PolicyDenied | Reason::RiskBlocked, ..) => (System, G(PolicyBlock)),
        // A lockout is the system's protection: unlocking and tuning it is an admin task
        // (lockouts caused by an attack come with brute-force alerts that claim them).
        (Reason::LockedOut, ..) => (System, G(Lockout)),
        (Reason::AccountDisabled, ..) => (System, G(Disabled)),
        // Throttling is the provider's limit; the retrying client behind it is found in logs.
        (Reason::RateLimited, ..) => (System, G(Throttled)),
        // A denied push (or call): during an attack on the user, or from the attacker's
        // address, the request was most likely the attacker's; otherwise it was the user's
        // own action, for a reason only they know (a mis-tap, or a request they had not
        // started), so ask them.
        (Reason::PushDenied, ..) | (Reason::None | Reason::Other, _, Outcome::Denied) => {
            if around.attack_alert {
                (Attack, G(DeniedDuringAttack))
            } else if ev.reason == Reason::PushDenied || ev.factor == Factor::Push {
                (User, G(UnexpectedPush))
            } else {
                (User, G(DeclinedRequest))
            }
        }
        // A fraud report is the user saying "this was not me": an attack even when no rule in
        // the pack turned it into an alert.
        (Reason::UserReportedFraud, ..) => (Attack, G(FraudReported)),
        // No usable reason, but the provider says a policy blocked it.
        (Reason::None | Reason::Other, _, Outcome::Blocked) => (System, G(PolicyBlock)),
        // No usable reason on a security key or biometric step: the hardware is the likely part.
        (
            Reason::None | Reason::Other,
            Factor::Webauthn | Factor::Biometric | Factor::HardwareToken,
            _,
        ) => (Device, G(AuthenticatorFault)),
        // A code outside the vocabulary: the provider's own code (listed with the reasons) is
        // looked up in its admin console, which is the system side.
        (Reason::Other, ..) if !ev.reason_raw.is_empty() => (System, G(Unclassified)),
        // Nothing to go on at all: the event itself is opened in the admin console.
        (Reason::None | Reason::Other, ..) => (System, G(NoReason)),
    }
}

/// The best-ranked of `candidates`: attacks before benign findings, then by severity, then the
/// alert that names more of the user's failures (a clock-drift finding over four failed codes
/// sees more than a user-mistake finding over the first three); the earliest wins a tie.
pub(super) fn best(
    alerts: &[Alert],
    named: &[usize],
    candidates: impl Iterator<Item = usize>,
) -> Option<usize> {
    best_matched(alerts, named, candidates.map(|i| (i, Match::Named)))
}

/// How an alert matches a failure it does not name, strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Match {
    /// Only its source: the attacker's address or device, whatever the failure.
    Source,
    /// A lockout and the wrong passwords that led to it, one of which the alert names.
    Lockout,
    /// The kind of event the rule counts, for its entity.
    Kind,
    /// The alert names the event itself.
    Named,
}

/// As [`best`], with how each candidate matches ranked after the cause class: the brute force
/// whose kind a wrong password is explains it better than the compromise that only shares its
/// address, yet any attack outranks a benign finding.
pub(super) fn best_matched(
    alerts: &[Alert],
    named: &[usize],
    candidates: impl Iterator<Item = (usize, Match)>,
) -> Option<usize> {
    let rank = |(i, m): (usize, Match)| {
        let a = &alerts[i];
        (a.cause_class == CauseClass::Attack, m, a.severity, named[i])
    };
    let mut best: Option<(usize, Match)> = None;
    for c in candidates {
        if best.is_none_or(|b| rank(c) > rank(b)) {
            best = Some(c);
        }
    }
    best.map(|(i, _)| i)
}

/// Puts every failure and lockout in one cause class: the best alert that names it in its
/// evidence; else the best alert whose incident it belongs to (an event of the alert's kind and
/// entity while the incident goes on, a failure from where an attack on the account came from
/// while that attack goes on, or the wrong passwords that led to a lockout the alert names);
/// else the default mapping of its reason.
pub(super) fn assign(
    problems: &[&AuthEvent],
    alerts: &[Alert],
    scopes: &[Scope],
    rules: &HashMap<String, CompiledRule>,
    actors: &Actors<'_>,
) -> Vec<Group> {
    let by_id: HashMap<String, &AuthEvent> = problems
        .iter()
        .map(|e| (event_key(&e.tenant, &e.event_id), *e))
        .collect();
    let rule: Vec<Option<&CompiledRule>> = alerts.iter().map(|a| rules.get(&a.rule_id)).collect();
    let mut naming: HashMap<String, Vec<usize>> = HashMap::new();
    // Per alert: how many of the user's problems it names, their reasons, and who sent them.
    let mut named = vec![0usize; alerts.len()];
    let mut named_reasons: Vec<BTreeSet<Reason>> = vec![BTreeSet::new(); alerts.len()];
    let mut named_sources: Vec<Sources> = vec![Sources::default(); alerts.len()];
    let mut named_locks: Vec<Vec<i64>> = vec![Vec::new(); alerts.len()];
    for (i, a) in alerts.iter().enumerate() {
        let tenant = a
            .entity
            .tenant
            .as_deref()
            .unwrap_or(a.observed.tenant.as_str());
        for id in &a.evidence {
            let key = event_key(tenant, id);
            if let Some(e) = by_id.get(&key) {
                naming.entry(key).or_default().push(i);
                named[i] += 1;
                named_reasons[i].insert(family(e.reason));
                named_sources[i].add(e);
                if is_lock(e) {
                    named_locks[i].push(e.time);
                }
            }
        }
    }
    let on_user = |i: usize, ev: &AuthEvent| actors.on_user(&alerts[i], ev);
    let is_attack = |i: usize| alerts[i].cause_class == CauseClass::Attack;
    // The same actor as the alert's incident. For an attack, its attacker
    // ([`Actors::attacker_sent`]). For a benign finding, the incident is the user's own, or the
    // failure came from where one of the user's events the alert names came from.
    let same_actor = |i: usize, ev: &AuthEvent| {
        if is_attack(i) {
            actors.attacker_sent(&alerts[i], ev)
        } else {
            on_user(i, ev) || named_sources[i].has(ev)
        }
    };

    let mut groups: BTreeMap<CauseClass, Group> = BTreeMap::new();
    for &ev in problems {
        let by_evidence = naming
            .get(&event_key(&ev.tenant, &ev.event_id))
            .and_then(|v| best(alerts, &named, v.iter().copied()));
        let belongs = |i: usize| -> Option<Match> {
            let a = &alerts[i];
            let during = scopes[i].covers(ev.time);
            // More of what the rule counts, for the same entity, while the incident goes on
            // ([`Actors::of_incident`]). Without the rule: more of the signal the alert named,
            // from the same actor.
            let of_its_kind = match rule[i] {
                Some(r) => actors.of_incident(r, a, ev),
                None => named_reasons[i].contains(&family(ev.reason)) && same_actor(i, ev),
            };
            // Whatever the reason, a failure from where an attack on the account came from,
            // while it goes on: the attacker's own push after a compromise, say.
            let from_attacker = actors.came_from_attack_source(a, ev);
            // The lockout that a password attack or the user's own wrong passwords ran into.
            // A password attack need not name the user's own wrong passwords (its evidence is
            // capped, and a spray's are mostly other users'); its attacker's lockout is still
            // its own.
            let guesses_passwords = named_reasons[i].contains(&Reason::InvalidCredentials)
                || (is_attack(i) && guesses_passwords(a));
            let lock_it_caused = is_lock(ev) && guesses_passwords && same_actor(i, ev);
            // The wrong passwords that led to a lockout belong to the lockout's story
            // (lockouts are a system cause: review the threshold, find the old password)
            // unless an attack claims them, which outranks it.
            let led_to_lock = family(ev.reason) == Reason::InvalidCredentials
                && same_actor(i, ev)
                && named_locks[i]
                    .iter()
                    .any(|&t| ev.time <= t && ev.time >= t.saturating_sub(FOLLOW_MS));
            if during && of_its_kind {
                Some(Match::Kind)
            } else if (during && lock_it_caused) || led_to_lock {
                Some(Match::Lockout)
            } else if during && from_attacker {
                Some(Match::Source)
            } else {
                None
            }
        };
        let following = |attacks_only: bool, at_least: Match| {
            best_matched(
                alerts,
                &named,
                (0..alerts.len())
                    .filter(|&i| !attacks_only || is_attack(i))
                    .filter_map(|i| belongs(i).map(|m| (i, m)))
                    .filter(|&(_, m)| m >= at_least),
            )
        };
        // An alert naming the event wins, except that an attack still going on whose incident
        // the event belongs to outranks a benign finding (the lockout an attacker caused is the
        // attack's, not a threshold's). Sharing only a source with an attack is not enough to
        // overrule an alert that names the event.
        let chosen = match by_evidence {
            Some(e) if is_attack(e) => Some(e),
            Some(e) => following(true, Match::Lockout).or(Some(e)),
            None => following(false, Match::Source),
        };
        let (class, basis) = match chosen {
            Some(i) => (alerts[i].cause_class, Basis::Alert(i)),
            None => {
                let network_alert = best(
                    alerts,
                    &named,
                    (0..alerts.len()).filter(|&i| network_covers(&alerts[i], ev)),
                );
                // Only an attack going on at the time makes a denied or unanswered push the
                // attacker's, and only one on this account or whose attacker sent this very
                // event: an attack elsewhere in the period says nothing about a push the next
                // day, and a tenant-wide spray says nothing about one user's push.
                let attack_alert = (0..alerts.len()).any(|i| {
                    is_attack(i)
                        && scopes[i].covers(ev.time)
                        && (on_user(i, ev) || actors.attacker_sent(&alerts[i], ev))
                });
                default_cause(
                    ev,
                    &Around {
                        network_alert,
                        attack_alert,
                    },
                )
            }
        };
        let lockout = usize::from(is_lockout(ev));
        let failure = 1 - lockout;
        let g = groups.entry(class).or_insert_with(|| Group {
            class,
            failures: 0,
            lockouts: 0,
            first: ev.time,
            last: ev.time,
            reasons: BTreeMap::new(),
            explanations: BTreeMap::new(),
        });
        g.failures += failure;
        g.lockouts += lockout;
        g.first = g.first.min(ev.time);
        g.last = g.last.max(ev.time);
        let raw = g.reasons.entry(ev.reason).or_default();
        if !ev.reason_raw.is_empty() && raw.len() < 5 {
            raw.insert(ev.reason_raw.to_string());
        }
        let x = g.explanations.entry(basis).or_insert(Explained {
            failures: 0,
            lockouts: 0,
            first: ev.time,
            last: ev.time,
            ids: Vec::new(),
        });
        x.failures += failure;
        x.lockouts += lockout;
        x.first = x.first.min(ev.time);
        x.last = x.last.max(ev.time);
        if x.ids.len() < MAX_IDS_PER_EXPLANATION {
            x.ids.push(ev.event_id.to_string());
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    // Attacks first, whatever their count: they are the reason to act now. Then the biggest.
    groups.sort_by_key(|g| {
        (
            g.class != CauseClass::Attack,
            std::cmp::Reverse(g.failures + g.lockouts),
        )
    });
    groups
}

/// Whether the alert is about guessing passwords, whose attempts run into the lockout.
pub(super) fn guesses_passwords(a: &Alert) -> bool {
    matches!(
        a.category.as_str(),
        "brute_force" | "password_spray" | "credential_stuffing"
    )
}

pub(super) fn is_lock(ev: &AuthEvent) -> bool {
    ev.activity == Activity::AccountLock || ev.reason == Reason::LockedOut
}
