//! What a node starts from: its config, key files, roster and store,
//! loaded in that order and cross-checked, and the TLS trust the roster
//! implies.

use crate::config::NodeConfig;
use crate::core::SignedRoster;
use crate::identity::tls::{self, TlsIdentity, TrustStore};
use crate::identity::{read_roster, NodeKey};
use crate::store::KvStore;

use super::StartError;

/// Everything a node runs from, loaded and cross-checked.
pub struct Setup {
    pub config: NodeConfig,
    pub key: NodeKey,
    pub tls: TlsIdentity,
    pub roster: SignedRoster,
    pub store: KvStore,
    /// Start a rebuild from peers (`run --rebuild`): the store was lost or
    /// found corrupt and starts empty. See [`crate::core::Rebuild`].
    pub rebuild: bool,
    /// Nodes that dial this one (it does not dial them) and so may hold
    /// its latest writes: a rebuild waits for them too.
    pub rebuild_from: Vec<String>,
}

impl Setup {
    /// Loads the key files, roster and store named by `config`. The roster
    /// file must be signed by the configured federation key; [`super::start_on`]
    /// checks that the roster in force (this file's or a newer one the
    /// store adopted) lists this node under its name, with this node key
    /// and this TLS certificate.
    ///
    /// The key files and the roster are read first: a start refused for
    /// them leaves the data directory exactly as it was.
    pub fn load(config: NodeConfig) -> Result<Setup, StartError> {
        let (key, tls, roster) = read_identity(&config)?;
        let store = KvStore::open(&config.data_dir, &config.store_options())?;
        Ok(Setup::from_parts(config, key, tls, roster, store))
    }

    /// [`Setup::load`] with a store the caller opened (the simulation's,
    /// on its own disk).
    pub fn load_with(config: NodeConfig, store: KvStore) -> Result<Setup, StartError> {
        let (key, tls, roster) = read_identity(&config)?;
        Ok(Setup::from_parts(config, key, tls, roster, store))
    }

    fn from_parts(
        config: NodeConfig,
        key: NodeKey,
        tls: TlsIdentity,
        roster: SignedRoster,
        store: KvStore,
    ) -> Setup {
        Setup {
            config,
            key,
            tls,
            roster,
            store,
            rebuild: false,
            rebuild_from: Vec::new(),
        }
    }
}

fn read_identity(config: &NodeConfig) -> Result<(NodeKey, TlsIdentity, SignedRoster), StartError> {
    let key = NodeKey::load(&config.identity.node_key)?;
    let tls = TlsIdentity::load(&config.identity.tls_cert, &config.identity.tls_key)?;
    let roster = read_roster(&config.federation.roster, &config.federation_id())?;
    Ok((key, tls, roster))
}

/// Checks that the roster in force lists `name` as a node with this key
/// and this TLS certificate.
pub(super) fn check_identity(
    name: &str,
    key: &NodeKey,
    tls: &TlsIdentity,
    roster: &SignedRoster,
) -> Result<(), StartError> {
    let fail = |why: String| Err(StartError::Identity(why));
    let Some(me) = roster.roster().by_name(name) else {
        return fail(format!(
            "roster version {} has no member named {name:?}",
            roster.roster().version
        ));
    };
    if me.id != key.id() {
        return fail(format!(
            "the roster lists {name:?} with key {}, but the node key file holds {}",
            me.id.short(),
            key.id().short()
        ));
    }
    if !me.is_node() {
        return fail(format!("{name:?} is an operator in the roster, not a node"));
    }
    if me.tls != Some(tls.fingerprint().0) {
        return fail(format!(
            "the roster pins a different TLS certificate for {name:?} than the one configured (fingerprint {})",
            tls.fingerprint()
        ));
    }
    Ok(())
}

/// Who may connect, from the roster: each active member's pinned
/// certificate. Retired and revoked keys are refused at the handshake.
pub fn trust_from(roster: &crate::core::Roster) -> TrustStore {
    TrustStore::new(trust_entries(roster))
}

pub(crate) fn trust_entries(roster: &crate::core::Roster) -> Vec<(tls::Fingerprint, tls::Peer)> {
    roster
        .members()
        .filter(|m| m.is_active())
        .filter_map(|m| {
            let fp = tls::Fingerprint(m.tls?);
            let peer = tls::Peer {
                name: m.name.clone(),
                node: m.is_node().then_some(m.id),
            };
            Some((fp, peer))
        })
        .collect()
}
