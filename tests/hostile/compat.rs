//! Peers of other releases: features are used only once announced, and a
//! compressed batch is bounded before it is unpacked.

use fedsync::core::Op;
use fedsync::rpc::pb::{self, peer_message::Body};
use fedsync::rpc::{fragment, pack};
use tonic::Code;

use crate::common::{frontier_of, SYNC_TIMEOUT as WAIT};
use crate::harness::*;

/// HQ writes records a JSON report might hold; returns their bytes.
async fn hq_writes(t: &Target, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let value = format!("{{\"region\":\"hq\",\"indicator\":\"visits\",\"count\":{i}}}");
        let key = format!("hq/notes/{i}");
        let d = t.hq.write(&key, Op::Put, value.as_bytes()).await.unwrap();
        out.push(d.as_bytes().to_vec());
    }
    out
}

/// Tells HQ the link holds nothing: HQ answers with all it has.
async fn ask_for_everything(link: &PeerLink<pb::PeerMessage>) {
    let empty = pb::PeerMessage {
        body: Some(Body::Frontier(pb::Frontier::default())),
    };
    link.send(empty).await;
}

/// Asks HQ for everything, and returns the first batch it answers with.
async fn first_batch(link: &mut PeerLink<pb::PeerMessage>) -> pb::Deltas {
    ask_for_everything(link).await;
    next_batch(link).await
}

async fn next_batch(link: &mut PeerLink<pb::PeerMessage>) -> pb::Deltas {
    let next = async {
        loop {
            match link.replies.message().await {
                Ok(Some(pb::PeerMessage {
                    body: Some(Body::Deltas(d)),
                })) => return d,
                Ok(Some(_)) => continue,
                other => panic!("HQ sent no batch: {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, next)
        .await
        .expect("no batch from HQ")
}

/// `d` unpacked by a receiver whose context is `context`.
fn unpacked(d: &pb::Deltas, context: &mut pack::Context) -> Vec<Vec<u8>> {
    let lens = (d.zstd_len as usize, d.zstd_context as usize);
    pack::unpack(&d.zstd, lens, context, MESSAGE_BYTES_MAX, 10_000).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_announces_nothing_gets_plain_batches_and_one_that_reads_zstd_compressed() {
    let t = Target::start().await;
    let written = hq_writes(&t, 50).await;

    let mut old = t.link_as("office-fr").await;
    let plain = first_batch(&mut old).await;
    assert!(
        plain.zstd.is_empty() && plain.zstd_len == 0,
        "nothing compressed"
    );
    assert_eq!(plain.deltas, written, "every delta, exactly as signed");
    drop(old);

    let mut new = t.link_announcing("office-ke", &[pack::FEATURE]).await;
    let packed = first_batch(&mut new).await;
    assert!(
        packed.deltas.is_empty(),
        "compressed, not beside plain ones"
    );
    assert_eq!(packed.zstd_context, 0, "no context to one that did not ask");
    let back = unpacked(&packed, &mut pack::Context::default());
    assert_eq!(back, written, "the same signed bytes come out");
    let plain_bytes: usize = written.iter().map(Vec::len).sum();
    assert!(
        packed.zstd.len() * 2 < plain_bytes,
        "{} bytes for {plain_bytes}",
        packed.zstd.len()
    );
    drop(new);
    t.stop().await;
}

/// On a link whose round trip is a LAN's, a small batch goes plain even to
/// a peer that reads zstd: the bytes cost less than compressing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lans_small_batches_go_plain() {
    // Any loopback round trip counts as a LAN's.
    let t = Target::start_with("lan_rtt_ms = 60000\n").await;
    let written = hq_writes(&t, 50).await;
    let features = [pack::FEATURE, pack::CONTEXT_FEATURE];
    let mut link = t.link_announcing("office-ke", &features).await;
    // The peer's answer to HQ's digest is the round trip HQ measures.
    let plain = first_batch(&mut link).await;
    assert!(plain.zstd.is_empty(), "not compressed on a LAN");
    assert_eq!(plain.deltas, written, "every delta, exactly as signed");
    drop(link);
    t.stop().await;
}

/// Frames refer to the batch before them only on a link whose peer said it
/// reads that; a peer of the release before gets frames that stand alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_refer_to_the_batch_before_only_for_a_peer_that_reads_that() {
    let t = Target::start().await;
    // More than one batch before the first ack (half of a 64 KiB window).
    let written = hq_writes(&t, 400).await;
    for (peer, features) in [
        ("office-fr", &[pack::FEATURE][..]),
        ("office-ke", &[pack::FEATURE, pack::CONTEXT_FEATURE]),
    ] {
        let chains = features.len() == 2;
        let mut link = t.link_announcing(peer, features).await;
        let mut context = pack::Context::default();
        let first = first_batch(&mut link).await;
        let second = next_batch(&mut link).await;
        assert_eq!(first.zstd_context, 0, "nothing before the first");
        assert_eq!(second.zstd_context > 0, chains, "{peer}");
        let mut back = unpacked(&first, &mut context);
        back.extend(unpacked(&second, &mut context));
        assert_eq!(
            back,
            written[..back.len()],
            "{peer}: the signed bytes, in order"
        );
        drop(link);
    }
    t.stop().await;
}

/// Entries leave out author, seq and time only on a link whose peer said
/// it reads that: the release before gets each of HQ's run with only its
/// `prev` left out, which is all it can put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_follow_the_one_before_only_for_a_peer_that_reads_that() {
    let t = Target::start().await;
    let written = hq_writes(&t, 50).await;
    let before = [pack::FEATURE, pack::CONTEXT_FEATURE];
    let now = [pack::FEATURE, pack::CONTEXT_FEATURE, pack::FOLLOWS_FEATURE];
    let mut lens = Vec::new();
    for (peer, features) in [("office-fr", &before[..]), ("office-ke", &now)] {
        let mut link = t.link_announcing(peer, features).await;
        let batch = first_batch(&mut link).await;
        let back = unpacked(&batch, &mut pack::Context::default());
        assert_eq!(back, written[..back.len()], "{peer}: the signed bytes");
        // One author's run: the first whole, each after it without prev.
        let kind_1: usize = back.iter().map(|d| 5 + d.len()).sum::<usize>() - 32 * (back.len() - 1);
        lens.push((batch.zstd_len as usize, kind_1, back.len()));
        drop(link);
    }
    let [(old, old_kind_1, _), (new, new_kind_1, n)] = lens[..] else {
        unreachable!()
    };
    assert_eq!(old, old_kind_1, "the release before gets kind 1 entries");
    assert!(new + 40 * (n - 1) <= new_kind_1, "{new} of {new_kind_1}");
    t.stop().await;
}

/// A compressed batch from a peer is applied like a plain one; one whose
/// declared size is over the message limit is refused unopened, one that
/// does not decompress to its declared size is refused as malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_applied_and_lying_ones_refused() {
    let t = Target::start().await;
    let mut chain = Chain::of(t.key("office-fr"));
    let ds: Vec<_> = (0..5)
        .map(|i| chain.next(&format!("regions/fr/r{i}"), b"{}"))
        .collect();
    let pack::Packed {
        frame: zstd,
        raw_len: zstd_len,
        ..
    } = pack::pack(&ds, pack::Terms::default());
    let packed = |zstd: Vec<u8>, zstd_len: u32| pb::PeerMessage {
        body: Some(Body::Deltas(pb::Deltas {
            zstd,
            zstd_len,
            ..Default::default()
        })),
    };

    let link = t.link_announcing("office-fr", &[pack::FEATURE]).await;
    link.send(packed(zstd.clone(), zstd_len)).await;
    assert!(t.hq.wait_for(&frontier_of(&ds), WAIT).await, "applied");
    drop(link);

    let huge = (MESSAGE_BYTES_MAX + 1) as u32;
    let mut link = t.link_announcing("office-fr", &[pack::FEATURE]).await;
    link.send(packed(zstd.clone(), huge)).await;
    let status = link.ending().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let mut link = t.link_announcing("office-fr", &[pack::FEATURE]).await;
    link.send(packed(zstd.clone(), zstd_len + 1)).await;
    let status = link.ending().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed batch"), "{status:?}");
    drop(link);

    // A frame that claims context the link never carried.
    let mut link = t.link_announcing("office-fr", &[pack::FEATURE]).await;
    let mut claims = packed(zstd, zstd_len);
    if let Some(Body::Deltas(d)) = &mut claims.body {
        d.zstd_context = 100;
    }
    link.send(claims).await;
    let status = link.ending().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("context"), "{status:?}");
    drop(link);
    t.stop().await;
}

/// A delta too large for one message on a slow line goes in pieces only
/// to a peer that announced it reads them; an older peer gets it in a
/// plain batch, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_delta_goes_in_pieces_only_to_a_peer_that_reads_them() {
    let t = Target::start().await;
    let value = "a row of a large report\n".repeat(4000);
    let d = t.hq.write("hq/files/big", Op::Put, value.as_bytes());
    let written = d.await.unwrap().as_bytes().to_vec();
    assert!(written.len() > fragment::FRAGMENT_ABOVE);

    let mut old = t.link_as("office-fr").await;
    let plain = first_batch(&mut old).await;
    assert_eq!(plain.deltas, vec![written.clone()], "whole, as signed");
    drop(old);

    let mut new = t.link_announcing("office-ke", &[fragment::FEATURE]).await;
    ask_for_everything(&new).await;
    let mut joined = Vec::new();
    while joined.len() < written.len() {
        let next = tokio::time::timeout(WAIT, new.replies.message()).await;
        match next.expect("HQ sent the pieces").unwrap() {
            Some(pb::PeerMessage {
                body: Some(Body::Fragment(f)),
            }) => {
                assert_eq!(f.offset as usize, joined.len(), "in order");
                assert_eq!(f.total_len as usize, written.len());
                assert!(f.zstd.is_empty(), "not compressed: zstd not announced");
                joined.extend(f.data);
            }
            Some(pb::PeerMessage {
                body: Some(Body::Deltas(d)),
            }) => panic!("a batch of {} deltas instead of pieces", d.deltas.len()),
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    }
    assert_eq!(joined, written, "the signed bytes, in pieces");
    drop(new);
    t.stop().await;
}

/// Pieces from a peer are joined and the delta applied like any other;
/// pieces whose bytes do not hash to the hash they came under are
/// refused, and nothing of them is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_are_joined_and_applied_and_lying_ones_refused() {
    let t = Target::start().await;
    let mut chain = Chain::of(t.key("office-fr"));
    let big = chain.next("regions/fr/report", &[7u8; 60_000]);
    let pieces = |hash: Vec<u8>| {
        let bytes = big.as_bytes();
        (0..bytes.len())
            .step_by(20_000)
            .map(move |at| pb::PeerMessage {
                body: Some(Body::Fragment(pb::Fragment {
                    hash: hash.clone(),
                    total_len: bytes.len() as u64,
                    offset: at as u64,
                    data: bytes[at..(at + 20_000).min(bytes.len())].to_vec(),
                    ..Default::default()
                })),
            })
    };

    let before = t.stats().await;
    let mut link = t.link_announcing("office-fr", &[fragment::FEATURE]).await;
    for m in pieces(vec![9; 32]) {
        link.send(m).await;
    }
    let status = link.ending().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("do not hash"), "{status:?}");
    assert_unchanged(&before, &t.stats().await);

    let link = t.link_announcing("office-fr", &[fragment::FEATURE]).await;
    for m in pieces(big.hash().0.to_vec()) {
        link.send(m).await;
    }
    let target = frontier_of(std::slice::from_ref(&big));
    assert!(t.hq.wait_for(&target, WAIT).await, "joined and applied");
    drop(link);
    t.stop().await;
}
