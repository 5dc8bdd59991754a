//! Calls to addresses a clinic supplies (its OpenAI-compatible endpoint) go through one guarded
//! client ([`Http::guarded`]), so a clinic cannot make the server reach into the network it
//! runs in:
//!
//! - an address is parsed once ([`parse`]) and the call goes to that parse's own text
//!   ([`uri`]), so the host that is checked is the host that is called
//!   (`http://10.0.0.1\@example.com` is a call to 10.0.0.1, and is refused as one);
//! - a host name is resolved by the client's own resolver ([`Resolver`]), which drops every
//!   internal address: the connection goes to an address that was checked, with no second
//!   lookup a rebinding name could answer differently;
//! - a host given as an IP address, which no resolver sees, is checked before every call
//!   ([`check_host`]);
//! - redirects are never followed.
//!
//! Self-hosted installs that run a model server next to Tessera set
//! `TESSERA_ALLOW_PRIVATE_ENDPOINTS=true`, which turns the address checks off (redirects are
//! still not followed).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

/// Why an endpoint was refused, worded for the admin who set it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It points at a private, loopback or otherwise internal address.
    #[error("The OpenAI-compatible endpoint points at a private or local address, which this installation does not allow.")]
    Private,
    /// Its host name does not resolve.
    #[error("The OpenAI-compatible endpoint's host {0:?} could not be found.")]
    Unresolvable(String),
    /// It is not an `http` or `https` address of a host (or it carries a user name).
    #[error("Enter the endpoint's base URL, like https://models.example.com/v1.")]
    Malformed,
}

/// Parses an endpoint the way the HTTP client will: `http` or `https`, a host, no user name or
/// password, no query or fragment.
pub fn parse(raw: &str) -> Result<Url, Refused> {
    let url = Url::parse(raw.trim()).map_err(|_| Refused::Malformed)?;
    let web = matches!(url.scheme(), "http" | "https");
    if !web
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(Refused::Malformed);
    }
    Ok(url)
}

/// Checks an endpoint before it is saved: every address its host resolves to must be public.
/// The same rule holds at every call ([`client`], [`check_host`]); this one only gives the
/// admin the answer at once.
pub async fn check_endpoint(raw: &str) -> Result<(), Refused> {
    let url = parse(raw)?;
    check_host(&url)?;
    if let Some(url::Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| Refused::Unresolvable(name.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(Refused::Unresolvable(name.to_string()));
        }
        if addrs.iter().any(|a| is_internal(a.ip())) {
            return Err(Refused::Private);
        }
    }
    Ok(())
}

/// Refuses a URL whose host is an internal IP address (names are left to the resolver).
pub fn check_host(url: &Url) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(Refused::Malformed),
    };
    if is_internal(ip) {
        Err(Refused::Private)
    } else {
        Ok(())
    }
}

/// The address the client calls for `url`: its own text, read as a URI. A URL whose host
/// would read differently is refused (it cannot be, for one [`parse`] accepted).
pub fn uri(url: &Url) -> Result<http::Uri, Refused> {
    let uri: http::Uri = url.as_str().parse().map_err(|_| Refused::Malformed)?;
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    let called = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    if host.is_none() || host != called {
        return Err(Refused::Malformed);
    }
    Ok(uri)
}

/// An address to call: the URI as read once ([`uri`]), and its `Host` header as the client
/// would write it (the host, and the port unless it is the scheme's), written once instead of
/// for every request.
#[derive(Clone, Debug)]
pub struct Address {
    pub uri: http::Uri,
    pub host: http::HeaderValue,
}

/// The address the client calls for `url` (see [`uri`]).
pub fn address(url: &Url) -> Result<Address, Refused> {
    let uri = uri(url)?;
    let host = uri.host().ok_or(Refused::Malformed)?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let host = match uri.port_u16().filter(|p| Some(*p) != default_port) {
        Some(port) => http::HeaderValue::from_str(&format!("{host}:{port}")),
        None => http::HeaderValue::from_str(host),
    }
    .map_err(|_| Refused::Malformed)?;
    Ok(Address { uri, host })
}

/// Resolves `host`; with `public_only`, keeps only public addresses and refuses a name with
/// none.
pub async fn resolve(host: &str, public_only: bool) -> Result<Vec<SocketAddr>, Refused> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| Refused::Unresolvable(host.to_string()))?
        .collect();
    if !public_only {
        return if found.is_empty() {
            Err(Refused::Unresolvable(host.to_string()))
        } else {
            Ok(found)
        };
    }
    let public: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| !is_internal(a.ip()))
        .collect();
    if public.is_empty() {
        return Err(if found.is_empty() {
            Refused::Unresolvable(host.to_string())
        } else {
            Refused::Private
        });
    }
    Ok(public)
}

/// The connector's resolver: [`resolve`], public addresses only unless private ones are
/// allowed.
#[derive(Clone, Copy, Debug)]
pub struct Resolver {
    public_only: bool,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, Refused>> + Send>>;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Refused;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let public_only = self.public_only;
        Box::pin(async move {
            resolve(name.as_str(), public_only)
                .await
                .map(Vec::into_iter)
        })
    }
}

/// How long a connection to a provider may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept for the next call.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A provider's answer, its body still to be read.
pub type Response = http::Response<hyper::body::Incoming>;
/// Why a call got no answer.
pub type Error = hyper_util::client::legacy::Error;

/// The HTTP client for calls to model providers: hyper's pooled HTTP/1.1 client over rustls
/// (Mozilla's roots, as the rest of the server uses), with nothing else in the way. Calls
/// carry their address as parsed once ([`http::Uri`]); redirects are never followed; the
/// connection sets `TCP_NODELAY`, so a small request or event is not held back.
///
/// [`Http::guarded`] is the one client for addresses clinics supply.
#[derive(Clone, Debug)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>,
    user_agent: http::HeaderValue,
}

impl Http {
    /// For the providers the installation configures (any address, as configured).
    pub fn installation() -> Self {
        Self::new(Resolver { public_only: false })
    }

    /// For addresses clinics supply: only public addresses, unless `allow_private` (every
    /// host name is resolved by [`Resolver`]; a host given as an IP address is checked by
    /// [`check_host`] before the call).
    pub fn guarded(allow_private: bool) -> Self {
        Self::new(Resolver {
            public_only: !allow_private,
        })
    }

    fn new(resolver: Resolver) -> Self {
        let mut connector = HttpConnector::new_with_resolver(resolver);
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports rustls's default protocol versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(https);
        Self {
            client,
            user_agent: http::HeaderValue::from_static(concat!(
                "tessera/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }

    /// Sends `req` (with the client's `User-Agent`, and `Host` from its address) and waits
    /// for the answer's head.
    pub async fn send(&self, mut req: http::Request<Full<Bytes>>) -> Result<Response, Error> {
        req.headers_mut()
            .insert(http::header::USER_AGENT, self.user_agent.clone());
        self.client.request(req).await
    }
}

/// An error and its causes, for logs (`client error (Connect): tcp connect error: ...`).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// The refusal behind a failed call, if the guard refused it.
pub fn refusal(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

/// Loopback, private, link-local, shared, reserved, documentation, multicast and every IPv6
/// form that embeds or reaches such an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (b & 0xc0) == 64) // 100.64/10, carrier-grade NAT
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (b & 0xfe) == 18) // 198.18/15, benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224 // multicast, 240/4 reserved, broadcast
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    ip.is_unspecified()
        || ip.is_loopback()
        // IPv4-compatible (::a.b.c.d, deprecated): never a public route.
        || (s[..6] == [0; 6])
        // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address; the local-use prefix
        // 64:ff9b:1::/48 reaches a private network.
        || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && internal_v4(embedded(s[6], s[7])))
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        || (s[0] == 0x100 && s[1..4] == [0; 3]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || s[0] == 0x2002 // 6to4: reaches an embedded IPv4 address
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_carries_the_host_header_the_client_would_write() {
        for (url, host) in [
            (
                "https://api.openai.com/v1/chat/completions",
                "api.openai.com",
            ),
            ("https://llm.example.org:443/v1", "llm.example.org"),
            ("http://llm.example.org:80/v1", "llm.example.org"),
            ("https://llm.example.org:8443/v1", "llm.example.org:8443"),
            ("http://127.0.0.1:9000/v1", "127.0.0.1:9000"),
            ("http://[::1]:9000/v1", "[::1]:9000"),
        ] {
            let address = address(&parse(url).unwrap()).unwrap();
            assert_eq!(address.host, host, "{url}");
            assert_eq!(
                address.uri.to_string(),
                url.replace(":443/", "/").replace(":80/", "/")
            );
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "172.16.5.4",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:a00:1::",
            "2002:808:808::",
            "2001::1",
            "ff02::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_host_checked_is_the_host_called() {
        // The client reads a backslash as the end of the authority: this is a call to the
        // metadata address, not to example.com.
        let url = parse("http://169.254.169.254\\@example.com/v1").unwrap();
        assert_eq!(url.host_str(), Some("169.254.169.254"));
        assert_eq!(check_host(&url), Err(Refused::Private));
        let url = parse("http://127.0.0.1:11434\\@example.com/v1").unwrap();
        assert_eq!(check_host(&url), Err(Refused::Private));
        assert_eq!(
            check_host(&parse("http://[::1]:8000/v1").unwrap()),
            Err(Refused::Private)
        );
        assert_eq!(
            check_host(&parse("http://0x7f.1/v1").unwrap()),
            Err(Refused::Private)
        );
        assert_eq!(
            check_host(&parse("http://2130706433/v1").unwrap()),
            Err(Refused::Private)
        );
        assert!(check_host(&parse("https://8.8.8.8/v1").unwrap()).is_ok());
        for bad in [
            "ftp://example.com",
            "http://user:pass@example.com/v1",
            "http://example.com/v1?x=1",
            "example.com",
            "",
        ] {
            assert_eq!(parse(bad), Err(Refused::Malformed), "{bad}");
        }
    }

    #[tokio::test]
    async fn endpoints_on_internal_addresses_are_refused() {
        for url in [
            "http://127.0.0.1:11434/v1/chat/completions",
            "http://localhost/v1",
            "http://[::1]:8000/v1",
            "http://169.254.169.254\\@example.com/v1",
        ] {
            assert_eq!(check_endpoint(url).await, Err(Refused::Private), "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_connects_only_to_public_addresses() {
        assert_eq!(resolve("localhost", true).await, Err(Refused::Private));
        let any = resolve("localhost", false).await.unwrap();
        assert!(any.iter().all(|a| a.ip().is_loopback()), "{any:?}");
    }

    #[test]
    fn the_address_called_is_the_address_checked() {
        for (raw, host) in [
            ("http://169.254.169.254\\@example.com/v1", "169.254.169.254"),
            ("http://0x7f.1/v1", "127.0.0.1"),
            ("https://models.example.com/v1", "models.example.com"),
            ("http://[::1]:8000/v1", "::1"),
            ("HTTP://Example.COM:80/v1", "example.com"),
        ] {
            let called = uri(&parse(raw).unwrap()).unwrap();
            assert_eq!(
                called.host().map(|h| h.trim_matches(['[', ']'])),
                Some(host),
                "{raw}"
            );
        }
    }

    #[tokio::test]
    async fn a_call_to_a_name_of_an_internal_address_never_leaves() {
        // A listener on loopback that would see the call.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = parse(&format!("http://localhost:{port}/v1/models")).unwrap();
        let req = http::Request::get(uri(&url).unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let err = Http::guarded(false).send(req).await.unwrap_err();
        assert_eq!(refusal(&err), Some(Refused::Private));
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(
            accepted.is_err(),
            "the guarded client connected to loopback"
        );
    }

    #[tokio::test]
    async fn the_installation_client_calls_any_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 4096];
            let n = socket.read(&mut head).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8_lossy(&head[..n]).to_lowercase()
        });
        let url = parse(&format!("http://localhost:{port}/v1/models")).unwrap();
        let req = http::Request::get(uri(&url).unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = Http::installation().send(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let head = server.await.unwrap();
        assert!(head.starts_with("get /v1/models http/1.1"), "{head}");
        assert!(head.contains(&format!("host: localhost:{port}")), "{head}");
        assert!(head.contains("user-agent: tessera/"), "{head}");
    }

    proptest::proptest! {
        #[test]
        fn any_address_is_read_without_panic(raw in ".{0,80}") {
            if let Ok(url) = parse(&raw) {
                let _ = check_host(&url);
            }
        }
    }
}
