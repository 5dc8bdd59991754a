//! Helpers shared by the core's integration tests; clinics come from `testkit::fixtures`.
#![allow(dead_code, unused_imports)]

use std::sync::LazyLock;

use sqlx::PgPool;
use tessera_core::crypto::MasterKeys;
use tessera_core::{Changes, Db, Redis, Role, UserId};
pub use testkit::fixtures::{self, TestClinic as Clinic, PASSWORD};

/// Announcements stay in the test process (no replicas to tell).
pub static CHANGES: LazyLock<Changes> = LazyLock::new(Changes::local);
pub static MASTER: LazyLock<MasterKeys> = LazyLock::new(MasterKeys::development);

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

/// What fixtures need, over `db`.
pub fn env(db: &Db) -> fixtures::Env<'_> {
    fixtures::Env {
        db,
        changes: &CHANGES,
        master: &MASTER,
        admin: None,
    }
}

/// Signs up a clinic whose owner's email is made from `name`.
pub async fn clinic(db: &Db, name: &str) -> Clinic {
    fixtures::clinic(name).create(&env(db)).await
}

/// Invites `email` with `role` into `clinic` and accepts, returning the new member's id.
pub async fn member(db: &Db, clinic: &Clinic, email: &str, role: Role) -> UserId {
    fixtures::member(db, clinic, email, role)
        .await
        .expect("invite and accept")
}
