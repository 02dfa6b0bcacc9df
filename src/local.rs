//! A whole federation on one machine, in one directory: keys, certificates,
//! a signed roster, one config file per node and an operator's
//! `client.toml`, all written exactly as the CLI would write them. The demo,
//! the integration tests and the benchmarks start nodes from these files,
//! so they exercise the same loading and checking a real node does.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::config::NodeConfig;
use crate::core::{Above, Member, Role, Roster, SignedRoster};
use crate::identity::tls::TlsIdentity;
use crate::identity::NodeKey;
use crate::node::{self, NodeHandle, Setup, StartError};

/// One node to create.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    /// `None` for an HQ node.
    pub region: Option<String>,
    /// For a unit's node: the unit, and what it hangs from in the tree.
    pub unit: Option<(String, Above)>,
    /// Names of the nodes this one dials.
    pub peers: Vec<String>,
}

impl NodeSpec {
    pub fn hq(name: &str) -> Self {
        NodeSpec {
            name: name.into(),
            region: None,
            unit: None,
            peers: Vec::new(),
        }
    }
    pub fn region(name: &str, region: &str, peers: &[&str]) -> Self {
        NodeSpec {
            name: name.into(),
            region: Some(region.into()),
            unit: None,
            peers: peers.iter().map(|p| p.to_string()).collect(),
        }
    }
    /// A unit's node; the unit joins the tree under `above`.
    pub fn unit(name: &str, unit: &str, above: Above, peers: &[&str]) -> Self {
        NodeSpec {
            name: name.into(),
            region: None,
            unit: Some((unit.into(), above)),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn role(&self) -> Role {
        match (&self.unit, &self.region) {
            (Some(_), _) => Role::Unit,
            (None, Some(_)) => Role::Region,
            (None, None) => Role::Hq,
        }
    }
}

/// The operator every local federation gets.
pub const OPERATOR: &str = "operator";

pub struct LocalFederation {
    pub dir: PathBuf,
    pub federation: SigningKey,
    pub roster: PathBuf,
    /// Each node's name and listen address, in the order given.
    pub nodes: Vec<(String, SocketAddr)>,
    /// Extra config lines appended to every node's config (tests tune
    /// timing with this).
    extra: String,
    /// Listeners bound while choosing ports, handed to the first start.
    listeners: Vec<(String, TcpListener)>,
}

impl LocalFederation {
    /// Writes a federation of `specs` under `dir`, with free loopback ports.
    /// `extra_config` is TOML appended to every node's config file.
    pub fn create(
        dir: &Path,
        specs: &[NodeSpec],
        extra_config: &str,
    ) -> Result<LocalFederation, String> {
        LocalFederation::create_from(dir, specs, extra_config, &mut rand::rngs::OsRng)
    }

    /// [`LocalFederation::create`], drawing the federation and node keys
    /// from `rng`: the simulation's federation is the same in every run.
    pub fn create_from(
        dir: &Path,
        specs: &[NodeSpec],
        extra_config: &str,
        rng: &mut (impl rand::RngCore + rand::CryptoRng),
    ) -> Result<LocalFederation, String> {
        let federation = SigningKey::generate(rng);
        let mut roster = Roster::new(1, []);
        let mut nodes = Vec::new();
        let mut listeners = Vec::new();
        for spec in specs {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let key = NodeKey::from_signing_key(SigningKey::generate(rng));
            let member = write_identity_with(&dir.join(&spec.name), &spec.name, key)?;
            if let Some((unit, above)) = &spec.unit {
                roster.units.insert(unit.clone(), above.clone());
            }
            roster.insert(Member {
                region: spec.region.clone(),
                unit: spec.unit.as_ref().map(|(u, _)| u.clone()),
                roles: BTreeSet::from([spec.role()]),
                address: Some(addr.to_string()),
                ..member
            });
            nodes.push((spec.name.clone(), addr));
            listeners.push((spec.name.clone(), listener));
        }
        let operator = write_identity(&dir.join(OPERATOR), OPERATOR)?;
        roster.insert(Member {
            roles: BTreeSet::from([Role::Operator]),
            ..operator
        });
        let signed = SignedRoster::sign(&roster, &federation).map_err(|e| e.to_string())?;
        let roster_path = dir.join("roster.bin");
        std::fs::write(&roster_path, signed.as_bytes()).map_err(|e| e.to_string())?;
        let fed = hex::encode(federation.verifying_key().to_bytes());
        let fed_dir = dir.join("federation");
        std::fs::create_dir_all(&fed_dir).map_err(|e| e.to_string())?;
        NodeKey::from_signing_key(federation.clone())
            .save(&fed_dir.join("federation.key"))
            .map_err(|e| e.to_string())?;
        let fed_ = LocalFederation {
            dir: dir.to_owned(),
            federation,
            roster: roster_path,
            nodes,
            extra: extra_config.to_owned(),
            listeners,
        };
        for spec in specs {
            fed_.write_config(spec, &fed)?;
        }
        let first = &fed_.nodes[0];
        fed_.write_client(&first.1, &fed)?;
        Ok(fed_)
    }

    fn address(&self, name: &str) -> Result<SocketAddr, String> {
        self.nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("no node named {name:?}"))
    }

    fn write_config(&self, spec: &NodeSpec, fed: &str) -> Result<(), String> {
        let mut text = format!(
            "name = \"{name}\"\ndata_dir = \"data\"\nlisten = \"{addr}\"\n\n\
             [federation]\nkey = \"{fed}\"\nroster = \"../roster.bin\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            name = spec.name,
            addr = self.address(&spec.name)?,
        );
        for p in &spec.peers {
            text.push_str(&format!(
                "\n[[peers]]\nname = \"{p}\"\naddress = \"{}\"\n",
                self.address(p)?
            ));
        }
        text.push('\n');
        text.push_str(&self.extra);
        std::fs::write(self.config_path(&spec.name), text).map_err(|e| e.to_string())
    }

    /// `operator/client.toml`, pointing at `addr`.
    fn write_client(&self, addr: &SocketAddr, fed: &str) -> Result<(), String> {
        let text = format!(
            "connect = \"{addr}\"\nfederation = \"{fed}\"\nroster = \"../roster.bin\"\n\
             tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n"
        );
        std::fs::write(self.client_config(), text).map_err(|e| e.to_string())
    }

    /// The roster as written, verified against the federation key.
    pub fn signed_roster(&self) -> SignedRoster {
        let fed = crate::core::NodeId(self.federation.verifying_key().to_bytes());
        crate::identity::read_roster(&self.roster, &fed).expect("written by create")
    }

    /// The TLS identity of member `name` (a node, or [`OPERATOR`]).
    pub fn tls_identity(&self, name: &str) -> Result<TlsIdentity, String> {
        let dir = self.dir.join(name);
        TlsIdentity::load(&dir.join("tls.crt"), &dir.join("tls.key")).map_err(|e| e.to_string())
    }

    /// The Ed25519 key of node `name`: tests sign hostile deltas with it.
    pub fn node_key(&self, name: &str) -> Result<NodeKey, String> {
        NodeKey::load(&self.dir.join(name).join("node.key")).map_err(|e| e.to_string())
    }

    /// Changes the roster as `roster revoke`/`rotate` would: applies `f`,
    /// bumps the version, signs with the federation key and writes the file.
    /// Returns the signed roster, for a node to be handed.
    pub fn change_roster(
        &self,
        f: impl FnOnce(&mut Roster),
    ) -> Result<SignedRoster, crate::core::RosterError> {
        let mut roster = self.signed_roster().roster().clone();
        f(&mut roster);
        roster.version += 1;
        let signed = SignedRoster::sign(&roster, &self.federation)?;
        std::fs::write(&self.roster, signed.as_bytes()).expect("roster file is writable");
        Ok(signed)
    }

    /// A gRPC channel to `address` over mutual TLS as member `name` (a node
    /// or the operator), trusting the roster file's members: what a
    /// misbehaving member with valid keys would hold.
    pub fn channel_as(
        &self,
        name: &str,
        address: SocketAddr,
    ) -> Result<tonic::transport::Channel, String> {
        let identity = self.tls_identity(name)?;
        let trust = node::trust_from(self.signed_roster().roster());
        let tls =
            crate::identity::tls::client_config(&identity, &trust).map_err(|e| e.to_string())?;
        let config =
            NodeConfig::load(&self.config_path(&self.nodes[0].0)).map_err(|e| e.to_string())?;
        node::net::connect(
            std::sync::Arc::new(node::env::Tcp),
            address.to_string(),
            None,
            std::sync::Arc::new(tls),
            trust,
            config.sync,
            config.limits.message_bytes_max,
        )
        .map(|(channel, _)| channel)
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("node.toml")
    }

    pub fn client_config(&self) -> PathBuf {
        self.dir.join(OPERATOR).join("client.toml")
    }

    /// Lets go of the ports bound when they were chosen, so that nodes run
    /// as processes (`fedsync run` with these configs) can bind them.
    pub fn release_ports(&mut self) {
        self.listeners.clear();
    }

    /// Starts node `name` from its config file. The first start of each
    /// node reuses the listener bound when its port was chosen.
    pub async fn start(&mut self, name: &str) -> Result<NodeHandle, StartError> {
        let config = NodeConfig::load(&self.config_path(name))?;
        let setup = Setup::load(config)?;
        match self.listeners.iter().position(|(n, _)| n == name) {
            Some(i) => {
                let (_, std) = self.listeners.remove(i);
                let addr = setup.config.listen;
                let listener = std
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(std))
                    .map_err(|source| StartError::Listen { addr, source })?;
                node::start_on(setup, listener)
            }
            None => node::start(setup).await,
        }
    }
}

/// Writes `node.key`, `tls.crt` and `tls.key` into `dir` and returns the
/// roster entry they make (roles and address still to fill in).
pub fn write_identity(dir: &Path, name: &str) -> Result<Member, String> {
    write_identity_with(dir, name, NodeKey::generate())
}

fn write_identity_with(dir: &Path, name: &str, key: NodeKey) -> Result<Member, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    key.save(&dir.join("node.key")).map_err(|e| e.to_string())?;
    let tls = TlsIdentity::generate(name).map_err(|e| e.to_string())?;
    tls.save(&dir.join("tls.crt"), &dir.join("tls.key"))
        .map_err(|e| e.to_string())?;
    Ok(Member {
        id: key.id(),
        name: name.to_owned(),
        region: None,
        unit: None,
        roles: BTreeSet::new(),
        tls: Some(tls.fingerprint().0),
        address: None,
        standing: crate::core::Standing::Active,
    })
}
