//! The static world the generator draws from: offices, address ranges, names, devices, apps.
//!
//! Every address comes from a network of MaxMind's public test databases (the `test-data/`
//! directory of the MaxMind-DB repository, copied to `data/geo/`; see `data/geo/README.md`), so
//! that geo, ASN and anonymizer enrichment built on those databases resolves them. The
//! coordinates below are the ones `GeoIP2-City-Test.mmdb` returns for each network.

use authwatch_event::DeviceType;
use std::net::{IpAddr, Ipv4Addr};

/// An inclusive IPv4 address interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub first: u32,
    pub last: u32,
}

impl Span {
    pub const fn new(a: [u8; 4], b: [u8; 4]) -> Span {
        Span {
            first: u32::from_be_bytes(a),
            last: u32::from_be_bytes(b),
        }
    }

    pub const fn one(a: [u8; 4]) -> Span {
        Span::new(a, a)
    }

    pub fn len(&self) -> u32 {
        self.last - self.first + 1
    }

    /// The `i`-th address of the span (wrapping, so any index is valid).
    pub fn nth(&self, i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self.first + i % self.len()))
    }

    #[cfg(test)]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let n = u32::from(v4);
                n >= self.first && n <= self.last
            }
            IpAddr::V6(_) => false,
        }
    }
}

/// One office: where its users sit, its clock and its addresses.
///
/// Offsets are fixed (no daylight saving time): the generator needs a stable local working day
/// per office, and the test databases carry no DST-dependent data anyway.
#[derive(Debug)]
pub(crate) struct Office {
    pub city: &'static str,
    pub country: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Fixed offset from UTC, minutes.
    pub utc_offset_min: i64,
    /// The office's NAT egress pool; users behind it are spread over the first addresses.
    pub egress: Span,
    /// The corporate VPN concentrator's egress address (remote workers on VPN).
    pub vpn: IpAddr,
    /// The office whose concentrator serves some of this office's VPN users instead (a
    /// regional hub, in another country): their sign-ins over the VPN resolve there.
    pub vpn_hub: Option<usize>,
    /// Residential / mobile addresses of the same city (home workers, evening sign-ins).
    pub home: Span,
    /// Relative share of the workforce.
    pub weight: u32,
}

/// The offices, one per place the city test database resolves (no Tokyo exists there).
/// Remote access of the Manila and Changchun offices is partly served by the Singapore
/// concentrator (a regional hub, as companies with small branch offices often run one).
/// Sources: GeoIP2-City-Test.mmdb networks 89.160.20.112/28 + 89.160.20.128/25 (Linköping),
/// 216.160.83.56/29 (Milton), 214.78.120.0/22 (San Diego), 214.0.0.0/24 (Singapore),
/// 214.0.1.0/24 (Melbourne), 175.16.199.0/24 (Changchun), 202.196.224.0/20 (Philippines,
/// country-level only).
pub(crate) const OFFICES: &[Office] = &[
    Office {
        city: "Singapore",
        country: "SG",
        lat: 1.336,
        lon: 103.7716,
        utc_offset_min: 8 * 60,
        egress: Span::new([214, 0, 0, 1], [214, 0, 0, 30]),
        vpn: IpAddr::V4(Ipv4Addr::new(214, 0, 0, 40)),
        vpn_hub: None,
        home: Span::new([214, 0, 0, 64], [214, 0, 0, 254]),
        weight: 20,
    },
    Office {
        city: "Manila",
        country: "PH",
        lat: 13.0,
        lon: 122.0,
        utc_offset_min: 8 * 60,
        egress: Span::new([202, 196, 224, 1], [202, 196, 224, 30]),
        vpn: IpAddr::V4(Ipv4Addr::new(202, 196, 224, 40)),
        vpn_hub: Some(0),
        home: Span::new([202, 196, 225, 1], [202, 196, 239, 254]),
        weight: 16,
    },
    Office {
        city: "Changchun",
        country: "CN",
        lat: 43.88,
        lon: 125.3228,
        utc_offset_min: 8 * 60,
        egress: Span::new([175, 16, 199, 1], [175, 16, 199, 30]),
        vpn: IpAddr::V4(Ipv4Addr::new(175, 16, 199, 40)),
        vpn_hub: Some(0),
        home: Span::new([175, 16, 199, 64], [175, 16, 199, 254]),
        weight: 12,
    },
    Office {
        city: "Melbourne",
        country: "AU",
        lat: -37.8159,
        lon: 144.9669,
        utc_offset_min: 10 * 60,
        egress: Span::new([214, 0, 1, 1], [214, 0, 1, 30]),
        vpn: IpAddr::V4(Ipv4Addr::new(214, 0, 1, 40)),
        vpn_hub: None,
        home: Span::new([214, 0, 1, 64], [214, 0, 1, 254]),
        weight: 14,
    },
    Office {
        city: "Linköping",
        country: "SE",
        lat: 58.4167,
        lon: 15.6167,
        utc_offset_min: 60,
        egress: Span::new([89, 160, 20, 113], [89, 160, 20, 119]),
        vpn: IpAddr::V4(Ipv4Addr::new(89, 160, 20, 120)),
        vpn_hub: None,
        home: Span::new([89, 160, 20, 129], [89, 160, 20, 254]),
        weight: 14,
    },
    Office {
        city: "San Diego",
        country: "US",
        lat: 32.7405,
        lon: -117.0935,
        utc_offset_min: -8 * 60,
        egress: Span::new([214, 78, 120, 1], [214, 78, 120, 30]),
        vpn: IpAddr::V4(Ipv4Addr::new(214, 78, 120, 40)),
        vpn_hub: None,
        home: Span::new([214, 78, 121, 1], [214, 78, 123, 254]),
        weight: 16,
    },
    Office {
        city: "Milton",
        country: "US",
        lat: 47.2513,
        lon: -122.3149,
        utc_offset_min: -8 * 60,
        egress: Span::new([216, 160, 83, 57], [216, 160, 83, 59]),
        vpn: IpAddr::V4(Ipv4Addr::new(216, 160, 83, 60)),
        vpn_hub: None,
        home: Span::new([216, 160, 83, 61], [216, 160, 83, 62]),
        weight: 8,
    },
];

/// Anonymizers that users themselves choose (consumer VPN, Tor browser). Source:
/// GeoIP2-Anonymous-IP-Test.mmdb (81.2.69.0/24 carries every flag and resolves to London in the
/// city database; 6.1.0.0/31 VPN, 6.1.0.2 hosting, 6.1.0.3 public proxy, 6.1.0.4 residential
/// proxy, 1.124.213.1 Tor exit) and the upper halves of the Tor / hosting / proxy networks.
/// Disjoint from [`ATTACK_ANON`] so that a user's own anonymized sign-in is never "a success
/// from an attacking IP".
pub(crate) const USER_ANON: &[Span] = &[
    Span::new([81, 2, 69, 142], [81, 2, 69, 143]),
    Span::new([81, 2, 69, 144], [81, 2, 69, 159]),
    Span::new([81, 2, 69, 160], [81, 2, 69, 191]),
    Span::new([81, 2, 69, 192], [81, 2, 69, 207]),
    Span::new([6, 1, 0, 0], [6, 1, 0, 4]),
    Span::one([1, 124, 213, 1]),
    Span::new([65, 4, 0, 0], [65, 7, 255, 255]),
    Span::new([71, 160, 223, 128], [71, 160, 223, 255]),
    Span::new([186, 30, 236, 128], [186, 30, 236, 255]),
];

/// Attacker anonymizers: Tor (65.0.0.0/13, lower half), hosting (71.160.223.0/24, lower half),
/// public proxy (186.30.236.0/24, lower half). None resolves in the city or ASN test
/// databases, so a success from them only ever means "anonymizer", never a geo jump.
pub(crate) const ATTACK_ANON: &[Span] = &[
    Span::new([65, 0, 0, 0], [65, 3, 255, 255]),
    Span::new([71, 160, 223, 0], [71, 160, 223, 127]),
    Span::new([186, 30, 236, 0], [186, 30, 236, 127]),
];

/// Attacker infrastructure in AS721 (214.0.0.0/8 in GeoLite2-ASN-Test.mmdb) away from every
/// network the city database knows: attacker hosting with a known ASN but no location.
pub(crate) const ATTACK_AS721: Span = Span::new([214, 100, 0, 0], [214, 149, 255, 255]);
/// The part of AS721 that rotating-IP stuffing draws from, apart from [`ATTACK_AS721`] so that
/// an ASN-keyed view of a rotating campaign holds that campaign only.
pub(crate) const ATTACK_ROTATING: Span = Span::new([214, 150, 0, 0], [214, 199, 255, 255]);
/// The ASN of [`ATTACK_AS721`].
pub(crate) const ATTACK_ASN: u32 = 721;
/// A proxy pool in one hosting network that a slow distributed spray rotates over, one fresh
/// address per try: 38.64.0.0/13, AS174 (Cogent) in GeoLite2-ASN-Test.mmdb, unknown to the city
/// and anonymizer test databases. Apart from AS721, so that an ASN-keyed view of the spray holds
/// that spray only.
pub(crate) const SPRAY_POOL: Span = Span::new([38, 64, 0, 0], [38, 71, 255, 255]);
/// The ASN of [`SPRAY_POOL`].
pub(crate) const SPRAY_ASN: u32 = 174;

/// Every network an event address may come from (the contract the tests check).
#[cfg(test)]
pub(crate) fn allowed_networks() -> Vec<Span> {
    let mut v = vec![
        Span::new([89, 160, 20, 112], [89, 160, 20, 255]),
        Span::new([216, 160, 83, 56], [216, 160, 83, 63]),
        Span::new([214, 78, 120, 0], [214, 78, 123, 255]),
        Span::new([214, 0, 0, 0], [214, 0, 1, 255]),
        Span::new([175, 16, 199, 0], [175, 16, 199, 255]),
        Span::new([202, 196, 224, 0], [202, 196, 239, 255]),
        Span::new([81, 2, 69, 0], [81, 2, 69, 255]),
        Span::one([1, 124, 213, 1]),
        Span::new([6, 1, 0, 0], [6, 1, 0, 4]),
        Span::new([65, 0, 0, 0], [65, 7, 255, 255]),
        Span::new([71, 160, 223, 0], [71, 160, 223, 255]),
        Span::new([186, 30, 236, 0], [186, 30, 236, 255]),
    ];
    v.push(ATTACK_AS721);
    v.push(ATTACK_ROTATING);
    v.push(SPRAY_POOL);
    v
}

/// Great-circle distance in km.
pub(crate) fn distance_km(a: &Office, b: &Office) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.lat.to_radians(),
        a.lon.to_radians(),
        b.lat.to_radians(),
        b.lon.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// A client as its User-Agent and the facts a normalizer derives from it.
#[derive(Debug)]
pub(crate) struct Client {
    pub ua: &'static str,
    pub os: &'static str,
    pub browser: &'static str,
    pub kind: DeviceType,
}

const fn client(
    ua: &'static str,
    os: &'static str,
    browser: &'static str,
    kind: DeviceType,
) -> Client {
    Client {
        ua,
        os,
        browser,
        kind,
    }
}

/// Desktop browsers users sign in from.
pub(crate) const DESKTOPS: &[Client] = &[
    client(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Windows 11",
        "Chrome 131",
        DeviceType::Desktop,
    ),
    client(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "Windows 11",
        "Edge 131",
        DeviceType::Desktop,
    ),
    client(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Windows 10",
        "Firefox 133",
        DeviceType::Desktop,
    ),
    client(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Safari/605.1.15",
        "macOS 15",
        "Safari 18",
        DeviceType::Desktop,
    ),
    client(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "macOS 15",
        "Chrome 131",
        DeviceType::Desktop,
    ),
];

/// Phone and tablet browsers.
pub(crate) const MOBILES: &[Client] = &[
    client(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1",
        "iOS 18",
        "Mobile Safari 18",
        DeviceType::Mobile,
    ),
    client(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.104 Mobile Safari/537.36",
        "Android 14",
        "Chrome Mobile 131",
        DeviceType::Mobile,
    ),
    client(
        "Mozilla/5.0 (Linux; Android 15; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
        "Android 15",
        "Samsung Internet 27",
        DeviceType::Mobile,
    ),
    client(
        "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.7 Mobile/15E148 Safari/604.1",
        "iPadOS 17",
        "Mobile Safari 17",
        DeviceType::Tablet,
    ),
];

/// Authenticator apps (a user's own sign-ins through Okta Verify on the phone).
pub(crate) const AUTHENTICATORS: &[Client] = &[
    client(
        "OktaVerify/9.31.0 (iPhone; iOS 18.2)",
        "iOS 18",
        "Okta Verify 9",
        DeviceType::Mobile,
    ),
    client(
        "OktaVerify/9.30.1 (Android 14; Pixel 8)",
        "Android 14",
        "Okta Verify 9",
        DeviceType::Mobile,
    ),
];

/// Tell-tale clients of attackers: tooling and dated browsers no user of the tenant has. Only
/// a share of attackers use one; the others name a current browser, or relay the victim's own
/// (`attacks::disguise`).
pub(crate) const ATTACK_CLIENTS: &[Client] = &[
    client(
        "python-requests/2.32.3",
        "Linux",
        "python-requests 2",
        DeviceType::Bot,
    ),
    client(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        "Linux",
        "HeadlessChrome 120",
        DeviceType::Bot,
    ),
    client(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
        "Ubuntu",
        "Firefox 115",
        DeviceType::Desktop,
    ),
    client(
        "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
        "Windows 7",
        "Chrome 109",
        DeviceType::Desktop,
    ),
];

/// SaaS applications users reach through SSO.
pub(crate) const APPS: &[&str] = &[
    "Office 365",
    "Salesforce",
    "Slack",
    "GitHub",
    "Zoom",
    "Workday",
    "Box",
    "Jira",
    "Confluence",
    "AWS Console",
    "ServiceNow",
    "Google Workspace",
];

/// Japanese given names (romanized).
pub(crate) const JA_FIRST: &[&str] = &[
    "aiko", "haruto", "yuki", "ren", "sakura", "hiroshi", "kenji", "yui", "sota", "mei", "takumi",
    "hina", "daiki", "naoko", "kaito", "riko", "akira", "emi", "shota", "mao",
];
/// Japanese family names (romanized).
pub(crate) const JA_LAST: &[&str] = &[
    "sato",
    "suzuki",
    "takahashi",
    "tanaka",
    "watanabe",
    "ito",
    "yamamoto",
    "nakamura",
    "kobayashi",
    "kato",
    "yoshida",
    "yamada",
    "sasaki",
    "matsumoto",
    "inoue",
    "kimura",
];
/// Western and regional given names.
pub(crate) const WEST_FIRST: &[&str] = &[
    "emma", "liam", "olivia", "noah", "sofia", "lucas", "anna", "erik", "maria", "james", "chloe",
    "oliver", "wei", "jia", "miguel", "grace", "ethan", "astrid", "lars", "isabel",
];
/// Western and regional family names.
pub(crate) const WEST_LAST: &[&str] = &[
    "smith",
    "johansson",
    "andersson",
    "garcia",
    "brown",
    "lindqvist",
    "reyes",
    "santos",
    "tan",
    "lim",
    "wong",
    "nguyen",
    "miller",
    "wilson",
    "chen",
    "li",
    "taylor",
    "cruz",
];
