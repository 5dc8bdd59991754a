//! The OpenFeature Remote Evaluation Protocol (OFREP) for a clinic's flags, so other services
//! read them with standard OpenFeature providers: `POST /ofrep/v1/evaluate/flags/{key}` (one
//! flag) and `POST /ofrep/v1/evaluate/flags` (all, with an `ETag`; `If-None-Match` answers
//! 304). The caller is an API key (`Authorization: Bearer tsk_...`), and the evaluation context
//! is its clinic: the body's `context` is accepted but the clinic and its plan decide (a
//! `targetingKey`, if sent, must be the clinic's id). Evaluation reads the in-process cache.

use app::server::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tessera_core::flags::Evaluation;
use tessera_core::{PlanId, TenantId};

fn refuse(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The clinic behind the request's API key, counted against its plan's requests per minute.
async fn clinic(state: &AppState, headers: &HeaderMap) -> Result<(TenantId, PlanId), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let unauthorized =
        |details: &str| refuse(StatusCode::UNAUTHORIZED, json!({ "errorDetails": details }));
    let Some(token) = token else {
        return Err(unauthorized(
            "Send an API key of the clinic as Authorization: Bearer tsk_... (create one under API keys).",
        ));
    };
    let gateway = &state.services.gateway;
    let failed = |e: tessera_core::Error| match e {
        tessera_core::Error::RateLimited { retry_after_secs } => {
            let mut res = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "errorDetails": format!("Too many requests: try again in {retry_after_secs} seconds.") }),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            res
        }
        tessera_core::Error::Forbidden(m) => {
            refuse(StatusCode::FORBIDDEN, json!({ "errorDetails": m }))
        }
        other => {
            let outage = other.is_outage();
            tracing::error!(error = %app::server::error::chain(&other), "flag evaluation failed");
            let status = if outage {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            refuse(
                status,
                json!({ "errorDetails": tessera_types::SOMETHING_WENT_WRONG }),
            )
        }
    };
    let caller = match gateway.authenticate(token).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(unauthorized("Unknown or revoked API key.")),
        Err(e) => return Err(failed(e)),
    };
    let limits = gateway.limits(caller.tenant).await.map_err(failed)?;
    if !limits.active {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            json!({ "errorDetails": "This clinic has been deactivated." }),
        ));
    }
    gateway.admit(&caller).await.map_err(failed)?;
    Ok((caller.tenant, limits.plan))
}

/// Reads the optional body: `{}` or `{"context": {...}}`; a `targetingKey` must be the clinic.
fn context(body: &Bytes, clinic: TenantId) -> Result<(), (&'static str, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ("PARSE_ERROR", format!("The body is not JSON: {e}.")))?;
    let ctx = &v["context"];
    if !(ctx.is_null() || ctx.is_object()) {
        return Err(("INVALID_CONTEXT", "context must be an object.".into()));
    }
    match ctx.get("targetingKey") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(k)) if k.trim() == clinic.to_string() => Ok(()),
        Some(_) => Err((
            "INVALID_CONTEXT",
            "targetingKey must be the id of the API key's clinic (or left out): flags are evaluated for the key's clinic.".into(),
        )),
    }
}

fn evaluated(key: &str, e: &Evaluation) -> Value {
    json!({
        "key": key,
        "value": e.value,
        "reason": e.reason,
        "variant": e.variant,
        "metadata": { "version": e.version },
    })
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub async fn evaluate_one(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (clinic, plan) = match self::clinic(&state, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    if let Err((code, details)) = context(&body, clinic) {
        return refuse(
            StatusCode::BAD_REQUEST,
            json!({ "key": key, "errorCode": code, "errorDetails": details }),
        );
    }
    match state.services.gateway.flags.evaluate(&key, clinic, plan) {
        Some(e) => Json(evaluated(&key, &e)).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            json!({ "key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": format!("There is no flag {key:?}.") }),
        ),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag for the clinic.
pub async fn evaluate_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (clinic, plan) = match self::clinic(&state, &headers).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    if let Err((code, details)) = context(&body, clinic) {
        return refuse(
            StatusCode::BAD_REQUEST,
            json!({ "errorCode": code, "errorDetails": details }),
        );
    }
    let flags: Vec<Value> = state
        .services
        .gateway
        .flags
        .list()
        .iter()
        .map(|f| evaluated(&f.key, &f.evaluate(clinic, plan)))
        .collect();
    let body = json!({ "flags": flags });
    let text = body.to_string();
    let etag = format!("\"{}\"", hex(&Sha256::digest(text.as_bytes())[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], text).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
