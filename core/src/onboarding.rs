//! The first run of a clinic: what its admins have done of the "Get started" steps, read from
//! what the clinic holds (so the checklist ticks itself as the steps are done anywhere).

use crate::{Db, Result, TenantId};

/// Each step of the checklist, done or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The clinic has a provider key of its own (or an OpenAI-compatible endpoint).
    pub provider_key: bool,
    /// It has at least one agent.
    pub agent: bool,
    /// Someone else has joined, or has been invited.
    pub colleague: bool,
    /// Someone has had a conversation with an agent.
    pub conversation: bool,
}

pub async fn progress(db: &Db, tenant: TenantId) -> Result<Progress> {
    let mut tx = db.begin_tenant(tenant).await?;
    let (provider_key, agent, colleague, conversation): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM provider_keys),
                EXISTS (SELECT 1 FROM agents),
                (SELECT count(*) FROM memberships) > 1 OR EXISTS (SELECT 1 FROM invitations),
                EXISTS (SELECT 1 FROM conversations)",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Progress {
        provider_key,
        agent,
        colleague,
        conversation,
    })
}
