//! The signer's side of LSS, with no I/O: its credentials, the MACs that
//! bind the broker to what the storage server really said, and the merge of
//! the server's state into the local store.
//!
//! The broker relays; it cannot forge: every state it hands the signer is
//! checked against the server's MAC over the signer's fresh nonce, and
//! every acknowledgement against the MAC the server must have made over
//! exactly the mutations the signer sent. Both MACs are keyed with the ECDH
//! secret of the signer's persistence key and the server key, which the
//! broker never sees (it gets only the token, `SHA-256(secret)`).

use lss_core::{KeyValue, MacScheme, SharedSecret, PUT_CLIENT_NONCE, PUT_SERVER_NONCE};
use sphinx_wire::lss::Muts;

/// Why LSS state is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LssError {
    /// The server's MAC does not match: the broker or a proxy altered the
    /// state, or it is not from the server the signer was told about.
    #[error(
        "{}: the state or acknowledgement was altered in transit; refusing it",
        sphinx_wire::lss::MAC_MISMATCH
    )]
    BadMac,
    /// The local store holds changes LSS lacks: it is ahead of LSS, which the
    /// persist-before-commit rule makes impossible. Not trusted.
    #[error("the local store is ahead of LSS for {keys:?}; refusing to continue (restore the local store from LSS, or investigate the LSS server)")]
    LocalAhead {
        /// Some of the keys concerned.
        keys: Vec<String>,
    },
    /// Same key and version, different values: a fork.
    #[error("LSS and the local store disagree at the same version for {keys:?}: a fork; refusing to continue")]
    Forked {
        /// Some of the keys concerned.
        keys: Vec<String>,
    },
    /// A version beyond what the wire carries.
    #[error("version {0} of {1:?} is out of range")]
    Version(u64, String),
    /// A read whose keys are not strictly increasing: entries were split,
    /// merged or repeated on the way.
    #[error(
        "LSS state keys are not sorted and unique (at {0:?}): altered in transit; refusing it"
    )]
    Unsorted(String),
}

/// The signer's LSS identity for one server.
#[derive(Clone)]
pub struct Credentials {
    /// Its namespace: the persistence public key.
    pub client_id: [u8; 33],
    /// The bearer token the broker presents for it.
    pub token: [u8; 32],
    secret: SharedSecret,
    /// Which MACs the server makes for it.
    pub scheme: MacScheme,
}

impl Credentials {
    /// From the persistence public key and the ECDH secret (as VLS derives
    /// them), with the reference's unframed MACs.
    pub fn new(client_id: [u8; 33], shared_secret: [u8; 32]) -> Self {
        let secret = SharedSecret::from_bytes(shared_secret);
        Credentials {
            client_id,
            token: secret.token().0,
            secret,
            scheme: MacScheme::Unframed,
        }
    }

    /// The same credentials with `scheme` MACs.
    pub fn with_scheme(mut self, scheme: MacScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The MAC the signer puts with `muts`.
    pub fn client_mac(&self, muts: &Muts) -> Result<[u8; 32], LssError> {
        Ok(self
            .scheme
            .mac(&self.secret, PUT_CLIENT_NONCE, &kvs(muts)?)
            .0)
    }

    /// The MAC the server returns for storing exactly `muts`.
    pub fn server_put_mac(&self, muts: &Muts) -> Result<[u8; 32], LssError> {
        Ok(self
            .scheme
            .mac(&self.secret, PUT_SERVER_NONCE, &kvs(muts)?)
            .0)
    }

    /// Checks the server's MAC over a read of `muts` with `nonce`.
    pub fn check_read(
        &self,
        nonce: &[u8; 32],
        muts: &Muts,
        mac: Option<&[u8; 32]>,
    ) -> Result<(), LssError> {
        let expected = self.scheme.mac(&self.secret, nonce, &kvs(muts)?);
        if !mac.is_some_and(|mac| expected.verify(mac)) {
            return Err(LssError::BadMac);
        }
        // A server returns keys in strictly increasing byte order. With
        // unframed MACs a relay could re-split entries without changing the
        // MAC; out of order or repeated keys are the visible trace of that.
        if let Some(w) = muts.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(LssError::Unsorted(w[1].0.clone()));
        }
        Ok(())
    }
}

/// The entries as LSS key-values (versions checked to fit).
pub(crate) fn kvs(muts: &Muts) -> Result<Vec<KeyValue>, LssError> {
    muts.iter()
        .map(|(key, (version, value))| {
            let v =
                i64::try_from(*version).map_err(|_| LssError::Version(*version, key.clone()))?;
            Ok(KeyValue::new(key.clone(), v, value.clone()))
        })
        .collect()
}

/// What to apply locally so the local store equals LSS. `local` and
/// `remote` are whole states (every key). Refuses a local store that is
/// ahead of LSS or forked from it.
pub fn plan(local: &Muts, remote: &Muts) -> Result<Muts, LssError> {
    use std::collections::BTreeMap;
    let remote: BTreeMap<&str, &(u64, Vec<u8>)> =
        remote.iter().map(|(k, vv)| (k.as_str(), vv)).collect();
    let local_map: BTreeMap<&str, &(u64, Vec<u8>)> =
        local.iter().map(|(k, vv)| (k.as_str(), vv)).collect();
    let mut ahead = Vec::new();
    let mut forked = Vec::new();
    for (key, (version, value)) in local.iter() {
        match remote.get(key.as_str()) {
            None => ahead.push(key.clone()),
            Some((rv, _)) if rv < version => ahead.push(key.clone()),
            Some((rv, rvalue)) if rv == version && rvalue != value => forked.push(key.clone()),
            Some(_) => {}
        }
    }
    if !forked.is_empty() {
        forked.truncate(8);
        return Err(LssError::Forked { keys: forked });
    }
    if !ahead.is_empty() {
        ahead.truncate(8);
        return Err(LssError::LocalAhead { keys: ahead });
    }
    Ok(remote
        .into_iter()
        .filter(|(key, (rv, _))| local_map.get(key).is_none_or(|(lv, _)| lv < rv))
        .map(|(key, vv)| (key.to_string(), vv.clone()))
        .collect())
}

/// Whether LSS already holds every one of `muts` (same version and value).
pub fn contains(remote: &Muts, muts: &Muts) -> bool {
    muts.iter().all(|m| remote.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(entries: &[(&str, u64, &[u8])]) -> Muts {
        entries
            .iter()
            .map(|(k, v, val)| (k.to_string(), (*v, val.to_vec())))
            .collect()
    }

    #[test]
    fn a_local_store_behind_lss_is_brought_forward() {
        let local = m(&[("a", 0, b"x"), ("b", 1, b"y")]);
        let remote = m(&[("a", 0, b"x"), ("b", 2, b"z"), ("c", 0, b"n")]);
        assert_eq!(
            plan(&local, &remote),
            Ok(m(&[("b", 2, b"z"), ("c", 0, b"n")]))
        );
        assert_eq!(
            plan(&m(&[]), &remote),
            Ok(remote.clone()),
            "empty local: restore all"
        );
    }

    #[test]
    fn a_local_store_ahead_or_forked_is_refused() {
        let remote = m(&[("a", 1, b"x")]);
        assert!(matches!(
            plan(&m(&[("a", 2, b"x")]), &remote),
            Err(LssError::LocalAhead { .. })
        ));
        assert!(matches!(
            plan(&m(&[("a", 1, b"x"), ("b", 0, b"")]), &remote),
            Err(LssError::LocalAhead { .. })
        ));
        assert!(matches!(
            plan(&m(&[("a", 1, b"y")]), &remote),
            Err(LssError::Forked { .. })
        ));
    }

    #[test]
    fn a_read_must_be_sorted_and_unique_and_framed_macs_bind_entries() {
        let nonce = [9; 32];
        let secret = SharedSecret::from_bytes([7; 32]);
        for scheme in [MacScheme::Unframed, MacScheme::Framed] {
            let creds = Credentials::new([2; 33], [7; 32]).with_scheme(scheme);
            for bad in [
                m(&[("b", 0, b"x"), ("a", 0, b"y")]),
                m(&[("a", 0, b"x"), ("a", 1, b"y")]),
            ] {
                let mac = scheme.mac(&secret, &nonce, &kvs(&bad).expect("kvs")).0;
                assert!(
                    matches!(
                        creds.check_read(&nonce, &bad, Some(&mac)),
                        Err(LssError::Unsorted(_))
                    ),
                    "{bad:?}"
                );
            }
        }
        // The same entries: the two schemes' MACs differ.
        let muts = m(&[("a", 0, b"x")]);
        let unframed = Credentials::new([2; 33], [7; 32]);
        let framed = unframed.clone().with_scheme(MacScheme::Framed);
        assert_ne!(unframed.server_put_mac(&muts), framed.server_put_mac(&muts));
    }

    #[test]
    fn macs_bind_exactly_what_was_stored_or_read() {
        let creds = Credentials::new([2; 33], [7; 32]);
        let muts = m(&[("a", 0, b"x")]);
        let nonce = [9; 32];
        let secret = SharedSecret::from_bytes([7; 32]);
        let good = lss_core::shared_hmac(&secret, &nonce, &kvs(&muts).expect("kvs")).0;
        creds
            .check_read(&nonce, &muts, Some(&good))
            .expect("good MAC");
        assert_eq!(
            creds.check_read(&[8; 32], &muts, Some(&good)),
            Err(LssError::BadMac)
        );
        assert_eq!(
            creds.check_read(&nonce, &m(&[("a", 0, b"y")]), Some(&good)),
            Err(LssError::BadMac)
        );
        assert_eq!(creds.check_read(&nonce, &muts, None), Err(LssError::BadMac));
        assert_ne!(creds.client_mac(&muts), creds.server_put_mac(&muts));
        assert!(matches!(
            creds.client_mac(&m(&[("a", u64::MAX, b"")])),
            Err(LssError::Version(..))
        ));
    }
}
