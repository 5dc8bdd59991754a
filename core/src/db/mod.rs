//! Postgres access. All tenant work goes through [`Db::begin_tenant`], which opens a
//! transaction with `app.tenant_id` set for that transaction only; the row-level-security
//! policies in `migrations/` read it. The pool connects as the application role, which owns no
//! table, so a query that forgets `WHERE tenant_id = ..` still sees only the current tenant.

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{PgPool, Postgres, Transaction};

use crate::tenancy::{TenantId, UserId};
use crate::Result;

mod migrations;

pub use migrations::{migrate_pool, LANDED, MIGRATOR};

/// A transaction scoped by row-level security to one tenant, one user or one invitation.
pub type Tx = Transaction<'static, Postgres>;

/// The application's Postgres pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Connects with the application role. Fails fast when Postgres does not answer.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options, max_connections).await
    }

    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The pool, for queries on tables that belong to no tenant (users).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction with one row-level-security setting, for that transaction only.
    async fn begin_scoped(&self, setting: &str, value: String) -> Result<Tx> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(setting)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Opens a transaction in which only `tenant`'s rows are visible or writable.
    pub async fn begin_tenant(&self, tenant: TenantId) -> Result<Tx> {
        self.begin_scoped("app.tenant_id", tenant.to_string()).await
    }

    /// Opens a transaction in which a user sees their own memberships across clinics (and the
    /// names of those clinics), and nothing else that belongs to a tenant.
    pub async fn begin_user(&self, user: UserId) -> Result<Tx> {
        self.begin_scoped("app.user_id", user.to_string()).await
    }

    /// Opens a transaction in which the holder of an invitation token sees that one invitation.
    pub async fn begin_invitation(&self, token_hash: &[u8]) -> Result<Tx> {
        self.begin_scoped("app.invitation_token", hex(token_hash))
            .await
    }

    /// Opens a transaction in which the holder of an API key sees that one key's row.
    pub async fn begin_api_key(&self, key_hash: &[u8]) -> Result<Tx> {
        self.begin_scoped("app.api_key_hash", hex(key_hash)).await
    }

    /// Opens a transaction in the operator console's scope: a platform operator reads every
    /// clinic (and changes a clinic's status and plan, and the flags). The setting counts only
    /// for a person in `platform_operators`; for anyone else the transaction sees no clinic.
    pub async fn begin_operator(&self, operator: UserId) -> Result<Tx> {
        self.begin_scoped("app.operator_id", operator.to_string())
            .await
    }

    /// Runs one query in a transaction scoped to `tenant` and returns its rows.
    pub async fn tenant_all<'q, T>(
        &self,
        tenant: TenantId,
        query: QueryAs<'q, Postgres, T, PgArguments>,
    ) -> Result<Vec<T>>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let mut tx = self.begin_tenant(tenant).await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Runs one query in a transaction scoped to `tenant` and returns its row, if any.
    pub async fn tenant_optional<'q, T>(
        &self,
        tenant: TenantId,
        query: QueryAs<'q, Postgres, T, PgArguments>,
    ) -> Result<Option<T>>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let mut tx = self.begin_tenant(tenant).await?;
        let row = query.fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Runs one statement in a transaction scoped to `tenant`; `NotFound` when it changed no
    /// row.
    pub async fn tenant_change_one<'q>(
        &self,
        tenant: TenantId,
        statement: Query<'q, Postgres, PgArguments>,
    ) -> Result<()> {
        let mut tx = self.begin_tenant(tenant).await?;
        let n = statement.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        crate::error::one_row(n)
    }

    /// Readiness: Postgres answers a query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Switches an open transaction to `tenant` (used when one transaction discovers its tenant,
/// such as accepting an invitation).
pub async fn set_tenant(tx: &mut Tx, tenant: TenantId) -> Result<()> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Creates the database if it is missing and applies pending migrations, as the schema owner.
pub async fn migrate(admin_url: &str) -> Result<()> {
    if !sqlx::Postgres::database_exists(admin_url).await? {
        tracing::info!("creating the database");
        sqlx::Postgres::create_database(admin_url).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(admin_url)
        .await?;
    let result = migrate_pool(&pool).await;
    pool.close().await;
    result
}
