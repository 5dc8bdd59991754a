//! Settings -> Audit log: who changed what in the clinic, filtered by person, kind and date.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// Where the CSV export of the clinic's audit log is served (the same filters as the page, as
/// query parameters).
pub const EXPORT_URL: &str = "/settings/audit/export.csv";

/// One entry as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: String,
    pub at: String,
    /// The clinic (operators' view), or empty.
    pub clinic: String,
    /// `person`, `api_key`, `operator` or `system`.
    pub actor_kind: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub address: String,
    pub before: String,
    pub after: String,
}

#[cfg(feature = "ssr")]
impl From<tessera_core::audit::Entry> for AuditRow {
    fn from(e: tessera_core::audit::Entry) -> Self {
        let json = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
        AuditRow {
            id: e.id.to_string(),
            at: tessera_core::format::date_time(e.occurred_at),
            clinic: e.clinic,
            actor: if e.actor_label.is_empty() {
                e.actor_kind.clone()
            } else {
                e.actor_label
            },
            actor_kind: e.actor_kind,
            action: e.action,
            target: e.target,
            address: e.address.unwrap_or_default(),
            before: json(e.before),
            after: json(e.after),
        }
    }
}

/// The clinic's entries, newest first (at most 500; the export has up to 10,000).
#[server(endpoint = "audit_log")]
pub async fn clinic_audit(
    person: String,
    area: String,
    from: String,
    to: String,
) -> Result<Vec<AuditRow>, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let filter = tessera_core::audit::Filter::parse(&person, &area, &from, &to, 500)?;
    let rows = tessera_core::audit::list(&services.db, v.tenant.id, v.role, &filter).await?;
    Ok(rows.into_iter().map(AuditRow::from).collect())
}
