//! The operator console (`/operator`, platform operators only): clinics, feature flags and the
//! platform-wide audit log.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::api::audit::AuditRow;
use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// The signed-in operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorInfo {
    pub name: String,
    pub email: String,
    /// Whether they also belong to a clinic (the console links back to it).
    pub has_clinic: bool,
}

#[server(endpoint = "operator_session")]
pub async fn operator_session() -> Result<OperatorInfo, AppError> {
    let user = srv::require_operator().await?;
    let services = srv::services()?;
    let has_clinic = !tessera_core::auth::memberships(&services.db, user.id)
        .await?
        .is_empty();
    Ok(OperatorInfo {
        name: user.name,
        email: user.email,
        has_clinic,
    })
}

/// A clinic in the console's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub plan: String,
    pub active: bool,
    pub members: i64,
    pub tokens: String,
    pub cost: String,
    pub storage: String,
    pub subscription: String,
    pub created: String,
    /// An Enterprise clinic's own limits as typed in the form (empty: none).
    pub limit_tokens: String,
    pub limit_requests: String,
    pub limit_agents: String,
    pub limit_storage_mb: String,
}

#[cfg(feature = "ssr")]
fn clinic_row(c: tessera_core::operator::ClinicSummary) -> ClinicRow {
    use tessera_core::format::{date, thousands};
    ClinicRow {
        id: c.id.to_string(),
        name: c.name,
        slug: c.slug,
        plan: c.plan.to_string(),
        active: c.active,
        members: c.members,
        tokens: thousands(c.tokens),
        cost: tessera_core::format::dollars(c.cost_micro_usd),
        storage: tessera_core::format::bytes(c.storage_bytes),
        subscription: c.subscription_status.unwrap_or_else(|| "none".into()),
        created: date(c.created_at),
        limit_tokens: c.limits.included_tokens.map(thousands).unwrap_or_default(),
        limit_requests: c
            .limits
            .requests_per_minute
            .map(|n| n.to_string())
            .unwrap_or_default(),
        limit_agents: c
            .limits
            .max_agents
            .map(|n| n.to_string())
            .unwrap_or_default(),
        limit_storage_mb: c
            .limits
            .storage_mb
            .map(|n| n.to_string())
            .unwrap_or_default(),
    }
}

#[server(endpoint = "operator_clinics")]
pub async fn operator_clinics(search: String) -> Result<Vec<ClinicRow>, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let rows = tessera_core::operator::clinics(&services.db, op.id, &search).await?;
    Ok(rows.into_iter().map(clinic_row).collect())
}

/// A member in a clinic's detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub name: String,
    pub email: String,
    pub role: String,
    pub joined: String,
}

/// One clinic in detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicDetailView {
    pub clinic: ClinicRow,
    pub members: Vec<MemberRow>,
    pub agents: i64,
    pub documents: i64,
    pub recent: Vec<AuditRow>,
}

#[server(endpoint = "operator_clinic")]
pub async fn operator_clinic(id: String) -> Result<ClinicDetailView, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let id: tessera_core::TenantId = srv::parse_id(&id)?;
    let d = tessera_core::operator::clinic(&services.db, op.id, id).await?;
    Ok(ClinicDetailView {
        clinic: clinic_row(d.clinic),
        members: d
            .members
            .into_iter()
            .map(|m| MemberRow {
                name: m.name,
                email: m.email,
                role: m.role,
                joined: tessera_core::format::date(m.joined_at),
            })
            .collect(),
        agents: d.agents,
        documents: d.documents,
        recent: d.recent.into_iter().map(AuditRow::from).collect(),
    })
}

/// Activates (`active` = `true`) or deactivates a clinic.
#[server(endpoint = "operator_set_active")]
pub async fn set_clinic_active(id: String, active: String) -> Result<(), AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let id: tessera_core::TenantId = srv::parse_id(&id)?;
    tessera_core::operator::set_active(
        &services.db,
        &services.changes,
        op.id,
        id,
        active == "true",
    )
    .await?;
    Ok(())
}

#[server(endpoint = "operator_set_plan")]
pub async fn set_clinic_plan(id: String, plan: String) -> Result<(), AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let id: tessera_core::TenantId = srv::parse_id(&id)?;
    let plan: tessera_core::PlanId = plan
        .parse()
        .map_err(|_| srv::fail(AppError::Invalid(format!("{plan:?} is not a plan."))))?;
    tessera_core::operator::set_plan(&services.db, &services.changes, op.id, id, plan).await?;
    Ok(())
}

/// Sets an Enterprise clinic's own limits (each empty for none).
#[server(endpoint = "operator_set_limits")]
pub async fn set_clinic_limits(
    id: String,
    tokens: String,
    requests: String,
    agents: String,
    storage_mb: String,
) -> Result<(), AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let id: tessera_core::TenantId = srv::parse_id(&id)?;
    let limits =
        tessera_core::operator::OwnLimits::parse(&tokens, &requests, &agents, &storage_mb)?;
    tessera_core::operator::set_limits(&services.db, &services.changes, op.id, id, limits).await?;
    Ok(())
}

/// A flag in the console's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRow {
    pub key: String,
    pub description: String,
    pub kind: String,
    pub default: String,
    pub rules: usize,
    pub enabled: bool,
    pub version: i32,
    /// What the product does with it (`None`: nothing reads it yet).
    pub effect: Option<String>,
}

#[cfg(feature = "ssr")]
fn flag_row(f: &tessera_core::flags::Flag) -> FlagRow {
    FlagRow {
        key: f.key.clone(),
        description: f.description.clone(),
        kind: f.kind.as_str().into(),
        default: tessera_core::flags::show(&f.default),
        rules: f.rules.len(),
        enabled: f.enabled,
        version: f.version,
        effect: tessera_core::flags::effect(&f.key).map(Into::into),
    }
}

#[server(endpoint = "operator_flags")]
pub async fn operator_flags() -> Result<Vec<FlagRow>, AppError> {
    srv::require_operator().await?;
    let services = srv::services()?;
    let flags = tessera_core::flags::all(&services.db).await?;
    Ok(flags.iter().map(flag_row).collect())
}

/// A version in a flag's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRow {
    pub version: i32,
    pub note: String,
    pub by: String,
    pub at: String,
    pub enabled: bool,
    pub default: String,
    pub rules: String,
}

/// A flag with its rules as editable text and its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagDetail {
    pub flag: FlagRow,
    pub rules_text: String,
    pub history: Vec<VersionRow>,
}

#[server(endpoint = "operator_flag")]
pub async fn operator_flag(key: String) -> Result<FlagDetail, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let (flag, versions) = tessera_core::flags::history(&services.db, key.trim()).await?;
    let clinics = tessera_core::flags::clinics(&services.db, op.id).await?;
    let slug = |id: tessera_core::TenantId| {
        clinics
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_string(), |c| c.slug.clone())
    };
    Ok(FlagDetail {
        flag: flag_row(&flag),
        rules_text: tessera_core::flags::format_rules(&flag.rules, slug),
        history: versions
            .into_iter()
            .map(|v| VersionRow {
                version: v.flag.version,
                note: v.note,
                by: v.changed_by,
                at: tessera_core::format::date_time(v.changed_at),
                enabled: v.flag.enabled,
                default: tessera_core::flags::show(&v.flag.default),
                rules: tessera_core::flags::format_rules(&v.flag.rules, slug),
            })
            .collect(),
    })
}

#[server(endpoint = "operator_create_flag")]
pub async fn create_flag(
    key: String,
    description: String,
    kind: String,
    default: String,
    rules: String,
) -> Result<String, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let input = tessera_core::flags::FlagInput {
        key,
        description,
        kind,
        default,
        rules,
    };
    let flag = tessera_core::flags::create(&services.db, &services.changes, op.id, &input).await?;
    Ok(flag.key)
}

#[server(endpoint = "operator_update_flag")]
pub async fn update_flag(
    key: String,
    version: String,
    description: String,
    default: String,
    rules: String,
) -> Result<i32, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let expected: i32 = version
        .trim()
        .parse()
        .map_err(|_| srv::fail(AppError::Invalid("Reload the page and try again.".into())))?;
    let input = tessera_core::flags::FlagInput {
        key: key.clone(),
        description,
        kind: String::new(),
        default,
        rules,
    };
    let flag = tessera_core::flags::update(
        &services.db,
        &services.changes,
        op.id,
        &key,
        expected,
        &input,
    )
    .await?;
    Ok(flag.version)
}

/// How many clinics get which value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewView {
    pub clinics: usize,
    pub counts: Vec<(String, usize)>,
    /// The named clinic: its name, value and why.
    pub clinic: Option<(String, String, String)>,
    /// A clinic was named but none matched.
    pub unknown_clinic: bool,
}

#[server(endpoint = "operator_preview_flag")]
pub async fn preview_flag(
    key: String,
    description: String,
    default: String,
    rules: String,
    clinic: String,
) -> Result<PreviewView, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let input = tessera_core::flags::FlagInput {
        key: key.clone(),
        description,
        kind: String::new(),
        default,
        rules,
    };
    let p = tessera_core::flags::preview(&services.db, op.id, &key, &input, &clinic).await?;
    let reason = |r: tessera_core::flags::Reason| {
        match r {
            tessera_core::flags::Reason::Disabled => "the flag is switched off",
            tessera_core::flags::Reason::TargetingMatch => "a clinic or plan rule",
            tessera_core::flags::Reason::Split => "a percentage rule",
            tessera_core::flags::Reason::Default => "no rule matches: the default",
        }
        .to_string()
    };
    Ok(PreviewView {
        clinics: p.clinics,
        counts: p
            .counts
            .iter()
            .map(|(v, n)| (tessera_core::flags::show(v), *n))
            .collect(),
        unknown_clinic: !clinic.trim().is_empty() && p.clinic.is_none(),
        clinic: p.clinic.map(|(name, e)| {
            let why = format!("{} ({})", reason(e.reason), e.variant);
            (name, tessera_core::flags::show(&e.value), why)
        }),
    })
}

/// Switches a flag on (`enabled` = `true`) or off as a whole.
#[server(endpoint = "operator_flag_enabled")]
pub async fn set_flag_enabled(key: String, enabled: String) -> Result<(), AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    tessera_core::flags::set_enabled(
        &services.db,
        &services.changes,
        op.id,
        key.trim(),
        enabled == "true",
    )
    .await?;
    Ok(())
}

#[server(endpoint = "operator_rollback_flag")]
pub async fn rollback_flag(key: String, version: String) -> Result<(), AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let version: i32 = version
        .trim()
        .parse()
        .map_err(|_| srv::fail(AppError::Invalid("Choose a version.".into())))?;
    tessera_core::flags::rollback(&services.db, &services.changes, op.id, key.trim(), version)
        .await?;
    Ok(())
}

#[server(endpoint = "operator_audit")]
pub async fn operator_audit(
    person: String,
    area: String,
    from: String,
    to: String,
) -> Result<Vec<AuditRow>, AppError> {
    let op = srv::require_operator().await?;
    let services = srv::services()?;
    let filter = tessera_core::audit::Filter::parse(&person, &area, &from, &to, 500)?;
    let rows = tessera_core::audit::list_all(&services.db, op.id, &filter).await?;
    Ok(rows.into_iter().map(AuditRow::from).collect())
}
