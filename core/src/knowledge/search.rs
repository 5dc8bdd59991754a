//! Retrieval: lexical search (Postgres full-text over the clinic's chunks, always on) and dense
//! search (the clinic's vectors, when it has an embedding provider), fused by reciprocal rank
//! fusion. Every query runs in the clinic's own scope (row-level security), and dense hits are
//! joined to the clinic's chunks before anything is shown.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::vectors::{Hit, VectorIndex};
use crate::db::Db;
use crate::tenancy::TenantId;
use crate::Result;

/// The constant of reciprocal rank fusion (60, as in Cormack et al. and most search engines).
pub const RRF_K: f32 = 60.0;

/// How an agent retrieves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Passages to retrieve at most.
    pub top_k: usize,
    /// The lowest relevance (0 to 100) a passage needs, in the search that found it.
    pub min_score: i32,
    /// Only documents with one of these tags (empty: every document).
    pub tags: Vec<String>,
}

/// A retrieved passage, as a reply cites it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub chunk: Uuid,
    pub document: Uuid,
    /// The document's file name.
    pub name: String,
    pub heading: String,
    pub text: String,
    /// Its tokens (for the context budget).
    pub tokens: i32,
    /// The fused score.
    pub score: f32,
}

/// The chunks whose text matches any word of `query`, best first, with a relevance in 0..1
/// (`ts_rank_cd` normalised as rank / (rank + 1)).
pub async fn lexical(
    db: &Db,
    tenant: TenantId,
    query: &str,
    limit: usize,
    documents: Option<&[Uuid]>,
) -> Result<Vec<Hit>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let rows: Vec<(Uuid, f32)> = sqlx::query_as(
        "WITH q AS (SELECT knowledge_any(plainto_tsquery('simple', l)) AS q
                      FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS l)
         SELECT c.id, ts_rank_cd(c.search, q.q, 32)::float4 AS score
           FROM document_chunks c, q
          WHERE q.q IS NOT NULL AND c.search @@ q.q
            AND ($3::uuid[] IS NULL OR c.document_id = ANY($3))
          ORDER BY score DESC, c.id
          LIMIT $2",
    )
    .bind(query)
    .bind(limit as i64)
    .bind(documents)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(chunk, score)| Hit { chunk, score })
        .collect())
}

/// Reciprocal rank fusion of ranked lists: each chunk scores the sum of 1 / (k + rank) over
/// the lists it is in (rank from 1). Best first; ties by chunk id.
pub fn fuse(lists: &[Vec<Hit>]) -> Vec<Hit> {
    let mut scores: HashMap<Uuid, f32> = HashMap::new();
    for list in lists {
        for (i, hit) in list.iter().enumerate() {
            *scores.entry(hit.chunk).or_default() += 1.0 / (RRF_K + (i + 1) as f32);
        }
    }
    let mut fused: Vec<Hit> = scores
        .into_iter()
        .map(|(chunk, score)| Hit { chunk, score })
        .collect();
    super::vectors::best_first(&mut fused);
    fused
}

/// The documents an agent with `tags` may draw on (`None`: all of them).
pub async fn documents_tagged(
    db: &Db,
    tenant: TenantId,
    tags: &[String],
) -> Result<Option<Vec<Uuid>>> {
    if tags.is_empty() {
        return Ok(None);
    }
    let ids: Vec<(Uuid,)> = db
        .tenant_all(
            tenant,
            sqlx::query_as("SELECT id FROM documents WHERE tags && $1").bind(tags),
        )
        .await?;
    Ok(Some(ids.into_iter().map(|(id,)| id).collect()))
}

/// The passages for `query`: lexical hits, and dense hits when `dense` brings the question's
/// vector and its model; each list cut at the score floor, fused, and the best `top_k` read
/// from the clinic's chunks.
pub async fn retrieve(
    db: &Db,
    index: &impl VectorIndex,
    tenant: TenantId,
    query: &str,
    dense: Option<(&str, &[f32])>,
    settings: &Settings,
) -> Result<Vec<Passage>> {
    let documents = documents_tagged(db, tenant, &settings.tags).await?;
    if documents.as_ref().is_some_and(|d| d.is_empty()) {
        return Ok(Vec::new());
    }
    let candidates = (settings.top_k * 4).max(20);
    let floor = settings.min_score as f32 / 100.0;
    let mut lists = Vec::new();
    let mut lex = lexical(db, tenant, query, candidates, documents.as_deref()).await?;
    lex.retain(|h| h.score >= floor);
    lists.push(lex);
    if let Some((model, vector)) = dense {
        // The vector store out of reach leaves lexical results rather than no answer.
        match index
            .search(tenant, model, vector, candidates, documents.as_deref())
            .await
        {
            Ok(mut hits) => {
                hits.retain(|h| h.score > 0.0 && h.score >= floor);
                lists.push(hits);
            }
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "dense search failed; lexical results only")
            }
        }
    }
    let fused = fuse(&lists);
    passages(db, tenant, &fused, settings.top_k).await
}

/// The chunks of `hits` that exist in the clinic (a vector whose chunk is gone finds nothing),
/// in the hits' order, at most `limit`.
async fn passages(db: &Db, tenant: TenantId, hits: &[Hit], limit: usize) -> Result<Vec<Passage>> {
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = hits.iter().map(|h| h.chunk).collect();
    let rows: Vec<(Uuid, Uuid, String, String, String, i32)> = db
        .tenant_all(
            tenant,
            sqlx::query_as(
                "SELECT c.id, c.document_id, d.name, c.heading, c.content, c.tokens
                   FROM document_chunks c JOIN documents d ON d.id = c.document_id
                  WHERE c.id = ANY($1)",
            )
            .bind(&ids),
        )
        .await?;
    let mut by_id: HashMap<Uuid, _> = rows.into_iter().map(|r| (r.0, r)).collect();
    Ok(hits
        .iter()
        .filter_map(|h| {
            by_id
                .remove(&h.chunk)
                .map(|(chunk, document, name, heading, text, tokens)| Passage {
                    chunk,
                    document,
                    name,
                    heading,
                    text,
                    tokens,
                    score: h.score,
                })
        })
        .take(limit)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(n: u128, score: f32) -> Hit {
        Hit {
            chunk: Uuid::from_u128(n),
            score,
        }
    }

    #[test]
    fn fusion_rewards_agreement_between_lists() {
        // 2 is second in both lists; 1 and 3 are each first in one list only.
        let lexical = vec![hit(1, 0.9), hit(2, 0.8), hit(4, 0.1)];
        let dense = vec![hit(3, 0.99), hit(2, 0.98)];
        let fused = fuse(&[lexical, dense]);
        let order: Vec<u128> = fused.iter().map(|h| h.chunk.as_u128()).collect();
        assert_eq!(order, vec![2, 1, 3, 4]);
        assert!((fused[0].score - 2.0 / 62.0).abs() < 1e-6);
        assert!((fused[1].score - 1.0 / 61.0).abs() < 1e-6);
    }

    #[test]
    fn fusion_of_one_list_keeps_its_order() {
        let only = vec![hit(9, 0.5), hit(3, 0.4), hit(7, 0.3)];
        let order: Vec<u128> = fuse(&[only]).iter().map(|h| h.chunk.as_u128()).collect();
        assert_eq!(order, vec![9, 3, 7]);
        assert!(fuse(&[]).is_empty());
    }
}
