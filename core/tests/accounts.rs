//! Sign-up, sign-in, members and invitations against the real Postgres, as the app role.

mod common;

use common::{app_db, clinic, member, PASSWORD};
use sqlx::PgPool;
use tessera_core::auth::members::{self, Actor};
use tessera_core::auth::{self, invitations, password};
use tessera_core::{Error, Role};

#[sqlx::test(migrations = "../migrations")]
async fn sign_up_creates_a_clinic_with_its_owner(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Harbour Family Clinic").await;

    let memberships = auth::memberships(&db, c.owner).await.unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].role, Role::Owner);
    assert_eq!(memberships[0].tenant.name, "Harbour Family Clinic");
    assert_eq!(memberships[0].tenant.slug, "harbour-family-clinic");
    assert!(memberships[0].tenant.active);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_same_clinic_name_gets_a_distinct_slug(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Main Street").await;
    let (owner, _) = auth::sign_up(
        &db,
        auth::SignUp {
            clinic_name: "Main Street",
            name: "B",
            email: "b@example.com",
            password: PASSWORD,
        },
    )
    .await
    .unwrap();
    let slug_a = &auth::memberships(&db, a.owner).await.unwrap()[0]
        .tenant
        .slug;
    let slug_b = &auth::memberships(&db, owner).await.unwrap()[0].tenant.slug;
    assert_eq!(slug_a, "main-street");
    assert!(
        slug_b.starts_with("main-street-") && slug_b != slug_a,
        "{slug_b}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn duplicate_email_is_refused_whatever_its_case(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let err = auth::sign_up(
        &db,
        auth::SignUp {
            clinic_name: "Other",
            name: "X",
            email: &c.email.to_uppercase(),
            password: PASSWORD,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Conflict(ref m) if m.contains("already exists")),
        "{err:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn weak_password_is_refused_with_the_rule(pool: PgPool) {
    let db = app_db(&pool).await;
    let err = auth::sign_up(
        &db,
        auth::SignUp {
            clinic_name: "Alpha",
            name: "X",
            email: "x@example.com",
            password: "short",
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert!(err.to_string().contains(password::RULE));
}

#[sqlx::test(migrations = "../migrations")]
async fn sign_in_fails_the_same_way_for_a_wrong_password_and_an_unknown_email(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;

    assert_eq!(
        auth::authenticate(&db, &c.email.to_uppercase(), PASSWORD)
            .await
            .unwrap(),
        c.owner
    );
    let wrong = auth::authenticate(&db, &c.email, "not the password")
        .await
        .unwrap_err();
    let unknown = auth::authenticate(&db, "nobody@example.com", PASSWORD)
        .await
        .unwrap_err();
    let garbage = auth::authenticate(&db, "not an email", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert_eq!(wrong.to_string(), garbage.to_string());
    assert!(matches!(wrong, Error::Unauthenticated(_)));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_invitation_works_once(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let inv = invitations::create(
        &db,
        c.tenant,
        c.owner(),
        "Nurse@Example.com",
        Role::Staff,
        time::Duration::days(1),
    )
    .await
    .unwrap();

    let view = invitations::lookup(&db, &inv.token).await.unwrap();
    assert_eq!(view.clinic_name, "Alpha");
    assert_eq!(view.role, Role::Staff);

    let (nurse, tenant) = invitations::accept(&db, &inv.token, "Nurse Joy", PASSWORD)
        .await
        .unwrap();
    assert_eq!(tenant, c.tenant);
    assert_eq!(
        auth::authenticate(&db, "nurse@example.com", PASSWORD)
            .await
            .unwrap(),
        nurse
    );

    let again = invitations::accept(&db, &inv.token, "Mallory", "another password!")
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::Gone(ref m) if m == invitations::USED),
        "{again:?}"
    );
    assert!(matches!(
        invitations::lookup(&db, &inv.token).await,
        Err(Error::Gone(_))
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expired_invitation_is_refused(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let inv = invitations::create(
        &db,
        c.tenant,
        c.owner(),
        "late@example.com",
        Role::Staff,
        time::Duration::days(1),
    )
    .await
    .unwrap();
    let mut tx = db.begin_tenant(c.tenant).await.unwrap();
    sqlx::query("UPDATE invitations SET expires_at = now() - interval '1 second'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let err = invitations::accept(&db, &inv.token, "Late", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Gone(ref m) if m == invitations::EXPIRED),
        "{err:?}"
    );
    assert!(matches!(err, Error::Gone(_)));
    assert!(
        auth::authenticate(&db, "late@example.com", PASSWORD)
            .await
            .is_err(),
        "no account was made"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn reinviting_withdraws_the_older_link(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let first = invitations::create(
        &db,
        c.tenant,
        c.owner(),
        "a@example.com",
        Role::Staff,
        time::Duration::days(1),
    )
    .await
    .unwrap();
    let second = invitations::create(
        &db,
        c.tenant,
        c.owner(),
        "A@example.com",
        Role::Admin,
        time::Duration::days(1),
    )
    .await
    .unwrap();
    assert!(
        matches!(invitations::lookup(&db, &first.token).await, Err(Error::Gone(ref m)) if m == invitations::REVOKED)
    );
    assert_eq!(
        invitations::lookup(&db, &second.token).await.unwrap().role,
        Role::Admin
    );
    assert_eq!(
        invitations::pending(&db, c.tenant, c.owner())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        invitations::lookup(&db, "made-up-token").await,
        Err(Error::NotFound)
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_existing_account_joins_a_second_clinic_with_its_own_password(pool: PgPool) {
    let db = app_db(&pool).await;
    let a = clinic(&db, "Alpha").await;
    let b = clinic(&db, "Beta").await;
    let inv = invitations::create(
        &db,
        b.tenant,
        b.owner(),
        &a.email,
        Role::Admin,
        time::Duration::days(1),
    )
    .await
    .unwrap();

    let wrong = invitations::accept(&db, &inv.token, "", "wrong password here")
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Unauthenticated(_)));
    let (user, tenant) = invitations::accept(&db, &inv.token, "", PASSWORD)
        .await
        .unwrap();
    assert_eq!((user, tenant), (a.owner, b.tenant));

    let clinics = auth::memberships(&db, a.owner).await.unwrap();
    let names: Vec<_> = clinics
        .iter()
        .map(|m| (m.tenant.name.as_str(), m.role))
        .collect();
    assert_eq!(names, vec![("Alpha", Role::Owner), ("Beta", Role::Admin)]);
}

#[sqlx::test(migrations = "../migrations")]
async fn staff_cannot_manage_members(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let staff = member(&db, &c, "staff@example.com", Role::Staff).await;
    let actor = Actor {
        user: staff,
        role: Role::Staff,
    };

    assert!(matches!(
        members::list(&db, c.tenant, actor).await.unwrap_err(),
        Error::Forbidden(_) | Error::PlanLimit(_)
    ));
    assert!(matches!(
        members::remove(&db, c.tenant, actor, c.owner)
            .await
            .unwrap_err(),
        Error::Forbidden(_) | Error::PlanLimit(_)
    ));
    let invite = invitations::create(
        &db,
        c.tenant,
        actor,
        "x@example.com",
        Role::Staff,
        time::Duration::days(1),
    )
    .await;
    assert!(matches!(
        invite.unwrap_err(),
        Error::Forbidden(_) | Error::PlanLimit(_)
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn admins_cannot_touch_owners_and_the_last_owner_stays(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let admin = member(&db, &c, "admin@example.com", Role::Admin).await;
    let admin_actor = Actor {
        user: admin,
        role: Role::Admin,
    };

    let err = members::change_role(&db, c.tenant, admin_actor, c.owner, Role::Staff)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_) | Error::PlanLimit(_)));
    let err = members::change_role(&db, c.tenant, admin_actor, admin, Role::Owner)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_) | Error::PlanLimit(_)));

    let err = members::change_role(&db, c.tenant, c.owner(), c.owner, Role::Admin)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    let err = members::remove(&db, c.tenant, c.owner(), c.owner)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");

    // With a second owner, the first may step down.
    members::change_role(&db, c.tenant, c.owner(), admin, Role::Owner)
        .await
        .unwrap();
    members::change_role(&db, c.tenant, c.owner(), c.owner, Role::Admin)
        .await
        .unwrap();
    let list = members::list(&db, c.tenant, admin_actor).await.unwrap();
    let roles: Vec<_> = list.iter().map(|m| (m.email.as_str(), m.role)).collect();
    assert_eq!(
        roles,
        vec![
            ("admin@example.com", Role::Owner),
            (c.email.as_str(), Role::Admin)
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_removed_member_no_longer_sees_the_clinic(pool: PgPool) {
    let db = app_db(&pool).await;
    let c = clinic(&db, "Alpha").await;
    let staff = member(&db, &c, "staff@example.com", Role::Staff).await;
    assert!(auth::viewer(&db, staff, c.tenant).await.unwrap().is_some());

    members::remove(&db, c.tenant, c.owner(), staff)
        .await
        .unwrap();
    assert!(auth::viewer(&db, staff, c.tenant).await.unwrap().is_none());
    assert!(auth::memberships(&db, staff).await.unwrap().is_empty());
}
