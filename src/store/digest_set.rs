//! A compact set of digests for the passes over a whole store (garbage
//! collection, verify): 8 bytes per digest, a sorted vector searched by
//! bisection, instead of a hash set of strings (about 100 bytes each), so a
//! million images (three million digests) fit in about 24 MiB.
//!
//! A digest is kept as a 64-bit hash of it under a key drawn at random for
//! each set, so nobody can craft two digests that collide in it (a plain
//! prefix of the digest could be: about 2^33 tries). Two digests that do
//! collide are one member: the set may answer "yes" for a digest never
//! added, with a chance of about n / 2^64 (1 in 6 million million at three
//! million members), never "no" for one that was. Callers use it where a
//! wrong "yes" is harmless: garbage collection keeps a blob, verify leaves
//! one file unreported, eviction spares one blob (and leaves it uncounted).

use crate::oci::Digest;
use std::hash::BuildHasher;

#[derive(Debug, Default)]
pub struct DigestSet {
    keys: Vec<u64>,
    /// How many keys at the front are sorted and unique.
    sealed: usize,
    /// The set's own random hash key.
    hasher: std::collections::hash_map::RandomState,
}

impl DigestSet {
    fn key(&self, d: &Digest) -> u64 {
        self.hasher.hash_one(d)
    }

    pub fn insert(&mut self, d: &Digest) {
        let k = self.key(d);
        self.keys.push(k);
    }

    /// Sorts what was added; [`DigestSet::contains`] sees only what was
    /// added before the last seal.
    pub fn seal(&mut self) {
        self.keys.sort_unstable();
        self.keys.dedup();
        self.keys.shrink_to_fit();
        self.sealed = self.keys.len();
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.keys[..self.sealed].binary_search(&self.key(d)).is_ok()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Algorithm;

    #[test]
    fn members_are_found_and_others_are_not() {
        let ds: Vec<Digest> = (0..1000u32)
            .map(|i| Digest::of(Algorithm::Sha256, &i.to_le_bytes()))
            .collect();
        let mut s = DigestSet::default();
        for d in ds.iter().step_by(2) {
            s.insert(d);
            s.insert(d);
        }
        s.insert(&Digest::of(Algorithm::Sha512, b"long"));
        assert!(!s.contains(&ds[0]), "nothing is seen before the seal");
        s.seal();
        assert_eq!(s.len(), 501);
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(s.contains(d), i % 2 == 0, "{i}");
        }
        assert!(s.contains(&Digest::of(Algorithm::Sha512, b"long")));
    }
}
