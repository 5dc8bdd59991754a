//! The conformance suite of the vector stores: every implementation of `VectorIndex` (Postgres,
//! and Qdrant when `QDRANT_URL` names a server) must keep clinics apart, delete and re-index
//! exactly, rank by similarity, filter by document and take concurrent writers.

mod common;

use common::{clinic, Clinic};
use sqlx::PgPool;
use tessera_core::knowledge::qdrant::QdrantVectors;
use tessera_core::knowledge::vectors::{PgVectors, Point, VectorIndex};
use tessera_core::knowledge::{self, Upload, Uploaded};
use tessera_core::{Db, TenantId};
use uuid::Uuid;

const MODEL: &str = "text-embedding-3-small";

async fn document(db: &Db, c: &Clinic, name: &str) -> Uuid {
    let upload = Upload {
        name: name.into(),
        bytes: format!("{name} of {}", c.tenant).into_bytes(),
        tags: Vec::new(),
    };
    match knowledge::upload(db, c.tenant, c.owner(), upload, 1_000_000)
        .await
        .unwrap()
    {
        Uploaded::Added { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

fn point(document: Uuid, vector: &[f32]) -> Point {
    Point {
        chunk: Uuid::new_v4(),
        document,
        vector: vector.to_vec(),
    }
}

async fn ids(
    index: &impl VectorIndex,
    tenant: TenantId,
    query: &[f32],
    documents: Option<&[Uuid]>,
) -> Vec<Uuid> {
    index
        .search(tenant, MODEL, query, 1_000, documents)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.chunk)
        .collect()
}

/// The suite, against one store.
async fn conformance<V: VectorIndex + Clone + 'static>(index: V, db: &Db) {
    let a = clinic(db, "Alpha").await;
    let b = clinic(db, "Beta").await;
    let (a1, a2) = (
        document(db, &a, "one.md").await,
        document(db, &a, "two.md").await,
    );
    let b1 = document(db, &b, "one.md").await;

    // Ranking: the nearest first, scores are cosine similarities.
    let exact = point(a1, &[1.0, 0.0, 0.0, 0.0]);
    let near = point(a1, &[0.9, 0.1, 0.0, 0.0]);
    let far = point(a2, &[0.0, 1.0, 0.0, 0.0]);
    index
        .upsert(a.tenant, MODEL, &[far.clone(), exact.clone(), near.clone()])
        .await
        .unwrap();
    let q = [1.0, 0.0, 0.0, 0.0];
    let hits = index.search(a.tenant, MODEL, &q, 10, None).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.chunk).collect::<Vec<_>>(),
        vec![exact.chunk, near.chunk, far.chunk]
    );
    assert!(
        (hits[0].score - 1.0).abs() < 1e-4 && hits[2].score.abs() < 1e-4,
        "{hits:?}"
    );
    assert_eq!(
        index
            .search(a.tenant, MODEL, &q, 2, None)
            .await
            .unwrap()
            .len(),
        2,
        "limit"
    );

    // Isolation: the other clinic's identical vector is never found, nor deleted from here.
    let theirs = point(b1, &[1.0, 0.0, 0.0, 0.0]);
    index
        .upsert(b.tenant, MODEL, std::slice::from_ref(&theirs))
        .await
        .unwrap();
    assert_eq!(ids(&index, b.tenant, &q, None).await, vec![theirs.chunk]);
    assert!(!ids(&index, a.tenant, &q, None)
        .await
        .contains(&theirs.chunk));
    index
        .delete_chunks(a.tenant, &[theirs.chunk])
        .await
        .unwrap();
    index.delete_document(a.tenant, b1).await.unwrap();
    assert_eq!(
        ids(&index, b.tenant, &q, None).await,
        vec![theirs.chunk],
        "another clinic's delete changes nothing"
    );
    // A point named with another clinic's document, or its chunk id, stays in its own clinic.
    assert!(ids(&index, b.tenant, &q, Some(&[a1])).await.is_empty());

    // Documents filter.
    assert_eq!(
        ids(&index, a.tenant, &q, Some(&[a2])).await,
        vec![far.chunk]
    );
    assert!(ids(&index, a.tenant, &q, Some(&[])).await.is_empty());

    // Another model's vectors are another index.
    assert!(index
        .search(a.tenant, "other-model", &q, 10, None)
        .await
        .unwrap()
        .is_empty());

    // Delete and re-index.
    index.delete_chunks(a.tenant, &[exact.chunk]).await.unwrap();
    assert_eq!(
        ids(&index, a.tenant, &q, None).await,
        vec![near.chunk, far.chunk]
    );
    let moved = Point {
        vector: vec![0.0, 0.0, 1.0, 0.0],
        ..near.clone()
    };
    index.upsert(a.tenant, MODEL, &[moved]).await.unwrap();
    assert_eq!(
        ids(&index, a.tenant, &q, None).await.len(),
        2,
        "re-indexed in place"
    );
    let hits = index
        .search(a.tenant, MODEL, &[0.0, 0.0, 1.0, 0.0], 1, None)
        .await
        .unwrap();
    assert_eq!(hits[0].chunk, near.chunk);
    index.delete_document(a.tenant, a1).await.unwrap();
    assert_eq!(ids(&index, a.tenant, &q, None).await, vec![far.chunk]);

    // Concurrent writers: eight at once, 25 points each, all kept.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let index = index.clone();
            let tenant = a.tenant;
            tokio::spawn(async move {
                let points: Vec<Point> = (0..25)
                    .map(|i| point(a2, &[1.0, w as f32, i as f32, 1.0]))
                    .collect();
                index.upsert(tenant, MODEL, &points).await.unwrap();
                points.into_iter().map(|p| p.chunk).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let found = ids(&index, a.tenant, &q, None).await;
    assert_eq!(found.len(), 201);
    assert!(written.iter().all(|c| found.contains(c)));
    index.delete_document(a.tenant, a2).await.unwrap();
    assert!(ids(&index, a.tenant, &q, None).await.is_empty());
    assert_eq!(ids(&index, b.tenant, &q, None).await, vec![theirs.chunk]);
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn postgres_vectors_conform(pool: PgPool) {
    let db = common::app_db(&pool).await;
    conformance(PgVectors::new(db.clone()), &db).await;
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn qdrant_vectors_conform(pool: PgPool) {
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED: the Qdrant run of the vector store suite (QDRANT_URL is not set)");
        return;
    };
    let db = common::app_db(&pool).await;
    // Collections of their own, so runs never meet.
    let prefix = format!("test_{}_", Uuid::new_v4().simple());
    let index = QdrantVectors::new(&url, None, &prefix).unwrap();
    conformance(index.clone(), &db).await;
    index.drop_collections().await.unwrap();
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn enterprise_clinics_get_qdrant_collections_of_their_own(pool: PgPool) {
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED: the Qdrant placement test (QDRANT_URL is not set)");
        return;
    };
    let db = common::app_db(&pool).await;
    let prefix = format!("test_{}_", Uuid::new_v4().simple());
    let index = QdrantVectors::new(&url, None, &prefix)
        .unwrap()
        .with_dedicated(db.clone());
    let a = clinic(&db, "Alpha").await;
    let b = clinic(&db, "Beta").await;
    let (da, db_doc) = (
        document(&db, &a, "one.md").await,
        document(&db, &b, "one.md").await,
    );
    let q = [1.0, 0.0, 0.0, 0.0];
    let theirs: Vec<Point> = (0..300)
        .map(|i| point(da, &[1.0, i as f32, 0.0, 0.0]))
        .collect();
    index.upsert(a.tenant, MODEL, &theirs).await.unwrap();
    let other = point(db_doc, &[1.0, 0.0, 0.0, 0.0]);
    index
        .upsert(b.tenant, MODEL, std::slice::from_ref(&other))
        .await
        .unwrap();
    assert!(!index.dedicated(a.tenant).await.unwrap());
    assert_eq!(
        index.relocate(a.tenant).await.unwrap(),
        0,
        "a Starter clinic stays in the shared collection"
    );

    // An operator moves Alpha to Enterprise: its points move to a collection of its own.
    tessera_core::billing::set_plan(
        &pool,
        &common::CHANGES,
        &a.slug,
        tessera_core::PlanId::Enterprise,
    )
    .await
    .unwrap();
    assert_eq!(index.relocate(a.tenant).await.unwrap(), 300);
    assert!(index.dedicated(a.tenant).await.unwrap());
    assert_eq!(
        ids(&index, a.tenant, &q, None).await.len(),
        300,
        "all found where they now are"
    );
    assert_eq!(
        ids(&index, b.tenant, &q, None).await,
        vec![other.chunk],
        "Beta is untouched"
    );
    // New points go there too, and a second relocation moves nothing.
    index
        .upsert(a.tenant, MODEL, &[point(da, &[0.5, 0.5, 0.0, 0.0])])
        .await
        .unwrap();
    assert_eq!(index.relocate(a.tenant).await.unwrap(), 0);
    assert_eq!(ids(&index, a.tenant, &q, None).await.len(), 301);

    // Back to Professional: back into the shared collection.
    tessera_core::billing::set_plan(
        &pool,
        &common::CHANGES,
        &a.slug,
        tessera_core::PlanId::Professional,
    )
    .await
    .unwrap();
    assert_eq!(index.relocate(a.tenant).await.unwrap(), 301);
    assert_eq!(ids(&index, a.tenant, &q, None).await.len(), 301);
    assert_eq!(ids(&index, b.tenant, &q, None).await, vec![other.chunk]);
    index.delete_document(a.tenant, da).await.unwrap();
    assert!(ids(&index, a.tenant, &q, None).await.is_empty());
    index.drop_collections().await.unwrap();
}
