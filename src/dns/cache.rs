//! The bound on the DNS answer cache: a map that holds at most `cap`
//! entries and, when full, forgets the least recently used one. Names can
//! come from the network (a Route or Request-URI a request names), so the
//! cache must not grow with them. Pure: no I/O, no clock (recency is a
//! counter).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A bounded least-recently-used map. `get_or_insert_with` and `get`
/// count as uses; the oldest use is evicted first.
#[derive(Debug)]
pub struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    /// Use stamp → key, oldest first.
    order: BTreeMap<u64, K>,
    cap: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    /// A map of at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Lru<K, V> {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            cap: cap.max(1),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn touch(&mut self, k: &K) -> Option<V> {
        let (v, stamp) = self.map.get_mut(k)?;
        self.order.remove(stamp);
        self.tick += 1;
        *stamp = self.tick;
        self.order.insert(self.tick, k.clone());
        Some(v.clone())
    }

    /// The value for `k`, marked as just used.
    pub fn get(&mut self, k: &K) -> Option<V> {
        self.touch(k)
    }

    /// The value for `k`, created by `make` (evicting the least recently
    /// used entry when full) if absent; marked as just used either way.
    pub fn get_or_insert_with(&mut self, k: &K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.touch(k) {
            return v;
        }
        while self.map.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
        let v = make();
        self.tick += 1;
        self.map.insert(k.clone(), (v.clone(), self.tick));
        self.order.insert(self.tick, k.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_cap_and_evicts_the_least_recently_used() {
        let mut c = Lru::new(2);
        c.get_or_insert_with(&"a", || 1);
        c.get_or_insert_with(&"b", || 2);
        // A use of "a" makes "b" the oldest.
        assert_eq!(c.get(&"a"), Some(1));
        c.get_or_insert_with(&"c", || 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.get(&"a"), Some(1));
        assert_eq!(c.get(&"c"), Some(3));
    }

    #[test]
    fn an_existing_entry_is_kept_not_remade() {
        let mut c = Lru::new(1);
        assert_eq!(c.get_or_insert_with(&"a", || 1), 1);
        assert_eq!(c.get_or_insert_with(&"a", || 9), 1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_flood_of_names_stays_bounded() {
        let mut c = Lru::new(100);
        for i in 0..10_000u32 {
            c.get_or_insert_with(&i, || i);
            assert!(c.len() <= 100);
        }
        // The most recent hundred remain.
        assert_eq!(c.get(&9_999), Some(9_999));
        assert_eq!(c.get(&9_899), None);
        assert_eq!(c.order.len(), c.map.len());
    }

    #[test]
    fn zero_capacity_still_caches_one() {
        let mut c = Lru::new(0);
        c.get_or_insert_with(&1, || 1);
        c.get_or_insert_with(&2, || 2);
        assert_eq!(c.len(), 1);
    }
}
