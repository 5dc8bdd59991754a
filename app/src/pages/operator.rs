//! The operator console (`/operator`), for the platform's operators only: clinics (search,
//! detail, activate or deactivate, plan), feature flags (rules with a preview, the kill switch,
//! history with rollback) and the platform-wide audit log.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::{Redirect, A};
use leptos_router::hooks::{use_location, use_params_map, use_query_map};

use crate::api::operator::{
    operator_audit, operator_clinic, operator_clinics, operator_flag, operator_flags,
    operator_session, ClinicDetailView, ClinicRow, CreateFlag, FlagDetail, FlagRow, OperatorInfo,
    PreviewFlag, RollbackFlag, SetClinicActive, SetClinicLimits, SetClinicPlan, SetFlagEnabled,
    UpdateFlag,
};
use crate::components::{admin_data, ActionError, ConfirmButton};
use crate::error::AppError;
use crate::pages::audit::{AuditFilter, AuditQuery, AuditTable};
use crate::pages::errors::{ErrorPage, Forbidden};
use crate::Auth;

/// Renders `children` in the console's shell for a platform operator; 403 for anyone else,
/// the sign-in page for someone signed out.
#[component]
fn OperatorOnly(children: ChildrenFn) -> impl IntoView {
    let info = Resource::new(|| (), |_| operator_session());
    let children = StoredValue::new(children);
    view! {
        <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match info.await {
                    Ok(info) => view! { <OperatorShell info>{children.read_value()()}</OperatorShell> }.into_any(),
                    Err(AppError::Unauthenticated(_)) => view! { <Redirect path="/signin"/> }.into_any(),
                    Err(AppError::Forbidden(message)) => view! { <main class="content"><Forbidden message/></main> }.into_any(),
                    Err(error) => view! { <main class="content"><ErrorPage error/></main> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn OperatorShell(info: OperatorInfo, children: Children) -> impl IntoView {
    let auth = expect_context::<Auth>();
    let pathname = use_location().pathname;
    let current = move |p: &'static str| {
        move || {
            let path = pathname.get();
            let here = if p == "/operator" {
                path == p || path.starts_with("/operator/clinics")
            } else {
                path.starts_with(p)
            };
            if here {
                "page"
            } else {
                "false"
            }
        }
    };
    view! {
        <header class="topbar operator">
            <div class="brand">
                <span class="logo" aria-hidden="true">"◆"</span>
                <span class="clinic-name">"Operator console"</span>
            </div>
            <nav class="mainnav" aria-label="Operator">
                <A href="/operator" attr:aria-current=current("/operator")>"Clinics"</A>
                <A href="/operator/flags" attr:aria-current=current("/operator/flags")>"Flags"</A>
                <A href="/operator/audit" attr:aria-current=current("/operator/audit")>"Audit log"</A>
                {info.has_clinic.then(|| view! { <A href="/">"My clinic"</A> })}
            </nav>
            <div class="top-actions">
                <details class="usermenu">
                    <summary data-testid="user-menu">{info.name.clone()}</summary>
                    <div class="usermenu-panel">
                        <p class="muted">{info.email.clone()}</p>
                        <p class="muted">"Platform operator"</p>
                        <ActionForm action=auth.sign_out>
                            <button type="submit" class="secondary">"Sign out"</button>
                        </ActionForm>
                    </div>
                </details>
            </div>
        </header>
        <main class="content">{children()}</main>
    }
}

// --- Clinics ------------------------------------------------------------------------------

#[component]
pub fn OperatorClinicsPage() -> impl IntoView {
    // Made before the suspense, in the same order on the server and in the browser.
    let query = use_query_map();
    let search = Memo::new(move |_| query.read().get("q").unwrap_or_default());
    let data = Resource::new(move || search.get(), operator_clinics);
    view! {
        <Title text="Clinics · Operator"/>
        <OperatorOnly>
            {
            admin_data(data, move |rows| {
                view! {
                    <div class="page-head"><h1>"Clinics"</h1></div>
                    <form method="get" action="/operator" class="inline-form" role="search">
                        <div class="field">
                            <label for="clinic-search">"Search"</label>
                            <input id="clinic-search" type="search" name="q" value=search.get_untracked() placeholder="Name or slug"/>
                        </div>
                        <button type="submit" class="secondary">"Search"</button>
                    </form>
                    <ClinicTable rows/>
                }
            })
            }
        </OperatorOnly>
    }
}

#[component]
fn ClinicTable(rows: Vec<ClinicRow>) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="muted">"No clinic matches."</p> }.into_any();
    }
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="Clinics">
            <table class="table">
                <thead><tr>
                    <th>"Clinic"</th><th>"Plan"</th><th>"Status"</th><th>"Members"</th>
                    <th>"Tokens this month"</th><th>"Cost this month"</th><th>"Storage"</th><th>"Subscription"</th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().map(|c| view! {
                        <tr data-testid="clinic-row">
                            <td><A href=format!("/operator/clinics/{}", c.id)>{c.name.clone()}</A> <span class="muted">{c.slug.clone()}</span></td>
                            <td>{c.plan.clone()}</td>
                            <td>{status(c.active)}</td>
                            <td>{c.members}</td>
                            <td>{c.tokens.clone()}</td>
                            <td>{c.cost.clone()}</td>
                            <td>{c.storage.clone()}</td>
                            <td>{c.subscription.clone()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

fn status(active: bool) -> impl IntoView {
    if active {
        view! { <span class="badge ok">"active"</span> }.into_any()
    } else {
        view! { <span class="badge warn">"deactivated"</span> }.into_any()
    }
}

#[component]
pub fn OperatorClinicPage() -> impl IntoView {
    // Made before the suspense, in the same order on the server and in the browser.
    let params = use_params_map();
    let set_active = ServerAction::<SetClinicActive>::new();
    let set_plan = ServerAction::<SetClinicPlan>::new();
    let set_limits = ServerAction::<SetClinicLimits>::new();
    let data = Resource::new(
        move || {
            (
                params.read().get("id").unwrap_or_default(),
                set_active.version().get(),
                set_plan.version().get(),
                set_limits.version().get(),
            )
        },
        |(id, _, _, _)| operator_clinic(id),
    );
    view! {
        <Title text="Clinic · Operator"/>
        <OperatorOnly>
            {
            admin_data(
                data,
                move |d| view! { <ClinicDetail d set_active set_plan set_limits/> },
            )
            }
        </OperatorOnly>
    }
}

#[component]
fn ClinicDetail(
    d: ClinicDetailView,
    set_active: ServerAction<SetClinicActive>,
    set_plan: ServerAction<SetClinicPlan>,
    set_limits: ServerAction<SetClinicLimits>,
) -> impl IntoView {
    let c = d.clinic.clone();
    let limits_id = c.id.clone();
    let enterprise = c.plan == "enterprise";
    let (tokens, requests, agents, storage) = (
        c.limit_tokens.clone(),
        c.limit_requests.clone(),
        c.limit_agents.clone(),
        c.limit_storage_mb.clone(),
    );
    let active_id = c.id.clone();
    let plan_id = c.id.clone();
    let plan = c.plan.clone();
    view! {
        <p><A href="/operator">"← Clinics"</A></p>
        <div class="page-head"><h1>{c.name.clone()}</h1> {status(c.active)}</div>
        <section class="card" aria-labelledby="clinic-facts">
            <h2 id="clinic-facts">"This month"</h2>
            <dl class="facts">
                <dt>"Slug"</dt><dd data-testid="clinic-slug">{c.slug.clone()}</dd>
                <dt>"Plan"</dt><dd data-testid="clinic-plan">{c.plan.clone()}</dd>
                <dt>"Subscription"</dt><dd>{c.subscription.clone()}</dd>
                <dt>"Tokens"</dt><dd>{c.tokens.clone()}</dd>
                <dt>"Cost"</dt><dd>{c.cost.clone()}</dd>
                <dt>"Storage"</dt><dd>{c.storage.clone()}</dd>
                <dt>"Agents"</dt><dd>{d.agents}</dd>
                <dt>"Documents"</dt><dd>{d.documents}</dd>
                <dt>"Created"</dt><dd>{c.created.clone()}</dd>
            </dl>
        </section>
        <section class="card" aria-labelledby="clinic-manage">
            <h2 id="clinic-manage">"Manage"</h2>
            <ActionForm action=set_active attr:class="inline-form">
                <input type="hidden" name="id" value=active_id/>
                {if c.active {
                    view! {
                        <input type="hidden" name="active" value="false"/>
                        <p class="muted">"Deactivating refuses the clinic's sessions and API keys at once; its people see why."</p>
                        <ConfirmButton label="Deactivate clinic" class="danger" testid="deactivate"
                            question="Deactivate this clinic? Its people and API keys are refused at once."/>
                    }.into_any()
                } else {
                    view! {
                        <input type="hidden" name="active" value="true"/>
                        <button type="submit" data-testid="activate">"Activate clinic"</button>
                    }.into_any()
                }}
            </ActionForm>
            <ActionError value=set_active.value()/>
            <ActionForm action=set_plan attr:class="inline-form">
                <input type="hidden" name="id" value=plan_id/>
                <div class="field">
                    <label for="clinic-plan-select">"Plan"</label>
                    <select id="clinic-plan-select" name="plan">
                        {["starter", "professional", "enterprise"].into_iter().map(|p| {
                            let selected = p == plan;
                            view! { <option value=p selected=selected>{p}</option> }
                        }).collect_view()}
                    </select>
                </div>
                <button type="submit" class="secondary">"Set plan"</button>
            </ActionForm>
            <ActionError value=set_plan.value()/>
            {enterprise.then(|| view! {
                <h3>"Enterprise limits"</h3>
                <p class="muted">"Empty: no limit. Each API key may use half the clinic's requests per minute."</p>
                <ActionForm action=set_limits attr:class="stack-form" attr:data-testid="limits-form">
                    <input type="hidden" name="id" value=limits_id/>
                    <div class="field-row">
                        <div class="field">
                            <label for="limit-tokens">"Tokens a month"</label>
                            <input id="limit-tokens" name="tokens" inputmode="numeric" value=tokens/>
                        </div>
                        <div class="field">
                            <label for="limit-requests">"API requests per minute"</label>
                            <input id="limit-requests" name="requests" inputmode="numeric" value=requests/>
                        </div>
                        <div class="field">
                            <label for="limit-agents">"Agents"</label>
                            <input id="limit-agents" name="agents" inputmode="numeric" value=agents/>
                        </div>
                        <div class="field">
                            <label for="limit-storage">"Storage (MB)"</label>
                            <input id="limit-storage" name="storage_mb" inputmode="numeric" value=storage/>
                        </div>
                    </div>
                    <button type="submit" class="secondary">"Save limits"</button>
                </ActionForm>
                <ActionError value=set_limits.value()/>
                {move || set_limits.value().get().and_then(|r| r.ok()).map(|_| view! {
                    <p class="notice" role="status">"Limits saved; they apply at once."</p>
                })}
            })}
        </section>
        <section class="card" aria-labelledby="clinic-members">
            <h2 id="clinic-members">"Members"</h2>
            <table class="table">
                <thead><tr><th>"Name"</th><th>"Email"</th><th>"Role"</th><th>"Joined"</th></tr></thead>
                <tbody>
                    {d.members.into_iter().map(|m| view! {
                        <tr><td>{m.name}</td><td>{m.email}</td><td>{m.role}</td><td>{m.joined}</td></tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
        <section class="card" aria-labelledby="clinic-recent">
            <h2 id="clinic-recent">"Recent changes"</h2>
            <AuditTable rows=d.recent show_clinic=false/>
        </section>
    }
}

// --- Flags --------------------------------------------------------------------------------

#[component]
pub fn OperatorFlagsPage() -> impl IntoView {
    // Made before the suspense, in the same order on the server and in the browser.
    let create = ServerAction::<CreateFlag>::new();
    let data = Resource::new(move || create.version().get(), |_| operator_flags());
    view! {
        <Title text="Flags · Operator"/>
        <OperatorOnly>
            {
            admin_data(data, move |rows| view! { <Flags rows create/> })
            }
        </OperatorOnly>
    }
}

fn effect(f: &FlagRow) -> String {
    match &f.effect {
        Some(e) => format!("Changes {e}."),
        None => "No effect yet: nothing reads this flag.".into(),
    }
}

#[component]
fn Flags(rows: Vec<FlagRow>, create: ServerAction<CreateFlag>) -> impl IntoView {
    view! {
        <div class="page-head"><h1>"Feature flags"</h1></div>
        <p class="muted">"Each clinic gets the first rule that matches it, else the default. A change reaches every server within a second."</p>
        <div class="table-wrap" tabindex="0" role="region" aria-label="Flags">
            <table class="table">
                <thead><tr><th>"Flag"</th><th>"Type"</th><th>"Default"</th><th>"Rules"</th><th>"State"</th><th>"Effect"</th></tr></thead>
                <tbody>
                    {rows.into_iter().map(|f| {
                        let effect = effect(&f);
                        view! {
                            <tr data-testid="flag-row">
                                <td><A href=format!("/operator/flags/{}", f.key)><code>{f.key.clone()}</code></A><br/><span class="muted">{f.description.clone()}</span></td>
                                <td>{f.kind.clone()}</td>
                                <td><code>{f.default.clone()}</code></td>
                                <td>{f.rules}</td>
                                <td>{if f.enabled { "on" } else { "switched off" }}</td>
                                <td class:muted=f.effect.is_none()>{effect}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        <section class="card" aria-labelledby="new-flag-heading">
            <h2 id="new-flag-heading">"Create a flag"</h2>
            <ActionForm action=create attr:class="stack-form">
                <div class="field">
                    <label for="flag-key">"Key"</label>
                    <input id="flag-key" name="key" required maxlength="63" pattern="[a-z][a-z0-9_]{1,62}" placeholder="new_editor"/>
                </div>
                <div class="field">
                    <label for="flag-description">"Description"</label>
                    <input id="flag-description" name="description" maxlength="500"/>
                </div>
                <div class="field">
                    <label for="flag-kind">"Type"</label>
                    <select id="flag-kind" name="kind">
                        <option value="boolean">"boolean"</option>
                        <option value="string">"string"</option>
                        <option value="integer">"integer"</option>
                    </select>
                </div>
                <div class="field">
                    <label for="flag-default">"Default"</label>
                    <input id="flag-default" name="default" required placeholder="false"/>
                </div>
                <RulesField id="flag-rules" value=String::new()/>
                <button type="submit" disabled=create.pending()>"Create flag"</button>
            </ActionForm>
            <ActionError value=create.value()/>
            {move || create.value().get().and_then(|r| r.ok()).map(|key| view! {
                <p class="notice" role="status">"Created " <A href=format!("/operator/flags/{key}")><code>{key.clone()}</code></A> "."</p>
            })}
        </section>
    }
}

/// The rules, one per line, with how to write them.
#[component]
fn RulesField(
    id: &'static str,
    value: String,
    #[prop(optional)] on_input: Option<WriteSignal<String>>,
) -> impl IntoView {
    let help = format!("{id}-help");
    view! {
        <div class="field">
            <label for=id>"Rules"</label>
            <textarea id=id name="rules" rows="5" aria-describedby=help.clone()
                on:input=move |ev| if let Some(w) = on_input { w.set(event_target_value(&ev)) }
            >{value}</textarea>
            <p class="hint" id=help>
                "One per line, first match wins: " <code>"clinic <slug> = <value>"</code> ", "
                <code>"plan professional = <value>"</code> ", " <code>"25% = <value>"</code>
                " (the same clinics stay in as the percentage grows)."
            </p>
        </div>
    }
}

#[component]
pub fn OperatorFlagPage() -> impl IntoView {
    // Made before the suspense, in the same order on the server and in the browser.
    let params = use_params_map();
    let update = ServerAction::<UpdateFlag>::new();
    let enabled = ServerAction::<SetFlagEnabled>::new();
    let rollback = ServerAction::<RollbackFlag>::new();
    let data = Resource::new(
        move || {
            (
                params.read().get("key").unwrap_or_default(),
                update.version().get(),
                enabled.version().get(),
                rollback.version().get(),
            )
        },
        |(key, _, _, _)| operator_flag(key),
    );
    view! {
        <Title text="Flag · Operator"/>
        <OperatorOnly>
            {
            admin_data(data, move |d| view! { <Flag d update enabled rollback/> })
            }
        </OperatorOnly>
    }
}

#[component]
fn Flag(
    d: FlagDetail,
    update: ServerAction<UpdateFlag>,
    enabled: ServerAction<SetFlagEnabled>,
    rollback: ServerAction<RollbackFlag>,
) -> impl IntoView {
    let f = d.flag.clone();
    let key = f.key.clone();
    let preview = ServerAction::<PreviewFlag>::new();
    let (description, set_description) = signal(f.description.clone());
    let (default, set_default) = signal(f.default.clone());
    let (rules, set_rules) = signal(d.rules_text.clone());
    let (clinic, set_clinic) = signal(String::new());
    let preview_key = key.clone();
    let run_preview = move |_| {
        preview.dispatch(PreviewFlag {
            key: preview_key.clone(),
            description: description.get_untracked(),
            default: default.get_untracked(),
            rules: rules.get_untracked(),
            clinic: clinic.get_untracked(),
        });
    };
    let latest = f.version;
    let update_key = key.clone();
    let switch_key = key.clone();
    view! {
        <p><A href="/operator/flags">"← Flags"</A></p>
        <div class="page-head">
            <h1><code>{key.clone()}</code></h1>
            <span class="badge" class:warn=!f.enabled data-testid="flag-state">{if f.enabled { "on" } else { "switched off" }}</span>
        </div>
        <p class="muted">{effect(&f)} " Type: " {f.kind.clone()} ". Version " <span data-testid="flag-version">{f.version}</span> "."</p>
        <section class="card" aria-labelledby="flag-edit-heading">
            <h2 id="flag-edit-heading">"Rules"</h2>
            <ActionForm action=update attr:class="stack-form">
                <input type="hidden" name="key" value=update_key/>
                <input type="hidden" name="version" value=f.version.to_string()/>
                <div class="field">
                    <label for="flag-edit-description">"Description"</label>
                    <input id="flag-edit-description" name="description" maxlength="500" value=f.description.clone()
                        on:input=move |ev| set_description.set(event_target_value(&ev))/>
                </div>
                <div class="field">
                    <label for="flag-edit-default">"Default"</label>
                    <input id="flag-edit-default" name="default" required value=f.default.clone()
                        on:input=move |ev| set_default.set(event_target_value(&ev))/>
                </div>
                <RulesField id="flag-edit-rules" value=d.rules_text.clone() on_input=set_rules/>
                <div class="field">
                    <label for="flag-preview-clinic">"Preview for a clinic (slug or name, optional)"</label>
                    <input id="flag-preview-clinic" type="text" on:input=move |ev| set_clinic.set(event_target_value(&ev))/>
                </div>
                <div class="actions">
                    <button type="button" class="secondary" on:click=run_preview data-testid="flag-preview">"Preview"</button>
                    <button type="submit" disabled=update.pending() data-testid="flag-save">"Save as a new version"</button>
                </div>
            </ActionForm>
            <ActionError value=update.value()/>
            {move || update.value().get().and_then(|r| r.ok()).map(|v| view! {
                <p class="notice" role="status" data-testid="flag-saved">{format!("Saved as version {v}; every server applies it within a second.")}</p>
            })}
            <ActionError value=preview.value()/>
            {move || preview.value().get().and_then(|r| r.ok()).map(|p| view! {
                <div class="notice" role="status" data-testid="flag-preview-result">
                    <p>{format!("Of {} clinics:", p.clinics)}</p>
                    <ul>
                        {p.counts.into_iter().map(|(v, n)| view! { <li><code>{v}</code> ": " {n}</li> }).collect_view()}
                    </ul>
                    {p.clinic.map(|(name, value, why)| view! { <p>{name} " gets " <code>{value}</code> " — " {why}</p> })}
                    {p.unknown_clinic.then(|| view! { <p class="error">"No clinic by that slug or name."</p> })}
                </div>
            })}
        </section>
        <section class="card" aria-labelledby="flag-switch-heading">
            <h2 id="flag-switch-heading">"Kill switch"</h2>
            <ActionForm action=enabled attr:class="inline-form">
                <input type="hidden" name="key" value=switch_key/>
                {if f.enabled {
                    view! {
                        <input type="hidden" name="enabled" value="false"/>
                        <button type="submit" class="danger" data-testid="flag-switch-off">"Switch off: every clinic gets the default"</button>
                    }.into_any()
                } else {
                    view! {
                        <input type="hidden" name="enabled" value="true"/>
                        <button type="submit" data-testid="flag-switch-on">"Switch on: the rules apply again"</button>
                    }.into_any()
                }}
            </ActionForm>
            <ActionError value=enabled.value()/>
        </section>
        <section class="card" aria-labelledby="flag-history-heading">
            <h2 id="flag-history-heading">"History"</h2>
            <ActionError value=rollback.value()/>
            <div class="table-wrap" tabindex="0" role="region" aria-label="Flag versions">
                <table class="table">
                    <thead><tr><th>"Version"</th><th>"When"</th><th>"Who"</th><th>"What"</th><th>"State"</th><th>"Default"</th><th>"Rules"</th><th><span class="visually-hidden">"Actions"</span></th></tr></thead>
                    <tbody>
                        {d.history.into_iter().map(|v| {
                            let key = key.clone();
                            view! {
                                <tr data-testid="flag-version-row">
                                    <td>{v.version}</td>
                                    <td class="nowrap">{v.at}</td>
                                    <td>{v.by}</td>
                                    <td>{v.note}</td>
                                    <td>{if v.enabled { "on" } else { "off" }}</td>
                                    <td><code>{v.default}</code></td>
                                    <td><pre class="rules">{v.rules}</pre></td>
                                    <td>
                                        {(v.version != latest).then(|| view! {
                                            <ActionForm action=rollback attr:class="row-form">
                                                <input type="hidden" name="key" value=key/>
                                                <input type="hidden" name="version" value=v.version.to_string()/>
                                                <button type="submit" class="secondary small" data-testid="flag-rollback">{format!("Roll back to version {}", v.version)}</button>
                                            </ActionForm>
                                        })}
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </section>
    }
}

// --- Audit log ----------------------------------------------------------------------------

#[component]
pub fn OperatorAuditPage() -> impl IntoView {
    // Made before the suspense, in the same order on the server and in the browser.
    let query = AuditQuery::read();
    let data = Resource::new(
        move || query.get(),
        |q| operator_audit(q.person, q.area, q.from, q.to),
    );
    view! {
        <Title text="Audit log · Operator"/>
        <OperatorOnly>
            {
            admin_data(data, move |rows| {
                let q = query.get_untracked();
                view! {
                    <div class="page-head"><h1>"Audit log"</h1></div>
                    <p class="muted">"Every clinic's entries and the platform's own (flags, operators, failed sign-ins of unknown accounts)."</p>
                    <AuditFilter action="/operator/audit" q=q/>
                    <AuditTable rows show_clinic=true/>
                }
            })
            }
        </OperatorOnly>
    }
}
