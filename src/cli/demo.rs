//! `fedsync demo`: HQ and three regional offices on loopback, in a
//! temporary directory, set up exactly as the CLI would set them up. Two
//! offices submit their quarterly reports through the operator's mTLS
//! client (Kenya corrects one figure, superseding its first report), every
//! node converges to one frontier, Kenya reads France's report relayed
//! through HQ, HQ's status shows every office in sync, and HQ's signed
//! aggregate shows the totals with their coverage (Brazil has not
//! reported), which France then verifies against its own log.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use fedsync::client::{Client, ClientConfig};
use fedsync::core::report::{document, Submission};
use fedsync::core::Frontier;
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::status::{NodeStatus, PeerState};
use fedsync::node::NodeHandle;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

const PERIOD: &str = "2026-Q3";

/// (office, figures, notes): Kenya's second report corrects its first.
const REPORTS: [(&str, [i64; 4], &str); 3] = [
    (
        "office-fr",
        [120, 14, 930, 2_400],
        "Two new partner schools.",
    ),
    ("office-ke", [85, 9, 610, 1_500], ""),
    ("office-ke", [85, 9, 640, 1_500], "Participants recounted."),
];
const METRICS: [&str; 4] = ["volunteers", "events", "participants", "hours"];

pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("fedsync-demo-").tempdir()?;
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        NodeSpec::region("office-ke", "ke", &["hq"]),
        NodeSpec::region("office-br", "br", &["hq"]),
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
    for (name, figures, notes) in REPORTS {
        let mut client = client_at(&client_config, node(&nodes, name)?)?;
        let sub = Submission {
            region: None,
            period: PERIOD.into(),
            metrics: METRICS.iter().map(|m| m.to_string()).zip(figures).collect(),
            notes: notes.into(),
        };
        let r = client.submit_report(&sub).await.map_err(|e| anyhow!(e))?;
        println!(
            "  {name:<10} submitted {} revision {} (`fedsync report submit`)",
            r.key, r.revision
        );
    }
    let mut at_hq = client_at(&client_config, node(&nodes, "hq")?)?;
    let notice = r#"{"text":"Q3 reports are due"}"#;
    at_hq
        .put("hq/announcements/2026-11", notice.as_bytes())
        .await
        .map_err(|e| anyhow!(e))?;
    println!("  {:<10} wrote hq/announcements/2026-11", "hq");
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
    let fr_key = format!("regions/fr/reports/{PERIOD}");
    let report = at_ke
        .get(&fr_key)
        .await
        .map_err(|e| anyhow!(e))?
        .ok_or_else(|| anyhow!("office-ke does not have France's report"))?;
    println!(
        "office-ke reads {fr_key} (relayed through hq): {}",
        String::from_utf8_lossy(&report.value)
    );

    println!("\nhq's status (`fedsync status`), through the operator's client:");
    print!("{}", super::status::table(&settled(&mut at_hq).await?));
    aggregate_and_verify(&mut at_hq, &client_config, &nodes, &fed).await?;

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
        println!("  cargo run --release -- report aggregate --period {PERIOD} --by region");
        println!(
            "  cargo run --release -- report verify --connect {} {}",
            node(&nodes, "office-fr")?.local_addr(),
            fed.dir.join(format!("aggregate-{PERIOD}.json")).display()
        );
        println!("Press Ctrl-C to stop (the directory is removed on exit).");
        super::shutdown_signal().await;
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

/// HQ's signed aggregate with coverage, saved, and verified at France.
async fn aggregate_and_verify(
    at_hq: &mut Client,
    config: &ClientConfig,
    nodes: &[NodeHandle],
    fed: &LocalFederation,
) -> anyhow::Result<()> {
    println!("\nhq's aggregate (`fedsync report aggregate --period {PERIOD} --by region`):");
    let doc = at_hq
        .aggregate_reports(PERIOD, 0)
        .await
        .map_err(|e| anyhow!(e))?;
    let opened = document::open(doc.as_bytes()).map_err(|e| anyhow!(e))?;
    print!("{}", super::report::render::table(&opened.aggregate, true));
    let path = fed.dir.join(format!("aggregate-{PERIOD}.json"));
    std::fs::write(&path, &doc)?;
    println!("signed document saved to {}", path.display());
    println!("\noffice-fr verifies the signed aggregate (`fedsync report verify`):");
    let mut at_fr = client_at(config, node(nodes, "office-fr")?)?;
    let v = at_fr
        .verify_aggregate(doc.as_bytes(), "")
        .await
        .map_err(|e| anyhow!(e))?;
    print!("{}", super::report::render::checks(&v.checks));
    if !v.ok {
        bail!("office-fr could not verify hq's aggregate");
    }
    println!(
        "  verified: hq's totals include exactly office-fr's report, up to the seq and hash named"
    );
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
