//! `keyserverd`: a verifiable key directory on a transparency log.
//!
//! `keyserverd` alone serves the domain `localhost` on `127.0.0.1:55560`
//! with its data in `~/.lightkeeper/keyserverd`; on first start it creates
//! the server key and the genesis entry, and prints the pin clients need
//! and the escrow key (once, for paper).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "A verifiable key directory (keyserver.md): JSON-RPC on POST /, the hash chain as a transparency log"
)]
struct Args {
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "KEYSERVERD_LOG_FORMAT", value_enum, default_value_t = log_init::LogFormat::Text)]
    log_format: log_init::LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given;
    /// without ADDR: 127.0.0.1:9558). Unauthenticated.
    #[arg(long, env = "KEYSERVERD_METRICS_LISTEN", num_args = 0..=1, default_missing_value = "127.0.0.1:9558")]
    metrics_listen: Option<SocketAddr>,
    /// Where the key and the database live [default: ~/.lightkeeper/keyserverd].
    #[arg(long, env = "KEYSERVERD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The domain whose identities this server keeps (fixed at first start).
    #[arg(long, env = "KEYSERVERD_DOMAIN", default_value = "localhost")]
    domain: String,
    /// The listener (JSON-RPC and the log's tiles). A non-loopback address
    /// needs TLS or --danger-plaintext.
    #[arg(long, env = "KEYSERVERD_LISTEN", default_value = "127.0.0.1:55560")]
    listen: SocketAddr,
    /// PEM certificate chain: serve over TLS (keyserver.md §2.1). Needs --tls-key.
    #[arg(long, env = "KEYSERVERD_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KEYSERVERD_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates signed by them
    /// (mutual TLS; with tokens disabled, one way to admit only known
    /// clients). Needs --tls-cert and --tls-key.
    #[arg(long, env = "KEYSERVERD_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Allow a non-loopback listener without TLS (behind a TLS proxy).
    /// Integrity never depends on TLS (everything relied on is signed).
    #[arg(long, env = "KEYSERVERD_DANGER_PLAINTEXT")]
    danger_plaintext: bool,
    /// How often the chain is signed and published, in ms (100..=60000).
    #[arg(long, env = "KEYSERVERD_CHECKPOINT_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    checkpoint_interval_ms: u64,
    /// Turn the rate limits of keyserver.md §4.6 off (private deployments
    /// and benchmarks only: with tokens disabled they are what admits
    /// registrations).
    #[arg(long, env = "KEYSERVERD_NO_RATE_LIMITS")]
    no_rate_limits: bool,
    /// Free registrations (CreateUID while tokens are disabled) per client
    /// address and hour.
    #[arg(long, env = "KEYSERVERD_REGISTRATIONS_PER_HOUR", default_value_t = 10)]
    registrations_per_hour: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    log_init::init(args.log_format);
    let _metrics = metrics_endpoint::serve_if(args.metrics_listen).await?;
    #[cfg(feature = "test-faults")]
    tracing::warn!(
        "built with test-faults: this keyserver forges on request (Test.ForgeUID); for tests only"
    );
    let tls = http_tls::TlsFiles::load_settings(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_client_ca.as_deref(),
    )?;
    http_tls::check_plaintext(args.listen, tls.is_some(), args.danger_plaintext)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?)
                .join(".lightkeeper/keyserverd")
        }
    };
    let running = keyserverd::daemon::start(keyserverd::daemon::Options {
        data_dir: data_dir.clone(),
        domain: args.domain,
        listen: args.listen,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms),
        limits: keyserverd::limits::LimitsConfig {
            enabled: !args.no_rate_limits,
            registrations_per_hour: args.registrations_per_hour,
        },
        tls,
    })
    .await
    .with_context(|| format!("starting the keyserver in {}", data_dir.display()))?;
    if let Some(escrow) = &running.escrow {
        eprintln!(
            "escrow key of {} (write it on paper now; it is not stored):\n  {}",
            running.keyserver.config().keyserver_identity(),
            ks_core::paper::encode(escrow.as_bytes())
        );
    }
    eprintln!("pin: {}", running.pin);
    eprintln!("keyserverd listening on {scheme}://{}/", running.addr);
    tokio::select! {
        _ = running.serving => anyhow::bail!("the listener stopped"),
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
