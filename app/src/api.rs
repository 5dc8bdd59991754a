//! Server functions: the UI's only way to the server. Each is a POST under `/api/`, checked
//! for a same-site `Origin` by the server's middleware, and thin: session and role checks
//! here, the work in `tessera_core`.

use leptos::prelude::*;

use crate::dto::*;
use crate::error::AppError;

#[cfg(feature = "ssr")]
use crate::server::{self as srv, core_err, fail};

/// Drops every replica's cached view of the clinic (keys, agents, plan, cap) after a change.
#[cfg(feature = "ssr")]
async fn clinic_changed(services: &tessera_core::Services, tenant: tessera_core::TenantId) {
    services
        .gateway
        .invalidate(tessera_core::llm::Change::Tenant(tenant))
        .await;
}

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
    let payment_notice = payment_notice(&services, &v).await;
    Ok(Some(SessionInfo {
        payment_notice,
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

/// The failed-payment banner for this person, if the clinic has one (from the cached limits,
/// so it costs no query on most pages). A failure to read them costs the banner, not the page.
#[cfg(feature = "ssr")]
async fn payment_notice(
    services: &tessera_core::Services,
    v: &tessera_core::auth::Viewer,
) -> Option<PaymentNotice> {
    use tessera_core::billing;
    let limits = match services.gateway.limits(v.tenant.id).await {
        Ok(limits) => limits,
        Err(e) => {
            tracing::error!(error = ?e, "limits unavailable for the payment banner");
            return None;
        }
    };
    let failed = limits.payment_failed_at?;
    let grace = services.config.billing_grace_days;
    let who = if v.role.is_admin() {
        "Update the payment method under Billing → Manage billing"
    } else {
        "Ask an owner or admin of the clinic to update the payment method"
    };
    let now = time::OffsetDateTime::now_utc();
    Some(match billing::payment_block(Some(failed), grace, now) {
        Some(_) => PaymentNotice {
            message: format!(
                "Model calls are paused: a payment failed on {} and the grace period has ended. {who}; calls resume as soon as a payment succeeds.",
                billing::day(failed)
            ),
            blocked: true,
        },
        None => PaymentNotice {
            message: format!(
                "A payment failed on {}. {who} by {}, or model calls will pause.",
                billing::day(failed),
                billing::day(billing::grace_ends(failed, grace))
            ),
            blocked: false,
        },
    })
}

/// Admin -> Billing: the plan, this month's use against the allowance, the projected overage,
/// and the plans on offer.
#[server(endpoint = "billing")]
pub async fn get_billing() -> Result<BillingOverview, AppError> {
    use tessera_core::{billing, metering};
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let account = billing::account(&services.db, v.tenant.id)
        .await
        .map_err(core_err)?;
    let plans = billing::plans(services.db.pool()).await.map_err(core_err)?;
    let limits = services
        .gateway
        .limits(v.tenant.id)
        .await
        .map_err(core_err)?;
    let now = time::OffsetDateTime::now_utc();
    let month = metering::month_of(now);
    let (start, end) = metering::month_bounds(&month).map_err(core_err)?;
    let (usage, _) = services
        .gateway
        .metering
        .month_usage(v.tenant.id, &month)
        .await
        .map_err(core_err)?;
    let agents = tessera_core::agents::list(&services.db, v.tenant.id)
        .await
        .map_err(core_err)?
        .len() as i64;
    let plan = &account.plan;
    let option = |p: &billing::Plan| PlanOption {
        id: p.id.clone(),
        name: p.name.clone(),
        base_price_micro_usd: p.base_price_micro_usd,
        included_tokens: p.included_tokens,
        storage_mb: p.storage_mb,
        overage_micro_usd_per_1k: p.overage_micro_usd_per_1k,
        max_agents: p.max_agents,
        self_serve: p.self_serve,
    };
    Ok(BillingOverview {
        enabled: services.stripe.is_some(),
        plan: option(plan),
        period_start: billing::day(start),
        period_end: billing::day(end - time::Duration::seconds(1)),
        live_subscription: account.has_live_subscription(),
        renews: account
            .current_period_end
            .filter(|_| account.has_live_subscription())
            .map(billing::day),
        subscription_status: account.subscription_status.clone(),
        has_customer: account.stripe_customer_id.is_some(),
        used_tokens: usage.tokens,
        overage_tokens: plan
            .included_tokens
            .map_or(0, |i| (usage.tokens - i).max(0)),
        projected_overage_micro_usd: billing::projected_overage_micro_usd(
            usage.tokens,
            plan.included_tokens,
            plan.overage_micro_usd_per_1k,
            limits.spending_cap_micro_usd,
            (now - start).whole_seconds(),
            (end - start).whole_seconds(),
        ),
        agents,
        plans: plans.iter().map(option).collect(),
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
    clinic_changed(&services, v.tenant.id).await;
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
    clinic_changed(&services, v.tenant.id).await;
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
    clinic_changed(&services, v.tenant.id).await;
    Ok(())
}

#[cfg(feature = "ssr")]
fn agent_row(a: tessera_core::agents::Agent) -> AgentRow {
    AgentRow {
        id: a.id.to_string(),
        temperature: format!("{}", a.temperature()),
        slug: a.slug,
        name: a.name,
        description: a.description,
        system_prompt: a.system_prompt,
        model: a.model,
        max_reply_tokens: a.max_reply_tokens,
        context_tokens: a.context_tokens,
    }
}

/// Admin -> Agents: the agents, the plan's limit, and the models the clinic's keys offer.
#[server(endpoint = "agents")]
pub async fn get_agents_page() -> Result<AgentsPage, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let agents = tessera_core::agents::list(&services.db, v.tenant.id)
        .await
        .map_err(core_err)?;
    let limits = services
        .gateway
        .limits(v.tenant.id)
        .await
        .map_err(core_err)?;
    let max_agents = tessera_core::agents::max_agents(&services.db, v.tenant.id)
        .await
        .map_err(core_err)?;
    let mut models = Vec::new();
    for provider in tessera_core::keys::Provider::ALL {
        if let Ok(Some(key)) = services.gateway.usable_key(v.tenant.id, provider).await {
            if let Ok(list) =
                tessera_core::llm::list_models(&services.http, &services.config, &key).await
            {
                models.extend(list);
            }
        }
    }
    models.sort();
    models.dedup();
    Ok(AgentsPage {
        agents: agents.into_iter().map(agent_row).collect(),
        plan_name: limits.plan_name,
        max_agents,
        models,
    })
}

/// Creates an agent (no `id`) or changes one.
#[server(endpoint = "save_agent")]
#[allow(clippy::too_many_arguments)]
pub async fn save_agent(
    id: Option<String>,
    name: String,
    description: Option<String>,
    system_prompt: Option<String>,
    model: String,
    temperature: Option<String>,
    max_reply_tokens: Option<String>,
    context_tokens: Option<String>,
) -> Result<AgentRow, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let input = tessera_core::agents::AgentInput {
        name,
        description: description.unwrap_or_default(),
        system_prompt: system_prompt.unwrap_or_default(),
        model,
        temperature: temperature.unwrap_or_default(),
        max_reply_tokens: max_reply_tokens.unwrap_or_default(),
        context_tokens: context_tokens.unwrap_or_default(),
    };
    let agent = match id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => {
            let id: uuid::Uuid = srv::parse_id(id)?;
            tessera_core::agents::update(&services.db, v.tenant.id, srv::actor(&v), id, &input)
                .await
        }
        None => {
            tessera_core::agents::create(&services.db, v.tenant.id, srv::actor(&v), &input).await
        }
    }
    .map_err(core_err)?;
    clinic_changed(&services, v.tenant.id).await;
    Ok(agent_row(agent))
}

#[server(endpoint = "delete_agent")]
pub async fn delete_agent(id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::agents::delete(&services.db, v.tenant.id, srv::actor(&v), id)
        .await
        .map_err(core_err)?;
    clinic_changed(&services, v.tenant.id).await;
    Ok(())
}

#[cfg(feature = "ssr")]
fn chatter(v: &tessera_core::auth::Viewer) -> tessera_core::chat::Chatter {
    tessera_core::chat::Chatter {
        tenant: v.tenant.id,
        user: v.user.id,
    }
}

/// The chat start page: the person's conversations (newest first) and the clinic's agents.
#[server(endpoint = "chat_home")]
pub async fn get_chat_home() -> Result<ChatHome, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let conversations = tessera_core::chat::list(&services.db, chatter(&v))
        .await
        .map_err(core_err)?;
    let agents = tessera_core::agents::list(&services.db, v.tenant.id)
        .await
        .map_err(core_err)?;
    Ok(ChatHome {
        conversations: conversations
            .into_iter()
            .map(|c| ConversationRow {
                id: c.id.to_string(),
                title: c.title,
                agent_name: c.agent_name,
                updated: srv::date(c.updated_at),
            })
            .collect(),
        agents: agents.into_iter().map(agent_row).collect(),
    })
}

/// One of the person's conversations. Anyone else gets 404.
#[server(endpoint = "conversation")]
pub async fn get_conversation(id: String) -> Result<ConversationView, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    let (c, messages) = tessera_core::chat::get(&services.db, chatter(&v), id)
        .await
        .map_err(core_err)?;
    Ok(ConversationView {
        id: c.id.to_string(),
        title: c.title,
        agent_name: c.agent_name,
        messages: messages
            .into_iter()
            .map(|m| MessageView {
                id: m.id.to_string(),
                role: m.role,
                content: m.content,
                status: m.status,
                error: m.error,
            })
            .collect(),
    })
}

/// Starts a conversation with an agent; its first reply streams from `/chat/replies/<id>`.
#[server(endpoint = "start_conversation")]
pub async fn start_conversation(agent_id: String, text: String) -> Result<Sent, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let agent: uuid::Uuid = agent_id
        .trim()
        .parse()
        .map_err(|_| fail(AppError::Invalid("Choose an agent to talk to.".into())))?;
    let conversation = tessera_core::chat::start(&services.db, chatter(&v), agent, &text)
        .await
        .map_err(core_err)?;
    let reply = tessera_core::chat::post(&services.db, chatter(&v), conversation, &text)
        .await
        .map_err(core_err)?;
    // A form posted before the page was interactive lands on the conversation, whose page then
    // starts the reply.
    leptos_axum::redirect(&format!("/chat/{conversation}"));
    Ok(Sent {
        conversation_id: conversation.to_string(),
        reply_id: reply.to_string(),
    })
}

/// Adds a message to a conversation; its reply streams from `/chat/replies/<id>`.
#[server(endpoint = "send_message")]
pub async fn send_message(conversation_id: String, text: String) -> Result<Sent, AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&conversation_id)?;
    let reply = tessera_core::chat::post(&services.db, chatter(&v), id, &text)
        .await
        .map_err(core_err)?;
    Ok(Sent {
        conversation_id,
        reply_id: reply.to_string(),
    })
}

#[server(endpoint = "rename_conversation")]
pub async fn rename_conversation(id: String, title: String) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::chat::rename(&services.db, chatter(&v), id, &title)
        .await
        .map_err(core_err)
}

#[server(endpoint = "delete_conversation")]
pub async fn delete_conversation(id: String) -> Result<(), AppError> {
    let v = srv::require_viewer().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::chat::delete(&services.db, chatter(&v), id)
        .await
        .map_err(core_err)
}

/// Admin -> Usage: a month's tokens per day by model, by agent and by person or API key, and
/// the month before for comparison. `month` is `YYYY-MM` (UTC); the current month by default.
#[server(endpoint = "usage_dashboard")]
pub async fn get_usage_dashboard(month: Option<String>) -> Result<UsageDashboard, AppError> {
    use tessera_core::metering::{self, Breakdown};
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let month = match month.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => metering::month_of(time::OffsetDateTime::now_utc()),
    };
    let previous = metering::previous_month(&month).map_err(core_err)?;
    let (start, end) = metering::month_bounds(&month).map_err(core_err)?;
    let days = (end - start).whole_days() as u32;
    let mut charts = Vec::new();
    let mut requests_per_day = vec![0i64; days as usize];
    let (mut tokens, mut requests, mut cost) = (0, 0, 0);
    for (by, title) in [
        (Breakdown::Model, "Tokens per day by model"),
        (Breakdown::Agent, "Tokens per day by agent"),
        (Breakdown::Caller, "Tokens per day by person or API key"),
    ] {
        let rows = metering::daily_usage(&services.db, v.tenant.id, &month, by)
            .await
            .map_err(core_err)?;
        let mut series: Vec<ChartSeries> = Vec::new();
        for r in &rows {
            let day = usize::from(r.day.day()) - 1;
            let s = match series.iter_mut().position(|s| s.name == r.key) {
                Some(i) => &mut series[i],
                None => {
                    series.push(ChartSeries {
                        name: r.key.clone(),
                        values: vec![0; days as usize],
                    });
                    series.last_mut().expect("just pushed")
                }
            };
            if let Some(v) = s.values.get_mut(day) {
                *v += r.tokens;
            }
            if by == Breakdown::Model {
                tokens += r.tokens;
                requests += r.requests;
                cost += r.cost_micro_usd;
                if let Some(n) = requests_per_day.get_mut(day) {
                    *n += r.requests;
                }
            }
        }
        // Largest first; the rest beyond seven share one colour as "Other".
        series.sort_by_key(|s| std::cmp::Reverse(s.values.iter().sum::<i64>()));
        if series.len() > 8 {
            let rest = series.split_off(7);
            let mut other = vec![0; days as usize];
            for s in rest {
                for (o, v) in other.iter_mut().zip(s.values) {
                    *o += v;
                }
            }
            series.push(ChartSeries {
                name: "Other".into(),
                values: other,
            });
        }
        charts.push(DailyChart {
            title: title.into(),
            series,
        });
    }
    let before = metering::ledger_totals(&services.db, v.tenant.id, &previous)
        .await
        .map_err(core_err)?;
    Ok(UsageDashboard {
        month,
        previous_month: previous,
        days,
        charts,
        requests_per_day,
        tokens,
        requests,
        cost_micro_usd: cost,
        previous_tokens: before.tokens,
        previous_requests: before.requests,
        previous_cost_micro_usd: before.cost_micro_usd,
    })
}
