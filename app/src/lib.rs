//! Tessera's UI: the pages, their components and the server functions they call. Compiled
//! twice: with `ssr` into the server binary, and with `hydrate` into the browser's wasm.

// The chat's views are deeply nested types.
#![recursion_limit = "256"]

pub mod api;
pub mod chart;
pub mod components;
pub mod error;
pub mod markdown;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

use crate::api::invite::AcceptInvitation;
use crate::api::session::{SessionInfo, SignIn, SignOut, SignUp, SwitchClinic};
use crate::error::AppError;

/// The Content Security Policy of a page: scripts from this site, or inline with the
/// response's `nonce`; WebAssembly; styles from this site (and inline attributes, which the
/// progress bars and charts use); connections only back to this site; no plugins; never in a
/// frame.
pub fn page_policy(nonce: Option<&str>) -> String {
    let script = match nonce {
        Some(n) => format!("'self' 'nonce-{n}' 'wasm-unsafe-eval'"),
        None => "'self' 'wasm-unsafe-eval'".to_string(),
    };
    format!(
        "default-src 'self'; script-src {script}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; \
         frame-ancestors 'none'"
    )
}

/// The HTML document around the app. On the server it also sets the page's Content Security
/// Policy: scripts only from this site or with this response's nonce (the hydration script),
/// WebAssembly allowed, nothing framing the page.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let (Some(nonce), Some(res)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) {
        if let Ok(value) = http::HeaderValue::from_str(&page_policy(Some(&nonce.to_string()))) {
            res.insert_header(http::header::CONTENT_SECURITY_POLICY, value);
        }
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                // With LEPTOS_HASH_FILES the file names carry their content's hash, so they
                // are cached for a year (see the server's guard).
                <HashedStylesheet id="leptos" options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body data-demo=demo_mode().then_some("true")>
                <App/>
            </body>
        </html>
    }
}

/// Whether the server runs in demo mode (`TESSERA_DEMO`). The server knows from its
/// configuration and marks the page's body; the browser reads the mark, so both render the
/// same banner.
fn demo_mode() -> bool {
    #[cfg(feature = "ssr")]
    {
        use_context::<server::AppState>().is_some_and(|s| s.services.config.demo)
    }
    #[cfg(not(feature = "ssr"))]
    {
        document()
            .body()
            .is_some_and(|b| b.has_attribute("data-demo"))
    }
}

/// The actions that change who is signed in, and the session they refresh. Provided at the
/// root so every page sees one session, refetched whenever one of them completes.
#[derive(Clone, Copy)]
pub struct Auth {
    pub sign_up: ServerAction<SignUp>,
    pub sign_in: ServerAction<SignIn>,
    pub sign_out: ServerAction<SignOut>,
    pub switch_clinic: ServerAction<SwitchClinic>,
    pub accept_invitation: ServerAction<AcceptInvitation>,
    pub session: Resource<Result<Option<SessionInfo>, AppError>>,
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let sign_up = ServerAction::<SignUp>::new();
    let sign_in = ServerAction::<SignIn>::new();
    let sign_out = ServerAction::<SignOut>::new();
    let switch_clinic = ServerAction::<SwitchClinic>::new();
    let accept_invitation = ServerAction::<AcceptInvitation>::new();
    let session = Resource::new(
        move || {
            (
                sign_up.version().get(),
                sign_in.version().get(),
                sign_out.version().get(),
                switch_clinic.version().get(),
                accept_invitation.version().get(),
            )
        },
        |_| api::session::get_session(),
    );
    provide_context(Auth {
        sign_up,
        sign_in,
        sign_out,
        switch_clinic,
        accept_invitation,
        session,
    });
    // Marks the page once the browser has taken over (effects run only there), so tests and
    // scripts can wait for interactivity. Content under `Suspense` (a page's data) hydrates in
    // tasks of its own once this first effect has run: the mark waits for them (a task queued
    // after them), so a form is never used before its handlers are attached.
    Effect::new(|_| {
        set_timeout(
            || {
                if let Some(body) = document().body() {
                    let _ = body.set_attribute("data-hydrated", "true");
                }
            },
            std::time::Duration::ZERO,
        );
    });

    let demo = demo_mode();
    view! {
        {demo.then(|| view! {
            <p class="demo-banner" role="note" data-testid="demo-banner">
                <strong>"Demo"</strong>
                " — replies come from a built-in simulator, not a real model. Sign in as "
                <code>{tessera_types::demo::EMAIL}</code>
                " with the password "
                <code>{tessera_types::demo::PASSWORD}</code>
                "."
            </p>
        })}
        <Title formatter=|title: String| if title.is_empty() { "Tessera".to_string() } else { format!("{title} · Tessera") }/>
        <Router>
            <Routes fallback=|| view! { <pages::errors::NotFound/> }>
                <Route path=path!("/") view=pages::home::HomePage ssr=SsrMode::Async/>
                <Route path=path!("/signin") view=pages::auth::SignInPage ssr=SsrMode::Async/>
                <Route path=path!("/signup") view=pages::auth::SignUpPage ssr=SsrMode::Async/>
                <Route path=path!("/invite/:token") view=pages::invite::InvitePage ssr=SsrMode::Async/>
                <Route path=path!("/members") view=pages::members::MembersPage ssr=SsrMode::Async/>
                <Route path=path!("/settings/keys") view=pages::keys::ProviderKeysPage ssr=SsrMode::Async/>
                <Route path=path!("/settings/api-keys") view=pages::api_keys::ApiKeysPage ssr=SsrMode::Async/>
                <Route path=path!("/settings/usage") view=pages::usage::UsagePage ssr=SsrMode::Async/>
                <Route path=path!("/settings/billing") view=pages::billing::BillingPage ssr=SsrMode::Async/>
                <Route path=path!("/settings/audit") view=pages::audit::AuditPage ssr=SsrMode::Async/>
                <Route path=path!("/operator") view=pages::operator::OperatorClinicsPage ssr=SsrMode::Async/>
                <Route path=path!("/operator/clinics/:id") view=pages::operator::OperatorClinicPage ssr=SsrMode::Async/>
                <Route path=path!("/operator/flags") view=pages::operator::OperatorFlagsPage ssr=SsrMode::Async/>
                <Route path=path!("/operator/flags/:key") view=pages::operator::OperatorFlagPage ssr=SsrMode::Async/>
                <Route path=path!("/operator/audit") view=pages::operator::OperatorAuditPage ssr=SsrMode::Async/>
                <Route path=path!("/agents") view=pages::agents::AgentsAdminPage ssr=SsrMode::Async/>
                <Route path=path!("/knowledge") view=pages::knowledge::KnowledgePage ssr=SsrMode::Async/>
                <Route path=path!("/chat") view=pages::chat::ChatHomePage ssr=SsrMode::Async/>
                <Route path=path!("/chat/:id") view=pages::chat::ConversationPage ssr=SsrMode::Async/>
            </Routes>
        </Router>
    }
}
