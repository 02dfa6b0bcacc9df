//! Stores written by the previous release (layout 2, tree `fedsync/v2`)
//! are migrated once, on open: every entry is copied into the layout 3
//! tree, each author's complete chunks of deltas sealed on the way, and the
//! layout 2 tree is dropped. The layout key is written last, so a
//! migration cut short (a crash, a full disk) is started again from the
//! start at the next open, the old tree still whole.

use super::kv::{Batch, Kv, SledKv};
use super::log::{self, Chunks};
use super::{codec, frame, key, prefix, unframe, StoreError, LAYOUT, LAYOUT_VERSION, TREE};
use crate::core::SignedDelta;

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
