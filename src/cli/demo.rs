//! `fedsync demo`: the organisation's tree on loopback, in a temporary
//! directory, set up exactly as the CLI would set it up: HQ, two regional
//! offices (France, and Altai with three municipal centres dialling it).
//! Offices and centres submit their quarterly reports through the
//! operator's mTLS client for the quarter under way (Aleysk corrects one figure, superseding its
//! first report), every node converges to one frontier, France reads
//! Aleysk's report relayed through Altai and HQ, HQ's status shows the
//! regions in sync, Altai signs the aggregate of its centres (Rubtsovsk has
//! not reported), HQ signs the federation's, and Aleysk verifies its part
//! of both against its own log, as France does of HQ's.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use fedsync::client::{Client, ClientConfig};
use fedsync::core::report::{document, Period, Submission};
use fedsync::core::{Above, Frontier};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::status::{NodeStatus, PeerState};
use fedsync::node::NodeHandle;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The quarter under way: its reports are not due yet, so the demo shows
/// them on time and Rubtsovsk's as pending, on whatever day it runs.
fn this_quarter() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Period::quarter_at(now.as_millis() as u64).to_string()
}

/// (node, figures, notes): each reports its own work; Aleysk's second
/// report corrects its first.
const REPORTS: [(&str, [i64; 4], &str); 5] = [
    (
        "office-fr",
        [120, 14, 930, 2_400],
        "Two new partner schools.",
    ),
    ("office-altai", [40, 3, 260, 700], "Regional trainings."),
    ("centre-aleysk", [85, 9, 610, 1_500], ""),
    (
        "centre-aleysk",
        [85, 9, 640, 1_500],
        "Participants recounted.",
    ),
    ("centre-biysk", [52, 6, 300, 880], ""),
];
const METRICS: [&str; 4] = ["volunteers", "events", "participants", "hours"];

pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    let period = this_quarter();
    let period = period.as_str();
    let dir = tempfile::Builder::new().prefix("fedsync-demo-").tempdir()?;
    let altai = || Above::Region("ru-altai".into());
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        NodeSpec::region("office-altai", "ru-altai", &["hq"]),
        NodeSpec::unit("centre-aleysk", "aleysk", altai(), &["office-altai"]),
        NodeSpec::unit("centre-biysk", "biysk", altai(), &["office-altai"]),
        NodeSpec::unit("centre-rubtsovsk", "rubtsovsk", altai(), &["office-altai"]),
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
            "  started {:<16} on {}{admin}",
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
            unit: None,
            period: period.into(),
            metrics: METRICS.iter().map(|m| m.to_string()).zip(figures).collect(),
            notes: notes.into(),
            ..Submission::default()
        };
        let r = client.submit_report(&sub).await.map_err(|e| anyhow!(e))?;
        println!(
            "  {name:<16} submitted {} revision {} (`fedsync report submit`)",
            r.key, r.revision
        );
    }
    let mut at_hq = client_at(&client_config, node(&nodes, "hq")?)?;
    let notice = format!(r#"{{"text":"{period} reports are due"}}"#);
    at_hq
        .put("hq/announcements/2026-11", notice.as_bytes())
        .await
        .map_err(|e| anyhow!(e))?;
    println!("  {:<16} wrote hq/announcements/2026-11", "hq");
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

    let mut at_fr = client_at(&client_config, node(&nodes, "office-fr")?)?;
    let aleysk_key = format!("units/aleysk/reports/{period}");
    let report = at_fr
        .get(&aleysk_key)
        .await
        .map_err(|e| anyhow!(e))?
        .ok_or_else(|| anyhow!("office-fr does not have Aleysk's report"))?;
    println!(
        "office-fr reads {aleysk_key} (relayed through office-altai and hq): {}",
        String::from_utf8_lossy(&report.value)
    );

    println!("\nhq's status (`fedsync status`), through the operator's client:");
    print!("{}", super::status::table(&settled(&mut at_hq).await?));
    aggregate_and_verify(&mut at_hq, &client_config, &nodes, &fed, period).await?;

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
        println!("  cargo run --release -- report aggregate --period {period} --by unit");
        println!(
            "  cargo run --release -- report verify --connect {} {}",
            node(&nodes, "centre-aleysk")?.local_addr(),
            fed.dir.join(format!("aggregate-{period}.json")).display()
        );
        println!("Press Ctrl-C to stop (the directory is removed on exit).");
        super::shutdown_signal().await;
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

/// Altai's signed aggregate of its centres and HQ's of the federation,
/// with coverage; HQ's saved; Aleysk verifies its part of both, France of
/// HQ's.
async fn aggregate_and_verify(
    at_hq: &mut Client,
    config: &ClientConfig,
    nodes: &[NodeHandle],
    fed: &LocalFederation,
    period: &str,
) -> anyhow::Result<()> {
    use super::report::By;
    let mut at_altai = client_at(config, node(nodes, "office-altai")?)?;
    let mut docs = Vec::new();
    for (who, client, by) in [
        ("office-altai", &mut at_altai, By::Unit),
        ("hq", at_hq, By::Region),
    ] {
        let flag = if by == By::Unit { "unit" } else { "region" };
        println!("\n{who}'s aggregate (`fedsync report aggregate --period {period} --by {flag}`):");
        let doc = (client.aggregate_reports(period, 0, None, false, false))
            .await
            .map_err(|e| anyhow!(e))?;
        let opened = document::open(doc.as_bytes()).map_err(|e| anyhow!(e))?;
        print!(
            "{}",
            super::report::render::table(&opened.aggregate, Some(by))
        );
        docs.push((who, doc));
    }
    let path = fed.dir.join(format!("aggregate-{period}.json"));
    std::fs::write(&path, &docs[1].1)?;
    println!("hq's signed document saved to {}", path.display());
    for (checker, (signer, doc)) in [
        ("centre-aleysk", &docs[0]),
        ("centre-aleysk", &docs[1]),
        ("office-fr", &docs[1]),
    ] {
        println!("\n{checker} verifies {signer}'s signed aggregate (`fedsync report verify`):");
        let mut client = client_at(config, node(nodes, checker)?)?;
        let v = (client.verify_aggregate(doc.as_bytes(), None))
            .await
            .map_err(|e| anyhow!(e))?;
        print!("{}", super::report::render::checks(&v.checks));
        if !v.ok {
            bail!("{checker} could not verify {signer}'s aggregate");
        }
        println!(
            "  verified: {signer}'s totals include exactly {checker}'s report, up to the seq and hash named"
        );
    }
    receipts(at_hq, config, nodes, period).await
}

/// HQ publishes its aggregate; Aleysk, two hops below HQ, sees that its
/// report reached HQ and is counted, from HQ's signed word.
async fn receipts(
    at_hq: &mut Client,
    config: &ClientConfig,
    nodes: &[NodeHandle],
    period: &str,
) -> anyhow::Result<()> {
    (at_hq.publish_aggregate(period, false))
        .await
        .map_err(|e| anyhow!(e))?;
    println!(
        "
hq publishes its signed aggregate (`fedsync report aggregate --publish`)"
    );
    let mut at_aleysk = client_at(config, node(nodes, "centre-aleysk")?)?;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let receipts = loop {
        let r = (at_aleysk.report_receipts(Some(period)))
            .await
            .map_err(|e| anyhow!(e))?;
        if r.first().is_some_and(|x| !x["in_aggregate"].is_null()) {
            break r;
        }
        if Instant::now() > deadline {
            bail!("hq's published aggregate never reached centre-aleysk");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("centre-aleysk's reports at HQ (`fedsync report status`):");
    print!("{}", super::report::render::receipts(&receipts));
    if let Some(url) = node(nodes, "hq")?.admin_addr() {
        println!("hq's dashboard: http://{url}/reports");
    }
    Ok(())
}

/// HQ's status once it has heard from the offices below it that they hold
/// what it holds (their acknowledgements follow the last write by a
/// moment). The centres below them link to their region, not to HQ.
async fn settled(hq: &mut Client) -> anyhow::Result<NodeStatus> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let s = hq.status().await.map_err(|e| anyhow!(e))?;
        let nodes = s.peers.iter().filter(|p| p.below);
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
        "  {:<16} {:<18} {:>6}  heads (author:seq)",
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
            "  {:<16} {:<18} {:>6}  {}",
            s.name,
            &s.digest.to_string()[..16],
            s.frontier.total_deltas(),
            heads.join(" ")
        );
    }
    Ok(())
}
