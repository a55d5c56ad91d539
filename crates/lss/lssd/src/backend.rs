//! The configured storage backend, opened: one type over the three stores so
//! the server and the data tools are written once.
//!
//! Dispatch is one `match` per call; the stores themselves stay generic-free.

use std::sync::Arc;

use lss_core::{ClientId, KeyValue, PutOutcome, ValidPut};
use lss_store::{Bulk, Entry, LoadError, RedbConfig, RedbStore, Store, StoreError};
use lss_store_etcd::{EtcdConfig, EtcdStore};
use lss_store_postgres::{PostgresConfig, PostgresStore, PostgresTls};

use crate::config::{Backend, Config};

/// Why the backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The embedded store.
    #[error(transparent)]
    Redb(#[from] lss_store::redb::OpenError),
    /// PostgreSQL.
    #[error(transparent)]
    Postgres(#[from] lss_store_postgres::OpenError),
    /// etcd.
    #[error(transparent)]
    Etcd(#[from] lss_store_etcd::OpenError),
    /// A file the configuration names cannot be read.
    #[error("cannot read {path}: {error}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The blocking open task failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// One of the stores.
#[derive(Clone)]
pub enum AnyStore {
    /// Embedded redb.
    Redb(Arc<RedbStore>),
    /// PostgreSQL.
    Postgres(Arc<PostgresStore>),
    /// etcd.
    Etcd(Arc<EtcdStore>),
}

impl AnyStore {
    /// Opens the backend `config` names (creating the data directory's
    /// database for redb).
    pub async fn open(config: &Config) -> Result<Self, OpenError> {
        let quota = config.limits.max_namespace_bytes;
        match &config.backend {
            Backend::Redb => {
                let store_config = RedbConfig {
                    max_namespace_bytes: quota,
                    ..RedbConfig::default()
                };
                let dir = config.data_dir.clone();
                let store =
                    tokio::task::spawn_blocking(move || RedbStore::open(&dir, store_config))
                        .await
                        .map_err(|e| OpenError::Internal(e.to_string()))??;
                Ok(AnyStore::Redb(Arc::new(store)))
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
                    max_namespace_bytes: quota,
                    ..PostgresConfig::new(url.expose().to_owned())
                })
                .await?;
                Ok(AnyStore::Postgres(Arc::new(store)))
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
                        std::fs::read(path).map_err(|error| OpenError::File {
                            path: path.clone(),
                            error,
                        })
                    })
                    .transpose()?;
                let store = EtcdStore::open(EtcdConfig {
                    prefix: prefix.clone(),
                    user: user
                        .as_ref()
                        .map(|(name, password)| (name.clone(), password.expose().to_owned())),
                    ca_pem,
                    max_txn_ops: *max_txn_ops,
                    max_request_bytes: *max_request_bytes,
                    max_namespace_bytes: quota,
                    ..EtcdConfig::new(endpoints.clone())
                })
                .await?;
                Ok(AnyStore::Etcd(Arc::new(store)))
            }
        }
    }

    /// A one-line description for logs.
    pub fn describe(&self, config: &Config) -> String {
        match (&config.backend, self) {
            (Backend::Postgres { schema, .. }, _) => format!("PostgreSQL (schema {schema})"),
            (
                Backend::Etcd {
                    endpoints, prefix, ..
                },
                _,
            ) => {
                format!("etcd ({}, prefix {prefix})", endpoints.join(","))
            }
            _ => format!(
                "embedded redb ({})",
                config.data_dir.join(lss_store::redb::FILE_NAME).display()
            ),
        }
    }
}

impl Store for AnyStore {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        match self {
            AnyStore::Redb(s) => s.put(put).await,
            AnyStore::Postgres(s) => s.put(put).await,
            AnyStore::Etcd(s) => s.put(put).await,
        }
    }

    async fn get(&self, client: ClientId, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        match self {
            AnyStore::Redb(s) => s.get(client, prefix).await,
            AnyStore::Postgres(s) => s.get(client, prefix).await,
            AnyStore::Etcd(s) => s.get(client, prefix).await,
        }
    }

    async fn pages(
        &self,
        client: ClientId,
        prefix: String,
    ) -> Result<Box<dyn lss_store::Pages>, StoreError> {
        match self {
            AnyStore::Redb(s) => s.pages(client, prefix).await,
            AnyStore::Postgres(s) => s.pages(client, prefix).await,
            AnyStore::Etcd(s) => s.pages(client, prefix).await,
        }
    }

    async fn usage(&self, client: ClientId) -> Result<u64, StoreError> {
        match self {
            AnyStore::Redb(s) => s.usage(client).await,
            AnyStore::Postgres(s) => s.usage(client).await,
            AnyStore::Etcd(s) => s.usage(client).await,
        }
    }

    async fn totals(&self) -> Result<lss_store::Totals, StoreError> {
        match self {
            AnyStore::Redb(s) => s.totals().await,
            AnyStore::Postgres(s) => s.totals().await,
            AnyStore::Etcd(s) => s.totals().await,
        }
    }
}

impl Bulk for AnyStore {
    async fn scan(
        &self,
        after: Option<(ClientId, String)>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        match self {
            AnyStore::Redb(s) => s.scan(after, limit).await,
            AnyStore::Postgres(s) => s.scan(after, limit).await,
            AnyStore::Etcd(s) => s.scan(after, limit).await,
        }
    }

    async fn load(&self, entries: Vec<Entry>) -> Result<u64, LoadError> {
        match self {
            AnyStore::Redb(s) => s.load(entries).await,
            AnyStore::Postgres(s) => s.load(entries).await,
            AnyStore::Etcd(s) => s.load(entries).await,
        }
    }
}
