//! Admin -> Knowledge: the clinic's documents, their ingestion, and the storage they take.
//! Files are uploaded by a plain multipart form (`POST /knowledge/upload`, in the server), which
//! the page enhances with a progress bar per file; these functions list, retry, re-tag and
//! delete.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_types::{DocumentKind, DocumentStatus};

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// Where the upload form posts.
pub const UPLOAD_URL: &str = "/knowledge/upload";

/// The file types the upload accepts (for the file picker).
pub const ACCEPT: &str = ".txt,.md,.markdown,.html,.htm,.pdf,.docx,text/plain,text/markdown,text/html,application/pdf,application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// A document as the page lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRow {
    pub id: String,
    pub name: String,
    pub kind: DocumentKind,
    pub size: String,
    pub tags: String,
    pub status: DocumentStatus,
    pub error: Option<String>,
    pub chunks: i32,
    pub pages: Option<i32>,
    /// The embedding model of its vectors; `None`: found by its words only.
    pub embedding_model: Option<String>,
    pub uploaded_by: String,
    pub uploaded: String,
}

/// The Knowledge page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgePage {
    pub documents: Vec<DocumentRow>,
    /// "1.2 MB of the Starter plan's 500 MB", or "... (no limit on the Enterprise plan)".
    pub storage: String,
    /// Used, of the plan's storage, in percent (`None`: no limit).
    pub storage_percent: Option<u8>,
    /// The largest upload: "20 MB".
    pub max_upload: String,
    /// The model passages are embedded with; `None`: lexical search only.
    pub embedding_model: Option<String>,
    /// The model the clinic chose ("" for the default).
    pub chosen_model: String,
    /// The default: OpenAI's model.
    pub default_model: String,
}

impl KnowledgePage {
    /// A document is still being read or embedded.
    pub fn in_progress(&self) -> bool {
        self.documents.iter().any(|d| d.status.in_progress())
    }
}

/// "1.2 MB of the Starter plan's 500 MB".
#[cfg(feature = "ssr")]
pub(crate) fn storage_line(
    s: tessera_core::knowledge::Storage,
    plan: &str,
) -> (String, Option<u8>) {
    use tessera_core::format::bytes;
    match s.limit_bytes {
        Some(limit) => (
            format!(
                "{} of the {plan} plan's {}",
                bytes(s.used_bytes),
                bytes(limit)
            ),
            Some(((s.used_bytes.saturating_mul(100)) / limit.max(1)).clamp(0, 100) as u8),
        ),
        None => (
            format!(
                "{} (the {plan} plan has no storage limit)",
                bytes(s.used_bytes)
            ),
            None,
        ),
    }
}

#[server(endpoint = "knowledge")]
pub async fn get_knowledge_page() -> Result<KnowledgePage, AppError> {
    use tessera_core::format::{bytes, date};
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let documents = tessera_core::knowledge::list(&services.db, v.tenant.id).await?;
    let storage = tessera_core::knowledge::storage(&services.db, v.tenant.id).await?;
    let limits = services.gateway.limits(v.tenant.id).await?;
    let (storage, storage_percent) = storage_line(storage, &limits.plan_name);
    let limits = &limits;
    let embedding_model = services.gateway.embedding_model(v.tenant.id).await?;
    Ok(KnowledgePage {
        documents: documents
            .into_iter()
            .map(|d| DocumentRow {
                id: d.id.to_string(),
                name: d.name,
                kind: d.kind,
                size: bytes(d.size_bytes),
                tags: d.tags.join(", "),
                status: d.status,
                error: d.error,
                chunks: d.chunk_count,
                pages: d.pages,
                embedding_model: d.embedding_model,
                uploaded_by: d.uploaded_by.unwrap_or_else(|| "a former member".into()),
                uploaded: date(d.uploaded_at),
            })
            .collect(),
        storage,
        storage_percent,
        max_upload: bytes(services.config.max_upload_bytes()),
        embedding_model,
        chosen_model: limits.embedding_model.clone().unwrap_or_default(),
        default_model: tessera_core::gateway::DEFAULT_EMBEDDING_MODEL.into(),
    })
}

/// Deletes a document, its passages and its vectors.
#[server(endpoint = "delete_document")]
pub async fn delete_document(id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::knowledge::delete(
        &services.db,
        &services.changes,
        &services.gateway.vectors,
        v.tenant.id,
        v.actor(),
        id,
    )
    .await?;
    Ok(())
}

/// Queues a failed document again.
#[server(endpoint = "retry_document")]
pub async fn retry_document(id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::knowledge::retry(&services.db, v.tenant.id, v.actor(), id).await?;
    Ok(())
}

/// Changes a document's collections (comma-separated tags).
#[server(endpoint = "tag_document")]
pub async fn tag_document(id: String, tags: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    let tags = tessera_core::knowledge::parse_tags(&tags)?;
    tessera_core::knowledge::set_tags(&services.db, v.tenant.id, v.actor(), id, tags).await?;
    Ok(())
}

/// Chooses the embedding model (empty: the default); every document is indexed again.
#[server(endpoint = "set_embedding_model")]
pub async fn set_embedding_model(model: String) -> Result<usize, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    Ok(tessera_core::knowledge::set_embedding_model(
        &services.db,
        &services.changes,
        v.tenant.id,
        v.actor(),
        &model,
    )
    .await?)
}
