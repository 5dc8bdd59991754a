//! The OpenAI-compatible API under `/v1`, authenticated by `Authorization: Bearer tsk_...`,
//! answering errors in OpenAI's shape so the official SDKs understand them.

use app::server::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tessera_core::api_keys::{self, ApiCaller};
use tessera_core::keys::{self, Provider};

/// `{"error": {"message", "type", "code"}}` with a status.
pub fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })),
    )
        .into_response()
}

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<ApiCaller, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            "You didn't provide an API key. Send it as Authorization: Bearer tsk_... (create one under API keys).",
        ));
    };
    match api_keys::authenticate(&state.services.db, token).await {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. It may have been revoked; create a new one under API keys.",
        )),
        Err(e) if e.status_code() == 403 => Err(openai_error(StatusCode::FORBIDDEN, "permission_error", "tenant_inactive", &e.to_string())),
        Err(e) => {
            tracing::error!(error = ?e, "API key check failed");
            Err(openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", "Something went wrong on our side. Please retry."))
        }
    }
}

/// `GET /v1/models`: the models this clinic can use, from each provider it has a key for.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let services = &state.services;
    let mut data = Vec::new();
    for provider in Provider::ALL {
        let key = match keys::resolve(
            &services.db,
            services.master_keys(),
            caller.tenant,
            provider,
        )
        .await
        {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = ?e, provider = provider.as_str(), "could not read the clinic's provider key");
                continue;
            }
        };
        match tessera_core::llm::list_models(&services.http, &services.config, &key).await {
            Ok(models) => data.extend(models.into_iter().map(|id| {
                json!({ "id": id, "object": "model", "created": 0, "owned_by": provider.as_str() })
            })),
            Err(message) => tracing::warn!(provider = provider.as_str(), %message, "provider did not list models"),
        }
    }
    Json(json!({ "object": "list", "data": data })).into_response()
}
