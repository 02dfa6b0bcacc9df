//! The admin HTTP port: Prometheus metrics at `/metrics`, the status page
//! at `/`, and the status as JSON at `/status.json`. Read-only (GET only;
//! anything else is 405) and with no authentication, so it listens on
//! loopback unless configured otherwise.

pub mod metrics;
pub mod page;
pub mod reports;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::actor::Command;
use super::status::NodeStatus;
use crate::store::StoreSizes;
pub use metrics::RpcMetrics;

#[derive(Clone)]
pub(crate) struct Admin {
    pub actor: mpsc::Sender<Command>,
    pub sizes: StoreSizes,
    pub blocking: super::Blocking,
    pub rpc: RpcMetrics,
}

/// Serves until `stop` changes.
pub(crate) fn serve(
    listener: TcpListener,
    admin: Admin,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/status.json", get(status_json))
        .route("/reports", get(reports_page))
        .with_state(admin);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    })
}

async fn snapshot(admin: &Admin) -> Result<NodeStatus, Response> {
    super::status_snapshot(&admin.actor, &admin.sizes, admin.blocking)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())
}

fn with_type(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn status_page(State(admin): State<Admin>) -> Response {
    match snapshot(&admin).await {
        Ok(s) => {
            let mut r = with_type(page::render(&s), "text/html; charset=utf-8");
            // Inline style only: no script, no frames, nothing fetched.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            );
            r
        }
        Err(r) => r,
    }
}

/// `/reports?period=2026-Q3`: the dashboard of a period (default: the
/// newest one any report is held for).
async fn reports_page(State(admin): State<Admin>, uri: axum::http::Uri) -> Response {
    let asked = (uri.query().unwrap_or_default().split('&'))
        .find_map(|kv| kv.strip_prefix("period="))
        .map(|p| p.parse::<crate::core::report::Period>());
    let period = match asked {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cmd = Command::Report(super::actor::ReportCmd::Dashboard { period, reply: tx });
    if admin.actor.send(cmd).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down").into_response();
    }
    match rx.await {
        Ok(Ok(d)) => {
            let mut r = with_type(reports::render(&d), "text/html; charset=utf-8");
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            );
            r
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down").into_response(),
    }
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic
/// text format otherwise.
async fn metrics(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match snapshot(&admin).await {
        Ok(s) => {
            let text = metrics::render(&s, &admin.rpc);
            let open = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            if open {
                with_type(
                    text,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                let classic = metrics::classic_text(&text);
                with_type(classic, "text/plain; version=0.0.4; charset=utf-8")
            }
        }
        Err(r) => r,
    }
}

async fn status_json(State(admin): State<Admin>) -> Response {
    match snapshot(&admin).await {
        Ok(s) => {
            let body = serde_json::to_string_pretty(&super::status::to_json(&s))
                .expect("JSON values serialise");
            with_type(body, "application/json")
        }
        Err(r) => r,
    }
}
