//! The node's one wall clock. The core never reads a clock; the runtime
//! reads it here and passes `now_ms` in.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        // A clock before 1970 is broken; 0 makes every delta look "from the
        // future" and so refused, rather than silently accepted.
        .unwrap_or(0)
}
