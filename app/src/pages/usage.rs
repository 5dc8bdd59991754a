//! Admin -> Usage: this month's tokens against the plan's allowance (live), and the monthly
//! spending cap beyond it.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{get_usage, SetSpendingCap};
use crate::components::{admin_data, ActionError, Protected};
use crate::dto::{dollars, thousands, UsageSummary};

#[component]
pub fn UsagePage() -> impl IntoView {
    view! {
        <Title text="Usage"/>
        <Protected>
            <UsageLoader/>
        </Protected>
    }
}

#[component]
fn UsageLoader() -> impl IntoView {
    let save = ServerAction::<SetSpendingCap>::new();
    let data = Resource::new(move || save.version().get(), |_| get_usage());
    admin_data(data, move |u| view! { <Usage u save/> })
}

#[component]
fn Usage(u: UsageSummary, save: ServerAction<SetSpendingCap>) -> impl IntoView {
    let percent = u
        .token_limit
        .filter(|l| *l > 0)
        .map(|l| (u.used_tokens.saturating_mul(100) / l).min(100));
    let limit_text = match u.token_limit {
        Some(l) => format!("{} of {} tokens", thousands(u.used_tokens), thousands(l)),
        None => format!("{} tokens (no limit)", thousands(u.used_tokens)),
    };
    let banner = match (u.token_limit, percent) {
        (Some(l), _) if u.used_tokens >= l => Some(format!(
            "Monthly token allowance used: {} of {} tokens. Model calls are paused until next month, or raise the spending cap below.",
            thousands(u.used_tokens),
            thousands(l)
        )),
        (_, Some(p)) if p >= 80 => Some(format!("{p}% of this month's tokens are used.")),
        _ => None,
    };
    let included = u
        .included_tokens
        .map(|t| format!("{} tokens included", thousands(t)))
        .unwrap_or_else(|| "unlimited tokens".into());
    let mode = match u.spending_cap_micro_usd {
        Some(0) => "stop",
        Some(_) => "cap",
        None => "none",
    };
    let amount = u
        .spending_cap_micro_usd
        .filter(|c| *c > 0)
        .map(|c| format!("{}.{:02}", c / 1_000_000, (c % 1_000_000) / 10_000))
        .unwrap_or_default();
    let overage = u.overage_micro_usd_per_1k;
    view! {
        <div class="page-head"><h1>"Usage"</h1></div>
        {banner.map(|b| view! { <div class="notice warn" role="alert" data-testid="usage-banner">{b}</div> })}
        <section class="card" aria-labelledby="month-heading">
            <h2 id="month-heading">{format!("This month ({})", u.month)}</h2>
            <p><strong>{u.plan_name.clone()}</strong> " plan: " {included} "."</p>
            <p data-testid="usage-tokens">{limit_text}</p>
            {percent.map(|p| view! {
                <div class="meter" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=p aria-label="Share of this month's tokens used">
                    <div class="meter-fill" style=format!("width: {p}%")></div>
                </div>
            })}
            <dl class="facts">
                <dt>"Requests"</dt><dd data-testid="usage-requests">{thousands(u.requests)}</dd>
                <dt>"In progress"</dt><dd>{format!("{} tokens held", thousands(u.reserved_tokens))}</dd>
                <dt>"Provider list price"</dt><dd>{dollars(u.cost_micro_usd)}</dd>
            </dl>
        </section>
        <section class="card" aria-labelledby="cap-heading">
            <h2 id="cap-heading">"Beyond the allowance"</h2>
            {if overage > 0 {
                view! { <p class="muted">{format!("Tokens beyond the allowance cost {} per 1,000.", dollars(overage))}</p> }.into_any()
            } else {
                view! { <p class="muted">"This plan has no per-token charges."</p> }.into_any()
            }}
            <ActionForm action=save attr:class="stack-form">
                <fieldset>
                    <legend>"When the allowance is used up"</legend>
                    <label class="radio"><input type="radio" name="mode" value="stop" checked=mode == "stop"/>" Stop model calls until next month"</label>
                    <label class="radio"><input type="radio" name="mode" value="cap" checked=mode == "cap"/>" Continue, up to a monthly cap of"</label>
                    <div class="field indent">
                        <label for="cap-amount">"Cap in US dollars"</label>
                        <input id="cap-amount" type="text" inputmode="decimal" name="amount" value=amount placeholder="50.00"/>
                    </div>
                    <label class="radio"><input type="radio" name="mode" value="none" checked=mode == "none"/>" Continue with no cap"</label>
                </fieldset>
                <button type="submit" disabled=save.pending()>"Save"</button>
            </ActionForm>
            <ActionError value=save.value()/>
            {move || save.value().get().and_then(|r| r.ok()).map(|_| view! { <p class="ok" role="status">"Saved."</p> })}
        </section>
    }
}
