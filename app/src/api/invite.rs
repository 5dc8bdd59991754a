//! The invitation link: what it offers, and accepting it.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::Role;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationInfo {
    pub clinic_name: String,
    pub email: String,
    pub role: Role,
}

/// What an invitation link offers; 404 for an unknown link, 410 for a used, expired or
/// withdrawn one.
#[server(endpoint = "invitation")]
pub async fn get_invitation(token: String) -> Result<InvitationInfo, AppError> {
    let services = srv::services()?;
    let view = tessera_core::auth::invitations::lookup(&services.db, &token).await?;
    Ok(InvitationInfo {
        clinic_name: view.clinic_name,
        email: view.email,
        role: view.role,
    })
}

#[server(endpoint = "accept_invitation")]
pub async fn accept_invitation(
    token: String,
    name: Option<String>,
    password: String,
) -> Result<(), AppError> {
    let services = srv::services()?;
    let (user, tenant) = tessera_core::auth::invitations::accept_throttled(
        &services.db,
        &services.throttle,
        srv::client_ip(),
        &token,
        name.as_deref().unwrap_or(""),
        &password,
    )
    .await?;
    srv::start_session(user, tenant).await?;
    let memberships = tessera_core::auth::memberships(&services.db, user).await?;
    leptos_axum::redirect(crate::api::session::landing(&memberships, tenant));
    Ok(())
}
