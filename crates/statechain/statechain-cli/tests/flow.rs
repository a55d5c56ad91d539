//! statechain.md §9.5 with real processes: a `statechaind` SE publishing
//! only what its two members validated and cosigned, three
//! `statechain-cli` wallets and a mock chain file. Deposit → 100 transfers
//! around A→B→C→A → withdrawal, every backup and the withdrawal checked by
//! `bitcoinconsensus` against `Tx0`'s output, locktimes `h0 − (i−1)·c`,
//! each receive verified and final, N = 102, the members' histories equal
//! the SE's; then the CLI's refusals and a wallet facing a forked log.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use lk_testkit::process::workspace_binary;
use lk_testkit::statechaind::{regtest_script, statechain_cli, CliEnv, Statechaind};
use serde_json::Value;
use statechain_core::consensus::verify_spend;

const VALUE: u64 = 100_000;
const TIP: u32 = 500;

fn tx_of(v: &Value) -> Transaction {
    deserialize(&hex::decode(v.as_str().expect("hex string")).expect("hex")).expect("tx")
}

fn get_text(base: &str, path: &str) -> String {
    ureq::get(&format!("{base}{path}"))
        .call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .expect("body")
}

fn get_json(base: &str, path: &str) -> Value {
    serde_json::from_str(&get_text(base, path)).expect("JSON")
}

#[test]
fn deposit_transfers_and_withdrawal_with_real_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = workspace_binary("statechaind");
    // The SE's key first, then two members validating its log, then the SE
    // publishing only what both cosigned (statechain.md §9.5).
    let vkey = {
        let se = Statechaind::start(&bin, &dir.path().join("se"), &[], &[]);
        get_json(&se.url, "/v1/info")["log"]["vkey"]
            .as_str()
            .expect("vkey")
            .to_string()
    };
    let members: Vec<Statechaind> = ["m1", "m2"]
        .iter()
        .map(|m| {
            Statechaind::start(
                &bin,
                &dir.path().join(m),
                &["--role", "member", "--follow", &vkey, "--member-name", m],
                &[],
            )
        })
        .collect();
    let mut flags = Vec::new();
    for (m, member) in ["m1", "m2"].iter().zip(&members) {
        let validating = std::fs::read_to_string(dir.path().join(m).join("validator-vkey"))
            .expect("validator-vkey");
        flags.push("--member".to_string());
        flags.push(format!(
            "{}@{}@{}",
            validating.trim(),
            member.sync_addr,
            member.url
        ));
    }
    let se = Statechaind::start(
        &bin,
        &dir.path().join("se"),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(get_json(&se.url, "/v1/info")["cosign_quorum"], 2);
    let env = CliEnv {
        cli: workspace_binary("statechain-cli"),
        chain: dir.path().join("chain.json"),
        url: se.url.clone(),
    };
    env.set_chain(serde_json::json!({"tip": TIP}));
    let wallets: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    for w in &wallets {
        let out = statechain_cli(
            &env.cli,
            w,
            &env.chain,
            &["wallet", "create", "--network", "regtest"],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    // Deposit: the co-signed backup 1 exists before Tx0 is broadcast.
    let dep = env.ok(
        &wallets[0],
        &["deposit", "new", "--amount", &VALUE.to_string()],
    );
    let id = dep["statechain_id"].as_str().expect("id").to_string();
    let addr = dep["deposit_address"].as_str().expect("address");
    assert!(addr.starts_with("bcrt1p"), "{addr}");
    let funding_out = TxOut {
        value: Amount::from_sat(VALUE),
        script_pubkey: regtest_script(addr),
    };
    let tx0 = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(vec![0x51]),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![funding_out.clone()],
    };
    let tx0_hex = hex::encode(serialize(&tx0));
    let signed = env.ok(&wallets[0], &["deposit", "sign", &id, "--tx0", &tx0_hex]);
    assert_eq!(signed["broadcast_tx0"], tx0_hex.as_str());
    let b1 = tx_of(&signed["backup"]);
    verify_spend(std::slice::from_ref(&funding_out), &b1, 0).expect("backup 1 spends Tx0");
    let h0 = TIP + 2000;
    assert_eq!(b1.lock_time.to_consensus_u32(), h0);
    env.set_chain(
        serde_json::json!({"tip": TIP + 5, "confirmed": {tx0.compute_txid().to_string(): TIP}}),
    );

    // Transfers around the three wallets.
    let transfers = 100;
    for t in 0..transfers {
        let (from, to) = (&wallets[t % 3], &wallets[(t + 1) % 3]);
        let to_addr = env.ok(to, &["address", "new"])["address"]
            .as_str()
            .expect("addr")
            .to_string();
        assert!(to_addr.starts_with("tlks1"));
        env.ok(from, &["send", &id, "--to", &to_addr]);
        let got = env.ok(to, &["receive"]);
        assert_eq!(got[0]["statechain_id"], id.as_str(), "{got}");
        let count = got[0]["count"].as_u64().expect("count") as u32;
        assert_eq!(count, t as u32 + 2);
        let shown = env.ok(to, &["backup", "show", &id]);
        let newest = tx_of(&shown["backup"]);
        assert_eq!(
            newest.lock_time.to_consensus_u32(),
            h0 - (count - 1) * 10,
            "locktimes decrease by c"
        );
        verify_spend(std::slice::from_ref(&funding_out), &newest, 0)
            .expect("newest backup spends Tx0");
        // The sender no longer holds it.
        let again = env.run(from, &["send", &id, "--to", &to_addr]);
        assert_eq!(again.code, 2, "{}", again.stderr);
        assert_eq!(env.ok(to, &["verify", &id])["verified_backups"], count);
    }

    // Withdrawal by the last owner; its CPFP-able backup too.
    let owner = &wallets[transfers % 3];
    let cpfp = env.ok(
        owner,
        &[
            "backup",
            "cpfp",
            &id,
            "--to",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "--fee-rate",
            "5",
        ],
    );
    let (parent, child) = (tx_of(&cpfp["parent"]), tx_of(&cpfp["child"]));
    let prevouts = [parent.output[0].clone(), parent.output[1].clone()];
    verify_spend(&prevouts, &child, 0).expect("child spends the owner output");
    verify_spend(&prevouts, &child, 1).expect("child spends the anchor");
    let w = env.ok(
        owner,
        &[
            "withdraw",
            "sign",
            &id,
            "--to",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "--fee-rate",
            "2",
        ],
    );
    let txw = tx_of(&w["withdrawal"]);
    verify_spend(std::slice::from_ref(&funding_out), &txw, 0).expect("withdrawal spends Tx0");
    assert!(txw.output[0].value.to_sat() < VALUE && txw.output[0].value.to_sat() > VALUE - 1_000);
    env.ok(owner, &["withdraw", "complete", &id]);

    let coins = env.ok(owner, &["coins"]);
    assert_eq!(coins[0]["status"], "withdrawn");
    // N = 102: the deposit's signature, one per transfer, the withdrawal.
    let path = format!("/v1/statechain/{id}");
    let at_se = get_json(&se.url, &path);
    assert_eq!(at_se["count"], transfers as u64 + 2);
    // Every member holds the same coin history as the SE, proven under the
    // SE's checkpoints, which both members cosigned.
    let leaves = |v: &Value| -> Vec<(Value, Value)> {
        v["entries"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|x| (x["index"].clone(), x["leaf"].clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    for member in &members {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let there = get_json(&member.url, &path);
            if leaves(&there) == leaves(&at_se)
                && there["count"] == at_se["count"]
                && there["head"] == at_se["head"]
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a member's view differs: {there}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let note = get_text(&se.url, "/statechain/se1/checkpoint");
    assert!(
        note.contains("m1/validator") && note.contains("m2/validator"),
        "{note}"
    );
    // The coin is closed at the SE: anything more on it is a conflict (4).
    let again = env.run(owner, &["withdraw", "complete", &id]);
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert!(
        again.stderr.contains("statechain_closed"),
        "{}",
        again.stderr
    );

    // The sync port greets humans (`nc 127.0.0.1 9939`).
    let mut s = std::net::TcpStream::connect(&se.sync_addr).expect("sync port");
    s.write_all(b"\n").expect("enter");
    let mut lines = String::new();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        lines.push_str(&l);
    }
    assert!(
        lines.contains("LKTL/1") || lines.contains("localhost/statechain/se1"),
        "{lines}"
    );
}

#[test]
fn refusals_name_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se = Statechaind::start(
        &workspace_binary("statechaind"),
        &dir.path().join("se"),
        &[],
        &[],
    );
    let env = CliEnv {
        cli: workspace_binary("statechain-cli"),
        chain: dir.path().join("chain.json"),
        url: se.url.clone(),
    };
    env.set_chain(serde_json::json!({"tip": TIP}));
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for w in [&a, &b] {
        assert_eq!(
            statechain_cli(&env.cli, w, &env.chain, &["wallet", "create"]).code,
            0
        );
    }
    // Usage errors exit 2.
    assert_eq!(env.run(&a, &["deposit", "new", "--amount", "5000"]).code, 2);
    assert_eq!(env.run(&a, &["send", "00", "--to", "x"]).code, 2);
    assert_eq!(
        statechain_cli(&env.cli, &a, &env.chain, &["no-such-command"]).code,
        2
    );
    // A Tx0 that does not pay the deposit address is refused before signing.
    let dep = env.ok(&a, &["deposit", "new", "--amount", &VALUE.to_string()]);
    let id = dep["statechain_id"].as_str().expect("id").to_string();
    let wrong = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn::default()],
        output: vec![TxOut {
            value: Amount::from_sat(VALUE - 1),
            script_pubkey: regtest_script(dep["deposit_address"].as_str().expect("addr")),
        }],
    };
    let out = env.run(
        &a,
        &[
            "deposit",
            "sign",
            &id,
            "--tx0",
            &hex::encode(serialize(&wrong)),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    // Fund it properly, send to B, but B's chain source says Tx0 is
    // unconfirmed: B refuses the coin (exit 3, the check named).
    let mut good = wrong.clone();
    good.output[0].value = Amount::from_sat(VALUE);
    env.ok(
        &a,
        &[
            "deposit",
            "sign",
            &id,
            "--tx0",
            &hex::encode(serialize(&good)),
        ],
    );
    let to = env.ok(&b, &["address", "new"])["address"]
        .as_str()
        .expect("addr")
        .to_string();
    env.ok(&a, &["send", &id, "--to", &to]);
    let out = env.run(&b, &["receive"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("step 9") && out.stderr.contains("confirmations"),
        "{}",
        out.stderr
    );
    // Once confirmed, the same message is accepted.
    env.set_chain(
        serde_json::json!({"tip": TIP + 5, "confirmed": {good.compute_txid().to_string(): TIP}}),
    );
    let got = env.ok(&b, &["receive"]);
    assert_eq!(got[0]["count"], 2);
    // A wallet pinned to this SE refuses another SE.
    let other = Statechaind::start(
        &workspace_binary("statechaind"),
        &dir.path().join("se2"),
        &[],
        &[],
    );
    let out = statechain_cli(&env.cli, &b, &env.chain, &["--server", &other.url, "coins"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("pinned"), "{}", out.stderr);
}

/// Opens and funds a coin of `value` in `wallet`, confirming Tx0 in the
/// mock chain; returns its id.
fn deposit(env: &CliEnv, wallet: &std::path::Path, value: u64) -> String {
    let (id, tx0, signed) = env.deposit(wallet, value, value as u8);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    env.confirm(&tx0, TIP);
    id
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// tlog.md §8, statechain.md §5.5: the wallet keeps the SE's checkpoint it
/// last accepted and takes a new one only with a consistency proof from
/// it. An SE restarted from an old copy of its data signs another history
/// with the same key; a wallet that saw the first refuses it, keeps the two
/// signed checkpoints as evidence that `verify-evidence` accepts, and
/// refuses that SE from then on, even when it shows the first history
/// again.
#[test]
fn a_wallet_refuses_an_se_that_shows_it_another_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = workspace_binary("statechaind");
    let (se_dir, fork_dir) = (dir.path().join("se"), dir.path().join("fork"));
    let se = Statechaind::start(&bin, &se_dir, &[], &[]);
    let mut env = CliEnv {
        cli: workspace_binary("statechain-cli"),
        chain: dir.path().join("chain.json"),
        url: se.url.clone(),
    };
    env.set_chain(serde_json::json!({"tip": TIP, "confirmed": {}}));
    let a = dir.path().join("a");
    assert_eq!(
        statechain_cli(&env.cli, &a, &env.chain, &["wallet", "create"]).code,
        0
    );
    let id = deposit(&env, &a, VALUE);
    env.ok(&a, &["verify", &id]);
    // The SE's data as it is now: a backup someone restores later.
    drop(se);
    copy_dir(&se_dir, &fork_dir);

    // The real history goes on; the wallet sees it (verifying the new
    // coin waits for a checkpoint that holds its entries).
    let se = Statechaind::start(&bin, &se_dir, &[], &[]);
    env.url = se.url.clone();
    let second = deposit(&env, &a, VALUE + 1);
    env.ok(&a, &["verify", &second]);
    drop(se);

    // The restored copy signs other entries at the same sizes.
    let fork = Statechaind::start(&bin, &fork_dir, &[], &[]);
    env.url = fork.url.clone();
    let b = dir.path().join("b");
    assert_eq!(
        statechain_cli(&env.cli, &b, &env.chain, &["wallet", "create"]).code,
        0
    );
    let other = deposit(&env, &b, VALUE + 2);
    env.ok(&b, &["verify", &other]);
    let out = env.run(&a, &["verify", &id]);
    assert_ne!(
        out.code, 0,
        "the forked history was accepted: {}",
        out.stdout
    );
    assert!(out.stderr.contains("inconsistent"), "{}", out.stderr);
    let evidence: Vec<PathBuf> = std::fs::read_dir(a.join("evidence"))
        .expect("evidence dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(evidence.len(), 1);
    let ev = env.ok(
        &a,
        &["verify-evidence", evidence[0].to_str().expect("utf8")],
    );
    assert!(
        ev["proves"]
            .as_str()
            .expect("proves")
            .contains("equivocation"),
        "{ev}"
    );
    drop(fork);

    // The SE is refused from now on, whatever it shows.
    let se = Statechaind::start(&bin, &se_dir, &[], &[]);
    env.url = se.url.clone();
    let out = env.run(&a, &["verify", &id]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("compromised"), "{}", out.stderr);
}

/// statechain.md §3.1: the SE's API over TLS (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`, lssd's flags). A wallet reaches it only when it trusts
/// the certificate (`--ca-cert`), and with mutual TLS only with a client
/// certificate of the SE's client CA; plain HTTP to the port gets nothing;
/// a public listener without TLS, and TLS settings that cannot work, stop
/// statechaind at start with the reason.
#[test]
fn the_api_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = lk_testkit::pki::TlsFixture::write(dir.path());
    let (cert, key, ca_file) = (&pki.server_cert, &pki.server_key, &pki.server_ca);
    let chain = dir.path().join("chain.json");
    std::fs::write(&chain, serde_json::json!({"tip": TIP}).to_string()).expect("chain");
    let cli = workspace_binary("statechain-cli");
    let wallet = dir.path().join("w");
    let run = |args: &[&str]| lk_testkit::statechaind::statechain_cli(&cli, &wallet, &chain, args);
    assert_eq!(run(&["wallet", "create"]).code, 0);

    let se = Statechaind::start(
        &workspace_binary("statechaind"),
        &dir.path().join("se"),
        &["--tls-cert", cert, "--tls-key", key],
        &[],
    );
    assert!(se.url.starts_with("https://127.0.0.1:"), "{}", se.url);
    let url = se.url.replace("127.0.0.1", "localhost");
    let untrusted = run(&["--server", &url, "info"]);
    assert_eq!(
        untrusted.code, 1,
        "{}{}",
        untrusted.stdout, untrusted.stderr
    );
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    let plain = run(&["--server", &url.replace("https://", "http://"), "info"]);
    assert_ne!(plain.code, 0, "plain HTTP to the TLS port");
    let info = run(&["--ca-cert", ca_file, "--server", &url, "info"]);
    assert_eq!(info.code, 0, "{}{}", info.stdout, info.stderr);
    let token = run(&["--ca-cert", ca_file, "token", "new"]);
    assert_eq!(token.code, 0, "{}{}", token.stdout, token.stderr);
    drop(se);

    // Mutual TLS: the same wallet, pinned to that SE, needs a client
    // certificate of the client CA now (a new SE: its own key and URL).
    let wallet_b = dir.path().join("wb");
    let run_b =
        |args: &[&str]| lk_testkit::statechaind::statechain_cli(&cli, &wallet_b, &chain, args);
    assert_eq!(run_b(&["wallet", "create"]).code, 0);
    let se = Statechaind::start(
        &workspace_binary("statechaind"),
        &dir.path().join("se-mtls"),
        &[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-client-ca",
            &pki.client_ca,
        ],
        &[],
    );
    let url = se.url.replace("127.0.0.1", "localhost");
    let refused = run_b(&["--ca-cert", ca_file, "--server", &url, "info"]);
    assert_eq!(refused.code, 1, "no client certificate: {}", refused.stdout);
    for (client_cert, client_key, admitted) in [
        (&pki.forged_cert, &pki.forged_key, false),
        (&pki.client_cert, &pki.client_key, true),
    ] {
        let out = run_b(&[
            "--ca-cert",
            ca_file,
            "--client-cert",
            client_cert,
            "--client-key",
            client_key,
            "--server",
            &url,
            "info",
        ]);
        let code = if admitted { 0 } else { 1 };
        assert_eq!(
            out.code, code,
            "{client_cert}: {}{}",
            out.stdout, out.stderr
        );
    }
    // A client certificate without its key is a usage error.
    assert_eq!(
        run_b(&["--client-cert", &pki.client_cert, "--server", &url, "info"]).code,
        2
    );
    drop(se);

    // Refused at start, with the reason.
    let start = |extra: &[&str]| {
        std::process::Command::new(workspace_binary("statechaind"))
            .args([
                "--data-dir",
                dir.path().join("refused").to_str().expect("utf-8"),
            ])
            .args(["--sync-listen", "127.0.0.1:0"])
            .args(extra)
            .output()
            .expect("run statechaind")
    };
    for (extra, reason) in [
        (vec!["--listen", "0.0.0.0:0"], "--tls-cert"),
        (
            vec!["--listen", "127.0.0.1:0", "--tls-cert", cert],
            "--tls-cert needs --tls-key",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                key,
                "--tls-key",
                key,
            ],
            "no CERTIFICATE",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                &pki.client_key,
            ],
            "TLS configuration",
        ),
    ] {
        let out = start(&extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} must not start");
        assert!(stderr.contains(reason), "{extra:?}: {stderr}");
    }
}
