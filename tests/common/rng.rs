//! The tests' one random number generator: xorshift64, seeded, so that a
//! failing run is repeated by its seed.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A zero seed would stay zero; it is moved off it.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}
