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

/// Where each key of `wanted` must be written from to bring a provider
/// whose whole state is `current` up to it: the version after its current
/// one (0 for a key it lacks). Keys already at or past their wanted version
/// are left out.
pub fn repair_plan(current: &[KeyValue], wanted: &[KeyValue]) -> Vec<(KeyValue, i64)> {
    wanted
        .iter()
        .filter_map(|w| {
            let from = current
                .iter()
                .find(|c| c.key == w.key)
                .map_or(0, |c| c.version.saturating_add(1));
            (from <= w.version).then(|| (w.clone(), from))
        })
        .collect()
}

/// The puts that carry out `plan` under LSS's rule that a key's next version
/// is exactly one more: step `j` writes every planned key still short of
/// its wanted version at its `j`-th version, with the wanted value (the
/// values in between are superseded anyway). Steps come in order; each must
/// be stored before the next.
pub fn repair_steps(plan: &[(KeyValue, i64)]) -> Vec<Vec<KeyValue>> {
    let mut steps = Vec::new();
    let mut next: Vec<i64> = plan.iter().map(|(_, from)| *from).collect();
    loop {
        let step: Vec<KeyValue> = plan
            .iter()
            .zip(&next)
            .filter(|((w, _), v)| **v <= w.version)
            .map(|((w, _), v)| KeyValue::new(w.key.clone(), *v, w.value.clone()))
            .collect();
        if step.is_empty() {
            return steps;
        }
        steps.push(step);
        for ((w, _), v) in plan.iter().zip(&mut next) {
            if *v <= w.version {
                *v += 1;
            }
        }
    }
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

    #[test]
    fn repair_writes_every_missing_version_in_order_and_ends_at_the_wanted_state() {
        let current = vec![kv("a", 1, b"old"), kv("c", 5, b"same")];
        let wanted = vec![kv("a", 3, b"new"), kv("b", 1, b"n"), kv("c", 5, b"same")];
        let plan = repair_plan(&current, &wanted);
        assert_eq!(plan.len(), 2, "c is already there");
        let steps = repair_steps(&plan);
        assert_eq!(
            steps,
            vec![
                vec![kv("a", 2, b"new"), kv("b", 0, b"n")],
                vec![kv("a", 3, b"new"), kv("b", 1, b"n")],
            ]
        );
        // Applying them under LSS's version rule reaches `wanted`.
        let mut state: std::collections::BTreeMap<String, (i64, Vec<u8>)> = current
            .iter()
            .map(|kv| (kv.key.clone(), (kv.version, kv.value.clone())))
            .collect();
        for step in &steps {
            for kv in step {
                let now = state.get(&kv.key).map(|(v, _)| *v);
                assert!(lss_core::accepts(kv.version, now), "{kv:?} after {now:?}");
                state.insert(kv.key.clone(), (kv.version, kv.value.clone()));
            }
        }
        let reached: Vec<KeyValue> = state
            .into_iter()
            .map(|(k, (v, val))| KeyValue::new(k, v, val))
            .collect();
        assert_eq!(reached, wanted);
        assert!(repair_steps(&repair_plan(&wanted, &wanted)).is_empty());
    }
}
