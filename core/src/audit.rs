//! The audit log: who (a person, an API key, an operator), did what, when, from which address,
//! with the state before and after where it helps (never a secret). Entries are appended in the
//! transaction of the change they describe, so a change and its entry commit together; the
//! application role can insert and read them and never update or delete one.
//!
//! A clinic's entries are read by its admins (*Settings → Audit log*); entries with no clinic
//! (flag changes, failed sign-ins of unknown accounts) and every clinic's are read by
//! operators.

use std::future::Future;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::tenancy::{Role, TenantId, UserId};
use crate::{Error, Result};

/// Who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Person(UserId),
    ApiKey(Uuid),
    Operator(UserId),
    /// Tessera itself (a Stripe webhook, a worker).
    System,
}

impl By {
    fn kind(self) -> &'static str {
        match self {
            By::Person(_) => "person",
            By::ApiKey(_) => "api_key",
            By::Operator(_) => "operator",
            By::System => "system",
        }
    }

    fn id(self) -> Option<Uuid> {
        match self {
            By::Person(u) | By::Operator(u) => Some(u.0),
            By::ApiKey(k) => Some(k),
            By::System => None,
        }
    }
}

tokio::task_local! {
    /// The client address of the request being served (set by the server for each request).
    static ADDRESS: Option<IpAddr>;
}

/// Runs `f` with `address` as the client address that entries recorded inside it carry.
pub async fn with_address<F: Future>(address: Option<IpAddr>, f: F) -> F::Output {
    ADDRESS.scope(address, f).await
}

fn address() -> Option<IpAddr> {
    ADDRESS.try_with(|a| *a).ok().flatten()
}

/// What happened, to what.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `area.verb`, such as `provider_key.replaced` (see [`AREAS`]).
    pub action: &'static str,
    /// What it happened to, as people name it: a provider, a key's name, an email.
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Event {
    pub fn new(action: &'static str, target: impl Into<String>) -> Self {
        Self {
            action,
            target: target.into(),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, v: Value) -> Self {
        self.before = Some(v);
        self
    }

    pub fn after(mut self, v: Value) -> Self {
        self.after = Some(v);
        self
    }
}

pub use tessera_types::AUDIT_AREAS as AREAS;

/// Appends an entry inside `tx` (scoped to `tenant`, or to an operator for `None` or any
/// clinic), so it commits or rolls back with the change it describes. The actor's label is
/// their email or the API key's name as it is now.
pub async fn record(tx: &mut Tx, tenant: Option<TenantId>, by: By, event: Event) -> Result<()> {
    let target: String = event.target.chars().take(300).collect();
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_kind, actor_id, actor_label, action, target, address, before, after)
         VALUES ($1, $2, $3, $4,
                 COALESCE(CASE WHEN $3 = 'api_key' THEN (SELECT name FROM api_keys WHERE id = $4)
                               ELSE (SELECT email FROM users WHERE id = $4) END, ''),
                 $5, $6, $7::inet, $8, $9)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(by.kind())
    .bind(by.id())
    .bind(event.action)
    .bind(target)
    .bind(address().map(|a| a.to_string()))
    .bind(event.before)
    .bind(event.after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends an entry in a transaction of its own, scoped to `tenant` (for events that change
/// nothing else, such as a sign-in).
pub async fn record_alone(db: &Db, tenant: Option<TenantId>, by: By, event: Event) -> Result<()> {
    let mut tx = match tenant {
        Some(t) => db.begin_tenant(t).await?,
        None => db.pool().begin().await?,
    };
    record(&mut tx, tenant, by, event).await?;
    tx.commit().await?;
    Ok(())
}

/// One entry as it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Entry {
    pub id: Uuid,
    pub tenant_id: Option<TenantId>,
    /// The clinic's name (operators' view), or empty.
    pub clinic: String,
    pub occurred_at: OffsetDateTime,
    pub actor_kind: String,
    pub actor_label: String,
    pub action: String,
    pub target: String,
    pub address: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Which entries to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Part of the actor's email or key name.
    pub person: String,
    /// An area of [`AREAS`], or empty for all.
    pub area: String,
    /// From the start of this day (UTC), inclusive.
    pub from: Option<time::Date>,
    /// To the end of this day (UTC), inclusive.
    pub to: Option<time::Date>,
    /// At most this many, newest first (capped at 10,000).
    pub limit: i64,
}

impl Filter {
    /// Parses a filter as typed in a form: dates as `YYYY-MM-DD`.
    pub fn parse(person: &str, area: &str, from: &str, to: &str, limit: i64) -> Result<Self> {
        let date = |raw: &str, field: &str| -> Result<Option<time::Date>> {
            let raw = raw.trim();
            if raw.is_empty() {
                return Ok(None);
            }
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(raw, &format)
                .map(Some)
                .map_err(|_| Error::invalid(format!("{field} must be a date such as 2026-12-01.")))
        };
        let area = area.trim();
        if !area.is_empty() && !AREAS.iter().any(|(a, _)| *a == area) {
            return Err(Error::invalid(format!(
                "There is no kind of entry {area:?}."
            )));
        }
        Ok(Self {
            person: person.trim().chars().take(200).collect(),
            area: area.to_string(),
            from: date(from, "From")?,
            to: date(to, "To")?,
            limit,
        })
    }
}

const SELECT: &str =
    "SELECT a.id, a.tenant_id, COALESCE(t.name, '') AS clinic, a.occurred_at, a.actor_kind,
        a.actor_label, a.action, a.target, host(a.address) AS address, a.before, a.after
   FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id
  WHERE ($1 = '' OR a.actor_label ILIKE '%' || $1 || '%')
    AND ($2 = '' OR a.action LIKE $2 || '.%')
    AND ($3::date IS NULL OR a.occurred_at >= $3::date)
    AND ($4::date IS NULL OR a.occurred_at < $4::date + 1)
    AND ($6::uuid IS NULL OR a.tenant_id = $6)
  ORDER BY a.occurred_at DESC, a.id LIMIT $5";

async fn read(tx: &mut Tx, tenant: Option<TenantId>, filter: &Filter) -> Result<Vec<Entry>> {
    let rows = sqlx::query_as(SELECT)
        .bind(&filter.person)
        .bind(&filter.area)
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.limit.clamp(1, 10_000))
        .bind(tenant)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows)
}

/// A clinic's entries, newest first (its admins).
pub async fn list(db: &Db, tenant: TenantId, role: Role, filter: &Filter) -> Result<Vec<Entry>> {
    if !role.is_admin() {
        return Err(Error::forbidden(
            "Only owners and admins can read the audit log.",
        ));
    }
    let mut tx = db.begin_tenant(tenant).await?;
    let rows = read(&mut tx, Some(tenant), filter).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Every entry, platform-wide ones included, newest first (operators).
pub async fn list_all(db: &Db, operator: UserId, filter: &Filter) -> Result<Vec<Entry>> {
    list_as_operator(db, operator, None, filter).await
}

/// One clinic's entries, newest first, as an operator reads them.
pub async fn list_as_operator(
    db: &Db,
    operator: UserId,
    tenant: Option<TenantId>,
    filter: &Filter,
) -> Result<Vec<Entry>> {
    let mut tx = db.begin_operator(operator).await?;
    let rows = read(&mut tx, tenant, filter).await?;
    tx.commit().await?;
    Ok(rows)
}
