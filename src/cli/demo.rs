//! `fedsync demo`: HQ and two regional offices on loopback, in a temporary
//! directory, set up exactly as the CLI would set them up. Each office
//! writes a report through the operator's mTLS client, every node converges
//! to one frontier, Kenya reads France's report, relayed through HQ, and
//! HQ's status shows both offices in sync.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use fedsync::client::{Client, ClientConfig};
use fedsync::core::Frontier;
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::status::{NodeStatus, PeerState};
use fedsync::node::NodeHandle;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

const WRITES: [(&str, &str, &str); 3] = [
    (
        "office-fr",
        "regions/fr/reports/2026-Q3",
        r#"{"volunteers":120,"events":14,"participants":930}"#,
    ),
    (
        "office-ke",
        "regions/ke/reports/2026-Q3",
        r#"{"volunteers":85,"events":9,"participants":610}"#,
    ),
    (
        "hq",
        "hq/announcements/2026-11",
        r#"{"text":"Q3 reports are due"}"#,
    ),
];

pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("fedsync-demo-").tempdir()?;
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        NodeSpec::region("office-ke", "ke", &["hq"]),
    ];
    let mut fed = LocalFederation::create(dir.path(), &specs, "").map_err(|e| anyhow!(e))?;
    println!("federation directory: {}", dir.path().display());
    let mut nodes = Vec::new();
    for spec in &specs {
        let node = fed.start(&spec.name).await?;
        let admin = node
            .admin_addr()
            .map(|a| format!(", status page http://{a}/"))
            .unwrap_or_default();
        println!(
            "  started {:<10} on {}{admin}",
            node.name(),
            node.local_addr()
        );
        nodes.push(node);
    }

    let client_config = ClientConfig::load(&fed.client_config()).map_err(|e| anyhow!(e))?;
    let started = Instant::now();
    for (name, key, value) in WRITES {
        let mut client = client_at(&client_config, node(&nodes, name)?)?;
        client
            .put(key, value.as_bytes())
            .await
            .map_err(|e| anyhow!(e))?;
        println!("  {name:<10} wrote {key}");
    }
    let target = union(&nodes).await?;
    for n in &nodes {
        if !n.wait_for(&target, CONVERGE_TIMEOUT).await {
            bail!("{} did not converge within {CONVERGE_TIMEOUT:?}", n.name());
        }
    }
    println!(
        "converged in {} ms; every node's frontier:",
        started.elapsed().as_millis()
    );
    print_frontiers(&nodes).await?;

    let mut at_ke = client_at(&client_config, node(&nodes, "office-ke")?)?;
    let report = at_ke
        .get(WRITES[0].1)
        .await
        .map_err(|e| anyhow!(e))?
        .ok_or_else(|| anyhow!("office-ke does not have France's report"))?;
    println!(
        "office-ke reads {} (relayed through hq): {}",
        WRITES[0].1,
        String::from_utf8_lossy(&report.value)
    );

    println!("\nhq's status (`fedsync status`), through the operator's client:");
    let mut at_hq = client_at(&client_config, node(&nodes, "hq")?)?;
    print!("{}", super::status::table(&settled(&mut at_hq).await?));

    if keep_running {
        println!("\nThe federation is running. In another shell:");
        println!("  export FEDSYNC_CLIENT={}", fed.client_config().display());
        println!("  cargo run --release -- list regions/");
        println!(
            "  cargo run --release -- put --connect {} regions/fr/notes/1 '{{\"text\":\"hello\"}}'",
            node(&nodes, "office-fr")?.local_addr()
        );
        println!("  cargo run --release -- frontier");
        println!("  cargo run --release -- status");
        println!("Press Ctrl-C to stop (the directory is removed on exit).");
        super::shutdown_signal().await;
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

/// HQ's status once it has heard from both offices that they hold what it
/// holds (their acknowledgements follow the last write by a moment).
async fn settled(hq: &mut Client) -> anyhow::Result<NodeStatus> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let s = hq.status().await.map_err(|e| anyhow!(e))?;
        let nodes = s.peers.iter().filter(|p| p.state != PeerState::Operator);
        if nodes.clone().all(|p| p.state == PeerState::InSync) || Instant::now() > deadline {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node<'a>(nodes: &'a [NodeHandle], name: &str) -> anyhow::Result<&'a NodeHandle> {
    nodes
        .iter()
        .find(|n| n.name() == name)
        .ok_or_else(|| anyhow!("no node {name}"))
}

fn client_at(config: &ClientConfig, node: &NodeHandle) -> anyhow::Result<Client> {
    let mut c = config.clone();
    c.connect = node.local_addr().to_string();
    Client::from_config(&c).map_err(|e| anyhow!(e))
}

/// Every author's highest head over all nodes: what all must reach.
async fn union(nodes: &[NodeHandle]) -> anyhow::Result<Frontier> {
    let mut target = Frontier::new();
    for n in nodes {
        for (author, head) in n.stats().await?.frontier.iter() {
            if head.seq > target.head(author).seq {
                target.set(*author, *head);
            }
        }
    }
    Ok(target)
}

async fn print_frontiers(nodes: &[NodeHandle]) -> anyhow::Result<()> {
    println!(
        "  {:<10} {:<18} {:>6}  heads (author:seq)",
        "NODE", "DIGEST", "DELTAS"
    );
    for n in nodes {
        let s = n.stats().await?;
        let heads: Vec<String> = s
            .frontier
            .iter()
            .map(|(a, h)| format!("{}:{}", a.short(), h.seq))
            .collect();
        println!(
            "  {:<10} {:<18} {:>6}  {}",
            s.name,
            &s.digest.to_string()[..16],
            s.frontier.total_deltas(),
            heads.join(" ")
        );
    }
    Ok(())
}
