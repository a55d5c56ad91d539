//! tlog.md §6.4 under SIGKILL: 20 kills of `tlogd` while 8 clients append,
//! on the embedded store and on PostgreSQL.
//! After each restart every acknowledged append is at its index with its
//! bytes (C4), and the log a client verified before the crash is still a
//! prefix of the log after it (no signed checkpoint covered lost entries, no
//! rollback: C1–C3), which `tlog-cli sync` with its persisted view checks.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lk_testkit::process::workspace_binary;

fn start(dir: &Path, port: u16, backend: &[String]) -> Child {
    let mut child = Command::new(workspace_binary("tlogd"))
        .args(["--data-dir", dir.to_str().expect("utf8")])
        .args(backend)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--checkpoint-interval-ms", "100"])
        .args(["--sync-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tlogd");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    loop {
        let line = lines.next().expect("tlogd exited").expect("read");
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

fn published_size(url: &str) -> u64 {
    match agent().get(&format!("{url}/checkpoint")).call() {
        Ok(mut r) if r.status() == 200 => r
            .body_mut()
            .read_to_string()
            .ok()
            .and_then(|t| t.lines().nth(1).and_then(|l| l.parse().ok()))
            .unwrap_or(0),
        _ => 0,
    }
}

#[test]
fn twenty_kills_lose_no_acknowledged_append_and_never_roll_back() {
    twenty_kills(&[]);
}

/// The same with the log in PostgreSQL: a SIGKILL mid-transaction leaves
/// the server to roll back what was not committed, and an acknowledged
/// append was committed.
#[test]
fn twenty_kills_on_postgresql_lose_no_acknowledged_append_and_never_roll_back() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let schema = runtime.block_on(lk_testkit::postgres::Schema::fresh());
    twenty_kills(&[
        "--postgres".into(),
        schema.url.clone(),
        "--postgres-schema".into(),
        schema.name.clone(),
    ]);
    drop(schema);
}

fn twenty_kills(backend: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("tlogd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("view");
    let out = dir.path().join("new-entries");
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut verified: Vec<String> = Vec::new();
    let mut seed = 0x2545_f491_u64;
    // Twenty kills; the 21st start only verifies the last round.
    for round in 0..=20 {
        let mut child = start(&data, port, backend);
        let vkey = std::fs::read_to_string(data.join("vkey"))
            .expect("vkey")
            .trim()
            .to_string();
        let token = std::fs::read_to_string(data.join("append-token"))
            .expect("token")
            .trim()
            .to_string();
        // Verify the restarted log against the view kept across crashes.
        let max_acked = acked
            .lock()
            .expect("lock")
            .iter()
            .map(|(i, _)| i + 1)
            .max()
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while published_size(&url) < max_acked {
            assert!(
                Instant::now() < deadline,
                "round {round}: acknowledged appends not published"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sync = Command::new(env!("CARGO_BIN_EXE_tlog-cli"))
            .args(["sync", "--url", &url, "--vkey", &vkey])
            .args([
                "--state",
                state.to_str().expect("utf8"),
                "--entries",
                out.to_str().expect("utf8"),
            ])
            .output()
            .expect("tlog-cli");
        assert!(
            sync.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&sync.stderr)
        );
        verified.extend(
            std::fs::read_to_string(&out)
                .expect("entries")
                .lines()
                .map(str::to_string),
        );
        for (index, entry) in acked.lock().expect("lock").iter() {
            assert_eq!(
                verified.get(*index as usize),
                Some(&hex::encode(entry)),
                "round {round}: acknowledged entry {index} lost or changed"
            );
        }
        if round == 20 {
            child.kill().expect("stop");
            child.wait().expect("reaped");
            break;
        }
        // Load, then a kill at a pseudo-random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (url, token, stop, acked) =
                    (url.clone(), token.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let entry = format!("r{round}-t{t}-{n}");
                        n += 1;
                        let Ok(mut r) = agent
                            .post(&format!("{url}/add"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .send(entry.as_bytes())
                        else {
                            break;
                        };
                        if r.status() != 200 {
                            break;
                        }
                        let Ok(body) = r.body_mut().read_to_string() else {
                            break;
                        };
                        let index: u64 = body.trim().parse().expect("an index");
                        acked.lock().expect("lock").push((index, entry));
                    }
                })
            })
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(50 + (seed >> 33) % 250));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("appender");
        }
    }
    let total = acked.lock().expect("lock").len();
    assert!(total > 200, "only {total} appends were acknowledged");
    assert!(
        verified.len() >= total,
        "every acknowledged append verified"
    );
}
