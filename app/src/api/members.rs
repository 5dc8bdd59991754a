//! Admin -> Members: the people of the clinic, their roles, and invitations.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::Role;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;
#[cfg(feature = "ssr")]
use tessera_core::format::date;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// `YYYY-MM-DD`, formatted on the server so both renders agree.
    pub joined: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInvite {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub expires: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    pub me: String,
    pub my_role: Role,
    pub members: Vec<MemberRow>,
    pub invitations: Vec<PendingInvite>,
}

/// A fresh invitation: the link is shown once, to the admin who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    pub email: String,
    pub role: Role,
    pub link: String,
    pub expires: String,
}

#[server(endpoint = "members")]
pub async fn list_members() -> Result<MembersPage, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let members = tessera_core::auth::members::list(&services.db, v.tenant.id, v.actor()).await?;
    let invitations =
        tessera_core::auth::invitations::pending(&services.db, v.tenant.id, v.actor()).await?;
    Ok(MembersPage {
        me: v.user.id.to_string(),
        my_role: v.role,
        members: members
            .into_iter()
            .map(|m| MemberRow {
                user_id: m.user_id.to_string(),
                name: m.name,
                email: m.email,
                role: m.role,
                joined: date(m.joined_at),
            })
            .collect(),
        invitations: invitations
            .into_iter()
            .map(|i| PendingInvite {
                id: i.id.to_string(),
                email: i.email,
                role: i.role,
                expires: date(i.expires_at),
            })
            .collect(),
    })
}

#[server(endpoint = "invite_member")]
pub async fn invite_member(email: String, role: String) -> Result<InviteCreated, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let role: Role = role.parse()?;
    let ttl = time::Duration::hours(services.config.invite_ttl_hours);
    let created = tessera_core::auth::invitations::create(
        &services.db,
        v.tenant.id,
        v.actor(),
        &email,
        role,
        ttl,
    )
    .await?;
    Ok(InviteCreated {
        email: created.invitation.email,
        role: created.invitation.role,
        link: format!("{}/invite/{}", services.config.public_url, created.token),
        expires: date(created.invitation.expires_at),
    })
}

#[server(endpoint = "change_member_role")]
pub async fn change_member_role(user_id: String, role: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let target: tessera_core::UserId = srv::parse_id(&user_id)?;
    let role: Role = role.parse()?;
    tessera_core::auth::members::change_role(&services.db, v.tenant.id, v.actor(), target, role)
        .await?;
    Ok(())
}

#[server(endpoint = "remove_member")]
pub async fn remove_member(user_id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let target: tessera_core::UserId = srv::parse_id(&user_id)?;
    tessera_core::auth::members::remove(&services.db, v.tenant.id, v.actor(), target).await?;
    Ok(())
}

#[server(endpoint = "revoke_invitation")]
pub async fn revoke_invitation(invitation_id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: tessera_core::tenancy::InvitationId = srv::parse_id(&invitation_id)?;
    tessera_core::auth::invitations::revoke(&services.db, v.tenant.id, v.actor(), id).await?;
    Ok(())
}
