//! The gRPC edge: generated prost/tonic types, and their conversion to and
//! from domain types. Nothing past this module sees a prost type.

pub mod convert;
pub mod fragment;
pub mod pack;

/// Generated from `proto/fedsync/v1/fedsync.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("fedsync.v1");
}

/// The encoded descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fedsync_descriptor");
