//! `sphinx-signer`: create a seed, or run the signer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sphinx_signer::{run, seed, Network};

#[derive(Parser)]
#[command(version, about = "A VLS signer for the sphinx-key broker")]
struct Args {
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "SIGNER_LOG_FORMAT", value_enum, default_value_t = log_init::LogFormat::Text, global = true)]
    log_format: log_init::LogFormat,
    /// Directory for the seed, the signer id and the signer's store.
    #[arg(
        long,
        env = "SIGNER_DATA_DIR",
        default_value = "./signer-data",
        global = true
    )]
    data_dir: PathBuf,
    /// The chain the node runs on.
    #[arg(long, env = "SIGNER_NETWORK", value_enum, default_value_t = Net::Regtest, global = true)]
    network: Net,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new random seed (mode 0600) in the data directory.
    Init,
    /// Connect to the broker and sign.
    Run {
        /// The broker: mqtt://host:port or mqtts://host:port.
        #[arg(long, env = "SIGNER_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
        mqtt_url: String,
        /// CA certificate (PEM) that signed the broker's TLS certificate.
        #[arg(long, env = "SIGNER_MQTT_CA")]
        mqtt_ca: Option<PathBuf>,
        /// Static MQTT username (external brokers such as Mosquitto). Without
        /// it, the signer logs in with its node key.
        #[arg(long, env = "SIGNER_MQTT_USERNAME", requires = "mqtt_password_file")]
        mqtt_username: Option<String>,
        /// File holding the static MQTT password.
        #[arg(long, env = "SIGNER_MQTT_PASSWORD_FILE", requires = "mqtt_username")]
        mqtt_password_file: Option<PathBuf>,
        /// MQTT keep-alive in seconds.
        #[arg(long, default_value_t = 10)]
        keep_alive_secs: u64,
        /// Keep state only in the local store: accept a broker that runs
        /// without LSS. Without this flag the signer insists on the LSS dance
        /// and on an acknowledgement of every change before it replies.
        #[arg(long, env = "SIGNER_NO_LSS")]
        no_lss: bool,
        /// Also accept control messages signed as sphinx-key's app signs
        /// them (a "Lightning Signed Message"). Off by default: that is the
        /// form hsmd's SignMessage produces, which the node host can request.
        #[arg(long, env = "SIGNER_ACCEPT_SPHINX_KEY_CONTROL")]
        accept_sphinx_key_control: bool,
        /// Largest MQTT packet, in MiB, either way. The whole LSS state
        /// arrives in one packet when the signer connects, so this bounds the
        /// state it can restore; the broker has the same setting and the
        /// smaller applies.
        #[arg(long, env = "SIGNER_MQTT_MAX_PACKET_MIB", default_value_t = 64,
              value_parser = clap::value_parser!(u16).range(1..=1024))]
        mqtt_max_packet_mib: u16,
        /// Accept an LSS server without framed MACs (the reference lssd).
        /// Its MACs let the broker regroup a put's entries so that the server
        /// stores something else than the signer sent, undetected; by
        /// default the signer refuses such a server.
        #[arg(long, env = "SIGNER_ALLOW_UNFRAMED_LSS_MACS")]
        allow_unframed_lss_macs: bool,
        /// Require the broker to store every change with at least this many
        /// LSS providers, each verified here by its signed log (the broker
        /// runs with several `--lss-url`s). The host cannot then quietly
        /// lower the quorum or relay to a single provider [default: 1].
        #[arg(long, env = "SIGNER_LSS_MIN_WRITE_QUORUM", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=16))]
        lss_min_write_quorum: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Net {
    Bitcoin,
    Testnet,
    Signet,
    Regtest,
}

impl From<Net> for Network {
    fn from(net: Net) -> Network {
        match net {
            Net::Bitcoin => Network::Bitcoin,
            Net::Testnet => Network::Testnet,
            Net::Signet => Network::Signet,
            Net::Regtest => Network::Regtest,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    log_init::init(args.log_format);
    match args.command {
        Command::Init => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating {}", args.data_dir.display()))?;
            let path = args.data_dir.join("seed");
            seed::create(&path)?;
            let seed = seed::load(&path)?;
            let (node_id, _) = run::node_key(args.network.into(), &seed);
            let cid = hex::encode(seed::signer_id(&args.data_dir.join("signer-id"))?);
            println!("created {}", path.display());
            println!("node id   {node_id}");
            println!("signer id {cid} (its MQTT client id and topic prefix)");
            Ok(())
        }
        Command::Run {
            mqtt_url,
            mqtt_ca,
            mqtt_username,
            mqtt_password_file,
            keep_alive_secs,
            no_lss,
            accept_sphinx_key_control,
            mqtt_max_packet_mib,
            allow_unframed_lss_macs,
            lss_min_write_quorum,
        } => {
            let credentials = match (mqtt_username, mqtt_password_file) {
                (Some(user), Some(file)) => {
                    let pass = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    Some((user, pass.trim_end().to_string()))
                }
                _ => None,
            };
            let config = run::Config {
                url: mqtt_url,
                ca: mqtt_ca,
                credentials,
                network: args.network.into(),
                data_dir: args.data_dir,
                keep_alive: Duration::from_secs(keep_alive_secs),
                mode: if no_lss {
                    sphinx_signer::core::Mode::Local
                } else {
                    sphinx_signer::core::Mode::Lss
                },
                sphinx_key_control: accept_sphinx_key_control,
                max_packet: usize::from(mqtt_max_packet_mib) << 20,
                allow_unframed_macs: allow_unframed_lss_macs,
                min_write_quorum: usize::from(lss_min_write_quorum),
            };
            run::run(config, shutdown()).await?;
            tracing::info!("signer stopped");
            Ok(())
        }
    }
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
