//! A bounded map with exact least-recently-used eviction, laid out for lookups that miss the
//! CPU cache.
//!
//! The profile store looks up one user per event among hundreds of thousands. A linked-list LRU
//! (the `lru` crate) pays for that with a pointer chase to the entry and, to move it to the
//! front, to both of its neighbours: on a 1M-event replay that lookup was half of everything
//! enrichment cost (perf: 1,090 of 2,130 extra samples). Here entries live inline in one hash
//! table, and recency is an append-only log of `(stamp, hash)` records, oldest first: a touch
//! writes the entry's new stamp and appends one record. The record whose stamp equals its
//! entry's is the entry's place in the order; every other record is stale and is skipped when
//! the front of the log is read. Stamps are unique and increasing, so the first live record is
//! exactly the least recently used entry, as with a linked list.
//!
//! The log is rebuilt from the table when it holds four times as many records as there are
//! entries plus a constant (`LOG_SLACK`) at a touch or insert, so it never holds more than
//! `4 × capacity + 1024` records of 16 bytes (64 MiB at a million users, against about 350 MiB
//! of slots; removals leave it larger than that relative to the entries left until the next
//! touch), and the rebuild (a sequential scan and a sort) is paid once per `3 × entries + 1024`
//! touches. At twice the entries the sort was 3–4 % of the detect thread's time.
//!
//! A slot holds its key inline when it fits ([`INLINE_KEY`] bytes): user keys are mostly e-mail
//! addresses, longer than the 24 bytes a `Text` keeps inline, and a key on the heap costs a
//! second cache miss after the slot's own on every lookup, to compare it.

use hashbrown::HashTable;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// Records beyond four times the live entries that the log may hold before it is rebuilt.
const LOG_SLACK: usize = 1024;

/// How many live entries' worth of records the log may hold before it is rebuilt.
const LOG_FACTOR: usize = 4;

/// Longest key stored inside its slot; with its length and tag the key takes 48 bytes, so
/// hash, stamp and key share the slot's first 64 bytes.
pub(crate) const INLINE_KEY: usize = 46;

/// A key, inside the slot when it fits.
enum SlotKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<str>),
}

impl SlotKey {
    fn new(key: &str) -> SlotKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..key.len()].copy_from_slice(key.as_bytes());
                SlotKey::Inline { len, bytes }
            }
            _ => SlotKey::Heap(key.into()),
        }
    }

    /// The hot path compares bytes: no UTF-8 check per lookup.
    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            SlotKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            SlotKey::Heap(key) => key.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // The bytes were copied from a `&str` whole, so they are valid UTF-8; the empty
            // fallback is unreachable.
            SlotKey::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            SlotKey::Heap(key) => key,
        }
    }
}

// In this order, so that what a lookup reads first (hash, stamp, key) is one cache line.
#[repr(C)]
struct Slot<V> {
    hash: u64,
    stamp: u64,
    key: SlotKey,
    value: V,
}

/// A map from user keys to `V`, holding at most `capacity` entries; inserting into a full map
/// evicts the entry touched least recently. Stamps come from the caller, which must pass
/// strictly increasing ones (it keeps them in its own snapshots).
pub(crate) struct RecencyMap<V> {
    capacity: usize,
    // Seeded per process: user names come from outside, and a fixed hash would let a sender
    // pile keys into one probe sequence.
    hasher: foldhash::fast::RandomState,
    table: HashTable<Slot<V>>,
    order: VecDeque<(u64, u64)>,
}

impl<V> RecencyMap<V> {
    /// An empty map of at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        RecencyMap {
            capacity: capacity.max(1),
            hasher: foldhash::fast::RandomState::default(),
            table: HashTable::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Keys are hashed and compared as bytes: a lookup needs no UTF-8 check of a key built
    /// from string parts (the profile key), and a `&str` and its bytes find the same entry.
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Rebuilds the log when it is about to pass its bound; called before each record appended.
    fn make_room(&mut self) {
        if self.order.len() >= LOG_FACTOR * self.table.len() + LOG_SLACK {
            self.rebuild_order();
        }
    }

    /// The value of `key`, marked most recently used with `stamp`.
    pub(crate) fn get_mut<K: AsRef<[u8]> + ?Sized>(
        &mut self,
        key: &K,
        stamp: u64,
    ) -> Option<&mut V> {
        let key = key.as_ref();
        self.make_room();
        let hash = self.hash(key);
        let slot = self.table.find_mut(hash, |s| s.key.as_bytes() == key)?;
        slot.stamp = stamp;
        self.order.push_back((stamp, hash));
        Some(&mut slot.value)
    }

    /// The value of `key`, leaving the recency order as it is.
    pub(crate) fn get<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<&V> {
        let key = key.as_ref();
        let hash = self.hash(key);
        self.table
            .find(hash, |s| s.key.as_bytes() == key)
            .map(|s| &s.value)
    }

    /// Starts loading `key`'s entry into the cache and returns at once. A lookup among many
    /// users misses the cache on the entry (perf: three quarters of `get_mut`'s samples on the
    /// load of the slot, about 100 ns per event on the detect thread); issued one event ahead,
    /// the load overlaps the rules' work on the event before.
    ///
    /// The entry is found by its 7-bit tag alone: the probe reads only the table's control
    /// bytes, never the entries, so nothing here waits for memory. A tag shared with another
    /// key (rare) prefetches the wrong entry, which costs nothing but the wasted load.
    #[inline]
    pub(crate) fn prefetch<K: AsRef<[u8]> + ?Sized>(&self, key: &K) {
        let hash = self.hash(key.as_ref());
        if let Some(slot) = self.table.find(hash, |_| true) {
            prefetch_lines(slot);
        }
    }

    /// Removes `key`; its log record becomes stale.
    pub(crate) fn remove<K: AsRef<[u8]> + ?Sized>(&mut self, key: &K) -> Option<V> {
        let key = key.as_ref();
        let hash = self.hash(key);
        let entry = self
            .table
            .find_entry(hash, |s| s.key.as_bytes() == key)
            .ok()?;
        Some(entry.remove().0.value)
    }

    /// Inserts `key` as the most recently used entry; when the map was full, evicts and
    /// returns the least recently used one. A key already present (only a damaged snapshot
    /// repeats one) has its value replaced, and nothing is evicted.
    pub(crate) fn insert(&mut self, key: &str, value: V, stamp: u64) -> Option<(String, V)> {
        self.make_room();
        let hash = self.hash(key.as_bytes());
        if let Some(slot) = self
            .table
            .find_mut(hash, |s| s.key.as_bytes() == key.as_bytes())
        {
            slot.value = value;
            slot.stamp = stamp;
            self.order.push_back((stamp, hash));
            return None;
        }
        let evicted = if self.table.len() >= self.capacity {
            self.pop_lru()
        } else {
            None
        };
        self.table.insert_unique(
            hash,
            Slot {
                hash,
                stamp,
                key: SlotKey::new(key),
                value,
            },
            |s| s.hash,
        );
        self.order.push_back((stamp, hash));
        evicted
    }

    /// The value of the least recently used entry (the profile store's expiry reads it for
    /// every event, so the key is not turned back into a `&str`). Stale records met at the
    /// front of the log are dropped; the first live one is found with the same probe that
    /// returns it.
    pub(crate) fn peek_lru(&mut self) -> Option<&V> {
        while let Some(&(stamp, hash)) = self.order.front() {
            if let Some(s) = self.table.find(hash, |s| s.stamp == stamp) {
                return Some(&s.value);
            }
            self.order.pop_front();
        }
        None
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_lru(&mut self) -> Option<(String, V)> {
        while let Some((stamp, hash)) = self.order.pop_front() {
            if let Ok(entry) = self.table.find_entry(hash, |s| s.stamp == stamp) {
                let slot = entry.remove().0;
                return Some((slot.key.as_str().to_owned(), slot.value));
            }
        }
        None
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.table.iter().map(|s| (s.key.as_str(), &s.value))
    }

    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.order.clear();
    }

    /// One live record per entry, oldest first: a sequential scan of the table and a sort.
    fn rebuild_order(&mut self) {
        let mut live: Vec<(u64, u64)> = self.table.iter().map(|s| (s.stamp, s.hash)).collect();
        live.sort_unstable();
        self.order = live.into();
    }
}

/// Asks the CPU to bring every cache line of `value` into the cache, without waiting.
#[inline]
fn prefetch_lines<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = std::ptr::from_ref(value).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: `_mm_prefetch` is a hint: it never faults and never reads into the
            // program, whatever the address, so any pointer is sound. This one points into
            // `value`, a live reference, at an offset within its size (`wrapping_add` keeps
            // the pointer arithmetic itself free of requirements).
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// The obvious LRU: a list, most recent at the back.
    #[derive(Default)]
    struct Reference(VecDeque<(String, u32)>);

    impl Reference {
        fn touch(&mut self, key: &str) -> Option<u32> {
            let i = self.0.iter().position(|(k, _)| k == key)?;
            let e = self.0.remove(i)?;
            self.0.push_back(e.clone());
            Some(e.1)
        }
    }

    #[test]
    fn a_repeated_key_replaces_its_entry() {
        let mut map: RecencyMap<u32> = RecencyMap::new(2);
        assert!(map.insert("a", 1, 1).is_none());
        assert!(map.insert("b", 2, 2).is_none());
        assert!(map.insert("a", 3, 3).is_none(), "nothing evicted");
        assert_eq!(map.len(), 2);
        assert_eq!(map.get_mut("a", 4).copied(), Some(3));
        let lru = map.pop_lru();
        assert_eq!(lru, Some(("b".to_owned(), 2)));
    }

    #[test]
    fn evicts_exactly_the_least_recently_used_through_log_rebuilds() {
        let cap = 50;
        let mut map: RecencyMap<u32> = RecencyMap::new(cap);
        let mut reference = Reference::default();
        let mut stamp = 0u64;
        // A deterministic mix of hits, inserts (with evictions) and removals, long enough for
        // many log rebuilds.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("user{}", x % 120);
            stamp += 1;
            match (x >> 40) % 10 {
                0 => assert_eq!(map.remove(&key), {
                    let at = reference.0.iter().position(|(k, _)| *k == key);
                    at.and_then(|i| reference.0.remove(i)).map(|e| e.1)
                }),
                _ => {
                    let got = map.get_mut(&key, stamp).map(|v| *v);
                    assert_eq!(got, reference.touch(&key), "step {i}");
                    if got.is_none() {
                        let evicted = map.insert(&key, i, stamp);
                        let expected = (reference.0.len() >= cap)
                            .then(|| reference.0.pop_front())
                            .flatten();
                        reference.0.push_back((key.clone(), i));
                        assert_eq!(evicted, expected, "step {i}");
                    }
                }
            }
            assert_eq!(map.len(), reference.0.len());
            assert!(map.order.len() <= LOG_FACTOR * map.len() + LOG_SLACK + 1);
        }
        assert_eq!(
            map.peek_lru().copied(),
            reference.0.front().map(|(_, v)| *v)
        );
        let mut drained = Vec::new();
        while let Some(entry) = map.pop_lru() {
            drained.push(entry);
        }
        assert_eq!(drained, Vec::from(reference.0));
    }

    #[test]
    fn keys_inline_and_on_the_heap_are_found_and_given_back_whole() {
        let max = "m".repeat(INLINE_KEY);
        let over = "o".repeat(INLINE_KEY + 1);
        // Multi-byte characters on both sides of the limit.
        let kana = "ユーザー名@example.co.jp"; // 29 bytes: inline
        let kana_long = "やまだ.たろう.ユーザー名@example.co.jp"; // 49 bytes: heap
        let keys = ["", "a", max.as_str(), over.as_str(), kana, kana_long];
        assert_eq!(std::mem::size_of::<SlotKey>(), 48);
        let mut map: RecencyMap<usize> = RecencyMap::new(keys.len());
        for (i, key) in keys.iter().enumerate() {
            assert!(map.insert(key, i, i as u64 + 1).is_none());
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.get_mut(key, 100 + i as u64).copied(), Some(i), "{key}");
            // Its bytes are the same key (the profile store looks up by bytes).
            assert_eq!(map.get(key.as_bytes()).copied(), Some(i), "{key}");
        }
        // A prefix of a stored key, or the key with one more byte, is another key.
        assert!(map.get_mut(&max[1..], 200).is_none());
        assert!(map.get_mut(&format!("{over}o"), 201).is_none());
        let mut listed: Vec<(String, usize)> =
            map.iter().map(|(k, v)| (k.to_owned(), *v)).collect();
        listed.sort_by_key(|(_, v)| *v);
        let expected: Vec<(String, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), i))
            .collect();
        assert_eq!(listed, expected);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.pop_lru(), Some((key.to_string(), i)));
        }
    }
}
