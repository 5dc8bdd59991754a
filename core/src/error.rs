//! The core's error type. Client mistakes carry a short message meant for the person who made
//! them; everything else is opaque to the client and logged with its source.

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
    /// The HTTP status this error maps to.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::Invalid(_) => 422,
            Error::Conflict(_) => 409,
            Error::NotFound => 404,
            Error::Forbidden(_) => 403,
            Error::Unauthenticated(_) => 401,
            Error::RateLimited { .. } => 429,
            Error::Gone(_) => 410,
            Error::Database(_) | Error::Migrate(_) | Error::Redis(_) | Error::Internal(_) => 500,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
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
