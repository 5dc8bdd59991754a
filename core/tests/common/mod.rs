//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use sqlx::PgPool;
use tessera_core::auth::members::Actor;
use tessera_core::{auth, Db, Redis, Role, TenantId, UserId};

/// A pool on the test database as `tessera_app`, the role the server uses.
pub async fn app_db(owner_pool: &PgPool) -> Db {
    Db::connect_with(testkit::app_role_options(owner_pool), 5)
        .await
        .expect("connect as tessera_app")
}

/// Redis with a key prefix of its own, so tests never see each other's keys.
pub async fn redis() -> Redis {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Redis::connect(&url, &format!("test:{}:", uuid::Uuid::new_v4()))
        .await
        .expect("connect to Redis")
}

pub struct Clinic {
    pub tenant: TenantId,
    pub owner: UserId,
    pub email: String,
}

impl Clinic {
    pub fn owner_actor(&self) -> Actor {
        Actor {
            user: self.owner,
            role: Role::Owner,
        }
    }
}

pub const PASSWORD: &str = "a long enough password";

/// Signs up a clinic whose owner's email is made from `name`.
pub async fn clinic(db: &Db, name: &str) -> Clinic {
    let email = format!(
        "owner@{}.example.com",
        name.to_lowercase().replace(' ', "-")
    );
    let (owner, tenant) = auth::sign_up(
        db,
        auth::SignUp {
            clinic_name: name,
            name: "Owner",
            email: &email,
            password: PASSWORD,
        },
    )
    .await
    .expect("sign up");
    Clinic {
        tenant,
        owner,
        email,
    }
}

/// Invites `email` with `role` into `clinic` and accepts, returning the new member's id.
pub async fn member(db: &Db, clinic: &Clinic, email: &str, role: Role) -> UserId {
    let inv = auth::invitations::create(
        db,
        clinic.tenant,
        clinic.owner_actor(),
        email,
        role,
        time::Duration::days(1),
    )
    .await
    .expect("invite");
    let (user, _) = auth::invitations::accept(db, &inv.token, "Member", PASSWORD)
        .await
        .expect("accept");
    user
}
