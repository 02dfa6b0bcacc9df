//! fedsync: federated synchronisation of Ed25519-signed record deltas.
//!
//! See `ARCHITECTURE.md` for the map. In short: [`core`] is the pure sync
//! core; [`store`] persists it on sled; [`identity`] owns key files and TLS;
//! [`rpc`] is the wire format; [`node`] is the runtime; [`config`] reads a
//! node's TOML; [`client`] is an operator's connection; [`local`] writes a
//! whole federation into one directory (demo, tests, benchmarks).

pub mod bundle;
pub mod client;
pub mod config;
pub mod core;
pub mod identity;
pub mod local;
pub mod node;
pub mod rpc;
pub mod store;
pub mod testkit;
