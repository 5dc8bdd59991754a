//! Vectors in Qdrant, for installations that scale out (`QDRANT_URL`). One collection per
//! embedding model and vector length, shared by the clinics, partitioned by a `tenant_id`
//! keyword payload index marked `is_tenant` (Qdrant then keeps each clinic's points together);
//! every search, and every deletion, is filtered by the clinic. Enterprise clinics get a
//! collection of their own for each model ([`QdrantVectors::relocate`] moves a clinic's points
//! there when it is upgraded, and back when it is downgraded; still filtered by clinic).
//! Collections are created on first use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, KeywordIndexParamsBuilder, PointStruct, QueryPointsBuilder,
    ScrollPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::Qdrant;
use uuid::Uuid;

use super::vectors::{Hit, Point, VectorIndex};
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::{Error, Result};

/// How long a clinic's placement (shared or dedicated) is trusted before it is read again.
const PLACEMENT_TTL: Duration = Duration::from_secs(30);
/// What ends the name of a clinic's own collection: `_clinic_<id>`.
const DEDICATED: &str = "_clinic_";

/// A Qdrant server's collections for Tessera (their names start with `prefix`).
#[derive(Clone)]
pub struct QdrantVectors {
    client: Arc<Qdrant>,
    prefix: String,
    /// Collections known to exist.
    ready: Arc<Mutex<HashSet<String>>>,
    /// Where each clinic's points go, read from its plan (without a database: shared).
    placement: Option<Placement>,
}

#[derive(Clone)]
struct Placement {
    db: Db,
    /// Clinic -> (has a collection of its own, when that was read).
    known: Arc<Mutex<HashMap<TenantId, (bool, Instant)>>>,
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

/// The vector length of a collection, from its name (`..._<dims>`, before any clinic suffix).
fn dims_of(name: &str) -> Result<usize> {
    let base = name.split(DEDICATED).next().unwrap_or(name);
    base.rsplit('_')
        .next()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::Internal(format!("the collection {name} names no vector length")))
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
            placement: None,
        })
    }

    /// Gives Enterprise clinics collections of their own, reading each clinic's plan from
    /// `db` (cached briefly).
    pub fn with_dedicated(mut self, db: Db) -> Self {
        self.placement = Some(Placement {
            db,
            known: Arc::default(),
        });
        self
    }

    /// The shared collection for `model`'s vectors of `dims` numbers.
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

    /// A clinic's own collection, next to the shared one named `shared`.
    fn own(shared: &str, tenant: TenantId) -> String {
        format!("{shared}{DEDICATED}{}", tenant.0.simple())
    }

    /// Whether the clinic's points go to a collection of its own (its plan is Enterprise).
    pub async fn dedicated(&self, tenant: TenantId) -> Result<bool> {
        let Some(p) = &self.placement else {
            return Ok(false);
        };
        if let Some((own, at)) = p.known.lock().ok().and_then(|k| k.get(&tenant).copied()) {
            if at.elapsed() < PLACEMENT_TTL {
                return Ok(own);
            }
        }
        let own: Option<(bool,)> =
            p.db.tenant_optional(
                tenant,
                sqlx::query_as("SELECT plan = 'enterprise' FROM tenants WHERE id = $1")
                    .bind(tenant),
            )
            .await?;
        let own = own.is_some_and(|(o,)| o);
        if let Ok(mut k) = p.known.lock() {
            k.insert(tenant, (own, Instant::now()));
        }
        Ok(own)
    }

    /// Where the clinic's vectors of `model` and `dims` go.
    async fn target(&self, tenant: TenantId, model: &str, dims: usize) -> Result<String> {
        let shared = self.collection(model, dims);
        Ok(if self.dedicated(tenant).await? {
            Self::own(&shared, tenant)
        } else {
            shared
        })
    }

    /// Moves the clinic's points to where its plan puts them: into collections of its own
    /// when it is on Enterprise, back into the shared ones otherwise. Safe to run any number of
    /// times, on any replica; returns how many points moved.
    pub async fn relocate(&self, tenant: TenantId) -> Result<usize> {
        if let Some(p) = &self.placement {
            if let Ok(mut k) = p.known.lock() {
                k.remove(&tenant);
            }
        }
        let dedicated = self.dedicated(tenant).await?;
        let own_suffix = format!("{DEDICATED}{}", tenant.0.simple());
        let mut moved = 0;
        for name in self.collections().await? {
            let (shared, is_own) = match name.strip_suffix(&own_suffix) {
                Some(shared) => (shared.to_string(), true),
                // Another clinic's own collection.
                None if name.contains(DEDICATED) => continue,
                None => (name.clone(), false),
            };
            if is_own == dedicated {
                continue;
            }
            let target = if dedicated {
                Self::own(&shared, tenant)
            } else {
                shared
            };
            moved += self.copy_points(&name, &target, tenant).await?;
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&name)
                        .points(Filter::must([tenant_filter(tenant)]))
                        .wait(true),
                )
                .await
                .map_err(failed)?;
        }
        Ok(moved)
    }

    /// Copies the clinic's points from one collection to another, a page at a time.
    async fn copy_points(&self, from: &str, to: &str, tenant: TenantId) -> Result<usize> {
        let mut copied = 0;
        let mut offset = None;
        loop {
            let mut page = ScrollPointsBuilder::new(from)
                .filter(Filter::must([tenant_filter(tenant)]))
                .limit(256)
                .with_payload(true)
                .with_vectors(true);
            if let Some(o) = offset.take() {
                page = page.offset(o);
            }
            let page = self.client.scroll(page).await.map_err(failed)?;
            let points: Vec<PointStruct> = page
                .result
                .into_iter()
                .filter_map(|p| {
                    let id = p.id?;
                    let Vector::Dense(v) = p.vectors?.get_vector()? else {
                        return None;
                    };
                    Some(PointStruct::new(id, v.data, p.payload))
                })
                .collect();
            if !points.is_empty() {
                self.ensure(to, dims_of(from)?).await?;
                copied += points.len();
                self.client
                    .upsert_points(UpsertPointsBuilder::new(to, points).wait(true))
                    .await
                    .map_err(failed)?;
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(copied),
            }
        }
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
    pub async fn collections(&self) -> Result<Vec<String>> {
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
        let name = self.target(tenant, model, dims).await?;
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
        let name = self.target(tenant, model, vector.len()).await?;
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
