//! Server functions: the UI's only way to the server. Each is a POST under `/api/`, checked
//! for a same-site `Origin` by the server's middleware, and thin: session and role checks
//! here, the work in `tessera_core`.

use leptos::prelude::*;

use crate::dto::*;
use crate::error::AppError;

#[cfg(feature = "ssr")]
use crate::server::{self as srv, core_err, fail};

/// Who is signed in, or `None`.
#[server(endpoint = "session")]
pub async fn get_session() -> Result<Option<SessionInfo>, AppError> {
    let Some(v) = srv::viewer().await? else {
        return Ok(None);
    };
    let services = srv::services()?;
    let clinics = tessera_core::auth::memberships(&services.db, v.user.id)
        .await
        .map_err(core_err)?;
    Ok(Some(SessionInfo {
        user_id: v.user.id.to_string(),
        name: v.user.name,
        email: v.user.email,
        clinic: Clinic {
            id: v.tenant.id.to_string(),
            name: v.tenant.name,
            slug: v.tenant.slug,
        },
        role: srv::role_to_dto(v.role),
        clinics: clinics
            .into_iter()
            .map(|m| ClinicChoice {
                id: m.tenant.id.to_string(),
                name: m.tenant.name,
                role: srv::role_to_dto(m.role),
            })
            .collect(),
    }))
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
    let (user, tenant) = tessera_core::auth::sign_up(
        &services.db,
        tessera_core::auth::SignUp {
            clinic_name: &clinic_name,
            name: &name,
            email: &email,
            password: &password,
        },
    )
    .await
    .map_err(core_err)?;
    srv::start_session(user, tenant).await?;
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "sign_in")]
pub async fn sign_in(email: String, password: String) -> Result<(), AppError> {
    let services = srv::services()?;
    let ip = srv::client_ip();
    services
        .throttle
        .attempt(&email, ip)
        .await
        .map_err(core_err)?;
    let user = tessera_core::auth::authenticate(&services.db, &email, &password)
        .await
        .map_err(core_err)?;
    services
        .throttle
        .succeeded(&email, ip)
        .await
        .map_err(core_err)?;
    let memberships = tessera_core::auth::memberships(&services.db, user)
        .await
        .map_err(core_err)?;
    let Some(first) = memberships
        .iter()
        .find(|m| m.tenant.active)
        .or(memberships.first())
    else {
        return Err(fail(AppError::Forbidden(
            "Your account doesn't belong to any clinic any more. Ask a clinic admin to invite you again.".into(),
        )));
    };
    srv::start_session(user, first.tenant.id).await?;
    leptos_axum::redirect("/");
    Ok(())
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
    match tessera_core::auth::viewer(&services.db, v.user.id, tenant)
        .await
        .map_err(core_err)?
    {
        Some(_) => srv::switch_session_tenant(tenant).await?,
        None => return Err(fail(AppError::NotFound)),
    }
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "members")]
pub async fn list_members() -> Result<MembersPage, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let actor = srv::actor(&v);
    let members = tessera_core::auth::members::list(&services.db, v.tenant.id, actor)
        .await
        .map_err(core_err)?;
    let invitations = tessera_core::auth::invitations::pending(&services.db, v.tenant.id, actor)
        .await
        .map_err(core_err)?;
    Ok(MembersPage {
        me: v.user.id.to_string(),
        my_role: srv::role_to_dto(v.role),
        members: members
            .into_iter()
            .map(|m| MemberRow {
                user_id: m.user_id.to_string(),
                name: m.name,
                email: m.email,
                role: srv::role_to_dto(m.role),
                joined: srv::date(m.joined_at),
            })
            .collect(),
        invitations: invitations
            .into_iter()
            .map(|i| PendingInvite {
                id: i.id.to_string(),
                email: i.email,
                role: srv::role_to_dto(i.role),
                expires: srv::date(i.expires_at),
            })
            .collect(),
    })
}

#[server(endpoint = "invite_member")]
pub async fn invite_member(email: String, role: String) -> Result<InviteCreated, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let role = srv::parse_role(&role)?;
    let ttl = time::Duration::hours(services.config.invite_ttl_hours);
    let created = tessera_core::auth::invitations::create(
        &services.db,
        v.tenant.id,
        srv::actor(&v),
        &email,
        role,
        ttl,
    )
    .await
    .map_err(core_err)?;
    Ok(InviteCreated {
        email: created.invitation.email,
        role: srv::role_to_dto(created.invitation.role),
        link: format!("{}/invite/{}", services.config.public_url, created.token),
        expires: srv::date(created.invitation.expires_at),
    })
}

#[server(endpoint = "change_member_role")]
pub async fn change_member_role(user_id: String, role: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let target: tessera_core::UserId = srv::parse_id(&user_id)?;
    tessera_core::auth::members::change_role(
        &services.db,
        v.tenant.id,
        srv::actor(&v),
        target,
        srv::parse_role(&role)?,
    )
    .await
    .map_err(core_err)
}

#[server(endpoint = "remove_member")]
pub async fn remove_member(user_id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let target: tessera_core::UserId = srv::parse_id(&user_id)?;
    tessera_core::auth::members::remove(&services.db, v.tenant.id, srv::actor(&v), target)
        .await
        .map_err(core_err)
}

#[server(endpoint = "revoke_invitation")]
pub async fn revoke_invitation(invitation_id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: tessera_core::tenancy::InvitationId = srv::parse_id(&invitation_id)?;
    tessera_core::auth::invitations::revoke(&services.db, v.tenant.id, srv::actor(&v), id)
        .await
        .map_err(core_err)
}

/// What an invitation link offers; 404 for an unknown link, 410 for a used, expired or
/// withdrawn one.
#[server(endpoint = "invitation")]
pub async fn get_invitation(token: String) -> Result<InvitationInfo, AppError> {
    let services = srv::services()?;
    let view = tessera_core::auth::invitations::lookup(&services.db, &token)
        .await
        .map_err(core_err)?;
    Ok(InvitationInfo {
        clinic_name: view.clinic_name,
        email: view.email,
        role: srv::role_to_dto(view.role),
        account_exists: view.account_exists,
    })
}

#[server(endpoint = "accept_invitation")]
pub async fn accept_invitation(
    token: String,
    name: Option<String>,
    password: String,
) -> Result<(), AppError> {
    let services = srv::services()?;
    let (user, tenant) = tessera_core::auth::invitations::accept(
        &services.db,
        &token,
        name.as_deref().unwrap_or(""),
        &password,
    )
    .await
    .map_err(core_err)?;
    srv::start_session(user, tenant).await?;
    leptos_axum::redirect("/");
    Ok(())
}

/// Every provider with the clinic's key for it, if any (admins only).
#[server(endpoint = "provider_keys")]
pub async fn list_provider_keys() -> Result<Vec<ProviderKeyRow>, AppError> {
    use tessera_core::keys::Provider;
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let stored = tessera_core::keys::list(&services.db, v.tenant.id, srv::actor(&v))
        .await
        .map_err(core_err)?;
    Ok(Provider::ALL
        .into_iter()
        .map(|p| {
            let k = stored.iter().find(|k| k.provider == p);
            ProviderKeyRow {
                provider: p.as_str().to_string(),
                label: p.label().to_string(),
                configured: k.is_some(),
                last_four: k.and_then(|k| k.last_four.clone()),
                base_url: k.and_then(|k| k.base_url.clone()),
                added_by: k.and_then(|k| k.added_by.clone()),
                added: k.map(|k| srv::date(k.created_at)),
                last_used: k.and_then(|k| k.last_used_at).map(srv::date),
            }
        })
        .collect())
}

/// Adds or replaces the clinic's key for a provider. The key is encrypted at once and never
/// sent back.
#[server(endpoint = "save_provider_key")]
pub async fn save_provider_key(
    provider: String,
    key: Option<String>,
    base_url: Option<String>,
) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let provider: tessera_core::keys::Provider = provider.parse().map_err(core_err)?;
    let base_url = base_url.as_deref().unwrap_or("").trim();
    if provider == tessera_core::keys::Provider::OpenAiCompatible
        && !base_url.is_empty()
        && !services.config.allow_private_endpoints
    {
        // Refuse addresses inside the server's own network before storing anything.
        tessera_core::llm::guard_endpoint(base_url)
            .await
            .map_err(|e| fail(AppError::Invalid(e.message)))?;
    }
    tessera_core::keys::set(
        &services.db,
        services.master_keys(),
        v.tenant.id,
        srv::actor(&v),
        provider,
        key.as_deref().unwrap_or(""),
        base_url,
    )
    .await
    .map_err(core_err)?;
    services
        .gateway
        .invalidate(tessera_core::llm::Change::Tenant(v.tenant.id))
        .await;
    Ok(())
}

#[server(endpoint = "delete_provider_key")]
pub async fn delete_provider_key(provider: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let provider: tessera_core::keys::Provider = provider.parse().map_err(core_err)?;
    tessera_core::keys::delete(&services.db, v.tenant.id, srv::actor(&v), provider)
        .await
        .map_err(core_err)?;
    services
        .gateway
        .invalidate(tessera_core::llm::Change::Tenant(v.tenant.id))
        .await;
    Ok(())
}

/// Makes one small real call with the clinic's key and reports what the provider said.
#[server(endpoint = "test_provider_key")]
pub async fn test_provider_key(provider: String) -> Result<KeyCheck, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let provider: tessera_core::keys::Provider = provider.parse().map_err(core_err)?;
    let key =
        tessera_core::keys::resolve(&services.db, services.master_keys(), v.tenant.id, provider)
            .await
            .map_err(core_err)?
            .ok_or_else(|| {
                fail(AppError::Invalid(format!(
                    "No {} key is saved yet.",
                    provider.label()
                )))
            })?;
    let probe = tessera_core::llm::probe(&services.http, &services.config, &key).await;
    Ok(KeyCheck {
        ok: probe.ok,
        message: probe.message,
    })
}

#[server(endpoint = "api_keys")]
pub async fn list_api_keys() -> Result<Vec<ApiKeyRow>, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let keys = tessera_core::api_keys::list(&services.db, v.tenant.id, srv::actor(&v))
        .await
        .map_err(core_err)?;
    Ok(keys
        .into_iter()
        .map(|k| ApiKeyRow {
            id: k.id.to_string(),
            name: k.name,
            prefix: k.prefix,
            created_by: k.created_by,
            created: srv::date(k.created_at),
            last_used: k.last_used_at.map(srv::date),
            revoked: k.revoked_at.map(srv::date),
        })
        .collect())
}

#[server(endpoint = "create_api_key")]
pub async fn create_api_key(name: String) -> Result<CreatedApiKey, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let (info, token) =
        tessera_core::api_keys::create(&services.db, v.tenant.id, srv::actor(&v), &name)
            .await
            .map_err(core_err)?;
    Ok(CreatedApiKey {
        name: info.name,
        token,
    })
}

#[server(endpoint = "revoke_api_key")]
pub async fn revoke_api_key(id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::api_keys::revoke(&services.db, v.tenant.id, srv::actor(&v), id)
        .await
        .map_err(core_err)?;
    services
        .gateway
        .invalidate(tessera_core::llm::Change::ApiKey(id))
        .await;
    Ok(())
}

/// This month's use against the plan, from the live counters.
#[server(endpoint = "usage_summary")]
pub async fn get_usage() -> Result<UsageSummary, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let limits = services
        .gateway
        .limits(v.tenant.id)
        .await
        .map_err(core_err)?;
    let month = tessera_core::metering::month_of(time::OffsetDateTime::now_utc());
    let (usage, reserved) = services
        .gateway
        .metering
        .month_usage(v.tenant.id, &month)
        .await
        .map_err(core_err)?;
    Ok(UsageSummary {
        plan_name: limits.plan_name.clone(),
        month,
        included_tokens: limits.included_tokens,
        token_limit: limits.token_limit(),
        used_tokens: usage.tokens,
        reserved_tokens: reserved,
        requests: usage.requests,
        cost_micro_usd: usage.cost_micro_usd,
        overage_micro_usd_per_1k: limits.overage_micro_usd_per_1k,
        spending_cap_micro_usd: limits.spending_cap_micro_usd,
    })
}

/// Sets the monthly spending cap beyond the allowance: `stop` (none: calls stop when the
/// allowance is used up), `cap` (up to `amount` dollars) or `none` (no cap).
#[server(endpoint = "set_spending_cap")]
pub async fn set_spending_cap(mode: String, amount: Option<String>) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let cap = match mode.as_str() {
        "stop" => Some(0),
        "none" => None,
        "cap" => Some(
            crate::dto::parse_dollars(amount.as_deref().unwrap_or(""))
                .map_err(|m| fail(AppError::Invalid(m)))?,
        ),
        _ => {
            return Err(fail(AppError::Invalid(
                "Choose how to handle use beyond the allowance.".into(),
            )))
        }
    };
    tessera_core::metering::set_spending_cap(&services.db, v.tenant.id, srv::actor(&v), cap)
        .await
        .map_err(core_err)?;
    services
        .gateway
        .invalidate(tessera_core::llm::Change::Tenant(v.tenant.id))
        .await;
    Ok(())
}
