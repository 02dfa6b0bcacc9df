//! Set-up commands: the federation key and roster, node and operator keys.
//!
//! A federation is its signing key (kept at HQ, offline if possible) and the
//! roster it signs. Every member's entry binds its name, region and roles to
//! its Ed25519 key and its TLS certificate's fingerprint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use fedsync::core::{Member, NodeId, Role, Roster, SignedRoster, Standing};
use fedsync::identity::tls::{Fingerprint, TlsIdentity};
use fedsync::identity::{read_roster, NodeKey};

use super::print_json;

#[derive(Subcommand, Debug)]
pub enum FederationCmd {
    /// Write a new federation key and an empty signed roster (version 1).
    Create {
        /// Directory for `federation.key` and `roster.bin`.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Write `node.key`, `tls.crt` and `tls.key` for a new node.
    Init(InitArgs),
}

#[derive(Subcommand, Debug)]
pub enum OperatorCmd {
    /// Write an operator's keys (`tls.crt`/`tls.key` are the PEM files any
    /// gRPC tool can use) and a `client.toml` for the CLI.
    Init {
        #[command(flatten)]
        init: InitArgs,
        /// The node the CLI talks to, `host:port`.
        #[arg(long)]
        connect: String,
        /// The federation public key (64 hex digits).
        #[arg(long)]
        federation: String,
        /// The signed roster (path, stored in client.toml as given).
        #[arg(long)]
        roster: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to write the key files into (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// The member's name, as the roster will list it.
    #[arg(long)]
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RosterCmd {
    /// Add a member, bump the version and re-sign.
    Add(AddArgs),
    /// Remove an operator by name, bump the version and re-sign. Nodes stay
    /// listed, so their history stays valid: revoke or rotate them instead.
    Remove {
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long)]
        name: String,
    },
    /// Revoke a member's key: outright (every delta it signed is refused
    /// and retracted everywhere), or with --after SEQ as compromised after
    /// that sequence number (its deltas up to SEQ stay valid).
    Revoke {
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long)]
        name: String,
        /// The last sequence number of the key's log that stays valid.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
    },
    /// Give a node a successor key under the same name and region. The old
    /// key may no longer connect or write; what it signed stays valid.
    Rotate(RotateArgs),
    /// Move a unit in the tree: below another region, or below another unit
    /// (a merge). Its key space and everything it signed stay as they are;
    /// its reports count where the tree now puts it.
    MoveUnit {
        #[command(flatten)]
        signer: SignerArgs,
        #[arg(long)]
        unit: String,
        #[command(flatten)]
        above: super::tree::AboveArgs,
    },
    /// Print the organisation's tree: HQ, each region and the units below
    /// it, with the nodes of each, after verifying the roster's signature.
    Tree(ReadArgs),
    /// Hand the signed roster to a node, which adopts it if newer and
    /// passes it on to every peer.
    Publish(super::trust::PublishArgs),
    /// Print the roster after verifying its signature.
    Show(ReadArgs),
}

/// A roster file to read, and the key its signature must verify against.
#[derive(Args, Debug)]
pub struct ReadArgs {
    #[arg(long)]
    roster: PathBuf,
    /// The federation public key (64 hex digits).
    #[arg(long)]
    federation: String,
    #[arg(long)]
    json: bool,
}

impl ReadArgs {
    fn read(&self) -> anyhow::Result<SignedRoster> {
        let fed = NodeId::from_hex(&self.federation).map_err(|e| anyhow!("--federation: {e}"))?;
        Ok(read_roster(&self.roster, &fed)?)
    }
}

#[derive(Args, Debug)]
pub struct SignerArgs {
    /// The roster file to change.
    #[arg(long)]
    roster: PathBuf,
    /// The federation key file that signs it.
    #[arg(long)]
    federation_key: PathBuf,
}

/// A member's id and certificate: from its key directory, or given.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// Read the member's id and certificate from its key directory
    /// (`node.key`, `tls.crt`), as written by `node init`/`operator init`.
    #[arg(long, conflicts_with_all = ["id", "tls"])]
    from: Option<PathBuf>,
    /// The member's Ed25519 public key (64 hex digits).
    #[arg(long, requires = "tls")]
    id: Option<String>,
    /// The SHA-256 fingerprint of the member's TLS certificate (64 hex).
    #[arg(long, requires = "id")]
    tls: Option<String>,
}

impl KeyArgs {
    fn resolve(&self) -> anyhow::Result<(NodeId, Fingerprint)> {
        match (&self.from, &self.id, &self.tls) {
            (Some(dir), _, _) => {
                let key = NodeKey::load(&dir.join("node.key"))?;
                let cert = TlsIdentity::load(&dir.join("tls.crt"), &dir.join("tls.key"))?;
                Ok((key.id(), cert.fingerprint()))
            }
            (None, Some(id), Some(tls)) => Ok((
                NodeId::from_hex(id).map_err(|e| anyhow!("--id: {e}"))?,
                Fingerprint::from_hex(tls).map_err(|e| anyhow!("--tls: {e}"))?,
            )),
            _ => bail!("give either --from DIR or both --id and --tls"),
        }
    }
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    signer: SignerArgs,
    /// The node whose key is replaced.
    #[arg(long)]
    name: String,
    /// The successor key.
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    signer: SignerArgs,
    #[arg(long)]
    name: String,
    /// `hq`, `region`, `unit` or `operator`.
    #[arg(long)]
    role: String,
    /// The region whose key space a `region` node writes; for a `unit`
    /// node whose unit is new, the region the unit hangs from.
    #[arg(long)]
    region: Option<String>,
    /// The unit whose key space a `unit` node writes (`units/<unit>/…`).
    /// A new unit joins the tree below --region or --parent-unit.
    #[arg(long)]
    unit: Option<String>,
    /// For a new unit: the unit it hangs from, instead of a region.
    #[arg(long, conflicts_with = "region")]
    parent_unit: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    /// Where peers reach this member, `host:port`.
    #[arg(long)]
    address: Option<String>,
}

pub fn federation(cmd: FederationCmd) -> anyhow::Result<()> {
    let FederationCmd::Create { dir, json } = cmd;
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let roster_path = dir.join("roster.bin");
    if roster_path.exists() {
        bail!("{} exists; refusing to overwrite", roster_path.display());
    }
    let key = NodeKey::generate();
    key.save(&dir.join("federation.key"))?;
    let signed = SignedRoster::sign(&Roster::new(1, []), key.signing_key())?;
    write_atomically(&roster_path, signed.as_bytes())?;
    if json {
        print_json(&json!({ "federation": key.id().to_string(), "roster": roster_path }));
    } else {
        println!("federation key: {}", key.id());
        println!(
            "wrote {} (keep it private) and {}",
            dir.join("federation.key").display(),
            roster_path.display()
        );
    }
    Ok(())
}

/// Writes `node.key`, `tls.crt`, `tls.key`; returns (id, fingerprint).
fn init_keys(a: &InitArgs) -> anyhow::Result<(NodeId, Fingerprint)> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("{}", a.dir.display()))?;
    let key = NodeKey::generate();
    key.save(&a.dir.join("node.key"))?;
    let tls = TlsIdentity::generate(&a.name)?;
    tls.save(&a.dir.join("tls.crt"), &a.dir.join("tls.key"))?;
    Ok((key.id(), tls.fingerprint()))
}

fn print_keys(a: &InitArgs, id: NodeId, fp: Fingerprint) {
    if a.json {
        print_json(
            &json!({ "name": a.name, "id": id.to_string(), "tls": fp.to_string(), "dir": a.dir }),
        );
    } else {
        println!("{}: id {id}", a.name);
        println!("{}: tls {fp}", a.name);
        println!(
            "add it at HQ with: fedsync roster add --roster roster.bin --federation-key federation.key \\\n  \
             --name {} --id {id} --tls {fp} --role <hq|region|unit|operator> [--region <r>] [--unit <u>]",
            a.name
        );
    }
}

pub fn node(cmd: NodeCmd) -> anyhow::Result<()> {
    let NodeCmd::Init(a) = cmd;
    let (id, fp) = init_keys(&a)?;
    print_keys(&a, id, fp);
    Ok(())
}

pub fn operator(cmd: OperatorCmd) -> anyhow::Result<()> {
    let OperatorCmd::Init {
        init,
        connect,
        federation,
        roster,
    } = cmd;
    NodeId::from_hex(&federation).map_err(|e| anyhow!("--federation {federation:?}: {e}"))?;
    let (id, fp) = init_keys(&init)?;
    let roster = std::path::absolute(&roster)?;
    let text = format!(
        "# Where the fedsync CLI connects, and as whom.\nconnect = \"{connect}\"\n\
         federation = \"{federation}\"\nroster = \"{}\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n",
        roster.display()
    );
    write_atomically(&init.dir.join("client.toml"), text.as_bytes())?;
    print_keys(&init, id, fp);
    Ok(())
}

pub fn roster(cmd: RosterCmd) -> anyhow::Result<()> {
    match cmd {
        RosterCmd::Add(a) => add(a),
        RosterCmd::Remove { signer, name } => change(&signer, |r| {
            let m = r
                .by_name(&name)
                .ok_or_else(|| anyhow!("no member named {name:?}"))?;
            if m.is_node() {
                bail!(
                    "{name} is a node: its deltas stay in the federation, so it stays listed; \
                     use `roster revoke` or `roster rotate`"
                );
            }
            let id = m.id;
            r.remove(&id);
            Ok(())
        }),
        RosterCmd::Revoke {
            signer,
            name,
            after,
        } => change(&signer, |r| {
            let mut m = r
                .by_name(&name)
                .filter(|m| m.is_active())
                .cloned()
                .ok_or_else(|| anyhow!("no active member named {name:?}"))?;
            m.standing = Standing::Revoked {
                valid_through: after.unwrap_or(0),
            };
            r.insert(m);
            Ok(())
        }),
        RosterCmd::Rotate(a) => rotate(a),
        RosterCmd::MoveUnit {
            signer,
            unit,
            above,
        } => change(&signer, |r| {
            super::tree::move_unit(r, &unit, above.above()?)
        }),
        RosterCmd::Tree(a) => {
            super::tree::print(a.read()?.roster(), a.json);
            Ok(())
        }
        RosterCmd::Publish(_) => unreachable!("async: dispatched by cli::run"),
        RosterCmd::Show(a) => {
            show(a.read()?.roster(), a.json);
            Ok(())
        }
    }
}

fn add(a: AddArgs) -> anyhow::Result<()> {
    let role = Role::parse(&a.role)
        .ok_or_else(|| anyhow!("--role {:?}: use hq, region, unit or operator", a.role))?;
    let (id, tls) = a.key.resolve()?;
    let unit = super::tree::unit_of(role, &a.unit, &a.region, &a.parent_unit)?;
    let member = Member {
        id,
        name: a.name.clone(),
        region: if unit.is_some() {
            None
        } else {
            a.region.clone()
        },
        unit: unit.as_ref().map(|(u, _)| u.clone()),
        roles: BTreeSet::from([role]),
        tls: Some(tls.0),
        address: a.address.clone(),
        standing: Standing::Active,
    };
    change(&a.signer, |r| {
        if let Some((u, above)) = unit {
            super::tree::place_unit(r, &u, above)?;
        }
        if let Some(other) = r.by_name(&member.name).filter(|m| m.is_active()) {
            if other.id != member.id {
                bail!(
                    "{} is already a member with another key; use `roster rotate` to replace its key",
                    member.name
                );
            }
        }
        r.insert(member);
        Ok(())
    })
}

/// The old key retires with a pointer to its successor, which takes over
/// the name, region, roles and address.
fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let (id, tls) = a.key.resolve()?;
    change(&a.signer, |r| {
        let mut old = r
            .by_name(&a.name)
            .filter(|m| m.is_active() && m.is_node())
            .cloned()
            .ok_or_else(|| anyhow!("no active node named {:?}", a.name))?;
        if r.member(&id).is_some() {
            bail!("the successor key {} is already in the roster", id.short());
        }
        let successor = Member {
            id,
            tls: Some(tls.0),
            standing: Standing::Active,
            ..old.clone()
        };
        old.standing = Standing::Retired {
            successor: Some(id),
        };
        r.insert(old);
        r.insert(successor);
        Ok(())
    })
}

/// Loads, verifies, changes, bumps the version, re-signs, writes.
fn change(s: &SignerArgs, f: impl FnOnce(&mut Roster) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let key = NodeKey::load(&s.federation_key)?;
    let signed = read_roster(&s.roster, &key.id())?;
    let mut roster = signed.roster().clone();
    f(&mut roster)?;
    roster.version += 1;
    let signed = SignedRoster::sign(&roster, key.signing_key())?;
    write_atomically(&s.roster, signed.as_bytes())?;
    println!(
        "roster version {} signed ({} members)",
        roster.version,
        roster.len()
    );
    Ok(())
}

fn show(r: &Roster, as_json: bool) {
    if as_json {
        let members: Vec<_> = r
            .members()
            .map(|m| {
                json!({
                    "name": m.name, "id": m.id.to_string(), "region": r.region_of(m), "unit": m.unit,
                    "roles": m.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "tls": m.tls.map(hex::encode), "address": m.address,
                    "standing": m.standing.describe(),
                })
            })
            .collect();
        print_json(
            &json!({ "version": r.version, "members": members, "tree": super::tree::tree_json(r) }),
        );
        return;
    }
    println!("roster version {}", r.version);
    println!(
        "{:<16} {:<9} {:<9} {:<8} {:<22} STANDING",
        "NAME", "ID", "ROLE", "SPACE", "ADDRESS"
    );
    for m in r.members() {
        let roles: Vec<_> = m.roles.iter().map(|r| r.as_str()).collect();
        println!(
            "{:<16} {:<9} {:<9} {:<8} {:<22} {}",
            m.name,
            m.id.short(),
            roles.join(","),
            m.unit.as_deref().or(m.region.as_deref()).unwrap_or("-"),
            m.address.as_deref().unwrap_or("-"),
            m.standing.describe()
        );
    }
}

/// Write to a temporary file and rename: a crash leaves the old file or the
/// new one, never half of either.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}
