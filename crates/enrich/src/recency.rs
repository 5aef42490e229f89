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
//! The log is rebuilt from the table when it holds twice as many records as there are entries
//! plus a constant (`LOG_SLACK`) at a touch or insert, so it never holds more than
//! `2 × capacity + 1024` records of 16 bytes (32 MiB at a million users; removals leave it larger
//! than that relative to the entries left until the next touch), and the rebuild (a sequential
//! scan and a sort) is paid once per `entries + 1024` touches.

use authwatch_event::Text;
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::hash::BuildHasher;

/// Records beyond twice the live entries that the log may hold before it is rebuilt.
const LOG_SLACK: usize = 1024;

struct Slot<V> {
    hash: u64,
    stamp: u64,
    key: Text,
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

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Rebuilds the log when it is about to pass its bound; called before each record appended.
    fn make_room(&mut self) {
        if self.order.len() >= 2 * self.table.len() + LOG_SLACK {
            self.rebuild_order();
        }
    }

    /// The value of `key`, marked most recently used with `stamp`.
    pub(crate) fn get_mut(&mut self, key: &str, stamp: u64) -> Option<&mut V> {
        self.make_room();
        let hash = self.hash(key);
        let slot = self.table.find_mut(hash, |s| s.key.as_str() == key)?;
        slot.stamp = stamp;
        self.order.push_back((stamp, hash));
        Some(&mut slot.value)
    }

    /// Removes `key`; its log record becomes stale.
    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        let hash = self.hash(key);
        let entry = self
            .table
            .find_entry(hash, |s| s.key.as_str() == key)
            .ok()?;
        Some(entry.remove().0.value)
    }

    /// Inserts `key` as the most recently used entry; when the map was full, evicts and
    /// returns the least recently used one. A key already present (only a damaged snapshot
    /// repeats one) has its value replaced, and nothing is evicted.
    pub(crate) fn insert(&mut self, key: Text, value: V, stamp: u64) -> Option<(Text, V)> {
        self.make_room();
        let hash = self.hash(key.as_str());
        if let Some(slot) = self.table.find_mut(hash, |s| s.key == key) {
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
                key,
                value,
            },
            |s| s.hash,
        );
        self.order.push_back((stamp, hash));
        evicted
    }

    /// The least recently used entry. Stale records met at the front of the log are dropped;
    /// the first live one is found with the same probe that returns it.
    pub(crate) fn peek_lru(&mut self) -> Option<(&Text, &V)> {
        while let Some(&(stamp, hash)) = self.order.front() {
            if let Some(s) = self.table.find(hash, |s| s.stamp == stamp) {
                return Some((&s.key, &s.value));
            }
            self.order.pop_front();
        }
        None
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_lru(&mut self) -> Option<(Text, V)> {
        while let Some((stamp, hash)) = self.order.pop_front() {
            if let Ok(entry) = self.table.find_entry(hash, |s| s.stamp == stamp) {
                let slot = entry.remove().0;
                return Some((slot.key, slot.value));
            }
        }
        None
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Text, &V)> {
        self.table.iter().map(|s| (&s.key, &s.value))
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
        assert!(map.insert(Text::new("a"), 1, 1).is_none());
        assert!(map.insert(Text::new("b"), 2, 2).is_none());
        assert!(
            map.insert(Text::new("a"), 3, 3).is_none(),
            "nothing evicted"
        );
        assert_eq!(map.len(), 2);
        assert_eq!(map.get_mut("a", 4).copied(), Some(3));
        let lru = map.pop_lru().map(|(k, v)| (k.as_str().to_owned(), v));
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
                        let evicted = map.insert(Text::new(&key), i, stamp);
                        let expected = (reference.0.len() >= cap)
                            .then(|| reference.0.pop_front())
                            .flatten();
                        reference.0.push_back((key.clone(), i));
                        assert_eq!(
                            evicted.map(|(k, v)| (k.as_str().to_owned(), v)),
                            expected,
                            "step {i}"
                        );
                    }
                }
            }
            assert_eq!(map.len(), reference.0.len());
            assert!(map.order.len() <= 2 * map.len() + LOG_SLACK + 1);
        }
        let lru = map.peek_lru().map(|(k, v)| (k.as_str().to_owned(), *v));
        assert_eq!(lru, reference.0.front().cloned());
        let mut drained = Vec::new();
        while let Some((k, v)) = map.pop_lru() {
            drained.push((k.as_str().to_owned(), v));
        }
        assert_eq!(drained, Vec::from(reference.0));
    }
}
