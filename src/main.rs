//! `fedsync`: the one binary. Parses the command line, sets up logging and
//! hands off to `cli`. Errors end here as one line on stderr and exit 1.

mod cli;

use clap::Parser;

fn main() {
    quiet_store_panics();
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

/// sled may panic on a damaged file; the store contains those panics and
/// reports the one-line corrupt-store error instead, so their message is
/// not printed. Any other panic prints as usual.
fn quiet_store_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_sled = info.location().is_some_and(|l| l.file().contains("/sled-"));
        if !in_sled {
            default(info);
        }
    }));
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
