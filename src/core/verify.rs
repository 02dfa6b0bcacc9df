//! Signature verification: strict single-signature semantics at batch speed.
//!
//! Batch verification (`ed25519_dalek::verify_batch`) checks the
//! cofactorless equation for a random linear combination of signatures. On
//! its own it accepts a few signatures that `verify_strict` refuses: those
//! with a small-order `R`, a non-canonical encoding of `R`, or a small-order
//! public key. Those are exactly the malleable cases, so we refuse them
//! *before* batching ([`precheck_signature`], [`parse_key`]); after that, a
//! batch passes iff every member would pass `verify_strict` (up to the 2^-128
//! soundness error of the random combination). When a batch fails we split
//! it in halves to find the bad members, so one forgery in a thousand costs
//! about `2 log2(1000)` small batches, not a thousand single verifications.
//!
//! The Wycheproof Ed25519 vectors run against [`verify_items`] in
//! `tests/wycheproof.rs`.

use std::collections::HashMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use ed25519_dalek::{Signature, VerifyingKey};

use super::delta::SignedDelta;
use super::ids::NodeId;

/// Below this size a failed batch is settled one signature at a time.
const SPLIT_FLOOR: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a point on Ed25519")]
    NotAPoint,
    #[error("non-canonical point encoding")]
    NonCanonical,
    #[error("small-order (weak) public key")]
    Weak,
}

/// True when the 255-bit little-endian `y` of a point encoding is >= p.
fn y_not_canonical(enc: &[u8; 32]) -> bool {
    enc[31] & 0x7f == 0x7f && enc[1..31].iter().all(|b| *b == 0xff) && enc[0] >= 0xed
}

/// The `y` coordinates of the eight small-order points, sign bit cleared.
fn small_order_ys() -> &'static [[u8; 32]] {
    static YS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    YS.get_or_init(|| {
        let mut ys: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|p| {
                let mut y = p.compress().to_bytes();
                y[31] &= 0x7f;
                y
            })
            .collect();
        ys.sort();
        ys.dedup();
        ys
    })
}

/// Parses a public key, refusing encodings `verify_strict` would refuse.
pub fn parse_key(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
    if y_not_canonical(bytes) {
        return Err(KeyError::NonCanonical);
    }
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

/// Refuses, without curve arithmetic, signatures whose `R` is small-order or
/// non-canonically encoded: the cases where batch and strict disagree.
pub fn precheck_signature(sig: &Signature) -> bool {
    let r = sig.r_bytes();
    if y_not_canonical(r) {
        return false;
    }
    let mut y = *r;
    y[31] &= 0x7f;
    small_order_ys().binary_search(&y).is_err()
}

/// One signature to check.
pub struct Item<'a> {
    pub key: VerifyingKey,
    pub message: &'a [u8],
    pub signature: Signature,
}

/// Verifies every item; `result[i]` is true iff item `i` is valid under
/// strict Ed25519 semantics.
pub fn verify_items(items: &[Item<'_>]) -> Vec<bool> {
    let mut ok: Vec<bool> = items
        .iter()
        .map(|i| precheck_signature(&i.signature))
        .collect();
    let candidates: Vec<usize> = (0..items.len()).filter(|i| ok[*i]).collect();
    settle(items, &candidates, &mut ok);
    ok
}

fn settle(items: &[Item<'_>], idx: &[usize], ok: &mut [bool]) {
    if idx.is_empty() {
        return;
    }
    if idx.len() <= SPLIT_FLOOR {
        for &i in idx {
            ok[i] = items[i]
                .key
                .verify_strict(items[i].message, &items[i].signature)
                .is_ok();
        }
        return;
    }
    let messages: Vec<&[u8]> = idx.iter().map(|&i| items[i].message).collect();
    let signatures: Vec<Signature> = idx.iter().map(|&i| items[i].signature).collect();
    let keys: Vec<VerifyingKey> = idx.iter().map(|&i| items[i].key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return;
    }
    let (a, b) = idx.split_at(idx.len() / 2);
    settle(items, a, ok);
    settle(items, b, ok);
}

/// Parsed verifying keys per author, so each key is decompressed once, not
/// once per delta.
#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<NodeId, Result<VerifyingKey, KeyError>>,
}

impl KeyCache {
    pub fn key(&mut self, author: NodeId) -> Result<VerifyingKey, KeyError> {
        self.keys
            .entry(author)
            .or_insert_with(|| parse_key(&author.0))
            .clone()
    }

    /// Verifies the deltas' signatures together; `result[i]` is the verdict
    /// for `deltas[i]`.
    pub fn verify_deltas(&mut self, deltas: &[&SignedDelta]) -> Vec<bool> {
        let messages: Vec<Vec<u8>> = deltas.iter().map(|d| d.signed_message()).collect();
        let mut verdict = vec![false; deltas.len()];
        let mut items = Vec::with_capacity(deltas.len());
        let mut positions = Vec::with_capacity(deltas.len());
        for (i, d) in deltas.iter().enumerate() {
            if let Ok(key) = self.key(d.author()) {
                items.push(Item {
                    key,
                    message: &messages[i],
                    signature: d.signature(),
                });
                positions.push(i);
            }
        }
        for (pos, ok) in positions.into_iter().zip(verify_items(&items)) {
            verdict[pos] = ok;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn small_order_table_has_the_five_y_values() {
        assert_eq!(small_order_ys().len(), 5);
    }

    #[test]
    fn one_forgery_in_a_batch_is_found_and_only_it() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let msgs: Vec<Vec<u8>> = (0..37u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> = msgs.iter().map(|m| key.sign(m)).collect();
        sigs[17] = key.sign(b"something else");
        let items: Vec<Item> = msgs
            .iter()
            .zip(&sigs)
            .map(|(m, s)| Item {
                key: key.verifying_key(),
                message: m,
                signature: *s,
            })
            .collect();
        let ok = verify_items(&items);
        assert_eq!(ok.iter().filter(|v| !**v).count(), 1);
        assert!(!ok[17]);
    }

    #[test]
    fn weak_keys_are_refused() {
        let identity = curve25519_dalek::EdwardsPoint::default()
            .compress()
            .to_bytes();
        assert_eq!(parse_key(&identity), Err(KeyError::Weak));
    }
}
