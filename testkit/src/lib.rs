//! A simulator of the provider APIs Tessera calls, speaking their real wire formats, for tests
//! and benchmarks. It is never a production path.
//!
//! Keys decide the answer, so tests can provoke each case: an OpenAI key must start with
//! `sk-` and an Anthropic key with `sk-ant-`; a key containing `invalid` is rejected (401),
//! `ratelimited` gets 429 and `outage` gets 503, each in the provider's own error shape.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// Connection options for the database behind `owner_pool` (a `#[sqlx::test]` pool, connected
/// as the schema owner) as `tessera_app`, the role the server uses: it owns no table, so
/// row-level security applies to everything it does. The password is `TESSERA_APP_DB_PASSWORD`
/// or the local default (ignored where authentication is `trust`).
pub fn app_role_options(owner_pool: &sqlx::PgPool) -> sqlx::postgres::PgConnectOptions {
    let password = std::env::var("TESSERA_APP_DB_PASSWORD").unwrap_or_else(|_| "tessera".into());
    (*owner_pool.connect_options())
        .clone()
        .username("tessera_app")
        .password(&password)
}

/// The models the simulator lists.
pub const OPENAI_MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4o"];
pub const ANTHROPIC_MODELS: [&str; 2] = ["claude-3-5-haiku-latest", "claude-sonnet-4-0"];

#[derive(Clone, Copy)]
enum Flavor {
    OpenAi,
    Anthropic,
}

/// The simulator's routes: OpenAI under `/v1/models` with `Authorization: Bearer`, Anthropic
/// under `/anthropic/v1/models` with `x-api-key`.
pub fn router() -> Router {
    Router::new()
        .route("/v1/models", get(models).with_state(Flavor::OpenAi))
        .route(
            "/anthropic/v1/models",
            get(models).with_state(Flavor::Anthropic),
        )
}

/// Serves the simulator on `addr` (port 0 for any free port); returns the bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router()).await;
    });
    Ok(bound)
}

fn key(headers: &HeaderMap, flavor: Flavor) -> Option<String> {
    let value = match flavor {
        Flavor::OpenAi => headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .to_string(),
        Flavor::Anthropic => headers.get("x-api-key")?.to_str().ok()?.to_string(),
    };
    Some(value)
}

fn error(flavor: Flavor, status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = match flavor {
        Flavor::OpenAi => {
            json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
        }
        Flavor::Anthropic => {
            json!({ "type": "error", "error": { "type": kind, "message": message } })
        }
    };
    (status, Json(body)).into_response()
}

/// Checks a key the way the provider would; `Err` is the provider's own error response.
fn check(headers: &HeaderMap, flavor: Flavor) -> Result<(), Response> {
    let (prefix, auth_kind) = match flavor {
        Flavor::OpenAi => ("sk-", "invalid_request_error"),
        Flavor::Anthropic => ("sk-ant-", "authentication_error"),
    };
    if matches!(flavor, Flavor::Anthropic) && headers.get("anthropic-version").is_none() {
        return Err(error(
            flavor,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "",
            "anthropic-version: header is required",
        ));
    }
    let Some(key) = key(headers, flavor) else {
        return Err(error(
            flavor,
            StatusCode::UNAUTHORIZED,
            auth_kind,
            "missing_api_key",
            "You didn't provide an API key.",
        ));
    };
    if !key.starts_with(prefix) || key.contains("invalid") {
        let shown: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(error(
            flavor,
            StatusCode::UNAUTHORIZED,
            auth_kind,
            "invalid_api_key",
            &format!("Incorrect API key provided: ...{shown}."),
        ));
    }
    if key.contains("ratelimited") {
        return Err(error(
            flavor,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit reached for requests.",
        ));
    }
    if key.contains("outage") {
        return Err(error(
            flavor,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "service_unavailable",
            "The server is overloaded. Please retry.",
        ));
    }
    Ok(())
}

async fn models(State(flavor): State<Flavor>, headers: HeaderMap) -> Response {
    if let Err(res) = check(&headers, flavor) {
        return res;
    }
    match flavor {
        Flavor::OpenAi => Json(json!({
            "object": "list",
            "data": OPENAI_MODELS.iter().map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system" })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Flavor::Anthropic => Json(json!({
            "data": ANTHROPIC_MODELS.iter().map(|id| json!({ "type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z" })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": ANTHROPIC_MODELS[0],
            "last_id": ANTHROPIC_MODELS[ANTHROPIC_MODELS.len() - 1],
        }))
        .into_response(),
    }
}
