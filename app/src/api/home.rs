//! The home page's "Get started" checklist for a clinic's admins.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// The first-run steps, each done or not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checklist {
    /// A provider key of the clinic's own is saved.
    pub provider_key: bool,
    /// No key is needed: the platform's keys serve this clinic's plan.
    pub platform_key_covers: bool,
    pub agent: bool,
    pub colleague: bool,
    pub conversation: bool,
}

impl Checklist {
    /// Every step done (a key of its own, or the platform's).
    pub fn complete(&self) -> bool {
        (self.provider_key || self.platform_key_covers)
            && self.agent
            && self.colleague
            && self.conversation
    }
}

/// Where the clinic stands on the first-run steps (owners and admins).
#[server(endpoint = "get_started")]
pub async fn get_started() -> Result<Checklist, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let progress = tessera_core::onboarding::progress(&services.db, v.tenant.id).await?;
    let config = &services.config;
    let platform_key =
        config.platform_openai_key.is_some() || config.platform_anthropic_key.is_some();
    let covers = platform_key
        && services
            .gateway
            .limits(v.tenant.id)
            .await?
            .may_use_platform_keys();
    Ok(Checklist {
        provider_key: progress.provider_key,
        platform_key_covers: covers,
        agent: progress.agent,
        colleague: progress.colleague,
        conversation: progress.conversation,
    })
}
