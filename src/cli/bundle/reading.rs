//! The bundle commands that read a bundle: `verify`, which checks every
//! chunk and delta without touching a store, and `import`, which admits
//! them into a stopped node's store and writes the receipt. Both say in
//! one line where reading stopped, and what before it verified.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use fedsync::bundle::{self, parts, BundleReader, Header, ImportOptions, Receipt};
use fedsync::core::SignedRoster;
use fedsync::identity::read_roster;

use super::super::print_json;
use super::super::trust::when;
use super::{now_ms, write_receipt, ImportArgs, NodeFiles, VerifyArgs};

/// The bundle's first lines as `verify` and `import` print them.
fn describe(h: &Header) -> String {
    format!(
        "bundle from {} ({}), made {}: {} deltas, from a base of {} deltas of {} authors to {} of {} authors",
        h.exporter_name,
        h.exporter.short(),
        when(h.created_ms),
        h.delta_count,
        h.base.total_deltas(),
        h.base.len(),
        h.result.total_deltas(),
        h.result.len()
    )
}

/// Each file of a bundle with its size.
type Files = Vec<(PathBuf, u64)>;

/// Opens the bundle's parts and its header.
fn open_bundle(file: &Path) -> anyhow::Result<(BundleReader<parts::PartReader>, Files)> {
    let parts = parts::PartReader::open(file).with_context(|| file.display().to_string())?;
    let files = parts.parts().to_vec();
    let reader = BundleReader::open(parts).with_context(|| format!("bundle {}", file.display()))?;
    Ok((reader, files))
}

/// One line: where reading stopped, what before it verified, and what
/// the parts suggest.
fn stopped(
    file: &Path,
    e: &bundle::BundleError,
    v: bundle::Verified,
    total: u64,
    files: &[(PathBuf, u64)],
    part_bytes: u64,
) -> String {
    let hint = match parts::parts_problem(files, part_bytes) {
        Some(p) if e.is_truncation() || !p.contains("full part") => format!(" ({p})"),
        _ => String::new(),
    };
    format!(
        "bundle {}: {e}{hint}; verified prefix: {} chunks, {} of {total} deltas, bytes 0..{}",
        file.display(),
        v.chunks,
        v.deltas,
        v.bytes
    )
}

pub(super) fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let (reader, files) = open_bundle(&a.file)?;
    let header = reader.header().clone();
    let roster = match (&a.roster, &a.federation) {
        (Some(path), Some(fed)) => {
            let fed =
                fedsync::core::NodeId::from_hex(fed).map_err(|e| anyhow!("--federation: {e}"))?;
            let given = read_roster(path, &fed)?;
            // The newer of the file and the roster the bundle carries, as
            // an importer would adopt it.
            let carried = (header.roster.as_deref()).and_then(|b| SignedRoster::open(b, &fed).ok());
            Some(match carried {
                Some(c) if c.version() > given.version() => c,
                _ => given,
            })
        }
        _ => None,
    };
    let limits = fedsync::core::Limits::default();
    let checked = bundle::check(
        reader,
        roster.as_ref().map(|r| (r.roster(), &limits)),
        now_ms(),
    );
    let exporter_member = roster.as_ref().map(|r| {
        r.roster()
            .member(&header.exporter)
            .is_some_and(|m| m.is_node() && m.is_active())
    });
    let v = checked.verified;
    let file_bytes: u64 = files.iter().map(|(_, n)| n).sum();
    let refused: u64 = checked.refused.values().sum();
    if a.json {
        print_json(&json!({
            "exporter": header.exporter_name, "exporter_id": header.exporter.to_string(),
            "created_ms": header.created_ms, "deltas": header.delta_count,
            "base_deltas": header.base.total_deltas(), "result_deltas": header.result.total_deltas(),
            "result_digest": header.result.digest().to_string(),
            "verified": { "chunks": v.chunks, "deltas": v.deltas, "delta_bytes": v.delta_bytes,
                          "bytes": v.bytes, "complete": v.complete },
            "files": files.len(), "bytes": file_bytes,
            "undecodable": checked.undecodable, "bad_signatures": checked.bad_signatures,
            "refused": checked.refused, "mismatch": checked.mismatch,
            "exporter_in_roster": exporter_member,
            "error": checked.error.as_ref().map(|e| e.to_string()),
        }));
    } else {
        println!("{}", describe(&header));
        println!(
            "  verified: {} chunks, {} deltas ({} bytes encoded), {} of {} bytes in {} file(s){}",
            v.chunks,
            v.deltas,
            v.delta_bytes,
            v.bytes,
            file_bytes,
            files.len(),
            if v.complete { ", whole" } else { "" }
        );
        if let Some(r) = &roster {
            println!(
                "  against roster version {}: exporter {}, {refused} deltas would be refused {:?}",
                r.version(),
                if exporter_member == Some(true) {
                    "is an active node"
                } else {
                    "is NOT an active node"
                },
                checked.refused
            );
        }
    }
    if let Some(e) = &checked.error {
        bail!(stopped(
            &a.file,
            e,
            v,
            header.delta_count,
            &files,
            header.part_bytes
        ));
    }
    if checked.undecodable > 0 || checked.bad_signatures > 0 {
        bail!(
            "bundle {}: {} deltas do not decode and {} signatures do not verify",
            a.file.display(),
            checked.undecodable,
            checked.bad_signatures
        );
    }
    if let Some(m) = &checked.mismatch {
        bail!(
            "bundle {}: its deltas are not what its header announces: {m}",
            a.file.display()
        );
    }
    if exporter_member == Some(false) {
        bail!(
            "bundle {}: its exporter is not an active node of the roster",
            a.file.display()
        );
    }
    Ok(())
}

pub(super) fn import(a: ImportArgs) -> anyhow::Result<()> {
    let node = NodeFiles::load(&a.config)?;
    // The header is read before the store is opened: a file that is no
    // bundle at all changes nothing.
    let (reader, files) = open_bundle(&a.file)?;
    let header = reader.header().clone();
    let mut replica = node.open()?;
    let got = bundle::import(&mut replica, reader, &ImportOptions::at(now_ms()))
        .map_err(|e| anyhow!("bundle {}: {e}", a.file.display()))?;
    replica.store().flush()?;
    let receipt = Receipt {
        node: node.config.name.clone(),
        id: node.key.id(),
        created_ms: now_ms(),
        frontier: replica.frontier().clone(),
    };
    let receipt_path = a.receipt.clone().unwrap_or_else(|| {
        let mut p = a.file.as_os_str().to_owned();
        p.push(".receipt.json");
        PathBuf::from(p)
    });
    write_receipt(&receipt_path, &receipt)?;
    let roster = got.roster.as_ref().map(offered);
    if a.json {
        print_json(&json!({
            "exporter": header.exporter_name, "deltas": header.delta_count,
            "applied": got.applied, "duplicates": got.duplicates, "refused": got.refused,
            "waiting": got.waiting, "flushes": got.flushes, "complete": got.verified.complete,
            "reached": got.reached, "roster": roster, "receipt": receipt_path,
            "frontier_digest": receipt.frontier.digest().to_string(),
            "error": got.error.as_ref().map(|e| e.to_string()),
        }));
    } else {
        println!("{}", describe(&header));
        println!(
            "  imported: {} new, {} already held, {} refused (in the quarantine), {} not stored for a gap; {} flushes",
            got.applied,
            got.duplicates,
            got.refused_total(),
            got.waiting,
            got.flushes
        );
        if let Some(r) = roster {
            println!("  roster carried: {r}");
        }
        for (author, ours, base) in &got.gaps {
            println!(
                "  this node holds {} only to seq {ours}, the bundle starts after {base}: import an earlier bundle, or have one made with --since this node's receipt",
                author.short()
            );
        }
        println!(
            "  receipt: {} (carry it back for the next export --since)",
            receipt_path.display()
        );
    }
    if let Some(e) = &got.error {
        bail!(
            "imported the verified prefix, then stopped: {}",
            stopped(
                &a.file,
                e,
                got.verified,
                header.delta_count,
                &files,
                header.part_bytes
            )
        );
    }
    Ok(())
}

fn offered(o: &fedsync::core::RosterOffer) -> String {
    use fedsync::core::RosterOffer::*;
    match o {
        Adopted(c) => format!(
            "adopted version {} ({} deltas retracted)",
            c.version, c.retracted
        ),
        NotNewer { held, offered } => {
            format!("version {offered}, not newer than the {held} in force")
        }
        Invalid(e) => format!("not adopted: {e}"),
        Unsigned => "not adopted (this node runs on an unsigned roster)".into(),
    }
}
