//! Admin -> Billing: the plan and its period, this month's tokens against the allowance, the
//! projected overage, and the plans on offer. Choosing a plan and Manage billing are plain forms
//! (answered by the server with a redirect: to Stripe, or back here after a plan change), so
//! they work before the page is interactive.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::billing::{get_billing, BillingOverview, PlanOption};
use crate::components::{admin_data, Protected};
use tessera_types::format::{dollars, thousands};

#[component]
pub fn BillingPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| get_billing());
    view! {
        <Title text="Billing"/>
        <Protected>
            <h1>"Billing"</h1>
            <Flash/>
            {admin_data(data, move |b| view! { <Billing b/> })}
        </Protected>
    }
}

/// What Checkout or a refused action came back with.
#[component]
fn Flash() -> impl IntoView {
    let query = use_query_map();
    move || {
        let q = query.read();
        if let Some(error) = q.get("error") {
            return Some(view! { <p class="error" role="alert">{error}</p> }.into_any());
        }
        match q.get("checkout").as_deref() {
            Some("success") => Some(view! {
                <p class="notice" role="status" data-testid="checkout-success">
                    "Thank you. The new plan applies as soon as Stripe confirms the payment, usually within seconds; reload to see it."
                </p>
            }.into_any()),
            Some("cancelled") => Some(view! {
                <p class="notice" role="status">"Checkout was cancelled; nothing changed."</p>
            }.into_any()),
            _ if q.get("changed").is_some() => Some(view! {
                <p class="notice" role="status" data-testid="plan-changed">
                    "Plan change sent to Stripe. It applies as soon as Stripe confirms it, usually within seconds (prorated for the rest of the month)."
                </p>
            }.into_any()),
            _ => None,
        }
    }
}

fn limit(n: Option<i64>, unit: &str) -> String {
    n.map_or_else(
        || "Unlimited".into(),
        |n| format!("{} {unit}", thousands(n)),
    )
}

fn price(p: &PlanOption) -> String {
    p.base_price_micro_usd.map_or_else(
        || "By agreement".into(),
        |m| format!("{} / month", dollars(m)),
    )
}

#[component]
fn Billing(b: BillingOverview) -> impl IntoView {
    let plan = b.plan.clone();
    let percent = plan
        .included_tokens
        .filter(|i| *i > 0)
        .map(|i| (b.used_tokens.saturating_mul(100) / i).min(100));
    let status = match b.subscription_status.as_deref() {
        None => "No subscription".to_string(),
        Some("active") => "Active".into(),
        Some("trialing") => "Trial".into(),
        Some("past_due") => "Payment overdue".into(),
        Some("canceled") => "Cancelled".into(),
        Some(other) => other.replace('_', " "),
    };
    let manage = b.enabled && b.has_customer;
    let agents_line = match plan.max_agents {
        Some(max) => format!("{} of {max} agents", b.agents),
        None => format!("{} agents (no limit)", b.agents),
    };
    view! {
        <section class="card" aria-labelledby="plan-heading">
            <h2 id="plan-heading">"Current plan: " <span data-testid="billing-plan">{plan.name.clone()}</span></h2>
            <dl class="facts">
                <dt>"Status"</dt><dd data-testid="billing-status">{status}</dd>
                <dt>"Period"</dt><dd>{format!("{} – {}", b.period_start, b.period_end)}</dd>
                {b.renews.clone().map(|day| view! { <dt>"Next invoice"</dt><dd>{day}</dd> })}
                <dt>"Price"</dt><dd>{price(&plan)}</dd>
                <dt>"Tokens this month"</dt>
                <dd data-testid="billing-used">{format!("{} of {}", thousands(b.used_tokens), limit(plan.included_tokens, "included"))}</dd>
                <dt>"Beyond the allowance"</dt>
                <dd>{format!("{} tokens so far, at {} per 1,000", thousands(b.overage_tokens), dollars(plan.overage_micro_usd_per_1k))}</dd>
                <dt>"Projected overage this month"</dt>
                <dd data-testid="billing-projected">{dollars(b.projected_overage_micro_usd)}</dd>
                <dt>"Agents"</dt><dd data-testid="billing-agents">{agents_line}</dd>
                <dt>"Document storage"</dt><dd data-testid="billing-storage">{b.storage.clone()}</dd>
            </dl>
            {percent.map(|p| view! {
                <div class="meter" role="img" aria-label=format!("{p}% of the allowance used")>
                    <div class="meter-fill" style=format!("width: {p}%")></div>
                </div>
            })}
            {manage.then(|| view! {
                <form method="post" action="/settings/billing/portal">
                    <button type="submit" class="secondary" data-testid="manage-billing">"Manage billing"</button>
                    <span class="muted">" Payment method, invoices and cancellation, on Stripe."</span>
                </form>
            })}
            {(!b.enabled).then(|| view! {
                <p class="muted">"Online billing is not set up on this server; an operator sets plans."</p>
            })}
        </section>
        <section class="card" aria-labelledby="plans-heading">
            <h2 id="plans-heading">"Plans"</h2>
            <table class="table plans">
                <thead><tr>
                    <th>"Plan"</th><th>"Price"</th><th>"Tokens included"</th><th>"Beyond, per 1,000"</th>
                    <th>"Agents"</th><th>"Storage"</th><th></th>
                </tr></thead>
                <tbody>
                    {b.plans.into_iter().map(|p| {
                        let current = p.id == plan.id;
                        let action = plan_action(&p, current, b.enabled, b.live_subscription);
                        view! {
                            <tr data-testid=format!("plan-{}", p.id) class:current=current>
                                <th scope="row">{p.name.clone()}</th>
                                <td>{price(&p)}</td>
                                <td>{limit(p.included_tokens, "")}</td>
                                <td>{if p.overage_micro_usd_per_1k > 0 { dollars(p.overage_micro_usd_per_1k) } else { "—".into() }}</td>
                                <td>{p.max_agents.map_or_else(|| "Unlimited".into(), |m| m.to_string())}</td>
                                <td>{limit(p.storage_mb, "MB")}</td>
                                <td>{action}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

fn plan_action(p: &PlanOption, current: bool, enabled: bool, live: bool) -> AnyView {
    if current && (live || !p.self_serve) {
        return view! { <span class="muted">"Current plan"</span> }.into_any();
    }
    if !p.self_serve {
        return view! { <span class="muted">"Contact us"</span> }.into_any();
    }
    if !enabled {
        return ().into_any();
    }
    let label = match (current, live) {
        (true, _) => "Subscribe",
        (false, true) => "Switch",
        (false, false) => "Upgrade",
    };
    view! {
        <form method="post" action="/settings/billing/plan">
            <input type="hidden" name="plan" value=p.id.as_str()/>
            <button type="submit" data-testid=format!("choose-{}", p.id)>{label}</button>
        </form>
    }
    .into_any()
}
