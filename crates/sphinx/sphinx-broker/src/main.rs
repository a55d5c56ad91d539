//! `sphinx-broker`: started by lightningd as its hsmd (`subdaemon=hsmd:…`).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sphinx_broker::config::{Mqtt, Settings};
use sphinx_broker::link::{self, SignerPolicy};
use sphinx_broker::owner::Owner;
use sphinx_broker::scheduler::Scheduler;
use sphinx_broker::{cln, fdio};

fn main() -> ExitCode {
    // lightningd compares each subdaemon's --version with its own.
    if std::env::args().any(|a| a == "--version") {
        let version = std::env::var("BROKER_CLN_VERSION")
            .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string());
        println!("{version}");
        return ExitCode::SUCCESS;
    }
    // Adopt fd 3 before anything else can open a file.
    let master = fdio::take_master_fd();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let config = match Settings::parse_layers(&argv, true).and_then(Settings::resolve) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sphinx-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    if config.check_only {
        println!("configuration OK; effective settings (secrets redacted):\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    log_init::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sphinx-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(master, config)) {
        Ok(()) => {
            tracing::info!("lightningd closed fd 3; broker stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("sphinx-broker: {e:#}");
            eprintln!("sphinx-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    master: std::io::Result<std::os::fd::OwnedFd>,
    config: sphinx_broker::config::Config,
) -> anyhow::Result<()> {
    let master = master?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let _metrics = metrics_endpoint::serve_if(config.metrics_listen).await?;
    sphinx_broker::metrics::describe();
    let owner = Arc::new(Owner::load(&config.data_dir, config.owner)?);
    let gate = Arc::new(link::Gate::new(owner, config.login));
    if config.login.compat {
        tracing::warn!("sphinx-key compatibility: unbound login tokens are accepted; a captured one can be replayed under another client id until first used");
    }
    match &config.lss {
        Some(lss) => {
            let urls: Vec<&str> = lss.providers.iter().map(|p| p.url.as_str()).collect();
            match lss.write_quorum {
                None => {
                    tracing::info!(url = %urls[0], "signer state is stored in LSS before every reply")
                }
                Some(w) => tracing::info!(
                    providers = %urls.join(","),
                    write_quorum = w,
                    "signer state is stored by a quorum of LSS providers, each verified by the signer, before every reply"
                ),
            }
        }
        None => tracing::warn!(
            "running WITHOUT LSS (--no-lss): the signer's state is kept only on the signer"
        ),
    }
    let (link, events) = match config.mqtt {
        Mqtt::Embedded(listen, tls) => {
            let tls = match tls {
                Some((cert, key)) => {
                    Some(link::tls_acceptor(&cert, &key).map_err(anyhow::Error::msg)?)
                }
                None => None,
            };
            let policy = SignerPolicy { gate: gate.clone() };
            let (link, events, addr) = link::embedded(listen, tls, policy, config.max_packet)
                .await
                .map_err(|e| {
                    in_use(
                        e,
                        listen,
                        "mqtt_listen (--mqtt-listen, BROKER_MQTT_LISTEN)",
                        "another MQTT server such as Mosquitto may hold it",
                    )
                })?;
            tracing::info!(%addr, "embedded MQTT server listening");
            (link, events)
        }
        Mqtt::External(external) => {
            tracing::info!(host = %external.host, port = external.port, "using an external MQTT server");
            link::external(external, gate.clone(), config.max_packet)
        }
    };
    let keys_file = config.data_dir.join("lss-provider-keys");
    let lss = config.lss.clone().map(|l| match l.write_quorum {
        Some(w) => sphinx_broker::lss::Relay::quorum(l.providers, w).remember_keys(keys_file),
        None => sphinx_broker::lss::Relay::new(
            l.providers.into_iter().next().expect("one URL at least"),
        ),
    });
    let scheduler = Scheduler::start(link, events, config.request_timeout, lss, config.max_packet);
    let token_path = config.data_dir.join("api-token");
    let token = sphinx_broker::api::token(&token_path)
        .with_context(|| format!("the API token in {}", token_path.display()))?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|e| {
            in_use(
                e,
                config.http_listen,
                "http_listen (--http-listen, BROKER_HTTP_LISTEN)",
                "another broker or service may hold it",
            )
        })?;
    tracing::info!(addr = %listener.local_addr()?, token = %token_path.display(), "control API listening");
    let api = tokio::spawn(sphinx_broker::api::serve(
        listener,
        scheduler.clone(),
        token,
        config.max_packet,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let _api = AbortOnDrop(api);
    tokio::select! {
        served = cln::serve_master(master, scheduler) => served.context("serving lightningd on fd 3"),
        _ = term.recv() => {
            tracing::info!("SIGTERM");
            Ok(())
        }
    }
}

/// A listener that could not be opened, with the setting to change.
fn in_use(
    error: std::io::Error,
    addr: std::net::SocketAddr,
    setting: &str,
    hint: &str,
) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!("{addr} is already in use ({hint}): set {setting} to a free address")
    } else {
        anyhow::anyhow!("cannot listen on {addr}: {error}; check {setting}")
    }
}

/// Stops the API task when `run` returns.
struct AbortOnDrop(tokio::task::JoinHandle<std::io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
