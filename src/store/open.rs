//! Opening sled: the `[store]` options, and the wait for a lock a store
//! closed a moment ago still holds.

use std::path::Path;

use super::StoreError;

/// How long to wait for a just-closed store's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How a sled store is opened: the `[store]` section of a node's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Refused deltas kept, at most (oldest dropped first).
    pub quarantine_max: u64,
    /// sled's page cache, bytes: most of what the store holds in memory.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            quarantine_max: 100_000,
            cache_bytes: 32 << 20,
        }
    }
}

/// Opens sled in `dir`. sled releases its directory lock only when its
/// background flusher lets go of the database, a moment after the last
/// handle is dropped; so a store reopened at once (a node restarted in the
/// same process) retries briefly on a held lock. A lock held by another
/// live process is still refused once the wait is over.
pub fn open_db(dir: &Path, opts: &StoreOptions) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    // No background flusher: every commit flushes, and a thread of sled's
    // own that fails is one the node cannot hear of.
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(opts.cache_bytes)
        .flush_every_ms(None);

    loop {
        match config.open() {
            // sled reports it as `Other` with this message (sled 0.34).
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(StoreError::from),
        }
    }
}
