//! Who is signed in: the one place that reads the session, for pages (through server
//! functions), server functions and plain routes alike ([`SignedIn`], [`Admin`]).
//!
//! A session holds the person and their current clinic. The person's clinic is re-read on every
//! request (`tessera_core::auth::current_clinic`): removed from it since signing in, they move
//! to another clinic of theirs, or are signed out when none is left; a deactivated clinic
//! answers 403.

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use tessera_core::auth::{self, Viewer};
use tessera_core::{Services, TenantId, UserId};
use tower_sessions::Session;

use super::{fail, services, AppState};
use crate::error::AppError;

/// Session keys: the signed-in person and their current clinic.
const USER: &str = "user_id";
const TENANT: &str = "tenant_id";

/// The session store (Redis) failed: almost always Redis being out of reach, so the answer
/// is "try again shortly".
fn session_err(err: impl std::fmt::Display) -> AppError {
    tracing::warn!(error = %err, "session store failed");
    fail(AppError::Unavailable(
        tessera_types::TRY_AGAIN_SHORTLY.into(),
    ))
}

/// The session of the server function's request.
async fn session() -> Result<Session, AppError> {
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

/// Moves the session to another of the person's clinics.
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

/// The person in `session` and their current clinic, or `None` when nobody is signed in (a
/// person left with no clinic is signed out).
async fn resolve(services: &Services, session: &Session) -> Result<Option<Viewer>, AppError> {
    let Some(user) = session.get::<UserId>(USER).await.map_err(session_err)? else {
        return Ok(None);
    };
    let preferred = session.get::<TenantId>(TENANT).await.map_err(session_err)?;
    match auth::current_clinic(&services.db, user, preferred).await? {
        Some(v) => {
            if preferred != Some(v.tenant.id) {
                session
                    .insert(TENANT, v.tenant.id)
                    .await
                    .map_err(session_err)?;
            }
            Ok(Some(v))
        }
        None => {
            // A platform operator may belong to no clinic: their session stays, for the
            // operator console.
            if !tessera_core::operator::is_operator(&services.db, user).await? {
                session.flush().await.map_err(session_err)?;
            }
            Ok(None)
        }
    }
}

/// Starts a session for a platform operator who belongs to no clinic (the operator console
/// only).
pub async fn start_operator_session(user: UserId) -> Result<(), AppError> {
    let session = session().await?;
    session.cycle_id().await.map_err(session_err)?;
    session.insert(USER, user).await.map_err(session_err)
}

/// The signed-in platform operator (401 when nobody is signed in, 403 for anyone else).
pub async fn require_operator() -> Result<tessera_core::auth::User, AppError> {
    let services = services()?;
    let session = session().await?;
    let Some(user) = session.get::<UserId>(USER).await.map_err(session_err)? else {
        return Err(fail(AppError::Unauthenticated("Please sign in.".into())));
    };
    if !tessera_core::operator::is_operator(&services.db, user).await? {
        return Err(fail(AppError::Forbidden(
            "The operator console is for the platform's operators only.".into(),
        )));
    }
    auth::accounts::user(&services.db, user)
        .await?
        .ok_or_else(|| fail(AppError::Unauthenticated("Please sign in.".into())))
}

/// Whether the signed-in person is a platform operator.
pub async fn is_operator() -> Result<bool, AppError> {
    let services = services()?;
    let session = session().await?;
    let Some(user) = session.get::<UserId>(USER).await.map_err(session_err)? else {
        return Ok(false);
    };
    Ok(tessera_core::operator::is_operator(&services.db, user).await?)
}

/// The signed-in person, or 401; 403 when their clinic has been deactivated.
async fn signed_in(services: &Services, session: &Session) -> Result<Viewer, AppError> {
    let viewer = resolve(services, session)
        .await?
        .ok_or_else(|| fail(AppError::Unauthenticated("Please sign in.".into())))?;
    super::record_clinic(viewer.tenant.id);
    if !viewer.tenant.active {
        return Err(fail(AppError::Forbidden(format!(
            "{} has been deactivated. Contact support.",
            viewer.tenant.name
        ))));
    }
    Ok(viewer)
}

fn admin(viewer: Viewer) -> Result<Viewer, AppError> {
    if viewer.role.is_admin() {
        Ok(viewer)
    } else {
        Err(fail(AppError::Forbidden(
            "Only owners and admins of this clinic can open this page.".into(),
        )))
    }
}

/// The signed-in person in their current clinic, or `None` (server functions).
pub async fn signed_in_viewer() -> Result<Option<Viewer>, AppError> {
    resolve(&services()?, &session().await?).await
}

/// The signed-in person, or 401 / 403 (server functions).
pub async fn require_viewer() -> Result<Viewer, AppError> {
    signed_in(&services()?, &session().await?).await
}

/// The signed-in person if they are an owner or admin of their clinic, else 403 (server
/// functions).
pub async fn require_admin() -> Result<Viewer, AppError> {
    admin(require_viewer().await?)
}

/// The signed-in person, for plain routes: rejects with 401 / 403 like the server functions.
pub struct SignedIn(pub Viewer);

/// An owner or admin of the current clinic, for plain routes.
pub struct Admin(pub Viewer);

impl<S> FromRequestParts<S> for SignedIn
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, message)| session_err(message))?;
        let state = AppState::from_ref(state);
        signed_in(&state.services, &session).await.map(SignedIn)
    }
}

impl<S> FromRequestParts<S> for Admin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let SignedIn(viewer) = SignedIn::from_request_parts(parts, state).await?;
        admin(viewer).map(Admin)
    }
}
