//! Sign-in and sign-up. Both forms work before the wasm loads (plain POST and redirect).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::{Redirect, A};

use crate::components::{ActionError, AuthCard};
use crate::Auth;

pub const PASSWORD_RULE: &str = "Use at least 10 characters (at most 128).";

/// Sends a signed-in visitor home.
#[component]
fn AwayIfSignedIn() -> impl IntoView {
    let auth = expect_context::<Auth>();
    view! {
        <Transition>
            {move || Suspend::new(async move {
                matches!(auth.session.await, Ok(Some(_))).then(|| view! { <Redirect path="/"/> })
            })}
        </Transition>
    }
}

#[component]
pub fn SignInPage() -> impl IntoView {
    let auth = expect_context::<Auth>();
    let pending = auth.sign_in.pending();
    view! {
        <Title text="Sign in"/>
        <AwayIfSignedIn/>
        <AuthCard>
                <h1>"Sign in"</h1>
                <ActionForm action=auth.sign_in>
                    <label>"Email" <input type="email" name="email" autocomplete="username" required/></label>
                    <label>"Password" <input type="password" name="password" autocomplete="current-password" required/></label>
                    <ActionError value=auth.sign_in.value()/>
                    <button type="submit" disabled=pending>"Sign in"</button>
                </ActionForm>
                <p class="muted">"New to Tessera? " <A href="/signup">"Create your clinic's account"</A></p>
        </AuthCard>
    }
}

#[component]
pub fn SignUpPage() -> impl IntoView {
    let auth = expect_context::<Auth>();
    let pending = auth.sign_up.pending();
    view! {
        <Title text="Create your clinic"/>
        <AwayIfSignedIn/>
        <AuthCard>
                <h1>"Create your clinic's account"</h1>
                <p class="muted">"You will be its owner, and can invite your colleagues next."</p>
                <ActionForm action=auth.sign_up>
                    <label>"Clinic name" <input type="text" name="clinic_name" autocomplete="organization" required maxlength="120"/></label>
                    <label>"Your name" <input type="text" name="name" autocomplete="name" required maxlength="100"/></label>
                    <label>"Email" <input type="email" name="email" autocomplete="email" required/></label>
                    <label>
                        "Password"
                        <input type="password" name="password" autocomplete="new-password" required minlength="10" maxlength="128" aria-describedby="password-rule"/>
                        <small id="password-rule" class="hint">{PASSWORD_RULE}</small>
                    </label>
                    <ActionError value=auth.sign_up.value()/>
                    <button type="submit" disabled=pending>"Create account"</button>
                </ActionForm>
                <p class="muted">"Already have an account? " <A href="/signin">"Sign in"</A></p>
        </AuthCard>
    }
}
