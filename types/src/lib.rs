//! Tessera's shared vocabulary, compiled into the core (with the `sqlx` feature, so the enums
//! are read from and written to Postgres as the text the schema's checks allow) and into the
//! browser (no database there). One definition for each: the UI's role is the core's role.

pub mod format;

/// The demo clinic's owner (demo mode, `TESSERA_DEMO`, which runs on loopback addresses only):
/// shown on every page while it is on.
pub mod demo {
    pub const EMAIL: &str = "demo@tessera.test";
    pub const PASSWORD: &str = "tessera-demo-password";
}
mod month;
mod states;

pub use month::{Month, NotAMonth};
pub use states::{
    DocumentKind, DocumentStatus, MessageRole, MessageStatus, PlanId, Provider, ReplyEnd, Role,
};

/// The kinds of audit-log entry (the first part of an entry's action, `provider_key.added`),
/// with their names, in the order filters offer them.
pub const AUDIT_AREAS: &[(&str, &str)] = &[
    ("sign_in", "Sign-ins"),
    ("provider_key", "Provider keys"),
    ("api_key", "API keys"),
    ("invitation", "Invitations"),
    ("member", "Members"),
    ("billing", "Plan and spending cap"),
    ("agent", "Agents"),
    ("clinic", "Clinic status and plan"),
    ("flag", "Feature flags"),
    ("operator", "Operators"),
];

/// What every unexpected failure says, wherever it shows: the details go to the log.
pub const SOMETHING_WENT_WRONG: &str = "Something went wrong on our side. Please try again.";

/// What a request says while Tessera's database or cache cannot be reached.
pub const TRY_AGAIN_SHORTLY: &str =
    "Tessera cannot reach its database just now. Please try again in a few seconds.";

/// Seconds a client is asked to wait (`Retry-After`) during such an outage.
pub const OUTAGE_RETRY_SECS: u64 = 5;

/// A value that is not one of an enum's names; its message lists the ones there are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Unknown {} {:?}: choose {}.",
            self.what,
            self.given,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownName {}
