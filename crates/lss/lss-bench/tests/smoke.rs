//! lss-bench against a real lssd on loopback: every phase runs, the server's
//! MACs verify (a wrong one would count as an error), and the JSON report
//! carries the numbers docs/benchmarks.md is built from. Tiny and bounded:
//! this checks the tool, it measures nothing.

use std::process::Command;

use lk_testkit::Lssd;
use lss_core::Limits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_runs_and_reports() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let url = server.url.clone();
    let pid = std::process::id().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_lss-bench"))
            .args([
                "--server",
                &url,
                "--json",
                "--duration",
                "300ms",
                "--count",
                "30",
            ])
            .args([
                "--clients",
                "1,4",
                "--batch-keys",
                "20",
                "--prefix-keys",
                "150",
            ])
            .args(["--server-pid", &pid])
            .output()
            .expect("run lss-bench")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<(&str, u64)> = phases
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap_or(""),
                p["clients"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ping", 1),
            ("seq-put", 1),
            ("concurrent", 1),
            ("concurrent", 4),
            ("batch", 1),
            ("get-one", 1),
            ("get-prefix", 1)
        ]
    );
    for p in phases {
        let name = &p["phase"];
        assert_eq!(p["errors"], 0, "{name}: {p}");
        assert_eq!(p["conflicts"], 0, "{name}: {p}");
        assert!(p["ops"].as_u64().unwrap_or(0) > 0, "{name}: {p}");
        assert!(p["latency"]["p50_us"].as_u64().unwrap_or(0) > 0, "{name}");
        assert!(
            p["server"]["cpu_seconds"].is_number(),
            "{name}: server cost"
        );
    }
    let batch = &phases[4];
    let keys_per_put = batch["keys_per_sec"].as_f64().unwrap_or(0.0)
        / batch["ops_per_sec"].as_f64().unwrap_or(1.0);
    assert!((keys_per_put - 20.0).abs() < 1e-6, "{keys_per_put}");
    assert!(report["server_peak_rss_bytes"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn bad_arguments_are_clear() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lss-bench"))
            .args(args)
            .output()
            .expect("run lss-bench")
    };
    let out = run(&["--duration", "ten seconds"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    let out = run(&["--server", "http://127.0.0.1:1", "--phases", "ping"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}
