//! What the Billing page and the failed-payment banner say, decided here so the pages only
//! render it.

use time::OffsetDateTime;

use super::{account, plans, projected_overage_micro_usd, Plan};
use crate::db::Db;
use crate::metering::{grace_ends, Limits, Metering};
use crate::tenancy::TenantId;
use crate::{agents, format, metering, Month, Result, Role};

/// A clinic's plan, subscription and this month's use against the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    pub plan: Plan,
    /// The period the allowance is counted over: the calendar month.
    pub month: Month,
    /// Stripe's subscription status, if there is a subscription.
    pub subscription_status: Option<String>,
    /// The subscription is running (a plan change then moves it).
    pub live_subscription: bool,
    /// The next invoice, while the subscription runs.
    pub renews: Option<OffsetDateTime>,
    /// The clinic has a Stripe customer (so the portal can open).
    pub has_customer: bool,
    pub used_tokens: i64,
    /// Tokens beyond the allowance so far this month.
    pub overage_tokens: i64,
    /// What the overage would cost by the end of the month at the current rate.
    pub projected_overage_micro_usd: i64,
    pub agents: i64,
    /// Every plan, cheapest first.
    pub plans: Vec<Plan>,
}

/// The Billing page's numbers for `tenant` at `now`.
pub async fn overview(
    db: &Db,
    metering: &Metering,
    tenant: TenantId,
    now: OffsetDateTime,
) -> Result<Overview> {
    let account = account(db, tenant).await?;
    let limits = metering::limits(db, tenant).await?;
    let month = Month::of(now);
    let (usage, _) = metering.month_usage(tenant, month).await?;
    let plan = account.plan.clone();
    let live_subscription = account.has_live_subscription();
    Ok(Overview {
        month,
        subscription_status: account.subscription_status.clone(),
        live_subscription,
        renews: account.current_period_end.filter(|_| live_subscription),
        has_customer: account.stripe_customer_id.is_some(),
        used_tokens: usage.tokens,
        overage_tokens: plan
            .included_tokens
            .map_or(0, |i| (usage.tokens - i).max(0)),
        projected_overage_micro_usd: projected_overage_micro_usd(
            usage.tokens,
            plan.included_tokens,
            plan.overage_micro_usd_per_1k,
            limits.spending_cap_micro_usd,
            (now - month.start()).whole_seconds(),
            (month.end() - month.start()).whole_seconds(),
        ),
        agents: agents::count(db, tenant).await?,
        plans: plans(db.pool()).await?,
        plan,
    })
}

/// The banner every page shows while a payment has failed, worded for the person's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentNotice {
    pub message: String,
    /// Model calls are stopped (the grace period has ended).
    pub blocked: bool,
}

/// The failed-payment banner for someone with `role` in a clinic with `limits`, if any.
pub fn payment_notice(
    limits: &Limits,
    role: Role,
    grace_days: u32,
    now: OffsetDateTime,
) -> Option<PaymentNotice> {
    let failed = limits.payment_failed_at?;
    let who = if role.is_admin() {
        "Update the payment method under Billing → Manage billing"
    } else {
        "Ask an owner or admin of the clinic to update the payment method"
    };
    Some(match limits.payment_block(grace_days, now) {
        Some(_) => PaymentNotice {
            message: format!(
                "Model calls are paused: a payment failed on {} and the grace period has ended. {who}; calls resume as soon as a payment succeeds.",
                format::day(failed)
            ),
            blocked: true,
        },
        None => PaymentNotice {
            message: format!(
                "A payment failed on {}. {who} by {}, or model calls will pause.",
                format::day(failed),
                format::day(grace_ends(failed, grace_days))
            ),
            blocked: false,
        },
    })
}
