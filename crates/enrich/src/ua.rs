//! User-agent parsing (woothee) behind a bounded cache, and the device fingerprint.

use crate::cache::ShardedLru;
use authwatch_event::{Device, DeviceType, Text};
use std::sync::Arc;

/// What a user-agent string says about the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAgentFacts {
    /// OS family and major version (`Windows 10`, `macOS 10.15`, `iOS 17`, `Android 14`), or
    /// the family alone when no version is given; empty when unknown.
    pub os: Text,
    /// Browser or client family and major version (`Chrome 131`, `Safari 17`, `curl 8`);
    /// empty when unknown.
    pub browser: Text,
    /// Desktop, mobile, tablet, bot, or unknown.
    pub kind: DeviceType,
}

/// Parses user agents, caching results: real traffic repeats a few thousand strings.
pub struct UserAgentParser {
    parser: woothee::parser::Parser,
    cache: Option<ShardedLru<Box<str>, Arc<UserAgentFacts>>>,
    /// This parser's key in the per-thread front caches.
    owner: u64,
}

/// Slots of each worker thread's front cache of parsed user agents. A tenant's traffic uses a
/// few hundred distinct client strings at a time; the shared LRU behind it holds the rest.
const FRONT_SLOTS: usize = 512;

struct FrontSlot {
    owner: u64,
    ua: Box<str>,
    facts: Arc<UserAgentFacts>,
}

thread_local! {
    // The shared LRU costs a lock and a keyed hash per event; the hot strings are the same on
    // every worker, so each thread keeps its own direct-mapped copy of them (as the geo cache
    // does for addresses): no lock, no shared cache line.
    static FRONT: std::cell::RefCell<Vec<Option<FrontSlot>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for UserAgentParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAgentParser")
            .field("cached", &self.cache.as_ref().map_or(0, |c| c.len()))
            .finish()
    }
}

/// User agents longer than this are parsed but not cached: they are rare, often hostile, and
/// would make the cache's memory depend on input rather than on configuration.
const MAX_CACHED_UA_BYTES: usize = 512;

impl UserAgentParser {
    /// A parser caching up to about `cache_size` distinct strings (0: no cache).
    pub fn new(cache_size: usize) -> Self {
        UserAgentParser {
            parser: woothee::parser::Parser::new(),
            cache: ShardedLru::new(cache_size),
            owner: crate::ipcache::new_owner(),
        }
    }

    /// The facts of one user-agent string.
    pub fn parse(&self, ua: &str) -> Arc<UserAgentFacts> {
        if self.cache.is_none() || ua.len() > MAX_CACHED_UA_BYTES {
            return self.parse_shared(ua);
        }
        let slot = (xxhash_rust::xxh3::xxh3_64(ua.as_bytes()) % FRONT_SLOTS as u64) as usize;
        let hit = FRONT.with(|front| {
            front.borrow().get(slot).and_then(|s| {
                s.as_ref()
                    .filter(|s| s.owner == self.owner && &*s.ua == ua)
                    .map(|s| Arc::clone(&s.facts))
            })
        });
        if let Some(facts) = hit {
            return facts;
        }
        let facts = self.parse_shared(ua);
        FRONT.with(|front| {
            let mut front = front.borrow_mut();
            if front.len() != FRONT_SLOTS {
                front.resize_with(FRONT_SLOTS, || None);
            }
            front[slot] = Some(FrontSlot {
                owner: self.owner,
                ua: ua.into(),
                facts: Arc::clone(&facts),
            });
        });
        facts
    }

    /// The facts through the shared cache.
    fn parse_shared(&self, ua: &str) -> Arc<UserAgentFacts> {
        let Some(cache) = self
            .cache
            .as_ref()
            .filter(|_| ua.len() <= MAX_CACHED_UA_BYTES)
        else {
            return Arc::new(self.parse_uncached(ua));
        };
        if let Some(hit) = cache.get(ua) {
            return hit;
        }
        let facts = Arc::new(self.parse_uncached(ua));
        cache.put(ua.into(), Arc::clone(&facts));
        facts
    }

    /// Parses without the cache.
    pub fn parse_uncached(&self, ua: &str) -> UserAgentFacts {
        let ua = ua.trim();
        if ua.is_empty() {
            return UserAgentFacts::default();
        }
        // Scripted clients first: woothee does not know most of them, and a login from
        // `python-requests` must read as a bot whatever else the string claims.
        if let Some((name, version)) = script_client(ua) {
            return UserAgentFacts {
                os: Text::default(),
                browser: with_major(name, version),
                kind: DeviceType::Bot,
            };
        }
        let Some(r) = self.parser.parse(ua) else {
            return UserAgentFacts::default();
        };
        let kind = match r.category {
            "pc" => DeviceType::Desktop,
            "smartphone" if is_tablet(r.os, ua) => DeviceType::Tablet,
            "smartphone" | "mobilephone" => DeviceType::Mobile,
            "crawler" => DeviceType::Bot,
            // woothee's "misc" with name "HTTP Library" is curl, Java, PHP clients and the like.
            "misc" if r.name == "HTTP Library" => DeviceType::Bot,
            _ => DeviceType::Unknown,
        };
        let os = os_name(r.os, &r.os_version);
        let browser = match (r.name, r.version) {
            (woothee::woothee::VALUE_UNKNOWN, _) => Text::default(),
            // For HTTP libraries woothee puts the library's name in `version`.
            ("HTTP Library", lib) => Text::new(lib),
            (name, version) => with_major(name, version),
        };
        UserAgentFacts { os, browser, kind }
    }
}

/// Fills the device's OS, browser and kind from its user agent, keeping values the provider
/// already gave.
pub(crate) fn fill_device(device: &mut Device, facts: &UserAgentFacts) {
    if device.os.is_empty() {
        device.os = facts.os.clone();
    }
    if device.browser.is_empty() {
        device.browser = facts.browser.clone();
    }
    if device.kind == DeviceType::Unknown {
        device.kind = facts.kind;
    }
}

/// Command-line tools, HTTP libraries and headless browsers, by the product token they send.
fn script_client(ua: &str) -> Option<(&str, &str)> {
    const CLIENTS: &[&str] = &[
        "curl",
        "wget",
        "python-requests",
        "python-urllib",
        "python-httpx",
        "aiohttp",
        "go-http-client",
        "libwww-perl",
        "powershell",
        "windowspowershell",
        "axios",
        "node-fetch",
        "undici",
        "apache-httpclient",
        "java",
        "scrapy",
        "httpie",
        "postmanruntime",
        "insomnia",
        "headlesschrome",
        "phantomjs",
        "ruby",
        "faraday",
        "guzzlehttp",
        "rest-client",
    ];
    ua.split([' ', ';', '(', ')']).find_map(|token| {
        let (name, version) = token.split_once('/').unwrap_or((token, ""));
        CLIENTS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
            .then_some((name, version))
    })
}

fn is_tablet(os: &str, ua: &str) -> bool {
    // Android phones send "Mobile", Android tablets do not (Google's own convention).
    os == "iPad" || (os == "Android" && !ua.contains("Mobile"))
}

/// woothee's OS names and versions → "family major".
fn os_name(os: &str, version: &str) -> Text {
    let version = if version == woothee::woothee::VALUE_UNKNOWN {
        ""
    } else {
        version
    };
    match os {
        woothee::woothee::VALUE_UNKNOWN => Text::default(),
        // woothee names the Windows release itself ("Windows 10"); Windows 11 still sends
        // "Windows NT 10.0", so no user agent can tell the two apart.
        o if o.starts_with("Windows") => Text::new(o),
        "Mac OSX" => {
            // Through 10.15 the second number was the release (Mojave, Catalina); macOS 11 and
            // later freeze the user agent at 10_15_7, so 10.15 is as precise as it gets.
            let mut parts = version.split(['.', '_']);
            match (parts.next(), parts.next()) {
                (Some("10"), Some(minor)) => Text::new(format!("macOS 10.{minor}")),
                (Some(major), _) if !major.is_empty() => Text::new(format!("macOS {major}")),
                _ => Text::new("macOS"),
            }
        }
        "iPhone" | "iPad" | "iPod" | "iOS" => with_major("iOS", version),
        "ChromeOS" => Text::new("ChromeOS"),
        family => with_major(family, version),
    }
}

/// "Chrome" + "131.0.6778.86" → "Chrome 131"; no usable version → the family alone.
fn with_major(family: &str, version: &str) -> Text {
    let major = version
        .split(['.', '_', ' '])
        .next()
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
    match major {
        Some(m) => Text::new(format!("{family} {m}")),
        None => Text::new(family),
    }
}

/// The device fingerprint: xxh3-64, in hex, of the normalized device facts — OS family and
/// major version, browser family and major version, device type, and the provider's device
/// id. `None` when there are no facts at all: an all-empty device would otherwise give every
/// script without a user agent one shared "known" fingerprint.
///
/// The source address is deliberately left out: it changes with every network the same
/// device joins, and is judged separately (geo, ASN, CIDR tags). See `docs/ENRICHMENT.md`.
pub fn device_fingerprint(device: &Device) -> Option<Text> {
    // Providers that name the OS and browser themselves give full versions ("Edge
    // 131.0.2903.86", "Safari 17.5"): a point release must not make a new device.
    let os = major_only(device.os.trim());
    let browser = major_only(device.browser.trim());
    let id = device.id.trim();
    if os.is_empty() && browser.is_empty() && id.is_empty() && device.kind == DeviceType::Unknown {
        return None;
    }
    let kind = device.kind.as_str();
    // Runs for every event on the workers: the common case (ASCII facts of ordinary length) is
    // assembled on the stack; anything else takes the general path, which hashes the same bytes.
    let hash = fingerprint_hash_ascii(os, browser, kind, id)
        .unwrap_or_else(|| fingerprint_hash_general(os, browser, kind, id));
    // Hex by hand into a stack buffer: 16 characters fit the inline `Text`, so the fingerprint
    // costs no heap allocation on the hot path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 16];
    for (i, out) in hex.iter_mut().enumerate() {
        *out = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    Some(Text::new(std::str::from_utf8(&hex).unwrap_or_default()))
}

/// "Edge 131.0.2903.86" → "Edge 131": a name whose last word is a dotted version keeps only
/// the version's first number, as [`with_major`] does for parsed user agents.
fn major_only(name: &str) -> &str {
    let start = name.rfind(' ').map_or(0, |i| i + 1);
    let version = &name[start..];
    match version.find('.') {
        Some(dot) if version.as_bytes()[..dot].iter().all(u8::is_ascii_digit) && dot > 0 => {
            &name[..start + dot]
        }
        _ => name,
    }
}

/// The hashed recipe, built in a `String`: `fp1 \0 os \0 browser \0 type \0 device_id`, with OS
/// and browser lower-cased and their whitespace collapsed. A version tag and NUL separators: the
/// fields can never run into each other, and a future change of the recipe changes every
/// fingerprint rather than colliding with old ones.
fn fingerprint_hash_general(os: &str, browser: &str, kind: &str, id: &str) -> u64 {
    let mut buf = String::with_capacity(64);
    buf.push_str("fp1\0");
    push_lower(&mut buf, os);
    buf.push('\0');
    push_lower(&mut buf, browser);
    buf.push('\0');
    buf.push_str(kind);
    buf.push('\0');
    // The provider's id is opaque: compared exactly, never case-folded.
    buf.push_str(id);
    xxhash_rust::xxh3::xxh3_64(buf.as_bytes())
}

/// Longest recipe assembled on the stack; real OS and browser names and provider device ids
/// are far shorter.
const FP_STACK_BYTES: usize = 256;

/// [`fingerprint_hash_general`] for ASCII OS and browser names whose recipe fits
/// [`FP_STACK_BYTES`]: the same bytes, written into a stack buffer. `None` otherwise.
fn fingerprint_hash_ascii(os: &str, browser: &str, kind: &str, id: &str) -> Option<u64> {
    if !os.is_ascii() || !browser.is_ascii() {
        return None;
    }
    let mut buf = StackBuf {
        bytes: [0; FP_STACK_BYTES],
        len: 0,
    };
    buf.push(b"fp1\0")?;
    buf.push_lower_ascii(os.as_bytes())?;
    buf.push(b"\0")?;
    buf.push_lower_ascii(browser.as_bytes())?;
    buf.push(b"\0")?;
    buf.push(kind.as_bytes())?;
    buf.push(b"\0")?;
    buf.push(id.as_bytes())?;
    Some(xxhash_rust::xxh3::xxh3_64(buf.bytes.get(..buf.len)?))
}

struct StackBuf {
    bytes: [u8; FP_STACK_BYTES],
    len: usize,
}

impl StackBuf {
    /// Appends `s`; `None` when it does not fit.
    fn push(&mut self, s: &[u8]) -> Option<()> {
        let end = self.len.checked_add(s.len())?;
        self.bytes.get_mut(self.len..end)?.copy_from_slice(s);
        self.len = end;
        Some(())
    }

    /// Appends ASCII `s` lower-cased, its whitespace runs collapsed to one space and trimmed:
    /// what [`push_lower`] does, for ASCII input. Whitespace is Unicode's `White_Space` within
    /// ASCII (tab, line feed, vertical tab, form feed, carriage return, space), as
    /// `str::split_whitespace` has it.
    fn push_lower_ascii(&mut self, s: &[u8]) -> Option<()> {
        // Lower-casing ASCII keeps the length and collapsing only shortens, so the room is
        // checked once.
        let room = self.bytes.get_mut(self.len..)?.get_mut(..s.len())?;
        // `n` never passes the position of the byte in hand: a space is only written in the
        // place of a whitespace byte skipped before it. The indexing cannot fail.
        let mut n = 0;
        let mut space = false;
        for &b in s {
            if b == b' ' || (b'\t'..=b'\r').contains(&b) {
                space = n > 0;
                continue;
            }
            if space {
                room[n] = b' ';
                n += 1;
                space = false;
            }
            room[n] = b.to_ascii_lowercase();
            n += 1;
        }
        self.len += n;
        Some(())
    }
}

fn push_lower(buf: &mut String, s: &str) {
    // Collapse case and inner whitespace so "Windows  10" from one provider and "windows 10"
    // from another are the same fact.
    for (i, word) in s.split_whitespace().enumerate() {
        if i > 0 {
            buf.push(' ');
        }
        if word.is_ascii() {
            // The common case: no Unicode case tables needed.
            buf.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            buf.extend(word.chars().flat_map(char::to_lowercase));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_cache_serves_repeats_and_never_mixes_parsers() {
        let a = UserAgentParser::new(100);
        let first = a.parse(WIN_CHROME);
        assert!(
            Arc::ptr_eq(&first, &a.parse(WIN_CHROME)),
            "second parse is a hit"
        );
        // Another parser on the same thread does not read the first one's slots.
        let b = UserAgentParser::new(100);
        let other = b.parse(WIN_CHROME);
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(*first, *other);
        // Without a cache nothing is kept.
        let c = UserAgentParser::new(0);
        assert!(!Arc::ptr_eq(&c.parse(WIN_CHROME), &c.parse(WIN_CHROME)));
    }

    const WIN_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const WIN_CHROME_MINOR: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.86 Safari/537.36";
    const MAC_SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15";
    const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1";
    const IPAD_SAFARI: &str = "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    const ANDROID_CHROME: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
    const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const MAC_CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const WIN_EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86";
    const LINUX_FIREFOX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const HEADLESS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36";

    fn facts(ua: &str) -> (String, String, DeviceType) {
        let f = UserAgentParser::new(0).parse_uncached(ua);
        (f.os.to_string(), f.browser.to_string(), f.kind)
    }

    fn f(os: &str, browser: &str, kind: DeviceType) -> (String, String, DeviceType) {
        (os.into(), browser.into(), kind)
    }

    #[test]
    fn real_user_agents() {
        use DeviceType::*;
        assert_eq!(facts(WIN_CHROME), f("Windows 10", "Chrome 131", Desktop));
        assert_eq!(facts(MAC_SAFARI), f("macOS 10.15", "Safari 17", Desktop));
        assert_eq!(facts(IPHONE_SAFARI), f("iOS 17", "Safari 17", Mobile));
        assert_eq!(facts(IPAD_SAFARI), f("iOS 17", "Safari 17", Tablet));
        assert_eq!(facts(ANDROID_CHROME), f("Android 14", "Chrome 131", Mobile));
        assert_eq!(facts(ANDROID_TABLET), f("Android 13", "Chrome 131", Tablet));
        assert_eq!(facts(WIN_EDGE), f("Windows 10", "Edge 131", Desktop));
        assert_eq!(facts(LINUX_FIREFOX), f("Linux", "Firefox 133", Desktop));
    }

    #[test]
    fn scripts_and_crawlers_are_bots() {
        use DeviceType::*;
        assert_eq!(facts("curl/8.5.0"), f("", "curl 8", Bot));
        assert_eq!(
            facts("python-requests/2.31.0"),
            f("", "python-requests 2", Bot)
        );
        assert_eq!(facts("Go-http-client/1.1"), f("", "Go-http-client 1", Bot));
        assert_eq!(facts(HEADLESS), f("", "HeadlessChrome 131", Bot));
        assert_eq!(
            facts("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            f("", "Googlebot", Bot)
        );
        assert_eq!(facts(""), f("", "", Unknown));
        assert_eq!(facts("something odd"), f("", "", Unknown));
    }

    #[test]
    fn cache_returns_the_same_facts() {
        let p = UserAgentParser::new(100);
        let a = p.parse(WIN_CHROME);
        let b = p.parse(WIN_CHROME);
        assert!(Arc::ptr_eq(&a, &b), "second parse is a cache hit");
        assert_eq!(*a, p.parse_uncached(WIN_CHROME));
        let long = format!("{WIN_CHROME} {}", "x".repeat(600));
        assert_eq!(p.parse(&long).browser, "Chrome 131");
    }

    #[test]
    fn provider_values_are_kept() {
        let p = UserAgentParser::new(0);
        let mut d = Device {
            os: "Windows 11".into(),
            ..Device::default()
        };
        fill_device(&mut d, &p.parse_uncached(WIN_CHROME));
        assert_eq!(d.os, "Windows 11");
        assert_eq!(d.browser, "Chrome 131");
        assert_eq!(d.kind, DeviceType::Desktop);
    }

    fn fp_of(ua: &str, id: &str) -> Text {
        let p = UserAgentParser::new(0);
        let mut d = Device {
            id: id.into(),
            ..Device::default()
        };
        fill_device(&mut d, &p.parse_uncached(ua));
        device_fingerprint(&d).unwrap()
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        let a = fp_of(WIN_CHROME, "");
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, fp_of(WIN_CHROME, ""), "same facts, same hash");
        assert_eq!(
            a,
            fp_of(WIN_CHROME_MINOR, ""),
            "a minor update keeps the hash"
        );
        assert_ne!(a, fp_of(MAC_CHROME, ""), "another OS");
        assert_ne!(a, fp_of(WIN_EDGE, ""), "another browser");
        assert_ne!(
            fp_of(IPHONE_SAFARI, ""),
            fp_of(IPAD_SAFARI, ""),
            "another type"
        );
        assert_ne!(a, fp_of(WIN_CHROME, "dev-1"), "a provider device id");
        assert_ne!(fp_of(WIN_CHROME, "dev-1"), fp_of(WIN_CHROME, "dev-2"));
        // Case and spacing of provider-given facts do not matter.
        let d1 = Device {
            os: "Windows 11".into(),
            browser: "Chrome 131".into(),
            ..Device::default()
        };
        let d2 = Device {
            os: " windows  11".into(),
            browser: "CHROME 131".into(),
            ..Device::default()
        };
        assert_eq!(device_fingerprint(&d1), device_fingerprint(&d2));
        assert_eq!(device_fingerprint(&Device::default()), None);
        // Full versions from a provider: point releases keep the device, a major one does not.
        let provider = |os: &str, browser: &str| {
            device_fingerprint(&Device {
                os: os.into(),
                browser: browser.into(),
                ..Device::default()
            })
        };
        let edge = provider("Windows 10", "Edge 131.0.2903.86");
        assert_eq!(edge, provider("Windows 10", "Edge 131.0.2903.112"));
        assert_eq!(edge, provider("Windows 10", "Edge 131"));
        assert_ne!(edge, provider("Windows 10", "Edge 132.0.2957.55"));
        assert_eq!(
            provider("iOS 17.5", "Safari 17.5"),
            provider("iOS 17.6.1", "Safari 17.6")
        );
        assert_eq!(major_only("Firefox 133.0"), "Firefox 133");
        assert_eq!(major_only("Windows 10"), "Windows 10");
        assert_eq!(major_only("Chrome v1.2"), "Chrome v1.2");
        assert_eq!(major_only("Mac OS X"), "Mac OS X");
        assert_eq!(major_only(". 5"), ". 5");
    }

    #[test]
    fn the_stack_recipe_hashes_the_same_bytes_as_the_general_one() {
        let long = "x".repeat(FP_STACK_BYTES);
        let names = [
            "",
            "Windows 10",
            "windows 10",
            "  Mac\tOS \n X\x0b10\x0c \r",
            "a\x1cb\x1fc",
            "CHROME  131",
            "Édge 131",
            "Ｗindows",
            "iOS\u{a0}17",
            " Windows 11",
            "Windows 11 ",
            "Windows\t11",
            "Windows \r11",
            " ",
            "x",
            long.as_str(),
        ];
        let ids = ["", "Dev-1", "ÄBC", long.as_str()];
        for os in names {
            for browser in names {
                for id in ids {
                    for kind in ["desktop", "unknown"] {
                        let general = fingerprint_hash_general(os, browser, kind, id);
                        if let Some(fast) = fingerprint_hash_ascii(os, browser, kind, id) {
                            assert_eq!(fast, general, "{os:?} {browser:?} {id:?}");
                            assert!(os.is_ascii() && browser.is_ascii());
                        } else {
                            assert!(
                                !os.is_ascii()
                                    || !browser.is_ascii()
                                    || os.len() + browser.len() + id.len() + 16 > FP_STACK_BYTES,
                                "{os:?} {browser:?} {id:?} should fit"
                            );
                        }
                    }
                }
            }
        }
        // The recipe itself, pinned: fingerprints are stored in profiles and checkpoints, so a
        // faster path must never change them.
        let d = Device {
            os: "Windows 10".into(),
            browser: "Chrome 131".into(),
            kind: DeviceType::Desktop,
            id: "dev-1".into(),
            ..Device::default()
        };
        let expected = xxhash_rust::xxh3::xxh3_64(b"fp1\0windows 10\0chrome 131\0desktop\0dev-1");
        assert_eq!(
            device_fingerprint(&d).unwrap().as_str(),
            format!("{expected:016x}")
        );
    }
}
