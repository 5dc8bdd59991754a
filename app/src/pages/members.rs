//! Members: everyone in the clinic, invitations by link, roles, removal. Owners and admins
//! only; the server refuses everyone else with 403.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::members::{
    list_members, ChangeMemberRole, InviteMember, MemberRow, MembersPage as Page, PendingInvite,
    RemoveMember, RevokeInvitation,
};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};
use tessera_types::Role;

#[component]
pub fn MembersPage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let invite = ServerAction::<InviteMember>::new();
    let change = ServerAction::<ChangeMemberRole>::new();
    let remove = ServerAction::<RemoveMember>::new();
    let revoke = ServerAction::<RevokeInvitation>::new();
    let data = Resource::new(
        move || {
            (
                invite.version().get(),
                change.version().get(),
                remove.version().get(),
                revoke.version().get(),
            )
        },
        |_| list_members(),
    );
    view! {
        <Title text="Members"/>
        <Protected>
            {
            admin_data(
                data,
                move |page| view! { <Members page invite change remove revoke/> },
            )
            }
        </Protected>
    }
}

/// Loads the page's data only once someone is known to be signed in, so a signed-out visitor
/// is redirected rather than answered 401.
#[component]
fn Members(
    page: Page,
    invite: ServerAction<InviteMember>,
    change: ServerAction<ChangeMemberRole>,
    remove: ServerAction<RemoveMember>,
    revoke: ServerAction<RevokeInvitation>,
) -> impl IntoView {
    let my_role = page.my_role;
    // Owners may grant any role; admins may grant admin or staff.
    let grantable: Vec<Role> = Role::DESCENDING
        .into_iter()
        .filter(|r| my_role == Role::Owner || *r != Role::Owner)
        .collect();
    let count = page.members.len();
    view! {
        <div class="page-head">
            <h1>"Members"</h1>
            <p class="muted">{count} {if count == 1 { " person" } else { " people" }}</p>
        </div>
        <InviteForm invite grantable=grantable.clone()/>
        <People members=page.members me=page.me my_role grantable change remove/>
        <PendingInvitations invitations=page.invitations revoke/>
    }
}

#[component]
fn InviteForm(invite: ServerAction<InviteMember>, grantable: Vec<Role>) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="invite-heading">
            <h2 id="invite-heading">"Invite a colleague"</h2>
            <p class="muted">"They get a link to set their password. Each link works once, until the date shown."</p>
            <ActionForm action=invite attr:class="inline-form">
                <div class="field">
                    <label for="invite-email">"Email"</label>
                    <input id="invite-email" type="email" name="email" required placeholder="name@clinic.com"/>
                </div>
                <div class="field">
                    <label for="invite-role">"Role"</label>
                    <select id="invite-role" name="role">
                        {grantable.iter().map(|r| view! {
                            <option value=r.as_str() selected=*r == Role::Staff>{r.label()}</option>
                        }).collect_view()}
                    </select>
                </div>
                <button type="submit" disabled=invite.pending()>"Create invitation"</button>
            </ActionForm>
            <ActionError value=invite.value()/>
            {move || invite.value().get().and_then(|r| r.ok()).map(|created| view! {
                <div class="notice" role="status">
                    <p>"Send this link to " <strong>{created.email.clone()}</strong> " (" {created.role.label()} "). It works once, until " {created.expires.clone()} "."</p>
                    <input class="copy" type="text" readonly value=created.link.clone() data-testid="invite-link" aria-label="Invitation link"/>
                </div>
            })}
        </section>
    }
}

#[component]
fn People(
    members: Vec<MemberRow>,
    me: String,
    my_role: Role,
    grantable: Vec<Role>,
    change: ServerAction<ChangeMemberRole>,
    remove: ServerAction<RemoveMember>,
) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="people-heading">
            <h2 id="people-heading">"People"</h2>
            <ActionError value=change.value()/>
            <ActionError value=remove.value()/>
            <table class="table">
                <thead><tr><th>"Name"</th><th>"Email"</th><th>"Role"</th><th>"Joined"</th><th><span class="visually-hidden">"Actions"</span></th></tr></thead>
                <tbody>
                    {members.into_iter().map(|m| {
                        let is_me = m.user_id == me;
                        let can_manage = my_role == Role::Owner || m.role != Role::Owner;
                        let grantable = grantable.clone();
                        let uid = m.user_id.clone();
                        let uid_remove = m.user_id.clone();
                        view! {
                            <tr data-testid="member-row">
                                <td>{m.name.clone()} {is_me.then(|| view! { <span class="badge">"you"</span> })}</td>
                                <td>{m.email.clone()}</td>
                                <td>
                                    {if can_manage {
                                        view! {
                                            <ActionForm action=change attr:class="row-form">
                                                <input type="hidden" name="user_id" value=uid.clone()/>
                                                <select name="role" aria-label=format!("Role of {}", m.name)>
                                                    {grantable.iter().map(|r| view! {
                                                        <option value=r.as_str() selected=*r == m.role>{r.label()}</option>
                                                    }).collect_view()}
                                                </select>
                                                <button type="submit" class="secondary small">"Save"</button>
                                            </ActionForm>
                                        }.into_any()
                                    } else {
                                        view! { <span>{m.role.label()}</span> }.into_any()
                                    }}
                                </td>
                                <td>{m.joined.clone()}</td>
                                <td>
                                    {can_manage.then(|| view! {
                                        <ActionForm action=remove attr:class="row-form">
                                            <input type="hidden" name="user_id" value=uid_remove/>
                                            <ConfirmButton label=if is_me { "Leave" } else { "Remove" }
                                                question=if is_me { "Leave this clinic? You lose access to it until someone invites you again." } else { "Remove this person from the clinic? They lose access at once." }/>
                                        </ActionForm>
                                    })}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn PendingInvitations(
    invitations: Vec<PendingInvite>,
    revoke: ServerAction<RevokeInvitation>,
) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="pending-heading">
            <h2 id="pending-heading">"Pending invitations"</h2>
            <ActionError value=revoke.value()/>
            {if invitations.is_empty() {
                view! { <p class="muted">"None."</p> }.into_any()
            } else {
                view! {
                    <table class="table">
                        <thead><tr><th>"Email"</th><th>"Role"</th><th>"Expires"</th><th><span class="visually-hidden">"Actions"</span></th></tr></thead>
                        <tbody>
                            {invitations.into_iter().map(|i| view! {
                                <tr data-testid="invitation-row">
                                    <td>{i.email}</td>
                                    <td>{i.role.label()}</td>
                                    <td>{i.expires}</td>
                                    <td>
                                        <ActionForm action=revoke attr:class="row-form">
                                            <input type="hidden" name="invitation_id" value=i.id/>
                                            <button type="submit" class="secondary small">"Withdraw"</button>
                                        </ActionForm>
                                    </td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}
