//! Payment tokens on the server's side (keyserver.md §5): the issuer key
//! files, which keys are redeemable, and issuance (the offline `keyserverd
//! tokens sign`, and `mint` for tests and private setups).
//!
//! Files in the data directory: `token_issuer_key` (the current secret
//! key, PKCS#8 PEM, 0600) and `token_keys_retired` (one line per earlier
//! key: `<unix time retired> <b64 SPKI>`, public). A retired key stays
//! redeemable for [`TOKEN_KEY_LIFETIME`], so tokens bought before a
//! rotation are not lost.

use std::path::Path;

use ks_core::b64;
use ks_core::token::{
    challenge_digest, IssuerKey, IssuerSecret, OsRng as DefaultRng, TokenRequest,
};

/// How long a retired key's tokens stay redeemable (365 days).
pub const TOKEN_KEY_LIFETIME: u64 = 365 * 86_400;
/// The most token requests signed in one call or file.
pub const MAX_REQUESTS: usize = 4096;

const KEY_FILE: &str = "token_issuer_key";
const RETIRED_FILE: &str = "token_keys_retired";

/// Why the token keys or an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// A file could not be read or written.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        problem: String,
    },
    /// A request or key that does not parse or verify.
    #[error("{0}")]
    Invalid(String),
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TokenFileError {
    TokenFileError::File {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// What a keyserver redeems: its deployment's challenge and its keys.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// SHA-256 of the TokenChallenge (primary domain, ORIGIN).
    pub digest: [u8; 32],
    /// The key tokens are issued under now (TKNPUBKEY).
    pub current: IssuerKey,
    /// Every redeemable key, the current one first (TKNACCEPTED).
    pub accepted: Vec<IssuerKey>,
}

/// The issuer's secret key in `dir`, created (0600) if there is none.
pub fn load_or_create_issuer(dir: &Path) -> Result<IssuerSecret, TokenFileError> {
    let path = dir.join(KEY_FILE);
    match durable_file::read(&path).map_err(|e| file_error(&path, e))? {
        Some(pem) => {
            let pem = String::from_utf8(pem).map_err(|e| file_error(&path, e))?;
            IssuerSecret::from_pem(&pem).map_err(|e| file_error(&path, e))
        }
        None => {
            let secret = IssuerSecret::generate(&mut DefaultRng)
                .map_err(|e| TokenFileError::Invalid(e.to_string()))?;
            let pem = secret.to_pem().map_err(|e| file_error(&path, e))?;
            durable_file::create_new(&path, pem.as_bytes(), 0o600)
                .map_err(|e| file_error(&path, e))?;
            Ok(secret)
        }
    }
}

/// Retired keys still redeemable at `now`.
fn retired(dir: &Path, now: u64) -> Result<Vec<IssuerKey>, TokenFileError> {
    let path = dir.join(RETIRED_FILE);
    let Some(text) = durable_file::read(&path).map_err(|e| file_error(&path, e))? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8(text).map_err(|e| file_error(&path, e))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| file_error(&path, format!("line {}: {what}", n + 1));
        let (at, spki) = line
            .split_once(' ')
            .ok_or_else(|| bad("not `<time> <spki>`"))?;
        let at: u64 = at.parse().map_err(|_| bad("bad time"))?;
        let spki = b64::decode(spki).ok_or_else(|| bad("SPKI is not base64"))?;
        let key = IssuerKey::from_spki(&spki).map_err(|e| bad(&e.to_string()))?;
        if at.saturating_add(TOKEN_KEY_LIFETIME) > now {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The redemption policy of a keyserver in `dir` serving `domain` with
/// `origin`, creating the issuer key on first use.
pub fn policy(
    dir: &Path,
    domain: &str,
    origin: &str,
    now: u64,
) -> Result<(IssuerSecret, TokenPolicy), TokenFileError> {
    let secret = load_or_create_issuer(dir)?;
    let current = secret.public().clone();
    let mut accepted = vec![current.clone()];
    for k in retired(dir, now)? {
        if !accepted.iter().any(|a| a.key_id() == k.key_id()) {
            accepted.push(k);
        }
    }
    Ok((
        secret,
        TokenPolicy {
            digest: challenge_digest(domain, origin),
            current,
            accepted,
        },
    ))
}

/// `keyserverd tokens rotate`: a new issuer key; the old one is retired
/// (redeemable for [`TOKEN_KEY_LIFETIME`] more). Returns the new key.
pub fn rotate(dir: &Path, now: u64) -> Result<IssuerKey, TokenFileError> {
    let old = load_or_create_issuer(dir)?;
    let retired_path = dir.join(RETIRED_FILE);
    let mut text = durable_file::read(&retired_path)
        .map_err(|e| file_error(&retired_path, e))?
        .unwrap_or_default();
    text.extend_from_slice(format!("{now} {}\n", b64::encode(old.public().spki())).as_bytes());
    // The retired list first: a crash in between leaves the old key both
    // current and retired, which is harmless.
    durable_file::replace(&retired_path, &text, 0o644).map_err(|e| file_error(&retired_path, e))?;
    let new = IssuerSecret::generate(&mut DefaultRng)
        .map_err(|e| TokenFileError::Invalid(e.to_string()))?;
    let path = dir.join(KEY_FILE);
    let pem = new.to_pem().map_err(|e| file_error(&path, e))?;
    durable_file::replace(&path, pem.as_bytes(), 0o600).map_err(|e| file_error(&path, e))?;
    Ok(new.public().clone())
}

/// Signs blinded requests (b64 TokenRequests), each once: a request that
/// repeats within the call is refused, as is one for another key.
pub fn sign_requests(
    secret: &IssuerSecret,
    requests: &[String],
) -> Result<Vec<String>, TokenFileError> {
    if requests.len() > MAX_REQUESTS {
        return Err(TokenFileError::Invalid(format!(
            "{} requests; at most {MAX_REQUESTS} per call",
            requests.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let bad = |e: &dyn std::fmt::Display| TokenFileError::Invalid(format!("request {i}: {e}"));
        let bytes = b64::decode(r).ok_or_else(|| bad(&"not base64"))?;
        let request = TokenRequest::parse(&bytes).map_err(|e| bad(&e))?;
        if !seen.insert(request.blinded_msg) {
            return Err(bad(&"repeats an earlier request"));
        }
        let response = secret.sign(&request).map_err(|e| bad(&e))?;
        out.push(b64::encode(&response.to_bytes()));
    }
    Ok(out)
}

/// `keyserverd tokens mint --danger-linkable`: finished tokens made by the
/// issuer itself, which therefore knows (and could link) every one.
pub fn mint(
    secret: &IssuerSecret,
    digest: &[u8; 32],
    count: usize,
) -> Result<Vec<String>, TokenFileError> {
    let key = secret.public();
    (0..count)
        .map(|_| {
            let mut nonce = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
            let (request, pending) = key
                .blind(digest, nonce, &mut DefaultRng)
                .map_err(|e| TokenFileError::Invalid(e.to_string()))?;
            let response = secret
                .sign(&request)
                .map_err(|e| TokenFileError::Invalid(e.to_string()))?;
            key.finalize(digest, &pending, &response)
                .map(|t| t.to_b64())
                .map_err(|e| TokenFileError::Invalid(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_tokens_redeemable_for_a_year() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, p) = policy(dir.path(), "d.example", "d.example/kt/v1", 1_000).expect("policy");
        assert_eq!(p.accepted.len(), 1);
        let digest = p.digest;
        let token = ks_core::token::Token::from_b64(&mint(&first, &digest, 1).expect("mint")[0])
            .expect("token");
        let new = rotate(dir.path(), 2_000).expect("rotate");
        let (_, p) = policy(dir.path(), "d.example", "d.example/kt/v1", 3_000).expect("policy");
        assert_eq!(p.current.key_id(), new.key_id());
        assert_eq!(p.accepted.len(), 2);
        token
            .verify(&digest, &p.accepted)
            .expect("still redeemable");
        // A year after its retirement the old key is gone.
        let later = 2_000 + TOKEN_KEY_LIFETIME;
        let (_, p) = policy(dir.path(), "d.example", "d.example/kt/v1", later).expect("policy");
        assert_eq!(p.accepted.len(), 1);
        assert!(token.verify(&digest, &p.accepted).is_err());
        // The key file is private.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn issuance_refuses_repeats_garbage_and_floods() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = load_or_create_issuer(dir.path()).expect("key");
        let (request, _) = secret
            .public()
            .blind(&[7; 32], [1; 32], &mut DefaultRng)
            .expect("blind");
        let one = b64::encode(&request.to_bytes());
        assert_eq!(
            sign_requests(&secret, std::slice::from_ref(&one))
                .expect("sign")
                .len(),
            1
        );
        assert!(sign_requests(&secret, &[one.clone(), one.clone()]).is_err());
        assert!(sign_requests(&secret, &["AAAA".into()]).is_err());
        assert!(sign_requests(&secret, &["not b64".into()]).is_err());
        assert!(sign_requests(&secret, &vec![one; MAX_REQUESTS + 1]).is_err());
        // A corrupt key file is an error naming the file, not a new key.
        std::fs::write(dir.path().join(KEY_FILE), "garbage").expect("write");
        let e = load_or_create_issuer(dir.path()).expect_err("refused");
        assert!(e.to_string().contains(KEY_FILE), "{e}");
    }
}
