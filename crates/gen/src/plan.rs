//! The schedule of injected incidents, drawn up front for the whole period.
//!
//! Planning is cheap (a few records per incident) and lets the benign simulation keep the
//! victims quiet around an attack: a victim's own sign-ins must not turn an attack into another
//! incident (a legitimate approval right after push bombing, a success right after a brute-force
//! alert naming the user, a return to the office right after an impossible jump).

use crate::benign::Incident;
use crate::engine::{Engine, rng_for, stream};
use crate::population::{DAY, HOUR, MIN, Person, Place};
use crate::world::{ATTACK_ANON, ATTACK_AS721, ATTACK_ROTATING, OFFICES, SPRAY_POOL, distance_km};
use authwatch_event::Factor;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Fatigue {
        success: bool,
    },
    FraudReport,
    Stuffing {
        rotating: bool,
        compromise: bool,
    },
    Spray {
        multi: bool,
        compromise: bool,
    },
    BruteForce {
        distributed: bool,
        lockout: bool,
        compromise: bool,
    },
    LockoutWave,
    ImpossibleTravel {
        far: usize,
    },
    NewDeviceGeo {
        far: usize,
    },
    RiskBurst,
    RiskWave,
    AnonLogin,
    NetworkWave,
    Outage,
    BenignLockout,
    /// Push bombing paced under mfa_fatigue's 10-minute window, for about an hour.
    SlowFatigue {
        success: bool,
    },
    /// One password tried once against many existing accounts from one address.
    OneTrySpray {
        compromise: bool,
    },
    /// A slow spray from a fresh address of one network for every try.
    AsnSpray,
    /// Brute force on one account with the login typed in varying letter case.
    CaseBruteForce,
    /// Benign: colleagues behind one office egress mistype a changed password, then sign in.
    OfficeTypos,
    /// Benign: a user approves every one of 6–9 pushes an application asks for in minutes.
    ApprovedPushes,
}

/// One scheduled incident.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub t: i64,
    pub kind: Kind,
    /// Existing accounts involved (victims or participants).
    pub users: Vec<usize>,
    /// Source addresses (attacker addresses, or the shared egress of a network incident).
    pub ips: Vec<IpAddr>,
    /// Seed of the incident's own random stream.
    pub seed: u64,
}

/// Victim quiet time after stuffing/spray/brute force: the compromise success comes 1–2 h
/// after the attack, and any success within 3 h of the alert would count as compromise.
const AFTER_CREDENTIAL_ATTACK: i64 = 6 * HOUR;

pub(crate) fn plan(eng: &mut Engine<'_>) -> Vec<Plan> {
    let cfg = eng.cfg;
    let mut rng = rng_for(cfg.seed, stream::PLAN, 0);
    let users = cfg.users;
    let days = cfg.days as i64;
    let n = if users >= 100 && days >= 2 {
        2 + users * days as usize / 2000
    } else {
        1
    };
    let mut kinds: Vec<Kind> = Vec::new();
    for i in 0..n {
        kinds.push(Kind::Fatigue { success: false });
        kinds.push(Kind::Fatigue { success: true });
        kinds.push(Kind::FraudReport);
        kinds.push(Kind::Stuffing {
            rotating: false,
            compromise: i % 2 == 0,
        });
        kinds.push(Kind::Stuffing {
            rotating: true,
            compromise: false,
        });
        kinds.push(Kind::Spray {
            multi: false,
            compromise: i % 2 == 1,
        });
        kinds.push(Kind::Spray {
            multi: true,
            compromise: false,
        });
        kinds.push(Kind::BruteForce {
            distributed: false,
            lockout: i % 2 == 1,
            compromise: i % 2 == 0,
        });
        kinds.push(Kind::BruteForce {
            distributed: true,
            lockout: i % 2 == 0,
            compromise: false,
        });
        kinds.push(Kind::ImpossibleTravel { far: 0 });
        if days >= 3 {
            kinds.push(Kind::NewDeviceGeo { far: 0 });
        }
        kinds.push(Kind::RiskBurst);
        kinds.push(Kind::AnonLogin);
        kinds.push(Kind::NetworkWave);
        if i % 2 == 0 {
            kinds.push(Kind::LockoutWave);
            kinds.push(Kind::RiskWave);
            kinds.push(Kind::Outage);
        }
        // Evasive variants of the attacks above and benign look-alikes of them (variants.rs):
        // what a detector tuned on the classic shapes misses, or raises falsely. They need a
        // tenant large enough to hold a spray of 50+ accounts beside everything else.
        if users >= 100 {
            kinds.push(Kind::SlowFatigue {
                success: i % 2 == 1,
            });
            kinds.push(Kind::CaseBruteForce);
            kinds.push(Kind::ApprovedPushes);
            kinds.push(Kind::OneTrySpray {
                compromise: i % 2 == 0,
            });
            kinds.push(Kind::AsnSpray);
            kinds.push(Kind::OfficeTypos);
        }
    }
    let mut used_ips = BTreeSet::new();
    let mut plans = Vec::new();
    let first = cfg.start_ms + HOUR;
    let last = cfg.start_ms + days * DAY - 6 * HOUR;
    // Incidents with one victim first: in a small tenant the many-account ones would
    // otherwise leave nobody free to be the victim. The variants come last, so that they take
    // what the classic incidents leave (and do not move those: the sort is stable, and the
    // classic ones draw the same numbers as before the variants existed).
    kinds.sort_by_key(|k| match k {
        Kind::Stuffing { .. } | Kind::Spray { .. } => 1,
        Kind::LockoutWave | Kind::RiskWave | Kind::Outage | Kind::NetworkWave => 2,
        Kind::SlowFatigue { .. } | Kind::CaseBruteForce | Kind::ApprovedPushes => 3,
        Kind::OneTrySpray { .. } | Kind::AsnSpray | Kind::OfficeTypos => 4,
        _ => 0,
    });
    // Slow sprays over one network hours apart: two at once would be one faster campaign.
    let mut network_sprays: Vec<i64> = Vec::new();
    // Tenant-wide incidents of one kind hours apart: a detector keyed by the tenant reports two
    // of them an hour apart as one (its alert holds back repeats for a few hours), as it should.
    let mut tenant_wide: Vec<(Kind, i64)> = Vec::new();
    for (k, kind) in kinds.into_iter().enumerate() {
        let seed = rng.random::<u64>() ^ k as u64;
        // A few instants, in case everyone suitable is busy at the first one.
        for _ in 0..4 {
            let t = rng.random_range(first..last);
            if kind == Kind::AsnSpray && network_sprays.iter().any(|&s| (s - t).abs() < 4 * HOUR) {
                continue;
            }
            if tenant_wide_clash(eng.cfg.start_ms, &tenant_wide, kind, t) {
                continue;
            }
            if let Some(p) = place_incident(eng, &mut rng, &mut used_ips, kind, t, seed) {
                if kind == Kind::AsnSpray {
                    network_sprays.push(p.t);
                }
                tenant_wide.push((kind, p.t));
                plans.push(p);
                break;
            }
        }
    }
    // Benign lockouts: one or two a day at most tenant-wide, far below a lockout wave.
    for d in 0..days {
        let count = if d == 0 { 1 } else { rng.random_range(0..=2) };
        for _ in 0..count {
            let seed = rng.random::<u64>();
            let t = cfg.start_ms + d * DAY + rng.random_range(HOUR..DAY - 6 * HOUR);
            if let Some(p) =
                place_incident(eng, &mut rng, &mut used_ips, Kind::BenignLockout, t, seed)
            {
                plans.push(p);
            }
        }
    }
    force_everyday_incidents(eng, &mut rng);
    plans.sort_by_key(|p| p.t);
    plans
}

/// Would a tenant-wide incident of `kind` at `t` come within 6 h of one of its kind already
/// placed (more than any tenant-keyed rule holds back repeats)? An outage is moved to the
/// morning of its UTC day, so for outages it is the day that must differ.
fn tenant_wide_clash(start_ms: i64, placed: &[(Kind, i64)], kind: Kind, t: i64) -> bool {
    let tenant_wide = matches!(
        kind,
        Kind::Outage | Kind::LockoutWave | Kind::RiskWave | Kind::Spray { multi: true, .. }
    );
    let day = |t: i64| (t - start_ms).div_euclid(DAY);
    tenant_wide
        && placed.iter().any(|&(k, pt)| {
            k == kind
                && if kind == Kind::Outage {
                    day(pt) == day(t)
                } else {
                    (pt - t).abs() < 6 * HOUR
                }
        })
}

/// Which primary factors an everyday incident can happen with.
type FactorFilter = fn(Factor) -> bool;

/// One of each everyday MFA failure class per weekday, on users free that day (preferably on
/// users no planned incident involves): at small scale the per-user-day probabilities alone
/// would often produce none of the rarer classes.
fn force_everyday_incidents(eng: &mut Engine<'_>, rng: &mut ChaCha8Rng) {
    let start_dow = (eng.cfg.start_ms.div_euclid(DAY) + 3).rem_euclid(7);
    let classes: [(Incident, FactorFilter); 7] = [
        (Incident::PasswordTypo, |f| f != Factor::Webauthn),
        (Incident::OtpTypo, |f| f == Factor::Totp || f == Factor::Sms),
        (Incident::WrongMethod, |f| {
            f == Factor::Totp || f == Factor::Push
        }),
        (Incident::PushNotDelivered, |f| f == Factor::Push),
        (Incident::AuthenticatorError, |f| f == Factor::Webauthn),
        (Incident::PhoneChange, |f| f == Factor::Push),
        (Incident::ClockDrift, |f| f == Factor::Totp),
    ];
    for day in 0..eng.cfg.days as i64 {
        if (start_dow + day) % 7 >= 5 {
            continue;
        }
        let t = eng.cfg.start_ms + day * DAY + 12 * HOUR;
        for (incident, fits) in classes {
            // Preferably someone no planned incident involves: the help-desk view of them then
            // holds this cause alone.
            let untouched = Pick {
                t,
                before: 0,
                after: 0,
                quiet: false,
                accept: &|p, pl| fits(p.factor) && on_own_network(p, pl) && p.busy.is_empty(),
            };
            let mut chosen = pick_users(eng, rng, 1, &untouched);
            if chosen.is_empty() {
                let anyone = Pick {
                    accept: &|p, pl| fits(p.factor) && on_own_network(p, pl),
                    ..untouched
                };
                chosen = pick_users(eng, rng, 1, &anyone);
            }
            for u in chosen {
                // The day stays marked busy so that no other incident lands on it; the user's
                // ordinary day carries this one.
                eng.pop.people[u].forced.push((day, incident));
            }
        }
    }
}

fn attack_ip(rng: &mut ChaCha8Rng, used: &mut BTreeSet<IpAddr>, anon_only: bool) -> IpAddr {
    loop {
        let span = if anon_only || rng.random_bool(0.5) {
            ATTACK_ANON[rng.random_range(0..ATTACK_ANON.len())]
        } else {
            ATTACK_AS721
        };
        let ip = span.nth(rng.random_range(0..span.len()));
        if used.insert(ip) {
            return ip;
        }
    }
}

/// Rules for choosing an account for an incident.
struct Pick<'p> {
    t: i64,
    before: i64,
    after: i64,
    /// Make the user quiet (no own sign-ins) over `[t - before, t + after]`.
    quiet: bool,
    accept: &'p dyn Fn(&Person, Place) -> bool,
}

fn pick_users(
    eng: &mut Engine<'_>,
    rng: &mut ChaCha8Rng,
    want: usize,
    rule: &Pick<'_>,
) -> Vec<usize> {
    let users = eng.pop.people.len();
    let mut order: Vec<usize> = (0..users).collect();
    // A partial shuffle is enough: only the first candidates are usually looked at.
    let mut chosen = Vec::new();
    for i in 0..users {
        if chosen.len() >= want {
            break;
        }
        let j = rng.random_range(i..users);
        order.swap(i, j);
        let u = order[i];
        let day = eng.pop.local_day(u, rule.t);
        let place = eng.pop.place(u, day);
        let p = &eng.pop.people[u];
        if place == Place::InFlight
            || p.is_busy(day)
            || p.is_quiet(rule.t - rule.before - HOUR, rule.t + rule.after + HOUR)
            || !(rule.accept)(p, place)
        {
            continue;
        }
        let p = &mut eng.pop.people[u];
        p.busy.push(day);
        if rule.quiet {
            p.quiet.push((rule.t - rule.before, rule.t + rule.after));
        }
        chosen.push(u);
    }
    chosen
}

fn at_home_city(p: &Person, place: Place) -> bool {
    !p.traveller() && matches!(place, Place::Office | Place::Home | Place::Vpn)
}

/// At home, and signing in from the home office's own networks: not through a VPN hub in
/// another country, which the user's profile may not know yet (a triage rule then rightly
/// holds back on a failure, so no everyday failure is placed there).
fn on_own_network(p: &Person, place: Place) -> bool {
    at_home_city(p, place) && !(place == Place::Vpn && p.vpn_exit != OFFICES[p.office].vpn)
}

fn place_incident(
    eng: &mut Engine<'_>,
    rng: &mut ChaCha8Rng,
    used: &mut BTreeSet<IpAddr>,
    kind: Kind,
    t: i64,
    seed: u64,
) -> Option<Plan> {
    let mut plan = Plan {
        t,
        kind,
        users: Vec::new(),
        ips: Vec::new(),
        seed,
    };
    let victim = |eng: &mut Engine<'_>,
                  rng: &mut ChaCha8Rng,
                  t: i64,
                  before: i64,
                  after: i64,
                  accept: &dyn Fn(&Person, Place) -> bool| {
        pick_users(
            eng,
            rng,
            1,
            &Pick {
                t,
                before,
                after,
                quiet: true,
                accept,
            },
        )
        .first()
        .copied()
    };
    match kind {
        Kind::Fatigue { .. } | Kind::FraudReport => {
            let u = victim(eng, rng, t, HOUR, 2 * HOUR, &|p, pl| {
                p.factor == Factor::Push && at_home_city(p, pl)
            })?;
            plan.users.push(u);
            plan.ips.push(attack_ip(rng, used, true));
        }
        Kind::Stuffing {
            rotating,
            compromise,
        } => {
            let want = rng.random_range(2..=4);
            plan.users = pick_users(
                eng,
                rng,
                want,
                &Pick {
                    t,
                    before: HOUR,
                    after: AFTER_CREDENTIAL_ATTACK,
                    quiet: true,
                    accept: &|p, pl| at_home_city(p, pl),
                },
            );
            if plan.users.is_empty() {
                return None;
            }
            if rotating {
                for _ in 0..rng.random_range(40..=60) {
                    let ip = ATTACK_ROTATING.nth(rng.random_range(0..ATTACK_ROTATING.len()));
                    if used.insert(ip) {
                        plan.ips.push(ip);
                    }
                }
            } else {
                plan.ips.push(attack_ip(rng, used, compromise));
            }
        }
        Kind::Spray { multi, compromise } => {
            let want = if multi {
                rng.random_range(12..=20)
            } else {
                rng.random_range(7..=9)
            };
            plan.users = pick_users(
                eng,
                rng,
                want,
                &Pick {
                    t,
                    before: HOUR,
                    after: AFTER_CREDENTIAL_ATTACK,
                    quiet: true,
                    accept: &|p, pl| at_home_city(p, pl),
                },
            );
            if plan.users.len() < want {
                release(eng, &plan.users, t, Some((HOUR, AFTER_CREDENTIAL_ATTACK)));
                return None;
            }
            let n_ips = if multi { rng.random_range(8..=10) } else { 1 };
            for _ in 0..n_ips {
                plan.ips.push(attack_ip(rng, used, compromise));
            }
        }
        Kind::BruteForce {
            distributed,
            compromise,
            ..
        } => {
            let u = victim(eng, rng, t, HOUR, AFTER_CREDENTIAL_ATTACK, &at_home_city)?;
            plan.users.push(u);
            let n_ips = if distributed {
                rng.random_range(7..=10)
            } else {
                1
            };
            for _ in 0..n_ips {
                plan.ips.push(attack_ip(rng, used, compromise));
            }
        }
        Kind::LockoutWave => {
            let want = rng.random_range(35..=45);
            plan.users = pick_users(
                eng,
                rng,
                want,
                &Pick {
                    t,
                    before: HOUR,
                    after: AFTER_CREDENTIAL_ATTACK,
                    quiet: true,
                    accept: &at_home_city,
                },
            );
            if plan.users.len() < want {
                release(eng, &plan.users, t, Some((HOUR, AFTER_CREDENTIAL_ATTACK)));
                return None;
            }
            plan.ips.push(attack_ip(rng, used, false));
        }
        Kind::ImpossibleTravel { .. } | Kind::NewDeviceGeo { .. } => {
            let new_geo = matches!(kind, Kind::NewDeviceGeo { .. });
            let t = if new_geo {
                // After the learning period of the first two days.
                let lo = eng.cfg.start_ms + 2 * DAY + 2 * HOUR;
                let hi = eng.cfg.start_ms + eng.cfg.days as i64 * DAY - 6 * HOUR;
                if hi <= lo {
                    return None;
                }
                rng.random_range(lo..hi)
            } else {
                t
            };
            plan.t = t;
            let start_dow = eng.cfg.start_ms.div_euclid(DAY) + 3;
            // The victim's office decides which places are far enough; try a few victims.
            for _ in 0..200 {
                let u = rng.random_range(0..eng.pop.people.len());
                let home = eng.pop.people[u].office;
                // A country the user's VPN may already have shown is not new.
                let exit = eng.pop.people[u].vpn_exit;
                let exit_country = OFFICES.iter().find(|o| o.vpn == exit).map(|o| o.country);
                let fars: Vec<usize> = (0..OFFICES.len())
                    .filter(|&o| {
                        let km = distance_km(&OFFICES[home], &OFFICES[o]);
                        if new_geo {
                            OFFICES[o].country != OFFICES[home].country
                                && Some(OFFICES[o].country) != exit_country
                                && km < 9000.0
                        } else {
                            (2000.0..9000.0).contains(&km)
                        }
                    })
                    .collect();
                if fars.is_empty() {
                    continue;
                }
                let far = fars[rng.random_range(0..fars.len())];
                // Quiet long enough that the victim's own sign-ins before and after are
                // reachable from the far place at airliner speed.
                let km = distance_km(&OFFICES[home], &OFFICES[far]);
                let travel = (km / 600.0 * HOUR as f64) as i64 + HOUR;
                let (before, after) = if new_geo {
                    (travel, travel)
                } else {
                    (2 * HOUR, travel + HOUR)
                };
                let day = eng.pop.local_day(u, t);
                let place = eng.pop.place(u, day);
                let p = &eng.pop.people[u];
                // The jump is measured from where the victim is: not a VPN hub elsewhere. A new
                // device and country is judged once the profile learned: two days after the
                // first working morning, in the victim's own clock (kept free of incidents that
                // would keep the user quiet then).
                let d0 = (0..7)
                    .find(|&d| (start_dow + d).rem_euclid(7) < 5)
                    .unwrap_or(0);
                let first_day = eng.cfg.start_ms + d0 * DAY - p.offset();
                if !on_own_network(p, place)
                    || p.is_busy(day)
                    || p.is_quiet(t - before - HOUR, t + after + HOUR)
                    || (new_geo
                        && (t < first_day + 2 * DAY + 12 * HOUR
                            || p.is_busy(d0)
                            || p.is_quiet(first_day, first_day + DAY)))
                {
                    continue;
                }
                let p = &mut eng.pop.people[u];
                p.busy.push(day);
                p.quiet.push((t - before, t + after));
                if new_geo {
                    p.busy.push(d0);
                }
                plan.users.push(u);
                plan.kind = if new_geo {
                    Kind::NewDeviceGeo { far }
                } else {
                    Kind::ImpossibleTravel { far }
                };
                return Some(plan);
            }
            return None;
        }
        Kind::RiskBurst => {
            let u = victim(eng, rng, t, HOUR, 2 * HOUR, &at_home_city)?;
            plan.users.push(u);
            plan.ips.push(attack_ip(rng, used, true));
        }
        Kind::AnonLogin => {
            let u = victim(eng, rng, t, 2 * HOUR, 2 * HOUR, &at_home_city)?;
            plan.users.push(u);
            let span = crate::world::USER_ANON[rng.random_range(0..crate::world::USER_ANON.len())];
            plan.ips.push(span.nth(rng.random_range(0..span.len())));
        }
        Kind::RiskWave => {
            let want = rng.random_range(28..=40);
            plan.users = pick_users(
                eng,
                rng,
                want,
                &Pick {
                    t,
                    before: 0,
                    after: 0,
                    quiet: false,
                    accept: &|p, pl| p.factor != Factor::Webauthn && at_home_city(p, pl),
                },
            );
            if plan.users.len() < want {
                release(eng, &plan.users, t, None);
                return None;
            }
        }
        Kind::Outage => {
            // Mid-morning in the Asia-Pacific offices, where most of the workforce sits.
            let day = (t - eng.cfg.start_ms).div_euclid(DAY);
            plan.t = eng.cfg.start_ms + day * DAY + HOUR + rng.random_range(0..4 * 60) * MIN;
            let want = rng.random_range(22..=35);
            let mut per_ip: std::collections::BTreeMap<IpAddr, usize> = Default::default();
            let candidates = pick_users(
                eng,
                rng,
                want * 2,
                &Pick {
                    t: plan.t,
                    before: 0,
                    after: 0,
                    quiet: false,
                    accept: &|p, pl| p.factor == Factor::Push && at_home_city(p, pl),
                },
            );
            // At most 3 users behind one address: an outage hits users everywhere, not one site.
            // The candidates left out are free again.
            let mut unused = Vec::new();
            for u in candidates {
                let day = eng.pop.local_day(u, plan.t);
                let Some(ip) = eng.pop.ip(u, day, false) else {
                    unused.push(u);
                    continue;
                };
                let n = per_ip.entry(ip).or_default();
                if *n < 3 && plan.users.len() < want {
                    *n += 1;
                    plan.users.push(u);
                } else {
                    unused.push(u);
                }
            }
            release(eng, &unused, plan.t, None);
            if plan.users.len() < 22 {
                release(eng, &plan.users, plan.t, None);
                return None;
            }
        }
        Kind::NetworkWave => {
            // A weekday morning in one office, behind one of its egress addresses.
            let start_dow = (eng.cfg.start_ms.div_euclid(DAY) + 3).rem_euclid(7);
            let weekdays: Vec<i64> = (0..eng.cfg.days as i64)
                .filter(|d| (start_dow + d) % 7 < 5)
                .collect();
            if weekdays.is_empty() || eng.pop.people.is_empty() {
                return None;
            }
            let day = weekdays[rng.random_range(0..weekdays.len())];
            let seed_user = rng.random_range(0..eng.pop.people.len());
            let (office, egress) = (
                eng.pop.people[seed_user].office,
                eng.pop.people[seed_user].egress,
            );
            plan.t = eng
                .pop
                .utc(seed_user, day, 9 * HOUR + rng.random_range(0..120) * MIN);
            let want = rng.random_range(5..=15);
            let mut chosen = pick_users(
                eng,
                rng,
                want,
                &Pick {
                    t: plan.t,
                    before: 0,
                    after: 0,
                    quiet: false,
                    accept: &|p, pl| {
                        p.office == office
                            && p.egress == egress
                            && p.factor == Factor::Push
                            && pl == Place::Office
                            && !p.traveller()
                    },
                },
            );
            if chosen.len() < 5 {
                // Too few people behind that address: give the days back.
                release(eng, &chosen, plan.t, None);
                return None;
            }
            chosen.shuffle(rng);
            plan.users = chosen;
            plan.ips.push(egress);
        }
        Kind::BenignLockout => {
            let u = victim(eng, rng, t, 10 * MIN, 3 * HOUR, &|p, pl| {
                p.factor != Factor::Webauthn && on_own_network(p, pl)
            })?;
            plan.users.push(u);
        }
        Kind::SlowFatigue { .. } => {
            // The campaign lasts up to 70 min, and the approval comes minutes after it.
            let u = victim(eng, rng, t, HOUR, 3 * HOUR, &|p, pl| {
                p.factor == Factor::Push && at_home_city(p, pl)
            })?;
            plan.users.push(u);
            plan.ips.push(attack_ip(rng, used, true));
        }
        Kind::CaseBruteForce => {
            let u = victim(eng, rng, t, HOUR, AFTER_CREDENTIAL_ATTACK, &at_home_city)?;
            plan.users.push(u);
            plan.ips.push(attack_ip(rng, used, false));
        }
        Kind::OneTrySpray { compromise } => {
            // One pass over the directory the attacker enumerated: 50–150 accounts (at most
            // two in five of a small tenant), and never fewer than 40 (the rule's 20, doubled).
            let want = rng.random_range(50..=150).min(eng.pop.people.len() * 2 / 5);
            if want < 40 {
                return None;
            }
            // Victims stay quiet over the pass (at most 60 min): a victim's own sign-in right
            // after the attacker's wrong password would read as the victim's own typo.
            let (before, after) = (15 * MIN, 75 * MIN);
            let mut users = Vec::new();
            if compromise {
                // The account whose password was right: quiet until the attacker comes back.
                let u = victim(eng, rng, t, before, AFTER_CREDENTIAL_ATTACK, &at_home_city)?;
                users.push(u);
            }
            let rule = Pick {
                t,
                before,
                after,
                quiet: true,
                accept: &at_home_city,
            };
            let rest = pick_users(eng, rng, want - users.len(), &rule);
            users.extend(rest);
            if users.len() < 40 {
                if compromise {
                    release(eng, &users[..1], t, Some((before, AFTER_CREDENTIAL_ATTACK)));
                }
                release(eng, &users[compromise as usize..], t, Some((before, after)));
                return None;
            }
            plan.users = users;
            plan.ips.push(attack_ip(rng, used, compromise));
        }
        Kind::AsnSpray => {
            let want = rng.random_range(30..=60).min(eng.pop.people.len() * 2 / 5);
            if want < 20 {
                return None;
            }
            // The spray lasts up to 2 h.
            let (before, after) = (15 * MIN, 135 * MIN);
            let rule = Pick {
                t,
                before,
                after,
                quiet: true,
                accept: &at_home_city,
            };
            plan.users = pick_users(eng, rng, want, &rule);
            if plan.users.len() < 20 {
                release(eng, &plan.users, t, Some((before, after)));
                return None;
            }
            // A fresh address of the proxy pool for every try.
            while plan.ips.len() < plan.users.len() {
                let ip = SPRAY_POOL.nth(rng.random_range(0..SPRAY_POOL.len()));
                if used.insert(ip) {
                    plan.ips.push(ip);
                }
            }
        }
        Kind::OfficeTypos => {
            // A weekday morning after a password change: several colleagues behind one egress
            // address type the old password first.
            let day = random_weekday(eng, rng)?;
            let seed_user = rng.random_range(0..eng.pop.people.len());
            let (office, egress) = (
                eng.pop.people[seed_user].office,
                eng.pop.people[seed_user].egress,
            );
            plan.t = office_time(eng, office, day, 8 * HOUR + rng.random_range(30..120) * MIN);
            let want = rng.random_range(6..=10);
            // Quiet over the 40 min of sign-ins: the typo session is their own sign-in then.
            let chosen = pick_users(
                eng,
                rng,
                want,
                &Pick {
                    t: plan.t,
                    before: 0,
                    after: 40 * MIN,
                    quiet: true,
                    accept: &|p, pl| {
                        p.office == office
                            && p.egress == egress
                            && p.factor != Factor::Webauthn
                            && pl == Place::Office
                            && !p.traveller()
                    },
                },
            );
            if chosen.len() < 5 {
                release(eng, &chosen, plan.t, Some((0, 40 * MIN)));
                return None;
            }
            plan.users = chosen;
            plan.ips.push(egress);
        }
        Kind::ApprovedPushes => {
            // Working hours of the user's own office.
            let day = random_weekday(eng, rng)?;
            let office = eng.pop.people[rng.random_range(0..eng.pop.people.len())].office;
            plan.t = office_time(eng, office, day, 9 * HOUR + rng.random_range(30..390) * MIN);
            let u = pick_users(
                eng,
                rng,
                1,
                &Pick {
                    t: plan.t,
                    before: 0,
                    after: 15 * MIN,
                    quiet: true,
                    accept: &|p, pl| {
                        p.office == office && p.factor == Factor::Push && at_home_city(p, pl)
                    },
                },
            );
            plan.users.push(*u.first()?);
        }
    }
    Some(plan)
}

/// Gives back what [`pick_users`] took for an incident at `t` that is not placed after all
/// (or does not need them): the users' busy day, and the quiet window `(before, after)` around
/// `t` when the pick set one.
fn release(eng: &mut Engine<'_>, users: &[usize], t: i64, quiet: Option<(i64, i64)>) {
    for &u in users {
        let d = eng.pop.local_day(u, t);
        let p = &mut eng.pop.people[u];
        p.busy.retain(|&b| b != d);
        if let Some((before, after)) = quiet {
            p.quiet.retain(|&w| w != (t - before, t + after));
        }
    }
}

/// A random weekday (local day index) of the period, if there is one.
fn random_weekday(eng: &Engine<'_>, rng: &mut ChaCha8Rng) -> Option<i64> {
    let start_dow = (eng.cfg.start_ms.div_euclid(DAY) + 3).rem_euclid(7);
    let weekdays: Vec<i64> = (0..eng.cfg.days as i64)
        .filter(|d| (start_dow + d) % 7 < 5)
        .collect();
    if weekdays.is_empty() || eng.pop.people.is_empty() {
        return None;
    }
    Some(weekdays[rng.random_range(0..weekdays.len())])
}

/// UTC instant of local time `local` on local day `day` in office `office`.
fn office_time(eng: &Engine<'_>, office: usize, day: i64, local: i64) -> i64 {
    eng.cfg.start_ms + day * DAY + local - OFFICES[office].utc_offset_min * MIN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GenConfig;

    /// Regression: two provider outages were planned an hour apart on one day; the tenant-wide
    /// rule reports them as one (it holds back repeats for 2 h), so one label could never be
    /// found (hidden while `eval` credited user alerts to tenant-wide labels).
    #[test]
    fn tenant_wide_incidents_of_one_kind_are_hours_apart() {
        for seed in 1..=4 {
            let cfg = GenConfig {
                users: 1000,
                days: 7,
                seed,
                ..GenConfig::default()
            };
            let mut eng = Engine::new(&cfg);
            let plans = plan(&mut eng);
            let of = |f: fn(&Kind) -> bool| -> Vec<i64> {
                plans.iter().filter(|p| f(&p.kind)).map(|p| p.t).collect()
            };
            for (name, times) in [
                ("outage", of(|k| *k == Kind::Outage)),
                ("lockout wave", of(|k| *k == Kind::LockoutWave)),
                ("risk wave", of(|k| *k == Kind::RiskWave)),
                (
                    "multi-source spray",
                    of(|k| matches!(k, Kind::Spray { multi: true, .. })),
                ),
            ] {
                assert!(times.len() >= 2, "seed {seed}: {} {name}s", times.len());
                for w in times.windows(2) {
                    assert!(w[1] - w[0] >= 6 * HOUR, "seed {seed}: {name}s at {w:?}");
                }
            }
        }
    }

    /// Regression: a spray, lockout wave or risk wave that found too few free users was
    /// dropped without giving back the ones it had taken, who then stayed busy for the day
    /// and quiet (no sign-ins of their own) for hours; an outage kept the candidates it did
    /// not need busy.
    #[test]
    fn users_taken_only_by_placed_incidents() {
        // Small tenants cannot hold the many-account incidents: most of those are dropped.
        for (users, days, seed) in [(30, 2, 1), (60, 3, 2), (150, 2, 3)] {
            let cfg = GenConfig {
                users,
                days,
                seed,
                ..GenConfig::default()
            };
            let mut eng = Engine::new(&cfg);
            let plans = plan(&mut eng);
            for (u, p) in eng.pop.people.iter().enumerate() {
                let mine: Vec<&Plan> = plans.iter().filter(|pl| pl.users.contains(&u)).collect();
                for &(from, to) in &p.quiet {
                    assert!(
                        mine.iter().any(|pl| from <= pl.t && pl.t <= to),
                        "{users} users: user {u} quiet over {from}..{to} for no incident"
                    );
                }
                for &d in &p.busy {
                    // A new-device-and-country victim's first day is kept free for learning.
                    let planned = mine.iter().any(|pl| {
                        eng.pop.local_day(u, pl.t) == d
                            || (d == 0 && matches!(pl.kind, Kind::NewDeviceGeo { .. }))
                    });
                    let forced = p.forced.iter().any(|&(fd, _)| fd == d);
                    let laptop = p.laptop.as_ref().is_some_and(|l| l.day == Some(d));
                    assert!(
                        planned || forced || laptop,
                        "{users} users: user {u} busy on day {d} for no incident"
                    );
                }
            }
        }
    }
}
