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
    /// The HTTP status this error maps to.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::Invalid(_) => 422,
            Error::Conflict(_) => 409,
            Error::NotFound => 404,
            Error::Forbidden(_) | Error::PlanLimit(_) => 403,
            Error::Unauthenticated(_) => 401,
            Error::RateLimited { .. } | Error::OverBudget { .. } => 429,
            Error::Gone(_) => 410,
            Error::Unavailable(_) => 503,
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

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn over_budget_message(used: i64, limit: i64, requested: i64) -> String {
    let ask = "An admin can raise the monthly spending cap under Usage, or change the plan.";
    if used >= limit {
        format!(
            "Monthly token allowance used: {} of {} tokens. {ask}",
            thousands(used),
            thousands(limit)
        )
    } else {
        format!(
            "Not enough of this month's token allowance is left: this request could need up to {} tokens, and {} of {} remain (calls in progress hold some). Lower max_tokens or shorten the conversation. {ask}",
            thousands(requested),
            thousands(limit - used),
            thousands(limit)
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_000_000), "1,000,000");
        assert_eq!(super::thousands(-12_345), "-12,345");
    }
}
