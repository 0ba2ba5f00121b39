//! When a follower thread has read a topic up to where it ended at its start.

use std::collections::HashMap;

/// The partitions still to be read up to the end they had when reading began.
pub struct CatchUp {
    ends: HashMap<i32, i64>,
}

impl CatchUp {
    /// `ends`: each partition with something to read, and its end offset then.
    pub fn new(ends: impl IntoIterator<Item = (i32, i64)>) -> Self {
        Self {
            ends: ends.into_iter().collect(),
        }
    }

    /// Whether every partition has been read to its end.
    pub fn done(&self) -> bool {
        self.ends.is_empty()
    }

    /// Notes the message read at `offset` of `partition`; true when it is the
    /// one that completes the catch-up (so at most once).
    pub fn seen(&mut self, partition: i32, offset: i64) -> bool {
        if self
            .ends
            .get(&partition)
            .is_some_and(|end| offset + 1 >= *end)
        {
            self.ends.remove(&partition);
            return self.ends.is_empty();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_once_every_partition_reaches_its_end() {
        let mut c = CatchUp::new([(0, 3), (2, 1)]);
        assert!(!c.done());
        assert!(!c.seen(0, 1));
        assert!(!c.seen(1, 50), "a partition with nothing to read");
        assert!(!c.seen(0, 2));
        assert!(c.seen(2, 0));
        assert!(c.done());
        assert!(!c.seen(2, 1), "only once");
        assert!(CatchUp::new([]).done());
    }
}
