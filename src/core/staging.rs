//! Deltas that arrive in pieces: what a receiver holds of each until it
//! is whole, so a delta larger than what a flapping line moves between
//! two drops still gets through, resumed where the last connection left
//! it instead of sent whole again.
//!
//! A sender cuts a large delta into fragments (`rpc::fragment`); this node
//! keeps the prefix it has of each, by the delta's hash, and lists the
//! prefixes in its digests, so the next connection, from the same peer
//! or another one, starts after them. A prefix is only bytes: nothing is
//! trusted until the whole delta is admitted like any other, and one whose
//! bytes do not hash to the hash they came under is thrown away.
//!
//! Everything here is peer-controlled, so it is bounded: bytes held in
//! all, and deltas held at once. The least recently extended prefix gives
//! way first. Prefixes live in memory only: a restart starts them again.

use std::collections::HashMap;

use super::DeltaHash;

/// Deltas held in pieces at once.
pub const STAGED_MAX: usize = 64;

/// What became of one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Added to (or already in) the prefix; the delta is not whole yet.
    Partial,
    /// The delta is whole: its bytes, no longer held here. The caller
    /// checks they hash to the hash they came under.
    Whole(Vec<u8>),
    /// Starts after the prefix held (the sender resumed from a prefix
    /// since given way): nothing kept. The delta comes again whole after
    /// the next exchange of frontiers.
    Gap,
    /// Breaks the rules: says the delta is longer than a delta may be,
    /// runs past the length it gave, or gives another length for a delta
    /// already held in part.
    Refused(String),
}

/// One fragment: `data` is the part of the delta `hash`, `total_len`
/// bytes long, that starts at `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    pub hash: DeltaHash,
    pub total_len: u64,
    pub offset: u64,
    pub data: &'a [u8],
}

#[derive(Debug)]
struct Prefix {
    total_len: usize,
    bytes: Vec<u8>,
    /// When it was last extended, in offers: which gives way first.
    touched: u64,
}

/// The prefixes this node holds, bounded.
#[derive(Debug)]
pub struct Staging {
    held: HashMap<DeltaHash, Prefix>,
    /// The longest delta accepted, and the bytes held in all.
    delta_bytes_max: usize,
    bytes_max: usize,
    bytes: usize,
    offers: u64,
}

impl Staging {
    /// Holds up to `bytes_max` bytes of deltas of at most
    /// `delta_bytes_max` bytes each; `bytes_max` is at least one delta.
    pub fn new(delta_bytes_max: usize, bytes_max: usize) -> Staging {
        Staging {
            held: HashMap::new(),
            delta_bytes_max,
            bytes_max: bytes_max.max(delta_bytes_max),
            bytes: 0,
            offers: 0,
        }
    }

    /// Takes one fragment.
    pub fn offer(&mut self, p: Piece<'_>) -> Offer {
        let total = match usize::try_from(p.total_len) {
            Ok(t) if t > 0 && t <= self.delta_bytes_max => t,
            _ => {
                return Offer::Refused(format!(
                    "a fragmented delta of {} bytes; a delta may have at most {}",
                    p.total_len, self.delta_bytes_max
                ))
            }
        };
        let end = p.offset.checked_add(p.data.len() as u64);
        if p.data.is_empty() || end.is_none_or(|e| e > p.total_len) {
            return Offer::Refused(format!(
                "a fragment of {} bytes at offset {} of a {}-byte delta",
                p.data.len(),
                p.offset,
                p.total_len
            ));
        }
        let have = match self.held.get(&p.hash) {
            Some(prefix) if prefix.total_len != total => {
                return Offer::Refused(format!(
                    "a fragment gives a delta's length as {total} bytes, \
                     after {} for the same hash",
                    prefix.total_len
                ))
            }
            Some(prefix) => prefix.bytes.len() as u64,
            None => 0,
        };
        if p.offset > have {
            return Offer::Gap;
        }
        // What is new in this piece: any part before `have` is held already.
        let skip = (have - p.offset) as usize;
        let Some(new) = p.data.get(skip..).filter(|n| !n.is_empty()) else {
            return Offer::Partial;
        };
        self.make_room(new.len(), &p.hash);
        self.offers += 1;
        let touched = self.offers;
        let prefix = self.held.entry(p.hash).or_insert_with(|| Prefix {
            total_len: total,
            bytes: Vec::new(),
            touched,
        });
        prefix.bytes.extend_from_slice(new);
        prefix.touched = touched;
        self.bytes += new.len();
        if prefix.bytes.len() < total {
            return Offer::Partial;
        }
        let whole = self.held.remove(&p.hash).expect("just extended");
        self.bytes -= whole.bytes.len();
        Offer::Whole(whole.bytes)
    }

    /// Gives way, least recently extended first, until `more` bytes fit
    /// and there is a place for `keep` (which stays).
    fn make_room(&mut self, more: usize, keep: &DeltaHash) {
        let place = usize::from(!self.held.contains_key(keep));
        while self.bytes + more > self.bytes_max || self.held.len() + place > STAGED_MAX {
            let oldest = (self.held.iter())
                .filter(|(h, _)| *h != keep)
                .min_by_key(|(_, p)| p.touched)
                .map(|(h, _)| *h);
            let Some(h) = oldest else { return };
            let gone = self.held.remove(&h).expect("just found");
            self.bytes -= gone.bytes.len();
        }
    }

    /// The prefixes held: what a digest tells the next sender.
    pub fn prefixes(&self) -> Vec<(DeltaHash, u64)> {
        let mut out: Vec<_> = (self.held.iter())
            .map(|(h, p)| (*h, p.bytes.len() as u64))
            .collect();
        out.sort();
        out
    }

    /// Bytes held in all.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn piece(hash: u8, total: usize, offset: usize, data: &[u8]) -> Piece<'_> {
        Piece {
            hash: DeltaHash([hash; 32]),
            total_len: total as u64,
            offset: offset as u64,
            data,
        }
    }

    #[test]
    fn a_delta_in_pieces_comes_out_whole_once() {
        let delta: Vec<u8> = (0..100u8).collect();
        let mut s = Staging::new(1000, 4000);
        assert_eq!(s.offer(piece(1, 100, 0, &delta[..40])), Offer::Partial);
        assert_eq!(s.prefixes(), vec![(DeltaHash([1; 32]), 40)]);
        // A resend that overlaps what is held adds only what is new.
        assert_eq!(s.offer(piece(1, 100, 20, &delta[20..70])), Offer::Partial);
        assert_eq!(s.offer(piece(1, 100, 0, &delta[..10])), Offer::Partial);
        assert_eq!(s.bytes(), 70);
        assert_eq!(
            s.offer(piece(1, 100, 70, &delta[70..])),
            Offer::Whole(delta.clone())
        );
        assert_eq!(s.bytes(), 0);
        assert!(s.prefixes().is_empty());
    }

    #[test]
    fn a_piece_past_the_prefix_is_a_gap_and_keeps_nothing() {
        let mut s = Staging::new(1000, 4000);
        assert_eq!(s.offer(piece(1, 100, 50, &[0; 10])), Offer::Gap);
        assert_eq!(s.bytes(), 0);
        assert!(s.prefixes().is_empty());
    }

    #[test]
    fn rule_breaking_pieces_are_refused_and_change_nothing() {
        let mut s = Staging::new(1000, 4000);
        assert_eq!(s.offer(piece(1, 100, 0, &[0; 10])), Offer::Partial);
        for bad in [
            piece(2, 1001, 0, &[0; 10]), // longer than a delta may be
            piece(2, 0, 0, &[]),         // empty
            piece(2, 100, 95, &[0; 10]), // runs past its length
            piece(1, 90, 10, &[0; 10]),  // another length for the same hash
        ] {
            assert!(matches!(s.offer(bad), Offer::Refused(_)), "{bad:?}");
        }
        let huge = Piece {
            offset: u64::MAX,
            ..piece(3, 100, 0, &[0; 10])
        };
        assert!(matches!(s.offer(huge), Offer::Refused(_)));
        assert_eq!(s.prefixes(), vec![(DeltaHash([1; 32]), 10)]);
    }

    #[test]
    fn the_least_recently_extended_gives_way() {
        let mut s = Staging::new(100, 250);
        s.offer(piece(1, 100, 0, &[0; 90]));
        s.offer(piece(2, 100, 0, &[0; 90]));
        s.offer(piece(1, 100, 90, &[0; 5])); // 1 is now the newer
        s.offer(piece(3, 100, 0, &[0; 90])); // 275 > 250: 2 gives way
        let held: Vec<u8> = s.prefixes().iter().map(|(h, _)| h.0[0]).collect();
        assert_eq!(held, vec![1, 3]);
        assert_eq!(s.bytes(), 185);
        // And the count is bounded as well as the bytes.
        let mut s = Staging::new(10, 1_000_000);
        for i in 0..=STAGED_MAX {
            s.offer(piece(i as u8, 10, 0, &[0; 1]));
        }
        assert_eq!(s.prefixes().len(), STAGED_MAX);
        assert!(!s.prefixes().iter().any(|(h, _)| h.0[0] == 0));
    }

    proptest! {
        /// However a delta is cut, resent and repeated, it comes out whole
        /// with its own bytes once they have all arrived, and nothing
        /// stays held for it then; until then, exactly its prefix is held.
        #[test]
        fn any_cutting_and_resending_assembles_the_delta(
            len in 1usize..2000,
            cuts in proptest::collection::vec((0usize..2000, 1usize..500), 1..60),
        ) {
            let delta: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut s = Staging::new(2000, 8000);
            let mut have = 0usize;
            let mut wholes = 0;
            // Pieces from anywhere, then the rest in order.
            let tail = (0..len).step_by(300).map(|o| (o, 300));
            for (start, size) in cuts.into_iter().chain(tail) {
                let start = start % len;
                let end = (start + size).min(len);
                match s.offer(piece(9, len, start, &delta[start..end])) {
                    Offer::Whole(bytes) => {
                        prop_assert_eq!(&bytes, &delta);
                        wholes += 1;
                        have = 0;
                        prop_assert_eq!(s.bytes(), 0);
                    }
                    Offer::Partial => {
                        if start <= have { have = have.max(end); }
                        prop_assert_eq!(s.bytes(), have);
                    }
                    Offer::Gap => prop_assert!(start > have),
                    Offer::Refused(why) => prop_assert!(false, "{}", why),
                }
            }
            prop_assert!(wholes >= 1);
        }
    }
}
