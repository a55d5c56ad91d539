//! Generated protobuf messages and gRPC stubs for `lss.LightningStorage`, and
//! for Lightkeeper's own extensions in [`lightkeeper`] (`GetStream`).
//!
//! This crate is only the wire shape: it knows nothing about MACs, versions or
//! auth. Those rules live in `lss-core`; the `From` impls below are the one
//! place where wire and core entries convert.
#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

tonic::include_proto!("lss");

/// The encoded `FileDescriptorSet` of `lss.proto` and `lightkeeper.proto`,
/// for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lss_descriptor.bin"));

/// The path by which the generated `lightkeeper` code names `lss` types.
mod lss {
    pub(crate) use super::{Attestation, GetRequest, KeyValue};
}

/// `lightkeeper.LightkeeperStorage`: extensions served beside the LSS service.
pub mod lightkeeper {
    tonic::include_proto!("lightkeeper");
}

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
    /// `/lightkeeper.LightkeeperStorage/GetStream`
    pub const GET_STREAM: &str = "/lightkeeper.LightkeeperStorage/GetStream";
}

/// Wire entry from a core entry (moves the buffers, no copy).
impl From<lss_core::KeyValue> for KeyValue {
    fn from(kv: lss_core::KeyValue) -> Self {
        KeyValue {
            key: kv.key,
            version: kv.version,
            value: kv.value,
        }
    }
}

/// Core entry from a wire entry (moves the buffers, no copy).
impl From<KeyValue> for lss_core::KeyValue {
    fn from(kv: KeyValue) -> Self {
        lss_core::KeyValue {
            key: kv.key,
            version: kv.version,
            value: kv.value,
        }
    }
}
