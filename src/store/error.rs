//! How the store fails: every error says what an operator does next, and
//! damage (sled's own findings, an entry that does not decode, a log
//! shorter than the node wrote) reads as the one documented corrupt-store
//! error.

use super::codec::CodecError;
use super::LAYOUT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(sled::Error),
    #[error("store corrupt: entry {key}: {why} (stop the node, move its data directory aside and start it with `fedsync run --rebuild`: it recovers everything from its peers)")]
    Corrupt { key: String, why: CodecError },
    #[error("store layout version {found} is not supported (this build reads {LAYOUT_VERSION})")]
    Layout { found: u32 },
    #[error("store corrupt: {0} (stop the node, move its data directory aside and start it with `fedsync run --rebuild`: it recovers everything from its peers)")]
    Damaged(String),
    #[error("store corrupt: this node's own log ends at seq {held}, but it had written up to seq {written}: the store lost its latest writes, and a write now would fork the log (stop the node, move its data directory aside and start it with `fedsync run --rebuild`: it recovers everything from its peers)")]
    Truncated { held: u64, written: u64 },
    #[error("disk: {0}")]
    Disk(String),
}

impl StoreError {
    /// The store is held by another process (a running node): sled allows
    /// one. Tools that open a stopped node's store say so in words.
    pub fn is_locked(&self) -> bool {
        // sled 0.34 reports it as an `Other` I/O error with this message.
        matches!(self, StoreError::Sled(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock"))
    }
}

/// sled's own findings of damage read as the documented corrupt-store
/// error, with what to do; anything else (a full disk, a held lock) as
/// sled says it.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        match e {
            sled::Error::Corruption { at, .. } => StoreError::Damaged(match at {
                Some(at) => format!("sled found damaged data at {at:?}"),
                None => "sled found damaged data".into(),
            }),
            sled::Error::ReportableBug(why) => {
                StoreError::Damaged(format!("sled could not read it back: {why}"))
            }
            other => StoreError::Sled(other),
        }
    }
}

/// The corrupt-store error for the entry at `key`, its key shown as
/// text where it is text.
pub(super) fn corrupt(key: &[u8], why: CodecError) -> StoreError {
    let shown = match key.split_first() {
        Some((p, rest)) => match std::str::from_utf8(rest) {
            Ok(text) => format!("{}/{text}", *p as char),
            Err(_) => format!("{}/{}", *p as char, hex::encode(rest)),
        },
        None => String::new(),
    };
    StoreError::Corrupt { key: shown, why }
}
