//! Pieces shared by pages: the signed-in shell (clinic name, navigation, clinic switcher, user
//! menu) and error display.

use leptos::prelude::*;
use leptos_router::components::{Redirect, A};
use leptos_router::hooks::use_location;

use crate::api::session::{ClinicChoice, SessionInfo};
use crate::error::AppError;
use crate::pages::errors::{ErrorPage, Forbidden};
use crate::Auth;

/// Renders `children` inside the app shell for a signed-in person; sends everyone else to the
/// sign-in page.
#[component]
pub fn Protected(children: ChildrenFn) -> impl IntoView {
    let auth = expect_context::<Auth>();
    let children = StoredValue::new(children);
    view! {
        <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match auth.session.await {
                    Ok(Some(info)) => view! { <Shell info=info>{children.read_value()()}</Shell> }.into_any(),
                    Ok(None) => view! { <Redirect path="/signin"/> }.into_any(),
                    Err(error) => view! { <ErrorPage error/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn Shell(info: SessionInfo, children: Children) -> impl IntoView {
    let auth = expect_context::<Auth>();
    let is_admin = info.role.is_admin();
    let operator = info.operator;
    let pathname = use_location().pathname;
    let current = move |p: &'static str| move || if pathname.get() == p { "page" } else { "false" };
    let many_clinics = info.clinics.len() > 1;
    let clinic_id = info.clinic.id.clone();
    let clinics = info.clinics.clone();
    view! {
        <header class="topbar">
            <div class="brand">
                <span class="logo" aria-hidden="true">"◆"</span>
                <span class="clinic-name" data-testid="clinic-name">{info.clinic.name.clone()}</span>
            </div>
            <nav class="mainnav" aria-label="Main">
                <A href="/" attr:aria-current=current("/")>"Home"</A>
                <A href="/chat" attr:aria-current=current("/chat")>"Chat"</A>
                <Show when=move || is_admin>
                    <A href="/agents" attr:aria-current=current("/agents")>"Agents"</A>
                    <A href="/knowledge" attr:aria-current=current("/knowledge")>"Knowledge"</A>
                    <A href="/members" attr:aria-current=current("/members")>"Members"</A>
                    <A href="/settings/keys" attr:aria-current=current("/settings/keys")>"Provider keys"</A>
                    <A href="/settings/api-keys" attr:aria-current=current("/settings/api-keys")>"API keys"</A>
                    <A href="/settings/usage" attr:aria-current=current("/settings/usage")>"Usage"</A>
                    <A href="/settings/billing" attr:aria-current=current("/settings/billing")>"Billing"</A>
                    <A href="/settings/audit" attr:aria-current=current("/settings/audit")>"Audit log"</A>
                </Show>
                <Show when=move || operator>
                    <A href="/operator">"Operator console"</A>
                </Show>
            </nav>
            <div class="top-actions">
                <Show when=move || many_clinics>
                    <ClinicSwitcher clinics=clinics.clone() current=clinic_id.clone()/>
                </Show>
                <details class="usermenu">
                    <summary data-testid="user-menu">{info.name.clone()}</summary>
                    <div class="usermenu-panel">
                        <p class="muted">{info.email.clone()}</p>
                        <p class="muted">{info.role.label()} " at " {info.clinic.name.clone()}</p>
                        <ActionForm action=auth.sign_out>
                            <button type="submit" class="secondary">"Sign out"</button>
                        </ActionForm>
                    </div>
                </details>
            </div>
        </header>
        {(!info.clinic_active).then(|| view! {
            <div class="notice warn" role="alert" data-testid="clinic-deactivated">
                {format!("{} has been deactivated, so its pages, chats and API keys are paused. Contact support to reactivate it.", info.clinic.name)}
            </div>
        })}
        {info.payment_notice.clone().map(|n| view! {
            <div class="notice warn payment-banner" class:blocked=n.blocked role="alert" data-testid="payment-banner">
                {n.message}
            </div>
        })}
        <main class="content">{children()}</main>
    }
}

#[component]
fn ClinicSwitcher(clinics: Vec<ClinicChoice>, current: String) -> impl IntoView {
    let auth = expect_context::<Auth>();
    view! {
        <ActionForm action=auth.switch_clinic attr:class="switcher" attr:data-testid="clinic-switcher">
            <label class="visually-hidden" for="clinic-switch">"Clinic"</label>
            <select id="clinic-switch" name="tenant_id">
                {clinics.into_iter().map(|c| {
                    let selected = c.id == current;
                    view! { <option value=c.id selected=selected>{c.name}</option> }
                }).collect_view()}
            </select>
            <button type="submit" class="secondary small">"Switch"</button>
        </ActionForm>
    }
}

/// The message of a failed action, announced to screen readers.
#[component]
pub fn ActionError<T, S>(value: S) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    S: Get<Value = Option<Result<T, AppError>>> + Send + Sync + 'static,
{
    move || {
        value.get().and_then(|r| r.err()).map(|e| {
            view! { <p class="error" role="alert">{e.to_string()}</p> }
        })
    }
}

/// An admin page's data: the page itself once loaded, the 403 page for someone who may not see
/// it, or the error that stopped it.
pub fn admin_data<T, V>(
    data: Resource<Result<T, AppError>>,
    render: impl Fn(T) -> V + Copy + Send + Sync + 'static,
) -> impl IntoView
where
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    V: IntoView + 'static,
{
    view! {
        <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(value) => render(value).into_any(),
                    Err(AppError::Forbidden(message)) => view! { <Forbidden message/> }.into_any(),
                    Err(error) => view! { <ErrorPage error/> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The centred card of the signed-out pages (sign-in, sign-up, invitations).
#[component]
pub fn AuthCard(children: Children) -> impl IntoView {
    view! {
        <main class="centered">
            <section class="card narrow">
                <p class="brandline"><span class="logo" aria-hidden="true">"◆"</span> "Tessera"</p>
                {children()}
            </section>
        </main>
    }
}

/// A submit button for something that cannot be undone: the browser asks `question` first, and
/// the form is sent only when the person confirms. (Before the page is interactive the form
/// posts without asking.)
#[component]
pub fn ConfirmButton(
    /// What the dialog asks, such as "Delete the agent Front desk?".
    #[prop(into)]
    question: String,
    /// The button's text.
    #[prop(into)]
    label: String,
    #[prop(optional, into)] class: Option<String>,
    #[prop(optional, into)] aria_label: Option<String>,
    #[prop(optional, into)] testid: Option<String>,
) -> impl IntoView {
    let ask = move |ev: leptos::ev::MouseEvent| {
        let confirmed = window().confirm_with_message(&question).unwrap_or(false);
        if !confirmed {
            ev.prevent_default();
        }
    };
    view! {
        <button type="submit" class=class.unwrap_or_else(|| "danger small".into())
            aria-label=aria_label data-testid=testid on:click=ask>{label}</button>
    }
}
