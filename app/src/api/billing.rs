//! Admin -> Billing: the plan, this month's use against the allowance, the projected overage,
//! and the plans on offer. Choosing a plan and the Stripe portal are plain forms
//! (`server::billing_routes`).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::PlanId;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// A plan as the Billing page offers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOption {
    pub id: PlanId,
    pub name: String,
    /// Micro-dollars a month; `None`: priced by agreement.
    pub base_price_micro_usd: Option<i64>,
    pub included_tokens: Option<i64>,
    pub storage_mb: Option<i64>,
    pub overage_micro_usd_per_1k: i64,
    pub max_agents: Option<i32>,
    pub self_serve: bool,
}

#[cfg(feature = "ssr")]
impl From<tessera_core::billing::Plan> for PlanOption {
    fn from(p: tessera_core::billing::Plan) -> Self {
        PlanOption {
            id: p.id,
            name: p.name,
            base_price_micro_usd: p.base_price_micro_usd,
            included_tokens: p.included_tokens,
            storage_mb: p.storage_mb,
            overage_micro_usd_per_1k: p.overage_micro_usd_per_1k,
            max_agents: p.max_agents,
            self_serve: p.self_serve,
        }
    }
}

/// Admin -> Billing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingOverview {
    /// Stripe is configured on this server.
    pub enabled: bool,
    pub plan: PlanOption,
    /// `1 Nov 2026`, `30 Nov 2026`: the calendar month the allowance is counted over.
    pub period_start: String,
    pub period_end: String,
    /// Stripe's subscription status, if there is a subscription.
    pub subscription_status: Option<String>,
    /// The subscription is running (a plan change then moves it).
    pub live_subscription: bool,
    /// `1 Dec 2026`: the next invoice, while the subscription runs.
    pub renews: Option<String>,
    /// The clinic has a Stripe customer (so the portal can open).
    pub has_customer: bool,
    pub used_tokens: i64,
    /// Tokens beyond the allowance so far this month.
    pub overage_tokens: i64,
    /// What the overage would cost by the end of the month at the current rate.
    pub projected_overage_micro_usd: i64,
    pub agents: i64,
    /// "1.2 MB of the Starter plan's 500 MB": the clinic's documents against the plan.
    pub storage: String,
    pub plans: Vec<PlanOption>,
}

#[server(endpoint = "billing")]
pub async fn get_billing() -> Result<BillingOverview, AppError> {
    use tessera_core::format::day;
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let now = time::OffsetDateTime::now_utc();
    let o =
        tessera_core::billing::overview(&services.db, &services.gateway.metering, v.tenant.id, now)
            .await?;
    let storage = tessera_core::knowledge::storage(&services.db, v.tenant.id).await?;
    let (storage, _) = crate::api::knowledge::storage_line(storage, &o.plan.name);
    Ok(BillingOverview {
        storage,
        enabled: services.stripe.is_some(),
        plan: o.plan.into(),
        period_start: day(o.month.start()),
        period_end: day(o.month.end() - time::Duration::seconds(1)),
        subscription_status: o.subscription_status,
        live_subscription: o.live_subscription,
        renews: o.renews.map(day),
        has_customer: o.has_customer,
        used_tokens: o.used_tokens,
        overage_tokens: o.overage_tokens,
        projected_overage_micro_usd: o.projected_overage_micro_usd,
        agents: o.agents,
        plans: o.plans.into_iter().map(PlanOption::from).collect(),
    })
}
