//! statechain.md §8, "receiver verification, coin with 100 transfers (101
//! backups, 302 entries) ≤ 60 ms on one core (≤ 45 ms without
//! `bitcoinconsensus`)": builds such a coin in memory with the same parties
//! as `tests/flow.rs` (SE, member, owners), then times what a receiver does
//! with the transfer message: decrypt and parse it, rebuild the coin's chain
//! from the log's entries under the rules, and verify every backup and the
//! key update (`verify::verify_transfer`), with and without
//! `bitcoinconsensus` checking each backup's script.
//!
//! `taskset -c 0 cargo run --release -p statechain-core --example receiver_verify [-- TRANSFERS RUNS]`

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/world/mod.rs"]
mod world;

use std::time::{Duration, Instant};

use bitcoin::{Transaction, TxOut};
use statechain_core::bip340;
use statechain_core::message::{self, TransferMessage};
use statechain_core::verify::{self, Receiver, ScriptCheck};
use world::*;

/// Skips script checks: the "without bitcoinconsensus" row.
struct NoScripts;

impl ScriptCheck for NoScripts {
    fn verify_input(&self, _: &TxOut, _: &Transaction, _: usize) -> Result<(), String> {
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let transfers: u32 = args.next().map_or(100, |a| a.parse().expect("TRANSFERS"));
    let runs: usize = args.next().map_or(30, |a| a.parse().expect("RUNS"));
    assert!(transfers >= 1, "at least one transfer");
    let tip = 500;
    let mut world = World::new(7);
    let wallets = [Wallet::new(&mut world.rng), Wallet::new(&mut world.rng)];
    let mut coin = world.deposit(&wallets[0], DEPOSIT_TIP);
    let b1 = coin.next_backup(&wallets[0].o.public()).expect("backup 1");
    world.cosign(&mut coin, b1);
    let built = Instant::now();
    for t in 0..transfers - 1 {
        let to = &wallets[(t as usize + 1) % 2];
        let enc = world.send(&mut coin, &to.address());
        coin = world.receive(to, &enc, tip);
    }
    let receiver = &wallets[transfers as usize % 2];
    let enc = world.send(&mut coin, &receiver.address());
    let id = world.id();
    eprintln!(
        "coin with {transfers} transfers built in {:.1} s: {} log entries, {} backups",
        built.elapsed().as_secs_f64(),
        world.log.len(),
        coin.backups.len()
    );

    let once = |scripts: &dyn ScriptCheck| {
        let started = Instant::now();
        let plain = message::open(&enc, &receiver.a, &SE_ID, &id).expect("decrypt");
        let msg = TransferMessage::from_json(&plain).expect("parse");
        let chain = world.chain_from_log();
        let verified = verify::verify_transfer(
            &SE_ID,
            &id,
            &msg,
            &chain,
            &Receiver {
                owner_share: &receiver.o,
                auth_key: bip340::xonly_of(&receiver.a),
            },
            &world.facts(tip),
            3,
            scripts,
        )
        .expect("verified");
        assert_eq!(verified.count, transfers + 1);
        started.elapsed()
    };
    for (name, scripts) in [
        (
            "with bitcoinconsensus",
            &support::Consensus as &dyn ScriptCheck,
        ),
        ("without script checks", &NoScripts),
    ] {
        let mut times: Vec<Duration> = (0..runs).map(|_| once(scripts)).collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "receiver verification {name}: p50 {:.2} ms, min {:.2} ms, max {:.2} ms ({runs} runs)",
            ms(times[runs / 2]),
            ms(times[0]),
            ms(times[runs - 1])
        );
    }
}
