//! A fake lightningd: starts the broker as CLN does (a socketpair on fd 3),
//! and a signer process, and speaks hsmd to the broker.

#![allow(dead_code)]

pub mod checks;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use sphinx_signer::Network;
use sphinx_wire::hsmd;
use vls_protocol::model::{Bip32KeyVersion, PubKey};
use vls_protocol::msgs::{self, Message, SerBolt};

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `sphinx-signer` binary, built if this test run did not build it.
pub fn signer_binary() -> PathBuf {
    workspace_binary("sphinx-signer")
}

/// The `lssd` binary, built if this test run did not build it.
pub fn lssd_binary() -> PathBuf {
    workspace_binary("lssd")
}

fn workspace_binary(name: &str) -> PathBuf {
    lk_testkit::process::workspace_binary(name)
}

/// A child process that is killed when dropped, with its stderr in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit with a failure whose log names `why`.
    pub fn fails_with(&mut self, why: &str) {
        let status = self
            .wait_exit(Duration::from_secs(10))
            .expect("the process exits");
        assert!(!status.success(), "{status:?}");
        let log = self.log_text();
        assert!(log.contains(why), "{why:?} not in:\n{log}");
    }

    /// Waits until the log says `text` (up to 10 s).
    pub fn wait_log(&self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(text) {
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} never logged:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// Where a signer's files live; `init` made its seed.
pub struct SignerHome {
    pub dir: PathBuf,
    pub seed: [u8; 32],
}

impl SignerHome {
    pub fn create(dir: &Path) -> SignerHome {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new(signer_binary())
            .args(["--data-dir", dir.to_str().expect("utf8"), "init"])
            .output()
            .expect("run sphinx-signer init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seed = sphinx_signer::seed::load(&dir.join("seed")).expect("seed");
        SignerHome {
            dir: dir.to_path_buf(),
            seed,
        }
    }

    pub fn node_id(&self) -> secp256k1::PublicKey {
        sphinx_signer::run::node_key(Network::Regtest, &self.seed).0
    }

    pub fn node_secret(&self) -> secp256k1::SecretKey {
        sphinx_signer::run::node_key(Network::Regtest, &self.seed).1
    }

    pub fn cid(&self) -> String {
        std::fs::read_to_string(self.dir.join("signer-id"))
            .expect("signer id (the signer has run)")
            .trim()
            .to_string()
    }

    /// Starts the signer against a broker that runs without LSS.
    pub fn start(&self, url: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["--no-lss"];
        args.extend_from_slice(extra);
        self.start_lss(url, &args)
    }

    /// Starts the signer, insisting on LSS unless `extra` says otherwise.
    pub fn start_lss(&self, url: &str, extra: &[&str]) -> Proc {
        let log = self.dir.join(format!("signer-{}.log", rand_suffix()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(signer_binary())
            .args([
                "--data-dir",
                self.dir.to_str().expect("utf8"),
                "run",
                "--mqtt-url",
                url,
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn signer");
        Proc { child, log }
    }
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The broker, started as lightningd starts its hsmd.
pub struct Broker {
    pub proc: Proc,
    /// Lightningd's end of fd 3.
    pub master: Hsmd,
    pub mqtt_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
}

impl Broker {
    /// Starts the broker with `args` after the defaults (`--no-lss true`,
    /// a data dir under `dir`, the embedded MQTT server on a free port).
    pub fn start(dir: &Path, args: &[&str]) -> Broker {
        let mut all = vec!["--no-lss", "true"];
        all.extend_from_slice(args);
        Self::start_plain(dir, &all)
    }

    /// Starts the broker storing signer state in the LSS server at `url`.
    pub fn start_lss(dir: &Path, url: &str, args: &[&str]) -> Broker {
        let mut all = vec!["--lss-url", url];
        all.extend_from_slice(args);
        Self::start_plain(dir, &all)
    }

    fn start_plain(dir: &Path, args: &[&str]) -> Broker {
        Self::start_on(dir, free_port(), args)
    }

    /// Starts the broker with its embedded MQTT server on `mqtt_port` and
    /// `args` after the data dir and listen address.
    pub fn start_on(dir: &Path, mqtt_port: u16, args: &[&str]) -> Broker {
        let data_dir = dir.join("broker");
        let listen = format!("127.0.0.1:{mqtt_port}");
        let mut all = vec![
            "--data-dir",
            data_dir.to_str().expect("utf8"),
            "--mqtt-listen",
            &listen,
        ];
        all.extend_from_slice(args);
        Self::start_with(dir, &all, mqtt_port, data_dir.clone())
    }

    /// Starts the broker with exactly `args`.
    pub fn start_with(dir: &Path, args: &[&str], mqtt_port: u16, data_dir: PathBuf) -> Broker {
        let given = args
            .iter()
            .position(|a| *a == "--http-listen")
            .and_then(|i| args.get(i + 1))
            .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok());
        let http_port = given.map(|a| a.port()).unwrap_or_else(free_port);
        let http = format!("127.0.0.1:{http_port}");
        let mut args = args.to_vec();
        if given.is_none() {
            args.extend_from_slice(&["--http-listen", &http]);
        }
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let log = dir.join(format!("broker-{}.log", rand_suffix()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sphinx-broker"));
        command
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info,sphinx_broker=debug")
            .stdout(Stdio::null())
            .stderr(file);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: OwnedFd::from(theirs),
                child_fd: 3,
            }])
            .expect("map fd 3");
        let child = command.spawn().expect("spawn broker");
        Broker {
            proc: Proc { child, log },
            master: Hsmd::new(ours),
            mqtt_port,
            http_port,
            data_dir,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    /// The control API's token.
    pub fn api_token(&self) -> String {
        let path = self.data_dir.join("api-token");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if !text.trim().is_empty() {
                    return text.trim().to_string();
                }
            }
            assert!(std::time::Instant::now() < deadline, "no API token");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One HTTP/1.1 request to the control API: status and body.
    pub fn http(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .expect("connect to the API");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }
}

/// One hsmd connection, lightningd's side.
pub struct Hsmd {
    pub stream: UnixStream,
}

impl Hsmd {
    pub fn new(stream: UnixStream) -> Hsmd {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Hsmd { stream }
    }

    pub fn send(&mut self, message: &dyn SerBolt) {
        self.send_raw(&message.as_vec());
    }

    pub fn send_raw(&mut self, message: &[u8]) {
        let frame = hsmd::Frame::from_message(message)
            .expect("frame")
            .encode()
            .expect("encode");
        self.stream.write_all(&frame).expect("write to broker");
    }

    /// Reads one reply; `None` if the broker closed the connection.
    pub fn recv(&mut self) -> Option<Message> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).expect("reply body");
        Some(msgs::from_vec(body).expect("reply parses"))
    }

    pub fn call(&mut self, message: &dyn SerBolt) -> Message {
        self.send(message);
        self.recv().expect("a reply")
    }

    /// `ClientHsmFd` with a subdaemon's capabilities (everything but
    /// lightningd's own), then the passed fd as a new connection.
    pub fn client(&mut self, peer_id: [u8; 33], dbid: u64) -> Hsmd {
        self.client_with(peer_id, dbid, SUBDAEMON)
    }

    /// `ClientHsmFd` with `capabilities`, then the passed fd.
    pub fn client_with(&mut self, peer_id: [u8; 33], dbid: u64, capabilities: u64) -> Hsmd {
        let reply = self.call(&msgs::ClientHsmFd {
            peer_id: PubKey(peer_id),
            dbid,
            capabilities,
        });
        assert!(matches!(reply, Message::ClientHsmFdReply(_)), "{reply:?}");
        let fd = sphinx_broker::fdio::recv_fd(self.stream.as_fd()).expect("fd from the broker");
        Hsmd::new(UnixStream::from(fd))
    }
}

/// Every capability a subdaemon can have (not lightningd's `MASTER`).
pub const SUBDAEMON: u64 = 0x1ff;
/// lightningd's own capability, for clients that send what it sends.
pub const MASTER: u64 = sphinx_wire::capabilities::MASTER;

/// CLN's `HsmdInit` for regtest.
pub fn hsmd_init(network: Network) -> msgs::HsmdInit {
    msgs::HsmdInit {
        key_version: Bip32KeyVersion {
            pubkey_version: 0x043587cf,
            privkey_version: 0x04358394,
        },
        chain_params:
            vls_protocol_signer::lightning_signer::bitcoin::blockdata::constants::genesis_block(
                network,
            )
            .block_hash(),
        encryption_key: None,
        dev_privkey: None,
        dev_bip32_seed: None,
        dev_channel_secrets: None,
        dev_channel_secrets_shaseed: None,
        hsm_wire_min_version: 4,
        hsm_wire_max_version: 6,
    }
}

/// Mosquitto, as the external MQTT server.
pub mod mosquitto {
    use super::{free_port, rand_suffix, Proc};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn reachable(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    fn wait_for(port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if reachable(port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The machine's Mosquitto on 127.0.0.1:1883, started if it is not up.
    pub fn system() -> u16 {
        if !reachable(1883) {
            let _ = Command::new("mosquitto")
                .args(["-d", "-c", "/etc/mosquitto/mosquitto.conf"])
                .status();
            assert!(
                wait_for(1883),
                "no Mosquitto on 127.0.0.1:1883 and `mosquitto -d -c /etc/mosquitto/mosquitto.conf` \
                 did not start one; install it (apt-get install mosquitto)"
            );
        }
        1883
    }

    /// A private Mosquitto with the documented security settings: accounts,
    /// `use_username_as_clientid`, and the ACL file from `mosquitto/acl`.
    pub struct Private {
        pub proc: Proc,
        pub port: u16,
    }

    impl Private {
        pub fn start(dir: &Path, accounts: &[(&str, &str)]) -> Private {
            let dir = dir.join(format!("mosquitto-{}", rand_suffix()));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let passwd = dir.join("passwd");
            for (i, (user, pass)) in accounts.iter().enumerate() {
                let mut command = Command::new("mosquitto_passwd");
                if i == 0 {
                    command.arg("-c");
                }
                let out = command
                    .arg("-b")
                    .arg(&passwd)
                    .args([user, pass])
                    .output()
                    .expect("mosquitto_passwd");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let acl = dir.join("acl");
            std::fs::write(&acl, include_str!("../../mosquitto/acl")).expect("acl");
            let port = free_port();
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "user root\nper_listener_settings false\nallow_anonymous false\npassword_file {}\n\
                     acl_file {}\npersistence false\nlog_dest stderr\nlog_type all\n\
                     listener {port} 127.0.0.1\nuse_username_as_clientid true\n",
                    passwd.display(),
                    acl.display()
                ),
            )
            .expect("conf");
            let log = dir.join("mosquitto.log");
            let child = Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("spawn mosquitto (apt-get install mosquitto)");
            let proc = Proc { child, log };
            assert!(
                wait_for(port),
                "mosquitto did not listen: {}",
                proc.log_text()
            );
            Private { proc, port }
        }
    }
}
