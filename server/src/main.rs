//! `server`: the one Tessera binary. `main` only wires: configuration, pools, migrations,
//! router, listener.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use app::server::error::chain as error_chain;
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};
use tessera_core::config::redact_url;
use tessera_core::{Config, Db, Redis, Services};

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
    /// Run only the background work (ledger writer, ingestion, Stripe overage meter), no web
    /// server; with TESSERA_METRICS_ADDR it serves /metrics, /healthz and /readyz there.
    Worker,
    /// Exit 0 when the server's /healthz answers 200 (for container health checks, which have
    /// no curl): on LEPTOS_SITE_ADDR's port on loopback, or at --url.
    Healthcheck {
        /// The address to check instead, e.g. http://127.0.0.1:9090/healthz.
        #[arg(long)]
        url: Option<String>,
    },
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

/// mimalloc rather than the system's malloc: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck(url.as_deref()).await;
    }
    if let Err(e) = server::telemetry::init_logs() {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
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
        Command::Healthcheck { .. } => unreachable!("answered before the configuration is read"),
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
    let ops_addr = config.metrics_addr;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    // The recorder first, so that nothing the workers count is lost.
    server::telemetry::prometheus();
    let services = services(config).await?;
    let workers = services.start_workers();
    let ops = ops_listener(ops_addr, &services).await?;
    tracing::info!("worker running");
    signal().await;
    // Each worker finishes what it holds: the job in hand, the ledger hand-off.
    services.shutdown.trigger();
    finish(workers, grace).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// `/healthz` answered 200 within five seconds: exit 0; otherwise say why and exit 1.
async fn healthcheck(url: Option<&str>) -> ExitCode {
    let url = match url {
        Some(u) => u.to_string(),
        None => {
            let port = std::env::var("LEPTOS_SITE_ADDR")
                .ok()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map_or(3000, |a| a.port());
            format!("http://127.0.0.1:{port}/healthz")
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), http_get_status(&url)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("{url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{url} did not answer within 5 seconds");
            ExitCode::FAILURE
        }
    }
}

/// The status of a plain HTTP/1.1 GET of `url` (`http://host:port/path` only).
async fn http_get_status(url: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// addresses can be checked")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (`TESSERA_METRICS_ADDR`, if set) until
/// shutdown.
async fn ops_listener(
    addr: Option<SocketAddr>,
    services: &Services,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let leptos_options = leptos::config::LeptosOptions::builder()
        .output_name("tessera")
        .build();
    let router =
        server::telemetry::ops_router(app::server::AppState::new(leptos_options, services.clone()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not listen on {addr} (TESSERA_METRICS_ADDR): {e}"))?;
    tracing::info!("metrics and health on http://{addr}");
    let stop = services.shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await;
    })))
}

/// Waits for the workers to finish what they hold, for at most `grace` (a job cut short is
/// taken again by another worker once its lease runs out).
async fn finish(workers: Vec<tokio::task::JoinHandle<()>>, grace: Duration) {
    let all = futures_util::future::join_all(workers);
    if tokio::time::timeout(grace.max(Duration::from_secs(5)), all)
        .await
        .is_err()
    {
        tracing::warn!("workers still busy at the end of the grace period; stopping anyway");
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let leptos_options = leptos::config::get_configuration(None)
        .map_err(|e| format!("Leptos configuration (LEPTOS_OUTPUT_NAME, LEPTOS_SITE_ROOT, LEPTOS_SITE_ADDR): {e}"))?
        .leptos_options;
    if config.migrate_on_start {
        migrate(&config).await?;
    }
    let addr = leptos_options.site_addr;
    if config.demo && !addr.ip().is_loopback() {
        return Err(format!(
            "TESSERA_DEMO: demo mode listens on this machine only, but LEPTOS_SITE_ADDR is {addr}; \
             use 127.0.0.1 or unset TESSERA_DEMO"
        ));
    }
    let ops_addr = config.metrics_addr;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tracing::info!(?config, "starting");
    if config.development_master_key {
        tracing::warn!("TESSERA_MASTER_KEYS is not set: provider keys are encrypted with the public development key");
    }
    server::telemetry::prometheus();
    let services = services(config).await?;
    if services.config.demo {
        let created = tessera_core::demo::seed(&services)
            .await
            .map_err(|e| format!("could not seed the demo clinic: {e}"))?;
        tracing::warn!(
            created,
            "demo mode: replies come from the provider simulator; sign in at {}/signin as {} with the password {}",
            services.config.public_url,
            tessera_core::demo::EMAIL,
            tessera_core::demo::PASSWORD,
        );
    }
    let workers = services.start_background();
    let app = server::router(services.clone(), leptos_options);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not listen on {addr} (LEPTOS_SITE_ADDR): {e}"))?;
    let ops = ops_listener(ops_addr, &services).await?;
    tracing::info!("listening on http://{addr}");
    // Streamed replies are many small writes: send each at once rather than waiting for the
    // client's acknowledgement of the previous one (Nagle's algorithm adds ~40 ms per event).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // On SIGTERM: stop accepting, let requests and streams in flight finish (for up to the
    // grace period), then stop the workers, which flush the ledger hand-off and finish the
    // job in hand.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal().await;
        let _ = stopping_tx.send(true);
    });
    let mut until_stopping = stopping.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = until_stopping.wait_for(|s| *s).await;
    });
    let mut grace_over = stopping;
    tokio::select! {
        served = server => served.map_err(|e| format!("server failed: {e}"))?,
        _ = async move {
            let _ = grace_over.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "requests still in flight at the end of the grace period; stopping anyway"),
    }
    // Chat replies are generated by tasks of their own, which outlive their page's request:
    // they finish and are saved too.
    tessera_core::replies::wait_idle(grace).await;
    // What this process holds of clinics' allowances for calls it will no longer make goes
    // back now, rather than when it expires.
    // Settles still queued go first (the ledger gets every call).
    let _ = tokio::time::timeout(grace, services.gateway.metering.return_slices()).await;
    services.shutdown.trigger();
    finish(workers, grace).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn signal() {
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
