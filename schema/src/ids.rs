//! Hash sets of ids that are already uniformly distributed hashes: hashing them again is waste.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are expected; fold anything else so the hasher stays correct.
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(buf);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type BuildIdHasher = BuildHasherDefault<IdHasher>;
pub type IdSet = HashSet<u64, BuildIdHasher>;
pub type IdMap<V> = std::collections::HashMap<u64, V, BuildIdHasher>;
