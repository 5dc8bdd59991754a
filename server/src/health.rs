//! `/healthz`: the process is up. `/readyz`: Postgres and Redis answer, so a load balancer
//! sends traffic only to replicas that can serve it.

use app::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let timeout = std::time::Duration::from_secs(2);
    let (pg, redis) = tokio::join!(
        tokio::time::timeout(timeout, state.services.db.ping()),
        tokio::time::timeout(timeout, state.services.redis.ping()),
    );
    let status = |r: Result<tessera_core::Result<()>, _>| match r {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = ?e, "readiness check failed");
            "error"
        }
        Err(_) => "timeout",
    };
    let (pg, redis) = (status(pg), status(redis));
    let code = if pg == "ok" && redis == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "postgres": pg, "redis": redis })))
}
