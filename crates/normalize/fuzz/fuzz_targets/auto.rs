//! Format detection and every parser behind it: any bytes give an event or a rejection, and an
//! accepted event survives the encoders.
#![no_main]

use authwatch_normalize::{Format, Limits, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let norm = Format::Auto.normalizer();
    if let Ok(event) = norm.normalize(data, 0, &Limits::default()) {
        let mut out = Vec::new();
        for format in Format::CONCRETE {
            out.clear();
            let _ = encode(*format, &event, &mut out);
        }
    }
});
