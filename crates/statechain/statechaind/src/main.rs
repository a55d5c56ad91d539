//! `statechaind`: one command starts an SE on regtest with a fresh identity
//! in `~/.lightkeeper/statechaind`, HTTP on 127.0.0.1:9940 and LKTL/1 sync on
//! 127.0.0.1:9939 (statechain.md §3.1; `tlogd` defaults to the same ports,
//! so on one host move one of them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use statechain_core::se::Policy;
use statechaind::server::TokenBackend;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The statechain entity: blind co-signing, key-update transfers and the public statechain log"
)]
struct Args {
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "STATECHAIND_LOG_FORMAT", value_enum, default_value_t = log_init::LogFormat::Text, global = true)]
    log_format: log_init::LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given;
    /// without ADDR: 127.0.0.1:9559). Unauthenticated.
    #[arg(long, env = "STATECHAIND_METRICS_LISTEN", num_args = 0..=1, default_missing_value = "127.0.0.1:9559", global = true)]
    metrics_listen: Option<SocketAddr>,
    /// Keys, KEK and the database [default: ~/.lightkeeper/statechaind].
    #[arg(long, env = "STATECHAIND_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// HTTP API and the log's tiles.
    #[arg(long, env = "STATECHAIND_LISTEN", default_value = "127.0.0.1:9940")]
    listen: SocketAddr,
    /// LKTL/1 federation sync (`nc` shows the banner).
    #[arg(
        long,
        env = "STATECHAIND_SYNC_LISTEN",
        default_value = "127.0.0.1:9939"
    )]
    sync_listen: SocketAddr,
    /// The log origin (lowercase; its key is created on first start and never changes).
    #[arg(
        long,
        env = "STATECHAIND_ORIGIN",
        default_value = "localhost/statechain/se1"
    )]
    origin: String,
    /// regtest, signet, testnet4 or bitcoin.
    #[arg(long, env = "STATECHAIND_NETWORK", default_value = "regtest")]
    network: String,
    /// Blocks from deposit to backup 1's locktime (default 25920 on bitcoin, 2000 elsewhere).
    #[arg(long, env = "STATECHAIND_H_INIT")]
    h_init: Option<u32>,
    /// Locktime decrement per transfer (default 144 on bitcoin, 10 elsewhere).
    #[arg(long, env = "STATECHAIND_INTERVAL")]
    interval: Option<u32>,
    /// Signatures per coin.
    #[arg(long, env = "STATECHAIND_MAX_SIGNATURES", default_value_t = 1024)]
    max_signatures: u32,
    /// Seconds a pending signing session lives.
    #[arg(long, env = "STATECHAIND_SESSION_TTL", default_value_t = 600)]
    session_ttl: u64,
    /// Checkpoint interval in milliseconds.
    #[arg(
        long,
        env = "STATECHAIND_CHECKPOINT_INTERVAL_MS",
        default_value_t = 500
    )]
    checkpoint_interval_ms: u64,
    /// Seconds an idle log waits before announcing its checkpoint again, so
    /// members cosign it anew and wallets (max_age 600 s) keep accepting
    /// it (statechain.md §5.5).
    #[arg(
        long,
        env = "STATECHAIND_REPUBLISH_INTERVAL_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    republish_interval_secs: u64,
    /// Token backend: free (born paid) or manual.
    #[arg(long, env = "STATECHAIND_TOKENS", default_value = "free")]
    tokens: String,
    /// Token fee in sat.
    #[arg(long, env = "STATECHAIND_TOKEN_FEE_SAT", default_value_t = 0)]
    token_fee_sat: u64,
    /// Allow free tokens on bitcoin.
    #[arg(long)]
    danger_free_tokens: bool,
    /// PEM certificate chain: serve the HTTP API over TLS. Needs --tls-key.
    #[arg(long, env = "STATECHAIND_TLS_CERT", value_name = "FILE", global = true)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STATECHAIND_TLS_KEY", value_name = "FILE", global = true)]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates signed by them
    /// (mutual TLS). Needs --tls-cert and --tls-key.
    #[arg(
        long,
        env = "STATECHAIND_TLS_CLIENT_CA",
        value_name = "FILE",
        global = true
    )]
    tls_client_ca: Option<PathBuf>,
    /// Allow a non-loopback HTTP listener without TLS (behind a TLS proxy),
    /// and a non-loopback sync listener (LKTL/1 has no TLS: everything on
    /// it is signed, nothing is secret; tlog.md §10).
    #[arg(long)]
    danger_plaintext: bool,
    /// Re-seal live secrets under a new key-encryption key every this many
    /// seconds (0: never); the old key is shredded.
    #[arg(
        long,
        env = "STATECHAIND_KEK_ROTATE_INTERVAL_S",
        default_value_t = 86_400
    )]
    kek_rotate_interval_s: u64,
    /// `se` (the statechain entity) or `member` (a federation member that
    /// mirrors and validates an SE's log and serves its read API).
    #[arg(long, env = "STATECHAIND_ROLE", default_value = "se")]
    role: String,
    /// With `--role member`: the SE's log verifier key.
    #[arg(long, env = "STATECHAIND_FOLLOW")]
    follow: Option<String>,
    /// A sync address to dial (the SE's, other members'); repeat for more.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// With `--role member`: this member's name; its validating cosigner
    /// key is `<name>/validator`. Give every member its own.
    #[arg(long, env = "STATECHAIND_MEMBER_NAME", default_value = "member")]
    member_name: String,
    /// With `--role se`: a federation member, `<its validating vkey>@<its
    /// sync host:port>[@<its HTTP URL>]` (repeat). Checkpoints are
    /// published once `--cosign-quorum` of them validated and cosigned
    /// them; wallets cross-check coins with the members whose URL is given.
    #[arg(long = "member")]
    members: Vec<String>,
    /// With `--role se`: validating cosignatures needed before a
    /// checkpoint is published [default: a majority of the members; 0 with
    /// none].
    #[arg(long)]
    cosign_quorum: Option<usize>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Key-encryption key maintenance (with the SE stopped).
    Kek {
        #[command(subcommand)]
        cmd: KekCmd,
    },
}

#[derive(clap::Subcommand, Debug)]
enum KekCmd {
    /// Re-seal every live secret under a new KEK, compact the database and
    /// shred the old key (deleted shares become unrecoverable).
    Rotate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    log_init::init(args.log_format);
    let _metrics = metrics_endpoint::serve_if(args.metrics_listen).await?;
    let mainnet = match args.network.as_str() {
        "bitcoin" => true,
        "regtest" | "signet" | "testnet4" => false,
        other => {
            anyhow::bail!("--network {other:?}: expected regtest, signet, testnet4 or bitcoin")
        }
    };
    let tokens = match args.tokens.as_str() {
        "free" => TokenBackend::Free,
        "manual" => TokenBackend::Manual,
        other => anyhow::bail!("--tokens {other:?}: expected free or manual"),
    };
    anyhow::ensure!(
        !(mainnet && tokens == TokenBackend::Free) || args.danger_free_tokens,
        "free tokens on bitcoin need --danger-free-tokens"
    );
    let tls = http_tls::TlsFiles::load_settings(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_client_ca.as_deref(),
    )?;
    http_tls::check_plaintext(args.listen, tls.is_some(), args.danger_plaintext)?;
    tlog_node::peer::check_sync_listen(args.sync_listen, args.danger_plaintext)
        .map_err(anyhow::Error::msg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let data_dir = match args.data_dir.clone() {
        Some(d) => d,
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?)
                .join(".lightkeeper/statechaind")
        }
    };
    if args.role == "member" {
        let follow = args
            .follow
            .clone()
            .context("--role member needs --follow <the SE's log verifier key>")?;
        let running = statechaind::member::start_member(statechaind::member::MemberOptions {
            data_dir: data_dir.clone(),
            listen: args.listen,
            sync_listen: args.sync_listen,
            follow,
            peers: args.peers.clone(),
            node_name: args.member_name.clone(),
            tls: tls.clone(),
        })
        .await
        .with_context(|| format!("starting the member in {}", data_dir.display()))?;
        println!("se_id: {}", running.se_id);
        println!("validating vkey: {}", running.validating_vkey);
        println!("sync (LKTL/1) on {}", running.sync_addr);
        println!("statechaind listening on {scheme}://{}/", running.addr);
        running.serving.await?;
        return Ok(());
    }
    anyhow::ensure!(
        args.role == "se",
        "--role {:?}: expected se or member",
        args.role
    );
    if let Some(Cmd::Kek {
        cmd: KekCmd::Rotate,
    }) = args.cmd
    {
        let epoch = statechaind::daemon::rotate_offline(&data_dir)
            .with_context(|| format!("rotating the KEK in {}", data_dir.display()))?;
        println!("KEK rotated to epoch {epoch}; the old key is shredded");
        return Ok(());
    }
    let policy = Policy {
        h_init: args.h_init.unwrap_or(if mainnet { 25_920 } else { 2000 }),
        interval: args.interval.unwrap_or(if mainnet { 144 } else { 10 }),
        max_signatures: args.max_signatures,
        session_ttl: args.session_ttl,
    };
    let mut members = Vec::new();
    for m in &args.members {
        let mut parts = m.split('@');
        let (Some(vkey), Some(sync), http, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("--member {m:?}: expected <validating vkey>@<host:port>[@<http URL>]");
        };
        let key = tlog_core::note::VerifierKey::parse(vkey)
            .map_err(|e| anyhow::anyhow!("--member {m:?}: {e}"))?;
        members.push(statechaind::daemon::Member {
            key,
            sync: sync.to_string(),
            http: http.map(str::to_string),
        });
    }
    let cosign_quorum = args
        .cosign_quorum
        .unwrap_or(members.len() / 2 + 1)
        .min(members.len());
    anyhow::ensure!(
        args.cosign_quorum.is_none_or(|q| q <= members.len()),
        "--cosign-quorum is more than the {} members given",
        members.len()
    );
    let running = statechaind::daemon::start(statechaind::daemon::Options {
        data_dir: data_dir.clone(),
        listen: args.listen,
        sync_listen: args.sync_listen,
        origin: args.origin.clone(),
        network: args.network.clone(),
        policy,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        tokens,
        fee_sat: args.token_fee_sat,
        node_name: args.origin.clone(),
        peers: args.peers.clone(),
        members,
        cosign_quorum,
        republish_interval: Duration::from_secs(args.republish_interval_secs),
        kek_rotate_interval: (args.kek_rotate_interval_s > 0)
            .then(|| Duration::from_secs(args.kek_rotate_interval_s)),
        tls,
    })
    .await
    .with_context(|| format!("starting the SE in {}", data_dir.display()))?;
    println!("se_id: {}", running.se_id);
    println!("log vkey: {}", running.vkey);
    println!("sync (LKTL/1) on {}", running.sync_addr);
    println!("statechaind listening on {scheme}://{}/", running.addr);
    running.serving.await?;
    Ok(())
}
