//! `fedsync bundle`: deltas carried on a USB stick. `export` at the node
//! that has them, `verify` anywhere, `import` at the office, whose
//! receipt comes back for the next `export --since`. Export, import and
//! receipt open the node's store, so its node must be stopped (sled lets
//! one process hold a store); the format is in `fedsync::bundle`.
//! `bundle/reading.rs`: the commands that read a bundle, `verify` and
//! `import`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use fedsync::bundle::{self, parts, Receipt};
use fedsync::config::NodeConfig;
use fedsync::core::{Frontier, Replica, SignedRoster};
use fedsync::identity::{read_roster, NodeKey};
use fedsync::store::KvStore;

use super::print_json;

mod reading;
use reading::{import, verify};

#[derive(Subcommand, Debug)]
pub enum BundleCmd {
    /// Write the deltas another office lacks into FILE (node stopped).
    Export(ExportArgs),
    /// Check a bundle's signatures, hashes and every delta; import nothing.
    Verify(VerifyArgs),
    /// Import a bundle into this node (stopped) and write its receipt.
    Import(ImportArgs),
    /// Write this node's frontier as a receipt, to start an exchange.
    Receipt(ReceiptArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).multiple(true)))]
pub struct ExportArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// The bundle to write; beyond the part size it continues in FILE.2,
    /// FILE.3, … Refused if FILE or any FILE.N exists.
    #[arg(long)]
    out: PathBuf,
    /// The roster member the bundle is for. This node does not keep what
    /// a peer holds across restarts, so alone this exports everything;
    /// with --since, what that member's receipt shows it lacks.
    #[arg(long = "for", value_name = "PEER_NAME", group = "what")]
    for_peer: Option<String>,
    /// A receipt from the importing office: export only what it lacks.
    #[arg(long, value_name = "RECEIPT.json", group = "what")]
    since: Option<PathBuf>,
    /// Every delta this node holds.
    #[arg(long, group = "what", conflicts_with_all = ["for_peer", "since"])]
    all: bool,
    /// Bytes per file (default: FAT32's largest, 4 GiB less one byte).
    #[arg(long, hide = true, default_value_t = parts::PART_BYTES_DEFAULT)]
    part_bytes: u64,
    /// Uncompressed bytes per chunk.
    #[arg(long, hide = true, default_value_t = bundle::CHUNK_TARGET_BYTES)]
    chunk_bytes: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The bundle (its first file; FILE.2, … are read after it).
    file: PathBuf,
    /// Also check each delta against this signed roster (membership,
    /// authority, limits), as import would.
    #[arg(long, requires = "federation")]
    roster: Option<PathBuf>,
    /// The federation public key the roster must be signed by.
    #[arg(long, requires = "roster")]
    federation: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// The bundle (its first file; FILE.2, … are read after it).
    file: PathBuf,
    /// Where to write the receipt (default: FILE.receipt.json).
    #[arg(long)]
    receipt: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ReceiptArgs {
    #[arg(long, short)]
    config: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BundleCmd) -> anyhow::Result<()> {
    match cmd {
        BundleCmd::Export(a) => export(a),
        BundleCmd::Verify(a) => verify(a),
        BundleCmd::Import(a) => import(a),
        BundleCmd::Receipt(a) => receipt(a),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A node's files as a bundle command needs them: config, key and
/// roster, all read before the store is opened, so a refusal for any of
/// them leaves the data directory untouched.
struct NodeFiles {
    config: NodeConfig,
    key: NodeKey,
    roster: SignedRoster,
}

impl NodeFiles {
    fn load(path: &Path) -> anyhow::Result<NodeFiles> {
        let config = NodeConfig::load(path)?;
        let key = NodeKey::load(&config.identity.node_key)?;
        let roster = read_roster(&config.federation.roster, &config.federation_id())?;
        Ok(NodeFiles {
            config,
            key,
            roster,
        })
    }

    /// The store, with the roster in force as the node would start with
    /// it. A store held by a running node is refused in one line.
    fn open(&self) -> anyhow::Result<Replica<KvStore>> {
        let c = &self.config;
        let store = KvStore::open(&c.data_dir, &c.store_options()).map_err(|e| {
            if e.is_locked() {
                anyhow!(
                    "the store in {} is in use: is the node running? Stop it first \
                     (bundles are exported from and imported into a stopped node's store)",
                    c.data_dir.display()
                )
            } else {
                anyhow!(e)
            }
        })?;
        let (replica, problem) =
            Replica::open_signed(store, self.roster.clone(), c.core_limits(), now_ms())?;
        if let Some(e) = problem {
            tracing::warn!(error = %e, "the roster in the store does not verify; using the roster file");
        }
        let roster = replica.roster();
        match roster.by_name(&c.name) {
            Some(m) if m.id == self.key.id() => Ok(replica),
            Some(m) => bail!(
                "the roster lists {:?} with key {}, but the node key file holds {}",
                c.name,
                m.id.short(),
                self.key.id().short()
            ),
            None => bail!(
                "roster version {} has no member named {:?}",
                roster.version,
                c.name
            ),
        }
    }
}

fn read_receipt(path: &Path) -> anyhow::Result<Receipt> {
    let len = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    if len > bundle::RECEIPT_BYTES_MAX as u64 {
        bail!("{}: {len} bytes is too large for a receipt", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Receipt::from_json(&text).with_context(|| path.display().to_string())
}

/// Writes beside `path` and renames: a receipt is whole or absent.
fn write_receipt(path: &Path, r: &Receipt) -> anyhow::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
    f.write_all(r.to_json().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    if a.part_bytes < parts::PART_BYTES_MIN {
        bail!("--part-bytes: at least {}", parts::PART_BYTES_MIN);
    }
    let node = NodeFiles::load(&a.config)?;
    let receipt = a.since.as_deref().map(read_receipt).transpose()?;
    if let Some(peer) = &a.for_peer {
        let member = (node.roster.roster().by_name(peer))
            .filter(|m| m.is_node())
            .ok_or_else(|| anyhow!("--for {peer}: no node of that name in the roster"))?;
        if let Some(r) = &receipt {
            if r.node != *peer || r.id != member.id {
                bail!("--since: the receipt is from {:?}, not {peer:?}", r.node);
            }
        }
    }
    if let Some(found) = parts::any_part_exists(&a.out)? {
        bail!(
            "{} exists: remove it (and any other part of an earlier bundle) first",
            found.display()
        );
    }
    let base = receipt.map(|r| r.frontier).unwrap_or_default();
    let replica = node.open()?;
    let req = bundle::ExportRequest {
        key: node.key.signing_key(),
        name: &node.config.name,
        base,
        roster: replica.signed_roster().map(|s| s.as_bytes().to_vec()),
        created_ms: now_ms(),
        part_bytes: a.part_bytes,
        chunk_bytes: a.chunk_bytes,
    };
    let out = parts::PartWriter::create(&a.out, a.part_bytes)
        .with_context(|| a.out.display().to_string())?;
    let (files, exported) = match bundle::export(replica.store(), req, out) {
        Ok((w, exported)) => (w.finish()?, exported),
        Err(e) => {
            // Whatever parts were written are this export's own (none
            // existed before): remove them, so nothing half-written
            // passes for a bundle.
            for n in 1.. {
                if std::fs::remove_file(parts::part_path(&a.out, n)).is_err() {
                    break;
                }
            }
            return Err(e.into());
        }
    };
    let w = exported.written;
    let file_bytes: u64 = files.iter().map(|(_, n)| n).sum();
    let ratio = file_bytes as f64 / (w.delta_bytes.max(1)) as f64;
    if a.json {
        print_json(&json!({
            "exporter": node.config.name, "deltas": w.deltas, "authors": exported.authors,
            "chunks": w.chunks, "delta_bytes": w.delta_bytes, "bytes": file_bytes,
            "files": files.iter().map(|(p, n)| json!({"path": p, "bytes": n})).collect::<Vec<_>>(),
            "base_deltas": exported.header.base.total_deltas(),
            "result_digest": exported.header.result.digest().to_string(),
        }));
        return Ok(());
    }
    let for_whom = match (&a.for_peer, &a.since) {
        (Some(p), None) => format!(
            " for {p} (everything: pass --since with {p}'s receipt to send only what it lacks)"
        ),
        (Some(p), Some(_)) => format!(" for {p}"),
        _ => String::new(),
    };
    println!(
        "exported {} deltas of {} authors{for_whom}: {} chunks, {} bytes ({ratio:.2}x the deltas' {} bytes)",
        w.deltas, exported.authors, w.chunks, file_bytes, w.delta_bytes
    );
    for (p, n) in &files {
        println!("  {} ({n} bytes)", p.display());
    }
    Ok(())
}

fn receipt(a: ReceiptArgs) -> anyhow::Result<()> {
    let node = NodeFiles::load(&a.config)?;
    let replica = node.open()?;
    let r = Receipt {
        node: node.config.name.clone(),
        id: node.key.id(),
        created_ms: now_ms(),
        frontier: replica.frontier().clone(),
    };
    write_receipt(&a.out, &r)?;
    let f: &Frontier = &r.frontier;
    if a.json {
        print_json(
            &json!({ "node": r.node, "deltas": f.total_deltas(), "authors": f.len(),
                            "digest": f.digest().to_string(), "out": a.out }),
        );
    } else {
        println!(
            "receipt of {}: {} deltas of {} authors, written to {}",
            r.node,
            f.total_deltas(),
            f.len(),
            a.out.display()
        );
    }
    Ok(())
}
