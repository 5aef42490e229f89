//! The report: the period, the alerts that concern the user, and the cause groups.

use super::*;

/// One input file's numbers.
pub(super) struct FileFacts {
    pub(super) name: String,
    /// Lines read (readable or not).
    pub(super) lines: u64,
    pub(super) unreadable: u64,
}

pub(super) struct InputFacts {
    pub(super) files: Vec<FileFacts>,
    pub(super) events: u64,
    pub(super) unreadable: u64,
    /// Unreadable lines by reason.
    pub(super) rejected: Vec<(RejectKind, u64)>,
    pub(super) late: u64,
    /// Ordered runs read after their time, and their lines ([`OrderedSource::deferred`]).
    pub(super) deferred: (u64, u64),
}

impl InputFacts {
    pub(super) fn new(summary: &RunSummary, source: &OrderedSource, sink: &UserSink) -> InputFacts {
        let files = source
            .names
            .iter()
            .zip(&source.lines)
            .map(|(name, &lines)| {
                let unreadable = sink.unreadable.get(name).copied().unwrap_or(0);
                FileFacts {
                    name: name.clone(),
                    lines: lines.max(unreadable),
                    unreadable,
                }
            })
            .collect();
        InputFacts {
            files,
            events: summary.events,
            unreadable: summary.dead_letters.iter().map(|(_, n)| n).sum(),
            rejected: summary
                .dead_letters
                .iter()
                .copied()
                .filter(|(_, n)| *n > 0)
                .collect(),
            late: summary.late_events,
            deferred: source.deferred,
        }
    }

    /// The error of a run in which no line was an event: which files, and what their lines were.
    pub(super) fn nothing_readable(&self, lang: Language) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| match (lang, f.lines) {
                (Language::En, 0) => format!("{}: empty", printable(&f.name)),
                (Language::En, n) => format!("{}: {n} line(s), none readable", printable(&f.name)),
                (Language::Ja, 0) => format!("{}: 空", printable(&f.name)),
                (Language::Ja, n) => format!("{}: {n} 行、読み取れる行なし", printable(&f.name)),
            })
            .collect();
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            match lang {
                Language::En => format!("; rejected lines by reason: {}", reasons.join(", ")),
                Language::Ja => format!("。読み取れなかった行の理由: {}", reasons.join(", ")),
            }
        };
        match lang {
            Language::En => format!(
                "no event could be read from the input ({}){reasons}. Check that these are the \
                 identity provider's sign-in logs as JSON lines; `authwatch replay FILE \
                 --dead-letter dead.jsonl` says why each line was rejected",
                files.join("; ")
            ),
            Language::Ja => format!(
                "入力からイベントを 1 件も読み取れませんでした（{}）{reasons}。ID プロバイダーのサインインログ（JSON Lines）か確認してください。各行が読み取れなかった理由は `authwatch replay FILE --dead-letter dead.jsonl` で確認できます",
                files.join("、")
            ),
        }
    }
}

/// The failures and lockouts one explanation covers.
pub(super) struct Explained {
    pub(super) failures: usize,
    pub(super) lockouts: usize,
    pub(super) first: i64,
    pub(super) last: i64,
    /// Their event ids, the first [`MAX_IDS_PER_EXPLANATION`], for tickets to link.
    pub(super) ids: Vec<String>,
}

pub(super) struct Group {
    pub(super) class: CauseClass,
    pub(super) failures: usize,
    pub(super) lockouts: usize,
    pub(super) first: i64,
    pub(super) last: i64,
    /// Distinct reasons, each with the provider's raw codes seen with it.
    pub(super) reasons: BTreeMap<Reason, BTreeSet<String>>,
    /// Each distinct explanation: how many failures, first and last time.
    pub(super) explanations: BTreeMap<Basis, Explained>,
}

pub(super) struct Report {
    pub(super) user: String,
    /// `--tenant`.
    pub(super) tenant: Option<String>,
    /// The tenants the name occurs in, with its events in each.
    pub(super) tenants: Vec<(String, u64)>,
    pub(super) since: Option<DurationText>,
    pub(super) last: usize,
    pub(super) input: InputFacts,
    /// The user's events in the period, by time.
    pub(super) events: Vec<AuthEvent>,
    /// The user's events before `--since`.
    pub(super) before_since: usize,
    pub(super) evicted: u64,
    /// The user's events too far out of time order for the rules, left out.
    pub(super) user_late: u64,
    pub(super) newest: Option<i64>,
    pub(super) alerts: Vec<Alert>,
    /// Each alert's scope, by the index of `alerts`.
    pub(super) scopes: Vec<Scope>,
    pub(super) alerts_dropped: u64,
    /// Alerts keyed by an actor or tenant dropped over [`MAX_KEYED_ALERTS`] unmatched.
    pub(super) keyed_dropped: u64,
    /// Sign-in and MFA steps that succeeded or failed (not prompts, sign-outs or lockouts).
    pub(super) steps: usize,
    pub(super) successes: usize,
    pub(super) failures: usize,
    pub(super) lockouts: usize,
    pub(super) groups: Vec<Group>,
    pub(super) similar: Vec<String>,
    /// The zone the text report writes times in (`--tz`).
    pub(super) clock: Clock,
}

impl Report {
    pub(super) fn build(
        sink: UserSink,
        args: &ExplainArgs,
        input: InputFacts,
        rules: &HashMap<String, CompiledRule>,
    ) -> Report {
        let cutoff = match (args.since, sink.newest) {
            (Some(d), Some(n)) => n.saturating_sub(d.millis()),
            _ => i64::MIN,
        };
        let mut history: Vec<AuthEvent> = sink.events.into_iter().collect();
        // Providers deliver slightly out of order; the help desk reads a timeline.
        history.sort_by_key(|e| e.time);
        let before_since = history.iter().filter(|e| e.time < cutoff).count();
        // An incident that began before `--since` and goes on into the period is followed
        // through the failures before it too.
        let all_problems: Vec<&AuthEvent> = history.iter().filter(|e| is_problem(e)).collect();
        let rule = |a: &Alert| rules.get(&a.rule_id);
        let who = sink.who;
        let user_alerts = Vec::from(sink.alerts);
        let actors = Actors {
            familiar: familiar(
                &history,
                &user_alerts,
                sink.keyed_alerts.iter().map(|k| &k.alert),
                rules,
            ),
            // The deciding sign-in of an attack is the user's own only from a familiar source
            // ([`Actors::came_from_attack_source`]).
            successes: history
                .iter()
                .filter(|e| is_sign_in_success(e))
                .map(|e| event_key(&e.tenant, &e.event_id))
                .collect(),
            who: &who,
            sources: &sink.sources,
        };
        // A network finding counts when one of the user's pushes timed out behind its address
        // at about that time; any alert keyed by an actor or a tenant when one of the user's
        // failures belongs to its incident ([`Actors::of_incident`]), or, for an attack keyed
        // by its actor, came from that actor during the incident.
        let concerns_user = |a: &Alert| {
            let s = scope(a, rule(a), &all_problems, &actors);
            all_problems.iter().any(|e| {
                network_covers(a, e)
                    || (s.covers(e.time)
                        && (rule(a).is_some_and(|r| actors.of_incident(r, a, e))
                            || (has_actor(a) && actors.attacker_sent(a, e))))
            })
        };
        let mut alerts: Vec<Alert> = user_alerts;
        alerts.extend(
            sink.keyed_alerts
                .into_iter()
                .map(|k| k.alert)
                .filter(concerns_user),
        );
        alerts.sort_by(|a, b| (a.first_seen, &a.alert_id).cmp(&(b.first_seen, &b.alert_id)));
        let period_problems: Vec<&AuthEvent> = all_problems
            .iter()
            .copied()
            .filter(|e| e.time >= cutoff)
            .collect();
        // An alert belongs to the period when it fired in it, or when its incident covers one
        // of the period's failures: an attack that started earlier and is still going on is
        // the period's most important fact.
        let mut scopes = Vec::with_capacity(alerts.len());
        alerts.retain(|a| {
            let s = scope(a, rule(a), &all_problems, &actors);
            let keep = span(a).1 >= cutoff || period_problems.iter().any(|e| s.covers(e.time));
            if keep {
                scopes.push(s);
            }
            keep
        });
        let groups = assign(&period_problems, &alerts, &scopes, rules, &actors);

        let events: Vec<AuthEvent> = history.into_iter().filter(|e| e.time >= cutoff).collect();
        let successes = events.iter().filter(|e| is_sign_in_success(e)).count();
        let failures = events.iter().filter(|e| is_failure(e.outcome)).count();
        let lockouts = events.iter().filter(|e| is_lockout(e)).count();
        Report {
            user: args.user.trim().to_owned(),
            tenant: sink.tenant,
            tenants: sink.tenants.into_iter().collect(),
            since: args.since,
            last: args.last,
            input,
            events,
            before_since,
            evicted: sink.evicted,
            user_late: sink.late,
            newest: sink.newest,
            alerts,
            scopes,
            alerts_dropped: sink.alerts_dropped,
            keyed_dropped: sink.keyed_dropped,
            steps: successes + failures,
            successes,
            failures,
            lockouts,
            groups,
            similar: sink.similar.into_iter().collect(),
            clock: Clock::new(args.tz),
        }
    }

    /// Whether the name occurs in more than one tenant and the report covers all of them.
    pub(super) fn mixes_tenants(&self) -> bool {
        self.tenant.is_none() && self.tenants.len() > 1
    }

    /// Alerts that explain failures in the cause groups (their steps are printed there).
    pub(super) fn explaining(&self) -> BTreeSet<usize> {
        self.groups
            .iter()
            .flat_map(|g| g.explanations.keys())
            .filter_map(|b| match b {
                Basis::Alert(i) => Some(*i),
                Basis::Generic(_) => None,
            })
            .collect()
    }
}

/// Where the user signs in from ([`Actors::familiar`]): the sources of their successful sign-ins
/// that no attack alert names or decided on, that came outside the incidents of the attacks on
/// the user (`on_user`: the alerts naming the user or their events), that the profile already
/// knew and that got through MFA ([`stopped_at_mfa`]); an attacker's way in is not the user's.
/// Also the devices their profile knew before any event. Other alerts keyed by an address or
/// tenant may cover most of a busy tenant's day, so their incidents do not make the user's
/// sign-ins unfamiliar.
pub(super) fn familiar<'a>(
    history: &[AuthEvent],
    on_user: &'a [Alert],
    keyed: impl Iterator<Item = &'a Alert>,
    rules: &HashMap<String, CompiledRule>,
) -> Sources {
    let mut attacks: HashSet<String> = HashSet::new();
    for a in on_user
        .iter()
        .chain(keyed)
        .filter(|a| a.cause_class == CauseClass::Attack)
    {
        let tenant = a
            .entity
            .tenant
            .as_deref()
            .unwrap_or(a.observed.tenant.as_str());
        attacks.extend(a.evidence.iter().map(|id| event_key(tenant, id)));
        if !a.observed.event_id.is_empty() {
            attacks.insert(event_key(&a.observed.tenant, &a.observed.event_id));
        }
    }
    let incidents: Vec<(i64, i64)> = on_user
        .iter()
        .filter(|a| a.cause_class == CauseClass::Attack)
        .map(|a| {
            let (start, end) = span(a);
            let follow = rules.get(&a.rule_id).map_or(FOLLOW_MS, |r| r.suppress_ms);
            (start, end.saturating_add(follow))
        })
        .collect();
    let during_attack = |e: &AuthEvent| incidents.iter().any(|&(a, b)| e.time >= a && e.time <= b);
    // An approval counts as getting through MFA only when it is not itself the attack's (the
    // approval a push-bombing wrung from the user is its deciding event).
    let own_approval =
        |e: &AuthEvent| !during_attack(e) && !attacks.contains(&event_key(&e.tenant, &e.event_id));
    let stopped = stopped_at_mfa(history, own_approval);
    let mut s = Sources::default();
    for (i, e) in history.iter().enumerate() {
        if stopped.contains(&i) {
            continue;
        }
        // A sign-in the profile found new in any way (device, network, country) may be the
        // attacker's first way in, which an alert need not name (a push-bombing alert names
        // the pushes, not the password step before them): only a source the user came back to
        // is theirs.
        let novel = e.context.new_device || e.context.new_asn || e.context.new_country;
        if is_sign_in_success(e)
            && !novel
            && !during_attack(e)
            && !attacks.contains(&event_key(&e.tenant, &e.event_id))
        {
            s.add(e);
        } else if !e.context.new_device
            && !during_attack(e)
            && let Some(fp) = identifying(&e.device)
        {
            s.devices.insert(fp.to_owned());
        }
    }
    s
}

/// The sign-ins that stopped at MFA, as indices into `history` (in time order): a password
/// step that succeeded and was followed, from the same source, by MFA steps none of which the
/// user got through (`own_approval`) before the next password step from there or within
/// [`FOLLOW_MS`]; with those MFA steps. That is an MFA-fatigue attacker's way in: they have the
/// password, and their pushes are denied or left unanswered. Their password step comes before
/// the first push the alert counts, so neither the alert nor its incident covers it, and the
/// profile may find nothing new in it (an address without geo data, a browser without a device
/// id). A sign-in with no MFA step after it (no MFA asked, a remembered device) is not one: it
/// tells nothing either way, and it is how many users sign in every day. Neither is a source
/// only because an attack came from it, since an office NAT is shared with the user.
pub(super) fn stopped_at_mfa(
    history: &[AuthEvent],
    own_approval: impl Fn(&AuthEvent) -> bool,
) -> HashSet<usize> {
    let mut stopped = HashSet::new();
    for (i, e) in history.iter().enumerate() {
        let password_step = e.activity == Activity::Logon
            && e.outcome == Outcome::Success
            && matches!(e.factor, Factor::Password | Factor::None);
        if !password_step {
            continue;
        }
        let mut steps = Vec::new();
        let mut through = false;
        for (j, f) in history.iter().enumerate().skip(i + 1) {
            if f.time > e.time.saturating_add(FOLLOW_MS) {
                break;
            }
            if !same_sign_in(e, f) {
                continue;
            }
            match f.activity {
                Activity::Logon => break,
                Activity::MfaChallenge | Activity::MfaVerify => {
                    if f.activity == Activity::MfaVerify
                        && f.outcome == Outcome::Success
                        && own_approval(f)
                    {
                        through = true;
                        break;
                    }
                    steps.push(j);
                }
                _ => {}
            }
        }
        if !through && !steps.is_empty() {
            stopped.insert(i);
            stopped.extend(steps);
        }
    }
    stopped
}

/// Whether `f` is a step of the sign-in `e` began: the same session when the provider gave
/// both an id, else the same tenant and address or identifying device.
fn same_sign_in(e: &AuthEvent, f: &AuthEvent) -> bool {
    if !e.session_id.is_empty() && !f.session_id.is_empty() {
        return e.session_id == f.session_id;
    }
    e.tenant == f.tenant
        && ((e.src.ip.is_some() && e.src.ip == f.src.ip)
            || identifying(&e.device).is_some_and(|d| identifying(&f.device) == Some(d)))
}

/// A successful step of signing in (not a sign-out, an unlock or an enrollment).
pub(super) fn is_sign_in_success(e: &AuthEvent) -> bool {
    e.outcome == Outcome::Success && matches!(e.activity, Activity::Logon | Activity::MfaVerify)
}
