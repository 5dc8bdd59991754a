//! What a clinic may spend: its plan's allowance and overage price, its spending cap, and
//! whether it may use model calls at all.

use time::OffsetDateTime;

use crate::audit;
use crate::auth::members::Actor;
use crate::changes::{Change, Changes};
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::{Error, PlanId, Result};

/// What a clinic's plan and settings allow.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Limits {
    pub plan: PlanId,
    pub plan_name: String,
    pub active: bool,
    /// Tokens included each month; `None`: unlimited.
    pub included_tokens: Option<i64>,
    pub overage_micro_usd_per_1k: i64,
    /// Most the clinic pays beyond its allowance each month; `None`: no cap.
    pub spending_cap_micro_usd: Option<i64>,
    /// Whether the plan lets the platform's own provider keys serve its clinics.
    pub platform_keys: bool,
    /// The clinic pays: a running subscription, or a plan an operator arranged (enterprise).
    /// Without it, calls stay within the allowance and use the clinic's own keys.
    pub paying: bool,
    /// When a payment failed and no later one succeeded (see [`Limits::payment_block`]).
    pub payment_failed_at: Option<OffsetDateTime>,
    /// Requests per minute through the API, for the clinic and for each of its API keys
    /// (`None`: no limit).
    pub requests_per_minute: Option<i32>,
    pub key_requests_per_minute: Option<i32>,
    /// The embedding model the clinic chose for its documents (`None`: the default).
    pub embedding_model: Option<String>,
}

impl Limits {
    /// The most tokens the clinic may use this month, or `None` for no limit: the allowance
    /// plus what the spending cap buys at the plan's overage price. A clinic that does not pay
    /// gets the allowance alone, whatever its cap (nothing would bill the overage).
    pub fn token_limit(&self) -> Option<i64> {
        let included = self.included_tokens?;
        if self.overage_micro_usd_per_1k == 0 || !self.paying {
            return Some(included);
        }
        let cap = self.spending_cap_micro_usd?;
        Some(included.saturating_add(cap.saturating_mul(1000) / self.overage_micro_usd_per_1k))
    }

    /// Whether the platform's own provider keys may serve the clinic: its plan allows them and
    /// it pays for what they spend.
    pub fn may_use_platform_keys(&self) -> bool {
        self.platform_keys && self.paying
    }
}

/// The subscription statuses of a clinic that pays (a failed payment is still within its grace
/// period, which [`Limits::payment_block`] enforces).
pub const PAYING_STATUSES: [&str; 3] = ["active", "trialing", "past_due"];

/// When the grace period after a failed payment ends.
pub fn grace_ends(failed_at: OffsetDateTime, grace_days: u32) -> OffsetDateTime {
    failed_at + time::Duration::days(i64::from(grace_days))
}

impl Limits {
    /// Why model calls are stopped for an unpaid clinic (its payment failed and the grace
    /// period has ended, with no payment since), or `None` while they may go on.
    pub fn payment_block(&self, grace_days: u32, now: OffsetDateTime) -> Option<String> {
        let failed_at = self.payment_failed_at?;
        (now >= grace_ends(failed_at, grace_days)).then(|| {
            format!(
                "Model calls are paused: this clinic's payment failed on {} and the {grace_days}-day grace period has ended. An admin can update the payment method under Billing → Manage billing; calls resume as soon as a payment succeeds.",
                crate::format::day(failed_at)
            )
        })
    }
}

/// Reads a clinic's limits.
pub async fn limits(db: &Db, tenant: TenantId) -> Result<Limits> {
    let query = sqlx::query_as(
        "SELECT p.id AS plan, p.name AS plan_name, t.active,
                COALESCE(t.limit_included_tokens, p.included_tokens) AS included_tokens,
                p.overage_micro_usd_per_1k, t.spending_cap_micro_usd, p.platform_keys,
                t.payment_failed_at,
                COALESCE(t.limit_requests_per_minute, p.requests_per_minute) AS requests_per_minute,
                CASE WHEN t.limit_requests_per_minute IS NULL THEN p.key_requests_per_minute
                     ELSE GREATEST(t.limit_requests_per_minute / 2, 1) END AS key_requests_per_minute,
                t.embedding_model,
                NOT p.self_serve OR coalesce(t.subscription_status = ANY($1), false) AS paying
           FROM tenants t JOIN plans p ON p.id = t.plan",
    )
    .bind(&PAYING_STATUSES[..]);
    db.tenant_optional(tenant, query)
        .await?
        .ok_or(Error::NotFound)
}

/// Sets a clinic's monthly spending cap beyond its allowance (`None`: no cap). Admins only.
pub async fn set_spending_cap(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    cap_micro_usd: Option<i64>,
) -> Result<()> {
    actor.require_admin("set the spending cap")?;
    if cap_micro_usd.is_some_and(|c| c < 0) {
        return Err(Error::invalid("The spending cap cannot be negative."));
    }
    if cap_micro_usd != Some(0) && !limits(db, tenant).await?.paying {
        return Err(Error::PlanLimit(
            "Use beyond the allowance needs a paid plan: choose one under Billing first. Until then, model calls stop when the month's allowance is used.".into(),
        ));
    }
    let mut tx = db.begin_tenant(tenant).await?;
    let before: Option<Option<i64>> =
        sqlx::query_scalar("SELECT spending_cap_micro_usd FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let before = before.ok_or(Error::NotFound)?;
    sqlx::query("UPDATE tenants SET spending_cap_micro_usd = $1 WHERE id = $2")
        .bind(cap_micro_usd)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    if before != cap_micro_usd {
        let shown = |c: Option<i64>| serde_json::json!({ "spending_cap_micro_usd": c });
        let event = audit::Event::new("billing.spending_cap_changed", "spending cap")
            .before(shown(before))
            .after(shown(cap_micro_usd));
        audit::record(&mut tx, Some(tenant), audit::By::Person(actor.user), event).await?;
    }
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(included: Option<i64>, overage: i64, cap: Option<i64>) -> Limits {
        Limits {
            plan: PlanId::Starter,
            plan_name: "Starter".into(),
            active: true,
            included_tokens: included,
            overage_micro_usd_per_1k: overage,
            spending_cap_micro_usd: cap,
            platform_keys: true,
            paying: true,
            payment_failed_at: None,
            requests_per_minute: None,
            key_requests_per_minute: None,
            embedding_model: None,
        }
    }

    #[test]
    fn the_token_limit_is_the_allowance_plus_what_the_cap_buys() {
        assert_eq!(
            limits(Some(1_000_000), 3000, Some(0)).token_limit(),
            Some(1_000_000)
        );
        // $3 buys 1,000 × 3,000,000 / 3,000 = 1,000,000 tokens at $0.003 per 1k.
        assert_eq!(
            limits(Some(1_000_000), 3000, Some(3_000_000)).token_limit(),
            Some(2_000_000)
        );
        assert_eq!(limits(Some(1_000_000), 3000, None).token_limit(), None);
        assert_eq!(limits(None, 0, Some(0)).token_limit(), None);
        // Without a paid plan, the allowance alone, and no platform keys.
        let free = Limits {
            paying: false,
            ..limits(Some(1_000_000), 3000, None)
        };
        assert_eq!(free.token_limit(), Some(1_000_000));
        assert!(!free.may_use_platform_keys());
    }

    #[test]
    fn a_failed_payment_blocks_only_after_the_grace_period() {
        use time::macros::datetime;
        let failed = datetime!(2026-11-03 10:00 UTC);
        let paid = limits(Some(1_000_000), 3000, Some(0));
        assert_eq!(paid.payment_block(7, failed), None);
        let unpaid = Limits {
            payment_failed_at: Some(failed),
            ..paid
        };
        assert_eq!(
            unpaid.payment_block(7, datetime!(2026-11-10 09:59 UTC)),
            None
        );
        let message = unpaid
            .payment_block(7, datetime!(2026-11-10 10:00 UTC))
            .unwrap();
        assert!(message.contains("failed on 3 Nov 2026"), "{message}");
        assert!(message.contains("Manage billing"), "{message}");
        assert!(unpaid.payment_block(0, failed).is_some());
    }
}
