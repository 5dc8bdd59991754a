//! Accepting an invitation: one form for everyone, so the page does not tell whether the email
//! already has an account (a new colleague chooses a password, an existing account gives its
//! own).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::api::invite::get_invitation;
use crate::components::{ActionError, AuthCard};
use crate::error::AppError;
use crate::pages::auth::PASSWORD_RULE;
use crate::Auth;

#[component]
pub fn InvitePage() -> impl IntoView {
    let auth = expect_context::<Auth>();
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let invitation = Resource::new(token, get_invitation);
    let pending = auth.accept_invitation.pending();
    view! {
        <Title text="Join your clinic"/>
        <AuthCard>
                <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                    {move || Suspend::new(async move {
                        match invitation.await {
                            Ok(inv) => view! {
                                <h1>"Join " {inv.clinic_name.clone()}</h1>
                                <p>
                                    "You have been invited as " <strong>{inv.role.label()}</strong>
                                    " with the email " <strong>{inv.email.clone()}</strong> "."
                                </p>
                                <ActionForm action=auth.accept_invitation>
                                    <input type="hidden" name="token" value=token()/>
                                    <label>"Your name" <input type="text" name="name" autocomplete="name" required maxlength="100"/></label>
                                    <label>
                                        "Choose a password"
                                        <input type="password" name="password" autocomplete="new-password" required minlength="10" maxlength="128" aria-describedby="password-rule"/>
                                        <small id="password-rule" class="hint">
                                            {PASSWORD_RULE}
                                            " If this email already has a Tessera account, enter that account's password instead (its name stays as it is)."
                                        </small>
                                    </label>
                                    <ActionError value=auth.accept_invitation.value()/>
                                    <button type="submit" disabled=pending>"Join " {inv.clinic_name.clone()}</button>
                                </ActionForm>
                            }.into_any(),
                            Err(AppError::Gone(message)) => view! {
                                <h1>"This invitation can't be used"</h1>
                                <p data-testid="invitation-problem">{message}</p>
                                <p><A href="/signin">"Sign in"</A></p>
                            }.into_any(),
                            Err(AppError::NotFound) => view! {
                                <h1>"This invitation link isn't valid"</h1>
                                <p data-testid="invitation-problem">"Check that you copied the whole link, or ask the clinic to send a new one."</p>
                            }.into_any(),
                            Err(other) => view! {
                                <h1>"Something went wrong"</h1>
                                <p role="alert">{other.to_string()}</p>
                            }.into_any(),
                        }
                    })}
                </Suspense>
        </AuthCard>
    }
}
