//! The receipt an office carries back: its node's frontier after an
//! import, as JSON, so the next export sends only what it still lacks.
//!
//! ```json
//! {
//!   "format": "fedsync-receipt/1",
//!   "node": "office-ke",
//!   "id": "<64 hex digits: the node's id>",
//!   "created_ms": 1767225600000,
//!   "digest": "<64 hex digits: the frontier's digest>",
//!   "frontier": [{ "author": "<64 hex>", "seq": 1200, "hash": "<64 hex>" }]
//! }
//! ```
//!
//! A receipt is not signed: it only chooses what the next bundle holds.
//! A forged or stale one can at worst leave out deltas the office lacks
//! (they come with a later bundle, or over the link) or repeat some it
//! holds (counted as duplicates); it can never make an office accept a
//! delta, which is verified on import whatever the receipt said. The
//! digest catches a receipt damaged or hand-edited by mistake.

use serde::{Deserialize, Serialize};

use crate::core::{DeltaHash, Frontier, Head, NodeId};

pub const RECEIPT_FORMAT: &str = "fedsync-receipt/1";
/// A receipt's JSON, at most: some 180 bytes per author.
pub const RECEIPT_BYTES_MAX: usize = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub node: String,
    pub id: NodeId,
    pub created_ms: u64,
    pub frontier: Frontier,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt of {0} bytes (at most {RECEIPT_BYTES_MAX})")]
    TooLarge(usize),
    #[error("not a fedsync receipt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("receipt format {0:?} is not supported (this build reads {RECEIPT_FORMAT:?})")]
    Format(String),
    #[error("receipt: {0}")]
    Field(String),
    #[error("receipt: its digest does not match its frontier (damaged or edited)")]
    Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptJson {
    format: String,
    node: String,
    id: String,
    created_ms: u64,
    digest: String,
    frontier: Vec<HeadJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadJson {
    author: String,
    seq: u64,
    hash: String,
}

impl Receipt {
    pub fn to_json(&self) -> String {
        let json = ReceiptJson {
            format: RECEIPT_FORMAT.to_owned(),
            node: self.node.clone(),
            id: self.id.to_string(),
            created_ms: self.created_ms,
            digest: self.frontier.digest().to_string(),
            frontier: (self.frontier.iter())
                .map(|(a, h)| HeadJson {
                    author: a.to_string(),
                    seq: h.seq,
                    hash: h.hash.to_string(),
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&json).expect("a receipt serialises");
        text.push('\n');
        text
    }

    pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
        if text.len() > RECEIPT_BYTES_MAX {
            return Err(ReceiptError::TooLarge(text.len()));
        }
        let json: ReceiptJson = serde_json::from_str(text)?;
        if json.format != RECEIPT_FORMAT {
            return Err(ReceiptError::Format(json.format));
        }
        let field = |what: &str, e: hex::FromHexError| ReceiptError::Field(format!("{what}: {e}"));
        let id = NodeId::from_hex(&json.id).map_err(|e| field("id", e))?;
        let mut frontier = Frontier::new();
        for h in &json.frontier {
            let author = NodeId::from_hex(&h.author).map_err(|e| field("author", e))?;
            let hash = DeltaHash::from_hex(&h.hash).map_err(|e| field("hash", e))?;
            if h.seq == 0 || frontier.head(&author).seq != 0 {
                return Err(ReceiptError::Field(format!(
                    "author {} listed twice, or at seq 0",
                    author.short()
                )));
            }
            frontier.set(author, Head { seq: h.seq, hash });
        }
        if frontier.digest().to_string() != json.digest {
            return Err(ReceiptError::Digest);
        }
        Ok(Receipt {
            node: json.node,
            id,
            created_ms: json.created_ms,
            frontier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        let mut frontier = Frontier::new();
        frontier.set(
            NodeId([3; 32]),
            Head {
                seq: 12,
                hash: DeltaHash([9; 32]),
            },
        );
        Receipt {
            node: "office-ke".into(),
            id: NodeId([1; 32]),
            created_ms: 1_767_225_600_000,
            frontier,
        }
    }

    #[test]
    fn round_trips() {
        let r = receipt();
        assert_eq!(Receipt::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn an_edited_seq_fails_the_digest() {
        let text = receipt().to_json().replace("\"seq\": 12", "\"seq\": 13");
        assert!(matches!(
            Receipt::from_json(&text),
            Err(ReceiptError::Digest)
        ));
    }

    #[test]
    fn unknown_fields_and_other_formats_are_refused() {
        let text = receipt().to_json().replacen('{', "{\"extra\": 1,", 1);
        assert!(matches!(
            Receipt::from_json(&text),
            Err(ReceiptError::Json(_))
        ));
        let text = receipt().to_json().replace("receipt/1", "receipt/9");
        assert!(matches!(
            Receipt::from_json(&text),
            Err(ReceiptError::Format(_))
        ));
    }
}
