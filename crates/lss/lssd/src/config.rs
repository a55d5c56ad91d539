//! `lssd` configuration: each setting is a flag, an `LSSD_*` environment
//! variable and a key of the TOML config file, resolved in that order of
//! precedence (flag > environment > file > default).
//!
//! The flag's doc comment is its `--help` text and the reference of
//! `docs/lssd.md`; `lssd.example.toml` lists every file key, and a test checks
//! the two agree.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use lss_core::Limits;
use serde::Deserialize;

use crate::access::AccessMode;
use crate::conn::ConnLimits;
use log_init::LogFormat;

/// Default free-disk reserve of the embedded store: 512 MiB.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 512 * 1024 * 1024;

/// Default listen address: loopback, the protocol's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:55551";

/// Where `--metrics-listen` without an address serves: loopback, beside the protocol's port.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9555";

/// Lightkeeper's Lightning Storage Server: a versioned key-value store for
/// Lightning signers, wire-compatible with the VLS `lss` protocol.
#[derive(Debug, Default, Parser)]
#[command(name = "lssd", version)]
pub struct Args {
    /// What to do; without a command, lssd serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML config file whose keys are these options' long names with `_`
    /// for `-` (see lssd.example.toml). Flags and environment override it.
    #[arg(long, global = true, env = "LSSD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log lines as `text` or `json` (one object per line) [default: text].
    #[arg(long, global = true, env = "LSSD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Address to listen on [default: 127.0.0.1:55551]. Use a non-loopback
    /// address only with TLS: the auth token is a bearer credential.
    #[arg(long, global = true, env = "LSSD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve Prometheus metrics at http://ADDR/metrics [default: off;
    /// given without ADDR: 127.0.0.1:9555]. Unauthenticated: keep it on
    /// loopback or a monitoring network.
    #[arg(
        long,
        global = true,
        env = "LSSD_METRICS_LISTEN",
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = DEFAULT_METRICS_LISTEN
    )]
    pub metrics_listen: Option<SocketAddr>,

    /// Directory of the database and the server key [default: $HOME/.lightkeeper/lssd].
    /// Created with mode 0700 if missing.
    #[arg(long, global = true, env = "LSSD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Use this existing server key file (64 hex characters) instead of
    /// `<data-dir>/server_key`, e.g. the reference lssd's `~/.lss/server_key`,
    /// so existing clients keep working. It must exist.
    #[arg(long, global = true, env = "LSSD_SERVER_KEY_FILE", value_name = "FILE")]
    pub server_key_file: Option<PathBuf>,

    /// PEM certificate chain for TLS. Needs --tls-key.
    #[arg(long, global = true, env = "LSSD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS. Needs --tls-cert.
    #[arg(long, global = true, env = "LSSD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): require client certificates signed by them (mutual TLS).
    /// Needs --tls-cert and --tls-key.
    #[arg(long, global = true, env = "LSSD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Longest key in bytes [default: 1024].
    #[arg(long, global = true, env = "LSSD_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<NonZeroUsize>,

    /// Longest value in bytes [default: 4194304 (4 MiB)].
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_VALUE_BYTES",
        value_name = "BYTES"
    )]
    pub max_value_bytes: Option<NonZeroUsize>,

    /// Most keys in one put [default: 10000].
    #[arg(long, global = true, env = "LSSD_MAX_KEYS_PER_PUT", value_name = "N")]
    pub max_keys_per_put: Option<NonZeroUsize>,

    /// Largest encoded request in bytes [default: 16777216 (16 MiB)]. At
    /// least 4 MiB is needed by reference clients, which send up to that.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_REQUEST_BYTES",
        value_name = "BYTES"
    )]
    pub max_request_bytes: Option<NonZeroUsize>,

    /// Most bytes (keys plus values) one client may store [default: 1073741824 (1 GiB)].
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_NAMESPACE_BYTES",
        value_name = "BYTES"
    )]
    pub max_namespace_bytes: Option<NonZeroU64>,

    /// Most requests of one client served at once [default: 16]; more get
    /// RESOURCE_EXHAUSTED. A signer has one put in flight at a time; the
    /// limit keeps a client that floods from crowding out the others.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_INFLIGHT_PER_CLIENT",
        value_name = "N"
    )]
    pub max_inflight_per_client: Option<NonZeroUsize>,

    /// Most requests open at once on one connection [default: 32]; more
    /// are refused (HTTP/2 REFUSED_STREAM). Bounds what one connection can
    /// hold open, stalled readers included.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_STREAMS_PER_CONNECTION",
        value_name = "N"
    )]
    pub max_streams_per_connection: Option<NonZeroUsize>,

    /// Most bytes (keys plus values) of replies queued for one client: read
    /// from the store, not yet read by the client [default: 1073741824
    /// (1 GiB)]. More get RESOURCE_EXHAUSTED. Keep it at least
    /// max_namespace_bytes, or a client cannot read its whole namespace.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_REPLY_BYTES_PER_CLIENT",
        value_name = "BYTES"
    )]
    pub max_reply_bytes_per_client: Option<NonZeroU64>,

    /// Most bytes of replies queued for all clients together [default:
    /// 2147483648 (2 GiB)]: the memory readers can hold. More get RESOURCE_EXHAUSTED.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_REPLY_BYTES",
        value_name = "BYTES"
    )]
    pub max_reply_bytes: Option<NonZeroU64>,

    /// Most open connections [default: 10000]; more are closed as they are accepted.
    #[arg(long, global = true, env = "LSSD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<NonZeroUsize>,

    /// Most open connections from one source address, IPv6 counted by /64
    /// [default: 100]; more are closed as they are accepted.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N"
    )]
    pub max_connections_per_address: Option<NonZeroUsize>,

    /// Seconds a request may take until it is answered, receiving its body
    /// included [default: 30]; then DEADLINE_EXCEEDED. A put cut off this way
    /// may still commit, as with any lost reply.
    #[arg(
        long,
        global = true,
        env = "LSSD_REQUEST_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub request_timeout_secs: Option<NonZeroU64>,

    /// Seconds from a request's start until the client must have read its
    /// reply [default: 300]; a connection still holding an unread reply then
    /// is closed. Bounds how long a slow or stalled reader holds memory.
    #[arg(
        long,
        global = true,
        env = "LSSD_REPLY_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub reply_timeout_secs: Option<NonZeroU64>,

    /// Seconds a connection may stay open with no request [default: 600];
    /// then it is closed (clients reconnect when they need to).
    #[arg(
        long,
        global = true,
        env = "LSSD_IDLE_TIMEOUT_SECS",
        value_name = "SECONDS"
    )]
    pub idle_timeout_secs: Option<NonZeroU64>,

    /// Most bytes of a Put or Get body read before its sender is
    /// authenticated and admitted [default: 65536]. A larger request must
    /// carry its auth field first (every known client does).
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_UNAUTHENTICATED_BYTES",
        value_name = "BYTES"
    )]
    pub max_unauthenticated_bytes: Option<NonZeroUsize>,

    /// Free bytes kept on the embedded store's filesystem for clients that
    /// already store data [default: 536870912 (512 MiB); 0: no reserve]:
    /// below it, a put that would create a namespace gets
    /// RESOURCE_EXHAUSTED. redb only.
    #[arg(
        long,
        global = true,
        env = "LSSD_MIN_FREE_DISK_BYTES",
        value_name = "BYTES"
    )]
    pub min_free_disk_bytes: Option<u64>,

    /// Keep a signed log of every namespace and answer clients that ask
    /// for verifiable replies (docs/protocol.md "Verifiable log")
    /// [default: true]. Off: puts are not logged and `verify` is ignored
    /// (verifying clients then refuse the server).
    #[arg(long, global = true, env = "LSSD_VERIFIABLE_LOG", value_name = "BOOL")]
    pub verifiable_log: Option<bool>,

    /// Who may be a client [default: open]: `open` (any keypair, as the
    /// reference) or `allowlist` (the ids in <data-dir>/allowed_clients, re-read
    /// when it changes, and clients registered with a token from `lssd issue-token`).
    #[arg(long, global = true, env = "LSSD_ACCESS", value_name = "POLICY")]
    pub access: Option<AccessMode>,

    /// Storage backend [default: redb]: `redb` (embedded, in the data
    /// directory) or `postgres` (needs --postgres-url). The server key stays
    /// in the data directory either way.
    #[arg(long, global = true, env = "LSSD_DATABASE", value_name = "BACKEND")]
    pub database: Option<Database>,

    /// PostgreSQL connection URL, e.g.
    /// `postgres://lssd:PASSWORD@db.internal:5432/lss?sslmode=require`. Prefer
    /// the environment or the config file for a URL with a password: command
    /// lines are visible to other users.
    #[arg(long, global = true, env = "LSSD_POSTGRES_URL", value_name = "URL")]
    pub postgres_url: Option<String>,

    /// PostgreSQL schema for Lightkeeper's tables, created if missing [default: lightkeeper].
    #[arg(long, global = true, env = "LSSD_POSTGRES_SCHEMA", value_name = "NAME")]
    pub postgres_schema: Option<String>,

    /// Most PostgreSQL connections [default: 16].
    #[arg(long, global = true, env = "LSSD_POSTGRES_POOL_SIZE", value_name = "N")]
    pub postgres_pool_size: Option<NonZeroUsize>,

    /// Require TLS to PostgreSQL and verify the server with this PEM CA file
    /// (otherwise the URL's sslmode decides: `require` verifies against the
    /// public web PKI roots).
    #[arg(long, global = true, env = "LSSD_POSTGRES_CA", value_name = "FILE")]
    pub postgres_ca: Option<PathBuf>,

    /// etcd client URLs, comma-separated, e.g.
    /// `http://10.0.0.1:2379,http://10.0.0.2:2379` (`https://` with --etcd-ca).
    #[arg(
        long,
        env = "LSSD_ETCD_ENDPOINTS",
        value_name = "URLS",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Option<Vec<String>>,

    /// Root of every etcd key lssd reads or writes [default: lightkeeper/].
    #[arg(long, global = true, env = "LSSD_ETCD_PREFIX", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,

    /// etcd user, when the cluster has auth enabled (password from
    /// LSSD_ETCD_PASSWORD or the config file's etcd_password).
    #[arg(long, global = true, env = "LSSD_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,

    /// etcd password. Use the environment or the config file, not the command line.
    #[arg(
        long,
        env = "LSSD_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,

    /// PEM CA file that signs the etcd members' certificates (TLS).
    #[arg(long, global = true, env = "LSSD_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// The cluster's --max-txn-ops [default: 128]. A put may carry one key
    /// fewer; the default --max-keys-per-put follows it.
    #[arg(long, global = true, env = "LSSD_ETCD_MAX_TXN_OPS", value_name = "N")]
    pub etcd_max_txn_ops: Option<NonZeroUsize>,

    /// The cluster's --max-request-bytes [default: 1572864]. Larger puts
    /// are refused whole with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        global = true,
        env = "LSSD_ETCD_MAX_REQUEST_BYTES",
        value_name = "BYTES"
    )]
    pub etcd_max_request_bytes: Option<NonZeroUsize>,
}

/// Data commands. They use the same options as the server to find the store
/// (for redb, stop the server first: the database file is locked while it runs).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Serve the LSS protocol (the default).
    Serve,
    /// Write every entry of the store to a portable, checksummed file
    /// (docs/export-format.md). The file appears only when complete.
    Export {
        /// The file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Check an export file end to end without touching any store.
    Verify {
        /// The export file.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Verify an export file, then load it into the store. Never overwrites:
    /// keys already holding the same entry are skipped, any other clash stops
    /// the import with the key named. Safe to run again after an interruption.
    Import {
        /// The export file.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Copy every entry of this store into another one, then compare the two
    /// entry by entry.
    Copy {
        /// A config file naming the target store (database, postgres_*,
        /// etcd_*, data_dir keys; the rest is ignored).
        #[arg(long, value_name = "FILE")]
        to_config: PathBuf,
    },
    /// Print a registration token: with `access = allowlist`, a client that
    /// sends it (lss-cli --registration-token) is admitted and remembered.
    /// Each token admits one client. Works while the server runs.
    IssueToken,
    /// Check the configuration (flags, environment and file) without
    /// starting: print the effective settings, secrets redacted, and exit 0,
    /// or name what is wrong and exit 1. TLS files are read to check them.
    CheckConfig,
    /// Load the reference lssd's database file (`<its datadir>/redb`) into
    /// this store, and optionally adopt its server key so its clients keep
    /// working. Stop the reference lssd first.
    ImportReference {
        /// The reference's redb file.
        #[arg(long, value_name = "FILE")]
        reference_db: PathBuf,
        /// The reference's server key (`~/.lss/server_key`): copied to
        /// `<data-dir>/server_key`, which must not hold a different key.
        #[arg(long, value_name = "FILE")]
        reference_key: Option<PathBuf>,
    },
}

/// Which storage backend serves the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// The embedded store, `<data_dir>/lightkeeper.redb`.
    #[default]
    Redb,
    /// A PostgreSQL database.
    Postgres,
    /// An etcd cluster.
    Etcd,
}

/// A setting that is or holds a secret (a password, a database URL with
/// one): `Debug` shows it redacted, so the effective configuration can be
/// printed (`lssd check-config`) and logged; [`Secret::expose`] gives the
/// value to the code that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    shown: String,
}

impl Secret {
    /// A password: shown as `<redacted>`.
    pub fn password(value: String) -> Self {
        Secret {
            value,
            shown: "<redacted>".into(),
        }
    }

    /// A URL: shown with any password in it (`user:password@`, or a
    /// `password=` parameter) replaced by `<redacted>`.
    pub fn url(value: String) -> Self {
        let mut shown = value.clone();
        if let Some(start) = shown.find("://").map(|i| i + 3) {
            let authority_end = shown[start..]
                .find(['/', '?'])
                .map_or(shown.len(), |i| start + i);
            if let Some(at) = shown[start..authority_end].rfind('@').map(|i| start + i) {
                if let Some(colon) = shown[start..at].find(':').map(|i| start + i) {
                    shown.replace_range(colon + 1..at, "<redacted>");
                }
            }
        }
        if let Some(p) = shown.find("password=") {
            let from = p + "password=".len();
            let to = shown[from..].find('&').map_or(shown.len(), |i| from + i);
            shown.replace_range(from..to, "<redacted>");
        }
        Secret { value, shown }
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

/// The resolved backend settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded redb in the data directory.
    Redb,
    /// PostgreSQL.
    Postgres {
        /// Connection URL.
        url: Secret,
        /// Schema.
        schema: String,
        /// Pool size.
        pool_size: usize,
        /// CA file for TLS.
        ca: Option<PathBuf>,
    },
    /// etcd.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
        /// Key prefix.
        prefix: String,
        /// User and password.
        user: Option<(String, Secret)>,
        /// CA file for TLS.
        ca: Option<PathBuf>,
        /// The cluster's --max-txn-ops.
        max_txn_ops: usize,
        /// The cluster's --max-request-bytes.
        max_request_bytes: usize,
    },
}

/// The config file: the same settings as [`Args`], all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Args::log_format`].
    pub log_format: Option<LogFormat>,
    /// See [`Args::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`Args::metrics_listen`].
    pub metrics_listen: Option<SocketAddr>,
    /// See [`Args::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Args::server_key_file`].
    pub server_key_file: Option<PathBuf>,
    /// See [`Args::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Args::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Args::tls_client_ca`].
    pub tls_client_ca: Option<PathBuf>,
    /// See [`Args::max_key_bytes`].
    pub max_key_bytes: Option<NonZeroUsize>,
    /// See [`Args::max_value_bytes`].
    pub max_value_bytes: Option<NonZeroUsize>,
    /// See [`Args::max_keys_per_put`].
    pub max_keys_per_put: Option<NonZeroUsize>,
    /// See [`Args::max_request_bytes`].
    pub max_request_bytes: Option<NonZeroUsize>,
    /// See [`Args::max_namespace_bytes`].
    pub max_namespace_bytes: Option<NonZeroU64>,
    /// See [`Args::max_inflight_per_client`].
    pub max_inflight_per_client: Option<NonZeroUsize>,
    /// See [`Args::max_streams_per_connection`].
    pub max_streams_per_connection: Option<NonZeroUsize>,
    /// See [`Args::max_reply_bytes_per_client`].
    pub max_reply_bytes_per_client: Option<NonZeroU64>,
    /// See [`Args::max_reply_bytes`].
    pub max_reply_bytes: Option<NonZeroU64>,
    /// See [`Args::max_connections`].
    pub max_connections: Option<NonZeroUsize>,
    /// See [`Args::max_connections_per_address`].
    pub max_connections_per_address: Option<NonZeroUsize>,
    /// See [`Args::request_timeout_secs`].
    pub request_timeout_secs: Option<NonZeroU64>,
    /// See [`Args::reply_timeout_secs`].
    pub reply_timeout_secs: Option<NonZeroU64>,
    /// See [`Args::idle_timeout_secs`].
    pub idle_timeout_secs: Option<NonZeroU64>,
    /// See [`Args::max_unauthenticated_bytes`].
    pub max_unauthenticated_bytes: Option<NonZeroUsize>,
    /// See [`Args::access`].
    pub access: Option<AccessMode>,
    /// See [`Args::min_free_disk_bytes`].
    pub min_free_disk_bytes: Option<u64>,
    /// See [`Args::verifiable_log`].
    pub verifiable_log: Option<bool>,
    /// See [`Args::database`].
    pub database: Option<Database>,
    /// See [`Args::postgres_url`].
    pub postgres_url: Option<String>,
    /// See [`Args::postgres_schema`].
    pub postgres_schema: Option<String>,
    /// See [`Args::postgres_pool_size`].
    pub postgres_pool_size: Option<NonZeroUsize>,
    /// See [`Args::postgres_ca`].
    pub postgres_ca: Option<PathBuf>,
    /// See [`Args::etcd_endpoints`].
    pub etcd_endpoints: Option<Vec<String>>,
    /// See [`Args::etcd_prefix`].
    pub etcd_prefix: Option<String>,
    /// See [`Args::etcd_user`].
    pub etcd_user: Option<String>,
    /// See [`Args::etcd_password`].
    pub etcd_password: Option<String>,
    /// See [`Args::etcd_ca`].
    pub etcd_ca: Option<PathBuf>,
    /// See [`Args::etcd_max_txn_ops`].
    pub etcd_max_txn_ops: Option<NonZeroUsize>,
    /// See [`Args::etcd_max_request_bytes`].
    pub etcd_max_request_bytes: Option<NonZeroUsize>,
}

/// TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Client CA (PEM), for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How log lines look.
    pub log_format: LogFormat,
    /// Listen address.
    pub listen: SocketAddr,
    /// Where metrics are served, if they are.
    pub metrics_listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// An existing key file to adopt, or `None` for `<data_dir>/server_key`.
    pub server_key_file: Option<PathBuf>,
    /// TLS, if enabled.
    pub tls: Option<TlsFiles>,
    /// Size limits.
    pub limits: Limits,
    /// Connection limits and timeouts.
    pub connections: ConnLimits,
    /// Who may be a client.
    pub access: AccessMode,
    /// Free disk kept for existing clients (redb), 0 for none.
    pub min_free_disk_bytes: u64,
    /// Keep and sign each namespace's log.
    pub verifiable_log: bool,
    /// The storage backend.
    pub backend: Backend,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What TOML or the schema said.
        message: String,
    },
    /// A setting needs another one.
    #[error("{0}")]
    Inconsistent(String),
}

impl Config {
    /// Resolves flags and environment (`args`, already merged by clap) over
    /// the config file over defaults. `home` is `$HOME`, for the default data dir.
    pub fn resolve(args: Args, home: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?
            }
            None => FileConfig::default(),
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_key_bytes: args
                .max_key_bytes
                .or(file.max_key_bytes)
                .map_or(defaults.max_key_bytes, NonZeroUsize::get),
            max_value_bytes: args
                .max_value_bytes
                .or(file.max_value_bytes)
                .map_or(defaults.max_value_bytes, NonZeroUsize::get),
            max_keys_per_put: args
                .max_keys_per_put
                .or(file.max_keys_per_put)
                .map_or(defaults.max_keys_per_put, NonZeroUsize::get),
            max_request_bytes: args
                .max_request_bytes
                .or(file.max_request_bytes)
                .map_or(defaults.max_request_bytes, NonZeroUsize::get),
            max_namespace_bytes: args
                .max_namespace_bytes
                .or(file.max_namespace_bytes)
                .map_or(defaults.max_namespace_bytes, NonZeroU64::get),
            max_inflight_per_client: args
                .max_inflight_per_client
                .or(file.max_inflight_per_client)
                .map_or(defaults.max_inflight_per_client, NonZeroUsize::get),
            max_streams_per_connection: args
                .max_streams_per_connection
                .or(file.max_streams_per_connection)
                .map_or(defaults.max_streams_per_connection, NonZeroUsize::get),
            max_reply_bytes_per_client: args
                .max_reply_bytes_per_client
                .or(file.max_reply_bytes_per_client)
                .map_or(defaults.max_reply_bytes_per_client, NonZeroU64::get),
            max_reply_bytes: args
                .max_reply_bytes
                .or(file.max_reply_bytes)
                .map_or(defaults.max_reply_bytes, NonZeroU64::get),
        };
        let conn_defaults = ConnLimits::default();
        let secs = |value: Option<NonZeroU64>, default: Duration| {
            value.map_or(default, |s| Duration::from_secs(s.get()))
        };
        let connections = ConnLimits {
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .map_or(conn_defaults.max_connections, NonZeroUsize::get),
            max_connections_per_address: args
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .map_or(conn_defaults.max_connections_per_address, NonZeroUsize::get),
            request_timeout: secs(
                args.request_timeout_secs.or(file.request_timeout_secs),
                conn_defaults.request_timeout,
            ),
            reply_timeout: secs(
                args.reply_timeout_secs.or(file.reply_timeout_secs),
                conn_defaults.reply_timeout,
            ),
            idle_timeout: secs(
                args.idle_timeout_secs.or(file.idle_timeout_secs),
                conn_defaults.idle_timeout,
            ),
            max_unauthenticated_bytes: args
                .max_unauthenticated_bytes
                .or(file.max_unauthenticated_bytes)
                .map_or(conn_defaults.max_unauthenticated_bytes, NonZeroUsize::get),
        };
        let access = args.access.or(file.access).unwrap_or_default();
        let min_free_disk_bytes = args
            .min_free_disk_bytes
            .or(file.min_free_disk_bytes)
            .unwrap_or(DEFAULT_MIN_FREE_DISK_BYTES);
        let data_dir = match args.data_dir.or(file.data_dir) {
            Some(dir) => dir,
            None => home
                .ok_or_else(|| {
                    ConfigError::Inconsistent("HOME is not set: give --data-dir".into())
                })?
                .join(".lightkeeper/lssd"),
        };
        let cert = args.tls_cert.or(file.tls_cert);
        let key = args.tls_key.or(file.tls_key);
        let client_ca = args.tls_client_ca.or(file.tls_client_ca);
        let tls = match (cert, key, client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, Some(_)) => {
                return Err(ConfigError::Inconsistent(
                    "tls_client_ca needs tls_cert and tls_key".into(),
                ))
            }
            (Some(_), None, _) => {
                return Err(ConfigError::Inconsistent("tls_cert needs tls_key".into()))
            }
            (None, Some(_), _) => {
                return Err(ConfigError::Inconsistent("tls_key needs tls_cert".into()))
            }
        };
        let listen = match args.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse().expect("the default address parses"),
        };
        let postgres_url = args.postgres_url.or(file.postgres_url);
        let postgres_schema = args.postgres_schema.or(file.postgres_schema);
        let postgres_pool_size = args.postgres_pool_size.or(file.postgres_pool_size);
        let postgres_ca = args.postgres_ca.or(file.postgres_ca);
        let etcd_endpoints = args.etcd_endpoints.or(file.etcd_endpoints);
        let etcd_prefix = args.etcd_prefix.or(file.etcd_prefix);
        let etcd_user = args.etcd_user.or(file.etcd_user);
        let etcd_password = args.etcd_password.or(file.etcd_password);
        let etcd_ca = args.etcd_ca.or(file.etcd_ca);
        let etcd_max_txn_ops = args.etcd_max_txn_ops.or(file.etcd_max_txn_ops);
        let etcd_max_request_bytes = args.etcd_max_request_bytes.or(file.etcd_max_request_bytes);
        let database = args.database.or(file.database).unwrap_or_default();
        let postgres_set = [
            ("postgres_url", postgres_url.is_some()),
            ("postgres_schema", postgres_schema.is_some()),
            ("postgres_pool_size", postgres_pool_size.is_some()),
            ("postgres_ca", postgres_ca.is_some()),
        ];
        let etcd_set = [
            ("etcd_endpoints", etcd_endpoints.is_some()),
            ("etcd_prefix", etcd_prefix.is_some()),
            ("etcd_user", etcd_user.is_some()),
            ("etcd_password", etcd_password.is_some()),
            ("etcd_ca", etcd_ca.is_some()),
            ("etcd_max_txn_ops", etcd_max_txn_ops.is_some()),
            ("etcd_max_request_bytes", etcd_max_request_bytes.is_some()),
        ];
        let stray = |set: &[(&str, bool)], name: &str| {
            match set.iter().find(|(_, on)| *on) {
            Some((option, _)) => Err(ConfigError::Inconsistent(format!(
                "{option} is set but database is {name}: choose the backend with database (--database)"
            ))),
            None => Ok(()),
        }
        };
        let backend = match database {
            Database::Redb => {
                stray(&postgres_set, "redb")?;
                stray(&etcd_set, "redb")?;
                Backend::Redb
            }
            Database::Postgres => {
                stray(&etcd_set, "postgres")?;
                Backend::Postgres {
                    url: Secret::url(postgres_url.ok_or_else(|| {
                        ConfigError::Inconsistent(
                            "database postgres needs postgres_url (--postgres-url or LSSD_POSTGRES_URL)"
                                .into(),
                        )
                    })?),
                    schema: postgres_schema.unwrap_or_else(|| "lightkeeper".into()),
                    pool_size: postgres_pool_size.map_or(16, NonZeroUsize::get),
                    ca: postgres_ca,
                }
            }
            Database::Etcd => {
                stray(&postgres_set, "etcd")?;
                let endpoints = etcd_endpoints.filter(|e| !e.is_empty()).ok_or_else(|| {
                    ConfigError::Inconsistent(
                        "database etcd needs etcd_endpoints (--etcd-endpoints or LSSD_ETCD_ENDPOINTS)"
                            .into(),
                    )
                })?;
                let user = match (etcd_user, etcd_password) {
                    (Some(user), Some(password)) => Some((user, Secret::password(password))),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Inconsistent(
                            "etcd_user and etcd_password go together".into(),
                        ))
                    }
                };
                let max_txn_ops = etcd_max_txn_ops.map_or(128, NonZeroUsize::get);
                if max_txn_ops < 2 {
                    return Err(ConfigError::Inconsistent(
                        "etcd_max_txn_ops must be at least 2".into(),
                    ));
                }
                Backend::Etcd {
                    endpoints,
                    prefix: etcd_prefix.unwrap_or_else(|| "lightkeeper/".into()),
                    user,
                    ca: etcd_ca,
                    max_txn_ops,
                    max_request_bytes: etcd_max_request_bytes.map_or(1_572_864, NonZeroUsize::get),
                }
            }
        };
        // etcd takes one key fewer per put than its transaction limit (the
        // usage record is the extra operation): follow it by default, and
        // refuse a setting it could never honour.
        let mut limits = limits;
        if let Backend::Etcd { max_txn_ops, .. } = &backend {
            let most = max_txn_ops - 1;
            match args.max_keys_per_put.or(file.max_keys_per_put) {
                None => limits.max_keys_per_put = limits.max_keys_per_put.min(most),
                Some(n) if n.get() > most => {
                    return Err(ConfigError::Inconsistent(format!(
                        "max_keys_per_put {n} is more than etcd takes in one transaction ({most} with etcd_max_txn_ops {max_txn_ops})"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(Config {
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            listen,
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            data_dir,
            server_key_file: args.server_key_file.or(file.server_key_file),
            tls,
            limits,
            connections,
            access,
            min_free_disk_bytes,
            verifiable_log: args.verifiable_log.or(file.verifiable_log).unwrap_or(true),
            backend,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("lssd").chain(argv.iter().copied())).expect("parse")
    }

    #[test]
    fn defaults() {
        let config =
            Config::resolve(Args::default(), Some(Path::new("/home/op"))).expect("resolve");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, Path::new("/home/op/.lightkeeper/lssd"));
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.tls, None);
        assert!(
            Config::resolve(Args::default(), None).is_err(),
            "no HOME and no --data-dir"
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("lssd.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nmax_key_bytes = 10\nmax_value_bytes = 20\n",
        )
        .expect("write");
        let args = parse(&[
            "--config",
            file.to_str().expect("utf-8"),
            "--max-key-bytes",
            "11",
        ]);
        let config = Config::resolve(args, Some(dir.path())).expect("resolve");
        assert_eq!(config.listen.to_string(), "127.0.0.1:1");
        assert_eq!(config.limits.max_key_bytes, 11);
        assert_eq!(config.limits.max_value_bytes, 20);
    }

    #[test]
    fn bad_values_fail_clearly() {
        assert!(Args::try_parse_from(["lssd", "--max-key-bytes", "0"]).is_err());
        assert!(Args::try_parse_from(["lssd", "--listen", "nowhere"]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        for (text, needle) in [
            ("lisen = \"127.0.0.1:1\"", "unknown field"),
            ("max_key_bytes = 0", "nonzero"),
            ("max_key_bytes = \"ten\"", "invalid type"),
            ("this is not toml", ""),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = Config::resolve(parse(&["--config", file.to_str().expect("utf-8")]), None)
                .expect_err("bad config accepted");
            assert!(
                err.to_string().contains("bad.toml") && err.to_string().contains(needle),
                "{err}"
            );
        }
        let err = Config::resolve(parse(&["--tls-cert", "c.pem"]), Some(dir.path()))
            .expect_err("half TLS");
        assert!(err.to_string().contains("tls_key"), "{err}");
        let err = Config::resolve(parse(&["--tls-client-ca", "ca.pem"]), Some(dir.path()))
            .expect_err("CA only");
        assert!(err.to_string().contains("tls_cert"), "{err}");
    }

    /// Every option is a key of the example config, every key of the example
    /// is an option, and the example parses with every setting present.
    #[test]
    fn backend_options_must_match_the_backend() {
        let home = Some(Path::new("/home/op"));
        let err = Config::resolve(parse(&["--etcd-prefix", "x/"]), home).expect_err("stray");
        assert!(
            err.to_string()
                .contains("etcd_prefix is set but database is redb"),
            "{err}"
        );
        let err = Config::resolve(
            parse(&[
                "--database",
                "etcd",
                "--etcd-endpoints",
                "http://a:2379",
                "--postgres-url",
                "postgres://x",
            ]),
            home,
        )
        .expect_err("stray");
        assert!(
            err.to_string()
                .contains("postgres_url is set but database is etcd"),
            "{err}"
        );
        let err = Config::resolve(parse(&["--database", "etcd"]), home).expect_err("no endpoints");
        assert!(err.to_string().contains("needs etcd_endpoints"), "{err}");
        let err = Config::resolve(
            parse(&[
                "--database",
                "etcd",
                "--etcd-endpoints",
                "http://a:2379",
                "--etcd-user",
                "u",
            ]),
            home,
        )
        .expect_err("user without password");
        assert!(err.to_string().contains("go together"), "{err}");
    }

    #[test]
    fn etcd_limits_follow_the_cluster() {
        let home = Some(Path::new("/home/op"));
        let config = Config::resolve(
            parse(&[
                "--database",
                "etcd",
                "--etcd-endpoints",
                "http://a:2379,http://b:2379",
            ]),
            home,
        )
        .expect("resolve");
        assert_eq!(config.limits.max_keys_per_put, 127);
        match config.backend {
            Backend::Etcd {
                endpoints,
                max_txn_ops,
                max_request_bytes,
                ..
            } => {
                assert_eq!(endpoints, ["http://a:2379", "http://b:2379"]);
                assert_eq!((max_txn_ops, max_request_bytes), (128, 1_572_864));
            }
            other => panic!("{other:?}"),
        }
        let config = Config::resolve(
            parse(&[
                "--database",
                "etcd",
                "--etcd-endpoints",
                "http://a:2379",
                "--etcd-max-txn-ops",
                "1001",
            ]),
            home,
        )
        .expect("resolve");
        assert_eq!(config.limits.max_keys_per_put, 1000);
        let err = Config::resolve(
            parse(&[
                "--database",
                "etcd",
                "--etcd-endpoints",
                "http://a:2379",
                "--max-keys-per-put",
                "500",
            ]),
            home,
        )
        .expect_err("too many keys for etcd");
        assert!(err.to_string().contains("max_keys_per_put 500"), "{err}");
    }

    #[test]
    fn example_config_lists_every_option() {
        let text = include_str!("../lssd.example.toml");
        let file: FileConfig = toml::from_str(text).expect("example parses");
        let options: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| l.replace('-', "_")))
            .filter(|name| name != "config" && name != "help" && name != "version")
            .collect();
        let table: toml::Table = toml::from_str(text).expect("table");
        let mut keys: Vec<&String> = table.keys().collect();
        keys.sort();
        let mut sorted = options.clone();
        sorted.sort();
        assert_eq!(keys, sorted.iter().collect::<Vec<_>>());
        assert!(file.tls_client_ca.is_some() && file.max_namespace_bytes.is_some());
    }
}
