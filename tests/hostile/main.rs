//! A hostile peer against a running node, over the node's real gRPC
//! endpoint and mutual TLS.
//!
//! The attacker is office-fr's software: it holds office-fr's valid node key
//! and TLS identity, so it gets past the handshake and speaks the sync
//! protocol to HQ, then sends what an honest node never would. For every
//! hostile delta the suite proves that HQ answers with a `Refused` note
//! carrying its own code and a sentence naming the problem, that the right
//! counter moves by exactly one, that the refused bytes are quarantined with
//! their origin, that the store's digest is the same before and after, and
//! that the stream stays open. For every hostile *message* (too large,
//! too many deltas, not protobuf, no body) it proves that HQ ends the
//! stream with its own gRPC status and counts the refusal. `compat.rs` proves
//! that a peer announcing no features (an older release) is sent plain
//! batches and one announcing "zstd" compressed ones, and refuses
//! compressed batches that lie about their size. `door.rs` proves
//! that a client with no certificate, with a key the roster does not list,
//! or with a revoked key, is refused at the TLS handshake (counted by HQ)
//! and cannot make a gRPC call; that a member and an operator get in while
//! a flood of connections that never finish a handshake goes on; and that
//! a peer that stops reading is told why its link was closed.
//!
//! Only HQ runs, with anti-entropy far beyond the test's length, so nothing
//! but the attacker talks to it. Every wait is on a reply, a watch or a
//! status, bounded by [`WAIT`]; nothing sleeps.

#[path = "../common/mod.rs"]
mod common;
mod compat;
mod door;
mod harness;

use ed25519_dalek::SigningKey;
use fedsync::core::delta::SIGNATURE_LEN;
use fedsync::core::{DeltaHash, Frontier, Head, Hlc, SignedDelta, Standing};
use fedsync::rpc::pb;
use prost::Message;
use tonic::Code;

use common::{now_ms, SYNC_TIMEOUT as WAIT};
use harness::*;

// ---------------------------------------------------------------------------
// Hostile deltas: refused one by one, the stream stays open
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    // Claims to be office-ke writing its own space; signed with office-fr's key.
    let claim = body(
        t.id("office-ke"),
        1,
        DeltaHash::GENESIS,
        "regions/ke/x",
        b"1",
    );
    let forged = sign_as(&t.key("office-fr"), &claim);
    let reason = t
        .refused_once(&mut link, forged, "bad_signature", "office-fr")
        .await;
    assert!(reason.contains("signature does not verify"), "{reason}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flipped_bit_in_a_signed_delta_is_refused() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let mut fr = Chain::of(t.key("office-fr"));
    let value = b"{\"volunteers\":12}";
    let honest = fr.next("regions/fr/reports/q3", value);
    let mut bytes = honest.as_bytes().to_vec();
    let first_value_byte = bytes.len() - SIGNATURE_LEN - value.len();
    bytes[first_value_byte] ^= 0x01;
    let flipped = SignedDelta::decode(&bytes).expect("still well-formed");
    assert_eq!(flipped.value(), b"z\"volunteers\":12}");
    let reason = t
        .refused_once(&mut link, bytes.clone(), "bad_signature", "office-fr")
        .await;
    assert!(reason.contains("signature does not verify"), "{reason}");
    // The honest original is still welcome: the refusal was about the bit.
    t.apply(&link, &honest).await;
    // Flipped after it was applied, it is still a bad signature: neither a
    // duplicate nor evidence that office-fr signed two deltas as seq 1.
    let reason = t
        .refused_once(&mut link, bytes, "bad_signature", "office-fr")
        .await;
    assert!(reason.contains("signature does not verify"), "{reason}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delta_is_a_duplicate_and_changes_nothing() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let mut fr = Chain::of(t.key("office-fr"));
    let d = fr.next("regions/fr/x", b"1");
    t.apply(&link, &d).await;

    let before = t.stats().await;
    let quarantined = t.hq.quarantine(10).await.unwrap().kept;
    link.send_deltas(vec![d.as_bytes().to_vec()]).await;
    let notes = link.next_refused().await;
    let after = t.stats().await;

    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].code, "duplicate");
    assert!(notes[0].reason.contains("already held"), "{notes:?}");
    assert_unchanged(&before, &after);
    assert_eq!(after.counters.duplicates, before.counters.duplicates + 1);
    assert_eq!(after.counters.refused, before.counters.refused);
    assert_eq!(t.hq.quarantine(10).await.unwrap().kept, quarantined);
    link.still_open().await;
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_from_an_unknown_key_is_refused() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let mut stranger = Chain::of(SigningKey::generate(&mut rand::rngs::OsRng));
    let d = stranger.next("regions/fr/x", b"1");
    let reason = t
        .refused_once(
            &mut link,
            d.as_bytes().to_vec(),
            "unknown_author",
            "office-fr",
        )
        .await;
    assert!(reason.contains("not in the roster"), "{reason}");
    assert!(reason.contains(&stranger.id().short()), "{reason}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_from_a_revoked_key_is_refused() {
    let t = Target::start().await;
    t.set_standing("office-ke", Standing::Revoked { valid_through: 0 })
        .await;
    let mut link = t.link_as("office-fr").await;
    // office-ke's own key, its own space, a well-formed chain: only the
    // revocation is wrong.
    let mut ke = Chain::of(t.key("office-ke"));
    let d = ke.next("regions/ke/x", b"1");
    let reason = t
        .refused_once(&mut link, d.as_bytes().to_vec(), "revoked", "office-fr")
        .await;
    assert!(reason.contains("office-ke is revoked"), "{reason}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_after_the_compromised_from_sequence_is_refused() {
    let t = Target::start().await;
    let mut fr = Chain::of(t.key("office-fr"));
    {
        let link = t.link_as("office-fr").await;
        t.apply(&link, &fr.next("regions/fr/x", b"1")).await;
    }
    // office-fr's key leaked after its seq 1: seq 1 stands, nothing later.
    t.set_standing("office-fr", Standing::Revoked { valid_through: 1 })
        .await;
    assert_eq!(t.stats().await.frontier.head(&fr.id()).seq, 1, "seq 1 kept");
    // office-fr can no longer connect, so office-ke relays the thief's
    // delta: relaying is legal, the receiver judges the author.
    let mut link = t.link_as("office-ke").await;
    let d = fr.next("regions/fr/x", b"2");
    let reason = t
        .refused_once(&mut link, d.as_bytes().to_vec(), "compromised", "office-ke")
        .await;
    assert!(
        reason.contains("office-fr was compromised after seq 1"),
        "{reason}"
    );
    assert!(reason.contains("seq 2"), "{reason}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_outside_its_authors_authority_is_refused() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let fr = Chain::of(t.key("office-fr"));
    for key in ["regions/ke/x", "hq/x"] {
        let d = sign_as(&fr.key, &fr.next_body(key, b"1"));
        let reason = t
            .refused_once(&mut link, d, "no_authority", "office-fr")
            .await;
        assert!(
            reason.contains("office-fr (region fr) may not write"),
            "{reason}"
        );
        assert!(reason.contains(key), "{reason}");
    }
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_after_a_gap_is_held_and_not_applied() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let mut fr = Chain::of(t.key("office-fr"));
    t.apply(&link, &fr.next("regions/fr/x", b"1")).await;
    let second = fr.next("regions/fr/x", b"2"); // withheld
    let third = fr.next("regions/fr/x", b"3");

    let before = t.stats().await;
    let quarantined = t.hq.quarantine(10).await.unwrap().kept;
    link.send_deltas(vec![third.as_bytes().to_vec()]).await;
    let notes = link.next_refused().await;
    let after = t.stats().await;

    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].code, "gap");
    assert!(
        notes[0]
            .reason
            .contains("follow a gap in their author's chain"),
        "{notes:?}"
    );
    assert_eq!(after.digest, before.digest, "the store's digest changed");
    assert_eq!(after.frontier, before.frontier);
    assert_eq!(after.counters.applied, before.counters.applied);
    assert_eq!(after.held, before.held + 1, "the delta is held");
    assert_eq!(after.counters.refused, before.counters.refused);
    assert_eq!(t.hq.quarantine(10).await.unwrap().kept, quarantined);
    link.still_open().await;

    // Held, not lost: once the missing delta arrives, both apply.
    link.send_deltas(vec![second.as_bytes().to_vec()]).await;
    let mut target = Frontier::new();
    target.set(
        fr.id(),
        Head {
            seq: 3,
            hash: third.hash(),
        },
    );
    assert!(
        t.hq.wait_for(&target, WAIT).await,
        "the held delta was lost"
    );
    assert_eq!(t.stats().await.held, before.held);
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_far_in_the_future_is_refused() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let fr = Chain::of(t.key("office-fr"));
    let mut b = fr.next_body("regions/fr/x", b"1");
    b.hlc = Hlc::new(now_ms() + 2 * 3_600_000, 0);
    let reason = t
        .refused_once(
            &mut link,
            sign_as(&fr.key, &b),
            "from_the_future",
            "office-fr",
        )
        .await;
    assert!(reason.contains("ahead of this node's clock"), "{reason}");
    assert!(
        reason.contains(&format!("limit {FUTURE_SKEW_MS_MAX} ms")),
        "{reason}"
    );
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_is_refused() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let fr = Chain::of(t.key("office-fr"));
    let value = vec![b'v'; VALUE_BYTES_MAX + 1];
    let d = sign_as(&fr.key, &fr.next_body("regions/fr/big", &value));
    assert!(d.len() < MESSAGE_BYTES_MAX, "the message itself is allowed");
    let reason = t
        .refused_once(&mut link, d, "value_too_large", "office-fr")
        .await;
    let expected = format!(
        "value of {} bytes exceeds the limit of {VALUE_BYTES_MAX}",
        VALUE_BYTES_MAX + 1
    );
    assert!(reason.contains(&expected), "{reason}");
    drop(link);
    t.stop().await;
}

// ---------------------------------------------------------------------------
// Hostile messages: the stream ends with a status
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_ends_the_stream_with_resource_exhausted() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let huge = deltas_msg(vec![vec![0; MESSAGE_BYTES_MAX + 1]]);
    assert!(huge.encoded_len() > MESSAGE_BYTES_MAX);
    let message = t
        .message_refused(
            &mut link,
            huge,
            Code::ResourceExhausted,
            "message_too_large",
        )
        .await;
    assert!(message.contains("message refused"), "{message}");
    assert!(message.contains("too large"), "{message}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_ends_the_stream_with_resource_exhausted() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let many = deltas_msg(vec![vec![1]; BATCH_DELTAS_MAX + 1]);
    assert!(many.encoded_len() < MESSAGE_BYTES_MAX);
    let message = t
        .message_refused(&mut link, many, Code::ResourceExhausted, "batch_too_large")
        .await;
    let expected = format!(
        "batch of {} deltas exceeds the limit of {BATCH_DELTAS_MAX}",
        BATCH_DELTAS_MAX + 1
    );
    assert!(message.contains(&expected), "{message}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_ends_the_stream_with_invalid_argument() {
    let t = Target::start().await;
    let channel = t.fed.channel_as("office-fr", t.hq.local_addr()).unwrap();
    let roster = t.stats().await.roster_version;
    let mut link = PeerLink::open_raw(channel, roster).await;
    // Field 1 (digest), length-delimited, with a length running far past
    // the end of the message.
    let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(pb::PeerMessage::decode(garbage.as_slice()).is_err());
    let message = t
        .message_refused(
            &mut link,
            garbage,
            Code::InvalidArgument,
            "malformed_message",
        )
        .await;
    assert!(message.contains("malformed message"), "{message}");
    assert!(message.contains("decode"), "{message}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_body_ends_the_stream_as_a_protocol_violation() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let empty = pb::PeerMessage { body: None };
    let message = t
        .message_refused(
            &mut link,
            empty,
            Code::InvalidArgument,
            "protocol_violation",
        )
        .await;
    assert!(message.contains("protocol violation"), "{message}");
    assert!(message.contains("no body"), "{message}");
    drop(link);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_refused_deltas_by_reason_and_applied_ones() {
    use crate::common::{sample, scrape};
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    let mut fr = Chain::of(t.key("office-fr"));
    let bad_signature = [("reason", "bad_signature")];

    let before = scrape(&t.hq).await;
    let forged = sign_as(&t.key("office-ke"), &fr.next_body("regions/fr/x", b"1"));
    t.refused_once(&mut link, forged, "bad_signature", "office-fr")
        .await;
    let refused = scrape(&t.hq).await;
    let counted = |s, name, labels| sample(s, name, labels);
    assert_eq!(
        counted(&refused, "fedsync_deltas_refused_total", &bad_signature),
        counted(&before, "fedsync_deltas_refused_total", &bad_signature) + 1.0
    );
    assert_eq!(
        counted(&refused, "fedsync_deltas_applied_total", &[]),
        counted(&before, "fedsync_deltas_applied_total", &[])
    );
    assert_eq!(counted(&refused, "fedsync_quarantined", &[]), 1.0);

    t.apply(&link, &fr.next("regions/fr/x", b"1")).await;
    let applied = scrape(&t.hq).await;
    assert_eq!(
        counted(&applied, "fedsync_deltas_applied_total", &[]),
        counted(&refused, "fedsync_deltas_applied_total", &[]) + 1.0
    );
    assert_eq!(
        counted(&applied, "fedsync_deltas_refused_total", &bad_signature),
        counted(&refused, "fedsync_deltas_refused_total", &bad_signature)
    );
    drop(link);
    t.stop().await;
}
