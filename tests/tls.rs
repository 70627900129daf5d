//! TLS end to end, with a CA generated inside the test: the public listener
//! over TLS, a certificate swapped on disk and picked up without restart, an
//! HTTPS upstream trusted through `upstream.tls.ca_file`, a wrong CA
//! refused, and HTTP/2 to upstreams chosen by ALPN (`upstream.protocol`).

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "tls-test-secret-0123456789abcdef";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and its key, both PEM.
    fn leaf(&self, cn: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

fn tls_options(ca_file: &str) -> hookgate::delivery::tls::ClientTlsOptions {
    hookgate::delivery::tls::ClientTlsOptions {
        ca_file: Some(ca_file.into()),
        webpki_roots: false,
        ..Default::default()
    }
}

/// The leaf certificate the server at `addr` presents, trusting `ca_file`.
async fn presented_cert(
    addr: std::net::SocketAddr,
    ca_file: &str,
) -> Result<CertificateDer<'static>, std::io::Error> {
    let mut cfg = hookgate::delivery::tls::client_config(&tls_options(ca_file)).unwrap();
    // Full handshakes only: a resumed session would show the old certificate.
    cfg.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// POSTs over HTTPS, trusting `ca_file`.
async fn https_post(
    url: &str,
    ca_file: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, Bytes) {
    let tls = hookgate::delivery::tls::client_config(&tls_options(ca_file)).unwrap();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let mut b = http::Request::post(url);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let r = client
        .request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn public_listener_serves_tls_and_picks_up_a_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("hookgate test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let (cert_a, key_a) = ca.leaf("cert-a");
    let cert_path = write(dir.path(), "tls.crt", &cert_a);
    let key_path = write(dir.path(), "tls.key", &key_a);
    let up = Upstream::start().await;
    let hg = Hookgate::start(&format!(
        r#"
[server.tls]
cert = "{cert_path}"
key = "{key_path}"
reload_interval = "50ms"
[[routes]]
path = "/hooks/github"
scheme = "github"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "{up}"
"#,
        up = up.url("/gh")
    ))
    .await;

    // A signed request over TLS reaches the upstream.
    let body = br#"{"zen":"Keep it logically awesome."}"#.to_vec();
    let headers = sign("github", SECRET, &body, Some("delivery-1"), now());
    let url = format!("https://127.0.0.1:{}/hooks/github", hg.public.port());
    let (status, _) = https_post(&url, &ca_file, &headers, body.clone()).await;
    assert_eq!(status, 200);
    let got = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].headers["x-forwarded-proto"], "https");
    assert_eq!(
        presented_cert(hg.public, &ca_file).await.unwrap(),
        der_of(&cert_a)
    );

    // Plain HTTP on the TLS port does not get through.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        common::client().request(
            http::Request::post(format!("http://{}/hooks/github", hg.public))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("plain HTTP is answered or cut off, not left hanging");
    assert!(plain.is_err());

    // A client trusting another CA is refused.
    let other = Ca::new("some other CA");
    let other_file = write(dir.path(), "other.pem", &other.pem);
    assert!(presented_cert(hg.public, &other_file).await.is_err());

    // Rotate the files as cert-manager does (write new files, rename over).
    let (cert_b, key_b) = ca.leaf("cert-b");
    write(dir.path(), "tls.crt.new", &cert_b);
    write(dir.path(), "tls.key.new", &key_b);
    std::fs::rename(dir.path().join("tls.key.new"), &key_path).unwrap();
    std::fs::rename(dir.path().join("tls.crt.new"), &cert_path).unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if presented_cert(hg.public, &ca_file).await.unwrap() == der_of(&cert_b) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    hg.stop().await;
}

/// An HTTPS upstream with a certificate from `ca`, answering 200 and
/// counting requests.
async fn https_upstream(
    dir: &Path,
    ca: &Ca,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let (cert, key) = ca.leaf("upstream");
    let cert_path = write(dir, "up.crt", &cert);
    let key_path = write(dir, "up.key", &key);
    let reloading =
        hookgate::server::tls::ReloadingCert::load(cert_path.as_ref(), key_path.as_ref()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(reloading.server_config());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |_req| {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"secure ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn https_upstream_is_trusted_through_the_ca_file_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let (addr, hits) = https_upstream(dir.path(), &ca).await;
    let good_ca = write(dir.path(), "good-ca.pem", &ca.pem);
    let bad_ca = write(dir.path(), "bad-ca.pem", &Ca::new("wrong CA").pem);
    let hg = Hookgate::start(&format!(
        r#"
[[routes]]
path = "/good"
scheme = "github"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "https://127.0.0.1:{port}/in"
tls = {{ ca_file = "{good_ca}", webpki_roots = false }}

[[routes]]
path = "/bad"
scheme = "github"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "https://127.0.0.1:{port}/in"
tls = {{ ca_file = "{bad_ca}", webpki_roots = false }}

[[routes]]
path = "/default-roots"
scheme = "github"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "https://127.0.0.1:{port}/in"
"#,
        port = addr.port()
    ))
    .await;
    let body = b"{}".to_vec();
    let headers = sign("github", SECRET, &body, Some("d1"), now());
    let a = post(&hg.url("/good"), &headers, body.clone()).await;
    assert_eq!((a.status, &a.body[..]), (200, &b"secure ok"[..]));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    let a = post(&hg.url("/bad"), &headers, body.clone()).await;
    assert_eq!((a.status, a.code().as_str()), (502, "upstream_unreachable"));
    // The Mozilla roots do not include a test CA either.
    let a = post(&hg.url("/default-roots"), &headers, body).await;
    assert_eq!((a.status, a.code().as_str()), (502, "upstream_unreachable"));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    hg.stop().await;
}

/// A TLS acceptor with a certificate for 127.0.0.1 from `ca`, whose ALPN
/// accepts `alpn` (none: the server ignores ALPN).
fn acceptor(dir: &Path, name: &str, ca: &Ca, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = ca.leaf(name);
    let cert_path = write(dir, &format!("{name}.crt"), &cert);
    let key_path = write(dir, &format!("{name}.key"), &key);
    let reloading =
        hookgate::server::tls::ReloadingCert::load(cert_path.as_ref(), key_path.as_ref()).unwrap();
    let mut cfg = (*reloading.server_config()).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[tokio::test]
async fn alpn_chooses_http2_to_an_https_upstream_that_offers_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let speaks = |name, alpn: &[&[u8]]| Speaks::Tls(acceptor(dir.path(), name, &ca, alpn));
    let both = Upstream::start_speaking(speaks("both", &[b"h2", b"http/1.1"])).await;
    let h1 = Upstream::start_speaking(speaks("h1", &[b"http/1.1"])).await;
    let no_alpn = Upstream::start_speaking(speaks("none", &[])).await;
    let route = |path: &str, up: &Upstream, protocol: &str| {
        format!(
            r#"
[[routes]]
path = "{path}"
scheme = "github"
secrets = [{{ value = "{SECRET}" }}]
mode = "passthrough"
[routes.upstream]
url = "https://127.0.0.1:{port}{path}"
tls = {{ ca_file = "{ca_file}", webpki_roots = false }}
protocol = "{protocol}"
"#,
            port = up.addr.port()
        )
    };
    let hg = Hookgate::start(
        &[
            route("/auto-both", &both, "auto"),
            route("/auto-h1", &h1, "auto"),
            route("/h2-both", &both, "http2"),
            route("/h2-h1", &h1, "http2"),
            route("/h2-no-alpn", &no_alpn, "http2"),
            route("/h1-both", &both, "http1"),
        ]
        .concat(),
    )
    .await;
    let body = b"{}".to_vec();
    let headers = sign("github", SECRET, &body, Some("d1"), now());
    for path in ["/auto-both", "/auto-h1", "/h2-both", "/h1-both"] {
        let a = post(&hg.url(path), &headers, body.clone()).await;
        assert_eq!(
            (path, a.status, &a.body[..]),
            (path, 200, &b"upstream ok"[..])
        );
    }
    let version_of = |up: &Upstream, path: &str| {
        let got = up.received();
        let r = got.iter().find(|r| r.uri.ends_with(path)).unwrap();
        r.version
    };
    assert_eq!(version_of(&both, "/auto-both"), http::Version::HTTP_2);
    assert_eq!(version_of(&both, "/h2-both"), http::Version::HTTP_2);
    // HTTP/1.1 alone offers no ALPN: the upstream answers in HTTP/1.1.
    assert_eq!(version_of(&both, "/h1-both"), http::Version::HTTP_11);
    // `auto` takes what the upstream selects.
    assert_eq!(version_of(&h1, "/auto-h1"), http::Version::HTTP_11);
    // `http2` insists: refused by ALPN, or not selected at all.
    for path in ["/h2-h1", "/h2-no-alpn"] {
        let a = post(&hg.url(path), &headers, body.clone()).await;
        assert_eq!(
            (path, a.status, a.code().as_str()),
            (path, 502, "upstream_unreachable")
        );
    }
    assert_eq!(h1.received().len(), 1);
    assert!(no_alpn.received().is_empty());
    hg.stop().await;
}

#[test]
fn bad_tls_files_are_config_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.pem", "not a certificate");
    let e = hookgate::config::from_toml(&format!(
        "[server.tls]\ncert = \"{garbage}\"\nkey = \"{garbage}\"\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("server.tls: "), "{e}");
    let e = hookgate::config::from_toml(&format!(
        r#"
[[routes]]
path = "/x"
scheme = "github"
secrets = [{{ value = "s" }}]
[routes.upstream]
url = "https://127.0.0.1:1/"
tls = {{ ca_file = "{garbage}", webpki_roots = false }}
"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains("routes[0].upstream.tls: "), "{e}");
}
