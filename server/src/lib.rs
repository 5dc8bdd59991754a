//! The Tessera server: builds the one axum `Router` that production and the tests both use.

pub mod audit_export;
pub mod billing_routes;
pub mod chat_stream;
pub mod guard;
pub mod health;
pub mod knowledge_routes;
pub mod ofrep;
pub mod openai_api;
pub mod openapi;
pub mod session_store;
pub mod telemetry;
pub mod usage_export;

use std::sync::Arc;

use app::server::AppState;
use app::{shell, App};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use session_store::RedisSessionStore;
use tessera_core::Services;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

/// A `text/event-stream` response that proxies pass through unbuffered.
pub(crate) fn event_stream(body: axum::body::Body) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let mut res = axum::response::Response::new(body);
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// `text` percent-encoded for a query string value.
pub(crate) fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where the OpenAPI document of `/v1` and the webhook is served.
pub const OPENAPI_URL: &str = "/v1/openapi.json";

/// Brotli or gzip, as the client accepts, for pages, scripts, styles, wasm, CSV and JSON
/// documents of some size; never for event streams (each event must leave at once). The
/// gateway's answers are not under it at all (small, the provider's bytes, and their CPU is
/// the gateway's overhead): of the API's routes only its documents are (the model list, the
/// OpenAPI document, metrics).
fn compression(
) -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    use tower_http::compression::{CompressionLayer, CompressionLevel};
    let predicate = SizeAbove::new(1024)
        .and(NotForContentType::const_new("text/event-stream"))
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES);
    CompressionLayer::new()
        .br(true)
        .gzip(true)
        .quality(CompressionLevel::Precise(4))
        .compress_when(predicate)
}

/// The routes the OpenAPI document describes (`/v1` and the Stripe webhook), with their
/// methods; `server/tests/openapi.rs` checks the document against this list.
pub fn api_routes() -> Vec<(&'static str, http::Method, MethodRouter<AppState>)> {
    use http::Method;
    vec![
        (
            "/v1/models",
            Method::GET,
            get(openai_api::models).layer(compression()),
        ),
        ("/v1/models/{*model}", Method::GET, get(openai_api::model)),
        (
            "/v1/chat/completions",
            Method::POST,
            post(openai_api::chat_completions),
        ),
        ("/v1/responses", Method::POST, post(openai_api::responses)),
        (
            "/v1/responses/input_tokens",
            Method::POST,
            post(openai_api::input_tokens),
        ),
        ("/v1/embeddings", Method::POST, post(openai_api::embeddings)),
        (
            "/v1/moderations",
            Method::POST,
            post(openai_api::moderations),
        ),
        ("/v1/messages", Method::POST, post(openai_api::messages)),
        (
            "/v1/messages/count_tokens",
            Method::POST,
            post(openai_api::count_tokens),
        ),
        (
            OPENAPI_URL,
            Method::GET,
            get(openapi::document).layer(compression()),
        ),
        (
            "/webhooks/stripe",
            Method::POST,
            post(billing_routes::stripe_webhook),
        ),
    ]
}

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tessera_session";

/// The whole application: pages, server functions, health, static files.
pub fn router(services: Services, leptos_options: LeptosOptions) -> Router {
    let config = Arc::clone(&services.config);
    let sessions = SessionManagerLayer::new(RedisSessionStore::new(services.redis.clone()))
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.secure_cookies())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(
            config.session_ttl_hours,
        )));
    let state = AppState::new(leptos_options, services);
    let routes = generate_route_list(App);
    // Metrics recorded from here on are kept (one recorder per process).
    telemetry::prometheus();

    // The API, the webhook, health and metrics authenticate by key, signature or token, never
    // by the session cookie: they are served without the session layer (and its work per
    // request), and compressed only where an answer is a document (the gateway's answers are
    // the provider's bytes, and its streams' events must leave at once).
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, _, route)| r.route(path, route))
        // Any other address under /v1 answers as the API does (JSON), not with the site's page.
        .route("/v1/{*rest}", any(openai_api::unknown))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/metrics",
            get(telemetry::metrics_with_token).layer(compression()),
        );
    Router::new()
        .route("/chat/replies/{id}", get(chat_stream::reply_stream))
        .route("/settings/usage/export.csv", get(usage_export::export))
        .route(app::api::audit::EXPORT_URL, get(audit_export::export))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_one))
        .route("/settings/billing/plan", post(billing_routes::choose_plan))
        .route("/settings/billing/portal", post(billing_routes::portal))
        .route(
            app::api::knowledge::UPLOAD_URL,
            post(knowledge_routes::upload).layer(axum::extract::DefaultBodyLimit::max(
                knowledge_routes::body_limit(&config),
            )),
        )
        .leptos_routes_with_context(&state, routes, || {}, {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        // Pages rendered for missing files (404) run the session check too: they need the
        // state in their context like every other page.
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(
            {
                let state = state.clone();
                move || provide_context(state.clone())
            },
            shell,
        ))
        .layer(sessions)
        .layer(compression())
        .merge(api)
        // The request's id, span and metrics, then the guard: one layer for both.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::request_context,
        ))
        .with_state(state)
}
