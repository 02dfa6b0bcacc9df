//! How a link ends, and the words an operator reads for it: which end
//! ended it and why. Its watchdog, which ends a link whose connection
//! has gone silent for longer than the line could need, lives here too.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic::{Code, Status};

use super::LinkContext;
use super::LinkStats;
use crate::core::pace;
use crate::node::net::{self, Liveness};

/// How often a link's watchdog looks at its connection's silence.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Ends the link once its peer has been silent for longer than
/// [`pace::silence_allowed_ms`] allows, and cuts the connection, so that
/// nothing waits on it any longer (HTTP/2's own timeout is only a
/// backstop: see `net::h2_keepalive_timeout`).
pub(super) async fn watch(ctx: &LinkContext, stats: &LinkStats, alive: &Liveness) -> Ending {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = stats.delta_bytes_sent.load(Ordering::Relaxed);
        let unacked = sent.saturating_sub(stats.delta_bytes_acked.load(Ordering::Relaxed));
        let rate = match stats.rate_bytes_per_sec.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r as f64),
        };
        let (keepalive, timeout) = (ctx.keepalive, ctx.keepalive_timeout);
        let allowed = Duration::from_millis(pace::silence_allowed_ms(
            keepalive.as_millis() as u64,
            timeout.as_millis() as u64,
            unacked,
            rate,
        ));
        let silence = alive.silence();
        if silence > allowed {
            alive.cut();
            return Ending::Closed(format!(
                "keepalive: ended by this node, nothing heard from the peer for {}s \
                 (allowed {}s: keepalive {}s, timeout {}s, and draining {unacked} \
                 unacknowledged bytes)",
                silence.as_secs(),
                allowed.as_secs(),
                keepalive.as_secs(),
                timeout.as_secs(),
            ));
        }
    }
}

pub(super) enum Ending {
    Closed(String),
    /// A message was refused: count it by code, end with the status.
    Refused(&'static str, Status),
}

/// Sorts a failed read: what tonic's decoder refused is the peer's fault
/// (and answered with a status); anything else is the connection going.
pub(super) fn stream_failure(e: Status) -> Ending {
    let msg = e.message();
    match e.code() {
        // tonic's own decoder reports these codes; a status the peer ended
        // the stream with (ours use other codes) is not a refusal of ours.
        Code::OutOfRange if msg.contains("too large") => Ending::Refused(
            "message_too_large",
            Status::resource_exhausted(format!("message refused: {msg}")),
        ),
        Code::Internal if msg.contains("decode") => Ending::Refused(
            "malformed_message",
            Status::invalid_argument(format!("malformed message: {msg}")),
        ),
        _ => Ending::Closed(ended_elsewhere(&e)),
    }
}

/// Which end ended a link whose stream failed, and why, in an operator's
/// words: a status from the peer names the peer and its reason; a
/// connection that merely stopped means the peer went (its process, its
/// own watchdog, or the line); anything else is said as it came.
fn ended_elsewhere(e: &Status) -> String {
    let chain = net::error_chain(e);
    let lower = chain.to_ascii_lowercase();
    const GONE: [&str; 5] = [
        "close_notify",
        "connection reset",
        "broken pipe",
        "unexpected eof",
        "connection closed",
    ];
    if GONE.iter().any(|g| lower.contains(g)) {
        return format!(
            "peer gone: the connection stopped without the peer ending the link \
             (its process stopped, its keepalive gave up, or the line dropped it): {chain}"
        );
    }
    match e.code() {
        Code::ResourceExhausted
        | Code::InvalidArgument
        | Code::PermissionDenied
        | Code::FailedPrecondition => format!("ended by the peer: {}", e.message()),
        _ => format!("stream failed: {chain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_stream_says_which_end_ended_it() {
        let limit = Status::resource_exhausted("hq closed this link: queue full");
        assert_eq!(
            ended_elsewhere(&limit),
            "ended by the peer: hq closed this link: queue full"
        );
        let tls = "peer closed connection without sending TLS close_notify";
        let gone = ended_elsewhere(&Status::unknown(format!("h2 protocol error: {tls}")));
        assert!(gone.starts_with("peer gone: "), "{gone}");
        assert!(gone.contains(tls), "the cause is kept: {gone}");
        let other = ended_elsewhere(&Status::internal("h2 protocol error: frame too big"));
        assert!(other.starts_with("stream failed: "), "{other}");
    }
}
