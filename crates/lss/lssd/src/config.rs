//! `lssd` configuration: each setting is declared once, as a field of
//! [`Args`]: a flag, an `LSSD_*` environment variable and a key of the TOML
//! config file, resolved in that order of precedence (flag > environment >
//! file > default) by the shared `config-layers` crate.
//!
//! The field's doc comment is its `--help` text, its default is stated once
//! in its attribute (and shown by `--help`); `lssd.example.toml` lists every
//! file key, and a test checks the two agree.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ffi::OsString;

use clap::{CommandFactory, Parser};
use config_layers::{FileRules, Parsed};
use lss_core::Limits;

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
#[derive(Debug, Parser)]
#[command(name = "lssd", version)]
pub struct Args {
    /// What to do; without a command, lssd serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML config file whose keys are these options' long names with `_`
    /// for `-` (see lssd.example.toml). Flags and environment override it;
    /// it overrides the defaults.
    #[arg(long, global = true, env = "LSSD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log lines as `text` or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "LSSD_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    /// Address to listen on. Use a non-loopback address only with TLS: the
    /// auth token is a bearer credential.
    #[arg(long, global = true, env = "LSSD_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given;
    /// without ADDR: 127.0.0.1:9555). Unauthenticated: keep it on loopback
    /// or a monitoring network.
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

    /// Longest key in bytes.
    #[arg(long, global = true, env = "LSSD_MAX_KEY_BYTES", value_name = "BYTES",
        default_value_t = nonzero(Limits::default().max_key_bytes)
    )]
    pub max_key_bytes: NonZeroUsize,

    /// Longest value in bytes.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_VALUE_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = nonzero(Limits::default().max_value_bytes)
    )]
    pub max_value_bytes: NonZeroUsize,

    /// Most keys in one put (with etcd, at most one fewer than
    /// --etcd-max-txn-ops, which the default then follows).
    #[arg(long, global = true, env = "LSSD_MAX_KEYS_PER_PUT", value_name = "N",
        default_value_t = nonzero(Limits::default().max_keys_per_put))]
    pub max_keys_per_put: NonZeroUsize,

    /// Largest encoded request in bytes. At
    /// least 4 MiB is needed by reference clients, which send up to that.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_REQUEST_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = nonzero(Limits::default().max_request_bytes)
    )]
    pub max_request_bytes: NonZeroUsize,

    /// Most bytes (keys plus values) one client may store.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_NAMESPACE_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = nonzero64(Limits::default().max_namespace_bytes)
    )]
    pub max_namespace_bytes: NonZeroU64,

    /// Most requests of one client served at once; more get
    /// RESOURCE_EXHAUSTED. A signer has one put in flight at a time; the
    /// limit keeps a client that floods from crowding out the others.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_INFLIGHT_PER_CLIENT",
        value_name = "N"
    ,
        default_value_t = nonzero(Limits::default().max_inflight_per_client)
    )]
    pub max_inflight_per_client: NonZeroUsize,

    /// Most requests open at once on one connection; more
    /// are refused (HTTP/2 REFUSED_STREAM). Bounds what one connection can
    /// hold open, stalled readers included.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_STREAMS_PER_CONNECTION",
        value_name = "N"
    ,
        default_value_t = nonzero(Limits::default().max_streams_per_connection)
    )]
    pub max_streams_per_connection: NonZeroUsize,

    /// Most bytes (keys plus values) of replies queued for one client: read
    /// from the store, not yet read by the client. More get RESOURCE_EXHAUSTED. Keep it at least
    /// max_namespace_bytes, or a client cannot read its whole namespace.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_REPLY_BYTES_PER_CLIENT",
        value_name = "BYTES"
    ,
        default_value_t = nonzero64(Limits::default().max_reply_bytes_per_client)
    )]
    pub max_reply_bytes_per_client: NonZeroU64,

    /// Most bytes of replies queued for all clients together: the memory readers can hold. More get RESOURCE_EXHAUSTED.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_REPLY_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = nonzero64(Limits::default().max_reply_bytes)
    )]
    pub max_reply_bytes: NonZeroU64,

    /// Most open connections; more are closed as they are accepted.
    #[arg(long, global = true, env = "LSSD_MAX_CONNECTIONS", value_name = "N",
        default_value_t = nonzero(ConnLimits::default().max_connections)
    )]
    pub max_connections: NonZeroUsize,

    /// Most open connections from one source address, IPv6 counted by /64;
    /// more are closed as they are accepted.
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N"
    ,
        default_value_t = nonzero(ConnLimits::default().max_connections_per_address)
    )]
    pub max_connections_per_address: NonZeroUsize,

    /// Seconds a request may take until it is answered, receiving its body
    /// included; then DEADLINE_EXCEEDED. A put cut off this way
    /// may still commit, as with any lost reply.
    #[arg(
        long,
        global = true,
        env = "LSSD_REQUEST_TIMEOUT_SECS",
        value_name = "SECONDS"
    ,
        default_value_t = seconds(ConnLimits::default().request_timeout)
    )]
    pub request_timeout_secs: NonZeroU64,

    /// Seconds from a request's start until the client must have read its
    /// reply; a connection still holding an unread reply then
    /// is closed. Bounds how long a slow or stalled reader holds memory.
    #[arg(
        long,
        global = true,
        env = "LSSD_REPLY_TIMEOUT_SECS",
        value_name = "SECONDS"
    ,
        default_value_t = seconds(ConnLimits::default().reply_timeout)
    )]
    pub reply_timeout_secs: NonZeroU64,

    /// Seconds a connection may stay open with no request;
    /// then it is closed (clients reconnect when they need to).
    #[arg(
        long,
        global = true,
        env = "LSSD_IDLE_TIMEOUT_SECS",
        value_name = "SECONDS"
    ,
        default_value_t = seconds(ConnLimits::default().idle_timeout)
    )]
    pub idle_timeout_secs: NonZeroU64,

    /// Most bytes of a Put or Get body read before its sender is
    /// authenticated and admitted. A larger request must
    /// carry its auth field first (every known client does).
    #[arg(
        long,
        global = true,
        env = "LSSD_MAX_UNAUTHENTICATED_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = nonzero(ConnLimits::default().max_unauthenticated_bytes)
    )]
    pub max_unauthenticated_bytes: NonZeroUsize,

    /// Free bytes kept on the embedded store's filesystem for clients that
    /// already store data (0: no reserve): below it, a put that would create
    /// a namespace gets RESOURCE_EXHAUSTED. redb only.
    #[arg(
        long,
        global = true,
        env = "LSSD_MIN_FREE_DISK_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = DEFAULT_MIN_FREE_DISK_BYTES
    )]
    pub min_free_disk_bytes: u64,

    /// Keep a signed log of every namespace and answer clients that ask
    /// for verifiable replies (docs/protocol.md "Verifiable log"). Off:
    /// puts are not logged and `verify` is ignored (verifying clients then
    /// refuse the server).
    #[arg(long, global = true, env = "LSSD_VERIFIABLE_LOG", value_name = "BOOL",
        default_value_t = true, action = clap::ArgAction::Set)]
    pub verifiable_log: bool,

    /// Who may be a client: `open` (any keypair, as the reference) or
    /// `allowlist` (the ids in <data-dir>/allowed_clients, re-read when it
    /// changes, and clients registered with a token from `lssd issue-token`).
    #[arg(
        long,
        global = true,
        env = "LSSD_ACCESS",
        value_name = "POLICY",
        value_enum,
        default_value_t
    )]
    pub access: AccessMode,

    /// Storage backend: `redb` (embedded, in the data directory),
    /// `postgres` (needs --postgres-url) or `etcd` (needs --etcd-endpoints).
    /// The server key stays in the data directory either way.
    #[arg(
        long,
        global = true,
        env = "LSSD_DATABASE",
        value_name = "BACKEND",
        value_enum,
        default_value_t
    )]
    pub database: Database,

    /// PostgreSQL connection URL, e.g.
    /// `postgres://lssd:PASSWORD@db.internal:5432/lss?sslmode=require`. Prefer
    /// the environment or the config file for a URL with a password: command
    /// lines are visible to other users.
    #[arg(long, global = true, env = "LSSD_POSTGRES_URL", value_name = "URL")]
    pub postgres_url: Option<String>,

    /// PostgreSQL schema for Lightkeeper's tables, created if missing.
    #[arg(
        long,
        global = true,
        env = "LSSD_POSTGRES_SCHEMA",
        value_name = "NAME",
        default_value = "lightkeeper"
    )]
    pub postgres_schema: String,

    /// Most PostgreSQL connections.
    #[arg(long, global = true, env = "LSSD_POSTGRES_POOL_SIZE", value_name = "N",
        default_value_t = nonzero(16)
    )]
    pub postgres_pool_size: NonZeroUsize,

    /// Require TLS to PostgreSQL and verify the server with this PEM CA file
    /// (otherwise the URL's sslmode decides: `require` verifies against the
    /// public web PKI roots).
    #[arg(long, global = true, env = "LSSD_POSTGRES_CA", value_name = "FILE")]
    pub postgres_ca: Option<PathBuf>,

    /// etcd client URLs, comma-separated, e.g.
    /// `http://10.0.0.1:2379,http://10.0.0.2:2379` (`https://` with --etcd-ca).
    #[arg(
        long,
        global = true,
        env = "LSSD_ETCD_ENDPOINTS",
        value_name = "URLS",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Option<Vec<String>>,

    /// Root of every etcd key lssd reads or writes.
    #[arg(
        long,
        global = true,
        env = "LSSD_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = "lightkeeper/"
    )]
    pub etcd_prefix: String,

    /// etcd user, when the cluster has auth enabled (password from
    /// LSSD_ETCD_PASSWORD or the config file's etcd_password).
    #[arg(long, global = true, env = "LSSD_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,

    /// etcd password. Use the environment or the config file, not the command line.
    #[arg(
        long,
        global = true,
        env = "LSSD_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,

    /// PEM CA file that signs the etcd members' certificates (TLS).
    #[arg(long, global = true, env = "LSSD_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// The cluster's --max-txn-ops. A put may carry one key fewer; the
    /// default --max-keys-per-put follows it.
    #[arg(long, global = true, env = "LSSD_ETCD_MAX_TXN_OPS", value_name = "N",
        default_value_t = nonzero(128)
    )]
    pub etcd_max_txn_ops: NonZeroUsize,

    /// The cluster's --max-request-bytes. Larger puts are refused whole with
    /// RESOURCE_EXHAUSTED.
    #[arg(
        long,
        global = true,
        env = "LSSD_ETCD_MAX_REQUEST_BYTES",
        value_name = "BYTES"
    ,
        default_value_t = nonzero(1_572_864)
    )]
    pub etcd_max_request_bytes: NonZeroUsize,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
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
    /// Flags, environment or the config file hold something invalid.
    #[error(transparent)]
    Layers(#[from] config_layers::Error),
    /// A setting needs another one.
    #[error("{0}")]
    Inconsistent(String),
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn nonzero64(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
}

fn seconds(d: Duration) -> NonZeroU64 {
    nonzero64(d.as_secs())
}

/// Parses `argv` (program name first) into [`Args`]: flags, then the
/// `LSSD_*` environment (unless `environment` is false), then the config
/// file `--config` names, then the defaults ([`config_layers`]).
pub fn parse(argv: &[OsString], environment: bool) -> Result<Parsed<Args>, ConfigError> {
    Ok(config_layers::parse(
        Args::command(),
        argv,
        FileRules {
            file_arg: "config",
            fallback: None,
            not_in_file: &[],
            environment,
        },
    )?)
}

impl Config {
    /// Resolves parsed settings. `home` is `$HOME`, for the default data dir.
    pub fn resolve(parsed: &Parsed<Args>, home: Option<&Path>) -> Result<Config, ConfigError> {
        let args = &parsed.value;
        let mut limits = Limits {
            max_key_bytes: args.max_key_bytes.get(),
            max_value_bytes: args.max_value_bytes.get(),
            max_keys_per_put: args.max_keys_per_put.get(),
            max_request_bytes: args.max_request_bytes.get(),
            max_namespace_bytes: args.max_namespace_bytes.get(),
            max_inflight_per_client: args.max_inflight_per_client.get(),
            max_streams_per_connection: args.max_streams_per_connection.get(),
            max_reply_bytes_per_client: args.max_reply_bytes_per_client.get(),
            max_reply_bytes: args.max_reply_bytes.get(),
        };
        let secs = |s: NonZeroU64| Duration::from_secs(s.get());
        let connections = ConnLimits {
            max_connections: args.max_connections.get(),
            max_connections_per_address: args.max_connections_per_address.get(),
            request_timeout: secs(args.request_timeout_secs),
            reply_timeout: secs(args.reply_timeout_secs),
            idle_timeout: secs(args.idle_timeout_secs),
            max_unauthenticated_bytes: args.max_unauthenticated_bytes.get(),
        };
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => home
                .ok_or_else(|| {
                    ConfigError::Inconsistent("HOME is not set: give --data-dir".into())
                })?
                .join(".lightkeeper/lssd"),
        };
        let tls = match (&args.tls_cert, &args.tls_key, &args.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
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
        // Backend settings given for another backend are a mistake worth
        // naming (a typo in `database`, or a leftover).
        let stray = |prefix: &str, database: &str| {
            match Args::command()
                .get_arguments()
                .map(|a| a.get_id().as_str())
                .find(|id| id.starts_with(prefix) && parsed.explicit(id))
            {
                Some(option) => Err(ConfigError::Inconsistent(format!(
                    "{option} is set but database is {database}: choose the backend with database (--database)"
                ))),
                None => Ok(()),
            }
        };
        let backend = match args.database {
            Database::Redb => {
                stray("postgres_", "redb")?;
                stray("etcd_", "redb")?;
                Backend::Redb
            }
            Database::Postgres => {
                stray("etcd_", "postgres")?;
                Backend::Postgres {
                    url: Secret::url(args.postgres_url.clone().ok_or_else(|| {
                        ConfigError::Inconsistent(
                            "database postgres needs postgres_url (--postgres-url or LSSD_POSTGRES_URL)"
                                .into(),
                        )
                    })?),
                    schema: args.postgres_schema.clone(),
                    pool_size: args.postgres_pool_size.get(),
                    ca: args.postgres_ca.clone(),
                }
            }
            Database::Etcd => {
                stray("postgres_", "etcd")?;
                let endpoints = args
                    .etcd_endpoints
                    .clone()
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| {
                        ConfigError::Inconsistent(
                            "database etcd needs etcd_endpoints (--etcd-endpoints or LSSD_ETCD_ENDPOINTS)"
                                .into(),
                        )
                    })?;
                let user = match (&args.etcd_user, &args.etcd_password) {
                    (Some(user), Some(password)) => {
                        Some((user.clone(), Secret::password(password.clone())))
                    }
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Inconsistent(
                            "etcd_user and etcd_password go together".into(),
                        ))
                    }
                };
                let max_txn_ops = args.etcd_max_txn_ops.get();
                if max_txn_ops < 2 {
                    return Err(ConfigError::Inconsistent(
                        "etcd_max_txn_ops must be at least 2".into(),
                    ));
                }
                // etcd takes one key fewer per put than its transaction
                // limit (the usage record is the extra operation): follow
                // it by default, and refuse a setting it could never honour.
                let most = max_txn_ops - 1;
                if !parsed.explicit("max_keys_per_put") {
                    limits.max_keys_per_put = limits.max_keys_per_put.min(most);
                } else if limits.max_keys_per_put > most {
                    return Err(ConfigError::Inconsistent(format!(
                        "max_keys_per_put {} is more than etcd takes in one transaction ({most} with etcd_max_txn_ops {max_txn_ops})",
                        limits.max_keys_per_put
                    )));
                }
                Backend::Etcd {
                    endpoints,
                    prefix: args.etcd_prefix.clone(),
                    user,
                    ca: args.etcd_ca.clone(),
                    max_txn_ops,
                    max_request_bytes: args.etcd_max_request_bytes.get(),
                }
            }
        };
        Ok(Config {
            log_format: args.log_format,
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            data_dir,
            server_key_file: args.server_key_file.clone(),
            tls,
            limits,
            connections,
            access: args.access,
            min_free_disk_bytes: args.min_free_disk_bytes,
            verifiable_log: args.verifiable_log,
            backend,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(argv: &[&str]) -> Result<Parsed<Args>, ConfigError> {
        let argv: Vec<OsString> = std::iter::once("lssd")
            .chain(argv.iter().copied())
            .map(OsString::from)
            .collect();
        super::parse(&argv, false)
    }

    fn parse(argv: &[&str]) -> Parsed<Args> {
        args(argv).expect("parse")
    }

    #[test]
    fn defaults() {
        let config = Config::resolve(&parse(&[]), Some(Path::new("/home/op"))).expect("resolve");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, Path::new("/home/op/.lightkeeper/lssd"));
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.tls, None);
        assert!(
            Config::resolve(&parse(&[]), None).is_err(),
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
        let config = Config::resolve(&args, Some(dir.path())).expect("resolve");
        assert_eq!(config.listen.to_string(), "127.0.0.1:1");
        assert_eq!(config.limits.max_key_bytes, 11);
        assert_eq!(config.limits.max_value_bytes, 20);
    }

    #[test]
    fn bad_values_fail_clearly() {
        assert!(args(&["--max-key-bytes", "0"]).is_err());
        assert!(args(&["--listen", "nowhere"]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        for (text, needle) in [
            ("lisen = \"127.0.0.1:1\"", "unknown key `lisen`"),
            ("max_key_bytes = 0", "--max-key-bytes"),
            ("max_key_bytes = \"ten\"", "--max-key-bytes"),
            ("database = \"mysql\"", "--database"),
            ("this is not toml", ""),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = args(&["--config", file.to_str().expect("utf-8")])
                .expect_err("bad config accepted");
            assert!(
                err.to_string().contains("bad.toml") && err.to_string().contains(needle),
                "{err}"
            );
        }
        let err = Config::resolve(&parse(&["--tls-cert", "c.pem"]), Some(dir.path()))
            .expect_err("half TLS");
        assert!(err.to_string().contains("tls_key"), "{err}");
        let err = Config::resolve(&parse(&["--tls-client-ca", "ca.pem"]), Some(dir.path()))
            .expect_err("CA only");
        assert!(err.to_string().contains("tls_cert"), "{err}");
    }

    /// Every option is a key of the example config, every key of the example
    /// is an option, and the example parses with every setting present.
    #[test]
    fn backend_options_must_match_the_backend() {
        let home = Some(Path::new("/home/op"));
        let err = Config::resolve(&parse(&["--etcd-prefix", "x/"]), home).expect_err("stray");
        assert!(
            err.to_string()
                .contains("etcd_prefix is set but database is redb"),
            "{err}"
        );
        let err = Config::resolve(
            &parse(&[
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
        let err = Config::resolve(&parse(&["--database", "etcd"]), home).expect_err("no endpoints");
        assert!(err.to_string().contains("needs etcd_endpoints"), "{err}");
        let err = Config::resolve(
            &parse(&[
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
            &parse(&[
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
            &parse(&[
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
            &parse(&[
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
    fn defaults_are_shown_in_help_and_a_file_value_counts_as_given() {
        let help = Args::command().render_long_help().to_string();
        for shown in [
            "[default: 1024]",
            "[default: 127.0.0.1:55551]",
            "[default: lightkeeper/]",
            "[default: redb]",
            "[default: 536870912]",
        ] {
            assert!(help.contains(shown), "{shown} missing from --help");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("etcd.toml");
        std::fs::write(
            &file,
            "database = \"etcd\"\netcd_endpoints = [\"http://a:2379\"]\nmax_keys_per_put = 500\n",
        )
        .expect("write");
        let err = Config::resolve(
            &parse(&["--config", file.to_str().expect("utf-8")]),
            Some(dir.path()),
        )
        .expect_err("500 keys cannot fit etcd's 128 operations");
        assert!(err.to_string().contains("max_keys_per_put 500"), "{err}");
    }

    #[test]
    fn example_config_lists_every_option() {
        let text = include_str!("../lssd.example.toml");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("example.toml");
        std::fs::write(&path, text).expect("write");
        let example = parse(&["--config", path.to_str().expect("utf-8")]);
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
        // Every key of the example reaches its setting.
        for key in &keys {
            assert!(example.explicit(key), "{key} from the example file");
        }
        assert!(example.value.tls_client_ca.is_some());
    }
}
