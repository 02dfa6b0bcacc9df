//! The command line: federation and key set-up, roster changes, running a
//! node, the operator's record commands, and the demo. Every command that
//! prints data takes `--json`.

mod admin;
mod bundle;
mod demo;
mod records;
mod report;
mod status;
mod tree;
mod trust;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fedsync",
    version,
    about = "Federated sync of signed records between offices"
)]
pub struct Args {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or
    /// `fedsync=debug`. Default: `warn`; for `run`, the config's `log.filter`.
    #[arg(long, global = true, env = "FEDSYNC_LOG")]
    pub log: Option<String>,
    /// Log as JSON lines instead of text (for `run`, also `log.format`).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or inspect a federation (its signing key and roster).
    #[command(subcommand)]
    Federation(admin::FederationCmd),
    /// Create a node's keys (Ed25519 identity and P-256 TLS certificate).
    #[command(subcommand)]
    Node(admin::NodeCmd),
    /// Create an operator's certificate (PEM) and client config.
    #[command(subcommand)]
    Operator(admin::OperatorCmd),
    /// Change or show the signed roster.
    #[command(subcommand)]
    Roster(admin::RosterCmd),
    /// Run a node from its config file until Ctrl-C or SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// The store was lost or found corrupt and starts empty: recover
        /// everything, this node's own writes included, from its peers
        /// before accepting writes (see the README's "Rebuild from peers").
        #[arg(long)]
        rebuild: bool,
        /// With --rebuild: nodes that dial this one without it dialling
        /// them (they may hold its latest writes), comma-separated.
        #[arg(long, value_delimiter = ',', requires = "rebuild")]
        rebuild_from: Vec<String>,
    },
    /// Store a value (the node signs it as its own write).
    Put(records::PutArgs),
    /// Read a key.
    Get(records::GetArgs),
    /// List live records under a prefix.
    List(records::ListArgs),
    /// Delete a key (a tombstone that syncs like any write).
    Delete(records::KeyArgs),
    /// Show the node's frontier: what it holds of every author's log.
    Frontier(records::FrontierArgs),
    /// Show a node's health: peers (worst first) with lag, stall and last
    /// error; every author's head; totals.
    Status(status::StatusArgs),
    /// HQ reports: submit a region's figures, aggregate them with coverage
    /// (signed), verify an aggregate at a region, history, schema.
    #[command(subcommand)]
    Report(report::ReportCmd),
    /// Inspect refused deltas kept by a node.
    #[command(subcommand)]
    Quarantine(trust::QuarantineCmd),
    /// Offline bundles: deltas carried on a USB stick where no link works
    /// (export at one node, import at another, both stopped; a receipt back).
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
    /// Start HQ and two regions on loopback, write, converge, and exit 0.
    Demo {
        /// Leave the federation running and print how to talk to it.
        #[arg(long)]
        keep_running: bool,
    },
}

/// Logs to stderr. `run` calls this itself once it has read its config.
pub fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // Span fields (peer, method) go with every event.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !matches!(args.command, Command::Run { .. }) {
        init_logging(args.log.as_deref().unwrap_or("warn"), args.log_json);
    }
    match args.command {
        Command::Federation(c) => admin::federation(c),
        Command::Node(c) => admin::node(c),
        Command::Operator(c) => admin::operator(c),
        Command::Roster(admin::RosterCmd::Publish(a)) => trust::publish(a).await,
        Command::Roster(c) => admin::roster(c),
        Command::Quarantine(c) => trust::quarantine(c).await,
        Command::Run {
            config,
            rebuild,
            rebuild_from,
        } => run_node(&config, (rebuild, rebuild_from), args.log, args.log_json).await,
        Command::Put(a) => records::put(a).await,
        Command::Get(a) => records::get(a).await,
        Command::List(a) => records::list(a).await,
        Command::Delete(a) => records::delete(a).await,
        Command::Frontier(a) => records::frontier(a).await,
        Command::Status(a) => status::status(a).await,
        Command::Report(c) => report::run(c).await,
        Command::Bundle(c) => bundle::run(c),
        Command::Demo { keep_running } => demo::run(keep_running).await,
    }
}

async fn run_node(
    config: &std::path::Path,
    (rebuild, rebuild_from): (bool, Vec<String>),
    log: Option<String>,
    log_json: bool,
) -> anyhow::Result<()> {
    let config = fedsync::config::NodeConfig::load(config)?;
    let json = log_json || config.log.format == fedsync::config::LogFormat::Json;
    init_logging(log.as_deref().unwrap_or(&config.log.filter), json);
    if config.limits.links_max.is_some() {
        tracing::warn!(
            "limits.links_max is no longer used: every roster member may hold \
             limits.conns_per_peer_max connections, and handshakes in progress are \
             bounded by limits.handshakes_max; remove the key"
        );
    }
    raise_open_files_limit();
    let mut setup = fedsync::node::Setup::load(config)?;
    setup.rebuild = rebuild;
    setup.rebuild_from = rebuild_from;
    let node = fedsync::node::start(setup).await?;
    // One line on stdout once serving, for scripts and tests to wait on
    // (the address last). A reader that has gone away is no reason to stop.
    let admin = node
        .admin_addr()
        .map(|a| format!(" (status page http://{a}/)"))
        .unwrap_or_default();
    let line = format!(
        "fedsync: {}{admin} listening on {}",
        node.name(),
        node.local_addr()
    );
    let _ = writeln!(std::io::stdout(), "{line}");
    shutdown_signal().await;
    tracing::info!("shutting down (signal)");
    node.shutdown().await?;
    Ok(())
}

/// Raises the soft limit on open files to the hard one. A hub holds a
/// connection per office and operator, its pending handshakes and its
/// store's files; the common default of 1,024 is below what 200 offices
/// with their default connection allowance need.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let before = limit.rlim_cur;
    // Linux refuses more than its nr_open, 1,048,576 by default.
    limit.rlim_cur = limit.rlim_max.min(1 << 20);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::debug!(
            from = before,
            to = limit.rlim_cur,
            "raised the open files limit"
        );
    } else {
        tracing::warn!(limit = before, "could not raise the open files limit");
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}
