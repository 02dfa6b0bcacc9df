//! The bundle's pieces as bytes: the header, a chunk's frame, the trailer,
//! the hashes that chain them and the messages the exporter signs. Pure:
//! no I/O, no clock. The layout is documented in the module above.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::core::{DeltaHash, Frontier, Head, NodeId};

pub const MAGIC: [u8; 8] = *b"FSBUNDLE";
pub const VERSION: u8 = 1;
pub const SIGNATURE_LEN: usize = 64;

/// Signature and hash domains: the node key also signs deltas
/// (`fedsync/delta/v1\0 || body`) and aggregates, so every message it
/// signs here starts with a prefix of its own and can be taken for
/// nothing else.
const HEADER_SIG_DOMAIN: &[u8] = b"fedsync/bundle/v1/header\0";
const HEADER_HASH_DOMAIN: &[u8] = b"fedsync/bundle/v1/header-hash\0";
const CHUNK_HASH_DOMAIN: &[u8] = b"fedsync/bundle/v1/chunk\0";
const CHUNK_SIG_DOMAIN: &[u8] = b"fedsync/bundle/v1/chunk-sig\0";
const TRAILER_SIG_DOMAIN: &[u8] = b"fedsync/bundle/v1/trailer\0";

/// Fixed part of the header before its body: magic, version, body length.
pub const HEADER_PREFIX_LEN: usize = 8 + 1 + 4;
/// A header's body, at most. A frontier entry is 72 bytes, so this holds
/// two frontiers of [`FRONTIER_AUTHORS_MAX`] and the largest roster.
pub const HEADER_BODY_MAX: usize = 40 << 20;
/// Authors in one frontier of the header, at most.
pub const FRONTIER_AUTHORS_MAX: usize = 200_000;
/// The signed roster the header may carry, at most (10,000 members of a
/// few hundred bytes each fit).
pub const ROSTER_BYTES_MAX: usize = 8 << 20;
/// Exporter names are roster names.
pub const NAME_LEN_MAX: usize = crate::core::signed_roster::NAME_LEN_MAX;

pub const CHUNK_TAG: u8 = b'C';
pub const TRAILER_TAG: u8 = b'T';
/// tag, index, count, raw_len, stored_len.
pub const CHUNK_FRAME_LEN: usize = 1 + 4 + 4 + 4 + 4;
/// tag, chunk_count, delta_count, delta_bytes, chain hash, signature.
pub const TRAILER_LEN: usize = 1 + 4 + 8 + 8 + 32 + SIGNATURE_LEN;
/// A chunk's uncompressed bytes, at most: one delta of the largest value
/// a node may be configured to accept (64 MiB) with its key fits.
pub const CHUNK_RAW_MAX: usize = 65 << 20;
/// A chunk's compressed bytes, at most (zstd's bound on incompressible
/// input is under 1/128 above it).
pub const CHUNK_STORED_MAX: usize = CHUNK_RAW_MAX + (CHUNK_RAW_MAX >> 7) + 4096;
/// Deltas in one chunk, at most.
pub const CHUNK_DELTAS_MAX: usize = 65_536;
/// Chunks in one bundle, at most (the index is a `u32`).
pub const CHUNKS_MAX: u64 = u32::MAX as u64;

/// The signed description a bundle starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The exporting node's id (its Ed25519 public key), which signs the
    /// header, every chunk and the trailer.
    pub exporter: NodeId,
    /// Its roster name, as it was when exporting.
    pub exporter_name: String,
    pub created_ms: u64,
    /// The size of every file of a split bundle but the last.
    pub part_bytes: u64,
    /// What the bundle assumes the importer holds: it carries, per
    /// author, the deltas after `base` up to `result`.
    pub base: Frontier,
    /// The exporter's frontier when exporting.
    pub result: Frontier,
    /// Deltas in the bundle: the sum over `result` of what `base` lacks.
    pub delta_count: u64,
    /// The exporter's signed roster, exactly as the federation signed it:
    /// an office long offline learns of new members and revocations
    /// before it admits their deltas. Adopted only if valid and newer.
    pub roster: Option<Vec<u8>>,
}

/// The last record: what the exporter wrote in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub chunk_count: u32,
    pub delta_count: u64,
    /// The deltas' own encoded bytes, summed.
    pub delta_bytes: u64,
    /// The last chunk's chain hash (the header's hash if there is none).
    pub chain: [u8; 32],
}

/// A chunk's fixed fields, before its compressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkFrame {
    pub index: u32,
    pub count: u32,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl ChunkFrame {
    pub fn encode(&self) -> [u8; CHUNK_FRAME_LEN] {
        let mut out = [0u8; CHUNK_FRAME_LEN];
        out[0] = CHUNK_TAG;
        out[1..5].copy_from_slice(&self.index.to_be_bytes());
        out[5..9].copy_from_slice(&self.count.to_be_bytes());
        out[9..13].copy_from_slice(&self.raw_len.to_be_bytes());
        out[13..17].copy_from_slice(&self.stored_len.to_be_bytes());
        out
    }

    /// The frame after its tag (which the reader has already taken).
    pub fn decode(rest: &[u8; CHUNK_FRAME_LEN - 1]) -> ChunkFrame {
        let u32_at = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        ChunkFrame {
            index: u32_at(0),
            count: u32_at(4),
            raw_len: u32_at(8),
            stored_len: u32_at(12),
        }
    }

    /// Refuses lengths beyond the limits before anything is allocated.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.count == 0 || self.count as usize > CHUNK_DELTAS_MAX {
            return Err(format!(
                "it claims {} deltas (1 to {CHUNK_DELTAS_MAX} allowed)",
                self.count
            ));
        }
        if self.raw_len as usize > CHUNK_RAW_MAX {
            return Err(format!(
                "it claims {} bytes uncompressed (at most {CHUNK_RAW_MAX})",
                self.raw_len
            ));
        }
        if self.stored_len as usize > CHUNK_STORED_MAX {
            return Err(format!(
                "it claims {} bytes compressed (at most {CHUNK_STORED_MAX})",
                self.stored_len
            ));
        }
        Ok(())
    }
}

/// The hash that starts the chain: over the whole header, signature
/// included.
pub fn header_hash(header_bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HEADER_HASH_DOMAIN);
    h.update(header_bytes);
    h.finalize().into()
}

/// Chunk `i`'s hash: over the previous link, its frame and its compressed
/// bytes. The frame is covered, so a changed count or length is caught
/// like a changed byte of data.
pub fn chunk_hash(prev: &[u8; 32], frame: &[u8; CHUNK_FRAME_LEN], stored: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHUNK_HASH_DOMAIN);
    h.update(prev);
    h.update(frame);
    h.update(stored);
    h.finalize().into()
}

fn chunk_message(chain: &[u8; 32]) -> Vec<u8> {
    [CHUNK_SIG_DOMAIN, &chain[..]].concat()
}

pub fn sign_chunk(key: &SigningKey, chain: &[u8; 32]) -> [u8; SIGNATURE_LEN] {
    key.sign(&chunk_message(chain)).to_bytes()
}

pub fn verify_chunk(key: &VerifyingKey, chain: &[u8; 32], sig: &[u8; SIGNATURE_LEN]) -> bool {
    key.verify_strict(&chunk_message(chain), &Signature::from_bytes(sig))
        .is_ok()
}

/// Why a header cannot be written: a field beyond the format's limits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bundle header: {0}")]
pub struct HeaderLimit(pub String);

impl Header {
    /// The complete header: prefix, body, and the exporter's signature.
    pub fn encode(&self, key: &SigningKey) -> Result<Vec<u8>, HeaderLimit> {
        let fail = |why: String| Err(HeaderLimit(why));
        if self.exporter_name.is_empty() || self.exporter_name.len() > NAME_LEN_MAX {
            return fail(format!(
                "exporter name of {} bytes",
                self.exporter_name.len()
            ));
        }
        for f in [&self.base, &self.result] {
            if f.len() > FRONTIER_AUTHORS_MAX {
                return fail(format!(
                    "{} authors (at most {FRONTIER_AUTHORS_MAX})",
                    f.len()
                ));
            }
        }
        let roster = self.roster.as_deref().unwrap_or_default();
        if roster.len() > ROSTER_BYTES_MAX {
            return fail(format!("roster of {} bytes", roster.len()));
        }
        let mut body = Vec::new();
        body.extend_from_slice(&self.exporter.0);
        body.extend_from_slice(&(self.exporter_name.len() as u16).to_be_bytes());
        body.extend_from_slice(self.exporter_name.as_bytes());
        body.extend_from_slice(&self.created_ms.to_be_bytes());
        body.extend_from_slice(&self.part_bytes.to_be_bytes());
        body.extend_from_slice(&self.delta_count.to_be_bytes());
        encode_frontier(&mut body, &self.base);
        encode_frontier(&mut body, &self.result);
        body.extend_from_slice(&(roster.len() as u32).to_be_bytes());
        body.extend_from_slice(roster);
        if body.len() > HEADER_BODY_MAX {
            return fail(format!("body of {} bytes", body.len()));
        }
        let mut out = Vec::with_capacity(HEADER_PREFIX_LEN + body.len() + SIGNATURE_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        let sig = key.sign(&[HEADER_SIG_DOMAIN, &out].concat());
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }

    /// Decodes a header's body strictly, then checks the signature over
    /// `prefix || body` against the exporter it names. Nothing the body
    /// says is returned unless the signature holds.
    pub fn decode(
        prefix: &[u8; HEADER_PREFIX_LEN],
        body: &[u8],
        sig: &[u8; SIGNATURE_LEN],
    ) -> Result<(Header, VerifyingKey), String> {
        // The exporter's key is the body's first field: check the
        // signature before parsing the rest, so only signed bytes are read.
        let mut r = Reader { buf: body, pos: 0 };
        let exporter = NodeId(r.array()?);
        let key = crate::core::verify::parse_key(&exporter.0)
            .map_err(|e| format!("an exporter key that is unusable ({e})"))?;
        let message = [HEADER_SIG_DOMAIN, &prefix[..], body].concat();
        key.verify_strict(&message, &Signature::from_bytes(sig))
            .map_err(|_| SIGNATURE_FAILS.to_owned())?;
        let name_len = u16::from_be_bytes(r.array()?) as usize;
        if name_len == 0 || name_len > NAME_LEN_MAX {
            return Err(format!("an exporter name of {name_len} bytes"));
        }
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| "an exporter name that is not UTF-8".to_owned())?
            .to_owned();
        let created_ms = u64::from_be_bytes(r.array()?);
        let part_bytes = u64::from_be_bytes(r.array()?);
        let delta_count = u64::from_be_bytes(r.array()?);
        let base = decode_frontier(&mut r, "base")?;
        let result = decode_frontier(&mut r, "result")?;
        let roster_len = u32::from_be_bytes(r.array()?) as usize;
        if roster_len > ROSTER_BYTES_MAX {
            return Err(format!("a roster of {roster_len} bytes"));
        }
        let roster = r.take(roster_len)?.to_vec();
        if r.pos != body.len() {
            return Err(format!("{} bytes after its last field", body.len() - r.pos));
        }
        let expected = result
            .missing_in(&base)
            .iter()
            .map(|r| r.len())
            .sum::<u64>();
        if expected != delta_count {
            return Err(format!(
                "{delta_count} deltas announced, but its frontiers make {expected}"
            ));
        }
        let header = Header {
            exporter,
            exporter_name: name,
            created_ms,
            part_bytes,
            base,
            result,
            delta_count,
            roster: (roster_len > 0).then_some(roster),
        };
        Ok((header, key))
    }
}

/// What [`Header::decode`] says when the signature fails (the reader maps
/// it to its own error).
pub const SIGNATURE_FAILS: &str = "signature does not verify";

impl Trailer {
    pub fn encode(&self, key: &SigningKey) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[..TRAILER_LEN - SIGNATURE_LEN].copy_from_slice(&self.fields());
        let sig = key.sign(&[TRAILER_SIG_DOMAIN, &self.fields()].concat());
        out[TRAILER_LEN - SIGNATURE_LEN..].copy_from_slice(&sig.to_bytes());
        out
    }

    fn fields(&self) -> [u8; TRAILER_LEN - SIGNATURE_LEN] {
        let mut out = [0u8; TRAILER_LEN - SIGNATURE_LEN];
        out[0] = TRAILER_TAG;
        out[1..5].copy_from_slice(&self.chunk_count.to_be_bytes());
        out[5..13].copy_from_slice(&self.delta_count.to_be_bytes());
        out[13..21].copy_from_slice(&self.delta_bytes.to_be_bytes());
        out[21..53].copy_from_slice(&self.chain);
        out
    }

    /// The trailer after its tag, with its signature checked.
    pub fn decode(rest: &[u8; TRAILER_LEN - 1], key: &VerifyingKey) -> Result<Trailer, String> {
        let t = Trailer {
            chunk_count: u32::from_be_bytes(rest[0..4].try_into().expect("4")),
            delta_count: u64::from_be_bytes(rest[4..12].try_into().expect("8")),
            delta_bytes: u64::from_be_bytes(rest[12..20].try_into().expect("8")),
            chain: rest[20..52].try_into().expect("32"),
        };
        let sig: [u8; SIGNATURE_LEN] = rest[52..].try_into().expect("64");
        let message = [TRAILER_SIG_DOMAIN, &t.fields()].concat();
        key.verify_strict(&message, &Signature::from_bytes(&sig))
            .map_err(|_| SIGNATURE_FAILS.to_owned())?;
        Ok(t)
    }
}

fn encode_frontier(out: &mut Vec<u8>, f: &Frontier) {
    out.extend_from_slice(&(f.len() as u32).to_be_bytes());
    for (author, head) in f.iter() {
        out.extend_from_slice(&author.0);
        out.extend_from_slice(&head.seq.to_be_bytes());
        out.extend_from_slice(&head.hash.0);
    }
}

/// Authors ascending with no repeats and no seq 0, so one frontier has
/// one encoding.
fn decode_frontier(r: &mut Reader<'_>, which: &str) -> Result<Frontier, String> {
    let count = u32::from_be_bytes(r.array()?) as usize;
    if count > FRONTIER_AUTHORS_MAX {
        return Err(format!("a {which} frontier of {count} authors"));
    }
    let mut f = Frontier::new();
    let mut last: Option<NodeId> = None;
    for _ in 0..count {
        let author = NodeId(r.array()?);
        let seq = u64::from_be_bytes(r.array()?);
        let hash = DeltaHash(r.array()?);
        if last.is_some_and(|l| l >= author) || seq == 0 {
            return Err(format!("a {which} frontier out of order"));
        }
        last = Some(author);
        f.set(author, Head { seq, hash });
    }
    Ok(f)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() - self.pos {
            return Err("a field running past its end".to_owned());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
}

/// Splits a chunk's uncompressed bytes into its deltas' byte ranges:
/// exactly `count` entries of `len u32 || bytes`, filling it exactly.
pub fn split_entries(raw: &[u8], count: u32) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut out = Vec::with_capacity(count as usize);
    let mut pos = 0usize;
    for i in 0..count {
        let len_bytes: [u8; 4] = raw
            .get(pos..pos + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("its delta {i} of {count} runs past its end"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let start = pos + 4;
        if len == 0 || len > raw.len() - start {
            return Err(format!("its delta {i} of {count} runs past its end"));
        }
        out.push(start..start + len);
        pos = start + len;
    }
    if pos != raw.len() {
        return Err(format!("{} bytes after its last delta", raw.len() - pos));
    }
    Ok(out)
}
