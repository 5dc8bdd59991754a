//! Request guard applied to every route: records the client address, refuses cross-site
//! state-changing requests, and adds security headers to every response.

use std::net::{IpAddr, SocketAddr};

use app::server::{AppState, ClientIp};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tessera_core::config::origin_of;

/// Paths that authenticate by bearer token or signature rather than by cookie, so a
/// cross-site form cannot act through them.
const NON_COOKIE_PREFIXES: [&str; 2] = ["/v1/", "/webhooks/"];

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let config = &state.services.config;
    let ip = client_ip(&req, config.trust_proxy);
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

    let mut res = next.run(req).await;
    let headers = res.headers_mut();
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

fn client_ip(req: &Request, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
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
