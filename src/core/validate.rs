//! Delta validation as pure functions. Each refusal is a distinct variant
//! with a reason an operator can read and a stable code for counters.

use super::delta::{DecodeError, SignedDelta, KEY_LEN_FORMAT_MAX, VALUE_LEN_FORMAT_MAX};
use super::ids::{DeltaHash, NodeId};
use super::roster::{AuthorityError, Roster};

/// Ceilings on what a delta may carry. Everything here is controlled by a
/// remote author, so everything is bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub key_len_max: usize,
    pub value_len_max: usize,
    /// How far a delta's HLC wall time may be ahead of our clock. Honest
    /// skew is minutes; this refuses timestamps that would pin every key
    /// for hours. A refused delta is fetched again later and then accepted.
    pub future_skew_ms_max: u64,
    /// Deltas held while waiting for an earlier gap to fill, over all authors.
    pub held_deltas_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_len_max: 1024,
            value_len_max: 1024 * 1024,
            future_skew_ms_max: 60 * 60 * 1000,
            held_deltas_max: 100_000,
        }
    }
}

/// Two different signed deltas from one author with one sequence number.
/// Both carry valid signatures, so together they prove the author forked
/// its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub author: NodeId,
    pub seq: u64,
    pub first: SignedDelta,
    pub second: SignedDelta,
}

/// Why a delta was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed delta: {0}")]
    Malformed(#[from] DecodeError),
    #[error("unusable author key: {0}")]
    BadAuthorKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("{0}")]
    Authority(#[from] AuthorityError),
    #[error("key of {len} bytes exceeds the limit of {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("empty key")]
    EmptyKey,
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("timestamp {ahead_ms} ms ahead of this node's clock (limit {max_ms} ms)")]
    FromTheFuture { ahead_ms: u64, max_ms: u64 },
    #[error("chain broken at seq {seq}: prev is {got}, the stored delta {prev_seq} is {expected}", prev_seq = seq - 1, got = got.short(), expected = expected.short())]
    ChainBroken {
        seq: u64,
        expected: DeltaHash,
        got: DeltaHash,
    },
    #[error("equivocation: author {} signed two different deltas as seq {}", .0.author.short(), .0.seq)]
    Equivocation(Box<Evidence>),
}

impl Refusal {
    /// A stable, low-cardinality code: metrics labels and quarantine filters.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::BadAuthorKey(_) => "bad_author_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Authority(AuthorityError::UnknownAuthor(_)) => "unknown_author",
            Refusal::Authority(AuthorityError::OutsideSpace { .. }) => "no_authority",
            Refusal::Authority(AuthorityError::Revoked(_)) => "revoked",
            Refusal::Authority(AuthorityError::Compromised { .. }) => "compromised",
            Refusal::Authority(AuthorityError::Retired(_)) => "retired",
            Refusal::KeyTooLong { .. } => "key_too_long",
            Refusal::EmptyKey => "empty_key",
            Refusal::ValueTooLarge { .. } => "value_too_large",
            Refusal::FromTheFuture { .. } => "from_the_future",
            Refusal::ChainBroken { .. } => "chain_broken",
            Refusal::Equivocation(_) => "equivocation",
        }
    }
}

/// The checks that depend only on the delta, the roster, the limits and the
/// time: everything but the signature (batched) and the chain (stateful).
pub fn check_admissible(
    delta: &SignedDelta,
    roster: &Roster,
    limits: &Limits,
    now_ms: u64,
) -> Result<(), Refusal> {
    check_shape(delta.key(), delta.value().len(), limits)?;
    let ahead_ms = delta.hlc().wall_ms.saturating_sub(now_ms);
    if ahead_ms > limits.future_skew_ms_max {
        return Err(Refusal::FromTheFuture {
            ahead_ms,
            max_ms: limits.future_skew_ms_max,
        });
    }
    roster.authorize(&delta.author(), delta.seq(), delta.key())?;
    Ok(())
}

/// Key and value within the limits: checked on receipt and, before signing,
/// on the local write path.
pub fn check_shape(key: &str, value_len: usize, limits: &Limits) -> Result<(), Refusal> {
    // The encoding's own ceilings cap any configured limit.
    let key_max = limits.key_len_max.min(KEY_LEN_FORMAT_MAX);
    let value_max = limits.value_len_max.min(VALUE_LEN_FORMAT_MAX);
    if key.is_empty() {
        return Err(Refusal::EmptyKey);
    }
    if key.len() > key_max {
        return Err(Refusal::KeyTooLong {
            len: key.len(),
            max: key_max,
        });
    }
    if value_len > value_max {
        return Err(Refusal::ValueTooLarge {
            len: value_len,
            max: value_max,
        });
    }
    Ok(())
}

/// Checks that `delta` continues the chain whose head is `head`
/// (`seq`, `hash`). The caller only asks for the next sequence number.
pub fn check_chain(delta: &SignedDelta, head_hash: DeltaHash) -> Result<(), Refusal> {
    if delta.prev() != head_hash {
        return Err(Refusal::ChainBroken {
            seq: delta.seq(),
            expected: head_hash,
            got: delta.prev(),
        });
    }
    Ok(())
}
