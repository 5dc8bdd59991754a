//! Knowledge: the documents a clinic uploads, and retrieval over them.
//!
//! An admin uploads files ([`upload`]); each is stored with its hash (the same content twice
//! is one document; a new file under an existing name is a new version of it) and queued for
//! ingestion ([`ingest`]): a worker extracts its text ([`extract`]), splits it into passages
//! ([`chunk`]), embeds them when the clinic has an embedding provider, and swaps the passages
//! in one transaction. Retrieval ([`search`]) fuses lexical and dense results. Everything is
//! scoped to one clinic by row-level security, and vectors by the [`vectors::VectorIndex`]
//! calls, each of which takes the clinic.

pub mod chunk;
pub mod extract;
pub mod ingest;
pub mod qdrant;
pub mod search;
pub mod vectors;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::members::Actor;
use crate::changes::{Change, Changes};
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::{Error, Result};
pub use tessera_types::{DocumentKind, DocumentStatus};

/// A document as the Knowledge page lists it (never its content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub id: Uuid,
    pub name: String,
    pub kind: DocumentKind,
    pub size_bytes: i64,
    pub tags: Vec<String>,
    pub status: DocumentStatus,
    pub error: Option<String>,
    pub chunk_count: i32,
    pub pages: Option<i32>,
    /// The embedding model of its vectors; `None`: found by lexical search only.
    pub embedding_model: Option<String>,
    pub uploaded_by: Option<String>,
    /// When the current version was uploaded.
    pub uploaded_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct DocumentRow {
    id: Uuid,
    name: String,
    kind: String,
    size_bytes: i64,
    tags: Vec<String>,
    status: String,
    error: Option<String>,
    chunk_count: i32,
    pages: Option<i32>,
    embedding_model: Option<String>,
    uploaded_by: Option<String>,
    uploaded_at: OffsetDateTime,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl TryFrom<DocumentRow> for Document {
    type Error = Error;
    fn try_from(r: DocumentRow) -> Result<Self> {
        Ok(Document {
            id: r.id,
            name: r.name,
            kind: r
                .kind
                .parse()
                .map_err(|e| Error::Internal(format!("{e}")))?,
            size_bytes: r.size_bytes,
            tags: r.tags,
            status: r
                .status
                .parse()
                .map_err(|e| Error::Internal(format!("{e}")))?,
            error: r.error,
            chunk_count: r.chunk_count,
            pages: r.pages,
            embedding_model: r.embedding_model,
            uploaded_by: r.uploaded_by,
            uploaded_at: r.uploaded_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const SELECT: &str =
    "SELECT d.id, d.name, d.kind, d.size_bytes, d.tags, d.status, d.error, d.chunk_count, d.pages,
        d.embedding_model, u.name AS uploaded_by, d.uploaded_at, d.created_at, d.updated_at
   FROM documents d LEFT JOIN users u ON u.id = d.uploaded_by";

/// The clinic's documents, newest first. Anyone in the clinic may list them.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<Document>> {
    let sql = format!("{SELECT} ORDER BY d.created_at DESC, d.name");
    let rows: Vec<DocumentRow> = db.tenant_all(tenant, sqlx::query_as(&sql)).await?;
    rows.into_iter().map(Document::try_from).collect()
}

pub async fn get(db: &Db, tenant: TenantId, id: Uuid) -> Result<Document> {
    let sql = format!("{SELECT} WHERE d.id = $1");
    let row: Option<DocumentRow> = db
        .tenant_optional(tenant, sqlx::query_as(&sql).bind(id))
        .await?;
    row.ok_or(Error::NotFound)?.try_into()
}

/// Storage the clinic's documents take, and what its plan allows (`None`: unlimited), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    pub used_bytes: i64,
    pub limit_bytes: Option<i64>,
}

pub async fn storage(db: &Db, tenant: TenantId) -> Result<Storage> {
    let mut tx = db.begin_tenant(tenant).await?;
    let storage = storage_in(&mut tx).await?;
    tx.commit().await?;
    Ok(storage)
}

async fn storage_in(tx: &mut crate::db::Tx) -> Result<Storage> {
    let (used, limit_mb): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(size_bytes), 0)::bigint FROM documents),
                COALESCE(t.limit_storage_mb, p.storage_mb)::bigint
           FROM tenants t JOIN plans p ON p.id = t.plan",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Storage {
        used_bytes: used,
        limit_bytes: limit_mb.map(|mb| mb.saturating_mul(1_000_000)),
    })
}

/// A file as uploaded.
#[derive(Clone, Debug, Default)]
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
    pub tags: Vec<String>,
}

/// What an upload came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Uploaded {
    /// A new document, queued for ingestion.
    Added { id: Uuid, name: String },
    /// A new version of an existing document (same name), queued; its old passages serve until
    /// the new ones are ready.
    Replaced { id: Uuid, name: String },
    /// The same content is already there (under `name`); nothing changed.
    Unchanged { id: Uuid, name: String },
}

impl Uploaded {
    /// For people: what happened.
    pub fn message(&self) -> String {
        match self {
            Uploaded::Added { name, .. } => format!("{name} was uploaded and is being read."),
            Uploaded::Replaced { name, .. } => {
                format!("{name} was replaced by the new version, which is being read.")
            }
            Uploaded::Unchanged { name, .. } => {
                format!("This file is already here, as {name}; nothing changed.")
            }
        }
    }
}

/// The file name as stored: the last path segment, trimmed, without control characters.
pub fn clean_name(raw: &str) -> Result<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let name: String = base.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(Error::invalid("The file has no name."));
    }
    if name.chars().count() > 255 {
        return Err(Error::invalid("File names can be at most 255 characters."));
    }
    Ok(name)
}

/// Tags as typed (comma-separated): trimmed, lower-case, at most 20 of at most 40 characters.
pub fn parse_tags(raw: &str) -> Result<Vec<String>> {
    let mut tags: Vec<String> = raw
        .split(',')
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if tags.len() > 20 {
        return Err(Error::invalid("A document can have at most 20 tags."));
    }
    if let Some(t) = tags.iter().find(|t| t.chars().count() > 40) {
        return Err(Error::invalid(format!(
            "The tag {t:?} is longer than 40 characters."
        )));
    }
    Ok(tags)
}

/// Stores an uploaded file and queues it for ingestion (admins only). Refused, with a message
/// saying why: an empty file, one over `max_file_bytes`, a format Tessera does not read, or one
/// that would take the clinic past its plan's storage.
pub async fn upload(
    db: &Db,
    tenant: TenantId,
    actor: Actor,
    file: Upload,
    max_file_bytes: i64,
) -> Result<Uploaded> {
    actor.require_admin("manage the clinic's documents")?;
    let name = clean_name(&file.name)?;
    let size = file.bytes.len() as i64;
    if size == 0 {
        return Err(Error::invalid(format!("{name} is empty.")));
    }
    if size > max_file_bytes {
        return Err(Error::invalid(format!(
            "{name} is {}; a file can be at most {}.",
            tessera_types::format::bytes(size),
            tessera_types::format::bytes(max_file_bytes)
        )));
    }
    let kind = extract::detect(&name, &file.bytes).map_err(Error::Invalid)?;
    let hash: [u8; 32] = Sha256::digest(&file.bytes).into();
    let mut tx = db.begin_tenant(tenant).await?;
    // One upload at a time per clinic past this point, so two cannot both take the last of the
    // storage.
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    if let Some((id, existing)) =
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, name FROM documents WHERE sha256 = $1")
            .bind(&hash[..])
            .fetch_optional(&mut *tx)
            .await?
    {
        tx.commit().await?;
        return Ok(Uploaded::Unchanged { id, name: existing });
    }
    let same_name: Option<(Uuid, i64)> =
        sqlx::query_as("SELECT id, size_bytes FROM documents WHERE name = $1")
            .bind(&name)
            .fetch_optional(&mut *tx)
            .await?;
    let storage = storage_in(&mut tx).await?;
    let after = storage.used_bytes - same_name.map_or(0, |(_, s)| s) + size;
    if let Some(limit) = storage.limit_bytes {
        if after > limit {
            return Err(Error::PlanLimit(format!(
                "{name} ({}) does not fit: the clinic's documents take {} of the plan's {}. Delete documents, or upgrade the plan under Billing.",
                tessera_types::format::bytes(size),
                tessera_types::format::bytes(storage.used_bytes),
                tessera_types::format::bytes(limit),
            )));
        }
    }
    let tags = file.tags;
    let (id, version, outcome) = match same_name {
        Some((id, _)) => {
            let version: i32 = sqlx::query_scalar(
                "UPDATE documents SET kind = $2, size_bytes = $3, sha256 = $4, content = $5,
                        tags = CASE WHEN cardinality($6::text[]) > 0 THEN $6 ELSE tags END,
                        version = version + 1, status = 'queued', error = NULL,
                        uploaded_by = $7, uploaded_at = now(), updated_at = now()
                  WHERE id = $1 RETURNING version",
            )
            .bind(id)
            .bind(kind.as_str())
            .bind(size)
            .bind(&hash[..])
            .bind(&file.bytes)
            .bind(&tags)
            .bind(actor.user)
            .fetch_one(&mut *tx)
            .await?;
            (
                id,
                version,
                Uploaded::Replaced {
                    id,
                    name: name.clone(),
                },
            )
        }
        None => {
            let id = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO documents (id, tenant_id, name, kind, size_bytes, sha256, content, tags, uploaded_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(tenant)
            .bind(&name)
            .bind(kind.as_str())
            .bind(size)
            .bind(&hash[..])
            .bind(&file.bytes)
            .bind(&tags)
            .bind(actor.user)
            .execute(&mut *tx)
            .await?;
            (
                id,
                1,
                Uploaded::Added {
                    id,
                    name: name.clone(),
                },
            )
        }
    };
    ingest::enqueue(&mut tx, tenant, id, version).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Queues a failed document again (admins only).
pub async fn retry(db: &Db, tenant: TenantId, actor: Actor, id: Uuid) -> Result<()> {
    actor.require_admin("manage the clinic's documents")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let version: Option<i32> = sqlx::query_scalar(
        "UPDATE documents SET status = 'queued', error = NULL, updated_at = now()
          WHERE id = $1 AND status = 'failed' RETURNING version",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(version) = version else {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM documents WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(match exists {
            Some(_) => Error::Conflict("Only a document that failed can be retried.".into()),
            None => Error::NotFound,
        });
    };
    ingest::enqueue(&mut tx, tenant, id, version).await?;
    tx.commit().await?;
    Ok(())
}

/// Changes a document's tags (admins only).
pub async fn set_tags(
    db: &Db,
    tenant: TenantId,
    actor: Actor,
    id: Uuid,
    tags: Vec<String>,
) -> Result<()> {
    actor.require_admin("manage the clinic's documents")?;
    let update = sqlx::query("UPDATE documents SET tags = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(tags);
    db.tenant_change_one(tenant, update).await
}

/// Deletes a document with its passages and vectors (admins only). In Postgres all of it goes
/// in one statement; vectors held elsewhere are deleted right after.
pub async fn delete(
    db: &Db,
    changes: &Changes,
    index: &impl vectors::VectorIndex,
    tenant: TenantId,
    actor: Actor,
    id: Uuid,
) -> Result<()> {
    actor.require_admin("manage the clinic's documents")?;
    db.tenant_change_one(
        tenant,
        sqlx::query("DELETE FROM documents WHERE id = $1").bind(id),
    )
    .await?;
    changes.announce(Change::Tenant(tenant)).await;
    index.delete_document(tenant, id).await
}

/// Chooses the embedding model the clinic's documents are indexed with (admins only); empty
/// goes back to the default (OpenAI's `text-embedding-3-small` when the clinic can call
/// OpenAI). A clinic whose only provider is an OpenAI-compatible endpoint names the model it
/// serves (`nomic-embed-text` on Ollama, say). Every document is queued again, so its vectors
/// follow the model; returns how many.
pub async fn set_embedding_model(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    model: &str,
) -> Result<usize> {
    actor.require_admin("choose the embedding model")?;
    let model = model.trim();
    if model.chars().count() > 200 || model.contains(char::is_whitespace) {
        return Err(Error::invalid(format!("{model:?} is not a model name.")));
    }
    if model.starts_with(crate::llm::AGENT_MODEL_PREFIX) {
        return Err(Error::invalid("Name an embedding model, not an agent."));
    }
    let model = (!model.is_empty()).then_some(model);
    let mut tx = db.begin_tenant(tenant).await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT embedding_model FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
    if current.as_deref() == model {
        return Ok(0);
    }
    sqlx::query("UPDATE tenants SET embedding_model = $2 WHERE id = $1")
        .bind(tenant)
        .bind(model)
        .execute(&mut *tx)
        .await?;
    let docs: Vec<(Uuid, i32)> = sqlx::query_as(
        "UPDATE documents SET status = 'queued', error = NULL, updated_at = now() RETURNING id, version",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, version) in &docs {
        ingest::enqueue(&mut tx, tenant, *id, *version).await?;
    }
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    Ok(docs.len())
}

/// The embedding models of the clinic's searchable documents (`None` for those found by
/// their words only); empty when no document is searchable yet.
pub async fn searchable(db: &Db, tenant: TenantId) -> Result<Vec<Option<String>>> {
    let rows: Vec<(Option<String>,)> = db
        .tenant_all(
            tenant,
            sqlx::query_as("SELECT DISTINCT embedding_model FROM documents WHERE chunk_count > 0"),
        )
        .await?;
    Ok(rows.into_iter().map(|(m,)| m).collect())
}

/// Every tag in use in the clinic, for choosing an agent's collections.
pub async fn tags(db: &Db, tenant: TenantId) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = db
        .tenant_all(
            tenant,
            sqlx::query_as("SELECT DISTINCT unnest(tags) AS t FROM documents ORDER BY t"),
        )
        .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}
