//! Deadlines, one per owner, earliest first: the server's single view of "when must I wake up",
//! kept up to date as owners change instead of found again by scanning every owner.

use std::collections::{BTreeMap, BTreeSet};

use crate::time::Instant;

/// At most one deadline per key `K`.
#[derive(Debug)]
pub(crate) struct Timers<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> Timers<K> {
    pub(crate) fn new() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }

    /// Sets `key`'s deadline (`None` removes it).
    pub(crate) fn set(&mut self, key: K, deadline: Option<Instant>) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
        }
        if let Some(at) = deadline {
            self.by_key.insert(key, at);
            self.by_time.insert((at, key));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns a key whose deadline is at or before `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }

    /// How many deadlines are set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Instant {
        Instant::from_nanos(n)
    }

    #[test]
    fn earliest_first_one_per_key() {
        let mut timers = Timers::new();
        timers.set('a', Some(t(30)));
        timers.set('b', Some(t(10)));
        timers.set('a', Some(t(5)));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(t(5)));
        assert_eq!(timers.pop_due(t(4)), None);
        assert_eq!(timers.pop_due(t(10)), Some('a'));
        assert_eq!(timers.pop_due(t(10)), Some('b'));
        assert_eq!(timers.pop_due(t(99)), None);
        timers.set('c', Some(t(1)));
        timers.set('c', None);
        assert_eq!(timers.next(), None);
    }
}
