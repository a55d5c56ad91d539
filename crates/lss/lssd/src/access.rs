//! Who may be a client.
//!
//! With `access = open` (the default, right for a personal server) any
//! keypair is a client, as with the reference. A provider serving signers it
//! does not know sets `access = allowlist`: then only these clients are
//! served, every other request is refused with `PERMISSION_DENIED` before the
//! store is touched (and, for large requests, before their bodies are read:
//! see `preauth`):
//!
//! - client ids the operator lists in `<data_dir>/allowed_clients` (one hex
//!   public key per line, `#` comments), re-read when the file changes;
//! - clients that registered themselves with a **registration token** the
//!   operator issued (`lssd issue-token`): the client sends it once, in the
//!   `lightkeeper-registration-token` request header, and its id is written
//!   to `<data_dir>/registered_clients` (durably, before the request goes on).
//!   Each token registers one client; the same client may present it again.
//!
//! Tokens are stateless to issue: `lkreg1.<nonce>.<tag>`, the tag an HMAC of
//! the nonce under `<data_dir>/registration_key`, so `lssd issue-token` needs
//! no access to the running server, and only the server writes the list of
//! registrations (which also records each token's nonce, making it one-time).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use lss_core::ClientId;
use sha2::Sha256;

/// The request header carrying a registration token.
pub use lss_core::REGISTRATION_TOKEN_HEADER as TOKEN_HEADER;
/// The operator's list of client ids.
pub const ALLOWED_FILE: &str = "allowed_clients";
/// The server's list of clients registered with a token.
pub const REGISTERED_FILE: &str = "registered_clients";
/// The key registration tokens are made with.
pub const KEY_FILE: &str = "registration_key";
/// How often the operator's list is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

const TOKEN_PREFIX: &str = "lkreg1.";
const TOKEN_CONTEXT: &[u8] = b"lssd registration token v1";
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// Who may be a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessMode {
    /// Any keypair.
    #[default]
    Open,
    /// Listed or registered clients only.
    Allowlist,
}

/// Why a client is refused, or its registration could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not listed, and no token sent.
    #[error("client not allowed on this server: ask its operator for a registration token")]
    NotAllowed,
    /// The token is not one this server issued.
    #[error("registration token is not valid for this server")]
    BadToken,
    /// The token registered another client already.
    #[error("registration token was already used by another client")]
    TokenUsed,
    /// The registration could not be written.
    #[error("cannot record the registration: {0}")]
    Io(String),
}

/// Why the access files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] durable_file::FileError),
    /// A line of a list is not what it should be.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The key registration tokens are made and checked with. `Debug` redacts it.
#[derive(Clone)]
pub struct RegistrationKey([u8; 32]);

impl std::fmt::Debug for RegistrationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistrationKey(<redacted>)")
    }
}

impl RegistrationKey {
    /// Loads `<dir>/registration_key`, creating it (mode 0600) if missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, LoadError> {
        let path = dir.join(KEY_FILE);
        loop {
            if let Some(bytes) = durable_file::read(&path)? {
                let text = String::from_utf8_lossy(&bytes);
                let mut key = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut key).map_err(|e| LoadError::Parse {
                    path: path.clone(),
                    line: 1,
                    message: format!("not 64 hex characters: {e}"),
                })?;
                return Ok(RegistrationKey(key));
            }
            let key: [u8; 32] = rand::random();
            match durable_file::create_new(&path, hex::encode(key).as_bytes(), 0o600) {
                Ok(()) => return Ok(RegistrationKey(key)),
                // Created by someone else meanwhile: read theirs.
                Err(durable_file::FileError::Exists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn tag(&self, nonce: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(TOKEN_CONTEXT);
        mac.update(nonce);
        mac
    }

    /// A new token from `nonce` (random, from the caller).
    pub fn issue(&self, nonce: [u8; NONCE_LEN]) -> String {
        let tag = self.tag(&nonce).finalize().into_bytes();
        format!(
            "{TOKEN_PREFIX}{}.{}",
            hex::encode(nonce),
            hex::encode(&tag[..TAG_LEN])
        )
    }

    /// The token's nonce if this key issued it.
    pub fn check(&self, token: &str) -> Result<[u8; NONCE_LEN], AccessError> {
        let rest = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(AccessError::BadToken)?;
        let (nonce_hex, tag_hex) = rest.split_once('.').ok_or(AccessError::BadToken)?;
        let mut nonce = [0u8; NONCE_LEN];
        let mut tag = [0u8; TAG_LEN];
        hex::decode_to_slice(nonce_hex, &mut nonce).map_err(|_| AccessError::BadToken)?;
        hex::decode_to_slice(tag_hex, &mut tag).map_err(|_| AccessError::BadToken)?;
        self.tag(&nonce)
            .verify_truncated_left(&tag)
            .map_err(|_| AccessError::BadToken)?;
        Ok(nonce)
    }
}

/// The access policy a server enforces.
pub struct Access {
    list: Option<Allowlist>,
}

struct Allowlist {
    allowed_path: PathBuf,
    registered_path: PathBuf,
    key: RegistrationKey,
    state: RwLock<Lists>,
    /// Serialises registrations (each rewrites the registered file).
    writing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Lists {
    operator: HashSet<ClientId>,
    operator_mtime: Option<SystemTime>,
    /// Registered clients and the nonce of the token each used.
    registered: HashMap<ClientId, [u8; NONCE_LEN]>,
    used: HashSet<[u8; NONCE_LEN]>,
}

impl Access {
    /// Any keypair is a client.
    pub fn open() -> Self {
        Access { list: None }
    }

    /// The policy for `mode`, its files in `dir` (loaded now; blocking).
    pub fn load(mode: AccessMode, dir: &Path) -> Result<Self, LoadError> {
        match mode {
            AccessMode::Open => Ok(Access::open()),
            AccessMode::Allowlist => {
                let key = RegistrationKey::load_or_create(dir)?;
                let registered_path = dir.join(REGISTERED_FILE);
                let mut lists = Lists::default();
                if let Some(bytes) = durable_file::read(&registered_path).or_else(empty_ok)? {
                    for (client, nonce) in parse_registered(&registered_path, &bytes)? {
                        lists.used.insert(nonce);
                        lists.registered.insert(client, nonce);
                    }
                }
                let list = Allowlist {
                    allowed_path: dir.join(ALLOWED_FILE),
                    registered_path,
                    key,
                    state: RwLock::new(lists),
                    writing: tokio::sync::Mutex::new(()),
                };
                list.reload()?;
                Ok(Access { list: Some(list) })
            }
        }
    }

    /// Whether `client` is served without registering (memory only).
    pub fn is_allowed(&self, client: &ClientId) -> bool {
        match &self.list {
            None => true,
            Some(list) => {
                let lists = list.state.read().unwrap_or_else(|p| p.into_inner());
                lists.operator.contains(client) || lists.registered.contains_key(client)
            }
        }
    }

    /// Admits `client`, registering it with `token` if it is not allowed yet.
    pub async fn admit(&self, client: ClientId, token: Option<&str>) -> Result<(), AccessError> {
        let Some(list) = &self.list else {
            return Ok(());
        };
        if self.is_allowed(&client) {
            return Ok(());
        }
        let token = token.ok_or(AccessError::NotAllowed)?;
        let nonce = list.key.check(token)?;
        let _writing = list.writing.lock().await;
        let contents = {
            let lists = list.state.read().unwrap_or_else(|p| p.into_inner());
            if lists.registered.contains_key(&client) {
                return Ok(()); // Registered by a concurrent request.
            }
            if lists.used.contains(&nonce) {
                return Err(AccessError::TokenUsed);
            }
            let mut text = String::new();
            for (c, n) in lists
                .registered
                .iter()
                .chain(std::iter::once((&client, &nonce)))
            {
                text.push_str(&format!(
                    "{} {}\n",
                    hex::encode(c.as_bytes()),
                    hex::encode(n)
                ));
            }
            text
        };
        let path = list.registered_path.clone();
        tokio::task::spawn_blocking(move || {
            durable_file::replace(&path, contents.as_bytes(), 0o600)
        })
        .await
        .map_err(|e| AccessError::Io(e.to_string()))?
        .map_err(|e| AccessError::Io(e.to_string()))?;
        let mut lists = list.state.write().unwrap_or_else(|p| p.into_inner());
        lists.used.insert(nonce);
        lists.registered.insert(client, nonce);
        tracing::info!(client = %client.short(), "client registered with a token");
        Ok(())
    }

    /// Re-reads the operator's list if it changed (blocking; run off the
    /// executor). A list that does not parse is logged and the old one kept.
    pub fn reload(&self) {
        if let Some(list) = &self.list {
            if let Err(e) = list.reload() {
                tracing::error!(error = %e, "keeping the previous client list");
            }
        }
    }

    /// Whether this policy restricts clients (so its list needs reloading).
    pub fn is_restricted(&self) -> bool {
        self.list.is_some()
    }
}

fn empty_ok(e: durable_file::FileError) -> Result<Option<Vec<u8>>, durable_file::FileError> {
    match e {
        durable_file::FileError::Empty(_) => Ok(None),
        e => Err(e),
    }
}

impl Allowlist {
    fn reload(&self) -> Result<(), LoadError> {
        let mtime = std::fs::metadata(&self.allowed_path)
            .and_then(|m| m.modified())
            .ok();
        {
            let lists = self.state.read().unwrap_or_else(|p| p.into_inner());
            if mtime.is_some() && lists.operator_mtime == mtime {
                return Ok(());
            }
        }
        let operator = match durable_file::read(&self.allowed_path).or_else(empty_ok)? {
            Some(bytes) => parse_allowed(&self.allowed_path, &bytes)?,
            None => HashSet::new(),
        };
        let mut lists = self.state.write().unwrap_or_else(|p| p.into_inner());
        if lists.operator != operator {
            tracing::info!(clients = operator.len(), "client list loaded");
        }
        lists.operator = operator;
        lists.operator_mtime = mtime;
        Ok(())
    }
}

/// Lines without their `#` comments, numbered from 1, blank ones skipped.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &str)> {
    std::str::from_utf8(bytes)
        .unwrap_or("\u{fffd}")
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
}

fn parse_client(path: &Path, line: usize, text: &str) -> Result<ClientId, LoadError> {
    let bytes = hex::decode(text).map_err(|e| LoadError::Parse {
        path: path.to_owned(),
        line,
        message: format!("not a hex client id: {e}"),
    })?;
    ClientId::parse(&bytes).map_err(|e| LoadError::Parse {
        path: path.to_owned(),
        line,
        message: e.to_string(),
    })
}

fn parse_allowed(path: &Path, bytes: &[u8]) -> Result<HashSet<ClientId>, LoadError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(LoadError::Parse {
            path: path.to_owned(),
            line: 1,
            message: "not UTF-8".into(),
        });
    }
    lines(bytes)
        .map(|(n, line)| parse_client(path, n, line))
        .collect()
}

fn parse_registered(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(ClientId, [u8; NONCE_LEN])>, LoadError> {
    lines(bytes)
        .map(|(n, line)| {
            let (client, nonce_hex) = line.split_once(' ').ok_or_else(|| LoadError::Parse {
                path: path.to_owned(),
                line: n,
                message: "expected a client id and a token nonce".into(),
            })?;
            let mut nonce = [0u8; NONCE_LEN];
            hex::decode_to_slice(nonce_hex.trim(), &mut nonce).map_err(|e| LoadError::Parse {
                path: path.to_owned(),
                line: n,
                message: format!("bad token nonce: {e}"),
            })?;
            Ok((parse_client(path, n, client)?, nonce))
        })
        .collect()
}

/// Keeps the operator's list current while the server runs.
pub async fn keep_reloading(access: Arc<Access>) {
    if !access.is_restricted() {
        return;
    }
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let access = access.clone();
        let _ = tokio::task::spawn_blocking(move || access.reload()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lss_store::conformance::client;

    #[test]
    fn tokens_verify_only_under_their_key_and_unaltered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = RegistrationKey::load_or_create(dir.path()).expect("key");
        let again = RegistrationKey::load_or_create(dir.path()).expect("reloaded");
        let token = key.issue([7; NONCE_LEN]);
        assert_eq!(again.check(&token).expect("valid"), [7; NONCE_LEN]);
        let other = tempfile::tempdir().expect("tempdir");
        let stranger = RegistrationKey::load_or_create(other.path()).expect("key");
        assert!(matches!(stranger.check(&token), Err(AccessError::BadToken)));
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).expect("ascii");
        for bad in [&altered[..], "", "lkreg1.", "lkreg1.zz.zz", &token[1..]] {
            assert!(
                matches!(key.check(bad), Err(AccessError::BadToken)),
                "{bad}"
            );
        }
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[tokio::test]
    async fn an_allowlist_admits_listed_and_registered_clients_once_per_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(ALLOWED_FILE),
            format!(
                "# operator's list\n{}  # alice\n\n",
                hex::encode(client(1).as_bytes())
            ),
        )
        .expect("write");
        let access = Access::load(AccessMode::Allowlist, dir.path()).expect("load");
        access.admit(client(1), None).await.expect("listed");
        assert!(matches!(
            access.admit(client(2), None).await,
            Err(AccessError::NotAllowed)
        ));
        let key = RegistrationKey::load_or_create(dir.path()).expect("key");
        let token = key.issue([1; NONCE_LEN]);
        access
            .admit(client(2), Some(&token))
            .await
            .expect("registers");
        access
            .admit(client(2), Some(&token))
            .await
            .expect("again, same client");
        access.admit(client(2), None).await.expect("registered");
        assert!(matches!(
            access.admit(client(3), Some(&token)).await,
            Err(AccessError::TokenUsed)
        ));
        // Registrations survive a restart.
        let restarted = Access::load(AccessMode::Allowlist, dir.path()).expect("load");
        assert!(restarted.is_allowed(&client(2)));
        assert!(matches!(
            restarted.admit(client(3), Some(&token)).await,
            Err(AccessError::TokenUsed)
        ));
        // The operator removes alice: refused after a reload.
        std::fs::write(dir.path().join(ALLOWED_FILE), "# nobody\n").expect("write");
        let past = SystemTime::now() + Duration::from_secs(5);
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(ALLOWED_FILE))
            .expect("open");
        file.set_modified(past).expect("mtime");
        restarted.reload();
        assert!(!restarted.is_allowed(&client(1)));
        // A broken list keeps the old one.
        std::fs::write(dir.path().join(ALLOWED_FILE), "not hex\n").expect("write");
        file.set_modified(past + Duration::from_secs(5))
            .expect("mtime");
        let err = Allowlist::reload(restarted.list.as_ref().expect("list")).expect_err("refused");
        assert!(err.to_string().contains(":1:"), "{err}");
        assert!(restarted.is_allowed(&client(2)));
    }

    #[tokio::test]
    async fn open_admits_anyone() {
        let access = Access::open();
        assert!(access.is_allowed(&client(9)));
        access.admit(client(9), None).await.expect("open");
    }
}
