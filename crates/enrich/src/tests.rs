//! Tests of the whole enricher against MaxMind's test databases in `data/geo/`.

use super::*;
use authwatch_event::{Activity, Anonymizer, DeviceType, Geo, Outcome};
use std::path::{Path, PathBuf};

fn geo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/geo")
}

fn full_config() -> EnrichConfig {
    let dir = geo_dir();
    let mut c = EnrichConfig::default();
    c.geo.city_db = Some(dir.join("GeoIP2-City-Test.mmdb"));
    c.geo.asn_db = Some(dir.join("GeoLite2-ASN-Test.mmdb"));
    c.geo.anonymous_db = Some(dir.join("GeoIP2-Anonymous-IP-Test.mmdb"));
    c
}

fn event_from(ip: &str) -> AuthEvent {
    let mut e = AuthEvent {
        time: 1_767_603_600_000,
        activity: Activity::Logon,
        outcome: Outcome::Success,
        ..AuthEvent::default()
    };
    e.user.name = "aiko@example.co.jp".into();
    e.src.ip = Some(ip.parse().unwrap());
    e
}

fn enriched(enricher: &EventEnricher, ip: &str) -> AuthEvent {
    let mut e = event_from(ip);
    enricher.enrich(&mut e);
    e
}

fn place(e: &AuthEvent) -> (String, String) {
    let g = e.src.geo.clone().unwrap_or_default();
    (g.country.to_string(), g.city.to_string())
}

fn pair(country: &str, city: &str) -> (String, String) {
    (country.into(), city.into())
}

#[test]
fn enricher_is_shareable_between_workers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EventEnricher>();
}

#[test]
fn known_test_addresses() {
    let en = EventEnricher::new(&full_config()).unwrap();
    assert_eq!(en.geo().info().len(), 3);

    let e = enriched(&en, "89.160.20.112");
    assert_eq!(
        e.src.geo,
        Some(Geo {
            country: "SE".into(),
            city: "Linköping".into(),
            lat: Some(58.4167),
            lon: Some(15.6167),
            accuracy_km: Some(76),
        })
    );
    assert_eq!(e.src.asn, Some(29518));
    assert_eq!(e.src.as_org, "Bredband2 AB");
    assert_eq!(e.src.anonymizer, Anonymizer::default());
    assert!(!e.src.internal);

    let e = enriched(&en, "81.2.69.142");
    assert_eq!(place(&e), pair("GB", "London"));
    assert_eq!(
        e.src.anonymizer,
        Anonymizer {
            anonymous: true,
            vpn: true,
            tor: true,
            hosting: true,
            proxy: true,
        },
        "the test DB flags all of 81.2.69.0/24"
    );

    let e = enriched(&en, "1.124.213.1");
    assert_eq!(e.src.geo, None, "not in the city DB");
    assert_eq!(
        e.src.anonymizer,
        Anonymizer {
            anonymous: true,
            vpn: true, // the test DB flags this Tor exit as an anonymous VPN too
            tor: true,
            ..Anonymizer::default()
        }
    );

    let e = enriched(&en, "216.160.83.56");
    assert_eq!(place(&e), pair("US", "Milton"));
    assert_eq!(e.src.asn, Some(209));

    let e = enriched(&en, "175.16.199.7");
    assert_eq!(place(&e), pair("CN", "Changchun"));

    let e = enriched(&en, "6.1.0.2");
    assert!(e.src.anonymizer.hosting && !e.src.anonymizer.tor);

    // IPv4-mapped IPv6 is looked up as IPv4.
    let e = enriched(&en, "::ffff:89.160.20.112");
    assert_eq!(place(&e), pair("SE", "Linköping"));
    assert_eq!(e.src.asn, Some(29518));

    // A second lookup of the same address (cache hit) gives the same result.
    assert_eq!(
        enriched(&en, "89.160.20.112"),
        enriched(&en, "89.160.20.112")
    );
}

#[test]
fn internal_addresses_are_marked_and_not_looked_up() {
    let en = EventEnricher::new(&full_config()).unwrap();
    for ip in [
        "10.1.2.3",
        "192.168.0.10",
        "::1",
        "fd00::5",
        "::ffff:10.0.0.1",
    ] {
        let e = enriched(&en, ip);
        assert!(e.src.internal, "{ip}");
        assert_eq!(e.src.geo, None, "{ip}");
        assert_eq!(e.src.asn, None, "{ip}");
    }
}

#[test]
fn provider_values_are_kept() {
    let en = EventEnricher::new(&full_config()).unwrap();
    let mut e = event_from("89.160.20.112");
    e.src.geo = Some(Geo {
        country: "JP".into(),
        ..Geo::default()
    });
    e.src.asn = Some(64500);
    e.src.anonymizer.vpn = true;
    en.enrich(&mut e);
    assert_eq!(place(&e), pair("JP", ""));
    assert_eq!(e.src.asn, Some(64500));
    assert_eq!(
        e.src.as_org, "Bredband2 AB",
        "empty fields are still filled"
    );
    assert!(e.src.anonymizer.vpn, "flags are added to, never cleared");
}

#[test]
fn provider_device_facts_are_kept_and_partial_ones_completed() {
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1";
    let en = EventEnricher::new(&full_config()).unwrap();
    let with = |os: &str, browser: &str, kind: DeviceType| {
        let mut e = event_from("89.160.20.112");
        e.device.user_agent = IPHONE.into();
        e.device.os = os.into();
        e.device.browser = browser.into();
        e.device.kind = kind;
        en.enrich(&mut e);
        e.device
    };
    // Everything given: the user agent is not consulted, nothing changes but the fingerprint.
    let given = with("Android 14", "Chrome 131", DeviceType::Tablet);
    assert_eq!(
        (given.os.as_str(), given.browser.as_str(), given.kind),
        ("Android 14", "Chrome 131", DeviceType::Tablet)
    );
    assert_eq!(Some(given.fingerprint.clone()), device_fingerprint(&given));
    // Any one missing: the parse fills exactly the missing ones.
    let d = with("Android 14", "Chrome 131", DeviceType::Unknown);
    assert_eq!(
        (d.os.as_str(), d.browser.as_str(), d.kind),
        ("Android 14", "Chrome 131", DeviceType::Mobile)
    );
    let d = with("", "Chrome 131", DeviceType::Tablet);
    assert_eq!((d.os.as_str(), d.kind), ("iOS 17", DeviceType::Tablet));
    let d = with("Android 14", "", DeviceType::Tablet);
    assert_eq!(d.browser, "Safari 17");
    let d = with("", "", DeviceType::Unknown);
    assert_eq!(
        (d.os.as_str(), d.browser.as_str(), d.kind),
        ("iOS 17", "Safari 17", DeviceType::Mobile)
    );
    assert_ne!(d.fingerprint, given.fingerprint);
}

#[test]
fn missing_databases_disable_lookups_without_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = EnrichConfig::default();
    c.geo.city_db = Some(dir.path().join("absent-city.mmdb"));
    c.geo.asn_db = Some(dir.path().join("absent-asn.mmdb"));
    c.geo.anonymous_db = Some(dir.path().join("absent-anon.mmdb"));
    let en = EventEnricher::new(&c).unwrap();
    assert!(en.geo().info().is_empty());
    let e = enriched(&en, "89.160.20.112");
    assert_eq!(e.src.geo, None);
    assert_eq!(e.src.asn, None);
    assert_eq!(e.src.as_org, "");
    assert_eq!(e.src.anonymizer, Anonymizer::default());
    assert_eq!(en.reload(), 0);

    // The file appearing later is picked up by a reload.
    std::fs::copy(
        geo_dir().join("GeoLite2-ASN-Test.mmdb"),
        dir.path().join("absent-asn.mmdb"),
    )
    .unwrap();
    assert_eq!(en.reload(), 1);
    assert_eq!(enriched(&en, "89.160.20.112").src.asn, Some(29518));

    // No geo configured at all: nothing but the internal flag and the device.
    let en = EventEnricher::new(&EnrichConfig::default()).unwrap();
    let e = enriched(&en, "89.160.20.112");
    assert_eq!(e.src.geo, None);
}

#[test]
fn a_corrupt_database_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, b"not a maxmind db").unwrap();
    let mut c = EnrichConfig::default();
    c.geo.city_db = Some(path);
    let e = EventEnricher::new(&c).unwrap_err();
    assert!(matches!(e, EnrichError::GeoDatabase { .. }), "{e:?}");
    assert!(e.to_string().contains("city.mmdb"), "{e}");
}

#[test]
fn a_replaced_database_is_swapped_in_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("city.mmdb");
    // GeoLite2-City-Test lacks 214.0.0.0/24, which GeoIP2-City-Test places in Singapore.
    std::fs::copy(geo_dir().join("GeoLite2-City-Test.mmdb"), &live).unwrap();
    let mut c = EnrichConfig::default();
    c.geo.city_db = Some(live.clone());
    c.geo.ip_cache_size = 1024;
    let en = EventEnricher::new(&c).unwrap();
    assert_eq!(en.geo().info()[0].database_type, "GeoLite2-City");
    let before = enriched(&en, "214.0.0.1");
    assert_eq!(before.src.geo, None);
    assert_eq!(
        place(&enriched(&en, "89.160.20.112")),
        pair("SE", "Linköping")
    );
    assert_eq!(en.reload(), 0, "nothing changed");

    // Hold a lookup guard across the swap, as a worker mid-event would.
    let old_facts = en.lookup("89.160.20.112".parse().unwrap());

    // The safe way to replace a mapped file: write beside it, rename over it.
    let staged = dir.path().join("city.mmdb.tmp");
    std::fs::copy(geo_dir().join("GeoIP2-City-Test.mmdb"), &staged).unwrap();
    std::fs::rename(&staged, &live).unwrap();
    let generation = en.geo().generation();
    assert_eq!(en.reload(), 1);
    assert_eq!(en.geo().generation(), generation + 1);
    assert_eq!(en.geo().info()[0].database_type, "GeoIP2-City");

    let after = enriched(&en, "214.0.0.1");
    assert_eq!(
        place(&after),
        pair("SG", "Singapore"),
        "cache did not hide the new data"
    );
    assert_eq!(old_facts.geo.as_ref().unwrap().city, "Linköping");
    assert_eq!(
        place(&enriched(&en, "89.160.20.112")),
        pair("SE", "Linköping")
    );

    // A broken replacement keeps the working database.
    std::fs::write(&staged, b"garbage").unwrap();
    std::fs::rename(&staged, &live).unwrap();
    assert_eq!(en.reload(), 0);
    assert_eq!(place(&enriched(&en, "214.0.0.1")), pair("SG", "Singapore"));
    // The file disappearing keeps it too.
    std::fs::remove_file(&live).unwrap();
    assert_eq!(en.reload(), 0);
    assert_eq!(place(&enriched(&en, "214.0.0.1")), pair("SG", "Singapore"));
}

#[test]
fn reloader_thread_picks_up_a_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("asn.mmdb");
    let mut c = EnrichConfig::default();
    c.geo.asn_db = Some(live.clone());
    c.geo.reload_interval = DurationText(Duration::from_secs(1));
    let en = Arc::new(EventEnricher::new(&c).unwrap());
    let reloader = en.spawn_reloader().unwrap();
    std::fs::copy(geo_dir().join("GeoLite2-ASN-Test.mmdb"), &live).unwrap();
    let mut asn = None;
    for _ in 0..100 {
        asn = enriched(&en, "89.160.20.112").src.asn;
        if asn.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(asn, Some(29518));
    drop(reloader); // stops and joins at once
}

#[test]
fn cidr_tags_on_events() {
    let dir = tempfile::tempdir().unwrap();
    let egress = dir.path().join("egress.txt");
    std::fs::write(&egress, "# HQ\n89.160.20.112/28\n10.20.0.0/16\n").unwrap();
    let tor = dir.path().join("tor.txt");
    std::fs::write(&tor, "1.124.213.1\n").unwrap();
    let mut c = full_config();
    c.cidr_lists = vec![
        CidrListConfig {
            path: egress,
            tag: "corporate_egress".into(),
            located: true,
        },
        CidrListConfig {
            path: tor,
            tag: "tor_exit".into(),
            located: true,
        },
    ];
    let en = EventEnricher::new(&c).unwrap();
    let e = enriched(&en, "89.160.20.120");
    assert_eq!(e.src.tags, ["corporate_egress"]);
    assert_eq!(place(&e), pair("SE", "Linköping"), "tags and geo together");
    let e = enriched(&en, "10.20.1.1");
    assert_eq!(
        e.src.tags,
        ["corporate_egress"],
        "private ranges are tagged too"
    );
    assert!(e.src.internal);
    assert_eq!(enriched(&en, "1.124.213.1").src.tags, ["tor_exit"]);
    assert!(enriched(&en, "8.8.8.8").src.tags.is_empty());
    // Enriching twice does not duplicate a tag.
    let mut e = event_from("1.124.213.1");
    en.enrich(&mut e);
    en.enrich(&mut e);
    assert_eq!(e.src.tags, ["tor_exit"]);
}

#[test]
fn vpn_egress_lists_say_nothing_about_where_the_user_is() {
    let dir = tempfile::tempdir().unwrap();
    let vpn = dir.path().join("vpn.txt");
    std::fs::write(&vpn, "216.160.83.56/29\n").unwrap();
    let mut c = full_config();
    c.cidr_lists = vec![CidrListConfig {
        path: vpn,
        tag: "corporate_vpn".into(),
        located: false,
    }];
    let en = EventEnricher::new(&c).unwrap();
    let e = enriched(&en, "216.160.83.57");
    assert_eq!(e.src.tags, ["corporate_vpn"]);
    let geo = e.src.geo.as_ref().unwrap();
    assert_eq!(geo.country, "US", "the country and network stay");
    assert_eq!((geo.lat, geo.lon, geo.accuracy_km), (None, None, None));
    // Off the list, the same database gives coordinates.
    let other = enriched(&en, "89.160.20.120");
    assert!(other.src.geo.as_ref().unwrap().lat.is_some());
}

#[test]
fn devices_and_fingerprints_on_events() {
    let en = EventEnricher::new(&EnrichConfig::default()).unwrap();
    let with_ua = |ua: &str| {
        let mut e = event_from("89.160.20.112");
        e.device.user_agent = ua.into();
        en.enrich(&mut e);
        e.device
    };
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let d = with_ua(chrome);
    assert_eq!(
        (d.os.as_str(), d.browser.as_str()),
        ("Windows 10", "Chrome 131")
    );
    assert_eq!(d.kind, DeviceType::Desktop);
    let minor = with_ua(&chrome.replace("131.0.0.0", "131.0.6778.205"));
    assert_eq!(d.fingerprint, minor.fingerprint);
    assert_ne!(
        d.fingerprint,
        with_ua(&chrome.replace("131.0", "132.0")).fingerprint
    );
    assert_eq!(with_ua("python-requests/2.32.3").kind, DeviceType::Bot);
    // No user agent and no device id: no fingerprint rather than one shared by all.
    assert_eq!(with_ua("").fingerprint, "");
}

#[test]
fn parallel_enrichment_agrees_with_serial() {
    let en = Arc::new(EventEnricher::new(&full_config()).unwrap());
    let ips = [
        "89.160.20.112",
        "81.2.69.142",
        "216.160.83.56",
        "175.16.199.1",
        "1.124.213.1",
        "10.0.0.1",
    ];
    let serial: Vec<AuthEvent> = ips.iter().map(|ip| enriched(&en, ip)).collect();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let en = Arc::clone(&en);
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| enriched(&en, ips[i % ips.len()]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (i, e) in t.join().unwrap().into_iter().enumerate() {
            assert_eq!(e, serial[i % ips.len()]);
        }
    }
}

#[test]
fn end_to_end_impossible_travel() {
    let en = EventEnricher::new(&full_config()).unwrap();
    let mut profiles = UserProfiles::new(&ProfileConfig::default());
    let mut first = event_from("89.160.20.112"); // Linköping
    en.enrich(&mut first);
    profiles.observe(&mut first);
    let mut second = event_from("175.16.199.1"); // Changchun, 20 minutes later
    second.time += 20 * 60_000;
    en.enrich(&mut second);
    profiles.observe(&mut second);
    let speed = second.context.speed_kmh.unwrap();
    assert!(speed > 2_000.0, "{speed}");
    assert!(second.context.new_country && second.context.new_asn == second.src.asn.is_some());
    assert_eq!(
        second.context.previous.as_ref().and_then(|p| p.ip),
        first.src.ip
    );
}

/// Regression: the IPv4-mapped form was located as IPv4 but kept on the event, so rules keyed
/// by address and the profiles' "previous address" counted `::ffff:a.b.c.d` and `a.b.c.d` as
/// two sources (stuffing split across the two forms raised nothing).
#[test]
fn ipv6_forms_of_an_ipv4_address_are_written_back_as_that_address() {
    let en = EventEnricher::new(&full_config()).unwrap();
    for (given, canonical) in [
        ("::ffff:89.160.20.112", "89.160.20.112"),
        ("::89.160.20.112", "89.160.20.112"),
        ("64:ff9b::89.160.20.112", "89.160.20.112"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("89.160.20.112", "89.160.20.112"),
        ("2a02:ec0::1", "2a02:ec0::1"),
    ] {
        let e = enriched(&en, given);
        assert_eq!(e.src.ip, Some(canonical.parse().unwrap()), "{given}");
    }
    assert_eq!(
        enriched(&en, "::ffff:89.160.20.112"),
        enriched(&en, "89.160.20.112"),
        "one address, one event"
    );
    // With enrichment off too: it is the address's normal form, not a fact added to it, and
    // the rules key on it either way.
    let mut off = full_config();
    off.enabled = false;
    let en = EventEnricher::new(&off).unwrap();
    let e = enriched(&en, "::ffff:89.160.20.112");
    assert_eq!(e.src.ip, Some("89.160.20.112".parse().unwrap()));
    assert_eq!(e.src.geo, None, "nothing else is done");
}
