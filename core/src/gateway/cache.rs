//! Small in-process caches for the gateway's hot path: API key -> clinic, clinic -> limits,
//! clinic and provider -> decrypted key. Entries live a short time; changes made anywhere are
//! announced over Redis pub/sub so every replica drops what it holds at once.
//!
//! A busy clinic never finds its entry gone: the first call in an entry's last quarter of life
//! reads it again while the others go on with the entry it replaces. A key that is not held
//! (the first calls, or the first after a change) is read once: the calls that want it
//! meanwhile wait for that read, and read it themselves only if it failed.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One entry: when it was stored (it expires from then), when it was last read (the least
/// recently read go first when the cache is full), whether a call is reading it again, and its
/// value.
struct Entry<V> {
    stored: Instant,
    read: Instant,
    refreshing: bool,
    value: V,
}

/// What a lookup found.
enum Found<V> {
    /// A value to use as it is.
    Fresh(V),
    /// A value in its last quarter of life, which this call is to read again (stored at
    /// `stored`).
    Refresh(Instant),
    Missing,
}

/// A map whose entries expire, and which drops its least recently read entries when full.
/// Values are dropped (and so zeroized, for secrets) when they expire, are evicted, replaced or
/// invalidated.
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<crate::FastMap<K, Entry<V>>>,
    /// Reads of keys not held, in progress: the calls that want the same key wait for the
    /// gate's lock, held by the call that reads it.
    loads: Mutex<crate::FastMap<K, Arc<tokio::sync::Mutex<()>>>>,
    /// Counts invalidations: a value read before one is not stored after it.
    generation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            map: Mutex::new(crate::FastMap::default()),
            loads: Mutex::new(crate::FastMap::default()),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, crate::FastMap<K, Entry<V>>> {
        lock(&self.map)
    }

    pub fn get(&self, key: &K) -> Option<V> {
        match self.find(key, false) {
            Found::Fresh(v) => Some(v),
            _ => None,
        }
    }

    /// The value for `key`: held, or read by `load` and stored (see the module's doc). An
    /// error of `load` is returned and nothing is stored; an entry that could not be read again
    /// is dropped.
    pub async fn get_or_load<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        match self.find(key, true) {
            Found::Fresh(v) => Ok(v),
            Found::Refresh(stored) => {
                let loaded = self.load(key, load).await;
                if loaded.is_err() {
                    let mut map = self.lock();
                    if map.get(key).is_some_and(|e| e.stored == stored) {
                        map.remove(key);
                    }
                }
                loaded
            }
            Found::Missing => {
                let gate = {
                    let mut loads = lock(&self.loads);
                    match loads.get(key) {
                        Some(gate) => Err(Arc::clone(gate)),
                        None => {
                            let gate = Arc::new(tokio::sync::Mutex::new(()));
                            let held = Arc::clone(&gate).try_lock_owned();
                            loads.insert(key.clone(), Arc::clone(&gate));
                            Ok(Leader {
                                loads: &self.loads,
                                key,
                                gate,
                                _held: held.ok(),
                            })
                        }
                    }
                };
                match gate {
                    Ok(_leader) => self.load(key, load).await,
                    Err(gate) => {
                        drop(gate.lock().await);
                        match self.get(key) {
                            Some(v) => Ok(v),
                            // The read failed, or a change came while it was made.
                            None => self.load(key, load).await,
                        }
                    }
                }
            }
        }
    }

    /// Looks `key` up (an expired entry is dropped); with `claim`, an entry in its last quarter
    /// of life that no call is reading again is claimed for this one.
    fn find(&self, key: &K, claim: bool) -> Found<V> {
        let mut map = self.lock();
        let Some(e) = map.get_mut(key) else {
            return Found::Missing;
        };
        let now = Instant::now();
        let age = now.saturating_duration_since(e.stored);
        if age >= self.ttl {
            map.remove(key);
            return Found::Missing;
        }
        e.read = now;
        if claim && !e.refreshing && age >= self.ttl - self.ttl / 4 {
            e.refreshing = true;
            return Found::Refresh(e.stored);
        }
        Found::Fresh(e.value.clone())
    }

    /// Reads `key` with `load` and stores it, unless an invalidation came meanwhile.
    async fn load<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let generation = self.generation.load(Ordering::Acquire);
        let value = load().await?;
        self.store(key.clone(), value.clone(), Some(generation));
        Ok(value)
    }

    pub fn insert(&self, key: K, value: V) {
        self.store(key, value, None);
    }

    fn store(&self, key: K, value: V, read_at: Option<u64>) {
        let mut map = self.lock();
        if read_at.is_some_and(|g| g != self.generation.load(Ordering::Acquire)) {
            return;
        }
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
                refreshing: false,
                value,
            },
        );
    }

    /// Drops every entry for which `pred` holds; values being read now are not stored.
    pub fn remove_where(&self, pred: impl Fn(&K, &V) -> bool) {
        let mut map = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.retain(|k, e| !pred(k, &e.value));
    }

    pub fn clear(&self) {
        let mut map = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The call that reads a key not held: when it is done (or dropped), the key's gate is taken
/// away and then opened for the calls waiting at it.
struct Leader<'a, K: Eq + Hash> {
    loads: &'a Mutex<crate::FastMap<K, Arc<tokio::sync::Mutex<()>>>>,
    key: &'a K,
    gate: Arc<tokio::sync::Mutex<()>>,
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash> Drop for Leader<'_, K> {
    fn drop(&mut self) {
        let mut loads = lock(self.loads);
        if loads
            .get(self.key)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate))
        {
            loads.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
        /// Makes `key`'s entry `by` older.
        fn age(&self, key: &K, by: Duration) {
            if let Some(e) = self.lock().get_mut(key) {
                e.stored -= by;
            }
        }
    }

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

    /// A loader that counts its reads, and answers `value` once `open` is notified.
    async fn counted(
        reads: &AtomicUsize,
        open: &tokio::sync::Notify,
        value: Result<u32, &'static str>,
    ) -> Result<u32, &'static str> {
        reads.fetch_add(1, Ordering::SeqCst);
        open.notified().await;
        value
    }

    #[tokio::test]
    async fn calls_that_want_a_key_not_held_read_it_once() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let reads = AtomicUsize::new(0);
        let open = tokio::sync::Notify::new();
        let calls = futures_util::future::join_all(
            (0..32).map(|_| cache.get_or_load(&1, || counted(&reads, &open, Ok(7)))),
        );
        let opener = async {
            while reads.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
            open.notify_waiters();
        };
        let (answers, ()) = tokio::join!(calls, opener);
        assert!(answers.iter().all(|a| *a == Ok(7)));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get(&1), Some(7));
    }

    #[tokio::test]
    async fn when_the_one_read_fails_the_waiting_calls_read_again() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let reads = AtomicUsize::new(0);
        let open = tokio::sync::Notify::new();
        let first = cache.get_or_load(&1, || counted(&reads, &open, Err("down")));
        let others = futures_util::future::join_all((0..3).map(|_| {
            cache.get_or_load(&1, || async {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, &str>(8)
            })
        }));
        let opener = async {
            while reads.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            // The others are waiting at the gate, not reading.
            tokio::task::yield_now().await;
            assert_eq!(reads.load(Ordering::SeqCst), 1);
            open.notify_waiters();
        };
        let (first, others, ()) = tokio::join!(first, others, opener);
        assert_eq!(first, Err("down"));
        assert!(others.iter().all(|a| *a == Ok(8)));
        // The first call let through read it; those after it found what it stored.
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_entry_near_its_end_is_read_again_by_one_call_while_the_others_use_it() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        cache.insert(1, 1);
        let reads = AtomicUsize::new(0);
        let open = tokio::sync::Notify::new();
        // In its first three quarters an entry is used as it is.
        cache.age(&1, Duration::from_secs(44));
        let held = cache.get_or_load(&1, || async { Err::<u32, _>("not read") });
        assert_eq!(held.await, Ok(1));
        cache.age(&1, Duration::from_secs(1));
        let refresh = cache.get_or_load(&1, || counted(&reads, &open, Ok(2)));
        let others = async {
            while reads.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(
                    cache
                        .get_or_load(&1, || async { Err::<u32, _>("not read") })
                        .await,
                );
            }
            open.notify_waiters();
            answers
        };
        let (refreshed, others) = tokio::join!(refresh, others);
        assert_eq!(refreshed, Ok(2));
        assert!(others.iter().all(|a| *a == Ok(1)));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get(&1), Some(2));
        // The new value lives a whole life again.
        cache.age(&1, Duration::from_secs(44));
        assert_eq!(cache.get(&1), Some(2));
    }

    #[tokio::test]
    async fn an_entry_that_cannot_be_read_again_is_dropped() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        cache.insert(1, 1);
        cache.age(&1, Duration::from_secs(50));
        let failed = cache.get_or_load(&1, || async { Err::<u32, _>("gone") });
        assert_eq!(failed.await, Err("gone"));
        assert_eq!(cache.get(&1), None);
        let loaded = cache.get_or_load(&1, || async { Ok::<_, &str>(3) });
        assert_eq!(loaded.await, Ok(3));
        assert_eq!(cache.get(&1), Some(3));
    }

    #[tokio::test]
    async fn a_value_read_before_a_change_is_not_kept_after_it() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        let reads = AtomicUsize::new(0);
        let open = tokio::sync::Notify::new();
        let read = cache.get_or_load(&1, || counted(&reads, &open, Ok(1)));
        let change = async {
            while reads.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            cache.remove_where(|k, _| *k == 1);
            open.notify_waiters();
        };
        let (read, ()) = tokio::join!(read, change);
        // The call that read it uses it; the next reads again.
        assert_eq!(read, Ok(1));
        assert_eq!(cache.get(&1), None);
    }
}
