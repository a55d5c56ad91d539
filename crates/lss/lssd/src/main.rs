//! The `lssd` binary: configuration, key, store, signals; then [`lssd::serve`],
//! or one of the data commands (export, verify, import, copy, import-reference).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use lss_core::ServerKey;
use lssd::backend::AnyStore;
use lssd::config::{Command, Config, ConfigError, TlsFiles};
use lssd::key_file::{self, KeyOrigin};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

fn main() -> anyhow::Result<()> {
    // TLS on ring, even if another dependency enables a second rustls
    // provider (then rustls could not choose one by itself).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = match lssd::config::parse(&argv, true) {
        Ok(parsed) => parsed,
        // Usage errors, --help and --version as clap shows them.
        Err(ConfigError::Layers(config_layers::Error::Args(e))) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    let command = parsed.value.command.clone().unwrap_or(Command::Serve);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    // Configuration errors go to standard error as anyhow prints them,
    // before logging is set up the way the configuration says.
    let config = Config::resolve(&parsed, home.as_deref())?;
    log_init::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            Command::Serve => run(config).await,
            Command::Export { output } => export(&config, &output).await,
            Command::Verify { input } => verify(&input).await,
            Command::IssueToken => issue_token(&config),
            Command::CheckConfig => check_config(&config),
            Command::Import { input } => import(&config, &input).await,
            Command::Copy { to_config } => copy(&config, &to_config, home.as_deref()).await,
            Command::ImportReference {
                reference_db,
                reference_key,
            } => import_reference(&config, &reference_db, reference_key.as_deref()).await,
        }
    })
}

async fn open(config: &Config) -> anyhow::Result<AnyStore> {
    if matches!(config.backend, lssd::config::Backend::Redb) {
        create_private_dir(&config.data_dir)?;
    }
    let store = AnyStore::open(config).await?;
    info!("storage: {}", store.describe(config));
    Ok(store)
}

async fn run(config: Config) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let key = match &config.server_key_file {
        Some(path) => key_file::load(path)?,
        None => {
            let path = config.data_dir.join("server_key");
            let (key, origin) = key_file::load_or_create(&path)?;
            if origin == KeyOrigin::Created {
                info!(path = %path.display(), "created a new server key; back it up: clients are bound to it");
            }
            key
        }
    };
    let access = lssd::access::Access::load(config.access, &config.data_dir)
        .context("cannot load the access policy")?;
    if access.is_restricted() {
        info!(
            list = %config.data_dir.join(lssd::access::ALLOWED_FILE).display(),
            "access: listed and registered clients only"
        );
    }
    let store = open(&config).await?;
    serve(config, key, store, std::sync::Arc::new(access)).await
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    if let Some(files) = &config.tls {
        tls_config(files)?;
    }
    if let Some(path) = &config.server_key_file {
        key_file::load(path)?;
    }
    println!("configuration OK; effective settings (secrets redacted):\n{config:#?}");
    Ok(())
}

fn issue_token(config: &Config) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let key = lssd::access::RegistrationKey::load_or_create(&config.data_dir)
        .context("cannot load the registration key")?;
    if config.access != lssd::access::AccessMode::Allowlist {
        warn!("access is open: every client is served, tokens are not needed until access = allowlist");
    }
    println!("{}", key.issue(rand::random()));
    Ok(())
}

/// Progress of a data command on a terminal: entries, bytes, rate, and an
/// ETA where the total is known (the input file's size). Nothing when
/// standard error is not a terminal (a service, a pipe, a log file): the
/// summary at the end is logged either way. Clones share the bar.
#[derive(Clone)]
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
}

impl Reporter {
    fn new(what: &'static str, total_bytes: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total_bytes {
                Some(total) => (
                    indicatif::ProgressBar::new(total),
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                ),
                None => (
                    indicatif::ProgressBar::new_spinner(),
                    "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}",
                ),
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Reporter { bar, what }
    }

    fn report(&mut self, p: &lss_transfer::Progress) {
        if let Some(bar) = &self.bar {
            bar.set_position(p.bytes);
            bar.set_message(format!("{}: {} entries", self.what, p.entries));
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The size of `path`, for an ETA.
fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

async fn export(config: &Config, output: &Path) -> anyhow::Result<()> {
    if output.exists() {
        bail!("{} exists; choose a new file", output.display());
    }
    let store = open(config).await?;
    let mut reporter = Reporter::new("exporting", None);
    let summary = lss_transfer::export(&store, output, |p| reporter.report(p)).await;
    reporter.finish();
    let summary = summary?;
    info!(
        entries = summary.entries,
        bytes = summary.bytes,
        sha256 = %hex::encode(summary.sha256),
        file = %output.display(),
        "export complete"
    );
    Ok(())
}

async fn verify(input: &Path) -> anyhow::Result<()> {
    let reporter = Reporter::new("verifying", file_size(input));
    let mut reading = reporter.clone();
    let summary = lss_transfer::verify_file_reporting(input, move |p| reading.report(p)).await;
    reporter.finish();
    let summary = summary?;
    info!(
        entries = summary.entries,
        bytes = summary.bytes,
        sha256 = %hex::encode(summary.sha256),
        "{} is a complete, undamaged export",
        input.display()
    );
    Ok(())
}

async fn import(config: &Config, input: &Path) -> anyhow::Result<()> {
    let store = open(config).await?;
    let mut reporter = Reporter::new("importing", file_size(input));
    let done = lss_transfer::import(&store, input, |p| reporter.report(p)).await;
    reporter.finish();
    let done = done?;
    info!(
        entries = done.entries,
        written = done.written,
        already_present = done.entries - done.written,
        "import complete"
    );
    Ok(())
}

async fn copy(config: &Config, to_config: &Path, home: Option<&Path>) -> anyhow::Result<()> {
    // The target is the file alone: neither this command line nor the
    // LSSD_* environment (which configure the source) apply to it.
    let argv = [
        "lssd".into(),
        "--config".into(),
        to_config.as_os_str().to_owned(),
    ];
    let target = Config::resolve(&lssd::config::parse(&argv, false)?, home)?;
    if target.backend == config.backend
        && (target.backend != lssd::config::Backend::Redb || target.data_dir == config.data_dir)
    {
        bail!("the target is the source store itself");
    }
    let from = open(config).await?;
    let to = open(&target).await?;
    let mut reporter = Reporter::new("copying", None);
    let done = lss_transfer::copy(&from, &to, |p| reporter.report(p)).await;
    reporter.finish();
    let done = done?;
    info!(
        entries = done.entries,
        written = done.written,
        "copy complete and verified: the target holds exactly the source's entries"
    );
    Ok(())
}

async fn import_reference(
    config: &Config,
    reference_db: &Path,
    reference_key: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = reference_key {
        create_private_dir(&config.data_dir)?;
        let key = key_file::load(path)?;
        let ours = config.data_dir.join("server_key");
        if ours.exists() {
            let existing = key_file::load(&ours)?;
            if existing.server_id() != key.server_id() {
                bail!(
                    "{} holds a different server key; clients of the reference are bound to {}: move it away first",
                    ours.display(),
                    path.display()
                );
            }
        } else {
            key_file::write_new(&ours, &key)?;
            info!(path = %ours.display(), "adopted the reference server key");
        }
    }
    let store = open(config).await?;
    let mut reporter = Reporter::new("importing the reference database", file_size(reference_db));
    let done = lss_transfer::import_reference(&store, reference_db, |p| reporter.report(p)).await;
    reporter.finish();
    let done = done?;
    info!(
        entries = done.entries,
        written = done.written,
        "reference import complete"
    );
    Ok(())
}

async fn serve(
    config: Config,
    key: ServerKey,
    store: AnyStore,
    access: std::sync::Arc<lssd::access::Access>,
) -> anyhow::Result<()> {
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    let _metrics = metrics_endpoint::serve_if(config.metrics_listen).await?;
    lssd::metrics::describe();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    if tls.is_none() && !addr.ip().is_loopback() {
        warn!(%addr, "serving plaintext on a non-loopback address: auth tokens travel in clear; configure TLS");
    }
    info!(
        %addr,
        server_id = %hex::encode(key.server_id()),
        data_dir = %config.data_dir.display(),
        tls = tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "lssd listening on {addr}"
    );
    let disk = (matches!(config.backend, lssd::config::Backend::Redb)
        && config.min_free_disk_bytes > 0)
        .then(|| lssd::disk::DiskReserve::new(config.data_dir.clone(), config.min_free_disk_bytes));
    let settings = lssd::Settings {
        limits: config.limits,
        connections: config.connections,
        access,
        disk,
        tls,
        verifiable_log: config.verifiable_log,
        sample_totals: config.metrics_listen.is_some(),
    };
    lssd::serve(listener, store, key, settings, shutdown_signal()).await?;
    info!("stopped; every acknowledged put is committed");
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read TLS file {}", path.display()))
    };
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: finishing in-flight requests"),
        _ = term.recv() => info!("SIGTERM: finishing in-flight requests"),
    }
}
