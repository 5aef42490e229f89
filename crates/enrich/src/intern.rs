//! Names from the geo databases, kept once for the life of the process.
//!
//! Every event from a public address gets its AS organisation (and city) copied from the lookup
//! cache. A name longer than the 24 bytes a `Text` holds inline ("DoD Network Information
//! Center", "China Unicom Beijing Province Network") cost a heap allocation on a worker and a
//! free on the detect thread for every such event: more than half the events of the bench's
//! traffic. Interned, the copy is a pointer (`Text::from_static`).
//!
//! Memory: one copy of each distinct long name looked up, for the life of the process. That is
//! bounded by the names in the databases (GeoLite2 ASN has about 80,000 organisations, about
//! 2 MiB), reloads included, since a name seen again is found, not stored again; and it is
//! capped at [`MAX_BYTES`], past which names are copied per event as before.

use authwatch_event::Text;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Most bytes of names kept. Far above what real databases hold; a guard against a database
/// built to exhaust memory, not a limit expected to be reached.
const MAX_BYTES: usize = 32 << 20;

/// Longest string a `Text` stores inline: such names are copied, never interned.
const INLINE: usize = 24;

#[derive(Default)]
struct Names {
    set: HashSet<&'static str>,
    bytes: usize,
}

fn names() -> &'static Mutex<Names> {
    static NAMES: OnceLock<Mutex<Names>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}

/// `name` as a `Text`, interned when it is too long to be stored inline. Called on lookup-cache
/// misses only, so the lock is taken a few thousand times per run, not per event.
pub(crate) fn name(name: &str) -> Text {
    if name.len() <= INLINE {
        return Text::new(name);
    }
    // A panic elsewhere while holding the lock leaves the set consistent (an insert either
    // happened or not), so a poisoned lock is still usable.
    let mut names = names().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&kept) = names.set.get(name) {
        return Text::from_static(kept);
    }
    if names.bytes.saturating_add(name.len()) > MAX_BYTES {
        return Text::new(name);
    }
    // Leaked on purpose: the set keeps it for the life of the process (see the module docs
    // for the bound).
    let kept: &'static str = Box::leak(Box::from(name));
    names.set.insert(kept);
    names.bytes += kept.len();
    Text::from_static(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_stored_once_and_shared() {
        let long = "An Organisation Name Longer Than Twenty-Four Bytes";
        // The same name read again from a database: equal bytes at another address.
        let again = String::from(long);
        let a = name(long);
        let b = name(&again);
        assert_eq!(a, long);
        assert_eq!(b, long);
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr(), "one copy");
        assert_eq!(
            a.clone().as_str().as_ptr(),
            a.as_str().as_ptr(),
            "a clone is a pointer"
        );
        // Short names stay inline, outside the set.
        let short = name("Bredband2 AB");
        assert_eq!(short, "Bredband2 AB");
        assert!(
            !names()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set
                .contains("Bredband2 AB")
        );
    }
}
