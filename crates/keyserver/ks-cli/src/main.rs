//! `ks-cli`: Alice and Bob at a keyserver, with every check of
//! keyserver.md §6 done before anything is believed.
//!
//! State lives in `--dir` (default `~/.lightkeeper/ks-cli`), one redb file
//! holding the verified chain, the key schedule and own private keys
//! (0600). Exit codes: 0 ok, 1 error, 2 usage, 3 not found / taken / no
//! KeyInit, 4 misbehaviour detected, 5 payment required.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ks_client::{Client, ClientError, OwnIdentity, Pin};

#[derive(Parser)]
#[command(
    version,
    about = "Keyserver client: register, publish KeyInits, look up and start sessions, verifying everything"
)]
struct Args {
    /// Where the state lives [default: ~/.lightkeeper/ks-cli].
    #[arg(long, env = "KS_CLI_DIR", global = true)]
    dir: Option<PathBuf>,
    /// Print results as JSON (a stable format).
    #[arg(long, global = true)]
    json: bool,
    /// PEM CA certificate(s) the keyserver's HTTPS certificate must chain
    /// to (a private CA) [default: the Mozilla roots].
    #[arg(long, env = "KS_CLI_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate chain, for a keyserver that requires one
    /// (`keyserverd --tls-client-ca`). Needs --client-key.
    #[arg(
        long,
        env = "KS_CLI_CLIENT_CERT",
        value_name = "FILE",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "KS_CLI_CLIENT_KEY",
        value_name = "FILE",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The HTTPS settings from --ca-cert, --client-cert and --client-key.
fn client_tls(args: &Args) -> Result<http_tls::ClientTls, Failure> {
    let client = args.client_cert.as_deref().zip(args.client_key.as_deref());
    Ok(
        http_tls::ClientTls::from_files(args.ca_cert.as_deref(), client)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )
}

#[derive(Subcommand)]
enum Command {
    /// Pins a keyserver and does the first verified sync.
    Init {
        /// The JSON-RPC URL, e.g. http://127.0.0.1:55560/.
        #[arg(long)]
        server: String,
        /// `keyserver@<domain>:<hex H_0>`, as keyserverd printed it.
        #[arg(long)]
        pin: String,
        /// Accept only checkpoints cosigned by this witness (its vkey, as
        /// `tlogd --witness-for` wrote it to `witness-vkey`); repeat for
        /// more. Without any, a split view goes unnoticed until gossip.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// How many of the witnesses must cosign [default: all].
        #[arg(long, requires = "witnesses")]
        witness_quorum: Option<usize>,
    },
    /// Brings the local chain up to the latest checkpoint.
    Sync,
    /// Prints the verified Capabilities.
    Capabilities,
    /// Registers an identity with a fresh SIGKEY, SIGESCROW and static key.
    Register {
        /// e.g. alice@example.org.
        identity: String,
        /// `strict` (refuse fallback KeyInits) or `mandatory`.
        #[arg(long, default_value = "strict")]
        forwardsec: String,
    },
    /// Updates an identity, rotating its SIGKEY.
    Update {
        /// The identity.
        identity: String,
        /// The paper escrow key (a file), when SIGKEY is lost.
        #[arg(long)]
        escrow: Option<PathBuf>,
    },
    /// KeyInits: publish, list, flush.
    Keyinit {
        #[command(subcommand)]
        command: KeyinitCommand,
    },
    /// Checks that a registration is in the published chain.
    Confirm {
        /// The identity.
        identity: String,
        /// The escrow key is on paper: delete it from the state file.
        #[arg(long)]
        escrow_printed: bool,
        /// How long to wait for publication, in seconds.
        #[arg(long, default_value_t = 3600)]
        max_wait: u64,
    },
    /// Looks an identity up and verifies its whole UID chain.
    Lookup {
        /// The identity.
        identity: String,
        /// Also ask the server (LookupUID, if it serves it) and check its
        /// signed answer against the local chain: an entry left out is
        /// `omitted-lookup` evidence (exit 4). The server learns the name.
        #[arg(long)]
        at_server: bool,
    },
    /// Fetches a KeyInit of an identity and prints the SessionStart.
    SessionStart {
        /// The identity.
        identity: String,
    },
    /// Prints the verified checkpoint.
    Checkpoint,
    /// Exits 0 if the entry (b64) is in the verified chain, 3 if not.
    CheckEntry {
        /// A peer's LASTENTRY.
        entry: String,
    },
    /// Checks another party's checkpoint (a signed note file) against the
    /// verified chain: exit 4 with `fork` evidence if they conflict.
    CheckCheckpoint {
        /// The note.
        file: PathBuf,
    },
    /// Scans the chain for entries of the identities held here that their
    /// owner did not make (takeovers); exit 4 with evidence if any.
    Monitor,
    /// Checks an evidence file offline: exit 0 iff it proves misbehaviour.
    VerifyEvidence {
        /// The file.
        file: PathBuf,
    },
    /// Payment tokens (keyserver.md §5): request, finalize, balance.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Blinds fresh tokens for the keyserver's verified issuer key and
    /// writes the requests for the operator (`keyserverd tokens sign`);
    /// the blinding secrets stay here.
    Request {
        /// How many tokens.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
        count: u64,
        /// The request file to hand to the operator.
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// Reads the operator's response (or minted tokens), unblinds and
    /// verifies every token, and adds them to the wallet.
    Finalize {
        /// The response file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Tokens in the wallet, and requests awaiting an answer.
    Balance,
}

#[derive(Subcommand)]
enum KeyinitCommand {
    /// Publishes one-time and fallback KeyInits.
    Publish {
        /// The identity.
        identity: String,
        /// One-time KeyInits.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Fallback KeyInits.
        #[arg(long, default_value_t = 2)]
        fallback: usize,
        /// MIXADDRESS.
        #[arg(long)]
        mixaddress: String,
        /// NYMADDRESS (base64).
        #[arg(long)]
        nymaddress: String,
        /// How long they are valid, in seconds (the server accepts up to
        /// 90 days; never beyond the UID's NOTAFTER).
        #[arg(long, default_value_t = ks_client::KEYINIT_LIFETIME,
              value_parser = clap::value_parser!(u64).range(1..=90 * 86_400))]
        valid_for_secs: u64,
    },
    /// Counts the forward-secret keys held.
    List {
        /// The identity.
        identity: String,
    },
    /// Deletes every KeyInit of the identity at the server.
    Flush {
        /// The identity.
        identity: String,
    },
}

/// An error with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Rpc { code, .. } => match code {
                -32010 | -32011 | -32020 | -32031 => 3,
                -32003..=-32001 => 5,
                _ => 1,
            },
            ClientError::NotFound(_) | ClientError::Taken(_) | ClientError::NoOneTimeKeyInit => 3,
            ClientError::Rollback { .. }
            | ClientError::Fork { .. }
            | ClientError::BadData(_)
            | ClientError::PinMismatch
            | ClientError::Misbehaviour(_)
            | ClientError::Evidence { .. }
            | ClientError::BadKeyInit(_) => 4,
            ClientError::PaymentRequired { .. } => 5,
            ClientError::Unwitnessed(_) => 1,
            ClientError::Usage(_) => 2,
            ClientError::Transport(_) | ClientError::Storage(_) => 1,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure {
            code: 1,
            message: format!("{e:#}"),
        }
    }
}

const NO_WITNESSES: &str = "warning: no witnesses required (init --witness): checkpoints are \
trusted on the keyserver's signature alone, so a split view goes unnoticed until gossip";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ks-cli: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn state_path(dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let dir = match dir {
        Some(d) => d,
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --dir"))?,
        )
        .join(".lightkeeper/ks-cli"),
    };
    Ok(dir.join("state.redb"))
}

fn own(client: &Client, identity: &str) -> Result<OwnIdentity, Failure> {
    let mapped =
        ks_core::identity::map(identity).map_err(|e| anyhow::anyhow!("{identity}: {e}"))?;
    client.load_own(&mapped)?.ok_or_else(|| Failure {
        code: 3,
        message: format!("{mapped} is not one of this state's identities"),
    })
}

fn print(json: bool, value: serde_json::Value, human: String) {
    if json {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

fn run(args: Args) -> Result<(), Failure> {
    if let Command::VerifyEvidence { file } = &args.command {
        let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let evidence = <ks_core::evidence::Evidence as ks_core::lcj::Lcj>::from_lcj(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not an evidence file: {e}", file.display()))?;
        let proves = ks_core::evidence::verify(&evidence).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("proven: {proves}");
        return Ok(());
    }
    let tls = client_tls(&args)?;
    let path = state_path(args.dir)?;
    let evidence_dir = path.with_file_name("evidence");
    run_in(args.command, args.json, &path, &tls).map_err(|(f, evidence)| {
        let Some(evidence) = evidence else { return f };
        let file = evidence_dir.join(format!(
            "{}-{}.json",
            evidence.kind,
            evidence.identity.replace('@', "_at_")
        ));
        let written = std::fs::create_dir_all(&evidence_dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                durable_file::replace(&file, &evidence.to_file(), 0o644)
                    .map_err(anyhow::Error::from)
            });
        match written {
            Ok(()) => Failure {
                code: f.code,
                message: format!("{}\nevidence written to {}", f.message, file.display()),
            },
            Err(e) => Failure {
                code: f.code,
                message: format!("{} (evidence not written: {e})", f.message),
            },
        }
    })
}

type RunError = (Failure, Option<Box<ks_core::evidence::Evidence>>);

impl From<Failure> for RunError {
    fn from(f: Failure) -> Self {
        (f, None)
    }
}

fn run_in(
    command: Command,
    json: bool,
    path: &std::path::Path,
    tls: &http_tls::ClientTls,
) -> Result<(), RunError> {
    let wrap = |e: ClientError| -> RunError {
        match e {
            ClientError::Evidence {
                failure,
                proves,
                evidence,
            } => (
                Failure {
                    code: 4,
                    message: format!("misbehaviour: {failure}; the evidence proves: {proves}"),
                },
                Some(evidence),
            ),
            e => (Failure::from(e), None),
        }
    };
    run_cmd(command, json, path, tls).map_err(|e| match e {
        CmdError::Client(e) => wrap(e),
        CmdError::Other(f) => (f, None),
    })
}

enum CmdError {
    Client(ClientError),
    Other(Failure),
}

impl From<ClientError> for CmdError {
    fn from(e: ClientError) -> Self {
        CmdError::Client(e)
    }
}

impl From<Failure> for CmdError {
    fn from(f: Failure) -> Self {
        CmdError::Other(f)
    }
}

impl From<anyhow::Error> for CmdError {
    fn from(e: anyhow::Error) -> Self {
        CmdError::Other(e.into())
    }
}

fn run_cmd(
    command: Command,
    json: bool,
    path: &std::path::Path,
    tls: &http_tls::ClientTls,
) -> Result<(), CmdError> {
    let path = path.to_path_buf();
    if let Command::Init {
        server,
        pin,
        witnesses,
        witness_quorum,
    } = &command
    {
        let pin = Pin::parse(pin)
            .ok_or_else(|| anyhow::anyhow!("the pin is keyserver@<domain>:<64 hex digits>"))?;
        let mut client = Client::open(&path, Some(server), Some(pin))?;
        client.set_tls(tls);
        if !witnesses.is_empty() {
            client.require_witnesses(witnesses, witness_quorum.unwrap_or(witnesses.len()))?;
        } else {
            eprintln!("{NO_WITNESSES}");
        }
        let synced = client.sync()?;
        let caps = client.capabilities()?;
        print(
            json,
            serde_json::json!({"size": synced.to, "origin": caps.capabilities.origin}),
            format!(
                "pinned {} ({}); verified {} entries",
                caps.capabilities.keyserver_identity, caps.capabilities.origin, synced.to
            ),
        );
        return Ok(());
    }
    let mut client = Client::open(&path, None, None)?;
    client.set_tls(tls);
    if !client.requires_witnesses() && !matches!(command, Command::Tokens { .. }) {
        eprintln!("{NO_WITNESSES}");
    }
    match command {
        Command::Init { .. } | Command::VerifyEvidence { .. } => unreachable!("handled above"),
        Command::CheckCheckpoint { file } => {
            let bytes =
                std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let size = client.check_checkpoint(&bytes)?;
            print(
                json,
                serde_json::json!({"consistent": true, "size": size}),
                format!("consistent with the verified chain at size {size}"),
            );
        }
        Command::Monitor => {
            client.sync()?;
            let owns = client.owns()?;
            for me in &owns {
                let found = client.lookup(&me.identity)?;
                let newest = found.map(|v| v.message);
                if newest.as_ref() != Some(&me.uid) {
                    return Err(Failure {
                        code: 4,
                        message: format!(
                            "unexplained entry: the chain's newest UID of {} is not one held here",
                            me.identity
                        ),
                    }
                    .into());
                }
            }
            print(
                json,
                serde_json::json!({"identities": owns.len(), "ok": true}),
                format!(
                    "{} identities checked; every entry is their owner's",
                    owns.len()
                ),
            );
        }
        Command::Sync => {
            let s = client.sync()?;
            print(
                json,
                serde_json::json!({"from": s.from, "to": s.to}),
                format!("verified {} → {} entries", s.from, s.to),
            );
        }
        Command::Capabilities => {
            let caps = client.capabilities()?;
            let bytes = ks_core::lcj::Lcj::to_lcj(&caps);
            println!("{}", String::from_utf8_lossy(&bytes));
        }
        Command::Register {
            identity,
            forwardsec,
        } => {
            let own = client.register(&identity, &forwardsec)?;
            client.save_own(&own)?;
            let escrow = own
                .escrow
                .as_ref()
                .map(|e| ks_core::paper::encode(e.as_bytes()))
                .unwrap_or_default();
            print(
                json,
                serde_json::json!({"identity": own.identity, "position": own.reply.entry.hashchain_pos, "escrow": escrow}),
                format!(
                    "registered {} at position {}\nescrow key (write it on paper; `confirm --escrow-printed` deletes it here):\n  {escrow}",
                    own.identity, own.reply.entry.hashchain_pos
                ),
            );
        }
        Command::Update { identity, escrow } => {
            let mut me = own(&client, &identity)?;
            let recover = match escrow {
                None => None,
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    let secret = ks_core::paper::decode(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    Some(ed25519_dalek::SigningKey::from_bytes(&secret))
                }
            };
            client.update(&mut me, recover.as_ref())?;
            client.save_own(&me)?;
            print(
                json,
                serde_json::json!({"identity": me.identity, "position": me.reply.entry.hashchain_pos, "msgcount": me.uid.content.msg_count}),
                format!(
                    "updated {} at position {} (MSGCOUNT {})",
                    me.identity, me.reply.entry.hashchain_pos, me.uid.content.msg_count
                ),
            );
        }
        Command::Keyinit { command } => match command {
            KeyinitCommand::Publish {
                identity,
                count,
                fallback,
                mixaddress,
                nymaddress,
                valid_for_secs,
            } => {
                let mut me = own(&client, &identity)?;
                let receipts = client.publish_key_inits_for(
                    &mut me,
                    count,
                    fallback,
                    &mixaddress,
                    &nymaddress,
                    valid_for_secs,
                )?;
                client.save_own(&me)?;
                print(
                    json,
                    serde_json::json!({"published": receipts.len()}),
                    format!("published {} KeyInits ({count} one-time, {fallback} fallback); receipts verified", receipts.len()),
                );
            }
            KeyinitCommand::List { identity } => {
                let me = own(&client, &identity)?;
                print(
                    json,
                    serde_json::json!({"held": me.pf_secrets.len()}),
                    format!("{} forward-secret keys held", me.pf_secrets.len()),
                );
            }
            KeyinitCommand::Flush { identity } => {
                let me = own(&client, &identity)?;
                let r = client.flush(&me)?;
                print(
                    json,
                    serde_json::json!({"flushed": r.flushed}),
                    format!("flushed {} KeyInits", r.flushed),
                );
            }
        },
        Command::Confirm {
            identity,
            escrow_printed,
            max_wait,
        } => {
            let mut me = own(&client, &identity)?;
            let deadline = Instant::now() + Duration::from_secs(max_wait);
            let pos = loop {
                match client.confirm(&me) {
                    Ok(p) => break p,
                    Err(ClientError::NotFound(_)) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            // The scan finds exactly the entries she holds replies for.
            let found = client
                .lookup(&me.identity)?
                .ok_or_else(|| anyhow::anyhow!("{} not found after confirming", me.identity))?;
            if found.message != me.uid {
                return Err(Failure {
                    code: 4,
                    message: format!(
                        "the chain's newest UID for {} is not the one held here (takeover?)",
                        me.identity
                    ),
                }
                .into());
            }
            if escrow_printed {
                me.escrow = None;
                client.save_own(&me)?;
            }
            print(
                json,
                serde_json::json!({"identity": me.identity, "position": pos}),
                format!("{} confirmed at position {pos}", me.identity),
            );
        }
        Command::Lookup {
            identity,
            at_server,
        } => {
            client.sync()?;
            let listed = if at_server {
                Some(client.lookup_at_server(&identity)?)
            } else {
                None
            };
            let found = client.lookup(&identity)?.ok_or_else(|| Failure {
                code: 3,
                message: format!("{identity} is not registered"),
            })?;
            let c = &found.message.content;
            print(
                json,
                serde_json::json!({
                    "identity": c.identity, "position": found.state.pos, "msgcount": c.msg_count,
                    "sigkey": c.sig_key.pubkey, "static": c.pubkeys.first().map(|k| k.pubkey.clone()),
                    "notbefore": c.not_before, "notafter": c.not_after,
                    "server_positions": listed,
                }),
                format!(
                    "{} at position {} (MSGCOUNT {}), SIGKEY {}",
                    c.identity, found.state.pos, c.msg_count, c.sig_key.pubkey
                ),
            );
        }
        Command::SessionStart { identity } => {
            let s = client.session_start(&identity)?;
            let b64 = ks_core::b64::encode;
            print(
                json,
                serde_json::json!({
                    "IDENTITY": s.identity, "POSITION": s.position, "STATICKEY": b64(&s.static_key),
                    "PFKEY": b64(&s.pf_key), "MIXADDRESS": s.mix_address, "NYMADDRESS": s.nym_address,
                    "KEYINITHASH": s.key_init_hash, "FALLBACK": s.fallback,
                }),
                format!(
                    "session start with {}: PF key {} via {}",
                    s.identity,
                    b64(&s.pf_key),
                    s.mix_address
                ),
            );
        }
        Command::Tokens { command } => match command {
            TokensCommand::Request { count, output } => {
                let r = client.request_tokens(count as usize)?;
                let body = serde_json::json!({"Batch": r.batch, "TokenRequests": r.requests});
                durable_file::create_new(&output, body.to_string().as_bytes(), 0o644)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
                print(
                    json,
                    serde_json::json!({"batch": r.batch, "requested": count, "file": output}),
                    format!(
                        "{count} token requests in {}: give it to the keyserver's operator, then run `ks-cli tokens finalize --in <their response>`",
                        output.display()
                    ),
                );
            }
            TokensCommand::Finalize { input } => {
                let bytes = std::fs::read(&input)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
                let answer: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", input.display()))?;
                let added = client.finalize_tokens(&answer)?;
                let balance = client.token_balance();
                print(
                    json,
                    serde_json::json!({"added": added, "balance": balance}),
                    format!("{added} tokens added; {balance} in the wallet"),
                );
            }
            TokensCommand::Balance => {
                let balance = client.token_balance();
                let pending = client.pending_token_requests();
                print(
                    json,
                    serde_json::json!({"balance": balance, "pending": pending}),
                    format!("{balance} tokens; {pending} requested and not yet answered"),
                );
            }
        },
        Command::Checkpoint => {
            let note = client
                .checkpoint()
                .ok_or_else(|| anyhow::anyhow!("nothing verified yet: run sync"))?;
            print!("{}", String::from_utf8_lossy(note));
        }
        Command::CheckEntry { entry } => {
            client.sync()?;
            let raw = ks_core::b64::decode(&entry)
                .ok_or_else(|| anyhow::anyhow!("the entry is not base64"))?;
            let found =
                (0..client.size()).any(|p| client.entry(p).is_some_and(|e| e.0[..] == raw[..]));
            if !found {
                return Err(Failure {
                    code: 3,
                    message:
                        "the entry is not in the verified chain: ask the peer for its checkpoint"
                            .into(),
                }
                .into());
            }
            println!("in the verified chain");
        }
    }
    Ok(())
}
