//! The clinics the benchmark calls as: made through the core, as the product would (testkit's
//! fixtures), one with an OpenAI key (the simulator accepts any `sk-...`) and one with an
//! OpenAI-compatible endpoint (the simulator's address), each with an API key, and put on the
//! enterprise plan the way an operator does, so the budget never refuses a call.

use sqlx::postgres::PgPoolOptions;
use tessera_core::{Changes, Config, Db, Month, PlanId, Provider, TenantId};
use testkit::fixtures;
use uuid::Uuid;

pub struct Clinic {
    pub db: Db,
    pub tenant: TenantId,
    /// The API key (`tsk_...`).
    pub token: String,
}

/// A clinic with an OpenAI key, or (with `endpoint`) an OpenAI-compatible endpoint at that
/// base URL instead.
pub async fn clinic(
    config: &Config,
    provider_key: &str,
    endpoint: Option<&str>,
) -> Result<Clinic, String> {
    let db = Db::connect(&config.database_url, 2)
        .await
        .map_err(|e| format!("connecting to DATABASE_URL: {e}"))?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&config.database_admin_url)
        .await
        .map_err(|e| format!("connecting to DATABASE_ADMIN_URL: {e}"))?;
    // The server under test is started after this, so there are no caches to tell.
    let changes = Changes::local();
    let env = fixtures::Env {
        db: &db,
        changes: &changes,
        master: &config.master_keys,
        admin: Some(&admin),
    };
    let tag = Uuid::new_v4().simple().to_string();
    let made = fixtures::clinic(&format!("Gateway bench {}", &tag[..12]));
    let made = match endpoint {
        Some(base_url) => made.endpoint(base_url, provider_key),
        None => made.key(Provider::OpenAi, provider_key),
    };
    let made = made
        .api_key("bench")
        .plan(PlanId::Enterprise)
        .try_create(&env)
        .await?;
    admin.close().await;
    Ok(Clinic {
        db,
        tenant: made.tenant,
        token: made.api_key.unwrap_or_default(),
    })
}

/// Calls of the clinic recorded in the Postgres ledger this month.
pub async fn ledger_rows(db: &Db, tenant: TenantId) -> Result<i64, String> {
    tessera_core::metering::report::ledger_totals(db, tenant, Month::now())
        .await
        .map(|totals| totals.requests)
        .map_err(|e| format!("counting the ledger: {e}"))
}
