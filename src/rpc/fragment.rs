//! A delta too large for one message on a slow line, as pieces: what
//! `Fragment` carries to a peer that announced the "fragments" feature.
//!
//! A batch is one gRPC message, and a message cut off by a drop is lost
//! whole; on a line that flaps every 20 s at 64 kbit/s, a value larger
//! than what crosses in 20 s would never arrive. In pieces, what arrived
//! before a drop is kept (`core::staging`), and the next connection
//! starts after it. The pieces are of the exact bytes the author signed:
//! the receiver admits the whole delta as any other.

use crate::core::{DeltaHash, SignedDelta};

use super::pack::{self, PackError};
use super::pb;

/// The feature a node announces in its digests when it reads pieces.
pub const FEATURE: &str = "fragments";
/// Deltas longer than this travel in pieces to a peer that reads them:
/// smaller ones cross even a 24 kbit/s line in about ten seconds.
pub const FRAGMENT_ABOVE: usize = 32 * 1024;
/// Bytes of a delta in one piece: what a drop can cost, under three
/// seconds of a 24 kbit/s line, with under 1 % of framing on top.
pub const PIECE_BYTES: usize = 8 * 1024;

/// `delta` as pieces from byte `from` on, `from` being what the peer
/// said it holds of it already (0: nothing; a prefix past the end is
/// taken as nothing). Each piece is compressed when `zstd` and when that
/// saves something.
pub fn pieces(delta: &SignedDelta, from: u64, zstd: bool) -> Vec<pb::PeerMessage> {
    let bytes = delta.as_bytes();
    let from = usize::try_from(from)
        .ok()
        .filter(|f| *f < bytes.len())
        .unwrap_or(0);
    let hash = delta.hash().0.to_vec();
    let mut out = Vec::with_capacity((bytes.len() - from).div_ceil(PIECE_BYTES));
    let mut offset = from;
    while offset < bytes.len() {
        let piece = &bytes[offset..(offset + PIECE_BYTES).min(bytes.len())];
        let mut f = pb::Fragment {
            hash: hash.clone(),
            total_len: bytes.len() as u64,
            offset: offset as u64,
            ..Default::default()
        };
        let frame = zstd.then(|| zstd::bulk::compress(piece, 6).expect("compressing into memory"));
        match frame.filter(|z| z.len() < piece.len()) {
            Some(z) => (f.zstd, f.zstd_len) = (z, piece.len() as u32),
            None => f.data = piece.to_vec(),
        }
        out.push(pb::PeerMessage {
            body: Some(pb::peer_message::Body::Fragment(f)),
        });
        offset += piece.len();
    }
    out
}

/// A received piece, its data still as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentIn {
    pub hash: DeltaHash,
    pub total_len: u64,
    pub offset: u64,
    data: Vec<u8>,
    /// `Some(len)`: `data` is a zstd frame of `len` bytes once decompressed.
    zstd_len: Option<usize>,
}

impl FragmentIn {
    pub(super) fn new(hash: DeltaHash, f: pb::Fragment) -> Option<FragmentIn> {
        let (data, zstd_len) = match (f.data.is_empty(), f.zstd.is_empty()) {
            (false, true) => (f.data, None),
            (true, false) => (f.zstd, Some(f.zstd_len as usize)),
            _ => return None, // both, or neither
        };
        Some(FragmentIn {
            hash,
            total_len: f.total_len,
            offset: f.offset,
            data,
            zstd_len,
        })
    }

    /// The piece's bytes, decompressed if need be; no more than
    /// `bytes_max` are allocated.
    pub fn data(self, bytes_max: usize) -> Result<Vec<u8>, PackError> {
        match self.zstd_len {
            None => Ok(self.data),
            Some(len) => pack::decompress_exact(&self.data, len, bytes_max, &[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::convert::Incoming;
    use crate::testkit::Author;
    use prost::Message;

    /// The pieces as the receiver reads them: through the wire and back.
    fn received(msgs: Vec<pb::PeerMessage>) -> Vec<FragmentIn> {
        msgs.into_iter()
            .map(|m| {
                let m = pb::PeerMessage::decode(m.encode_to_vec().as_slice()).unwrap();
                match Incoming::try_from(m).unwrap() {
                    Incoming::Fragment(f) => f,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn pieces_carry_the_signed_bytes_from_where_the_peer_left_off() {
        let mut a = Author::region(1, "fr");
        let text = "a line of a report that compresses well\n".repeat(2000);
        for zstd in [false, true] {
            let d = a.put("regions/fr/report", text.as_bytes(), 1);
            let bytes = d.as_bytes();
            for from in [0, 20_000, bytes.len() as u64 + 5] {
                let start = if from as usize >= bytes.len() {
                    0
                } else {
                    from
                };
                let got = received(pieces(&d, from, zstd));
                assert_eq!(
                    got.len(),
                    (bytes.len() - start as usize).div_ceil(PIECE_BYTES)
                );
                let mut joined = Vec::new();
                for f in got {
                    assert_eq!((f.hash, f.total_len), (d.hash(), bytes.len() as u64));
                    assert_eq!(f.offset as usize, start as usize + joined.len());
                    assert_eq!(f.zstd_len.is_some(), zstd, "compressed when asked");
                    joined.extend(f.data(PIECE_BYTES).unwrap());
                }
                assert_eq!(joined, bytes[start as usize..]);
            }
        }
    }

    #[test]
    fn a_piece_that_lies_about_its_length_is_refused() {
        let mut a = Author::region(1, "fr");
        let d = a.put("regions/fr/report", "x".repeat(100_000).as_bytes(), 1);
        let mut f = received(pieces(&d, 0, true)).remove(0);
        f.zstd_len = Some(PIECE_BYTES - 1);
        assert!(matches!(
            f.clone().data(PIECE_BYTES),
            Err(PackError::Frame { .. })
        ));
        f.zstd_len = Some(1 << 30);
        assert!(matches!(
            f.data(PIECE_BYTES),
            Err(PackError::TooLarge { .. })
        ));
    }
}
