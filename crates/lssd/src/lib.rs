//! `lssd`, Lightkeeper's Lightning Storage Server.
//!
//! The binary (`main.rs`) reads configuration, loads the server key and opens
//! the store; this library holds what it runs: the gRPC [`service`], the one
//! place errors become gRPC statuses ([`status`]), the server key file
//! ([`key_file`]) and [`config`]. Tests use [`serve`] directly to run a server
//! on a random port in-process.
//!
//! Only this crate knows `tonic::Status`: `lss-core` decides, `lss-store`
//! stores, and this crate translates both to the wire.

pub mod config;
pub mod key_file;
pub mod service;
pub mod status;

use std::future::Future;

use lss_core::{Limits, ServerKey};
use lss_store::Store;
use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};

/// Serves `lss.LightningStorage` on `listener` until `shutdown` resolves, then
/// stops accepting and waits for in-flight requests (so an acknowledged put
/// has always been committed).
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: S,
    key: ServerKey,
    limits: Limits,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .layer(status::request_limit_layer())
        .add_service(service::LssService::new(store, key, limits).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
