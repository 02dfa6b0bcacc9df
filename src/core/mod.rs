//! The sync core: data model, validation, conflict rule, frontiers and the
//! per-peer protocol, as pure state machines.
//!
//! Architecture invariant: nothing under `core` imports tokio, sled, tonic
//! or rustls, reads a clock or touches a socket or file. Time comes in as
//! `now_ms`; storage goes through [`store::Store`]. That is what lets the
//! same code run in a seeded, single-threaded simulation and in a node.

pub mod admit;
pub mod delta;
pub mod frontier;
pub mod held;
pub mod hlc;
pub mod holds;
pub mod ids;
pub mod keyspace;
pub mod merge;
pub mod pace;
pub mod progress;
pub mod rebuild;
pub mod replica;
pub mod report;
pub mod roster;
pub mod session;
pub mod signed_roster;
pub mod staging;
pub mod store;
pub mod units;
pub mod validate;
pub mod verify;

pub use admit::{Admission, Admitted};
pub use delta::{DeltaBody, Op, SignedDelta};
pub use frontier::{Frontier, FrontierDigest, Head, SeqRange};
pub use hlc::{Hlc, HlcClock};
pub use holds::{Holds, Scope};
pub use ids::{DeltaHash, NodeId};
pub use merge::RecordRef;
pub use progress::{Lag, Lags, PeerView, Progress};
pub use rebuild::{Announce, Rebuild};
pub use replica::{Counters, IngestReport, Page, Replica, RosterChange, RosterOffer, WriteError};
pub use roster::{Member, Role, Roster, Standing};
pub use session::{Note, PeerMsg, Reaction, Session};
pub use signed_roster::{RosterError, SignedRoster};
pub use store::{Commit, MemStore, Quarantined, Store};
pub use units::{Above, Place, Units};
pub use validate::{Evidence, Limits, Refusal};
