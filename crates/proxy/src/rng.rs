//! A tiny random source (SplitMix64). Unseeded, each worker thread steps its own state (a
//! thread-local), so requests on different cores never contend for one cache line; seeded (tests),
//! one shared atomic counter makes weight and load-balancing tests reproducible.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

thread_local! {
    static LOCAL: Cell<u64> = Cell::new(rand::random());
}

pub(crate) struct FastRng {
    /// `Some` when seeded: one reproducible stream shared by all threads.
    seeded: Option<AtomicU64>,
}

impl FastRng {
    pub(crate) fn new(seed: Option<u64>) -> FastRng {
        FastRng { seeded: seed.map(AtomicU64::new) }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = match &self.seeded {
            Some(state) => state.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA),
            None => LOCAL.with(|c| {
                let v = c.get().wrapping_add(GAMMA);
                c.set(v);
                v
            }),
        };
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n == 0`), by Lemire's multiply-shift.
    pub(crate) fn below(&self, n: u32) -> u32 {
        ((self.next_u64() >> 32).wrapping_mul(u64::from(n)) >> 32) as u32
    }

    pub(crate) fn bytes16(&self) -> [u8; 16] {
        let a = self.next_u64().to_le_bytes();
        let b = self.next_u64().to_le_bytes();
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&a);
        out[8..].copy_from_slice(&b);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_in_range() {
        let a = FastRng::new(Some(7));
        let b = FastRng::new(Some(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[a.below(4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn unseeded_threads_draw_distinct_uniform_streams() {
        let draw = || {
            let rng = FastRng::new(None);
            (0..64).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        let here = draw();
        let there = std::thread::spawn(draw).join().unwrap();
        assert_ne!(here, there);
        let rng = FastRng::new(None);
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[rng.below(4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
