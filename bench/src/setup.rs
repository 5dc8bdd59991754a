//! The clinic the benchmark calls as: created through the core, as the product would, with an
//! OpenAI key (the simulator accepts any `sk-...`) and an API key, on the enterprise plan so
//! the budget never refuses a call.

use sqlx::postgres::PgPoolOptions;
use tessera_core::auth::members::Actor;
use tessera_core::auth::{self, SignUp};
use tessera_core::keys::{self, Provider};
use tessera_core::{api_keys, Config, Db, Role, TenantId};
use uuid::Uuid;

pub struct Clinic {
    pub db: Db,
    pub tenant: TenantId,
    /// The API key (`tsk_...`).
    pub token: String,
}

pub async fn clinic(config: &Config, provider_key: &str) -> Result<Clinic, String> {
    let db = Db::connect(&config.database_url, 2)
        .await
        .map_err(|e| format!("connecting to DATABASE_URL: {e}"))?;
    let tag = Uuid::new_v4().simple().to_string();
    let tag = &tag[..12];
    let clinic_name = format!("Gateway bench {tag}");
    let email = format!("gateway-bench-{tag}@example.com");
    let (user, tenant) = auth::sign_up(
        &db,
        SignUp {
            clinic_name: &clinic_name,
            name: "Gateway Bench",
            email: &email,
            password: "gateway-bench-password",
        },
    )
    .await
    .map_err(|e| format!("signing up the clinic: {e}"))?;
    let actor = Actor {
        user,
        role: Role::Owner,
    };
    keys::set(
        &db,
        &config.master_keys,
        tenant,
        actor,
        Provider::OpenAi,
        provider_key,
        "",
    )
    .await
    .map_err(|e| format!("storing the clinic's OpenAI key: {e}"))?;
    let (_, token) = api_keys::create(&db, tenant, actor, "bench")
        .await
        .map_err(|e| format!("creating the API key: {e}"))?;

    // Plans are changed by operators: as the schema owner, still inside the clinic's
    // row-level-security scope (it is forced for the owner too).
    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect(&config.database_admin_url)
        .await
        .map_err(|e| format!("connecting to DATABASE_ADMIN_URL: {e}"))?;
    let updated = async {
        let mut tx = owner.begin().await?;
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("UPDATE tenants SET plan = 'enterprise' WHERE id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    }
    .await
    .map_err(|e| format!("moving the clinic to the enterprise plan: {e}"))?;
    owner.close().await;
    if updated != 1 {
        return Err(format!(
            "moving the clinic to the enterprise plan updated {updated} rows"
        ));
    }
    Ok(Clinic { db, tenant, token })
}

/// Calls of the clinic recorded in the Postgres ledger.
pub async fn ledger_rows(db: &Db, tenant: TenantId) -> Result<i64, String> {
    let rows = async {
        let mut tx = db.begin_tenant(tenant).await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, tessera_core::Error>(n)
    }
    .await
    .map_err(|e| format!("counting the ledger: {e}"))?;
    Ok(rows)
}
