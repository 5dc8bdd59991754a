use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

use crate::components::Protected;
use crate::Auth;

/// The signed-in home page: where the clinic's agents and conversations will live.
#[component]
pub fn HomePage() -> impl IntoView {
    let auth = expect_context::<Auth>();
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
