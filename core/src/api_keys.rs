//! API keys for the OpenAI-compatible API. A key is `tsk_` plus 43 random characters, shown
//! once; only its SHA-256 is stored. A presented key is found by its hash, so no stored secret
//! is ever compared byte by byte (nothing to leak through timing).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, By, Event};
use crate::auth::members::Actor;
use crate::changes::{Change, Changes};
use crate::db::{set_tenant, Db};
use crate::tenancy::TenantId;
use crate::{Error, Result};

pub const PREFIX: &str = "tsk_";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, e.g. `tsk_AbCd1234`.
    pub prefix: String,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Who an accepted API key acts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiCaller {
    pub key_id: Uuid,
    pub tenant: TenantId,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a key; returns it with the plaintext token, which is not stored and cannot be shown
/// again.
#[tracing::instrument(skip(db))]
pub async fn create(
    db: &Db,
    tenant: TenantId,
    actor: Actor,
    name: &str,
) -> Result<(ApiKeyInfo, String)> {
    actor.require_admin("manage API keys")?;
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() || name.chars().count() > 80 {
        return Err(Error::invalid(
            "Give the key a name of 1 to 80 characters, such as where it will be used.",
        ));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix: String = token.chars().take(12).collect();
    let id = Uuid::new_v4();
    let mut tx = db.begin_tenant(tenant).await?;
    sqlx::query("INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_by) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(tenant)
        .bind(&name)
        .bind(&prefix)
        .bind(hash(&token))
        .bind(actor.user)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("api_key.created", name.clone()).after(json!({ "prefix": prefix })),
    )
    .await?;
    tx.commit().await?;
    let info = list(db, tenant, actor)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or(Error::NotFound)?;
    Ok((info, token))
}

/// The clinic's keys, newest first, revoked ones included.
pub async fn list(db: &Db, tenant: TenantId, actor: Actor) -> Result<Vec<ApiKeyInfo>> {
    actor.require_admin("manage API keys")?;
    let query = sqlx::query_as(
        "SELECT k.id, k.name, k.prefix, u.name AS created_by, k.created_at, k.last_used_at,
                k.revoked_at
           FROM api_keys k LEFT JOIN users u ON u.id = k.created_by
          ORDER BY k.created_at DESC",
    );
    db.tenant_all(tenant, query).await
}

/// Revokes a key: it stops working at once.
pub async fn revoke(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    id: Uuid,
) -> Result<()> {
    actor.require_admin("manage API keys")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let revoked: Option<(String, String)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
         RETURNING name, prefix",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (name, prefix) = revoked.ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("api_key.revoked", name).before(json!({ "prefix": prefix })),
    )
    .await?;
    tx.commit().await?;
    changes.announce(Change::ApiKey(id)).await;
    Ok(())
}

/// The caller behind a presented key, or `None` for a malformed, unknown or revoked key. A
/// deactivated clinic's keys answer 403.
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<ApiCaller>> {
    let token = token.trim();
    if !token.starts_with(PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    let key_hash = hash(token);
    let mut tx = db.begin_api_key(&key_hash).await?;
    let row: Option<(Uuid, TenantId, bool)> = sqlx::query_as(
        "SELECT id, tenant_id, last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
           FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(&key_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((key_id, tenant, stale)) = row else {
        return Ok(None);
    };
    // The key's holder may only read its row; the rest happens in the clinic's scope.
    set_tenant(&mut tx, tenant).await?;
    // Recording use at most once a minute keeps most requests free of a write.
    if stale {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
    }
    let active: bool = sqlx::query_scalar("SELECT active FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    if !active {
        return Err(Error::forbidden("This clinic has been deactivated."));
    }
    Ok(Some(ApiCaller { key_id, tenant }))
}
