//! `GET /settings/usage/export.csv?month=YYYY-MM`: a clinic's ledger for one month as CSV, for
//! its owners and admins.

use app::server::AppState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_core::metering;
use tower_sessions::Session;

#[derive(serde::Deserialize)]
pub struct Params {
    month: Option<String>,
}

/// Quotes a CSV field when it needs it (RFC 4180), and defuses spreadsheet formulas.
fn field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

pub async fn export(
    State(state): State<AppState>,
    session: Session,
    Query(params): Query<Params>,
) -> Response {
    let services = &state.services;
    let v = match crate::signed_in::viewer(&state, &session).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    if !v.role.is_admin() {
        return (
            StatusCode::FORBIDDEN,
            "Only owners and admins of this clinic can export usage.",
        )
            .into_response();
    }
    let tenant = v.tenant.id;
    let month = params
        .month
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| metering::month_of(time::OffsetDateTime::now_utc()));
    let rows = match metering::ledger_rows(&services.db, tenant, month.trim()).await {
        Ok(rows) => rows,
        Err(e) if e.status_code() < 500 => {
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => {
            tracing::error!(error = ?e, "ledger export failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut csv = String::from(
        "occurred_at,provider,model,agent,person,api_key,prompt_tokens,completion_tokens,cached_tokens,cost_usd,latency_ms,estimated,streamed,cancelled,id\n",
    );
    for r in rows {
        let at = r
            .occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let cost = format!(
            "{}.{:06}",
            r.cost_micro_usd / 1_000_000,
            r.cost_micro_usd % 1_000_000
        );
        let line = [
            at,
            field(&r.provider),
            field(&r.model),
            field(r.agent.as_deref().unwrap_or("")),
            field(r.person.as_deref().unwrap_or("")),
            field(r.api_key.as_deref().unwrap_or("")),
            r.prompt_tokens.to_string(),
            r.completion_tokens.to_string(),
            r.cached_tokens.to_string(),
            cost,
            r.latency_ms.to_string(),
            r.estimated.to_string(),
            r.streamed.to_string(),
            r.cancelled.to_string(),
            field(&r.idempotency_key),
        ]
        .join(",");
        csv.push_str(&line);
        csv.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"tessera-usage-{}.csv\"",
                    month.trim()
                ),
            ),
        ],
        csv,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(super::field("plain"), "plain");
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
