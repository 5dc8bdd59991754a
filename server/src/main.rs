//! `server`: the one Tessera binary. `main` only wires: configuration, pools, migrations,
//! router, listener.

use std::net::SocketAddr;
use std::process::ExitCode;

use app::server::error::chain as error_chain;
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};
use tessera_core::config::redact_url;
use tessera_core::{Config, Db, Redis, Services};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "server", about = "Tessera: multi-tenant AI agents for clinics")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web app (the default).
    Serve,
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Re-wrap every clinic's data key with the current (first) key in TESSERA_MASTER_KEYS.
    /// Keep the old key in the list until this has run; then it can be removed.
    RotateMasterKey,
    /// Create in Stripe, if missing, the token meter and each self-serve plan's product, base
    /// price and metered overage price (found again by lookup key; safe to run again).
    StripeSync,
    /// Operator commands for one clinic.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Platform operators: people who use the operator console (/operator).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Run only the background work (ledger writer, Stripe overage meter), no web server.
    Worker,
    /// Operator commands for the usage ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Show the usage events Postgres refused, newest first (kept in Redis, the newest 10,000).
    DeadLetters {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Make the account with this email a platform operator (creating the account, with a
    /// password printed once, when there is none). An operator is not a member of any clinic
    /// by being one.
    Add {
        /// The operator's email.
        email: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Put a clinic on a plan (enterprise is set this way, not bought). Limits apply at once.
    SetPlan {
        /// The clinic's slug.
        slug: String,
        /// starter, professional or enterprise.
        plan: tessera_core::PlanId,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(&config).await,
        Command::RotateMasterKey => rotate_master_key(&config).await,
        Command::StripeSync => stripe_sync(config).await,
        Command::Tenant {
            command: TenantCommand::SetPlan { slug, plan },
        } => set_plan(config, &slug, plan).await,
        Command::Operator {
            command: OperatorCommand::Add { email },
        } => add_operator(&config, &email).await,
        Command::Worker => worker(config).await,
        Command::Ledger {
            command: LedgerCommand::DeadLetters { count },
        } => dead_letters(&config, count).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> Result<(), String> {
    tessera_core::db::migrate(&config.database_admin_url)
        .await
        .map_err(|e| {
            format!(
                "could not migrate the database at DATABASE_ADMIN_URL ({}): {}",
                redact_url(&config.database_admin_url),
                error_chain(&e)
            )
        })?;
    tracing::info!("database is up to date");
    Ok(())
}

/// The operator path: a pool as the schema owner (`DATABASE_ADMIN_URL`).
async fn admin_pool(config: &Config) -> Result<sqlx::PgPool, String> {
    sqlx::PgPool::connect(&config.database_admin_url)
        .await
        .map_err(|e| {
            format!(
                "could not connect to Postgres at DATABASE_ADMIN_URL ({}): {}",
                redact_url(&config.database_admin_url),
                error_chain(&e)
            )
        })
}

/// Runs on the operator path: as the schema owner (DATABASE_ADMIN_URL), whose policy lets it
/// see every clinic's wrapped data key, and nothing else.
async fn rotate_master_key(config: &Config) -> Result<(), String> {
    if config.development_master_key {
        return Err("TESSERA_MASTER_KEYS is not set: there is no key to rotate to".into());
    }
    let pool = admin_pool(config).await?;
    let n = tessera_core::provider_keys::rotate_master_key(&pool, &config.master_keys)
        .await
        .map_err(|e| format!("rotation failed, nothing was changed: {}", error_chain(&e)))?;
    println!(
        "re-wrapped {n} data key(s) with master key {}",
        config.master_keys.current_version()
    );
    Ok(())
}

/// Connects the pools the way `serve` does.
async fn services(config: Config) -> Result<Services, String> {
    let db = Db::connect(&config.database_url, config.db_max_connections)
        .await
        .map_err(|e| {
            format!(
                "could not connect to Postgres at DATABASE_URL ({}): {}",
                redact_url(&config.database_url),
                error_chain(&e)
            )
        })?;
    let redis = connect_redis(&config).await?;
    Ok(Services::new(config, db, redis))
}

async fn connect_redis(config: &Config) -> Result<Redis, String> {
    Redis::connect(&config.redis_url, &config.redis_prefix)
        .await
        .map_err(|e| {
            format!(
                "could not connect to Redis at REDIS_URL ({}): {}",
                redact_url(&config.redis_url),
                error_chain(&e)
            )
        })
}

async fn stripe_sync(config: Config) -> Result<(), String> {
    let services = services(config).await?;
    let Some(api) = &services.stripe else {
        return Err("STRIPE_SECRET_KEY is not set: there is no Stripe account to set up".into());
    };
    let plans = tessera_core::billing::plans(services.db.pool())
        .await
        .map_err(|e| format!("could not read the plans: {}", error_chain(&e)))?;
    let items = api
        .sync_catalog(&plans)
        .await
        .map_err(|e| format!("Stripe catalogue not complete: {e}"))?;
    for item in &items {
        println!("{item}");
    }
    let made = items.iter().filter(|i| i.created).count();
    println!("{made} created, {} already there", items.len() - made);
    Ok(())
}

async fn set_plan(config: Config, slug: &str, plan: tessera_core::PlanId) -> Result<(), String> {
    let admin = admin_pool(&config).await?;
    // Connected like a server, so running servers hear of the change and drop the clinic's
    // cached limits now rather than in a minute.
    let services = services(config).await?;
    tessera_core::billing::set_plan(&admin, &services.changes, slug, plan)
        .await
        .map_err(|e| match e {
            tessera_core::Error::Invalid(m) => m,
            other => error_chain(&other),
        })?;
    println!("{slug} is now on the {plan} plan");
    Ok(())
}

async fn add_operator(config: &Config, email: &str) -> Result<(), String> {
    use tessera_core::operator::Added;
    let admin = admin_pool(config).await?;
    let added = tessera_core::operator::add(&admin, email)
        .await
        .map_err(|e| match e {
            tessera_core::Error::Invalid(m) => m,
            other => error_chain(&other),
        })?;
    match added {
        Added::Existing => println!("{email} is now a platform operator"),
        Added::Already => println!("{email} was already a platform operator"),
        Added::Created { password } => {
            println!("created an account for {email} and made it a platform operator");
            println!("password (shown once): {password}");
        }
    }
    Ok(())
}

async fn dead_letters(config: &Config, count: usize) -> Result<(), String> {
    let redis = connect_redis(config).await?;
    let (total, entries) = tessera_core::metering::dead_letters(&redis, count)
        .await
        .map_err(|e| format!("could not read the dead letters: {}", error_chain(&e)))?;
    println!("{total} usage event(s) set aside");
    for (id, event) in entries {
        println!("{id} {event}");
    }
    Ok(())
}

async fn worker(config: Config) -> Result<(), String> {
    let services = services(config).await?;
    services.start_workers();
    tracing::info!("worker running");
    shutdown().await;
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    let leptos_options = leptos::config::get_configuration(None)
        .map_err(|e| format!("Leptos configuration (LEPTOS_OUTPUT_NAME, LEPTOS_SITE_ROOT, LEPTOS_SITE_ADDR): {e}"))?
        .leptos_options;
    if config.migrate_on_start {
        migrate(&config).await?;
    }
    let addr = leptos_options.site_addr;
    tracing::info!(?config, "starting");
    if config.development_master_key {
        tracing::warn!("TESSERA_MASTER_KEYS is not set: provider keys are encrypted with the public development key");
    }
    let services = services(config).await?;
    services.start_background();
    let app = server::router(services, leptos_options);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not listen on {addr} (LEPTOS_SITE_ADDR): {e}"))?;
    tracing::info!("listening on http://{addr}");
    // Streamed replies are many small writes: send each at once rather than waiting for the
    // client's acknowledgement of the previous one (Nagle's algorithm adds ~40 ms per event).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .map_err(|e| format!("server failed: {e}"))
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
