//! Admin -> Provider keys: the clinic's own OpenAI and Anthropic keys and its
//! OpenAI-compatible endpoint, stored encrypted and never sent back.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::Provider;

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// A provider and the clinic's key for it, as the admin page shows it: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderKeyRow {
    pub provider: Provider,
    pub configured: bool,
    pub last_four: Option<String>,
    pub base_url: Option<String>,
    pub added_by: Option<String>,
    pub added: Option<String>,
    pub last_used: Option<String>,
}

/// The result of the Test button on a provider key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    pub ok: bool,
    pub message: String,
}

/// Every provider with the clinic's key for it, if any (admins only).
#[server(endpoint = "provider_keys")]
pub async fn list_provider_keys() -> Result<Vec<ProviderKeyRow>, AppError> {
    use tessera_core::format::date;
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let stored = tessera_core::provider_keys::list(&services.db, v.tenant.id, v.actor()).await?;
    Ok(Provider::ALL
        .iter()
        .map(|&provider| {
            let k = stored.iter().find(|k| k.provider == provider);
            ProviderKeyRow {
                provider,
                configured: k.is_some(),
                last_four: k.and_then(|k| k.last_four.clone()),
                base_url: k.and_then(|k| k.base_url.clone()),
                added_by: k.and_then(|k| k.added_by.clone()),
                added: k.map(|k| date(k.created_at)),
                last_used: k.and_then(|k| k.last_used_at).map(date),
            }
        })
        .collect())
}

/// Adds or replaces the clinic's key for a provider. The key is encrypted at once and never
/// sent back.
#[server(endpoint = "save_provider_key")]
pub async fn save_provider_key(
    provider: String,
    key: Option<String>,
    base_url: Option<String>,
) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let provider: Provider = provider.parse()?;
    tessera_core::provider_keys::set(
        &services.db,
        &services.changes,
        services.master_keys(),
        v.tenant.id,
        v.actor(),
        tessera_core::provider_keys::KeyInput {
            provider,
            secret: key.as_deref().unwrap_or(""),
            base_url: base_url.as_deref().unwrap_or(""),
        },
        services.config.allow_private_endpoints,
    )
    .await?;
    Ok(())
}

#[server(endpoint = "delete_provider_key")]
pub async fn delete_provider_key(provider: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let provider: Provider = provider.parse()?;
    tessera_core::provider_keys::delete(
        &services.db,
        &services.changes,
        v.tenant.id,
        v.actor(),
        provider,
    )
    .await?;
    Ok(())
}

/// Makes one small real call with the clinic's key and reports what the provider said.
#[server(endpoint = "test_provider_key")]
pub async fn test_provider_key(provider: String) -> Result<KeyCheck, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let provider: Provider = provider.parse()?;
    let probe = services
        .gateway
        .check_key(v.tenant.id, v.actor(), provider)
        .await?;
    Ok(KeyCheck {
        ok: probe.ok,
        message: probe.message,
    })
}
