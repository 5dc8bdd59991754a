//! Admin -> Provider keys: the clinic's own OpenAI and Anthropic keys and an OpenAI-compatible
//! endpoint. Keys are write-only: the page shows the last four characters, never the key.

use leptos::prelude::*;
use leptos_meta::Title;

use tessera_types::Provider;

use crate::api::provider_keys::{
    list_provider_keys, DeleteProviderKey, ProviderKeyRow, SaveProviderKey, TestProviderKey,
};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};

#[component]
pub fn ProviderKeysPage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let save = ServerAction::<SaveProviderKey>::new();
    let delete = ServerAction::<DeleteProviderKey>::new();
    let data = Resource::new(
        move || (save.version().get(), delete.version().get()),
        |_| list_provider_keys(),
    );
    view! {
        <Title text="Provider keys"/>
        <Protected>
            {
            admin_data(data, move |rows| view! { <Keys rows save delete/> })
            }
        </Protected>
    }
}

#[component]
fn Keys(
    rows: Vec<ProviderKeyRow>,
    save: ServerAction<SaveProviderKey>,
    delete: ServerAction<DeleteProviderKey>,
) -> impl IntoView {
    view! {
        <div class="page-head">
            <h1>"Provider keys"</h1>
        </div>
        <p class="muted">
            "Your clinic's own keys for the AI providers. They are encrypted as soon as you save them; "
            "Tessera shows only their last four characters and never sends them back to a browser."
        </p>
        <ActionError value=save.value()/>
        <ActionError value=delete.value()/>
        {move || save.value().get().and_then(|r| r.ok()).map(|_| view! {
            <p class="notice" role="status">"Saved. The key is stored encrypted."</p>
        })}
        {rows.into_iter().map(|row| view! { <ProviderCard row save delete/> }).collect_view()}
    }
}

/// One provider: the clinic's key for it, and saving, testing or deleting it.
#[component]
fn ProviderCard(
    row: ProviderKeyRow,
    save: ServerAction<SaveProviderKey>,
    delete: ServerAction<DeleteProviderKey>,
) -> impl IntoView {
    let heading_id = format!("key-{}", row.provider);
    let is_compatible = row.provider == Provider::OpenAiCompatible;
    let provider = row.provider.as_str();
    let provider_delete = row.provider.as_str();
    let configured = row.configured;
    let heading_ref = heading_id.clone();
    let testid = format!("provider-{}", row.provider);
    let url_id = format!("url-{}", row.provider);
    let url_for = url_id.clone();
    let secret_id = format!("secret-{}", row.provider);
    let secret_for = secret_id.clone();
    let base_url = row.base_url.clone().unwrap_or_default();
    let provider_test = row.provider.as_str();
    let test = ServerAction::<TestProviderKey>::new();
    view! {
        <section class="card" aria-labelledby=heading_ref data-testid=testid>
            <h2 id=heading_id>{row.provider.label()}</h2>
            {if configured {
                view! {
                    <p data-testid="key-status">
                        {row.last_four.clone().map(|l| format!("Key ending in …{l}. ")).unwrap_or_else(|| "No key (none needed). ".into())}
                        {row.base_url.clone().map(|u| format!("Endpoint {u}. ")).unwrap_or_default()}
                        {format!("Added {}", row.added.clone().unwrap_or_default())}
                        {row.added_by.clone().map(|n| format!(" by {n}")).unwrap_or_default()}
                        {format!(", {}.", row.last_used.clone().map(|d| format!("last used {d}")).unwrap_or_else(|| "not used yet".into()))}
                    </p>
                }.into_any()
            } else {
                view! { <p class="muted" data-testid="key-status">"Not set."</p> }.into_any()
            }}
            <ActionForm action=save attr:class="inline-form">
                <input type="hidden" name="provider" value=provider/>
                {is_compatible.then(|| view! {
                    <div class="field">
                        <label for=url_for.clone()>"Base URL"</label>
                        <input id=url_id.clone() type="url" name="base_url" required
                            placeholder="http://localhost:11434/v1" value=base_url.clone()/>
                    </div>
                })}
                <div class="field">
                    <label for=secret_for>{if is_compatible { "API key (optional)" } else { "API key" }}</label>
                    <input id=secret_id type="password" name="key" autocomplete="off"
                        required=!is_compatible placeholder=if configured { "Paste a new key to replace it" } else { "Paste the key" }/>
                </div>
                <button type="submit" disabled=save.pending()>{if configured { "Replace" } else { "Save" }}</button>
            </ActionForm>
            {configured.then(|| view! {
                <div class="key-actions">
                    <ActionForm action=test attr:class="row-form">
                        <input type="hidden" name="provider" value=provider_test/>
                        <button type="submit" class="secondary small" disabled=test.pending()>
                            {move || if test.pending().get() { "Testing…" } else { "Test" }}
                        </button>
                    </ActionForm>
                    <ActionForm action=delete attr:class="row-form">
                        <input type="hidden" name="provider" value=provider_delete/>
                        <ConfirmButton label="Delete" question="Delete this provider key? Calls that need it stop until a new one is saved."/>
                    </ActionForm>
                </div>
                <ActionError value=test.value()/>
                {move || test.value().get().and_then(|r| r.ok()).map(|check| view! {
                    <p class=if check.ok { "notice" } else { "error" } role="status" data-testid="key-test-result">{check.message}</p>
                })}
            })}
        </section>
    }
}
