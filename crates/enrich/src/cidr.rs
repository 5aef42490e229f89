//! CIDR lists (corporate egress, known VPN ranges, Tor exits, deny lists) → tags.
//!
//! Every list is flattened at load time into one sorted table of disjoint address ranges per
//! family, each carrying the set of tags of every list that covers it. A lookup is then one
//! binary search, whatever the number of lists or entries, and overlapping or nested entries
//! cost nothing extra.

use crate::config::{CidrListConfig, MAX_CIDR_TAGS};
use crate::error::EnrichError;
use authwatch_event::Text;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::Path;

/// A set of tag indices, one bit per distinct tag (at most [`MAX_CIDR_TAGS`]).
type TagMask = u64;

/// One disjoint range `[start, end]` and the tags that cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span<A> {
    start: A,
    end: A,
    tags: TagMask,
}

/// Address ranges → tags, immutable once built.
#[derive(Debug, Default)]
pub struct CidrTagger {
    tags: Vec<Text>,
    /// Tags of lists whose addresses say nothing about where the user is
    /// ([`CidrListConfig::located`]).
    unlocated: TagMask,
    v4: Vec<Span<u32>>,
    v6: Vec<Span<u128>>,
}

impl CidrTagger {
    /// Reads every list. A line that is neither a CIDR nor an address is an error naming the
    /// file and line, so a typo in a deny list cannot silently leave a hole.
    pub fn load(lists: &[CidrListConfig]) -> Result<CidrTagger, EnrichError> {
        let mut tags: Vec<Text> = Vec::new();
        let mut unlocated: TagMask = 0;
        let mut v4: Vec<(u32, u32, TagMask)> = Vec::new();
        let mut v6: Vec<(u128, u128, TagMask)> = Vec::new();
        for list in lists {
            let index = match tags.iter().position(|t| t.as_str() == list.tag) {
                Some(i) => i,
                None => {
                    tags.push(Text::new(&list.tag));
                    tags.len() - 1
                }
            };
            if index >= MAX_CIDR_TAGS {
                return Err(crate::config::ConfigError {
                    key: "cidr_lists".into(),
                    message: format!("at most {MAX_CIDR_TAGS} distinct tags"),
                }
                .into());
            }
            let text =
                std::fs::read_to_string(&list.path).map_err(|source| EnrichError::CidrRead {
                    path: list.path.clone(),
                    source,
                })?;
            let bit: TagMask = 1 << index;
            if !list.located {
                unlocated |= bit;
            }
            for net in parse_list(&list.path, &text)? {
                match net {
                    IpNet::V4(n) => {
                        v4.push((n.network().to_bits(), n.broadcast().to_bits(), bit));
                    }
                    IpNet::V6(n) => {
                        v6.push((n.network().to_bits(), n.broadcast().to_bits(), bit));
                    }
                }
            }
        }
        Ok(CidrTagger {
            tags,
            unlocated,
            v4: flatten(v4),
            v6: flatten(v6),
        })
    }

    /// True when no list is loaded (lookups would find nothing).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The tags of `ip`, in the order the lists are configured. IPv4-mapped IPv6 addresses
    /// match the IPv4 entries.
    pub fn tags(&self, ip: IpAddr) -> impl Iterator<Item = &Text> + '_ {
        self.tags_in(self.mask(ip))
    }

    /// Whether `ip` is on a list whose addresses say nothing about where the user is
    /// ([`CidrListConfig::located`] `false`).
    pub fn unlocated(&self, ip: IpAddr) -> bool {
        self.mask(ip) & self.unlocated != 0
    }

    /// The tags of `ip` and whether it is [`unlocated`](Self::unlocated), with one search.
    pub fn lookup(&self, ip: IpAddr) -> (impl Iterator<Item = &Text> + '_, bool) {
        let mask = self.mask(ip);
        (self.tags_in(mask), mask & self.unlocated != 0)
    }

    fn mask(&self, ip: IpAddr) -> TagMask {
        if self.tags.is_empty() {
            return 0;
        }
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, a.to_bits()),
            IpAddr::V6(a) => find(&self.v6, a.to_bits()),
        }
    }

    fn tags_in(&self, mask: TagMask) -> impl Iterator<Item = &Text> + '_ {
        self.tags
            .iter()
            .enumerate()
            .filter(move |(i, _)| mask & (1 << i) != 0)
            .map(|(_, t)| t)
    }

    /// Disjoint ranges held (IPv4, IPv6): what the table costs in memory.
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}

fn find<A: Ord + Copy>(spans: &[Span<A>], addr: A) -> TagMask {
    // The first span starting after `addr`; the one before it is the only candidate.
    let i = spans.partition_point(|s| s.start <= addr);
    match i.checked_sub(1).and_then(|i| spans.get(i)) {
        Some(s) if addr <= s.end => s.tags,
        _ => 0,
    }
}

/// Parses one list: one CIDR or bare address per line, `#` starts a comment (whole-line or
/// trailing), blank lines are skipped. Host bits under the prefix are ignored
/// (`10.1.2.3/8` means `10.0.0.0/8`), as routers and firewalls read it.
fn parse_list(path: &Path, text: &str) -> Result<Vec<IpNet>, EnrichError> {
    let mut nets = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let net = if line.contains('/') {
            line.parse::<IpNet>().ok().map(|n| n.trunc())
        } else {
            line.parse::<IpAddr>().ok().map(IpNet::from)
        };
        match net {
            Some(net) => nets.push(net),
            None => {
                return Err(EnrichError::CidrLine {
                    path: path.to_owned(),
                    line: n + 1,
                    message: format!("not a CIDR or IP address: {line:?}"),
                });
            }
        }
    }
    Ok(nets)
}

/// Closed ranges with one tag bit each → sorted, disjoint, merged spans with tag sets.
///
/// A sweep over range boundaries: each start adds its bit, each end+1 removes it; between two
/// consecutive boundaries the set is constant. Counts (not just bits) per tag keep nested
/// ranges of the same list right.
fn flatten<A>(ranges: Vec<(A, A, TagMask)>) -> Vec<Span<A>>
where
    A: Ord + Copy + Bounded,
{
    // (position, tag bit, +1 start / -1 past-the-end). Ends at the maximum address have no
    // past-the-end boundary: their tags simply stay on until the last span closes.
    let mut events: Vec<(A, TagMask, i32)> = Vec::with_capacity(ranges.len() * 2);
    for (start, end, bit) in ranges {
        events.push((start, bit, 1));
        if let Some(after) = end.succ() {
            events.push((after, bit, -1));
        }
    }
    events.sort_unstable_by_key(|e| e.0);

    let mut counts = [0i32; MAX_CIDR_TAGS];
    let mut spans: Vec<Span<A>> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let pos = events[i].0;
        while i < events.len() && events[i].0 == pos {
            let (_, bit, delta) = events[i];
            counts[bit.trailing_zeros() as usize] += delta;
            i += 1;
        }
        let mask = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .fold(0, |m, (t, _)| m | (1 << t));
        let end = match events.get(i) {
            Some(next) => next.0.pred(),
            None => A::MAX,
        };
        if mask == 0 {
            continue;
        }
        // Adjacent spans with the same tags merge, keeping the table (and the search) small.
        match spans.last_mut() {
            Some(last) if last.tags == mask && last.end.succ() == Some(pos) => last.end = end,
            _ => spans.push(Span {
                start: pos,
                end,
                tags: mask,
            }),
        }
    }
    spans
}

/// Address integers: successor and predecessor without overflow.
trait Bounded: Sized {
    const MAX: Self;
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Self;
}

impl Bounded for u32 {
    const MAX: u32 = u32::MAX;
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
    fn pred(self) -> u32 {
        self.saturating_sub(1)
    }
}

impl Bounded for u128 {
    const MAX: u128 = u128::MAX;
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
    fn pred(self) -> u128 {
        self.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn list(dir: &Path, name: &str, tag: &str, text: &str) -> CidrListConfig {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        CidrListConfig {
            path,
            tag: tag.into(),
            located: true,
        }
    }

    fn tags_of(t: &CidrTagger, ip: &str) -> Vec<String> {
        t.tags(ip.parse().unwrap()).map(|t| t.to_string()).collect()
    }

    #[test]
    fn tags_by_list_with_comments_overlaps_and_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let lists = [
            list(
                dir.path(),
                "egress.txt",
                "corporate_egress",
                "# office egress\n198.51.100.0/24\n\n203.0.113.7 # branch NAT\n2001:db8:10::/48\n",
            ),
            list(
                dir.path(),
                "vpn.txt",
                "known_vpn",
                "198.51.100.128/25\n10.0.0.0/8\n10.1.0.0/16\n",
            ),
            list(dir.path(), "tor.txt", "tor_exit", "1.124.213.1\n"),
            // A second file with an existing tag adds to that tag.
            list(dir.path(), "vpn2.txt", "known_vpn", "192.0.2.0/25\n"),
        ];
        let t = CidrTagger::load(&lists).unwrap();
        assert_eq!(tags_of(&t, "198.51.100.1"), ["corporate_egress"]);
        assert_eq!(
            tags_of(&t, "198.51.100.200"),
            ["corporate_egress", "known_vpn"]
        );
        assert_eq!(
            tags_of(&t, "198.51.100.255"),
            ["corporate_egress", "known_vpn"]
        );
        assert!(tags_of(&t, "198.51.101.0").is_empty());
        assert!(tags_of(&t, "198.51.99.255").is_empty());
        assert_eq!(tags_of(&t, "203.0.113.7"), ["corporate_egress"]);
        assert!(tags_of(&t, "203.0.113.8").is_empty());
        assert_eq!(tags_of(&t, "10.1.2.3"), ["known_vpn"]);
        assert_eq!(tags_of(&t, "10.200.0.1"), ["known_vpn"]);
        assert_eq!(tags_of(&t, "192.0.2.127"), ["known_vpn"]);
        assert!(tags_of(&t, "192.0.2.128").is_empty());
        assert_eq!(tags_of(&t, "1.124.213.1"), ["tor_exit"]);
        assert_eq!(tags_of(&t, "::ffff:1.124.213.1"), ["tor_exit"]);
        assert_eq!(tags_of(&t, "2001:db8:10:ffff::1"), ["corporate_egress"]);
        assert!(tags_of(&t, "2001:db8:11::1").is_empty());
        // The nested 10.1.0.0/16 adds no span; 198.51.100.0/24 splits in two around its /25.
        assert_eq!(t.ranges(), (6, 1));
    }

    #[test]
    fn whole_address_space_and_edges() {
        let dir = tempfile::tempdir().unwrap();
        let t = CidrTagger::load(&[
            list(dir.path(), "all.txt", "any", "0.0.0.0/0\n::/0\n"),
            list(dir.path(), "top.txt", "top", "255.255.255.255\n"),
        ])
        .unwrap();
        assert_eq!(tags_of(&t, "0.0.0.0"), ["any"]);
        assert_eq!(tags_of(&t, "255.255.255.255"), ["any", "top"]);
        assert_eq!(
            tags_of(&t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["any"]
        );
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let l = list(
            dir.path(),
            "deny.txt",
            "deny",
            "# deny list\n192.0.2.1\n192.0.2.0/33\n",
        );
        let e = CidrTagger::load(&[l]).unwrap_err();
        assert!(matches!(e, EnrichError::CidrLine { line: 3, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("deny.txt:3:") && msg.contains("192.0.2.0/33"),
            "{msg}"
        );

        let missing = CidrListConfig {
            path: dir.path().join("nope.txt"),
            tag: "deny".into(),
            located: true,
        };
        let e = CidrTagger::load(&[missing]).unwrap_err();
        assert!(matches!(e, EnrichError::CidrRead { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.txt"), "{e}");
    }

    #[test]
    fn flatten_matches_a_linear_scan() {
        // Deterministic pseudo-random overlapping ranges over a small space, checked exhaustively.
        let mut x: u32 = 12345;
        let mut rng = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut ranges = Vec::new();
        for _ in 0..60 {
            let a = rng() % 1000;
            let b = a + rng() % 50;
            ranges.push((a, b, 1u64 << (rng() % 5)));
        }
        let spans = flatten(ranges.clone());
        for addr in 0..1100u32 {
            let want = ranges
                .iter()
                .filter(|(a, b, _)| (*a..=*b).contains(&addr))
                .fold(0, |m, r| m | r.2);
            assert_eq!(find(&spans, addr), want, "{addr}");
        }
    }
}
