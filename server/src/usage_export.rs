//! `GET /settings/usage/export.csv?month=YYYY-MM`: a clinic's ledger for one month as CSV, for
//! its owners and admins. Written by the `csv` crate (quoting, line endings); a cell that a
//! spreadsheet would read as a formula (`=`, `+`, `-`, `@`, a tab or a carriage return first)
//! gets a leading `'`.

use app::error::AppError;
use app::server::{Admin, AppState};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tessera_core::metering::report::{ledger_rows, LedgerRow};
use tessera_core::{format, Month};

#[derive(serde::Deserialize)]
pub struct Params {
    month: Option<String>,
}

const HEADER: [&str; 15] = [
    "occurred_at",
    "provider",
    "model",
    "agent",
    "person",
    "api_key",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms",
    "estimated",
    "streamed",
    "cancelled",
    "id",
];

/// Keeps a spreadsheet from running a cell as a formula (which some also start after a tab or a
/// carriage return).
pub(crate) fn defused(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

fn record(r: &LedgerRow) -> [String; 15] {
    let text = |s: Option<&str>| defused(s.unwrap_or(""));
    [
        r.occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        r.provider.to_string(),
        defused(&r.model),
        text(r.agent.as_deref()),
        text(r.person.as_deref()),
        text(r.api_key.as_deref()),
        r.prompt_tokens.to_string(),
        r.completion_tokens.to_string(),
        r.cached_tokens.to_string(),
        format::dollars_exact(r.cost_micro_usd),
        r.latency_ms.to_string(),
        r.estimated.to_string(),
        r.streamed.to_string(),
        r.cancelled.to_string(),
        defused(&r.idempotency_key),
    ]
}

/// The rows as CSV text, with a header line.
pub fn to_csv(rows: &[LedgerRow]) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    out.write_record(HEADER)?;
    for r in rows {
        out.write_record(record(r))?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

pub async fn export(
    State(state): State<AppState>,
    Admin(v): Admin,
    Query(params): Query<Params>,
) -> Result<Response, AppError> {
    let month = match params
        .month
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        Some(m) => m.parse()?,
        None => Month::now(),
    };
    let rows = ledger_rows(&state.services.db, v.tenant.id, month).await?;
    let csv = to_csv(&rows).map_err(|e| {
        tracing::error!(error = %e, "ledger export could not be written");
        AppError::Internal(None)
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"tessera-usage-{month}.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, agent: Option<&str>) -> LedgerRow {
        LedgerRow {
            occurred_at: time::macros::datetime!(2026-11-03 10:00 UTC),
            provider: tessera_core::Provider::OpenAi,
            model: model.into(),
            agent: agent.map(str::to_string),
            person: None,
            api_key: None,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            cost_micro_usd: 1_234_567,
            latency_ms: 42,
            estimated: false,
            streamed: true,
            cancelled: false,
            idempotency_key: "k1".into(),
        }
    }

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        let text = String::from_utf8(
            to_csv(&[
                row("gpt-4o", Some("Front, \"Desk\"")),
                row("=HYPERLINK(1)", None),
            ])
            .unwrap(),
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("occurred_at,provider,model"));
        assert_eq!(
            lines[1],
            "2026-11-03T10:00:00Z,openai,gpt-4o,\"Front, \"\"Desk\"\"\",,,10,5,0,1.234567,42,false,true,false,k1"
        );
        assert!(lines[2].contains(",'=HYPERLINK(1),"), "{}", lines[2]);
        for sneaky in ["\t=1+1", "\r=1+1", "@SUM(A1)", "-2+3"] {
            assert!(defused(sneaky).starts_with('\''), "{sneaky:?}");
        }
    }
}
