//! The operator's commands: put, get, list, delete and frontier, over the
//! node's client service with the operator's certificate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::json;

use fedsync::client::{Client, ClientConfig, Record};

use super::print_json;

#[derive(Args, Debug)]
pub(crate) struct Conn {
    /// The operator's client config (written by `operator init`).
    #[arg(long, env = "FEDSYNC_CLIENT", default_value = "client.toml")]
    client: PathBuf,
    /// Talk to this node instead of the config's `connect`.
    #[arg(long)]
    connect: Option<String>,
    #[arg(long)]
    pub(crate) json: bool,
}

impl Conn {
    pub(crate) fn open(&self) -> anyhow::Result<Client> {
        let mut c = ClientConfig::load(&self.client).map_err(|e| anyhow!(e))?;
        if let Some(addr) = &self.connect {
            c.connect = addr.clone();
        }
        Client::from_config(&c).map_err(|e| anyhow!(e))
    }
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    conn: Conn,
    key: String,
    /// The value (UTF-8 text, typically JSON). Or give `--file`.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    value: Option<String>,
    /// Read the value from this file, `-` for standard input: for values
    /// too large for a command line (any bytes, up to the node's
    /// `limits.value_bytes_max`).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

/// The most a value read from a file or stdin may be: the largest
/// `limits.value_bytes_max` a node accepts. The node applies its own.
const VALUE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Reads a value from `path`, or standard input for `-`, bounded.
pub(crate) fn read_value(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let bounded = VALUE_FILE_BYTES_MAX + 1;
    if path.as_os_str() == "-" {
        std::io::stdin().take(bounded).read_to_end(&mut out)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        file.take(bounded).read_to_end(&mut out)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    if out.len() as u64 > VALUE_FILE_BYTES_MAX {
        return Err(anyhow!(
            "{}: more than {VALUE_FILE_BYTES_MAX} bytes, larger than any node accepts",
            path.display()
        ));
    }
    Ok(out)
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    conn: Conn,
    key: String,
    /// Wait up to this many seconds for the key to appear (watching, not
    /// polling).
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(default_value = "")]
    prefix: String,
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    conn: Conn,
    key: String,
}

#[derive(Args, Debug)]
pub struct FrontierArgs {
    #[command(flatten)]
    conn: Conn,
}

fn record_json(r: &Record) -> serde_json::Value {
    json!({
        "key": r.key,
        "value": String::from_utf8_lossy(&r.value),
        "author": hex::encode(&r.author),
        "seq": r.seq,
        "hlc_wall_ms": r.hlc_wall_ms,
    })
}

pub async fn put(a: PutArgs) -> anyhow::Result<()> {
    let value = match (&a.value, &a.file) {
        (_, Some(path)) => read_value(path)?,
        (Some(v), None) => v.clone().into_bytes(),
        (None, None) => unreachable!("clap requires one"),
    };
    let reply = a
        .conn
        .open()?
        .put(&a.key, &value)
        .await
        .map_err(|e| anyhow!(e))?;
    written(&a.conn, &a.key, reply);
    Ok(())
}

pub async fn delete(a: KeyArgs) -> anyhow::Result<()> {
    let reply = a
        .conn
        .open()?
        .delete(&a.key)
        .await
        .map_err(|e| anyhow!(e))?;
    written(&a.conn, &a.key, reply);
    Ok(())
}

fn written(conn: &Conn, key: &str, r: fedsync::rpc::pb::WriteReply) {
    if conn.json {
        print_json(
            &json!({ "key": key, "author": hex::encode(&r.author), "seq": r.seq, "hash": hex::encode(&r.hash) }),
        );
    } else {
        println!(
            "{key}: stored as delta {} of {}",
            r.seq,
            hex::encode(&r.author[..4.min(r.author.len())])
        );
    }
}

pub async fn get(a: GetArgs) -> anyhow::Result<()> {
    let mut client = a.conn.open()?;
    let record = match a.wait {
        None => client.get(&a.key).await.map_err(|e| anyhow!(e))?,
        Some(secs) => Some(
            tokio::time::timeout(Duration::from_secs(secs), client.get_wait(&a.key))
                .await
                .with_context(|| format!("{:?} did not appear within {secs} s", a.key))?
                .map_err(|e| anyhow!(e))?,
        ),
    };
    let Some(r) = record else {
        return Err(anyhow!("no record {:?}", a.key));
    };
    if a.conn.json {
        print_json(&record_json(&r));
    } else {
        println!("{}", String::from_utf8_lossy(&r.value));
    }
    Ok(())
}

pub async fn list(a: ListArgs) -> anyhow::Result<()> {
    let records = a
        .conn
        .open()?
        .list(&a.prefix, a.limit)
        .await
        .map_err(|e| anyhow!(e))?;
    if a.conn.json {
        print_json(&json!(records.iter().map(record_json).collect::<Vec<_>>()));
    } else {
        for r in &records {
            println!("{}\t{}", r.key, String::from_utf8_lossy(&r.value));
        }
    }
    Ok(())
}

pub async fn frontier(a: FrontierArgs) -> anyhow::Result<()> {
    let (name, id, digest, frontier) = a.conn.open()?.frontier().await.map_err(|e| anyhow!(e))?;
    if a.conn.json {
        let heads: Vec<_> = frontier
            .iter()
            .map(|(a, h)| json!({ "author": a.to_string(), "seq": h.seq, "hash": h.hash.to_string() }))
            .collect();
        print_json(
            &json!({ "name": name, "node": id.to_string(), "digest": digest.to_string(), "heads": heads }),
        );
    } else {
        println!("{name} ({}) digest {digest}", id.short());
        for (author, head) in frontier.iter() {
            println!("  {} seq {}", author.short(), head.seq);
        }
    }
    Ok(())
}
