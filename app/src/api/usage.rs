//! Admin -> Usage: this month's use against the plan and the spending cap, and the dashboard of
//! tokens per day.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::Month;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server::{self as srv, fail};

/// This month's use against the plan and the spending cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSummary {
    pub plan_name: String,
    pub month: Month,
    /// Tokens included each month; `None`: unlimited.
    pub included_tokens: Option<i64>,
    /// Allowance plus what the cap buys; `None`: no limit.
    pub token_limit: Option<i64>,
    pub used_tokens: i64,
    /// Held by calls in progress.
    pub reserved_tokens: i64,
    pub requests: i64,
    /// Provider list price of this month's calls, in micro-dollars.
    pub cost_micro_usd: i64,
    /// Price of 1,000 tokens beyond the allowance, in micro-dollars.
    pub overage_micro_usd_per_1k: i64,
    /// `None`: no cap.
    pub spending_cap_micro_usd: Option<i64>,
    /// The clinic pays (a subscription, or an arranged plan): only then may it go beyond the
    /// allowance.
    pub paying: bool,
}

/// One stacked series of a daily chart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartSeries {
    pub name: String,
    /// One value per day of the month.
    pub values: Vec<i64>,
}

/// Tokens per day, stacked by one breakdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyChart {
    pub title: String,
    pub series: Vec<ChartSeries>,
}

/// The month's tokens per day by model, agent and caller, against last month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDashboard {
    pub month: Month,
    pub previous_month: Month,
    pub days: u32,
    pub charts: Vec<DailyChart>,
    pub requests_per_day: Vec<i64>,
    pub tokens: i64,
    pub requests: i64,
    pub cost_micro_usd: i64,
    pub previous_tokens: i64,
    pub previous_requests: i64,
    pub previous_cost_micro_usd: i64,
}

/// This month's use against the plan, from the live counters.
#[server(endpoint = "usage_summary")]
pub async fn get_usage() -> Result<UsageSummary, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let limits = services.gateway.limits(v.tenant.id).await?;
    let month = Month::now();
    let (usage, reserved) = services
        .gateway
        .metering
        .month_usage(v.tenant.id, month)
        .await?;
    Ok(UsageSummary {
        token_limit: limits.token_limit(),
        plan_name: limits.plan_name,
        month,
        included_tokens: limits.included_tokens,
        used_tokens: usage.tokens,
        reserved_tokens: reserved,
        requests: usage.requests,
        cost_micro_usd: usage.cost_micro_usd,
        overage_micro_usd_per_1k: limits.overage_micro_usd_per_1k,
        spending_cap_micro_usd: limits.spending_cap_micro_usd,
        paying: limits.paying,
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
            tessera_types::format::parse_dollars(amount.as_deref().unwrap_or(""))
                .map_err(|m| fail(AppError::Invalid(m)))?,
        ),
        _ => {
            return Err(fail(AppError::Invalid(
                "Choose how to handle use beyond the allowance.".into(),
            )))
        }
    };
    tessera_core::metering::set_spending_cap(
        &services.db,
        &services.changes,
        v.tenant.id,
        v.actor(),
        cap,
    )
    .await?;
    // A form posted before the page was interactive comes back to the page, which says so.
    leptos_axum::redirect("/settings/usage?saved=1");
    Ok(())
}

/// A month's tokens per day by model, by agent and by person or API key, and the month before
/// for comparison. `month` is `YYYY-MM` (UTC); the current month by default.
#[server(endpoint = "usage_dashboard")]
pub async fn get_usage_dashboard(month: Option<String>) -> Result<UsageDashboard, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let month = match month.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.parse()?,
        None => Month::now(),
    };
    let d = tessera_core::metering::report::dashboard(&services.db, v.tenant.id, month).await?;
    Ok(UsageDashboard {
        month: d.month,
        previous_month: d.previous,
        days: u32::from(d.month.days()),
        charts: d
            .charts
            .into_iter()
            .map(|c| DailyChart {
                title: c.by.title().into(),
                series: c
                    .series
                    .into_iter()
                    .map(|s| ChartSeries {
                        name: s.name,
                        values: s.values,
                    })
                    .collect(),
            })
            .collect(),
        requests_per_day: d.requests_per_day,
        tokens: d.totals.tokens,
        requests: d.totals.requests,
        cost_micro_usd: d.totals.cost_micro_usd,
        previous_tokens: d.previous_totals.tokens,
        previous_requests: d.previous_totals.requests,
        previous_cost_micro_usd: d.previous_totals.cost_micro_usd,
    })
}
