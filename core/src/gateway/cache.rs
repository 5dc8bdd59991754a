//! Small in-process caches for the gateway's hot path: API key -> clinic, clinic -> limits,
//! clinic and provider -> decrypted key. Entries live a short time; changes made anywhere are
//! announced over Redis pub/sub so every replica drops what it holds at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A map whose entries expire. Values are dropped (and so zeroized, for secrets) when they
/// expire, are replaced or are invalidated.
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut map = self.lock();
        match map.get(key) {
            Some((at, v)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    /// Drops every entry for which `pred` holds.
    pub fn remove_where(&self, pred: impl Fn(&K, &V) -> bool) {
        self.lock().retain(|k, (_, v)| !pred(k, v));
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
    fn a_full_cache_makes_room() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        cache.insert(1, 1);
        cache.insert(2, 2);
        cache.insert(3, 3);
        assert_eq!(cache.get(&3), Some(3));
        assert!(cache.len() <= 2);
    }
}
