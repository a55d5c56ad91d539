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

pub mod access;
pub mod auth;
pub mod backend;
pub mod config;
pub mod conn;
pub mod disk;
pub mod inflight;
pub mod key_file;
pub mod ledger;
pub mod metrics;
pub mod preauth;
pub mod service;
pub mod status;

use std::future::Future;
use std::time::Duration;

use lss_core::{ClientId, Limits, ServerKey};
use lss_store::Store;
use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};

/// How often the store is probed for gRPC health.
pub const HEALTH_PROBE: Duration = Duration::from_secs(1);

/// Keeps `grpc.health.v1.Health` true to the store: SERVING for `""` and
/// `lss.LightningStorage` while a read of an (empty) namespace succeeds,
/// NOT_SERVING while the store answers `Unavailable` (a database that
/// cannot be reached, a disk that fails).
async fn watch_health<S: Store>(
    store: std::sync::Arc<S>,
    probe: ClientId,
    reporter: tonic_health::server::HealthReporter,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let status = match store.get(probe, "lightkeeper-health-probe".into()).await {
            Ok(_) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            for service in ["", "lss.LightningStorage"] {
                reporter.set_service_status(service, status).await;
            }
            if status == ServingStatus::NotServing {
                tracing::warn!("the store cannot be read: health is NOT_SERVING");
            } else if last.is_some() {
                tracing::info!("the store answers again: health is SERVING");
            }
            last = Some(status);
        }
        tokio::time::sleep(HEALTH_PROBE).await;
    }
}

/// A task stopped when its handle goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a server enforces and how it is reached.
pub struct Settings {
    /// Request and per-client limits.
    pub limits: Limits,
    /// Connection limits and timeouts.
    pub connections: conn::ConnLimits,
    /// Who may be a client.
    pub access: std::sync::Arc<access::Access>,
    /// Free space kept for existing clients (the embedded store only).
    pub disk: Option<std::sync::Arc<disk::DiskReserve>>,
    /// TLS, or plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Keep each namespace's verifiable log and answer `verify` ([`ledger`]).
    pub verifiable_log: bool,
    /// Sample the store's totals for [`metrics`] (when metrics are served).
    pub sample_totals: bool,
}

impl Default for Settings {
    /// Default limits, open access, plaintext.
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            connections: conn::ConnLimits::default(),
            access: std::sync::Arc::new(access::Access::open()),
            disk: None,
            tls: None,
            verifiable_log: true,
            sample_totals: false,
        }
    }
}

/// How long a shutdown waits for clients to finish and close their
/// connections before the server stops anyway. A put whose client is cut off
/// this way is still committed or not at all: the store finishes every put it
/// has started, only the reply is lost, as with any network failure.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `lss.LightningStorage`, the Lightkeeper extensions, gRPC health
/// (true to the store, see [`HEALTH_PROBE`]) and reflection on `listener`,
/// within `connections` ([`conn`]), until `shutdown` resolves, then
/// stops accepting and waits, at most [`SHUTDOWN_GRACE`], for in-flight
/// requests and open connections (so an acknowledged put has always been
/// committed, and an idle or stalled client cannot hold the shutdown up).
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: S,
    key: ServerKey,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let Settings {
        limits,
        connections,
        access,
        disk,
        tls,
        verifiable_log,
        sample_totals,
    } = settings;
    // tonic's own tcp_nodelay applies only to listeners it binds itself; on
    // our listener each accepted socket is set here. Without it, a reply
    // written in two segments waits for the client's delayed ACK (~40 ms).
    // Connections over the limits are closed here, before any byte is read.
    let admission = conn::Admission::new(connections);
    let incoming = tokio_stream::StreamExt::filter_map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |accepted| match accepted {
            Ok(stream) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                admission.accept(stream).map(Ok)
            }
            // Out of file descriptors and the like: tonic logs and goes on.
            Err(e) => Some(Err(e)),
        },
    );
    let streams = u32::try_from(limits.max_streams_per_connection).unwrap_or(u32::MAX);
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(streams))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let store = std::sync::Arc::new(store);
    let probe = ClientId::from(key.public_key());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let watching = tokio::spawn(watch_health(store.clone(), probe, health_reporter));
    let reloading = tokio::spawn(access::keep_reloading(access.clone()));
    let _totals =
        sample_totals.then(|| AbortOnDrop(tokio::spawn(metrics::keep_sampling(store.clone()))));
    let auth = std::sync::Arc::new(auth::Authenticator::new(key, auth::DEFAULT_CACHE_ENTRIES));
    let preauth = preauth::PreauthLayer::new(
        auth.clone(),
        access.clone(),
        connections.max_unauthenticated_bytes,
    );
    let sampling = disk
        .clone()
        .map(|disk| AbortOnDrop(tokio::spawn(disk::keep_sampling(disk))));
    let (lss, extensions) = service::LssService::with_access(store, auth, access, limits)
        .with_disk_reserve(disk)
        .with_verifiable_log(verifiable_log)
        .into_servers();
    // Reflection in both versions clients ask for (grpcurl tries v1, the
    // Python and Go reflection clients still use v1alpha).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(lss_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) =
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => (Some(v1), Some(v1alpha)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "gRPC reflection not served");
                (None, None)
            }
        };
    let server = builder
        .layer(conn::WatchLayer::new(connections.request_timeout))
        .layer(status::request_limit_layer())
        .layer(preauth)
        .add_service(lss)
        .add_service(extensions)
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            let _ = stopping.send(());
        });
    tokio::pin!(server);
    let _watching = AbortOnDrop(watching);
    let _reloading = AbortOnDrop(reloading);
    let _sampling = sampling;
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
