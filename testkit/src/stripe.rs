//! A simulator of the Stripe endpoints Tessera uses, speaking Stripe's wire format: form-encoded
//! requests (`a[b][0]=v`), JSON objects and lists, Stripe's error shape, `Idempotency-Key`
//! replays, and signed webhook deliveries. Tests and the end-to-end suite only.
//!
//! Mounted under `/stripe` (so `STRIPE_API_BASE=http://<sim>/stripe/`):
//! - `POST /v1/customers`, `GET /v1/customers/{id}`;
//! - `GET|POST /v1/products[/{id}]`, `GET|POST /v1/prices` (`lookup_keys[]` filter),
//!   `GET|POST /v1/billing/meters`;
//! - `POST /v1/checkout/sessions` (hosted page at its `url`), `POST /v1/billing_portal/sessions`
//!   (hosted page at its `url`), `GET /v1/subscriptions/{id}`;
//! - `POST /v1/billing/meter_events` (unique `identifier`, `resource_already_exists` otherwise).
//!
//! A key must be `Bearer sk_test_...`. A request with an `Idempotency-Key` seen before gets the
//! first answer again (with `Idempotent-Replayed: true`), or a 400 `idempotency_error` if its
//! parameters differ.
//!
//! The hosted pages act as the customer: paying on the Checkout page creates the subscription
//! and delivers `checkout.session.completed`, `customer.subscription.created` and
//! `invoice.paid`; the portal page cancels (`customer.subscription.deleted`). Plan changes go
//! through the API (`POST /v1/subscriptions/{id}`), as Tessera makes them. Deliveries are signed like Stripe's
//! (`Stripe-Signature: t=..,v1=HMAC-SHA256(secret, "t.body")`) and sent to the configured
//! endpoint.
//!
//! Control (not Stripe's): `POST /stripe/sim/config` `{webhook_url, webhook_secret,
//! meter_latency_ms}`; `GET /stripe/sim/state`; `POST /stripe/sim/subscriptions/{id}/payment_failed` (or `payment_succeeded`, or `cancel`)
//! and `/payment_succeeded`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// Where the simulator delivers webhooks, and how it behaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StripeSimOptions {
    /// The Tessera webhook endpoint (`http://.../webhooks/stripe`); none: events are only kept.
    pub webhook_url: Option<String>,
    /// The endpoint's signing secret (`whsec_...`).
    pub webhook_secret: Option<String>,
}

#[derive(Default)]
struct Store {
    options: StripeSimOptions,
    meter_latency_ms: u64,
    next_id: u64,
    customers: HashMap<String, Value>,
    products: HashMap<String, Value>,
    prices: Vec<Value>,
    meters: Vec<Value>,
    sessions: HashMap<String, Value>,
    portal_sessions: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    /// Meter events in arrival order; identifiers are unique.
    meter_events: Vec<Value>,
    meter_event_requests: u64,
    /// Idempotency key -> (method and path and body, status, answer).
    idempotency: HashMap<String, (String, u16, Value)>,
    /// Every event generated, with the endpoint's answer.
    events: Vec<Value>,
    requests: u64,
}

#[derive(Clone)]
struct Sim(Arc<Mutex<Store>>);

impl Sim {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_sim{:06}", self.next_id)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The Stripe simulator's routes, to be nested under `/stripe`.
pub fn router(options: StripeSimOptions) -> Router {
    let sim = Sim(Arc::new(Mutex::new(Store {
        options,
        ..Store::default()
    })));
    Router::new()
        .route("/v1/customers", post(api))
        .route("/v1/customers/{id}", get(api))
        .route("/v1/products", post(api))
        .route("/v1/products/{id}", get(api))
        .route("/v1/prices", get(api).post(api))
        .route("/v1/billing/meters", get(api).post(api))
        .route("/v1/billing/meter_events", post(meter_event))
        .route("/v1/checkout/sessions", post(api))
        .route("/v1/billing_portal/sessions", post(api))
        .route("/v1/subscriptions/{id}", get(api).post(update_subscription))
        .route("/checkout/{id}", get(checkout_page))
        .route("/checkout/{id}/pay", post(checkout_pay))
        .route("/portal/{id}", get(portal_page))
        .route("/portal/{id}/cancel", post(portal_cancel))
        .route("/sim/config", post(configure))
        .route("/sim/state", get(state))
        .route("/sim/subscriptions/{id}/{what}", post(payment))
        .with_state(sim)
}

// --- Stripe's wire format ------------------------------------------------------------------

/// A form body or query string as Stripe's flat bracketed keys: `line_items[0][price]`.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `prefix[k]=v` pairs as an object (metadata).
    fn map(&self, prefix: &str) -> Value {
        let p = format!("{prefix}[");
        let mut m = Map::new();
        for (k, v) in &self.0 {
            if let Some(inner) = k.strip_prefix(&p).and_then(|r| r.strip_suffix(']')) {
                if !inner.contains('[') {
                    m.insert(inner.to_string(), Value::String(v.clone()));
                }
            }
        }
        Value::Object(m)
    }

    /// Values of `prefix[0]`, `prefix[1]`, ... (or `prefix[]`).
    fn list(&self, prefix: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('['))
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|i| i.is_empty() || i.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> (StatusCode, Value) {
    let mut e = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        e["code"] = json!(code);
    }
    (status, json!({ "error": e }))
}

fn missing(what: &str, id: &str) -> (StatusCode, Value) {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {what}: '{id}'"),
    )
}

fn param_missing(param: &str) -> (StatusCode, Value) {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        &format!("Missing required param: {param}."),
    )
}

fn list(data: Vec<Value>, url: &str) -> Value {
    json!({ "object": "list", "data": data, "has_more": false, "url": url })
}

fn respond((status, body): (StatusCode, Value)) -> Response {
    (status, Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k.starts_with("sk_test_"))
}

fn host_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}/stripe")
}

/// Runs an API request through authentication and idempotency, then `handle`.
fn with_idempotency(
    sim: &Sim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &str,
    handle: impl FnOnce(&mut Store) -> (StatusCode, Value),
) -> Response {
    if !authorized(headers) {
        return respond(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided.",
        ));
    }
    let mut st = sim.lock();
    st.requests += 1;
    // Stripe compares the parameters, not their order in the body.
    let mut params = parse_form(body);
    params.sort();
    let fingerprint = format!("{method} {} {params:?}", uri.path());
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|_| *method == Method::POST)
        .map(str::to_string);
    if let Some(key) = &key {
        if let Some((seen, status, answer)) = st.idempotency.get(key) {
            if *seen != fingerprint {
                return respond(error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                ));
            }
            let mut res = (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                Json(answer.clone()),
            )
                .into_response();
            res.headers_mut()
                .insert("idempotent-replayed", "true".parse().expect("header"));
            return res;
        }
    }
    let (status, answer) = handle(&mut st);
    if let Some(key) = key {
        st.idempotency
            .insert(key, (fingerprint, status.as_u16(), answer.clone()));
    }
    respond((status, answer))
}

async fn api(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let base = host_base(&headers);
    let form = Form(parse_form(if method == Method::GET {
        query.as_deref().unwrap_or_default()
    } else {
        &body
    }));
    let path = uri.path().trim_start_matches("/stripe").to_string();
    with_idempotency(&sim, &method, &uri, &headers, &body, |st| {
        route(st, &method, &path, &form, &base)
    })
}

fn route(
    st: &mut Store,
    method: &Method,
    path: &str,
    form: &Form,
    base: &str,
) -> (StatusCode, Value) {
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["customers"]) => {
            let id = st.id("cus");
            let c = json!({
                "id": id, "object": "customer", "created": now(), "livemode": false,
                "name": form.get("name"), "email": form.get("email"), "metadata": form.map("metadata"),
            });
            st.customers.insert(id, c.clone());
            (StatusCode::OK, c)
        }
        ("GET", ["customers", id]) => match st.customers.get(*id) {
            Some(c) => (StatusCode::OK, c.clone()),
            None => missing("customer", id),
        },
        ("POST", ["products"]) => {
            let Some(name) = form.get("name") else {
                return param_missing("name");
            };
            let id = form
                .get("id")
                .map(str::to_string)
                .unwrap_or_else(|| st.id("prod"));
            if st.products.contains_key(&id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("resource_already_exists"),
                    &format!("Product already exists: {id}"),
                );
            }
            let p = json!({ "id": id, "object": "product", "name": name, "active": true, "metadata": form.map("metadata"), "created": now() });
            st.products.insert(id, p.clone());
            (StatusCode::OK, p)
        }
        ("GET", ["products", id]) => match st.products.get(*id) {
            Some(p) => (StatusCode::OK, p.clone()),
            None => missing("product", id),
        },
        ("GET", ["prices"]) => {
            let keys = form.list("lookup_keys");
            let data = st
                .prices
                .iter()
                .filter(|p| {
                    keys.is_empty()
                        || p["lookup_key"]
                            .as_str()
                            .is_some_and(|k| keys.iter().any(|x| x == k))
                })
                .cloned()
                .collect();
            (StatusCode::OK, list(data, "/v1/prices"))
        }
        ("POST", ["prices"]) => {
            let Some(product) = form.get("product") else {
                return param_missing("product");
            };
            if !st.products.contains_key(product) {
                return missing("product", product);
            }
            let lookup = form.get("lookup_key");
            if let Some(k) = lookup {
                if st.prices.iter().any(|p| p["lookup_key"] == k) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        Some("lookup_key_already_exists"),
                        &format!("A price (`{k}`) already uses that lookup key."),
                    );
                }
            }
            let Some(interval) = form.get("recurring[interval]") else {
                return param_missing("recurring[interval]");
            };
            let usage_type = form.get("recurring[usage_type]").unwrap_or("licensed");
            let meter = form.get("recurring[meter]");
            if usage_type == "metered"
                && !meter.is_some_and(|m| st.meters.iter().any(|x| x["id"] == m))
            {
                return param_missing("recurring[meter]");
            }
            let id = st.id("price");
            let p = json!({
                "id": id, "object": "price", "active": true, "currency": form.get("currency").unwrap_or("usd"),
                "product": product, "lookup_key": lookup, "nickname": form.get("nickname"),
                "unit_amount": form.get("unit_amount").and_then(|v| v.parse::<i64>().ok()),
                "unit_amount_decimal": form.get("unit_amount_decimal").or(form.get("unit_amount")),
                "recurring": { "interval": interval, "usage_type": usage_type, "meter": meter },
                "metadata": form.map("metadata"), "type": "recurring", "created": now(),
            });
            st.prices.push(p.clone());
            (StatusCode::OK, p)
        }
        ("GET", ["billing", "meters"]) => (
            StatusCode::OK,
            list(st.meters.clone(), "/v1/billing/meters"),
        ),
        ("POST", ["billing", "meters"]) => {
            let Some(event_name) = form.get("event_name") else {
                return param_missing("event_name");
            };
            if st
                .meters
                .iter()
                .any(|m| m["event_name"] == event_name && m["status"] == "active")
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("resource_already_exists"),
                    "An active meter with this event_name already exists.",
                );
            }
            let id = st.id("mtr");
            let m = json!({
                "id": id, "object": "billing.meter", "event_name": event_name, "status": "active",
                "display_name": form.get("display_name"),
                "default_aggregation": { "formula": form.get("default_aggregation[formula]") },
                "customer_mapping": { "event_payload_key": form.get("customer_mapping[event_payload_key]"), "type": form.get("customer_mapping[type]") },
                "value_settings": { "event_payload_key": form.get("value_settings[event_payload_key]") },
            });
            st.meters.push(m.clone());
            (StatusCode::OK, m)
        }
        ("POST", ["checkout", "sessions"]) => {
            let mode = form.get("mode").unwrap_or("payment");
            let Some(success) = form.get("success_url") else {
                return param_missing("success_url");
            };
            let mut items = Vec::new();
            let mut n = 0;
            while let Some(price) = form.get(&format!("line_items[{n}][price]")) {
                let Some(p) = st.prices.iter().find(|p| p["id"] == price).cloned() else {
                    return missing("price", price);
                };
                let metered = p["recurring"]["usage_type"] == "metered";
                let quantity = form.get(&format!("line_items[{n}][quantity]"));
                if metered && quantity.is_some() {
                    return error(StatusCode::BAD_REQUEST, "invalid_request_error", None, "Quantity should not be specified where usage_type is `metered`. Remove quantity from `line_items[1]`.");
                }
                items.push(
                    json!({ "price": p, "quantity": quantity.and_then(|q| q.parse::<i64>().ok()) }),
                );
                n += 1;
            }
            if items.is_empty() {
                return param_missing("line_items");
            }
            if let Some(c) = form.get("customer") {
                if !st.customers.contains_key(c) {
                    return missing("customer", c);
                }
            }
            let id = st.id("cs");
            let s = json!({
                "id": id, "object": "checkout.session", "mode": mode, "status": "open",
                "url": format!("{base}/checkout/{id}"),
                "customer": form.get("customer"), "client_reference_id": form.get("client_reference_id"),
                "metadata": form.map("metadata"), "success_url": success, "cancel_url": form.get("cancel_url"),
                "subscription": null, "created": now(), "livemode": false,
                // Kept for the hosted page; Stripe has them behind `expand[]`.
                "line_items": { "object": "list", "data": items },
                "subscription_data": {
                    "metadata": form.map("subscription_data[metadata]"),
                    "billing_cycle_anchor": form.get("subscription_data[billing_cycle_anchor]").and_then(|v| v.parse::<i64>().ok()),
                },
            });
            st.sessions.insert(id, s.clone());
            (StatusCode::OK, s)
        }
        ("POST", ["billing_portal", "sessions"]) => {
            let Some(customer) = form.get("customer") else {
                return param_missing("customer");
            };
            if !st.customers.contains_key(customer) {
                return missing("customer", customer);
            }
            let id = st.id("bps");
            let s = json!({
                "id": id, "object": "billing_portal.session", "customer": customer,
                "return_url": form.get("return_url"), "url": format!("{base}/portal/{id}"),
                "created": now(), "livemode": false,
            });
            st.portal_sessions.insert(id, s.clone());
            (StatusCode::OK, s)
        }
        ("GET", ["subscriptions", id]) => match st.subscriptions.get(*id) {
            Some(s) => (StatusCode::OK, s.clone()),
            None => missing("subscription", id),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!("Unrecognized request URL ({method} {path})."),
        ),
    }
}

/// Changes the prices of a subscription's items (`items[n][id]`, `items[n][price]`), then
/// delivers `customer.subscription.updated`.
async fn update_subscription(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let form = Form(parse_form(&body));
    let mut changed = None;
    let res = with_idempotency(&sim, &method, &uri, &headers, &body, |st| {
        let prices = st.prices.clone();
        let Some(sub) = st.subscriptions.get_mut(&id) else {
            return missing("subscription", &id);
        };
        let mut n = 0;
        while let Some(item_id) = form.get(&format!("items[{n}][id]")) {
            let Some(price_id) = form.get(&format!("items[{n}][price]")) else {
                return param_missing(&format!("items[{n}][price]"));
            };
            let Some(price) = prices.iter().find(|p| p["id"] == price_id) else {
                return missing("price", price_id);
            };
            let item = sub["items"]["data"]
                .as_array_mut()
                .and_then(|items| items.iter_mut().find(|i| i["id"] == item_id));
            let Some(item) = item else {
                return missing("subscription item", item_id);
            };
            item["price"] = price.clone();
            n += 1;
        }
        changed = Some(sub.clone());
        (StatusCode::OK, sub.clone())
    });
    if let Some(sub) = changed {
        emit(&sim, "customer.subscription.updated", sub).await;
    }
    res
}

/// Meter events: recorded before the (optional) delay, so a client that gives up during the
/// delay has still been counted, as when a crash follows Stripe's acceptance.
async fn meter_event(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let form = Form(parse_form(&body));
    let latency = {
        let mut st = sim.lock();
        st.meter_event_requests += 1;
        st.meter_latency_ms
    };
    let res = with_idempotency(&sim, &method, &uri, &headers, &body, |st| {
        let Some(event_name) = form.get("event_name") else {
            return param_missing("event_name");
        };
        if !st
            .meters
            .iter()
            .any(|m| m["event_name"] == event_name && m["status"] == "active")
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!("No active meter was found with event_name `{event_name}`."),
            );
        }
        let Some(customer) = form.get("payload[stripe_customer_id]") else {
            return param_missing("payload[stripe_customer_id]");
        };
        if !st.customers.contains_key(customer) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!("No customer found for `{customer}`."),
            );
        }
        if form
            .get("payload[value]")
            .and_then(|v| v.parse::<i64>().ok())
            .is_none()
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "payload[value] must be a whole number.",
            );
        }
        let identifier = form
            .get("identifier")
            .map(str::to_string)
            .unwrap_or_else(|| st.id("mev"));
        if st
            .meter_events
            .iter()
            .any(|e| e["identifier"] == identifier.as_str())
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("resource_already_exists"),
                &format!("An event already exists with identifier {identifier}."),
            );
        }
        let e = json!({
            "object": "billing.meter.event", "event_name": event_name, "identifier": identifier,
            "payload": form.map("payload"), "created": now(), "livemode": false,
            "timestamp": form.get("timestamp").and_then(|v| v.parse::<i64>().ok()).unwrap_or_else(now),
        });
        st.meter_events.push(e.clone());
        (StatusCode::OK, e)
    });
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    res
}

// --- Webhooks --------------------------------------------------------------------------------

/// Builds an event around `object`, signs it and delivers it (when an endpoint is configured).
async fn emit(sim: &Sim, kind: &str, object: Value) {
    let (event, target) = {
        let mut st = sim.lock();
        let id = st.id("evt");
        let event = json!({
            "id": id, "object": "event", "type": kind, "created": now(), "livemode": false,
            "api_version": "2025-08-27.basil", "pending_webhooks": 1,
            "data": { "object": object },
        });
        (
            event,
            st.options
                .webhook_url
                .clone()
                .zip(st.options.webhook_secret.clone()),
        )
    };
    let status = match target {
        Some((url, secret)) => deliver(&url, &secret, &event).await,
        None => None,
    };
    let mut st = sim.lock();
    st.events.push(
        json!({ "id": event["id"], "type": kind, "delivered_status": status, "event": event }),
    );
}

/// Signs `event` like Stripe (`t=<now>,v1=<hex HMAC-SHA256 of "t.body">`) and posts it; the
/// endpoint's status, or `None` when it could not be reached.
pub async fn deliver(url: &str, secret: &str, event: &Value) -> Option<u16> {
    let body = serde_json::to_vec(event).ok()?;
    let t = now();
    let header = format!("t={t},v1={}", sign(secret, t, &body));
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    Some(res.status().as_u16())
}

/// Stripe's `v1` signature: hex HMAC-SHA256 of `"{t}.{payload}"` under `secret`.
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The simulator's state (`GET /stripe/sim/state`), for tests; `base` is `http://<sim>/stripe`.
pub async fn sim_state(base: &str) -> Value {
    reqwest::get(format!("{base}/sim/state"))
        .await
        .expect("the Stripe simulator answers")
        .json()
        .await
        .expect("its state is JSON")
}

// --- Hosted pages ------------------------------------------------------------------------------

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{t}</title></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    ))
    .into_response()
}

fn price_label(p: &Value) -> String {
    let nickname = p["nickname"].as_str().unwrap_or("Plan");
    match p["unit_amount"].as_i64() {
        Some(cents) => format!("{nickname}: ${}.{:02} per month", cents / 100, cents % 100),
        None => format!("{nickname}: metered"),
    }
}

async fn checkout_page(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let st = sim.lock();
    let Some(s) = st.sessions.get(&id) else {
        return (StatusCode::NOT_FOUND, "No such checkout session").into_response();
    };
    let items: String = s["line_items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| format!("<li>{}</li>", escape(&price_label(&i["price"]))))
        .collect();
    let cancel = s["cancel_url"].as_str().unwrap_or("/");
    page(
        "Stripe Checkout (simulated)",
        &format!(
            "<ul>{items}</ul><p>Card: 4242 4242 4242 4242</p>\
             <form method=post action=\"/stripe/checkout/{id}/pay\"><button type=submit>Subscribe</button></form>\
             <p><a href=\"{}\">Cancel</a></p>",
            escape(cancel)
        ),
    )
}

fn period_for(anchor: Option<i64>) -> (i64, i64) {
    let start = now();
    (
        start,
        anchor.filter(|a| *a > start).unwrap_or(start + 30 * 86_400),
    )
}

async fn checkout_pay(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let (session, subscription, invoice) = {
        let mut st = sim.lock();
        let Some(mut s) = st.sessions.get(&id).cloned() else {
            return (StatusCode::NOT_FOUND, "No such checkout session").into_response();
        };
        if s["status"] != "open" {
            return (
                StatusCode::CONFLICT,
                "This checkout session is no longer open",
            )
                .into_response();
        }
        let customer = match s["customer"].as_str() {
            Some(c) => c.to_string(),
            None => {
                let c = st.id("cus");
                st.customers.insert(
                    c.clone(),
                    json!({ "id": c, "object": "customer", "metadata": {} }),
                );
                c
            }
        };
        let (start, end) = period_for(s["subscription_data"]["billing_cycle_anchor"].as_i64());
        let sub_id = st.id("sub");
        let items: Vec<Value> = s["line_items"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                json!({
                    "object": "subscription_item", "price": i["price"], "quantity": i["quantity"],
                    "current_period_start": start, "current_period_end": end,
                })
            })
            .collect();
        let items: Vec<Value> = items
            .into_iter()
            .map(|mut i| {
                i["id"] = json!(st.id("si"));
                i
            })
            .collect();
        let sub = json!({
            "id": sub_id, "object": "subscription", "customer": customer, "status": "active",
            "metadata": s["subscription_data"]["metadata"], "created": now(),
            "items": { "object": "list", "data": items },
        });
        st.subscriptions.insert(sub_id.clone(), sub.clone());
        s["status"] = json!("complete");
        s["customer"] = json!(customer);
        s["subscription"] = json!(sub_id);
        st.sessions.insert(id.clone(), s.clone());
        let invoice = json!({
            "id": st.id("in"), "object": "invoice", "customer": customer, "subscription": sub_id,
            "status": "paid", "paid": true, "billing_reason": "subscription_create",
        });
        (s, sub, invoice)
    };
    emit(&sim, "checkout.session.completed", session.clone()).await;
    emit(&sim, "customer.subscription.created", subscription).await;
    emit(&sim, "invoice.paid", invoice).await;
    let success = session["success_url"]
        .as_str()
        .unwrap_or("/")
        .replace("{CHECKOUT_SESSION_ID}", &id);
    Redirect::to(&success).into_response()
}

fn subscription_of_customer<'a>(st: &'a Store, customer: &str) -> Option<&'a Value> {
    st.subscriptions
        .values()
        .find(|s| s["customer"] == customer && s["status"] != "canceled")
}

async fn portal_page(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let st = sim.lock();
    let Some(s) = st.portal_sessions.get(&id) else {
        return (StatusCode::NOT_FOUND, "No such portal session").into_response();
    };
    let back = s["return_url"].as_str().unwrap_or("/");
    let customer = s["customer"].as_str().unwrap_or_default();
    let mut body = String::new();
    match subscription_of_customer(&st, customer) {
        Some(sub) => {
            body.push_str(&format!(
                "<p>Current plan: {}</p>",
                escape(&price_label(&sub["items"]["data"][0]["price"]))
            ));
            body.push_str(&format!(
                "<form method=post action=\"/stripe/portal/{id}/cancel\"><button type=submit>Cancel subscription</button></form>"
            ));
        }
        None => body.push_str("<p>No active subscription.</p>"),
    }
    body.push_str(&format!(
        "<p><a href=\"{}\">Return to Tessera</a></p>",
        escape(back)
    ));
    page("Billing portal (simulated)", &body)
}

/// The portal session's customer's live subscription id, and where to go back to.
fn portal_target(st: &Store, id: &str) -> Option<(String, String)> {
    let s = st.portal_sessions.get(id)?;
    let sub = subscription_of_customer(st, s["customer"].as_str()?)?;
    Some((
        sub["id"].as_str()?.to_string(),
        s["return_url"].as_str().unwrap_or("/").to_string(),
    ))
}

async fn portal_cancel(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let (sub, back) = {
        let mut st = sim.lock();
        let Some((sub_id, back)) = portal_target(&st, &id) else {
            return (StatusCode::NOT_FOUND, "No subscription to cancel").into_response();
        };
        let Some(sub) = st.subscriptions.get_mut(&sub_id) else {
            return (StatusCode::NOT_FOUND, "No subscription").into_response();
        };
        sub["status"] = json!("canceled");
        sub["canceled_at"] = json!(now());
        (sub.clone(), back)
    };
    emit(&sim, "customer.subscription.deleted", sub).await;
    Redirect::to(&back).into_response()
}

// --- Control -------------------------------------------------------------------------------------

async fn configure(State(sim): State<Sim>, Json(v): Json<Value>) -> Response {
    let mut st = sim.lock();
    if let Some(u) = v["webhook_url"].as_str() {
        st.options.webhook_url = Some(u.to_string());
    }
    if let Some(s) = v["webhook_secret"].as_str() {
        st.options.webhook_secret = Some(s.to_string());
    }
    if let Some(ms) = v["meter_latency_ms"].as_u64() {
        st.meter_latency_ms = ms;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn state(State(sim): State<Sim>) -> Response {
    let st = sim.lock();
    Json(json!({
        "requests": st.requests,
        "customers": st.customers.values().collect::<Vec<_>>(),
        "subscriptions": st.subscriptions.values().collect::<Vec<_>>(),
        "prices": st.prices,
        "meters": st.meters,
        "meter_events": st.meter_events,
        "meter_event_requests": st.meter_event_requests,
        "events": st.events.iter().map(|e| json!({ "id": e["id"], "type": e["type"], "delivered_status": e["delivered_status"] })).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `payment_failed`: the renewal invoice fails and the subscription goes past due;
/// `payment_succeeded`: a retry succeeds and it is active again.
async fn payment(State(sim): State<Sim>, Path((id, what)): Path<(String, String)>) -> Response {
    let (failed, status) = match what.as_str() {
        "payment_failed" => (true, "past_due"),
        "payment_succeeded" => (false, "active"),
        "cancel" => return cancel(&sim, &id).await,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let (sub, invoice) = {
        let mut st = sim.lock();
        let invoice_id = st.id("in");
        let Some(sub) = st.subscriptions.get_mut(&id) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        sub["status"] = json!(status);
        let invoice = json!({
            "id": invoice_id, "object": "invoice", "customer": sub["customer"], "subscription": id,
            "status": if failed { "open" } else { "paid" }, "billing_reason": "subscription_cycle",
        });
        (sub.clone(), invoice)
    };
    let kind = if failed {
        "invoice.payment_failed"
    } else {
        "invoice.paid"
    };
    emit(&sim, kind, invoice).await;
    emit(&sim, "customer.subscription.updated", sub).await;
    StatusCode::NO_CONTENT.into_response()
}

/// The customer cancels (as in Stripe's portal): the subscription ends at once.
async fn cancel(sim: &Sim, id: &str) -> Response {
    let sub = {
        let mut st = sim.lock();
        let Some(sub) = st.subscriptions.get_mut(id) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        sub["status"] = json!("canceled");
        sub.clone()
    };
    emit(sim, "customer.subscription.deleted", sub).await;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_like_stripe_encodes_them() {
        let f = Form(parse_form(
            "line_items[0][price]=price_1&line_items[0][quantity]=1&metadata[plan]=pro+plan&success_url=http%3A%2F%2Fx%2Fok%3Fa%3D1&lookup_keys[0]=a&lookup_keys[1]=b",
        ));
        assert_eq!(f.get("line_items[0][price]"), Some("price_1"));
        assert_eq!(f.get("success_url"), Some("http://x/ok?a=1"));
        assert_eq!(f.map("metadata"), json!({ "plan": "pro plan" }));
        assert_eq!(f.list("lookup_keys"), vec!["a", "b"]);
    }
}
