//! The entra parser: any bytes give an event or a rejection, never a panic.
#![no_main]

use authwatch_normalize::{Format, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Format::Entra.normalizer().normalize(data, 0, &Limits::default());
});
