//! Knowledge, through the core: uploads (refusals, duplicates, versions, the plan's storage),
//! ingestion (extraction, chunking, embeddings through the gateway, crashes, retries, poison
//! files), deletion, retrieval through an agent, and isolation between clinics.

mod common;

use std::time::Duration;

use common::{clinic, env, fixtures, member, services, Clinic};
use sqlx::PgPool;
use tessera_core::gateway::{ChatOutcome, DEFAULT_EMBEDDING_MODEL};
use tessera_core::knowledge::extract::fixtures as files;
use tessera_core::knowledge::ingest::{WorkerOptions, MAX_ATTEMPTS};
use tessera_core::knowledge::search::{self, Settings};
use tessera_core::knowledge::vectors::VectorIndex;
use tessera_core::knowledge::{self, DocumentStatus, Upload, Uploaded};
use tessera_core::llm::{ChatMessage, ChatRequest, MessageRole};
use tessera_core::{Db, Error, Provider, Role, Services};

const MB: i64 = 1_000_000;

fn file(name: &str, bytes: impl Into<Vec<u8>>) -> Upload {
    Upload {
        name: name.into(),
        bytes: bytes.into(),
        tags: Vec::new(),
    }
}

async fn upload(db: &Db, c: &Clinic, f: Upload) -> tessera_core::Result<Uploaded> {
    knowledge::upload(db, c.tenant, c.owner(), f, 20 * MB).await
}

/// Runs ingestion until no job is due.
async fn ingest_all(s: &Services) {
    let worker = s.ingest_worker(quick());
    while worker.run_once().await.expect("ingestion") {}
}

fn quick() -> WorkerOptions {
    WorkerOptions {
        lease: Duration::from_secs(60),
        poll: Duration::from_millis(50),
        backoff: Duration::ZERO,
    }
}

async fn status(db: &Db, c: &Clinic, name: &str) -> knowledge::Document {
    knowledge::list(db, c.tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// A clinic with an OpenAI key (the simulator's), so its passages are embedded.
async fn with_openai(s: &Services, name: &str) -> Clinic {
    fixtures::clinic(name)
        .key(Provider::OpenAi, "sk-test-clinic")
        .create(&env(&s.db))
        .await
}

/// The passages lexical search alone finds for `query` (default settings).
async fn by_words(
    s: &Services,
    tenant: tessera_core::TenantId,
    query: &str,
) -> Vec<search::Passage> {
    search::retrieve(&s.db, &s.gateway.vectors, tenant, query, None, &settings())
        .await
        .unwrap()
}

fn settings() -> Settings {
    Settings {
        top_k: 5,
        min_score: 0,
        tags: Vec::new(),
    }
}

const PRICES: &str = "# Price list\n\n## Vaccinations\n\nA flu shot costs 25 euros. The tetanus booster costs 40 euros.\n\n## Consultations\n\nA standard consultation costs 60 euros and lasts twenty minutes.\n";

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn uploads_are_checked_deduplicated_and_versioned(pool: PgPool) {
    let db = common::app_db(&pool).await;
    let c = clinic(&db, "North").await;
    let staff = member(&db, &c, "nurse@north.example.com", Role::Staff).await;

    let refused = |r: tessera_core::Result<Uploaded>| match r {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refused(upload(&db, &c, file("empty.txt", "")).await).contains("empty"));
    let m = refused(upload(&db, &c, file("photo.jpg", "\u{FF}")).await);
    assert!(m.contains(".jpg") && m.contains(".pdf"), "{m}");
    let m = refused(upload(&db, &c, file("fake.pdf", "just text")).await);
    assert!(m.contains("not a PDF"), "{m}");
    let big = knowledge::upload(
        &db,
        c.tenant,
        c.owner(),
        file("big.txt", vec![b'a'; 2_000]),
        1_000,
    )
    .await;
    assert!(refused(big).contains("is 2 KB; a file can be at most 1 KB"));
    let by_staff = knowledge::upload(
        &db,
        c.tenant,
        tessera_core::auth::members::Actor {
            user: staff,
            role: Role::Staff,
        },
        file("prices.md", PRICES),
        20 * MB,
    )
    .await;
    assert!(matches!(by_staff, Err(Error::Forbidden(_))), "{by_staff:?}");
    assert!(knowledge::list(&db, c.tenant).await.unwrap().is_empty());

    let added = upload(&db, &c, file("folder/prices.md", PRICES))
        .await
        .unwrap();
    let Uploaded::Added { id, name } = added else {
        panic!("{added:?}")
    };
    assert_eq!(name, "prices.md", "the path is dropped");
    // The same content again, under any name: nothing new.
    let again = upload(&db, &c, file("copy of prices.md", PRICES))
        .await
        .unwrap();
    assert_eq!(
        again,
        Uploaded::Unchanged {
            id,
            name: "prices.md".into()
        }
    );
    // A new version under the same name replaces it.
    let v2 = format!("{PRICES}\n## Travel\n\nTravel vaccines cost 80 euros.\n");
    let replaced = upload(&db, &c, file("prices.md", v2.clone()))
        .await
        .unwrap();
    assert_eq!(
        replaced,
        Uploaded::Replaced {
            id,
            name: "prices.md".into()
        }
    );
    let docs = knowledge::list(&db, c.tenant).await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].size_bytes, v2.len() as i64);
    assert_eq!(docs[0].status, DocumentStatus::Queued);
    assert_eq!(docs[0].uploaded_by.as_deref(), Some("Owner"));
    let storage = knowledge::storage(&db, c.tenant).await.unwrap();
    assert_eq!(storage.used_bytes, v2.len() as i64);
    assert_eq!(storage.limit_bytes, Some(500 * MB), "Starter's 500 MB");
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn the_plans_storage_is_enforced(pool: PgPool) {
    let db = common::app_db(&pool).await;
    let c = clinic(&db, "North").await;
    // An operator lowers Starter's storage to 1 MB (plans are rows an operator may change).
    sqlx::query("UPDATE plans SET storage_mb = 1 WHERE id = 'starter'")
        .execute(&pool)
        .await
        .unwrap();
    let part = |n: u8| vec![b'a' + n; 400_000];
    upload(&db, &c, file("a.txt", part(0))).await.unwrap();
    upload(&db, &c, file("b.txt", part(1))).await.unwrap();
    let over = upload(&db, &c, file("c.txt", part(2))).await;
    let Err(Error::PlanLimit(m)) = over else {
        panic!("{over:?}")
    };
    assert!(m.contains("800 KB of the plan's 1 MB"), "{m}");
    // A new version replaces the old one's size: it fits where a third file does not.
    upload(&db, &c, file("b.txt", vec![b'z'; 500_000]))
        .await
        .unwrap();
    // Deleting makes room.
    let b = status(&db, &c, "b.txt").await;
    let s = knowledge::storage(&db, c.tenant).await.unwrap();
    assert_eq!(s.used_bytes, 900_000);
    let (services, _) = services(&pool, &[]).await;
    knowledge::delete(
        &db,
        &services.changes,
        &services.gateway.vectors,
        c.tenant,
        c.owner(),
        b.id,
    )
    .await
    .unwrap();
    upload(&db, &c, file("c.txt", part(2))).await.unwrap();
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn every_format_is_read_split_and_embedded_through_the_gateway(pool: PgPool) {
    let (s, _) = services(&pool, &[]).await;
    let c = with_openai(&s, "North").await;
    let docx = files::docx(&[
        ("Heading1", "Vaccination protocol"),
        (
            "",
            "Flu shots are given from October, by a nurse, after a short questionnaire.",
        ),
    ]);
    let pdf = files::pdf(&["Parking is free for patients behind the clinic."]);
    let html = "<h1>Opening hours</h1><p>We open at 8am on weekdays and 9am on Saturdays.</p>";
    for f in [
        file("prices.md", PRICES),
        file("protocol.docx", docx),
        file("parking.pdf", pdf),
        file("hours.html", html),
        file("notes.txt", "Dr. Weber does home visits on Thursdays."),
    ] {
        upload(&s.db, &c, f).await.unwrap();
    }
    ingest_all(&s).await;
    for d in knowledge::list(&s.db, c.tenant).await.unwrap() {
        assert_eq!(d.status, DocumentStatus::Ready, "{d:?}");
        assert!(d.chunk_count >= 1, "{d:?}");
        assert_eq!(d.embedding_model.as_deref(), Some(DEFAULT_EMBEDDING_MODEL));
    }
    assert_eq!(status(&s.db, &c, "parking.pdf").await.pages, Some(1));

    // Each question finds its document, lexically and densely.
    for (question, document) in [
        ("How much does a flu shot cost?", "prices.md"),
        ("When are flu shots given?", "protocol.docx"),
        ("Where can patients park?", "parking.pdf"),
        ("What time do you open on Saturdays?", "hours.html"),
        ("Who does home visits?", "notes.txt"),
    ] {
        let lexical = by_words(&s, c.tenant, question).await;
        assert_eq!(
            lexical.first().map(|p| p.name.as_str()),
            Some(document),
            "{question}: {lexical:?}"
        );
    }
    // The embeddings went through the gateway: metered, as `embedding` calls, on the ledger.
    let writer = tessera_core::metering::LedgerWriter::new(s.db.clone(), s.redis.clone());
    writer.drain_all().await.unwrap();
    let mut tx = s.db.begin_tenant(c.tenant).await.unwrap();
    let (calls, tokens): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(prompt_tokens), 0)::bigint FROM usage_events WHERE kind = 'embedding'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(calls, 5, "one call per document");
    assert!(tokens > 50, "{tokens}");
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn without_an_embedding_provider_documents_are_lexical_only(pool: PgPool) {
    let (s, _) = services(&pool, &[]).await;
    let c = clinic(&s.db, "North").await;
    upload(&s.db, &c, file("prices.md", PRICES)).await.unwrap();
    ingest_all(&s).await;
    let d = status(&s.db, &c, "prices.md").await;
    assert_eq!(d.status, DocumentStatus::Ready);
    assert_eq!(d.embedding_model, None);
    let found = by_words(&s, c.tenant, "consultation price").await;
    assert!(found[0].text.contains("standard consultation"), "{found:?}");
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn a_worker_killed_mid_document_leaves_the_old_version_and_the_job_finishes_once(
    pool: PgPool,
) {
    let (s, _) = services(&pool, &[]).await;
    let c = with_openai(&s, "North").await;
    upload(&s.db, &c, file("prices.md", PRICES)).await.unwrap();
    ingest_all(&s).await;
    let v1 = status(&s.db, &c, "prices.md").await;

    // Version 2's embedding call is slow (the simulator waits); the worker dies during it.
    let v2 = "# Price list\n\nA flu shot now costs 30 euros. [sim:latency=3000]\n";
    upload(&s.db, &c, file("prices.md", v2)).await.unwrap();
    let short = WorkerOptions {
        lease: Duration::from_secs(1),
        ..quick()
    };
    let doomed = s.ingest_worker(short.clone());
    let running = tokio::spawn(async move { doomed.run_once().await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        status(&s.db, &c, "prices.md").await.status,
        DocumentStatus::Embedding
    );
    running.abort();
    let _ = running.await;

    // Nothing of version 2 is visible: the old passages still answer.
    let found = by_words(&s, c.tenant, "flu shot euros").await;
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|p| p.text.contains("25 euros") || !p.text.contains("30 euros")),
        "{found:?}"
    );
    let d = status(&s.db, &c, "prices.md").await;
    assert_eq!(d.chunk_count, v1.chunk_count);

    // Its lease runs out; another worker takes the job and finishes it, once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let worker = s.ingest_worker(short);
    assert!(worker.run_once().await.unwrap());
    assert!(!worker.run_once().await.unwrap(), "no job left");
    let d = status(&s.db, &c, "prices.md").await;
    assert_eq!(d.status, DocumentStatus::Ready);
    let found = by_words(&s, c.tenant, "flu shot euros").await;
    assert_eq!(found.len(), d.chunk_count as usize);
    assert!(
        found.iter().all(|p| p.text.contains("30 euros")),
        "{found:?}"
    );
    let mut tx = s.db.begin_tenant(c.tenant).await.unwrap();
    let (chunks, vectors): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM document_chunks), (SELECT count(*) FROM chunk_vectors)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (chunks, vectors),
        (1, 1),
        "one version's passages and vectors, once"
    );
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn unreadable_files_fail_with_their_reason_and_failures_retry_with_backoff(pool: PgPool) {
    let (s, _) = services(&pool, &[]).await;
    let c = with_openai(&s, "North").await;
    // A scanned PDF (no text) fails at once, with its reason.
    upload(&s.db, &c, file("scan.pdf", files::pdf(&[""])))
        .await
        .unwrap();
    // The embedding provider fails every time: retried, then failed with its reason.
    upload(&s.db, &c, file("flaky.txt", "Vaccines [sim:status=503]"))
        .await
        .unwrap();
    ingest_all(&s).await;
    let scan = status(&s.db, &c, "scan.pdf").await;
    assert_eq!(scan.status, DocumentStatus::Failed);
    assert!(
        scan.error.as_deref().unwrap().contains("scanned"),
        "{scan:?}"
    );
    let flaky = status(&s.db, &c, "flaky.txt").await;
    assert_eq!(flaky.status, DocumentStatus::Failed);
    assert!(
        flaky.error.as_deref().unwrap().contains("OpenAI"),
        "{flaky:?}"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM ingestion_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "failed documents leave no job");
    let _ = MAX_ATTEMPTS;

    // Retry queues it again; only a failed document can be retried.
    knowledge::retry(&s.db, c.tenant, c.owner(), scan.id)
        .await
        .unwrap();
    assert_eq!(
        status(&s.db, &c, "scan.pdf").await.status,
        DocumentStatus::Queued
    );
    let again = knowledge::retry(&s.db, c.tenant, c.owner(), scan.id).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    ingest_all(&s).await;
    assert_eq!(
        status(&s.db, &c, "scan.pdf").await.status,
        DocumentStatus::Failed
    );
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn deleting_a_document_purges_its_passages_and_vectors(pool: PgPool) {
    for backend in backends() {
        deletion(&pool, &backend).await;
    }
}

async fn deletion(pool: &PgPool, backend: &[(String, String)]) {
    let s = services_on(pool, backend).await;
    let c = with_openai(&s, &format!("North {}", uuid::Uuid::new_v4().simple())).await;
    upload(&s.db, &c, file("prices.md", PRICES)).await.unwrap();
    let notes = "Dr. Weber does home visits on Thursdays.";
    upload(&s.db, &c, file("notes.txt", notes)).await.unwrap();
    ingest_all(&s).await;
    let prices = status(&s.db, &c, "prices.md").await;
    let vectors = |q: &'static str| {
        let s = &s;
        let tenant = c.tenant;
        async move {
            s.gateway
                .vectors
                .search(
                    tenant,
                    DEFAULT_EMBEDDING_MODEL,
                    &testkit::embedding(q, 16),
                    100,
                    None,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        vectors("flu shot").await.len(),
        prices.chunk_count as usize + 1
    );
    knowledge::delete(
        &s.db,
        &s.changes,
        &s.gateway.vectors,
        c.tenant,
        c.owner(),
        prices.id,
    )
    .await
    .unwrap();
    let mut tx = s.db.begin_tenant(c.tenant).await.unwrap();
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM document_chunks WHERE document_id = $1),
                (SELECT count(*) FROM chunk_vectors WHERE document_id = $1)",
    )
    .bind(prices.id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(left, (0, 0));
    // Only the other document's vector is left, wherever vectors live.
    let rest = vectors("flu shot").await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    let found = by_words(&s, c.tenant, "flu shot price").await;
    assert!(found.iter().all(|p| p.name != "prices.md"), "{found:?}");
    let again = knowledge::delete(
        &s.db,
        &s.changes,
        &s.gateway.vectors,
        c.tenant,
        c.owner(),
        prices.id,
    )
    .await;
    assert!(matches!(again, Err(Error::NotFound)));
    clean(&s).await;
}

/// The configuration of each vector store to test: Postgres, and Qdrant when `QDRANT_URL`
/// names a server (collections of the test's own).
fn backends() -> Vec<Vec<(String, String)>> {
    let mut all = vec![Vec::new()];
    match std::env::var("QDRANT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or(())
    {
        Ok(url) => all.push(vec![
            ("QDRANT_URL".to_string(), url),
            (
                "TESSERA_QDRANT_PREFIX".to_string(),
                format!("test_{}_", uuid::Uuid::new_v4().simple()),
            ),
        ]),
        Err(_) => eprintln!("SKIPPED: the Qdrant run of this test (QDRANT_URL is not set)"),
    }
    all
}

async fn services_on(pool: &PgPool, backend: &[(String, String)]) -> Services {
    let vars: Vec<(&str, &str)> = backend
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    services(pool, &vars).await.0
}

/// Drops the test's Qdrant collections.
async fn clean(s: &Services) {
    if let tessera_core::knowledge::vectors::Vectors::Qdrant(q) = &s.gateway.vectors {
        q.drop_collections().await.unwrap();
    }
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn a_clinics_question_never_retrieves_another_clinics_text(pool: PgPool) {
    for backend in backends() {
        isolation(&pool, &backend).await;
    }
}

async fn isolation(pool: &PgPool, backend: &[(String, String)]) {
    let s = services_on(pool, backend).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let north = with_openai(&s, &format!("North {tag}")).await;
    let south = with_openai(&s, &format!("South {tag}")).await;
    // Near-identical documents: one word differs.
    upload(
        &s.db,
        &north,
        file("prices.md", "A flu shot costs 25 euros at North."),
    )
    .await
    .unwrap();
    upload(
        &s.db,
        &south,
        file("prices.md", "A flu shot costs 25 euros at South."),
    )
    .await
    .unwrap();
    ingest_all(&s).await;
    for (c, own) in [(&north, "North"), (&south, "South")] {
        for q in [
            "flu shot costs 25 euros at North.",
            "flu shot costs 25 euros at South.",
            "flu",
        ] {
            let vector = testkit::embedding(q, 16);
            let found = search::retrieve(
                &s.db,
                &s.gateway.vectors,
                c.tenant,
                q,
                Some((DEFAULT_EMBEDDING_MODEL, &vector)),
                &settings(),
            )
            .await
            .unwrap();
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].text.ends_with(&format!("at {own}.")),
                "{own} asked {q:?}: {found:?}"
            );
            let dense = s
                .gateway
                .vectors
                .search(c.tenant, DEFAULT_EMBEDDING_MODEL, &vector, 10, None)
                .await
                .unwrap();
            assert_eq!(dense.len(), 1);
            assert_eq!(dense[0].chunk, found[0].chunk);
        }
    }
    clean(&s).await;
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn an_agent_answers_from_the_documents_and_cites_them(pool: PgPool) {
    let (s, _) = services(&pool, &[]).await;
    let c = fixtures::clinic("North")
        .key(Provider::OpenAi, "sk-test-north")
        .agent("Front Desk", "gpt-4o-mini")
        .agent_with(tessera_core::agents::AgentInput {
            name: "Plain".into(),
            model: "gpt-4o-mini".into(),
            knowledge: "off".into(),
            ..Default::default()
        })
        .agent_with(tessera_core::agents::AgentInput {
            name: "Parking only".into(),
            model: "gpt-4o-mini".into(),
            knowledge_tags: "Parking".into(),
            ..Default::default()
        })
        .create(&env(&s.db))
        .await;
    upload(&s.db, &c, file("prices.md", PRICES)).await.unwrap();
    knowledge::upload(
        &s.db,
        c.tenant,
        c.owner(),
        Upload {
            name: "parking.txt".into(),
            bytes: b"Patients park for free behind the clinic.".to_vec(),
            tags: knowledge::parse_tags("parking").unwrap(),
        },
        20 * MB,
    )
    .await
    .unwrap();
    ingest_all(&s).await;
    let ask = |agent: &str, q: &str| ChatRequest {
        model: format!("agent:{agent}"),
        messages: vec![ChatMessage {
            role: MessageRole::User,
            content: q.into(),
        }],
        ..Default::default()
    };
    let sources = |o: ChatOutcome| match o {
        ChatOutcome::Complete(c) => c.sources,
        ChatOutcome::Stream(_) => panic!("asked for a whole reply"),
    };
    let caller = c.owner_caller();
    let found = sources(
        s.gateway
            .chat(&caller, ask("front-desk", "How much does a flu shot cost?"))
            .await
            .unwrap(),
    );
    assert_eq!(
        found.first().map(|p| p.name.as_str()),
        Some("prices.md"),
        "{found:?}"
    );
    assert!(found[0].text.contains("flu shot costs 25 euros"));
    let none = sources(
        s.gateway
            .chat(&caller, ask("plain", "How much does a flu shot cost?"))
            .await
            .unwrap(),
    );
    assert!(none.is_empty(), "knowledge is off: {none:?}");
    let tagged = sources(
        s.gateway
            .chat(&caller, ask("parking-only", "flu shot cost and parking"))
            .await
            .unwrap(),
    );
    assert!(!tagged.is_empty());
    assert!(tagged.iter().all(|p| p.name == "parking.txt"), "{tagged:?}");

    // An operator turns retrieval off for this clinic (the `rag_enabled` flag): no passages.
    let op = match tessera_core::operator::add(&pool, "ops@tessera.example")
        .await
        .unwrap()
    {
        tessera_core::operator::Added::Created { password } => {
            tessera_core::auth::authenticate(&s.db, "ops@tessera.example", &password)
                .await
                .unwrap()
        }
        other => panic!("{other:?}"),
    };
    let off = tessera_core::flags::FlagInput {
        default: "true".into(),
        rules: format!("clinic {} = false", c.slug),
        ..Default::default()
    };
    tessera_core::flags::update(&s.db, &s.changes, op, "rag_enabled", 1, &off)
        .await
        .unwrap();
    s.gateway.flags.reload().await.unwrap();
    let ungrounded = sources(
        s.gateway
            .chat(&caller, ask("front-desk", "How much does a flu shot cost?"))
            .await
            .unwrap(),
    );
    assert!(ungrounded.is_empty(), "retrieval is off: {ungrounded:?}");
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn a_clinic_on_its_own_endpoint_names_its_embedding_model_and_is_indexed_again(pool: PgPool) {
    let (s, sim) = services(&pool, &[]).await;
    let c = fixtures::clinic("North")
        .endpoint(&format!("http://{sim}/v1"), "sk-local-ollama")
        .create(&env(&s.db))
        .await;
    upload(&s.db, &c, file("prices.md", PRICES)).await.unwrap();
    ingest_all(&s).await;
    // No OpenAI key: words only.
    assert_eq!(status(&s.db, &c, "prices.md").await.embedding_model, None);
    assert_eq!(s.gateway.embedding_model(c.tenant).await.unwrap(), None);

    let bad =
        knowledge::set_embedding_model(&s.db, &s.changes, c.tenant, c.owner(), "two words").await;
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");
    let queued =
        knowledge::set_embedding_model(&s.db, &s.changes, c.tenant, c.owner(), "nomic-embed-text")
            .await
            .unwrap();
    assert_eq!(queued, 1);
    assert_eq!(
        status(&s.db, &c, "prices.md").await.status,
        DocumentStatus::Queued
    );
    ingest_all(&s).await;
    let d = status(&s.db, &c, "prices.md").await;
    assert_eq!(d.status, DocumentStatus::Ready);
    assert_eq!(d.embedding_model.as_deref(), Some("nomic-embed-text"));
    let hits = s
        .gateway
        .vectors
        .search(
            c.tenant,
            "nomic-embed-text",
            &testkit::embedding("flu shot", 16),
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), d.chunk_count as usize);
    // The same model again changes nothing.
    let again =
        knowledge::set_embedding_model(&s.db, &s.changes, c.tenant, c.owner(), "nomic-embed-text")
            .await
            .unwrap();
    assert_eq!(again, 0);
}

#[sqlx::test(migrator = "tessera_core::db::MIGRATOR")]
async fn an_upgrade_to_enterprise_moves_the_clinics_vectors_to_its_own_collection(pool: PgPool) {
    let Some(backend) = backends().into_iter().find(|b| !b.is_empty()) else {
        return;
    };
    let s = services_on(&pool, &backend).await;
    let tessera_core::knowledge::vectors::Vectors::Qdrant(q) = &s.gateway.vectors else {
        panic!("QDRANT_URL is set: vectors are in Qdrant");
    };
    let c = with_openai(&s, "North").await;
    upload(&s.db, &c, file("prices.md", PRICES)).await.unwrap();
    ingest_all(&s).await;
    let own = |names: Vec<String>| {
        names
            .iter()
            .any(|n| n.ends_with(&c.tenant.0.simple().to_string()))
    };
    assert!(!own(q.collections().await.unwrap()));
    // The operator's plan change is announced; the server moves the clinic's vectors.
    tessera_core::billing::set_plan(&pool, &s.changes, &c.slug, tessera_core::PlanId::Enterprise)
        .await
        .unwrap();
    let mut moved = false;
    for _ in 0..100 {
        if own(q.collections().await.unwrap()) && q.dedicated(c.tenant).await.unwrap() {
            let hits = q
                .search(
                    c.tenant,
                    DEFAULT_EMBEDDING_MODEL,
                    &testkit::embedding("flu shot", 16),
                    10,
                    None,
                )
                .await
                .unwrap();
            if !hits.is_empty() {
                moved = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "the vectors followed the plan");
    let found = search::retrieve(
        &s.db,
        &s.gateway.vectors,
        c.tenant,
        "flu shot",
        Some((DEFAULT_EMBEDDING_MODEL, &testkit::embedding("flu shot", 16))),
        &settings(),
    )
    .await
    .unwrap();
    assert!(!found.is_empty());
    clean(&s).await;
}
