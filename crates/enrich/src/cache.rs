//! A small bounded cache shared by the worker threads.
//!
//! One `Mutex<LruCache>` would serialize every worker on one lock; sixteen shards chosen by key
//! hash make two workers meet on the same lock rarely, while each shard stays a plain LRU.

use lru::LruCache;
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

const SHARDS: usize = 16;

/// A sharded LRU map; the total capacity is split evenly between the shards.
pub(crate) struct ShardedLru<K, V> {
    shards: Box<[Mutex<LruCache<K, V>>]>,
    // Seeded per process: keys (user agents, addresses) come from outside, and a fixed hash
    // would let a sender pile every key onto one shard.
    hasher: RandomState,
}

impl<K: Hash + Eq, V: Clone> ShardedLru<K, V> {
    /// A cache of about `capacity` entries, or `None` for `capacity == 0` (no caching).
    pub(crate) fn new(capacity: usize) -> Option<Self> {
        let per_shard = NonZeroUsize::new(capacity.div_ceil(SHARDS))?;
        Some(ShardedLru {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
        })
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<LruCache<K, V>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[i]
    }

    /// The cached value, marking it recently used.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // A panic while holding the lock cannot leave an LruCache half-updated in a way that
        // matters for a cache (at worst one entry is lost), so a poisoned lock is used as is.
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(key).cloned()
    }

    /// Stores a value, evicting the shard's least recently used entry when full.
    pub(crate) fn put(&self, key: K, value: V) {
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.put(key, value);
    }

    /// Entries held, over all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_borrowed_lookup() {
        assert!(ShardedLru::<String, u32>::new(0).is_none());
        let c: ShardedLru<Box<str>, u32> = ShardedLru::new(32).unwrap();
        for i in 0..1000u32 {
            c.put(i.to_string().into_boxed_str(), i);
        }
        assert!(c.len() <= 32, "{}", c.len());
        c.put("ua".into(), 7);
        assert_eq!(c.get("ua"), Some(7));
    }
}
