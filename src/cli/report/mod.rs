//! `fedsync report`: submit a region's or unit's report, show its history,
//! the schema, a signed aggregate with coverage (HQ's of everything, a
//! region's of its units), and verify an aggregate at a region or unit.

mod export;
pub(crate) mod render;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use fedsync::core::report::document;
use fedsync::core::report::{Part, Schema, Submission};

use super::print_json;
use super::records::Conn;

#[derive(Subcommand, Debug)]
pub enum ReportCmd {
    /// Submit this node's region's or unit's report for a period (from a
    /// file and/or flags). Submitting again supersedes the earlier report;
    /// the history keeps every revision.
    Submit(SubmitArgs),
    /// Show a region's or unit's report for a period and every earlier
    /// revision.
    History(HistoryArgs),
    /// Aggregate one period's reports at this node, with coverage: for each
    /// region and unit, the log point counted, and whether it is missing or
    /// stale. HQ covers the federation, a region's node its units. The JSON
    /// is the signed document.
    Aggregate(AggregateArgs),
    /// Check a signed aggregate against this node's own log (run at a
    /// region or unit): exit status 1 if anything does not match.
    Verify(VerifyArgs),
    /// Receipts for this node's reports: for each revision, whether HQ
    /// holds it and since when (from what HQ confirmed over its link, or
    /// the log point its published aggregate covered), and whether HQ's
    /// newest published aggregate counts it.
    Status(StatusArgs),
    /// Approve a report for the level above: at a region's node, one of
    /// its units' (`--unit`); at HQ, a region's (`--region`). The approval
    /// names the exact report delta and locks it: a new submission is
    /// refused until the approval is withdrawn (`--withdraw`).
    Approve(ApproveArgs),
    /// Write a period's aggregate as tidy rows for analytics engines: one
    /// row per figure counted (period, region, unit, metric, category,
    /// value, and the report's author, seq and hash). Parquet, CSV or
    /// JSON lines; DuckDB, pandas and Spark load the file as it is.
    Export(ExportArgs),
    /// Who is late with a period's report: overdue (nothing counted yet,
    /// past the deadline) and late (first submitted after it), with the
    /// reporting rates. The deadline is the schema's.
    Overdue(OverdueArgs),
    /// Show the report schema in force, or publish one (at HQ).
    Schema(SchemaArgs),
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    conn: Conn,
    /// A report file: JSON (`.json`) or TOML, with `period`, `metrics`,
    /// and optionally `region` and `notes`; `-` for standard input. Flags
    /// override it.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// A month (2026-09) or a quarter (2026-Q3).
    #[arg(long)]
    period: Option<String>,
    /// Checked against the node's own region.
    #[arg(long)]
    region: Option<String>,
    /// Checked against the node's own unit.
    #[arg(long)]
    unit: Option<String>,
    /// A figure, `name=value` (repeatable), e.g. `--metric volunteers=120`.
    #[arg(long = "metric", value_name = "NAME=VALUE")]
    metrics: Vec<String>,
    /// A figure of a breakdown, `name[combination]=value` (repeatable), e.g.
    /// `--category 'volunteers[age=under_18,sex=female]=30'`. A metric given
    /// only by category gets the total its rule makes.
    #[arg(long = "category", value_name = "NAME[COMBO]=VALUE")]
    categories: Vec<String>,
    /// Free text to go with the figures.
    #[arg(long)]
    notes: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    part: PartArgs,
    #[arg(long)]
    period: String,
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

/// A region or a unit.
#[derive(Args, Debug)]
pub struct PartArgs {
    #[arg(long, conflicts_with = "unit")]
    region: Option<String>,
    #[arg(long)]
    unit: Option<String>,
}

impl PartArgs {
    fn part(&self) -> Option<Part> {
        match (&self.region, &self.unit) {
            (Some(r), _) => Some(Part::Region(r.clone())),
            (None, Some(u)) => Some(Part::Unit(u.clone())),
            (None, None) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// A row per region: its own report and its units' together.
    Region,
    /// A row per region and per unit, each its own report.
    Unit,
}

#[derive(Args, Debug)]
pub struct AggregateArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    period: String,
    /// Also show the figures by region, or by region and unit.
    #[arg(long, value_enum)]
    by: Option<By>,
    /// Cover only this region or unit and what is below it (default: the
    /// node's own; HQ's is the whole federation).
    #[command(flatten)]
    scope: PartArgs,
    /// Cover the whole federation, at any node.
    #[arg(long, conflicts_with_all = ["region", "unit"])]
    all: bool,
    /// Count only reports approved by the level above (a unit's by its
    /// region, a region's by HQ); each entry states its approval.
    #[arg(long)]
    approved: bool,
    /// CSV: one row per metric in total (and per region or unit with
    /// `--by`), then one coverage row per region and unit.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// At HQ: also publish the signed document where every office's
    /// `report status` reads it ("is my report counted?").
    #[arg(long, conflicts_with_all = ["region", "unit", "all"])]
    publish: bool,
    /// Also save the signed document here (for `fedsync report verify`).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// A region not heard from for longer is stale (default: the node's
    /// `reports.stale_after_secs`).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    stale_after: Option<u64>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    conn: Conn,
    /// One period (default: every report of this node's part).
    #[arg(long)]
    period: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    period: String,
    #[arg(long, value_enum, default_value = "parquet")]
    format: export::Format,
    /// The file to write (replaced whole once complete).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Only this region or unit and what is below it.
    #[command(flatten)]
    scope: PartArgs,
    /// The whole federation, at any node.
    #[arg(long, conflicts_with_all = ["region", "unit"])]
    all: bool,
    /// Only reports approved by the level above.
    #[arg(long)]
    approved: bool,
    /// Also save the signed aggregate the rows come from here.
    #[arg(long, value_name = "FILE")]
    document: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    period: String,
    #[command(flatten)]
    part: PartArgs,
    /// The revision you checked: refused if the current one is another.
    #[arg(long)]
    revision: Option<u32>,
    /// Withdraw the approval, so that the report may be submitted again.
    #[arg(long)]
    withdraw: bool,
}

#[derive(Args, Debug)]
pub struct OverdueArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    period: String,
    /// Only this region or unit and what is below it (default: what the
    /// node aggregates: HQ the federation, a region its units).
    #[command(flatten)]
    scope: PartArgs,
    /// The whole federation, at any node.
    #[arg(long, conflicts_with_all = ["region", "unit"])]
    all: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    conn: Conn,
    /// The signed aggregate document (`report aggregate --out` or `--json`).
    document: PathBuf,
    /// The region or unit whose part to check (default: the node's own).
    #[command(flatten)]
    part: PartArgs,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[command(flatten)]
    conn: Conn,
    /// Publish this schema (JSON or TOML, `metrics = [{name, description,
    /// allow_negative}]`, and optionally `[due]` with `month_days` and
    /// `quarter_days`) as the federation's. HQ nodes only.
    #[arg(long, value_name = "FILE")]
    publish: Option<PathBuf>,
}

/// Report files are small: anything bigger is a mistake.
const FILE_MAX: u64 = 1024 * 1024;

pub async fn run(cmd: ReportCmd) -> anyhow::Result<()> {
    match cmd {
        ReportCmd::Submit(a) => submit(a).await,
        ReportCmd::History(a) => history(a).await,
        ReportCmd::Aggregate(a) => aggregate(a).await,
        ReportCmd::Verify(a) => verify(a).await,
        ReportCmd::Overdue(a) => overdue(a).await,
        ReportCmd::Approve(a) => approve(a).await,
        ReportCmd::Export(a) => export(a).await,
        ReportCmd::Status(a) => status(a).await,
        ReportCmd::Schema(a) => schema(a).await,
    }
}

/// Reads a JSON (`.json`) or TOML file into `T`, strictly; `-` reads
/// standard input, as JSON if it starts with `{`, else as TOML.
fn read_file<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    use std::io::Read;
    let stdin = path.as_os_str() == "-";
    let mut bytes = Vec::new();
    let read = if stdin {
        std::io::stdin().take(FILE_MAX + 1).read_to_end(&mut bytes)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        file.take(FILE_MAX + 1).read_to_end(&mut bytes)
    };
    read.with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > FILE_MAX {
        bail!(
            "{}: more than a report file holds ({FILE_MAX} bytes)",
            path.display()
        );
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", path.display()))?;
    let json = if stdin {
        text.trim_start().starts_with('{')
    } else {
        path.extension().is_some_and(|e| e == "json")
    };
    if json {
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
    } else {
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))
    }
}

fn submission(a: &SubmitArgs) -> anyhow::Result<Submission> {
    let mut sub = match &a.file {
        Some(f) => read_file::<Submission>(f)?,
        None => Submission::default(),
    };
    if let Some(p) = &a.period {
        sub.period = p.clone();
    }
    if let Some(r) = &a.region {
        sub.region = Some(r.clone());
    }
    if let Some(u) = &a.unit {
        sub.unit = Some(u.clone());
    }
    if let Some(n) = &a.notes {
        sub.notes = n.clone();
    }
    for m in &a.metrics {
        let (name, value) = m
            .split_once('=')
            .ok_or_else(|| anyhow!("--metric {m:?}: expected NAME=VALUE"))?;
        let value: i64 = value
            .trim()
            .parse()
            .map_err(|_| anyhow!("--metric {m:?}: {value:?} is not a whole number"))?;
        sub.metrics.insert(name.trim().to_owned(), value);
    }
    for c in &a.categories {
        let (name, combo, value) = category_flag(c)?;
        sub.categories.entry(name).or_default().insert(combo, value);
    }
    if sub.period.is_empty() {
        bail!("no period: give --period (e.g. 2026-09 or 2026-Q3) or a file with one");
    }
    Ok(sub)
}

/// `volunteers[age=under_18,sex=female]=30` as its three parts.
fn category_flag(flag: &str) -> anyhow::Result<(String, String, i64)> {
    let bad = || anyhow!("--category {flag:?}: expected NAME[COMBINATION]=VALUE");
    let (name, rest) = flag.split_once('[').ok_or_else(bad)?;
    let (combo, value) = rest.rsplit_once("]=").ok_or_else(bad)?;
    let value: i64 = value
        .trim()
        .parse()
        .map_err(|_| anyhow!("--category {flag:?}: {value:?} is not a whole number"))?;
    Ok((name.trim().to_owned(), combo.trim().to_owned(), value))
}

async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let sub = submission(&a)?;
    let mut client = a.conn.open()?;
    let r = client.submit_report(&sub).await.map_err(|e| anyhow!(e))?;
    let w = r.write.unwrap_or_default();
    if a.conn.json {
        print_json(&json!({
            "key": r.key,
            "revision": r.revision,
            "author": hex::encode(&w.author),
            "seq": w.seq,
            "hash": hex::encode(&w.hash),
            "supersedes_seq": (r.supersedes_seq > 0).then_some(r.supersedes_seq),
        }));
    } else {
        let superseded = match r.supersedes_seq {
            0 => String::new(),
            s => format!(", superseding seq {s}"),
        };
        let hash = hex::encode(&w.hash);
        println!(
            "stored {} revision {} (seq {}, hash {}){superseded}",
            r.key,
            r.revision,
            w.seq,
            hash.get(..16).unwrap_or(&hash)
        );
    }
    Ok(())
}

async fn history(a: HistoryArgs) -> anyhow::Result<()> {
    let part = (a.part.part()).ok_or_else(|| anyhow!("give --region or --unit"))?;
    let mut client = a.conn.open()?;
    let (revs, note) = client
        .report_history(&part, &a.period, a.limit)
        .await
        .map_err(|e| anyhow!(e))?;
    if a.conn.json {
        let revisions: Vec<_> = revs
            .iter()
            .map(|r| {
                json!({
                    "author": r.at.author.to_string(),
                    "seq": r.at.seq,
                    "hash": r.at.hash.to_string(),
                    "report": r.report.as_ref().map_or_else(
                        |e| json!({ "unreadable": e }),
                        |rep| serde_json::to_value(rep).expect("a report serialises"),
                    ),
                })
            })
            .collect();
        print_json(&json!({ "revisions": revisions, "note": note }));
        return Ok(());
    }
    if revs.is_empty() {
        println!("no report for {} in {}", part.describe(), a.period);
    }
    print!("{}", render::history(&revs));
    if let Some(n) = note {
        println!("({n})");
    }
    Ok(())
}

async fn aggregate(a: AggregateArgs) -> anyhow::Result<()> {
    let mut client = a.conn.open()?;
    let doc = if a.publish {
        client.publish_aggregate(&a.period, a.approved).await
    } else {
        let scope = a.scope.part();
        let stale = a.stale_after.unwrap_or(0);
        (client.aggregate_reports(&a.period, stale, scope.as_ref(), a.all, a.approved)).await
    };
    let doc = doc.map_err(|e| anyhow!(e))?;
    // The node signed it; check that before printing a figure from it.
    let opened = document::open(doc.as_bytes()).map_err(|e| anyhow!("node sent {e}"))?;
    if let Some(path) = &a.out {
        std::fs::write(path, &doc).with_context(|| format!("{}", path.display()))?;
    }
    if a.conn.json {
        println!("{doc}");
    } else if a.csv {
        print!("{}", render::csv(&opened.aggregate, a.by));
    } else {
        print!("{}", render::table(&opened.aggregate, a.by));
        if let Some(path) = &a.out {
            println!("signed document saved to {}", path.display());
        }
    }
    Ok(())
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let mut client = a.conn.open()?;
    let receipts = client
        .report_receipts(a.period.as_deref())
        .await
        .map_err(|e| anyhow!(e))?;
    if a.conn.json {
        print_json(&json!({ "receipts": receipts }));
    } else {
        print!("{}", render::receipts(&receipts));
    }
    Ok(())
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    let mut client = a.conn.open()?;
    let doc = client
        .aggregate_reports(&a.period, 0, a.scope.part().as_ref(), a.all, a.approved)
        .await
        .map_err(|e| anyhow!(e))?;
    let agg = document::open(doc.as_bytes())
        .map_err(|e| anyhow!("node sent {e}"))?
        .aggregate;
    let rows = fedsync::core::report::tidy::rows(&agg);
    export::write(&rows, a.format, &a.out)?;
    if let Some(path) = &a.document {
        std::fs::write(path, &doc).with_context(|| format!("{}", path.display()))?;
    }
    if a.conn.json {
        print_json(&json!({
            "file": a.out,
            "rows": rows.len(),
            "period": agg.period,
            "computed_by": agg.computed_by,
            "approved_only": agg.approved_only,
        }));
    } else {
        println!(
            "wrote {} rows of {}'s signed aggregate for {} to {}",
            rows.len(),
            agg.computed_by,
            agg.period,
            a.out.display()
        );
    }
    Ok(())
}

async fn approve(a: ApproveArgs) -> anyhow::Result<()> {
    let part = (a.part.part()).ok_or_else(|| anyhow!("give --region or --unit"))?;
    let mut client = a.conn.open()?;
    let r = client
        .approve_report(&part, &a.period, a.withdraw, a.revision)
        .await
        .map_err(|e| anyhow!(e))?;
    let w = r.write.unwrap_or_default();
    let rep = r.report.unwrap_or_default();
    if a.conn.json {
        print_json(&json!({
            "key": r.key,
            "approved": r.approved,
            "seq": w.seq,
            "hash": hex::encode(&w.hash),
            "report": {
                "author": hex::encode(&rep.author),
                "seq": rep.seq,
                "hash": hex::encode(&rep.hash),
                "revision": r.revision,
            },
        }));
        return Ok(());
    }
    let hash = hex::encode(&rep.hash);
    let what = if r.approved {
        "approved"
    } else {
        "withdrew the approval of"
    };
    println!(
        "{what} {}'s report for {} revision {} (seq {}, hash {}), as {} seq {}",
        part.describe(),
        a.period,
        r.revision,
        rep.seq,
        hash.get(..16).unwrap_or(&hash),
        r.key,
        w.seq
    );
    Ok(())
}

async fn overdue(a: OverdueArgs) -> anyhow::Result<()> {
    let mut client = a.conn.open()?;
    let doc = client
        .aggregate_reports(&a.period, 0, a.scope.part().as_ref(), a.all, false)
        .await
        .map_err(|e| anyhow!(e))?;
    let agg = document::open(doc.as_bytes())
        .map_err(|e| anyhow!("node sent {e}"))?
        .aggregate;
    if a.conn.json {
        print_json(&render::overdue_json(&agg));
    } else {
        print!("{}", render::overdue(&agg));
    }
    Ok(())
}

async fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let doc = std::fs::read(&a.document).with_context(|| format!("{}", a.document.display()))?;
    let mut client = a.conn.open()?;
    let v = client
        .verify_aggregate(&doc, a.part.part().as_ref())
        .await
        .map_err(|e| anyhow!(e))?;
    if a.conn.json {
        let checks: Vec<_> = v
            .checks
            .iter()
            .map(|c| json!({ "ok": c.ok, "text": c.text }))
            .collect();
        print_json(&json!({
            "ok": v.ok,
            "region": v.region,
            "unit": (!v.unit.is_empty()).then_some(&v.unit),
            "period": v.period,
            "signer": v.signer,
            "checks": checks,
        }));
    } else {
        let scope = match (v.region.as_str(), v.unit.as_str()) {
            ("", "") => "signature and totals only (this node has no region or unit)".to_owned(),
            (r, "") => format!("region {r}'s part against this node's log"),
            (r, u) => format!("unit {u}'s part (in region {r}) against this node's log"),
        };
        println!(
            "aggregate of {} signed by {}: checked {scope}",
            v.period, v.signer
        );
        print!("{}", render::checks(&v.checks));
    }
    if !v.ok {
        bail!("the aggregate does not match this node's log");
    }
    if !(a.conn.json || v.region.is_empty() && v.unit.is_empty()) {
        let whose = match v.unit.as_str() {
            "" => format!("region {}", v.region),
            u => format!("unit {u}"),
        };
        println!(
            "verified: the aggregate includes exactly {whose}'s data up to the point it names"
        );
    }
    Ok(())
}

async fn schema(a: SchemaArgs) -> anyhow::Result<()> {
    let mut client = a.conn.open()?;
    if let Some(path) = &a.publish {
        let schema: Schema = read_file(path)?;
        schema
            .check()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let w = client
            .publish_report_schema(&schema)
            .await
            .map_err(|e| anyhow!(e))?;
        println!(
            "published the report schema ({} metrics) as seq {}",
            schema.metrics.len(),
            w.seq
        );
        return Ok(());
    }
    let (schema, published) = client.report_schema().await.map_err(|e| anyhow!(e))?;
    if a.conn.json {
        print_json(&json!({
            "published": published,
            "version": schema.version,
            "metrics": serde_json::to_value(&schema.metrics).expect("a schema serialises"),
            "due": schema.due,
        }));
        return Ok(());
    }
    let source = if published {
        "published by HQ"
    } else {
        "the default set; HQ has published none"
    };
    println!("report schema version {} ({source}):", schema.version);
    for m in &schema.metrics {
        let sign = if m.allow_negative {
            " (may be negative)"
        } else {
            ""
        };
        let rule = match m.aggregate {
            fedsync::core::report::Rule::Sum => String::new(),
            r => format!(" [{}]", r.as_str()),
        };
        println!("  {:<20} {}{sign}{rule}", m.name, m.description);
        for c in &m.categories {
            println!("  {:<20}   by {}: {}", "", c.name, c.options.join(", "));
        }
        if !m.formerly.is_empty() {
            println!("  {:<20}   formerly {}", "", m.formerly.join(", "));
        }
    }
    let days =
        |d: Option<u32>| d.map_or("no deadline".into(), |d| format!("{d} days after it ends"));
    println!(
        "due: a month's report {}, a quarter's {}",
        days(schema.due.month_days),
        days(schema.due.quarter_days)
    );
    Ok(())
}
