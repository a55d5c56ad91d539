//! statechain.md §6.3, §9.6: an SE that under-reports a coin (its read API
//! leaves the newest entry out, as a `danger-test-hooks` build does with
//! `STATECHAIND_DANGER_LIE=omit-newest`) is caught by a wallet that
//! cross-checks the coin with a federation member: the member proves the
//! hidden entry is in the SE's own log, and the wallet refuses the coin,
//! naming the entry.

use lk_testkit::process::workspace_binary;
use lk_testkit::statechaind::{statechain_cli, CliEnv, Statechaind};

const VALUE: u64 = 50_000;
const TIP: u32 = 500;

fn info(url: &str) -> serde_json::Value {
    let body = ureq::get(&format!("{url}/v1/info"))
        .call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .expect("body");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn a_wallet_catches_an_se_hiding_a_coins_newest_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = workspace_binary("statechaind");
    let se_dir = dir.path().join("se");
    let vkey = {
        let se = Statechaind::start(&bin, &se_dir, &[], &[]);
        info(&se.url)["log"]["vkey"]
            .as_str()
            .expect("vkey")
            .to_string()
    };
    let member = Statechaind::start(
        &bin,
        &dir.path().join("m1"),
        &["--role", "member", "--follow", &vkey, "--member-name", "m1"],
        &[],
    );
    let validating = std::fs::read_to_string(dir.path().join("m1").join("validator-vkey"))
        .expect("validator-vkey");
    let spec = format!("{}@{}@{}", validating.trim(), member.sync_addr, member.url);
    let se = Statechaind::start(
        &bin,
        &se_dir,
        &["--member", &spec, "--cosign-quorum", "1"],
        &[("STATECHAIND_DANGER_LIE", "omit-newest")],
    );
    let env = CliEnv {
        cli: workspace_binary("statechain-cli"),
        chain: dir.path().join("chain.json"),
        url: se.url.clone(),
    };
    env.set_chain(serde_json::json!({"tip": TIP}));
    let a = dir.path().join("a");
    assert_eq!(
        statechain_cli(&env.cli, &a, &env.chain, &["wallet", "create"]).code,
        0
    );
    env.set_chain(serde_json::json!({"tip": TIP + 5, "confirmed": {}}));
    // Co-signing backup 1 adds the coin's second entry, which the SE's
    // read API now hides; the wallet's next look at the coin is refused.
    let (id, tx0, signed) = env.deposit(&a, VALUE, 1);
    env.confirm(&tx0, TIP);
    let out = if signed.code == 0 {
        // Once the SE has published (with the member's cosignature) a
        // checkpoint holding the hidden entry.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let note = ureq::get(&format!("{}/statechain/se1/checkpoint", se.url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            let size: u64 = note
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if size >= 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never published: {note}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        env.run(&a, &["verify", &id])
    } else {
        signed
    };
    assert_ne!(
        out.code, 0,
        "the under-reported coin was accepted: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("leaves out entries [1]") && out.stderr.contains(&member.url),
        "{}",
        out.stderr
    );
}
