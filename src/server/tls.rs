//! TLS for the public listener: the server certificate, reloaded from disk
//! when its files change, and the handshake with a deadline.
//!
//! Owns reading and validating the PEM certificate chain and private key,
//! the certificate currently served, the reload policy, and the rustls
//! [`ServerConfig`](rustls::ServerConfig) that picks the certificate per
//! handshake. It owns no sockets beyond the one handed to [`accept`].
//!
//! Invariants:
//! - A [`ReloadingCert`] always holds a complete certificate chain and a
//!   private key that matches its leaf certificate: it is created only from
//!   valid files, and a reload swaps in a new pair only once the pair has
//!   been fully validated. A failed reload leaves the served pair unchanged.
//! - "Changed" means the file *contents* changed (a hash of both files),
//!   never timestamps: a Kubernetes Secret volume rotates by swapping a
//!   symlink, which can keep mtimes, and rewriting identical bytes is not a
//!   rotation.
//! - A failed reload does not record the new contents as seen, so the next
//!   poll tries again. A rotation caught halfway (new certificate, old key)
//!   is refused as a mismatch and picked up once both files are in place.
//! - Every handshake uses the pair current when it starts; established and
//!   in-progress connections are never affected by a reload.
//! - Errors name the file and what is wrong with it, never key material.

use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The only application protocol the listener speaks.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Certificate and key files are a few KiB; anything this large is the
/// wrong file and is refused instead of being read into memory.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// `watch` never polls more often than this (a zero interval would spin).
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Why a certificate/key pair could not be loaded.
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
    #[error("invalid certificate in {}: {reason}", .path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("no private key found in {}", .path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("unusable private key in {}: {reason}", .path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "private key does not match certificate (key {}, certificate {})",
        .key_path.display(),
        .cert_path.display()
    )]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
}

/// The served certificate, re-read from `cert_path`/`key_path` on request.
///
/// Resolves the certificate of every handshake of the configs made by
/// [`ReloadingCert::server_config`], so a reload takes effect for the next
/// handshake without rebuilding the config or the acceptor.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

/// The pair being served and the fingerprint of the files it came from,
/// swapped together so they never disagree.
struct Current {
    key: Arc<CertifiedKey>,
    fingerprint: u64,
}

impl ReloadingCert {
    /// Loads the certificate chain (leaf first) and private key (PKCS#8,
    /// PKCS#1 RSA or SEC1 EC), all PEM. Fails on unreadable, empty or
    /// malformed files and on a key that does not match the leaf.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = PemFiles::read(cert_path, key_path)?;
        let key = files.certified_key(cert_path, key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(Current {
                key: Arc::new(key),
                fingerprint: files.fingerprint(),
            }),
        }))
    }

    /// Re-reads both files and, if their contents changed since the pair
    /// being served was loaded, validates them and swaps the new pair in.
    ///
    /// Returns `Ok(true)` when a new pair was swapped in, `Ok(false)` when
    /// the files are unchanged. On error the previous pair stays in service
    /// and the error is returned for the caller to log; the next call tries
    /// again. Blocking file I/O: call it off the async workers (as
    /// [`watch`](Self::watch) does).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let files = PemFiles::read(&self.cert_path, &self.key_path)?;
        let fingerprint = files.fingerprint();
        if fingerprint == self.read_current().fingerprint {
            return Ok(false);
        }
        let key = files.certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
            key: Arc::new(key),
            fingerprint,
        };
        Ok(true)
    }

    /// Calls [`reload_if_changed`](Self::reload_if_changed) every `interval`
    /// until `stop` completes. Logs a reload at info and a failure at warn;
    /// the same failure repeating on later polls is logged at debug so a
    /// broken file does not flood the log. Meant to be spawned:
    /// `tokio::spawn(cert.clone().watch(interval, shutdown_future))`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: impl Future<Output = ()>) {
        let period = interval.max(MIN_WATCH_INTERVAL);
        // The first poll is one period after start: `load` just read the files.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                _ = ticks.tick() => {}
            }
            let this = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => {
                    last_error = None;
                    tracing::info!(
                        cert = %self.cert_path.display(),
                        key = %self.key_path.display(),
                        "reloaded TLS certificate"
                    );
                }
                Ok(Ok(false)) => last_error = None,
                Ok(Err(e)) => {
                    let message = e.to_string();
                    if last_error.as_ref() == Some(&message) {
                        tracing::debug!(error = %message, "TLS certificate reload still failing");
                    } else {
                        tracing::warn!(
                            error = %message,
                            "TLS certificate reload failed; still serving the previous certificate"
                        );
                    }
                    last_error = Some(message);
                }
                Err(e) => tracing::warn!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }

    /// A server config (TLS 1.2 and 1.3, ring, ALPN `http/1.1`, no client
    /// auth) whose certificate is resolved through `self` on every
    /// handshake. Build it once and share it; reloads need no new config.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Arc::new(config)
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // Poisoning cannot leave `Current` half-written (it is replaced by a
        // single assignment), so a poisoned lock is still safe to use.
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read_current().key))
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Runs the server side of the TLS handshake on `stream`, giving up after
/// `timeout` with [`io::ErrorKind::TimedOut`]. On any error the stream is
/// dropped (closed), so a client that never finishes its handshake holds
/// its connection slot for at most `timeout`.
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The raw contents of the certificate and key files, read once so the
/// fingerprint and the parsed pair describe the same bytes.
struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemFiles {
    fn read(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read_capped(cert_path)?,
            key: read_capped(key_path)?,
        })
    }

    /// Change detection only (not a security boundary): whoever can write
    /// these files can already choose the served certificate.
    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.cert.hash(&mut hasher);
        self.key.hash(&mut hasher);
        hasher.finish()
    }

    fn certified_key(
        &self,
        cert_path: &Path,
        key_path: &Path,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert_path, &e))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert_path.to_path_buf(),
            });
        }
        let key_der = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoPrivateKey {
                path: key_path.to_path_buf(),
            },
            e => pem_error(key_path, &e),
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::BadKey {
                path: key_path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // `Unknown`: the key cannot report its public half; nothing to compare.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
            }),
            // The leaf certificate itself does not parse.
            Err(e) => Err(TlsError::BadCertificate {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }
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
    use std::time::Instant;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PublicKeyData,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A throwaway RSA-2048 key for the PKCS#1 test only (ring cannot
    /// generate RSA keys). Never used outside this test module.
    const TEST_RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDVb+Sd13H+wz/O
lFrcOjkmCGTNJ7o7PK+quYubF9P2+z885QpggmgM3Q+1i/pHNMjDVAI7GUNuUrh8
MT53hzzYX1grE5dnnaEswJlMcJgtQXGm0YKbMxy9ArqzoeEGBk4/AstPwCGSL8FA
8SInYHXzNIl7grn5HGZvHG9cTADYZSFx5mjg4HpvMk20eBRSjLUxPGL+bP7K6k7y
MrYBUPBFFiKoF/miQXxt5q/XvcQCn+WmDFUA3J83lBX3HMPwZf4pqqzBUtaTxBB6
cYjn6okNTCsoc7nV9W92aOBucbrCcoiAqLedSbB3Ow0gLlMC7T6Djgx1yweWzbf9
5JRu4jIxAgMBAAECggEADD3EZCwi4Nx0aKX4FxjsxapmE6EjbHnUzmshX2YMtWXg
EN9HCtV338L+/2fVlSdpG1DSZu7SP/3VEGRno4XZXsSLIz9Wp+3xvEYYlLqBc9kE
ym9KORoDnDCPojVW2VhbvP/tRrfrhP2hrRaXYaBF64q4FuIexfOTyWwdU/MU+lQp
oaGRCfTpVEMp++motTy200Ii8reoQPGj0CF6UMsOxOjZ0ouX0e4dTNBnaMwaZIIq
hoHYe22K5pQt/7jdHWD0xthnWYsE90FAYfHgpw3w7wKQZgNafqxMq2t6bU69eVbY
ww0yYabDIdPRDKVpL5p4ujgjdUQOpxLTBpAVeMPW8QKBgQD9nTFKLofnMFHfgIIz
43Ds5GmoDvPB9KR/y8cDM67nJ5QeDLWwnUvJ3Rgha7ETJZYbBOz0tOmrl+gCpvzb
m3qLn6T8Zec5QrGI+TwwOuY5YCeyQtzT7XiUQljNSTNVPk8rCiO29nR0KEhRFg7e
bEtDKYSJxZ+4vBBohnyS4i7p6QKBgQDXcfASlsQHnOZfhUEcSnAUGxtr0jstKlMs
w0Ui1s1UszeyVwJuyJYx3SilzaoGHBXCV61Y9NrEnwCtT7D4nCfU1QfWiP5NDNBJ
AKMlf1x6PzvW5bVgMZ2KqwUaVBLOMT8G56qV5zO3PJ0Y8OifgykEWJCfyzCb5Hak
UcCT7GeRCQKBgQCZKYSp8z36HhFj9D0tzw7U0gEJELafjPqHf26Z/W2Ehj+Kgkx7
9BLgP1kiXeJb2Ng1Sx07j8KK8buZVnXgvp4cknZWQ8iHqUKEoVh7HCcLwYlXu8+X
YZPvnb35hFqvAWlYadA139NmjylVZwflxesSDZHQjnwuWc1jAs1a+6QveQKBgQCX
7flmontLAxJSeh4YXUX8Z8FGn9KrXxWYk3vFvcS+3kOAuGs2xK1mLJfllMs508Rk
cIAGI2XDEn3fujsKltRf+nq0h5cNruOTF6f1YYNNkhoYyZTGaTa3+zJ2BqPcVE4m
CGj7nTeTGGOQmxLwqgXa0rnqddepl8syxZQQvL2sQQKBgD+xGmyYXlnA6+sF8Q4n
KViSHlyLn9ucJZ9XGhxSKFyHYKbP8m4WiikSJcVCTzZ2E55nrYK7Ik0fjCNSgjL3
JecbXaNDtEISvvvRpwCYucp6/XqPZZQWgMTHeoci2ZExYPoMv+gVAxan6oTiKm+G
Jcdqipi6Io4VmyOsKWyQDMA2
-----END PRIVATE KEY-----
";

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

        /// An intermediate CA signed by `self`.
        fn intermediate(&self, name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Self {
                issuer: Issuer::new(params, key),
                der: cert.der().clone(),
                pem: cert.pem(),
            }
        }

        /// A `localhost`/`127.0.0.1` server certificate (PEM) for `key`.
        fn server_cert(&self, key: &impl PublicKeyData) -> String {
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.signed_by(key, &self.issuer).unwrap().pem()
        }
    }

    /// A server certificate and its PKCS#8 key, both PEM.
    struct Pair {
        cert: String,
        key: String,
    }

    impl Pair {
        fn issued_by(ca: &TestCa) -> Self {
            let key = KeyPair::generate().unwrap();
            Self {
                cert: ca.server_cert(&key),
                key: key.serialize_pem(),
            }
        }

        fn leaf_der(&self) -> CertificateDer<'static> {
            CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap()
        }

        fn write(&self, cert_path: &Path, key_path: &Path) {
            std::fs::write(cert_path, &self.cert).unwrap();
            std::fs::write(key_path, &self.key).unwrap();
        }
    }

    /// A temp dir with `tls.crt`/`tls.key` holding `pair`.
    struct Files {
        dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    impl Files {
        fn with(pair: &Pair) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let cert = dir.path().join("tls.crt");
            let key = dir.path().join("tls.key");
            pair.write(&cert, &key);
            Self { dir, cert, key }
        }

        fn load(&self) -> Result<Arc<ReloadingCert>, TlsError> {
            ReloadingCert::load(&self.cert, &self.key)
        }
    }

    fn client(ca: &TestCa) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        // Every connection does a full handshake, so it shows the
        // certificate served now (a resumed session reports the old one).
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }

    /// Serves an echo over TLS with `cert` until the test ends.
    async fn serve(cert: &Arc<ReloadingCert>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(cert.server_config());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = accept(&acceptor, stream, DEADLINE).await else {
                        return;
                    };
                    let (mut rd, mut wr) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        addr
    }

    async fn connect(
        connector: &TlsConnector,
        addr: SocketAddr,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
            .await
            .expect("handshake hung")
    }

    fn peer_leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    async fn assert_echoes(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) {
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
            .await
            .expect("echo hung")
            .unwrap();
        assert_eq!(&buf, b"ping");
    }

    /// Connects and returns the leaf certificate the server presented.
    async fn served_leaf(connector: &TlsConnector, addr: SocketAddr) -> CertificateDer<'static> {
        peer_leaf(&connect(connector, addr).await.unwrap())
    }

    #[tokio::test]
    async fn serves_echo_with_http1_alpn() {
        let ca = TestCa::new("test CA");
        let pair = Pair::issued_by(&ca);
        let files = Files::with(&pair);
        let addr = serve(&files.load().unwrap()).await;

        let mut stream = connect(&client(&ca), addr).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_HTTP1));
        assert_eq!(peer_leaf(&stream), pair.leaf_der());
        assert_echoes(&mut stream).await;
    }

    #[tokio::test]
    async fn client_trusting_another_ca_is_refused() {
        let ca = TestCa::new("test CA");
        let files = Files::with(&Pair::issued_by(&ca));
        let addr = serve(&files.load().unwrap()).await;

        let other = TestCa::new("other CA");
        let err = connect(&client(&other), addr).await.unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn rotation_reaches_new_connections_only() {
        let ca = TestCa::new("test CA");
        let (a, b, c) = (
            Pair::issued_by(&ca),
            Pair::issued_by(&ca),
            Pair::issued_by(&ca),
        );
        let files = Files::with(&a);
        let cert = files.load().unwrap();
        let addr = serve(&cert).await;
        let connector = client(&ca);

        let mut in_flight = connect(&connector, addr).await.unwrap();
        assert_eq!(peer_leaf(&in_flight), a.leaf_der());

        // In-place overwrite.
        b.write(&files.cert, &files.key);
        assert!(cert.reload_if_changed().unwrap());
        assert!(!cert.reload_if_changed().unwrap(), "same bytes again");
        assert_eq!(served_leaf(&connector, addr).await, b.leaf_der());
        assert_eq!(peer_leaf(&in_flight), a.leaf_der());
        assert_echoes(&mut in_flight).await;

        // Write new files elsewhere and rename them over the old ones.
        let new_cert = files.dir.path().join("tls.crt.new");
        let new_key = files.dir.path().join("tls.key.new");
        c.write(&new_cert, &new_key);
        std::fs::rename(&new_key, &files.key).unwrap();
        std::fs::rename(&new_cert, &files.cert).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(served_leaf(&connector, addr).await, c.leaf_der());
        assert_echoes(&mut in_flight).await;
    }

    /// The Kubernetes Secret volume layout: `tls.crt -> ..data/tls.crt`,
    /// `..data -> ..<timestamp>`, rotated by atomically replacing `..data`.
    #[cfg(unix)]
    #[tokio::test]
    async fn rotation_by_symlink_swap() {
        use std::os::unix::fs::symlink;

        let ca = TestCa::new("test CA");
        let (a, b) = (Pair::issued_by(&ca), Pair::issued_by(&ca));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (version, pair) in [("..v1", &a), ("..v2", &b)] {
            std::fs::create_dir(root.join(version)).unwrap();
            pair.write(
                &root.join(version).join("tls.crt"),
                &root.join(version).join("tls.key"),
            );
        }
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        symlink("..data/tls.key", root.join("tls.key")).unwrap();

        let cert = ReloadingCert::load(&root.join("tls.crt"), &root.join("tls.key")).unwrap();
        let addr = serve(&cert).await;
        let connector = client(&ca);
        assert_eq!(served_leaf(&connector, addr).await, a.leaf_der());

        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(served_leaf(&connector, addr).await, b.leaf_der());
    }

    #[tokio::test]
    async fn failed_reload_keeps_serving_previous_pair() {
        let ca = TestCa::new("test CA");
        let (a, b) = (Pair::issued_by(&ca), Pair::issued_by(&ca));
        let files = Files::with(&a);
        let cert = files.load().unwrap();
        let addr = serve(&cert).await;
        let connector = client(&ca);

        std::fs::write(&files.cert, "garbage, not PEM\n").unwrap();
        let err = cert.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert_eq!(served_leaf(&connector, addr).await, a.leaf_der());

        // Halfway through a rotation: new certificate, old key.
        std::fs::write(&files.cert, &b.cert).unwrap();
        let err = cert.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert_eq!(served_leaf(&connector, addr).await, a.leaf_der());

        // The rotation completes: the next poll picks it up.
        std::fs::write(&files.key, &b.key).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(served_leaf(&connector, addr).await, b.leaf_der());
    }

    #[tokio::test]
    async fn watch_picks_up_rotation_and_stops() {
        let ca = TestCa::new("test CA");
        let (a, b) = (Pair::issued_by(&ca), Pair::issued_by(&ca));
        let files = Files::with(&a);
        let cert = files.load().unwrap();
        let addr = serve(&cert).await;
        let connector = client(&ca);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(Arc::clone(&cert).watch(Duration::from_millis(20), async {
            let _ = stop_rx.await;
        }));

        b.write(&files.cert, &files.key);
        let started = Instant::now();
        while served_leaf(&connector, addr).await != b.leaf_der() {
            assert!(started.elapsed() < DEADLINE, "watch did not reload");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        stop_tx.send(()).unwrap();
        tokio::time::timeout(DEADLINE, watcher)
            .await
            .expect("watch did not stop")
            .unwrap();
    }

    #[tokio::test]
    async fn handshake_deadline_drops_silent_client() {
        let ca = TestCa::new("test CA");
        let files = Files::with(&Pair::issued_by(&ca));
        let acceptor = TlsAcceptor::from(files.load().unwrap().server_config());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut silent = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();

        let started = Instant::now();
        let err = accept(&acceptor, stream, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The server side closed the socket: the client sees EOF.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
            .await
            .expect("socket still open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn supports_key_formats_and_chains() {
        let root = TestCa::new("root CA");
        let intermediate = root.intermediate("intermediate CA");
        let connector = client(&root);

        let ec = KeyPair::generate().unwrap();
        let rsa =
            KeyPair::from_pkcs8_pem_and_sign_algo(TEST_RSA_PKCS8, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cases = [
            ("PKCS#8 EC", root.server_cert(&ec), ec.serialize_pem()),
            (
                "SEC1 EC",
                root.server_cert(&ec),
                to_pem("EC PRIVATE KEY", &pkcs8_inner_key(ec.serialized_der())),
            ),
            (
                "PKCS#1 RSA",
                root.server_cert(&rsa),
                to_pem("RSA PRIVATE KEY", &pkcs8_inner_key(rsa.serialized_der())),
            ),
            (
                "chain",
                intermediate.server_cert(&ec) + &intermediate.pem,
                ec.serialize_pem(),
            ),
        ];
        for (name, cert, key) in cases {
            let files = Files::with(&Pair { cert, key });
            let cert = files.load().unwrap_or_else(|e| panic!("{name}: {e}"));
            let addr = serve(&cert).await;
            let mut stream = connect(&connector, addr)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_echoes(&mut stream).await;
        }
    }

    #[test]
    fn load_errors_name_the_file_and_problem() {
        let ca = TestCa::new("test CA");
        let (a, b) = (Pair::issued_by(&ca), Pair::issued_by(&ca));
        let files = Files::with(&a);
        let message = |r: Result<Arc<ReloadingCert>, TlsError>| r.unwrap_err().to_string();
        let cert = files.cert.display().to_string();
        let key = files.key.display().to_string();

        let missing = files.dir.path().join("missing.crt");
        let msg = message(ReloadingCert::load(&missing, &files.key));
        assert!(
            msg.starts_with(&format!("cannot read {}", missing.display())),
            "{msg}"
        );

        std::fs::write(&files.cert, "").unwrap();
        assert_eq!(
            message(files.load()),
            format!("no certificate found in {cert}")
        );

        std::fs::write(&files.cert, &a.cert).unwrap();
        std::fs::write(&files.key, &a.cert).unwrap();
        assert_eq!(
            message(files.load()),
            format!("no private key found in {key}")
        );

        let truncated = &a.key[..a.key.len() / 2];
        std::fs::write(&files.key, truncated).unwrap();
        let msg = message(files.load());
        assert!(msg.starts_with(&format!("malformed PEM in {key}")), "{msg}");
        let body_line = a.key.lines().nth(1).unwrap();
        assert!(!msg.contains(body_line), "key material in error: {msg}");

        std::fs::write(&files.key, &b.key).unwrap();
        assert_eq!(
            message(files.load()),
            format!("private key does not match certificate (key {key}, certificate {cert})")
        );

        std::fs::write(&files.key, &a.key).unwrap();
        std::fs::write(
            &files.cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let msg = message(files.load());
        assert!(
            msg.starts_with(&format!("invalid certificate in {cert}")),
            "{msg}"
        );
    }

    // --- test-only key encoding helpers ---

    /// The private key inside a PKCS#8 `PrivateKeyInfo`: PKCS#1 for RSA,
    /// SEC1 for EC.
    fn pkcs8_inner_key(pkcs8: &[u8]) -> Vec<u8> {
        let (_, info, _) = der_tlv(pkcs8);
        let (_, _, rest) = der_tlv(info); // version
        let (_, _, rest) = der_tlv(rest); // algorithm
        let (tag, key, _) = der_tlv(rest);
        assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
        key.to_vec()
    }

    /// Splits the first DER element off `der`: (tag, contents, rest).
    fn der_tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match der[1] {
            short @ 0..=0x7f => (usize::from(short), 2),
            long => {
                let n = usize::from(long & 0x7f);
                let len = der[2..2 + n]
                    .iter()
                    .fold(0, |acc, &b| (acc << 8) | usize::from(b));
                (len, 2 + n)
            }
        };
        let (contents, rest) = der[header..].split_at(len);
        (der[0], contents, rest)
    }

    fn to_pem(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let mut pem = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str(&format!("-----END {label}-----\n"));
        pem
    }
}
