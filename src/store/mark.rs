//! The mark file: one small record kept beside sled's files, outside its
//! log, so that a log that came back shorter (sled recovering to an
//! earlier point past a damaged byte) cannot go unnoticed.
//!
//! Two fixed slots, written in turn, each `generation (u64) ‖ length (u32)
//! ‖ payload ‖ crc32` and synced before the write returns. Reading takes
//! the valid slot with the higher generation, so a crash in the middle of
//! a write leaves the previous mark.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use super::StoreError;

pub(super) const FILE: &str = "own-head";
/// The largest payload a slot holds.
const PAYLOAD_MAX: usize = 112;
const SLOT: usize = 8 + 4 + PAYLOAD_MAX + 4;

pub(crate) struct MarkFile {
    file: Mutex<(File, u64)>,
}

fn damaged(why: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged(format!("{FILE}: {why}"))
}

impl MarkFile {
    /// Opens (or creates) the mark file in `dir`.
    pub(super) fn open(dir: &Path) -> Result<MarkFile, StoreError> {
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Disk(format!("{}: {e}", path.display())))?;
        let generation = best(&file)?.map_or(0, |(g, _)| g);
        Ok(MarkFile {
            file: Mutex::new((file, generation)),
        })
    }

    pub(super) fn read(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let guard = self.file.lock().expect("mark file poisoned");
        Ok(best(&guard.0)?.map(|(_, p)| p))
    }

    pub(super) fn write(&self, payload: &[u8]) -> Result<(), StoreError> {
        assert!(payload.len() <= PAYLOAD_MAX, "a mark is a few dozen bytes");
        let mut guard = self.file.lock().expect("mark file poisoned");
        let generation = guard.1 + 1;
        let mut slot = Vec::with_capacity(SLOT);
        slot.extend_from_slice(&generation.to_be_bytes());
        slot.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        slot.extend_from_slice(payload);
        slot.resize(8 + 4 + PAYLOAD_MAX, 0);
        let crc = crc32fast::hash(&slot);
        slot.extend_from_slice(&crc.to_be_bytes());
        let at = (generation % 2) * SLOT as u64;
        let io = |e: io::Error| StoreError::Disk(format!("{FILE}: {e}"));
        guard.0.write_all_at(&slot, at).map_err(io)?;
        guard.0.sync_data().map_err(io)?;
        guard.1 = generation;
        Ok(())
    }
}

/// The valid slot with the higher generation. A file with no slot written
/// is no mark; one whose slots are all damaged is an error.
fn best(file: &File) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let len = file.metadata().map_err(damaged)?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut found: Option<(u64, Vec<u8>)> = None;
    for i in 0..2u64 {
        let mut slot = vec![0u8; SLOT];
        if file.read_exact_at(&mut slot, i * SLOT as u64).is_err() {
            continue;
        }
        let (body, crc) = slot.split_at(SLOT - 4);
        if crc32fast::hash(body).to_be_bytes() != crc {
            continue;
        }
        let generation = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        let n = u32::from_be_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
        if generation == 0 || n > PAYLOAD_MAX {
            continue;
        }
        if found.as_ref().is_none_or(|(g, _)| generation > *g) {
            found = Some((generation, body[12..12 + n].to_vec()));
        }
    }
    match found {
        Some(f) => Ok(Some(f)),
        None => Err(damaged("no readable record in it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_mark_survives_reopening_and_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let m = MarkFile::open(dir.path()).unwrap();
        assert_eq!(m.read().unwrap(), None);
        for i in 0..5u8 {
            m.write(&[i; 40]).unwrap();
        }
        drop(m);
        let m = MarkFile::open(dir.path()).unwrap();
        assert_eq!(m.read().unwrap(), Some(vec![4; 40]));
        // The newest slot (generation 5: slot 1) torn: the one before it
        // is read.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all_at(&[0xff; 10], SLOT as u64 + 20).unwrap();
        drop(m);
        let m = MarkFile::open(dir.path()).unwrap();
        assert_eq!(m.read().unwrap(), Some(vec![3; 40]));
        m.write(&[9; 8]).unwrap();
        assert_eq!(m.read().unwrap(), Some(vec![9; 8]));
        // Both slots damaged: an error, not "no mark".
        f.write_all_at(&[0xff; SLOT * 2], 0).unwrap();
        assert!(m.read().is_err());
    }
}
