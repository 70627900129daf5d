//! The outbound HTTP client: hyper-util's pooled client over rustls
//! (webpki roots and/or a CA bundle, optional client certificate), HTTP/1.1, redirects never followed (hyper does not
//! follow them; a 3xx is just an answer).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::delivery::ssrf::{self, Guard, GuardedConnector};
use crate::delivery::tls::{client_config, ClientTlsOptions, TlsError};

/// Why a request did not produce a response.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError {
    #[error("connection failed")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Other(String),
    /// The SSRF guard refused the address (permanent: retrying reaches the
    /// same address).
    #[error("{0}")]
    Refused(crate::delivery::ssrf::Denied),
}

#[derive(Clone)]
pub struct HttpClient {
    /// Over the SSRF guard's connector; the guard is off (no checks) but
    /// for [`HttpClient::guarded`].
    inner: Client<hyper_rustls::HttpsConnector<GuardedConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the Mozilla roots, without a client certificate.
    pub fn new() -> Self {
        Self::with_tls(&ClientTlsOptions::default()).expect("the default TLS options are valid")
    }

    /// A client with the given trust and client identity.
    pub fn with_tls(opts: &ClientTlsOptions) -> Result<Self, TlsError> {
        Self::guarded(opts, Guard::off())
    }

    /// Sends `req`, waiting at most `timeout` for the response head.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(timeout, self.inner.request(req)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => match ssrf::find_denied(&e) {
                Some(denied) => Err(SendError::Refused(denied.clone())),
                None if e.is_connect() => Err(SendError::Connect),
                None => Err(SendError::Other(error_chain(&e))),
            },
        }
    }

    /// A client like [`HttpClient::with_tls`] whose connections go through
    /// the SSRF `guard`: a refused address is never connected to (or, found
    /// only once connected, dropped before a byte is sent), and `send` fails
    /// with [`SendError::Refused`].
    pub fn guarded(opts: &ClientTlsOptions, guard: Guard) -> Result<HttpClient, TlsError> {
        let tls = client_config(opts)?;
        let mut connector = GuardedConnector::new(guard);
        let http = connector.http_mut();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(HttpClient { inner })
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An error and its sources on one line (no request content is included).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
