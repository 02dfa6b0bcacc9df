//! The tonic edge of a node: the `Peer` and `Client` services. Handlers
//! check who is calling (roster nodes may sync, operators may use the
//! client API), convert prost types, and forward to the actor. Domain
//! errors become gRPC statuses in exactly one place, [`status`].

use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::actor::{Command, Reply, WATCH_QUEUE_MAX};
use super::link::{self, LinkContext};
use super::net::ConnInfo;
use super::ApiError;
use crate::core::{Op, SignedDelta};
use crate::rpc::pb;

/// Records per `List` page when the caller does not say, and at most.
const LIST_PAGE_DEFAULT: usize = 100;
const LIST_PAGE_MAX: usize = 1_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The one mapping from domain errors to gRPC statuses.
pub fn status(e: ApiError) -> Status {
    use tonic::Code;
    let code = match &e {
        ApiError::Refused(r) if r.code() == "no_authority" => Code::PermissionDenied,
        ApiError::Refused(_) | ApiError::BadRequest(_) => Code::InvalidArgument,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::ShuttingDown => Code::Unavailable,
        ApiError::Store(_) => Code::Internal,
        ApiError::NotAllowed(_) => Code::PermissionDenied,
        ApiError::Unauthenticated => Code::Unauthenticated,
    };
    Status::new(code, e.to_string())
}

fn caller<T>(req: &Request<T>) -> Result<ConnInfo, Status> {
    // Every connection this server sees passed the pinned handshake, which
    // attaches ConnInfo; its absence means a wiring bug, refused anyway.
    req.extensions()
        .get::<ConnInfo>()
        .cloned()
        .ok_or_else(|| status(ApiError::Unauthenticated))
}

pub(crate) struct PeerService {
    pub ctx: LinkContext,
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type SyncStream = BoxStream<pb::PeerMessage>;

    async fn sync(
        &self,
        req: Request<Streaming<pb::PeerMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let who = caller(&req)?;
        if who.peer.node.is_none() {
            return Err(status(ApiError::NotAllowed(format!(
                "{} is an operator, not a node: operators use the Client service",
                who.peer.name
            ))));
        }
        let (open, outbound) = link::open(self.ctx.clone(), who.peer.name.clone())
            .await
            .map_err(status)?;
        let ctx = self.ctx.clone();
        let name = who.peer.name.clone();
        tokio::spawn(async move {
            let why = link::read(ctx, open, name.clone(), req.into_inner()).await;
            tracing::info!(peer = %name, remote = %who.remote, %why, "inbound link ended");
        });
        Ok(Response::new(Box::pin(outbound.map(Ok))))
    }
}

pub(crate) struct ClientService {
    pub actor: mpsc::Sender<Command>,
    pub key_len_max: usize,
}

impl ClientService {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Status> {
        let (reply, rx) = oneshot::channel();
        self.actor
            .send(make(reply))
            .await
            .map_err(|_| status(ApiError::ShuttingDown))?;
        rx.await
            .map_err(|_| status(ApiError::ShuttingDown))?
            .map_err(status)
    }

    fn check_key(&self, what: &str, key: &str) -> Result<(), Status> {
        if key.len() > self.key_len_max {
            return Err(status(ApiError::BadRequest(format!(
                "{what} of {} bytes exceeds the limit of {}",
                key.len(),
                self.key_len_max
            ))));
        }
        Ok(())
    }

    async fn write(&self, key: String, op: Op, value: Vec<u8>) -> Result<pb::WriteReply, Status> {
        self.check_key("key", &key)?;
        let d = self
            .ask(|reply| Command::Write {
                key,
                op,
                value,
                reply,
            })
            .await?;
        Ok(pb::WriteReply {
            author: d.author().0.to_vec(),
            seq: d.seq(),
            hash: d.hash().0.to_vec(),
        })
    }
}

fn operator<T>(req: &Request<T>) -> Result<(), Status> {
    let who = caller(req)?;
    if who.peer.node.is_some() {
        return Err(status(ApiError::NotAllowed(format!(
            "{} is a node; the client service is for operators",
            who.peer.name
        ))));
    }
    Ok(())
}

pub fn record(d: &SignedDelta) -> pb::Record {
    pb::Record {
        key: d.key().to_owned(),
        value: d.value().to_vec(),
        deleted: d.op() == Op::Delete,
        author: d.author().0.to_vec(),
        seq: d.seq(),
        hlc_wall_ms: d.hlc().wall_ms,
        hlc_logical: d.hlc().logical,
    }
}

#[tonic::async_trait]
impl pb::client_server::Client for ClientService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteReply>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        self.write(r.key, Op::Put, r.value).await.map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        self.write(r.key, Op::Delete, Vec::new())
            .await
            .map(Response::new)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        operator(&req)?;
        let key = req.into_inner().key;
        self.check_key("key", &key)?;
        let found = self
            .ask(|reply| Command::Get {
                key: key.clone(),
                reply,
            })
            .await?;
        match found {
            Some(d) => Ok(Response::new(record(&d))),
            None => Err(status(ApiError::NotFound(key))),
        }
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        operator(&req)?;
        let r = req.into_inner();
        self.check_key("prefix", &r.prefix)?;
        self.check_key("after", &r.after)?;
        let limit = match r.limit as usize {
            0 => LIST_PAGE_DEFAULT,
            n => n.min(LIST_PAGE_MAX),
        };
        let after = (!r.after.is_empty()).then_some(r.after);
        let page = self
            .ask(|reply| Command::List {
                prefix: r.prefix,
                after,
                limit,
                reply,
            })
            .await?;
        let next_after = match page.last() {
            Some(d) if page.len() == limit => d.key().to_owned(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListReply {
            records: page.iter().map(record).collect(),
            next_after,
        }))
    }

    type WatchStream = BoxStream<pb::Record>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        operator(&req)?;
        let prefix = req.into_inner().prefix;
        self.check_key("prefix", &prefix)?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE_MAX);
        self.actor
            .send(Command::Watch { prefix, tx })
            .await
            .map_err(|_| status(ApiError::ShuttingDown))?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|d| Ok(record(&d)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn frontier(
        &self,
        req: Request<pb::FrontierRequest>,
    ) -> Result<Response<pb::FrontierReply>, Status> {
        operator(&req)?;
        let (reply, rx) = oneshot::channel();
        self.actor
            .send(Command::Stats { reply })
            .await
            .map_err(|_| status(ApiError::ShuttingDown))?;
        let stats = rx.await.map_err(|_| status(ApiError::ShuttingDown))?;
        Ok(Response::new(pb::FrontierReply {
            node: stats.node.0.to_vec(),
            name: stats.name.clone(),
            digest: Some(pb::Digest {
                digest: stats.digest.0.to_vec(),
            }),
            frontier: Some(crate::rpc::convert::pb_frontier(&stats.frontier)),
        }))
    }
}
