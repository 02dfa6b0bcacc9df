//! The tonic edge of a node: the `Peer` and `Client` services. Handlers
//! check who is calling (roster nodes may sync, operators may use the
//! client API), convert prost types, and forward to the actor. Domain
//! errors become gRPC statuses in exactly one place, [`status`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

mod reports;

use super::actor::{Command, Reply, WATCH_QUEUE_MAX};
use super::link::{self, LinkContext};
use super::link_info::LinkPeer;
use super::net::ConnInfo;
use super::ApiError;
use crate::core::{Op, RosterOffer, SignedDelta};
use crate::identity::tls::TrustStore;
use crate::rpc::pb;

/// Records per `List` page when the caller does not say, and at most.
const LIST_PAGE_DEFAULT: usize = 100;
const LIST_PAGE_MAX: usize = 1_000;
/// Room in a reply for everything but the records' keys and values: each
/// record's other fields (under 100 bytes) and the message's framing.
const PAGE_OVERHEAD: usize = 64 * 1024 + LIST_PAGE_MAX * 100;

/// Bytes of keys and values in one `List` page, so that the reply fits in
/// one message however large the values are.
pub(crate) fn page_bytes_max(message_bytes_max: usize) -> usize {
    message_bytes_max.saturating_sub(PAGE_OVERHEAD).max(1)
}
/// Quarantine entries per call when the caller does not say, and at most.
const QUARANTINE_DEFAULT: usize = 50;
const QUARANTINE_MAX: usize = 1_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The one mapping from domain errors to gRPC statuses.
pub fn status(e: ApiError) -> Status {
    use tonic::Code;
    let code = match &e {
        ApiError::Refused(r) if r.code() == "no_authority" => Code::PermissionDenied,
        ApiError::Refused(_) | ApiError::BadRequest(_) => Code::InvalidArgument,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::ShuttingDown | ApiError::Unavailable(_) => Code::Unavailable,
        ApiError::Store(_) => Code::Internal,
        ApiError::NotAllowed(_) => Code::PermissionDenied,
        ApiError::Unauthenticated | ApiError::Revoked(_) => Code::Unauthenticated,
        ApiError::Exhausted(_) => Code::ResourceExhausted,
    };
    Status::new(code, e.to_string())
}

/// Who is calling, as trusted now: the handshake pinned the certificate,
/// but a roster change since may have revoked it, and a connection over
/// the per-peer limit is served only to say so.
fn caller<T>(req: &Request<T>, trust: &TrustStore) -> Result<ConnInfo, Status> {
    // Every connection this server sees passed the pinned handshake, which
    // attaches ConnInfo; its absence means a wiring bug, refused anyway.
    let who = req
        .extensions()
        .get::<ConnInfo>()
        .cloned()
        .ok_or_else(|| status(ApiError::Unauthenticated))?;
    if trust.get(&who.fingerprint).is_none() {
        return Err(status(ApiError::Revoked(who.peer.name)));
    }
    if let Some(why) = &who.over_limit {
        return Err(status(ApiError::Exhausted(why.clone())));
    }
    Ok(who)
}

/// A service any trusted member may call (health, reflection): checked
/// against the trust in force, like every other call.
pub(crate) fn trusted<S>(
    svc: S,
    trust: TrustStore,
) -> tonic::service::interceptor::InterceptedService<
    S,
    impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone,
> {
    tonic::service::interceptor::InterceptedService::new(svc, move |req: Request<()>| {
        caller(&req, &trust)?;
        Ok(req)
    })
}

pub(crate) struct PeerService {
    pub ctx: LinkContext,
    pub trust: TrustStore,
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type SyncStream = BoxStream<pb::PeerMessage>;

    async fn sync(
        &self,
        req: Request<Streaming<pb::PeerMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let who = caller(&req, &self.trust)?;
        let Some(id) = who.peer.node else {
            return Err(status(ApiError::NotAllowed(format!(
                "{} is an operator, not a node: operators use the Client service",
                who.peer.name
            ))));
        };
        let peer = LinkPeer {
            name: who.peer.name.clone(),
            id,
            inbound: true,
            address: who.remote.to_string(),
        };
        let (open, outbound) = link::open(self.ctx.clone(), peer).await.map_err(status)?;
        let ctx = self.ctx.clone();
        let name = who.peer.name.clone();
        let line = who.line.clone();
        let span = tracing::info_span!("link", peer = %name, address = %who.remote, dir = "in");
        tokio::spawn(
            async move {
                let actor = ctx.actor.clone();
                let why = link::read(ctx, open, name.clone(), req.into_inner(), line).await;
                tracing::info!(%why, "inbound link ended");
                let text = format!("link ended: {why}");
                let _ = actor.send(Command::PeerError { name, text }).await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// Client requests in flight per operator, bounded: one operator's script
/// cannot occupy the node. A permit is held for the whole call (for a
/// watch, as long as the stream is open).
pub(crate) struct InFlight {
    max: usize,
    per_caller: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            max,
            per_caller: Mutex::new(HashMap::new()),
        }
    }

    fn enter(&self, caller: &str) -> Result<OwnedSemaphorePermit, Status> {
        // Keyed by roster name, so the map is bounded by the roster.
        let sem = self
            .per_caller
            .lock()
            .expect("in-flight lock poisoned")
            .entry(caller.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
            .clone();
        sem.try_acquire_owned().map_err(|_| {
            status(ApiError::Exhausted(format!(
                "{caller} has {} requests in flight (limit {}); retry when one finishes",
                self.max, self.max
            )))
        })
    }
}

pub(crate) struct ClientService {
    pub actor: mpsc::Sender<Command>,
    pub key_len_max: usize,
    /// Keys and values in one `List` page, at most.
    pub page_bytes_max: usize,
    pub trust: TrustStore,
    pub in_flight: InFlight,
    pub sizes: crate::store::StoreSizes,
    pub blocking: super::Blocking,
}

impl ClientService {
    /// Checks the caller is an operator trusted now, and admits the call
    /// within its in-flight limit.
    fn operator<T>(&self, req: &Request<T>) -> Result<OwnedSemaphorePermit, Status> {
        self.operator_named(req).map(|(permit, _)| permit)
    }

    /// [`Self::operator`], also saying who the operator is (roster name).
    fn operator_named<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(OwnedSemaphorePermit, String), Status> {
        let who = caller(req, &self.trust)?;
        if who.peer.node.is_some() {
            return Err(status(ApiError::NotAllowed(format!(
                "{} is a node; the client service is for operators",
                who.peer.name
            ))));
        }
        let permit = self.in_flight.enter(&who.peer.name)?;
        Ok((permit, who.peer.name))
    }

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
        Ok(write_reply(&d))
    }
}

pub fn write_reply(d: &SignedDelta) -> pb::WriteReply {
    pb::WriteReply {
        author: d.author().0.to_vec(),
        seq: d.seq(),
        hash: d.hash().0.to_vec(),
    }
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
        let _permit = self.operator(&req)?;
        let r = req.into_inner();
        self.write(r.key, Op::Put, r.value).await.map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let _permit = self.operator(&req)?;
        let r = req.into_inner();
        self.write(r.key, Op::Delete, Vec::new())
            .await
            .map(Response::new)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        let _permit = self.operator(&req)?;
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
        let _permit = self.operator(&req)?;
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
                bytes_max: self.page_bytes_max,
                reply,
            })
            .await?;
        let next_after = match page.records.last() {
            Some(d) if page.more => d.key().to_owned(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListReply {
            records: page.records.iter().map(record).collect(),
            next_after,
        }))
    }

    type WatchStream = BoxStream<pb::Record>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self.operator(&req)?;
        let prefix = req.into_inner().prefix;
        self.check_key("prefix", &prefix)?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE_MAX);
        self.actor
            .send(Command::Watch { prefix, tx })
            .await
            .map_err(|_| status(ApiError::ShuttingDown))?;
        // The permit lives as long as the stream.
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |d| {
            let _held = &permit;
            Ok(record(&d))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn frontier(
        &self,
        req: Request<pb::FrontierRequest>,
    ) -> Result<Response<pb::FrontierReply>, Status> {
        let _permit = self.operator(&req)?;
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
                roster_version: stats.roster_version,
                ..Default::default()
            }),
            frontier: Some(crate::rpc::convert::pb_frontier(&stats.frontier)),
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let _permit = self.operator(&req)?;
        let s = super::status_snapshot(&self.actor, &self.sizes, self.blocking)
            .await
            .map_err(status)?;
        Ok(Response::new(super::status::pb::encode(&s)))
    }

    async fn quarantine(
        &self,
        req: Request<pb::QuarantineRequest>,
    ) -> Result<Response<pb::QuarantineReply>, Status> {
        let _permit = self.operator(&req)?;
        let r = req.into_inner();
        let limit = match r.limit as usize {
            0 => QUARANTINE_DEFAULT,
            n => n.min(QUARANTINE_MAX),
        };
        let view = self
            .ask(|reply| Command::Quarantine { limit, reply })
            .await?;
        Ok(Response::new(super::quarantine::reply(view, r.raw)))
    }

    async fn publish_roster(
        &self,
        req: Request<pb::Roster>,
    ) -> Result<Response<pb::PublishRosterReply>, Status> {
        let _permit = self.operator(&req)?;
        let bytes = req.into_inner().signed;
        let offer = self
            .ask(|reply| Command::PublishRoster { bytes, reply })
            .await?;
        let reply = match offer {
            RosterOffer::Adopted(c) => pb::PublishRosterReply {
                adopted: true,
                version: c.version,
                retracted: c.retracted,
                reason: String::new(),
            },
            RosterOffer::NotNewer { held, offered } => pb::PublishRosterReply {
                adopted: false,
                version: held,
                retracted: 0,
                reason: format!("the node already holds roster version {held} (offered {offered})"),
            },
            RosterOffer::Invalid(e) => {
                return Err(status(ApiError::BadRequest(format!("roster refused: {e}"))))
            }
            RosterOffer::Unsigned => {
                return Err(status(ApiError::BadRequest(
                    "this node adopts no rosters".into(),
                )))
            }
        };
        Ok(Response::new(reply))
    }

    async fn submit_report(
        &self,
        req: Request<pb::SubmitReportRequest>,
    ) -> Result<Response<pb::SubmitReportReply>, Status> {
        let (_permit, operator) = self.operator_named(&req)?;
        reports::submit(self, req.into_inner(), operator).await
    }

    async fn report_history(
        &self,
        req: Request<pb::ReportHistoryRequest>,
    ) -> Result<Response<pb::ReportHistoryReply>, Status> {
        let _permit = self.operator(&req)?;
        reports::history(self, req.into_inner()).await
    }

    async fn report_schema(
        &self,
        req: Request<pb::ReportSchemaRequest>,
    ) -> Result<Response<pb::ReportSchemaReply>, Status> {
        let _permit = self.operator(&req)?;
        reports::schema(self).await
    }

    async fn publish_report_schema(
        &self,
        req: Request<pb::PublishReportSchemaRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let _permit = self.operator(&req)?;
        reports::publish_schema(self, req.into_inner()).await
    }

    async fn aggregate_reports(
        &self,
        req: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateReply>, Status> {
        let _permit = self.operator(&req)?;
        reports::aggregate(self, req.into_inner()).await
    }

    async fn verify_aggregate(
        &self,
        req: Request<pb::VerifyAggregateRequest>,
    ) -> Result<Response<pb::VerifyAggregateReply>, Status> {
        let _permit = self.operator(&req)?;
        reports::verify(self, req.into_inner()).await
    }

    async fn report_receipts(
        &self,
        req: Request<pb::ReceiptsRequest>,
    ) -> Result<Response<pb::ReceiptsReply>, Status> {
        let _permit = self.operator(&req)?;
        reports::receipts(self, req.into_inner()).await
    }

    async fn approve_report(
        &self,
        req: Request<pb::ApproveReportRequest>,
    ) -> Result<Response<pb::ApproveReportReply>, Status> {
        let (_permit, operator) = self.operator_named(&req)?;
        reports::approve(self, req.into_inner(), operator).await
    }
}
