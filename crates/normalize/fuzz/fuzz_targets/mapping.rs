//! Mapping files: any YAML gives a mapping or an error with a position, never a panic; a
//! loaded mapping never panics on any line.
#![no_main]

use authwatch_normalize::{Limits, Mapping, Normalizer};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // The first line is the mapping's YAML (with `\n` escapes), the rest the log line.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (yaml, line) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(m) = Mapping::parse(&yaml.replace("\\n", "\n"), Path::new("fuzz.yaml")) {
        let _ = m.normalize(line.as_bytes(), 0, &Limits::default());
    }
});
