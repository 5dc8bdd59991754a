//! Calls to addresses a clinic supplies (its OpenAI-compatible endpoint) go through one guarded
//! client, so a clinic cannot make the server reach into the network it runs in:
//!
//! - an address is parsed once, with the parser the HTTP client itself uses ([`parse`]), so the
//!   host that is checked is the host that is called (`http://10.0.0.1\@example.com` is a call
//!   to 10.0.0.1, and is refused as one);
//! - a host name is resolved by the client's own resolver ([`PublicOnly`]), which drops every
//!   internal address: the connection goes to an address that was checked, with no second
//!   lookup a rebinding name could answer differently;
//! - a host given as an IP address, which no resolver sees, is checked before every call
//!   ([`check_host`]);
//! - redirects are never followed.
//!
//! Self-hosted installs that run a model server next to Tessera set
//! `TESSERA_ALLOW_PRIVATE_ENDPOINTS=true`, which turns the address checks off (redirects are
//! still not followed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

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

/// Resolves host names and keeps only public addresses; a name with none is refused.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Box::new(Refused::Unresolvable(host.clone())))?
                .collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                let refused = if found.is_empty() {
                    Refused::Unresolvable(host)
                } else {
                    Refused::Private
                };
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The client for addresses clinics supply: never follows a redirect, and (unless private
/// endpoints are allowed) connects only to public addresses.
pub fn client(allow_private: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    let builder = if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly))
    };
    builder.build().unwrap_or_default()
}

/// The refusal behind a failed request, if the guard refused it.
pub fn refusal(err: &reqwest::Error) -> Option<Refused> {
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
        let refused = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(refused.downcast_ref::<Refused>(), Some(&Refused::Private));
    }

    #[tokio::test]
    async fn a_call_to_a_name_of_an_internal_address_never_leaves() {
        // A listener on loopback that would see the call.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = client(false)
            .get(format!("http://localhost:{port}/v1/models"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(refusal(&err), Some(Refused::Private));
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(
            accepted.is_err(),
            "the guarded client connected to loopback"
        );
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
