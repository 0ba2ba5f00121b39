//! What an approval covers: the held jobs the approver saw, as the root of a
//! Merkle tree over one leaf per job (its id and the SHA-256 of its message).
//! The approver signs the root in the decision; the releaser, which holds the
//! same jobs, gives each released job its path to the root; admission checks
//! that path against the job's own bytes. So a decision releases exactly the
//! jobs it was made on: not a job held later under the same approval id, and
//! not a new job that copies the release header.
//!
//! Leaves are sorted by value, so the tree depends only on the set. A level of
//! odd length carries its last node up unpaired. Leaves and inner nodes are
//! hashed with different prefixes, so a node cannot pass for a leaf.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 digest.
pub type Hash = [u8; 32];

/// The set a decision covers, signed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cover {
    /// The Merkle root, hex.
    pub root: String,
    /// How many jobs it covers.
    pub jobs: usize,
}

/// The leaf of one held job.
pub fn leaf(job_id: &str, value: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update((job_id.len() as u64).to_be_bytes());
    h.update(job_id.as_bytes());
    h.update(Sha256::digest(value));
    h.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The next level up.
fn parent_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node(l, r),
            [last] => *last,
            _ => unreachable!("chunks of two"),
        })
        .collect()
}

/// A tree over a set of leaves.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Every level, the sorted leaves first, the root last.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The tree over `leaves` (in any order; duplicates count once).
    pub fn new(mut leaves: Vec<Hash>) -> Self {
        leaves.sort_unstable();
        leaves.dedup();
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let up = parent_level(levels.last().map_or(&[][..], Vec::as_slice));
            levels.push(up);
        }
        Self { levels }
    }

    /// The cover of the set.
    pub fn cover(&self) -> Cover {
        Cover {
            root: hex::encode(self.root()),
            jobs: self.levels[0].len(),
        }
    }

    fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32])
    }

    /// The path of `leaf` to the root, as the release header carries it
    /// (`None` when the leaf is not in the set).
    pub fn proof(&self, leaf: &Hash) -> Option<String> {
        let at = self.levels[0].binary_search(leaf).ok()?;
        let mut index = at;
        let mut siblings = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(s) = level.get(index ^ 1) {
                siblings.push(hex::encode(s));
            }
            index /= 2;
        }
        Some(format!(
            "{at}/{}/{}",
            self.levels[0].len(),
            siblings.join(",")
        ))
    }
}

/// Whether `proof` leads from `leaf` to `cover`'s root.
pub fn verify(cover: &Cover, leaf: &Hash, proof: &str) -> bool {
    let mut parts = proof.splitn(3, '/');
    let (Some(index), Some(count), Some(siblings)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(mut index), Ok(mut count)) = (index.parse::<usize>(), count.parse::<usize>()) else {
        return false;
    };
    if count != cover.jobs || index >= count {
        return false;
    }
    let mut siblings = siblings.split(',').filter(|s| !s.is_empty());
    let mut hash = *leaf;
    while count > 1 {
        let paired = index ^ 1 < count;
        if paired {
            let Some(sibling) = siblings
                .next()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| Hash::try_from(b).ok())
            else {
                return false;
            };
            hash = if index % 2 == 0 {
                node(&hash, &sibling)
            } else {
                node(&sibling, &hash)
            };
        }
        index /= 2;
        count = count.div_ceil(2);
    }
    siblings.next().is_none() && hex::encode(hash) == cover.root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf(&format!("job-{i}"), format!("value {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn every_member_proves_and_nothing_else_does() {
        for n in 1..=17 {
            let all = leaves(n);
            let tree = Tree::new(all.clone());
            let cover = tree.cover();
            assert_eq!(cover.jobs, n);
            for l in &all {
                let proof = tree.proof(l).unwrap();
                assert!(verify(&cover, l, &proof), "n={n} {proof}");
                // The same path does not prove another job.
                let stranger = leaf("job-x", b"value x");
                assert!(!verify(&cover, &stranger, &proof));
            }
            assert!(tree.proof(&leaf("job-0", b"other bytes")).is_none());
        }
    }

    #[test]
    fn the_root_depends_on_the_set_not_its_order() {
        let mut all = leaves(6);
        let a = Tree::new(all.clone()).cover();
        all.reverse();
        assert_eq!(Tree::new(all.clone()).cover(), a);
        all.pop();
        assert_ne!(Tree::new(all).cover(), a);
    }

    #[test]
    fn a_tampered_path_or_count_fails() {
        let all = leaves(9);
        let tree = Tree::new(all.clone());
        let cover = tree.cover();
        let proof = tree.proof(&all[4]).unwrap();
        let (head, tail) = proof.split_once('/').unwrap();
        let moved = format!("{}/{tail}", (head.parse::<usize>().unwrap() + 1) % 9);
        assert!(!verify(&cover, &all[4], &moved));
        let recount = proof.replacen("/9/", "/10/", 1);
        assert!(!verify(&cover, &all[4], &recount));
        let longer = format!("{proof},{}", hex::encode([0u8; 32]));
        assert!(!verify(&cover, &all[4], &longer));
        for junk in ["", "x", "0/9/", "0/9/zz", "99/9/"] {
            assert!(!verify(&cover, &all[4], junk), "{junk}");
        }
        // Leaf and job id are bound: the same bytes under another job id differ.
        assert_ne!(leaf("a", b"v"), leaf("b", b"v"));
        assert_ne!(leaf("ab", b"c"), leaf("a", b"bc"));
    }
}
