//! `keyserverd`: a verifiable key directory on a transparency log.
//!
//! `keyserverd` alone serves the domain `localhost` on `127.0.0.1:55560`
//! with its data in `~/.lightkeeper/keyserverd`; on first start it creates
//! the server key and the genesis entry, and prints the pin clients need
//! and the escrow key (once, for paper). Paid calls need payment tokens
//! (keyserver.md §5) unless `--tokens disabled`; `keyserverd tokens sign`
//! issues them offline from a wallet's request file.

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
    #[command(subcommand)]
    command: Option<Command>,
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
    /// LKTL/1 (tlog.md §7) for mirrors (`keyserverd mirror --sync`).
    /// Plaintext: a non-loopback address needs --danger-plaintext
    /// (everything on it is signed).
    #[arg(
        long,
        env = "KEYSERVERD_SYNC_LISTEN",
        default_value = "127.0.0.1:55562"
    )]
    sync_listen: SocketAddr,
    /// No LKTL/1 listener (no mirrors).
    #[arg(long, env = "KEYSERVERD_NO_SYNC", conflicts_with = "sync_listen")]
    no_sync: bool,
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
    /// `required`: CreateUID, UpdateUID and each KeyInit cost one payment
    /// token (§5). `disabled`: free, for private deployments, where
    /// admission rests on rate limits, client certificates or the network.
    #[arg(long, env = "KEYSERVERD_TOKENS", value_enum, default_value_t = Tokens::Required)]
    tokens: Tokens,
    /// Serve LookupUID (keyserver.md §4.6) for clients that do not keep
    /// the chain. The server then learns whom they look up; the signed
    /// answers make omissions provable. 10 lookups a minute per address.
    #[arg(long, env = "KEYSERVERD_ENABLE_LOOKUP")]
    enable_lookup: bool,
    /// The admin listener (POST /admin/tokens/issue, GET /admin/stats;
    /// bearer token in the 0600 file `admin_token`). Non-loopback needs
    /// TLS or --danger-plaintext, as --listen.
    #[arg(
        long,
        env = "KEYSERVERD_ADMIN_LISTEN",
        default_value = "127.0.0.1:55561"
    )]
    admin_listen: SocketAddr,
    /// No admin listener.
    #[arg(long, env = "KEYSERVERD_NO_ADMIN", conflicts_with = "admin_listen")]
    no_admin: bool,
    /// Submit each checkpoint to a witness, `<witness vkey>@<url prefix>`
    /// (e.g. a `tlogd --witness-for` at `…@http://127.0.0.1:9940/witness`);
    /// repeat for more. Clients that require cosignatures (`ks-cli init
    /// --witness`) accept only checkpoints they cosigned.
    #[arg(
        long = "submit-to",
        env = "KEYSERVERD_SUBMIT_TO",
        value_delimiter = ','
    )]
    submit_to: Vec<String>,
    /// Keep the cosignatures of this mirror's validating cosigner (its
    /// verifier key, printed by `keyserverd mirror`) on the checkpoints it
    /// serves, so clients can require them; repeat for more.
    #[arg(
        long = "mirror-cosigner",
        env = "KEYSERVERD_MIRROR_COSIGNERS",
        value_delimiter = ','
    )]
    mirror_cosigners: Vec<String>,
    /// Publish a checkpoint only once this many of those witnesses
    /// cosigned it [default: all of them].
    #[arg(long, env = "KEYSERVERD_PUBLISH_QUORUM")]
    publish_quorum: Option<usize>,
    /// A genesis UID valid this long, in seconds (tests of the renewal).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    test_genesis_lifetime_secs: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tokens {
    Required,
    Disabled,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Payment tokens (keyserver.md §5), offline: the server need not run.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Print the log's verifier key (for witnesses), creating the server
    /// key on first use.
    LogKey(LogKey),
    /// Rotate the server's own key (keyserver.md §3.8) with the server
    /// stopped: an update of its identity, signed by the current key (or
    /// the escrow key from paper), after which the new key signs
    /// everything. Clients follow it from the chain; give witnesses the
    /// new log key printed here.
    RotateKey {
        /// The paper escrow key (a file), when the current key is lost.
        #[arg(long, value_name = "FILE")]
        escrow_file: Option<PathBuf>,
    },
    /// Follow a keyserver's log over LKTL/1 and serve its chain, UIDs and
    /// tiles (keyserver.md §8), every leaf and UID checked before it is
    /// stored. Data in --data-dir [default: ~/.lightkeeper/keyserverd-mirror].
    Mirror(MirrorArgs),
}

#[derive(clap::Args)]
struct MirrorArgs {
    /// The primary's JSON-RPC endpoint (UIDs, Capabilities, relayed calls).
    #[arg(long, env = "KEYSERVERD_MIRROR_FROM", value_name = "URL")]
    from: String,
    /// The primary's --sync-listen, HOST:PORT.
    #[arg(long, env = "KEYSERVERD_MIRROR_SYNC", value_name = "HOST:PORT")]
    sync: String,
    /// The pin clients use: keyserver@<domain>:<hex H_0>.
    #[arg(long, env = "KEYSERVERD_MIRROR_PIN")]
    pin: String,
    /// The mirror's listener (JSON-RPC and tiles).
    #[arg(
        long = "listen",
        env = "KEYSERVERD_MIRROR_LISTEN",
        default_value = "127.0.0.1:55563"
    )]
    listen: SocketAddr,
    /// Its LKTL/1 listener, for mirrors of this mirror.
    #[arg(
        long = "sync-listen",
        env = "KEYSERVERD_MIRROR_SYNC_LISTEN",
        default_value = "127.0.0.1:55564"
    )]
    sync_listen: SocketAddr,
    /// Relay writes, LookupUID and the KeyInit repository to the primary
    /// (otherwise -32060 read_only naming it).
    #[arg(long, env = "KEYSERVERD_MIRROR_PROXY_WRITES")]
    proxy_writes: bool,
    /// Keep this witness's cosignatures on mirrored checkpoints (its
    /// verifier key); repeat for more.
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
    /// Its name on the sync port; its validating cosigner key is
    /// `<name>/validator` (give every mirror its own).
    #[arg(
        long,
        env = "KEYSERVERD_MIRROR_NAME",
        default_value = "keyserver-mirror"
    )]
    name: String,
}

#[derive(clap::Subcommand)]
enum TokensCommand {
    /// Sign a wallet's blinded requests (`ks-cli tokens request`) with the
    /// issuer key; the operator runs this after payment.
    Sign {
        /// The request file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where the responses go (for `ks-cli tokens finalize`).
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// Make finished tokens directly. The issuer sees every one of them,
    /// so they are linkable to whoever receives them: for tests and
    /// private setups only.
    Mint {
        /// How many.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
        count: u64,
        /// Acknowledge that these tokens are linkable.
        #[arg(long, required = true)]
        danger_linkable: bool,
        /// Where they go (for `ks-cli tokens finalize`).
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// Start a new issuer key; tokens of the old one stay redeemable for a
    /// year. Restart the server afterwards.
    Rotate,
}

/// Prints the log's verifier key (creating the server key on first use),
/// for a witness's `--witness-for` before the first start.
#[derive(clap::Args)]
struct LogKey {}

fn tokens_command(
    cmd: TokensCommand,
    data_dir: &std::path::Path,
    domain: &str,
) -> anyhow::Result<()> {
    use keyserverd::tokens;
    let secret = tokens::load_or_create_issuer(data_dir)?;
    match cmd {
        TokensCommand::Sign { input, output } => {
            let text = std::fs::read(&input).with_context(|| input.display().to_string())?;
            let req: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not JSON", input.display()))?;
            let requests: Vec<String> = req["TokenRequests"]
                .as_array()
                .context("no TokenRequests array")?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .context("a request is not a string")
                })
                .collect::<anyhow::Result<_>>()?;
            let responses = tokens::sign_requests(&secret, &requests)?;
            let out = serde_json::json!({
                "Batch": req["Batch"].clone(),
                "TokenResponses": responses,
            });
            durable_file::create_new(&output, out.to_string().as_bytes(), 0o644)
                .with_context(|| output.display().to_string())?;
            tracing::info!(count = requests.len(), "signed token requests");
            eprintln!(
                "signed {} token requests into {}",
                requests.len(),
                output.display()
            );
        }
        TokensCommand::Mint { count, output, .. } => {
            let origin = keyserverd::daemon::origin(domain);
            let digest = ks_core::token::challenge_digest(domain, &origin);
            let minted = tokens::mint(&secret, &digest, count as usize)?;
            let out = serde_json::json!({ "Tokens": minted });
            durable_file::create_new(&output, out.to_string().as_bytes(), 0o600)
                .with_context(|| output.display().to_string())?;
            tracing::warn!(count, "minted linkable tokens");
            eprintln!("minted {count} linkable tokens into {}", output.display());
        }
        TokensCommand::Rotate => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let new = tokens::rotate(data_dir, now)?;
            eprintln!(
                "new token issuer key {}; the old one stays redeemable for a year; restart keyserverd",
                hex::encode(new.key_id())
            );
        }
    }
    Ok(())
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
    if !matches!(args.command, Some(Command::Mirror(_))) {
        http_tls::check_plaintext(args.listen, tls.is_some(), args.danger_plaintext)?;
        if !args.no_sync {
            tlog_node::peer::check_sync_listen(args.sync_listen, args.danger_plaintext)
                .map_err(anyhow::Error::msg)?;
        }
    }
    if !args.no_admin {
        http_tls::check_plaintext(args.admin_listen, tls.is_some(), args.danger_plaintext)
            .context("--admin-listen")?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => {
            let dir = match args.command {
                Some(Command::Mirror(_)) => ".lightkeeper/keyserverd-mirror",
                _ => ".lightkeeper/keyserverd",
            };
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?)
                .join(dir)
        }
    };
    match args.command {
        Some(Command::Mirror(m)) => {
            http_tls::check_plaintext(m.listen, tls.is_some(), args.danger_plaintext)?;
            tlog_node::peer::check_sync_listen(m.sync_listen, args.danger_plaintext)
                .map_err(anyhow::Error::msg)?;
            let running = keyserverd::mirror::start_mirror(keyserverd::mirror::MirrorOptions {
                data_dir: data_dir.clone(),
                from: m.from,
                sync: m.sync,
                pin: m.pin,
                listen: m.listen,
                sync_listen: m.sync_listen,
                proxy_writes: m.proxy_writes,
                witnesses: m.witnesses,
                tls,
                name: m.name,
            })
            .await
            .with_context(|| format!("starting the mirror in {}", data_dir.display()))?;
            eprintln!(
                "mirroring {} ({} entries held); sync on {}",
                running.origin, running.size, running.sync_addr
            );
            eprintln!(
                "validating cosigner: {} (for the primary's --mirror-cosigner)",
                running.validating_vkey
            );
            eprintln!(
                "keyserverd mirror listening on {scheme}://{}/",
                running.addr
            );
            tokio::select! {
                _ = running.serving => anyhow::bail!("the listener stopped"),
                _ = tokio::signal::ctrl_c() => {}
            }
            return Ok(());
        }
        Some(Command::Tokens(cmd)) => {
            std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
            return tokens_command(cmd, &data_dir, &args.domain);
        }
        Some(Command::RotateKey { escrow_file }) => {
            let by = match escrow_file {
                None => keyserverd::daemon::Rotation::ByKey,
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| file.display().to_string())?;
                    let secret = ks_core::paper::decode(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    keyserverd::daemon::Rotation::ByEscrow(Box::new(
                        ed25519_dalek::SigningKey::from_bytes(&secret),
                    ))
                }
            };
            let rotated = keyserverd::daemon::rotate_key(&data_dir, &args.domain, by)
                .await
                .with_context(|| format!("rotating the key in {}", data_dir.display()))?;
            eprintln!(
                "rotated: the keyserver UID at position {} names the new key; log key: {}",
                rotated.position, rotated.vkey
            );
            return Ok(());
        }
        Some(Command::LogKey(_)) => {
            std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
            println!("{}", keyserverd::daemon::log_key(&data_dir, &args.domain)?);
            return Ok(());
        }
        None => {}
    }
    let running = keyserverd::daemon::start(keyserverd::daemon::Options {
        data_dir: data_dir.clone(),
        domain: args.domain,
        listen: args.listen,
        sync_listen: (!args.no_sync).then_some(args.sync_listen),
        mirror_cosigners: args.mirror_cosigners,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms),
        limits: keyserverd::limits::LimitsConfig {
            enabled: !args.no_rate_limits,
            registrations_per_hour: args.registrations_per_hour,
        },
        tls,
        tokens_required: args.tokens == Tokens::Required,
        lookup: args.enable_lookup,
        admin_listen: (!args.no_admin).then_some(args.admin_listen),
        submit_to: args.submit_to,
        publish_quorum: args.publish_quorum,
        #[cfg(feature = "test-faults")]
        genesis_lifetime_secs: args.test_genesis_lifetime_secs,
        #[cfg(not(feature = "test-faults"))]
        genesis_lifetime_secs: None,
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
    eprintln!("log key: {}", running.vkey);
    if let Some(admin) = running.admin_addr {
        eprintln!("keyserverd admin on {scheme}://{admin}/ (token in admin_token)");
    }
    if let Some(sync) = running.sync_addr {
        eprintln!("keyserverd sync (LKTL/1) on {sync}");
    }
    eprintln!("keyserverd listening on {scheme}://{}/", running.addr);
    tokio::select! {
        _ = running.serving => anyhow::bail!("the listener stopped"),
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
