//! Deltas as a misbehaving member would send them, straight onto a node's
//! sync stream with that member's real TLS identity (trust and tree tests).

use std::net::SocketAddr;

use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use fedsync::core::{DeltaBody, Hlc, NodeId, Op, SignedDelta};
use fedsync::local::LocalFederation;
use fedsync::rpc::pb::{self, peer_client::PeerClient, peer_message::Body};

use super::{now_ms, SYNC_TIMEOUT};

/// A delta as a misbehaving author's software would make it: any author
/// field, any key, signed with whatever key it holds.
pub fn crafted(author: NodeId, signer: &SigningKey, seq: u64, key: &str) -> SignedDelta {
    DeltaBody {
        author,
        seq,
        prev: Default::default(),
        hlc: Hlc {
            wall_ms: now_ms(),
            logical: 0,
        },
        key: key.into(),
        op: Op::Put,
        value: b"injected".to_vec(),
    }
    .sign(signer)
}

/// Opens a sync stream to `to` as member `who` (with its real keys), sends
/// `deltas` in one batch and returns the codes of the receiver's notes.
pub async fn send_as(
    fed: &LocalFederation,
    who: &str,
    to: SocketAddr,
    deltas: &[SignedDelta],
) -> Vec<String> {
    let mut client = PeerClient::new(fed.channel_as(who, to).unwrap());
    let (tx, rx) = mpsc::channel(4);
    let batch = pb::Deltas {
        deltas: deltas.iter().map(|d| d.as_bytes().to_vec()).collect(),
        ..Default::default()
    };
    tx.send(pb::PeerMessage {
        body: Some(Body::Deltas(batch)),
    })
    .await
    .unwrap();
    let mut inbound = client
        .sync(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let notes = tokio::time::timeout(SYNC_TIMEOUT, async {
        while let Some(m) = inbound.message().await.unwrap() {
            if let Some(Body::Refused(r)) = m.body {
                return r.notes;
            }
        }
        panic!("stream ended without a Refused message");
    })
    .await
    .expect("the receiver answers with its reasons");
    drop(tx);
    notes.into_iter().map(|n| n.code).collect()
}
