//! Test support shared by Lightkeeper's test suites.
//!
//! - [`Lssd`] runs `lssd` in-process on a random loopback port, by default over
//!   a real redb store in a temporary directory, with a fixed server key so the
//!   spec's test vectors apply. It stops when dropped; [`Lssd::stop`] stops it
//!   gracefully and waits.
//! - [`Signer`] builds correctly authenticated and MAC'd raw requests, for
//!   tests that speak gRPC directly rather than through `lss-client`.
//!
//! One harness for every suite, so a fix to how tests start a server lands once.

use std::net::SocketAddr;
use std::sync::Arc;

use lss_core::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lss_core::{
    shared_hmac, ClientId, KeyValue, Limits, ServerKey, SharedSecret, PUT_CLIENT_NONCE,
};
use lss_proto::lightning_storage_client::LightningStorageClient;
use lss_store::{RedbConfig, RedbStore, Store};
use tonic::transport::{Channel, ServerTlsConfig};

/// The server key `[byte; 32]`; 0x22 is the spec's (lss-protocol.md §6).
pub fn server_key(byte: u8) -> ServerKey {
    ServerKey::new(SecretKey::from_slice(&[byte; 32]).expect("valid key byte"))
}

/// How to start an [`Lssd`].
#[derive(Clone)]
pub struct Options {
    /// The server's secret key is `[key_byte; 32]`. Default 0x22, the spec's.
    pub key_byte: u8,
    /// Protocol limits (and the redb namespace quota).
    pub limits: Limits,
    /// Connection limits and timeouts.
    pub connections: lssd::conn::ConnLimits,
    /// Who may be a client.
    pub access: Arc<lssd::access::Access>,
    /// Serve TLS instead of plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Keep and sign each namespace's verifiable log (lssd's default).
    pub verifiable_log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            key_byte: 0x22,
            limits: Limits::default(),
            connections: lssd::conn::ConnLimits::default(),
            access: Arc::new(lssd::access::Access::open()),
            tls: None,
            verifiable_log: true,
        }
    }
}

/// A running in-process `lssd` over a store `S`.
pub struct Lssd<S = Arc<RedbStore>> {
    /// The listening address (loopback, random port).
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` under TLS).
    pub url: String,
    /// The server key.
    pub key: ServerKey,
    /// The server's public key.
    pub server_id: PublicKey,
    /// A handle on the store the server writes to.
    pub store: S,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    _data: Option<tempfile::TempDir>,
}

impl Lssd {
    /// Starts a server over a fresh redb store with key `[key_byte; 32]`.
    pub async fn start(key_byte: u8, limits: Limits) -> Self {
        Self::start_with(Options {
            key_byte,
            limits,
            ..Options::default()
        })
        .await
    }

    /// Starts a server over a fresh redb store.
    pub async fn start_with(options: Options) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let config = RedbConfig {
            max_namespace_bytes: options.limits.max_namespace_bytes,
            ..RedbConfig::default()
        };
        let store = Arc::new(RedbStore::open(data.path(), config).expect("open store"));
        let mut server = Self::serve(store, options).await;
        server._data = Some(data);
        server
    }
}

impl<S: Store + Clone> Lssd<S> {
    /// Starts a server over `store`.
    pub async fn serve(store: S, options: Options) -> Self {
        let key = server_key(options.key_byte);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = match options.tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = lssd::Settings {
            limits: options.limits,
            connections: options.connections,
            access: options.access,
            tls: options.tls,
            verifiable_log: options.verifiable_log,
            sample_totals: false,
            disk: None,
        };
        let task = tokio::spawn(lssd::serve(
            listener,
            store.clone(),
            key.clone(),
            settings,
            async {
                let _ = stopped.await;
            },
        ));
        Lssd {
            addr,
            url,
            server_id: key.public_key(),
            key,
            store,
            stop: Some(stop),
            task: Some(task),
            _data: None,
        }
    }

    /// A plaintext channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// A raw gRPC client with no message size limits of its own.
    pub async fn grpc(&self) -> LightningStorageClient<Channel> {
        LightningStorageClient::new(self.channel().await)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Graceful shutdown: returns once in-flight requests are done.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server");
        }
    }
}

impl<S> Drop for Lssd<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A signer: holds a client secret and makes valid raw requests.
pub struct Signer {
    /// The client's secret key, `[byte; 32]`.
    pub secret: SecretKey,
    /// Its public key (the client id).
    pub public: PublicKey,
    /// The secret shared with the server.
    pub shared: SharedSecret,
}

impl Signer {
    /// The client `[byte; 32]` of the server with key `server`.
    pub fn new(byte: u8, server: &ServerKey) -> Self {
        let secret = SecretKey::from_slice(&[byte; 32]).expect("valid key byte");
        let public = secret.public_key(&Secp256k1::signing_only());
        let shared = server.shared_secret(&ClientId::from(public));
        Signer {
            secret,
            public,
            shared,
        }
    }

    /// The request's `auth` field.
    pub fn auth(&self) -> Option<lss_proto::Auth> {
        Some(lss_proto::Auth {
            client_id: self.public.serialize().to_vec(),
            token: self.shared.token().0.to_vec(),
        })
    }

    /// A put of `kvs` with a correct client MAC.
    pub fn put(&self, kvs: &[KeyValue]) -> lss_proto::PutRequest {
        lss_proto::PutRequest {
            auth: self.auth(),
            kvs: kvs.iter().cloned().map(Into::into).collect(),
            hmac: shared_hmac(&self.shared, PUT_CLIENT_NONCE, kvs)
                .as_bytes()
                .to_vec(),
            ..Default::default()
        }
    }

    /// A get of `prefix` with `nonce`.
    pub fn get(&self, prefix: &str, nonce: &[u8]) -> lss_proto::GetRequest {
        lss_proto::GetRequest {
            auth: self.auth(),
            key_prefix: prefix.into(),
            nonce: nonce.to_vec(),
            ..Default::default()
        }
    }

    /// Everything in the namespace, MAC checked.
    pub async fn dump(&self, grpc: &mut LightningStorageClient<Channel>) -> Vec<KeyValue> {
        let nonce = [9u8; 32];
        let reply = grpc
            .get(self.get("", &nonce))
            .await
            .expect("get")
            .into_inner();
        let kvs: Vec<KeyValue> = reply.kvs.into_iter().map(Into::into).collect();
        assert!(
            shared_hmac(&self.shared, &nonce, &kvs).verify(&reply.hmac),
            "get MAC"
        );
        kvs
    }
}

/// Shorthand for [`KeyValue::new`].
pub fn kv(key: &str, version: i64, value: &[u8]) -> KeyValue {
    KeyValue::new(key, version, value)
}

/// A throwaway PKI for TLS tests: one CA, certificates it signs.
pub mod pki {
    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };

    /// A certificate and its private key, PEM.
    #[derive(Clone, Debug)]
    pub struct Pem {
        /// The certificate.
        pub cert: String,
        /// Its private key (PKCS#8).
        pub key: String,
    }

    /// A certificate authority.
    pub struct Ca {
        cert: Certificate,
        key: KeyPair,
    }

    impl Ca {
        /// A fresh self-signed CA named `name`.
        pub fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("self-sign");
            Ca { cert, key }
        }

        /// The CA certificate, PEM.
        pub fn cert_pem(&self) -> String {
            self.cert.pem()
        }

        /// A server certificate for `names` (DNS names or IP addresses).
        pub fn server(&self, names: &[&str]) -> Pem {
            self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
        }

        /// A client certificate named `name`.
        pub fn client(&self, name: &str) -> Pem {
            self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
        }

        fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pem {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
            Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }
    }

    /// PEM files for a TLS test, written to a directory: a server CA and
    /// its `localhost` certificate, a client CA and one client's
    /// certificate, and a look-alike client certificate (a CA of the same
    /// name, another key). Paths as strings, ready for command lines.
    pub struct TlsFixture {
        /// The server CA's certificate (what clients trust).
        pub server_ca: String,
        /// The server's certificate chain.
        pub server_cert: String,
        /// Its key.
        pub server_key: String,
        /// The client CA's certificate (`--tls-client-ca`).
        pub client_ca: String,
        /// A certificate of the client CA.
        pub client_cert: String,
        /// Its key.
        pub client_key: String,
        /// A certificate of a look-alike client CA.
        pub forged_cert: String,
        /// Its key.
        pub forged_key: String,
    }

    impl TlsFixture {
        /// Makes the CAs and certificates and writes them into `dir`.
        pub fn write(dir: &std::path::Path) -> Self {
            let write = |name: &str, text: &str| {
                let path = dir.join(name);
                std::fs::write(&path, text).expect("write PEM");
                path.to_str().expect("utf-8 path").to_string()
            };
            let ca = Ca::new("test server CA");
            let server = ca.server(&["localhost"]);
            let clients = Ca::new("test client CA");
            let client = clients.client("alice");
            let forged = Ca::new("test client CA").client("alice");
            TlsFixture {
                server_ca: write("server-ca.pem", &ca.cert_pem()),
                server_cert: write("server.pem", &server.cert),
                server_key: write("server-key.pem", &server.key),
                client_ca: write("client-ca.pem", &clients.cert_pem()),
                client_cert: write("client.pem", &client.cert),
                client_key: write("client-key.pem", &client.key),
                forged_cert: write("forged.pem", &forged.cert),
                forged_key: write("forged-key.pem", &forged.key),
            }
        }
    }
}

/// `lssd` as a real process: the binary, its flags, its log, its signals.
pub mod process {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const LISTENING: &str = "lssd listening on ";

    /// The binary `name` of a workspace package, next to the running test's
    /// target directory (`cargo test --workspace` builds them all; a
    /// narrower run builds the one needed).
    pub fn workspace_binary(name: &str) -> std::path::PathBuf {
        let exe = std::env::current_exe().expect("test exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let path = dir.join(name);
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = Command::new(cargo);
            command.args(["build", "-p", name, "--bin", name]);
            if dir.ends_with("release") {
                command.arg("--release");
            }
            let status = command.status().expect("cargo build");
            assert!(status.success(), "building {name} failed");
        }
        path
    }

    /// A running `lssd` process. Killed (SIGKILL) when dropped.
    pub struct LssdProcess {
        child: Child,
        /// The address from the "lssd listening on" log line.
        pub addr: SocketAddr,
        /// `http://ADDR`.
        pub url: String,
        log: Arc<Mutex<String>>,
    }

    impl LssdProcess {
        /// Runs `bin` with `args` (listening on `127.0.0.1:0` unless `args`
        /// says otherwise) and waits until it logs that it listens. On exit
        /// before that, returns everything it logged.
        pub fn spawn(bin: &Path, args: &[&str]) -> Result<Self, String> {
            let mut command = Command::new(bin);
            if !args.contains(&"--listen") {
                command.args(["--listen", "127.0.0.1:0"]);
            }
            let mut child = command
                .args(args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            let stderr = child.stderr.take().expect("piped stderr");
            let log = Arc::new(Mutex::new(String::new()));
            let (found, listening) = mpsc::channel();
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut log = sink.lock().expect("log lock");
                        log.push_str(&line);
                        log.push('\n');
                    }
                    // Only after the line is in the log: callers read it next.
                    if let Some(rest) = line.split(LISTENING).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let _ = found.send(addr.to_owned());
                    }
                }
            });
            match listening.recv_timeout(Duration::from_secs(30)) {
                Ok(addr) => {
                    let addr: SocketAddr = addr
                        .parse()
                        .map_err(|e| format!("bad address {addr:?} in the log: {e}"))?;
                    Ok(LssdProcess {
                        child,
                        url: format!("http://{addr}"),
                        addr,
                        log,
                    })
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    // Give the reader a moment to drain the pipe.
                    std::thread::sleep(Duration::from_millis(100));
                    let log = log.lock().expect("log lock").clone();
                    Err(format!("lssd did not start ({status:?}); its log:\n{log}"))
                }
            }
        }

        /// Everything logged so far.
        pub fn log(&self) -> String {
            self.log.lock().expect("log lock").clone()
        }

        /// The process id.
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Sends SIGTERM and waits for the exit; returns the status and the log.
        pub fn terminate(mut self) -> (ExitStatus, String) {
            let sent = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(sent.success(), "kill -TERM failed");
            let status = self.child.wait().expect("wait for lssd");
            std::thread::sleep(Duration::from_millis(50));
            (status, self.log())
        }

        /// SIGKILL: no chance to clean up, as in a crash or power loss.
        pub fn kill(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for LssdProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// An `lssd` process on its own data directory that a test can stop and
    /// start again on the same address (a provider that goes down and comes
    /// back, or whose data the operator restores from a backup).
    pub struct RestartableLssd {
        args: Vec<String>,
        process: Option<LssdProcess>,
        addr: Option<SocketAddr>,
        data: tempfile::TempDir,
    }

    impl RestartableLssd {
        /// Starts `lssd` with a fresh data directory and `extra` arguments.
        pub fn start(extra: &[&str]) -> Self {
            let data = tempfile::tempdir().expect("tempdir");
            let mut args = vec![
                "--data-dir".to_owned(),
                data.path().to_str().expect("utf-8").to_owned(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut server = RestartableLssd {
                args,
                process: None,
                addr: None,
                data,
            };
            server.up();
            server
        }

        /// Starts it again (on its earlier address once it had one).
        pub fn up(&mut self) {
            let listen = self.addr.map(|a| a.to_string());
            let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
            if let Some(listen) = &listen {
                args.extend(["--listen", listen]);
            }
            let process = LssdProcess::spawn(&workspace_binary("lssd"), &args).expect("start lssd");
            self.addr = Some(process.addr);
            self.process = Some(process);
        }

        /// `http://ADDR`.
        pub fn url(&self) -> String {
            format!("http://{}", self.addr.expect("started once"))
        }

        /// Its data directory.
        pub fn data_dir(&self) -> &Path {
            self.data.path()
        }

        /// What it logged since it was last started.
        pub fn log(&self) -> String {
            self.process
                .as_ref()
                .map(LssdProcess::log)
                .unwrap_or_default()
        }

        /// SIGKILL; returns its address.
        pub fn down(&mut self) -> String {
            let process = self.process.take().expect("running");
            process.kill();
            self.addr.expect("started once").to_string()
        }
    }

    /// Runs `bin` with `args` to completion; returns its status and stderr.
    pub fn run(bin: &Path, args: &[&str]) -> (ExitStatus, String) {
        let output = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run binary");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The real PostgreSQL the backend tests run against.
///
/// `LK_TEST_POSTGRES_URL` names it (default
/// `postgres://postgres@127.0.0.1:5432/test`). If it does not answer and a
/// Debian cluster is installed, the cluster is started; if it still does not
/// answer, the test fails saying how to provide one. Never a silent skip.
pub mod postgres {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// The default test database.
    pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// The database URL, once the server is known to answer.
    pub async fn url() -> String {
        let url = std::env::var("LK_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        if connect(&url).await.is_ok() {
            return url;
        }
        start_debian_cluster();
        let mut last = String::new();
        for _ in 0..50 {
            match connect(&url).await {
                Ok(_) => return url,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "PostgreSQL at {url} is not reachable ({last}). Start it \
             (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` on Debian) \
             or point LK_TEST_POSTGRES_URL at a database where the user may create schemas."
        );
    }

    async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn start_debian_cluster() {
        let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
            return;
        };
        for version in versions.flatten() {
            let version = version.file_name();
            let _ = std::process::Command::new("pg_ctlcluster")
                .arg("--skip-systemctl-redirect")
                .arg(&version)
                .args(["main", "start"])
                .status();
        }
    }

    /// The server address of a database URL.
    pub fn server_addr(url: &str) -> std::net::SocketAddr {
        let config: tokio_postgres::Config = url.parse().expect("PostgreSQL URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let host = if host == "localhost" {
            "127.0.0.1".into()
        } else {
            host
        };
        format!("{host}:{port}").parse().expect("host:port")
    }

    /// `url` with its server replaced by `addr` (e.g. a [`crate::net::FaultProxy`]).
    pub fn via(url: &str, addr: std::net::SocketAddr) -> String {
        let config: tokio_postgres::Config = url.parse().expect("PostgreSQL URL");
        let mut out = format!("host={} port={}", addr.ip(), addr.port());
        if let Some(user) = config.get_user() {
            out.push_str(&format!(" user={user}"));
        }
        if let Some(password) = config.get_password() {
            out.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
        }
        if let Some(db) = config.get_dbname() {
            out.push_str(&format!(" dbname={db}"));
        }
        out
    }

    /// A schema of its own for one test, dropped with everything in it when
    /// the guard is dropped.
    pub struct Schema {
        /// The database URL.
        pub url: String,
        /// The schema's name.
        pub name: String,
    }

    impl Schema {
        /// A fresh, unused schema name (the store creates the schema).
        pub async fn fresh() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "lk_test_{}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            );
            Schema {
                url: url().await,
                name,
            }
        }

        /// A plain client connection to the test database.
        pub async fn client(&self) -> tokio_postgres::Client {
            connect(&self.url).await.expect("connect to PostgreSQL")
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let url = self.url.clone();
            let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
            // Drop runs inside the test's runtime, which cannot be blocked on:
            // clean up from a thread with a runtime of its own.
            let cleanup = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    if let Ok(client) = connect(&url).await {
                        let _ = client.batch_execute(&sql).await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }
}

/// Network faults between a client and a real server.
pub mod net {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    /// A TCP proxy to `target` that can be taken down (every connection cut,
    /// new ones refused) and brought back, or made to cut a connection right
    /// after it forwards a chosen byte pattern from the client (so the server
    /// acts on a request whose answer the client never sees).
    pub struct FaultProxy {
        /// Where clients connect.
        pub addr: SocketAddr,
        down: Arc<AtomicBool>,
        generation: watch::Sender<u64>,
        cut_after: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        drop_next: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        tamper_next: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        cuts: Arc<std::sync::atomic::AtomicU32>,
    }

    impl FaultProxy {
        /// Starts proxying to `target`.
        pub async fn start(target: SocketAddr) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let down = Arc::new(AtomicBool::new(false));
            let (generation, _) = watch::channel(0u64);
            let cut_after = Arc::new(std::sync::Mutex::new(None));
            let drop_next = Arc::new(std::sync::Mutex::new(None));
            let tamper_next = Arc::new(std::sync::Mutex::new(None));
            let cuts = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let proxy = FaultProxy {
                addr,
                down: down.clone(),
                generation: generation.clone(),
                cut_after: cut_after.clone(),
                drop_next: drop_next.clone(),
                tamper_next: tamper_next.clone(),
                cuts: cuts.clone(),
            };
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let killed = generation.subscribe();
                    let patterns = Patterns {
                        cut_after: cut_after.clone(),
                        drop_next: drop_next.clone(),
                        tamper_next: tamper_next.clone(),
                        cuts: cuts.clone(),
                    };
                    tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(target).await {
                            pipe(inbound, outbound, killed, patterns).await;
                        }
                    });
                }
            });
            proxy
        }

        /// Cuts every connection and refuses new ones (`true`), or accepts
        /// connections again (`false`).
        pub fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
            if down {
                self.generation.send_modify(|g| *g += 1);
            }
        }

        /// Cuts every open connection once; new ones are accepted.
        pub fn cut_all(&self) {
            self.generation.send_modify(|g| *g += 1);
        }

        /// The next time a client sends bytes containing `pattern`, forward
        /// them, give the server a moment to act, then cut that connection.
        pub fn cut_after_next(&self, pattern: &[u8]) {
            *self.cut_after.lock().expect("lock") = Some(pattern.to_vec());
        }

        /// The next time a client sends bytes containing `pattern`, drop them
        /// (the server never sees them) and cut that connection.
        pub fn drop_next(&self, pattern: &[u8]) {
            *self.drop_next.lock().expect("lock") = Some(pattern.to_vec());
        }

        /// The next time the server sends bytes containing `pattern`, flip
        /// the lowest bit of the byte right after it (an altered reply that
        /// still parses).
        pub fn tamper_next(&self, pattern: &[u8]) {
            *self.tamper_next.lock().expect("lock") = Some(pattern.to_vec());
        }

        /// How many connections `cut_after_next` and `drop_next` have cut.
        pub fn pattern_cuts(&self) -> u32 {
            self.cuts.load(Ordering::SeqCst)
        }
    }

    struct Patterns {
        cut_after: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        drop_next: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        tamper_next: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        cuts: Arc<std::sync::atomic::AtomicU32>,
    }

    /// Whether `bytes` hold the armed pattern; disarms it if so.
    fn take_hit(armed: &std::sync::Mutex<Option<Vec<u8>>>, bytes: &[u8]) -> bool {
        let mut armed = armed.lock().expect("lock");
        let hit = armed
            .as_ref()
            .is_some_and(|p| bytes.windows(p.len()).any(|w| w == p.as_slice()));
        if hit {
            *armed = None;
        }
        hit
    }

    async fn pipe(
        inbound: TcpStream,
        outbound: TcpStream,
        mut killed: watch::Receiver<u64>,
        patterns: Patterns,
    ) {
        let Patterns {
            cut_after,
            drop_next,
            tamper_next,
            cuts,
        } = patterns;
        let (mut client_read, mut client_write) = inbound.into_split();
        let (mut server_read, mut server_write) = outbound.into_split();
        // Set before forwarding the pattern: from then on nothing the server
        // answers reaches the client.
        let frozen = AtomicBool::new(false);
        let upstream = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if take_hit(&drop_next, &buf[..n]) {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let cut = take_hit(&cut_after, &buf[..n]);
                if cut {
                    frozen.store(true, Ordering::SeqCst);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                if cut {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        };
        let downstream = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if frozen.load(Ordering::SeqCst) {
                    return std::future::pending().await;
                }
                let armed = tamper_next.lock().expect("lock").clone();
                if let Some(pattern) = armed {
                    if let Some(at) = buf[..n].windows(pattern.len()).position(|w| w == pattern) {
                        let target = at + pattern.len();
                        if target < n {
                            buf[target] ^= 1;
                            *tamper_next.lock().expect("lock") = None;
                        }
                    }
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        // Whichever ends first (either side closes, a kill, a pattern cut)
        // ends the connection: both halves are dropped.
        tokio::select! {
            () = upstream => {}
            () = downstream => {}
            _ = killed.changed() => {}
        }
    }
}

/// Debian tools the tests use, installed when missing.
pub mod debian {
    use std::path::PathBuf;
    use std::process::Command;

    /// `binary` from `PATH` or `/usr/bin`; when missing, Debian's `package`
    /// is installed with `apt-get` (once, under a file lock, as root). If that
    /// is impossible the test fails saying what to install.
    pub fn command(binary: &str, package: &str) -> PathBuf {
        if let Some(path) = find(binary) {
            return path;
        }
        let log = format!("/tmp/lightkeeper-{package}-install.log");
        let status = Command::new("flock")
            .args(["/tmp/lightkeeper-apt.lock", "sh", "-c"])
            .arg(format!(
                "command -v {binary} >/dev/null || \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package} >{log} 2>&1 || \
                 (apt-get update -q >>{log} 2>&1 && \
                  DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package} >>{log} 2>&1)"
            ))
            .status();
        match (status, find(binary)) {
            (Ok(_), Some(path)) => path,
            (status, _) => panic!(
                "{binary} is not installed and installing Debian's {package} failed ({status:?}; \
                 see {log}). Install it: `apt-get install {package}`."
            ),
        }
    }

    /// `binary` on `PATH` or in `/usr/bin`.
    pub fn find(binary: &str) -> Option<PathBuf> {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    }
}

/// Real etcd clusters on private loopback ports, from Debian's `etcd-server`.
///
/// The `etcd` binary is found on `PATH` or in `/usr/bin`; when missing, it is
/// installed with `apt-get install etcd-server` (once, under a file lock, as
/// root). If that is impossible the test fails saying what to install.
pub mod etcd {
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// Finds or installs the etcd binary.
    pub fn binary() -> PathBuf {
        super::debian::command("etcd", "etcd-server")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    struct Member {
        name: String,
        client_port: u16,
        peer_port: u16,
        child: Option<Child>,
    }

    /// A running etcd cluster. Killed when dropped.
    pub struct EtcdCluster {
        members: Vec<Member>,
        dir: tempfile::TempDir,
        token: String,
        /// Certificate and key files when clients must use TLS.
        tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    }

    impl EtcdCluster {
        /// Starts one member whose client port serves TLS with a certificate
        /// for `localhost` and 127.0.0.1 signed by `ca`.
        pub async fn start_tls(ca: &crate::pki::Ca) -> Self {
            let binary = binary();
            let dir = tempfile::tempdir().expect("tempdir");
            let pem = ca.server(&["localhost", "127.0.0.1"]);
            let cert = dir.path().join("server.pem");
            let key = dir.path().join("server.key");
            std::fs::write(&cert, pem.cert).expect("cert");
            std::fs::write(&key, pem.key).expect("key");
            let mut cluster = EtcdCluster {
                members: vec![Member {
                    name: "m0".into(),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                }],
                dir,
                token: format!("lk-{}", rand::random::<u64>()),
                tls: Some((cert, key)),
            };
            cluster.spawn(&binary, 0, "new");
            let ca_pem = ca.cert_pem();
            let options = || {
                etcd_client::ConnectOptions::new().with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(ca_pem.clone())),
                )
            };
            for _ in 0..150 {
                if let Ok(client) =
                    etcd_client::Client::connect(cluster.endpoints(), Some(options())).await
                {
                    if client.kv_client().get("probe", None).await.is_ok() {
                        return cluster;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("etcd with TLS did not become ready");
        }

        /// Starts `size` members and waits until the cluster serves.
        pub async fn start(size: usize) -> Self {
            let binary = binary();
            let dir = tempfile::tempdir().expect("tempdir");
            let members: Vec<Member> = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                })
                .collect();
            let mut cluster = EtcdCluster {
                members,
                dir,
                token: format!("lk-{}", rand::random::<u64>()),
                tls: None,
            };
            for i in 0..size {
                cluster.spawn(&binary, i, "new");
            }
            cluster.wait_ready().await;
            cluster
        }

        fn initial_cluster(&self) -> String {
            self.members
                .iter()
                .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
                .collect::<Vec<_>>()
                .join(",")
        }

        fn spawn(&mut self, binary: &std::path::Path, i: usize, state: &str) {
            let initial = self.initial_cluster();
            let data = self.dir.path().join(&self.members[i].name);
            let log = std::fs::File::create(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("log file");
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            let tls_args: Vec<std::ffi::OsString> = match &self.tls {
                Some((cert, key)) => vec![
                    "--cert-file".into(),
                    cert.into(),
                    "--key-file".into(),
                    key.into(),
                ],
                None => vec![],
            };
            let m = &mut self.members[i];
            let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
            let peer = format!("http://127.0.0.1:{}", m.peer_port);
            let child = Command::new(binary)
                .args(tls_args)
                .arg("--name")
                .arg(&m.name)
                .arg("--data-dir")
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    state,
                ])
                .args(["--initial-cluster-token", &self.token])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            m.child = Some(child);
        }

        async fn wait_ready(&self) {
            let mut last = String::new();
            for _ in 0..150 {
                match etcd_client::Client::connect(self.endpoints(), None).await {
                    Ok(client) => match client.kv_client().get("probe", None).await {
                        Ok(_) => return,
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let logs: Vec<String> = self
                .members
                .iter()
                .map(|m| {
                    std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                        .unwrap_or_default()
                })
                .collect();
            panic!(
                "etcd did not become ready: {last}\n{}",
                logs.join("\n---\n")
            );
        }

        /// Client URLs of the running members.
        pub fn endpoints(&self) -> Vec<String> {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            self.members
                .iter()
                .filter(|m| m.child.is_some())
                .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
                .collect()
        }

        /// Client URLs of every member, running or not.
        pub fn all_endpoints(&self) -> Vec<String> {
            self.members
                .iter()
                .map(|m| format!("http://127.0.0.1:{}", m.client_port))
                .collect()
        }

        /// The index of the current leader.
        pub async fn leader(&self) -> usize {
            for _ in 0..100 {
                for (i, endpoint) in self.all_endpoints().iter().enumerate() {
                    let Ok(client) = etcd_client::Client::connect([endpoint], None).await else {
                        continue;
                    };
                    let Ok(status) = client.maintenance_client().status().await else {
                        continue;
                    };
                    let me = status.header().map(|h| h.member_id());
                    if status.leader() != 0 && Some(status.leader()) == me {
                        return i;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("etcd has no leader");
        }

        /// Kills member `i` with SIGKILL.
        pub fn kill(&mut self, i: usize) {
            if let Some(mut child) = self.members[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Restarts member `i` on its data directory.
        pub fn restart(&mut self, i: usize) {
            self.kill(i);
            self.spawn(&binary(), i, "existing");
        }
    }

    impl Drop for EtcdCluster {
        fn drop(&mut self) {
            for i in 0..self.members.len() {
                self.kill(i);
            }
        }
    }
}

/// Files in the reference `lssd`'s formats, written as it writes them.
pub mod reference {
    use std::path::Path;

    #[derive(serde::Serialize)]
    struct Value<'a> {
        version: i64,
        value: &'a Vec<u8>,
    }

    /// A reference redb database (`<datadir>/redb`): table `kv`, key
    /// `hex(client id)/key`, value CBOR `{version, value}` with the bytes as
    /// an integer array (serde's encoding of `Vec<u8>`).
    pub fn write_redb(path: &Path, rows: &[(String, i64, Vec<u8>)]) {
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
        let db = redb::Database::create(path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut table = txn.open_table(table).expect("table");
            for (key, version, value) in rows {
                let mut cbor = Vec::new();
                ciborium::into_writer(
                    &Value {
                        version: *version,
                        value,
                    },
                    &mut cbor,
                )
                .expect("cbor");
                table.insert(key.as_str(), cbor.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
}

/// The protocol rules of lss-protocol.md §3, checked through gRPC against an
/// in-process `lssd` over any store: the same checks for every backend, on
/// top of the store-level conformance suite.
pub async fn grpc_conformance<S: Store + Clone>(store: S) {
    use lss_core::Mac;
    let server = Lssd::serve(store, Options::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let put_ok = |reply: &lss_proto::PutReply, kvs: &[KeyValue]| {
        assert!(reply.success, "put refused: {reply:?}");
        let mac = shared_hmac(&signer.shared, lss_core::PUT_SERVER_NONCE, kvs);
        assert!(mac.verify(&reply.hmac), "server MAC of a committed put");
    };

    // Version 0, then +1; the server MAC proves each commit.
    let first = vec![kv("a", 0, b"x"), kv("b", 0, b"")];
    put_ok(
        &grpc
            .put(signer.put(&first))
            .await
            .expect("put")
            .into_inner(),
        &first,
    );
    let second = vec![kv("a", 1, b"y")];
    put_ok(
        &grpc
            .put(signer.put(&second))
            .await
            .expect("put")
            .into_inner(),
        &second,
    );

    // Conflicts: current version and value, or -1 and empty; no MAC; nothing written.
    for (request, expected) in [
        (vec![kv("a", 1, b"again")], vec![kv("a", 1, b"y")]),
        (vec![kv("a", 3, b"skip")], vec![kv("a", 1, b"y")]),
        (vec![kv("a", -1, b"neg")], vec![kv("a", 1, b"y")]),
        (vec![kv("m", 1, b"")], vec![kv("m", -1, b"")]),
        (
            vec![kv("b", 1, b"ok"), kv("c", 0, b"ok"), kv("z", 9, b"bad")],
            vec![kv("z", -1, b"")],
        ),
    ] {
        let reply = grpc
            .put(signer.put(&request))
            .await
            .expect("put")
            .into_inner();
        assert!(!reply.success && reply.hmac.is_empty(), "{request:?}");
        let conflicts: Vec<KeyValue> = reply.conflicts.into_iter().map(Into::into).collect();
        assert_eq!(conflicts, expected, "{request:?}");
    }
    assert_eq!(
        signer.dump(&mut grpc).await,
        vec![kv("a", 1, b"y"), kv("b", 0, b"")]
    );

    // An empty put succeeds with the MAC of nothing.
    put_ok(
        &grpc.put(signer.put(&[])).await.expect("put").into_inner(),
        &[],
    );

    // Literal prefixes, byte order, the Get MAC over the caller's nonce.
    let odd = vec![
        kv("B", 0, b"1"),
        kv("p%", 0, b"2"),
        kv("p_", 0, b"3"),
        kv("pq", 0, b"4"),
        kv("é", 0, b"5"),
    ];
    put_ok(
        &grpc.put(signer.put(&odd)).await.expect("put").into_inner(),
        &odd,
    );
    for (prefix, want) in [
        ("p", vec!["p%", "p_", "pq"]),
        ("p%", vec!["p%"]),
        ("%", vec![]),
        ("é", vec!["é"]),
        ("", vec!["B", "a", "b", "p%", "p_", "pq", "é"]),
    ] {
        let nonce = [prefix.len() as u8; 16];
        let reply = grpc
            .get(signer.get(prefix, &nonce))
            .await
            .expect("get")
            .into_inner();
        let kvs: Vec<KeyValue> = reply.kvs.into_iter().map(Into::into).collect();
        assert!(Mac::verify(
            &shared_hmac(&signer.shared, &nonce, &kvs),
            &reply.hmac
        ));
        let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, want, "prefix {prefix:?}");
    }

    // The uncompressed encoding of the same key reaches the same namespace;
    // another client sees nothing.
    let mut uncompressed = signer.get("", &[1; 8]);
    if let Some(auth) = uncompressed.auth.as_mut() {
        auth.client_id = signer.public.serialize_uncompressed().to_vec();
    }
    let reply = grpc.get(uncompressed).await.expect("get").into_inner();
    assert_eq!(reply.kvs.len(), 7);
    let other = Signer::new(2, &server.key);
    assert_eq!(other.dump(&mut grpc).await, vec![]);

    // Racing writers: exactly one wins each version.
    let channel = server.channel().await;
    for version in 0..3i64 {
        let racers: Vec<_> = (0..8u8)
            .map(|n| {
                let channel = channel.clone();
                let request = other.put(&[kv("race", version, &[n])]);
                tokio::spawn(async move {
                    let mut grpc = LightningStorageClient::new(channel);
                    grpc.put(request).await.expect("put").into_inner().success
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.expect("racer"));
        }
        assert_eq!(winners, 1, "version {version}");
    }
    server.stop().await;
}

/// Storage faults for redb: a file backend whose writes fail on demand.
pub mod redb_faults {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A file backend that fails every write, resize and sync while `fail`
    /// is set (a full or failing disk); reads still work.
    #[derive(Debug)]
    pub struct FaultyBackend {
        inner: redb::backends::FileBackend,
        fail: Arc<AtomicBool>,
    }

    impl FaultyBackend {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: no space left on device"));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FaultyBackend {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    /// Opens (each call: again) the redb file at `path` on a
    /// [`FaultyBackend`] that fails while `fail` is set.
    pub fn opener(
        path: PathBuf,
        fail: Arc<AtomicBool>,
    ) -> impl Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync + 'static {
        move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
            redb::Builder::new().create_with_backend(FaultyBackend {
                inner: redb::backends::FileBackend::new(file)?,
                fail: fail.clone(),
            })
        }
    }
}

/// Clients nobody here wrote, in Python: a virtual environment with the
/// packages a test needs, made once per package set (PyPI is reachable
/// from the machines the suite runs on) and reused by later runs.
pub mod python {
    use std::path::PathBuf;
    use std::process::Command;

    /// The `python` of a venv holding `packages` (pip names).
    pub fn venv(packages: &[&str]) -> PathBuf {
        let name = packages
            .join("+")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '+', "_");
        let dir = std::env::temp_dir().join(format!("lightkeeper-py-{name}"));
        let python = dir.join("bin").join("python");
        if python.exists() {
            return python;
        }
        // Built aside and renamed into place, so concurrent tests never
        // use a half-made venv.
        let building =
            std::env::temp_dir().join(format!("lightkeeper-py-{name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&building)
            .status()
            .expect("python3 is installed");
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(building.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install {packages:?} failed");
        if std::fs::rename(&building, &dir).is_err() {
            // Another test made it first.
            let _ = std::fs::remove_dir_all(&building);
        }
        python
    }
}

/// A small real filesystem, for disk-full tests.
pub mod fs {
    use std::path::PathBuf;
    use std::process::Command;

    /// A tmpfs of a given size mounted at a fresh directory (the suite runs
    /// as root on its machines), unmounted when dropped.
    pub struct Tmpfs {
        /// Where it is mounted.
        pub dir: PathBuf,
        _parent: tempfile::TempDir,
    }

    impl Tmpfs {
        /// Mounts one of `size` (`mount -o size=`, e.g. `24m`).
        pub fn mount(size: &str) -> Tmpfs {
            let parent = tempfile::tempdir().expect("tempdir");
            let dir = parent.path().join("disk");
            std::fs::create_dir(&dir).expect("mkdir");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .output()
                .expect("mount runs");
            assert!(
                out.status.success(),
                "a disk-full test mounts a tmpfs (root with CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Tmpfs {
                dir,
                _parent: parent,
            }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A real `keyserverd` process for the keyserver's end-to-end tests.
pub mod keyserverd {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A running keyserverd; killed (SIGKILL) when dropped.
    pub struct Keyserverd {
        child: Child,
        /// `http://ADDR/`.
        pub url: String,
        /// The pin it printed (`keyserver@<domain>:<hex H_0>`).
        pub pin: String,
        /// The escrow line it printed on first start.
        pub escrow: Option<String>,
        /// `http://ADDR/` of its admin listener (on a free port).
        pub admin_url: Option<String>,
        /// `127.0.0.1:PORT` of its LKTL/1 listener (on a free port).
        pub sync: Option<String>,
        log: Arc<Mutex<String>>,
    }

    impl Keyserverd {
        /// Starts the keyserverd binary `bin` on `dir` (port `port`, 0 for any) with `extra`
        /// arguments (its LKTL/1 listener on a free port unless they name
        /// one) and waits for its pin and listening lines.
        pub fn start(bin: &Path, dir: &Path, port: u16, extra: &[&str]) -> Keyserverd {
            let mut command = Command::new(bin);
            command
                .args(extra)
                .args(["--data-dir", dir.to_str().expect("utf8")])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--checkpoint-interval-ms", "100"])
                .args(["--admin-listen", "127.0.0.1:0"]);
            if !extra.contains(&"--sync-listen") {
                command.args(["--sync-listen", "127.0.0.1:0"]);
            }
            let (child, log) = spawn_until(command, "keyserverd listening on ");
            let text = log.lock().expect("log").clone();
            let after = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(|rest| {
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    })
            };
            let escrow = text
                .lines()
                .skip_while(|l| !l.starts_with("escrow key of "))
                .nth(1)
                .map(|l| l.trim().to_string());
            Keyserverd {
                child,
                url: after("keyserverd listening on ").expect("a listening line"),
                pin: after("pin: ").expect("a pin line"),
                escrow,
                admin_url: after("keyserverd admin on "),
                sync: after("keyserverd sync (LKTL/1) on "),
                log,
            }
        }

        /// Everything it logged.
        pub fn log(&self) -> String {
            self.log.lock().expect("log").clone()
        }

        /// SIGKILL, as a crash.
        pub fn kill(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Keyserverd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs `command` (RUST_LOG=info, or `LK_KEYSERVERD_LOG` when set;
    /// stderr kept) until it logs a line starting with `ready`; panics with
    /// its log if it exits or takes a minute.
    fn spawn_until(mut command: Command, ready: &'static str) -> (Child, Arc<Mutex<String>>) {
        let level = std::env::var("LK_KEYSERVERD_LOG").unwrap_or_else(|_| "info".into());
        let mut child = command
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log").push_str(&format!("{line}\n"));
                // Only after the line is in the log: the caller reads it.
                if line.starts_with(ready) {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not start:\n{}", log.lock().expect("log"));
        }
        (child, log)
    }

    /// A running `keyserverd mirror`; killed (SIGKILL) when dropped.
    pub struct Mirror {
        child: Child,
        /// `http://ADDR/` of its JSON-RPC listener.
        pub url: String,
        /// Its validating cosigner's verifier key.
        pub validating_vkey: String,
        log: Arc<Mutex<String>>,
    }

    impl Mirror {
        /// Starts `bin mirror` on `dir` following `primary` (its URL, sync
        /// address and pin) on free ports, with `extra` arguments of the
        /// subcommand, and waits for its listening line (it verified the
        /// primary's chain from the pin by then).
        pub fn start(bin: &Path, dir: &Path, primary: &Keyserverd, extra: &[&str]) -> Mirror {
            let sync = primary
                .sync
                .as_deref()
                .expect("the primary's sync listener");
            let mut command = Command::new(bin);
            command
                .args(["--data-dir", dir.to_str().expect("utf8"), "mirror"])
                .args([
                    "--from",
                    &primary.url,
                    "--sync",
                    sync,
                    "--pin",
                    &primary.pin,
                ])
                .args(["--listen", "127.0.0.1:0", "--sync-listen", "127.0.0.1:0"])
                .args(extra);
            let ready = "keyserverd mirror listening on ";
            let (child, log) = spawn_until(command, ready);
            let text = log.lock().expect("log").clone();
            let after = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string)
            };
            Mirror {
                child,
                url: after(ready).expect("a listening line"),
                validating_vkey: after("validating cosigner: ").expect("a cosigner line"),
                log,
            }
        }

        /// Everything it logged.
        pub fn log(&self) -> String {
            self.log.lock().expect("log").clone()
        }
    }

    impl Drop for Mirror {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// What a `ks-cli` run printed, and its exit code.
    pub struct CliOut {
        /// The exit code (-1 if killed).
        pub code: i32,
        /// Standard output.
        pub stdout: String,
        /// Standard error.
        pub stderr: String,
    }

    /// A `tlogd --witness-for` process for the log key of the keyserver
    /// whose data directory is `server_dir` (made by the keyserverd
    /// binary `bin`'s `log-key`, before that keyserver first starts).
    pub struct Witness {
        /// The tlogd process.
        pub tlogd: crate::tlogd::Tlogd,
        /// The witness's verifier key (`ks-cli init --witness`).
        pub vkey: String,
        /// `<vkey>@<url>/witness`, for `keyserverd --submit-to`.
        pub submit_to: String,
        /// The keyserver's log key it witnesses.
        pub log_vkey: String,
    }

    /// Starts a [`Witness`] in `witness_dir` for the keyserver in
    /// `server_dir`.
    pub fn witness(bin: &Path, server_dir: &Path, witness_dir: &Path) -> Witness {
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(server_dir)
            .arg("log-key")
            .output()
            .expect("keyserverd log-key");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log_vkey = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string();
        let tlogd = crate::tlogd::start_with(witness_dir, &["--witness-for", &log_vkey]);
        let vkey = std::fs::read_to_string(tlogd.dir.join("witness-vkey"))
            .expect("witness vkey")
            .trim()
            .to_string();
        let submit_to = format!("{vkey}@{}/witness", tlogd.url);
        Witness {
            tlogd,
            vkey,
            submit_to,
            log_vkey,
        }
    }

    /// Runs the `ks-cli` binary `bin` with `--dir dir` and `args`.
    pub fn ks_cli(bin: &Path, dir: &Path, args: &[&str]) -> CliOut {
        let out = Command::new(bin)
            .arg("--dir")
            .arg(dir)
            .args(args)
            .output()
            .expect("run ks-cli");
        CliOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub mod statechaind {
    //! A `statechaind` process and `statechain-cli` runs for the statechain
    //! suites.
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    pub use crate::keyserverd::CliOut;

    /// A running statechaind; killed (SIGKILL) when dropped.
    pub struct Statechaind {
        child: Child,
        /// `http://ADDR`.
        pub url: String,
        /// The LKTL/1 address.
        pub sync_addr: String,
        /// Its `se_id` (hex).
        pub se_id: String,
        log: Arc<Mutex<String>>,
    }

    impl Statechaind {
        /// Starts `bin` on `dir` (HTTP and sync on any free port, 100 ms
        /// checkpoints) with `extra` arguments and `env`, and waits until it
        /// listens.
        pub fn start(bin: &Path, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Statechaind {
            let mut child = Command::new(bin)
                .args(["--data-dir", dir.to_str().expect("utf8")])
                .args(["--listen", "127.0.0.1:0", "--sync-listen", "127.0.0.1:0"])
                .args(["--checkpoint-interval-ms", "100"])
                .args(extra)
                .envs(env.iter().copied())
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn statechaind");
            let log = Arc::new(Mutex::new(String::new()));
            let stderr = child.stderr.take().expect("stderr");
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("log").push_str(&format!("{line}\n"));
                }
            });
            let stdout = child.stdout.take().expect("stdout");
            let (tx, rx) = mpsc::channel();
            let sink = log.clone();
            std::thread::spawn(move || {
                let (mut se_id, mut sync) = (None, None);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("log").push_str(&format!("{line}\n"));
                    if let Some(v) = line.strip_prefix("se_id: ") {
                        se_id = Some(v.to_string());
                    }
                    if let Some(v) = line.strip_prefix("sync (LKTL/1) on ") {
                        sync = Some(v.to_string());
                    }
                    if let Some(url) = line.strip_prefix("statechaind listening on ") {
                        let _ = tx.send((
                            url.trim_end_matches('/').to_string(),
                            se_id.clone(),
                            sync.clone(),
                        ));
                    }
                }
            });
            let (url, se_id, sync_addr) = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(found) => found,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("statechaind did not start:\n{}", log.lock().expect("log"));
                }
            };
            Statechaind {
                child,
                url,
                sync_addr: sync_addr.expect("a sync line"),
                se_id: se_id.expect("an se_id line"),
                log,
            }
        }

        /// Everything it printed.
        pub fn log(&self) -> String {
            self.log.lock().expect("log").clone()
        }

        /// Waits for the process to exit (after a crash hook fired).
        pub fn wait(mut self) -> Option<i32> {
            self.child.wait().ok().and_then(|s| s.code())
        }

        /// SIGKILL, as a crash.
        pub fn kill(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Statechaind {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The wallet CLI against one SE with one mock-chain file.
    pub struct CliEnv {
        /// The `statechain-cli` binary.
        pub cli: std::path::PathBuf,
        /// The mock chain's JSON file.
        pub chain: std::path::PathBuf,
        /// The SE (`--server`).
        pub url: String,
    }

    impl CliEnv {
        /// Runs the CLI on `wallet` with `--server`.
        pub fn run(&self, wallet: &Path, args: &[&str]) -> CliOut {
            let mut all = vec!["--server", self.url.as_str()];
            all.extend_from_slice(args);
            statechain_cli(&self.cli, wallet, &self.chain, &all)
        }

        /// Runs it and requires success; its JSON output.
        pub fn ok(&self, wallet: &Path, args: &[&str]) -> serde_json::Value {
            let out = self.run(wallet, args);
            assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
            serde_json::from_str(&out.stdout).expect("json output")
        }

        /// Replaces the mock chain's state.
        pub fn set_chain(&self, v: serde_json::Value) {
            std::fs::write(&self.chain, v.to_string()).expect("chain file");
        }

        /// Marks `tx` confirmed at `height` in the mock chain, keeping the
        /// rest of its state.
        pub fn confirm(&self, tx: &bitcoin::Transaction, height: u32) {
            let mut chain: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&self.chain).expect("chain file"))
                    .expect("chain JSON");
            chain["confirmed"][tx.compute_txid().to_string()] = serde_json::Value::from(height);
            self.set_chain(chain);
        }

        /// Opens a coin of `value` in `wallet`: `deposit new`, a Tx0 paying
        /// exactly that to the deposit address (`tag` makes it unique), and
        /// `deposit sign`, whose output is returned with the id and Tx0.
        pub fn deposit(
            &self,
            wallet: &Path,
            value: u64,
            tag: u8,
        ) -> (String, bitcoin::Transaction, CliOut) {
            let dep = self.ok(wallet, &["deposit", "new", "--amount", &value.to_string()]);
            let id = dep["statechain_id"].as_str().expect("id").to_string();
            let tx0 = tx0(
                dep["deposit_address"].as_str().expect("address"),
                value,
                tag,
            );
            let tx0_hex = hex::encode(bitcoin::consensus::encode::serialize(&tx0));
            let signed = self.run(wallet, &["deposit", "sign", &id, "--tx0", &tx0_hex]);
            (id, tx0, signed)
        }
    }

    /// The scriptPubKey of a regtest address.
    pub fn regtest_script(address: &str) -> bitcoin::ScriptBuf {
        use std::str::FromStr;
        bitcoin::Address::from_str(address)
            .expect("address")
            .require_network(bitcoin::Network::Regtest)
            .expect("a regtest address")
            .script_pubkey()
    }

    /// A funding transaction paying exactly `value` to `address`; `tag`
    /// (in its input script) tells Tx0s of equal amounts apart.
    pub fn tx0(address: &str, value: u64, tag: u8) -> bitcoin::Transaction {
        use bitcoin::{absolute::LockTime, transaction::Version};
        bitcoin::Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::null(),
                script_sig: bitcoin::ScriptBuf::from_bytes(vec![0x51, tag]),
                sequence: bitcoin::Sequence::MAX,
                witness: bitcoin::Witness::new(),
            }],
            output: vec![bitcoin::TxOut {
                value: bitcoin::Amount::from_sat(value),
                script_pubkey: regtest_script(address),
            }],
        }
    }

    /// Runs `statechain-cli` (`bin`) on wallet `wallet` with the mock chain
    /// `chain` and `--json`, plus `args`.
    pub fn statechain_cli(bin: &Path, wallet: &Path, chain: &Path, args: &[&str]) -> CliOut {
        let out = Command::new(bin)
            .arg("--wallet")
            .arg(wallet)
            .arg("--chain")
            .arg(format!("mock:{}", chain.display()))
            .arg("--json")
            .args(args)
            .output()
            .expect("run statechain-cli");
        CliOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A real Prometheus server (Debian's `prometheus`, installed when missing)
/// scraping given targets every 250 ms, on a private loopback port with its
/// data in a temporary directory, and its HTTP query API.
pub mod prometheus {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running Prometheus; killed when dropped.
    pub struct Prometheus {
        child: Child,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    }

    /// The address a daemon's log says its metrics are served on (the
    /// `metrics on http://ADDR/metrics` line of `metrics-endpoint`).
    pub fn metrics_addr(log: &str) -> SocketAddr {
        let rest = log
            .split("metrics on http://")
            .nth(1)
            .unwrap_or_else(|| panic!("no metrics line in the log:\n{log}"));
        rest.split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .expect("a metrics address")
    }

    impl Prometheus {
        /// Starts Prometheus scraping `targets` (`/metrics` of each) and
        /// waits until it answers queries.
        pub fn scraping(targets: &[SocketAddr]) -> Prometheus {
            let binary = crate::debian::command("prometheus", "prometheus");
            let dir = tempfile::tempdir().expect("tempdir");
            let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n\
                     scrape_configs:\n  - job_name: lightkeeper\n    static_configs:\n      - targets: [{}]\n",
                    targets.join(", ")
                ),
            )
            .expect("write prometheus.yml");
            // A free port: bound and released; Prometheus cannot report one it chose.
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port");
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run prometheus");
            let prometheus = Prometheus { child, addr, dir };
            let deadline = Instant::now() + Duration::from_secs(60);
            while prometheus.get("/-/ready").map(|(status, _)| status) != Some(200) {
                assert!(
                    Instant::now() < deadline,
                    "prometheus did not become ready; its log:\n{}",
                    prometheus.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            prometheus
        }

        /// Prometheus's own log.
        pub fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
        }

        /// The data directory (for the screenshots and logs of a failed test).
        pub fn dir(&self) -> &Path {
            self.dir.path()
        }

        /// The value of an instant PromQL query that yields one sample, or
        /// `None` while it yields none.
        pub fn query(&self, promql: &str) -> Option<f64> {
            let path = format!("/api/v1/query?query={}", percent_encode(promql));
            let (status, body) = self.get(&path)?;
            assert_eq!(status, 200, "query {promql}: {body}");
            let json: serde_json::Value =
                serde_json::from_str(&body).expect("query answer is JSON");
            let result = json["data"]["result"].as_array()?;
            assert!(
                result.len() <= 1,
                "query {promql} yields several series: {body}"
            );
            result.first()?["value"][1].as_str()?.parse().ok()
        }

        /// Waits until `promql` yields a value `accept` takes (scrapes are
        /// every 250 ms), returning it; fails after 30 s with the last value.
        pub fn wait_for(&self, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let value = self.query(promql);
                if let Some(v) = value.filter(|v| accept(*v)) {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "{promql} never became acceptable (last: {value:?}); prometheus log:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        /// One HTTP/1.0 GET of the API: status and body.
        fn get(&self, path: &str) -> Option<(u16, String)> {
            let mut stream = TcpStream::connect(self.addr).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .ok()?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            let (head, body) = answer.split_once("\r\n\r\n")?;
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((status, body.to_owned()))
        }
    }

    impl Drop for Prometheus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn percent_encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}

/// A real headless Chromium (Debian's `chromium`, driven through its
/// `chromedriver` from `chromium-driver`, both installed when missing) for
/// tests of web pages, with a WebDriver client (`fantoccini`).
pub mod browser {
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub use fantoccini::{Client, Locator};

    /// A browser session; the driver and its browser are killed when dropped.
    pub struct Browser {
        /// The WebDriver session.
        pub client: Client,
        driver: Child,
        _profile: tempfile::TempDir,
    }

    impl Browser {
        /// Starts chromedriver on a free loopback port and opens a headless
        /// session in a fresh profile.
        pub async fn start() -> Browser {
            let chromium = crate::debian::command("chromium", "chromium");
            let chromedriver = crate::debian::command("chromedriver", "chromium-driver");
            let profile = tempfile::tempdir().expect("profile dir");
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log =
                std::fs::File::create(profile.path().join("chromedriver.log")).expect("driver log");
            let driver = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                // Its own process group, so the browser goes with it.
                .process_group(0)
                .spawn()
                .expect("run chromedriver");
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "chromedriver did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut capabilities = serde_json::Map::new();
            capabilities.insert(
                "goog:chromeOptions".into(),
                serde_json::json!({
                    "binary": chromium,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--window-size=1200,1000",
                        format!("--user-data-dir={}", profile.path().join("chrome").display()),
                    ],
                }),
            );
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let client = fantoccini::ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .expect("a chromium session");
            Browser {
                client,
                driver,
                _profile: profile,
            }
        }

        /// Waits until the JavaScript expression `condition` is truthy in
        /// the page, polling every 100 ms; fails after 30 s naming `what`
        /// and showing the page's text.
        pub async fn wait_until(&self, what: &str, condition: &str) {
            let script = format!("return !!({condition});");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let value = self.client.execute(&script, vec![]).await;
                if matches!(value, Ok(serde_json::Value::Bool(true))) {
                    return;
                }
                if Instant::now() >= deadline {
                    let text = self.text("document.body.innerText").await;
                    panic!("{what}: not seen within 30 s ({value:?}); the page reads:\n{text}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// The string value of a JavaScript expression.
        pub async fn text(&self, expression: &str) -> String {
            match self
                .client
                .execute(&format!("return String({expression});"), vec![])
                .await
            {
                Ok(serde_json::Value::String(s)) => s,
                other => format!("{other:?}"),
            }
        }

        /// Saves a PNG of the page as `<target>/tmp/test-artifacts/<name>.png`
        /// (`dir` is the test's `CARGO_TARGET_TMPDIR`) and returns its path.
        pub async fn screenshot(&self, dir: &str, name: &str) -> PathBuf {
            let png = self.client.screenshot().await.expect("screenshot");
            let dir = PathBuf::from(dir).join("test-artifacts");
            std::fs::create_dir_all(&dir).expect("artifact dir");
            let path = dir.join(format!("{name}.png"));
            std::fs::write(&path, png).expect("write screenshot");
            path
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            // The driver leads its own process group (and so do none of
            // ours): killing the group takes the browser's processes too.
            // Never through `kill(1)`: its parsing of `-PID` varies.
            match i32::try_from(self.driver.id()) {
                Ok(pid) if pid > 1 => {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                _ => {
                    let _ = self.driver.kill();
                }
            }
            let _ = self.driver.wait();
        }
    }
}

/// A real `tlogd` for tests: the transparency-log daemon, or a witness
/// (`--witness-for`) that other daemons submit checkpoints to.
pub mod tlogd {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::process::workspace_binary;

    /// A running tlogd; killed when dropped.
    pub struct Tlogd {
        /// The process.
        pub child: Child,
        /// `http://127.0.0.1:PORT` (no trailing slash).
        pub url: String,
        /// Its data directory.
        pub dir: PathBuf,
        /// Everything it logged so far.
        pub log: std::sync::Arc<std::sync::Mutex<String>>,
    }

    impl Tlogd {
        /// Waits until the daemon logs `text` (up to 30 s).
        pub fn wait_log(&self, text: &str) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !self.log.lock().expect("lock").contains(text) {
                if Instant::now() >= deadline {
                    let log = self.log.lock().expect("lock");
                    let tail = &log[log.len().saturating_sub(4000)..];
                    panic!("{text:?} never logged; the log ends with:\n{tail}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Tlogd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            // A failing test shows what each daemon said.
            if std::thread::panicking() {
                let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
                eprintln!("--- tlogd at {} ---\n{log}", self.url);
            }
        }
    }

    /// A port free at the time of asking.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port")
    }

    /// The workspace's tlogd on `dir` with defaults.
    pub fn start(dir: &Path) -> Tlogd {
        start_with(dir, &[])
    }

    /// The workspace's tlogd on `dir` (a free port, 100 ms checkpoints, the
    /// sync port on any free port unless given) with `extra` arguments; waits
    /// until it listens.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Tlogd {
        let port = free_port();
        let mut child = Command::new(workspace_binary("tlogd"))
            .args(["--data-dir", dir.to_str().expect("utf8")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--checkpoint-interval-ms", "100"])
            .args(if extra.contains(&"--sync-listen") {
                &[][..]
            } else {
                &["--sync-listen", "127.0.0.1:0"][..]
            })
            .args(extra)
            // `LK_TLOGD_LOG=info,tlog_node=debug` to see more when debugging.
            .env(
                "RUST_LOG",
                std::env::var("LK_TLOGD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tlogd");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Every line is kept, those before the daemon listens included.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        loop {
            assert!(Instant::now() < deadline, "tlogd did not start");
            let line = lines.next().expect("tlogd exited").expect("read");
            let mut kept = log.lock().expect("lock");
            kept.push_str(&line);
            kept.push('\n');
            if line.contains("listening on") {
                break;
            }
        }
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().expect("lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        Tlogd {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            log,
        }
    }
}
