//! Admin -> API keys: keys for the OpenAI-compatible API, shown once and stored as a hash.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_by: Option<String>,
    pub created: String,
    pub last_used: Option<String>,
    pub revoked: Option<String>,
}

/// A new API key: the token is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub name: String,
    pub token: String,
}

#[server(endpoint = "api_keys")]
pub async fn list_api_keys() -> Result<Vec<ApiKeyRow>, AppError> {
    use tessera_core::format::date;
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let keys = tessera_core::api_keys::list(&services.db, v.tenant.id, v.actor()).await?;
    Ok(keys
        .into_iter()
        .map(|k| ApiKeyRow {
            id: k.id.to_string(),
            name: k.name,
            prefix: k.prefix,
            created_by: k.created_by,
            created: date(k.created_at),
            last_used: k.last_used_at.map(date),
            revoked: k.revoked_at.map(date),
        })
        .collect())
}

#[server(endpoint = "create_api_key")]
pub async fn create_api_key(name: String) -> Result<CreatedApiKey, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let (info, token) =
        tessera_core::api_keys::create(&services.db, v.tenant.id, v.actor(), &name).await?;
    Ok(CreatedApiKey {
        name: info.name,
        token,
    })
}

#[server(endpoint = "revoke_api_key")]
pub async fn revoke_api_key(id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::api_keys::revoke(&services.db, &services.changes, v.tenant.id, v.actor(), id)
        .await?;
    Ok(())
}
