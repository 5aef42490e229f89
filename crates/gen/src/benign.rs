//! Ordinary days: sign-ins during local working hours, SSO, and the everyday MFA failures of
//! the built-in `triage_*` rules (each labelled `mfa_triage` with its cause class).
//!
//! Margins against the attack rules' default thresholds: a user's own denied/unanswered pushes
//! stay ≤ 3 per day (fatigue fires at 5), password typos ≤ 2 per session and one incident per
//! user-day (brute force fires at 10), and no address fails for more than 3 users within an hour
//! (see [`Engine::may_fail`]). The benign look-alikes of `variants.rs` cross some of these on
//! purpose (colleagues mistyping behind one office egress, ten approved pushes in minutes); they
//! are planned incidents, not everyday noise.

use crate::engine::*;
use crate::label::categories as cat;
use crate::population::{EARLIEST_LOCAL, HOUR, MIN, Place, mix};
use crate::world::{AUTHENTICATORS, OFFICES};
use authwatch_event::{Factor, RiskLevel};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::net::IpAddr;

/// The incident a session carries, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incident {
    None,
    PasswordTypo,
    OtpTypo,
    WrongMethod,
    PushNotDelivered,
    AuthenticatorError,
    PhoneChange,
    /// A whole day of TOTP failures (handled by [`clock_drift`], not inside one session).
    ClockDrift,
}

impl Incident {
    fn note(self) -> &'static str {
        match self {
            Incident::None => "",
            Incident::PasswordTypo => "user: password typo before MFA",
            Incident::OtpTypo => "user: mistyped or expired one-time code",
            Incident::WrongMethod => "user: wrong MFA method chosen",
            Incident::PushNotDelivered => "device: push notifications not delivered to the phone",
            Incident::AuthenticatorError => "device: security key / biometric error",
            Incident::PhoneChange => "system: device not registered after a phone change",
            Incident::ClockDrift => "device: clock drift on the authenticator (TOTP)",
        }
    }
}

/// One user's local day `day`.
pub(crate) fn user_day(eng: &mut Engine<'_>, u: usize, day: i64, rng: &mut ChaCha8Rng) {
    let place = eng.pop.place(u, day);
    if place == Place::InFlight {
        return;
    }
    let weekday = (eng.cfg.start_ms.div_euclid(crate::population::DAY) + day + 3).rem_euclid(7) < 5;
    let laptop_day = eng.pop.people[u]
        .laptop
        .as_ref()
        .is_some_and(|l| l.day == Some(day));
    let works = if weekday {
        day < 2 || laptop_day || rng.random_bool(0.96)
    } else {
        rng.random_bool(0.06)
    };
    if !works {
        return;
    }
    let Some(ip) = eng.pop.ip(u, day, false) else {
        return;
    };
    let p = &eng.pop.people[u];
    let (start, factor, busy) = (p.start, p.factor, p.is_busy(day));
    let arrival = p.trip.as_ref().is_some_and(|t| t.arrive == day);
    let morning_local = if weekday {
        start + rng.random_range(-20..=20) * MIN
    } else {
        10 * HOUR + rng.random_range(0..360) * MIN
    };
    let morning = eng.pop.utc(u, day, morning_local.max(EARLIEST_LOCAL));

    // At most one deliberate incident per user-day, and none on a day a planned incident
    // already involves the user, so incidents never stack up into attack-like counts.
    let mut incident = Incident::None;
    let mut drift = false;
    let mut risk_block = false;
    let forced = p.forced.iter().find(|(d, _)| *d == day).map(|&(_, i)| i);
    if let Some(forced) = forced {
        // Each class at least once a weekday (see `plan`), whatever the dice say.
        drift = forced == Incident::ClockDrift;
        incident = if drift { Incident::None } else { forced };
    } else if !busy {
        let x: f64 = rng.random();
        match factor {
            Factor::Push => {
                if x < 0.006 {
                    incident = Incident::PushNotDelivered
                } else if x < 0.009 {
                    incident = Incident::PhoneChange
                } else if x < 0.019 {
                    incident = Incident::WrongMethod
                }
            }
            Factor::Totp => {
                if x < 0.006 {
                    drift = true
                } else if x < 0.036 {
                    incident = Incident::OtpTypo
                } else if x < 0.046 {
                    incident = Incident::WrongMethod
                }
            }
            Factor::Sms => {
                if x < 0.02 {
                    incident = Incident::OtpTypo
                }
            }
            _ => {
                if x < 0.025 {
                    incident = Incident::AuthenticatorError
                }
            }
        }
        if incident == Incident::None
            && !drift
            && factor != Factor::Webauthn
            && rng.random_bool(0.02)
        {
            incident = Incident::PasswordTypo;
        }
        if arrival && rng.random_bool(0.5) {
            let utc_day = morning.div_euclid(crate::population::DAY);
            let n = eng.traveller_blocks.entry(utc_day).or_default();
            if *n < 3 {
                *n += 1;
                risk_block = true;
                incident = Incident::None;
                drift = false;
            }
        }
    }
    // A first sign-in from a new place or device is not the user's own to their profile: a
    // failure then is not an everyday mistake (the triage rules rightly hold back), so none is
    // simulated that day.
    let p = &eng.pop.people[u];
    let novel = match place {
        Place::Away(_) => !p.been_abroad,
        Place::Vpn => p.vpn_exit != OFFICES[p.office].vpn && !p.used_hub,
        _ => false,
    } || p
        .laptop
        .as_ref()
        .is_some_and(|l| !l.used && l.from.is_some_and(|f| f <= morning));
    if novel {
        incident = Incident::None;
        drift = false;
    }
    if incident != Incident::None && !eng.may_fail(ip, morning, u) {
        incident = Incident::None;
    }
    if drift && !eng.may_fail(ip, morning, u) {
        drift = false;
    }

    // A loaner laptop handed out on a trip serves from the first working day abroad on.
    let loaner =
        matches!(place, Place::Away(_)) && loaner_comes_into_use(eng, u, eng.pop.utc(u, day, 0));
    let p = &mut eng.pop.people[u];
    match place {
        Place::Away(_) => p.been_abroad = true,
        Place::Vpn if p.vpn_exit != OFFICES[p.office].vpn => p.used_hub = true,
        _ => {}
    }
    if let Some(l) = p
        .laptop
        .as_mut()
        .filter(|l| l.from.is_some_and(|f| f <= morning))
    {
        l.used = true;
    }
    let mut t = morning;
    if risk_block && !eng.pop.people[u].is_quiet(t - 5 * MIN, t + 3 * HOUR) {
        t = traveller_block(eng, u, t, ip, rng);
    }
    let signed_in = if drift && !eng.pop.people[u].is_quiet(t - 5 * MIN, t + 5 * HOUR) {
        clock_drift(eng, u, t, ip, rng)
    } else {
        session(eng, u, t, ip, false, incident, rng.random_range(2..=6), rng)
    };
    // The day's first sign-in: on a weekend the "morning" one may come after lunch.
    let mut first = (morning, signed_in);
    if rng.random_bool(0.6) {
        let local = 13 * HOUR + rng.random_range(0..150) * MIN;
        let t = eng.pop.utc(u, day, local);
        // Some travellers work through the corporate VPN after lunch: their sign-ins then come
        // out at home's VPN egress, half a world from where they signed in this morning. (Not
        // on a loaner's first day: its first sign-in is the one abroad.)
        let p = &eng.pop.people[u];
        let through_vpn = matches!(place, Place::Away(_))
            && p.travel_vpn
            && !loaner
            && mix(eng.cfg.seed ^ 0x7a1 ^ ((u as u64) << 20) ^ day as u64).is_multiple_of(2);
        let ip = if through_vpn { p.vpn_exit } else { ip };
        let done = session(
            eng,
            u,
            t,
            ip,
            false,
            Incident::None,
            rng.random_range(1..=3),
            rng,
        );
        if t < first.0 {
            first = (t, done);
        }
    }
    if loaner {
        // A new device in a new country: what new_device_geo reports, by design.
        let e = eng.user_entity(u);
        let Place::Away(o) = place else {
            unreachable!("a loaner is used abroad")
        };
        let note = format!(
            "benign, reported by design: first sign-in in {} ({}) on a loaner laptop handed out \
             on a business trip; the user confirms device and trip",
            OFFICES[o].country, OFFICES[o].city
        );
        eng.label(cat::NEW_DEVICE_GEO, e, first.0, first.1, note);
    }
    let p = &eng.pop.people[u];
    if p.mobile.is_some() && !matches!(place, Place::Away(_)) && rng.random_bool(0.15) {
        let local = 19 * HOUR + rng.random_range(0..210) * MIN;
        let t = eng.pop.utc(u, day, local);
        if let Some(home) = eng.pop.ip(u, day, true) {
            session(
                eng,
                u,
                t,
                home,
                true,
                Incident::None,
                rng.random_range(1..=2),
                rng,
            );
        }
    }
}

/// One sign-in: primary factor, MFA, a few SSO hops. Returns when the sign-in completed (its
/// second factor passed), or `t0` when the user is kept quiet then.
#[allow(clippy::too_many_arguments)]
pub(crate) fn session(
    eng: &mut Engine<'_>,
    u: usize,
    t0: i64,
    ip: IpAddr,
    mobile: bool,
    incident: Incident,
    apps: usize,
    rng: &mut ChaCha8Rng,
) -> i64 {
    if eng.pop.people[u].is_quiet(t0 - 5 * MIN, t0 + HOUR) {
        return t0;
    }
    let mut a = eng.user_actor(u, ip, t0);
    if let (true, Some(m)) = (mobile, &eng.pop.people[u].mobile) {
        a.client = m.client;
        a.device_id = m.id.clone();
    }
    let factor = eng.pop.people[u].factor;
    let mut t = t0;
    let first_fail = t0;
    // Primary factor.
    if factor == Factor::Webauthn {
        if incident == Incident::AuthenticatorError {
            for _ in 0..rng.random_range(1..=2) {
                eng.emit(t, &a, WEBAUTHN_ERR, "");
                t += rng.random_range(20..90) * 1000;
            }
        }
        eng.emit(t, &a, WEBAUTHN_OK, "");
    } else {
        if incident == Incident::PasswordTypo {
            for _ in 0..rng.random_range(1..=2) {
                eng.emit(t, &a, PW_BAD, "");
                t += rng.random_range(5..40) * 1000;
            }
        }
        eng.emit(t, &a, PW_OK, "");
        t += rng.random_range(3..15) * 1000;
        t = mfa(eng, &a, factor, t, incident, rng);
    }
    let recovered = t;
    if incident != Incident::None {
        let e = eng.user_entity(u);
        eng.label(cat::MFA_TRIAGE, e, first_fail, recovered, incident.note());
    }
    t = sso(eng, &a, u, t, apps, rng);
    if rng.random_bool(0.15) {
        t += rng.random_range(10..120) * MIN;
        eng.emit(t, &a, LOGOFF, "");
    }
    recovered
}

/// The second factor (and its failures). Returns the time of the successful verification.
pub(crate) fn mfa(
    eng: &mut Engine<'_>,
    a: &Actor,
    factor: Factor,
    mut t: i64,
    incident: Incident,
    rng: &mut ChaCha8Rng,
) -> i64 {
    match incident {
        Incident::WrongMethod => {
            let s = if factor == Factor::Totp {
                SMS_MISMATCH
            } else {
                TOTP_MISMATCH
            };
            eng.emit(t, a, s, "");
            t += rng.random_range(10..60) * 1000;
        }
        Incident::PushNotDelivered => {
            for _ in 0..rng.random_range(1..=3) {
                eng.emit(t, a, PUSH_SEND, "");
                t += 60_000;
                eng.emit(t, a, PUSH_TIMEOUT, "");
                t += rng.random_range(5..40) * 1000;
            }
            // The user gives up on the phone's notifications and types the app's code instead.
            eng.emit(t, a, TOTP_OK, "");
            return t;
        }
        Incident::PhoneChange => {
            for _ in 0..rng.random_range(1..=2) {
                eng.emit(t, a, PUSH_UNREGISTERED, "");
                t += rng.random_range(10..60) * 1000;
            }
            // Help desk verifies the caller and resets the old enrollment; the user first tries
            // the push again (nothing enrolled now), then enrolls the new phone.
            t += rng.random_range(10..40) * MIN;
            eng.emit(t, a, RESET_FACTORS, "");
            t += rng.random_range(30..120) * 1000;
            eng.emit(t, a, PUSH_NOT_ENROLLED, "");
            t += rng.random_range(30..120) * 1000;
            let mut phone = a.clone();
            phone.client = &AUTHENTICATORS[rng.random_range(0..AUTHENTICATORS.len())];
            eng.emit(t, &phone, ENROLL_PUSH, "");
            t += rng.random_range(20..90) * 1000;
        }
        _ => {}
    }
    match factor {
        Factor::Push => {
            eng.emit(t, a, PUSH_SEND, "");
            t += rng.random_range(4..25) * 1000;
            eng.emit(t, a, PUSH_OK, "");
        }
        Factor::Sms => {
            eng.emit(t, a, SMS_SEND, "");
            t += rng.random_range(20..60) * 1000;
            if incident == Incident::OtpTypo {
                for _ in 0..rng.random_range(1..=2) {
                    eng.emit(t, a, SMS_BAD, "");
                    t += rng.random_range(10..40) * 1000;
                }
            }
            eng.emit(t, a, SMS_OK, "");
        }
        _ => {
            if incident == Incident::OtpTypo {
                for _ in 0..rng.random_range(1..=2) {
                    eng.emit(t, a, TOTP_BAD, "");
                    t += rng.random_range(10..40) * 1000;
                }
            }
            eng.emit(t, a, TOTP_OK, "");
        }
    }
    t
}

/// SSO hops to the user's applications after a sign-in.
pub(crate) fn sso(
    eng: &mut Engine<'_>,
    a: &Actor,
    u: usize,
    mut t: i64,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> i64 {
    let apps = eng.pop.people[u].apps.len();
    let first = rng.random_range(0..apps);
    for i in 0..n.min(apps) {
        t += rng.random_range(2..(if i == 0 { 30 } else { 900 })) * 1000;
        let app = eng.pop.people[u].apps[(first + i) % apps];
        eng.emit(t, a, SSO, app);
    }
    t
}

/// Puts a traveller's loaner laptop into use from `t`, the start of their first working day
/// abroad; true if it is. A loaner needs the user's profile past its learning period (two days
/// after the first sign-in): earlier, the user keeps the old laptop.
fn loaner_comes_into_use(eng: &mut Engine<'_>, u: usize, t: i64) -> bool {
    let learned = eng.cfg.start_ms + 3 * crate::population::DAY;
    let p = &mut eng.pop.people[u];
    let Some(l) = p.laptop.as_mut().filter(|l| l.abroad && l.from.is_none()) else {
        return false;
    };
    if t < learned {
        p.laptop = None;
        return false;
    }
    l.from = Some(t);
    true
}

/// A traveller's first sign-in abroad is blocked by the risk policy; after a help-desk call
/// the user signs in normally. Returns when the normal sign-in starts.
fn traveller_block(
    eng: &mut Engine<'_>,
    u: usize,
    t: i64,
    ip: IpAddr,
    rng: &mut ChaCha8Rng,
) -> i64 {
    let mut a = eng.user_actor(u, ip, t);
    a.risk = RiskLevel::High;
    if eng.pop.people[u].factor != Factor::Webauthn {
        eng.emit(t, &a, PW_OK, "");
    }
    let s = if rng.random_bool(0.7) {
        RISK_BLOCK
    } else {
        POLICY_DENY
    };
    eng.emit(t + 2000, &a, s, "");
    let e = eng.user_entity(u);
    let resumed = t + rng.random_range(30..90) * MIN;
    eng.label(
        cat::MFA_TRIAGE,
        e,
        t,
        resumed,
        "system: risk policy blocked a traveller",
    );
    resumed
}

/// A phone whose clock drifted: TOTP codes fail in the morning and again later, until the
/// user turns on automatic time and the next code works. Returns when the first sign-in of the
/// day completed.
fn clock_drift(eng: &mut Engine<'_>, u: usize, t0: i64, ip: IpAddr, rng: &mut ChaCha8Rng) -> i64 {
    let a = eng.user_actor(u, ip, t0);
    let mut t = t0;
    eng.emit(t, &a, PW_OK, "");
    for _ in 0..rng.random_range(2..=3) {
        t += rng.random_range(15..50) * 1000;
        eng.emit(t, &a, TOTP_BAD, "");
    }
    // A code at the edge of the drift window finally gets through.
    t += rng.random_range(15..50) * 1000;
    eng.emit(t, &a, TOTP_OK, "");
    let signed_in = t;
    sso(eng, &a, u, t, 2, rng);
    let b = eng.user_actor(u, ip, t);
    t += rng.random_range(120..240) * MIN;
    eng.emit(t, &b, PW_OK, "");
    for _ in 0..rng.random_range(2..=3) {
        t += rng.random_range(15..50) * 1000;
        eng.emit(t, &b, TOTP_BAD, "");
    }
    let c = eng.user_actor(u, ip, t);
    t += rng.random_range(15..40) * MIN;
    eng.emit(t, &c, PW_OK, "");
    t += rng.random_range(10..30) * 1000;
    eng.emit(t, &c, TOTP_OK, "");
    let e = eng.user_entity(u);
    eng.label(cat::MFA_TRIAGE, e, t0, t, Incident::ClockDrift.note());
    sso(eng, &c, u, t, 2, rng);
    signed_in
}
