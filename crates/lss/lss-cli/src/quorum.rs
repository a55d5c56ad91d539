//! `--providers`: `init`, `put` and `get` over several LSS servers with a
//! write quorum (`lss_client::quorum`), every one verified.
//!
//! Pins live in `<dir>/provider-pins`, one `URL SERVER-ID` line per
//! provider, written by `init` (trust on first use, as for one server);
//! each provider's last verified checkpoint in `trusted-<server id>`.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use lss_client::quorum::{Provider, QuorumClient, QuorumError, QuorumReport};
use lss_client::{ConnectOptions, PrivClient};
use lss_core::secp256k1::rand::{rngs::OsRng, RngCore};
use lss_core::secp256k1::{PublicKey, Secp256k1};
use lss_core::{value, KeyValue};
use serde_json::json;

use crate::{init_client_key, kv_json, Cli, Command, Files, Verify, EXIT_CONFLICT};

fn pins_path(files: &Files) -> PathBuf {
    files.dir.join("provider-pins")
}

fn read_pins(files: &Files) -> anyhow::Result<Vec<(String, PublicKey)>> {
    let path = pins_path(files);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: run `lss-cli --providers … init` first",
            path.display()
        )
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (url, id) = line
                .split_once(' ')
                .with_context(|| format!("{}: bad line {line:?}", path.display()))?;
            let id = hex::decode(id.trim())
                .ok()
                .and_then(|b| PublicKey::from_slice(&b).ok())
                .with_context(|| format!("{}: bad server id in {line:?}", path.display()))?;
            Ok((url.to_owned(), id))
        })
        .collect()
}

/// Runs a command over `cli.providers`.
pub(crate) async fn run(cli: &Cli, files: &Files, verify: &Verify) -> anyhow::Result<ExitCode> {
    let options = |url: &str| ConnectOptions {
        registration_token: cli.registration_token.clone(),
        ..ConnectOptions::new(url)
    };
    match &cli.command {
        Command::Init => {
            init_client_key(files)?;
            let known = read_pins(files).unwrap_or_default();
            let mut lines = String::new();
            for url in &cli.providers {
                let mut grpc = lss_client::connect_channel(&options(url))
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                let server = lss_client::info(&mut grpc).await?.server_id;
                if let Some((_, pinned)) = known.iter().find(|(u, _)| u == url) {
                    if *pinned != server {
                        bail!("{url} has server key {server}, but {pinned} is pinned");
                    }
                }
                lines.push_str(&format!("{url} {server}\n"));
                println!("{url} server id {server}");
            }
            fs::write(pins_path(files), lines).context("cannot write provider-pins")?;
            let client_id = files.client_key()?.public_key(&Secp256k1::signing_only());
            println!("client id {client_id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Put {
            key,
            version,
            value,
        } => {
            let value =
                hex::decode(value).with_context(|| format!("value {value:?} is not hex"))?;
            let mut quorum = connect(cli, files, &options).await?;
            match quorum
                .put(vec![KeyValue::new(key.clone(), *version, value)])
                .await
            {
                Ok(report) => {
                    warn(files, verify, &report)?;
                    if cli.json {
                        println!(
                            "{}",
                            json!({ "ok": true, "acknowledged": report.ok, "repaired": report.repaired })
                        );
                    } else {
                        println!(
                            "stored {key} at version {version} on {} of {} providers",
                            report.ok.len(),
                            cli.providers.len()
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(QuorumError::Conflict(conflicts)) => {
                    for c in &conflicts {
                        println!("conflict: {} is at version {}", c.key, c.version);
                    }
                    Ok(ExitCode::from(EXIT_CONFLICT))
                }
                Err(e) => fail(files, verify, e),
            }
        }
        Command::Get { prefix } => {
            let mut quorum = connect(cli, files, &options).await?;
            let mut nonce = [0u8; 32];
            OsRng.fill_bytes(&mut nonce);
            match quorum.get(prefix, &nonce).await {
                Ok((kvs, report)) => {
                    warn(files, verify, &report)?;
                    if cli.json {
                        println!(
                            "{}",
                            json!({ "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(), "repaired": report.repaired })
                        );
                    } else {
                        for kv in &kvs {
                            println!("{} {} {}", kv.key, kv.version, hex::encode(&kv.value));
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(files, verify, e),
            }
        }
        _ => bail!("with --providers only init, put and get are supported"),
    }
}

async fn connect(
    cli: &Cli,
    files: &Files,
    options: &impl Fn(&str) -> ConnectOptions,
) -> anyhow::Result<QuorumClient> {
    let secret = files.client_key()?;
    let pins = read_pins(files)?;
    let mut providers = Vec::new();
    for url in &cli.providers {
        let (_, pinned) = pins
            .iter()
            .find(|(u, _)| u == url)
            .with_context(|| format!("{url} is not pinned: run `lss-cli --providers … init`"))?;
        let client = match PrivClient::connect(
            &options(url),
            &secret,
            Some(*pinned),
            value::secret_for_key(&secret),
        )
        .await
        {
            Ok(client) => client,
            Err(e) => {
                // A provider that is down counts against the quorum, not as
                // a reason to give up on the others: connect lazily later.
                eprintln!("warning: {url}: {e}");
                continue;
            }
        };
        let client = client
            .verifying_with_file(files.trusted_path(pinned))
            .await?;
        providers.push(Provider {
            name: url.clone(),
            client,
        });
    }
    let n = cli.providers.len();
    let w = cli.write_quorum.unwrap_or(n / 2 + 1);
    if providers.len() < w {
        bail!(
            "only {} of {n} providers reachable, the write quorum is {w}",
            providers.len()
        );
    }
    QuorumClient::new(providers, w).map_err(anyhow::Error::msg)
}

/// Reports providers that failed or lied (writing their evidence).
fn warn(files: &Files, verify: &Verify, report: &QuorumReport) -> anyhow::Result<()> {
    for p in &report.repaired {
        eprintln!("repaired: {p} was behind and has been brought up to date");
    }
    for (n, f) in report.failures.iter().enumerate() {
        match &f.evidence {
            Some(evidence) => {
                let path = verify.write_evidence(files, evidence, Some(n))?;
                eprintln!(
                    "warning: {} lied: {}; evidence written to {}",
                    f.provider,
                    evidence.claim,
                    path.display()
                );
            }
            None => eprintln!("warning: {}: {}", f.provider, f.error),
        }
    }
    Ok(())
}

fn fail(files: &Files, verify: &Verify, e: QuorumError) -> anyhow::Result<ExitCode> {
    if let QuorumError::NotEnough { failures, .. } = &e {
        let report = QuorumReport {
            failures: failures.clone(),
            ..QuorumReport::default()
        };
        warn(files, verify, &report)?;
    }
    Err(e.into())
}
