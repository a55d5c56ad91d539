//! The client side, for `ureq` agents.

/// How HTTPS servers are authenticated, and the client with them: by
/// default the Mozilla roots (webpki-roots) and no client certificate; a
/// server with a private CA or requiring client certificates
/// (`--tls-client-ca`) needs [`ClientTls::from_pem`].
#[derive(Clone, Default)]
pub struct ClientTls {
    config: Option<ureq::tls::TlsConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // May hold a private key: never printed.
        f.write_str(if self.config.is_some() {
            "ClientTls(custom)"
        } else {
            "ClientTls(default)"
        })
    }
}

/// Why client TLS settings are not usable.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ClientTlsError {
    /// Which setting (`CA certificate`, `client certificate`, `client key`).
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ClientTls {
    /// Trusts the CA certificate(s) in `ca` (PEM) instead of the Mozilla
    /// roots, and presents `client` (certificate chain and key, PEM).
    pub fn from_pem(
        ca: Option<&[u8]>,
        client: Option<(&[u8], &[u8])>,
    ) -> Result<Self, ClientTlsError> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let error = |what: &'static str, reason: String| ClientTlsError { what, reason };
        let certs = |what: &'static str, pem: &[u8]| {
            let mut certs: Vec<Certificate<'static>> = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                if let PemItem::Certificate(c) = item.map_err(|e| error(what, e.to_string()))? {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                return Err(error(what, "no CERTIFICATE in it".into()));
            }
            Ok(certs)
        };
        let mut tls = TlsConfig::builder();
        if let Some(ca) = ca {
            tls = tls.root_certs(RootCerts::Specific(std::sync::Arc::new(certs(
                "CA certificate",
                ca,
            )?)));
        }
        if let Some((chain, key)) = client {
            let chain = certs("client certificate", chain)?;
            let key = PrivateKey::from_pem(key).map_err(|e| error("client key", e.to_string()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(ClientTls {
            config: Some(tls.build()),
        })
    }

    /// [`ClientTls::from_pem`] from files (a CLI's `--ca-cert`,
    /// `--client-cert`, `--client-key`): the defaults when none is given.
    pub fn from_files(
        ca: Option<&std::path::Path>,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, ClientTlsError> {
        if ca.is_none() && client.is_none() {
            return Ok(ClientTls::default());
        }
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| ClientTlsError {
                what,
                reason: format!("cannot read {}: {e}", path.display()),
            })
        };
        let ca = ca.map(|p| read("CA certificate", p)).transpose()?;
        let client = match client {
            Some((cert, key)) => {
                Some((read("client certificate", cert)?, read("client key", key)?))
            }
            None => None,
        };
        Self::from_pem(
            ca.as_deref(),
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
    }

    /// A blocking agent with these settings and `config`'s others.
    pub fn agent(
        &self,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> ureq::Agent {
        match &self.config {
            Some(tls) => config.tls_config(tls.clone()).build().into(),
            None => config.build().into(),
        }
    }
}
