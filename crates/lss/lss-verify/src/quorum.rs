//! The rules for reading from several providers, shared by `lss-client`'s
//! quorum client and the remote signer: how many answers a read needs, and
//! which verified answer is the newest.
//!
//! With `N` providers and puts acknowledged by `W` of them, any `N − W + 1`
//! answers include one from a provider that acknowledged the last put; the
//! newest answer is then the one at least as new as every other, key by
//! key. If no answer is, providers hold states no single history explains
//! (a fork, or two writers) and nothing is picked.

use lss_core::KeyValue;

/// How many answers a read needs so that it meets every acknowledged write.
pub fn read_quorum(providers: usize, write_quorum: usize) -> usize {
    providers.saturating_sub(write_quorum) + 1
}

/// Whether every key of `b` is in `a` at a version at least as high (the
/// same entry when the version is the same).
pub fn dominates(a: &[KeyValue], b: &[KeyValue]) -> bool {
    b.iter().all(|kb| {
        a.iter()
            .find(|ka| ka.key == kb.key)
            .is_some_and(|ka| ka.version > kb.version || ka == kb)
    })
}

/// The index of an answer at least as new as every other, if there is one.
pub fn newest(answers: &[&[KeyValue]]) -> Option<usize> {
    answers
        .iter()
        .position(|a| answers.iter().all(|b| dominates(a, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, version: i64, value: &[u8]) -> KeyValue {
        KeyValue::new(key, version, value.to_vec())
    }

    #[test]
    fn the_newest_answer_dominates_key_by_key_and_forks_have_none() {
        let old = vec![kv("a", 1, b"x")];
        let new = vec![kv("a", 2, b"y"), kv("b", 0, b"z")];
        let empty: Vec<KeyValue> = vec![];
        assert_eq!(newest(&[&old, &new, &empty]), Some(1));
        assert_eq!(newest(&[&empty]), Some(0));
        // Same version, different value: a fork, nothing dominates.
        let forked = vec![kv("a", 2, b"w"), kv("b", 0, b"z")];
        assert_eq!(newest(&[&new, &forked]), None);
        // Each newer on a different key: no single history.
        let other = vec![kv("a", 1, b"x"), kv("b", 1, b"q")];
        assert_eq!(newest(&[&new, &other]), None);
        assert_eq!(read_quorum(3, 2), 2);
        assert_eq!(read_quorum(1, 1), 1);
        assert_eq!(read_quorum(5, 5), 1);
    }
}
