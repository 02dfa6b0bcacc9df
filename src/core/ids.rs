//! Identifiers: a node's id is its Ed25519 public key; a delta's id is the
//! SHA-256 of the exact bytes its author signed.

use std::fmt;

/// A node's identity: the 32 bytes of its Ed25519 public key.
///
/// Using the key itself (rather than a hash of it) means a delta carries
/// everything needed to verify it once the roster vouches for the key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The first 8 hex digits: enough to tell nodes apart in logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses the 64-hex-digit form printed by `Display`.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(NodeId(out))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// SHA-256 of a delta's signed message. Chains link deltas by this hash, and
/// the frontier names each author's head by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DeltaHash(pub [u8; 32]);

impl DeltaHash {
    /// The `prev` of an author's first delta.
    pub const GENESIS: DeltaHash = DeltaHash([0u8; 32]);

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(DeltaHash(out))
    }
}

impl fmt::Display for DeltaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DeltaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeltaHash({})", self.short())
    }
}

/// Both ids travel in JSON documents (reports, aggregates) as 64 hex
/// digits, the form `Display` prints.
macro_rules! hex_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::from_hex(&s)
                    .map_err(|e| serde::de::Error::custom(format!("expected 64 hex digits: {e}")))
            }
        }
    };
}

hex_serde!(NodeId);
hex_serde!(DeltaHash);
