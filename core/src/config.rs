//! Configuration: environment variables read once at start into one typed struct. A missing
//! or invalid value stops start-up with a message naming the variable.

use std::collections::HashMap;
use std::fmt;

/// Default `DATABASE_URL`: the application role, which owns no table, so row-level security
/// always applies to it.
pub const DEFAULT_DATABASE_URL: &str = "postgres://tessera_app:tessera@127.0.0.1:5432/tessera";
/// Default `DATABASE_ADMIN_URL`: the role that owns the schema and runs migrations.
pub const DEFAULT_DATABASE_ADMIN_URL: &str =
    "postgres://tessera_owner:tessera@127.0.0.1:5432/tessera";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:3000";

/// Every setting Tessera reads from its environment.
#[derive(Clone)]
pub struct Config {
    /// `DATABASE_URL`: Postgres as the application role.
    pub database_url: String,
    /// `DATABASE_ADMIN_URL`: Postgres as the schema owner, used only to migrate.
    pub database_admin_url: String,
    /// `TESSERA_DB_MAX_CONNECTIONS`: pool size per process.
    pub db_max_connections: u32,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `TESSERA_REDIS_PREFIX`: prepended to every Redis key, so several deployments (or test
    /// runs) can share one Redis.
    pub redis_prefix: String,
    /// `TESSERA_PUBLIC_URL`: the address people use to reach Tessera. Its origin is the one
    /// accepted on state-changing requests, and an `https` URL makes cookies `Secure`.
    pub public_url: String,
    /// `TESSERA_MIGRATE_ON_START`: `serve` applies pending migrations before listening.
    pub migrate_on_start: bool,
    /// `TESSERA_TRUSTED_PROXIES`: the addresses (or networks) of the reverse proxies in front
    /// of Tessera. A request from one of them gives its client's address in
    /// `X-Forwarded-For`; read from the right, the first address that is not a trusted proxy
    /// is the client. Empty (the default): the socket's address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `TESSERA_INVITE_TTL_HOURS`: how long an invitation link stays valid.
    pub invite_ttl_hours: i64,
    /// `TESSERA_SESSION_TTL_HOURS`: a session ends after this long without activity.
    pub session_ttl_hours: i64,
    /// `TESSERA_MASTER_KEYS`: versioned master keys for the clinics' provider keys
    /// (`v2:<base64>,v1:<base64>`, current first). Unset: a publicly known development key,
    /// refused when `TESSERA_PUBLIC_URL` is HTTPS.
    pub master_keys: std::sync::Arc<crate::crypto::MasterKeys>,
    /// True when no `TESSERA_MASTER_KEYS` was given.
    pub development_master_key: bool,
    /// `OPENAI_BASE_URL`: OpenAI's API root.
    pub openai_base_url: String,
    /// `ANTHROPIC_BASE_URL`: Anthropic's API root.
    pub anthropic_base_url: String,
    /// `TESSERA_PLATFORM_OPENAI_KEY`: the platform's own OpenAI key, used for clinics that
    /// brought none when their plan allows it.
    pub platform_openai_key: Option<secrecy::SecretString>,
    /// `TESSERA_PLATFORM_ANTHROPIC_KEY`: the same for Anthropic.
    pub platform_anthropic_key: Option<secrecy::SecretString>,
    /// `TESSERA_DEFAULT_MAX_TOKENS`: the reply limit used (and reserved) when a request sets none.
    pub default_max_tokens: u32,
    /// `TESSERA_PROVIDER_TIMEOUT_SECS`: how long to wait for a provider's first byte, and
    /// between two streamed chunks.
    pub provider_timeout_secs: u64,
    /// `TESSERA_PROVIDER_RETRIES`: retries (with backoff) of a provider call that failed before
    /// anything reached the client.
    pub provider_retries: u32,
    /// `TESSERA_ALLOW_PRIVATE_ENDPOINTS`: let clinics point an OpenAI-compatible endpoint at
    /// loopback or private addresses (self-hosted single-clinic installs). Off by default, so a
    /// clinic cannot make the server probe its own network.
    pub allow_private_endpoints: bool,
    /// Stripe, when billing is on (`STRIPE_SECRET_KEY` set); `None` turns billing off: plans
    /// are then set by operators only.
    pub stripe: Option<StripeConfig>,
    /// `TESSERA_BILLING_GRACE_DAYS`: how long model calls go on after a failed payment.
    pub billing_grace_days: u32,
    /// `TESSERA_METER_INTERVAL_SECS`: how often the meter worker looks for overage to report.
    pub meter_interval_secs: u64,
    /// `TESSERA_METER_DELAY_SECS`: how long after an hour ends its overage is reported, so that
    /// calls still on their way into the ledger are counted in their own hour.
    pub meter_delay_secs: u64,
    /// `TESSERA_MAX_UPLOAD_MB`: the largest document a clinic may upload, in megabytes.
    pub max_upload_mb: i64,
    /// `TESSERA_INGEST_WORKERS`: ingestion workers a process runs (`serve` and `worker`);
    /// 0 leaves ingestion to other processes.
    pub ingest_workers: u32,
    /// `QDRANT_URL`: Qdrant's gRPC address (`http://qdrant:6334`); document vectors then live
    /// there instead of in Postgres.
    pub qdrant_url: Option<String>,
    /// `QDRANT_API_KEY`: Qdrant's API key, if it requires one.
    pub qdrant_api_key: Option<secrecy::SecretString>,
    /// `TESSERA_QDRANT_PREFIX`: the start of the names of Tessera's Qdrant collections.
    pub qdrant_prefix: String,
    /// `TESSERA_METRICS_ADDR`: where the operations listener (`/metrics`, `/healthz`,
    /// `/readyz`, no authentication) listens, e.g. `0.0.0.0:9090`; none when unset. Keep it
    /// off the public network.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `TESSERA_METRICS_TOKEN`: when set, `/metrics` is also served on the main address to
    /// `Authorization: Bearer <token>`.
    pub metrics_token: Option<secrecy::SecretString>,
    /// `TESSERA_SHUTDOWN_GRACE_SECS`: on SIGTERM, how long replies in flight may take to
    /// finish before the process exits anyway.
    pub shutdown_grace_secs: u64,
    /// `TESSERA_DEMO`: demo mode, for trying Tessera on one machine without a provider account
    /// (`scripts/serve.sh --demo` turns it on with the provider simulator). Seeds a demo clinic
    /// and says "Demo" on every page. Refused unless `TESSERA_PUBLIC_URL` is plain HTTP on a
    /// loopback address, so a deployment cannot run it by accident.
    pub demo: bool,
    /// `TESSERA_SIGNUPS_PER_HOUR`: clinics one client address may sign up per hour (20).
    pub signups_per_hour: u32,
}

/// Whether `url` is plain HTTP on a loopback address.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host_port = rest.split('/').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How to reach Stripe.
#[derive(Clone)]
pub struct StripeConfig {
    /// `STRIPE_SECRET_KEY` (`sk_...` or a restricted `rk_...`).
    pub secret_key: secrecy::SecretString,
    /// `STRIPE_WEBHOOK_SECRET`: the endpoint's signing secrets (`whsec_...`), comma-separated
    /// while one is being rolled.
    pub webhook_secrets: Vec<secrecy::SecretString>,
    /// `STRIPE_API_BASE`: Stripe's API (`https://api.stripe.com/`), or the simulator in tests.
    pub api_base: String,
}

impl fmt::Debug for Config {
    // URLs may carry passwords; never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_admin_url", &redact_url(&self.database_admin_url))
            .field("db_max_connections", &self.db_max_connections)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("public_url", &self.public_url)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("invite_ttl_hours", &self.invite_ttl_hours)
            .field("session_ttl_hours", &self.session_ttl_hours)
            .field("master_keys", &self.master_keys)
            .field("openai_base_url", &self.openai_base_url)
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field(
                "platform_openai_key",
                &self.platform_openai_key.as_ref().map(|_| "***"),
            )
            .field(
                "platform_anthropic_key",
                &self.platform_anthropic_key.as_ref().map(|_| "***"),
            )
            .field("default_max_tokens", &self.default_max_tokens)
            .field("provider_timeout_secs", &self.provider_timeout_secs)
            .field("provider_retries", &self.provider_retries)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .field(
                "stripe",
                &self.stripe.as_ref().map(|s| {
                    format!(
                        "secret key ***, {} webhook secret(s), {}",
                        s.webhook_secrets.len(),
                        s.api_base
                    )
                }),
            )
            .field("billing_grace_days", &self.billing_grace_days)
            .field("meter_interval_secs", &self.meter_interval_secs)
            .field("meter_delay_secs", &self.meter_delay_secs)
            .field("max_upload_mb", &self.max_upload_mb)
            .field("ingest_workers", &self.ingest_workers)
            .field("qdrant_url", &self.qdrant_url)
            .field(
                "qdrant_api_key",
                &self.qdrant_api_key.as_ref().map(|_| "***"),
            )
            .field("qdrant_prefix", &self.qdrant_prefix)
            .field("metrics_addr", &self.metrics_addr)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("demo", &self.demo)
            .field("signups_per_hour", &self.signups_per_hour)
            .finish()
    }
}

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl Config {
    /// The largest upload, in bytes.
    pub fn max_upload_bytes(&self) -> i64 {
        self.max_upload_mb.saturating_mul(1_000_000)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Reads from a map of variables (the environment, or a test's own).
    ///
    /// Long on purpose: one short statement per variable, in the README's order, so the whole
    /// configuration reads as one list; each statement's parsing lives in a helper.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let database_url = url(
            get("DATABASE_URL"),
            "DATABASE_URL",
            DEFAULT_DATABASE_URL,
            &["postgres", "postgresql"],
        )?;
        let database_admin_url = url(
            get("DATABASE_ADMIN_URL"),
            "DATABASE_ADMIN_URL",
            DEFAULT_DATABASE_ADMIN_URL,
            &["postgres", "postgresql"],
        )?;
        let redis_url = url(
            get("REDIS_URL"),
            "REDIS_URL",
            DEFAULT_REDIS_URL,
            &["redis", "rediss"],
        )?;
        let public_url = url(
            get("TESSERA_PUBLIC_URL"),
            "TESSERA_PUBLIC_URL",
            DEFAULT_PUBLIC_URL,
            &["http", "https"],
        )?
        .trim_end_matches('/')
        .to_string();
        let (master_keys, development_master_key) = match get("TESSERA_MASTER_KEYS") {
            Some(raw) => (
                crate::crypto::MasterKeys::parse(raw).map_err(|message| ConfigError { var: "TESSERA_MASTER_KEYS", message })?,
                false,
            ),
            None if public_url.starts_with("https://") => {
                return Err(ConfigError {
                    var: "TESSERA_MASTER_KEYS",
                    message: "required when TESSERA_PUBLIC_URL is https: set it to v1:<base64 of 32 random bytes> \
                              (for example from `openssl rand -base64 32`)"
                        .into(),
                })
            }
            None => (crate::crypto::MasterKeys::development(), true),
        };
        let openai_base_url = url(
            get("OPENAI_BASE_URL"),
            "OPENAI_BASE_URL",
            "https://api.openai.com/v1",
            &["http", "https"],
        )?
        .trim_end_matches('/')
        .to_string();
        let anthropic_base_url = url(
            get("ANTHROPIC_BASE_URL"),
            "ANTHROPIC_BASE_URL",
            "https://api.anthropic.com",
            &["http", "https"],
        )?
        .trim_end_matches('/')
        .to_string();
        let stripe = stripe_config(&get)?;
        let qdrant_url = match get("QDRANT_URL") {
            Some(v) => Some(
                url(Some(v), "QDRANT_URL", "", &["http", "https"])?
                    .trim_end_matches('/')
                    .to_string(),
            ),
            None => None,
        };
        let qdrant_prefix = get("TESSERA_QDRANT_PREFIX")
            .unwrap_or("tessera_")
            .to_string();
        if !qdrant_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError {
                var: "TESSERA_QDRANT_PREFIX",
                message: "use letters, digits, '_' and '-' only".into(),
            });
        }
        let platform_key = |var: &str| get(var).map(|k| secrecy::SecretString::from(k.to_string()));
        let demo = boolean(get("TESSERA_DEMO"), "TESSERA_DEMO", false)?;
        if demo && !is_loopback_http(&public_url) {
            return Err(ConfigError {
                var: "TESSERA_DEMO",
                message: format!(
                    "demo mode only runs on this machine: TESSERA_PUBLIC_URL must be http:// on \
                     127.0.0.1, [::1] or localhost (it is {public_url}); unset TESSERA_DEMO in \
                     production"
                ),
            });
        }
        Ok(Self {
            demo,
            signups_per_hour: number(
                get("TESSERA_SIGNUPS_PER_HOUR"),
                "TESSERA_SIGNUPS_PER_HOUR",
                20,
                1,
                1_000_000,
            )?,
            openai_base_url,
            anthropic_base_url,
            platform_openai_key: platform_key("TESSERA_PLATFORM_OPENAI_KEY"),
            platform_anthropic_key: platform_key("TESSERA_PLATFORM_ANTHROPIC_KEY"),
            qdrant_api_key: platform_key("QDRANT_API_KEY"),
            qdrant_url,
            qdrant_prefix,
            default_max_tokens: number(
                get("TESSERA_DEFAULT_MAX_TOKENS"),
                "TESSERA_DEFAULT_MAX_TOKENS",
                1024,
                1,
                200_000,
            )?,
            provider_timeout_secs: number(
                get("TESSERA_PROVIDER_TIMEOUT_SECS"),
                "TESSERA_PROVIDER_TIMEOUT_SECS",
                60,
                1,
                600,
            )?,
            provider_retries: number(
                get("TESSERA_PROVIDER_RETRIES"),
                "TESSERA_PROVIDER_RETRIES",
                2,
                0,
                5,
            )?,
            allow_private_endpoints: boolean(
                get("TESSERA_ALLOW_PRIVATE_ENDPOINTS"),
                "TESSERA_ALLOW_PRIVATE_ENDPOINTS",
                false,
            )?,
            stripe,
            billing_grace_days: number(
                get("TESSERA_BILLING_GRACE_DAYS"),
                "TESSERA_BILLING_GRACE_DAYS",
                7,
                0,
                90,
            )?,
            meter_interval_secs: number(
                get("TESSERA_METER_INTERVAL_SECS"),
                "TESSERA_METER_INTERVAL_SECS",
                60,
                1,
                3600,
            )?,
            meter_delay_secs: number(
                get("TESSERA_METER_DELAY_SECS"),
                "TESSERA_METER_DELAY_SECS",
                300,
                0,
                86_400,
            )?,
            max_upload_mb: number(
                get("TESSERA_MAX_UPLOAD_MB"),
                "TESSERA_MAX_UPLOAD_MB",
                20,
                1,
                1000,
            )?,
            ingest_workers: number(
                get("TESSERA_INGEST_WORKERS"),
                "TESSERA_INGEST_WORKERS",
                1,
                0,
                64,
            )?,
            master_keys: std::sync::Arc::new(master_keys),
            development_master_key,
            database_url,
            database_admin_url,
            db_max_connections: number(
                get("TESSERA_DB_MAX_CONNECTIONS"),
                "TESSERA_DB_MAX_CONNECTIONS",
                10,
                1,
                1000,
            )?,
            redis_url,
            redis_prefix: get("TESSERA_REDIS_PREFIX")
                .unwrap_or("tessera:")
                .to_string(),
            public_url,
            migrate_on_start: boolean(
                get("TESSERA_MIGRATE_ON_START"),
                "TESSERA_MIGRATE_ON_START",
                true,
            )?,
            trusted_proxies: trusted_proxies(
                get("TESSERA_TRUSTED_PROXIES"),
                get("TESSERA_TRUST_PROXY"),
            )?,
            invite_ttl_hours: number(
                get("TESSERA_INVITE_TTL_HOURS"),
                "TESSERA_INVITE_TTL_HOURS",
                168,
                1,
                24 * 90,
            )?,
            session_ttl_hours: number(
                get("TESSERA_SESSION_TTL_HOURS"),
                "TESSERA_SESSION_TTL_HOURS",
                24 * 7,
                1,
                24 * 365,
            )?,
            metrics_addr: match get("TESSERA_METRICS_ADDR") {
                None => None,
                Some(v) => Some(v.parse().map_err(|_| ConfigError {
                    var: "TESSERA_METRICS_ADDR",
                    message: format!(
                        "expected an address and port such as 0.0.0.0:9090, got {v:?}"
                    ),
                })?),
            },
            metrics_token: match get("TESSERA_METRICS_TOKEN") {
                Some(v) if v.len() < 16 => {
                    return Err(ConfigError {
                        var: "TESSERA_METRICS_TOKEN",
                        message: "expected at least 16 characters (e.g. `openssl rand -hex 24`)"
                            .into(),
                    })
                }
                v => v.map(|v| secrecy::SecretString::from(v.to_string())),
            },
            shutdown_grace_secs: number(
                get("TESSERA_SHUTDOWN_GRACE_SECS"),
                "TESSERA_SHUTDOWN_GRACE_SECS",
                30,
                0,
                3600,
            )?,
        })
    }

    /// Cookies get `Secure` when Tessera is reached over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `scheme://host[:port]` of the public URL, as browsers send it in `Origin`.
    pub fn public_origin(&self) -> &str {
        origin_of(&self.public_url)
    }
}

/// `scheme://host[:port]` of a URL: everything before its path.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn url(
    value: Option<&str>,
    var: &'static str,
    default: &str,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let value = value.unwrap_or(default);
    let scheme = value.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !schemes.contains(&scheme) {
        return Err(ConfigError {
            var,
            message: format!(
                "expected a URL starting with {}://",
                schemes.join(":// or ")
            ),
        });
    }
    Ok(value.to_string())
}

fn number<T>(
    value: Option<&str>,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(value) = value else {
        return Ok(default);
    };
    match value.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError {
            var,
            message: format!("expected a whole number from {min} to {max}, got {value:?}"),
        }),
    }
}

/// Stripe's settings: all or nothing, each checked for the shape Stripe gives it.
fn stripe_config<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<StripeConfig>, ConfigError> {
    let Some(secret) = get("STRIPE_SECRET_KEY") else {
        if get("STRIPE_WEBHOOK_SECRET").is_some() {
            return Err(ConfigError {
                var: "STRIPE_SECRET_KEY",
                message:
                    "required when STRIPE_WEBHOOK_SECRET is set (Dashboard → Developers → API keys)"
                        .into(),
            });
        }
        return Ok(None);
    };
    if !(secret.starts_with("sk_") || secret.starts_with("rk_")) {
        return Err(ConfigError {
            var: "STRIPE_SECRET_KEY",
            message: "expected a secret key starting with sk_ (or a restricted key, rk_)".into(),
        });
    }
    let webhook_secrets: Vec<secrecy::SecretString> = get("STRIPE_WEBHOOK_SECRET")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| secrecy::SecretString::from(s.to_string()))
        .collect();
    if webhook_secrets.is_empty() {
        return Err(ConfigError {
            var: "STRIPE_WEBHOOK_SECRET",
            message: "required with STRIPE_SECRET_KEY: the webhook endpoint's signing secret (whsec_...), so plan changes reach Tessera".into(),
        });
    }
    if webhook_secrets
        .iter()
        .any(|s| !secrecy::ExposeSecret::expose_secret(s).starts_with("whsec_"))
    {
        return Err(ConfigError {
            var: "STRIPE_WEBHOOK_SECRET",
            message: "expected signing secrets starting with whsec_, comma-separated".into(),
        });
    }
    let api_base = url(
        get("STRIPE_API_BASE"),
        "STRIPE_API_BASE",
        "https://api.stripe.com/",
        &["http", "https"],
    )?;
    let api_base = format!("{}/", api_base.trim_end_matches('/'));
    Ok(Some(StripeConfig {
        secret_key: secrecy::SecretString::from(secret.to_string()),
        webhook_secrets,
        api_base,
    }))
}

/// `10.0.0.0/8, 192.168.1.7, ::1`: networks or single addresses.
fn trusted_proxies(
    value: Option<&str>,
    retired: Option<&str>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    if retired.is_some() {
        // It trusted any sender's X-Forwarded-For; the list names who may send one.
        return Err(ConfigError {
            var: "TESSERA_TRUST_PROXY",
            message: "is no longer read: list the reverse proxies' addresses in TESSERA_TRUSTED_PROXIES instead".into(),
        });
    }
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError {
                    var: "TESSERA_TRUSTED_PROXIES",
                    message: format!("{p:?} is not an IP address or network (like 10.0.0.0/8)"),
                })
        })
        .collect()
}

fn boolean(value: Option<&str>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match value.map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(ConfigError {
            var,
            message: format!("expected true or false, got {v:?}"),
        }),
    }
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_make_a_local_run_work() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.public_origin(), "http://127.0.0.1:3000");
        assert!(!c.secure_cookies());
        assert!(c.migrate_on_start);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = Config::from_vars(&vars(&[("TESSERA_DB_MAX_CONNECTIONS", "lots")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_DB_MAX_CONNECTIONS");
        assert!(err.to_string().contains("TESSERA_DB_MAX_CONNECTIONS"));
        let err = Config::from_vars(&vars(&[("REDIS_URL", "localhost:6379")])).unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
        let err = Config::from_vars(&vars(&[("TESSERA_MIGRATE_ON_START", "maybe")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_MIGRATE_ON_START");
        let err = Config::from_vars(&vars(&[("TESSERA_TRUST_PROXY", "true")])).unwrap_err();
        assert!(err.to_string().contains("TESSERA_TRUSTED_PROXIES"), "{err}");
        let err = Config::from_vars(&vars(&[("TESSERA_TRUSTED_PROXIES", "10.0.0.0/8, nope")]))
            .unwrap_err();
        assert_eq!(err.var, "TESSERA_TRUSTED_PROXIES");
        let c =
            Config::from_vars(&vars(&[("TESSERA_TRUSTED_PROXIES", "10.0.0.0/8, ::1")])).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn operations_settings_are_checked_and_the_token_never_printed() {
        let err = Config::from_vars(&vars(&[("TESSERA_METRICS_ADDR", "9090")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_METRICS_ADDR");
        let err = Config::from_vars(&vars(&[("TESSERA_METRICS_TOKEN", "short")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_METRICS_TOKEN");
        let err = Config::from_vars(&vars(&[("TESSERA_SHUTDOWN_GRACE_SECS", "-1")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_SHUTDOWN_GRACE_SECS");
        let token = "a-metrics-token-of-some-length";
        let c = Config::from_vars(&vars(&[
            ("TESSERA_METRICS_ADDR", "0.0.0.0:9090"),
            ("TESSERA_METRICS_TOKEN", token),
        ]))
        .unwrap();
        assert_eq!(c.metrics_addr.unwrap().port(), 9090);
        assert_eq!(c.shutdown_grace_secs, 30);
        assert!(!format!("{c:?}").contains(token));
    }

    #[test]
    fn demo_mode_runs_only_on_this_machine() {
        for local in [
            "http://127.0.0.1:3000",
            "http://localhost:8080/",
            "http://[::1]:3000",
        ] {
            let c = Config::from_vars(&vars(&[
                ("TESSERA_DEMO", "true"),
                ("TESSERA_PUBLIC_URL", local),
            ]))
            .unwrap();
            assert!(c.demo, "{local}");
        }
        for public in [
            "https://127.0.0.1:3000",
            "http://clinic.example.com",
            "http://10.0.0.5:3000",
            "http://127.0.0.1.example.com",
        ] {
            let err = Config::from_vars(&vars(&[
                ("TESSERA_DEMO", "true"),
                ("TESSERA_PUBLIC_URL", public),
                (
                    "TESSERA_MASTER_KEYS",
                    "v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                ),
            ]))
            .unwrap_err();
            assert_eq!(err.var, "TESSERA_DEMO", "{public}");
        }
        assert!(!Config::from_vars(&HashMap::new()).unwrap().demo);
    }

    #[test]
    fn https_public_url_makes_cookies_secure() {
        let c = Config::from_vars(&vars(&[
            ("TESSERA_PUBLIC_URL", "https://clinic.example.com/app/"),
            (
                "TESSERA_MASTER_KEYS",
                "v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ]))
        .unwrap();
        assert!(c.secure_cookies());
        assert_eq!(c.public_origin(), "https://clinic.example.com");
    }

    #[test]
    fn master_keys_are_required_behind_https_and_never_printed() {
        let err = Config::from_vars(&vars(&[(
            "TESSERA_PUBLIC_URL",
            "https://clinic.example.com",
        )]))
        .unwrap_err();
        assert_eq!(err.var, "TESSERA_MASTER_KEYS");
        let err =
            Config::from_vars(&vars(&[("TESSERA_MASTER_KEYS", "v1:not-base64!")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_MASTER_KEYS");
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let c = Config::from_vars(&vars(&[("TESSERA_MASTER_KEYS", &format!("v7:{key}"))])).unwrap();
        assert_eq!(c.master_keys.current_version(), "v7");
        assert!(!c.development_master_key);
        assert!(!format!("{c:?}").contains(key));
        assert!(
            Config::from_vars(&HashMap::new())
                .unwrap()
                .development_master_key
        );
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c = Config::from_vars(&vars(&[(
            "DATABASE_URL",
            "postgres://app:hunter2@db/tessera",
        )]))
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("app:***@db/tessera"));
    }

    #[test]
    fn stripe_settings_come_together_and_are_checked() {
        assert!(Config::from_vars(&HashMap::new()).unwrap().stripe.is_none());
        let err = Config::from_vars(&vars(&[("STRIPE_SECRET_KEY", "sk_test_1")])).unwrap_err();
        assert_eq!(err.var, "STRIPE_WEBHOOK_SECRET");
        let err = Config::from_vars(&vars(&[("STRIPE_WEBHOOK_SECRET", "whsec_1")])).unwrap_err();
        assert_eq!(err.var, "STRIPE_SECRET_KEY");
        let err = Config::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "pk_test_1"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_1"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "STRIPE_SECRET_KEY");
        let err = Config::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "sk_test_1"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_1,oops"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "STRIPE_WEBHOOK_SECRET");
        let c = Config::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "sk_test_secret123"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old"),
            ("STRIPE_API_BASE", "http://127.0.0.1:1/stripe"),
        ]))
        .unwrap();
        let stripe = c.stripe.as_ref().unwrap();
        assert_eq!(stripe.webhook_secrets.len(), 2);
        assert_eq!(stripe.api_base, "http://127.0.0.1:1/stripe/");
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("secret123") && !printed.contains("whsec_new"),
            "{printed}"
        );
        let err = Config::from_vars(&vars(&[("TESSERA_BILLING_GRACE_DAYS", "soon")])).unwrap_err();
        assert_eq!(err.var, "TESSERA_BILLING_GRACE_DAYS");
    }
}
