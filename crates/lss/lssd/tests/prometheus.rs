//! lssd's metrics as an operator sees them: a real Prometheus (Debian's
//! package, installed when missing) scrapes a running `lssd
//! --metrics-listen`, and the test asks Prometheus's query API for the
//! requests, refusals, commits and totals it caused.

use std::path::Path;

use lk_testkit::process::LssdProcess;
use lk_testkit::prometheus::{metrics_addr, Prometheus};
use lss_client::{ConnectOptions, PrivClient};
use lss_core::secp256k1::SecretKey;
use lss_core::KeyValue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_clients_caused() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = LssdProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_lssd")),
        &[
            "--data-dir",
            data.path().to_str().expect("utf-8"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-key-bytes",
            "16",
            "--max-connections-per-address",
            "3",
        ],
    )
    .expect("start lssd");
    let prometheus = Prometheus::scraping(&[metrics_addr(&server.log())]);

    let secret = SecretKey::from_slice(&[0x42; 32]).expect("key");
    let mut client = PrivClient::connect(&ConnectOptions::new(&server.url), &secret, None, [1; 32])
        .await
        .expect("connect");
    for i in 0..3 {
        client
            .put(vec![KeyValue::new(format!("k{i}"), 0, vec![i; 100])])
            .await
            .expect("put");
    }
    let too_long = client
        .put(vec![KeyValue::new("k".repeat(17), 0, b"x".to_vec())])
        .await;
    assert!(
        too_long.is_err(),
        "a 17-byte key is over --max-key-bytes 16"
    );

    let q = |promql: &str, want: f64| {
        prometheus.wait_for(promql, |v| v == want);
    };
    q(r#"lssd_requests_total{method="Put",code="OK"}"#, 3.0);
    q(
        r#"lssd_requests_total{method="Put",code="INVALID_ARGUMENT"}"#,
        1.0,
    );
    q(r#"lssd_limit_rejections_total{limit="max_key_bytes"}"#, 1.0);
    q(r#"lssd_request_duration_seconds_count{method="Put"}"#, 4.0);
    // Latencies land in buckets: every put answered within the 30 s bucket.
    q(
        r#"lssd_request_duration_seconds_bucket{method="Put",le="30"}"#,
        4.0,
    );
    // Three sequential puts: three commits of one put each.
    q(r#"lss_store_commit_batch_size_sum{engine="redb"}"#, 3.0);
    q(r#"lss_store_commit_batch_size_count{engine="redb"}"#, 3.0);
    prometheus.wait_for(
        r#"lss_store_commit_duration_seconds_sum{engine="redb"}"#,
        |v| v > 0.0,
    );
    q("lssd_connections", 1.0);
    q("lssd_requests_in_flight", 0.0);
    // Sampled every 10 s: one namespace holding its three values (and its
    // verifiable log).
    q("lssd_namespaces", 1.0);
    prometheus.wait_for("lssd_stored_bytes", |v| v >= 300.0);

    // Connections over the per-address limit are refused and counted.
    let _more: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(server.addr).expect("tcp connect"))
        .collect();
    q(
        r#"lssd_connections_refused_total{limit="max_connections_per_address"}"#,
        1.0,
    );
    q("lssd_connections", 3.0);
}
