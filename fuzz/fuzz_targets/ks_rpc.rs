//! JSON-RPC decode and dispatch (keyserver.md §10): any body to a real
//! keyserver (redb in a temporary directory, started once) through
//! `rpc::respond`, the function the HTTP handler calls. No panic, and
//! every answer is a JSON-RPC response (or none for a notification).
//! Bodies that parse as JSON get their bytes reused as parameters of each
//! method, so the fuzzer reaches the handlers, not only the envelope.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    running: keyserverd::daemon::Running,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let running = runtime
            .block_on(keyserverd::daemon::start(keyserverd::daemon::Options {
                data_dir: dir.path().to_path_buf(),
                domain: "localhost".into(),
                listen: "127.0.0.1:0".parse().expect("addr"),
                checkpoint_interval: std::time::Duration::from_millis(1000),
                limits: keyserverd::limits::LimitsConfig {
                    enabled: false,
                    registrations_per_hour: 1,
                },
                tls: None,
                // Paid calls then reach token parsing and redemption.
                tokens_required: true,
                lookup: true,
                admin_listen: None,
                submit_to: Vec::new(),
                publish_quorum: None,
                genesis_lifetime_secs: None,
                    sync_listen: None,
                    mirror_cosigners: Vec::new(),
            }))
            .expect("keyserver");
        Fixture {
            runtime,
            running,
            _dir: dir,
        }
    })
}

const METHODS: &[&str] = &[
    "KeyRepository.Capabilities",
    "KeyRepository.FetchLastHashChain",
    "KeyRepository.FetchHashChain",
    "KeyRepository.FetchUID",
    "KeyRepository.CreateUID",
    "KeyRepository.UpdateUID",
    "KeyInitRepository.AddKeyInit",
    "KeyInitRepository.FetchKeyInit",
    "KeyInitRepository.FlushKeyInit",
];

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let ks = &f.running.keyserver;
    let check = |body: &[u8]| {
        if let Some(out) = f.runtime.block_on(keyserverd::rpc::respond(&**ks, body, None)) {
            let v: serde_json::Value = serde_json::from_slice(&out).expect("a JSON response");
            assert_eq!(v["jsonrpc"], "2.0");
            assert!(v.get("result").is_some() != v.get("error").is_some());
        }
    };
    check(data);
    if let Ok(params) = std::str::from_utf8(data) {
        if params.trim_start().starts_with('{') {
            for m in METHODS {
                let body =
                    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{m}","params":{params}}}"#);
                check(body.as_bytes());
            }
        }
    }
});
