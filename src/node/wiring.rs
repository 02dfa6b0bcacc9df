//! Starting a node: the replica on its store, the actor that owns it, the
//! gRPC server behind the door of pre-authentication places, the admin
//! port, the anti-entropy ticker and one dialer per configured peer.
//!
//! ```text
//!   listener ─> door (handshakes, bounded) ─> tonic: Peer, Client, health, reflection
//!                                                  │
//!   dialers ─> links ─────────────────────────────┼─ Command ─> Actor
//!   anti-entropy, admin port ──────────────────────┘  (bounded)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::actor::{self, Actor, Command};
use super::link::LinkContext;
use super::setup::{check_identity, trust_from};
use super::{admin, dial, health, net, service};
use super::{Blocking, Env, Listener, NodeHandle, Setup, StartError};
use crate::config::NodeConfig;
use crate::core::{Frontier, Limits, NodeId, Replica};
use crate::identity::tls::{self, TrustStore};
use crate::rpc::pb;
use crate::store::{KvStore, StoreSizes};

use tonic_health::pb::health_server::{Health, HealthServer};

/// Commands queued to the actor before senders wait.
const ACTOR_QUEUE_MAX: usize = 256;

/// What the rest of a node is wired around: the actor, and what links,
/// services and dialers share.
struct Core {
    config: NodeConfig,
    id: NodeId,
    trust: TrustStore,
    server_tls: Arc<rustls::ServerConfig>,
    client_tls: Arc<rustls::ClientConfig>,
    ctx: LinkContext,
    actor_task: JoinHandle<Replica<KvStore>>,
    frontier: watch::Receiver<Arc<Frontier>>,
    store_ok: watch::Receiver<bool>,
    sizes: StoreSizes,
    conn_refusals: net::ConnRefusals,
    env: Env,
}

/// Starts the node in `env`, accepting on `listener`: a process's machine,
/// or the simulation's.
pub fn start_in(
    setup: Setup,
    listener: Box<dyn Listener>,
    env: Env,
) -> Result<NodeHandle, StartError> {
    tls::install_crypto_provider();
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: setup.config.listen,
        source,
    })?;
    let core = open(setup, env)?;
    let (shutdown, _) = watch::channel(false);
    let rpc_metrics = admin::RpcMetrics::default();
    let (health, health_svc) = tonic_health::server::health_reporter();
    let mut background = vec![health::follow(
        health.clone(),
        core.store_ok.clone(),
        shutdown.subscribe(),
    )];
    let (server, accept_task) = serve(
        &core,
        listener,
        health_svc,
        &rpc_metrics,
        shutdown.subscribe(),
    );
    background.push(accept_task);
    let admin_addr = if core.config.admin.enabled {
        let state = admin::Admin {
            actor: core.ctx.actor.clone(),
            sizes: core.sizes.clone(),
            rpc: rpc_metrics,
            blocking: core.env.blocking,
        };
        let (addr, task) = serve_admin(core.config.admin.listen, state, shutdown.subscribe())?;
        background.push(task);
        Some(addr)
    } else {
        None
    };
    background.push(tokio::spawn(anti_entropy(
        core.ctx.actor.clone(),
        core.config.sync.anti_entropy(),
        shutdown.subscribe(),
    )));
    background.extend(dialers(&core, &shutdown));
    let c = &core.config;
    tracing::info!(name = %c.name, %addr, admin = ?admin_addr, peers = c.peers.len(), "node started");
    Ok(NodeHandle {
        name: core.config.name.clone(),
        id: core.id,
        addr,
        admin_addr,
        actor: core.ctx.actor.clone(),
        frontier: core.frontier,
        roster: core.ctx.roster.clone(),
        conn_refusals: core.conn_refusals,
        sizes: core.sizes,
        blocking: core.env.blocking,
        shutdown,
        health,
        background,
        server,
        actor_task: core.actor_task,
    })
}

/// Opens the replica on the store, checks the node is who the roster in
/// force says, and starts the actor.
fn open(setup: Setup, env: Env) -> Result<Core, StartError> {
    let now_ms = || env.clock.now_ms();
    let Setup {
        config,
        key,
        tls: identity,
        roster,
        mut store,
        rebuild,
        rebuild_from,
    } = setup;
    // Before anything is signed: a log that came back shorter than it was
    // refuses the start.
    store.own_log(key.id())?;
    if rebuild {
        store.set_rebuilding(true)?;
    }
    let rebuilding = store.rebuilding()?;
    let limits: Limits = config.core_limits();
    let sizes = store.sizes();
    let (mut replica, stored_problem) =
        Replica::open_signed(store, roster, limits.clone(), now_ms())?;
    replica.set_holds(key.id(), config.sync.holds);
    if let Some(e) = stored_problem {
        tracing::error!(error = %e, "the roster in the store does not verify; using the roster file");
    }
    let in_force = replica
        .signed_roster()
        .expect("opened with a signed roster");
    check_identity(&config.name, &key, &identity, in_force)?;
    let trust = trust_from(replica.roster());
    let server_tls = Arc::new(tls::server_config(&identity, &trust)?);
    let client_tls = Arc::new(tls::client_config(&identity, &trust)?);

    let refusals = Arc::new(super::link_info::MessageRefusals::default());
    let conn_refusals = net::ConnRefusals::default();
    let hops = Arc::new(super::hops::Board::default());
    let wiring = actor::Wiring {
        name: config.name.clone(),
        hops: hops.clone(),
        signer: key.signing_key().clone(),
        batch_deltas_max: config.sync.batch_deltas_max,
        batch_bytes_max: config.sync.batch_bytes_max,
        // More in flight than a peer admits at once (its ingest budget, as
        // ours) would only wait in its socket.
        window_bytes_max: (config.limits.ingest_bytes_max).max(config.sync.batch_bytes_max),
        trust: trust.clone(),
        refusals: refusals.clone(),
        conn_refusals: conn_refusals.clone(),
        dialed: (config.peers.iter())
            .map(|p| (p.name.clone(), p.address.clone()))
            .collect(),
        stall_after_ms: config.sync.stall_after_secs.saturating_mul(1000),
        report_stale_after_ms: config.reports.stale_after_secs.saturating_mul(1000),
        started_ms: now_ms(),
        clock: env.clock.clone(),
        rebuild: rebuilding
            .then(|| actor::rebuild_from(&config, &rebuild_from, replica.roster(), key.id())),
    };
    if let Some(r) = &wiring.rebuild {
        let roster = replica.roster();
        let names: Vec<&str> = (r.waiting_for())
            .filter_map(|id| roster.member(id).map(|m| m.name.as_str()))
            .collect();
        tracing::warn!(waiting_for = ?names, "rebuilding from peers: local writes wait until this node has synced with each");
    }
    let (store_ok, store_ok_rx) = watch::channel(true);
    let (actor, frontier, roster_rx) = Actor::new(replica, wiring, store_ok);
    let (actor_tx, actor_rx) = mpsc::channel(ACTOR_QUEUE_MAX);
    let actor_task = match env.blocking {
        Blocking::Threads => tokio::task::spawn_blocking(move || actor.run(actor_rx)),
        Blocking::Inline => tokio::spawn(actor.run_async(actor_rx)),
    };
    let ctx = LinkContext {
        actor: actor_tx,
        frontier: frontier.clone(),
        roster: roster_rx,
        limits,
        queue_max: config.limits.link_queue_max,
        batch_deltas_max: config.limits.batch_deltas_max,
        refusals,
        ingest_budget: Arc::new(tokio::sync::Semaphore::new(config.limits.ingest_bytes_max)),
        ingest_bytes_max: config.limits.ingest_bytes_max,
        message_bytes_max: config.limits.message_bytes_max,
        compress: config.sync.compress,
        lan_rtt_ms: config.sync.lan_rtt_ms,
        keepalive: config.sync.keepalive(),
        keepalive_timeout: config.sync.keepalive_timeout(),
        staging: Arc::new(std::sync::Mutex::new(staging(&config.limits))),
        hops,
        rate_caps: Arc::new(
            (config.peers.iter())
                .filter(|p| p.rate_kbit.is_some())
                .map(|p| (p.name.clone(), p.rate_bytes_per_sec()))
                .collect(),
        ),
        clock: env.clock.clone(),
        blocking: env.blocking,
    };
    Ok(Core {
        id: key.id(),
        config,
        trust,
        server_tls,
        client_tls,
        ctx,
        actor_task,
        frontier,
        store_ok: store_ok_rx,
        sizes,
        conn_refusals,
        env,
    })
}

/// The gRPC server: the door and TLS in front, then the peer and client
/// services, health and reflection (v1 and v1alpha), each checking its
/// caller. Returns the server task and the accept loop's.
fn serve(
    core: &Core,
    listener: Box<dyn Listener>,
    health_svc: HealthServer<impl Health>,
    rpc_metrics: &admin::RpcMetrics,
    mut stop: watch::Receiver<bool>,
) -> (
    JoinHandle<Result<(), tonic::transport::Error>>,
    JoinHandle<()>,
) {
    let (config, trust) = (&core.config, &core.trust);
    let l = &config.limits;
    let actor = core.ctx.actor.clone();
    let on_member_refused: net::OnMemberRefused = Arc::new(move |name, text| {
        // Never waits: a full queue loses the note, not the count.
        let _ = actor.try_send(Command::PeerRefused { name, text });
    });
    let incoming = net::Incoming {
        tls: core.server_tls.clone(),
        trust: trust.clone(),
        limits: net::ListenLimits {
            door: net::DoorLimits {
                pending_max: l.handshakes_max,
                per_source_max: l.handshakes_per_source_max,
            },
            hello_timeout: Duration::from_millis(l.hello_timeout_ms),
            handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
            per_member: l.conns_per_peer_max,
        },
        refusals: core.conn_refusals.clone(),
        on_member_refused,
    };
    let (conns, accept_task) = net::incoming(listener, incoming);
    let message_max = l.message_bytes_max;
    let peer_svc = pb::peer_server::PeerServer::new(service::PeerService {
        ctx: core.ctx.clone(),
        trust: trust.clone(),
    })
    .max_decoding_message_size(message_max)
    .max_encoding_message_size(message_max);
    let client_svc = pb::client_server::ClientServer::new(service::ClientService {
        actor: core.ctx.actor.clone(),
        key_len_max: core.ctx.limits.key_len_max,
        page_bytes_max: service::page_bytes_max(message_max),
        trust: trust.clone(),
        in_flight: service::InFlight::new(l.requests_in_flight_max),
        sizes: core.sizes.clone(),
        blocking: core.env.blocking,
    })
    .max_decoding_message_size(message_max)
    .max_encoding_message_size(message_max);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::rpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = (reflection().build_v1()).expect("the built-in descriptor sets are valid");
    // Older tools (grpcurl 1.8, grpcio-reflection) speak only v1alpha.
    let reflection_v1alpha =
        (reflection().build_v1alpha()).expect("the built-in descriptor sets are valid");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(admin::metrics::RpcTiming(rpc_metrics.clone()))
            .initial_stream_window_size(Some(window(message_max)))
            .initial_connection_window_size(Some(window(message_max)))
            .http2_keepalive_interval(Some(config.sync.keepalive()))
            .http2_keepalive_timeout(Some(net::h2_keepalive_timeout(&config.sync)))
            .trace_fn(|req| tracing::info_span!("rpc", method = %req.uri().path()))
            .add_service(peer_svc)
            .add_service(client_svc)
            .add_service(service::trusted(health_svc, trust.clone()))
            .add_service(service::trusted(reflection_v1, trust.clone()))
            .add_service(service::trusted(reflection_v1alpha, trust.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(conns),
                async move {
                    let _ = stop.changed().await;
                },
            ),
    );
    (server, accept_task)
}

/// The admin HTTP port: metrics, the status page, status JSON.
fn serve_admin(
    listen: SocketAddr,
    state: admin::Admin,
    shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), StartError> {
    let listener = bind_now(listen)?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "admin port (metrics, status page) is open beyond loopback; it has no authentication");
    }
    Ok((addr, admin::serve(listener, state, shutdown)))
}

/// One task per configured peer, each with its own jitter.
fn dialers(core: &Core, shutdown: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
    let config = &core.config;
    (config.peers.iter())
        .map(|peer| {
            let dialer = dial::Dialer {
                ctx: core.ctx.clone(),
                peer: peer.clone(),
                tls: core.client_tls.clone(),
                trust: core.trust.clone(),
                sync: config.sync.clone(),
                message_bytes_max: config.limits.message_bytes_max,
                net: core.env.net.clone(),
                seed: core.env.seed.map(|s| s ^ fnv(&peer.name)),
            };
            tokio::spawn(dialer.run(shutdown.subscribe()))
        })
        .collect()
}

/// Binds from synchronous code inside the runtime (`start_on` is not async).
fn bind_now(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = |source| StartError::Listen { addr, source };
    let std = std::net::TcpListener::bind(addr).map_err(listen)?;
    std.set_nonblocking(true).map_err(listen)?;
    TcpListener::from_std(std).map_err(listen)
}

/// A stable hash of a name (FNV-1a), to give each of a node's dialers its
/// own jitter from one seed.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// HTTP/2 flow-control window: room for about two of the largest messages,
/// so a batch streams without waiting for window updates (h2's default of
/// 64 KiB would stall every batch several times), while a slow reader
/// still holds back a fast sender.
pub(crate) fn window(message_bytes_max: usize) -> u32 {
    (2 * message_bytes_max).min(i32::MAX as usize) as u32
}

async fn anti_entropy(
    actor: mpsc::Sender<Command>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; links open with a digest anyway
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if actor.send(Command::AntiEntropy).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Where deltas received in pieces wait to be whole: room for four of the
/// largest a delta may be (`limits.value_bytes_max` plus its key and
/// header), 4 MiB by default.
fn staging(l: &crate::config::LimitsConfig) -> crate::core::staging::Staging {
    let delta_max = l.delta_bytes_max();
    crate::core::staging::Staging::new(delta_max, 4 * delta_max)
}
