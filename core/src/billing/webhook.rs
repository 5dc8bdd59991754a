//! Applying Stripe's webhook events (after [`super::verify_signature`]).
//!
//! **Once.** Each event's id is stored in `stripe_events` in the same transaction as its
//! effect; a redelivery (Stripe retries until it gets a 2xx, and may deliver twice anyway)
//! finds the id and changes nothing. Two deliveries at the same moment serialise on the id's
//! unique index: the second waits, then conflicts and rolls back.
//!
//! **In order.** Events can arrive in any order. A clinic's subscription state remembers the
//! `(created, rank)` of the event that set it, where the rank orders events of the same second
//! (`checkout.session.completed` < `customer.subscription.created` < `.updated` < `.deleted`);
//! an event older than that is recorded as `stale` and not applied. Each subscription event
//! carries the whole subscription, so the newest one alone gives the right state. Payment
//! state (`invoice.paid`, `invoice.payment_failed`) is ordered the same way on its own.
//!
//! **Which clinic.** By the Stripe customer (created by Tessera, one per clinic); failing
//! that, the `tenant_id` Tessera put in the subscription's metadata or the Checkout session's
//! `client_reference_id`.

use serde::Deserialize;
use serde_json::Value;

use crate::changes::Changes;
use crate::db::{Db, Tx};
use crate::tenancy::TenantId;
use crate::{Error, Result};

/// A Stripe event, as much of it as Tessera reads.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// What handling an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The clinic's billing state changed (drop its cached limits).
    Applied(TenantId),
    /// Older than the state the clinic already has.
    Stale(TenantId),
    /// Seen before; nothing done.
    Duplicate,
    /// Not for Tessera, or not a type it handles.
    Ignored(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Applied(_) => "applied".into(),
            Outcome::Stale(_) => "stale".into(),
            Outcome::Duplicate => "duplicate".into(),
            Outcome::Ignored(why) => format!("ignored: {why}"),
        }
    }
}

/// A subscription as an event describes it.
#[derive(Debug, PartialEq, Eq)]
struct Subscription {
    id: Option<String>,
    customer: Option<String>,
    status: String,
    /// From the base price's lookup key; `None` when the event does not say.
    plan: Option<String>,
    period: Option<(i64, i64)>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

/// A customer may be a string id or an expanded object.
fn customer_of(object: &Value) -> Option<String> {
    match object.get("customer")? {
        Value::String(s) => Some(s.clone()),
        other => other.get("id")?.as_str().map(str::to_string),
    }
}

fn subscription_of(object: &Value, deleted: bool) -> Subscription {
    let items = object
        .pointer("/items/data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let plan = items.iter().find_map(|item| {
        let price = item.get("price")?;
        str_at(price, &["lookup_key"])
            .and_then(super::plan_of_price_key)
            .or_else(|| str_at(price, &["metadata", "plan"]))
            .map(str::to_string)
    });
    // Newer API versions keep the period on the items.
    let period_of = |v: &Value| {
        Some((
            int_at(v, &["current_period_start"])?,
            int_at(v, &["current_period_end"])?,
        ))
    };
    Subscription {
        id: str_at(object, &["id"]).map(str::to_string),
        customer: customer_of(object),
        status: if deleted {
            "canceled".into()
        } else {
            str_at(object, &["status"]).unwrap_or("active").to_string()
        },
        plan,
        period: period_of(object).or_else(|| items.iter().find_map(period_of)),
    }
}

/// Verifies nothing: call after the signature check. Parses and applies one event.
///
/// A clinic the event changed is announced, so its new limits apply at once on every replica.
pub async fn handle(db: &Db, changes: &Changes, payload: &[u8]) -> Result<Outcome> {
    let outcome = process(db, payload).await?;
    if let Outcome::Applied(tenant) = &outcome {
        changes
            .announce(crate::changes::Change::Tenant(*tenant))
            .await;
    }
    Ok(outcome)
}

async fn process(db: &Db, payload: &[u8]) -> Result<Outcome> {
    let event: Event = serde_json::from_slice(payload)
        .map_err(|e| Error::invalid(format!("This is not a Stripe event: {e}")))?;
    // Times are compared and stored: one no calendar holds is the sender's mistake.
    if !(946_684_800..=4_102_444_800).contains(&event.created) {
        return Err(Error::invalid(
            "The event's `created` time is not between 2000 and 2100.",
        ));
    }
    let (tenant, change) = match classify(db, &event).await? {
        Ok(found) => found,
        Err(why) => return record(db, &event, None, Outcome::Ignored(why)).await,
    };
    let Some(tenant) = tenant else {
        return record(
            db,
            &event,
            None,
            Outcome::Ignored("no clinic has this customer".into()),
        )
        .await;
    };

    let mut tx = db.begin_tenant(tenant).await?;
    let applied = match &change {
        Change::Subscription(rank, sub) => {
            apply_subscription(&mut tx, event.created, *rank, sub).await?
        }
        Change::Payment { failed } => apply_payment(&mut tx, event.created, *failed).await?,
    };
    let outcome = if applied {
        Outcome::Applied(tenant)
    } else {
        Outcome::Stale(tenant)
    };
    if !insert_event(&mut tx, &event, Some(tenant), &outcome).await? {
        // Another delivery of the same event got there first; undo ours.
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    tx.commit().await?;
    tracing::info!(event = %event.id, kind = %event.kind, %tenant, outcome = %outcome.label(), "Stripe event");
    Ok(outcome)
}

/// The clinic an event is about (if any is found) and what it changes, or why it is ignored.
async fn classify(
    db: &Db,
    event: &Event,
) -> Result<std::result::Result<(Option<TenantId>, Change), String>> {
    let object = &event.data.object;
    Ok(Ok(match event.kind.as_str() {
        "checkout.session.completed" => {
            if str_at(object, &["mode"]) != Some("subscription") {
                return Ok(Err("not a subscription checkout".into()));
            }
            let tenant = tenant_of(db, object, str_at(object, &["client_reference_id"])).await?;
            let change = Change::Subscription(
                0,
                Subscription {
                    id: str_at(object, &["subscription"]).map(str::to_string),
                    customer: customer_of(object),
                    status: "active".into(),
                    plan: str_at(object, &["metadata", "plan"]).map(str::to_string),
                    period: None,
                },
            );
            (tenant, change)
        }
        kind @ ("customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted") => {
            let rank = match kind {
                "customer.subscription.created" => 1,
                "customer.subscription.updated" => 2,
                _ => 3,
            };
            let tenant = tenant_of(db, object, str_at(object, &["metadata", "tenant_id"])).await?;
            (
                tenant,
                Change::Subscription(rank, subscription_of(object, rank == 3)),
            )
        }
        "invoice.paid" => (
            tenant_of(db, object, None).await?,
            Change::Payment { failed: false },
        ),
        "invoice.payment_failed" => (
            tenant_of(db, object, None).await?,
            Change::Payment { failed: true },
        ),
        other => return Ok(Err(format!("type {other} is not used"))),
    }))
}

enum Change {
    Subscription(i16, Subscription),
    Payment { failed: bool },
}

/// Records an event that changes no clinic (still once: a duplicate is reported as such).
async fn record(
    db: &Db,
    event: &Event,
    tenant: Option<TenantId>,
    outcome: Outcome,
) -> Result<Outcome> {
    let mut tx = db.pool().begin().await?;
    if !insert_event(&mut tx, event, tenant, &outcome).await? {
        return Ok(Outcome::Duplicate);
    }
    tx.commit().await?;
    tracing::info!(event = %event.id, kind = %event.kind, outcome = %outcome.label(), "Stripe event");
    Ok(outcome)
}

/// Stores the event id; false when it was already there.
async fn insert_event(
    tx: &mut Tx,
    event: &Event,
    tenant: Option<TenantId>,
    outcome: &Outcome,
) -> Result<bool> {
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO stripe_events (id, type, tenant_id, created, outcome)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(tenant)
    .bind(event.created)
    .bind(outcome.label())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(inserted.is_some())
}

/// The clinic an object belongs to: by its customer, else by the id Tessera attached.
async fn tenant_of(db: &Db, object: &Value, attached: Option<&str>) -> Result<Option<TenantId>> {
    if let Some(customer) = customer_of(object) {
        let found: Option<TenantId> = sqlx::query_scalar("SELECT billing_tenant_for_customer($1)")
            .bind(&customer)
            .fetch_one(db.pool())
            .await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    let Some(tenant) = attached.and_then(|s| s.parse::<TenantId>().ok()) else {
        return Ok(None);
    };
    // Only a clinic that exists.
    let mut tx = db.begin_tenant(tenant).await?;
    let exists: Option<TenantId> = sqlx::query_scalar("SELECT id FROM tenants")
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(exists)
}

async fn apply_subscription(
    tx: &mut Tx,
    created: i64,
    rank: i16,
    sub: &Subscription,
) -> Result<bool> {
    // Lock the clinic's row alone (a join would be re-checked against a concurrently changed
    // plan and could lose the row), then read its plan.
    let (tenant, at, at_rank, current): (crate::TenantId, i64, i16, String) = sqlx::query_as(
        "SELECT id, subscription_event_at, subscription_event_rank, plan FROM tenants FOR UPDATE",
    )
    .fetch_one(&mut **tx)
    .await?;
    let plan_self_serve: bool = sqlx::query_scalar("SELECT self_serve FROM plans WHERE id = $1")
        .bind(&current)
        .fetch_one(&mut **tx)
        .await?;
    if (created, rank) < (at, at_rank) {
        return Ok(false);
    }
    let ended = matches!(sub.status.as_str(), "canceled" | "incomplete_expired");
    // A plan set by an operator (enterprise) is not the subscription's to change.
    let plan = if !plan_self_serve {
        None
    } else if ended {
        Some(crate::PlanId::FALLBACK.to_string())
    } else {
        match &sub.plan {
            Some(p) => {
                let known: Option<String> =
                    sqlx::query_scalar("SELECT id FROM plans WHERE id = $1 AND self_serve")
                        .bind(p)
                        .fetch_optional(&mut **tx)
                        .await?;
                if known.is_none() {
                    tracing::warn!(plan = %p, "Stripe subscription names an unknown plan; plan left as it was");
                }
                known
            }
            None => None,
        }
    };
    let to_ts = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).ok();
    let (start, end) = match sub.period {
        Some((s, e)) if !ended => (to_ts(s), to_ts(e)),
        _ => (None, None),
    };
    sqlx::query(
        "UPDATE tenants SET plan = COALESCE($1, plan),
                stripe_customer_id = COALESCE(stripe_customer_id, $2),
                stripe_subscription_id = COALESCE($3, stripe_subscription_id),
                subscription_status = $4,
                current_period_start = $5, current_period_end = $6,
                subscription_event_at = $7, subscription_event_rank = $8,
                -- An ended subscription pays for nothing beyond the allowance any more.
                spending_cap_micro_usd = CASE WHEN $9 THEN 0 ELSE spending_cap_micro_usd END",
    )
    .bind(&plan)
    .bind(&sub.customer)
    .bind(&sub.id)
    .bind(&sub.status)
    .bind(start)
    .bind(end)
    .bind(created)
    .bind(rank)
    .bind(ended)
    .execute(&mut **tx)
    .await?;
    if let Some(plan) = plan.filter(|p| *p != current) {
        let event = crate::audit::Event::new("billing.plan_changed", plan.clone())
            .before(serde_json::json!({ "plan": current }))
            .after(serde_json::json!({ "plan": plan, "subscription": sub.status }));
        crate::audit::record(tx, Some(tenant), crate::audit::By::System, event).await?;
    }
    Ok(true)
}

async fn apply_payment(tx: &mut Tx, created: i64, failed: bool) -> Result<bool> {
    // A later failure keeps the first one's date: the grace period runs from it.
    let done = sqlx::query(
        "UPDATE tenants
            SET payment_failed_at = CASE WHEN $2 THEN COALESCE(payment_failed_at, to_timestamp($1)) END,
                payment_event_at = $1
          WHERE payment_event_at <= $1",
    )
    .bind(created)
    .bind(failed)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_subscription_in_either_api_shape() {
        let older = json!({
            "id": "sub_1", "customer": "cus_1", "status": "past_due",
            "current_period_start": 100, "current_period_end": 200,
            "items": {"data": [
                {"price": {"lookup_key": "tessera_professional_overage"}},
                {"price": {"lookup_key": "tessera_professional_base"}}
            ]}
        });
        assert_eq!(
            subscription_of(&older, false),
            Subscription {
                id: Some("sub_1".into()),
                customer: Some("cus_1".into()),
                status: "past_due".into(),
                plan: Some("professional".into()),
                period: Some((100, 200)),
            }
        );
        let newer = json!({
            "id": "sub_2", "customer": {"id": "cus_2"}, "status": "active",
            "items": {"data": [{"current_period_start": 5, "current_period_end": 9,
                                "price": {"lookup_key": null, "metadata": {"plan": "starter"}}}]}
        });
        let s = subscription_of(&newer, true);
        assert_eq!(s.customer.as_deref(), Some("cus_2"));
        assert_eq!(s.status, "canceled");
        assert_eq!(s.plan.as_deref(), Some("starter"));
        assert_eq!(s.period, Some((5, 9)));
    }
}
