//! Offline bundles: deltas carried between offices on a USB stick when no
//! link works for weeks.
//!
//! An exporting node writes the deltas another office lacks (beyond the
//! frontier its last receipt showed, or all of them) into one file; the
//! office imports it into its stopped node, where every delta is admitted
//! exactly as from a peer; the office's receipt (its new frontier) comes
//! back for the next export.
//!
//! What is trusted, and why: a delta is trusted only through its author's
//! signature and the importer's roster, as always. The bundle's own
//! signatures (by the exporting node's key) and hashes add two things:
//! damage is found at the chunk it hit, so a truncated or damaged file
//! still imports the prefix before it; and the header and trailer say who
//! exported what, up to which frontier, so `verify` can tell a whole
//! bundle from a part of one.
//!
//! # Format (version 1)
//!
//! A bundle is a header, chunks, and a trailer, all integers big-endian.
//!
//! **Header**, signed first so that every chunk after it can be checked
//! as it arrives:
//!
//! | field          | bytes | notes |
//! |----------------|-------|-------|
//! | magic          | 8     | `FSBUNDLE` |
//! | version        | 1     | `1` |
//! | body_len       | 4     | at most 40 MiB |
//! | exporter       | 32    | the exporting node's id (Ed25519 public key) |
//! | name_len, name | 2 + n | its roster name, 1 to 64 bytes of UTF-8 |
//! | created_ms     | 8     | exporter's wall clock, ms since the epoch |
//! | part_bytes     | 8     | size of every file of a split bundle but the last |
//! | delta_count    | 8     | deltas in the bundle: what `result` holds beyond `base` |
//! | base           | 4 + 72 n | frontier the importer is taken to hold: count, then per author (ascending, no repeats) id 32, seq 8 (≥ 1), hash 32; at most 200,000 authors |
//! | result         | 4 + 72 n | the exporter's frontier when exporting, the same way |
//! | roster_len, roster | 4 + n | the exporter's signed roster exactly as the federation signed it (0: none), at most 8 MiB |
//! | signature      | 64    | exporter's Ed25519 over `fedsync/bundle/v1/header\0 ‖` magic … roster |
//!
//! **Chunk** `i` (from 0), as many as needed:
//!
//! | field      | bytes | notes |
//! |------------|-------|-------|
//! | tag        | 1     | `C` |
//! | index      | 4     | `i` |
//! | count      | 4     | deltas, 1 to 65,536 |
//! | raw_len    | 4     | uncompressed bytes, at most 65 MiB (a chunk closes at 1 MiB unless one delta is larger) |
//! | stored_len | 4     | compressed bytes, at most `raw_len`'s limit plus zstd's bound |
//! | stored     | n     | zstd of `count` entries of `len u32 ‖ delta`, each delta the exact bytes its author signed (`core::delta`), filling `raw_len` exactly |
//! | chain      | 32    | SHA-256 of `fedsync/bundle/v1/chunk\0 ‖ chain(i-1) ‖` tag … stored |
//! | signature  | 64    | exporter's Ed25519 over `fedsync/bundle/v1/chunk-sig\0 ‖ chain` |
//!
//! `chain(-1)` is SHA-256 of `fedsync/bundle/v1/header-hash\0 ‖` the whole
//! header, signature included. So each chunk's hash covers its bytes and,
//! through the chain, the header and every chunk before it; its signature
//! makes it the exporter's, on its own, with no need of the trailer.
//!
//! **Trailer**, once:
//!
//! | field       | bytes | notes |
//! |-------------|-------|-------|
//! | tag         | 1     | `T` |
//! | chunk_count | 4     | |
//! | delta_count | 8     | must equal the header's |
//! | delta_bytes | 8     | the deltas' encoded bytes, summed |
//! | chain       | 32    | the last chunk's chain (`chain(-1)` if none) |
//! | signature   | 64    | exporter's Ed25519 over `fedsync/bundle/v1/trailer\0 ‖` tag … chain |
//!
//! Nothing may follow the trailer. Deltas are ordered by author id, then
//! seq, each author's run starting right after `base` and ending at
//! `result`, so an importer that holds `base` applies every delta as it
//! arrives.
//!
//! A reader hands out a chunk only once its frame is within the limits,
//! its chain hash matches and the exporter's signature over it verifies,
//! and stops at the first record that fails: a flipped byte refuses its
//! chunk and everything after it, a truncation everything from the
//! record it cuts. Every length is bounded before anything is allocated.
//! A split bundle is its parts' bytes in order (`parts.rs`).
//!
//! # Code
//!
//! `format.rs` (the records as bytes), `writer.rs`, `reader.rs` and
//! `receipt.rs` are pure: no I/O beyond a `Read` or `Write` they are
//! handed, no clock. `export.rs` reads a [`Store`](crate::core::Store);
//! `import.rs` admits into a [`Replica`](crate::core::Replica); `check.rs`
//! verifies without importing; `parts.rs` is the only one that touches
//! files.

mod check;
mod export;
pub mod format;
mod import;
pub mod parts;
mod reader;
mod receipt;
mod writer;

pub use check::{check, Checked};
pub use export::{export, ExportError, ExportRequest, Exported};
pub use format::Header;
pub use import::{import, ImportError, ImportOptions, Imported};
pub use reader::{BundleError, BundleReader, Chunk, Verified};
pub use receipt::{Receipt, ReceiptError, RECEIPT_BYTES_MAX};
pub use writer::{BundleWriter, WriteError, Written, CHUNK_TARGET_BYTES};

#[cfg(test)]
mod tests;
