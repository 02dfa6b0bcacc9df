//! Stores written by earlier releases are migrated once, on open.
//!
//! Layout 3 kept one `r` entry per record; layout 4 keeps records in
//! buckets (`records.rs`), in the same tree. The layout key says 4 before
//! the first record moves, so an older build refuses the store rather
//! than read it half moved. Records then move in runs, each one atomic
//! batch that adds the buckets and removes the entries, smallest keys
//! first: a move cut short leaves every record in one place or the other,
//! and every bucket below every entry still to move, so the next open
//! just goes on ([`records_into_buckets`] runs at every open).
//!
//! Layout 2 (tree `fedsync/v2`) is copied first: every entry into this
//! layout's tree, each author's complete chunks of deltas sealed on the
//! way, and the layout 2 tree is dropped. The layout key is written last,
//! so a copy cut short (a crash, a full disk) is started again from the
//! start at the next open, the old tree still whole.

use super::kv::{prefix_bounds, Batch, Kv, SledKv};
use super::log::{self, Chunks};
use super::records;
use super::{codec, frame, key, prefix, unframe, StoreError, LAYOUT, LAYOUT_VERSION, TREE};
use crate::core::SignedDelta;

/// Layout 3's key prefix of a record entry.
pub(super) const OLD_RECORD: u8 = b'r';

const OLD_TREE: &str = "fedsync/v2";
const OLD_LAYOUT: u32 = 2;
/// Entries per batch while copying, so a large store is never in memory.
const BATCH_ENTRIES: usize = 10_000;

/// Migrates a layout 2 store in `db` to layout 3, if there is one.
pub(super) fn from_v2(db: &sled::Db) -> Result<(), StoreError> {
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == OLD_TREE.as_bytes())
    {
        return Ok(());
    }
    let old = db.open_tree(OLD_TREE)?;
    let layout_key = key(prefix::META, LAYOUT.as_bytes());
    let new = db.open_tree(TREE)?;
    if new.get(&layout_key)?.is_some() {
        // Migrated before; only the drop was cut short.
        drop(old);
        db.drop_tree(OLD_TREE)?;
        return Ok(());
    }
    match old.get(&layout_key)? {
        None if old.is_empty() => {
            drop(old);
            db.drop_tree(OLD_TREE)?;
            return Ok(());
        }
        None => return Err(super::corrupt(&layout_key, codec::CodecError::Shape)),
        Some(v) => {
            let payload = unframe(&v).map_err(|e| super::corrupt(&layout_key, e))?;
            if payload != OLD_LAYOUT.to_be_bytes() {
                return Err(super::corrupt(&layout_key, codec::CodecError::Shape));
            }
        }
    }
    let started = std::time::Instant::now();
    new.clear()?;
    let kv = SledKv {
        db: db.clone(),
        tree: new,
        mark: None,
    };
    let copied = copy(&old, &kv)?;
    let mut b = Batch::default();
    b.insert(layout_key, frame(&LAYOUT_VERSION.to_be_bytes()));
    kv.apply(b)?;
    kv.flush()?;
    drop(old);
    db.drop_tree(OLD_TREE)?;
    db.flush()?;
    tracing::info!(
        entries = copied,
        secs = started.elapsed().as_secs(),
        "store migrated from layout {OLD_LAYOUT} to layout {LAYOUT_VERSION} (deltas sealed in compressed chunks); this happens once"
    );
    Ok(())
}

/// Copies every entry of `old` into `kv`: deltas through the delta log
/// (which seals complete chunks), everything else as it is.
fn copy(old: &sled::Tree, kv: &SledKv) -> Result<u64, StoreError> {
    let chunks = Chunks::new();
    let mut batch = Batch::default();
    let mut ops = 0;
    let mut copied = 0u64;
    // One author's run of deltas, cut at chunk boundaries so that each
    // piece appends on its own.
    let mut run: Vec<SignedDelta> = Vec::new();
    let flush_run = |run: &mut Vec<SignedDelta>, batch: &mut Batch| -> Result<(), StoreError> {
        let refs: Vec<&SignedDelta> = run.iter().collect();
        log::append(kv, &chunks, batch, &refs)?;
        run.clear();
        Ok(())
    };
    for item in old.iter() {
        let (k, v) = item?;
        copied += 1;
        if k.first() == Some(&prefix::LOG) {
            let d = log::decode_tail(&k, &v)?;
            let boundary = run.last().is_some_and(|p: &SignedDelta| {
                p.author() != d.author() || p.seq() % log::CHUNK == 0
            });
            if boundary {
                flush_run(&mut run, &mut batch)?;
            }
            run.push(d);
        } else if k.as_ref() != key(prefix::META, LAYOUT.as_bytes()) {
            batch.insert(k.to_vec(), v.to_vec());
        }
        ops += 1;
        if ops >= BATCH_ENTRIES && run.last().is_none_or(|d| d.seq() % log::CHUNK == 0) {
            flush_run(&mut run, &mut batch)?;
            kv.apply(std::mem::take(&mut batch))?;
            ops = 0;
        }
    }
    flush_run(&mut run, &mut batch)?;
    kv.apply(batch)?;
    kv.flush()?;
    Ok(copied)
}

/// Moves layout 3's record entries, if any are left, into buckets.
pub(super) fn records_into_buckets(kv: &dyn Kv) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut moved = 0u64;
    loop {
        let (from, to) = prefix_bounds(&[OLD_RECORD]);
        let mut batch = Batch::default();
        let mut run = Vec::new();
        for item in kv.scan(from, to, false).take(BATCH_ENTRIES) {
            let (k, v) = item?;
            let payload = unframe(&v).map_err(|e| super::corrupt(&k, e))?;
            let r = codec::decode_record(payload).map_err(|e| super::corrupt(&k, e))?;
            let name = String::from_utf8(k[1..].to_vec())
                .map_err(|_| super::corrupt(&k, codec::CodecError::Shape))?;
            run.push((name, r));
            batch.remove(k);
        }
        if run.is_empty() {
            break;
        }
        moved += run.len() as u64;
        records::append(&mut batch, run);
        kv.apply(batch)?;
    }
    if moved > 0 {
        kv.flush()?;
        tracing::info!(
            records = moved,
            secs = started.elapsed().as_secs(),
            "store migrated to layout {LAYOUT_VERSION}: records kept in buckets of {}; this happens once",
            records::BUCKET_MAX
        );
    }
    Ok(())
}
