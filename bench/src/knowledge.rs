//! `knowledge-bench`: how fast documents are ingested and passages retrieved, each against a
//! baseline measured in the same run. See `bench/README.md` ("Knowledge") for the method;
//! `bench/knowledge.sh` prepares a database and runs it.
//!
//! Environment: `DATABASE_URL` (the application role) and `DATABASE_ADMIN_URL` (the schema
//! owner) of a database of its own, `REDIS_URL`. Options: `--docs N` and `--pages N` (the
//! ingestion corpus, default 40 documents of 10 pages), `--sizes LIST` (chunks in all, default
//! 1000,10000,100000), `--clinics N` (the spread-out layout, default 1000), `--queries N`
//! (default 200), `--dims N` (vector length, default 1536, text-embedding-3-small's).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_core::knowledge::extract::{self, fixtures, Kind};
use tessera_core::knowledge::ingest::WorkerOptions;
use tessera_core::knowledge::search;
use tessera_core::knowledge::vectors::{PgVectors, Point, VectorIndex};
use tessera_core::knowledge::{self, Upload};
use tessera_core::{Config, Db, Provider, Redis, Services, TenantId};
use uuid::Uuid;

const MODEL: &str = "text-embedding-3-small";
const VOCABULARY: usize = 5_000;
const WORDS_PER_CHUNK: usize = 120;
const WORDS_PER_PAGE: usize = 300;

struct Options {
    docs: usize,
    pages: usize,
    sizes: Vec<usize>,
    clinics: usize,
    queries: usize,
    dims: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        docs: 40,
        pages: 10,
        sizes: vec![1_000, 10_000, 100_000],
        clinics: 1_000,
        queries: 200,
        dims: 1536,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--docs" => o.docs = num(value)?,
            "--pages" => o.pages = num(value)?,
            "--clinics" => o.clinics = num(value)?.max(1),
            "--queries" => o.queries = num(value)?.max(10),
            "--dims" => o.dims = num(value)?.max(1),
            "--sizes" => {
                o.sizes = value
                    .split(',')
                    .map(|v| num(v.trim()))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// A word of the synthetic vocabulary, drawn with a skew (frequent words are frequent, as in
/// text).
fn word(rng: &mut StdRng) -> String {
    let u: f64 = rng.gen();
    format!("term{}", (u * u * u * VOCABULARY as f64) as usize)
}

fn text(rng: &mut StdRng, words: usize) -> String {
    (0..words).map(|_| word(rng)).collect::<Vec<_>>().join(" ")
}

fn vector(rng: &mut StdRng, dims: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dims).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knowledge-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let o = options()?;
    let admin_url = env("DATABASE_ADMIN_URL")?;
    tessera_core::db::migrate(&admin_url)
        .await
        .map_err(|e| format!("migrating: {e}"))?;
    let sim = testkit::spawn("127.0.0.1:0".parse().expect("an address"))
        .await
        .map_err(|e| format!("starting the simulator: {e}"))?;
    let mut vars = HashMap::new();
    for name in ["DATABASE_URL", "DATABASE_ADMIN_URL", "REDIS_URL"] {
        if let Ok(v) = std::env::var(name) {
            vars.insert(name.to_string(), v);
        }
    }
    vars.insert("OPENAI_BASE_URL".into(), format!("http://{sim}/v1"));
    vars.insert("TESSERA_INGEST_WORKERS".into(), "0".into());
    vars.insert("TESSERA_ALLOW_PRIVATE_ENDPOINTS".into(), "true".into());
    vars.insert(
        "TESSERA_REDIS_PREFIX".into(),
        format!("bench-knowledge:{}:", Uuid::new_v4().simple()),
    );
    let config = Config::from_vars(&vars).map_err(|e| e.to_string())?;
    let db = Db::connect(&config.database_url, 8)
        .await
        .map_err(|e| format!("connecting to DATABASE_URL: {e}"))?;
    let redis = Redis::connect(&config.redis_url, &config.redis_prefix)
        .await
        .map_err(|e| format!("connecting to Redis: {e}"))?;
    let services = Services::new(config, db, redis);
    println!("# Knowledge benchmark\n");
    ingestion(&services, &o).await?;
    retrieval(&services, &o).await?;
    Ok(())
}

/// Pages per second: reading and splitting alone (the baseline), then the whole ingestion
/// (upload, queue, extraction, splitting, embeddings through the gateway to the simulator,
/// vectors, the passages' swap) with one worker.
async fn ingestion(s: &Services, o: &Options) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(7);
    let docs: Vec<(String, Vec<u8>)> = (0..o.docs)
        .map(|d| {
            let pages: Vec<String> = (0..o.pages)
                .map(|_| text(&mut rng, WORDS_PER_PAGE))
                .collect();
            let refs: Vec<&str> = pages.iter().map(String::as_str).collect();
            (format!("leaflet-{d}.pdf"), fixtures::pdf(&refs))
        })
        .collect();
    let total_pages = (o.docs * o.pages) as f64;

    let corpus = docs.clone();
    let started = Instant::now();
    let chunks = tokio::task::spawn_blocking(move || {
        corpus
            .iter()
            .map(|(_, bytes)| {
                let e = extract::extract(Kind::Pdf, bytes).expect("a readable PDF");
                knowledge::chunk::chunk(&e.text).len()
            })
            .sum::<usize>()
    })
    .await
    .map_err(|e| e.to_string())?;
    let baseline = started.elapsed();

    let env = testkit::fixtures::Env {
        db: &s.db,
        changes: &s.changes,
        master: &s.config.master_keys,
        admin: None,
    };
    let clinic = testkit::fixtures::clinic(&format!(
        "Knowledge bench {}",
        &Uuid::new_v4().simple().to_string()[..8]
    ))
    .key(Provider::OpenAi, "sk-bench-key")
    .try_create(&env)
    .await?;
    let started = Instant::now();
    for (name, bytes) in docs {
        let upload = Upload {
            name,
            bytes,
            tags: Vec::new(),
        };
        knowledge::upload(&s.db, clinic.tenant, clinic.owner(), upload, 100_000_000)
            .await
            .map_err(|e| format!("uploading: {e}"))?;
    }
    let uploaded = started.elapsed();
    let worker = s.ingest_worker(WorkerOptions::default());
    while worker
        .run_once()
        .await
        .map_err(|e| format!("ingesting: {e}"))?
    {}
    let whole = started.elapsed();
    let ready = knowledge::list(&s.db, clinic.tenant)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|d| d.status == knowledge::DocumentStatus::Ready)
        .count();
    if ready != o.docs {
        return Err(format!("{ready} of {} documents became ready", o.docs));
    }
    println!("## Ingestion\n");
    println!(
        "{} PDF documents of {} pages ({} words a page), {chunks} passages, one worker, embeddings by the simulator over HTTP.\n",
        o.docs, o.pages, WORDS_PER_PAGE
    );
    println!("| path | seconds | pages/s |\n|---|---:|---:|");
    println!(
        "| read and split only (baseline) | {:.2} | {:.0} |",
        baseline.as_secs_f64(),
        total_pages / baseline.as_secs_f64()
    );
    println!(
        "| upload, queue, read, split, embed, store (tessera) | {:.2} | {:.0} |",
        whole.as_secs_f64(),
        total_pages / whole.as_secs_f64()
    );
    println!(
        "\nUploads took {:.2} s of that; the whole path runs at {:.2}× the baseline's time.\n",
        uploaded.as_secs_f64(),
        whole.as_secs_f64() / baseline.as_secs_f64()
    );
    Ok(())
}

/// A clinic made for the retrieval runs, with `chunks` passages and their vectors.
async fn fill(
    db: &Db,
    rng: &mut StdRng,
    tenant: TenantId,
    chunks: usize,
    dims: usize,
) -> Result<Vec<Uuid>, String> {
    let err = |e: tessera_core::Error| e.to_string();
    let sql = |e: sqlx::Error| e.to_string();
    let mut tx = db.begin_tenant(tenant).await.map_err(err)?;
    let slug = format!("bench-{}", tenant.0.simple());
    sqlx::query("INSERT INTO tenants (id, name, slug) VALUES ($1, $2, $2)")
        .bind(tenant)
        .bind(&slug)
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
    tx.commit().await.map_err(sql)?;
    let mut ids = Vec::with_capacity(chunks);
    let per_doc = 100;
    let index = PgVectors::new(db.clone());
    let mut left = chunks;
    while left > 0 {
        let n = left.min(per_doc);
        left -= n;
        let doc = Uuid::new_v4();
        let mut tx = db.begin_tenant(tenant).await.map_err(err)?;
        let sha: Vec<u8> = (0..32).map(|_| rng.gen()).collect();
        sqlx::query(
            "INSERT INTO documents (id, tenant_id, name, kind, size_bytes, sha256, content, status, chunk_count, embedding_model)
             VALUES ($1, $2, $3, 'text', 1, $4, '\\x20', 'ready', $5, $6)",
        )
        .bind(doc)
        .bind(tenant)
        .bind(format!("doc-{doc}.txt"))
        .bind(&sha)
        .bind(n as i32)
        .bind(MODEL)
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
        let chunk_ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let ordinals: Vec<i32> = (0..n as i32).collect();
        let contents: Vec<String> = (0..n).map(|_| text(rng, WORDS_PER_CHUNK)).collect();
        let tokens: Vec<i32> = vec![WORDS_PER_CHUNK as i32 * 2; n];
        sqlx::query(
            "INSERT INTO document_chunks (id, tenant_id, document_id, ordinal, heading, content, tokens)
             SELECT i, $2, $3, o, 'Section', c, t FROM unnest($1::uuid[], $4::int[], $5::text[], $6::int[]) AS x(i, o, c, t)",
        )
        .bind(&chunk_ids)
        .bind(tenant)
        .bind(doc)
        .bind(&ordinals)
        .bind(&contents)
        .bind(&tokens)
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        let points: Vec<Point> = chunk_ids
            .iter()
            .map(|c| Point {
                chunk: *c,
                document: doc,
                vector: vector(rng, dims),
            })
            .collect();
        index.upsert(tenant, MODEL, &points).await.map_err(err)?;
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// Retrieval latency at each size, for one clinic holding every passage and for passages
/// spread over many clinics (asking one of them): a primary-key read of one passage in the
/// clinic's scope (the baseline: what any query costs), lexical search and exact dense search,
/// interleaved query by query.
async fn retrieval(s: &Services, o: &Options) -> Result<(), String> {
    let db = &s.db;
    let index = PgVectors::new(db.clone());
    let mut rng = StdRng::seed_from_u64(11);
    println!("## Retrieval\n");
    println!(
        "Passages of {WORDS_PER_CHUNK} words from a {VOCABULARY}-word vocabulary, vectors of {} numbers in Postgres, top 20, one query at a time; p50 / p99 in ms, and × the baseline's p50.\n",
        o.dims
    );
    println!("| passages in all | clinics | passages of the clinic asked | baseline p50 / p99 | lexical p50 / p99 | lexical ÷ baseline | dense p50 / p99 | dense ÷ baseline | queries (dense) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &size in &o.sizes {
        for clinics in [1, o.clinics] {
            let per = (size / clinics).max(1);
            let mut asked = None;
            for c in 0..clinics {
                let tenant = TenantId(Uuid::new_v4());
                let ids = fill(db, &mut rng, tenant, per, o.dims).await?;
                if c == 0 {
                    asked = Some((tenant, ids));
                }
            }
            let (tenant, ids) = asked.ok_or("no clinic")?;
            // Exact search reads every vector of the clinic: fewer dense queries at the largest
            // sizes keep the run short.
            let dense_queries = o
                .queries
                .min((20_000_000 / (per * o.dims / 100).max(1)).max(10));
            let (mut base, mut lex, mut dense) = (Vec::new(), Vec::new(), Vec::new());
            for q in 0..o.queries {
                let id = ids[rng.gen_range(0..ids.len())];
                let started = Instant::now();
                let row: Option<(Uuid,)> = db
                    .tenant_optional(
                        tenant,
                        sqlx::query_as("SELECT id FROM document_chunks WHERE id = $1").bind(id),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                base.push(started.elapsed());
                row.ok_or("the passage read back")?;
                let query = text(&mut rng, 5);
                let started = Instant::now();
                search::lexical(db, tenant, &query, 20, None)
                    .await
                    .map_err(|e| e.to_string())?;
                lex.push(started.elapsed());
                if q < dense_queries {
                    let v = vector(&mut rng, o.dims);
                    let started = Instant::now();
                    let hits = index
                        .search(tenant, MODEL, &v, 20, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    dense.push(started.elapsed());
                    if hits.len() != per.min(20) {
                        return Err(format!(
                            "dense search found {} of {}",
                            hits.len(),
                            per.min(20)
                        ));
                    }
                }
            }
            for v in [&mut base, &mut lex, &mut dense] {
                v.sort();
            }
            let b50 = percentile(&base, 50.0);
            println!(
                "| {size} | {clinics} | {per} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1}× | {:.2} / {:.2} | {:.1}× | {} |",
                b50,
                percentile(&base, 99.0),
                percentile(&lex, 50.0),
                percentile(&lex, 99.0),
                percentile(&lex, 50.0) / b50,
                percentile(&dense, 50.0),
                percentile(&dense, 99.0),
                percentile(&dense, 50.0) / b50,
                dense.len(),
            );
        }
    }
    Ok(())
}
