//! The Tessera server: builds the one axum `Router` that production and the tests both use.

pub mod audit_export;
pub mod billing_routes;
pub mod chat_stream;
pub mod guard;
pub mod health;
pub mod knowledge_routes;
pub mod ofrep;
pub mod openai_api;
pub mod session_store;
pub mod usage_export;

use std::sync::Arc;

use app::server::AppState;
use app::{shell, App};
use axum::routing::{get, post};
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
    let state = AppState {
        leptos_options,
        services,
    };
    let routes = generate_route_list(App);

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/models", get(openai_api::models))
        .route("/v1/chat/completions", post(openai_api::chat_completions))
        .route("/v1/embeddings", post(openai_api::embeddings))
        .route("/v1/messages", post(openai_api::messages))
        .route("/chat/replies/{id}", get(chat_stream::reply_stream))
        .route("/settings/usage/export.csv", get(usage_export::export))
        .route(app::api::audit::EXPORT_URL, get(audit_export::export))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_one))
        .route("/webhooks/stripe", post(billing_routes::stripe_webhook))
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
