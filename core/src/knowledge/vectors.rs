//! Where dense vectors live. One trait, [`VectorIndex`], with two implementations: Postgres
//! ([`PgVectors`], the single-node default: vectors next to their chunks, searched exactly in
//! process) and Qdrant (scale-out, when `QDRANT_URL` is set). Every call takes a [`TenantId`];
//! there is no call that reaches across clinics. One conformance suite
//! (`core/tests/vector_index.rs`) runs against both.
//!
//! Vectors are keyed by chunk. Ingestion writes a new version's vectors before its chunks
//! appear and deletes the old version's after, and a search's hits are joined to the chunks
//! in Postgres, so a vector whose chunk is gone (or not there yet) is never shown.

use std::future::Future;

use uuid::Uuid;

use crate::db::Db;
use crate::tenancy::TenantId;
use crate::Result;

/// A vector to store: a chunk's embedding under `model`.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub chunk: Uuid,
    pub document: Uuid,
    pub vector: Vec<f32>,
}

/// A search hit: a chunk and its cosine similarity to the question (-1 to 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub chunk: Uuid,
    pub score: f32,
}

/// A store of clinics' vectors. Every operation is scoped to one clinic.
pub trait VectorIndex: Send + Sync {
    /// Stores (or replaces) points of `tenant`'s documents, embedded with `model`.
    fn upsert(
        &self,
        tenant: TenantId,
        model: &str,
        points: &[Point],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes the given chunks' vectors.
    fn delete_chunks(
        &self,
        tenant: TenantId,
        chunks: &[Uuid],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes every vector of a document.
    fn delete_document(
        &self,
        tenant: TenantId,
        document: Uuid,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The `limit` chunks nearest to `vector` among `tenant`'s vectors of `model`, restricted
    /// to `documents` when given, best first.
    fn search(
        &self,
        tenant: TenantId,
        model: &str,
        vector: &[f32],
        limit: usize,
        documents: Option<&[Uuid]>,
    ) -> impl Future<Output = Result<Vec<Hit>>> + Send;
}

/// Little-endian f32s, as `chunk_vectors.embedding` holds them.
pub fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Cosine similarity; 0 when either vector is all zeros or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Vectors in Postgres (`chunk_vectors`, isolated by row-level security like every table),
/// searched exactly: the clinic's vectors of the model are read and scored here.
#[derive(Clone, Debug)]
pub struct PgVectors {
    db: Db,
}

impl PgVectors {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl VectorIndex for PgVectors {
    async fn upsert(&self, tenant: TenantId, model: &str, points: &[Point]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_tenant(tenant).await?;
        let ids: Vec<Uuid> = points.iter().map(|p| p.chunk).collect();
        let docs: Vec<Uuid> = points.iter().map(|p| p.document).collect();
        let vectors: Vec<Vec<u8>> = points.iter().map(|p| to_bytes(&p.vector)).collect();
        sqlx::query(
            "INSERT INTO chunk_vectors (chunk_id, tenant_id, document_id, model, embedding)
             SELECT c, $2, d, $3, e FROM unnest($1::uuid[], $4::uuid[], $5::bytea[]) AS t(c, d, e)
             ON CONFLICT (chunk_id) DO UPDATE SET model = EXCLUDED.model, embedding = EXCLUDED.embedding
             WHERE chunk_vectors.tenant_id = EXCLUDED.tenant_id",
        )
        .bind(&ids)
        .bind(tenant)
        .bind(model)
        .bind(&docs)
        .bind(&vectors)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_chunks(&self, tenant: TenantId, chunks: &[Uuid]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_tenant(tenant).await?;
        sqlx::query("DELETE FROM chunk_vectors WHERE chunk_id = ANY($1)")
            .bind(chunks)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_document(&self, tenant: TenantId, document: Uuid) -> Result<()> {
        let mut tx = self.db.begin_tenant(tenant).await?;
        sqlx::query("DELETE FROM chunk_vectors WHERE document_id = $1")
            .bind(document)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn search(
        &self,
        tenant: TenantId,
        model: &str,
        vector: &[f32],
        limit: usize,
        documents: Option<&[Uuid]>,
    ) -> Result<Vec<Hit>> {
        let mut tx = self.db.begin_tenant(tenant).await?;
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT chunk_id, embedding FROM chunk_vectors
              WHERE model = $1 AND ($2::uuid[] IS NULL OR document_id = ANY($2))",
        )
        .bind(model)
        .bind(documents)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let vector = vector.to_vec();
        let hits = tokio::task::spawn_blocking(move || {
            let mut hits: Vec<Hit> = rows
                .iter()
                .map(|(chunk, bytes)| Hit {
                    chunk: *chunk,
                    score: cosine(&vector, &from_bytes(bytes)),
                })
                .collect();
            best_first(&mut hits);
            hits.truncate(limit);
            hits
        })
        .await
        .map_err(|e| crate::Error::Internal(e.to_string()))?;
        Ok(hits)
    }
}

/// The vector store an installation uses: Postgres unless Qdrant is configured.
#[derive(Clone, Debug)]
pub enum Vectors {
    Postgres(PgVectors),
    Qdrant(super::qdrant::QdrantVectors),
}

impl Vectors {
    /// For logs and the health page: "postgres" or "qdrant".
    pub fn backend(&self) -> &'static str {
        match self {
            Vectors::Postgres(_) => "postgres",
            Vectors::Qdrant(_) => "qdrant",
        }
    }
}

impl VectorIndex for Vectors {
    async fn upsert(&self, tenant: TenantId, model: &str, points: &[Point]) -> Result<()> {
        match self {
            Vectors::Postgres(v) => v.upsert(tenant, model, points).await,
            Vectors::Qdrant(v) => v.upsert(tenant, model, points).await,
        }
    }
    async fn delete_chunks(&self, tenant: TenantId, chunks: &[Uuid]) -> Result<()> {
        match self {
            Vectors::Postgres(v) => v.delete_chunks(tenant, chunks).await,
            Vectors::Qdrant(v) => v.delete_chunks(tenant, chunks).await,
        }
    }
    async fn delete_document(&self, tenant: TenantId, document: Uuid) -> Result<()> {
        match self {
            Vectors::Postgres(v) => v.delete_document(tenant, document).await,
            Vectors::Qdrant(v) => v.delete_document(tenant, document).await,
        }
    }
    async fn search(
        &self,
        tenant: TenantId,
        model: &str,
        vector: &[f32],
        limit: usize,
        documents: Option<&[Uuid]>,
    ) -> Result<Vec<Hit>> {
        match self {
            Vectors::Postgres(v) => v.search(tenant, model, vector, limit, documents).await,
            Vectors::Qdrant(v) => v.search(tenant, model, vector, limit, documents).await,
        }
    }
}

/// Orders hits best first, ties by chunk id (so results are stable).
pub fn best_first(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk.cmp(&b.chunk)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes() {
        let v = vec![0.5, -1.25, 3.0e-8, f32::MAX];
        assert_eq!(from_bytes(&to_bytes(&v)), v);
    }

    #[test]
    fn cosine_is_bounded_and_safe() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }
}
