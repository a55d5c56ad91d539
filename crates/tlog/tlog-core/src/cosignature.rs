//! tlog-cosignature v1.0.1, Ed25519 (tlog.md §3.6): the signed message and
//! the rules for merging cosignatures.

/// `cosignature/v1` LF `time <time>` LF ‖ the checkpoint text.
pub fn message(time: u64, text: &str) -> Vec<u8> {
    let mut out = format!("cosignature/v1\ntime {time}\n").into_bytes();
    out.extend_from_slice(text.as_bytes());
    out
}

/// How far in the future a cosignature's time may be, in seconds.
pub const MAX_FUTURE: u64 = 600;
