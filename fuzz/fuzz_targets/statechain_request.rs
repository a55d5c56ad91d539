//! statechaind's request parsing on arbitrary bodies: every JSON shape of
//! §3.3 through the strict parsers and field checks (hex, points, scalars,
//! the per-route field sets, the auth signature). No panic; every refusal
//! is a 4xx with a code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statechain_core::auth::Op;
use statechaind::api::{parse, CoinJson, DepositInit, Inbox};

fuzz_target!(|data: &[u8]| {
    let se_id = [7u8; 32];
    if let Ok(req) = parse::<CoinJson>(data) {
        for op in [
            Op::SignFirst,
            Op::SignSecond,
            Op::SignCancel,
            Op::TransferSender,
            Op::TransferMessage,
            Op::TransferReceiver,
            Op::WithdrawComplete,
        ] {
            if let Err(e) = req.check(&se_id, op) {
                assert!((400..500).contains(&e.status), "{e:?}");
            }
        }
    }
    if let Ok(req) = parse::<DepositInit>(data) {
        if let Err(e) = req.check(&se_id) {
            assert!((400..500).contains(&e.status), "{e:?}");
        }
    }
    if let Ok(req) = parse::<Inbox>(data) {
        let _ = req.check(&se_id, 1_700_000_000);
    }
    if let Err(e) = parse::<serde_json::Value>(data) {
        assert_eq!(e.status, 400);
    }
});
