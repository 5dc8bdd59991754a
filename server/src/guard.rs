//! Request guard applied to every route: records the client address, refuses cross-site
//! state-changing requests, and adds security and caching headers to every response.

use std::net::{IpAddr, SocketAddr};

use app::server::{AppState, ClientIp};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tessera_core::config::origin_of;

/// Paths that authenticate by bearer token or signature rather than by cookie, so a
/// cross-site form cannot act through them.
const NON_COOKIE_PREFIXES: [&str; 3] = ["/v1/", "/webhooks/", "/ofrep/"];

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let config = &state.services.config;
    let ip = client_ip(&req, &config.trusted_proxies);
    req.extensions_mut().insert(ClientIp(ip));

    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path();
    if unsafe_method
        && !NON_COOKIE_PREFIXES.iter().any(|p| path.starts_with(p))
        && !same_origin(req.headers(), config.public_origin())
    {
        tracing::warn!(path, "refused a cross-site request");
        return (
            StatusCode::FORBIDDEN,
            "This request came from another site and was refused.",
        )
            .into_response();
    }

    let static_file = path.starts_with("/pkg/");
    // Audit-log entries written while serving the request carry its client address.
    let mut res = tessera_core::audit::with_address(ip, next.run(req)).await;
    let hashed_files = state.leptos_options.hash_files;
    let found = res.status().is_success();
    let headers = res.headers_mut();
    if static_file && found {
        // Content-hashed names change with their content: cache them for good. Without
        // hashing, check back each time (the answer is a cheap 304 when unchanged).
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if hashed_files {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            }),
        );
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        // Pages set their own policy, with the nonce of their hydration script. An HTML
        // answer without one gets the same policy without a nonce; anything else runs no
        // script and is framed by nobody.
        let html = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        let policy = if html {
            HeaderValue::from_str(&app::page_policy(None)).ok()
        } else {
            Some(HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'",
            ))
        };
        if let Some(policy) = policy {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
    }
    if config.secure_cookies() {
        // Reached over HTTPS: browsers keep to it.
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

fn client_ip(req: &Request, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Some(client_address(peer, &forwarded, trusted))
}

/// The client behind `peer`: when `peer` is a trusted proxy, the right-most address of
/// `X-Forwarded-For` that is not one (each proxy appends who it heard from, so only the
/// right-hand end is vouched for; a client can write anything on the left).
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // Garbage where an address should be: the last trusted hop is all we know.
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// True when the request's `Origin` (or, failing that, `Referer`) is this site: the configured
/// public origin, or the origin of the `Host` the request was sent to.
pub fn same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    let source = match headers.get(header::ORIGIN) {
        Some(origin) => origin.to_str().ok().map(str::to_string),
        None => headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .map(|r| origin_of(r).to_string()),
    };
    let Some(source) = source else { return false };
    if source.eq_ignore_ascii_case(public_origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (source.split_once("://"), host) {
        (Some((scheme, authority)), Some(host)) => {
            (scheme == "http" || scheme == "https") && authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Straight from a client: its own address, whatever it claims.
        assert_eq!(
            client_address(ip("203.0.113.9"), &["1.2.3.4"], &trusted),
            ip("203.0.113.9")
        );
        // Through two proxies; the left-most entry is the client's own claim.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &["6.6.6.6, 198.51.100.7, 10.0.0.1"],
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["6.6.6.6", "198.51.100.7"], &trusted),
            ip("198.51.100.7")
        );
        // Nothing forwarded, or garbage: the proxy's own address.
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["not an address"], &trusted),
            ip("10.0.0.2")
        );
        // No trusted proxies configured: never read.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.7"], &[]),
            ip("10.0.0.2")
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_site_requests_pass() {
        let public = "https://tessera.example.com";
        assert!(same_origin(
            &headers(&[("origin", "https://tessera.example.com")]),
            public
        ));
        assert!(same_origin(
            &headers(&[
                ("origin", "http://127.0.0.1:3000"),
                ("host", "127.0.0.1:3000")
            ]),
            public
        ));
        assert!(same_origin(
            &headers(&[("referer", "https://tessera.example.com/members")]),
            public
        ));
    }

    #[test]
    fn cross_site_or_unknown_requests_fail() {
        let public = "https://tessera.example.com";
        assert!(!same_origin(
            &headers(&[
                ("origin", "https://evil.example"),
                ("host", "tessera.example.com")
            ]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("origin", "null"), ("host", "tessera.example.com")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("host", "tessera.example.com")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("referer", "https://tessera.example.com.evil.example/")]),
            public
        ));
    }
}
