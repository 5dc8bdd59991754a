//! Who is signed in, signing up, in and out, and switching clinics.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::Role;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server::{self as srv, fail};

/// The clinic a session acts in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clinic {
    pub id: String,
    pub name: String,
    pub slug: String,
}

/// A clinic the person may switch to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicChoice {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// The failed-payment banner every page shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentNotice {
    pub message: String,
    /// Model calls are stopped (the grace period has ended).
    pub blocked: bool,
}

/// Who is signed in, where, and as what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub clinic: Clinic,
    pub role: Role,
    pub clinics: Vec<ClinicChoice>,
    /// A failed payment, as the banner on every page says it (worded for the person's role).
    pub payment_notice: Option<PaymentNotice>,
    /// A platform operator (the navigation links the operator console).
    pub operator: bool,
    /// False when an operator has deactivated the clinic (every page says so).
    pub clinic_active: bool,
}

/// Who is signed in, or `None`.
#[server(endpoint = "session")]
pub async fn get_session() -> Result<Option<SessionInfo>, AppError> {
    let Some(v) = srv::signed_in_viewer().await? else {
        return Ok(None);
    };
    let services = srv::services()?;
    let clinics = tessera_core::auth::memberships(&services.db, v.user.id).await?;
    Ok(Some(SessionInfo {
        operator: tessera_core::operator::is_operator(&services.db, v.user.id).await?,
        clinic_active: v.tenant.active,
        payment_notice: payment_notice(&services, &v).await,
        user_id: v.user.id.to_string(),
        name: v.user.name,
        email: v.user.email,
        clinic: Clinic {
            id: v.tenant.id.to_string(),
            name: v.tenant.name,
            slug: v.tenant.slug,
        },
        role: v.role,
        clinics: clinics
            .into_iter()
            .map(|m| ClinicChoice {
                id: m.tenant.id.to_string(),
                name: m.tenant.name,
                role: m.role,
            })
            .collect(),
    }))
}

/// The failed-payment banner for this person, if the clinic has one (from the gateway's cached
/// limits, so it costs no query on most pages). A failure to read them costs the banner, not
/// the page.
#[cfg(feature = "ssr")]
async fn payment_notice(
    services: &tessera_core::Services,
    v: &tessera_core::auth::Viewer,
) -> Option<PaymentNotice> {
    let limits = match services.gateway.limits(v.tenant.id).await {
        Ok(limits) => limits,
        Err(e) => {
            tracing::error!(error = %crate::server::error::chain(&e), "limits unavailable for the payment banner");
            return None;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    tessera_core::billing::payment_notice(&limits, v.role, services.config.billing_grace_days, now)
        .map(|n| PaymentNotice {
            message: n.message,
            blocked: n.blocked,
        })
}

/// Creates a clinic and its owner, and signs the owner in.
#[server(endpoint = "sign_up")]
pub async fn sign_up(
    clinic_name: String,
    name: String,
    email: String,
    password: String,
) -> Result<(), AppError> {
    let services = srv::services()?;
    services.throttle.signup(srv::client_ip()).await?;
    let (user, tenant) = tessera_core::auth::sign_up(
        &services.db,
        tessera_core::auth::SignUp {
            clinic_name: &clinic_name,
            name: &name,
            email: &email,
            password: &password,
        },
    )
    .await?;
    srv::start_session(user, tenant).await?;
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "sign_in")]
pub async fn sign_in(email: String, password: String) -> Result<(), AppError> {
    let services = srv::services()?;
    let ip = srv::client_ip();
    services.throttle.attempt(&email, ip).await?;
    let user = match tessera_core::auth::authenticate(&services.db, &email, &password).await {
        Ok(user) => user,
        Err(e) => {
            if matches!(e, tessera_core::Error::Unauthenticated(_)) {
                audit_sign_in(&services, &email, Err(())).await;
            }
            return Err(e.into());
        }
    };
    services.throttle.succeeded(&email, ip).await?;
    let memberships = tessera_core::auth::memberships(&services.db, user).await?;
    let Some(clinic) = tessera_core::auth::first_clinic(&memberships) else {
        if tessera_core::operator::is_operator(&services.db, user).await? {
            srv::start_operator_session(user).await?;
            audit_sign_in(&services, &email, Ok((user, None))).await;
            leptos_axum::redirect("/operator");
            return Ok(());
        }
        return Err(fail(AppError::Forbidden(
            "Your account doesn't belong to any clinic any more. Ask a clinic admin to invite you again.".into(),
        )));
    };
    srv::start_session(user, clinic).await?;
    audit_sign_in(&services, &email, Ok((user, Some(clinic)))).await;
    leptos_axum::redirect(landing(&memberships, clinic));
    Ok(())
}

/// Where a person lands in `clinic`: admins on the home page (its checklist and cards), staff
/// in the chat.
#[cfg(feature = "ssr")]
pub(crate) fn landing(
    memberships: &[tessera_core::auth::Membership],
    clinic: tessera_core::TenantId,
) -> &'static str {
    match memberships.iter().find(|m| m.tenant.id == clinic) {
        Some(m) if !m.role.is_admin() => "/chat",
        _ => "/",
    }
}

/// Writes a sign-in to the audit log; a failure to write it is logged, not the person's
/// problem.
#[cfg(feature = "ssr")]
async fn audit_sign_in(
    services: &tessera_core::Services,
    email: &str,
    outcome: Result<(tessera_core::UserId, Option<tessera_core::TenantId>), ()>,
) {
    if let Err(e) = tessera_core::auth::accounts::audit_sign_in(&services.db, email, outcome).await
    {
        tracing::error!(error = %crate::server::error::chain(&e), "could not record a sign-in in the audit log");
    }
}

#[server(endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), AppError> {
    srv::end_session().await?;
    leptos_axum::redirect("/signin");
    Ok(())
}

/// Moves the session to another clinic the person belongs to.
#[server(endpoint = "switch_clinic")]
pub async fn switch_clinic(tenant_id: String) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let tenant: tessera_core::TenantId = srv::parse_id(&tenant_id)?;
    let services = srv::services()?;
    if tessera_core::auth::viewer(&services.db, v.user.id, tenant)
        .await?
        .is_none()
    {
        return Err(fail(AppError::NotFound));
    }
    srv::switch_session_tenant(tenant).await?;
    leptos_axum::redirect("/");
    Ok(())
}
