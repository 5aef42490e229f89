//! Scoring: alerts against labels.
//!
//! An alert *matches* a label when they have the same category, compatible entities (see
//! below) and overlapping times (the alert's window meets the label's span widened
//! by `slack_ms` on both sides). Each label is credited to at most one alert (a maximum
//! bipartite matching, so the order of alerts does not change the score); further alerts that
//! match an already credited label are *duplicates*, alerts that match no label are *false
//! positives*.
//!
//! Zero denominators: recall with no labels is 1.0 (nothing to find), precision with no alerts
//! is 1.0 (nothing raised wrongly); a category with neither scores 1.0 / 1.0.

use crate::Label;
use authwatch_event::{Alert, Entity};
use std::collections::BTreeMap;
use std::fmt;

/// How to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Tolerance on each side of a label's span, ms (default one hour).
    pub slack_ms: i64,
    /// Score only these categories (all when `None`).
    pub only: Option<Vec<String>>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            slack_ms: 3_600_000,
            only: None,
        }
    }
}

/// The score of one category (or of all, in [`EvalReport::total`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CategoryScore {
    /// Category id (`TOTAL` for the totals row).
    pub category: String,
    /// Number of labels.
    pub labels: usize,
    /// Number of alerts.
    pub alerts: usize,
    /// Alerts credited with a label (equals the number of matched labels).
    pub true_positives: usize,
    /// Extra alerts on labels already credited.
    pub duplicates: usize,
    /// Alerts that match no label.
    pub false_positives: usize,
    /// Labels no alert matches.
    pub missed: usize,
    /// Matched labels / labels.
    pub recall: f64,
    /// (true positives + duplicates) / alerts.
    pub precision: f64,
}

impl CategoryScore {
    fn finish(&mut self) {
        self.missed = self.labels - self.true_positives;
        self.recall = ratio(self.true_positives, self.labels);
        self.precision = ratio(self.true_positives + self.duplicates, self.alerts);
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Scores per category, sorted by category, and their totals (micro-averaged).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EvalReport {
    /// One row per category present in the labels or the alerts.
    pub rows: Vec<CategoryScore>,
    /// Sums over all rows; recall and precision recomputed from the sums.
    pub total: CategoryScore,
    /// The slack used, ms.
    pub slack_ms: i64,
}

/// Does an alert about `alert` report the incident that a label names as `label`? See the
/// module documentation.
///
/// Not symmetric: `tenant` is a scope on both sides, but only a label uses it to say that a
/// tenant-wide alert reports it.
pub fn entities_compatible(label: &Entity, alert: &Entity) -> bool {
    if let (Some(x), Some(y)) = (&label.tenant, &alert.tenant)
        && x != y
    {
        return false;
    }
    let (mut label_keys, mut alert_keys, mut shared) = (0, 0, 0);
    macro_rules! key {
        ($f:ident, $eq:expr) => {
            label_keys += usize::from(label.$f.is_some());
            alert_keys += usize::from(alert.$f.is_some());
            if let (Some(x), Some(y)) = (&label.$f, &alert.$f) {
                shared += 1;
                if !$eq(x, y) {
                    return false;
                }
            }
        };
    }
    let same_text = |x: &authwatch_event::Text, y: &authwatch_event::Text| x == y;
    let same_name =
        |x: &authwatch_event::Text, y: &authwatch_event::Text| x.eq_ignore_ascii_case(y);
    key!(user, same_name);
    key!(ip, |x, y| x == y);
    key!(asn, |x, y| x == y);
    key!(device_fingerprint, same_text);
    key!(country, same_name);
    key!(app, same_text);
    if alert_keys == 0 {
        // A tenant-wide alert: it reports what its tenant's labels allow to be reported
        // tenant-wide (a label names its tenant only then).
        return label.tenant.is_some() && alert.tenant.is_some();
    }
    // A keyed alert never reports a tenant-wide label, however many of the tenant's users or
    // addresses it names.
    label_keys > 0 && shared > 0
}

/// Scores `alerts` against `labels`.
pub fn evaluate(labels: &[Label], alerts: &[Alert], opts: &EvalOptions) -> EvalReport {
    let wanted = |c: &str| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == c));
    let mut by_cat: BTreeMap<&str, (Vec<&Label>, Vec<&Alert>)> = BTreeMap::new();
    for l in labels.iter().filter(|l| wanted(&l.category)) {
        by_cat.entry(&l.category).or_default().0.push(l);
    }
    for a in alerts.iter().filter(|a| wanted(&a.category)) {
        by_cat.entry(&a.category).or_default().1.push(a);
    }
    let mut report = EvalReport {
        slack_ms: opts.slack_ms,
        total: CategoryScore {
            category: "TOTAL".into(),
            ..CategoryScore::default()
        },
        ..EvalReport::default()
    };
    for (cat, (mut ls, als)) in by_cat {
        let row = score_category(cat, &mut ls, &als, opts.slack_ms);
        let t = &mut report.total;
        t.labels += row.labels;
        t.alerts += row.alerts;
        t.true_positives += row.true_positives;
        t.duplicates += row.duplicates;
        t.false_positives += row.false_positives;
        report.rows.push(row);
    }
    report.total.finish();
    report
}

fn score_category(
    cat: &str,
    labels: &mut [&Label],
    alerts: &[&Alert],
    slack: i64,
) -> CategoryScore {
    labels.sort_by_key(|l| l.start);
    let longest = labels
        .iter()
        .map(|l| l.end.0.saturating_sub(l.start.0))
        .max()
        .unwrap_or(0);
    // Candidate labels per alert: a label can only overlap if its start lies within
    // [alert.start - slack - longest, alert.end + slack]; binary search bounds that range.
    let adj: Vec<Vec<usize>> = alerts
        .iter()
        .map(|a| {
            let (s, e) = (a.window.start.0, a.window.end.0.max(a.window.start.0));
            let lo = labels
                .partition_point(|l| l.start.0 < s.saturating_sub(slack).saturating_sub(longest));
            let hi = labels.partition_point(|l| l.start.0 <= e.saturating_add(slack));
            (lo..hi)
                .filter(|&i| {
                    let l = labels[i];
                    s <= l.end.0.saturating_add(slack)
                        && e >= l.start.0.saturating_sub(slack)
                        && entities_compatible(&l.entity, &a.entity)
                })
                .collect()
        })
        .collect();
    let matched_alerts = max_matching(&adj, labels.len());
    let mut row = CategoryScore {
        category: cat.to_owned(),
        labels: labels.len(),
        alerts: alerts.len(),
        ..CategoryScore::default()
    };
    for (i, cands) in adj.iter().enumerate() {
        if matched_alerts[i] {
            row.true_positives += 1;
        } else if cands.is_empty() {
            row.false_positives += 1;
        } else {
            row.duplicates += 1;
        }
    }
    row.finish();
    row
}

/// Maximum bipartite matching (Kuhn's augmenting paths, iterative). Returns, per alert,
/// whether it is credited with a label.
fn max_matching(adj: &[Vec<usize>], n_labels: usize) -> Vec<bool> {
    let mut label_to: Vec<Option<usize>> = vec![None; n_labels];
    let mut credited = vec![false; adj.len()];
    let mut seen = vec![usize::MAX; n_labels];
    for root in 0..adj.len() {
        if adj[root].is_empty() {
            continue;
        }
        // Depth-first search for an augmenting path; `stack` holds (alert, next edge index),
        // `via` the label through which each stacked alert was reached.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        let mut via: Vec<usize> = Vec::new();
        let mut found = None;
        while let Some(&mut (a, ref mut k)) = stack.last_mut() {
            if *k >= adj[a].len() {
                stack.pop();
                via.pop();
                continue;
            }
            let l = adj[a][*k];
            *k += 1;
            if seen[l] == root {
                continue;
            }
            seen[l] = root;
            match label_to[l] {
                None => {
                    found = Some(l);
                    break;
                }
                Some(next) => {
                    via.push(l);
                    stack.push((next, 0));
                }
            }
        }
        if let Some(mut l) = found {
            // Flip the path: each alert on the stack takes the label that follows it.
            while let Some((a, _)) = stack.pop() {
                label_to[l] = Some(a);
                credited[a] = true;
                match via.pop() {
                    Some(pl) => l = pl,
                    None => break,
                }
            }
        }
    }
    credited
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.category.len())
            .chain([8])
            .max()
            .unwrap_or(8);
        writeln!(
            f,
            "{:<width$}  {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>6} {:>9}",
            "category", "labels", "alerts", "tp", "dup", "fp", "missed", "recall", "precision"
        )?;
        let line = |f: &mut fmt::Formatter<'_>, r: &CategoryScore| {
            writeln!(
                f,
                "{:<width$}  {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>6.3} {:>9.3}",
                r.category,
                r.labels,
                r.alerts,
                r.true_positives,
                r.duplicates,
                r.false_positives,
                r.missed,
                r.recall,
                r.precision
            )
        };
        for r in &self.rows {
            line(f, r)?;
        }
        writeln!(f, "{}", "-".repeat(width + 61))?;
        line(f, &self.total)?;
        write!(f, "(time slack ±{} s)", self.slack_ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_event::{CauseClass, Severity, Timestamp, Window};
    use std::net::IpAddr;

    const MIN: i64 = 60_000;

    fn user(u: &str) -> Entity {
        Entity {
            user: Some(u.into()),
            ..Entity::default()
        }
    }

    fn ip(s: &str) -> Entity {
        Entity {
            ip: Some(s.parse::<IpAddr>().unwrap()),
            ..Entity::default()
        }
    }

    fn label(category: &str, entity: Entity, start: i64, end: i64) -> Label {
        Label {
            category: category.into(),
            entity,
            start: Timestamp(start),
            end: Timestamp(end),
            note: String::new(),
        }
    }

    fn alert(category: &str, entity: Entity, start: i64, end: i64) -> Alert {
        Alert {
            alert_id: format!("{category}-{start}"),
            rule_id: category.into(),
            rule_version: 1,
            category: category.into(),
            cause_class: CauseClass::Attack,
            severity: Severity::High,
            attack_technique: vec![],
            observed: Default::default(),
            entity,
            window: Window {
                start: Timestamp(start),
                end: Timestamp(end),
            },
            metrics: Default::default(),
            evidence: vec![],
            first_seen: Timestamp(start),
            last_seen: Timestamp(end),
            summary: Default::default(),
            steps: Default::default(),
            related: vec![],
        }
    }

    fn row<'r>(r: &'r EvalReport, c: &str) -> &'r CategoryScore {
        r.rows.iter().find(|x| x.category == c).unwrap()
    }

    /// A slack or a time at the ends of the range matches by saturating bounds; it overflowed
    /// (a panic in debug builds, a wrapped bound in release ones).
    #[test]
    fn extreme_slack_and_times_do_not_overflow() {
        let labels = vec![label(
            "mfa_fatigue",
            user("a@x"),
            i64::MIN + 1,
            i64::MAX - 1,
        )];
        let alerts = vec![alert("mfa_fatigue", user("a@x"), 0, MIN)];
        let huge = EvalOptions {
            slack_ms: i64::MAX,
            only: None,
        };
        let f = row(&evaluate(&labels, &alerts, &huge), "mfa_fatigue").clone();
        assert_eq!((f.true_positives, f.false_positives, f.missed), (1, 0, 0));
    }

    #[test]
    fn tp_duplicate_fp_missed_and_slack() {
        let h = 3_600_000;
        let labels = vec![
            label("mfa_fatigue", user("a@x"), 100 * h, 100 * h + 5 * MIN),
            label("mfa_fatigue", user("c@x"), 200 * h, 200 * h + 5 * MIN),
        ];
        let alerts = vec![
            // Inside the label: credited.
            alert("mfa_fatigue", user("a@x"), 100 * h + MIN, 100 * h + 2 * MIN),
            // Same incident again, within the slack after its end: duplicate.
            alert(
                "mfa_fatigue",
                user("A@X"),
                100 * h + 50 * MIN,
                100 * h + 51 * MIN,
            ),
            // Other user: false positive (entity mismatch).
            alert("mfa_fatigue", user("b@x"), 100 * h, 100 * h + MIN),
            // Right user, but past the one-hour slack: false positive.
            alert(
                "mfa_fatigue",
                user("a@x"),
                101 * h + 6 * MIN,
                101 * h + 7 * MIN,
            ),
        ];
        let r = evaluate(&labels, &alerts, &EvalOptions::default());
        let f = row(&r, "mfa_fatigue");
        assert_eq!((f.labels, f.alerts), (2, 4));
        assert_eq!(
            (f.true_positives, f.duplicates, f.false_positives, f.missed),
            (1, 1, 2, 1)
        );
        assert_eq!(f.recall, 0.5);
        assert_eq!(f.precision, 0.5);
        // With no slack the late duplicate becomes a false positive.
        let tight = EvalOptions {
            slack_ms: 0,
            only: None,
        };
        let f = row(&evaluate(&labels, &alerts, &tight), "mfa_fatigue").clone();
        assert_eq!(
            (f.true_positives, f.duplicates, f.false_positives),
            (1, 0, 3)
        );
        // An alert window that starts before the label and ends inside it overlaps.
        let early = [alert("mfa_fatigue", user("c@x"), 199 * h, 200 * h + MIN)];
        let f = row(&evaluate(&labels, &early, &tight), "mfa_fatigue").clone();
        assert_eq!(f.true_positives, 1);
    }

    #[test]
    fn entities_must_share_a_field_and_agree_on_all_shared_ones() {
        let both = Entity {
            user: Some("a@x".into()),
            ip: Some("6.1.0.2".parse().unwrap()),
            ..Entity::default()
        };
        assert!(entities_compatible(&both, &user("a@x")));
        assert!(entities_compatible(&both, &ip("6.1.0.2")));
        assert!(entities_compatible(&both, &both));
        let other_ip = Entity {
            ip: Some("6.1.0.3".parse().unwrap()),
            ..both.clone()
        };
        assert!(!entities_compatible(&both, &other_ip));
        let asn = Entity {
            asn: Some(721),
            ..Entity::default()
        };
        assert!(!entities_compatible(&both, &asn), "no shared field");
        assert!(!entities_compatible(&Entity::default(), &Entity::default()));
    }

    fn tenant(t: &str) -> Entity {
        Entity {
            tenant: Some(t.into()),
            ..Entity::default()
        }
    }

    fn in_tenant(t: &str, e: Entity) -> Entity {
        Entity {
            tenant: Some(t.into()),
            ..e
        }
    }

    #[test]
    fn tenant_is_a_scope_not_a_key() {
        let wave = tenant("example");
        // What rules keyed by user emit: the user and its tenant.
        let one_user = in_tenant("example", user("a@x"));
        assert!(
            !entities_compatible(&wave, &one_user),
            "one user is no wave"
        );
        assert!(entities_compatible(&wave, &tenant("example")));
        assert!(!entities_compatible(&wave, &tenant("other")));
        assert!(!entities_compatible(&wave, &Entity::default()));
        // A user label is reported by the user's alert, with or without its tenant, and only in
        // that tenant; a tenant-wide alert does not report one user.
        assert!(entities_compatible(&user("a@x"), &one_user));
        assert!(entities_compatible(&user("a@x"), &user("A@X")));
        assert!(!entities_compatible(&user("b@x"), &one_user));
        assert!(!entities_compatible(
            &in_tenant("other", user("a@x")),
            &one_user
        ));
        assert!(!entities_compatible(&user("a@x"), &tenant("example")));
        // A spray rotating over one network: the network's alert reports it, and so does a
        // tenant-wide one, as the label allows by naming its tenant.
        let network = Entity {
            tenant: Some("example".into()),
            asn: Some(174),
            ..Entity::default()
        };
        let asn = |n| Entity {
            asn: Some(n),
            ..Entity::default()
        };
        assert!(entities_compatible(&network, &asn(174)));
        assert!(entities_compatible(
            &network,
            &in_tenant("example", asn(174))
        ));
        assert!(!entities_compatible(&network, &asn(721)));
        assert!(entities_compatible(&network, &tenant("example")));
        assert!(!entities_compatible(&network, &one_user));
    }

    /// Regression: a tenant-wide label was credited to every user-keyed alert of its category
    /// within the slack (both carry the tenant), so false alerts near an outage counted as
    /// duplicates and a missing outage alert was not missed.
    #[test]
    fn user_alerts_neither_report_nor_duplicate_a_tenant_wide_label() {
        let h = 3_600_000;
        let labels = vec![
            label("mfa_triage", tenant("example"), 10 * h, 10 * h + 14 * MIN),
            label(
                "mfa_triage",
                user("a@x"),
                10 * h + 2 * MIN,
                10 * h + 3 * MIN,
            ),
        ];
        let outage = alert("mfa_triage", tenant("example"), 10 * h, 10 * h + 15 * MIN);
        let own = alert(
            "mfa_triage",
            in_tenant("example", user("a@x")),
            10 * h + 2 * MIN,
            10 * h + 3 * MIN,
        );
        let ghosts: Vec<Alert> = (0..10)
            .map(|i| {
                let u = format!("ghost{i}@x");
                let t = 10 * h + 20 * MIN;
                alert("mfa_triage", in_tenant("example", user(&u)), t, t + MIN)
            })
            .collect();
        // Alerts for users nobody labelled are false positives, not duplicates of the outage.
        let mut alerts = vec![outage.clone(), own.clone()];
        alerts.extend(ghosts.iter().cloned());
        let r = evaluate(&labels, &alerts, &EvalOptions::default());
        let f = row(&r, "mfa_triage");
        assert_eq!(
            (f.true_positives, f.duplicates, f.false_positives, f.missed),
            (2, 0, 10, 0)
        );
        assert_eq!(f.precision, 2.0 / 12.0);
        // Without the tenant-wide alert the outage is missed, whatever the user alerts say.
        let mut alerts = vec![own];
        alerts.extend(ghosts);
        let r = evaluate(&labels, &alerts, &EvalOptions::default());
        let f = row(&r, "mfa_triage");
        assert_eq!((f.true_positives, f.false_positives, f.missed), (1, 10, 1));
        assert_eq!(f.recall, 0.5);
        // A wave of lockouts: each lock alert is credited to its user's label, and the wave
        // label needs the wave alert.
        let labels = vec![
            label("account_lockout", user("a@x"), 10 * h, 10 * h),
            label("account_lockout", tenant("example"), 10 * h, 10 * h + MIN),
        ];
        let locks: Vec<Alert> = ["a@x", "b@x", "c@x"]
            .iter()
            .map(|u| {
                alert(
                    "account_lockout",
                    in_tenant("example", user(u)),
                    10 * h,
                    10 * h,
                )
            })
            .collect();
        let r = evaluate(&labels, &locks, &EvalOptions::default());
        let f = row(&r, "account_lockout");
        assert_eq!((f.true_positives, f.false_positives, f.missed), (1, 2, 1));
    }

    #[test]
    fn categories_never_mix_and_only_filters() {
        let labels = vec![label("brute_force", user("a@x"), 0, MIN)];
        let alerts = vec![
            alert("credential_stuffing", user("a@x"), 0, MIN),
            alert("credential_stuffing", ip("65.0.0.1"), 0, MIN),
        ];
        let r = evaluate(&labels, &alerts, &EvalOptions::default());
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].category, "brute_force");
        assert_eq!(row(&r, "brute_force").missed, 1);
        assert_eq!(
            row(&r, "brute_force").precision,
            1.0,
            "no alerts: precision 1"
        );
        assert_eq!(row(&r, "credential_stuffing").false_positives, 2);
        assert_eq!(
            row(&r, "credential_stuffing").recall,
            1.0,
            "no labels: recall 1"
        );
        assert_eq!(r.total.labels, 1);
        assert_eq!(r.total.alerts, 2);
        assert_eq!(r.total.recall, 0.0);
        assert_eq!(r.total.precision, 0.0);

        let only = EvalOptions {
            only: Some(vec!["brute_force".into()]),
            ..EvalOptions::default()
        };
        let r = evaluate(&labels, &alerts, &only);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.total.alerts, 0);

        let empty = evaluate(&[], &[], &EvalOptions::default());
        assert!(empty.rows.is_empty());
        assert_eq!((empty.total.recall, empty.total.precision), (1.0, 1.0));
    }

    #[test]
    fn matching_is_maximal_whatever_the_alert_order() {
        // Alert X fits both labels, alert Y only the first; a greedy pass that gives X the
        // first label would count Y as a duplicate and miss the second label.
        let labels = vec![
            label("mfa_fatigue", user("a@x"), 0, 10 * MIN),
            label("mfa_fatigue", user("a@x"), 20 * MIN, 30 * MIN),
        ];
        let x = alert("mfa_fatigue", user("a@x"), 9 * MIN, 21 * MIN);
        let y = alert("mfa_fatigue", user("a@x"), MIN, 2 * MIN);
        for alerts in [vec![x.clone(), y.clone()], vec![y, x]] {
            let r = evaluate(
                &labels,
                &alerts,
                &EvalOptions {
                    slack_ms: 0,
                    only: None,
                },
            );
            let f = row(&r, "mfa_fatigue");
            assert_eq!((f.true_positives, f.duplicates, f.missed), (2, 0, 0));
        }
    }

    #[test]
    fn scores_generated_labels_against_themselves() {
        let cfg = crate::GenConfig {
            users: 120,
            days: 2,
            ..crate::GenConfig::default()
        };
        let labels =
            crate::generate(&cfg, &mut |_| Ok::<(), std::convert::Infallible>(())).unwrap();
        let alerts: Vec<Alert> = labels
            .iter()
            .map(|l| alert(&l.category, l.entity.clone(), l.start.0, l.end.0))
            .collect();
        let r = evaluate(&labels, &alerts, &EvalOptions::default());
        assert_eq!(r.total.true_positives, labels.len());
        assert_eq!((r.total.recall, r.total.precision), (1.0, 1.0));
    }

    #[test]
    fn table_is_aligned_with_totals() {
        let labels = vec![label("mfa_fatigue", user("a@x"), 0, MIN)];
        let alerts = vec![alert("mfa_fatigue", user("a@x"), 0, MIN)];
        let text = evaluate(&labels, &alerts, &EvalOptions::default()).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("category"));
        assert!(lines[1].starts_with("mfa_fatigue") && lines[1].ends_with("1.000     1.000"));
        assert!(lines[3].starts_with("TOTAL"));
        assert_eq!(lines[1].len(), lines[0].len());
        assert!(text.ends_with("(time slack ±3600 s)"));
    }
}
