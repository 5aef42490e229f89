//! The tenant's people: who they are, where they sit, what they sign in with, where they travel.

use crate::world::{
    Client, DESKTOPS, JA_FIRST, JA_LAST, MOBILES, OFFICES, WEST_FIRST, WEST_LAST, distance_km,
};
use authwatch_event::{Factor, Text};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub(crate) const MIN: i64 = 60_000;
pub(crate) const HOUR: i64 = 3_600_000;
pub(crate) const DAY: i64 = 86_400_000;

/// The fastest a benign traveller moves between two sign-ins, km/h: well under the 900 km/h of
/// the impossible-travel rule, since boarding and airports add hours to every flight.
const TRAVEL_KMH: f64 = 600.0;
/// No sign-in starts earlier than this local time (keeps day buckets from overlapping much).
pub(crate) const EARLIEST_LOCAL: i64 = 6 * HOUR;

/// SplitMix64's finalizer: a bijection on u64, so distinct inputs give distinct ids.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `prefix` followed by 16 hex digits of `n`: short enough to stay inline in a [`Text`].
pub(crate) fn hex_id(prefix: &str, n: u64) -> Text {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 24];
    let p = prefix.len().min(8);
    buf[..p].copy_from_slice(&prefix.as_bytes()[..p]);
    for i in 0..16 {
        buf[p + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    Text::new(std::str::from_utf8(&buf[..p + 16]).unwrap_or(prefix))
}

/// One of a user's devices.
#[derive(Debug, Clone)]
pub(crate) struct Dev {
    pub client: &'static Client,
    pub id: Text,
}

/// A laptop that replaces the user's desktop during the period.
#[derive(Debug, Clone)]
pub(crate) struct Laptop {
    pub dev: Dev,
    /// In use from this instant (UTC ms) on; `None` for a loaner until the first sign-in abroad.
    pub from: Option<i64>,
    /// A loaner handed out on a business trip, first used at the first sign-in abroad.
    pub abroad: bool,
    /// The local day a refreshed laptop is handed out, at the office.
    pub day: Option<i64>,
    /// Whether a sign-in used it yet.
    pub used: bool,
}

/// A business trip: `out..arrive` and `leave+1..back` are flight days without sign-ins.
#[derive(Debug, Clone)]
pub(crate) struct Trip {
    pub out: i64,
    pub arrive: i64,
    pub leave: i64,
    pub back: i64,
    pub dest: usize,
}

/// Where a user is on a local day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Office,
    Home,
    Vpn,
    Away(usize),
    InFlight,
}

/// One account.
#[derive(Debug)]
pub(crate) struct Person {
    pub name: Text,
    pub id: Text,
    pub office: usize,
    pub desktop: Dev,
    pub mobile: Option<Dev>,
    /// The Okta Verify app on the phone (used for evening sign-ins on the phone itself).
    pub factor: Factor,
    pub egress: IpAddr,
    pub home: IpAddr,
    /// Share of working days spent at home; `vpn` says whether home days go through the VPN.
    pub wfh: f64,
    pub vpn: bool,
    /// The corporate VPN egress the user's laptop comes out of: the office's own concentrator,
    /// or a regional hub in another country ([`crate::world::Office::vpn_hub`]).
    pub vpn_exit: IpAddr,
    /// A traveller who works through the corporate VPN on some afternoons abroad.
    pub travel_vpn: bool,
    /// A new laptop during the period (a refresh at home, or a loaner on a trip).
    pub laptop: Option<Laptop>,
    /// Whether the user signed in abroad yet, or through a VPN hub in another country: the
    /// first such day is a new place to their profile.
    pub been_abroad: bool,
    pub used_hub: bool,
    /// Local start of the working day, ms after midnight.
    pub start: i64,
    pub apps: Vec<&'static str>,
    pub trip: Option<Trip>,
    /// Windows without any of the user's own ordinary sign-ins (an incident involving them is
    /// being simulated: an attack on them, or a benign look-alike that stands for their sign-in).
    pub quiet: Vec<(i64, i64)>,
    /// Local days on which a planned incident already involves the user.
    pub busy: Vec<i64>,
    /// Everyday incidents scheduled for a local day (so that every class occurs).
    pub forced: Vec<(i64, crate::benign::Incident)>,
}

impl Person {
    pub fn offset(&self) -> i64 {
        OFFICES[self.office].utc_offset_min * MIN
    }

    pub fn traveller(&self) -> bool {
        self.trip.is_some()
    }

    pub fn is_quiet(&self, from: i64, to: i64) -> bool {
        self.quiet.iter().any(|&(a, b)| from <= b && to >= a)
    }

    pub fn is_busy(&self, day: i64) -> bool {
        self.busy.contains(&day)
    }
}

/// The whole tenant.
pub(crate) struct Population {
    pub people: Vec<Person>,
    pub names: BTreeSet<Text>,
    pub seed: u64,
    pub start_ms: i64,
}

impl Population {
    pub fn build(
        users: usize,
        days: u32,
        seed: u64,
        start_ms: i64,
        domain: &str,
        rng: &mut ChaCha8Rng,
    ) -> Population {
        let total_weight: u32 = OFFICES.iter().map(|o| o.weight).sum();
        let mut names = BTreeSet::new();
        let mut next_suffix = BTreeMap::new();
        let mut people = Vec::with_capacity(users);
        // Office sizes first, so NAT pools can be sized to about 40 users per address.
        let offices: Vec<usize> = (0..users)
            .map(|_| {
                let mut w = rng.random_range(0..total_weight);
                OFFICES
                    .iter()
                    .position(|o| {
                        if w < o.weight {
                            true
                        } else {
                            w -= o.weight;
                            false
                        }
                    })
                    .unwrap_or(0)
            })
            .collect();
        let mut per_office = vec![0u32; OFFICES.len()];
        for &o in &offices {
            per_office[o] += 1;
        }
        let mut seen_in_office = vec![0u32; OFFICES.len()];
        for (idx, &office) in offices.iter().enumerate() {
            let o = &OFFICES[office];
            let name = unique_name(rng, &mut names, &mut next_suffix, domain, office);
            let pool = per_office[office].div_ceil(40).clamp(2, o.egress.len());
            let slot = seen_in_office[office] % pool;
            seen_in_office[office] += 1;
            let factor = match rng.random_range(0..100) {
                0..60 => Factor::Push,
                60..80 => Factor::Totp,
                80..88 => Factor::Sms,
                _ => Factor::Webauthn,
            };
            let desktop = Dev {
                client: &DESKTOPS[rng.random_range(0..DESKTOPS.len())],
                id: hex_id("guo", mix(seed ^ 0xd3 ^ ((idx as u64) << 2))),
            };
            let mobile = rng.random_bool(0.6).then(|| Dev {
                client: &MOBILES[rng.random_range(0..MOBILES.len())],
                id: hex_id("guo", mix(seed ^ 0xd3 ^ (((idx as u64) << 2) | 1))),
            });
            let wfh = match rng.random_range(0..10) {
                0..6 => 0.0,
                6..9 => 0.2,
                _ => 0.8,
            };
            let n_apps = rng.random_range(3..=6);
            let mut apps: Vec<&'static str> = Vec::with_capacity(n_apps);
            while apps.len() < n_apps {
                let a = crate::world::APPS[rng.random_range(0..crate::world::APPS.len())];
                if !apps.contains(&a) {
                    apps.push(a);
                }
            }
            // Office 365 is everyone's first stop in the morning.
            if !apps.contains(&"Office 365") {
                apps[0] = "Office 365";
            }
            let start = 7 * HOUR + 30 * MIN + rng.random_range(0..150) * MIN;
            let trip = if days >= 4 && rng.random_bool(0.07) {
                plan_trip(rng, office, days as i64)
            } else {
                None
            };
            people.push(Person {
                name,
                id: hex_id("00u", mix(seed ^ 0x75 ^ ((idx as u64) << 8))),
                office,
                desktop,
                mobile,
                factor,
                egress: o.egress.nth(slot),
                home: o.home.nth(rng.random_range(0..o.home.len())),
                wfh,
                vpn: rng.random_bool(0.5),
                vpn_exit: o.vpn,
                travel_vpn: false,
                laptop: None,
                been_abroad: false,
                used_hub: false,
                start,
                apps,
                trip,
                quiet: Vec::new(),
                busy: Vec::new(),
                forced: Vec::new(),
            });
        }
        Population {
            people,
            names,
            seed,
            start_ms,
        }
    }

    /// Gives users the geography real sign-in logs have besides trips, which a detector must
    /// not mistake for an attack (or, for a loaner laptop abroad, reports by design). Drawn from
    /// its own stream `rng`, so the people themselves stay as [`Population::build`] made them.
    /// - Half the VPN users of an office with a regional hub come out of the hub's
    ///   concentrator, in another country: a naive geo check sees them jump between countries.
    /// - Three travellers in four (all who use the VPN at home, half the others) work through
    ///   it abroad on some afternoons: from the visited office in the morning, from home's VPN
    ///   egress after lunch.
    /// - 2 % of the users who stay home get a new laptop at the office on a weekday after the
    ///   learning period: a new device in a known country (nothing else is planned for them that
    ///   day, see `benign::user_day`).
    /// - 15 % of the travellers who reach a country their sign-ins never came from, after the
    ///   learning period, get a loaner laptop there (at least one such traveller when there is
    ///   one), first used at the first sign-in abroad: a new device in a new country, as
    ///   new_device_geo is meant to report (and labelled so).
    pub fn add_geo_noise(&mut self, days: u32, rng: &mut ChaCha8Rng) {
        let start_dow = self.start_ms.div_euclid(DAY) + 3;
        let weekday = |d: i64| (start_dow + d).rem_euclid(7) < 5;
        // Weekdays after the learning period, when a new laptop may be handed out.
        let weekdays: Vec<i64> = (2..days as i64).filter(|&d| weekday(d)).collect();
        let mut loaners: Vec<(f64, usize, Dev)> = Vec::new();
        for (u, p) in self.people.iter_mut().enumerate() {
            // The same draws for everyone, used or not: one person's traits never shift
            // another's.
            let (hub, abroad_vpn, laptop): (f64, f64, f64) =
                (rng.random(), rng.random(), rng.random());
            let client = &DESKTOPS[rng.random_range(0..DESKTOPS.len())];
            let pick = rng.random_range(0..weekdays.len().max(1));
            let o = &OFFICES[p.office];
            let mut exit_country = o.country;
            if let (true, Some(h)) = (p.vpn, o.vpn_hub)
                && hub < 0.5
            {
                p.vpn_exit = OFFICES[h].vpn;
                exit_country = OFFICES[h].country;
            }
            p.travel_vpn = p.traveller() && (p.vpn || abroad_vpn < 0.5);
            let dev = Dev {
                client,
                id: hex_id("guo", mix(self.seed ^ 0x1a9 ^ ((u as u64) << 2))),
            };
            match &p.trip {
                // Arriving on local day 4 or later (past the learning period in every office),
                // and staying over a weekday (a working day abroad).
                Some(trip)
                    if OFFICES[trip.dest].country != o.country
                        && OFFICES[trip.dest].country != exit_country
                        && trip.arrive >= 4
                        && (trip.arrive..=trip.leave).any(weekday) =>
                {
                    loaners.push((laptop, u, dev));
                }
                None if !weekdays.is_empty() && laptop < 0.02 => {
                    let day = weekdays[pick];
                    p.laptop = Some(Laptop {
                        dev,
                        from: Some(self.start_ms + day * DAY - p.offset()),
                        abroad: false,
                        day: Some(day),
                        used: false,
                    });
                    // Nothing else planned for the user that day.
                    p.busy.push(day);
                }
                _ => {}
            }
        }
        let least = loaners
            .iter()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|&(_, u, _)| u);
        for (draw, u, dev) in loaners {
            if draw < 0.15 || least == Some(u) {
                self.people[u].laptop = Some(Laptop {
                    dev,
                    from: None,
                    abroad: true,
                    day: None,
                    used: false,
                });
            }
        }
    }

    /// Where user `u` is on their local day `day`.
    pub fn place(&self, u: usize, day: i64) -> Place {
        let p = &self.people[u];
        if let Some(t) = &p.trip {
            if (day >= t.out && day < t.arrive) || (day > t.leave && day < t.back) {
                return Place::InFlight;
            }
            if day >= t.arrive && day <= t.leave {
                return Place::Away(t.dest);
            }
        }
        // First two days always in the office: that is the detectors' learning period. A new
        // laptop is handed out at the office too.
        if day < 2 || p.wfh == 0.0 || p.laptop.as_ref().is_some_and(|l| l.day == Some(day)) {
            return Place::Office;
        }
        let h = mix(self.seed ^ 0x3fa ^ ((u as u64) << 20) ^ (day as u64));
        if (h % 1000) as f64 / 1000.0 < p.wfh {
            if p.vpn { Place::Vpn } else { Place::Home }
        } else {
            Place::Office
        }
    }

    /// The address user `u` signs in from on local day `day` (`None` while flying).
    pub fn ip(&self, u: usize, day: i64, evening: bool) -> Option<IpAddr> {
        let p = &self.people[u];
        match self.place(u, day) {
            Place::InFlight => None,
            Place::Away(o) => Some(OFFICES[o].egress.nth(u as u32)),
            _ if evening => Some(p.home),
            Place::Office => Some(p.egress),
            Place::Home => Some(p.home),
            Place::Vpn => Some(p.vpn_exit),
        }
    }

    /// User `u`'s local day index at UTC instant `t`.
    pub fn local_day(&self, u: usize, t: i64) -> i64 {
        (t - self.start_ms + self.people[u].offset()).div_euclid(DAY)
    }

    /// UTC instant of local time `local` (ms after midnight) on user `u`'s local day `day`,
    /// in the clock of wherever the user is that day (a traveller keeps local hours abroad).
    pub fn utc(&self, u: usize, day: i64, local: i64) -> i64 {
        let offset = match self.place(u, day) {
            Place::Away(o) => OFFICES[o].utc_offset_min * MIN,
            _ => self.people[u].offset(),
        };
        self.start_ms + day * DAY + local - offset
    }
}

fn unique_name(
    rng: &mut ChaCha8Rng,
    names: &mut BTreeSet<Text>,
    next_suffix: &mut BTreeMap<(&'static str, &'static str), u32>,
    domain: &str,
    office: usize,
) -> Text {
    // Mostly Japanese names in Asia-Pacific offices, mostly western elsewhere: the product's
    // first customers are Japanese companies with overseas branches.
    let ja_share = if OFFICES[office].utc_offset_min >= 8 * 60 {
        0.6
    } else {
        0.25
    };
    let (first, last) = if rng.random_bool(ja_share) {
        (JA_FIRST, JA_LAST)
    } else {
        (WEST_FIRST, WEST_LAST)
    };
    let f = first[rng.random_range(0..first.len())];
    let l = last[rng.random_range(0..last.len())];
    // Resume where this first/last pair left off: probing from 1 each time made large
    // populations quadratic (a million users share a few hundred pairs). Same names as before.
    let n_slot = next_suffix.entry((f, l)).or_insert(1);
    let mut n = *n_slot;
    loop {
        let candidate = if n == 1 {
            format!("{f}.{l}@{domain}")
        } else {
            format!("{f}.{l}{n}@{domain}")
        };
        let t = Text::from(candidate);
        n += 1;
        if names.insert(t.clone()) {
            *n_slot = n;
            return t;
        }
    }
}

/// The first local day `>= from` on which a user can sign in at `b`, having signed in at `a`
/// up to local midnight of day `last`, without ever moving faster than [`TRAVEL_KMH`].
pub(crate) fn earliest_day(last: i64, a: usize, b: usize) -> i64 {
    let (oa, ob) = (&OFFICES[a], &OFFICES[b]);
    let km = distance_km(oa, ob);
    let mut y = last + 1;
    loop {
        let gap = (y - last - 1) * DAY + EARLIEST_LOCAL - ob.utc_offset_min * MIN
            + oa.utc_offset_min * MIN;
        if gap > 0 && km / (gap as f64 / HOUR as f64) <= TRAVEL_KMH {
            return y;
        }
        y += 1;
    }
}

fn plan_trip(rng: &mut ChaCha8Rng, office: usize, days: i64) -> Option<Trip> {
    let dest = (office + rng.random_range(1..OFFICES.len())) % OFFICES.len();
    // Trips start after the learning period so the visited country is never the first one seen.
    let out = rng.random_range(2..days.max(3));
    let arrive = earliest_day(out - 1, office, dest);
    let leave = arrive + rng.random_range(0..3);
    let back = earliest_day(leave, dest, office);
    (leave < days).then_some(Trip {
        out,
        arrive,
        leave,
        back,
        dest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ids_are_unique_and_inline() {
        let a = hex_id("ev", mix(1));
        assert_eq!(a.len(), 18);
        assert_ne!(a, hex_id("ev", mix(2)));
    }

    #[test]
    fn trips_never_exceed_travel_speed() {
        for (a, oa) in OFFICES.iter().enumerate() {
            for (b, ob) in OFFICES.iter().enumerate() {
                let y = earliest_day(3, a, b);
                let gap_h = ((y - 4) * DAY + EARLIEST_LOCAL - ob.utc_offset_min * MIN
                    + oa.utc_offset_min * MIN) as f64
                    / HOUR as f64;
                assert!(distance_km(oa, ob) / gap_h <= TRAVEL_KMH);
            }
        }
    }

    #[test]
    fn names_are_unique_emails() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let pop = Population::build(2000, 3, 1, 0, "example.co.jp", &mut rng);
        assert_eq!(pop.names.len(), 2000);
        assert!(
            pop.people
                .iter()
                .all(|p| p.name.ends_with("@example.co.jp"))
        );
    }
}
