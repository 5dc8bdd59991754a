use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

use crate::api::home::{get_started, Checklist};
use crate::components::Protected;
use crate::error::AppError;
use crate::Auth;

/// The signed-in home page: where the clinic's agents and conversations will live.
#[component]
pub fn HomePage() -> impl IntoView {
    let auth = expect_context::<Auth>();
    // Made here, outside the reactive parts below, so that the browser finds the server's
    // answer when it hydrates (staff get "forbidden" and see no checklist).
    let steps = Resource::new(|| (), |_| get_started());
    view! {
        <Title text="Home"/>
        <Protected>
            {move || {
                auth.session.get().and_then(|r| r.ok()).flatten().map(|info| {
                    let is_admin = info.role.is_admin();
                    view! {
                        <h1>"Welcome, " {info.name.clone()}</h1>
                        <p class="lead">
                            "You are signed in to " <strong>{info.clinic.name.clone()}</strong>
                            " as " <span data-testid="my-role">{info.role.label()}</span> "."
                        </p>
                        <Show when=move || is_admin>
                            <GetStarted steps/>
                        </Show>
                        <div class="cards">
                            <Show when=move || is_admin>
                                <section class="card">
                                    <h2>"Your team"</h2>
                                    <p>"Invite colleagues, set what they can do, and remove people who have left."</p>
                                    <A href="/members">"Manage members"</A>
                                </section>
                            </Show>
                            <section class="card">
                                <h2>"Your clinics"</h2>
                                <ul class="plain">
                                    {info.clinics.iter().map(|c| view! {
                                        <li>{c.name.clone()} <span class="badge">{c.role.label()}</span></li>
                                    }).collect_view()}
                                </ul>
                            </section>
                        </div>
                    }
                })
            }}
        </Protected>
    }
}

/// The admins' first-run checklist: each step ticks itself once it is done (anywhere, by
/// anyone in the clinic) and links to where it is done; gone once all are.
#[component]
fn GetStarted(steps: Resource<Result<Checklist, AppError>>) -> impl IntoView {
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                steps.await.ok().filter(|c| !c.complete()).map(|c| view! { <Steps c/> })
            })}
        </Transition>
    }
}

#[component]
fn Steps(c: Checklist) -> impl IntoView {
    let key_done = c.provider_key || c.platform_key_covers;
    let key_text = if c.platform_key_covers && !c.provider_key {
        "Provider key: none needed, your plan uses the platform's (add your own any time)"
    } else {
        "Add a provider key (OpenAI, Anthropic or an OpenAI-compatible server such as Ollama)"
    };
    let step = |done: bool, text: &'static str, href: &'static str, testid: &'static str| {
        view! {
            <li class="step" class:done=done data-testid=testid data-done=done.to_string()>
                <span class="tick" aria-hidden="true">{if done { "✓" } else { "○" }}</span>
                <span class="visually-hidden">{if done { "Done: " } else { "To do: " }}</span>
                {if done {
                    view! { <span>{text}</span> }.into_any()
                } else {
                    view! { <A href=href>{text}</A> }.into_any()
                }}
            </li>
        }
    };
    let done = [key_done, c.agent, c.colleague, c.conversation]
        .iter()
        .filter(|d| **d)
        .count();
    view! {
        <section class="card get-started" aria-labelledby="get-started-heading" data-testid="get-started">
            <h2 id="get-started-heading">"Get started"</h2>
            <p class="muted">{format!("{done} of 4 done. Each step ticks itself once it is done.")}</p>
            <ol class="steps">
                {step(key_done, key_text, "/settings/keys", "step-key")}
                {step(c.agent, "Create an agent: its instructions, its model, the documents it answers from", "/agents", "step-agent")}
                {step(c.colleague, "Invite a colleague", "/members", "step-colleague")}
                {step(c.conversation, "Have a first conversation with your agent", "/chat", "step-conversation")}
            </ol>
        </section>
    }
}
