//! `statechain-cli`: a statechain wallet (statechain.md §7.3). Every
//! transaction it produces is printed as raw hex for any wallet or node to
//! broadcast. Exit status: 0 ok, 1 error, 2 usage, 3 coin refused by
//! verification (the failed check named) or evidence that proves nothing,
//! 4 SE conflict (409).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use statechain_client::chain::{ChainSource, MockChain};
use statechain_client::remote::{BitcoindChain, EsploraChain};
use statechain_client::{ClientError, Wallet};

#[derive(Parser, Debug)]
#[command(version, about = "Statechain wallet: deposit, send, receive, withdraw")]
struct Cli {
    /// The wallet directory [default: ~/.lightkeeper/statechain-wallet].
    #[arg(long, env = "STATECHAIN_WALLET")]
    wallet: Option<PathBuf>,
    /// The SE (pinned at first use).
    #[arg(long, env = "STATECHAIN_SERVER")]
    server: Option<String>,
    /// Chain source: esplora:URL (an Esplora REST API, e.g.
    /// https://mempool.space/testnet4/api), bitcoind:URL (Core's JSON-RPC,
    /// http://user:password@127.0.0.1:8332; needs -txindex), or mock:FILE
    /// (an offline JSON chain: tip, confirmed txids, spent outpoints)
    /// [default: mock:<wallet>/mockchain.json].
    #[arg(long, env = "STATECHAIN_CHAIN")]
    chain: Option<String>,
    /// PEM CA certificate(s) the SE's HTTPS certificate must chain to
    /// (a private CA) [default: the Mozilla roots].
    #[arg(long, env = "STATECHAIN_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate chain, for an SE that requires one
    /// (`statechaind --tls-client-ca`). Needs --client-key.
    #[arg(
        long,
        env = "STATECHAIN_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "STATECHAIN_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Wallet management.
    Wallet {
        #[command(subcommand)]
        cmd: WalletCmd,
    },
    /// A fresh receive address (share key and auth key).
    Address {
        #[command(subcommand)]
        cmd: AddressCmd,
    },
    /// The pinned SE.
    Info,
    /// The wallet's coins.
    Coins,
    /// Tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Deposits.
    Deposit {
        #[command(subcommand)]
        cmd: DepositCmd,
    },
    /// Sends a coin to a statechain address.
    Send {
        /// The coin.
        id: String,
        /// The receiver's address.
        #[arg(long)]
        to: String,
    },
    /// Receives waiting transfers (every check of §4.5).
    Receive,
    /// Re-runs the checks on a held coin.
    Verify {
        /// The coin.
        id: String,
    },
    /// Withdrawal.
    Withdraw {
        #[command(subcommand)]
        cmd: WithdrawCmd,
    },
    /// Backups.
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Checks evidence offline: a member's alert (`GET /v1/alerts`, one
    /// alert's JSON) or a log equivocation (LKEV, raw or base64). Exit 0 iff
    /// it proves misbehaviour, 3 if it does not.
    VerifyEvidence {
        /// The evidence file.
        file: PathBuf,
        /// The SE's log verifier key [default: the pinned SE's].
        #[arg(long)]
        vkey: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum WalletCmd {
    /// Creates the wallet.
    Create {
        /// regtest, signet, testnet4 or bitcoin.
        #[arg(long, default_value = "regtest")]
        network: String,
    },
}

#[derive(Subcommand, Debug)]
enum AddressCmd {
    /// A new address.
    New,
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// A new token.
    New,
    /// A token's status.
    Status {
        /// The token.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum DepositCmd {
    /// Opens a coin: prints its id and deposit address.
    New {
        /// Amount in sat.
        #[arg(long)]
        amount: u64,
        /// A paid token (else a new one).
        #[arg(long)]
        token: Option<String>,
    },
    /// Co-signs backup 1 against the signed, unbroadcast Tx0.
    Sign {
        /// The coin.
        id: String,
        /// Tx0 (hex).
        #[arg(long)]
        tx0: String,
    },
}

#[derive(Subcommand, Debug)]
enum WithdrawCmd {
    /// Signs the withdrawal (prints its hex).
    Sign {
        /// The coin.
        id: String,
        /// A Bitcoin address.
        #[arg(long)]
        to: String,
        /// sat/vB.
        #[arg(long)]
        fee_rate: u64,
    },
    /// Tells the SE the coin is withdrawn (it erases its share).
    Complete {
        /// The coin.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum BackupCmd {
    /// The newest backup's hex, locktime and blocks left.
    Show {
        /// The coin.
        id: String,
    },
    /// The newest backup and its CPFP child (for submitpackage).
    Cpfp {
        /// The coin.
        id: String,
        /// A Bitcoin address.
        #[arg(long)]
        to: String,
        /// sat/vB.
        #[arg(long)]
        fee_rate: u64,
    },
}

fn chain(spec: &str) -> Result<Box<dyn ChainSource>, ClientError> {
    match spec.split_once(':') {
        Some(("mock", file)) => Ok(Box::new(MockChain::file(PathBuf::from(file))?)),
        Some(("esplora", url)) => Ok(Box::new(EsploraChain::new(url))),
        Some(("bitcoind", url)) => Ok(Box::new(BitcoindChain::new(url)?)),
        _ => Err(ClientError::Usage(format!(
            "--chain {spec:?}: expected mock:FILE, esplora:URL or bitcoind:URL"
        ))),
    }
}

fn run(cli: Cli) -> Result<serde_json::Value, ClientError> {
    let dir = match &cli.wallet {
        Some(d) => d.clone(),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| ClientError::Usage("HOME is not set; pass --wallet".into()))?,
        )
        .join(".lightkeeper/statechain-wallet"),
    };
    if let Cmd::Wallet {
        cmd: WalletCmd::Create { network },
    } = &cli.cmd
    {
        Wallet::create(&dir, network)?;
        return Ok(json!({"created": dir.display().to_string(), "network": network}));
    }
    let spec = cli
        .chain
        .clone()
        .unwrap_or_else(|| format!("mock:{}", dir.join("mockchain.json").display()));
    if let Cmd::VerifyEvidence {
        file,
        vkey: Some(vkey),
    } = &cli.cmd
    {
        return verify_evidence(file, vkey);
    }
    let mut w = Wallet::open(&dir, chain(&spec)?)?;
    w.set_tls(client_tls(&cli)?);
    if let Some(url) = &cli.server {
        w.pin(url)?;
    }
    if let Cmd::VerifyEvidence { file, vkey: None } = &cli.cmd {
        let vkey = w
            .pinned_vkey()
            .ok_or_else(|| ClientError::Usage("no SE pinned: pass --vkey".into()))?;
        return verify_evidence(file, &vkey);
    }
    Ok(match cli.cmd {
        Cmd::Wallet { .. } | Cmd::VerifyEvidence { .. } => unreachable!("handled above"),
        Cmd::Address { cmd: AddressCmd::New } => json!({"address": w.new_address()?}),
        Cmd::Info => json!({"network": format!("{}", w.network()), "coins": w.coins()?.len()}),
        Cmd::Coins => serde_json::to_value(w.coins()?.iter().map(|c| json!({
            "statechain_id": c.statechain_id, "status": c.status, "amount": c.amount,
            "backups": c.backups.as_array().map_or(0, |b| b.len()),
        })).collect::<Vec<_>>()).unwrap_or_default(),
        Cmd::Token { cmd: TokenCmd::New } => w.token_new()?,
        Cmd::Token { cmd: TokenCmd::Status { id } } => w.token_status(&id)?,
        Cmd::Deposit { cmd: DepositCmd::New { amount, token } } => {
            let (id, address) = w.deposit_new(amount, token)?;
            json!({"statechain_id": id, "deposit_address": address})
        }
        Cmd::Deposit { cmd: DepositCmd::Sign { id, tx0 } } => {
            let (backup, locktime, _) = {
                let tx0 = w.deposit_sign(&id, &tx0)?;
                let _ = tx0;
                w.backup_show(&id)?
            };
            json!({"statechain_id": id, "broadcast_tx0": tx0_of(&w, &id)?, "backup": backup, "locktime": locktime})
        }
        Cmd::Send { id, to } => json!({"statechain_id": id, "sent_backups": w.send(&id, &to)?}),
        Cmd::Receive => serde_json::to_value(w.receive()?.iter().map(|r| json!({
            "statechain_id": r.statechain_id, "count": r.count, "blocks_left": r.blocks_left,
            "warning": if r.short_lifetime { Some("fewer than 4 intervals left before the newest backup is valid: withdraw or refresh soon") } else { None },
        })).collect::<Vec<_>>()).unwrap_or_default(),
        Cmd::Verify { id } => json!({"statechain_id": id, "verified_backups": w.verify_held(&id)?}),
        Cmd::Withdraw { cmd: WithdrawCmd::Sign { id, to, fee_rate } } => {
            json!({"statechain_id": id, "withdrawal": w.withdraw(&id, &to, fee_rate)?})
        }
        Cmd::Withdraw { cmd: WithdrawCmd::Complete { id } } => {
            w.withdraw_complete(&id)?;
            json!({"statechain_id": id, "completed": true})
        }
        Cmd::Backup { cmd: BackupCmd::Show { id } } => {
            let (hex, locktime, left) = w.backup_show(&id)?;
            json!({"statechain_id": id, "backup": hex, "locktime": locktime, "blocks_left": left})
        }
        Cmd::Backup { cmd: BackupCmd::Cpfp { id, to, fee_rate } } => {
            let (parent, child) = w.backup_cpfp(&id, &to, fee_rate)?;
            json!({"statechain_id": id, "parent": parent, "child": child})
        }
    })
}

/// `verify-evidence`: an alert (JSON) or LKEV evidence (raw or base64)
/// under the SE's log key; not proving is a refusal (exit 3).
fn verify_evidence(file: &std::path::Path, vkey: &str) -> Result<serde_json::Value, ClientError> {
    use base64::Engine as _;
    let key = tlog_core::note::VerifierKey::parse(vkey.trim())
        .map_err(|e| ClientError::Usage(format!("--vkey: {e}")))?;
    let bytes =
        std::fs::read(file).map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?;
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    if text.starts_with('{') {
        let alert = statechain_core::alert::Alert::from_json(text.as_bytes())
            .map_err(|e| ClientError::NotEvidence(e.to_string()))?;
        let proven = alert
            .verify(&key)
            .map_err(|e| ClientError::NotEvidence(e.to_string()))?;
        return Ok(json!({
            "proves": format!("the SE's log breaks the members' rules: {}", proven.rule),
            "origin": proven.checkpoint.origin,
            "checkpoint_size": proven.checkpoint.size,
        }));
    }
    let raw = match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(raw) if !text.is_empty() => raw,
        _ => bytes,
    };
    let ev = tlog_core::Evidence::verify(&raw, &[key])
        .map_err(|e| ClientError::NotEvidence(e.to_string()))?;
    let size =
        |n: &tlog_core::note::Note| tlog_core::Checkpoint::parse(n.text()).map_or(0, |c| c.size);
    Ok(json!({
        "proves": "the SE's log key signed two inconsistent trees (equivocation)",
        "sizes": [size(&ev.note_a), size(&ev.note_b)],
    }))
}

fn tx0_of(w: &Wallet, id: &str) -> Result<String, ClientError> {
    w.coin(id)?
        .tx0
        .ok_or_else(|| ClientError::Usage("no Tx0".into()))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let json_out = cli.json;
    match run(cli) {
        Ok(v) => {
            if json_out {
                println!("{v}");
            } else {
                print_human(&v);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match &e {
                ClientError::Refused(_) | ClientError::NotEvidence(_) => 3,
                e if e.is_conflict() => 4,
                ClientError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}

/// One `key: value` line per field; transactions as raw hex.
fn print_human(v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) => println!("{k}: {s}"),
                    other => println!("{k}: {other}"),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for i in items {
                print_human(i);
                println!();
            }
        }
        other => println!("{other}"),
    }
}

/// The HTTPS settings from --ca-cert, --client-cert and --client-key.
fn client_tls(cli: &Cli) -> Result<statechain_client::http::ClientTls, ClientError> {
    let client = cli.client_cert.as_deref().zip(cli.client_key.as_deref());
    statechain_client::http::ClientTls::from_files(cli.ca_cert.as_deref(), client)
        .map_err(|e| ClientError::Usage(e.to_string()))
}
