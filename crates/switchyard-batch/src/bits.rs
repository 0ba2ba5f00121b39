//! A growable bit set: one bit per line or job, the smallest record of "seen"
//! that streaming passes can keep for files of any length.

/// Bits indexed by `u64`, all clear until set.
#[derive(Debug, Clone, Default)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// An empty set with room for `bits` bits.
    pub fn with_capacity(bits: u64) -> Self {
        Self {
            words: Vec::with_capacity(bits.div_ceil(64) as usize),
        }
    }

    /// Sets bit `i`; returns whether it was clear.
    pub fn insert(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let was_clear = self.words[w] & mask == 0;
        self.words[w] |= mask;
        was_clear
    }

    /// Whether bit `i` is set.
    pub fn contains(&self, i: u64) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Number of bits set.
    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_counts() {
        let mut b = BitSet::default();
        assert!(b.is_empty());
        assert!(b.insert(3));
        assert!(!b.insert(3));
        assert!(b.insert(200));
        assert!(b.contains(3) && b.contains(200) && !b.contains(4) && !b.contains(10_000));
        assert_eq!(b.len(), 2);
    }
}
