//! `tlog-cli`: talk to any tlog-tiles log. Every answer is verified before
//! it is believed: checkpoints against the verifier key (or a policy file),
//! every later checkpoint against the one kept in `--state`, every entry
//! against a verified checkpoint. Plain `http://` only in this version.
//!
//! Exit status: 0 success, 1 error, 2 usage, 3 the log misbehaved
//! (inconsistent checkpoints, rollback, entries that do not match).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tlog_core::entry_sync::{consistency_path, proof_lines, EntrySync};
use tlog_core::note::VerifierKey;
use tlog_core::view::{LogView, Offer, ViewError};
use tlog_core::{Evidence, Policy};

#[derive(Parser)]
#[command(version, about = "Verify, sync and append to transparency logs")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Log {
    /// The log's URL prefix (http://host:port/…/).
    #[arg(long, env = "TLOG_URL")]
    url: String,
    #[command(flatten)]
    trust: Trust,
}

/// Whom to believe: one log key, or a policy with witnesses.
#[derive(clap::Args)]
struct Trust {
    /// The log's verifier key (`<origin>+<id>+<key>`); or give --policy.
    #[arg(long, env = "TLOG_VKEY", required_unless_present = "policy")]
    vkey: Option<String>,
    /// A tlog-policy file (log keys, witnesses, quorum).
    #[arg(long, env = "TLOG_POLICY")]
    policy: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch and verify the latest checkpoint; print origin, size and root.
    Checkpoint {
        #[command(flatten)]
        log: Log,
    },
    /// Verify the log against the view in --state (created on first use),
    /// download every new entry from tiles, verify it, and print the count.
    Sync {
        #[command(flatten)]
        log: Log,
        /// The verified view of this log, kept between runs.
        #[arg(long)]
        state: PathBuf,
        /// Also write each verified entry, one hex line each, to this file.
        #[arg(long)]
        entries: Option<PathBuf>,
    },
    /// Append an entry to a general-purpose log (tlogd); print its index.
    Append {
        /// The log's URL prefix.
        #[arg(long, env = "TLOG_URL")]
        url: String,
        /// The file holding the operator's append token.
        #[arg(long, env = "TLOG_TOKEN_FILE")]
        token_file: PathBuf,
        /// The entry (UTF-8 text); or --file.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        data: Option<String>,
        /// The entry, from a file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Fetch a receipt (C2SP tlog-proof) for the entry at --index, check its
    /// checkpoint, and write it to --out.
    Receipt {
        #[command(flatten)]
        log: Log,
        /// The entry's index.
        #[arg(long)]
        index: u64,
        /// Where to write the receipt.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a receipt offline: the entry (--data or --file) is at the
    /// receipt's index of a checkpoint acceptable under --vkey/--policy.
    VerifyReceipt {
        #[command(flatten)]
        trust: Trust,
        /// The entry (UTF-8 text); or --file.
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// The entry, from a file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The receipt file.
        receipt: PathBuf,
    },
    /// Check an evidence file (LKEV) offline against the log's verifier key.
    VerifyEvidence {
        /// The log's verifier key.
        #[arg(long)]
        vkey: String,
        /// The evidence file.
        file: PathBuf,
    },
}

/// The log misbehaved: exit 3.
struct Misbehaved(String);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Misbehaved>() {
            Some(Misbehaved(why)) => {
                eprintln!("tlog-cli: the log misbehaved: {why}");
                ExitCode::from(3)
            }
            None => {
                eprintln!("tlog-cli: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

impl std::fmt::Debug for Misbehaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::fmt::Display for Misbehaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Misbehaved {}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    let mut response = ureq::get(url)
        .call()
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))
}

fn join(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

impl Log {
    fn policy(&self) -> anyhow::Result<(Policy, String)> {
        self.trust.policy()
    }
}

impl Trust {
    fn policy(&self) -> anyhow::Result<(Policy, String)> {
        let policy = match (&self.vkey, &self.policy) {
            (_, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            (Some(vkey), None) => Policy::single(
                VerifierKey::parse(vkey).map_err(|e| anyhow::anyhow!("--vkey: {e}"))?,
            ),
            (None, None) => anyhow::bail!("give --vkey or --policy"),
        };
        let origin = policy
            .log_keys()
            .first()
            .map(|k| k.name().to_string())
            .unwrap_or_default();
        Ok((policy, origin))
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Checkpoint { log } => {
            let (policy, _) = log.policy()?;
            let note = fetch(&join(&log.url, "checkpoint"))?;
            let verified = policy
                .verify(&note, now())
                .map_err(|e| anyhow::anyhow!("the checkpoint does not verify: {e}"))?;
            let c = verified.checkpoint;
            println!("{} {} {}", c.origin, c.size, hex::encode(c.root));
            Ok(())
        }
        Command::Sync {
            log,
            state,
            entries,
        } => sync(&log, &state, entries.as_deref()),
        Command::Append {
            url,
            token_file,
            data,
            file,
        } => {
            let token = std::fs::read_to_string(&token_file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", token_file.display()))?;
            let entry = read_entry(data, file)?;
            let target = join(&url, "add");
            let mut response = ureq::post(&target)
                .header("Authorization", &format!("Bearer {}", token.trim()))
                .send(&entry[..])
                .map_err(|e| anyhow::anyhow!("POST {target}: {e}"))?;
            let body = response.body_mut().read_to_string()?;
            print!("{body}");
            Ok(())
        }
        Command::Receipt { log, index, out } => {
            let (policy, _) = log.policy()?;
            let bytes = fetch(&join(&log.url, &format!("lk/v1/receipt?index={index}")))?;
            let receipt = tlog_core::Receipt::parse(&bytes)
                .map_err(|e| Misbehaved(format!("the receipt: {e}")))?;
            let verified = policy
                .verify(&receipt.note, now())
                .map_err(|e| anyhow::anyhow!("the receipt's checkpoint does not verify: {e}"))?;
            if receipt.index != index {
                return Err(
                    Misbehaved(format!("asked for index {index}, got {}", receipt.index)).into(),
                );
            }
            durable_file::replace(&out, &bytes, 0o644)?;
            println!(
                "receipt for index {index} of {} at size {} written to {}",
                verified.checkpoint.origin,
                verified.checkpoint.size,
                out.display()
            );
            Ok(())
        }
        Command::VerifyReceipt {
            trust,
            data,
            file,
            receipt,
        } => {
            let (policy, _) = trust.policy()?;
            let entry = read_entry(data, file)?;
            let bytes = std::fs::read(&receipt)
                .map_err(|e| anyhow::anyhow!("{}: {e}", receipt.display()))?;
            let parsed = tlog_core::Receipt::parse(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", receipt.display()))?;
            let verified = parsed
                .verify(&entry, &policy, now())
                .map_err(|e| anyhow::anyhow!("the receipt does not verify: {e}"))?;
            println!(
                "valid receipt: the entry is at index {} of {} (size {})",
                parsed.index, verified.checkpoint.origin, verified.checkpoint.size
            );
            Ok(())
        }
        Command::VerifyEvidence { vkey, file } => {
            let key = VerifierKey::parse(&vkey).map_err(|e| anyhow::anyhow!("--vkey: {e}"))?;
            let bytes =
                std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let ev = Evidence::verify(&bytes, &[key])
                .map_err(|e| anyhow::anyhow!("not valid evidence: {e}"))?;
            let a = tlog_core::Checkpoint::parse(ev.note_a.text())?;
            let b = tlog_core::Checkpoint::parse(ev.note_b.text())?;
            println!(
                "valid evidence: {} signed inconsistent trees of sizes {} and {}",
                a.origin, a.size, b.size
            );
            Ok(())
        }
    }
}

/// An entry from `--data` or `--file`.
fn read_entry(data: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    match (data, file) {
        (Some(d), _) => Ok(d.into_bytes()),
        (None, Some(f)) => std::fs::read(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display())),
        (None, None) => anyhow::bail!("give --data or --file"),
    }
}

fn sync(log: &Log, state: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (policy, origin) = log.policy()?;
    let mut view = match durable_file::read(state)? {
        Some(bytes) => LogView::restore(policy, &origin, &bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", state.display()))?,
        None => LogView::new(policy, &origin),
    };
    let note = fetch(&join(&log.url, "checkpoint"))?;
    let offered = tlog_core::note::Note::parse(&note)
        .ok()
        .and_then(|n| tlog_core::Checkpoint::parse(n.text()).ok())
        .ok_or_else(|| anyhow::anyhow!("the checkpoint does not parse"))?;
    let proof = match view.needs_proof(offered.size) {
        Some((old, new)) => proof_lines(&fetch(&join(&log.url, &consistency_path(old, new)))?, 2)
            .map_err(|e| Misbehaved(e.to_string()))?,
        None => Vec::new(),
    };
    match view.offer(&note, &proof, now()) {
        Ok(Offer::Advanced | Offer::Unchanged | Offer::Older) => {}
        Err(ViewError::Inconsistent(evidence)) => {
            let path = state.with_extension("evidence");
            durable_file::replace(&path, &evidence, 0o644)?;
            durable_file::replace(state, &view.to_bytes(), 0o600)?;
            return Err(Misbehaved(format!(
                "two inconsistent checkpoints; evidence written to {}",
                path.display()
            ))
            .into());
        }
        Err(
            e @ (ViewError::Rollback { .. } | ViewError::BadProof(_) | ViewError::LogCompromised),
        ) => return Err(Misbehaved(e.to_string()).into()),
        Err(e) => anyhow::bail!("the checkpoint is not acceptable: {e}"),
    }
    let checkpoint = view
        .checkpoint()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
    let mut sync = EntrySync::new(view.entries().clone(), checkpoint.size, checkpoint.root)
        .map_err(|e| Misbehaved(e.to_string()))?;
    let mut lines = String::new();
    let mut count = 0u64;
    while let Some(fetch_next) = sync.poll_fetch() {
        let body = fetch(&join(&log.url, &fetch_next.path()))?;
        let released = sync
            .handle(&fetch_next, &body)
            .map_err(|e| Misbehaved(format!("entries from {}: {e}", log.url)))?;
        for (_, entry) in released {
            count += 1;
            if out.is_some() {
                lines.push_str(&hex::encode(entry));
                lines.push('\n');
            }
        }
    }
    view.set_entries(sync.range().clone());
    durable_file::replace(state, &view.to_bytes(), 0o600)?;
    if let Some(out) = out {
        std::fs::write(out, lines)?;
    }
    println!(
        "{} verified at size {} ({} new entries, root {})",
        checkpoint.origin,
        checkpoint.size,
        count,
        hex::encode(checkpoint.root)
    );
    Ok(())
}
