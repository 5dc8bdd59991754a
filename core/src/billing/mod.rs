//! Plans and billing with Stripe.
//!
//! - **Plans** are rows (`plans`); a clinic's plan is `tenants.plan`. Self-serve plans are
//!   bought through Stripe Checkout (subscription mode, `client_reference_id` = the clinic);
//!   enterprise is set by an operator (`server tenant set-plan`).
//! - **The catalogue** in Stripe is made by `server stripe-sync` ([`stripe_api::StripeApi::sync_catalog`]):
//!   a product per self-serve plan, its monthly base price and its metered overage price
//!   (found again by lookup keys, so running it twice changes nothing), and one Billing Meter
//!   for tokens.
//! - **Webhooks** ([`webhook`]) are the only way Stripe changes a clinic: verified
//!   ([`signature`]), stored by event id and applied once, and ordered by Stripe's `created`
//!   so an older event arriving late changes nothing.
//! - **Overage** ([`meter`]): tokens beyond the allowance go to Stripe as Billing Meter events,
//!   one per clinic and hour, through an outbox.
//! - **A failed payment** leaves model calls running for a grace period
//!   (`TESSERA_BILLING_GRACE_DAYS`), with a banner; then they stop until a payment succeeds.

pub mod meter;
mod overview;
pub mod signature;
pub mod stripe_api;
pub mod webhook;

pub use overview::{overview, payment_notice, Overview, PaymentNotice};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::auth::members::Actor;
use crate::changes::{Change, Changes};
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::{Error, PlanId, Result};

pub use signature::{sign, verify_signature, SignatureError, SIGNATURE_TOLERANCE_SECS};
pub use stripe_api::StripeApi;

/// The Billing Meter's event name; its events carry `stripe_customer_id` and `value`.
pub const METER_EVENT_NAME: &str = "tessera_tokens";
/// The lookup key of a plan's monthly base price.
pub fn base_price_key(plan: PlanId) -> String {
    format!("tessera_{plan}_base")
}

/// The lookup key of a plan's metered overage price.
pub fn overage_price_key(plan: PlanId) -> String {
    format!("tessera_{plan}_overage")
}

/// The plan whose base price has this lookup key.
pub fn plan_of_price_key(key: &str) -> Option<&str> {
    key.strip_prefix("tessera_")?.strip_suffix("_base")
}

/// A plan, as the `plans` table has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    /// `None`: priced by agreement.
    pub base_price_micro_usd: Option<i64>,
    /// `None`: unlimited.
    pub included_tokens: Option<i64>,
    /// `None`: unlimited.
    pub storage_mb: Option<i64>,
    pub overage_micro_usd_per_1k: i64,
    /// `None`: unlimited.
    pub max_agents: Option<i32>,
    /// Bought through Checkout; otherwise set by an operator.
    pub self_serve: bool,
}

const PLAN_COLUMNS: &str =
    "p.id, p.name, p.base_price_micro_usd, p.included_tokens, p.storage_mb, \
                            p.overage_micro_usd_per_1k, p.max_agents, p.self_serve";

/// Every plan, cheapest first.
pub async fn plans(pool: &PgPool) -> Result<Vec<Plan>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM plans p ORDER BY p.sort_order, p.id"
    ))
    .fetch_all(pool)
    .await?)
}

/// A clinic's plan and where its subscription stands.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    #[sqlx(flatten)]
    pub plan: Plan,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub subscription_status: Option<String>,
    /// When the subscription's current period ends (its next invoice).
    pub current_period_end: Option<OffsetDateTime>,
}

impl Account {
    /// A subscription that is still running (so a plan change moves it rather than starting
    /// another).
    pub fn has_live_subscription(&self) -> bool {
        matches!(
            self.subscription_status.as_deref(),
            Some("active" | "trialing" | "past_due" | "unpaid" | "incomplete")
        )
    }
}

/// Reads a clinic's account.
pub async fn account(db: &Db, tenant: TenantId) -> Result<Account> {
    let sql = format!(
        "SELECT {PLAN_COLUMNS}, t.stripe_customer_id, t.stripe_subscription_id, t.subscription_status,
                t.current_period_end
           FROM tenants t JOIN plans p ON p.id = t.plan"
    );
    db.tenant_optional(tenant, sqlx::query_as(&sql))
        .await?
        .ok_or(Error::NotFound)
}

/// Tokens beyond the allowance this month would cost at the current rate of use, in
/// micro-dollars: used so far, projected to the whole month, less the allowance, at the
/// plan's overage price, and no more than the spending cap lets through.
pub fn projected_overage_micro_usd(
    used: i64,
    included: Option<i64>,
    overage_per_1k: i64,
    cap: Option<i64>,
    elapsed_secs: i64,
    month_secs: i64,
) -> i64 {
    let Some(included) = included else { return 0 };
    let elapsed = elapsed_secs.clamp(1, month_secs.max(1));
    let projected = (i128::from(used) * i128::from(month_secs) / i128::from(elapsed)) as i64;
    let over = projected.saturating_sub(included).max(0);
    let cost = (i128::from(over) * i128::from(overage_per_1k) / 1000) as i64;
    match cap {
        Some(cap) => cost.min(cap),
        None => cost,
    }
}

/// Where Checkout sends the admin back to.
pub struct ReturnUrls {
    pub success: String,
    pub cancel: String,
}

/// What choosing a plan leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// Pay on Stripe Checkout, at this address.
    Checkout(String),
    /// The running subscription was moved to the plan; the change lands with Stripe's webhook.
    Changed,
}

/// Chooses `plan` for the clinic. Without a running subscription: opens Stripe Checkout,
/// creating the clinic's Stripe customer the first time (one per clinic, even when two admins
/// click at once). With one: moves the subscription to the plan's prices.
pub async fn choose_plan(
    db: &Db,
    api: &StripeApi,
    tenant: TenantId,
    actor: Actor,
    admin_email: &str,
    plan_id: PlanId,
    urls: &ReturnUrls,
) -> Result<Chosen> {
    actor.require_admin("change the plan")?;
    let plan = plans(db.pool())
        .await?
        .into_iter()
        .find(|p| p.id == plan_id)
        .ok_or_else(|| Error::invalid(format!("There is no plan {plan_id:?}.")))?;
    if !plan.self_serve {
        return Err(Error::invalid(format!(
            "The {} plan is arranged with us directly, not bought online. Contact us to move to it.",
            plan.name
        )));
    }
    let account = account(db, tenant).await?;
    if account.has_live_subscription() {
        if account.plan.id == plan.id {
            return Err(Error::Conflict(format!(
                "This clinic is already on the {} plan.",
                plan.name
            )));
        }
        let subscription = account
            .stripe_subscription_id
            .ok_or_else(|| Error::Internal("live subscription without an id".into()))?;
        api.change_plan(&subscription, plan.id).await?;
        return Ok(Chosen::Changed);
    }
    let customer = match account.stripe_customer_id {
        Some(c) => c,
        None => create_customer(db, api, tenant, admin_email).await?,
    };
    Ok(Chosen::Checkout(
        api.checkout_session(&customer, tenant, plan.id, urls)
            .await?,
    ))
}

/// Opens the Stripe Customer Portal for the clinic (payment method, invoices, plan changes,
/// cancellation).
pub async fn portal(
    db: &Db,
    api: &StripeApi,
    tenant: TenantId,
    actor: Actor,
    return_url: &str,
) -> Result<String> {
    actor.require_admin("manage billing")?;
    let account = account(db, tenant).await?;
    let customer = account.stripe_customer_id.ok_or_else(|| {
        Error::Conflict("This clinic has no billing account yet: choose a plan first.".into())
    })?;
    api.portal_session(&customer, return_url).await
}

/// Creates the clinic's Stripe customer. The creation carries an idempotency key per clinic,
/// so a retry or a second admin gets the same customer back; the first one stored wins.
async fn create_customer(
    db: &Db,
    api: &StripeApi,
    tenant: TenantId,
    email: &str,
) -> Result<String> {
    let name: String = {
        let mut tx = db.begin_tenant(tenant).await?;
        let name = sqlx::query_scalar("SELECT name FROM tenants")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        name
    };
    let created = api.create_customer(tenant, &name, email).await?;
    let mut tx = db.begin_tenant(tenant).await?;
    // Metering starts now: overage before the clinic had a customer is not billed.
    let stored: String = sqlx::query_scalar(
        "UPDATE tenants SET stripe_customer_id = COALESCE(stripe_customer_id, $1),
                metered_through = COALESCE(metered_through, date_trunc('hour', now(), 'UTC'))
          RETURNING stripe_customer_id",
    )
    .bind(&created)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// Operator path: puts a clinic (by slug) on a plan, whatever its subscription says; used for
/// enterprise, which is arranged rather than bought. Runs as the schema owner
/// (`DATABASE_ADMIN_URL`), and announces the change so every replica applies the new limits.
pub async fn set_plan(
    admin: &PgPool,
    changes: &Changes,
    slug: &str,
    plan: PlanId,
) -> Result<TenantId> {
    let id: Option<TenantId> =
        sqlx::query_scalar(
            "UPDATE tenants SET plan = $2,
                    limit_included_tokens = CASE WHEN $2 = 'enterprise' THEN limit_included_tokens END,
                    limit_requests_per_minute = CASE WHEN $2 = 'enterprise' THEN limit_requests_per_minute END,
                    limit_max_agents = CASE WHEN $2 = 'enterprise' THEN limit_max_agents END,
                    limit_storage_mb = CASE WHEN $2 = 'enterprise' THEN limit_storage_mb END
              WHERE slug = $1 RETURNING id",
        )
            .bind(slug)
            .bind(plan)
            .fetch_optional(admin)
            .await?;
    let id =
        id.ok_or_else(|| Error::invalid(format!("There is no clinic with the slug {slug:?}.")))?;
    changes.announce(Change::Tenant(id)).await;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_keys_name_their_plan() {
        assert_eq!(
            plan_of_price_key(&base_price_key(PlanId::Professional)),
            Some("professional")
        );
        assert_eq!(plan_of_price_key(&overage_price_key(PlanId::Starter)), None);
        assert_eq!(plan_of_price_key("someone_elses_price"), None);
    }

    #[test]
    fn projected_overage() {
        let month = 30 * 86_400;
        // Half the month gone, 600k used of 1M: projected 1.2M, 200k over at $0.003 per 1k.
        assert_eq!(
            projected_overage_micro_usd(600_000, Some(1_000_000), 3000, None, month / 2, month),
            600_000
        );
        // The cap bounds it; unlimited plans have none; under the allowance, none.
        assert_eq!(
            projected_overage_micro_usd(
                600_000,
                Some(1_000_000),
                3000,
                Some(100_000),
                month / 2,
                month
            ),
            100_000
        );
        assert_eq!(
            projected_overage_micro_usd(9_000_000, None, 0, None, 1, month),
            0
        );
        assert_eq!(
            projected_overage_micro_usd(100, Some(1_000_000), 3000, None, month / 2, month),
            0
        );
    }
}
