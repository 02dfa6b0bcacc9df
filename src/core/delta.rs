//! Deltas and their one canonical encoding.
//!
//! # Encoding (version 1)
//!
//! A delta travels and is stored as `body || signature`, where `body` is
//! (all integers big-endian):
//!
//! | field     | bytes | notes                                    |
//! |-----------|-------|------------------------------------------|
//! | version   | 1     | `1`                                      |
//! | author    | 32    | Ed25519 public key                       |
//! | seq       | 8     | 1, 2, 3, … per author, no gaps           |
//! | prev      | 32    | hash of the author's delta `seq - 1`; zeros for seq 1 |
//! | wall_ms   | 8     | HLC wall-clock part                      |
//! | logical   | 4     | HLC counter                              |
//! | op        | 1     | `1` put, `2` delete                      |
//! | key_len   | 2     | then `key_len` bytes of UTF-8            |
//! | value_len | 4     | then `value_len` bytes; 0 for a delete   |
//!
//! and `signature` is 64 bytes of Ed25519 over `DOMAIN || body`. The delta's
//! hash is SHA-256 of that same `DOMAIN || body`.
//!
//! Decoding is strict: every field is checked and trailing bytes are an
//! error, so a byte string decodes to at most one delta and re-encoding is
//! never needed. The exact bytes received are the bytes stored, forwarded
//! and verified; nothing is ever signed or hashed after a re-serialisation.

use std::sync::Arc;

use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::hlc::Hlc;
use super::ids::{DeltaHash, NodeId};

/// Prefix of every signed message, so a delta signature can never be
/// replayed as a signature over anything else the node key signs.
pub const DOMAIN: &[u8] = b"fedsync/delta/v1\0";
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 32 + 8 + 32 + 8 + 4 + 1;
pub const SIGNATURE_LEN: usize = 64;
/// Structural ceilings of the format itself; policy limits are lower.
pub const KEY_LEN_FORMAT_MAX: usize = u16::MAX as usize;
pub const VALUE_LEN_FORMAT_MAX: usize = u32::MAX as usize;

/// What a delta does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    /// A tombstone: it wins or loses like a put, and hides the key.
    Delete,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Put => 1,
            Op::Delete => 2,
        }
    }
}

/// Why bytes are not a delta.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported delta version {0}")]
    Version(u8),
    #[error("unknown operation code {0}")]
    Op(u8),
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    #[error("a delete carries a value of {0} bytes")]
    DeleteWithValue(usize),
    #[error("sequence number 0 (sequences start at 1)")]
    SeqZero,
    #[error("first delta has a non-zero prev hash")]
    GenesisPrev,
    #[error("{0} trailing bytes after the signature")]
    Trailing(usize),
}

/// Where `prev` sits in an encoded delta. A transport may leave it out
/// when the delta before it in a batch is the author's previous one, and
/// put [`hash_of`] that one back here.
pub const PREV_RANGE: std::ops::Range<usize> = 41..73;
/// Where `author`, `seq` and `wall_ms` sit: a transport may also leave
/// these out for a delta that follows its author's previous one, and put
/// them back from that one.
pub const AUTHOR_RANGE: std::ops::Range<usize> = 1..33;
pub const SEQ_RANGE: std::ops::Range<usize> = 33..41;
pub const WALL_RANGE: std::ops::Range<usize> = 73..81;

/// The hash of an encoded delta (SHA-256 of `DOMAIN || body`) without
/// decoding it; `None` if it is too short to hold a header and signature.
/// Equal to [`SignedDelta::hash`] for bytes that decode.
pub fn hash_of(bytes: &[u8]) -> Option<DeltaHash> {
    let body_len = bytes.len().checked_sub(SIGNATURE_LEN)?;
    (body_len >= HEADER_LEN).then(|| hash_body(&bytes[..body_len]))
}

fn hash_body(body: &[u8]) -> DeltaHash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(body);
    DeltaHash(h.finalize().into())
}

/// The unsigned content of a delta, used to build new ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaBody {
    pub author: NodeId,
    pub seq: u64,
    pub prev: DeltaHash,
    pub hlc: Hlc,
    pub key: String,
    pub op: Op,
    pub value: Vec<u8>,
}

impl DeltaBody {
    /// The canonical body bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 6 + self.key.len() + self.value.len());
        out.push(VERSION);
        out.extend_from_slice(&self.author.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev.0);
        out.extend_from_slice(&self.hlc.wall_ms.to_be_bytes());
        out.extend_from_slice(&self.hlc.logical.to_be_bytes());
        out.push(self.op.code());
        let key_len = u16::try_from(self.key.len()).expect("key length checked by caller");
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        let value_len = u32::try_from(self.value.len()).expect("value length checked by caller");
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// Signs the canonical encoding. The caller guarantees `key` fits in
    /// `u16` bytes and `value` in `u32` (the write path checks limits first).
    pub fn sign(&self, key: &SigningKey) -> SignedDelta {
        debug_assert_eq!(key.verifying_key().to_bytes(), self.author.0);
        let mut bytes = self.encode();
        let signature = key.sign(&signed_message(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        SignedDelta::decode(&bytes).expect("a freshly encoded delta decodes")
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + body.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(body);
    m
}

/// A delta exactly as its author signed it, with its fields parsed.
///
/// Cheap to clone: the bytes are shared.
#[derive(Clone)]
pub struct SignedDelta {
    /// `body || signature`, exactly as received.
    bytes: Arc<[u8]>,
    author: NodeId,
    seq: u64,
    prev: DeltaHash,
    hlc: Hlc,
    op: Op,
    key_start: usize,
    key_end: usize,
    value_end: usize,
    hash: DeltaHash,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(DecodeError::Truncated {
                needed: n,
                available,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
}

impl SignedDelta {
    /// Parses `body || signature` strictly. Does not verify the signature:
    /// that is batched (see [`super::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedDelta, DecodeError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.array::<1>()?[0];
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let author = NodeId(r.array()?);
        let seq = u64::from_be_bytes(r.array()?);
        let prev = DeltaHash(r.array()?);
        let wall_ms = u64::from_be_bytes(r.array()?);
        let logical = u32::from_be_bytes(r.array()?);
        let op = match r.array::<1>()?[0] {
            1 => Op::Put,
            2 => Op::Delete,
            other => return Err(DecodeError::Op(other)),
        };
        let key_len = u16::from_be_bytes(r.array()?) as usize;
        let key_start = r.pos;
        std::str::from_utf8(r.take(key_len)?).map_err(|_| DecodeError::KeyNotUtf8)?;
        let key_end = r.pos;
        let value_len = u32::from_be_bytes(r.array()?) as usize;
        r.take(value_len)?;
        let value_end = r.pos;
        if op == Op::Delete && value_len != 0 {
            return Err(DecodeError::DeleteWithValue(value_len));
        }
        if seq == 0 {
            return Err(DecodeError::SeqZero);
        }
        if seq == 1 && prev != DeltaHash::GENESIS {
            return Err(DecodeError::GenesisPrev);
        }
        let body_end = r.pos;
        r.take(SIGNATURE_LEN)?;
        if r.pos != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - r.pos));
        }
        let hash = hash_body(&bytes[..body_end]);
        Ok(SignedDelta {
            bytes: Arc::from(bytes),
            author,
            seq,
            prev,
            hlc: Hlc::new(wall_ms, logical),
            op,
            key_start,
            key_end,
            value_end,
            hash,
        })
    }

    /// The exact bytes to store and forward.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn author(&self) -> NodeId {
        self.author
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn prev(&self) -> DeltaHash {
        self.prev
    }
    pub fn hlc(&self) -> Hlc {
        self.hlc
    }
    pub fn op(&self) -> Op {
        self.op
    }
    pub fn hash(&self) -> DeltaHash {
        self.hash
    }
    pub fn key(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.key_start..self.key_end])
            .expect("checked UTF-8 at decode")
    }
    /// The value; empty for a delete.
    pub fn value(&self) -> &[u8] {
        &self.bytes[self.key_end + 4..self.value_end]
    }
    /// The message the signature covers: `DOMAIN || body`.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.body())
    }
    pub fn body(&self) -> &[u8] {
        &self.bytes[..self.value_end]
    }
    pub fn signature(&self) -> Signature {
        let sig: [u8; SIGNATURE_LEN] = self.bytes[self.value_end..]
            .try_into()
            .expect("length checked at decode");
        Signature::from_bytes(&sig)
    }
    /// The conflict-resolution rank: higher wins (see [`super::merge`]).
    pub fn rank(&self) -> (Hlc, NodeId) {
        (self.hlc, self.author)
    }
}

impl PartialEq for SignedDelta {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for SignedDelta {}

impl std::fmt::Debug for SignedDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Delta({}#{} {:?} {} {}B {})",
            self.author.short(),
            self.seq,
            self.op,
            self.key(),
            self.value().len(),
            self.hash.short()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> DeltaBody {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        DeltaBody {
            author: NodeId(key.verifying_key().to_bytes()),
            seq: 1,
            prev: DeltaHash::GENESIS,
            hlc: Hlc::new(1_700_000_000_000, 3),
            key: "regions/fr/a".into(),
            op: Op::Put,
            value: b"{\"n\":1}".to_vec(),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let d = body().sign(&k);
        let again = SignedDelta::decode(d.as_bytes()).unwrap();
        assert_eq!(again, d);
        assert_eq!(again.key(), "regions/fr/a");
        assert_eq!(again.value(), b"{\"n\":1}");
        assert_eq!(again.hlc(), Hlc::new(1_700_000_000_000, 3));
        assert_eq!(again.seq(), 1);
        assert_eq!(again.op(), Op::Put);
    }

    #[test]
    fn prev_sits_where_a_transport_puts_it_back_and_hash_of_agrees() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let first = body().sign(&k);
        let second = DeltaBody {
            seq: 2,
            prev: first.hash(),
            ..body()
        }
        .sign(&k);
        assert_eq!(&second.as_bytes()[PREV_RANGE], &first.hash().0);
        let b = second.as_bytes();
        assert_eq!(&b[AUTHOR_RANGE], &second.author().0);
        assert_eq!(&b[SEQ_RANGE], &2u64.to_be_bytes());
        assert_eq!(&b[WALL_RANGE], &second.hlc().wall_ms.to_be_bytes());
        assert_eq!(hash_of(first.as_bytes()), Some(first.hash()));
        assert_eq!(hash_of(&first.as_bytes()[..HEADER_LEN + 63]), None);
    }

    #[test]
    fn strict_decoding_refuses_trailing_and_truncated_bytes() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let d = body().sign(&k);
        let mut long = d.as_bytes().to_vec();
        long.push(0);
        assert_eq!(SignedDelta::decode(&long), Err(DecodeError::Trailing(1)));
        let short = &d.as_bytes()[..d.as_bytes().len() - 1];
        assert!(matches!(
            SignedDelta::decode(short),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn delete_with_value_and_seq_zero_are_refused() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let mut b = body();
        b.op = Op::Delete;
        let bytes = [b.encode(), vec![0; 64]].concat();
        assert_eq!(
            SignedDelta::decode(&bytes),
            Err(DecodeError::DeleteWithValue(7))
        );
        let mut b = body();
        b.seq = 0;
        let bytes = [b.encode(), vec![0; 64]].concat();
        assert_eq!(SignedDelta::decode(&bytes), Err(DecodeError::SeqZero));
        let _ = k;
    }

    #[test]
    fn hash_covers_the_body_not_the_signature() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let d = body().sign(&k);
        let mut other = d.as_bytes().to_vec();
        let n = other.len();
        other[n - 1] ^= 1;
        assert_eq!(SignedDelta::decode(&other).unwrap().hash(), d.hash());
    }
}
