//! A small deterministic random source for seeded tests (fuzzing, churn): a failure reproduces
//! from its seed.

/// xorshift64*: small, deterministic, good enough to pick test steps.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; the state is never zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
