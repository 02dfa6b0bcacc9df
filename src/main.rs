//! `fedsync`: the one binary. Parses the command line, sets up logging and
//! hands off to `cli`. Errors end here as one line on stderr and exit 1.

mod cli;

use clap::Parser;

fn main() {
    cap_malloc_arenas();
    trim_malloc_now_and_then();
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

/// glibc gives each thread that allocates under contention an arena of its
/// own, up to eight per core, and memory freed in one arena serves only
/// that arena. The node's blocking threads decode and verify batches by
/// turns, so each arena keeps its own high-water mark of batch memory: on a
/// small server that is tens of MB of RSS holding nothing. One arena per
/// core keeps the threads' contention low and the RSS near the heap. Set
/// before any thread starts; `MALLOC_ARENA_MAX` in the environment still
/// wins.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = cores.clamp(2, 8) as libc::c_int;
        // SAFETY: mallopt only sets a tunable of the allocator; it is
        // called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Memory a batch used and freed stays in glibc's arenas, scattered between
/// what is still live, and counts as RSS until the allocator gives it back;
/// it gives back only the top of each heap on its own. `malloc_trim` also
/// returns the free pages in between. A catch-up frees tens of MB a second,
/// so a thread trims once a second (in the node bench this took HQ's RSS
/// after a catch-up from 184 to 115 MiB; trimming every 250 ms lowered the
/// peak less than it slowed the catch-up).
fn trim_malloc_now_and_then() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: malloc_trim is thread-safe; it only releases free
            // memory of the allocator's.
            unsafe {
                libc::malloc_trim(0);
            }
        })
        .expect("a thread for malloc_trim");
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
