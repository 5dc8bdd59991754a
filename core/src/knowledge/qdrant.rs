//! Vectors in Qdrant, for installations that scale out (`QDRANT_URL`). One collection per
//! embedding model and vector length, shared by the clinics, partitioned by a `tenant_id`
//! keyword payload index marked `is_tenant` (Qdrant then keeps each clinic's points together);
//! every search, and every deletion, is filtered by the clinic. Collections are created on first
//! use.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, KeywordIndexParamsBuilder, PointStruct, QueryPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::Qdrant;
use uuid::Uuid;

use super::vectors::{Hit, Point, VectorIndex};
use crate::tenancy::TenantId;
use crate::{Error, Result};

/// A Qdrant server's collections for Tessera (their names start with `prefix`).
#[derive(Clone)]
pub struct QdrantVectors {
    client: Arc<Qdrant>,
    prefix: String,
    /// Collections known to exist.
    ready: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for QdrantVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantVectors")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn failed(e: qdrant_client::QdrantError) -> Error {
    Error::Unavailable(format!("The vector store (Qdrant) failed: {e}"))
}

fn tenant_filter(tenant: TenantId) -> Condition {
    Condition::matches("tenant_id", tenant.to_string())
}

impl QdrantVectors {
    /// A client for the Qdrant at `url` (its gRPC port, 6334 by default). Connects lazily.
    pub fn new(url: &str, api_key: Option<&str>, prefix: &str) -> Result<Self> {
        let mut builder = Qdrant::from_url(url).skip_compatibility_check();
        if let Some(key) = api_key {
            builder = builder.api_key(key.to_string());
        }
        let client = builder
            .build()
            .map_err(|e| Error::Internal(format!("QDRANT_URL: {e}")))?;
        Ok(Self {
            client: Arc::new(client),
            prefix: prefix.to_string(),
            ready: Arc::default(),
        })
    }

    /// The collection for `model`'s vectors of `dims` numbers.
    pub fn collection(&self, model: &str, dims: usize) -> String {
        let model: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}{model}_{dims}", self.prefix)
    }

    async fn ensure(&self, name: &str, dims: usize) -> Result<()> {
        if self.ready.lock().map(|r| r.contains(name)).unwrap_or(false) {
            return Ok(());
        }
        if !self.client.collection_exists(name).await.map_err(failed)? {
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(name)
                        .vectors_config(VectorParamsBuilder::new(dims as u64, Distance::Cosine)),
                )
                .await;
            // Another replica may have created it meanwhile.
            if let Err(e) = created {
                if !self.client.collection_exists(name).await.map_err(failed)? {
                    return Err(failed(e));
                }
            }
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(name, "tenant_id", FieldType::Keyword)
                        .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                        .wait(true),
                )
                .await
                .map_err(failed)?;
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(name, "document_id", FieldType::Keyword)
                        .wait(true),
                )
                .await
                .map_err(failed)?;
        }
        if let Ok(mut r) = self.ready.lock() {
            r.insert(name.to_string());
        }
        Ok(())
    }

    /// Drops every collection under this prefix (tests and benchmarks clean up with it).
    pub async fn drop_collections(&self) -> Result<()> {
        for name in self.collections().await? {
            self.client.delete_collection(&name).await.map_err(failed)?;
        }
        if let Ok(mut r) = self.ready.lock() {
            r.clear();
        }
        Ok(())
    }

    /// Tessera's collections on the server.
    async fn collections(&self) -> Result<Vec<String>> {
        let listed = self.client.list_collections().await.map_err(failed)?;
        Ok(listed
            .collections
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with(&self.prefix))
            .collect())
    }

    /// Deletes the points matching `filter` (always the clinic's) from every collection.
    async fn delete_where(&self, filter: Filter) -> Result<()> {
        for name in self.collections().await? {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&name)
                        .points(filter.clone())
                        .wait(true),
                )
                .await
                .map_err(failed)?;
        }
        Ok(())
    }
}

impl VectorIndex for QdrantVectors {
    async fn upsert(&self, tenant: TenantId, model: &str, points: &[Point]) -> Result<()> {
        let Some(dims) = points.first().map(|p| p.vector.len()) else {
            return Ok(());
        };
        if points.iter().any(|p| p.vector.len() != dims) {
            return Err(Error::Internal(
                "vectors of different lengths in one batch".into(),
            ));
        }
        let name = self.collection(model, dims);
        self.ensure(&name, dims).await?;
        let structs: Vec<PointStruct> = points
            .iter()
            .map(|p| {
                PointStruct::new(
                    p.chunk.to_string(),
                    p.vector.clone(),
                    [
                        ("tenant_id", tenant.to_string().into()),
                        ("document_id", p.document.to_string().into()),
                    ],
                )
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&name, structs).wait(true))
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn delete_chunks(&self, tenant: TenantId, chunks: &[Uuid]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = chunks.iter().map(Uuid::to_string).collect();
        self.delete_where(Filter::must([
            tenant_filter(tenant),
            Condition::has_id(ids),
        ]))
        .await
    }

    async fn delete_document(&self, tenant: TenantId, document: Uuid) -> Result<()> {
        self.delete_where(Filter::must([
            tenant_filter(tenant),
            Condition::matches("document_id", document.to_string()),
        ]))
        .await
    }

    async fn search(
        &self,
        tenant: TenantId,
        model: &str,
        vector: &[f32],
        limit: usize,
        documents: Option<&[Uuid]>,
    ) -> Result<Vec<Hit>> {
        let name = self.collection(model, vector.len());
        if !self
            .ready
            .lock()
            .map(|r| r.contains(&name))
            .unwrap_or(false)
            && !self.client.collection_exists(&name).await.map_err(failed)?
        {
            return Ok(Vec::new());
        }
        let mut conditions = vec![tenant_filter(tenant)];
        if let Some(docs) = documents {
            if docs.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = docs.iter().map(Uuid::to_string).collect();
            conditions.push(Condition::matches("document_id", ids));
        }
        let found = self
            .client
            .query(
                QueryPointsBuilder::new(&name)
                    .query(vector.to_vec())
                    .filter(Filter::must(conditions))
                    .limit(limit as u64),
            )
            .await
            .map_err(failed)?;
        Ok(found
            .result
            .into_iter()
            .filter_map(|p| {
                let id = match p.id?.point_id_options? {
                    PointIdOptions::Uuid(s) => Uuid::parse_str(&s).ok()?,
                    PointIdOptions::Num(_) => return None,
                };
                Some(Hit {
                    chunk: id,
                    score: p.score,
                })
            })
            .collect())
    }
}
