//! The ingestion queue and its worker.
//!
//! A job is a row of `ingestion_jobs`, one per document. A worker claims a due job with a lease
//! (`ingestion_claim`: `FOR UPDATE SKIP LOCKED`, so workers never wait on each other), reads
//! and splits the document, embeds its passages when the clinic has an embedding provider,
//! writes the vectors, and then, in one transaction that first checks it still holds the
//! lease, replaces the document's passages and deletes the job. A worker that dies anywhere
//! before that commit leaves the old passages as they were; its lease runs out and another
//! worker does the job again (passage ids follow from the document, version and position, so
//! vectors written twice are the same points). A file that cannot be read fails at once with
//! its reason; other failures (the embedding provider) are retried with backoff, and after
//! [`MAX_ATTEMPTS`] the document fails with the last reason.

use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::chunk::{chunk, Chunk};
use super::extract::{self, Kind};
use super::vectors::{Point, VectorIndex};
use crate::changes::{Change, Changes};
use crate::db::{Db, Tx};
use crate::llm::LlmError;
use crate::tenancy::TenantId;
use crate::{Error, Result};

/// Tries a job gets before its document fails.
pub const MAX_ATTEMPTS: i32 = 5;
/// Passages per embedding call.
const EMBED_BATCH: usize = 64;
/// The longest a file may take to read and split.
const EXTRACT_TIMEOUT: Duration = Duration::from_secs(120);

/// Embeddings for a clinic's passages and questions (the gateway, metered like chat).
pub trait Embedder: Send + Sync {
    /// The model the clinic's passages are embedded with; `None` when it has no embedding
    /// provider (retrieval is then lexical only).
    fn embedding_model(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
    /// One vector per input, in order.
    fn embed(
        &self,
        tenant: TenantId,
        model: &str,
        inputs: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Vec<f32>>, LlmError>> + Send;
}

/// Queues (or re-queues) a document's ingestion, inside the transaction that stored it. A job
/// already there is reset to the new version, and its lease dropped: a worker still busy with
/// the older version can no longer finish it.
pub async fn enqueue(tx: &mut Tx, tenant: TenantId, document: Uuid, version: i32) -> Result<()> {
    sqlx::query(
        "INSERT INTO ingestion_jobs (id, tenant_id, document_id, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (document_id) DO UPDATE
            SET version = EXCLUDED.version, attempts = 0, run_after = now(), lease = NULL,
                leased_until = NULL, last_error = NULL",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(document)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The id of a passage: fixed by its document, version and position.
pub fn chunk_id(document: Uuid, version: i32, ordinal: usize) -> Uuid {
    let digest = Sha256::new()
        .chain_update(document.as_bytes())
        .chain_update(version.to_le_bytes())
        .chain_update((ordinal as u64).to_le_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// How jobs are run.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// How long a claimed job is a worker's before another may take it (extended while it
    /// works).
    pub lease: Duration,
    /// How long an idle worker waits before looking for jobs again.
    pub poll: Duration,
    /// The first retry's delay; each further one doubles it.
    pub backoff: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            backoff: Duration::from_secs(5),
        }
    }
}

/// An ingestion worker. Any number may run, in any number of processes.
pub struct Worker<E, V> {
    db: Db,
    embedder: E,
    index: V,
    options: WorkerOptions,
    /// Told when a clinic's documents change (so caches of what is searchable are dropped).
    changes: Option<Changes>,
}

/// A job as claimed.
struct Claimed {
    job: Uuid,
    lease: Uuid,
    tenant: TenantId,
    document: Uuid,
    version: i32,
    attempts: i32,
    kind: Kind,
    content: Vec<u8>,
}

/// Why a job did not finish.
enum Failure {
    /// The file cannot be read: no retry will help.
    Permanent(String),
    /// Worth another try (the embedding provider failed, say).
    Transient(String),
    /// The lease was lost (a newer version was uploaded, or the lease ran out): someone else
    /// has the job now.
    Superseded,
    Db(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Db(e)
    }
}

impl<E: Embedder, V: VectorIndex> Worker<E, V> {
    pub fn new(db: Db, embedder: E, index: V, options: WorkerOptions) -> Self {
        Self {
            db,
            embedder,
            index,
            options,
            changes: None,
        }
    }

    /// Announces each finished document as a change of its clinic.
    pub fn announcing(mut self, changes: Changes) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Works until the process ends: a job at a time, waiting `poll` when there is none.
    pub async fn run(self, stop: crate::shutdown::Shutdown) {
        // A job in hand is finished before the signal is looked at again: stopping takes no
        // new job, and leaves none half done.
        while !stop.is_triggered() {
            match self.run_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) if e.is_outage() => {
                    tracing::warn!(error = %e, "ingestion worker waiting for the database")
                }
                Err(e) => tracing::error!(error = ?e, "ingestion worker"),
            }
            if stop.sleep(self.options.poll).await {
                break;
            }
        }
    }

    /// Claims one due job and does it; `false` when there was none.
    pub async fn run_once(&self) -> Result<bool> {
        let Some(claimed) = self.claim().await? else {
            return Ok(false);
        };
        if claimed.attempts > MAX_ATTEMPTS {
            // It has been claimed this often without finishing: whatever it does to a worker,
            // it does not get another.
            self.fail(&claimed, "Reading this document failed repeatedly. Retry it, or upload it again in another format.")
                .await?;
            return Ok(true);
        }
        match self.process(&claimed).await {
            Ok(()) => {}
            Err(Failure::Permanent(reason)) => self.fail(&claimed, &reason).await?,
            Err(Failure::Transient(reason)) if claimed.attempts >= MAX_ATTEMPTS => {
                self.fail(&claimed, &reason).await?
            }
            Err(Failure::Transient(reason)) => self.later(&claimed, &reason).await?,
            Err(Failure::Superseded) => {
                tracing::info!(document = %claimed.document, "ingestion superseded by a newer version");
            }
            Err(Failure::Db(e)) => {
                // Try again later; the lease runs out by itself if even this fails.
                let reason = if e.is_outage() {
                    "The database was not reachable."
                } else {
                    "Something went wrong while storing the document."
                };
                tracing::error!(error = ?e, document = %claimed.document, "ingestion failed");
                let _ = self.later(&claimed, reason).await;
            }
        }
        Ok(true)
    }

    async fn claim(&self) -> Result<Option<Claimed>> {
        let lease = Uuid::new_v4();
        let secs = self.options.lease.as_secs().clamp(1, i32::MAX as u64) as i32;
        let row: Option<(Uuid, TenantId)> =
            sqlx::query_as("SELECT job_id, job_tenant FROM ingestion_claim($1, $2)")
                .bind(lease)
                .bind(secs)
                .fetch_optional(self.db.pool())
                .await?;
        let Some((job, tenant)) = row else {
            return Ok(None);
        };
        let mut tx = self.db.begin_tenant(tenant).await?;
        let row: Option<(Uuid, i32, i32, String, Vec<u8>)> = sqlx::query_as(
            "SELECT j.document_id, d.version, j.attempts, d.kind, d.content
               FROM ingestion_jobs j JOIN documents d ON d.id = j.document_id
              WHERE j.id = $1 AND j.lease = $2",
        )
        .bind(job)
        .bind(lease)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((document, version, attempts, kind, content)) = row else {
            return Ok(None);
        };
        sqlx::query("UPDATE documents SET status = 'extracting', updated_at = now() WHERE id = $1 AND version = $2")
            .bind(document)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let kind = kind.parse().map_err(|e| Error::Internal(format!("{e}")))?;
        Ok(Some(Claimed {
            job,
            lease,
            tenant,
            document,
            version,
            attempts,
            kind,
            content,
        }))
    }

    async fn process(&self, c: &Claimed) -> Result<(), Failure> {
        let (kind, content) = (c.kind, c.content.clone());
        let reading = tokio::task::spawn_blocking(move || {
            extract::extract(kind, &content).map(|e| (chunk(&e.text), e.pages))
        });
        // A file built to make the parser spin gets a bounded time; its thread is left to end
        // by itself.
        let read = match tokio::time::timeout(EXTRACT_TIMEOUT, reading).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => {
                return Err(Failure::Permanent(
                    "The file could not be read; it may be damaged.".into(),
                ))
            }
            Err(_) => return Err(Failure::Permanent(
                "Reading the file took too long; it may be damaged. Upload it in another format."
                    .into(),
            )),
        };
        let (chunks, pages) = read.map_err(Failure::Permanent)?;
        if chunks.is_empty() {
            return Err(Failure::Permanent("The file has no text in it.".into()));
        }
        let ids: Vec<Uuid> = (0..chunks.len())
            .map(|i| chunk_id(c.document, c.version, i))
            .collect();
        let model = self.embedder.embedding_model(c.tenant).await?;
        if let Some(model) = &model {
            self.set_status(c, "embedding").await?;
            for (batch, id_batch) in chunks.chunks(EMBED_BATCH).zip(ids.chunks(EMBED_BATCH)) {
                let inputs = batch.iter().map(embedding_text).collect();
                let vectors = self
                    .embedder
                    .embed(c.tenant, model, inputs)
                    .await
                    .map_err(|e| Failure::Transient(e.message))?;
                let points: Vec<Point> = id_batch
                    .iter()
                    .zip(vectors)
                    .map(|(id, vector)| Point {
                        chunk: *id,
                        document: c.document,
                        vector,
                    })
                    .collect();
                self.index.upsert(c.tenant, model, &points).await?;
                self.extend(c).await?;
            }
        }
        let old = self.swap(c, &ids, &chunks, pages, model.as_deref()).await?;
        if let Some(changes) = &self.changes {
            changes.announce(Change::Tenant(c.tenant)).await;
        }
        if let Err(e) = self.index.delete_chunks(c.tenant, &old).await {
            // Left-over vectors find nothing (their passages are gone); the document's
            // deletion removes them.
            tracing::warn!(error = ?e, document = %c.document, "old vectors were not deleted");
        }
        Ok(())
    }

    /// Replaces the document's passages with the new ones and deletes the job, in one
    /// transaction that first checks the lease is still this worker's. Returns the old
    /// passages' ids.
    async fn swap(
        &self,
        c: &Claimed,
        ids: &[Uuid],
        chunks: &[Chunk],
        pages: Option<i32>,
        model: Option<&str>,
    ) -> Result<Vec<Uuid>, Failure> {
        let mut tx = self.db.begin_tenant(c.tenant).await?;
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM ingestion_jobs WHERE id = $1 AND lease = $2 FOR UPDATE",
        )
        .bind(c.job)
        .bind(c.lease)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::from)?;
        let current: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM documents WHERE id = $1 AND version = $2 FOR UPDATE")
                .bind(c.document)
                .bind(c.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::from)?;
        if held.is_none() || current.is_none() {
            return Err(Failure::Superseded);
        }
        let old: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM document_chunks WHERE document_id = $1 AND NOT (id = ANY($2)) RETURNING id",
        )
        .bind(c.document)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::from)?;
        let ordinals: Vec<i32> = (0..chunks.len() as i32).collect();
        let headings: Vec<&str> = chunks.iter().map(|c| c.heading.as_str()).collect();
        let contents: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
        let tokens: Vec<i32> = chunks.iter().map(|c| c.tokens).collect();
        sqlx::query(
            "INSERT INTO document_chunks (id, tenant_id, document_id, ordinal, heading, content, tokens)
             SELECT i, $2, $3, o, h, c, t FROM unnest($1::uuid[], $4::int[], $5::text[], $6::text[], $7::int[]) AS x(i, o, h, c, t)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(c.tenant)
        .bind(c.document)
        .bind(&ordinals)
        .bind(&headings)
        .bind(&contents)
        .bind(&tokens)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
        sqlx::query(
            "UPDATE documents SET status = 'ready', error = NULL, chunk_count = $2, pages = $3,
                    embedding_model = $4, updated_at = now()
              WHERE id = $1",
        )
        .bind(c.document)
        .bind(chunks.len() as i32)
        .bind(pages)
        .bind(model)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
        sqlx::query("DELETE FROM ingestion_jobs WHERE id = $1")
            .bind(c.job)
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        tx.commit().await.map_err(Error::from)?;
        Ok(old)
    }

    async fn set_status(&self, c: &Claimed, status: &str) -> Result<()> {
        let mut tx = self.db.begin_tenant(c.tenant).await?;
        sqlx::query(
            "UPDATE documents SET status = $3, updated_at = now() WHERE id = $1 AND version = $2",
        )
        .bind(c.document)
        .bind(c.version)
        .bind(status)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the lease while the work goes on.
    async fn extend(&self, c: &Claimed) -> Result<(), Failure> {
        let mut tx = self.db.begin_tenant(c.tenant).await?;
        let n = sqlx::query(
            "UPDATE ingestion_jobs SET leased_until = now() + make_interval(secs => $3) WHERE id = $1 AND lease = $2",
        )
        .bind(c.job)
        .bind(c.lease)
        .bind(self.options.lease.as_secs_f64())
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?
        .rows_affected();
        tx.commit().await.map_err(Error::from)?;
        if n == 0 {
            return Err(Failure::Superseded);
        }
        Ok(())
    }

    /// The document fails with `reason`; its job is done. Old passages (of an earlier
    /// version) stay searchable.
    async fn fail(&self, c: &Claimed, reason: &str) -> Result<()> {
        let mut tx = self.db.begin_tenant(c.tenant).await?;
        let n = sqlx::query("DELETE FROM ingestion_jobs WHERE id = $1 AND lease = $2")
            .bind(c.job)
            .bind(c.lease)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            sqlx::query(
                "UPDATE documents SET status = 'failed', error = $3, updated_at = now() WHERE id = $1 AND version = $2",
            )
            .bind(c.document)
            .bind(c.version)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives the job back to run again after a backoff.
    async fn later(&self, c: &Claimed, reason: &str) -> Result<()> {
        let delay = self
            .options
            .backoff
            .saturating_mul(2u32.saturating_pow(c.attempts.saturating_sub(1).max(0) as u32));
        let mut tx = self.db.begin_tenant(c.tenant).await?;
        let n = sqlx::query(
            "UPDATE ingestion_jobs SET lease = NULL, leased_until = NULL, last_error = $3,
                    run_after = now() + make_interval(secs => $4)
              WHERE id = $1 AND lease = $2",
        )
        .bind(c.job)
        .bind(c.lease)
        .bind(reason)
        .bind(delay.as_secs_f64())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            sqlx::query(
                "UPDATE documents SET status = 'queued', error = $3, updated_at = now() WHERE id = $1 AND version = $2",
            )
            .bind(c.document)
            .bind(c.version)
            .bind(format!("Will try again shortly: {reason}"))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What is embedded for a passage: its section's heading and its text.
fn embedding_text(c: &Chunk) -> String {
    if c.heading.is_empty() || c.content.starts_with('#') {
        c.content.clone()
    } else {
        format!("{}\n{}", c.heading, c.content)
    }
}

/// Jobs waiting across clinics, and the age of the oldest in seconds.
pub async fn backlog(db: &Db) -> Result<(i64, f64)> {
    Ok(
        sqlx::query_as("SELECT waiting, oldest_secs FROM ingestion_backlog()")
            .fetch_one(db.pool())
            .await?,
    )
}
