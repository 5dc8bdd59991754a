//! Budgets, settlement and the ledger, against the real Redis and Postgres.

mod common;

use common::{app_db, clinic, redis};
use sqlx::PgPool;
use tessera_core::metering::{self, report, LedgerWriter, Metering, UsageEvent};
use tessera_core::{Error, Month, TenantId};

/// A new clinic is on Starter: 1,000,000 tokens a month, and (with the spending cap at its
/// default) nothing beyond them.
const ALLOWANCE: i64 = 1_000_000;

fn event(r: &metering::Reservation, prompt: i64, completion: i64) -> UsageEvent {
    UsageEvent {
        id: r.id,
        tenant: r.tenant,
        user: None,
        api_key: None,
        agent: None,
        provider: tessera_core::Provider::OpenAi,
        model: "gpt-4o-mini".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: 0,
        cost_micro_usd: 7,
        latency_ms: 12,
        estimated: false,
        streamed: false,
        cancelled: false,
        idempotency_key: r.id.to_string(),
        occurred_at_ms: metering::now_ms(),
        kind: Default::default(),
    }
}

/// An agent of the clinic, made by its owner.
async fn agent(
    db: &tessera_core::Db,
    c: &common::Clinic,
    name: &str,
) -> tessera_core::agents::Agent {
    let input = tessera_core::agents::AgentInput {
        name: name.into(),
        model: "gpt-4o-mini".into(),
        ..Default::default()
    };
    tessera_core::agents::create(db, &common::CHANGES, c.tenant, c.owner(), &input)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_reservations_never_exceed_the_limit(pool: PgPool) {
    // Arrange: a budget that admits exactly 7 reservations of 140,000.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Budget Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let m = Metering::new(db.clone(), redis().await);

    // Act: 200 at once.
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let m = m.clone();
            let limits = limits.clone();
            tokio::spawn(async move { m.reserve(c.tenant, &limits, 140_000).await })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => admitted.push(r),
            Err(Error::OverBudget { limit, .. }) => {
                assert_eq!(limit, ALLOWANCE);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    // Assert
    assert_eq!(admitted.len(), 7);
    assert_eq!(refused, 193);
    let month = admitted[0].month;
    let (_, reserved) = m.month_usage(c.tenant, month).await.unwrap();
    assert_eq!(reserved, 980_000);
}

#[sqlx::test(migrations = "../migrations")]
async fn overlapping_calls_share_scripts_and_each_is_counted_once(pool: PgPool) {
    // Arrange: three clinics, and one metering (one process) for all of them.
    let db = app_db(&pool).await;
    let r = redis().await;
    let mut clinics = Vec::new();
    for name in ["Batch One", "Batch Two", "Batch Three"] {
        let c = clinic(&db, name).await;
        clinics.push((c.tenant, metering::limits(&db, c.tenant).await.unwrap()));
    }
    let m = Metering::new(db.clone(), r.clone());
    // Each clinic's live counters, built (a first reservation would otherwise find them missing,
    // build them and try again).
    let month = tessera_core::Month::now();
    for (tenant, _) in &clinics {
        m.month_usage(*tenant, month).await.unwrap();
    }
    let (scripts_before, ops_before) = m.scripts_sent();

    // Act: 60 calls at once, 20 per clinic, each reserving 1,000 and settling 10 + i tokens
    // (a tenth of them released instead, as failed calls are).
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let m = m.clone();
            let (tenant, limits) = clinics[i % 3].clone();
            tokio::spawn(async move {
                let res = m.reserve(tenant, &limits, 1_000).await.unwrap();
                if i % 10 == 9 {
                    m.release(res).await.unwrap();
                    return 0;
                }
                let ev = event(&res, 10, i as i64);
                m.settle(res, &ev).await.unwrap();
                10 + i as i64
            })
        })
        .collect();
    let mut expected = [0i64; 3];
    for (i, t) in tasks.into_iter().enumerate() {
        expected[i % 3] += t.await.unwrap();
    }
    let written = LedgerWriter::new(db.clone(), r.clone())
        .drain_all()
        .await
        .unwrap();

    // Assert: each clinic's counters and ledger hold exactly its own calls, nothing is left
    // reserved, and the 120 operations went in fewer scripts than operations.
    for (i, (tenant, _)) in clinics.iter().enumerate() {
        let (usage, reserved) = m.month_usage(*tenant, month).await.unwrap();
        assert_eq!(
            (usage.tokens, usage.requests, reserved),
            (expected[i], 18, 0)
        );
        let ledger = metering::report::ledger_totals(&db, *tenant, month)
            .await
            .unwrap();
        assert_eq!(ledger, usage);
    }
    assert_eq!(written, 54);
    let (scripts, ops) = m.scripts_sent();
    assert_eq!(ops - ops_before, 120);
    assert!(
        scripts - scripts_before < 120,
        "{} scripts for 120 operations",
        scripts - scripts_before
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn settling_counts_real_usage_and_releasing_charges_nothing(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Settle Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let m = Metering::new(db.clone(), redis().await);

    let a = m.reserve(c.tenant, &limits, 600_000).await.unwrap();
    let month = a.month;
    // A second worst case does not fit while the first is held...
    assert!(matches!(
        m.reserve(c.tenant, &limits, 600_000).await,
        Err(Error::OverBudget { .. })
    ));
    // ...but fits once the first settles at its real (smaller) usage.
    let ev = event(&a, 30, 20);
    m.settle(a, &ev).await.unwrap();
    let b = m.reserve(c.tenant, &limits, 600_000).await.unwrap();
    m.release(b).await.unwrap();

    let (usage, reserved) = m.month_usage(c.tenant, month).await.unwrap();
    assert_eq!(
        (usage.tokens, usage.requests, usage.cost_micro_usd, reserved),
        (50, 1, 7, 0)
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reservation_left_by_a_crash_expires(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Crash Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let m = Metering::with_reservation_ttl(
        db.clone(),
        redis().await,
        std::time::Duration::from_millis(50),
    );

    let abandoned = m.reserve(c.tenant, &limits, ALLOWANCE).await.unwrap();
    assert!(m.reserve(c.tenant, &limits, 1).await.is_err());
    // Neither settled nor released: as a request that crashed would leave it.
    let _ = abandoned;
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    let r = m.reserve(c.tenant, &limits, ALLOWANCE).await.unwrap();
    m.release(r).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reservation_whose_call_went_away_is_given_back(pool: PgPool) {
    // Arrange
    let db = app_db(&pool).await;
    let c = clinic(&db, "Gone Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let month = Month::now();
    m.month_usage(c.tenant, month).await.unwrap();
    let counters = r.key(&format!("usage:{}:{month}", c.tenant));

    // Act: a call's reservation reaches Redis, and the call goes away before it reads the
    // answer (its client gave up and the request was dropped).
    let mut reserve = Box::pin(m.reserve(c.tenant, &limits, ALLOWANCE));
    let mut reached = false;
    for _ in 0..100 {
        tokio::select! {
            biased;
            answer = &mut reserve => panic!("answered before it went away: {answer:?}"),
            _ = std::future::ready(()) => {}
        }
        let reserved: Option<i64> = redis::cmd("HGET")
            .arg(&counters)
            .arg("reserved")
            .query_async(&mut r.conn())
            .await
            .unwrap();
        if reserved == Some(ALLOWANCE) {
            reached = true;
            break;
        }
    }
    assert!(reached, "the reservation never reached Redis");
    drop(reserve);

    // Assert: it is released behind it (nothing stays reserved until it expires), and the
    // whole allowance can be reserved again.
    let mut reserved = -1;
    for _ in 0..100 {
        reserved = m.month_usage(c.tenant, month).await.unwrap().1;
        if reserved == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(reserved, 0);
    let again = m.reserve(c.tenant, &limits, ALLOWANCE).await.unwrap();
    m.release(again).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn counters_are_rebuilt_from_the_ledger_after_a_flush(pool: PgPool) {
    // Arrange: some settled calls, written to the ledger.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Rebuild Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let mut month = tessera_core::Month::now();
    for i in 1..=5 {
        let res = m.reserve(c.tenant, &limits, 1000).await.unwrap();
        month = res.month;
        let ev = event(&res, 10 * i, i);
        m.settle(res, &ev).await.unwrap();
    }
    let writer = LedgerWriter::new(db.clone(), r.clone());
    assert_eq!(writer.drain_all().await.unwrap(), 5);
    let before = m.month_usage(c.tenant, month).await.unwrap().0;

    // Act: Redis loses everything of ours.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(r.key("*"))
        .query_async(&mut r.conn())
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut r.conn())
        .await
        .unwrap();

    // Assert: the live view comes back equal to the ledger.
    let after = m.month_usage(c.tenant, month).await.unwrap().0;
    let ledger = metering::report::ledger_totals(&db, c.tenant, month)
        .await
        .unwrap();
    assert_eq!(after, ledger);
    assert_eq!(after, before);
    assert_eq!((after.tokens, after.requests), (150 + 15, 5));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_writer_crash_mid_batch_loses_and_doubles_nothing(pool: PgPool) {
    // Arrange: three settled events in the hand-off.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Ledger Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let mut month = tessera_core::Month::now();
    let mut events = Vec::new();
    for _ in 0..3 {
        let res = m.reserve(c.tenant, &limits, 100).await.unwrap();
        month = res.month;
        let ev = event(&res, 5, 5);
        events.push(ev.clone());
        m.settle(res, &ev).await.unwrap();
    }

    // Act: the process that settled them ends before its writer wrote them; another writer
    // leaves them to it until they are `claim_after` old, then takes them from the stream; a
    // replay of events already written changes nothing; a batch that holds one of them and a
    // new event writes the new one.
    let crashed = LedgerWriter::new(db.clone(), r.clone());
    assert_eq!(crashed.forget_own(), 3);
    let mut survivor = LedgerWriter::new(db.clone(), r.clone());
    assert_eq!(
        survivor.drain_all().await.unwrap(),
        0,
        "too young to be left behind"
    );
    survivor.claim_after = std::time::Duration::ZERO;
    assert_eq!(survivor.drain_all().await.unwrap(), 3);
    assert_eq!(metering::handoff_length(&r).await.unwrap(), 0);
    metering::write_events(&db, &events).await.unwrap();
    let mut late = events[0].clone();
    late.id = uuid::Uuid::new_v4();
    late.idempotency_key = late.id.to_string();
    metering::write_events(&db, [&events[1], &late])
        .await
        .unwrap();

    // Assert
    let totals = metering::report::ledger_totals(&db, c.tenant, month)
        .await
        .unwrap();
    assert_eq!((totals.requests, totals.tokens), (4, 40));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_running_writer_takes_entries_left_behind_once_they_are_old(pool: PgPool) {
    // Arrange: three events left in the stream by a process that ended before writing them,
    // and one of this process's own.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Left Behind Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let mut month = tessera_core::Month::now();
    for _ in 0..3 {
        let res = m.reserve(c.tenant, &limits, 100).await.unwrap();
        month = res.month;
        let ev = event(&res, 5, 5);
        m.settle(res, &ev).await.unwrap();
    }
    assert_eq!(LedgerWriter::new(db.clone(), r.clone()).forget_own(), 3);
    let res = m.reserve(c.tenant, &limits, 100).await.unwrap();
    let ev = event(&res, 1, 1);
    m.settle(res, &ev).await.unwrap();

    // Act: this process's writer runs, taking entries left behind after 400 ms.
    let mut writer = LedgerWriter::new(db.clone(), r.clone());
    writer.claim_after = std::time::Duration::from_millis(400);
    let stop = tessera_core::shutdown::Shutdown::new();
    let running = tokio::spawn(writer.run(stop.clone(), std::time::Duration::from_secs(5)));
    let requests = || async {
        metering::report::ledger_totals(&db, c.tenant, month)
            .await
            .unwrap()
            .requests
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while requests().await < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let while_running = requests().await;
    stop.trigger();
    running.await.unwrap();

    // Assert: the entries left behind were taken while it ran (not only as it stopped), each
    // once, with its own event; the stream is empty.
    assert_eq!(while_running, 4);
    let totals = metering::report::ledger_totals(&db, c.tenant, month)
        .await
        .unwrap();
    assert_eq!((totals.requests, totals.tokens), (4, 32));
    assert_eq!(metering::handoff_length(&r).await.unwrap(), 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn each_process_writes_the_events_it_settled_from_memory(pool: PgPool) {
    // Arrange: two processes on one Redis (two connections, one key prefix), each settling
    // calls of the same clinic.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Two Servers Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let a = redis().await;
    let b = common::redis_like(&a).await;
    let mut month = tessera_core::Month::now();
    for (r, calls) in [(&a, 3), (&b, 2)] {
        let m = Metering::new(db.clone(), r.clone());
        for _ in 0..calls {
            let res = m.reserve(c.tenant, &limits, 100).await.unwrap();
            month = res.month;
            let ev = event(&res, 2, 3);
            m.settle(res, &ev).await.unwrap();
        }
    }
    assert_eq!(metering::handoff_length(&a).await.unwrap(), 5);

    // Act: the second process's writer drains; then the first's.
    let by_b = LedgerWriter::new(db.clone(), b.clone())
        .drain_all()
        .await
        .unwrap();
    let left_by_b = metering::handoff_length(&a).await.unwrap();
    let by_a = LedgerWriter::new(db.clone(), a.clone())
        .drain_all()
        .await
        .unwrap();

    // Assert: each wrote its own process's events, without reading the other's back from the
    // stream, and removed their entries; the ledger has each call once.
    assert_eq!((by_b, left_by_b, by_a), (2, 3, 3));
    assert_eq!(metering::handoff_length(&a).await.unwrap(), 0);
    let totals = metering::report::ledger_totals(&db, c.tenant, month)
        .await
        .unwrap();
    assert_eq!((totals.requests, totals.tokens), (5, 25));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_of_many_pieces_is_written_whole_and_once(pool: PgPool) {
    // Arrange: two and a half pieces' worth of one clinic's events in the hand-off, then a few
    // of another's; one event of the second piece is in the ledger already (a settle that
    // seemed to fail, written directly).
    let db = app_db(&pool).await;
    let big = clinic(&db, "Busy Clinic").await;
    let small = clinic(&db, "Quiet Clinic").await;
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let many = metering::INSERT_PIECE * 5 / 2;
    let mut month = tessera_core::Month::now();
    let mut written_already = None;
    for (tenant, count) in [(big.tenant, many), (small.tenant, 3)] {
        let limits = metering::limits(&db, tenant).await.unwrap();
        for i in 0..count {
            let res = m.reserve(tenant, &limits, 100).await.unwrap();
            month = res.month;
            let ev = event(&res, 1, 2);
            if tenant == big.tenant && i == metering::INSERT_PIECE + 7 {
                written_already = Some(ev.clone());
            }
            m.settle(res, &ev).await.unwrap();
        }
    }
    metering::write_events(&db, [written_already.as_ref().unwrap()])
        .await
        .unwrap();

    // Act
    let writer = LedgerWriter::new(db.clone(), r.clone());
    assert_eq!(writer.drain_all().await.unwrap(), many + 3);

    // Assert: every event once, in its own clinic.
    for (tenant, count) in [(big.tenant, many), (small.tenant, 3)] {
        let totals = metering::report::ledger_totals(&db, tenant, month)
            .await
            .unwrap();
        assert_eq!(
            (totals.requests, totals.tokens),
            (count as i64, 3 * count as i64)
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_ledger_is_isolated_and_append_only_for_the_app(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Alpha Ledger").await;
    let b = clinic(&db, "Beta Ledger").await;
    let limits = metering::limits(&db, a.tenant).await.unwrap();
    let m = Metering::new(db.clone(), redis().await);
    let res = m.reserve(a.tenant, &limits, 10).await.unwrap();
    let month = res.month;
    let ev = event(&res, 1, 1);
    metering::write_events(&db, &[ev]).await.unwrap();
    m.release(res).await.unwrap();

    assert_eq!(
        metering::report::ledger_totals(&db, b.tenant, month)
            .await
            .unwrap()
            .requests,
        0
    );
    let mut tx = db.begin_tenant(a.tenant).await.unwrap();
    let denied = sqlx::query("UPDATE usage_events SET prompt_tokens = 0")
        .execute(&mut *tx)
        .await;
    assert!(denied.is_err(), "the app role must not rewrite the ledger");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_that_cannot_be_written_is_set_aside_without_blocking_others(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Aside Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let good = m.reserve(c.tenant, &limits, 100).await.unwrap();
    let month = good.month;
    let ev = event(&good, 4, 6);
    m.settle(good, &ev).await.unwrap();
    // An event of a clinic that no longer exists.
    let gone = metering::Reservation {
        id: uuid::Uuid::new_v4(),
        tenant: TenantId::new(),
        month,
        amount: 0,
        started_at: time::OffsetDateTime::now_utc(),
        slice: None,
    };
    let orphan = event(&gone, 1, 1);
    m.settle(gone, &orphan).await.unwrap();

    let writer = LedgerWriter::new(db.clone(), r.clone());
    assert_eq!(writer.drain_all().await.unwrap(), 2);

    let totals = metering::report::ledger_totals(&db, c.tenant, month)
        .await
        .unwrap();
    assert_eq!((totals.requests, totals.tokens), (1, 10));
    let dead: i64 = redis::cmd("XLEN")
        .arg(r.key("ledger-dead"))
        .query_async(&mut r.conn())
        .await
        .unwrap();
    assert_eq!(dead, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_dashboard_splits_a_month_by_model_agent_and_caller(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Dash Clinic").await;
    let agent = agent(&db, &c, "Triage").await;
    let (key, _) = tessera_core::api_keys::create(&db, c.tenant, c.owner(), "Reception")
        .await
        .unwrap();
    let now = metering::now_ms();
    let mk = |model: &str, agent: Option<uuid::Uuid>, user: bool, tokens: i64| {
        let id = uuid::Uuid::new_v4();
        UsageEvent {
            id,
            tenant: c.tenant,
            user: user.then_some(c.owner),
            api_key: (!user).then_some(key.id),
            agent,
            provider: tessera_core::Provider::OpenAi,
            model: model.into(),
            prompt_tokens: tokens,
            completion_tokens: 0,
            cached_tokens: 0,
            cost_micro_usd: 1,
            latency_ms: 1,
            estimated: false,
            streamed: false,
            cancelled: false,
            idempotency_key: id.to_string(),
            kind: Default::default(),
            occurred_at_ms: now,
        }
    };
    let events = [
        mk("gpt-4o-mini", Some(agent.id), true, 10),
        mk("gpt-4o-mini", None, false, 20),
        mk("claude-sonnet-4-0", None, false, 5),
    ];
    metering::write_events(&db, &events).await.unwrap();
    let month = tessera_core::Month::now();

    let by = |b| {
        let db = db.clone();
        async move {
            report::daily_usage(&db, c.tenant, month, b)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.key, r.tokens))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(report::Breakdown::Model).await,
        [
            ("claude-sonnet-4-0".to_string(), 5),
            ("gpt-4o-mini".to_string(), 30)
        ]
    );
    assert_eq!(
        by(report::Breakdown::Agent).await,
        [("No agent".to_string(), 25), ("Triage".to_string(), 10)]
    );
    assert_eq!(
        by(report::Breakdown::Caller).await,
        [
            ("API key Reception".to_string(), 25),
            ("Owner".to_string(), 10)
        ]
    );
    let rows = report::ledger_rows(&db, c.tenant, month).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().any(|r| r.agent.as_deref() == Some("Triage")));
}

#[sqlx::test(migrations = "../migrations")]
async fn calls_through_an_agent_deleted_since_stay_in_the_ledger_under_no_agent(pool: PgPool) {
    // Arrange: a call through an agent in the ledger, the agent deleted by an admin, and a
    // second call through it still in the hand-off (settled before the deletion, written after).
    let db = app_db(&pool).await;
    let c = clinic(&db, "Gone Agent Clinic").await;
    let agent = agent(&db, &c, "Intake").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let through_agent = |reservation: &metering::Reservation, tokens| UsageEvent {
        agent: Some(agent.id),
        user: Some(c.owner),
        ..event(reservation, tokens, 1)
    };
    let writer = LedgerWriter::new(db.clone(), r.clone());
    let first = m.reserve(c.tenant, &limits, 100).await.unwrap();
    let first_event = through_agent(&first, 40);
    m.settle(first, &first_event).await.unwrap();
    writer.drain_all().await.unwrap();
    let second = m.reserve(c.tenant, &limits, 100).await.unwrap();
    let second_event = through_agent(&second, 20);
    m.settle(second, &second_event).await.unwrap();

    // Act
    tessera_core::agents::delete(&db, &common::CHANGES, c.tenant, c.owner(), agent.id)
        .await
        .unwrap();
    writer.drain_all().await.unwrap();

    // Assert: both calls are in the ledger with the agent they were made through, and the
    // reports, which read agents as they are now, show them under no agent.
    let agents: Vec<(uuid::Uuid, Option<uuid::Uuid>)> = db
        .tenant_all(
            c.tenant,
            sqlx::query_as("SELECT id, agent_id FROM usage_events ORDER BY prompt_tokens"),
        )
        .await
        .unwrap();
    assert_eq!(
        agents,
        [
            (second_event.id, Some(agent.id)),
            (first_event.id, Some(agent.id))
        ]
    );
    let month = Month::now();
    let by_agent: Vec<(String, i64)> =
        report::daily_usage(&db, c.tenant, month, report::Breakdown::Agent)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.tokens))
            .collect();
    assert_eq!(by_agent, [("No agent".to_string(), 62)]);
    let rows = report::ledger_rows(&db, c.tenant, month).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.agent.is_none()));
}

#[sqlx::test(migrations = "../migrations")]
async fn one_event_postgres_refuses_never_holds_up_the_others(pool: PgPool) {
    // Arrange: three calls settled together (as calls that answer at once are: their events
    // reach the hand-off as one entry), one of them with a model name Postgres cannot store
    // (a NUL character, which a client can send as a model name).
    let db = app_db(&pool).await;
    let c = clinic(&db, "Poison Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let mut held = Vec::new();
    for model in ["gpt-4o-mini", "bad\u{0}model", "gpt-4o"] {
        let res = m.reserve(c.tenant, &limits, 100).await.unwrap();
        let ev = UsageEvent {
            model: model.into(),
            ..event(&res, 5, 5)
        };
        held.push((m.hold(res), ev));
    }
    for (held, ev) in held {
        held.settle_soon(ev);
    }
    m.settles_done().await;
    let entries: i64 = redis::cmd("XLEN")
        .arg(m.ledger_stream())
        .query_async(&mut r.conn())
        .await
        .unwrap();
    assert_eq!(entries, 1);

    // Act
    let writer = LedgerWriter::new(db.clone(), r.clone());
    assert_eq!(writer.drain_all().await.unwrap(), 3);

    // Assert: the two good events are in the ledger, the bad one is kept for an operator,
    // and the hand-off is empty.
    let month = tessera_core::Month::now();
    let ledger = metering::report::ledger_totals(&db, c.tenant, month)
        .await
        .unwrap();
    assert_eq!(ledger.requests, 2);
    let (dead, entries) = metering::dead_letters(&r, 10).await.unwrap();
    assert_eq!(dead, 1);
    // Only the event Postgres refused, not the others handed over with it.
    assert!(entries[0].1.contains("bad\\u0000model"), "{entries:?}");
    assert!(!entries[0].1.contains("gpt-4o"), "{entries:?}");
    let left: i64 = redis::cmd("XLEN")
        .arg(m.ledger_stream())
        .query_async(&mut r.conn())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rebuild_counts_what_the_handoff_still_holds(pool: PgPool) {
    // Arrange: two settled calls still on their way to the ledger (no writer runs), one
    // already written.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Handoff Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let month = tessera_core::Month::now();
    let written = m.reserve(c.tenant, &limits, 100).await.unwrap();
    let ev = event(&written, 1, 1);
    m.settle(written, &ev).await.unwrap();
    LedgerWriter::new(db.clone(), r.clone())
        .drain_all()
        .await
        .unwrap();
    for _ in 0..2 {
        let res = m.reserve(c.tenant, &limits, 100).await.unwrap();
        let ev = event(&res, 10, 20);
        m.settle(res, &ev).await.unwrap();
    }
    let before = m.month_usage(c.tenant, month).await.unwrap().0;
    assert_eq!((before.tokens, before.requests), (2 + 60, 3));

    // Act: Redis loses the counters (not the hand-off).
    let _: () = redis::cmd("DEL")
        .arg(r.key(&format!("usage:{}:{month}", c.tenant)))
        .query_async(&mut r.conn())
        .await
        .unwrap();

    // Assert: the rebuilt counters hold the ledger and the hand-off, each once.
    let after = m.month_usage(c.tenant, month).await.unwrap().0;
    assert_eq!(after, before);
}

/// Reserves `amount` for a call no per-minute limit counts (a chat reply, an API key of a plan
/// without one): from the process's slice of the allowance when it can.
async fn reserve_call(
    m: &Metering,
    tenant: TenantId,
    limits: &metering::Limits,
    amount: i64,
) -> tessera_core::Result<metering::Reservation> {
    m.reserve_admitted(tenant, None, limits, amount).await
}

#[sqlx::test(migrations = "../migrations")]
async fn calls_reserve_from_a_slice_and_each_is_counted_once(pool: PgPool) {
    // Arrange
    let db = app_db(&pool).await;
    let c = clinic(&db, "Slice Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let month = tessera_core::Month::now();
    m.month_usage(c.tenant, month).await.unwrap();
    let (scripts_before, ops_before) = m.scripts_sent();

    // Act: 40 calls one after another, each reserving 100 and using 10 (every fifth fails
    // and is released).
    let mut used = 0;
    for i in 0..40 {
        let res = reserve_call(&m, c.tenant, &limits, 100).await.unwrap();
        assert!(res.slice.is_some());
        if i % 5 == 4 {
            m.release(res).await.unwrap();
            continue;
        }
        let ev = event(&res, 4, 6);
        m.settle(res, &ev).await.unwrap();
        used += 10;
    }
    let (_, held) = m.month_usage(c.tenant, month).await.unwrap();
    m.return_slices().await.unwrap();
    LedgerWriter::new(db.clone(), r.clone())
        .drain_all()
        .await
        .unwrap();

    // Assert: the slice covered 128 calls' worst case, so the 40 reservations took one round
    // trip (and the failed calls none: their tokens went back into the slice): with the 32
    // settles and the slice given back, 34 operations, one script each. While held, the
    // slice's tokens counted as reserved (a grant of 12,800, less the 32 settled calls' 100
    // each); given back, nothing is.
    let (scripts, ops) = m.scripts_sent();
    assert_eq!(ops - ops_before, 34);
    assert_eq!(scripts - scripts_before, 34);
    assert_eq!(held, 9_600);
    let (usage, reserved) = m.month_usage(c.tenant, month).await.unwrap();
    assert_eq!((usage.tokens, usage.requests, reserved), (used, 32, 0));
    let ledger = report::ledger_totals(&db, c.tenant, month).await.unwrap();
    assert_eq!(ledger, usage);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_slice_running_low_is_topped_up_before_a_call_needs_it(pool: PgPool) {
    // Arrange
    let db = app_db(&pool).await;
    let c = clinic(&db, "Ahead Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let m = Metering::new(db.clone(), redis().await);
    let month = tessera_core::Month::now();
    m.month_usage(c.tenant, month).await.unwrap();
    let call = |m: Metering, limits: metering::Limits| async move {
        let res = reserve_call(&m, c.tenant, &limits, 100).await.unwrap();
        let ev = event(&res, 4, 6);
        m.settle(res, &ev).await.unwrap();
    };

    // Act: 113 calls of 100 one after another; the first reserves a slice of 12,800 and the
    // 113th leaves 1,500 free, less than 16 calls' worth.
    for _ in 0..113 {
        call(m.clone(), limits.clone()).await;
    }
    m.settles_done().await;
    let (_, held) = m.month_usage(c.tenant, month).await.unwrap();
    let (scripts_before, _) = m.scripts_sent();
    for _ in 0..30 {
        call(m.clone(), limits.clone()).await;
    }
    let (scripts, _) = m.scripts_sent();

    // Assert: the 113th call topped the slice up ahead of need (a second grant of 12,800, less
    // the 113 settled calls' 100 each), so the 30 calls after it all took from the slice: one
    // script each, their settles; none reserved in Redis.
    assert_eq!(held, 25_600 - 11_300);
    assert_eq!(scripts - scripts_before, 30);
    m.return_slices().await.unwrap();
    let (usage, reserved) = m.month_usage(c.tenant, month).await.unwrap();
    assert_eq!((usage.tokens, usage.requests, reserved), (1_430, 143, 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn slices_of_two_processes_never_exceed_the_limit(pool: PgPool) {
    // Arrange: two processes (two meterings) sharing one clinic's budget of 1,000,000.
    let db = app_db(&pool).await;
    let c = clinic(&db, "Two Slices Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let processes = [
        Metering::new(db.clone(), r.clone()),
        Metering::new(db.clone(), r.clone()),
    ];

    // Act: 200 calls of 30,000 at once, half through each process; then, with each process's
    // slices given back, 40 more.
    let run = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let m = processes[i % 2].clone();
                let limits = limits.clone();
                tokio::spawn(
                    async move { (i % 2, reserve_call(&m, c.tenant, &limits, 30_000).await) },
                )
            })
            .collect();
        async move {
            let mut admitted = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    (p, Ok(r)) => admitted.push((p, r)),
                    (_, Err(Error::OverBudget { .. })) => {}
                    (_, Err(e)) => panic!("unexpected {e:?}"),
                }
            }
            admitted
        }
    };
    let first = run(200).await;
    for m in &processes {
        m.return_slices().await.unwrap();
    }
    let month = Month::now();
    let (_, after_first) = processes[0].month_usage(c.tenant, month).await.unwrap();
    let more = run(40).await;
    for m in &processes {
        m.return_slices().await.unwrap();
    }
    let (_, after_more) = processes[0].month_usage(c.tenant, month).await.unwrap();

    // Assert: what was admitted never passes the limit, and with the slices given back only
    // the calls hold anything.
    let admitted = (first.len() + more.len()) as i64;
    assert!(admitted <= ALLOWANCE / 30_000, "{admitted} admitted");
    assert!(first.len() >= 20, "{} admitted", first.len());
    assert_eq!(after_first, 30_000 * first.len() as i64);
    assert_eq!(after_more, 30_000 * admitted);
    for (p, res) in first.into_iter().chain(more) {
        processes[p].release(res).await.unwrap();
    }
    for m in &processes {
        m.return_slices().await.unwrap();
    }
    let (_, reserved) = processes[0].month_usage(c.tenant, month).await.unwrap();
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_near_the_limit_is_admitted_with_the_slice_given_back(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Near Limit Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let m = Metering::new(db.clone(), redis().await);

    // A small call leaves its slice holding 127 more such calls' worth free...
    let small = reserve_call(&m, c.tenant, &limits, 1_000).await.unwrap();
    let ev = event(&small, 10, 10);
    m.settle(small, &ev).await.unwrap();
    // ...which a call needing all the rest of the month gets back: it is admitted.
    let big = reserve_call(&m, c.tenant, &limits, ALLOWANCE - 20)
        .await
        .unwrap();
    assert!(matches!(
        reserve_call(&m, c.tenant, &limits, 1).await,
        Err(Error::OverBudget { .. })
    ));
    m.release(big).await.unwrap();
    m.return_slices().await.unwrap();
    let (usage, reserved) = m.month_usage(c.tenant, Month::now()).await.unwrap();
    assert_eq!((usage.tokens, reserved), (20, 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_idle_slice_is_given_back_by_itself(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Idle Slice Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let m = Metering::new(db.clone(), redis().await);

    let res = reserve_call(&m, c.tenant, &limits, 1_000).await.unwrap();
    let ev = event(&res, 10, 10);
    m.settle(res, &ev).await.unwrap();
    assert!(m.month_usage(c.tenant, Month::now()).await.unwrap().1 > 0);

    // A second or so without a call, and the slice is back.
    let mut reserved = -1;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reserved = m.month_usage(c.tenant, Month::now()).await.unwrap().1;
        if reserved == 0 {
            break;
        }
    }
    assert_eq!(reserved, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_slice_redis_lost_is_not_relied_on(pool: PgPool) {
    // Arrange: a slice taken, then Redis loses the clinic's counters (a restart without
    // persistence).
    let db = app_db(&pool).await;
    let c = clinic(&db, "Lost Slice Clinic").await;
    let limits = metering::limits(&db, c.tenant).await.unwrap();
    let r = redis().await;
    let m = Metering::new(db.clone(), r.clone());
    let first = reserve_call(&m, c.tenant, &limits, 1_000).await.unwrap();
    let slice = first.slice;
    let month = first.month;
    let _: () = redis::cmd("DEL")
        .arg(r.key(&format!("usage:{}:{month}", c.tenant)))
        .query_async(&mut r.conn())
        .await
        .unwrap();

    // Act: the call settles; the next one reserves.
    let ev = event(&first, 10, 10);
    m.settle(first, &ev).await.unwrap();
    let next = reserve_call(&m, c.tenant, &limits, 1_000).await.unwrap();

    // Assert: the next call did not take from the lost slice, but reserved in Redis again
    // (with counters rebuilt from the ledger and the hand-off: the first call is in them).
    assert_ne!(next.slice, slice);
    m.release(next).await.unwrap();
    m.return_slices().await.unwrap();
    let (usage, reserved) = m.month_usage(c.tenant, month).await.unwrap();
    assert_eq!((usage.tokens, usage.requests, reserved), (20, 1, 0));
}
