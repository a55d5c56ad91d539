//! `lss-cli`: inspect and write a Lightning Storage Server namespace by hand.
//!
//! Keys live in a directory (default `$HOME/.lightkeeper/lss-cli`, mode 0700):
//! `client-key` (the client's secret key, 64 hex, mode 0600) and
//! `server-pubkey` (the pinned server key, 66 hex), in the reference lss-cli's
//! formats. Values are protected as the reference does, with
//! `SHA-256(client secret key)`, so both CLIs read each other's data.
//!
//! With `--verify`, every put and get is checked against the server's signed
//! log of the namespace (docs/protocol.md "Verifiable log"); the last
//! verified checkpoint is kept in `trusted-<server id>` in the directory (or
//! `--trusted-state`), and a server that contradicts itself leaves an
//! evidence file that `lss-cli verify-evidence` checks with no secrets.
//!
//! Exit status: 0 success, 1 error, 3 version conflict, 4 the server lied
//! (evidence written).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use lss_client::{ConnectOptions, GetError, PrivClient, PutError};
use lss_core::secp256k1::{rand::rngs::OsRng, rand::RngCore, PublicKey, Secp256k1, SecretKey};
use lss_core::{value, KeyValue};
use serde_json::json;

mod quorum;

/// Exit status of a version conflict.
const EXIT_CONFLICT: u8 = 3;
/// Exit status when the server contradicted its signed log.
const EXIT_VIOLATION: u8 = 4;

/// Command-line client for a Lightning Storage Server.
#[derive(Debug, Parser)]
#[command(name = "lss-cli", version)]
struct Cli {
    /// Server URL (`http://` or `https://`).
    #[arg(
        long,
        global = true,
        env = "LSS_CLI_SERVER",
        default_value = "http://127.0.0.1:55551"
    )]
    server: String,
    /// Directory of `client-key` and `server-pubkey` [default: $HOME/.lightkeeper/lss-cli].
    #[arg(long, global = true, env = "LSS_CLI_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// A registration token from the server's operator (`lssd issue-token`),
    /// for a server that admits listed clients only; needed until the server
    /// has registered this client once.
    #[arg(
        long,
        global = true,
        env = "LSS_CLI_REGISTRATION_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    registration_token: Option<String>,
    /// Verify puts and gets against the server's signed log of the namespace.
    #[arg(long, global = true, env = "LSS_CLI_VERIFY")]
    verify: bool,
    /// Where `--verify` keeps the last verified checkpoint
    /// [default: <dir>/trusted-<server id>].
    #[arg(long, global = true, value_name = "FILE")]
    trusted_state: Option<PathBuf>,
    /// Where `--verify` writes evidence of a lying server
    /// [default: <dir>/evidence-<unix time>.json].
    #[arg(long, global = true, value_name = "FILE")]
    evidence_out: Option<PathBuf>,
    /// Several providers instead of `--server`: `init` pins each (in
    /// <dir>/provider-pins), `put` and `get` verify every one and need the
    /// write quorum; providers behind are brought up to date.
    #[arg(long, global = true, value_delimiter = ',', value_name = "URL,URL,...")]
    providers: Vec<String>,
    /// Providers that must acknowledge a put [default: a majority].
    #[arg(long, global = true, value_name = "W")]
    write_quorum: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the client key (if missing) and pin the server's public key.
    Init,
    /// Show the client id, the pinned server key and the server's Info.
    Info,
    /// Check that the server answers.
    Ping {
        /// Message the server echoes.
        #[arg(default_value = "hello")]
        message: String,
    },
    /// Write one key at a version (0 for a new key, else current + 1).
    Put {
        /// The key.
        key: String,
        /// The version to write.
        #[arg(allow_negative_numbers = true)]
        version: i64,
        /// The value, in hex (may be empty: "").
        value: String,
    },
    /// Read every key that starts with PREFIX.
    Get {
        /// Literal key prefix ("" for all).
        prefix: String,
    },
    /// Check an evidence file (needs no keys, no server): exit 0 and print
    /// the violation it proves, or exit 1 saying why it proves nothing.
    VerifyEvidence {
        /// The evidence file (JSON).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    // TLS on ring, even if another dependency enables a second rustls
    // provider (then rustls could not choose one by itself).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Files {
    dir: PathBuf,
}

/// Creates the state directory (0700) and the client key if missing;
/// returns whether the key is new.
fn init_client_key(files: &Files) -> anyhow::Result<bool> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&files.dir)
        .with_context(|| format!("cannot create {}", files.dir.display()))?;
    let key_path = files.client_key_path();
    let created = !key_path.exists();
    if created {
        let key = SecretKey::new(&mut OsRng);
        write_new(&key_path, &hex::encode(key.secret_bytes()), 0o600)?;
    }
    Ok(created)
}

impl Files {
    fn new(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => dir,
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set: give --dir")?)
                .join(".lightkeeper/lss-cli"),
        };
        Ok(Files { dir })
    }

    fn client_key_path(&self) -> PathBuf {
        self.dir.join("client-key")
    }

    fn server_key_path(&self) -> PathBuf {
        self.dir.join("server-pubkey")
    }

    /// Where `--verify` keeps a server's last verified checkpoint.
    fn trusted_path(&self, server: &PublicKey) -> PathBuf {
        self.dir
            .join(format!("trusted-{}", hex::encode(server.serialize())))
    }

    fn client_key(&self) -> anyhow::Result<SecretKey> {
        let path = self.client_key_path();
        read_hex_key(&path, |b| SecretKey::from_slice(b).ok(), "a secret key")
    }

    fn pinned_server(&self) -> anyhow::Result<PublicKey> {
        let path = self.server_key_path();
        read_hex_key(&path, |b| PublicKey::from_slice(b).ok(), "a public key")
    }
}

/// Reads a hex key file written by `init` and parses it with `parse`.
fn read_hex_key<K>(
    path: &Path,
    parse: impl Fn(&[u8]) -> Option<K>,
    what: &str,
) -> anyhow::Result<K> {
    let text = read_initialised(path)?;
    let bytes =
        hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not {what}", path.display()))
}

fn read_initialised(path: &Path) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{} does not exist: run `lss-cli init` first",
                path.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let files = Files::new(cli.dir.clone())?;
    let options = ConnectOptions {
        registration_token: cli.registration_token.clone(),
        ..ConnectOptions::new(cli.server.clone())
    };
    let verify = Verify {
        on: cli.verify,
        trusted_state: cli.trusted_state.clone(),
        evidence_out: cli.evidence_out.clone(),
    };
    if !cli.providers.is_empty() {
        return quorum::run(&cli, &files, &verify).await;
    }
    match cli.command {
        Command::VerifyEvidence { file } => {
            let bytes =
                fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            match lss_verify::Evidence::verify(&bytes) {
                Ok((evidence, violation)) => {
                    if cli.json {
                        println!(
                            "{}",
                            json!({ "proven": true, "server_id": evidence.server_id, "violation": violation.to_string() })
                        );
                    } else {
                        println!("proven: server {} {violation}", evidence.server_id);
                    }
                }
                Err(e) => {
                    if cli.json {
                        println!("{}", json!({ "proven": false, "reason": e.to_string() }));
                    } else {
                        eprintln!("not proven: {e}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Init => {
            let created = init_client_key(&files)?;
            let client_id = files.client_key()?.public_key(&Secp256k1::signing_only());
            let mut grpc = lss_client::connect_channel(&options)
                .await
                .with_context(|| format!("cannot reach {}", cli.server))?;
            let server = lss_client::info(&mut grpc).await?.server_id;
            let server_path = files.server_key_path();
            if server_path.exists() {
                let pinned = files.pinned_server()?;
                if pinned != server {
                    bail!(
                        "{} pins server key {pinned}, but {} has {server}; delete the file to trust the new key",
                        server_path.display(),
                        cli.server
                    );
                }
            } else {
                write_new(&server_path, &server.to_string(), 0o644)?;
            }
            if cli.json {
                println!(
                    "{}",
                    json!({ "client_id": client_id.to_string(), "server_id": server.to_string(), "created_client_key": created })
                );
            } else {
                println!(
                    "client id {client_id}{}",
                    if created { " (new key)" } else { "" }
                );
                println!("server id {server} (pinned in {})", server_path.display());
            }
        }
        Command::Info => {
            let client_id = files.client_key()?.public_key(&Secp256k1::signing_only());
            let pinned = files.pinned_server()?;
            let mut grpc = lss_client::connect_channel(&options)
                .await
                .with_context(|| format!("cannot reach {}", cli.server))?;
            let live = lss_client::info(&mut grpc).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "client_id": client_id.to_string(),
                        "pinned_server_id": pinned.to_string(),
                        "server_id": live.server_id.to_string(),
                        "server_version": live.version,
                        "pin_matches": pinned == live.server_id,
                    })
                );
            } else {
                println!("client id        {client_id}");
                println!("pinned server id {pinned}");
                println!(
                    "server id        {} (protocol {})",
                    live.server_id, live.version
                );
                if pinned != live.server_id {
                    println!("WARNING: the server's key is not the pinned one");
                }
            }
        }
        Command::Ping { message } => {
            let mut grpc = lss_client::connect_channel(&options)
                .await
                .with_context(|| format!("cannot reach {}", cli.server))?;
            let reply = grpc
                .ping(lss_client::proto::PingRequest { message })
                .await
                .map_err(lss_client::RpcError::from)?;
            let reply = reply.into_inner().message;
            if cli.json {
                println!("{}", json!({ "message": reply }));
            } else {
                println!("{reply}");
            }
        }
        Command::Put {
            key,
            version,
            value,
        } => {
            let value =
                hex::decode(&value).with_context(|| format!("value {value:?} is not hex"))?;
            let mut client = connect(&files, &options, &verify).await?;
            match client
                .put(vec![KeyValue::new(key.clone(), version, value)])
                .await
            {
                Ok(()) => {
                    if cli.json {
                        println!("{}", json!({ "ok": true, "key": key, "version": version }));
                    } else {
                        println!("stored {key} at version {version}");
                    }
                }
                Err(PutError::Conflict(conflicts)) => {
                    if cli.json {
                        println!(
                            "{}",
                            json!({ "ok": false, "conflicts": conflicts.iter().map(kv_json).collect::<Vec<_>>() })
                        );
                    } else {
                        for c in &conflicts {
                            if c.version < 0 {
                                println!("conflict: {} does not exist (write version 0)", c.key);
                            } else {
                                println!("conflict: {} is at version {} with value {} (write version {})", c.key, c.version, hex::encode(&c.value), c.version + 1);
                            }
                        }
                    }
                    return Ok(ExitCode::from(EXIT_CONFLICT));
                }
                Err(PutError::Rpc(lss_client::RpcError::Violation(evidence))) => {
                    return verify.report(&files, &evidence);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Get { prefix } => {
            let mut client = connect(&files, &options, &verify).await?;
            let mut nonce = [0u8; 32];
            OsRng.fill_bytes(&mut nonce);
            let kvs = match client.get(&prefix, &nonce).await {
                Ok(kvs) => kvs,
                Err(GetError::Rpc(lss_client::RpcError::Violation(evidence))) => {
                    return verify.report(&files, &evidence);
                }
                Err(e) => return Err(e.into()),
            };
            if cli.json {
                println!(
                    "{}",
                    json!({ "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>() })
                );
            } else {
                for kv in &kvs {
                    println!("{} {} {}", kv.key, kv.version, hex::encode(&kv.value));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--verify` options.
struct Verify {
    on: bool,
    trusted_state: Option<PathBuf>,
    evidence_out: Option<PathBuf>,
}

impl Verify {
    /// Writes the evidence file and says so; exit status 4.
    fn report(&self, files: &Files, evidence: &lss_verify::Evidence) -> anyhow::Result<ExitCode> {
        let path = self.write_evidence(files, evidence, None)?;
        eprintln!(
            "error: the server lied: {}; evidence written to {} (check it with `lss-cli verify-evidence`)",
            evidence.claim,
            path.display()
        );
        Ok(ExitCode::from(EXIT_VIOLATION))
    }

    /// Writes `evidence` to `--evidence-out` (suffixed with `n` when
    /// several are written) or `<dir>/evidence-<unix time>[-n].json`.
    fn write_evidence(
        &self,
        files: &Files,
        evidence: &lss_verify::Evidence,
        n: Option<usize>,
    ) -> anyhow::Result<PathBuf> {
        let suffix = n.map(|n| format!("-{n}")).unwrap_or_default();
        let path = match &self.evidence_out {
            Some(path) => match n {
                None => path.clone(),
                Some(_) => path.with_extension(format!("{}.json", &suffix[1..])),
            },
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                files.dir.join(format!("evidence-{now}{suffix}.json"))
            }
        };
        fs::write(&path, evidence.to_json())
            .with_context(|| format!("cannot write evidence to {}", path.display()))?;
        Ok(path)
    }
}

async fn connect(
    files: &Files,
    options: &ConnectOptions,
    verify: &Verify,
) -> anyhow::Result<PrivClient> {
    let secret = files.client_key()?;
    let pinned = files.pinned_server()?;
    let client = PrivClient::connect(
        options,
        &secret,
        Some(pinned),
        value::secret_for_key(&secret),
    )
    .await
    .with_context(|| format!("cannot connect to {}", options.url))?;
    if !verify.on {
        return Ok(client);
    }
    let file = match &verify.trusted_state {
        Some(file) => file.clone(),
        None => files.trusted_path(&pinned),
    };
    Ok(client.verifying_with_file(file).await?)
}

fn kv_json(kv: &KeyValue) -> serde_json::Value {
    json!({ "key": kv.key, "version": kv.version, "value": hex::encode(&kv.value) })
}
