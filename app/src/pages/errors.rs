//! 403, 404 and other error pages. On the server they also set the response status.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

use crate::error::AppError;

#[cfg(feature = "ssr")]
fn set_status(code: u16) {
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        if let Ok(status) = http::StatusCode::from_u16(code) {
            res.set_status(status);
        }
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_status(404);
    view! {
        <Title text="Not found"/>
        <main class="centered">
            <section class="card narrow">
                <h1>"Page not found"</h1>
                <p>"There is nothing at this address. It may have moved, or the link may be mistyped."</p>
                <p><A href="/">"Go to your clinic's home page"</A></p>
            </section>
        </main>
    }
}

#[component]
pub fn Forbidden(message: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_status(403);
    view! {
        <Title text="No access"/>
        <section class="card narrow" data-testid="forbidden">
            <h1>"You don't have access to this page"</h1>
            <p>{message}</p>
            <p><A href="/">"Back to home"</A></p>
        </section>
    }
}

/// The page for an error that stopped a page from loading.
#[component]
pub fn ErrorPage(error: AppError) -> impl IntoView {
    match error {
        AppError::Forbidden(message) => view! { <Forbidden message/> }.into_any(),
        AppError::NotFound => view! { <NotFound/> }.into_any(),
        AppError::Unauthenticated(_) => {
            view! { <leptos_router::components::Redirect path="/signin"/> }.into_any()
        }
        other => view! {
            <section class="card narrow">
                <h1>"Something went wrong"</h1>
                <p role="alert">{other.to_string()}</p>
                <p><A href="/">"Back to home"</A></p>
            </section>
        }
        .into_any(),
    }
}
