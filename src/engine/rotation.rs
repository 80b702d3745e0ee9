//! Which of an endpoint's prepared bodies each request sends: every user (or open-loop stream)
//! walks through all of them in turn, in order or in its own seeded shuffled order, so that no
//! server-side cache sees the same input twice in a row and every input is sent equally often.

/// One user's walk through `len` prepared bodies.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The visiting order when shuffled (a permutation of `0..len`); `None` walks `0, 1, ...`.
    order: Option<Vec<u32>>,
    len: usize,
    next: usize,
}

impl Rotation {
    /// A walk through `len` bodies (at least one), shuffled with `seed` when given.
    pub fn new(len: usize, shuffle_seed: Option<u64>) -> Self {
        let len = len.max(1);
        let order = shuffle_seed
            .filter(|_| len > 1)
            .map(|seed| permutation(len, seed));
        Rotation {
            order,
            len,
            next: 0,
        }
    }

    /// The body the next request sends.
    pub fn next_index(&mut self) -> usize {
        let at = self.next;
        self.next = (self.next + 1) % self.len;
        match &self.order {
            Some(order) => order[at] as usize,
            None => at,
        }
    }
}

/// SplitMix64: a small, well-mixed generator; the order only has to be reproducible from the seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A Fisher-Yates shuffle of `0..len` driven by `seed`.
fn permutation(len: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    let mut state = seed;
    for i in (1..len).rev() {
        let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// A seed nobody chose, for `--shuffle-inputs` without `--seed`.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(r: &mut Rotation, n: usize) -> Vec<usize> {
        (0..n).map(|_| r.next_index()).collect()
    }

    #[test]
    fn in_order_round_robin() {
        assert_eq!(walk(&mut Rotation::new(3, None), 7), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(walk(&mut Rotation::new(1, Some(5)), 3), [0, 0, 0]);
    }

    #[test]
    fn shuffled_visits_each_once_per_cycle_and_follows_the_seed() {
        let mut r = Rotation::new(10, Some(42));
        let first = walk(&mut r, 10);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(first, (0..10).collect::<Vec<_>>());
        assert_eq!(walk(&mut r, 10), first);
        assert_eq!(walk(&mut Rotation::new(10, Some(42)), 10), first);
        assert_ne!(walk(&mut Rotation::new(10, Some(43)), 10), first);
    }
}
