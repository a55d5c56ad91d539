//! One entry of the reference lssd's redb table: a key string and CBOR value
//! bytes, as `lssd import-reference` reads them from a file it did not write.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b))
        .min(data.len().saturating_sub(1));
    let (key, value) = data
        .get(1..)
        .unwrap_or_default()
        .split_at(split.min(data.len().saturating_sub(1)));
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let _ = lss_transfer::reference::decode(key, value);
});
