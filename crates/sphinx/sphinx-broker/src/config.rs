//! Broker settings: flags, then environment (`BROKER_*`), then a TOML file
//! (`--config`, or `broker.toml` in the working directory, which is
//! lightningd's network directory when CLN starts the broker), then
//! defaults. Each setting is declared once, as a field of [`Settings`]
//! (flag, variable, file key, default shown by `--help`); the shared
//! `config-layers` crate applies the file. Lightningd starts its hsmd with fixed arguments, so the
//! environment and the file are the usual way to configure it; the
//! arguments lightningd adds (`--log-io`, `--developer`, …) are accepted and
//! ignored.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ffi::OsString;

use clap::{CommandFactory, Parser};
use config_layers::FileRules;

/// Every setting; `None` means "not given, and no default".
#[derive(Debug, Parser)]
#[command(
    about = "hsmd for Core Lightning that relays to a remote VLS signer over MQTT",
    disable_version_flag = true
)]
pub struct Settings {
    /// TOML file with any of these settings (default: ./broker.toml if present).
    #[arg(long, env = "BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the settings (flags, environment, file) and print the effective
    /// ones, secrets redacted, instead of starting.
    #[arg(long)]
    pub check_config: bool,
    /// Directory for the broker's state (the pinned owner key, the API token).
    #[arg(long, env = "BROKER_DATA_DIR", default_value = "sphinx-broker")]
    pub data_dir: PathBuf,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "BROKER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: log_init::LogFormat,
    /// Embedded MQTT server address [default: 127.0.0.1:1883, or 0.0.0.0:8883
    /// with TLS]. A non-loopback address needs TLS or --mqtt-insecure-plaintext.
    #[arg(long, env = "BROKER_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Serve plaintext MQTT on a non-loopback address: login and LSS tokens
    /// then cross the network readable by anyone on the path.
    #[arg(long, env = "BROKER_MQTT_INSECURE_PLAINTEXT", default_value_t = false, action = clap::ArgAction::Set)]
    pub mqtt_insecure_plaintext: bool,
    /// Also accept sphinx-key devices' login tokens, which are not bound to
    /// a client id and which hsmd's SignMessage can be asked to make.
    #[arg(long, env = "BROKER_SPHINX_KEY_COMPAT", default_value_t = false, action = clap::ArgAction::Set)]
    pub sphinx_key_compat: bool,
    /// TLS certificate chain (PEM) for the embedded MQTT server.
    #[arg(long, env = "BROKER_MQTT_TLS_CERT", requires = "mqtt_tls_key")]
    pub mqtt_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "BROKER_MQTT_TLS_KEY", requires = "mqtt_tls_cert")]
    pub mqtt_tls_key: Option<PathBuf>,
    /// Use an external MQTT server instead (mqtt://host:port).
    #[arg(long, env = "BROKER_MQTT_EXTERNAL")]
    pub mqtt_external: Option<String>,
    /// The broker's username on the external MQTT server.
    #[arg(long, env = "BROKER_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// File with the broker's password on the external MQTT server.
    #[arg(long, env = "BROKER_MQTT_PASSWORD_FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// The owner's node id (hex), as `sphinx-signer init` prints it: only this
    /// key may log in as a signer. Required on the first start; it is then
    /// pinned in the data dir.
    #[arg(long, env = "BROKER_OWNER")]
    pub owner: Option<String>,
    /// Largest MQTT packet, in MiB, either way (1 to 1024). The signer's
    /// whole LSS state travels in one packet when it connects, so this bounds
    /// the state a signer may have; the signer announces its own limit and
    /// the smaller one applies.
    #[arg(long, env = "BROKER_MQTT_MAX_PACKET_MIB", default_value_t = 64)]
    pub mqtt_max_packet_mib: usize,
    /// How old a signer's login token may be, in seconds.
    #[arg(long, env = "BROKER_LOGIN_WINDOW_SECS", default_value_t = 120)]
    pub login_window_secs: u64,
    /// A request without a reply after this many seconds fails, and its CLN
    /// connection is closed.
    #[arg(long, env = "BROKER_REQUEST_TIMEOUT_SECS", default_value_t = NonZeroU64::new(60).unwrap_or(NonZeroU64::MIN))]
    pub request_timeout_secs: NonZeroU64,
    /// The control API's address. It also serves the dashboard at /dashboard.
    #[arg(long, env = "BROKER_HTTP_LISTEN", default_value = "127.0.0.1:8000")]
    pub http_listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given;
    /// without ADDR: 127.0.0.1:9556). Unauthenticated: keep it on loopback
    /// or a monitoring network.
    #[arg(
        long,
        env = "BROKER_METRICS_LISTEN",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:9556"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// The LSS server that stores the signer's state (http:// or https://);
    /// several, comma-separated, to store it with several providers (the
    /// signer then verifies each provider's signed log, docs/protocol.md).
    #[arg(long, env = "BROKER_LSS_URL")]
    pub lss_url: Option<String>,
    /// With several LSS providers: how many must store each change before
    /// the signer releases its reply [default: a majority]. Given with one
    /// provider, that provider's signed log is verified by the signer too.
    #[arg(long, env = "BROKER_LSS_WRITE_QUORUM")]
    pub lss_write_quorum: Option<usize>,
    /// Registration tokens for LSS servers that admit only registered
    /// clients (`lssd --access allowlist`; the operator's `lssd
    /// issue-token`), comma-separated in the order of --lss-url, empty for
    /// a server that needs none. Each admits the signer's client id once;
    /// the server remembers it afterwards.
    #[arg(long, env = "BROKER_LSS_REGISTRATION_TOKEN", hide_env_values = true)]
    pub lss_registration_token: Option<String>,
    /// CA certificate (PEM) for an https:// LSS server with a private CA.
    #[arg(long, env = "BROKER_LSS_CA")]
    pub lss_ca: Option<PathBuf>,
    /// Run without LSS: the signer's state lives only on the signer.
    #[arg(long, env = "BROKER_NO_LSS", default_value_t = false, action = clap::ArgAction::Set)]
    pub no_lss: bool,
    /// Passed by lightningd; ignored.
    #[arg(long, hide = true)]
    pub log_io: bool,
    /// Passed by lightningd; ignored.
    #[arg(long, hide = true)]
    pub developer: bool,
    /// Passed by lightningd; ignored.
    #[arg(long, hide = true)]
    pub dev_disconnect: Option<String>,
}

/// Where the signers connect.
#[derive(Debug, Clone)]
pub enum Mqtt {
    /// The embedded server on this address, with TLS (certificate chain and
    /// key files) or without.
    Embedded(SocketAddr, Option<(PathBuf, PathBuf)>),
    /// An external server.
    External(crate::link::External),
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Only check and print the settings (`--check-config`).
    pub check_only: bool,
    /// How log lines look.
    pub log_format: log_init::LogFormat,
    /// State directory.
    pub data_dir: PathBuf,
    /// MQTT.
    pub mqtt: Mqtt,
    /// Configured owner.
    pub owner: Option<secp256k1::PublicKey>,
    /// What login tokens are accepted.
    pub login: sphinx_wire::login::Rules,
    /// Largest MQTT packet, bytes.
    pub max_packet: usize,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Where signer state is stored; `None` only with `--no-lss`.
    pub lss: Option<LssProviders>,
    /// The control API's address.
    pub http_listen: SocketAddr,
    /// Where metrics are served, if they are.
    pub metrics_listen: Option<SocketAddr>,
}

/// The LSS providers.
#[derive(Debug, Clone)]
pub struct LssProviders {
    /// Each provider, in the order the signer is told.
    pub providers: Vec<lss_client::ConnectOptions>,
    /// `Some` for the verified quorum mode (`quorum-v1`), with how many
    /// providers must store each put; `None` for one provider as the
    /// reference relays.
    pub write_quorum: Option<usize>,
}

/// A setting is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Parses `argv` (program name first): flags, then `BROKER_*`
    /// environment (unless `environment` is false), then the config file
    /// (`--config`, or `./broker.toml` when it exists), then defaults.
    pub fn parse_layers(argv: &[OsString], environment: bool) -> Result<Settings, ConfigError> {
        config_layers::parse(
            Settings::command(),
            argv,
            FileRules {
                file_arg: "config",
                fallback: Some(Path::new("broker.toml")),
                not_in_file: &["check_config", "log_io", "developer", "dev_disconnect"],
                environment,
            },
        )
        .map(|parsed| parsed.value)
        .map_err(|e| match e {
            config_layers::Error::Args(e) => ConfigError(e.render().to_string()),
            other => ConfigError(other.to_string()),
        })
    }

    /// Applies defaults and checks everything.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let lss = match (&self.lss_url, self.no_lss) {
            (Some(_), true) => {
                return Err(ConfigError(
                    "--lss-url and --no-lss contradict each other".into(),
                ))
            }
            (Some(urls), _) => {
                let ca = match &self.lss_ca {
                    Some(ca) => Some(
                        std::fs::read(ca)
                            .map_err(|e| ConfigError(format!("--lss-ca {}: {e}", ca.display())))?,
                    ),
                    None => None,
                };
                let mut providers = Vec::new();
                for url in urls.split(',').map(str::trim) {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError(format!(
                            "--lss-url {url:?} must be http:// or https://"
                        )));
                    }
                    if providers
                        .iter()
                        .any(|p: &lss_client::ConnectOptions| p.url == url)
                    {
                        return Err(ConfigError(format!("--lss-url names {url:?} twice")));
                    }
                    let mut options = lss_client::ConnectOptions::new(url.to_string());
                    if let Some(pem) = &ca {
                        options.tls = Some(lss_client::TlsOptions {
                            ca_pem: Some(pem.clone()),
                            ..Default::default()
                        });
                    }
                    providers.push(options);
                }
                if let Some(tokens) = &self.lss_registration_token {
                    let tokens: Vec<&str> = tokens.split(',').map(str::trim).collect();
                    if tokens.len() != providers.len() {
                        return Err(ConfigError(format!(
                                "--lss-registration-token has {} entries for {} --lss-url server(s): give one per server, empty where none is needed",
                                tokens.len(),
                                providers.len()
                            )));
                    }
                    for (options, token) in providers.iter_mut().zip(tokens) {
                        options.registration_token =
                            Some(token.to_string()).filter(|t| !t.is_empty());
                    }
                }
                let n = providers.len();
                if n > sphinx_wire::lss::MAX_PROVIDERS {
                    return Err(ConfigError(format!(
                        "--lss-url names {n} providers; at most {} are supported",
                        sphinx_wire::lss::MAX_PROVIDERS
                    )));
                }
                let write_quorum = match self.lss_write_quorum {
                    Some(w) if w == 0 || w > n => {
                        return Err(ConfigError(format!(
                            "--lss-write-quorum {w} must be between 1 and the {n} provider(s)"
                        )))
                    }
                    Some(w) => Some(w),
                    None if n > 1 => Some(n / 2 + 1),
                    None => None,
                };
                Some(LssProviders {
                    providers,
                    write_quorum,
                })
            }
            (None, true) => None,
            (None, _) => {
                return Err(ConfigError(
                    "no LSS server: give --lss-url (BROKER_LSS_URL, lss_url in broker.toml), or \
                     --no-lss true to run with the signer's state kept only on the signer"
                        .into(),
                ))
            }
        };
        let owner = match &self.owner {
            Some(hex_key) => Some(
                hex::decode(hex_key)
                    .ok()
                    .and_then(|b| secp256k1::PublicKey::from_slice(&b).ok())
                    .ok_or_else(|| {
                        ConfigError(format!("--owner {hex_key:?} is not a node id in hex"))
                    })?,
            ),
            None => None,
        };
        let mqtt = match self.mqtt_external {
            Some(url) => {
                let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
                    ConfigError(format!("--mqtt-external {url:?} must be mqtt://host:port"))
                })?;
                let (host, port) = rest
                    .trim_end_matches('/')
                    .rsplit_once(':')
                    .unwrap_or((rest, "1883"));
                let port = port
                    .parse()
                    .map_err(|_| ConfigError(format!("--mqtt-external {url:?}: bad port")))?;
                let (Some(username), Some(password_file)) =
                    (self.mqtt_username, self.mqtt_password_file)
                else {
                    return Err(ConfigError(
                        "--mqtt-external needs --mqtt-username and --mqtt-password-file".into(),
                    ));
                };
                let password = std::fs::read_to_string(&password_file)
                    .map_err(|e| ConfigError(format!("{}: {e}", password_file.display())))?;
                Mqtt::External(crate::link::External {
                    host: host.to_string(),
                    port,
                    username,
                    password: password.trim_end().to_string(),
                })
            }
            None => {
                let tls = match (self.mqtt_tls_cert, self.mqtt_tls_key) {
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError(
                            "--mqtt-tls-cert and --mqtt-tls-key go together".into(),
                        ))
                    }
                };
                let listen = self.mqtt_listen.unwrap_or_else(|| match tls {
                    Some(_) => SocketAddr::from(([0, 0, 0, 0], 8883)),
                    None => SocketAddr::from(([127, 0, 0, 1], 1883)),
                });
                if tls.is_none() && !listen.ip().is_loopback() && !self.mqtt_insecure_plaintext {
                    return Err(ConfigError(format!(
                        "--mqtt-listen {listen} is not a loopback address and there is no TLS: \
                         signers' login and LSS tokens would cross the network in plaintext. \
                         Give --mqtt-tls-cert and --mqtt-tls-key, or --mqtt-insecure-plaintext \
                         true to accept that"
                    )));
                }
                Mqtt::Embedded(listen, tls)
            }
        };
        let max_packet_mib = self.mqtt_max_packet_mib;
        if !(1..=1024).contains(&max_packet_mib) {
            return Err(ConfigError(
                "--mqtt-max-packet-mib must be between 1 and 1024".into(),
            ));
        }
        let request_timeout = self.request_timeout_secs.get();
        Ok(Config {
            check_only: self.check_config,
            log_format: self.log_format,
            data_dir: self.data_dir,
            mqtt,
            owner,
            max_packet: max_packet_mib << 20,
            login: sphinx_wire::login::Rules {
                window_secs: self.login_window_secs,
                compat: self.sphinx_key_compat,
            },
            request_timeout: Duration::from_secs(request_timeout),
            lss,
            http_listen: self.http_listen,
            metrics_listen: self.metrics_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "lss_url = \"http://127.0.0.1:9\"\nrequest_timeout_secs = 5\nlogin_window_secs = 30\n\
             http_listen = \"127.0.0.1:8123\"\nmqtt_listen = \"127.0.0.1:1999\"\n",
        )
        .expect("write");
        let argv = |extra: &[&str]| -> Vec<OsString> {
            ["sphinx-broker", "--config", path.to_str().expect("utf8")]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect()
        };
        let config =
            Settings::parse_layers(&argv(&["--request-timeout-secs", "9", "--log-io"]), false)
                .expect("file")
                .resolve()
                .expect("resolve");
        assert_eq!(config.request_timeout, Duration::from_secs(9));
        assert_eq!(config.login.window_secs, 30);
        // Every setting can come from the file.
        assert_eq!(
            config.lss.map(|l| l
                .providers
                .iter()
                .map(|o| o.url.clone())
                .collect::<Vec<_>>()),
            Some(vec!["http://127.0.0.1:9".to_string()])
        );
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:8123");
        assert!(
            matches!(config.mqtt, Mqtt::Embedded(addr, None) if addr.to_string() == "127.0.0.1:1999")
        );
        // The control API is on loopback unless told otherwise.
        let defaults = Settings::parse_from(["sphinx-broker", "--no-lss", "true"])
            .resolve()
            .expect("defaults");
        assert_eq!(defaults.http_listen.to_string(), "127.0.0.1:8000");
        for (text, needle) in [
            (
                "no_lss = true\nrequest_timeout = 5\n",
                "unknown key `request_timeout`",
            ),
            ("no_lss = true\nlog_io = true\n", "unknown key `log_io`"),
            (
                "no_lss = true\nrequest_timeout_secs = 0\n",
                "--request-timeout-secs",
            ),
            ("no_lss = \"maybe\"\n", "--no-lss"),
        ] {
            std::fs::write(&path, text).expect("write");
            let err = Settings::parse_layers(&argv(&[]), false).expect_err(text);
            assert!(
                err.0.contains(needle) && err.0.contains("broker.toml"),
                "{err}"
            );
        }
        // Defaults are stated once and shown by --help.
        let help = Settings::command().render_long_help().to_string();
        for shown in [
            "[default: 127.0.0.1:8000]",
            "[default: 64]",
            "[default: 120]",
        ] {
            assert!(help.contains(shown), "{shown} missing from --help");
        }
    }

    #[test]
    fn plaintext_mqtt_stays_on_loopback_unless_explicitly_allowed() {
        let defaults = Settings::parse_from(["sphinx-broker", "--no-lss", "true"])
            .resolve()
            .expect("defaults");
        assert!(
            matches!(defaults.mqtt, Mqtt::Embedded(addr, None) if addr.ip().is_loopback()),
            "{:?}",
            defaults.mqtt
        );
        assert!(!defaults.login.compat, "sphinx-key tokens are opt-in");
        let public = [
            "sphinx-broker",
            "--no-lss",
            "true",
            "--mqtt-listen",
            "0.0.0.0:1883",
        ];
        let err = Settings::parse_from(public)
            .resolve()
            .expect_err("plaintext");
        assert!(err.0.contains("--mqtt-insecure-plaintext"), "{err}");
        let mut allowed = public.to_vec();
        allowed.extend(["--mqtt-insecure-plaintext", "true"]);
        Settings::parse_from(allowed).resolve().expect("opted out");
        let mut tls = public.to_vec();
        tls.extend(["--mqtt-tls-cert", "c.pem", "--mqtt-tls-key", "k.pem"]);
        Settings::parse_from(tls).resolve().expect("TLS");
    }

    #[test]
    fn running_without_lss_must_be_explicit() {
        let err = Settings::parse_from(["sphinx-broker"])
            .resolve()
            .expect_err("no --no-lss");
        assert!(err.0.contains("--no-lss"), "{err}");
        let err = Settings::parse_from(["sphinx-broker", "--no-lss", "true", "--owner", "zz"])
            .resolve()
            .expect_err("bad owner");
        assert!(err.0.contains("--owner"), "{err}");
    }

    #[test]
    fn several_providers_default_to_a_majority_and_bad_quorums_are_refused() {
        let three = "http://a:1, http://b:1,http://c:1";
        let config = Settings::parse_from(["sphinx-broker", "--lss-url", three])
            .resolve()
            .expect("three");
        let lss = config.lss.expect("lss");
        assert_eq!(lss.providers.len(), 3);
        assert_eq!(lss.providers[1].url, "http://b:1");
        assert_eq!(lss.write_quorum, Some(2));
        let one = Settings::parse_from(["sphinx-broker", "--lss-url", "http://a:1"])
            .resolve()
            .expect("one");
        assert_eq!(
            one.lss.expect("lss").write_quorum,
            None,
            "the reference's relay"
        );
        for (urls, w, needle) in [
            (three, "4", "--lss-write-quorum"),
            (three, "0", "--lss-write-quorum"),
            ("http://a:1,http://a:1", "1", "twice"),
            ("http://a:1,ftp://b", "1", "http://"),
        ] {
            let err =
                Settings::parse_from(["sphinx-broker", "--lss-url", urls, "--lss-write-quorum", w])
                    .resolve()
                    .expect_err(urls);
            assert!(err.0.contains(needle), "{err}");
        }
    }

    #[test]
    fn registration_tokens_go_one_per_server_and_never_show() {
        let urls = "http://a:1,http://b:1";
        let config = Settings::parse_from([
            "sphinx-broker",
            "--lss-url",
            urls,
            "--lss-registration-token",
            "lkreg1.secret-a, ",
        ])
        .resolve()
        .expect("one token, one empty entry");
        let lss = config.lss.clone().expect("lss");
        assert_eq!(
            lss.providers[0].registration_token.as_deref(),
            Some("lkreg1.secret-a")
        );
        assert_eq!(lss.providers[1].registration_token, None);
        let shown = format!("{config:#?}");
        assert!(
            !shown.contains("secret-a"),
            "check-config shows it: {shown}"
        );
        let err = Settings::parse_from([
            "sphinx-broker",
            "--lss-url",
            urls,
            "--lss-registration-token",
            "lkreg1.only-one",
        ])
        .resolve()
        .expect_err("two servers, one token");
        assert!(err.0.contains("2 --lss-url server(s)"), "{err}");
    }

    /// Every setting is a key of the example file, every key of it is a
    /// setting, and the whole example parses.
    #[test]
    fn example_config_lists_every_setting() {
        let text = include_str!("../broker.example.toml");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text).expect("write");
        let argv: Vec<OsString> = ["sphinx-broker", "--config", path.to_str().expect("utf8")]
            .iter()
            .map(OsString::from)
            .collect();
        let settings = Settings::parse_layers(&argv, false).expect("the example parses");
        assert_eq!(settings.lss_write_quorum, Some(2));
        let not_settings = [
            "config",
            "check_config",
            "log_io",
            "developer",
            "dev_disconnect",
            "help",
        ];
        let mut options: Vec<String> = Settings::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| !not_settings.contains(&id.as_str()))
            .collect();
        options.sort();
        let table: toml::Table = toml::from_str(text).expect("table");
        let keys: Vec<String> = table.keys().cloned().collect();
        assert_eq!(keys, options);
    }
}
