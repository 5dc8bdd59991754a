//! `GET /settings/audit/export.csv?person=&area=&from=&to=`: the clinic's audit log as CSV
//! (up to 10,000 entries, newest first, the page's filters), for its owners and admins. Cells a
//! spreadsheet would read as a formula are defused as in the usage export.

use app::error::AppError;
use app::server::{Admin, AppState};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tessera_core::audit::{self, Entry, Filter};

use crate::usage_export::defused;

#[derive(serde::Deserialize)]
pub struct Params {
    #[serde(default)]
    person: String,
    #[serde(default)]
    area: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

const HEADER: [&str; 9] = [
    "occurred_at",
    "actor_kind",
    "actor",
    "action",
    "target",
    "address",
    "before",
    "after",
    "id",
];

fn record(e: &Entry) -> [String; 9] {
    let json = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| defused(&v.to_string()))
            .unwrap_or_default()
    };
    [
        e.occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        e.actor_kind.clone(),
        defused(&e.actor_label),
        e.action.clone(),
        defused(&e.target),
        e.address.clone().unwrap_or_default(),
        json(&e.before),
        json(&e.after),
        e.id.to_string(),
    ]
}

/// The entries as CSV text, with a header line.
pub fn to_csv(entries: &[Entry]) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    out.write_record(HEADER)?;
    for e in entries {
        out.write_record(record(e))?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

pub async fn export(
    State(state): State<AppState>,
    Admin(v): Admin,
    Query(p): Query<Params>,
) -> Result<Response, AppError> {
    let filter = Filter::parse(&p.person, &p.area, &p.from, &p.to, 10_000)?;
    let entries = audit::list(&state.services.db, v.tenant.id, v.role, &filter).await?;
    let csv = to_csv(&entries).map_err(|e| {
        tracing::error!(error = %e, "audit export could not be written");
        AppError::Internal(None)
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"tessera-audit-{}.csv\"",
                    v.tenant.slug
                ),
            ),
        ],
        csv,
    )
        .into_response())
}
