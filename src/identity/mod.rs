//! Identity: a node's Ed25519 key (which signs its deltas) and its TLS key
//! and certificate (which authenticate its connections, see [`tls`]).
//!
//! Node keys live in a file only the owner can read.
//!
//! The file is text, so an operator can tell what it is:
//!
//! ```text
//! # fedsync Ed25519 secret key. Keep private (mode 0600).
//! ed25519-secret <64 hex digits>
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::core::{NodeId, RosterError, SignedRoster};

pub mod tls;

/// Why a roster file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RosterFileError {
    #[error("roster {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("roster {}: {source}", path.display())]
    Invalid { path: PathBuf, source: RosterError },
}

/// Reads a signed roster file and verifies it against the federation key:
/// the one way nodes, the CLI and operators' clients load a roster.
pub fn read_roster(path: &Path, federation: &NodeId) -> Result<SignedRoster, RosterFileError> {
    let bytes = fs::read(path).map_err(|source| RosterFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    SignedRoster::open(&bytes, federation).map_err(|source| RosterFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

const TAG: &str = "ed25519-secret";

/// The file's permission bits when group or others may access it (a
/// secret file must stay with its owner), `None` when it is private.
pub(crate) fn shared_mode(path: &Path) -> std::io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: not a fedsync key file ({why})")]
    Format { path: PathBuf, why: &'static str },
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
}

/// A node's signing key and the id derived from it.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    // Never print secret material, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.id().short())
    }
}

impl NodeKey {
    pub fn generate() -> Self {
        NodeKey {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    pub fn from_signing_key(signing: SigningKey) -> Self {
        NodeKey { signing }
    }

    pub fn id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Writes a new key file with mode 0600. Never overwrites.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyFileError::Exists {
                    path: path.to_owned(),
                },
                _ => io(e),
            })?;
        let text = format!(
            "# fedsync Ed25519 secret key. Keep private (mode 0600).\n{TAG} {}\n",
            hex::encode(self.signing.to_bytes())
        );
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(mode) = shared_mode(path).map_err(io)? {
            return Err(KeyFileError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let format = |why| KeyFileError::Format {
            path: path.to_owned(),
            why,
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| format("empty"))?;
        let hex_part = line
            .strip_prefix(TAG)
            .ok_or_else(|| format("missing the ed25519-secret tag"))?
            .trim();
        let mut secret = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut secret)
            .map_err(|_| format("secret is not 64 hex digits"))?;
        Ok(NodeKey {
            signing: SigningKey::from_bytes(&secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_gives_the_same_identity_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::generate();
        key.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(NodeKey::load(&path).unwrap().id(), key.id());
        assert!(matches!(key.save(&path), Err(KeyFileError::Exists { .. })));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::generate().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, "ed25519-secret zz\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = NodeKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("not 64 hex digits"), "{err}");
    }
}
