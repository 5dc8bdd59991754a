//! The signed-in person, for routes outside server functions (reply streams, the usage export).

use app::server::{AppState, TENANT, USER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tessera_core::auth::{self, Viewer};
use tessera_core::{TenantId, UserId};
use tower_sessions::Session;

/// The person in the session and their current clinic. `Err` is the answer to send: 401 when
/// nobody is signed in, 403 when the clinic is not theirs or has been deactivated.
pub async fn viewer(state: &AppState, session: &Session) -> Result<Viewer, Response> {
    let (Ok(Some(user)), Ok(Some(tenant))) = (
        session.get::<UserId>(USER).await,
        session.get::<TenantId>(TENANT).await,
    ) else {
        return Err((StatusCode::UNAUTHORIZED, "Please sign in.").into_response());
    };
    match auth::viewer(&state.services.db, user, tenant).await {
        Ok(Some(v)) if v.tenant.active => Ok(v),
        Ok(_) => Err((StatusCode::FORBIDDEN, "No access to this clinic.").into_response()),
        Err(e) => {
            tracing::error!(error = ?e, "viewer lookup failed");
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}
