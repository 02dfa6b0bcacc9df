//! Writing a bundle to any [`Write`]: the signed header first, then
//! chunks as deltas are pushed, then the signed trailer.

use std::io::Write;

use ed25519_dalek::SigningKey;

use super::format::{self, ChunkFrame, Header, HeaderLimit, Trailer, CHUNK_DELTAS_MAX};

/// Uncompressed bytes a chunk is closed at by default: large enough that
/// zstd compresses well and the per-chunk hash and signature cost
/// nothing, small enough that a damaged chunk loses little and a reader
/// holds little.
pub const CHUNK_TARGET_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Header(#[from] HeaderLimit),
    #[error("a delta of {0} bytes does not fit in a bundle chunk")]
    DeltaTooLarge(usize),
    #[error("the header announced {announced} deltas, but {written} were written")]
    Count { announced: u64, written: u64 },
    #[error("bundle: more chunks than the format numbers")]
    TooManyChunks,
    #[error("compressing a chunk: {0}")]
    Compress(std::io::Error),
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub chunks: u32,
    pub deltas: u64,
    /// The deltas' own encoded bytes.
    pub delta_bytes: u64,
    /// Bytes of the bundle in all: header, chunks, trailer.
    pub bytes: u64,
}

pub struct BundleWriter<W: Write> {
    out: W,
    key: SigningKey,
    announced: u64,
    chain: [u8; 32],
    raw: Vec<u8>,
    count: u32,
    target_bytes: usize,
    compressor: zstd::bulk::Compressor<'static>,
    written: Written,
}

/// zstd level: 3 (zstd's default) compresses JSON records to about a
/// third at several hundred MB/s, well ahead of signature verification on
/// the importing side.
const ZSTD_LEVEL: i32 = 3;

impl<W: Write> BundleWriter<W> {
    /// Writes `header`, signed with `key` (whose public key must be
    /// `header.exporter`). Chunks close at `target_bytes` uncompressed.
    pub fn new(
        mut out: W,
        header: &Header,
        key: &SigningKey,
        target_bytes: usize,
    ) -> Result<Self, WriteError> {
        debug_assert_eq!(key.verifying_key().to_bytes(), header.exporter.0);
        let bytes = header.encode(key)?;
        out.write_all(&bytes)?;
        Ok(BundleWriter {
            out,
            key: key.clone(),
            announced: header.delta_count,
            chain: format::header_hash(&bytes),
            raw: Vec::with_capacity(target_bytes.min(format::CHUNK_RAW_MAX) + 4096),
            count: 0,
            target_bytes: target_bytes.clamp(1, format::CHUNK_RAW_MAX),
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(WriteError::Compress)?,
            written: Written {
                bytes: bytes.len() as u64,
                ..Written::default()
            },
        })
    }

    /// Adds one delta, exactly as its author signed it.
    pub fn push(&mut self, delta: &[u8]) -> Result<(), WriteError> {
        let entry = 4 + delta.len();
        if delta.is_empty() || entry > format::CHUNK_RAW_MAX {
            return Err(WriteError::DeltaTooLarge(delta.len()));
        }
        let full = self.raw.len() + entry > self.target_bytes
            || self.raw.len() + entry > format::CHUNK_RAW_MAX
            || self.count as usize == CHUNK_DELTAS_MAX;
        if self.count > 0 && full {
            self.close_chunk()?;
        }
        self.raw
            .extend_from_slice(&(delta.len() as u32).to_be_bytes());
        self.raw.extend_from_slice(delta);
        self.count += 1;
        self.written.deltas += 1;
        self.written.delta_bytes += delta.len() as u64;
        Ok(())
    }

    fn close_chunk(&mut self) -> Result<(), WriteError> {
        if u64::from(self.written.chunks) >= format::CHUNKS_MAX {
            return Err(WriteError::TooManyChunks);
        }
        let stored = self
            .compressor
            .compress(&self.raw)
            .map_err(WriteError::Compress)?;
        let frame = ChunkFrame {
            index: self.written.chunks,
            count: self.count,
            raw_len: self.raw.len() as u32,
            stored_len: stored.len() as u32,
        }
        .encode();
        self.chain = format::chunk_hash(&self.chain, &frame, &stored);
        let sig = format::sign_chunk(&self.key, &self.chain);
        self.out.write_all(&frame)?;
        self.out.write_all(&stored)?;
        self.out.write_all(&self.chain)?;
        self.out.write_all(&sig)?;
        self.written.chunks += 1;
        self.written.bytes += (frame.len() + stored.len() + 32 + sig.len()) as u64;
        self.raw.clear();
        self.count = 0;
        Ok(())
    }

    /// Closes the last chunk and writes the trailer. The count of deltas
    /// must be the one the header announced.
    pub fn finish(mut self) -> Result<(W, Written), WriteError> {
        if self.count > 0 {
            self.close_chunk()?;
        }
        if self.written.deltas != self.announced {
            return Err(WriteError::Count {
                announced: self.announced,
                written: self.written.deltas,
            });
        }
        let trailer = Trailer {
            chunk_count: self.written.chunks,
            delta_count: self.written.deltas,
            delta_bytes: self.written.delta_bytes,
            chain: self.chain,
        };
        let bytes = trailer.encode(&self.key);
        self.out.write_all(&bytes)?;
        self.out.flush()?;
        self.written.bytes += bytes.len() as u64;
        Ok((self.out, self.written))
    }
}
