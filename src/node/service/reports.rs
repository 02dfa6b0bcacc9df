//! The report calls of the client service: wire fields checked and
//! converted, the work done by the actor (`actor/reports.rs`).

use tonic::{Response, Status};

use super::{status, write_reply, ClientService};
use crate::core::report::{self, document, Part, Period, Schema, Submission};
use crate::node::actor::{Command, ReportCmd, Scope};
use crate::node::ApiError;
use crate::rpc::pb;

/// Revisions per history call when the caller does not say, and at most.
const HISTORY_DEFAULT: usize = 20;
const HISTORY_MAX: usize = 1_000;
/// Longest region name accepted in a request (roster names are shorter).
const REGION_MAX: usize = 128;

fn bad(e: impl ToString) -> Status {
    status(ApiError::BadRequest(e.to_string()))
}

fn period(p: &str) -> Result<Period, Status> {
    p.parse().map_err(bad)
}

fn region(r: String) -> Result<String, Status> {
    if r.len() > REGION_MAX {
        return Err(bad(format!(
            "region or unit name longer than {REGION_MAX} bytes"
        )));
    }
    Ok(r)
}

/// An optional name: empty is none.
fn named(r: String) -> Result<Option<String>, Status> {
    (!r.is_empty()).then(|| region(r)).transpose()
}

/// A region or a unit, at most one; neither is `None`.
fn part(region: String, unit: String) -> Result<Option<Part>, Status> {
    match (named(region)?, named(unit)?) {
        (Some(_), Some(_)) => Err(bad("give a region or a unit, not both")),
        (Some(r), None) => Ok(Some(Part::Region(r))),
        (None, Some(u)) => Ok(Some(Part::Unit(u))),
        (None, None) => Ok(None),
    }
}

/// The breakdown as the core takes it: bounded before it is built, and
/// each figure given once.
fn categories(figures: Vec<pb::CategoryFigure>) -> Result<report::Categories, Status> {
    if figures.len() > report::METRICS_MAX * report::COMBOS_MAX {
        return Err(bad("more category figures than any schema defines"));
    }
    let mut out = report::Categories::new();
    for f in figures {
        let metric = out.entry(f.metric.clone()).or_default();
        if metric.insert(f.combo.clone(), f.value).is_some() {
            return Err(bad(format!(
                "{} {:?} is given twice",
                f.metric.chars().take(40).collect::<String>(),
                f.combo.chars().take(250).collect::<String>()
            )));
        }
    }
    Ok(out)
}

pub(super) async fn submit(
    svc: &ClientService,
    r: pb::SubmitReportRequest,
    operator: String,
) -> Result<Response<pb::SubmitReportReply>, Status> {
    let sub = Submission {
        region: named(r.region)?,
        unit: named(r.unit)?,
        period: r.period,
        metrics: r.metrics.into_iter().collect(),
        categories: categories(r.categories)?,
        notes: r.notes,
    };
    let (delta, report) = svc
        .ask(|reply| {
            Command::Report(ReportCmd::Submit {
                sub,
                operator,
                reply,
            })
        })
        .await?;
    Ok(Response::new(pb::SubmitReportReply {
        key: delta.key().to_owned(),
        revision: report.revision,
        write: Some(write_reply(&delta)),
        supersedes_seq: report.supersedes.map_or(0, |s| s.seq),
    }))
}

pub(super) async fn history(
    svc: &ClientService,
    r: pb::ReportHistoryRequest,
) -> Result<Response<pb::ReportHistoryReply>, Status> {
    let period = period(&r.period)?;
    let part = part(r.region, r.unit)?.ok_or_else(|| bad("give the region or unit"))?;
    let limit = match r.limit as usize {
        0 => HISTORY_DEFAULT,
        n => n.min(HISTORY_MAX),
    };
    let (revisions, note) = svc
        .ask(|reply| {
            Command::Report(ReportCmd::History {
                part,
                period,
                limit,
                reply,
            })
        })
        .await?;
    Ok(Response::new(pb::ReportHistoryReply {
        revisions: revisions
            .iter()
            .map(|d| pb::ReportRevision {
                author: d.author().0.to_vec(),
                seq: d.seq(),
                hash: d.hash().0.to_vec(),
                report: d.value().to_vec(),
            })
            .collect(),
        note: note.unwrap_or_default(),
    }))
}

pub(super) async fn schema(svc: &ClientService) -> Result<Response<pb::ReportSchemaReply>, Status> {
    let (schema, published) = svc
        .ask(|reply| Command::Report(ReportCmd::Schema { reply }))
        .await?;
    Ok(Response::new(pb::ReportSchemaReply {
        schema: schema.encode(),
        published,
    }))
}

pub(super) async fn publish_schema(
    svc: &ClientService,
    r: pb::PublishReportSchemaRequest,
) -> Result<Response<pb::WriteReply>, Status> {
    let schema = Schema::decode(&r.schema).map_err(bad)?;
    let d = svc
        .ask(|reply| Command::Report(ReportCmd::PublishSchema { schema, reply }))
        .await?;
    Ok(Response::new(write_reply(&d)))
}

pub(super) async fn aggregate(
    svc: &ClientService,
    r: pb::AggregateRequest,
) -> Result<Response<pb::AggregateReply>, Status> {
    let period = period(&r.period)?;
    let stale_after_ms = match r.stale_after_secs {
        0 => None,
        s => Some(s.saturating_mul(1000)),
    };
    let scope = match (part(r.region, r.unit)?, r.all) {
        (Some(_), true) => return Err(bad("give a region, a unit or all, not more")),
        (Some(p), false) => Scope::Part(p),
        (None, true) => Scope::All,
        (None, false) => Scope::Mine,
    };
    let document = svc
        .ask(|reply| {
            Command::Report(ReportCmd::Aggregate {
                period,
                stale_after_ms,
                scope,
                approved_only: r.approved_only,
                publish: r.publish,
                reply,
            })
        })
        .await?;
    Ok(Response::new(pb::AggregateReply {
        document: document.into_bytes(),
    }))
}

pub(super) async fn receipts(
    svc: &ClientService,
    r: pb::ReceiptsRequest,
) -> Result<Response<pb::ReceiptsReply>, Status> {
    let period = match r.period.as_str() {
        "" => None,
        p => Some(period(p)?),
    };
    let receipts = svc
        .ask(|reply| Command::Report(ReportCmd::Receipts { period, reply }))
        .await?;
    Ok(Response::new(pb::ReceiptsReply {
        receipts: serde_json::to_vec(&receipts).expect("receipts serialise"),
    }))
}

pub(super) async fn approve(
    svc: &ClientService,
    r: pb::ApproveReportRequest,
    operator: String,
) -> Result<Response<pb::ApproveReportReply>, Status> {
    let period = period(&r.period)?;
    let part = part(r.region, r.unit)?.ok_or_else(|| bad("give --region or --unit"))?;
    let expect = (r.revision > 0).then_some(r.revision);
    let approved = !r.withdraw;
    let (delta, a) = svc
        .ask(|reply| {
            Command::Report(ReportCmd::Approve {
                part,
                period,
                approved,
                expect,
                operator,
                reply,
            })
        })
        .await?;
    Ok(Response::new(pb::ApproveReportReply {
        key: delta.key().to_owned(),
        write: Some(write_reply(&delta)),
        report: Some(pb::WriteReply {
            author: a.report.author.0.to_vec(),
            seq: a.report.seq,
            hash: a.report.hash.0.to_vec(),
        }),
        revision: a.revision,
        approved: a.approved,
    }))
}

pub(super) async fn verify(
    svc: &ClientService,
    r: pb::VerifyAggregateRequest,
) -> Result<Response<pb::VerifyAggregateReply>, Status> {
    let part = part(r.region, r.unit)?;
    // Parsing and the signature check take time on a large document: off
    // the actor, which only checks a document that verified.
    let doc = r.document;
    let opened = (svc.blocking.run(move || document::open(&doc)))
        .await
        .map_err(|_| status(ApiError::ShuttingDown))?;
    let v = match opened {
        Ok(opened) => {
            svc.ask(|reply| {
                Command::Report(ReportCmd::Verify {
                    opened: Box::new(opened),
                    part,
                    reply,
                })
            })
            .await?
        }
        Err(e) => document::Verdict::unopened(part.as_ref(), &e),
    };
    Ok(Response::new(pb::VerifyAggregateReply {
        ok: v.ok(),
        region: v.region.clone().unwrap_or_default(),
        unit: v.unit.clone().unwrap_or_default(),
        period: v.period.clone().unwrap_or_default(),
        signer: v.signer.clone().unwrap_or_default(),
        checks: v
            .checks
            .into_iter()
            .map(|c| pb::Check {
                ok: c.ok,
                text: c.text,
            })
            .collect(),
    }))
}
