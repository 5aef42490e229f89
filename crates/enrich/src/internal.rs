//! Addresses that must never be geo-located: private, loopback, link-local, shared (CGNAT),
//! documentation and other reserved ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address to judge, geo-locate and tag `ip` as: the IPv4 address an IPv6 address carries
/// when it is written the way dual-stack listeners and translators write one (IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, the NAT64 well-known prefix
/// `64:ff9b::a.b.c.d`), else `ip` itself. A corporate range listed in IPv4 then covers its
/// addresses in these forms too.
///
/// ```
/// use authwatch_enrich::canonical_ip;
/// let ip = canonical_ip("64:ff9b::10.0.0.1".parse().unwrap());
/// assert_eq!(ip, "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
/// ```
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::from_bits(v6.to_bits() as u32);
    let compatible = s[..6] == [0; 6] && low.to_bits() > 1; // not :: or ::1
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        IpAddr::V4(low)
    } else {
        ip
    }
}

/// Whether an address is not publicly routable: private (RFC 1918, fc00::/7), loopback,
/// link-local, unspecified, "this network", broadcast, multicast, shared CGNAT space
/// (100.64.0.0/10), documentation, benchmarking, site-local, discard-only and reserved ranges.
/// An IPv6 address that carries an IPv4 one ([`canonical_ip`], and 6to4 `2002:a.b.c.d::/48`)
/// is judged as that IPv4 address. Such addresses are never geo-located.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // 6to4: the site's IPv4 address follows the prefix; a private one is no site.
            let six_to_four = s[0] == 0x2002
                && is_internal_v4(Ipv4Addr::from_bits(
                    (u32::from(s[1]) << 16) | u32::from(s[2]),
                ));
            six_to_four || is_internal_v6(v6)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0 // 0.0.0.0/8 "this network"
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // 198.18.0.0/15 benchmarking
        || a >= 240 // 240.0.0.0/4 reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated, still seen)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // 100::/64 discard-only
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32 documentation
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // 2001:2::/48 benchmarking
        || (s[0] == 0x3fff && s[1] & 0xf000 == 0) // 3fff::/20 documentation (RFC 9637)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_reserved_ranges() {
        for internal in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "0.1.2.3",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:c0a8:101::1",
            "2001:2::1",
            "3fff::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "81.2.69.142",
            "89.160.20.112",
            "8.8.8.8",
            "2a02:ec0::1",
            "100.128.0.1",
            "::175.16.199.5",
            "64:ff9b::8.8.8.8",
            "2002:5851:4570::1",
            "3fff:1000::1",
            "2001:3::1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_that_address() {
        for (v6, v4) in [
            ("::ffff:81.2.69.142", "81.2.69.142"),
            ("::81.2.69.142", "81.2.69.142"),
            ("64:ff9b::81.2.69.142", "81.2.69.142"),
        ] {
            assert_eq!(
                canonical_ip(v6.parse().unwrap()),
                v4.parse::<IpAddr>().unwrap()
            );
        }
        for same in [
            "::",
            "::1",
            "2a02:ec0::1",
            "81.2.69.142",
            "64:ff9b:1::1.2.3.4",
        ] {
            let ip: IpAddr = same.parse().unwrap();
            assert_eq!(canonical_ip(ip), ip);
        }
    }
}
