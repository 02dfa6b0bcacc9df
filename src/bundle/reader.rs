//! Reading a bundle from any [`Read`], one verified chunk at a time, so a
//! truncated or damaged bundle still yields its verified prefix: the
//! reader hands out a chunk only once its frame, bytes, chain hash and
//! the exporter's signature over that hash all check, and it stops at the
//! first that does not.

use std::io::{ErrorKind, Read};
use std::ops::Range;

use ed25519_dalek::VerifyingKey;

use super::format::{
    self, ChunkFrame, Header, Trailer, CHUNK_FRAME_LEN, CHUNK_TAG, HEADER_BODY_MAX,
    HEADER_PREFIX_LEN, MAGIC, SIGNATURE_LEN, TRAILER_LEN, TRAILER_TAG, VERSION,
};

/// Why a bundle cannot be read on. Every message is one line; what was
/// verified before it is [`BundleReader::verified`].
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a fedsync bundle (it does not start with {:?})", String::from_utf8_lossy(&MAGIC))]
    NotABundle,
    #[error("bundle format version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
    #[error("the header is damaged: {0}")]
    Header(String),
    #[error("the header's signature does not verify: it is damaged, or was not written by the node it names")]
    HeaderSignature,
    #[error("truncated: the bundle ends at byte {at}, {place}")]
    Truncated { at: u64, place: String },
    #[error("chunk {index} (at byte {at}) is damaged: {why}")]
    Chunk { index: u32, at: u64, why: String },
    #[error("the trailer (at byte {at}) is damaged: {why}")]
    Trailer { at: u64, why: String },
    #[error("bytes follow the trailer at byte {at}: not one bundle")]
    Trailing { at: u64 },
    #[error("reading the bundle: {0}")]
    Io(std::io::Error),
}

impl BundleError {
    /// Whether the bundle simply ends early (a copy cut short), rather
    /// than holding a wrong byte.
    pub fn is_truncation(&self) -> bool {
        matches!(self, BundleError::Truncated { .. })
    }
}

/// One chunk, verified: the exact signed bytes of its deltas.
pub struct Chunk {
    pub index: u32,
    raw: Vec<u8>,
    entries: Vec<Range<usize>>,
}

impl Chunk {
    /// Each delta's bytes, as its author signed them, in bundle order.
    pub fn deltas(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries.iter().map(|r| &self.raw[r.clone()])
    }
    /// The deltas numbered `range` within the chunk.
    pub fn deltas_in(&self, range: Range<usize>) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries[range].iter().map(|r| &self.raw[r.clone()])
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The deltas' encoded bytes, summed.
    pub fn delta_bytes(&self) -> u64 {
        self.entries.iter().map(|r| r.len() as u64).sum()
    }
}

/// How much of the bundle has verified so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Chunks handed out, each verified.
    pub chunks: u32,
    pub deltas: u64,
    pub delta_bytes: u64,
    /// The offset just after the last verified record (header, chunk or
    /// trailer): every byte before it checked.
    pub bytes: u64,
    /// The trailer verified too: the bundle is whole.
    pub complete: bool,
}

pub struct BundleReader<R: Read> {
    r: R,
    /// Bytes consumed from `r`.
    pos: u64,
    header: Header,
    key: VerifyingKey,
    chain: [u8; 32],
    verified: Verified,
    /// Set once the trailer verified or an error was returned: the reader
    /// yields nothing after either.
    done: bool,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl<R: Read> BundleReader<R> {
    /// Reads and verifies the header.
    pub fn open(mut r: R) -> Result<Self, BundleError> {
        let mut pos = 0u64;
        let mut prefix = [0u8; HEADER_PREFIX_LEN];
        let got = read_full(&mut r, &mut prefix).map_err(BundleError::Io)?;
        pos += got as u64;
        if got < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC {
            return Err(if got < MAGIC.len() && MAGIC.starts_with(&prefix[..got]) {
                truncated(pos, "inside the header")
            } else {
                BundleError::NotABundle
            });
        }
        if got > MAGIC.len() && prefix[8] != VERSION {
            return Err(BundleError::Version(prefix[8]));
        }
        if got < HEADER_PREFIX_LEN {
            return Err(truncated(pos, "inside the header"));
        }
        let body_len = u32::from_be_bytes(prefix[9..13].try_into().expect("4")) as usize;
        if body_len > HEADER_BODY_MAX {
            return Err(BundleError::Header(format!(
                "it claims {body_len} bytes (at most {HEADER_BODY_MAX})"
            )));
        }
        let mut rest = vec![0u8; body_len + SIGNATURE_LEN];
        let got = read_full(&mut r, &mut rest).map_err(BundleError::Io)?;
        pos += got as u64;
        if got < rest.len() {
            return Err(truncated(pos, "inside the header"));
        }
        let (body, sig) = rest.split_at(body_len);
        let sig: &[u8; SIGNATURE_LEN] = sig.try_into().expect("64");
        let (header, key) = Header::decode(&prefix, body, sig).map_err(|why| {
            if why == format::SIGNATURE_FAILS {
                BundleError::HeaderSignature
            } else {
                BundleError::Header(why)
            }
        })?;
        let whole = [&prefix[..], &rest].concat();
        Ok(BundleReader {
            r,
            pos,
            header,
            key,
            chain: format::header_hash(&whole),
            verified: Verified {
                bytes: pos,
                ..Verified::default()
            },
            done: false,
            decompressor: zstd::bulk::Decompressor::new().map_err(BundleError::Io)?,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn verified(&self) -> Verified {
        self.verified
    }

    /// The next verified chunk; `None` once the trailer verified. After
    /// an error, `None` as well: nothing past a damaged record is trusted.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, BundleError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_record();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_record(&mut self) -> Result<Option<Chunk>, BundleError> {
        let at = self.pos;
        let index = self.verified.chunks;
        let mut tag = [0u8; 1];
        if self.fill(&mut tag)? == 0 {
            let after = match index {
                0 => "the header".to_owned(),
                n => format!("chunk {}", n - 1),
            };
            return Err(truncated(at, &format!("after {after}, before the trailer")));
        }
        match tag[0] {
            CHUNK_TAG => self.read_chunk(at, index).map(Some),
            TRAILER_TAG => self.read_trailer(at).map(|()| None),
            other => Err(BundleError::Chunk {
                index,
                at,
                why: format!("it starts with byte {other:#04x}, not a chunk or trailer tag"),
            }),
        }
    }

    fn read_chunk(&mut self, at: u64, index: u32) -> Result<Chunk, BundleError> {
        let inside = || format!("inside chunk {index} (which starts at byte {at})");
        let damaged = |why: String| BundleError::Chunk { index, at, why };
        let mut rest = [0u8; CHUNK_FRAME_LEN - 1];
        self.fill_all(&mut rest, &inside())?;
        let frame = ChunkFrame::decode(&rest);
        frame.check_limits().map_err(damaged)?;
        let mut stored = vec![0u8; frame.stored_len as usize];
        self.fill_all(&mut stored, &inside())?;
        let mut seal = [0u8; 32 + SIGNATURE_LEN];
        self.fill_all(&mut seal, &inside())?;
        let frame_bytes = frame.encode();
        let chain = format::chunk_hash(&self.chain, &frame_bytes, &stored);
        if chain[..] != seal[..32] {
            return Err(damaged("its hash does not match its bytes".into()));
        }
        let sig: &[u8; SIGNATURE_LEN] = seal[32..].try_into().expect("64");
        if !format::verify_chunk(&self.key, &chain, sig) {
            return Err(damaged(
                "the exporter's signature over it does not verify".into(),
            ));
        }
        // Hash and signature hold: these are the exporter's bytes. What
        // follows can fail only for an exporter that wrote nonsense.
        if frame.index != index {
            return Err(damaged(format!("it is numbered {}", frame.index)));
        }
        let raw = self
            .decompressor
            .decompress(&stored, frame.raw_len as usize)
            .map_err(|e| damaged(format!("it does not decompress ({e})")))?;
        if raw.len() != frame.raw_len as usize {
            return Err(damaged(format!(
                "it decompresses to {} bytes, not {}",
                raw.len(),
                frame.raw_len
            )));
        }
        let entries = format::split_entries(&raw, frame.count).map_err(damaged)?;
        let chunk = Chunk {
            index,
            raw,
            entries,
        };
        self.chain = chain;
        self.verified.chunks += 1;
        self.verified.deltas += chunk.len() as u64;
        self.verified.delta_bytes += chunk.delta_bytes();
        self.verified.bytes = self.pos;
        Ok(chunk)
    }

    fn read_trailer(&mut self, at: u64) -> Result<(), BundleError> {
        let mut rest = [0u8; TRAILER_LEN - 1];
        self.fill_all(
            &mut rest,
            &format!("inside the trailer (which starts at byte {at})"),
        )?;
        let damaged = |why: String| BundleError::Trailer { at, why };
        let t = Trailer::decode(&rest, &self.key).map_err(damaged)?;
        let v = &self.verified;
        let seen = Trailer {
            chunk_count: v.chunks,
            delta_count: v.deltas,
            delta_bytes: v.delta_bytes,
            chain: self.chain,
        };
        if t != seen {
            return Err(damaged(format!(
                "it counts {} chunks and {} deltas, but {} chunks and {} deltas precede it",
                t.chunk_count, t.delta_count, v.chunks, v.deltas
            )));
        }
        if t.delta_count != self.header.delta_count {
            return Err(damaged(format!(
                "it counts {} deltas, the header {}",
                t.delta_count, self.header.delta_count
            )));
        }
        let mut probe = [0u8; 1];
        if self.fill(&mut probe)? != 0 {
            return Err(BundleError::Trailing { at: self.pos - 1 });
        }
        self.verified.bytes = self.pos;
        self.verified.complete = true;
        Ok(())
    }

    /// Reads as much of `buf` as there is; returns how much.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let got = read_full(&mut self.r, buf).map_err(BundleError::Io)?;
        self.pos += got as u64;
        Ok(got)
    }

    fn fill_all(&mut self, buf: &mut [u8], place: &str) -> Result<(), BundleError> {
        if self.fill(buf)? < buf.len() {
            return Err(truncated(self.pos, place));
        }
        Ok(())
    }
}

fn truncated(at: u64, place: &str) -> BundleError {
    BundleError::Truncated {
        at,
        place: place.to_owned(),
    }
}

/// `read_exact` that says how much it got instead of failing at the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
