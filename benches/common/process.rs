//! A `fedsync run` process, as the benchmarks start and read it: its
//! address, resident set and CPU time from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary this bench was built with.
pub const BIN: &str = env!("CARGO_BIN_EXE_fedsync");

/// A `fedsync run` process, killed when dropped.
pub struct Node {
    child: Child,
    pub addr: String,
}

impl Node {
    /// [`Node::spawn`] of this build's binary, logging beside its config.
    pub fn start(config: &Path) -> (Node, Duration) {
        Node::spawn(BIN, config, &config.with_file_name("node.log"), &[])
    }

    /// Starts `bin run --config config` with `args`, stderr appended to
    /// `log`, and waits for its "listening" line; returns the node with
    /// how long that took.
    pub fn spawn(bin: &str, config: &Path, log: &Path, args: &[&str]) -> (Node, Duration) {
        let t = Instant::now();
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(bin)
            .args(["run", "--config", config.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn fedsync run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if !line.contains("listening on") {
            let logged = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = logged.lines().rev().take(5).collect();
            panic!("{line:?}: {} ends with {tail:?}", log.display());
        }
        let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
        (Node { child, addr }, t.elapsed())
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// (current, peak) resident set, MiB.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            (status.lines())
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the process has used so far (user + system), seconds.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may
        // hold spaces: utime and stime are the 12th and 13th of them.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let ticks: u64 = (rest.split_whitespace().skip(11).take(2))
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf only reads a constant of the system.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / per_sec as f64
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
