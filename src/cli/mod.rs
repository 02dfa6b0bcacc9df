//! The command line: federation and key set-up, roster changes, running a
//! node, the operator's record commands, and the demo. Every command that
//! prints data takes `--json`.

mod admin;
mod demo;
mod records;
mod trust;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fedsync",
    version,
    about = "Federated sync of signed records between offices"
)]
pub struct Args {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `fedsync=debug`.
    #[arg(long, global = true, env = "FEDSYNC_LOG", default_value = "warn")]
    pub log: String,
    /// Log as JSON lines instead of text.
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
    /// Inspect refused deltas kept by a node.
    #[command(subcommand)]
    Quarantine(trust::QuarantineCmd),
    /// Start HQ and two regions on loopback, write, converge, and exit 0.
    Demo {
        /// Leave the federation running and print how to talk to it.
        #[arg(long)]
        keep_running: bool,
    },
}

pub fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Federation(c) => admin::federation(c),
        Command::Node(c) => admin::node(c),
        Command::Operator(c) => admin::operator(c),
        Command::Roster(admin::RosterCmd::Publish(a)) => trust::publish(a).await,
        Command::Roster(c) => admin::roster(c),
        Command::Quarantine(c) => trust::quarantine(c).await,
        Command::Run { config } => run_node(&config).await,
        Command::Put(a) => records::put(a).await,
        Command::Get(a) => records::get(a).await,
        Command::List(a) => records::list(a).await,
        Command::Delete(a) => records::delete(a).await,
        Command::Frontier(a) => records::frontier(a).await,
        Command::Demo { keep_running } => demo::run(keep_running).await,
    }
}

async fn run_node(config: &std::path::Path) -> anyhow::Result<()> {
    let config = fedsync::config::NodeConfig::load(config)?;
    let setup = fedsync::node::Setup::load(config)?;
    let node = fedsync::node::start(setup).await?;
    // One line on stdout once serving, for scripts and tests to wait on.
    println!(
        "fedsync: {} listening on {}",
        node.name(),
        node.local_addr()
    );
    shutdown_signal().await;
    eprintln!("fedsync: shutting down");
    node.shutdown().await?;
    Ok(())
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
