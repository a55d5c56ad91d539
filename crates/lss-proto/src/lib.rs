//! Generated protobuf messages and gRPC stubs for `lss.LightningStorage`.
//!
//! This crate is only the wire shape: it knows nothing about MACs, versions or
//! auth. Those rules live in `lss-core`; `lssd` and `lss-client` translate between
//! these messages and core types at their edges.
#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

tonic::include_proto!("lss");

/// The gRPC method paths, for logs and raw-request tests.
pub mod paths {
    /// `/lss.LightningStorage/Ping`
    pub const PING: &str = "/lss.LightningStorage/Ping";
    /// `/lss.LightningStorage/Info`
    pub const INFO: &str = "/lss.LightningStorage/Info";
    /// `/lss.LightningStorage/Put`
    pub const PUT: &str = "/lss.LightningStorage/Put";
    /// `/lss.LightningStorage/Get`
    pub const GET: &str = "/lss.LightningStorage/Get";
}
