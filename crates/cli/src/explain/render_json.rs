//! The JSON report (`--json`).

use super::*;

#[derive(Serialize)]
pub(super) struct JsonReport<'a> {
    pub(super) user: &'a str,
    pub(super) language: &'static str,
    /// Whether the user has events in the period.
    pub(super) found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) period: Option<JsonSpan>,
    /// `--tenant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tenant: Option<&'a str>,
    /// Every tenant the name or id occurs in, with its events there (more than one and no
    /// `--tenant`: the report covers several accounts).
    pub(super) tenants: Vec<JsonTenant<'a>>,
    /// Sign-in and MFA steps that succeeded or failed (`step_count = successes + failures`);
    /// not sign-ins, since one sign-in takes several steps. Not `steps`, which is a list of
    /// next steps everywhere else in the report.
    pub(super) step_count: usize,
    pub(super) successes: usize,
    /// Failed, denied, unanswered or blocked steps.
    pub(super) failures: usize,
    /// Times the account was locked. The cause groups cover failures and lockouts, each
    /// counted once: the groups' `failures` add up to this `failures`, their `lockouts` to this.
    pub(super) lockouts: usize,
    pub(super) events: usize,
    /// The user's events left out: older than `--since`, or beyond the in-memory bound.
    pub(super) events_before_since: usize,
    pub(super) events_skipped: u64,
    pub(super) input: JsonInput<'a>,
    pub(super) recent: Vec<JsonEvent<'a>>,
    pub(super) causes: Vec<JsonGroup<'a>>,
    pub(super) alerts: Vec<JsonAlert<'a>>,
    pub(super) alerts_not_kept: u64,
    /// Alerts keyed by an address, device or tenant that were still open when more than
    /// 2,000 such alerts were, and were dropped unmatched: some failures may be explained by
    /// their reason only.
    pub(super) keyed_alerts_not_kept: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) similar_users: &'a [String],
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(super) fn no_text(s: &&str) -> bool {
    s.is_empty()
}

#[derive(Serialize)]
pub(super) struct JsonTenant<'a> {
    pub(super) tenant: &'a str,
    pub(super) events: u64,
}

#[derive(Serialize)]
pub(super) struct JsonInput<'a> {
    pub(super) files: usize,
    pub(super) events: u64,
    pub(super) unreadable_lines: u64,
    pub(super) late_events: u64,
    /// Of `late_events`, the user's (not in this report).
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) user_late_events: u64,
    /// Ordered runs of the input (and their lines) read after their time, because more than
    /// 32 runs overlapped in time; their events may be among `late_events`.
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) runs_read_late: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) lines_read_late: u64,
    /// The inputs with unreadable lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) unreadable_by_file: Vec<JsonFile<'a>>,
}

#[derive(Serialize)]
pub(super) struct JsonFile<'a> {
    pub(super) file: &'a str,
    pub(super) lines: u64,
    pub(super) unreadable_lines: u64,
}

#[derive(Serialize)]
pub(super) struct JsonSpan {
    pub(super) start: Timestamp,
    pub(super) end: Timestamp,
}

#[derive(Serialize)]
pub(super) struct JsonEvent<'a> {
    pub(super) time: Timestamp,
    pub(super) event_id: &'a str,
    #[serde(skip_serializing_if = "no_text")]
    pub(super) tenant: &'a str,
    pub(super) activity: Activity,
    pub(super) factor: Factor,
    pub(super) outcome: Outcome,
    pub(super) reason: Reason,
    #[serde(skip_serializing_if = "no_text")]
    pub(super) reason_raw: &'a str,
    pub(super) source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "no_text")]
    pub(super) country: &'a str,
    #[serde(skip_serializing_if = "no_text")]
    pub(super) city: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) asn: Option<u32>,
    #[serde(skip_serializing_if = "no_text")]
    pub(super) as_org: &'a str,
    pub(super) anonymizer: bool,
    pub(super) device: String,
    pub(super) new_device: bool,
    pub(super) new_country: bool,
}

#[derive(Serialize)]
pub(super) struct JsonGroup<'a> {
    pub(super) cause_class: CauseClass,
    pub(super) label: &'static str,
    pub(super) meaning: &'static str,
    pub(super) failures: usize,
    pub(super) lockouts: usize,
    pub(super) first: Timestamp,
    pub(super) last: Timestamp,
    pub(super) reasons: Vec<JsonReason>,
    pub(super) explanations: Vec<JsonExplanation<'a>>,
}

#[derive(Serialize)]
pub(super) struct JsonReason {
    pub(super) reason: Reason,
    pub(super) label: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) provider_codes: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct JsonExplanation<'a> {
    /// `alert` (an alert names or covers these failures) or `reason` (the default mapping).
    pub(super) source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) alert_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rule_id: Option<&'a str>,
    /// The failures and lockouts this report puts down to it; an alert's `summary` counts
    /// what its rule had seen when it fired (`fired_at` of the alert).
    pub(super) failures: usize,
    pub(super) lockouts: usize,
    pub(super) first: Timestamp,
    pub(super) last: Timestamp,
    pub(super) summary: &'a str,
    pub(super) steps: Vec<&'a str>,
    /// The failures' and lockouts' event ids (the first 50).
    pub(super) event_ids: &'a [String],
}

#[derive(Serialize)]
pub(super) struct JsonAlert<'a> {
    pub(super) alert_id: &'a str,
    pub(super) rule_id: &'a str,
    pub(super) category: &'a str,
    pub(super) cause_class: CauseClass,
    pub(super) severity: Severity,
    /// What the alert is keyed by, as in the alert itself (`user`, `ip`, `tenant`, …).
    pub(super) entity: &'a authwatch_event::Entity,
    pub(super) window: JsonSpan,
    /// When it fired: the deciding event's time, which its summary's counts reflect.
    pub(super) fired_at: Timestamp,
    /// The user's last failure of its kind while its incident went on without a new alert,
    /// when later than the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) went_on_until: Option<Timestamp>,
    pub(super) summary: &'a str,
    pub(super) steps: &'a [String],
}

impl Report {
    pub(super) fn to_json(&self, lang: Language) -> JsonReport<'_> {
        let code = lang.code();
        let n = self.last.min(self.events.len());
        let recent = self.events[self.events.len() - n..]
            .iter()
            .map(|e| {
                let geo = e.src.geo.as_ref();
                JsonEvent {
                    time: Timestamp(e.time),
                    event_id: &e.event_id,
                    tenant: &e.tenant,
                    activity: e.activity,
                    factor: e.factor,
                    outcome: e.outcome,
                    reason: e.reason,
                    reason_raw: &e.reason_raw,
                    source: source_text(e, lang),
                    ip: e.src.ip,
                    country: geo.map_or("", |g| g.country.as_str()),
                    city: geo.map_or("", |g| g.city.as_str()),
                    asn: e.src.asn,
                    as_org: &e.src.as_org,
                    anonymizer: e.src.anonymizer != Default::default(),
                    device: device_text(e),
                    new_device: !e.context.learning && e.context.new_device,
                    new_country: !e.context.learning && e.context.new_country,
                }
            })
            .collect();
        let causes = self
            .groups
            .iter()
            .map(|g| JsonGroup {
                cause_class: g.class,
                label: class_name(g.class, lang),
                meaning: class_meaning(g.class, lang),
                failures: g.failures,
                lockouts: g.lockouts,
                first: Timestamp(g.first),
                last: Timestamp(g.last),
                reasons: g
                    .reasons
                    .iter()
                    .map(|(r, raw)| JsonReason {
                        reason: *r,
                        label: reason_label(*r, lang),
                        provider_codes: raw.iter().cloned().collect(),
                    })
                    .collect(),
                explanations: g
                    .explanations
                    .iter()
                    .map(|(basis, x)| {
                        let (source, alert, summary, steps): (_, _, &str, Vec<&str>) = match basis {
                            Basis::Alert(i) => {
                                let a = &self.alerts[*i];
                                (
                                    "alert",
                                    Some(a),
                                    a.summary.get(code),
                                    a.steps.get(code).iter().map(String::as_str).collect(),
                                )
                            }
                            Basis::Generic(gen_) => {
                                let t = gen_.text(lang);
                                ("reason", None, t.summary, t.steps.to_vec())
                            }
                        };
                        JsonExplanation {
                            source,
                            alert_id: alert.map(|a| a.alert_id.as_str()),
                            rule_id: alert.map(|a| a.rule_id.as_str()),
                            failures: x.failures,
                            lockouts: x.lockouts,
                            first: Timestamp(x.first),
                            last: Timestamp(x.last),
                            event_ids: &x.ids,
                            summary,
                            steps,
                        }
                    })
                    .collect(),
            })
            .collect();
        let alerts = self
            .alerts
            .iter()
            .zip(&self.scopes)
            .map(|(a, s)| JsonAlert {
                alert_id: &a.alert_id,
                rule_id: &a.rule_id,
                category: &a.category,
                cause_class: a.cause_class,
                severity: a.severity,
                entity: &a.entity,
                window: JsonSpan {
                    start: a.window.start,
                    end: a.window.end,
                },
                fired_at: a.last_seen,
                went_on_until: (s.last > span_end(a)).then_some(Timestamp(s.last)),
                summary: a.summary.get(code),
                steps: a.steps.get(code),
            })
            .collect();
        JsonReport {
            user: &self.user,
            language: code,
            found: !self.events.is_empty(),
            since: self.since.map(|d| humanize(d.0)),
            period: match (self.events.first(), self.events.last()) {
                (Some(f), Some(l)) => Some(JsonSpan {
                    start: Timestamp(f.time),
                    end: Timestamp(l.time),
                }),
                _ => None,
            },
            tenant: self.tenant.as_deref(),
            tenants: self
                .tenants
                .iter()
                .map(|(tenant, events)| JsonTenant {
                    tenant,
                    events: *events,
                })
                .collect(),
            step_count: self.steps,
            successes: self.successes,
            failures: self.failures,
            lockouts: self.lockouts,
            events: self.events.len(),
            events_before_since: self.before_since,
            events_skipped: self.evicted,
            input: JsonInput {
                files: self.input.files.len(),
                events: self.input.events,
                unreadable_lines: self.input.unreadable,
                late_events: self.input.late,
                user_late_events: self.user_late,
                runs_read_late: self.input.deferred.0,
                lines_read_late: self.input.deferred.1,
                unreadable_by_file: self
                    .input
                    .files
                    .iter()
                    .filter(|f| f.unreadable > 0)
                    .map(|f| JsonFile {
                        file: &f.name,
                        lines: f.lines,
                        unreadable_lines: f.unreadable,
                    })
                    .collect(),
            },
            recent,
            causes,
            alerts,
            alerts_not_kept: self.alerts_dropped,
            keyed_alerts_not_kept: self.keyed_dropped,
            similar_users: if self.events.is_empty() {
                &self.similar
            } else {
                &[]
            },
        }
    }
}
