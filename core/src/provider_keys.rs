//! Provider keys a clinic brings (BYOK): stored encrypted (see [`crate::crypto`]), listed by
//! their last four characters only, decrypted just for the call that needs them.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, By, Event};
use crate::auth::members::Actor;
use crate::changes::{Change, Changes};
use crate::crypto::{self, DataKey, MasterKeys, Sealed, SecretContext, WrappedKey};
use crate::db::{Db, Tx};
use crate::tenancy::TenantId;
use crate::{egress, Error, Provider, Result};

/// A stored key as admins see it: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProviderKeyInfo {
    pub id: Uuid,
    pub provider: Provider,
    pub last_four: Option<String>,
    pub base_url: Option<String>,
    pub added_by: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A decrypted key for one call. Its `Debug` prints nothing secret; the plaintext is zeroed
/// when dropped.
pub struct ResolvedKey {
    pub provider: Provider,
    pub secret: Option<SecretString>,
    pub base_url: Option<String>,
}

impl fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("provider", &self.provider)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("base_url", &self.base_url)
            .finish()
    }
}

fn parse_secret(raw: &str) -> Result<String> {
    let key = raw.trim();
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "A key cannot contain spaces or line breaks. Paste it again.",
        ));
    }
    match key.len() {
        0 => Err(Error::invalid("Paste the key.")),
        1..=7 => Err(Error::invalid("That is too short to be a provider key.")),
        8..=512 => Ok(key.to_string()),
        _ => Err(Error::invalid("That is too long to be a provider key.")),
    }
}

/// An endpoint's base URL as the HTTP client will read it (see [`egress::parse`]), without its
/// trailing slash.
fn parse_base_url(raw: &str) -> Result<String> {
    let bad = || Error::invalid("Enter the endpoint's base URL, like http://localhost:11434/v1.");
    if raw.trim().len() > 500 {
        return Err(bad());
    }
    let url = egress::parse(raw).map_err(|_| bad())?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

async fn data_key(
    tx: &mut Tx,
    master: &MasterKeys,
    tenant: TenantId,
    create: bool,
) -> Result<Option<DataKey>> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT master_version, nonce, wrapped_key FROM tenant_data_keys FOR UPDATE",
    )
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some((master_version, nonce, ciphertext)) => Ok(Some(crypto::unwrap(
            master,
            tenant,
            &WrappedKey {
                master_version,
                nonce,
                ciphertext,
            },
        )?)),
        None if create => {
            let key = DataKey::generate();
            let wrapped = crypto::wrap(master, tenant, &key)?;
            sqlx::query("INSERT INTO tenant_data_keys (tenant_id, master_version, nonce, wrapped_key) VALUES ($1, $2, $3, $4)")
                .bind(tenant)
                .bind(&wrapped.master_version)
                .bind(&wrapped.nonce)
                .bind(&wrapped.ciphertext)
                .execute(&mut **tx)
                .await?;
            Ok(Some(key))
        }
        None => Ok(None),
    }
}

/// What an admin enters for a provider. For an OpenAI-compatible endpoint the base URL is
/// required and the key optional; for OpenAI and Anthropic the key is required.
pub struct KeyInput<'a> {
    pub provider: Provider,
    pub secret: &'a str,
    pub base_url: &'a str,
}

impl fmt::Debug for KeyInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyInput")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Adds or replaces the clinic's key for a provider, encrypted at once. An endpoint on an
/// internal address is refused unless `allow_private_endpoints` (self-hosted installs).
#[tracing::instrument(skip(db, changes, master))]
pub async fn set(
    db: &Db,
    changes: &Changes,
    master: &MasterKeys,
    tenant: TenantId,
    actor: Actor,
    input: KeyInput<'_>,
    allow_private_endpoints: bool,
) -> Result<ProviderKeyInfo> {
    actor.require_admin("manage provider keys")?;
    let provider = input.provider;
    let secret = match (provider, input.secret.trim().is_empty()) {
        (Provider::OpenAiCompatible, true) => None,
        _ => Some(SecretString::from(parse_secret(input.secret)?)),
    };
    let base_url = match provider {
        Provider::OpenAiCompatible => {
            let url = parse_base_url(input.base_url)?;
            if !allow_private_endpoints {
                // Refuse addresses inside the server's own network before storing anything.
                egress::check_endpoint(&url)
                    .await
                    .map_err(|e| Error::invalid(e.to_string()))?;
            }
            Some(url)
        }
        _ => None,
    };
    let mut tx = db.begin_tenant(tenant).await?;
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM provider_keys WHERE provider = $1 FOR UPDATE")
            .bind(provider.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|v: i32| v + 1)
            .unwrap_or(1);
    let id = Uuid::new_v4();
    let (sealed, last_four) = match &secret {
        Some(secret) => {
            let key = data_key(&mut tx, master, tenant, true)
                .await?
                .ok_or_else(|| Error::Internal("no data key".into()))?;
            let plain = secret.expose_secret();
            let ctx = SecretContext {
                tenant,
                provider: provider.as_str(),
                key_id: id,
                version,
            };
            let sealed = crypto::seal(&key, ctx, plain.as_bytes())?;
            (Some(sealed), Some(last_four(plain)))
        }
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO provider_keys (id, tenant_id, provider, base_url, version, nonce, ciphertext, last_four, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, provider) DO UPDATE SET
            id = EXCLUDED.id, base_url = EXCLUDED.base_url, version = EXCLUDED.version,
            nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, last_four = EXCLUDED.last_four,
            created_by = EXCLUDED.created_by, created_at = now(), last_used_at = NULL",
    )
    .bind(id)
    .bind(tenant)
    .bind(provider.as_str())
    .bind(&base_url)
    .bind(version)
    .bind(sealed.as_ref().map(|s| s.nonce.clone()))
    .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
    .bind(&last_four)
    .bind(actor.user)
    .execute(&mut *tx)
    .await?;
    let (action, note) = if version == 1 {
        ("provider_key.added", "added")
    } else {
        ("provider_key.replaced", "replaced")
    };
    let shown =
        json!({ "last_four": last_four, "base_url": base_url, "version": version, "change": note });
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new(action, provider.as_str()).after(shown),
    )
    .await?;
    let info = list_in(&mut tx)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or(Error::NotFound)?;
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    tracing::info!(%tenant, provider = provider.as_str(), version, "provider key stored");
    Ok(info)
}

/// The last four characters of a key, the only part ever shown again.
fn last_four(plain: &str) -> String {
    let chars: Vec<char> = plain.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

async fn list_in(tx: &mut Tx) -> Result<Vec<ProviderKeyInfo>> {
    Ok(sqlx::query_as::<_, ProviderKeyInfo>(
        "SELECT k.id, k.provider, k.last_four, k.base_url, u.name AS added_by, k.created_at,
                k.last_used_at
           FROM provider_keys k LEFT JOIN users u ON u.id = k.created_by
          ORDER BY k.provider",
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// The clinic's keys, for admins.
pub async fn list(db: &Db, tenant: TenantId, actor: Actor) -> Result<Vec<ProviderKeyInfo>> {
    actor.require_admin("manage provider keys")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let keys = list_in(&mut tx).await?;
    tx.commit().await?;
    Ok(keys)
}

/// Deletes the clinic's key for `provider`.
pub async fn delete(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    provider: Provider,
) -> Result<()> {
    actor.require_admin("manage provider keys")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let gone: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "DELETE FROM provider_keys WHERE provider = $1 RETURNING last_four, base_url",
    )
    .bind(provider)
    .fetch_optional(&mut *tx)
    .await?;
    let (last_four, base_url) = gone.ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("provider_key.deleted", provider.as_str())
            .before(json!({ "last_four": last_four, "base_url": base_url })),
    )
    .await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    Ok(())
}

/// A stored key's id, version, base URL, nonce and ciphertext, and whether its last use is
/// more than a minute old.
type StoredKey = (
    Uuid,
    i32,
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    bool,
);

/// Decrypts the clinic's key for `provider` for one call, and notes that it was used (at most
/// once a minute, so most calls write nothing).
pub async fn resolve(
    db: &Db,
    master: &MasterKeys,
    tenant: TenantId,
    provider: Provider,
) -> Result<Option<ResolvedKey>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT id, version, base_url, nonce, ciphertext,
                last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
           FROM provider_keys WHERE provider = $1",
    )
    .bind(provider.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, version, base_url, nonce, ciphertext, stale)) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    if stale {
        sqlx::query("UPDATE provider_keys SET last_used_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let secret = match (nonce, ciphertext) {
        (Some(nonce), Some(ciphertext)) => {
            let key = data_key(&mut tx, master, tenant, false)
                .await?
                .ok_or_else(|| Error::Internal("data key missing".into()))?;
            let ctx = SecretContext {
                tenant,
                provider: provider.as_str(),
                key_id: id,
                version,
            };
            let plain = crypto::open(&key, ctx, &Sealed { nonce, ciphertext })?;
            let text = std::str::from_utf8(&plain)
                .map_err(|_| Error::Internal("stored key is not UTF-8".into()))?;
            Some(SecretString::from(text.to_string()))
        }
        _ => None,
    };
    tx.commit().await?;
    Ok(Some(ResolvedKey {
        provider,
        secret,
        base_url,
    }))
}

/// Re-wraps every tenant's data key with the current master key, leaving the secrets they
/// encrypt untouched. Runs on the operator path: `owner` is a pool connected as the schema
/// owner, whose `operator_rotation` policy lets it see every tenant's data key. Returns how many
/// keys were re-wrapped.
pub async fn rotate_master_key(owner: &sqlx::PgPool, master: &MasterKeys) -> Result<usize> {
    let mut tx = owner.begin().await?;
    let rows: Vec<(TenantId, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT tenant_id, master_version, nonce, wrapped_key FROM tenant_data_keys
          WHERE master_version <> $1 FOR UPDATE",
    )
    .bind(master.current_version())
    .fetch_all(&mut *tx)
    .await?;
    for (tenant, master_version, nonce, ciphertext) in &rows {
        let key = crypto::unwrap(
            master,
            *tenant,
            &WrappedKey {
                master_version: master_version.clone(),
                nonce: nonce.clone(),
                ciphertext: ciphertext.clone(),
            },
        )?;
        let wrapped = crypto::wrap(master, *tenant, &key)?;
        sqlx::query("UPDATE tenant_data_keys SET master_version = $2, nonce = $3, wrapped_key = $4, rotated_at = now() WHERE tenant_id = $1")
            .bind(tenant)
            .bind(&wrapped.master_version)
            .bind(&wrapped.nonce)
            .bind(&wrapped.ciphertext)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}
