//! The SSRF guard of the sender's outbound HTTP client.
//!
//! Webhook destinations are user-supplied URLs, so a request must not reach
//! an internal address. The guard judges the address actually connected to,
//! after DNS, so a name that resolves (or re-resolves, DNS rebinding) to an
//! internal address cannot slip past:
//!
//! * [`GuardedResolver`] resolves names like hyper-util's `GaiResolver` and
//!   drops every denied address before the connector sees it; when none
//!   remain the lookup fails with [`Denied`], so no connection is attempted.
//! * [`GuardedConnector`] wraps hyper-util's `HttpConnector` over that
//!   resolver. It refuses a denied IP-literal host before connecting (the
//!   connector skips the resolver for literals) and checks the connected
//!   socket's `peer_addr()`, dropping the stream when it is denied.
//!
//! Refused: loopback, private, link-local, CGNAT, multicast, unspecified,
//! broadcast, reserved, documentation and benchmarking ranges, IPv6
//! unique-local and site-local, cloud metadata (`169.254.169.254`,
//! `fd00:ec2::254`), and the IPv4-mapped, IPv4-compatible, NAT64, 6to4 and
//! Teredo forms of denied IPv4 addresses, unless allow-listed by CIDR
//! (`sender.allow_cidrs`). A guard that is off ([`Guard::off`]) checks
//! nothing and costs a branch per connection.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiFuture, GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::config::Cidr;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A connection the guard refused. The message names the address and its
/// class only (no URL, no request content), so it is safe to store and log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the SSRF guard: {ip} is not a public address ({reason}); allow it with sender.allow_cidrs")]
pub struct Denied {
    /// The refused address, as connected to or resolved.
    pub ip: IpAddr,
    /// Its class, as [`denied_reason`] names it.
    pub reason: &'static str,
}

/// The guard's [`Denied`] in an error or its sources, if there is one.
pub fn find_denied<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a Denied> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<Denied>() {
            return Some(d);
        }
        // `io::Error::source` skips the error it wraps.
        if let Some(d) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Denied>())
        {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

/// The IPv4 networks refused, most specific first: (network, prefix, class).
const V4_DENIED: &[([u8; 4], u8, &str)] = &[
    ([169, 254, 169, 254], 32, "metadata"),
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "unspecified"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "cgnat"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "reserved"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// The IPv6 networks refused, most specific first (embedded IPv4 forms are
/// judged before, and everything outside `2000::/3` after).
const V6_DENIED: &[(u128, u8, &str)] = &[
    (0xfd00_0ec2_0000_0000_0000_0000_0000_0254, 128, "metadata"),
    (0xff00 << 112, 8, "multicast"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local"),
    (0xfc00 << 112, 7, "unique-local"),
    (0x0100 << 112, 64, "discard"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x3fff << 112, 20, "documentation"),
    (0x2001_0002 << 96, 48, "benchmarking"),
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    V4_DENIED
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, not `::` or `::1`),
/// NAT64 (`64:ff9b::/96`, and `64:ff9b:1::/48` in its `/96` layout), 6to4
/// (`2002:AABB:CCDD::/48`) and Teredo (`2001::/32`, the client address).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(low))),
        _ => None,
    }
}

/// The class of an address the guard refuses (`"loopback"`, `"private"`,
/// `"link-local"`, `"cgnat"`, `"multicast"`, `"unspecified"`, `"metadata"`,
/// `"broadcast"`, `"reserved"`, `"documentation"`, `"benchmarking"`,
/// `"unique-local"`, `"site-local"`, `"discard"`); `None` for public unicast.
/// An IPv6 form embedding an IPv4 address is judged by that address; IPv6
/// outside `2000::/3` (global unicast) is `"reserved"` unless named above.
pub fn denied_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return v4_reason(v4);
            }
            if let Some((_, _, reason)) = V6_DENIED
                .iter()
                .find(|(net, prefix, _)| in_v6(v6, *net, *prefix))
            {
                return Some(reason);
            }
            if !in_v6(v6, 0x2000 << 112, 3) {
                return Some("reserved");
            }
            None
        }
    }
}

/// Which addresses outbound requests may reach.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Vec<Cidr>,
    /// Off: every address is allowed, nothing is checked.
    pub enabled: bool,
}

impl Guard {
    /// A guard refusing every non-public address not in `allow_cidrs`.
    pub fn new(allow_cidrs: Vec<Cidr>) -> Guard {
        Guard {
            allow: allow_cidrs,
            enabled: true,
        }
    }

    /// No guard: every address is allowed.
    pub fn off() -> Guard {
        Guard::default()
    }

    /// Whether `ip` may be connected to. An allow-listed network wins, also
    /// for the IPv6 forms embedding an IPv4 address (the CIDR is matched
    /// against both).
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        let Some(reason) = denied_reason(ip) else {
            return Ok(());
        };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self
            .allow
            .iter()
            .any(|c| c.contains(ip) || embedded.is_some_and(|v4| c.contains(v4)));
        if allowed {
            Ok(())
        } else {
            Err(Denied { ip, reason })
        }
    }
}

/// A DNS resolver (hyper-util's `getaddrinfo` one) that drops the addresses
/// the guard refuses, failing with [`Denied`] when none remain.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    gai: GaiResolver,
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver {
            gai: GaiResolver::new(),
            guard,
        }
    }
}

impl Service<Name> for GuardedResolver {
    type Response = ResolvedAddrs;
    type Error = BoxError;
    type Future = GuardedResolving;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.gai.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> GuardedResolving {
        GuardedResolving {
            fut: self.gai.call(name),
            guard: self.guard.enabled.then(|| self.guard.clone()),
        }
    }
}

/// The addresses a [`GuardedResolver`] found.
#[derive(Debug)]
pub enum ResolvedAddrs {
    /// Guard off: all of them.
    All(GaiAddrs),
    /// Guard on: those it allows.
    Allowed(std::vec::IntoIter<SocketAddr>),
}

impl Iterator for ResolvedAddrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            ResolvedAddrs::All(a) => a.next(),
            ResolvedAddrs::Allowed(a) => a.next(),
        }
    }
}

/// The lookup of a [`GuardedResolver`].
pub struct GuardedResolving {
    fut: GaiFuture,
    guard: Option<Arc<Guard>>,
}

impl std::fmt::Debug for GuardedResolving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("GuardedResolving")
    }
}

impl Future for GuardedResolving {
    type Output = Result<ResolvedAddrs, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let addrs = ready!(Pin::new(&mut this.fut).poll(cx))?;
        let Some(guard) = &this.guard else {
            return Poll::Ready(Ok(ResolvedAddrs::All(addrs)));
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .filter(|a| match guard.check(a.ip()) {
                Ok(()) => true,
                Err(d) => {
                    tracing::debug!(error = %d, "resolved address dropped");
                    refused.get_or_insert(d);
                    false
                }
            })
            .collect();
        match refused {
            Some(d) if allowed.is_empty() => Poll::Ready(Err(Box::new(d))),
            _ => Poll::Ready(Ok(ResolvedAddrs::Allowed(allowed.into_iter()))),
        }
    }
}

/// hyper-util's `HttpConnector` over a [`GuardedResolver`], refusing a
/// denied IP-literal host before connecting and a denied peer address after.
#[derive(Clone, Debug)]
pub struct GuardedConnector {
    http: HttpConnector<GuardedResolver>,
    guard: Arc<Guard>,
}

impl GuardedConnector {
    pub fn new(guard: Guard) -> GuardedConnector {
        let guard = Arc::new(guard);
        GuardedConnector::from_parts(GuardedResolver::new(guard.clone()), guard)
    }

    fn from_parts(resolver: GuardedResolver, guard: Arc<Guard>) -> GuardedConnector {
        GuardedConnector {
            http: HttpConnector::new_with_resolver(resolver),
            guard,
        }
    }

    /// The wrapped connector, to configure (timeouts, `TCP_NODELAY`, ...).
    pub fn http_mut(&mut self) -> &mut HttpConnector<GuardedResolver> {
        &mut self.http
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

/// The IP address a URI's host is written as, if it is one.
fn literal_ip(uri: &Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

type HttpConnecting = <HttpConnector<GuardedResolver> as Service<Uri>>::Future;

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = GuardedConnecting<HttpConnecting>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if !self.guard.enabled {
            return GuardedConnecting(State::Connecting {
                fut: self.http.call(dst),
                guard: None,
            });
        }
        if let Some(Err(d)) = literal_ip(&dst).map(|ip| self.guard.check(ip)) {
            return GuardedConnecting(State::Refused(Some(d)));
        }
        GuardedConnecting(State::Connecting {
            fut: self.http.call(dst),
            guard: Some(self.guard.clone()),
        })
    }
}

/// A connection by a [`GuardedConnector`].
pub struct GuardedConnecting<F>(State<F>);

enum State<F> {
    Connecting { fut: F, guard: Option<Arc<Guard>> },
    Refused(Option<Denied>),
}

impl<F> std::fmt::Debug for GuardedConnecting<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("GuardedConnecting")
    }
}

impl<F, E> Future for GuardedConnecting<F>
where
    F: Future<Output = Result<TokioIo<TcpStream>, E>> + Unpin,
    E: Into<BoxError>,
{
    type Output = Result<TokioIo<TcpStream>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Refused(d) => {
                let d = d.take().expect("GuardedConnecting polled after completion");
                Poll::Ready(Err(Box::new(d)))
            }
            State::Connecting { fut, guard } => {
                let io = ready!(Pin::new(fut).poll(cx)).map_err(Into::into)?;
                if let Some(guard) = guard {
                    // Fails closed: a peer address that cannot be read is refused too.
                    let peer = io.inner().peer_addr()?;
                    // The stream is dropped (closed) before a byte is written.
                    guard.check(peer.ip())?;
                }
                Poll::Ready(Ok(io))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::delivery::client::{HttpClient, SendError};
    use crate::delivery::tls::ClientTlsOptions;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        let table: &[(&str, Option<&str>)] = &[
            // IPv4
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("10.0.0.5", Some("private")),
            ("10.255.255.255", Some("private")),
            ("100.64.0.1", Some("cgnat")),
            ("100.127.255.254", Some("cgnat")),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("169.254.169.254", Some("metadata")),
            ("169.254.0.1", Some("link-local")),
            ("169.254.170.2", Some("link-local")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.0.8", Some("reserved")),
            ("192.0.2.1", Some("documentation")),
            ("192.168.1.1", Some("private")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.20.0.1", None),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.254", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.215.14", None),
            // IPv6
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("febf:ffff::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fd00:ec2::254", Some("metadata")),
            ("fd00:ec2::253", Some("unique-local")),
            ("ff02::1", Some("multicast")),
            ("ff05::1:3", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("2001:2::1", Some("benchmarking")),
            ("100::1", Some("discard")),
            ("100:0:0:1::1", Some("reserved")),
            ("4000::1", Some("reserved")),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2a00:1450:4001::1", None),
            // IPv4-mapped
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:169.254.169.254", Some("metadata")),
            ("::ffff:0.0.0.0", Some("unspecified")),
            ("::ffff:8.8.8.8", None),
            // IPv4-compatible
            ("::127.0.0.1", Some("loopback")),
            ("::192.168.0.1", Some("private")),
            ("::0.0.0.2", Some("unspecified")),
            ("::8.8.8.8", None),
            // NAT64
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::169.254.169.254", Some("metadata")),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::100.64.0.1", Some("cgnat")),
            ("64:ff9b:1::8.8.8.8", None),
            ("64:ff9b:1:7f00:1::", Some("reserved")),
            ("64:ff9b:0:0:1::", Some("reserved")),
            // 6to4
            ("2002:7f00:1::1", Some("loopback")),
            ("2002:a9fe:a9fe::1", Some("metadata")),
            ("2002:c0a8:101::1", Some("private")),
            ("2002:808:808::1", None),
            // Teredo (client address inverted in the low 32 bits)
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some("loopback")),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
        ];
        for (addr, want) in table {
            assert_eq!(denied_reason(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn guard_allow_list_wins() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(g.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(g.check(ip("::ffff:127.0.0.1")), Ok(()), "mapped");
        assert_eq!(g.check(ip("64:ff9b::127.0.0.1")), Ok(()), "NAT64");
        assert_eq!(g.check(ip("2002:7f00:1::1")), Ok(()), "6to4");
        assert_eq!(g.check(ip("::1")).unwrap_err().reason, "loopback");
        let d = g.check(ip("10.0.0.1")).unwrap_err();
        assert_eq!(
            d,
            Denied {
                ip: ip("10.0.0.1"),
                reason: "private"
            }
        );
        assert_eq!(
            d.to_string(),
            "refused by the SSRF guard: 10.0.0.1 is not a public address (private); \
             allow it with sender.allow_cidrs"
        );
        assert_eq!(g.check(ip("8.8.8.8")), Ok(()));

        // The raw IPv6 network counts too.
        let g = Guard::new(vec!["fd00::/8".parse().unwrap()]);
        assert_eq!(g.check(ip("fd12::1")), Ok(()));
        assert!(g.check(ip("fc00::1")).is_err());
        // ::1 is not "0.0.0.1".
        let g = Guard::new(vec!["0.0.0.0/0".parse().unwrap()]);
        assert!(g.check(ip("::1")).is_err());
        assert!(g.check(ip("::")).is_err());

        let none = Guard::new(Vec::new());
        assert!(none.enabled);
        assert!(none.check(ip("169.254.169.254")).is_err());
        let off = Guard::off();
        assert!(!off.enabled);
        assert_eq!(off.check(ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn denied_is_found_in_error_chains() {
        let d = Denied {
            ip: ip("127.0.0.1"),
            reason: "loopback",
        };
        let boxed: BoxError = Box::new(d.clone());
        assert_eq!(find_denied(&*boxed), Some(&d));
        let io = std::io::Error::other(d.clone());
        assert_eq!(find_denied(&io), Some(&d));
        assert_eq!(find_denied(&std::io::Error::other("x")), None);
    }

    /// A listener answering `200`: (connections accepted, connections that
    /// sent bytes).
    async fn listener() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let with_data = Arc::new(AtomicUsize::new(0));
        let (a, w) = (accepted.clone(), with_data.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let w = w.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    if let Ok(n) = s.read(&mut buf).await {
                        if n > 0 {
                            w.fetch_add(1, Ordering::SeqCst);
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                                )
                                .await;
                        }
                    }
                });
            }
        });
        (port, accepted, with_data)
    }

    fn get(url: &str) -> http::Request<Full<Bytes>> {
        http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    fn refused(
        r: Result<http::Response<crate::delivery::client::ResponseBody>, SendError>,
    ) -> String {
        match r {
            Err(e @ SendError::Refused(_)) => e.to_string(),
            Err(e) => panic!("not a refusal: {e:?}"),
            Ok(r) => panic!("not refused: {}", r.status()),
        }
    }

    #[tokio::test]
    async fn guarded_client_refuses_internal_addresses() {
        let (port, accepted, with_data) = listener().await;
        let t = Duration::from_secs(5);
        let opts = ClientTlsOptions::default();
        let guarded = HttpClient::guarded(&opts, Guard::new(Vec::new())).unwrap();

        // (i) an IP literal: refused before connecting.
        let e = refused(
            guarded
                .send(get(&format!("http://127.0.0.1:{port}/")), t)
                .await,
        );
        assert!(
            e.contains("127.0.0.1 is not a public address (loopback)"),
            "{e}"
        );
        assert!(e.contains("SSRF guard"), "{e}");
        // (ii) a name: the resolver drops its addresses, nothing is connected.
        let e = refused(
            guarded
                .send(get(&format!("http://localhost:{port}/")), t)
                .await,
        );
        assert!(e.contains("(loopback)"), "{e}");
        // (iv) an IPv4-mapped literal.
        let e = refused(
            guarded
                .send(get(&format!("http://[::ffff:127.0.0.1]:{port}/")), t)
                .await,
        );
        assert!(e.contains("::ffff:127.0.0.1"), "{e}");
        // https goes through the same connector.
        refused(
            guarded
                .send(get(&format!("https://127.0.0.1:{port}/")), t)
                .await,
        );
        refused(
            guarded
                .send(get("http://169.254.169.254/latest/meta-data/"), t)
                .await,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "no connection attempted"
        );
        assert_eq!(with_data.load(Ordering::SeqCst), 0);

        // (iii) allow-listed.
        let allowed =
            HttpClient::guarded(&opts, Guard::new(vec!["127.0.0.0/8".parse().unwrap()])).unwrap();
        let r = allowed
            .send(get(&format!("http://127.0.0.1:{port}/")), t)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = allowed
            .send(get(&format!("http://localhost:{port}/")), t)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        // The existing constructors check nothing.
        let r = HttpClient::new()
            .send(get(&format!("http://127.0.0.1:{port}/")), t)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(with_data.load(Ordering::SeqCst), 3);
    }

    /// The peer-address check alone (a resolver that lets everything
    /// through): the connection is dropped before a byte is sent.
    #[tokio::test]
    async fn connector_checks_the_peer_address() {
        let (port, accepted, with_data) = listener().await;
        let guard = Arc::new(Guard::new(Vec::new()));
        let mut c =
            GuardedConnector::from_parts(GuardedResolver::new(Arc::new(Guard::off())), guard);
        let uri: Uri = format!("http://localhost:{port}/").parse().unwrap();
        std::future::poll_fn(|cx| c.poll_ready(cx)).await.unwrap();
        let e = c.call(uri).await.unwrap_err();
        let d = find_denied(&*e).expect("a Denied");
        assert_eq!(d.reason, "loopback");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "connected, then dropped"
        );
        assert_eq!(with_data.load(Ordering::SeqCst), 0, "no request bytes");
    }
}
