//! The bare proxy: `POST /v1/chat/completions` and `POST /v1/responses` forwarded to the
//! provider as they came, and the answer streamed back untouched. No authentication, no accounting: the baseline for what any
//! proxy in the path costs. It calls the provider with the HTTP client Tessera's gateway uses
//! (`tessera_core::egress::Http`), so the comparison is of what each does around the call, not
//! of two clients. It runs as its own process (`gateway-bench proxy`) so that its CPU can be
//! read alone. Its connections set `TCP_NODELAY`, so streamed events are not held back by
//! Nagle's algorithm.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use tessera_core::egress::{Chain, Http};

struct Upstream {
    client: Http,
    chat: axum::http::Uri,
    responses: axum::http::Uri,
}

async fn chat(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    let url = up.chat.clone();
    forward(&up, url, headers, body).await
}

async fn responses(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    let url = up.responses.clone();
    forward(&up, url, headers, body).await
}

async fn forward(up: &Upstream, url: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = axum::http::Request::post(url);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let Ok(request) = request.body(http_body_util::Full::new(body)) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match up.client.send(request).await {
        Ok(res) => {
            let mut out = Response::builder().status(res.status());
            for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
                if let Some(value) = res.headers().get(&name) {
                    out = out.header(name, value);
                }
            }
            out.body(Body::new(res.into_body()))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, Chain(&e).to_string()).into_response(),
    }
}

/// `gateway-bench proxy --upstream URL [--listen ADDR]`: serves until killed. Prints
/// `listening on http://ADDR` once bound.
pub async fn main(args: &[String]) -> ExitCode {
    let mut listen = "127.0.0.1:0".to_string();
    let mut upstream = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v.clone(),
            ("--upstream", Some(v)) => upstream = Some(v.trim_end_matches('/').to_string()),
            _ => {
                eprintln!("usage: gateway-bench proxy --upstream URL [--listen HOST:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("usage: gateway-bench proxy --upstream URL [--listen HOST:PORT]");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("proxy: --listen must be HOST:PORT (got {listen:?})");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("proxy: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Ok(chat_url), Ok(responses_url)) = (
        format!("{upstream}/v1/chat/completions").parse(),
        format!("{upstream}/v1/responses").parse(),
    ) else {
        eprintln!("proxy: --upstream must be an http(s) URL (got {upstream:?})");
        return ExitCode::from(2);
    };
    let state = Arc::new(Upstream {
        client: Http::installation(),
        chat: chat_url,
        responses: responses_url,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .with_state(state);
    match listener.local_addr() {
        Ok(bound) => println!("listening on http://{bound}"),
        Err(e) => {
            eprintln!("proxy: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Each streamed event goes out at once, as from any proxy built for streaming.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("proxy: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
