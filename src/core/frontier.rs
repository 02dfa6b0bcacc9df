//! Frontiers: for each author, the highest contiguous sequence number a node
//! holds and that delta's hash. Two frontiers say exactly what each side
//! lacks, and a digest of one lets two nodes confirm in tens of bytes that
//! they hold the same deltas.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::ids::{DeltaHash, NodeId};

/// An author's head: its highest contiguous delta held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Head {
    /// 0 when nothing from the author is held.
    pub seq: u64,
    pub hash: DeltaHash,
}

/// A digest of a whole frontier (SHA-256 over its sorted entries).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrontierDigest(pub [u8; 32]);

impl std::fmt::Debug for FrontierDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrontierDigest({})", hex::encode(&self.0[..6]))
    }
}

impl std::fmt::Display for FrontierDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An inclusive run of one author's sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    pub author: NodeId,
    pub first: u64,
    pub last: u64,
}

impl SeqRange {
    pub fn len(&self) -> u64 {
        self.last + 1 - self.first
    }
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    heads: BTreeMap<NodeId, Head>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The author's head; seq 0 when the author is unknown here.
    pub fn head(&self, author: &NodeId) -> Head {
        self.heads.get(author).copied().unwrap_or_default()
    }

    pub fn set(&mut self, author: NodeId, head: Head) {
        if head.seq == 0 {
            self.heads.remove(&author);
        } else {
            self.heads.insert(author, head);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Head)> {
        self.heads.iter()
    }

    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Deltas held in total (the sum of all heads' sequence numbers).
    pub fn total_deltas(&self) -> u64 {
        self.heads.values().map(|h| h.seq).sum()
    }

    pub fn digest(&self) -> FrontierDigest {
        let mut h = Sha256::new();
        h.update(b"fedsync/frontier/v1\0");
        for (author, head) in &self.heads {
            h.update(author.0);
            h.update(head.seq.to_be_bytes());
            h.update(head.hash.0);
        }
        FrontierDigest(h.finalize().into())
    }

    /// The deltas this side holds and `other` lacks: for each author where
    /// `other` is behind, the run after `other`'s head up to ours.
    pub fn missing_in(&self, other: &Frontier) -> Vec<SeqRange> {
        self.heads
            .iter()
            .filter_map(|(author, mine)| {
                let theirs = other.head(author).seq;
                (mine.seq > theirs).then_some(SeqRange {
                    author: *author,
                    first: theirs + 1,
                    last: mine.seq,
                })
            })
            .collect()
    }
}

/// What each side of a pair must send the other: `(a_sends, b_sends)`.
pub fn plan(a: &Frontier, b: &Frontier) -> (Vec<SeqRange>, Vec<SeqRange>) {
    (a.missing_in(b), b.missing_in(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> Head {
        Head {
            seq,
            hash: DeltaHash([seq as u8; 32]),
        }
    }

    #[test]
    fn plan_names_exactly_the_missing_runs() {
        let (x, y, z) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let mut a = Frontier::new();
        a.set(x, head(5));
        a.set(y, head(2));
        let mut b = Frontier::new();
        b.set(x, head(3));
        b.set(y, head(2));
        b.set(z, head(4));
        let (a_sends, b_sends) = plan(&a, &b);
        assert_eq!(
            a_sends,
            vec![SeqRange {
                author: x,
                first: 4,
                last: 5
            }]
        );
        assert_eq!(
            b_sends,
            vec![SeqRange {
                author: z,
                first: 1,
                last: 4
            }]
        );
    }

    #[test]
    fn digest_depends_on_every_head() {
        let x = NodeId([1; 32]);
        let mut a = Frontier::new();
        a.set(x, head(5));
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.set(
            x,
            Head {
                seq: 5,
                hash: DeltaHash([9; 32]),
            },
        );
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), Frontier::new().digest());
    }
}
