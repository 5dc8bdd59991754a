//! The core's error type. Client mistakes carry a short message meant for the person who made
//! them; everything else is opaque to the client and logged with its source. The core knows no
//! HTTP: the app maps each variant to a status in one place (`app::server::error`).

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be accepted; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with existing data (for example a duplicate email).
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// Signed in, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// Not signed in, or wrong credentials. Deliberately vague.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("Too many attempts. Try again in {retry_after_secs} seconds.")]
    RateLimited { retry_after_secs: u64 },
    /// An invitation link that can no longer be used.
    #[error("{0}")]
    Gone(String),
    /// The clinic's plan does not allow this (for example another agent).
    #[error("{0}")]
    PlanLimit(String),
    /// The month's token limit would be exceeded.
    #[error("{}", over_budget_message(*used, *limit, *requested))]
    OverBudget {
        used: i64,
        limit: i64,
        requested: i64,
    },
    /// A service Tessera depends on (Stripe) failed; the message says what to do.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }

    /// Postgres or Redis cannot be reached (down, restarting, the pool exhausted): worth
    /// answering "try again shortly" (503) rather than reporting a fault.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::WorkerCrashed
                ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
            }
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain
                    )
            }
            _ => false,
        }
    }

    /// Whether the client can act on it (a 4xx), as opposed to a failure on our side.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Error::Database(_) | Error::Migrate(_) | Error::Redis(_) | Error::Internal(_)
        )
    }
}

impl From<tessera_types::UnknownName> for Error {
    fn from(e: tessera_types::UnknownName) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl From<tessera_types::NotAMonth> for Error {
    fn from(e: tessera_types::NotAMonth) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// `NotFound` when a statement that targets one row changed none.
pub fn one_row(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 {
        Err(Error::NotFound)
    } else {
        Ok(())
    }
}

/// True when `err` is a violation of the named unique or check constraint.
pub fn is_constraint(err: &sqlx::Error, name: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some(name))
}

fn over_budget_message(used: i64, limit: i64, requested: i64) -> String {
    let ask = "An admin can raise the monthly spending cap under Usage, or change the plan.";
    if used >= limit {
        format!(
            "Monthly token allowance used: {} of {} tokens. {ask}",
            crate::format::thousands(used),
            crate::format::thousands(limit)
        )
    } else {
        format!(
            "Not enough of this month's token allowance is left: this request could need up to {} tokens, and {} of {} remain (calls in progress hold some). Lower max_tokens or shorten the conversation. {ask}",
            crate::format::thousands(requested),
            crate::format::thousands(limit - used),
            crate::format::thousands(limit)
        )
    }
}
