//! Admin -> Agents: the clinic's agents, within the plan's limit.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::server as srv;

/// An agent as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    /// As typed: `0.7`.
    pub temperature: String,
    pub max_reply_tokens: i32,
    pub context_tokens: i32,
    pub knowledge_enabled: bool,
    pub top_k: i32,
    pub min_score: i32,
    /// Comma-separated collections; empty: every document.
    pub knowledge_tags: String,
}

#[cfg(feature = "ssr")]
impl From<tessera_core::agents::Agent> for AgentRow {
    fn from(a: tessera_core::agents::Agent) -> Self {
        AgentRow {
            id: a.id.to_string(),
            temperature: format!("{}", a.temperature()),
            slug: a.slug,
            name: a.name,
            description: a.description,
            system_prompt: a.system_prompt,
            model: a.model,
            max_reply_tokens: a.max_reply_tokens,
            context_tokens: a.context_tokens,
            knowledge_enabled: a.knowledge_enabled,
            top_k: a.knowledge_top_k,
            min_score: a.knowledge_min_score,
            knowledge_tags: a.knowledge_tags.join(", "),
        }
    }
}

/// The agents, the plan's limit and the models the clinic can use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsPage {
    pub agents: Vec<AgentRow>,
    pub plan_name: String,
    pub max_agents: Option<i32>,
    pub models: Vec<String>,
    /// The collections (document tags) in use, to choose from.
    pub tags: Vec<String>,
    /// The clinic's default model (the `default_model` flag): agents that name none use it,
    /// and a new agent's form suggests it.
    pub default_model: String,
}

#[server(endpoint = "agents")]
pub async fn get_agents_page() -> Result<AgentsPage, AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let agents = tessera_core::agents::list(&services.db, v.tenant.id).await?;
    let limits = services.gateway.limits(v.tenant.id).await?;
    let max_agents = tessera_core::agents::max_agents(&services.db, v.tenant.id).await?;
    let mut models: Vec<String> = services
        .gateway
        .available_models(v.tenant.id)
        .await?
        .into_iter()
        .map(|m| m.id)
        .collect();
    models.sort();
    models.dedup();
    let tags = tessera_core::knowledge::tags(&services.db, v.tenant.id).await?;
    let default_model = services
        .gateway
        .flags
        .for_clinic(v.tenant.id, limits.plan)
        .default_model;
    Ok(AgentsPage {
        default_model,
        agents: agents.into_iter().map(AgentRow::from).collect(),
        plan_name: limits.plan_name,
        max_agents,
        models,
        tags,
    })
}

/// Creates an agent (no `id`) or changes one.
#[server(endpoint = "save_agent")]
pub async fn save_agent(
    id: Option<String>,
    name: String,
    description: Option<String>,
    system_prompt: Option<String>,
    model: String,
    temperature: Option<String>,
    max_reply_tokens: Option<String>,
    context_tokens: Option<String>,
    knowledge: Option<String>,
    top_k: Option<String>,
    min_score: Option<String>,
    knowledge_tags: Option<String>,
) -> Result<AgentRow, AppError> {
    use tessera_core::agents;
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let input = agents::AgentInput {
        name,
        description: description.unwrap_or_default(),
        system_prompt: system_prompt.unwrap_or_default(),
        model,
        temperature: temperature.unwrap_or_default(),
        max_reply_tokens: max_reply_tokens.unwrap_or_default(),
        context_tokens: context_tokens.unwrap_or_default(),
        knowledge: knowledge.unwrap_or_default(),
        top_k: top_k.unwrap_or_default(),
        min_score: min_score.unwrap_or_default(),
        knowledge_tags: knowledge_tags.unwrap_or_default(),
    };
    let (db, changes) = (&services.db, &services.changes);
    let agent = match id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => {
            let id: uuid::Uuid = srv::parse_id(id)?;
            agents::update(db, changes, v.tenant.id, v.actor(), id, &input).await?
        }
        None => agents::create(db, changes, v.tenant.id, v.actor(), &input).await?,
    };
    Ok(agent.into())
}

#[server(endpoint = "delete_agent")]
pub async fn delete_agent(id: String) -> Result<(), AppError> {
    let v = srv::require_admin().await?;
    let services = srv::services()?;
    let id: uuid::Uuid = srv::parse_id(&id)?;
    tessera_core::agents::delete(&services.db, &services.changes, v.tenant.id, v.actor(), id)
        .await?;
    Ok(())
}
