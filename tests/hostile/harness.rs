//! The hostile-input suite's harness: the target node, deltas honest and
//! forged, and the attacker's end of a sync stream (typed or raw bytes).

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use fedsync::core::delta::DOMAIN;
use fedsync::core::{
    DeltaBody, DeltaHash, Frontier, Head, Hlc, NodeId, Op, RosterOffer, SignedDelta, Standing,
};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::{NodeHandle, Stats};
use fedsync::rpc::pb::{self, peer_client::PeerClient, peer_message::Body};
use prost::bytes::BufMut;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::common::{now_ms, NO_ANTI_ENTROPY, SYNC_TIMEOUT as WAIT};

pub(crate) const MIB: usize = 1024 * 1024;
/// The node's defaults (`[limits]` in the config), which these tests exceed.
pub(crate) const VALUE_BYTES_MAX: usize = MIB;
pub(crate) const MESSAGE_BYTES_MAX: usize = 4 * MIB;
pub(crate) const BATCH_DELTAS_MAX: usize = 10_000;
pub(crate) const FUTURE_SKEW_MS_MAX: u64 = 3_600_000;

// ---------------------------------------------------------------------------
// The target node and the attacker's keys
// ---------------------------------------------------------------------------

/// HQ running alone in a three-node federation; office-fr and office-ke
/// exist only as keys in the roster (and in the attacker's hands).
pub(crate) struct Target {
    pub(crate) fed: LocalFederation,
    pub(crate) hq: NodeHandle,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Every link compresses (`lan_rtt_ms = 0`), loopback as any other,
    /// so that these tests see the frames a field link gets.
    pub(crate) async fn start() -> Target {
        Target::start_with("lan_rtt_ms = 0\n").await
    }

    /// The same, `sync` (TOML) added to HQ's `[sync]` section.
    pub(crate) async fn start_with(sync: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            NodeSpec::hq("hq"),
            NodeSpec::region("office-fr", "fr", &[]),
            NodeSpec::region("office-ke", "ke", &[]),
        ];
        let config = format!("{NO_ANTI_ENTROPY}{sync}");
        let mut fed = LocalFederation::create(dir.path(), &specs, &config).unwrap();
        let hq = fed.start("hq").await.unwrap();
        Target { fed, hq, _dir: dir }
    }

    /// Member `name`'s Ed25519 signing key, as written by the set-up.
    pub(crate) fn key(&self, name: &str) -> SigningKey {
        self.fed.node_key(name).unwrap().signing_key().clone()
    }

    pub(crate) fn id(&self, name: &str) -> NodeId {
        self.fed.node_key(name).unwrap().id()
    }

    /// Shuts HQ down. Drop every link first: HQ waits for open streams.
    pub(crate) async fn stop(self) {
        self.hq.shutdown().await.unwrap();
    }

    pub(crate) async fn stats(&self) -> Stats {
        self.hq.stats().await.unwrap()
    }

    /// A sync stream to HQ over mutual TLS as member `name`, opened as a
    /// node of the first release would: announcing no features.
    pub(crate) async fn link_as(&self, name: &str) -> PeerLink<pb::PeerMessage> {
        self.link_announcing(name, &[]).await
    }

    /// The same, its opening digest announcing `features`.
    pub(crate) async fn link_announcing(
        &self,
        name: &str,
        features: &[&str],
    ) -> PeerLink<pb::PeerMessage> {
        let channel = self.fed.channel_as(name, self.hq.local_addr()).unwrap();
        let mut digest = digest_msg(self.stats().await.roster_version);
        if let Some(Body::Digest(d)) = &mut digest.body {
            d.features = features.iter().map(|f| f.to_string()).collect();
        }
        PeerLink::open_with(channel, digest).await
    }

    /// Changes member `name`'s standing in the roster and hands the signed
    /// roster to HQ, as an operator's `roster revoke` + `publish` would.
    pub(crate) async fn set_standing(&self, name: &str, standing: Standing) {
        let id = self.id(name);
        let signed = self
            .fed
            .change_roster(|r| {
                let mut m = r.member(&id).expect("a roster member").clone();
                m.standing = standing;
                r.insert(m);
            })
            .unwrap();
        let offer = self.hq.publish_roster(signed.as_bytes()).await.unwrap();
        assert!(matches!(offer, RosterOffer::Adopted(_)), "{offer:?}");
        assert_eq!(self.stats().await.roster_version, signed.roster().version);
    }

    /// Sends a valid delta and waits until HQ has applied it.
    pub(crate) async fn apply(&self, link: &PeerLink<pb::PeerMessage>, d: &SignedDelta) {
        link.send_deltas(vec![d.as_bytes().to_vec()]).await;
        let mut target = Frontier::new();
        target.set(
            d.author(),
            Head {
                seq: d.seq(),
                hash: d.hash(),
            },
        );
        assert!(
            self.hq.wait_for(&target, WAIT).await,
            "HQ did not apply a valid delta ({d:?})"
        );
    }

    /// The core of every delta-level case: sends `bytes` alone in one
    /// batch and checks that HQ refused it with `code` and nothing else,
    /// counted it once, quarantined it with `origin`, left the digest as it
    /// was, and kept the stream open. Returns the note's reason.
    pub(crate) async fn refused_once(
        &self,
        link: &mut PeerLink<pb::PeerMessage>,
        bytes: Vec<u8>,
        code: &str,
        origin: &str,
    ) -> String {
        let before = self.stats().await;
        let kept = self.hq.quarantine(1).await.unwrap().kept;
        link.send_deltas(vec![bytes.clone()]).await;
        let notes = link.next_refused().await;
        let after = self.stats().await;

        assert_eq!(notes.len(), 1, "one delta, one note: {notes:?}");
        assert_eq!(notes[0].code, code, "{notes:?}");
        assert_unchanged(&before, &after);
        assert_eq!(
            count(&after.counters.refused, code),
            count(&before.counters.refused, code) + 1,
            "refusals counted under {code}: {:?} -> {:?}",
            before.counters.refused,
            after.counters.refused
        );
        assert_eq!(
            total(&after.counters.refused),
            total(&before.counters.refused) + 1,
            "exactly one refusal counted: {:?}",
            after.counters.refused
        );
        assert_eq!(after.counters.duplicates, before.counters.duplicates);

        let q = self.hq.quarantine(1).await.unwrap();
        assert_eq!(q.kept, kept + 1, "exactly one entry quarantined");
        let newest = q.entries.first().expect("the refused delta is quarantined");
        assert_eq!(newest.code, code);
        assert_eq!(newest.origin, origin);
        assert_eq!(newest.reason, notes[0].reason);
        assert!(
            newest.bytes == bytes,
            "the quarantine keeps the exact bytes"
        );

        link.still_open().await;
        notes[0].reason.clone()
    }

    /// The core of every message-level case: HQ ends the stream with a
    /// status of `code`, counts one refused message under `counter`, and
    /// changes nothing else. Returns the status message.
    pub(crate) async fn message_refused<M: Send + 'static>(
        &self,
        link: &mut PeerLink<M>,
        hostile: M,
        code: Code,
        counter: &str,
    ) -> String {
        let before = self.stats().await;
        link.send(hostile).await;
        let status = link.ending().await;
        let after = self.stats().await;

        assert_eq!(status.code(), code, "{status:?}");
        assert_unchanged(&before, &after);
        assert_eq!(
            count(&after.refused_messages, counter),
            count(&before.refused_messages, counter) + 1,
            "messages refused: {:?} -> {:?}",
            before.refused_messages,
            after.refused_messages
        );
        assert_eq!(
            total(&after.refused_messages),
            total(&before.refused_messages) + 1,
            "exactly one message refused: {:?}",
            after.refused_messages
        );
        assert_eq!(after.counters.refused, before.counters.refused);
        status.message().to_owned()
    }
}

/// What no refusal may change: the store's digest, what was applied, what
/// is held behind gaps.
pub(crate) fn assert_unchanged(before: &Stats, after: &Stats) {
    assert_eq!(after.digest, before.digest, "the store's digest changed");
    assert_eq!(after.frontier, before.frontier);
    assert_eq!(after.counters.applied, before.counters.applied);
    assert_eq!(after.held, before.held);
}

pub(crate) fn count(map: &BTreeMap<&'static str, u64>, code: &str) -> u64 {
    map.get(code).copied().unwrap_or(0)
}

pub(crate) fn total(map: &BTreeMap<&'static str, u64>) -> u64 {
    map.values().sum()
}

// ---------------------------------------------------------------------------
// Building deltas, honest and not
// ---------------------------------------------------------------------------

pub(crate) fn body(
    author: NodeId,
    seq: u64,
    prev: DeltaHash,
    key: &str,
    value: &[u8],
) -> DeltaBody {
    DeltaBody {
        author,
        seq,
        prev,
        hlc: Hlc::new(now_ms(), 0),
        key: key.to_owned(),
        op: Op::Put,
        value: value.to_vec(),
    }
}

/// `body || signature` with `signer`'s signature over `DOMAIN || body`,
/// whoever `body` names as its author: how a forger builds bytes.
pub(crate) fn sign_as(signer: &SigningKey, body: &DeltaBody) -> Vec<u8> {
    let mut bytes = body.encode();
    let signature = signer.sign(&[DOMAIN, &bytes].concat());
    bytes.extend_from_slice(&signature.to_bytes());
    bytes
}

/// One author's chain, signed with its real key: honest deltas, and
/// dishonest ones that are nevertheless correctly signed.
pub(crate) struct Chain {
    pub(crate) key: SigningKey,
    pub(crate) head: Head,
}

impl Chain {
    pub(crate) fn of(key: SigningKey) -> Chain {
        Chain {
            key,
            head: Head::default(),
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// The body of the author's next delta (seq and prev follow the chain).
    pub(crate) fn next_body(&self, key: &str, value: &[u8]) -> DeltaBody {
        body(self.id(), self.head.seq + 1, self.head.hash, key, value)
    }

    /// Signs `body` and, as an honest author would, moves the chain on.
    pub(crate) fn sign(&mut self, body: &DeltaBody) -> SignedDelta {
        let d = SignedDelta::decode(&sign_as(&self.key, body)).expect("a well-formed delta");
        self.head = Head {
            seq: d.seq(),
            hash: d.hash(),
        };
        d
    }

    pub(crate) fn next(&mut self, key: &str, value: &[u8]) -> SignedDelta {
        let b = self.next_body(key, value);
        self.sign(&b)
    }
}

// ---------------------------------------------------------------------------
// The attacker's end of a Sync stream
// ---------------------------------------------------------------------------

/// One `Peer.Sync` stream: what we send (`M`: protobuf messages, or raw
/// bytes), and HQ's replies.
pub(crate) struct PeerLink<M> {
    out: mpsc::Sender<M>,
    pub(crate) replies: Streaming<pb::PeerMessage>,
}

pub(crate) fn digest_msg(roster_version: u64) -> pb::PeerMessage {
    pb::PeerMessage {
        body: Some(Body::Digest(pb::Digest {
            // Any digest: it differs from HQ's, so HQ answers with its frontier.
            digest: vec![0xab; 32],
            roster_version,
            ..Default::default()
        })),
    }
}

pub(crate) fn deltas_msg(deltas: Vec<Vec<u8>>) -> pb::PeerMessage {
    pb::PeerMessage {
        body: Some(Body::Deltas(pb::Deltas {
            deltas,
            ..Default::default()
        })),
    }
}

impl PeerLink<pb::PeerMessage> {
    /// Opens the stream and, as a real peer does, starts with a digest
    /// (`digest_msg`, perhaps announcing features).
    pub(crate) async fn open_with(channel: Channel, digest: pb::PeerMessage) -> Self {
        let (out, rx) = mpsc::channel(4);
        out.send(digest).await.unwrap();
        // Unlimited on our side: the node's limit is what is under test.
        let mut client = PeerClient::new(channel).max_encoding_message_size(usize::MAX);
        let call = client.sync(ReceiverStream::new(rx));
        let replies = tokio::time::timeout(WAIT, call)
            .await
            .expect("no answer to Sync")
            .expect("HQ accepts a Sync stream from a roster node")
            .into_inner();
        PeerLink { out, replies }
    }

    pub(crate) async fn send_deltas(&self, deltas: Vec<Vec<u8>>) {
        self.send(deltas_msg(deltas)).await;
    }

    /// Proves the stream still works: a digest is answered with HQ's
    /// frontier.
    pub(crate) async fn still_open(&mut self) {
        self.send(digest_msg(0)).await;
        let next = async {
            loop {
                match self.replies.message().await {
                    Ok(Some(pb::PeerMessage {
                        body: Some(Body::Frontier(_)),
                    })) => return,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("HQ closed the stream after refusing a delta"),
                    Err(s) => panic!("HQ ended the stream after refusing a delta: {s:?}"),
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("no answer to a digest: the stream is stuck");
    }
}

/// A codec that sends bytes exactly as given, so a test can put anything
/// on the wire, and decodes HQ's replies as usual.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

pub(crate) struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = pb::PeerMessage;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::PeerMessage>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

impl PeerLink<Vec<u8>> {
    /// A Sync stream whose messages are raw bytes; it opens with a proper
    /// digest, encoded here.
    pub(crate) async fn open_raw(channel: Channel, roster_version: u64) -> Self {
        let (out, rx) = mpsc::channel(4);
        out.send(digest_msg(roster_version).encode_to_vec())
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        tokio::time::timeout(WAIT, grpc.ready())
            .await
            .expect("channel not ready")
            .expect("channel ready");
        let path = "/fedsync.v1.Peer/Sync".parse().unwrap();
        let request = tonic::Request::new(ReceiverStream::new(rx));
        let replies = tokio::time::timeout(WAIT, grpc.streaming(request, path, RawCodec))
            .await
            .expect("no answer to Sync")
            .expect("HQ accepts a Sync stream from a roster node")
            .into_inner();
        PeerLink { out, replies }
    }
}

impl<M: Send + 'static> PeerLink<M> {
    pub(crate) async fn send(&self, msg: M) {
        if self.out.send(msg).await.is_err() {
            panic!("our outbound stream is closed");
        }
    }

    /// Waits for HQ's next `Refused` message, passing over protocol
    /// traffic (its digest, frontier, roster).
    pub(crate) async fn next_refused(&mut self) -> Vec<pb::Note> {
        let next = async {
            loop {
                match self.replies.message().await {
                    Ok(Some(pb::PeerMessage {
                        body: Some(Body::Refused(r)),
                    })) => return r.notes,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("HQ closed the stream instead of sending Refused notes"),
                    Err(s) => panic!("HQ ended the stream instead of sending Refused notes: {s:?}"),
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("no Refused notes from HQ")
    }

    /// Waits for HQ to end the stream, and returns the status it ended with.
    pub(crate) async fn ending(&mut self) -> Status {
        let next = async {
            loop {
                match self.replies.message().await {
                    Ok(Some(pb::PeerMessage {
                        body: Some(Body::Refused(r)),
                    })) => panic!("expected the stream to end, got Refused notes {r:?}"),
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("HQ ended the stream without a status"),
                    Err(s) => return s,
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("HQ did not end the stream")
    }
}
