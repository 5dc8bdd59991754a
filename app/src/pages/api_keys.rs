//! Admin -> API keys: keys for Tessera's OpenAI-compatible API. A new key is shown once.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::api_keys::{list_api_keys, ApiKeyRow, CreateApiKey, RevokeApiKey};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};

#[component]
pub fn ApiKeysPage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let create = ServerAction::<CreateApiKey>::new();
    let revoke = ServerAction::<RevokeApiKey>::new();
    let data = Resource::new(
        move || (create.version().get(), revoke.version().get()),
        |_| list_api_keys(),
    );
    view! {
        <Title text="API keys"/>
        <Protected>
            {
            admin_data(data, move |rows| view! { <ApiKeys rows create revoke/> })
            }
        </Protected>
    }
}

#[component]
fn ApiKeys(
    rows: Vec<ApiKeyRow>,
    create: ServerAction<CreateApiKey>,
    revoke: ServerAction<RevokeApiKey>,
) -> impl IntoView {
    view! {
        <div class="page-head"><h1>"API keys"</h1></div>
        <p class="muted">
            "Keys for Tessera's OpenAI-compatible API: point an OpenAI SDK at this site's /v1 and use a key as its API key."
        </p>
        <section class="card" aria-labelledby="new-key-heading">
            <h2 id="new-key-heading">"Create a key"</h2>
            <ActionForm action=create attr:class="inline-form">
                <div class="field">
                    <label for="api-key-name">"Name"</label>
                    <input id="api-key-name" type="text" name="name" required maxlength="80" placeholder="Front desk integration"/>
                </div>
                <button type="submit" disabled=create.pending()>"Create key"</button>
            </ActionForm>
            <ActionError value=create.value()/>
            {move || create.value().get().and_then(|r| r.ok()).map(|created| view! {
                <div class="notice" role="status">
                    <p>"Copy the key for " <strong>{created.name.clone()}</strong> " now: it will not be shown again."</p>
                    <input class="copy" type="text" readonly value=created.token.clone() data-testid="new-api-key" aria-label="New API key"/>
                </div>
            })}
        </section>
        <section class="card" aria-labelledby="keys-heading">
            <h2 id="keys-heading">"Keys"</h2>
            <ActionError value=revoke.value()/>
            {if rows.is_empty() {
                view! { <p class="muted">"No keys yet."</p> }.into_any()
            } else {
                view! {
                    <table class="table">
                        <thead><tr><th>"Name"</th><th>"Key"</th><th>"Created"</th><th>"Last used"</th><th><span class="visually-hidden">"Actions"</span></th></tr></thead>
                        <tbody>
                            {rows.into_iter().map(|k| {
                                let id = k.id.clone();
                                let key_name = k.name.clone();
                                view! {
                                    <tr data-testid="api-key-row">
                                        <td>{k.name.clone()}</td>
                                        <td><code>{format!("{}…", k.prefix)}</code></td>
                                        <td>{k.created.clone()} {k.created_by.clone().map(|n| format!(" by {n}"))}</td>
                                        <td>{k.last_used.clone().unwrap_or_else(|| "never".into())}</td>
                                        <td>
                                            {match k.revoked.clone() {
                                                Some(date) => view! { <span class="badge">{format!("revoked {date}")}</span> }.into_any(),
                                                None => view! {
                                                    <ActionForm action=revoke attr:class="row-form">
                                                        <input type="hidden" name="id" value=id/>
                                                        <ConfirmButton label="Revoke"
                                                            question=format!("Revoke the API key {key_name}? Programs using it are refused at once.")/>
                                                    </ActionForm>
                                                }.into_any(),
                                            }}
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}
