//! TLS for outbound connections (HTTPS upstreams, later outbound channels):
//! turns operator options into a rustls [`ClientConfig`].
//!
//! Owns the trust anchors (the Mozilla roots from `webpki-roots` and/or an
//! operator CA bundle) and the optional mTLS client identity. It does not
//! own connections, timeouts or ALPN policy.
//!
//! Invariants:
//! - The config always uses the ring provider explicitly (never a
//!   process-wide default provider) with TLS 1.2 and 1.3.
//! - Trust is never empty: no roots at all, an empty or unusable CA file,
//!   or half an mTLS identity (certificate without key or the reverse) is
//!   an error, not a config that fails every handshake later.
//! - With `webpki_roots: false` and a `ca_file`, only that file's CAs are
//!   trusted.
//! - `alpn_protocols` is left empty: hyper-rustls sets it from the enabled
//!   HTTP versions and panics if it is already set. A caller driving a raw
//!   `TlsConnector` for HTTP/1.1 sets it to [`ALPN_HTTP1`].
//! - Errors name the file and what is wrong with it, never key material.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// ALPN identifier for HTTP/1.1, for callers that negotiate it themselves.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// CA bundles (the full Mozilla bundle is ~250 KiB), certificates and keys
/// are small; anything larger is the wrong file and is refused.
const MAX_PEM_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Outbound TLS settings.
#[derive(Debug, Clone)]
pub struct ClientTlsOptions {
    /// Extra CA bundle (PEM). When set and `webpki_roots` is false, ONLY
    /// these CAs are trusted.
    pub ca_file: Option<PathBuf>,
    /// Trust the Mozilla roots (webpki-roots). Default true.
    pub webpki_roots: bool,
    /// mTLS: client certificate chain (PEM, leaf first) presented to the
    /// upstream. Requires `client_key`.
    pub client_cert: Option<PathBuf>,
    /// mTLS: private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC) for
    /// `client_cert`. Requires `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for ClientTlsOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            webpki_roots: true,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Why the outbound TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {MAX_PEM_FILE_BYTES} bytes, not a PEM file", .path.display())]
    TooLarge { path: PathBuf },
    #[error("malformed PEM in {}: {reason}", .path.display())]
    Pem { path: PathBuf, reason: &'static str },
    #[error("no certificate found in {}", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("no usable CA certificate in {} ({rejected} rejected)", .path.display())]
    NoUsableCa { path: PathBuf, rejected: usize },
    #[error("no trusted CAs: webpki_roots is off and no CA file is configured")]
    NoTrustAnchors,
    #[error("no private key found in {}", .path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("client certificate {} is configured without a client key", .path.display())]
    MissingClientKey { path: PathBuf },
    #[error("client key {} is configured without a client certificate", .path.display())]
    MissingClientCert { path: PathBuf },
    #[error(
        "private key does not match certificate (key {}, certificate {})",
        .key_path.display(),
        .cert_path.display()
    )]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error(
        "unusable client identity (certificate {}, key {}): {reason}",
        .cert_path.display(),
        .key_path.display()
    )]
    ClientIdentity {
        cert_path: PathBuf,
        key_path: PathBuf,
        reason: String,
    },
}

/// Builds the outbound client config described by `opts` (reads the files
/// once; blocking I/O, meant for startup).
pub fn client_config(opts: &ClientTlsOptions) -> Result<ClientConfig, TlsError> {
    let identity = match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (Some(cert), None) => return Err(TlsError::MissingClientKey { path: cert.clone() }),
        (None, Some(key)) => return Err(TlsError::MissingClientCert { path: key.clone() }),
        (None, None) => None,
    };
    let roots = root_store(opts)?;
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(roots);
    let Some((cert_path, key_path)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert_path: cert_path.to_path_buf(),
                    key_path: key_path.to_path_buf(),
                }
            }
            e => TlsError::ClientIdentity {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
                reason: e.to_string(),
            },
        })
}

fn root_store(opts: &ClientTlsOptions) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if opts.webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = &opts.ca_file {
        let (added, rejected) = roots.add_parsable_certificates(read_certificates(path)?);
        if added == 0 {
            return Err(TlsError::NoUsableCa {
                path: path.clone(),
                rejected,
            });
        }
        if rejected > 0 {
            tracing::warn!(
                ca_file = %path.display(),
                added,
                rejected,
                "ignored CA certificates that do not parse"
            );
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrustAnchors);
    }
    Ok(roots)
}

/// All certificates in a PEM file, in file order; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read_capped(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read_capped(path)?).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        e => pem_error(path, &e),
    })
}

/// Reads a whole file, refusing files over [`MAX_PEM_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Describes a PEM parse error without echoing file contents (the parser's
/// own messages can quote lines of the file, which may be key material).
fn pem_error(path: &Path, error: &pem::Error) -> TlsError {
    let reason = match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64 in a section",
        pem::Error::SectionTooLarge => "section too large",
        _ => "unparseable PEM",
    };
    TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const DEADLINE: Duration = Duration::from_secs(10);

    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
        pem: String,
    }

    impl TestCa {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            Self {
                issuer: Issuer::new(params, key),
                der: cert.der().clone(),
                pem: cert.pem(),
            }
        }

        /// A leaf certificate and key (PEM) for `names` and `usage`.
        fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "test leaf");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn only_ca(ca_file: PathBuf) -> ClientTlsOptions {
        ClientTlsOptions {
            ca_file: Some(ca_file),
            webpki_roots: false,
            ..ClientTlsOptions::default()
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A one-shot echo server for `localhost`; with `client_ca`, it requires
    /// a client certificate issued by that CA. The task's result is the
    /// server-side handshake result.
    async fn echo_server(
        server_ca: &TestCa,
        client_ca: Option<&TestCa>,
    ) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
        let (cert, key) = server_ca.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der.clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let tls = acceptor.accept(tcp).await?;
            let (mut rd, mut wr) = tokio::io::split(tls);
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            Ok(())
        });
        (addr, server)
    }

    /// Handshakes with `config`, sends bytes and expects them back.
    async fn echo(config: ClientConfig, addr: SocketAddr) -> io::Result<()> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let exchange = async {
            let mut tls = connector
                .connect(name, TcpStream::connect(addr).await?)
                .await?;
            tls.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            Ok(())
        };
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("exchange hung")
    }

    #[test]
    fn default_trusts_mozilla_roots_without_client_auth() {
        let opts = ClientTlsOptions::default();
        assert!(opts.webpki_roots);
        let config = client_config(&opts).unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
        assert!(config.alpn_protocols.is_empty(), "hyper-rustls sets ALPN");
    }

    #[tokio::test]
    async fn ca_file_only_trusts_that_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        let other = TestCa::new("other CA");
        let ours = client_config(&only_ca(write(&dir, "ca.pem", &ca.pem))).unwrap();
        let theirs = client_config(&only_ca(write(&dir, "other.pem", &other.pem))).unwrap();

        let (addr, server) = echo_server(&ca, None).await;
        echo(ours, addr).await.unwrap();
        server.await.unwrap().unwrap();

        let (addr, server) = echo_server(&ca, None).await;
        let err = echo(theirs, addr).await.unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn mtls_presents_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        let (cert, key) = ca.issue(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let mut with_identity = only_ca(write(&dir, "ca.pem", &ca.pem));
        with_identity.client_cert = Some(write(&dir, "client.crt", &cert));
        with_identity.client_key = Some(write(&dir, "client.key", &key));

        let (addr, server) = echo_server(&ca, Some(&ca)).await;
        echo(client_config(&with_identity).unwrap(), addr)
            .await
            .unwrap();
        server.await.unwrap().unwrap();

        let anonymous = only_ca(dir.path().join("ca.pem"));
        let (addr, server) = echo_server(&ca, Some(&ca)).await;
        assert!(echo(client_config(&anonymous).unwrap(), addr)
            .await
            .is_err());
        let refused = server.await.unwrap().unwrap_err();
        assert!(refused.to_string().contains("no certificates"), "{refused}");
    }

    #[test]
    fn option_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        let (cert, key) = ca.issue(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let (_, other_key) = ca.issue(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let ca_file = write(&dir, "ca.pem", &ca.pem);
        let cert_file = write(&dir, "client.crt", &cert);
        let key_file = write(&dir, "client.key", &key);
        let other_key_file = write(&dir, "other.key", &other_key);
        let empty = write(&dir, "empty.pem", "");
        let missing = dir.path().join("missing.pem");
        let message = |opts: ClientTlsOptions| client_config(&opts).unwrap_err().to_string();
        let show = |p: &Path| p.display().to_string();

        assert_eq!(
            message(ClientTlsOptions {
                webpki_roots: false,
                ..ClientTlsOptions::default()
            }),
            "no trusted CAs: webpki_roots is off and no CA file is configured"
        );
        assert_eq!(
            message(only_ca(empty.clone())),
            format!("no certificate found in {}", show(&empty))
        );
        // An empty CA file is an error even when the Mozilla roots are on.
        assert_eq!(
            message(ClientTlsOptions {
                ca_file: Some(empty.clone()),
                ..ClientTlsOptions::default()
            }),
            format!("no certificate found in {}", show(&empty))
        );
        let msg = message(only_ca(missing.clone()));
        assert!(
            msg.starts_with(&format!("cannot read {}", show(&missing))),
            "{msg}"
        );

        let mut opts = only_ca(ca_file.clone());
        opts.client_cert = Some(cert_file.clone());
        assert_eq!(
            message(opts.clone()),
            format!(
                "client certificate {} is configured without a client key",
                show(&cert_file)
            )
        );
        opts.client_cert = None;
        opts.client_key = Some(key_file.clone());
        assert_eq!(
            message(opts.clone()),
            format!(
                "client key {} is configured without a client certificate",
                show(&key_file)
            )
        );

        opts.client_cert = Some(cert_file.clone());
        opts.client_key = Some(other_key_file.clone());
        assert_eq!(
            message(opts.clone()),
            format!(
                "private key does not match certificate (key {}, certificate {})",
                show(&other_key_file),
                show(&cert_file)
            )
        );

        opts.client_key = Some(cert_file.clone());
        assert_eq!(
            message(opts.clone()),
            format!("no private key found in {}", show(&cert_file))
        );

        let truncated = write(&dir, "truncated.key", &key[..key.len() / 2]);
        opts.client_key = Some(truncated.clone());
        let msg = message(opts);
        assert!(
            msg.starts_with(&format!("malformed PEM in {}", show(&truncated))),
            "{msg}"
        );
        assert!(
            !msg.contains(key.lines().nth(1).unwrap()),
            "key material: {msg}"
        );
    }
}
