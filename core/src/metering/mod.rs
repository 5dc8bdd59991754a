//! Metering: what a clinic may spend, what it has spent, and the ledger of every model call.
//!
//! # Budget
//!
//! Before a provider call, one Lua script in Redis checks the month's limit (the plan's
//! allowance, plus whatever the spending cap buys beyond it) against tokens already used plus
//! tokens reserved by calls in flight, and reserves the call's worst case (an upper bound of the
//! prompt plus `max_tokens`). Because the check and the reservation are one atomic step and the
//! worst case is reserved, no number of concurrent calls can take recorded use past the limit.
//! After the call the reservation is settled to the real usage (or released, for a failed call).
//! A reservation left behind by a crashed request carries an expiry and gives its tokens back
//! the next time anyone reserves.
//!
//! Calls that no per-minute limit counts reserve from a *slice*: a reservation of the same
//! kind that a process makes for many calls at once and hands out in memory (`slices.rs`), so
//! that most of them make no round trip before the provider call.
//!
//! # Ledger, and why Postgres is off the request's path
//!
//! The settle script does two things atomically: it moves the reservation into the live
//! counters and appends the call's usage event to a Redis stream (`ledger`). A request therefore
//! makes one Redis round trip to settle and never waits for Postgres. Each process's
//! [`LedgerWriter`] writes the events its own scripts added into `usage_events` in batches, from
//! memory, and deletes an entry from the stream only after its batch is committed, so a server
//! that crashes mid-batch leaves its entries in the stream, where any writer finds them once
//! they are [`LedgerWriter::claim_after`] old and writes them again, which the idempotency key
//! makes harmless. Once settled, an event survives a crash of the server that
//! made the call. It lives in Redis until written (normally well under a second), so Redis
//! should run with append-only persistence (`appendonly yes`) to survive a Redis restart in
//! that window as well.
//!
//! # Live counters
//!
//! A hash per clinic and month holds tokens, cost and requests: the real-time view. When it is
//! missing (Redis was flushed or restarted empty) the next reservation rebuilds it from the
//! ledger before checking the budget.

mod batch;
mod budget;
pub(crate) mod ledger;
mod limits;
mod prices;
mod rate;
pub mod report;
mod slices;

pub use budget::{Held, Metering, Reservation};
pub use ledger::{
    dead_letters, handoff_length, now_ms, write_events, CallKind, LedgerWriter, UsageEvent,
    DEAD_LETTER_MAX, INSERT_PIECE,
};
pub use limits::{grace_ends, limits, set_spending_cap, Limits};
pub use prices::Prices;

use serde::{Deserialize, Serialize};

/// A clinic's use in one month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthUsage {
    pub tokens: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micro_usd: i64,
    pub requests: i64,
}

impl MonthUsage {
    /// Adds `other` to this (saturating: counts never wrap).
    pub fn add(&mut self, other: &MonthUsage) {
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.cost_micro_usd = self.cost_micro_usd.saturating_add(other.cost_micro_usd);
        self.requests = self.requests.saturating_add(other.requests);
    }
}
