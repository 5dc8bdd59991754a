//! Small in-process caches for the gateway's hot path: API key -> clinic, clinic -> limits,
//! clinic and provider -> decrypted key. Entries live a short time; changes made anywhere are
//! announced over Redis pub/sub so every replica drops what it holds at once.

use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One entry: when it was stored (it expires from then), when it was last read (the least
/// recently read go first when the cache is full), and its value.
struct Entry<V> {
    stored: Instant,
    read: Instant,
    value: V,
}

/// A map whose entries expire, and which drops its least recently read entries when full.
/// Values are dropped (and so zeroized, for secrets) when they expire, are evicted, replaced or
/// invalidated.
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<crate::FastMap<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            map: Mutex::new(crate::FastMap::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::FastMap<K, Entry<V>>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(e) => {
                let now = Instant::now();
                if now.saturating_duration_since(e.stored) >= self.ttl {
                    map.remove(key);
                    return None;
                }
                e.read = now;
                Some(e.value.clone())
            }
            None => None,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            let ttl = self.ttl;
            map.retain(|_, e| e.stored.elapsed() < ttl);
            if map.len() >= self.max {
                // Evict the least recently read tenth at once, so a full cache pays for the
                // scan once every `max / 10` inserts rather than on each.
                let mut reads: Vec<Instant> = map.values().map(|e| e.read).collect();
                let n = (self.max / 10).max(1).min(reads.len());
                let (_, cutoff, _) = reads.select_nth_unstable(n - 1);
                let cutoff = *cutoff;
                map.retain(|_, e| e.read > cutoff);
            }
        }
        let now = Instant::now();
        map.insert(
            key,
            Entry {
                stored: now,
                read: now,
                value,
            },
        );
    }

    /// Drops every entry for which `pred` holds.
    pub fn remove_where(&self, pred: impl Fn(&K, &V) -> bool) {
        self.lock().retain(|k, e| !pred(k, &e.value));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_invalidated() {
        let cache = TtlCache::new(Duration::from_millis(30), 10);
        cache.insert(1, "a");
        cache.insert(2, "b");
        assert_eq!(cache.get(&1), Some("a"));
        cache.remove_where(|k, _| *k == 1);
        assert_eq!(cache.get(&1), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&2), None);
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_read() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        for k in 0..10 {
            cache.insert(k, k);
            std::thread::sleep(Duration::from_millis(1));
        }
        // Key 0 is read again: the least recently read is now key 1.
        assert_eq!(cache.get(&0), Some(0));
        cache.insert(10, 10);
        assert_eq!(cache.len(), 10);
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&0), Some(0));
        assert_eq!(cache.get(&10), Some(10));
        assert_eq!(cache.get(&2), Some(2));
    }
}
