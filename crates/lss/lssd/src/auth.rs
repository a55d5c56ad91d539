//! Request authentication with a bounded cache of per-client secrets.
//!
//! Checking an `Auth` costs a public key parse (a square root) and an ECDH
//! multiplication: about two thirds of the server's CPU per put before this
//! cache. The mapping from a client id's bytes to its namespace and shared
//! secret never changes for a server key, so it is computed once per client
//! and kept in a bounded cache (least recently used entries go first). The
//! token is still compared, in constant time, on every request; a cached
//! entry is stored whatever token came with it, so repeated attempts with a
//! wrong token are cheap to refuse too.
//!
//! Whether an id is cached is visible in timing (a miss costs an ECDH); that
//! reveals only that a public key was used recently, not any secret.

use lss_core::{AuthError, ClientId, ServerKey, SharedSecret, Token};

/// Entries kept: ~200 bytes each, so the default bounds the cache near 13 MiB.
pub const DEFAULT_CACHE_ENTRIES: usize = 65_536;

#[derive(Clone)]
struct Known {
    client: ClientId,
    shared: SharedSecret,
    token: Token,
}

/// Authenticates requests for one server key.
pub struct Authenticator {
    key: ServerKey,
    cache: quick_cache::sync::Cache<Vec<u8>, Known>,
}

impl Authenticator {
    /// An authenticator keeping at most `entries` clients' secrets.
    pub fn new(key: ServerKey, entries: usize) -> Self {
        Authenticator {
            key,
            cache: quick_cache::sync::Cache::new(entries.max(1)),
        }
    }

    /// The server key.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// Same result as [`ServerKey::authenticate`], without the ECDH for a
    /// client seen recently.
    pub fn authenticate(
        &self,
        client_id: &[u8],
        token: &[u8],
    ) -> Result<(ClientId, SharedSecret), AuthError> {
        let known = match self.cache.get(client_id) {
            Some(known) => known,
            None => {
                let client = ClientId::parse(client_id)?;
                let shared = self.key.shared_secret(&client);
                let known = Known {
                    client,
                    token: shared.token(),
                    shared,
                };
                self.cache.insert(client_id.to_vec(), known.clone());
                known
            }
        };
        if !known.token.verify(token) {
            return Err(AuthError::InvalidToken);
        }
        Ok((known.client, known.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lss_core::secp256k1::{Secp256k1, SecretKey};

    fn server() -> ServerKey {
        ServerKey::new(SecretKey::from_slice(&[0x22; 32]).expect("key"))
    }

    #[test]
    fn agrees_with_the_uncached_check_on_every_path() {
        let auth = Authenticator::new(server(), 2);
        let secp = Secp256k1::signing_only();
        for byte in 1..=5u8 {
            let public = SecretKey::from_slice(&[byte; 32])
                .expect("key")
                .public_key(&secp);
            for id in [
                public.serialize().to_vec(),
                public.serialize_uncompressed().to_vec(),
            ] {
                let token = server()
                    .shared_secret(&ClientId::parse(&id).expect("id"))
                    .token();
                let mut wrong = token.0;
                wrong[0] ^= 1;
                // Twice each: the first may miss, the second hits.
                for _ in 0..2 {
                    let expected = server().authenticate(&id, &token.0).expect("valid");
                    assert_eq!(auth.authenticate(&id, &token.0).expect("valid"), expected);
                    assert_eq!(auth.authenticate(&id, &wrong), Err(AuthError::InvalidToken));
                    assert_eq!(
                        auth.authenticate(&id, &token.0[..31]),
                        Err(AuthError::InvalidToken)
                    );
                }
            }
        }
        for bad in [&[][..], &[5; 33][..], &[9; 65][..]] {
            assert_eq!(
                auth.authenticate(bad, &[0; 32]),
                Err(AuthError::InvalidClientId)
            );
        }
    }
}
