//! Tessera's calls to Stripe's API, made with `async-stripe`'s request builders (which encode
//! Stripe's form parameters correctly) and its client (which sends idempotency keys). Replies
//! are read into small local types holding only the fields Tessera uses, so a field Stripe adds
//! or a newer API version cannot break a call.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterCustomerMapping, CreateBillingMeterCustomerMappingType,
    CreateBillingMeterDefaultAggregation, CreateBillingMeterDefaultAggregationFormula,
    CreateBillingMeterValueSettings, ListBillingMeter,
};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, CreatePriceRecurringUsageType,
    ListPrice,
};
use stripe_product::product::{CreateProduct, RetrieveProduct};

use super::{base_price_key, overage_price_key, Plan, ReturnUrls, METER_EVENT_NAME};
use crate::config::StripeConfig;
use crate::tenancy::TenantId;
use crate::{Error, PlanId, Result};

/// A Stripe client for one account.
#[derive(Clone)]
pub struct StripeApi {
    client: Client,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi").finish_non_exhaustive()
    }
}

#[derive(miniserde::Deserialize)]
struct Object {
    id: String,
}

#[derive(miniserde::Deserialize)]
struct Session {
    url: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct PriceList {
    data: Vec<Price>,
}

#[derive(miniserde::Deserialize)]
struct MeterList {
    data: Vec<Meter>,
}

#[derive(miniserde::Deserialize)]
struct Price {
    id: String,
    lookup_key: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct Meter {
    id: String,
    event_name: String,
    status: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct Subscription {
    items: SubscriptionItems,
}

#[derive(miniserde::Deserialize)]
struct SubscriptionItems {
    data: Vec<SubscriptionItem>,
}

#[derive(miniserde::Deserialize)]
struct SubscriptionItem {
    id: String,
    price: ItemPrice,
}

#[derive(miniserde::Deserialize)]
struct ItemPrice {
    recurring: Option<Recurring>,
}

#[derive(miniserde::Deserialize)]
struct Recurring {
    usage_type: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct MeterEvent {
    identifier: String,
}

/// One thing `stripe-sync` found or made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogItem {
    pub kind: &'static str,
    pub id: String,
    /// The lookup key or name it is found by.
    pub key: String,
    pub created: bool,
}

impl std::fmt::Display for CatalogItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.created { "created" } else { "exists " };
        write!(f, "{what} {:<8} {:<32} {}", self.kind, self.key, self.id)
    }
}

/// How a failed Stripe call is reported to the person who asked for it; the details go to
/// the log (Stripe's errors carry no secrets).
fn unavailable(what: &str, e: StripeError) -> Error {
    tracing::warn!(error = %e, "Stripe call failed: {what}");
    Error::Unavailable(format!(
        "Stripe could not {what} just now. Try again in a minute."
    ))
}

fn key(k: &str) -> Result<RequestStrategy> {
    IdempotencyKey::new(k)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| Error::Internal(format!("idempotency key {k:?}: {e:?}")))
}

/// US cents per token, as Stripe's `unit_amount_decimal`, for a price in micro-dollars per
/// 1,000 tokens: 3,000 (that is $0.003 per 1k) is `0.0003`.
pub fn cents_per_token(micro_usd_per_1k: i64) -> String {
    // micro-dollars per 1k tokens / 10^4 (to cents) / 10^3 (per token) = / 10^7.
    let whole = micro_usd_per_1k / 10_000_000;
    let frac = format!("{:07}", micro_usd_per_1k % 10_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{frac}")
    }
}

impl StripeApi {
    pub fn new(config: &StripeConfig) -> Result<Self> {
        let client = ClientBuilder::new(config.secret_key.expose_secret())
            .url(config.api_base.clone())
            .timeout(Duration::from_secs(20))
            .app_info("tessera", Some(env!("CARGO_PKG_VERSION").to_string()), None)
            .build()
            .map_err(|e| Error::Internal(format!("Stripe client: {e}")))?;
        Ok(Self { client })
    }

    async fn send<T: miniserde::Deserialize>(
        &self,
        req: &impl StripeRequest,
        strategy: RequestStrategy,
    ) -> std::result::Result<T, StripeError> {
        req.build()
            .customize::<T>()
            .request_strategy(strategy)
            .send(&self.client)
            .await
    }

    /// Creates the clinic's customer. The idempotency key is the clinic's, so a retry (or a
    /// second admin at the same moment) gets the same customer back.
    pub async fn create_customer(
        &self,
        tenant: TenantId,
        name: &str,
        email: &str,
    ) -> Result<String> {
        let req = stripe_core::customer::CreateCustomer::new()
            .name(name)
            .email(email)
            .metadata(HashMap::from([(
                "tenant_id".to_string(),
                tenant.to_string(),
            )]));
        let c: Object = self
            .send(&req, key(&format!("tessera-customer-{tenant}"))?)
            .await
            .map_err(|e| unavailable("create the billing account", e))?;
        Ok(c.id)
    }

    /// The prices with these lookup keys, by lookup key.
    async fn prices(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        let req = ListPrice::new().lookup_keys(keys.to_vec()).active(true);
        let list: PriceList = self
            .send(&req, RequestStrategy::Once)
            .await
            .map_err(|e| unavailable("read the plans' prices", e))?;
        Ok(list
            .data
            .into_iter()
            .filter_map(|p| Some((p.lookup_key?, p.id)))
            .collect())
    }

    /// The ids of a plan's base and overage prices.
    async fn plan_prices(&self, plan: PlanId) -> Result<(String, String)> {
        let (base_key, overage_key) = (base_price_key(plan), overage_price_key(plan));
        let mut prices = self
            .prices(&[base_key.clone(), overage_key.clone()])
            .await?;
        match (prices.remove(&base_key), prices.remove(&overage_key)) {
            (Some(base), Some(overage)) => Ok((base, overage)),
            _ => Err(Error::Unavailable(
                "Billing is not set up on this server yet: an operator must run `server stripe-sync`."
                    .into(),
            )),
        }
    }

    /// A Checkout session in subscription mode for `plan`: its base price and its metered
    /// overage price. The subscription's billing cycle starts on the 1st of next month (the
    /// first month prorated), so Stripe's periods are the calendar months Tessera meters.
    pub async fn checkout_session(
        &self,
        customer: &str,
        tenant: TenantId,
        plan: PlanId,
        urls: &ReturnUrls,
    ) -> Result<String> {
        let (base, overage) = self.plan_prices(plan).await?;
        let metadata = HashMap::from([
            ("tenant_id".to_string(), tenant.to_string()),
            ("plan".to_string(), plan.to_string()),
        ]);
        let mut base_item = CreateCheckoutSessionLineItems::new();
        base_item.price = Some(base);
        base_item.quantity = Some(1);
        // Metered prices take no quantity.
        let mut overage_item = CreateCheckoutSessionLineItems::new();
        overage_item.price = Some(overage);
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(metadata.clone());
        subscription.billing_cycle_anchor = Some(next_month_start(time::OffsetDateTime::now_utc()));
        let req = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Subscription)
            .customer(customer)
            .client_reference_id(tenant.to_string())
            .line_items(vec![base_item, overage_item])
            .subscription_data(subscription)
            .metadata(metadata)
            .success_url(urls.success.clone())
            .cancel_url(urls.cancel.clone());
        let session: Session = self
            .send(&req, RequestStrategy::Once)
            .await
            .map_err(|e| unavailable("open Checkout", e))?;
        session
            .url
            .ok_or_else(|| Error::Internal("Checkout session without a url".into()))
    }

    /// Moves a running subscription to `plan`: its base item to the plan's base price and its
    /// metered item to the plan's overage price, prorated. Stripe then sends
    /// `customer.subscription.updated`, which changes the clinic's plan. Done here rather than
    /// in the Customer Portal so that both items move together, whatever the portal's settings.
    pub async fn change_plan(&self, subscription: &str, plan: PlanId) -> Result<()> {
        let current: Subscription = self
            .send(
                &RetrieveSubscription::new(subscription),
                RequestStrategy::Once,
            )
            .await
            .map_err(|e| unavailable("read the subscription", e))?;
        let (base, overage) = self.plan_prices(plan).await?;
        let items: Vec<UpdateSubscriptionItems> = current
            .items
            .data
            .iter()
            .map(|item| {
                let metered = item
                    .price
                    .recurring
                    .as_ref()
                    .and_then(|r| r.usage_type.as_deref())
                    == Some("metered");
                let mut update = UpdateSubscriptionItems::new();
                update.id = Some(item.id.clone());
                update.price = Some(if metered { &overage } else { &base }.clone());
                update
            })
            .collect();
        let req = UpdateSubscription::new(subscription)
            .items(items)
            .proration_behavior(UpdateSubscriptionProrationBehavior::CreateProrations);
        self.send::<Object>(&req, RequestStrategy::Once)
            .await
            .map_err(|e| unavailable("change the plan", e))?;
        Ok(())
    }

    /// A Customer Portal session for the customer.
    pub async fn portal_session(&self, customer: &str, return_url: &str) -> Result<String> {
        let req = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url);
        let session: Session = self
            .send(&req, RequestStrategy::Once)
            .await
            .map_err(|e| unavailable("open the billing portal", e))?;
        session
            .url
            .ok_or_else(|| Error::Internal("portal session without a url".into()))
    }

    /// Reports `tokens` of overage for a customer at `timestamp` (Unix seconds) as one Billing
    /// Meter event. `identifier` is deterministic and doubles as the idempotency key: Stripe
    /// replays the first answer to a resent request, and refuses a second event with the same
    /// identifier, which counts as sent.
    pub async fn meter_event(
        &self,
        identifier: &str,
        customer: &str,
        tokens: i64,
        timestamp: i64,
    ) -> std::result::Result<(), String> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_string(), customer.to_string()),
            ("value".to_string(), tokens.to_string()),
        ]);
        let req = CreateBillingMeterEvent::new(METER_EVENT_NAME, payload)
            .identifier(identifier)
            .timestamp(timestamp);
        let strategy = key(identifier).map_err(|e| e.to_string())?;
        match self.send::<MeterEvent>(&req, strategy).await {
            Ok(reply) if reply.identifier == identifier => Ok(()),
            Ok(reply) => Err(format!(
                "Stripe answered for another event ({})",
                reply.identifier
            )),
            Err(StripeError::Stripe(e, 400))
                if e.code.as_ref().map(|c| c.as_str()) == Some("resource_already_exists") =>
            {
                Ok(())
            }
            Err(StripeError::Stripe(e, status)) => Err(format!(
                "Stripe refused the meter event ({status}): {}",
                e.message.unwrap_or_default()
            )),
            Err(e) => Err(format!("Stripe could not be reached: {e}")),
        }
    }

    /// Makes sure Stripe has the catalogue for `plans`: the token meter, and for each
    /// self-serve plan with a price a product, its monthly base price and its metered overage
    /// price. Finds existing ones by id, event name and lookup key, so it can run any number of
    /// times. Returns what it found and made.
    pub async fn sync_catalog(&self, plans: &[Plan]) -> Result<Vec<CatalogItem>> {
        let meter = self.sync_meter().await?;
        let mut out = vec![meter.clone()];
        for plan in plans.iter().filter(|p| p.self_serve) {
            let Some(base_micro) = plan.base_price_micro_usd else {
                continue;
            };
            let product = self.sync_product(plan).await?;
            let product_id = product.id.clone();
            out.push(product);
            let (base_key, overage_key) = (base_price_key(plan.id), overage_price_key(plan.id));
            let existing = self
                .prices(&[base_key.clone(), overage_key.clone()])
                .await?;
            for (lookup, metered) in [(base_key, false), (overage_key, true)] {
                if let Some(id) = existing.get(&lookup) {
                    out.push(CatalogItem {
                        kind: "price",
                        id: id.clone(),
                        key: lookup,
                        created: false,
                    });
                    continue;
                }
                let mut recurring = CreatePriceRecurring::new(CreatePriceRecurringInterval::Month);
                let mut req = CreatePrice::new(stripe_types::Currency::USD)
                    .product(product_id.as_str())
                    .lookup_key(lookup.as_str())
                    .metadata(HashMap::from([("plan".to_string(), plan.id.to_string())]));
                if metered {
                    recurring.usage_type = Some(CreatePriceRecurringUsageType::Metered);
                    recurring.meter = Some(meter.id.clone());
                    req = req
                        .nickname(format!("{} tokens beyond the allowance", plan.name))
                        .unit_amount_decimal(cents_per_token(plan.overage_micro_usd_per_1k));
                } else {
                    req = req
                        .nickname(format!("{} monthly", plan.name))
                        .unit_amount(base_micro / 10_000);
                }
                let price: Object = self
                    .send(
                        &req.recurring(recurring),
                        key(&format!("tessera-price-{lookup}"))?,
                    )
                    .await
                    .map_err(|e| unavailable("create a price", e))?;
                out.push(CatalogItem {
                    kind: "price",
                    id: price.id,
                    key: lookup,
                    created: true,
                });
            }
        }
        Ok(out)
    }

    /// The token meter, found by its event name or made.
    async fn sync_meter(&self) -> Result<CatalogItem> {
        let meters: MeterList = self
            .send(&ListBillingMeter::new(), RequestStrategy::Once)
            .await
            .map_err(|e| unavailable("list the billing meters", e))?;
        let found = meters
            .data
            .into_iter()
            .find(|m| m.event_name == METER_EVENT_NAME && m.status.as_deref() != Some("inactive"));
        let (id, created) = match found {
            Some(m) => (m.id, false),
            None => {
                let req = CreateBillingMeter::new(
                    CreateBillingMeterDefaultAggregation::new(
                        CreateBillingMeterDefaultAggregationFormula::Sum,
                    ),
                    "Tessera tokens beyond the allowance",
                    METER_EVENT_NAME,
                )
                .customer_mapping(CreateBillingMeterCustomerMapping::new(
                    "stripe_customer_id",
                    CreateBillingMeterCustomerMappingType::ById,
                ))
                .value_settings(CreateBillingMeterValueSettings::new("value"));
                let m: Object = self
                    .send(&req, key("tessera-meter-tokens")?)
                    .await
                    .map_err(|e| unavailable("create the billing meter", e))?;
                (m.id, true)
            }
        };
        Ok(CatalogItem {
            kind: "meter",
            id,
            key: METER_EVENT_NAME.into(),
            created,
        })
    }

    /// A plan's product (`tessera_<plan>`), found by its id or made.
    async fn sync_product(&self, plan: &Plan) -> Result<CatalogItem> {
        let product_id = format!("tessera_{}", plan.id);
        let created = match self
            .send::<Object>(
                &RetrieveProduct::new(product_id.as_str()),
                RequestStrategy::Once,
            )
            .await
        {
            Ok(_) => false,
            Err(StripeError::Stripe(_, 404)) => {
                let req = CreateProduct::new(format!("Tessera {}", plan.name))
                    .id(product_id.as_str())
                    .metadata(HashMap::from([("plan".to_string(), plan.id.to_string())]));
                self.send::<Object>(&req, key(&format!("tessera-product-{}", plan.id))?)
                    .await
                    .map_err(|e| unavailable("create a product", e))?;
                true
            }
            Err(e) => return Err(unavailable("read a product", e)),
        };
        Ok(CatalogItem {
            kind: "product",
            id: product_id,
            key: plan.name.clone(),
            created,
        })
    }
}

/// Unix seconds of the first instant of the month after `now` (UTC).
pub fn next_month_start(now: time::OffsetDateTime) -> i64 {
    crate::Month::of(now).end().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overage_prices_in_cents_per_token() {
        assert_eq!(cents_per_token(3000), "0.0003");
        assert_eq!(cents_per_token(2000), "0.0002");
        assert_eq!(cents_per_token(12_345), "0.0012345");
        assert_eq!(cents_per_token(10_000_000), "1");
        assert_eq!(cents_per_token(0), "0");
    }

    #[test]
    fn billing_cycles_start_on_the_first() {
        use time::macros::datetime;
        assert_eq!(
            next_month_start(datetime!(2026-11-29 05:00 UTC)),
            datetime!(2026-12-01 0:00 UTC).unix_timestamp()
        );
        assert_eq!(
            next_month_start(datetime!(2026-12-31 23:59 UTC)),
            datetime!(2027-01-01 0:00 UTC).unix_timestamp()
        );
    }
}
