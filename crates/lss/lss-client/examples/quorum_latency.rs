//! Put latency with one verifying provider and with N providers and a write
//! quorum (docs/benchmarks.md, issue 17): sequential puts of one 1 KiB
//! value, p50 and p99 of each.
//!
//! cargo run --release -p lss-client --example quorum_latency -- W URL [URL...]

use std::time::Instant;

use lss_client::quorum::{Provider, QuorumClient};
use lss_client::{ConnectOptions, PrivClient};
use lss_core::secp256k1::SecretKey;
use lss_core::KeyValue;

const PUTS: i64 = 2_000;

async fn client(url: &str, secret: &SecretKey) -> PrivClient {
    PrivClient::connect(&ConnectOptions::new(url), secret, None, [1; 32])
        .await
        .expect("connect")
        .verifying(None)
}

fn percentiles(mut micros: Vec<u128>) -> (u128, u128) {
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
    (at(0.5), at(0.99))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let w: usize = args
        .first()
        .and_then(|w| w.parse().ok())
        .expect("W URL [URL...]");
    let urls = &args[1..];
    assert!(!urls.is_empty(), "W URL [URL...]");
    let value = vec![0x5a; 1024];

    let one = SecretKey::from_slice(&[0x61; 32]).expect("key");
    let mut single = client(&urls[0], &one).await;
    let mut times = Vec::new();
    for v in 0..PUTS {
        let start = Instant::now();
        single
            .put(vec![KeyValue::new("k", v, value.clone())])
            .await
            .expect("put");
        times.push(start.elapsed().as_micros());
    }
    let (p50, p99) = percentiles(times);
    println!("one provider, verified: p50 {p50} µs, p99 {p99} µs");

    let many = SecretKey::from_slice(&[0x62; 32]).expect("key");
    let mut providers = Vec::new();
    for url in urls {
        providers.push(Provider {
            name: url.clone(),
            client: client(url, &many).await,
        });
    }
    let mut quorum = QuorumClient::new(providers, w).expect("quorum");
    let mut times = Vec::new();
    for v in 0..PUTS {
        let start = Instant::now();
        quorum
            .put(vec![KeyValue::new("k", v, value.clone())])
            .await
            .expect("put");
        times.push(start.elapsed().as_micros());
    }
    let (p50, p99) = percentiles(times);
    println!(
        "{} providers, W = {w}, verified: p50 {p50} µs, p99 {p99} µs",
        urls.len()
    );
}
