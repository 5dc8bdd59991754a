//! Server-side glue for the server functions: state, the session, the signed-in viewer, and
//! the mapping from core errors to responses. Server functions stay thin: they call this and
//! `tessera_core`, nothing else.

use std::net::IpAddr;

use axum::extract::FromRef;
use leptos::prelude::*;
use tessera_core::auth::{self, Viewer};
use tessera_core::{Services, TenantId, UserId};
use tower_sessions::Session;

use crate::dto;
use crate::error::AppError;

/// The router's state, also provided to every server function through context.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub services: Services,
}

/// The client's address, put on each request by the server's middleware (from the socket, or
/// from `X-Forwarded-For` when `TESSERA_TRUST_PROXY` is on).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

/// Session keys: the signed-in person and their current clinic.
pub const USER: &str = "user_id";
pub const TENANT: &str = "tenant_id";

pub fn services() -> Result<Services, AppError> {
    use_context::<AppState>()
        .map(|s| s.services)
        .ok_or_else(|| {
            if use_context::<http::request::Parts>().is_some() {
                tracing::error!("AppState missing from context");
            } else {
                // A resource of a render that was already replaced (a suspense rendered its
                // children again) finishing after its scope was disposed; its result is unused.
                tracing::debug!("server function ran outside a request scope");
            }
            AppError::Internal
        })
}

pub fn client_ip() -> Option<IpAddr> {
    use_context::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<ClientIp>().and_then(|c| c.0))
}

/// Sets the response status for `err` and returns it, for `map_err` at the end of a server
/// function.
pub fn fail(err: AppError) -> AppError {
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(
            http::StatusCode::from_u16(err.status())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        );
    }
    err
}

/// Maps a core error: client errors keep their message, the rest are logged and made opaque.
pub fn core_err(err: tessera_core::Error) -> AppError {
    use tessera_core::Error as E;
    let mapped = match err {
        E::Invalid(m) => AppError::Invalid(m),
        E::Conflict(m) => AppError::Conflict(m),
        E::NotFound => AppError::NotFound,
        E::Forbidden(m) | E::PlanLimit(m) => AppError::Forbidden(m),
        E::Unauthenticated(m) => AppError::Unauthenticated(m),
        E::Gone(m) => AppError::Gone(m),
        E::Unavailable(m) => AppError::Unavailable(m),
        e @ (E::RateLimited { .. } | E::OverBudget { .. }) => {
            AppError::TooManyRequests(e.to_string())
        }
        other => {
            tracing::error!(error = ?other, source = ?std::error::Error::source(&other), "request failed");
            AppError::Internal
        }
    };
    fail(mapped)
}

fn session_err(err: impl std::fmt::Display) -> AppError {
    tracing::error!(error = %err, "session store failed");
    fail(AppError::Internal)
}

pub async fn session() -> Result<Session, AppError> {
    leptos_axum::extract::<Session>().await.map_err(session_err)
}

/// Starts a signed-in session under a new id (so a session id planted before sign-in is
/// useless after it).
pub async fn start_session(user: UserId, tenant: TenantId) -> Result<(), AppError> {
    let session = session().await?;
    session.cycle_id().await.map_err(session_err)?;
    session.insert(USER, user).await.map_err(session_err)?;
    session.insert(TENANT, tenant).await.map_err(session_err)?;
    Ok(())
}

pub async fn switch_session_tenant(tenant: TenantId) -> Result<(), AppError> {
    session()
        .await?
        .insert(TENANT, tenant)
        .await
        .map_err(session_err)
}

pub async fn end_session() -> Result<(), AppError> {
    session().await?.flush().await.map_err(session_err)
}

/// The signed-in person in their current clinic, or `None` when nobody is signed in. A person
/// removed from their current clinic moves to another of theirs, or is signed out.
pub async fn viewer() -> Result<Option<Viewer>, AppError> {
    let session = session().await?;
    let Some(user) = session.get::<UserId>(USER).await.map_err(session_err)? else {
        return Ok(None);
    };
    let services = services()?;
    if let Some(tenant) = session.get::<TenantId>(TENANT).await.map_err(session_err)? {
        if let Some(v) = auth::viewer(&services.db, user, tenant)
            .await
            .map_err(core_err)?
        {
            return Ok(Some(v));
        }
    }
    let memberships = auth::memberships(&services.db, user)
        .await
        .map_err(core_err)?;
    if let Some(m) = memberships
        .iter()
        .find(|m| m.tenant.active)
        .or(memberships.first())
    {
        session
            .insert(TENANT, m.tenant.id)
            .await
            .map_err(session_err)?;
        return auth::viewer(&services.db, user, m.tenant.id)
            .await
            .map_err(core_err);
    }
    session.flush().await.map_err(session_err)?;
    Ok(None)
}

/// The viewer, or 401. A deactivated clinic answers 403.
pub async fn require_viewer() -> Result<Viewer, AppError> {
    let viewer = viewer()
        .await?
        .ok_or_else(|| fail(AppError::Unauthenticated("Please sign in.".into())))?;
    if !viewer.tenant.active {
        return Err(fail(AppError::Forbidden(format!(
            "{} has been deactivated. Contact support.",
            viewer.tenant.name
        ))));
    }
    Ok(viewer)
}

/// The viewer if they are an owner or admin of the current clinic, else 403.
pub async fn require_admin() -> Result<Viewer, AppError> {
    let viewer = require_viewer().await?;
    if !viewer.role.is_admin() {
        return Err(fail(AppError::Forbidden(
            "Only owners and admins of this clinic can open this page.".into(),
        )));
    }
    Ok(viewer)
}

pub fn actor(v: &Viewer) -> auth::members::Actor {
    auth::members::Actor {
        user: v.user.id,
        role: v.role,
    }
}

pub fn role_to_dto(r: tessera_core::Role) -> dto::Role {
    match r {
        tessera_core::Role::Staff => dto::Role::Staff,
        tessera_core::Role::Admin => dto::Role::Admin,
        tessera_core::Role::Owner => dto::Role::Owner,
    }
}

/// Parses a role typed into a form field.
pub fn parse_role(raw: &str) -> Result<tessera_core::Role, AppError> {
    raw.parse().map_err(core_err)
}

/// Parses an id from a form field; a malformed one is simply not found.
pub fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, AppError> {
    raw.parse().map_err(|_| fail(AppError::NotFound))
}

pub fn date(t: time::OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}
