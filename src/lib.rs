//! fedsync: federated synchronisation of Ed25519-signed record deltas.
//!
//! See `ARCHITECTURE.md` for the map. In short: [`core`] is the pure sync
//! core; [`store`] persists it on sled; [`identity`] owns key files.

pub mod core;
pub mod identity;
pub mod rpc;
pub mod store;
pub mod testkit;
