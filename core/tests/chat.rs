//! Agents and conversations against the real Postgres: the plan's agent limit, and privacy.

mod common;

use common::{app_db, clinic, member, CHANGES};
use sqlx::PgPool;
use tessera_core::agents::{self, AgentInput};
use tessera_core::chat::{self, Chatter};
use tessera_core::{Error, MessageStatus, ReplyEnd, Role};

fn input(name: &str) -> AgentInput {
    AgentInput {
        name: name.into(),
        model: "gpt-4o-mini".into(),
        system_prompt: "You help the front desk.".into(),
        ..Default::default()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_plan_limits_how_many_agents_a_clinic_has(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Agent Clinic").await;
    for i in 0..3 {
        let a = agents::create(&db, &CHANGES, c.tenant, c.owner(), &input("Front desk"))
            .await
            .unwrap();
        assert_eq!(
            a.slug,
            if i == 0 {
                "front-desk".to_string()
            } else {
                format!("front-desk-{}", i + 1)
            }
        );
    }
    let err = agents::create(&db, &CHANGES, c.tenant, c.owner(), &input("Fourth"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::PlanLimit(m) if m.contains("Starter plan allows 3 agents") && m.contains("Billing")),
        "{err:?}"
    );

    // Staff may not manage agents.
    let staff = member(&db, &c, "nurse@agent.example.com", Role::Staff).await;
    let actor = tessera_core::auth::members::Actor {
        user: staff,
        role: Role::Staff,
    };
    let first = &agents::list(&db, c.tenant).await.unwrap()[0];
    assert!(matches!(
        agents::delete(&db, &CHANGES, c.tenant, actor, first.id).await,
        Err(Error::Forbidden(_))
    ));
    agents::delete(&db, &CHANGES, c.tenant, c.owner(), first.id)
        .await
        .unwrap();
    agents::create(&db, &CHANGES, c.tenant, c.owner(), &input("Fourth"))
        .await
        .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn conversations_are_private_to_the_person_who_started_them(pool: PgPool) {
    // Arrange: an owner's conversation; a colleague in the same clinic; someone in another.
    let db = app_db(&pool).await;
    let a = clinic(&db, "Private Clinic").await;
    let b = clinic(&db, "Other Clinic").await;
    let colleague = member(&db, &a, "colleague@private.example.com", Role::Admin).await;
    let agent = agents::create(&db, &CHANGES, a.tenant, a.owner(), &input("Helper"))
        .await
        .unwrap();
    let owner = Chatter {
        tenant: a.tenant,
        user: a.owner,
    };
    let (conv, reply) = chat::start(&db, owner, agent.id, "Patient in room 4 needs a follow-up")
        .await
        .unwrap();

    // Act and assert: only the owner sees or touches it.
    let (c, messages) = chat::get(&db, owner, conv).await.unwrap();
    assert_eq!(c.title, "Patient in room 4 needs a follow-up");
    assert_eq!(messages.len(), 2);
    for who in [
        Chatter {
            tenant: a.tenant,
            user: colleague,
        },
        Chatter {
            tenant: b.tenant,
            user: b.owner,
        },
        Chatter {
            tenant: b.tenant,
            user: a.owner,
        },
    ] {
        assert!(matches!(
            chat::get(&db, who, conv).await,
            Err(Error::NotFound)
        ));
        assert!(chat::list(&db, who).await.unwrap().is_empty());
        assert!(matches!(
            chat::post(&db, who, conv, "hi").await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            chat::claim(&db, who, reply).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            chat::rename(&db, who, conv, "x").await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            chat::delete(&db, who, conv).await,
            Err(Error::NotFound)
        ));
    }

    // A reply is generated once.
    let pending = chat::claim(&db, owner, reply).await.unwrap();
    assert_eq!(pending.history.len(), 1);
    // While it is generated, the conversation says so (a page opened meanwhile waits for it),
    // and nobody can claim it again.
    let (_, messages) = chat::get(&db, owner, conv).await.unwrap();
    assert_eq!(messages.last().unwrap().status, MessageStatus::Generating);
    assert!(matches!(
        chat::claim(&db, owner, reply).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        chat::post(&db, owner, conv, "another question").await,
        Err(Error::Conflict(_))
    ));
    chat::finish(
        &db,
        a.tenant,
        reply,
        "Booked for Tuesday.",
        ReplyEnd::Complete,
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        chat::claim(&db, owner, reply).await,
        Err(Error::Conflict(_))
    ));
    chat::rename(&db, owner, conv, "Room 4 follow-up")
        .await
        .unwrap();
    assert_eq!(
        chat::list(&db, owner).await.unwrap()[0].title,
        "Room 4 follow-up"
    );
    chat::delete(&db, owner, conv).await.unwrap();
    assert!(chat::list(&db, owner).await.unwrap().is_empty());
}
