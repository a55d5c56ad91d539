//! The `lssd` binary: configuration, key, store, signals; then [`lssd::serve`].

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use lss_core::ServerKey;
use lss_store::{RedbConfig, RedbStore, Store};
use lss_store_etcd::{EtcdConfig, EtcdStore};
use lss_store_postgres::{PostgresConfig, PostgresStore, PostgresTls};
use lssd::config::{Args, Backend, Config, TlsFiles};
use lssd::key_file::{self, KeyOrigin};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let config = Config::resolve(args, home.as_deref())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let key = match &config.server_key_file {
        Some(path) => key_file::load(path)?,
        None => {
            let path = config.data_dir.join("server_key");
            let (key, origin) = key_file::load_or_create(&path)?;
            if origin == KeyOrigin::Created {
                info!(path = %path.display(), "created a new server key; back it up: clients are bound to it");
            }
            key
        }
    };
    match &config.backend {
        Backend::Redb => {
            let store_config = RedbConfig {
                max_namespace_bytes: config.limits.max_namespace_bytes,
                ..RedbConfig::default()
            };
            let data_dir = config.data_dir.clone();
            let store =
                tokio::task::spawn_blocking(move || RedbStore::open(&data_dir, store_config))
                    .await
                    .context("store open task failed")??;
            info!(path = %config.data_dir.join(lss_store::redb::FILE_NAME).display(), "storage: embedded redb");
            serve(config, key, Arc::new(store)).await
        }
        Backend::Postgres {
            url,
            schema,
            pool_size,
            ca,
        } => {
            let store = PostgresStore::open(PostgresConfig {
                schema: schema.clone(),
                pool_size: *pool_size,
                tls: ca.clone().map_or(PostgresTls::FromUrl, PostgresTls::Ca),
                max_namespace_bytes: config.limits.max_namespace_bytes,
                ..PostgresConfig::new(url.clone())
            })
            .await?;
            info!(schema = %schema, pool_size, "storage: PostgreSQL");
            serve(config, key, Arc::new(store)).await
        }
        Backend::Etcd {
            endpoints,
            prefix,
            user,
            ca,
            max_txn_ops,
            max_request_bytes,
        } => {
            let ca_pem = ca
                .as_ref()
                .map(|path| {
                    std::fs::read(path)
                        .with_context(|| format!("cannot read etcd CA file {}", path.display()))
                })
                .transpose()?;
            let store = EtcdStore::open(EtcdConfig {
                prefix: prefix.clone(),
                user: user.clone(),
                ca_pem,
                max_txn_ops: *max_txn_ops,
                max_request_bytes: *max_request_bytes,
                max_namespace_bytes: config.limits.max_namespace_bytes,
                ..EtcdConfig::new(endpoints.clone())
            })
            .await?;
            info!(endpoints = %endpoints.join(","), prefix = %prefix, "storage: etcd");
            serve(config, key, Arc::new(store)).await
        }
    }
}

async fn serve<S: Store>(config: Config, key: ServerKey, store: S) -> anyhow::Result<()> {
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    if tls.is_none() && !addr.ip().is_loopback() {
        warn!(%addr, "serving plaintext on a non-loopback address: auth tokens travel in clear; configure TLS");
    }
    info!(
        %addr,
        server_id = %hex::encode(key.server_id()),
        data_dir = %config.data_dir.display(),
        tls = tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "lssd listening on {addr}"
    );
    lssd::serve(listener, store, key, config.limits, tls, shutdown_signal()).await?;
    info!("stopped; every acknowledged put is committed");
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read TLS file {}", path.display()))
    };
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: finishing in-flight requests"),
        _ = term.recv() => info!("SIGTERM: finishing in-flight requests"),
    }
}
