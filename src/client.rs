//! An operator's connection to a node's `Client` service over mutual TLS:
//! what the CLI, the demo and the tests use. Wire types stay inside; callers
//! get domain values and one-line errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::config::SyncConfig;
use crate::core::report::{DeltaRef, Part, Report, Schema, Submission};
use crate::core::{Frontier, FrontierDigest, NodeId};
use crate::identity::read_roster;
use crate::identity::tls::{self, TlsIdentity, TrustStore};
use crate::node::{net, trust_from};

/// The largest message a node may be configured to send or accept
/// (`limits.message_bytes_max` is at most 64 MiB).
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
use crate::rpc::{convert, pb};

pub use pb::Record;

/// `client.toml`: where an operator's CLI connects and with what.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The node to talk to, `host:port`.
    pub connect: String,
    /// The federation public key (64 hex digits): verifies the roster.
    pub federation: String,
    /// The signed roster, which pins every node's certificate.
    pub roster: PathBuf,
    /// The operator's certificate and key (PEM), listed in the roster.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl ClientConfig {
    /// Reads a `client.toml`; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<ClientConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("client config {}: {e}", path.display()))?;
        let mut c: ClientConfig = toml::from_str(&text)
            .map_err(|e| format!("client config {}: {}", path.display(), e.message()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.roster, &mut c.tls_cert, &mut c.tls_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }
}

/// A connected operator client.
pub struct Client {
    inner: pb::client_client::ClientClient<tonic::transport::Channel>,
}

impl Client {
    /// Connects with the files a `client.toml` names.
    pub fn from_config(c: &ClientConfig) -> Result<Client, String> {
        let federation = NodeId::from_hex(&c.federation)
            .map_err(|e| format!("federation key {:?}: {e}", c.federation))?;
        let roster = read_roster(&c.roster, &federation).map_err(|e| e.to_string())?;
        let me = TlsIdentity::load(&c.tls_cert, &c.tls_key).map_err(|e| e.to_string())?;
        Client::connect(&c.connect, &me, trust_from(roster.roster()))
    }

    /// Connects to `address` as `me`, accepting only a node `trust` pins.
    /// The connection is made by the first call.
    pub fn connect(address: &str, me: &TlsIdentity, trust: TrustStore) -> Result<Client, String> {
        tls::install_crypto_provider();
        let config = tls::client_config(me, &trust).map_err(|e| e.to_string())?;
        let channel = net::connect(
            Arc::new(crate::node::env::Tcp),
            address.to_owned(),
            None,
            Arc::new(config),
            trust,
            SyncConfig::default(),
            crate::config::LimitsConfig::default().message_bytes_max,
        )?
        .0;
        // The node bounds what it sends; the largest a node may be
        // configured for is accepted here.
        let inner = pb::client_client::ClientClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        Ok(Client { inner })
    }

    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<pb::WriteReply, String> {
        let req = pb::PutRequest {
            key: key.to_owned(),
            value: value.to_vec(),
        };
        self.inner
            .put(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    pub async fn delete(&mut self, key: &str) -> Result<pb::WriteReply, String> {
        let req = pb::DeleteRequest {
            key: key.to_owned(),
        };
        self.inner
            .delete(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// The record, or `None` when the key is absent or deleted.
    pub async fn get(&mut self, key: &str) -> Result<Option<Record>, String> {
        let req = pb::GetRequest {
            key: key.to_owned(),
        };
        match self.inner.get(req).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(err(s)),
        }
    }

    /// Waits until `key` has a value (watching, not polling) and returns it.
    pub async fn get_wait(&mut self, key: &str) -> Result<Record, String> {
        // Watch first, then read: a write landing in between is seen by one
        // of the two.
        let req = pb::WatchRequest {
            prefix: key.to_owned(),
        };
        let mut changes = self.inner.watch(req).await.map_err(err)?.into_inner();
        if let Some(r) = self.get(key).await? {
            return Ok(r);
        }
        while let Some(change) = changes.next().await {
            let r = change.map_err(err)?;
            if r.key == key && !r.deleted {
                return Ok(r);
            }
        }
        Err("the node ended the watch".into())
    }

    /// Every live record under `prefix`, following pages to the end.
    pub async fn list(&mut self, prefix: &str, limit: usize) -> Result<Vec<Record>, String> {
        let mut out = Vec::new();
        let mut after = String::new();
        while out.len() < limit {
            let req = pb::ListRequest {
                prefix: prefix.to_owned(),
                after: after.clone(),
                limit: (limit - out.len()).min(1_000) as u32,
            };
            let page = self.inner.list(req).await.map_err(err)?.into_inner();
            out.extend(page.records);
            if page.next_after.is_empty() {
                break;
            }
            after = page.next_after;
        }
        Ok(out)
    }

    /// The node's newest `limit` quarantine entries (0: the node's default).
    pub async fn quarantine(
        &mut self,
        limit: u32,
        raw: bool,
    ) -> Result<pb::QuarantineReply, String> {
        let req = pb::QuarantineRequest { limit, raw };
        self.inner
            .quarantine(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// Hands the node a signed roster, which it adopts if newer and spreads.
    pub async fn publish_roster(
        &mut self,
        signed: Vec<u8>,
    ) -> Result<pb::PublishRosterReply, String> {
        self.inner
            .publish_roster(pb::Roster { signed })
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// The node's status: peers (worst first), authors, totals.
    pub async fn status(&mut self) -> Result<crate::node::status::NodeStatus, String> {
        let r = self
            .inner
            .status(pb::StatusRequest {})
            .await
            .map_err(err)?
            .into_inner();
        crate::node::status::pb::decode(r).map_err(|e| format!("node sent a bad status: {e}"))
    }

    /// Submits the node's region's or unit's report; durable on return.
    pub async fn submit_report(
        &mut self,
        sub: &Submission,
    ) -> Result<pb::SubmitReportReply, String> {
        let req = pb::SubmitReportRequest {
            region: sub.region.clone().unwrap_or_default(),
            period: sub.period.clone(),
            metrics: sub.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            notes: sub.notes.clone(),
            unit: sub.unit.clone().unwrap_or_default(),
            categories: (sub.categories.iter())
                .flat_map(|(metric, figures)| {
                    figures.iter().map(|(combo, &value)| pb::CategoryFigure {
                        metric: metric.clone(),
                        combo: combo.clone(),
                        value,
                    })
                })
                .collect(),
        };
        self.inner
            .submit_report(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// A region's or unit's report for `period` and its earlier revisions,
    /// newest first (each parsed, or why it could not be), and why the
    /// history stops early if it does.
    pub async fn report_history(
        &mut self,
        part: &Part,
        period: &str,
        limit: u32,
    ) -> Result<(Vec<Revision>, Option<String>), String> {
        let (region, unit) = names(Some(part));
        let req = pb::ReportHistoryRequest {
            region,
            unit,
            period: period.to_owned(),
            limit,
        };
        let r = self
            .inner
            .report_history(req)
            .await
            .map_err(err)?
            .into_inner();
        let mut out = Vec::with_capacity(r.revisions.len());
        for rev in r.revisions {
            let id =
                |b: &[u8]| <[u8; 32]>::try_from(b).map_err(|_| "node sent a bad id".to_string());
            out.push(Revision {
                at: DeltaRef {
                    author: NodeId(id(&rev.author)?),
                    seq: rev.seq,
                    hash: crate::core::DeltaHash(id(&rev.hash)?),
                },
                report: serde_json::from_slice(&rev.report).map_err(|e| e.to_string()),
            });
        }
        Ok((out, (!r.note.is_empty()).then_some(r.note)))
    }

    /// The report schema in force at the node, and whether HQ published
    /// it (else the default set applies).
    pub async fn report_schema(&mut self) -> Result<(Schema, bool), String> {
        let r = self
            .inner
            .report_schema(pb::ReportSchemaRequest {})
            .await
            .map_err(err)?
            .into_inner();
        let schema = Schema::decode(&r.schema).map_err(|e| format!("node sent {e}"))?;
        Ok((schema, r.published))
    }

    /// Publishes the federation's report schema (at an HQ node).
    pub async fn publish_report_schema(
        &mut self,
        schema: &Schema,
    ) -> Result<pb::WriteReply, String> {
        let req = pb::PublishReportSchemaRequest {
            schema: schema.encode(),
        };
        self.inner
            .publish_report_schema(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// The node's signed aggregate of `period`, as the document it signed.
    /// `stale_after_secs` 0 keeps the node's configured age. `scope`: a
    /// part and what is below it; `None` the node's own (HQ's is the whole
    /// federation); `all` the whole federation at any node.
    pub async fn aggregate_reports(
        &mut self,
        period: &str,
        stale_after_secs: u64,
        scope: Option<&Part>,
        all: bool,
        approved_only: bool,
    ) -> Result<String, String> {
        let (region, unit) = names(scope);
        let req = pb::AggregateRequest {
            period: period.to_owned(),
            stale_after_secs,
            region,
            unit,
            all,
            approved_only,
            publish: false,
        };
        self.aggregate(req).await
    }

    /// The signed document the node returns for `req`.
    async fn aggregate(&mut self, req: pb::AggregateRequest) -> Result<String, String> {
        let r = (self.inner.aggregate_reports(req))
            .await
            .map_err(err)?
            .into_inner();
        String::from_utf8(r.document).map_err(|_| "node sent a document that is not UTF-8".into())
    }

    /// At HQ: aggregates `period` over the federation and publishes the
    /// signed document where every node's receipts read it.
    pub async fn publish_aggregate(
        &mut self,
        period: &str,
        approved_only: bool,
    ) -> Result<String, String> {
        let req = pb::AggregateRequest {
            period: period.to_owned(),
            approved_only,
            publish: true,
            ..Default::default()
        };
        self.aggregate(req).await
    }

    /// Receipts for the node's own reports (one period's, or all), as the
    /// JSON the node sent (a list of `core::report::receipt::Receipt`).
    pub async fn report_receipts(
        &mut self,
        period: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, String> {
        let req = pb::ReceiptsRequest {
            period: period.unwrap_or_default().to_owned(),
        };
        let r = self
            .inner
            .report_receipts(req)
            .await
            .map_err(err)?
            .into_inner();
        serde_json::from_slice(&r.receipts)
            .map_err(|e| format!("node sent unreadable receipts: {e}"))
    }

    /// Approves `part`'s current report for `period` (or withdraws the
    /// approval); `revision`, when given, must be the current one.
    pub async fn approve_report(
        &mut self,
        part: &Part,
        period: &str,
        withdraw: bool,
        revision: Option<u32>,
    ) -> Result<pb::ApproveReportReply, String> {
        let (region, unit) = names(Some(part));
        let req = pb::ApproveReportRequest {
            period: period.to_owned(),
            region,
            unit,
            withdraw,
            revision: revision.unwrap_or(0),
        };
        self.inner
            .approve_report(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// Has the node check a signed aggregate against its log (`part`
    /// `None`: the node's own region or unit).
    pub async fn verify_aggregate(
        &mut self,
        document: &[u8],
        part: Option<&Part>,
    ) -> Result<pb::VerifyAggregateReply, String> {
        let (region, unit) = names(part);
        let req = pb::VerifyAggregateRequest {
            document: document.to_vec(),
            region,
            unit,
        };
        self.inner
            .verify_aggregate(req)
            .await
            .map(|r| r.into_inner())
            .map_err(err)
    }

    /// The node's name, id, frontier digest and frontier.
    pub async fn frontier(&mut self) -> Result<(String, NodeId, FrontierDigest, Frontier), String> {
        let r = self
            .inner
            .frontier(pb::FrontierRequest {})
            .await
            .map_err(err)?
            .into_inner();
        let bad = |e: convert::ProtoError| format!("node sent a bad frontier: {e}");
        let node: [u8; 32] = r
            .node
            .as_slice()
            .try_into()
            .map_err(|_| "bad node id".to_string())?;
        let digest = convert::digest(&r.digest.unwrap_or_default()).map_err(bad)?;
        let frontier = convert::frontier(r.frontier.unwrap_or_default()).map_err(bad)?;
        Ok((r.name, NodeId(node), digest, frontier))
    }
}

/// One revision of a report, as a node's history returned it.
#[derive(Clone, Debug)]
pub struct Revision {
    pub at: DeltaRef,
    /// The stored report, or why it could not be read.
    pub report: Result<Report, String>,
}

/// A status as one line an operator can act on.
fn err(s: tonic::Status) -> String {
    use std::error::Error;
    match s.source() {
        // A transport failure: its cause (refused, TLS alert, …) is in the
        // source chain, and the status message only says "transport error".
        Some(cause) => format!("connection failed: {}", net::error_chain(cause)),
        None => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// A part as the wire's pair of names; empty is none.
fn names(part: Option<&Part>) -> (String, String) {
    match part {
        Some(Part::Region(r)) => (r.clone(), String::new()),
        Some(Part::Unit(u)) => (String::new(), u.clone()),
        None => (String::new(), String::new()),
    }
}
