//! The standard gRPC health service (`grpc.health.v1`), driven by what the
//! node knows: SERVING while the store commits and the node accepts
//! writes; NOT_SERVING once a commit fails (until one succeeds again) and
//! from the moment shutdown begins.

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::rpc::pb;

/// The services a health check may name; "" is the whole node.
fn names() -> [&'static str; 3] {
    [
        "",
        pb::client_server::SERVICE_NAME,
        pb::peer_server::SERVICE_NAME,
    ]
}

/// Keeps the reporter in step with the store's health and shutdown.
pub(crate) fn follow(
    reporter: HealthReporter,
    mut store_ok: watch::Receiver<bool>,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let serving = *store_ok.borrow_and_update() && !*stopping.borrow_and_update();
            set(&reporter, serving).await;
            tokio::select! {
                r = store_ok.changed() => if r.is_err() { break },
                r = stopping.changed() => if r.is_err() { break },
            }
        }
        set(&reporter, false).await;
    })
}

pub(crate) async fn set(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in names() {
        reporter.set_service_status(name, status).await;
    }
}
