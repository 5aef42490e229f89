//! Evasive variants of the attacks in `attacks.rs`, and benign look-alikes of them.
//!
//! The classic attacks exceed the built-in rules' thresholds by a wide margin; an adversary who
//! knows those thresholds stays under them, and ordinary office life crosses some of them. Each
//! shape below is a real adversary technique or a real office pattern, labelled with what it
//! is, not with what the shipped rules happen to report (so `eval` shows their misses and false
//! alarms). Sizes against the built-in rules' default thresholds:
//! - slow push bombing (T1621): 16–24 pushes, each denied or left unanswered, their refusals
//!   2.6–3.3 min apart (about an hour in all, 39–77 min). No 10 minutes hold 5 refusals or 10
//!   pushes (mfa_fatigue's window), while an hour holds ≥ 10 refusals. Every other campaign ends
//!   in an approval 100–160 s after the last refusal (mfa_fatigue_success). Labels: `mfa_fatigue` (and `mfa_fatigue_success`) on the user,
//!   `anonymizer_login` on the user and the attacker's Tor/hosting/proxy address.
//! - one-try password spray (T1110.003): one password against 50–150 existing accounts (at most
//!   two in five of the tenant, never fewer than 40), each tried once, plus 0–3 names of people
//!   who left, from one address in 20–60 min. password_spray's "≥ 2 tries per user" never holds,
//!   and 3 unknown names are too few for credential stuffing (5). Label: `password_spray` on the
//!   address; every other spray is followed 1–2 h later by the attacker's sign-in to the first
//!   account (`credential_compromise` and `anonymizer_login`, as after the classic spray).
//! - distributed spray in one network (T1110.003): one password against 30–60 existing accounts
//!   (at most two in five of the tenant, never fewer than 20), every try from a fresh address of
//!   one proxy pool in AS174, 80–130 s apart: at most 12 tries in any 15 min tenant-wide
//!   (password_spray_multi_source needs 25), one try per address, no unknown names (so not
//!   credential_stuffing_asn); two such sprays are planned at least 4 h apart. Label:
//!   `password_spray` on the tenant and the ASN (an alert keyed by either finds it).
//! - brute force with case-varied logins (T1110.001): 14–30 wrong passwords on one account in
//!   8–25 min from one address, the login typed in 3–4 spellings in turn (ken@…, Ken@…, KEN@…),
//!   so no spelling gets more than 9 (brute_force needs 10) while the account gets ≥ 14. Label:
//!   `brute_force` on the account (user names compare case-insensitively in `eval`).
//! - benign, office typos after a password change: 6–10 (at least 5) colleagues behind one
//!   office NAT egress each type the old password once or twice within 40 min on a weekday
//!   morning, then sign in with the new one on their own desktop and pass their MFA: five or
//!   more accounts failing from one address within an hour, as in a spray. Labels: one
//!   `mfa_triage` "user: password typo" per colleague (the help-desk finding), no attack label:
//!   a password-attack alert on them is a false positive.
//! - benign, approved pushes: an application re-prompts one user 6–9 times in 4–9 min during
//!   working hours, from the usual device and address, and each push is approved within
//!   seconds: many pushes, all answered, but fewer than the 10 in 10 min that make the "pushes
//!   sent" form of mfa_fatigue (DESIGN's threshold: that many pushes is reported whatever the
//!   answers, since an attacker's pushes are not always logged with one). No label: an
//!   mfa_fatigue alert on it is a false positive.
//!
//! In tenants of ≥ 100 users each is planned as often as each classic attack (2 + users × days
//! / 2000 times; an incident that finds no free users at four instants is dropped), after the
//! classic attacks, on the users those leave free: the classic incidents of a seed stay as they
//! were.

use crate::attacks::{
    FatigueCampaign, attack_victim, attacker, compromise_at, disguise, fatigue_ending, ip_entity,
    unknown_name, victims_attacker,
};
use crate::benign::{Incident, mfa, sso};
use crate::engine::*;
use crate::label::categories as cat;
use crate::plan::Plan;
use crate::population::{MIN, Place};
use crate::world::{ATTACK_CLIENTS, OFFICES, SPRAY_ASN};
use authwatch_event::{Entity, Factor, Text};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Least time between two refusals of a slow push-bombing campaign: five refusals then span
/// at least 620 s, more than mfa_fatigue's 10-minute window.
pub(crate) const SLOW_FATIGUE_MIN_GAP_MS: i64 = 155_000;

pub(crate) fn slow_fatigue(eng: &mut Engine<'_>, plan: &Plan, success: bool, rng: &mut ChaCha8Rng) {
    let (v, ip) = (plan.users[0], plan.ips[0]);
    let a = victims_attacker(eng, v, ip, plan.seed, plan.t, rng);
    let t0 = plan.t;
    // The attacker already has the password, and keeps the sign-in waiting at the push.
    eng.emit(t0, &a, PW_OK, "");
    let n: i64 = rng.random_range(16..=24);
    // Refusal times are spaced first; each push goes out when its refusal requires (a timeout
    // is logged when the push expires after 60 s, a denial 5–30 s after the push).
    let mut refusal = t0 + rng.random_range(80..120) * 1000;
    let mut first = i64::MAX;
    for k in 0..n {
        if k > 0 {
            refusal += rng.random_range(SLOW_FATIGUE_MIN_GAP_MS / 1000..=200) * 1000;
        }
        let (sent, step) = if rng.random_bool(0.25) {
            (refusal - rng.random_range(5..=30) * 1000, PUSH_DENY)
        } else {
            (refusal - 60_000, PUSH_TIMEOUT)
        };
        eng.emit(sent, &a, PUSH_SEND, "");
        eng.emit(refusal, &a, step, "");
        first = first.min(sent);
    }
    let last = refusal;
    let e = eng.user_entity(v);
    let note = format!(
        "{n} pushes paced one every 2.6–3.3 min over {} min, all denied or unanswered \
         (never 5 in 10 min)",
        (last - first) / MIN
    );
    eng.label(cat::MFA_FATIGUE, e, first, last, note);
    let campaign = FatigueCampaign {
        actor: &a,
        victim: v,
        ip,
        t0,
        first,
        last,
    };
    // The next push of the cadence, and the worn-out user approves it.
    fatigue_ending(
        eng,
        &campaign,
        success.then_some(95..=140),
        &format!("{n} slowly paced pushes"),
        "slow push-bombing attacker",
        rng,
    );
}

pub(crate) fn one_try_spray(
    eng: &mut Engine<'_>,
    plan: &Plan,
    compromise: bool,
    rng: &mut ChaCha8Rng,
) {
    let ip = plan.ips[0];
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..2)],
    );
    // The enumerated directory: every planned account once, and a few people who left.
    let mut list: Vec<(Text, Text)> = plan
        .users
        .iter()
        .map(|&u| (eng.pop.people[u].name.clone(), eng.pop.people[u].id.clone()))
        .collect();
    let stale = rng.random_range(0..=3);
    while list.len() < plan.users.len() + stale {
        let name = unknown_name(eng, rng);
        if !list.iter().any(|(n, _)| *n == name) {
            list.push((name, Text::default()));
        }
    }
    list.shuffle(rng);
    let n = list.len() as i64;
    let span = rng.random_range(20..=60) * MIN;
    let (mut first, mut last) = (i64::MAX, plan.t);
    for (i, (name, id)) in list.into_iter().enumerate() {
        let t = plan.t + i as i64 * span / n + rng.random_range(0..2000);
        let known = !id.is_empty();
        let a = attacker(eng, name, id, ip, client);
        eng.emit(t, &a, if known { PW_BAD } else { PW_UNKNOWN }, "");
        first = first.min(t);
        last = last.max(t);
    }
    let note = format!(
        "one password against {} existing accounts (and {stale} unknown names), \
         one try each, over {} min from one address",
        plan.users.len(),
        (last - first) / MIN
    );
    eng.label(cat::PASSWORD_SPRAY, ip_entity(ip), first, last, note);
    if compromise {
        let ts = last + rng.random_range(60..120) * MIN;
        compromise_at(eng, plan.users[0], ip, ts, "a one-try password spray", rng);
    }
}

pub(crate) fn asn_spray(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..ATTACK_CLIENTS.len())],
    );
    let mut order = plan.users.clone();
    order.shuffle(rng);
    let (mut first, mut t) = (i64::MAX, plan.t);
    for (i, &u) in order.iter().enumerate() {
        if i > 0 {
            // ≥ 80 s apart: at most 12 tries in any 15 minutes.
            t += rng.random_range(80..=130) * 1000;
        }
        let a = attack_victim(eng, u, plan.ips[i], client);
        eng.emit(t, &a, PW_BAD, "");
        first = first.min(t);
    }
    let e = Entity {
        tenant: Some(eng.tenant.clone()),
        asn: Some(SPRAY_ASN),
        ..Entity::default()
    };
    let note = format!(
        "one password against {} accounts, each from a fresh address of AS{SPRAY_ASN}, \
         over {} min (at most 12 tries in 15 min)",
        order.len(),
        (t - first) / MIN
    );
    eng.label(cat::PASSWORD_SPRAY, e, first, t, note);
}

/// The spellings of a login an attacker cycles through: as stored, each name part capitalized,
/// all upper case, only the first letter capitalized.
fn spellings(name: &str) -> Vec<String> {
    let (local, domain) = name.split_once('@').unwrap_or((name, ""));
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    let title: Vec<String> = local.split('.').map(cap).collect();
    let mut v = vec![
        name.to_owned(),
        format!("{}@{domain}", title.join(".")),
        name.to_ascii_uppercase(),
        format!("{}@{domain}", cap(local)),
    ];
    v.dedup();
    v
}

pub(crate) fn case_brute_force(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let (v, ip) = (plan.users[0], plan.ips[0]);
    let mut names = spellings(&eng.pop.people[v].name);
    names.shuffle(rng);
    let k = rng.random_range(3..=4).min(names.len());
    names.truncate(k);
    // Round-robin over the spellings: at most 9 failures for any one of them.
    let n: i64 = rng.random_range(14..=(9 * k as i64).min(30));
    let span = rng.random_range(8..=25) * MIN;
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..ATTACK_CLIENTS.len())],
    );
    let id = eng.pop.people[v].id.clone();
    let mut last = plan.t;
    for i in 0..n {
        let t = plan.t + i * span / n + rng.random_range(0..2000);
        let name = Text::from(names[i as usize % k].clone());
        let a = attacker(eng, name, id.clone(), ip, client);
        eng.emit(t, &a, PW_BAD, "");
        last = last.max(t);
    }
    let e = eng.user_entity(v);
    let note = format!(
        "{n} failures in {} min from one address, the login typed in {k} letter cases \
         (at most {} per spelling)",
        span / MIN,
        (n as usize).div_ceil(k)
    );
    eng.label(cat::BRUTE_FORCE, e, plan.t, last, note);
}

pub(crate) fn office_typos(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let ip = plan.ips[0];
    let city = OFFICES[eng.pop.people[plan.users[0]].office].city;
    let note = format!(
        "user: password typo before MFA (old password after a change; one of {} colleagues \
         behind the {city} office egress)",
        plan.users.len()
    );
    for &u in &plan.users {
        // The planner picked office days; check anyway that the user is there.
        let day = eng.pop.local_day(u, plan.t);
        if eng.pop.place(u, day) != Place::Office {
            continue;
        }
        let factor = eng.pop.people[u].factor;
        let a = eng.user_actor(u, ip, plan.t);
        let t0 = plan.t + rng.random_range(0..40 * 60) * 1000;
        let mut t = t0;
        for _ in 0..rng.random_range(1..=2) {
            eng.emit(t, &a, PW_BAD, "");
            t += rng.random_range(5..40) * 1000;
        }
        eng.emit(t, &a, PW_OK, "");
        t += rng.random_range(3..15) * 1000;
        let t = if factor == Factor::Webauthn {
            t
        } else {
            mfa(eng, &a, factor, t, Incident::None, rng)
        };
        let e = eng.user_entity(u);
        eng.label(cat::MFA_TRIAGE, e, t0, t, note.clone());
        sso(eng, &a, u, t, rng.random_range(1..=3), rng);
    }
}

pub(crate) fn approved_pushes(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let u = plan.users[0];
    let day = eng.pop.local_day(u, plan.t);
    let Some(ip) = eng.pop.ip(u, day, false) else {
        return;
    };
    let a = eng.user_actor(u, ip, plan.t);
    eng.emit(plan.t, &a, PW_OK, "");
    // One application (say, a desktop mail client after a policy change) asks again and again.
    let apps = &eng.pop.people[u].apps;
    let app = apps[rng.random_range(0..apps.len())];
    let n: i64 = rng.random_range(6..=9);
    let span = rng.random_range(4..=9) * MIN;
    let start = plan.t + rng.random_range(5..15) * 1000;
    for k in 0..n {
        // ≥ 20 s between prompts; each is answered and used within 17 s.
        let sent = start + k * span / (n - 1) + rng.random_range(0..2000);
        eng.emit(sent, &a, PUSH_SEND, "");
        let ok = sent + rng.random_range(3..10) * 1000;
        eng.emit(ok, &a, PUSH_OK, "");
        eng.emit(ok + rng.random_range(1..5) * 1000, &a, SSO, app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_differ_only_in_case() {
        let v = spellings("ken.sato2@example.co.jp");
        assert_eq!(
            v,
            [
                "ken.sato2@example.co.jp",
                "Ken.Sato2@example.co.jp",
                "KEN.SATO2@EXAMPLE.CO.JP",
                "Ken.sato2@example.co.jp"
            ]
        );
        assert!(v.iter().all(|s| s.eq_ignore_ascii_case(&v[0])));
    }
}
