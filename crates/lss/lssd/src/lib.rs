//! `lssd`, Lightkeeper's Lightning Storage Server.
//!
//! The binary (`main.rs`) reads configuration, loads the server key, opens
//! the [`backend`] and serves, or runs a data command (export, import, copy);
//! this library holds what it runs: the gRPC [`service`], the one place errors
//! become gRPC statuses ([`status`]), the server key file ([`key_file`]),
//! [`config`] and the [`backend`] dispatch. Tests use [`serve`] directly to run a server
//! on a random port in-process.
//!
//! Only this crate knows `tonic::Status`: `lss-core` decides, `lss-store`
//! stores, and this crate translates both to the wire.

pub mod auth;
pub mod backend;
pub mod config;
pub mod inflight;
pub mod key_file;
pub mod service;
pub mod status;

use std::future::Future;
use std::time::Duration;

use lss_core::{Limits, ServerKey};
use lss_store::Store;
use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};

/// How long a shutdown waits for clients to finish and close their
/// connections before the server stops anyway. A put whose client is cut off
/// this way is still committed or not at all: the store finishes every put it
/// has started, only the reply is lost, as with any network failure.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `lss.LightningStorage` on `listener` until `shutdown` resolves, then
/// stops accepting and waits, at most [`SHUTDOWN_GRACE`], for in-flight
/// requests and open connections (so an acknowledged put has always been
/// committed, and an idle or stalled client cannot hold the shutdown up).
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: S,
    key: ServerKey,
    limits: Limits,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // tonic's own tcp_nodelay applies only to listeners it binds itself; on
    // our listener each accepted socket is set here. Without it, a reply
    // written in two segments waits for the client's delayed ACK (~40 ms).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            accepted.inspect(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            })
        },
    );
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let (lss, extensions) = service::LssService::new(store, key, limits).into_servers();
    let server = builder
        .layer(status::request_limit_layer())
        .add_service(lss)
        .add_service(extensions)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            let _ = stopping.send(());
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    }
}
