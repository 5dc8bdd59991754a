//! Billing routes outside the Leptos pages:
//! - `POST /webhooks/stripe`: Stripe's webhook deliveries, verified then applied once
//!   (`tessera_core::billing::webhook`);
//! - `POST /settings/billing/plan` (`plan=...`) and `POST /settings/billing/portal`: plain
//!   forms on the Billing page (they work without wasm). Choosing a plan redirects to Stripe
//!   Checkout, or, with a subscription running, changes it and comes back to the page; the
//!   portal form redirects to Stripe's Customer Portal. Cookie-authenticated, so the request
//!   guard's same-origin check covers them.

use app::error::AppError;
use app::server::{AppState, SignedIn};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use secrecy::ExposeSecret;
use tessera_core::billing::{self, Chosen, ReturnUrls};
use tessera_core::PlanId;

/// Where the Billing page lives; errors come back to it as `?error=...`.
const BILLING_PAGE: &str = "/settings/billing";

pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let services = &state.services;
    let Some(stripe) = &services.config.stripe else {
        return (
            StatusCode::NOT_FOUND,
            "Billing is not configured on this server.",
        )
            .into_response();
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let secrets: Vec<&str> = stripe
        .webhook_secrets
        .iter()
        .map(|s| s.expose_secret())
        .collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = billing::verify_signature(
        signature,
        &body,
        &secrets,
        now,
        billing::SIGNATURE_TOLERANCE_SECS,
    ) {
        tracing::warn!(error = %e, "refused a webhook delivery");
        return (StatusCode::BAD_REQUEST, format!("Webhook refused: {e}.")).into_response();
    }
    match billing::webhook::handle(&services.db, &services.changes, &body).await {
        Ok(outcome) => {
            Json(serde_json::json!({ "received": true, "outcome": format!("{outcome:?}") }))
                .into_response()
        }
        Err(e) if e.is_client_error() => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        // A 5xx makes Stripe deliver it again later.
        Err(e) => AppError::from(e).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct PlanForm {
    plan: String,
}

/// Back to the Billing page with a message.
fn back_with_error(message: &str) -> Response {
    let encoded = crate::query_value(message);
    Redirect::to(&format!("{BILLING_PAGE}?error={encoded}")).into_response()
}

/// Sends the admin on (to Stripe, or back to the page), or back with what went wrong (in the
/// words every other page uses for it).
fn to_stripe(result: tessera_core::Result<String>) -> Response {
    match result {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => back_with_error(&AppError::from(e).to_string()),
    }
}

/// Back to the Billing page when the server has no Stripe account.
fn billing_off() -> Response {
    back_with_error("Billing is not configured on this server.")
}

pub async fn choose_plan(
    State(state): State<AppState>,
    SignedIn(v): SignedIn,
    Form(form): Form<PlanForm>,
) -> Response {
    let Some(api) = state.services.stripe.clone() else {
        return billing_off();
    };
    let base = &state.services.config.public_url;
    let urls = ReturnUrls {
        success: format!("{base}{BILLING_PAGE}?checkout=success"),
        cancel: format!("{base}{BILLING_PAGE}?checkout=cancelled"),
    };
    let plan: PlanId = match form.plan.parse() {
        Ok(plan) => plan,
        Err(e) => return back_with_error(&e.to_string()),
    };
    let chosen = billing::choose_plan(
        &state.services.db,
        &api,
        v.tenant.id,
        v.actor(),
        &v.user.email,
        plan,
        &urls,
    )
    .await;
    to_stripe(chosen.map(|c| match c {
        Chosen::Checkout(url) => url,
        Chosen::Changed => format!("{BILLING_PAGE}?changed={plan}"),
    }))
}

pub async fn portal(State(state): State<AppState>, SignedIn(v): SignedIn) -> Response {
    let Some(api) = state.services.stripe.clone() else {
        return billing_off();
    };
    let return_url = format!("{}{BILLING_PAGE}", state.services.config.public_url);
    to_stripe(
        billing::portal(
            &state.services.db,
            &api,
            v.tenant.id,
            v.actor(),
            &return_url,
        )
        .await,
    )
}
