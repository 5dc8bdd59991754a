//! The operator scope, feature flags and the audit log: operators (made by the CLI's
//! `operator::add`) read every clinic and change its status and plan; flags change as versions
//! with history and rollback and reach the cache; every audited action writes its entry, and
//! the application role can never alter one.

mod common;

use std::time::{Duration, Instant};

use common::{app_db, clinic, member, CHANGES, MASTER};
use serde_json::json;
use sqlx::PgPool;
use tessera_core::agents::{self, AgentInput};
use tessera_core::audit::{self, Filter};
use tessera_core::flags::{self, FlagInput, Flags};
use tessera_core::operator::{self, Added};
use tessera_core::provider_keys::{self, KeyInput};
use tessera_core::{api_keys, auth, metering, Changes, Db, PlanId, Provider, Role, UserId};

/// Makes `email` an operator the way `server operator add` does, returning the account.
async fn operator(pool: &PgPool, db: &Db, email: &str) -> UserId {
    match operator::add(pool, email).await.unwrap() {
        Added::Created { password } => {
            assert!(password.len() >= 20);
            auth::authenticate(db, email, &password).await.unwrap()
        }
        other => panic!("{other:?}"),
    }
}

fn all() -> Filter {
    Filter {
        limit: 1000,
        ..Default::default()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn only_operators_see_across_clinics(pool: PgPool) {
    let db = app_db(&pool).await;
    let north = clinic(&db, "North").await;
    let south = clinic(&db, "South").await;
    let op = operator(&pool, &db, "ops@tessera.example").await;
    assert!(matches!(
        operator::add(&pool, "ops@tessera.example").await.unwrap(),
        Added::Already
    ));
    // An existing account becomes one without a new password.
    assert!(matches!(
        operator::add(&pool, &north.email).await.unwrap(),
        Added::Existing
    ));
    assert!(operator::is_operator(&db, op).await.unwrap());

    let listed = operator::clinics(&db, op, "").await.unwrap();
    assert_eq!(listed.len(), 2);
    let found = operator::clinics(&db, op, "sou").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, south.tenant);
    assert_eq!(found[0].members, 1);
    let detail = operator::clinic(&db, op, north.tenant).await.unwrap();
    assert_eq!(detail.members[0].email, north.email);

    // The same scope for someone who is not an operator shows nothing, and changes nothing.
    let stranger = member(&db, &south, "staff@south.example", Role::Staff).await;
    assert!(!operator::is_operator(&db, stranger).await.unwrap());
    assert!(operator::clinics(&db, stranger, "")
        .await
        .unwrap()
        .is_empty());
    assert!(
        operator::set_active(&db, &CHANGES, stranger, north.tenant, false)
            .await
            .is_err()
    );
    assert!(flags::update(
        &db,
        &CHANGES,
        stranger,
        "streaming_enabled",
        1,
        &FlagInput {
            default: "false".into(),
            ..Default::default()
        }
    )
    .await
    .is_err());
    let (f, _) = flags::history(&db, "streaming_enabled").await.unwrap();
    assert_eq!((f.version, f.default.clone()), (1, json!(true)));
}

#[sqlx::test(migrations = "../migrations")]
async fn flags_change_as_versions_and_roll_back(pool: PgPool) {
    let db = app_db(&pool).await;
    let north = clinic(&db, "North").await;
    let south = clinic(&db, "South").await;
    let op = operator(&pool, &db, "ops@tessera.example").await;
    // A cache that follows announcements, as every replica's does.
    let changes = Changes::local();
    let cache = Flags::new(db.clone(), &changes);
    cache.reload().await.unwrap();
    assert!(cache.for_clinic(north.tenant, PlanId::Starter).streaming);

    let input = FlagInput {
        description: "Replies stream.".into(),
        default: "true".into(),
        rules: format!("clinic {} = false", north.slug),
        ..Default::default()
    };
    let v2 = flags::update(&db, &changes, op, "streaming_enabled", 1, &input)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    // Applied by the cache within a second of the announcement.
    let started = Instant::now();
    while cache.for_clinic(north.tenant, PlanId::Starter).streaming {
        assert!(started.elapsed() < Duration::from_secs(1), "not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache.for_clinic(south.tenant, PlanId::Starter).streaming);

    // Editing an old version is refused; a bad rule says which line.
    let stale = flags::update(&db, &changes, op, "streaming_enabled", 1, &input).await;
    assert!(
        matches!(stale, Err(tessera_core::Error::Conflict(_))),
        "{stale:?}"
    );
    let bad = FlagInput {
        default: "true".into(),
        rules: "clinic nowhere = false".into(),
        ..Default::default()
    };
    let e = flags::update(&db, &changes, op, "streaming_enabled", 2, &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("nowhere"), "{e}");

    // The kill switch gives everyone the default.
    flags::set_enabled(&db, &changes, op, "streaming_enabled", false)
        .await
        .unwrap();
    let (f, history) = flags::history(&db, "streaming_enabled").await.unwrap();
    assert_eq!(f.version, 3);
    assert!(f.evaluate(north.tenant, PlanId::Starter).value == json!(true));
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].changed_by, "ops@tessera.example");

    // Rolling back to version 1 makes a version 4 equal to it.
    let back = flags::rollback(&db, &changes, op, "streaming_enabled", 1)
        .await
        .unwrap();
    assert_eq!(back.version, 4);
    assert!(back.enabled && back.rules.is_empty());
    let (_, history) = flags::history(&db, "streaming_enabled").await.unwrap();
    assert_eq!(history[0].note, "rolled back to version 1");

    // The preview counts clinics per value and names one clinic's.
    let preview = flags::preview(
        &db,
        op,
        "streaming_enabled",
        &FlagInput {
            default: "true".into(),
            rules: format!("clinic {} = false", south.slug),
            ..Default::default()
        },
        &south.slug,
    )
    .await
    .unwrap();
    assert_eq!(preview.clinics, 2);
    assert!(preview.counts.contains(&(json!(false), 1)));
    assert_eq!(preview.clinic.unwrap().1.value, json!(false));

    // A new flag; its key is unique.
    let created = flags::create(
        &db,
        &changes,
        op,
        &FlagInput {
            key: "new_editor".into(),
            kind: "integer".into(),
            default: "3".into(),
            rules: "plan professional = 5\n50% = 4".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(created.rules.len(), 2);
    let again = flags::create(
        &db,
        &changes,
        op,
        &FlagInput {
            key: "new_editor".into(),
            kind: "integer".into(),
            default: "3".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(again, Err(tessera_core::Error::Conflict(_))));

    // Every change is in the platform's audit log, with the state before and after.
    let entries = audit::list_all(&db, op, &all()).await.unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .filter(|e| e.action.starts_with("flag."))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "flag.created",
            "flag.rolled_back",
            "flag.switched_off",
            "flag.updated"
        ]
    );
    let updated = entries.iter().find(|e| e.action == "flag.updated").unwrap();
    assert_eq!(updated.before.as_ref().unwrap()["version"], 1);
    assert_eq!(updated.after.as_ref().unwrap()["version"], 2);
    assert_eq!(updated.actor_label, "ops@tessera.example");
    assert_eq!(updated.tenant_id, None);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_audited_action_writes_its_entry(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "North").await;
    let owner = c.owner();
    let op = operator(&pool, &db, "ops@tessera.example").await;

    let key = |secret: &'static str| KeyInput {
        provider: Provider::OpenAi,
        secret,
        base_url: "",
    };
    provider_keys::set(
        &db,
        &CHANGES,
        &MASTER,
        c.tenant,
        owner,
        key("sk-test-aaaa1111"),
        true,
    )
    .await
    .unwrap();
    provider_keys::set(
        &db,
        &CHANGES,
        &MASTER,
        c.tenant,
        owner,
        key("sk-test-bbbb2222"),
        true,
    )
    .await
    .unwrap();
    provider_keys::delete(&db, &CHANGES, c.tenant, owner, Provider::OpenAi)
        .await
        .unwrap();
    let (k, token) = api_keys::create(&db, c.tenant, owner, "Front desk")
        .await
        .unwrap();
    api_keys::revoke(&db, &CHANGES, c.tenant, owner, k.id)
        .await
        .unwrap();
    let staff = member(&db, &c, "sam@north.example", Role::Staff).await;
    auth::members::change_role(&db, c.tenant, owner, staff, Role::Admin)
        .await
        .unwrap();
    auth::members::remove(&db, c.tenant, owner, staff)
        .await
        .unwrap();
    let input = AgentInput {
        name: "Front desk".into(),
        system_prompt: "Be kind.".into(),
        ..Default::default()
    };
    let agent = agents::create(&db, &CHANGES, c.tenant, owner, &input)
        .await
        .unwrap();
    assert_eq!(agent.model, "", "no model: the clinic's default model");
    let edited = AgentInput {
        system_prompt: "Be brief.".into(),
        ..input
    };
    agents::update(&db, &CHANGES, c.tenant, owner, agent.id, &edited)
        .await
        .unwrap();
    agents::delete(&db, &CHANGES, c.tenant, owner, agent.id)
        .await
        .unwrap();
    operator::set_plan(&db, &CHANGES, op, c.tenant, PlanId::Enterprise)
        .await
        .unwrap();
    metering::set_spending_cap(&db, &CHANGES, c.tenant, owner, Some(5_000_000))
        .await
        .unwrap();
    operator::set_active(&db, &CHANGES, op, c.tenant, false)
        .await
        .unwrap();
    operator::set_active(&db, &CHANGES, op, c.tenant, true)
        .await
        .unwrap();
    auth::accounts::audit_sign_in(&db, &c.email, Ok((c.owner, Some(c.tenant))))
        .await
        .unwrap();
    auth::accounts::audit_sign_in(&db, &c.email, Err(()))
        .await
        .unwrap();
    auth::accounts::audit_sign_in(&db, "nobody@nowhere.example", Err(()))
        .await
        .unwrap();

    let entries = audit::list(&db, c.tenant, Role::Owner, &all())
        .await
        .unwrap();
    let mut actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            "provider_key.added",
            "provider_key.replaced",
            "provider_key.deleted",
            "api_key.created",
            "api_key.revoked",
            "invitation.created",
            "member.joined",
            "member.role_changed",
            "member.removed",
            "agent.created",
            "agent.updated",
            "agent.deleted",
            "clinic.plan_set",
            "billing.spending_cap_changed",
            "clinic.deactivated",
            "clinic.activated",
            "sign_in.succeeded",
            "sign_in.failed",
        ]
    );
    // Who, and what changed; never a secret.
    let replaced = entries
        .iter()
        .find(|e| e.action == "provider_key.replaced")
        .unwrap();
    assert_eq!(replaced.actor_label, c.email);
    assert_eq!(replaced.after.as_ref().unwrap()["last_four"], "2222");
    let text = format!("{entries:?}");
    assert!(!text.contains("sk-test-aaaa1111") && !text.contains("sk-test-bbbb2222"));
    assert!(!text.contains(&token));
    let role = entries
        .iter()
        .find(|e| e.action == "member.role_changed")
        .unwrap();
    assert_eq!(role.target, "sam@north.example");
    assert_eq!(role.before.as_ref().unwrap()["role"], "staff");
    assert_eq!(role.after.as_ref().unwrap()["role"], "admin");
    let updated = entries
        .iter()
        .find(|e| e.action == "agent.updated")
        .unwrap();
    assert_eq!(updated.before.as_ref().unwrap()["instructions"], "Be kind.");
    assert_eq!(updated.after.as_ref().unwrap()["instructions"], "Be brief.");
    let deactivated = entries
        .iter()
        .find(|e| e.action == "clinic.deactivated")
        .unwrap();
    assert_eq!(
        (
            deactivated.actor_kind.as_str(),
            deactivated.actor_label.as_str()
        ),
        ("operator", "ops@tessera.example")
    );

    // Filters: by person, kind and date.
    let by_kind = Filter::parse("", "member", "", "", 100).unwrap();
    assert_eq!(
        audit::list(&db, c.tenant, Role::Owner, &by_kind)
            .await
            .unwrap()
            .len(),
        3
    );
    let by_person = Filter::parse("ops@", "", "", "", 100).unwrap();
    assert_eq!(
        audit::list(&db, c.tenant, Role::Owner, &by_person)
            .await
            .unwrap()
            .len(),
        3
    );
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
    let later = Filter {
        from: Some(tomorrow),
        ..all()
    };
    assert!(audit::list(&db, c.tenant, Role::Owner, &later)
        .await
        .unwrap()
        .is_empty());
    assert!(Filter::parse("", "", "yesterday", "", 10).is_err());
    assert!(Filter::parse("", "secrets", "", "", 10).is_err());
    // Staff may not read it.
    assert!(audit::list(&db, c.tenant, Role::Staff, &all())
        .await
        .is_err());
    // The failed sign-in of an unknown account is platform-wide: operators see it.
    let platform = audit::list_all(&db, op, &all()).await.unwrap();
    assert!(platform.iter().any(|e| e.action == "sign_in.failed"
        && e.target == "nobody@nowhere.example"
        && e.tenant_id.is_none()));
    assert!(platform.iter().any(|e| e.action == "operator.added"));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_app_role_cannot_alter_the_audit_log(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "North").await;
    api_keys::create(&db, c.tenant, c.owner(), "Front desk")
        .await
        .unwrap();
    let op = operator(&pool, &db, "ops@tessera.example").await;
    for scope in ["tenant", "operator", "none"] {
        for sql in [
            "UPDATE audit_log SET target = 'nothing happened'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ] {
            let mut tx = match scope {
                "tenant" => db.begin_tenant(c.tenant).await.unwrap(),
                "operator" => db.begin_operator(op).await.unwrap(),
                _ => db.pool().begin().await.unwrap(),
            };
            let e = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
            let code = e
                .as_database_error()
                .and_then(|d| d.code())
                .unwrap_or_default();
            assert_eq!(code, "42501", "{scope}: {sql}: {e}");
        }
    }
    // Another clinic's admins see none of this clinic's entries.
    let other = clinic(&db, "South").await;
    let theirs = audit::list(&db, other.tenant, Role::Owner, &all())
        .await
        .unwrap();
    assert!(theirs.iter().all(|e| e.tenant_id == Some(other.tenant)));
    let mut tx = db.begin_tenant(other.tenant).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE tenant_id = $1")
        .bind(c.tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_enterprise_clinic_gets_limits_of_its_own(pool: PgPool) {
    use tessera_core::operator::OwnLimits;
    let db = app_db(&pool).await;
    let c = clinic(&db, "North").await;
    let op = operator(&pool, &db, "ops@tessera.example").await;
    // Without limits of its own a clinic has its plan's.
    let plan = metering::limits(&db, c.tenant).await.unwrap();
    assert_eq!(
        (plan.requests_per_minute, plan.key_requests_per_minute),
        (Some(600), Some(300))
    );
    let limits = OwnLimits::parse("1,000,000", "10", "1", "50").unwrap();
    // Only on Enterprise.
    let refused = operator::set_limits(&db, &CHANGES, op, c.tenant, limits).await;
    assert!(
        matches!(refused, Err(tessera_core::Error::Invalid(ref m)) if m.contains("Enterprise")),
        "{refused:?}"
    );
    operator::set_plan(&db, &CHANGES, op, c.tenant, PlanId::Enterprise)
        .await
        .unwrap();
    let unlimited = metering::limits(&db, c.tenant).await.unwrap();
    assert_eq!(unlimited.included_tokens, None);
    assert_eq!(agents::max_agents(&db, c.tenant).await.unwrap(), None);

    operator::set_limits(&db, &CHANGES, op, c.tenant, limits)
        .await
        .unwrap();
    let l = metering::limits(&db, c.tenant).await.unwrap();
    assert_eq!(l.included_tokens, Some(1_000_000));
    assert_eq!(l.token_limit(), Some(1_000_000));
    assert_eq!(
        (l.requests_per_minute, l.key_requests_per_minute),
        (Some(10), Some(5))
    );
    assert_eq!(agents::max_agents(&db, c.tenant).await.unwrap(), Some(1));
    let storage = tessera_core::knowledge::storage(&db, c.tenant)
        .await
        .unwrap();
    assert_eq!(storage.limit_bytes, Some(50_000_000));
    let input = AgentInput {
        name: "One".into(),
        ..Default::default()
    };
    agents::create(&db, &CHANGES, c.tenant, c.owner(), &input)
        .await
        .unwrap();
    let second = agents::create(
        &db,
        &CHANGES,
        c.tenant,
        c.owner(),
        &AgentInput {
            name: "Two".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(second, Err(tessera_core::Error::PlanLimit(_))),
        "{second:?}"
    );
    // Another clinic's busy log does not crowd this clinic's out of its detail.
    let other = clinic(&db, "South").await;
    for i in 0..25 {
        api_keys::create(&db, other.tenant, other.owner(), &format!("key {i}"))
            .await
            .unwrap();
    }
    let detail = operator::clinic(&db, op, c.tenant).await.unwrap();
    assert!(detail.recent.iter().all(|e| e.tenant_id == Some(c.tenant)));
    assert_eq!(detail.clinic.limits, limits);
    assert!(detail
        .recent
        .iter()
        .any(|e| e.action == "clinic.limits_set"));

    // Bad input says what to fix; leaving the plan clears the limits.
    let bad = OwnLimits::parse("lots", "", "", "")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("Tokens a month"), "{bad}");
    assert!(OwnLimits::parse("", "0", "", "").is_err());
    operator::set_plan(&db, &CHANGES, op, c.tenant, PlanId::Professional)
        .await
        .unwrap();
    let l = metering::limits(&db, c.tenant).await.unwrap();
    assert_eq!(l.included_tokens, Some(10_000_000));
    assert_eq!(
        operator::clinic(&db, op, c.tenant)
            .await
            .unwrap()
            .clinic
            .limits,
        OwnLimits::default()
    );
}
