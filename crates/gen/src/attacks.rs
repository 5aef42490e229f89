//! Rendering of planned incidents into events and labels.
//!
//! Sizes against the thresholds of the built-in rules in `rules/` (attacks exceed a threshold by
//! ≥ 40 %):
//! - mfa_fatigue: 7–15 pushes in 3–9 min, every one denied or unanswered (threshold 5 / 10 min);
//! - credential_stuffing: 36–70 failures over ≥ 34 distinct names in 6–12 min, ≤ 2 tries per
//!   name, ~90 % unknown users (threshold 25 failures / 15 users / 15 min);
//! - password_spray: 7–9 existing users × 2–5 tries over 20–50 min from one address
//!   (threshold 5 users); multi-source: 8–10 addresses, 12–20 users, 36–60 tries in 10–14 min
//!   (threshold 5 / 8 / 25);
//! - brute_force: 14–30 failures on one account in 8–25 min, from 1 or 7–10 addresses
//!   (threshold 10 / 30 min, 5 addresses);
//! - account_lockout wave: 35–45 accounts locked within minutes (threshold 25 / 30 min);
//! - impossible_travel: ≥ 2000 km in 10–40 min, i.e. ≥ 3000 km/h (threshold 900 km/h);
//! - risk_policy_block: 5–8 blocks for one user in ≤ 40 min (3 / hour); wave 28–40 users (20).
//!
//! The evasive variants of these attacks, which stay under those thresholds on purpose, and
//! benign look-alikes that cross them are in `variants.rs`.

use crate::benign::{Incident, mfa, sso};
use crate::engine::*;
use crate::label::categories as cat;
use crate::plan::{Kind, Plan};
use crate::population::{HOUR, MIN, hex_id, mix};
use crate::variants;
use crate::world::{
    ATTACK_ASN, ATTACK_CLIENTS, Client, DESKTOPS, JA_FIRST, JA_LAST, MOBILES, OFFICES, WEST_FIRST,
    WEST_LAST, distance_km,
};
use authwatch_event::{Entity, Factor, RiskLevel, Text};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::net::IpAddr;

pub(crate) fn render(eng: &mut Engine<'_>, plan: &Plan) {
    let mut rng = rng_for(eng.cfg.seed, stream::INCIDENT, plan.seed);
    let rng = &mut rng;
    match plan.kind {
        Kind::Fatigue { success } => fatigue(eng, plan, success, rng),
        Kind::FraudReport => fraud_report(eng, plan, rng),
        Kind::Stuffing {
            rotating,
            compromise,
        } => stuffing(eng, plan, rotating, compromise, rng),
        Kind::Spray {
            multi: false,
            compromise,
        } => spray(eng, plan, compromise, rng),
        Kind::Spray { multi: true, .. } => multi_spray(eng, plan, rng),
        Kind::BruteForce {
            lockout,
            compromise,
            ..
        } => brute_force(eng, plan, lockout, compromise, rng),
        Kind::LockoutWave => lockout_wave(eng, plan, rng),
        Kind::ImpossibleTravel { far } => impossible_travel(eng, plan, far, rng),
        Kind::NewDeviceGeo { far } => new_device_geo(eng, plan, far, rng),
        Kind::RiskBurst => risk_burst(eng, plan, rng),
        Kind::RiskWave => risk_wave(eng, plan, rng),
        Kind::AnonLogin => anon_login(eng, plan, rng),
        Kind::NetworkWave => network_wave(eng, plan, rng),
        Kind::Outage => outage(eng, plan, rng),
        Kind::BenignLockout => benign_lockout(eng, plan, rng),
        Kind::SlowFatigue { success } => variants::slow_fatigue(eng, plan, success, rng),
        Kind::OneTrySpray { compromise } => variants::one_try_spray(eng, plan, compromise, rng),
        Kind::AsnSpray => variants::asn_spray(eng, plan, rng),
        Kind::CaseBruteForce => variants::case_brute_force(eng, plan, rng),
        Kind::OfficeTypos => variants::office_typos(eng, plan, rng),
        Kind::ApprovedPushes => variants::approved_pushes(eng, plan, rng),
    }
}

pub(crate) fn user_ip_entity(eng: &Engine<'_>, u: usize, ip: IpAddr) -> Entity {
    Entity {
        user: Some(eng.pop.people[u].name.clone()),
        ip: Some(ip),
        ..Entity::default()
    }
}

pub(crate) fn ip_entity(ip: IpAddr) -> Entity {
    Entity {
        ip: Some(ip),
        ..Entity::default()
    }
}

/// The client an attacker's requests name at `t`, decided per incident by `key`. `tell_tale` is
/// the tooling or dated browser drawn for the incident, and 40 % of incidents (55 % of those
/// with one `victim`) do not use it: stuffing and spraying tools rotate current browser
/// strings, and the real-time phishing proxies behind push bombing and stolen passwords relay
/// the victim's own (a share of those with one victim, 30 %, do). Drawn from `key`, not from
/// the incident's random stream, so the incident's other draws stay as they were.
pub(crate) fn disguise(
    eng: &Engine<'_>,
    key: u64,
    t: i64,
    victim: Option<usize>,
    tell_tale: &'static Client,
) -> &'static Client {
    let h = mix(key ^ 0xd15_6015e);
    let common = &DESKTOPS[(h >> 8) as usize % DESKTOPS.len()];
    match (victim, h % 100) {
        (Some(v), 0..30) => eng.desktop(v, t).client,
        (Some(_), 30..55) | (None, 0..40) => common,
        _ => tell_tale,
    }
}

/// An attacker acting as account `name` (id empty for names the tenant does not know).
pub(crate) fn attacker(
    eng: &mut Engine<'_>,
    name: Text,
    id: Text,
    ip: IpAddr,
    client: &'static Client,
) -> Actor {
    Actor {
        name,
        id,
        ip,
        client,
        device_id: Text::default(),
        session: eng.new_session(),
        risk: RiskLevel::Medium,
    }
}

/// The attacker of victim `v`, from `ip` at `t`: one of the browser tools, or a disguise
/// ([`disguise`], drawn by `key`).
pub(crate) fn victims_attacker(
    eng: &mut Engine<'_>,
    v: usize,
    ip: IpAddr,
    key: u64,
    t: i64,
    rng: &mut ChaCha8Rng,
) -> Actor {
    let tool = &ATTACK_CLIENTS[rng.random_range(2..ATTACK_CLIENTS.len())];
    let client = disguise(eng, key, t, Some(v), tool);
    attack_victim(eng, v, ip, client)
}

pub(crate) fn attack_victim(
    eng: &mut Engine<'_>,
    u: usize,
    ip: IpAddr,
    client: &'static Client,
) -> Actor {
    let (name, id) = (eng.pop.people[u].name.clone(), eng.pop.people[u].id.clone());
    attacker(eng, name, id, ip, client)
}

/// A complete legitimate-looking sign-in (primary + second factor) by `a` as user `u`.
/// Returns the time of the last success.
fn sign_in(eng: &mut Engine<'_>, a: &Actor, u: usize, t: i64, rng: &mut ChaCha8Rng) -> i64 {
    let factor = eng.pop.people[u].factor;
    if factor == Factor::Webauthn {
        eng.emit(t, a, WEBAUTHN_OK, "");
        return t;
    }
    eng.emit(t, a, PW_OK, "");
    mfa(
        eng,
        a,
        factor,
        t + rng.random_range(3..15) * 1000,
        Incident::None,
        rng,
    )
}

fn fatigue(eng: &mut Engine<'_>, plan: &Plan, success: bool, rng: &mut ChaCha8Rng) {
    let (v, ip) = (plan.users[0], plan.ips[0]);
    let a = victims_attacker(eng, v, ip, plan.seed, plan.t, rng);
    let t0 = plan.t;
    // The attacker already has the password: the sign-in succeeds up to the push.
    eng.emit(t0, &a, PW_OK, "");
    let n: i64 = rng.random_range(7..=15);
    let span = rng.random_range(3..=9) * MIN;
    let first = t0 + rng.random_range(20..60) * 1000;
    let mut last = first;
    for k in 0..n {
        let tc = first + k * span / (n - 1) + rng.random_range(0..3000);
        eng.emit(tc, &a, PUSH_SEND, "");
        let tv = if rng.random_bool(0.35) {
            let tv = tc + rng.random_range(5..30) * 1000;
            eng.emit(tv, &a, PUSH_DENY, "");
            tv
        } else {
            let tv = tc + 60_000;
            eng.emit(tv, &a, PUSH_TIMEOUT, "");
            tv
        };
        last = last.max(tv);
    }
    let e = eng.user_entity(v);
    let note = format!("{n} pushes in {} min, all denied or unanswered", span / MIN);
    eng.label(cat::MFA_FATIGUE, e.clone(), first, last, note);
    let campaign = FatigueCampaign {
        actor: &a,
        victim: v,
        ip,
        t0,
        first,
        last,
    };
    fatigue_ending(
        eng,
        &campaign,
        success.then_some(60..360),
        &n.to_string(),
        "push-bombing attacker",
        rng,
    );
}

/// A push-bombing campaign, for [`fatigue_ending`].
pub(crate) struct FatigueCampaign<'a> {
    pub actor: &'a Actor,
    pub victim: usize,
    pub ip: IpAddr,
    /// The attacker's password step.
    pub t0: i64,
    /// The first push and the last refusal.
    pub first: i64,
    pub last: i64,
}

/// How a push-bombing campaign ends. With `approve_after_s`, the worn-out user approves the next
/// push that many seconds after the last refusal (labelled `mfa_fatigue_success`; `pushes`
/// names the campaign's pushes in its note) and the attacker's session is used. Either way the
/// attacker's sign-in through an anonymizer is labelled (`attacker` names it).
pub(crate) fn fatigue_ending(
    eng: &mut Engine<'_>,
    c: &FatigueCampaign<'_>,
    approve_after_s: Option<impl rand::distr::uniform::SampleRange<i64>>,
    pushes: &str,
    attacker: &str,
    rng: &mut ChaCha8Rng,
) {
    let mut last_success = c.t0;
    if let Some(after) = approve_after_s {
        let ta = c.last + rng.random_range(after) * 1000;
        eng.emit(ta, c.actor, PUSH_SEND, "");
        let ok = ta + rng.random_range(5..20) * 1000;
        eng.emit(ok, c.actor, PUSH_OK, "");
        eng.label(
            cat::MFA_FATIGUE_SUCCESS,
            eng.user_entity(c.victim),
            c.first,
            ok,
            format!(
                "approved push {} s after the last of {pushes}",
                (ok - c.last) / 1000
            ),
        );
        last_success = ok + rng.random_range(30..120) * 1000;
        eng.emit(last_success, c.actor, SSO, "Office 365");
    }
    let e = user_ip_entity(eng, c.victim, c.ip);
    eng.label(
        cat::ANONYMIZER_LOGIN,
        e,
        c.t0,
        last_success,
        format!("{attacker} signed in through an anonymizer"),
    );
}

fn fraud_report(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let (v, ip) = (plan.users[0], plan.ips[0]);
    let a = victims_attacker(eng, v, ip, plan.seed, plan.t, rng);
    eng.emit(plan.t, &a, PUSH_SEND, "");
    let tf = plan.t + rng.random_range(8..40) * 1000;
    eng.emit(tf, &a, PUSH_FRAUD, "");
    let e = eng.user_entity(v);
    eng.label(
        cat::MFA_FRAUD_REPORT,
        e,
        tf,
        tf,
        "user reported an unexpected push as fraud",
    );
}

/// Names from a leaked list that the tenant does not know.
pub(crate) fn unknown_name(eng: &Engine<'_>, rng: &mut ChaCha8Rng) -> Text {
    loop {
        let (first, last) = if rng.random_bool(0.5) {
            (JA_FIRST, JA_LAST)
        } else {
            (WEST_FIRST, WEST_LAST)
        };
        let f = first[rng.random_range(0..first.len())];
        let l = last[rng.random_range(0..last.len())];
        let name = match rng.random_range(0..3) {
            0 => format!("{f}.{l}{}{}", rng.random_range(10..100), eng.domain),
            1 => format!("{}{l}{}", &f[..1], eng.domain),
            _ => format!("{l}.{f}{}", eng.domain),
        };
        let t = Text::from(name);
        if !eng.pop.names.contains(&t) {
            return t;
        }
    }
}

/// The names one stuffing run tries: every planned existing account once, the rest unknown,
/// with at most two names tried twice (a list with duplicates).
fn stuffing_list(
    eng: &Engine<'_>,
    plan: &Plan,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<(Text, Text)> {
    let mut list: Vec<(Text, Text)> = plan
        .users
        .iter()
        .map(|&u| (eng.pop.people[u].name.clone(), eng.pop.people[u].id.clone()))
        .collect();
    let mut seen: std::collections::BTreeSet<Text> = list.iter().map(|(n, _)| n.clone()).collect();
    while list.len() + 2 < n {
        let name = unknown_name(eng, rng);
        // A name drawn twice would be tried more than twice after the duplicates below.
        if seen.insert(name.clone()) {
            list.push((name, Text::default()));
        }
    }
    for k in 0..n - list.len() {
        let again = list[k % list.len()].clone();
        list.push(again);
    }
    list.shuffle(rng);
    list
}

fn stuffing(
    eng: &mut Engine<'_>,
    plan: &Plan,
    rotating: bool,
    compromise: bool,
    rng: &mut ChaCha8Rng,
) {
    let n: usize = if rotating {
        rng.random_range(40..=70)
    } else {
        rng.random_range(36..=70)
    };
    let span = rng.random_range(if rotating { 8..=12 } else { 6..=12 }) * MIN;
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..2)],
    );
    let list = stuffing_list(eng, plan, n, rng);
    let mut first = i64::MAX;
    let mut last = plan.t;
    for (i, (name, id)) in list.into_iter().enumerate() {
        let t = plan.t + i as i64 * span / n as i64 + rng.random_range(0..2000);
        let ip = plan.ips[i % plan.ips.len()];
        let known = !id.is_empty();
        let mut a = attacker(eng, name, id, ip, client);
        a.session = Text::default();
        eng.emit(t, &a, if known { PW_BAD } else { PW_UNKNOWN }, "");
        first = first.min(t);
        last = last.max(t);
    }
    if rotating {
        let e = Entity {
            asn: Some(ATTACK_ASN),
            ..Entity::default()
        };
        let note = format!(
            "{n} failures from {} rotating addresses of AS{ATTACK_ASN}, one client",
            plan.ips.len()
        );
        eng.label(cat::CREDENTIAL_STUFFING, e, first, last, note);
    } else {
        let note = format!("{n} failures in {} min from one address", span / MIN);
        eng.label(
            cat::CREDENTIAL_STUFFING,
            ip_entity(plan.ips[0]),
            first,
            last,
            note,
        );
        if compromise {
            let ts = last + rng.random_range(60..120) * MIN;
            compromise_at(
                eng,
                plan.users[0],
                plan.ips[0],
                ts,
                "credential stuffing",
                rng,
            );
        }
    }
}

/// The attacker signs in with a password that worked, from the attacking address.
pub(crate) fn compromise_at(
    eng: &mut Engine<'_>,
    v: usize,
    ip: IpAddr,
    ts: i64,
    after: &str,
    rng: &mut ChaCha8Rng,
) {
    let a = victims_attacker(eng, v, ip, mix(ts as u64 ^ v as u64), ts, rng);
    eng.emit(ts, &a, PW_OK, "");
    // The second factor stops the attacker this time; the password is still compromised.
    match eng.pop.people[v].factor {
        Factor::Push => {
            eng.emit(ts + 5000, &a, PUSH_SEND, "");
            eng.emit(ts + 65_000, &a, PUSH_TIMEOUT, "");
        }
        Factor::Sms => eng.emit(ts + 5000, &a, SMS_SEND, ""),
        Factor::Totp => eng.emit(ts + 20_000, &a, TOTP_BAD, ""),
        _ => {}
    }
    let e = user_ip_entity(eng, v, ip);
    eng.label(
        cat::CREDENTIAL_COMPROMISE,
        e.clone(),
        ts,
        ts,
        format!("password success after {after}"),
    );
    eng.label(
        cat::ANONYMIZER_LOGIN,
        e,
        ts,
        ts,
        "attacker signed in through an anonymizer",
    );
}

fn spray(eng: &mut Engine<'_>, plan: &Plan, compromise: bool, rng: &mut ChaCha8Rng) {
    let ip = plan.ips[0];
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..ATTACK_CLIENTS.len())],
    );
    let tries: Vec<i64> = plan.users.iter().map(|_| rng.random_range(2..=5)).collect();
    let rounds = tries.iter().copied().max().unwrap_or(2);
    let span = rng.random_range(20..=50) * MIN;
    let (mut first, mut last) = (i64::MAX, plan.t);
    for r in 0..rounds {
        let mut t = plan.t + r * span / (rounds - 1).max(1);
        for (k, &u) in plan.users.iter().enumerate() {
            if tries[k] <= r {
                continue;
            }
            t += rng.random_range(1000..5000);
            let a = attack_victim(eng, u, ip, client);
            eng.emit(t, &a, PW_BAD, "");
            first = first.min(t);
            last = last.max(t);
        }
    }
    let total: i64 = tries.iter().sum();
    let note = format!(
        "{} users × 2–5 passwords ({total} tries) over {} min",
        plan.users.len(),
        (last - first) / MIN
    );
    eng.label(cat::PASSWORD_SPRAY, ip_entity(ip), first, last, note);
    if compromise {
        let ts = last + rng.random_range(60..120) * MIN;
        compromise_at(eng, plan.users[0], ip, ts, "password spraying", rng);
    }
}

fn multi_spray(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let n: i64 = rng.random_range(36..=60);
    let span = rng.random_range(10..=14) * MIN;
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..ATTACK_CLIENTS.len())],
    );
    let (mut first, mut last) = (i64::MAX, plan.t);
    for i in 0..n {
        let t = plan.t + i * span / n + rng.random_range(0..3000);
        // Round-robin keeps every address ≤ 8 tries and every user ≤ 5: no single address or
        // account crosses a per-key threshold, only the tenant-wide picture does.
        let u = plan.users[i as usize % plan.users.len()];
        let ip = plan.ips[i as usize % plan.ips.len()];
        let a = attack_victim(eng, u, ip, client);
        eng.emit(t, &a, PW_BAD, "");
        first = first.min(t);
        last = last.max(t);
    }
    let e = eng.tenant_entity();
    let note = format!(
        "{n} tries on {} users from {} addresses in {} min",
        plan.users.len(),
        plan.ips.len(),
        span / MIN
    );
    eng.label(cat::PASSWORD_SPRAY, e, first, last, note);
}

fn brute_force(
    eng: &mut Engine<'_>,
    plan: &Plan,
    lockout: bool,
    compromise: bool,
    rng: &mut ChaCha8Rng,
) {
    let v = plan.users[0];
    let n: i64 = rng.random_range(14..=30);
    let span = rng.random_range(8..=25) * MIN;
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        None,
        &ATTACK_CLIENTS[rng.random_range(0..ATTACK_CLIENTS.len())],
    );
    let mut last = plan.t;
    let mut last_ip = plan.ips[0];
    for i in 0..n {
        let t = plan.t + i * span / n + rng.random_range(0..2000);
        last_ip = plan.ips[i as usize % plan.ips.len()];
        let a = attack_victim(eng, v, last_ip, client);
        eng.emit(t, &a, PW_BAD, "");
        last = last.max(t);
    }
    let e = eng.user_entity(v);
    let note = format!(
        "{n} failures in {} min from {} address(es)",
        span / MIN,
        plan.ips.len()
    );
    eng.label(cat::BRUTE_FORCE, e.clone(), plan.t, last, note);
    if lockout {
        let a = attack_victim(eng, v, last_ip, client);
        eng.emit(last + 1000, &a, LOCK, "");
        eng.label(
            cat::ACCOUNT_LOCKOUT,
            e,
            last + 1000,
            last + 1000,
            "locked by brute force",
        );
    } else if compromise {
        let ts = last + rng.random_range(60..120) * MIN;
        compromise_at(eng, v, plan.ips[0], ts, "brute force", rng);
    }
}

fn lockout_wave(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let ip = plan.ips[0];
    let client = disguise(eng, plan.seed, plan.t, None, &ATTACK_CLIENTS[0]);
    let span = rng.random_range(20..=28) * MIN;
    let (mut first, mut last, mut first_lock, mut last_lock) = (i64::MAX, plan.t, i64::MAX, plan.t);
    // Six rounds over all accounts; the tenant locks an account at its sixth failure.
    for r in 0..6 {
        let mut t = plan.t + r * span / 5;
        for &u in &plan.users {
            t += rng.random_range(1000..3000);
            let a = attack_victim(eng, u, ip, client);
            eng.emit(t, &a, PW_BAD, "");
            first = first.min(t);
            last = last.max(t);
            if r == 5 {
                eng.emit(t + 500, &a, LOCK, "");
                first_lock = first_lock.min(t + 500);
                last_lock = last_lock.max(t + 500);
                let e = eng.user_entity(u);
                eng.label(
                    cat::ACCOUNT_LOCKOUT,
                    e,
                    t + 500,
                    t + 500,
                    "locked in a lockout wave",
                );
            }
        }
    }
    let e = eng.tenant_entity();
    eng.label(
        cat::ACCOUNT_LOCKOUT,
        e,
        first_lock,
        last_lock,
        format!("{} accounts locked by one sprayer", plan.users.len()),
    );
    let note = format!(
        "{} users × 6 passwords, ending in lockouts",
        plan.users.len()
    );
    eng.label(cat::PASSWORD_SPRAY, ip_entity(ip), first, last, note);
}

fn impossible_travel(eng: &mut Engine<'_>, plan: &Plan, far: usize, rng: &mut ChaCha8Rng) {
    let v = plan.users[0];
    let day = eng.pop.local_day(v, plan.t);
    let Some(ip1) = eng.pop.ip(v, day, false) else {
        return;
    };
    let a = eng.user_actor(v, ip1, plan.t);
    let t1 = plan.t;
    let done = sign_in(eng, &a, v, t1, rng);
    sso(eng, &a, v, done, 1, rng);
    // Same browser and cookie, half a world away: a stolen session.
    let dt = rng.random_range(10..=40) * MIN;
    let t2 = t1 + dt;
    let ip2 = OFFICES[far]
        .home
        .nth(rng.random_range(0..OFFICES[far].home.len()));
    let b = eng.user_actor(v, ip2, t2);
    eng.emit(t2, &b, PW_OK, "");
    sso(eng, &b, v, t2, 1, rng);
    let home = eng.pop.people[v].office;
    let km = distance_km(&OFFICES[home], &OFFICES[far]);
    let e = eng.user_entity(v);
    let note = format!(
        "{} → {}: {km:.0} km in {} min ({:.0} km/h)",
        OFFICES[home].city,
        OFFICES[far].city,
        dt / MIN,
        km / (dt as f64 / HOUR as f64)
    );
    eng.label(cat::IMPOSSIBLE_TRAVEL, e, t1, t2, note);
}

fn new_device_geo(eng: &mut Engine<'_>, plan: &Plan, far: usize, rng: &mut ChaCha8Rng) {
    let v = plan.users[0];
    let ip = OFFICES[far]
        .home
        .nth(rng.random_range(0..OFFICES[far].home.len()));
    let p = &eng.pop.people[v];
    let own: Vec<&str> = [p.desktop.client.ua, eng.desktop(v, plan.t).client.ua]
        .into_iter()
        .chain(p.mobile.as_ref().map(|m| m.client.ua))
        .collect();
    let fresh: Vec<&'static Client> = DESKTOPS
        .iter()
        .chain(MOBILES.iter())
        .filter(|c| !own.contains(&c.ua))
        .collect();
    let client = fresh[rng.random_range(0..fresh.len())];
    let mut a = eng.user_actor(v, ip, plan.t);
    a.client = client;
    a.device_id = hex_id("guo", mix(plan.seed ^ 0xdef));
    let done = sign_in(eng, &a, v, plan.t, rng);
    sso(eng, &a, v, done, 2, rng);
    let e = eng.user_entity(v);
    let note = format!(
        "first sign-in from {} ({}) on a new {}",
        OFFICES[far].country, OFFICES[far].city, client.os
    );
    eng.label(cat::NEW_DEVICE_GEO, e, plan.t, done, note);
}

fn risk_burst(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let (v, ip) = (plan.users[0], plan.ips[0]);
    let client = disguise(
        eng,
        plan.seed,
        plan.t,
        Some(v),
        &ATTACK_CLIENTS[rng.random_range(0..ATTACK_CLIENTS.len())],
    );
    let mut a = attack_victim(eng, v, ip, client);
    a.risk = RiskLevel::High;
    let n: i64 = rng.random_range(5..=8);
    let span = rng.random_range(15..=40) * MIN;
    let mut last = plan.t;
    for i in 0..n {
        last = plan.t + i * span / (n - 1);
        eng.emit(last, &a, RISK_BLOCK, "");
    }
    let e = eng.user_entity(v);
    eng.label(
        cat::RISK_POLICY_BLOCK,
        e,
        plan.t,
        last,
        format!("{n} high-risk sign-ins blocked in {} min", span / MIN),
    );
}

fn risk_wave(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let (mut first, mut last) = (i64::MAX, plan.t);
    for &u in &plan.users {
        let day = eng.pop.local_day(u, plan.t);
        let Some(ip) = eng.pop.ip(u, day, false) else {
            continue;
        };
        let t = plan.t + rng.random_range(0..50 * 60) * 1000;
        let mut a = eng.user_actor(u, ip, t);
        a.risk = RiskLevel::Medium;
        eng.emit(t, &a, PW_OK, "");
        eng.emit(t + 1500, &a, RISK_BLOCK, "");
        first = first.min(t + 1500);
        last = last.max(t + 1500);
    }
    let e = eng.tenant_entity();
    let note = format!(
        "{} ordinary sign-ins blocked within an hour: risk policy misconfiguration",
        plan.users.len()
    );
    eng.label(cat::RISK_POLICY_BLOCK, e, first, last, note);
}

fn anon_login(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let (v, ip) = (plan.users[0], plan.ips[0]);
    let a = eng.user_actor(v, ip, plan.t);
    let done = sign_in(eng, &a, v, plan.t, rng);
    sso(eng, &a, v, done, 2, rng);
    let e = user_ip_entity(eng, v, ip);
    eng.label(
        cat::ANONYMIZER_LOGIN,
        e,
        plan.t,
        done,
        "sign-in through Tor / anonymous VPN / proxy / hosting",
    );
}

fn network_wave(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let ip = plan.ips[0];
    let (mut first, mut last) = (i64::MAX, plan.t);
    for &u in &plan.users {
        let mut t = plan.t + rng.random_range(0..20 * 60) * 1000;
        let a = eng.user_actor(u, ip, t);
        eng.emit(t, &a, PW_OK, "");
        t += rng.random_range(3..15) * 1000;
        first = first.min(t);
        for _ in 0..rng.random_range(1..=2) {
            eng.emit(t, &a, PUSH_SEND, "");
            t += 60_000;
            eng.emit(t, &a, PUSH_TIMEOUT, "");
            last = last.max(t);
            t += rng.random_range(5..30) * 1000;
        }
        // The code from the app works: only the push channel is blocked.
        eng.emit(t, &a, TOTP_OK, "");
        sso(eng, &a, u, t, 1, rng);
    }
    let city = OFFICES[eng.pop.people[plan.users[0]].office].city;
    let note = format!(
        "network: push notifications blocked at the {city} office egress ({} users)",
        plan.users.len()
    );
    eng.label(cat::MFA_TRIAGE, ip_entity(ip), first, last, note);
}

fn outage(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let (mut first, mut last) = (i64::MAX, plan.t);
    for &u in &plan.users {
        let day = eng.pop.local_day(u, plan.t);
        let Some(ip) = eng.pop.ip(u, day, false) else {
            continue;
        };
        let mut t = plan.t + rng.random_range(0..14 * 60) * 1000;
        let a = eng.user_actor(u, ip, t);
        eng.emit(t, &a, PW_OK, "");
        t += rng.random_range(3..15) * 1000;
        eng.emit(t, &a, PUSH_SEND, "");
        t += rng.random_range(2..10) * 1000;
        eng.emit(t, &a, PUSH_PROVIDER_ERR, "");
        first = first.min(t);
        last = last.max(t);
        t += rng.random_range(20..90) * 1000;
        eng.emit(t, &a, TOTP_OK, "");
        sso(eng, &a, u, t, 1, rng);
    }
    let e = eng.tenant_entity();
    let note = format!(
        "system: provider outage, Okta Verify push failing for {} users",
        plan.users.len()
    );
    eng.label(cat::MFA_TRIAGE, e, first, last, note);
}

fn benign_lockout(eng: &mut Engine<'_>, plan: &Plan, rng: &mut ChaCha8Rng) {
    let v = plan.users[0];
    let day = eng.pop.local_day(v, plan.t);
    let Some(ip) = eng.pop.ip(v, day, false) else {
        return;
    };
    // Ordinary failures keep under the per-address cap: when colleagues behind the same
    // address failed around then, the user gets it wrong a little later (the planner keeps
    // them quiet for three hours, and all this takes under two and a half), or not today.
    let Some(mut t) = (0..=4)
        .map(|k| plan.t + k * 15 * MIN)
        .find(|&t| eng.may_fail(ip, t, v))
    else {
        return;
    };
    let first = t;
    let a = eng.user_actor(v, ip, t);
    for _ in 0..rng.random_range(5..=6) {
        eng.emit(t, &a, PW_BAD, "");
        t += rng.random_range(60..150) * 1000;
    }
    let lock = t;
    eng.emit(lock, &a, LOCK, "");
    let e = eng.user_entity(v);
    eng.label(
        cat::ACCOUNT_LOCKOUT,
        e.clone(),
        lock,
        lock,
        "user forgot the new password",
    );
    // The help desk verifies the caller and unlocks the account.
    t += rng.random_range(20..60) * MIN;
    let b = eng.user_actor(v, ip, t);
    eng.emit(t, &b, UNLOCK, "");
    let done = sign_in(eng, &b, v, t + rng.random_range(2..10) * MIN, rng);
    sso(eng, &b, v, done, 2, rng);
    eng.label(
        cat::MFA_TRIAGE,
        e,
        first,
        done,
        "system: account locked out after repeated password failures",
    );
}
