//! The outbound HTTP client: hyper-util's pooled client over rustls
//! (webpki roots and/or a CA bundle, optional client certificate), HTTP/1.1, redirects never followed (hyper does not
//! follow them; a 3xx is just an answer).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

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
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the Mozilla roots, without a client certificate.
    pub fn new() -> Self {
        Self::with_tls(&ClientTlsOptions::default()).expect("the default TLS options are valid")
    }

    /// A client with the given trust and client identity.
    pub fn with_tls(opts: &ClientTlsOptions) -> Result<Self, TlsError> {
        let tls = client_config(opts)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(HttpClient { inner })
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
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect),
            Ok(Err(e)) => Err(SendError::Other(error_chain(&e))),
        }
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
