//! `fedsync`: the one binary. Parses the command line, sets up logging and
//! hands off to `cli`. Errors end here as one line on stderr and exit 1.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(cli::run(args)) {
        eprintln!("fedsync: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause only if the message
/// does not already say it (many of ours embed their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out.replace('\n', " ")
}
