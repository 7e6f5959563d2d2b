//! Ordered sets the scheduler keeps beside its state so that no event scans
//! every slot, chunk or attempt: the idle slots fastest first, and sets that
//! also know the element at a fixed rank (the median speed, the slowest
//! quartile, the median finish time). Every operation is logarithmic.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeSet;

use super::SlotId;

/// A float with a total order (`f64::total_cmp`), for keys of ordered sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Key(pub f64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// An ordered set split at a fixed rank: `low` holds the
/// `floor(len * num / den)` smallest elements, `high` the rest.
#[derive(Clone, Debug)]
pub(super) struct Ranked<K: Ord + Copy> {
    low: BTreeSet<K>,
    high: BTreeSet<K>,
    num: usize,
    den: usize,
}

impl<K: Ord + Copy> Ranked<K> {
    /// Split at `num / den` of the elements.
    pub fn new(num: usize, den: usize) -> Ranked<K> {
        Ranked {
            low: BTreeSet::new(),
            high: BTreeSet::new(),
            num,
            den: den.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.low.len() + self.high.len()
    }

    pub fn insert(&mut self, key: K) {
        if self.high.first().is_some_and(|h| key >= *h) {
            self.high.insert(key);
        } else {
            self.low.insert(key);
        }
        self.rebalance();
    }

    pub fn remove(&mut self, key: &K) -> bool {
        let removed = self.low.remove(key) || self.high.remove(key);
        self.rebalance();
        removed
    }

    fn rebalance(&mut self) {
        let want = self.len() * self.num / self.den;
        while self.low.len() > want {
            let k = self.low.pop_last().expect("low is not empty");
            self.high.insert(k);
        }
        while self.low.len() < want {
            let k = self.high.pop_first().expect("high holds the rest");
            self.low.insert(k);
        }
    }

    /// The largest element below the split rank.
    pub fn below_rank(&self) -> Option<K> {
        self.low.last().copied()
    }

    /// The element at the split rank (the smallest not below it).
    pub fn at_rank(&self) -> Option<K> {
        self.high.first().copied()
    }

    /// Every element, smallest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.low.iter().chain(self.high.iter())
    }

    /// The split holds: sizes as promised and every low element below every
    /// high one.
    pub fn is_consistent(&self) -> bool {
        let want = self.len() * self.num / self.den;
        let ordered = match (self.low.last(), self.high.first()) {
            (Some(l), Some(h)) => l < h,
            _ => true,
        };
        self.low.len() == want && ordered
    }
}

/// The median of a set split at one half: the middle element, or the mean of
/// the two middle ones.
pub(super) fn median(set: &Ranked<(Key, impl Ord + Copy)>) -> Option<f64> {
    let high = set.at_rank()?.0.0;
    if set.len() % 2 == 1 {
        return Some(high);
    }
    Some(set.below_rank().map_or(high, |low| (low.0.0 + high) / 2.0))
}

/// Idle slots, fastest first; slots without a measured speed count at a
/// speed given when asked (the fleet's median), ties go to the lower slot id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct IdleSlots {
    known: BTreeSet<(Reverse<Key>, SlotId)>,
    unknown: BTreeSet<SlotId>,
}

impl IdleSlots {
    pub fn insert(&mut self, slot: SlotId, speed: Option<f64>) {
        match speed {
            Some(s) => self.known.insert((Reverse(Key(s)), slot)),
            None => self.unknown.insert(slot),
        };
    }

    pub fn remove(&mut self, slot: SlotId, speed: Option<f64>) -> bool {
        match speed {
            Some(s) => self.known.remove(&(Reverse(Key(s)), slot)),
            None => self.unknown.remove(&slot),
        }
    }

    pub fn len(&self) -> usize {
        self.known.len() + self.unknown.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fastest first, unknown speeds counted as `unknown_speed`, with the
    /// speed each is counted at.
    pub fn iter(&self, unknown_speed: f64) -> impl Iterator<Item = (SlotId, f64)> + '_ {
        let mut known = self
            .known
            .iter()
            .map(|&(Reverse(k), s)| (s, k.0))
            .peekable();
        let mut unknown = self
            .unknown
            .iter()
            .map(move |&s| (s, unknown_speed))
            .peekable();
        std::iter::from_fn(move || match (known.peek(), unknown.peek()) {
            (Some(&(ks, kv)), Some(&(us, uv))) => {
                let known_first = match kv.total_cmp(&uv) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => ks < us,
                };
                if known_first {
                    known.next()
                } else {
                    unknown.next()
                }
            }
            (Some(_), None) => known.next(),
            (None, _) => unknown.next(),
        })
    }

    /// The fastest `n` idle slots.
    pub fn fastest(&self, n: usize, unknown_speed: f64) -> Vec<SlotId> {
        self.iter(unknown_speed).take(n).map(|(s, _)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_keeps_the_split_through_inserts_and_removes() {
        let mut set: Ranked<u32> = Ranked::new(1, 4);
        for k in [9, 3, 7, 1, 5, 8, 2] {
            set.insert(k);
            assert!(set.is_consistent());
        }
        // 7 elements: the lowest floor(7/4) = 1 are below the rank.
        assert_eq!(set.below_rank(), Some(1));
        assert_eq!(set.at_rank(), Some(2));
        assert!(set.remove(&1));
        assert!(!set.remove(&1));
        assert!(set.is_consistent());
        assert_eq!(set.at_rank(), Some(3));
        assert_eq!(
            set.iter().copied().collect::<Vec<_>>(),
            vec![2, 3, 5, 7, 8, 9]
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let mut set: Ranked<(Key, u32)> = Ranked::new(1, 2);
        assert_eq!(median(&set), None);
        for (i, v) in [4.0, 1.0, 3.0].into_iter().enumerate() {
            set.insert((Key(v), i as u32));
        }
        assert_eq!(median(&set), Some(3.0));
        set.insert((Key(10.0), 9));
        assert_eq!(median(&set), Some(3.5));
    }

    #[test]
    fn idle_slots_come_fastest_first_with_unknown_speeds_at_the_given_speed() {
        let mut idle = IdleSlots::default();
        idle.insert(SlotId(0), Some(1.0));
        idle.insert(SlotId(1), None);
        idle.insert(SlotId(2), Some(3.0));
        idle.insert(SlotId(3), Some(2.0));
        idle.insert(SlotId(4), None);
        let order: Vec<u32> = idle.iter(2.0).map(|(s, _)| s.0).collect();
        assert_eq!(order, vec![2, 1, 3, 4, 0]);
        assert_eq!(idle.fastest(2, 0.0), vec![SlotId(2), SlotId(3)]);
        assert!(idle.remove(SlotId(3), Some(2.0)));
        assert!(!idle.remove(SlotId(3), Some(2.0)));
        assert_eq!(idle.len(), 4);
    }
}
