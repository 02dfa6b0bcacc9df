//! The operator's trust commands that talk to a node: handing it a signed
//! roster, and listing what it refused.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use super::print_json;
use super::records::Conn;

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    conn: Conn,
    /// The signed roster file to hand over.
    #[arg(long)]
    roster: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCmd {
    /// The newest refused deltas, newest first: when, from which peer, why.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Entries to show (the node caps this at 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

pub async fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.roster).with_context(|| format!("{}", a.roster.display()))?;
    let r = a
        .conn
        .open()?
        .publish_roster(bytes)
        .await
        .map_err(|e| anyhow!(e))?;
    if a.conn.json {
        print_json(&json!({
            "adopted": r.adopted, "version": r.version,
            "retracted": r.retracted, "reason": r.reason,
        }));
    } else if r.adopted {
        println!(
            "roster version {} adopted; peers receive it by sync ({} deltas retracted)",
            r.version, r.retracted
        );
    } else {
        println!("not adopted: {}", r.reason);
    }
    Ok(())
}

pub async fn quarantine(cmd: QuarantineCmd) -> anyhow::Result<()> {
    let QuarantineCmd::List { conn, limit } = cmd;
    let r = conn
        .open()?
        .quarantine(limit, false)
        .await
        .map_err(|e| anyhow!(e))?;
    if conn.json {
        let entries: Vec<_> = r
            .entries
            .iter()
            .map(|e| {
                json!({
                    "at_ms": e.at_ms, "origin": e.origin, "code": e.code,
                    "reason": e.reason, "author": hex::encode(&e.author),
                    "seq": e.seq, "key": e.key, "hash": hex::encode(&e.hash),
                    "size": e.size, "evidence_hash": hex::encode(&e.evidence_hash),
                })
            })
            .collect();
        print_json(&json!({ "kept": r.kept, "dropped": r.dropped, "entries": entries }));
        return Ok(());
    }
    println!(
        "{} refused deltas kept, {} dropped (oldest first) to stay within the limit",
        r.kept, r.dropped
    );
    println!(
        "{:<24} {:<12} {:<16} {:<9} {:>6}  REASON",
        "WHEN (UTC)", "FROM", "CODE", "AUTHOR", "SEQ"
    );
    for e in &r.entries {
        let author = if e.author.is_empty() {
            "-".to_owned()
        } else {
            hex::encode(&e.author[..4])
        };
        println!(
            "{:<24} {:<12} {:<16} {:<9} {:>6}  {}",
            when(e.at_ms),
            clip(&e.origin, 12),
            clip(&e.code, 16),
            author,
            e.seq,
            e.reason
        );
        if !e.evidence_hash.is_empty() {
            println!(
                "{:<24} evidence: {} and {} are both seq {} of this author",
                "",
                hex::encode(&e.hash[..8]),
                hex::encode(&e.evidence_hash[..8.min(e.evidence_hash.len())]),
                e.seq
            );
        }
    }
    Ok(())
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), so the CLI needs no date crate for one column.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_print_as_utc_dates() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00");
        assert_eq!(super::when(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::when(951_782_400_000), "2000-02-29 00:00:00");
    }
}
