//! A deadline index: each key has at most one deadline, and the earliest
//! is found, and those due are taken, in logarithmic time. Parties keep
//! one per kind of thing that ends (registrations, sessions, nonces,
//! transactions), so that `poll_timeout` and `handle_timeout` cost the
//! same with a thousand registrations as with a million (quinn keeps a
//! `TimerTable` per connection for the same reason).

use std::collections::{BTreeMap, BTreeSet};

use super::Millis;

/// Keys with deadlines on the monotonic clock.
#[derive(Debug, Clone)]
pub(crate) struct Deadlines<K: Ord + Clone> {
    at: BTreeMap<K, Millis>,
    order: BTreeSet<(Millis, K)>,
}

impl<K: Ord + Clone> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            at: BTreeMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Deadlines<K> {
    /// Sets `key`'s deadline, replacing any it had.
    pub fn set(&mut self, key: K, deadline: Millis) {
        if let Some(old) = self.at.insert(key.clone(), deadline) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((deadline, key));
    }

    /// Forgets `key`'s deadline; returns it if there was one.
    pub fn remove(&mut self, key: &K) -> Option<Millis> {
        let old = self.at.remove(key)?;
        self.order.remove(&(old, key.clone()));
        Some(old)
    }

    /// `key`'s deadline.
    pub fn get(&self, key: &K) -> Option<Millis> {
        self.at.get(key).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Millis> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Takes the keys whose deadline is not after `now`, earliest first.
    pub fn take_due(&mut self, now: Millis) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.at.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// Takes the key with the earliest deadline.
    pub fn pop_first(&mut self) -> Option<(K, Millis)> {
        let (at, key) = self.order.pop_first()?;
        self.at.remove(&key);
        Some((key, at))
    }

    /// How many keys have a deadline.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether `key` has a deadline.
    pub fn contains(&self, key: &K) -> bool {
        self.at.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_replaced_deadlines_forgotten() {
        let mut d = Deadlines::default();
        d.set("a", 30);
        d.set("b", 10);
        d.set("c", 20);
        d.set("b", 40);
        assert_eq!(d.next(), Some(20));
        assert_eq!(d.take_due(30), vec!["c", "a"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.remove(&"b"), Some(40));
        assert_eq!(d.next(), None);
        assert!(d.take_due(u64::MAX).is_empty());
    }

    #[test]
    fn equal_deadlines_all_come_due() {
        let mut d = Deadlines::default();
        for k in 0..5u8 {
            d.set(k, 7);
        }
        assert_eq!(d.take_due(6), Vec::<u8>::new());
        assert_eq!(d.take_due(7), vec![0, 1, 2, 3, 4]);
    }

    /// A key's deadline is read back as set, and the earliest is taken
    /// first, with its deadline, once.
    #[test]
    fn deadlines_are_read_back_and_taken_earliest_first() {
        let mut d = Deadlines::default();
        d.set("a", 30);
        d.set("b", 10);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d.get(&"a"), d.get(&"b"), d.get(&"c")),
            (Some(30), Some(10), None)
        );
        assert_eq!(d.pop_first(), Some(("b", 10)));
        assert_eq!(d.get(&"b"), None);
        assert_eq!(d.pop_first(), Some(("a", 30)));
        assert_eq!(d.pop_first(), None);
    }
}
