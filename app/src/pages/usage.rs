//! Admin -> Usage: this month's tokens against the plan's allowance (live), and the monthly
//! spending cap beyond it.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::params::ParamsMap;

use tessera_types::format::{dollars, thousands};

use crate::api::usage::{
    get_usage, get_usage_dashboard, SetSpendingCap, UsageDashboard, UsageSummary,
};
use crate::chart::{stacked_bars_svg, CHART_COLOURS};
use crate::components::{admin_data, ActionError, Protected};

#[component]
pub fn UsagePage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let save = ServerAction::<SetSpendingCap>::new();
    let data = Resource::new(move || save.version().get(), |_| get_usage());
    // `?month=YYYY-MM` picks the month of the dashboard (the form below sets it).
    let query = leptos_router::hooks::use_query_map();
    let dashboard = Resource::new(move || query.read().get("month"), get_usage_dashboard);
    view! {
        <Title text="Usage"/>
        <Protected>
            {
            view! {
                {admin_data(data, move |u| view! { <Usage u save/> })}
                {admin_data(dashboard, move |d| view! { <Dashboard d/> })}
            }
            }
        </Protected>
    }
}

fn change(now: i64, before: i64) -> String {
    if before == 0 {
        return if now == 0 {
            "no change".into()
        } else {
            "none the month before".into()
        };
    }
    let pct = (now - before) * 100 / before;
    if pct >= 0 {
        format!("+{pct}% on the month before")
    } else {
        format!("{pct}% on the month before")
    }
}

#[component]
fn Dashboard(d: UsageDashboard) -> impl IntoView {
    let export = format!("/settings/usage/export.csv?month={}", d.month);
    let days = d.days;
    view! {
        <section class="card" aria-labelledby="compare-heading">
            <h2 id="compare-heading">{format!("{} against {}", d.month, d.previous_month)}</h2>
            <form method="get" action="/settings/usage" class="inline-form month-picker">
                <label for="dashboard-month">"Month"</label>
                <input type="month" id="dashboard-month" name="month" value=d.month.to_string() required/>
                <button type="submit" class="secondary small">"Show"</button>
            </form>
            <table class="table compare">
                <thead><tr><th></th><th>{d.month.to_string()}</th><th>{d.previous_month.to_string()}</th><th>"Change"</th></tr></thead>
                <tbody>
                    <tr><th scope="row">"Tokens"</th><td data-testid="dash-tokens">{thousands(d.tokens)}</td><td>{thousands(d.previous_tokens)}</td><td>{change(d.tokens, d.previous_tokens)}</td></tr>
                    <tr><th scope="row">"Requests"</th><td>{thousands(d.requests)}</td><td>{thousands(d.previous_requests)}</td><td>{change(d.requests, d.previous_requests)}</td></tr>
                    <tr><th scope="row">"Provider list price"</th><td>{dollars(d.cost_micro_usd)}</td><td>{dollars(d.previous_cost_micro_usd)}</td><td>{change(d.cost_micro_usd, d.previous_cost_micro_usd)}</td></tr>
                </tbody>
            </table>
            <p><a href=export download="">{format!("Download the ledger of {} (CSV)", d.month)}</a></p>
        </section>
        {d.charts.into_iter().map(|chart| {
            let svg = stacked_bars_svg(&chart.series, days, &chart.title);
            let empty = chart.series.is_empty();
            view! {
                <section class="card chart-card" data-testid="usage-chart">
                    <h2>{chart.title.clone()}</h2>
                    {if empty {
                        view! { <p class="muted">"No calls in this month."</p> }.into_any()
                    } else {
                        view! {
                            <div class="chart" inner_html=svg></div>
                            <ul class="legend">
                                {chart.series.iter().enumerate().map(|(i, s)| view! {
                                    <li><span class="swatch" style=format!("background: {}", CHART_COLOURS[i % CHART_COLOURS.len()])></span>
                                        {s.name.clone()} " · " {thousands(s.values.iter().sum::<i64>())} " tokens"</li>
                                }).collect_view()}
                            </ul>
                        }.into_any()
                    }}
                </section>
            }
        }).collect_view()}
    }
}

/// The cap was saved: by the page (the action's answer), or by the form posted before the page
/// was interactive (which comes back with `?saved=1`).
fn saved(save: ServerAction<SetSpendingCap>, query: Memo<ParamsMap>) -> bool {
    let from_form = query.read().get("saved").is_some_and(|v| v == "1");
    match save.value().get() {
        Some(result) => result.is_ok(),
        None => from_form,
    }
}

#[component]
fn Usage(u: UsageSummary, save: ServerAction<SetSpendingCap>) -> impl IntoView {
    let query = leptos_router::hooks::use_query_map();
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
            {(!u.paying).then(|| view! {
                <p class="notice" data-testid="cap-needs-plan">
                    "Use beyond the allowance needs a paid plan: choose one under " <a href="/settings/billing">"Billing"</a> ". Until then, model calls stop when the allowance is used."
                </p>
            })}
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
            {move || saved(save, query).then(|| view! { <p class="ok" role="status">"Saved."</p> })}
        </section>
    }
}
