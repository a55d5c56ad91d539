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

use clap::Parser;
use lss_core::Limits;
use serde::Deserialize;

/// Default listen address: loopback, the protocol's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:55551";

/// Lightkeeper's Lightning Storage Server: a versioned key-value store for
/// Lightning signers, wire-compatible with the VLS `lss` protocol.
#[derive(Debug, Default, Parser)]
#[command(name = "lssd", version)]
pub struct Args {
    /// TOML config file whose keys are these options' long names with `_`
    /// for `-` (see lssd.example.toml). Flags and environment override it.
    #[arg(long, env = "LSSD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:55551]. Use a non-loopback
    /// address only with TLS: the auth token is a bearer credential.
    #[arg(long, env = "LSSD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory of the database and the server key [default: $HOME/.lightkeeper/lssd].
    /// Created with mode 0700 if missing.
    #[arg(long, env = "LSSD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Use this existing server key file (64 hex characters) instead of
    /// `<data-dir>/server_key`, e.g. the reference lssd's `~/.lss/server_key`,
    /// so existing clients keep working. It must exist.
    #[arg(long, env = "LSSD_SERVER_KEY_FILE", value_name = "FILE")]
    pub server_key_file: Option<PathBuf>,

    /// PEM certificate chain for TLS. Needs --tls-key.
    #[arg(long, env = "LSSD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS. Needs --tls-cert.
    #[arg(long, env = "LSSD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): require client certificates signed by them (mutual TLS).
    /// Needs --tls-cert and --tls-key.
    #[arg(long, env = "LSSD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Longest key in bytes [default: 1024].
    #[arg(long, env = "LSSD_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<NonZeroUsize>,

    /// Longest value in bytes [default: 4194304 (4 MiB)].
    #[arg(long, env = "LSSD_MAX_VALUE_BYTES", value_name = "BYTES")]
    pub max_value_bytes: Option<NonZeroUsize>,

    /// Most keys in one put [default: 10000].
    #[arg(long, env = "LSSD_MAX_KEYS_PER_PUT", value_name = "N")]
    pub max_keys_per_put: Option<NonZeroUsize>,

    /// Largest encoded request in bytes [default: 16777216 (16 MiB)]. At
    /// least 4 MiB is needed by reference clients, which send up to that.
    #[arg(long, env = "LSSD_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<NonZeroUsize>,

    /// Most bytes (keys plus values) one client may store [default: 1073741824 (1 GiB)].
    #[arg(long, env = "LSSD_MAX_NAMESPACE_BYTES", value_name = "BYTES")]
    pub max_namespace_bytes: Option<NonZeroU64>,

    /// Storage backend [default: redb]: `redb` (embedded, in the data
    /// directory) or `postgres` (needs --postgres-url). The server key stays
    /// in the data directory either way.
    #[arg(long, env = "LSSD_DATABASE", value_name = "BACKEND")]
    pub database: Option<Database>,

    /// PostgreSQL connection URL, e.g.
    /// `postgres://lssd:PASSWORD@db.internal:5432/lss?sslmode=require`. Prefer
    /// the environment or the config file for a URL with a password: command
    /// lines are visible to other users.
    #[arg(long, env = "LSSD_POSTGRES_URL", value_name = "URL")]
    pub postgres_url: Option<String>,

    /// PostgreSQL schema for Lightkeeper's tables, created if missing [default: lightkeeper].
    #[arg(long, env = "LSSD_POSTGRES_SCHEMA", value_name = "NAME")]
    pub postgres_schema: Option<String>,

    /// Most PostgreSQL connections [default: 16].
    #[arg(long, env = "LSSD_POSTGRES_POOL_SIZE", value_name = "N")]
    pub postgres_pool_size: Option<NonZeroUsize>,

    /// Require TLS to PostgreSQL and verify the server with this PEM CA file
    /// (otherwise the URL's sslmode decides: `require` verifies against the
    /// public web PKI roots).
    #[arg(long, env = "LSSD_POSTGRES_CA", value_name = "FILE")]
    pub postgres_ca: Option<PathBuf>,
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
}

/// The resolved backend settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded redb in the data directory.
    Redb,
    /// PostgreSQL.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema.
        schema: String,
        /// Pool size.
        pool_size: usize,
        /// CA file for TLS.
        ca: Option<PathBuf>,
    },
}

/// The config file: the same settings as [`Args`], all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Args::listen`].
    pub listen: Option<SocketAddr>,
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
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// An existing key file to adopt, or `None` for `<data_dir>/server_key`.
    pub server_key_file: Option<PathBuf>,
    /// TLS, if enabled.
    pub tls: Option<TlsFiles>,
    /// Size limits.
    pub limits: Limits,
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
        };
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
        let backend = match args.database.or(file.database).unwrap_or_default() {
            Database::Redb => {
                let stray = [
                    ("postgres_url", postgres_url.is_some()),
                    ("postgres_schema", postgres_schema.is_some()),
                    ("postgres_pool_size", postgres_pool_size.is_some()),
                    ("postgres_ca", postgres_ca.is_some()),
                ];
                if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Inconsistent(format!(
                        "{name} is set but database is redb: add database = \"postgres\" (--database postgres)"
                    )));
                }
                Backend::Redb
            }
            Database::Postgres => Backend::Postgres {
                url: postgres_url.ok_or_else(|| {
                    ConfigError::Inconsistent(
                        "database postgres needs postgres_url (--postgres-url or LSSD_POSTGRES_URL)"
                            .into(),
                    )
                })?,
                schema: postgres_schema.unwrap_or_else(|| "lightkeeper".into()),
                pool_size: postgres_pool_size.map_or(16, NonZeroUsize::get),
                ca: postgres_ca,
            },
        };
        Ok(Config {
            listen,
            data_dir,
            server_key_file: args.server_key_file.or(file.server_key_file),
            tls,
            limits,
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
