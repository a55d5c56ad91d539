//! statechain.md §9.7 for the key update, through the real wallet: the SE
//! dies just after (or just before) committing `transfer/receiver`; the
//! receiver's wallet kept the verified request and completes the receive
//! against the restarted SE (answered from the SE's record, or applied
//! then), ending with the coin. Lives with the SE's tests because the crash
//! hooks are this package's test feature.

use lk_testkit::process::workspace_binary;
use lk_testkit::statechaind::{statechain_cli, CliEnv, Statechaind};

const VALUE: u64 = 100_000;
const TIP: u32 = 500;

#[test]
fn a_crash_around_the_key_update_loses_nothing() {
    for hook in ["after-commit:t", "before-commit:t"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("se");
        let se = Statechaind::start(
            &workspace_binary("statechaind"),
            &data,
            &[],
            &[("STATECHAIND_DANGER_ABORT", hook)],
        );
        let mut env = CliEnv {
            cli: workspace_binary("statechain-cli"),
            chain: dir.path().join("chain.json"),
            url: se.url.clone(),
        };
        env.set_chain(serde_json::json!({"tip": TIP}));
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for w in [&a, &b] {
            assert_eq!(
                statechain_cli(&env.cli, w, &env.chain, &["wallet", "create"]).code,
                0
            );
        }
        let (id, tx0, signed) = env.deposit(&a, VALUE, 1);
        assert_eq!(signed.code, 0, "{}", signed.stderr);
        env.set_chain(serde_json::json!({"tip": TIP + 5, "confirmed": {}}));
        env.confirm(&tx0, TIP);
        let to = env.ok(&b, &["address", "new"])["address"]
            .as_str()
            .expect("addr")
            .to_string();
        env.ok(&a, &["send", &id, "--to", &to]);
        let crashed = env.run(&b, &["receive"]);
        assert_eq!(
            crashed.code, 1,
            "{hook}: the SE died mid-receive: {}",
            crashed.stderr
        );
        assert_ne!(se.wait(), Some(0));
        let se = Statechaind::start(&workspace_binary("statechaind"), &data, &[], &[]);
        env.url = se.url.clone();
        let got = env.ok(&b, &["receive"]);
        assert_eq!(got[0]["statechain_id"], id.as_str(), "{hook}: {got}");
        assert_eq!(got[0]["count"], 2);
        assert_eq!(env.ok(&b, &["verify", &id])["verified_backups"], 2);
        let coins = env.ok(&b, &["coins"]);
        assert_eq!(coins[0]["status"], "active");
        // Nothing is left to receive.
        assert_eq!(env.ok(&b, &["receive"]), serde_json::json!([]));
    }
}
