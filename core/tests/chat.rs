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

#[sqlx::test(migrations = "../migrations")]
async fn replies_are_regenerated_edited_stopped_rated_and_found(pool: PgPool) {
    // Arrange: a conversation with a complete reply.
    let db = app_db(&pool).await;
    let a = clinic(&db, "Actions Clinic").await;
    let colleague = member(&db, &a, "colleague@actions.example.com", Role::Admin).await;
    let agent = agents::create(&db, &CHANGES, a.tenant, a.owner(), &input("Front Desk"))
        .await
        .unwrap();
    let owner = Chatter {
        tenant: a.tenant,
        user: a.owner,
    };
    let other = Chatter {
        tenant: a.tenant,
        user: colleague,
    };
    let (conv, reply) = chat::start(&db, owner, agent.id, "Opening hours?")
        .await
        .unwrap();
    chat::claim(&db, owner, reply).await.unwrap();
    assert!(chat::save_progress(&db, a.tenant, reply, "We open")
        .await
        .unwrap());
    chat::finish(
        &db,
        a.tenant,
        reply,
        "We open on Saturday from 9 to 12, 100% of weeks.",
        ReplyEnd::Complete,
        None,
    )
    .await
    .unwrap();

    // Search: by title, by a word in a message (with the text around it), literally.
    let found = chat::search(&db, owner, "hours").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].snippet, None, "the title matched");
    let found = chat::search(&db, owner, "SATURDAY").await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .snippet
            .as_deref()
            .unwrap()
            .contains("Saturday from 9"),
        "{:?}",
        found[0].snippet
    );
    assert_eq!(chat::search(&db, owner, "100%").await.unwrap().len(), 1);
    assert!(chat::search(&db, owner, "1_0").await.unwrap().is_empty());
    assert!(chat::search(&db, owner, "Sunday").await.unwrap().is_empty());
    assert!(chat::search(&db, other, "Saturday")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(chat::search(&db, owner, " ").await.unwrap().len(), 1);

    // Rating: the person's own ended replies only; admins see counts and comments per agent.
    assert!(matches!(
        chat::rate(&db, other, reply, Some(chat::Rating::Down), "").await,
        Err(Error::NotFound)
    ));
    chat::rate(
        &db,
        owner,
        reply,
        Some(chat::Rating::Up),
        "  Exactly right  ",
    )
    .await
    .unwrap();
    let feedback = chat::feedback_by_agent(&db, a.tenant).await.unwrap();
    assert_eq!(feedback.len(), 1);
    assert_eq!(feedback[0].agent_name.as_deref(), Some("Front Desk"));
    assert_eq!((feedback[0].up, feedback[0].down), (1, 0));
    assert_eq!(feedback[0].comments[0].comment, "Exactly right");
    let (_, messages) = chat::get(&db, owner, conv).await.unwrap();
    assert_eq!(messages[1].rating, Some(chat::Rating::Up));
    assert!(matches!(
        chat::rate(&db, owner, reply, Some(chat::Rating::Up), &"x".repeat(2001)).await,
        Err(Error::Invalid(_))
    ));
    chat::rate(&db, owner, reply, None, "ignored")
        .await
        .unwrap();
    assert!(chat::feedback_by_agent(&db, a.tenant)
        .await
        .unwrap()
        .is_empty());

    // Regenerate: the last reply makes way for a pending one; the history is the question.
    assert!(matches!(
        chat::regenerate(&db, other, conv).await,
        Err(Error::NotFound)
    ));
    let again = chat::regenerate(&db, owner, conv).await.unwrap();
    assert_ne!(again, reply);
    let (_, messages) = chat::get(&db, owner, conv).await.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].id, again);
    assert_eq!(messages[1].status, MessageStatus::Pending);
    assert!(matches!(
        chat::regenerate(&db, owner, conv).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        chat::rate(&db, owner, again, Some(chat::Rating::Up), "").await,
        Err(Error::Invalid(_))
    ));

    // Stop: the reply keeps what was generated; its generator learns at its next save.
    chat::claim(&db, owner, again).await.unwrap();
    assert!(matches!(
        chat::stop(&db, other, again).await,
        Err(Error::NotFound)
    ));
    chat::stop(&db, owner, again).await.unwrap();
    assert!(!chat::save_progress(&db, a.tenant, again, "We o")
        .await
        .unwrap());
    let progress = chat::progress(&db, owner, again).await.unwrap();
    assert_eq!(progress.status, MessageStatus::Stopped);

    // Edit the last question and resend: one question (edited), one pending reply.
    assert!(matches!(
        chat::edit_last(&db, owner, conv, "  ").await,
        Err(Error::Invalid(_))
    ));
    let edited = chat::edit_last(&db, owner, conv, "Opening hours on Sunday?")
        .await
        .unwrap();
    let (_, messages) = chat::get(&db, owner, conv).await.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].content, "Opening hours on Sunday?");
    assert_eq!(messages[1].id, edited);
    let pending = chat::claim(&db, owner, edited).await.unwrap();
    assert_eq!(pending.history.len(), 1);
    assert_eq!(pending.history[0].content, "Opening hours on Sunday?");
}

#[test]
fn snippets_show_the_words_in_their_context() {
    let text = format!(
        "{} the Saturday clinic {}",
        "before ".repeat(20),
        "after ".repeat(30)
    );
    let s = chat::snippet(&text, "saturday");
    assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
    assert!(s.contains("the Saturday clinic"), "{s}");
    assert_eq!(chat::snippet("short text", "short"), "short text");
}
