//! MaxMind's test databases (data/geo, Apache-2.0/MIT), bundled so that the demo and the
//! benchmark show geo, ASN and anonymizer enrichment with nothing installed: the generator draws
//! its addresses from their networks.

use anyhow::{Context, Result};
use authwatch_enrich::GeoConfig;
use std::path::Path;

const CITY: &[u8] = include_bytes!("../../../data/geo/GeoIP2-City-Test.mmdb");
const ASN: &[u8] = include_bytes!("../../../data/geo/GeoLite2-ASN-Test.mmdb");
const ANONYMOUS: &[u8] = include_bytes!("../../../data/geo/GeoIP2-Anonymous-IP-Test.mmdb");

/// Writes the bundled databases into `dir` (the enricher memory-maps files) and points `geo` at
/// them.
pub fn install(dir: &Path, geo: &mut GeoConfig) -> Result<()> {
    let write = |name: &str, bytes: &[u8]| -> Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(path)
    };
    geo.city_db = Some(write("GeoIP2-City-Test.mmdb", CITY)?);
    geo.asn_db = Some(write("GeoLite2-ASN-Test.mmdb", ASN)?);
    geo.anonymous_db = Some(write("GeoIP2-Anonymous-IP-Test.mmdb", ANONYMOUS)?);
    Ok(())
}
