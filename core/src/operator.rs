//! The operator console: platform operators read every clinic (its plan, status, members,
//! this month's tokens and cost, storage) and activate, deactivate or re-plan one. Everything
//! here runs in the operator scope ([`Db::begin_operator`]), which row-level security honours
//! only for people in `platform_operators`; an operator is a member of no clinic by being one.
//! Operators are added by the CLI (`server operator add <email>`), as the schema owner.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::audit::{self, By, Event};
use crate::changes::{Change, Changes};
use crate::db::Db;
use crate::tenancy::{TenantId, UserId};
use crate::{Error, PlanId, Result};

/// Whether a person is a platform operator.
pub async fn is_operator(db: &Db, user: UserId) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM platform_operators WHERE user_id = $1)")
            .bind(user)
            .fetch_one(db.pool())
            .await?,
    )
}

/// What `server operator add` did.
#[derive(Debug)]
pub enum Added {
    /// An existing account became an operator.
    Existing,
    /// It already was one.
    Already,
    /// A new account was made, with this password (shown once).
    Created { password: String },
}

/// Makes the account with `email` a platform operator, creating the account (with a random
/// password, returned) when there is none. Runs as the schema owner.
pub async fn add(owner: &PgPool, email: &str) -> Result<Added> {
    let email = crate::auth::Email::parse(email)?;
    let mut tx = owner.begin().await?;
    let existing: Option<UserId> =
        sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = $1")
            .bind(email.normalized())
            .fetch_optional(&mut *tx)
            .await?;
    let (user, created) = match existing {
        Some(id) => (id, None),
        None => {
            let password = crate::auth::accounts::random_password();
            let hash = crate::auth::password::hash(&crate::auth::Password::new(&password)?).await?;
            let id = UserId::new();
            let name = email
                .as_str()
                .split('@')
                .next()
                .unwrap_or("Operator")
                .to_string();
            let name = crate::auth::accounts::parse_person_name(&name)
                .unwrap_or_else(|_| "Operator".into());
            crate::auth::accounts::insert_user(&mut tx, id, &email, &name, &hash).await?;
            (id, Some(password))
        }
    };
    let inserted = sqlx::query(
        "INSERT INTO platform_operators (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted > 0 {
        sqlx::query(
            "INSERT INTO audit_log (id, tenant_id, actor_kind, actor_label, action, target)
             VALUES ($1, NULL, 'system', 'server operator add', 'operator.added', $2)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(email.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(match (created, inserted) {
        (Some(password), _) => Added::Created { password },
        (None, 0) => Added::Already,
        (None, _) => Added::Existing,
    })
}

/// A clinic as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ClinicSummary {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub plan: PlanId,
    pub active: bool,
    pub members: i64,
    /// This calendar month (UTC).
    pub tokens: i64,
    pub cost_micro_usd: i64,
    pub storage_bytes: i64,
    pub subscription_status: Option<String>,
    pub created_at: OffsetDateTime,
    /// An Enterprise clinic's own limits (`None`: the plan's, which for Enterprise is none).
    #[sqlx(flatten)]
    pub limits: OwnLimits,
}

/// An Enterprise clinic's own limits; `None` leaves the plan's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OwnLimits {
    #[sqlx(rename = "limit_included_tokens")]
    pub included_tokens: Option<i64>,
    #[sqlx(rename = "limit_requests_per_minute")]
    pub requests_per_minute: Option<i32>,
    #[sqlx(rename = "limit_max_agents")]
    pub max_agents: Option<i32>,
    #[sqlx(rename = "limit_storage_mb")]
    pub storage_mb: Option<i32>,
}

impl OwnLimits {
    /// Reads limits as typed in the console: empty for none, else a whole number above zero.
    pub fn parse(tokens: &str, requests: &str, agents: &str, storage_mb: &str) -> Result<Self> {
        fn whole<T: std::str::FromStr + PartialOrd + Default>(
            raw: &str,
            what: &str,
        ) -> Result<Option<T>> {
            let raw = raw.trim().replace([',', '_', ' '], "");
            if raw.is_empty() {
                return Ok(None);
            }
            match raw.parse::<T>() {
                Ok(n) if n > T::default() => Ok(Some(n)),
                _ => Err(Error::invalid(format!(
                    "{what} must be a whole number above zero, or empty for no limit."
                ))),
            }
        }
        Ok(Self {
            included_tokens: whole(tokens, "Tokens a month")?,
            requests_per_minute: whole(requests, "Requests per minute")?,
            max_agents: whole(agents, "Agents")?,
            storage_mb: whole(storage_mb, "Storage (MB)")?,
        })
    }
}

const SUMMARY: &str = "SELECT t.id, t.name, t.slug, t.plan, t.active,
        (SELECT count(*) FROM memberships m WHERE m.tenant_id = t.id) AS members,
        COALESCE((SELECT sum(u.prompt_tokens + u.completion_tokens) FROM usage_events u
                   WHERE u.tenant_id = t.id AND u.occurred_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)::bigint AS tokens,
        COALESCE((SELECT sum(u.cost_micro_usd) FROM usage_events u
                   WHERE u.tenant_id = t.id AND u.occurred_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)::bigint AS cost_micro_usd,
        COALESCE((SELECT sum(d.size_bytes) FROM documents d WHERE d.tenant_id = t.id), 0)::bigint AS storage_bytes,
        t.subscription_status, t.created_at, t.limit_included_tokens, t.limit_requests_per_minute,
        t.limit_max_agents, t.limit_storage_mb
   FROM tenants t";

/// Clinics whose name or slug contains `search` (all when empty), by name; at most 500.
pub async fn clinics(db: &Db, operator: UserId, search: &str) -> Result<Vec<ClinicSummary>> {
    let mut tx = db.begin_operator(operator).await?;
    let sql = format!(
        "{SUMMARY} WHERE $1 = '' OR t.name ILIKE '%' || $1 || '%' OR t.slug ILIKE '%' || $1 || '%'
          ORDER BY lower(t.name), t.id LIMIT 500"
    );
    let rows = sqlx::query_as(&sql)
        .bind(search.trim())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// A member as the console shows one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct MemberSummary {
    pub name: String,
    pub email: String,
    pub role: String,
    pub joined_at: OffsetDateTime,
}

/// One clinic in detail.
#[derive(Clone, Debug, PartialEq)]
pub struct ClinicDetail {
    pub clinic: ClinicSummary,
    pub members: Vec<MemberSummary>,
    pub agents: i64,
    pub documents: i64,
    /// The clinic's latest audit entries.
    pub recent: Vec<audit::Entry>,
}

/// A clinic in detail (operators).
pub async fn clinic(db: &Db, operator: UserId, id: TenantId) -> Result<ClinicDetail> {
    let mut tx = db.begin_operator(operator).await?;
    let sql = format!("{SUMMARY} WHERE t.id = $1");
    let clinic: ClinicSummary = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    let members = sqlx::query_as(
        "SELECT u.name, u.email, m.role, m.created_at AS joined_at
           FROM memberships m JOIN users u ON u.id = m.user_id
          WHERE m.tenant_id = $1
          ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, lower(u.name)",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let (agents, documents): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM agents WHERE tenant_id = $1),
                (SELECT count(*) FROM documents WHERE tenant_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let filter = audit::Filter {
        limit: 20,
        ..Default::default()
    };
    let recent = audit::list_as_operator(db, operator, Some(id), &filter).await?;
    Ok(ClinicDetail {
        clinic,
        members,
        agents,
        documents,
        recent,
    })
}

/// Activates or deactivates a clinic. A deactivated clinic's pages say why, and its sessions
/// and API keys are refused from the next request on, on every replica.
pub async fn set_active(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    id: TenantId,
    active: bool,
) -> Result<()> {
    let mut tx = db.begin_operator(operator).await?;
    let was: Option<(bool, String)> =
        sqlx::query_as("SELECT active, name FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (was, name) = was.ok_or(Error::NotFound)?;
    if was == active {
        return Ok(());
    }
    sqlx::query("UPDATE tenants SET active = $2 WHERE id = $1")
        .bind(id)
        .bind(active)
        .execute(&mut *tx)
        .await?;
    let action = if active {
        "clinic.activated"
    } else {
        "clinic.deactivated"
    };
    let event = Event::new(action, name)
        .before(json!({ "active": was }))
        .after(json!({ "active": active }));
    audit::record(&mut tx, Some(id), By::Operator(operator), event).await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(id)).await;
    Ok(())
}

/// Puts a clinic on a plan, whatever its subscription says (Enterprise is arranged this way,
/// not bought); its limits apply at once on every replica.
pub async fn set_plan(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    id: TenantId,
    plan: PlanId,
) -> Result<()> {
    let mut tx = db.begin_operator(operator).await?;
    let was: Option<(PlanId, String)> =
        sqlx::query_as("SELECT plan, name FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (was, name) = was.ok_or(Error::NotFound)?;
    if was == plan {
        return Ok(());
    }
    sqlx::query(
        "UPDATE tenants SET plan = $2,
                limit_included_tokens = CASE WHEN $2 = 'enterprise' THEN limit_included_tokens END,
                limit_requests_per_minute = CASE WHEN $2 = 'enterprise' THEN limit_requests_per_minute END,
                limit_max_agents = CASE WHEN $2 = 'enterprise' THEN limit_max_agents END,
                limit_storage_mb = CASE WHEN $2 = 'enterprise' THEN limit_storage_mb END
          WHERE id = $1",
    )
    .bind(id)
    .bind(plan)
    .execute(&mut *tx)
    .await?;
    let event = Event::new("clinic.plan_set", name)
        .before(json!({ "plan": was }))
        .after(json!({ "plan": plan }));
    audit::record(&mut tx, Some(id), By::Operator(operator), event).await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(id)).await;
    Ok(())
}

/// Sets an Enterprise clinic's own limits (tokens a month, API requests per minute, agents,
/// storage); they apply at once on every replica. Other plans' limits are the plan's.
pub async fn set_limits(
    db: &Db,
    changes: &Changes,
    operator: UserId,
    id: TenantId,
    limits: OwnLimits,
) -> Result<()> {
    let mut tx = db.begin_operator(operator).await?;
    let sql = format!("{SUMMARY} WHERE t.id = $1 FOR UPDATE OF t");
    let clinic: ClinicSummary = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    if clinic.plan != PlanId::Enterprise {
        return Err(Error::invalid(format!(
            "{} is on the {} plan, whose limits are the plan's. Put it on Enterprise first.",
            clinic.name, clinic.plan
        )));
    }
    if clinic.limits == limits {
        return Ok(());
    }
    sqlx::query(
        "UPDATE tenants SET limit_included_tokens = $2, limit_requests_per_minute = $3,
                limit_max_agents = $4, limit_storage_mb = $5
          WHERE id = $1",
    )
    .bind(id)
    .bind(limits.included_tokens)
    .bind(limits.requests_per_minute)
    .bind(limits.max_agents)
    .bind(limits.storage_mb)
    .execute(&mut *tx)
    .await?;
    let event = Event::new("clinic.limits_set", clinic.name.clone())
        .before(json!(clinic.limits))
        .after(json!(limits));
    audit::record(&mut tx, Some(id), By::Operator(operator), event).await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(id)).await;
    Ok(())
}
