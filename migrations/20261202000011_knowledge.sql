-- Knowledge: the documents a clinic uploads, the queue that ingests them, their chunks (with
-- lexical search and, when the clinic has an embedding provider, dense vectors), which
-- documents each agent draws on, and the sources a reply cited.

CREATE TABLE documents (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The file name as uploaded. A new upload under the same name is a new version of it.
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    kind          text NOT NULL CHECK (kind IN ('text', 'markdown', 'html', 'pdf', 'docx')),
    size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
    sha256        bytea NOT NULL CHECK (octet_length(sha256) = 32),
    -- The file itself, kept so a failed ingestion can be retried and a model change re-indexed.
    content       bytea NOT NULL,
    -- Collections the document belongs to; agents may draw on chosen ones only.
    tags          text[] NOT NULL DEFAULT '{}',
    -- Bumped by each new version; a job for an older version changes nothing.
    version       integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    status        text NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'extracting', 'embedding', 'ready', 'failed')),
    error         text,
    chunk_count   integer NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    pages         integer CHECK (pages >= 0),
    -- The embedding model of the document's vectors; NULL: lexical search only.
    embedding_model text,
    uploaded_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    -- When the current version was uploaded.
    uploaded_at   timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT documents_tenant_sha256_key UNIQUE (tenant_id, sha256)
);
CREATE INDEX documents_tenant_idx ON documents (tenant_id, created_at DESC);

-- The passages retrieval finds. A document's chunks are replaced in one transaction, so a
-- search sees the old version or the new one, never half of either.
CREATE TABLE document_chunks (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id   uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal       integer NOT NULL CHECK (ordinal >= 0),
    -- The heading of the section the chunk comes from ('' when none).
    heading       text NOT NULL DEFAULT '',
    content       text NOT NULL CHECK (content <> ''),
    tokens        integer NOT NULL CHECK (tokens > 0),
    search        tsvector GENERATED ALWAYS AS
                      (to_tsvector('english', heading || E'\n' || content)) STORED,
    CONSTRAINT document_chunks_document_ordinal_key UNIQUE (document_id, ordinal)
);
CREATE INDEX document_chunks_search_idx ON document_chunks USING GIN (search);
CREATE INDEX document_chunks_tenant_idx ON document_chunks (tenant_id, document_id);

-- Dense vectors, when they live in Postgres (the single-node default; with Qdrant they live
-- there). Keyed by chunk but written before the chunks themselves, so a new version's vectors
-- are in place when its chunks appear; a search joins them to the chunks, so a vector whose
-- chunk is gone finds nothing. Deleting the document deletes its vectors in the same statement.
CREATE TABLE chunk_vectors (
    chunk_id      uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id   uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    model         text NOT NULL,
    -- Little-endian f32s.
    embedding     bytea NOT NULL CHECK (octet_length(embedding) BETWEEN 4 AND 65536)
);
CREATE INDEX chunk_vectors_tenant_model_idx ON chunk_vectors (tenant_id, model);
CREATE INDEX chunk_vectors_document_idx ON chunk_vectors (document_id);

-- Lexical search ORs the words of a question (any of them may match; ranking prefers passages
-- with more of them): this aggregate ORs tsqueries.
CREATE AGGREGATE knowledge_any (tsquery) (SFUNC = tsquery_or, STYPE = tsquery);

-- The ingestion queue. Workers claim a due job with a lease (row locks, SKIP LOCKED); a worker
-- that dies loses its lease and another takes the job; only the lease holder can finish it.
CREATE TABLE ingestion_jobs (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id   uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after     timestamptz NOT NULL DEFAULT now(),
    lease         uuid,
    leased_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingestion_jobs_document_key UNIQUE (document_id)
);
CREATE INDEX ingestion_jobs_due_idx ON ingestion_jobs (run_after);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE document_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON document_chunks
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE chunk_vectors ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunk_vectors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chunk_vectors
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE ingestion_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ingestion_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ingestion_jobs
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

GRANT SELECT, INSERT, UPDATE, DELETE ON documents, document_chunks, chunk_vectors, ingestion_jobs
    TO tessera_app;

-- A worker serves every clinic, so claiming the next job crosses tenants: this function answers
-- that one question (and takes the lease) and nothing more. The work itself happens in the
-- job's clinic's own scope. The function runs as the schema owner, which row-level security
-- binds too (FORCE): this policy lets the owner, and only the owner, see every job.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY ingestion_queue ON ingestion_jobs TO %I USING (true) WITH CHECK (true)', current_user);
END
$$;

CREATE FUNCTION ingestion_claim(lease_id uuid, lease_secs integer)
    RETURNS TABLE (job_id uuid, job_tenant uuid)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
        UPDATE ingestion_jobs j
           SET lease = lease_id,
               leased_until = now() + make_interval(secs => lease_secs),
               attempts = j.attempts + 1
         WHERE j.id = (SELECT id FROM ingestion_jobs
                        WHERE run_after <= now() AND (leased_until IS NULL OR leased_until < now())
                        ORDER BY run_after
                        LIMIT 1
                        FOR UPDATE SKIP LOCKED)
        RETURNING j.id, j.tenant_id
    $$;

-- Jobs waiting, and the age of the oldest, across clinics (for the worker's health and metrics).
CREATE FUNCTION ingestion_backlog()
    RETURNS TABLE (waiting bigint, oldest_secs double precision)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
            FROM ingestion_jobs $$;

REVOKE ALL ON FUNCTION ingestion_claim(uuid, integer), ingestion_backlog() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingestion_claim(uuid, integer), ingestion_backlog() TO tessera_app;

-- Per agent: whether it draws on the clinic's documents, how many passages, the lowest score a
-- passage needs (0 to 100), and which collections (none: every document).
ALTER TABLE agents ADD COLUMN knowledge_enabled boolean NOT NULL DEFAULT true;
ALTER TABLE agents ADD COLUMN knowledge_top_k integer NOT NULL DEFAULT 5
    CHECK (knowledge_top_k BETWEEN 1 AND 20);
ALTER TABLE agents ADD COLUMN knowledge_min_score integer NOT NULL DEFAULT 0
    CHECK (knowledge_min_score BETWEEN 0 AND 100);
ALTER TABLE agents ADD COLUMN knowledge_tags text[] NOT NULL DEFAULT '{}';

-- The embedding model a clinic's documents are indexed with (NULL: the default for its
-- provider, or none: lexical search only).
ALTER TABLE tenants ADD COLUMN embedding_model text CHECK (char_length(embedding_model) <= 200);

-- What a call was for: a chat reply or embeddings (documents indexed, questions searched).
ALTER TABLE usage_events ADD COLUMN kind text NOT NULL DEFAULT 'chat'
    CHECK (kind IN ('chat', 'embedding'));

-- The passages a reply was grounded in, in citation order: [{document, name, heading, text}].
ALTER TABLE messages ADD COLUMN sources jsonb NOT NULL DEFAULT '[]';
