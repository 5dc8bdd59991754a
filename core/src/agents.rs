//! Agents: a clinic's configured assistants (a name, a system prompt, a model and its settings).
//! Admins manage them, within the plan's limit; staff chat with them; the API reaches one as the
//! model `agent:<slug>`.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::Postgres;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, By, Event};
use crate::auth::members::Actor;
use crate::changes::{Change, Changes};
use crate::db::Db;
use crate::knowledge::search::Passage;
use crate::llm::body::Body;
use crate::llm::{self, ChatRequest, MessageRole};
use crate::tenancy::TenantId;
use crate::{Error, Result};

/// The prefix that names an agent as a model in the API.
pub use crate::llm::AGENT_MODEL_PREFIX as MODEL_PREFIX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Agent {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    /// Hundredths (70 = 0.7).
    pub temperature_pct: i32,
    pub max_reply_tokens: i32,
    pub context_tokens: i32,
    /// Whether the agent draws on the clinic's documents.
    pub knowledge_enabled: bool,
    /// Passages retrieved for each question at most.
    pub knowledge_top_k: i32,
    /// The lowest relevance (0 to 100) a passage needs.
    pub knowledge_min_score: i32,
    /// The collections (document tags) it draws on; empty: every document.
    pub knowledge_tags: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Agent {
    pub fn temperature(&self) -> f32 {
        self.temperature_pct as f32 / 100.0
    }
}

/// What an admin fills in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentInput {
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    /// As typed: `0.7`.
    pub temperature: String,
    pub max_reply_tokens: String,
    pub context_tokens: String,
    /// `off` turns knowledge off; anything else (a checked box, or nothing) leaves it on.
    pub knowledge: String,
    pub top_k: String,
    pub min_score: String,
    /// Comma-separated; empty: every document.
    pub knowledge_tags: String,
}

#[derive(Debug)]
struct Valid {
    name: String,
    description: String,
    system_prompt: String,
    model: String,
    temperature_pct: i32,
    max_reply_tokens: i32,
    context_tokens: i32,
    knowledge_enabled: bool,
    knowledge_top_k: i32,
    knowledge_min_score: i32,
    knowledge_tags: Vec<String>,
}

fn whole(raw: &str, field: &str, default: i32, min: i32, max: i32) -> Result<i32> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(default);
    }
    match raw.replace(',', "").parse::<i32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "{field} must be a whole number from {min} to {max}."
        ))),
    }
}

fn validate(input: &AgentInput) -> Result<Valid> {
    let name = input.name.trim().to_string();
    if name.is_empty() {
        return Err(Error::invalid("Give the agent a name."));
    }
    if name.chars().count() > 80 {
        return Err(Error::invalid("The name can be at most 80 characters."));
    }
    let description = input.description.trim().to_string();
    if description.chars().count() > 500 {
        return Err(Error::invalid(
            "The description can be at most 500 characters.",
        ));
    }
    let system_prompt = input.system_prompt.trim().to_string();
    if system_prompt.chars().count() > 20_000 {
        return Err(Error::invalid(
            "The instructions can be at most 20,000 characters.",
        ));
    }
    // Empty: the clinic's default model (the `default_model` flag), whatever it is when the
    // agent answers.
    let model = input.model.trim().to_string();
    if model.len() > 200 || model.starts_with(MODEL_PREFIX) || model.contains(char::is_whitespace) {
        return Err(Error::invalid(format!("{model:?} is not a model name.")));
    }
    let temperature_pct = {
        let raw = input.temperature.trim();
        if raw.is_empty() {
            70
        } else {
            match raw.parse::<f64>() {
                Ok(t) if (0.0..=2.0).contains(&t) => (t * 100.0).round() as i32,
                _ => {
                    return Err(Error::invalid(
                        "Temperature must be a number from 0 to 2, such as 0.7.",
                    ))
                }
            }
        }
    };
    Ok(Valid {
        name,
        description,
        system_prompt,
        model,
        temperature_pct,
        max_reply_tokens: whole(&input.max_reply_tokens, "Max reply tokens", 1024, 1, 32_000)?,
        context_tokens: whole(&input.context_tokens, "Context budget", 8000, 500, 200_000)?,
        knowledge_enabled: !matches!(input.knowledge.trim(), "off" | "false" | "0"),
        knowledge_top_k: whole(&input.top_k, "Passages per question", 5, 1, 20)?,
        knowledge_min_score: whole(&input.min_score, "Lowest relevance", 0, 0, 100)?,
        knowledge_tags: crate::knowledge::parse_tags(&input.knowledge_tags)?,
    })
}

/// An agent's slug, its name in the API: `Front Desk Helper` -> `front-desk-helper`.
pub fn slugify(name: &str) -> String {
    crate::tenancy::slug(name, 50, "agent")
}

/// An agent's settings as the audit log keeps them.
fn audited(a: &Agent) -> serde_json::Value {
    serde_json::json!({
        "slug": a.slug,
        "name": a.name,
        "description": a.description,
        "instructions": a.system_prompt,
        "model": a.model,
        "temperature": a.temperature(),
        "max_reply_tokens": a.max_reply_tokens,
        "context_tokens": a.context_tokens,
        "knowledge": a.knowledge_enabled,
        "knowledge_top_k": a.knowledge_top_k,
        "knowledge_min_score": a.knowledge_min_score,
        "knowledge_tags": a.knowledge_tags,
    })
}

/// Binds an agent's settings, in the order both statements list them.
fn bind_settings<'q>(
    query: QueryAs<'q, Postgres, Agent, PgArguments>,
    v: &'q Valid,
) -> QueryAs<'q, Postgres, Agent, PgArguments> {
    query
        .bind(&v.name)
        .bind(&v.description)
        .bind(&v.system_prompt)
        .bind(&v.model)
        .bind(v.temperature_pct)
        .bind(v.max_reply_tokens)
        .bind(v.context_tokens)
        .bind(v.knowledge_enabled)
        .bind(v.knowledge_top_k)
        .bind(v.knowledge_min_score)
        .bind(&v.knowledge_tags)
}

pub(crate) const COLUMNS: &str = "id, slug, name, description, system_prompt, model, temperature_pct, max_reply_tokens, context_tokens, knowledge_enabled, knowledge_top_k, knowledge_min_score, knowledge_tags, created_at, updated_at";

/// Every agent of the clinic, by name. Anyone in the clinic may list them.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<Agent>> {
    let sql = format!("SELECT {COLUMNS} FROM agents ORDER BY lower(name), created_at");
    db.tenant_all(tenant, sqlx::query_as(&sql)).await
}

pub async fn get(db: &Db, tenant: TenantId, id: Uuid) -> Result<Agent> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE id = $1");
    db.tenant_optional(tenant, sqlx::query_as(&sql).bind(id))
        .await?
        .ok_or(Error::NotFound)
}

pub async fn by_slug(db: &Db, tenant: TenantId, slug: &str) -> Result<Option<Agent>> {
    let sql = format!("SELECT {COLUMNS} FROM agents WHERE slug = $1");
    db.tenant_optional(tenant, sqlx::query_as(&sql).bind(slug.trim()))
        .await
}

/// Creates an agent, refusing one beyond the plan's limit (checked under a lock on the clinic,
/// so two admins at once cannot both take the last place).
pub async fn create(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    input: &AgentInput,
) -> Result<Agent> {
    actor.require_admin("manage agents")?;
    let v = validate(input)?;
    let mut tx = db.begin_tenant(tenant).await?;
    // Lock the clinic's row alone, then read its plan: with a join, a plan changed meanwhile
    // (a Stripe webhook) would fail the locked row's re-check and lose it.
    let (plan_id, own_max): (String, Option<i32>) =
        sqlx::query_as("SELECT plan, limit_max_agents FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
    let (plan_max, plan): (Option<i32>, String) =
        sqlx::query_as("SELECT max_agents, name FROM plans WHERE id = $1")
            .bind(&plan_id)
            .fetch_one(&mut *tx)
            .await?;
    // An Enterprise clinic's own limit, else the plan's.
    let max = own_max.or(plan_max);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&mut *tx)
        .await?;
    if let Some(max) = max {
        if count >= i64::from(max) {
            return Err(Error::PlanLimit(format!(
                "The {plan} plan allows {max} agents, and this clinic has {count}. Upgrade the plan under Billing to add more, or delete an agent."
            )));
        }
    }
    let base = slugify(&v.name);
    let taken: Vec<String> =
        sqlx::query_scalar("SELECT slug FROM agents WHERE slug = $1 OR slug LIKE $1 || '-%'")
            .bind(&base)
            .fetch_all(&mut *tx)
            .await?;
    let slug = (1..)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|s| !taken.contains(s))
        .unwrap_or(base);
    let sql = format!(
        "INSERT INTO agents (id, tenant_id, slug, name, description, system_prompt, model, temperature_pct, max_reply_tokens, context_tokens,
                knowledge_enabled, knowledge_top_k, knowledge_min_score, knowledge_tags, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {COLUMNS}"
    );
    let insert = sqlx::query_as(&sql)
        .bind(Uuid::new_v4())
        .bind(tenant)
        .bind(&slug);
    let agent = bind_settings(insert, &v)
        .bind(actor.user)
        .fetch_one(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("agent.created", agent.name.clone()).after(audited(&agent)),
    )
    .await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    Ok(agent)
}

/// Changes an agent's settings (its slug stays, so API callers keep working).
pub async fn update(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    id: Uuid,
    input: &AgentInput,
) -> Result<Agent> {
    actor.require_admin("manage agents")?;
    let v = validate(input)?;
    let sql = format!(
        "UPDATE agents SET name = $2, description = $3, system_prompt = $4, model = $5, temperature_pct = $6,
                max_reply_tokens = $7, context_tokens = $8, knowledge_enabled = $9, knowledge_top_k = $10,
                knowledge_min_score = $11, knowledge_tags = $12, updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    );
    let mut tx = db.begin_tenant(tenant).await?;
    let select = format!("SELECT {COLUMNS} FROM agents WHERE id = $1 FOR UPDATE");
    let before: Agent = sqlx::query_as(&select)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    let update = sqlx::query_as(&sql).bind(id);
    let agent: Agent = bind_settings(update, &v).fetch_one(&mut *tx).await?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("agent.updated", agent.name.clone())
            .before(audited(&before))
            .after(audited(&agent)),
    )
    .await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    Ok(agent)
}

/// Deletes an agent. Conversations with it stay readable.
pub async fn delete(
    db: &Db,
    changes: &Changes,
    tenant: TenantId,
    actor: Actor,
    id: Uuid,
) -> Result<()> {
    actor.require_admin("manage agents")?;
    let mut tx = db.begin_tenant(tenant).await?;
    let sql = format!("DELETE FROM agents WHERE id = $1 RETURNING {COLUMNS}");
    let gone: Agent = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    audit::record(
        &mut tx,
        Some(tenant),
        By::Person(actor.user),
        Event::new("agent.deleted", gone.name.clone()).before(audited(&gone)),
    )
    .await?;
    tx.commit().await?;
    changes.announce(Change::Tenant(tenant)).await;
    Ok(())
}

/// A request to `agent:<slug>` as the agent makes it: its model, its instructions first, then
/// the passages retrieved for the question (numbered, to be cited as `[1]`), then as many of the
/// newest turns as fit its context budget; its reply limit and temperature unless the caller set
/// lower or other ones. Passages are taken in rank order while they fit the budget left after
/// the instructions and the question; the second value is how many were (the first that many
/// are what a reply can cite).
pub fn apply(agent: &Agent, mut req: ChatRequest, passages: &[Passage]) -> (ChatRequest, usize) {
    let (system, turns): (Vec<_>, Vec<_>) = req
        .messages
        .into_iter()
        .partition(|m| m.role == MessageRole::System);
    let question = turns.last().map_or(0, llm::tokens::message_tokens);
    let (instructions, used) = instructions(
        agent,
        system.into_iter().map(|m| m.content),
        question,
        passages,
    );
    let budget = i64::from(agent.context_tokens);
    req.messages = llm::context(&instructions, &turns, budget);
    req.model = agent.model.clone();
    let limit = agent.max_reply_tokens.max(1) as u32;
    req.max_tokens = Some(req.max_tokens.map_or(limit, |m| m.min(limit)));
    req.temperature = req.temperature.or(Some(agent.temperature()));
    req.agent = Some(agent.id);
    (req, used)
}

/// The agent's instructions, then the caller's, then as many passages as fit the budget left
/// after them and the question (`question` tokens); with how many passages were used.
fn instructions(
    agent: &Agent,
    callers: impl IntoIterator<Item = String>,
    question: i64,
    passages: &[Passage],
) -> (String, usize) {
    let mut instructions = agent.system_prompt.trim().to_string();
    for text in callers {
        if !instructions.is_empty() {
            instructions.push_str("\n\n");
        }
        instructions.push_str(&text);
    }
    let budget = i64::from(agent.context_tokens);
    let mut used = 0;
    if !passages.is_empty() {
        let mut left = budget - llm::count_tokens(&instructions) - question - GROUNDING_TOKENS;
        let mut grounding = String::from(GROUNDING);
        for (i, p) in passages.iter().enumerate() {
            let block = passage_block(i + 1, p);
            let cost = i64::from(p.tokens) + 24;
            if cost > left {
                break;
            }
            left -= cost;
            used += 1;
            grounding.push_str(&block);
        }
        if grounding.len() > GROUNDING.len() {
            if !instructions.is_empty() {
                instructions.push_str("\n\n");
            }
            instructions.push_str(&grounding);
        }
    }
    (instructions, used)
}

/// The text of an OpenAI message's content (a string, or its text parts).
fn content_text(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of the last user message of an OpenAI chat body (what retrieval searches for).
pub fn last_question(body: &Body) -> String {
    let messages: Vec<serde_json::Value> = body.get("messages").ok().flatten().unwrap_or_default();
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// [`apply`] for an OpenAI chat body forwarded as the client sent it: the agent's model, its
/// instructions with the caller's system and developer messages and the passages as the first
/// message, then the newest messages that fit its context budget (tool calls, images and every
/// other part kept as they came; never starting with a reply or a tool result), the agent's
/// reply limit unless the caller's is lower, its temperature unless the caller set one. Returns
/// how many passages were used and the reply limit to set when the caller gave none.
pub fn apply_body(
    agent: &Agent,
    body: &mut Body,
    passages: &[Passage],
) -> Result<(usize, u32), String> {
    use serde_json::{json, Value};
    let messages: Vec<Value> = body
        .get("messages")
        .map_err(|_| "messages must be an array of messages.".to_string())?
        .unwrap_or_default();
    let (system, turns): (Vec<Value>, Vec<Value>) = messages
        .into_iter()
        .partition(|m| m["role"] == "system" || m["role"] == "developer");
    let cost = |m: &Value| llm::count_tokens(&m.to_string()) + 4;
    let question = turns.last().map_or(0, cost);
    let (instructions, used) = instructions(
        agent,
        system.iter().map(|m| content_text(&m["content"])),
        question,
        passages,
    );
    let budget = i64::from(agent.context_tokens);
    let mut spent = llm::count_tokens(&instructions);
    let mut kept: Vec<Value> = Vec::new();
    for (i, m) in turns.iter().enumerate().rev() {
        let c = cost(m);
        if i + 1 != turns.len() && spent + c > budget {
            break;
        }
        spent += c;
        kept.push(m.clone());
    }
    kept.reverse();
    // Never start with a reply, or a tool result without the call it answers.
    while kept.len() > 1 && (kept[0]["role"] == "assistant" || kept[0]["role"] == "tool") {
        kept.remove(0);
    }
    let mut out = Vec::with_capacity(kept.len() + 1);
    if !instructions.trim().is_empty() {
        out.push(json!({ "role": "system", "content": instructions }));
    }
    out.extend(kept);
    body.set("messages", &out);
    body.set("model", &agent.model);
    let limit = agent.max_reply_tokens.max(1) as u32;
    for field in ["max_completion_tokens", "max_tokens"] {
        if let Ok(Some(n)) = body.get::<u64>(field) {
            body.set(field, &n.min(u64::from(limit)));
        }
    }
    if !body.has("temperature") {
        body.set("temperature", &agent.temperature());
    }
    Ok((used, limit))
}

/// What introduces the passages in the instructions.
const GROUNDING: &str = "Answer from the clinic's documents below where they cover the question, and cite each passage you use by its number in square brackets, like [1]. If they do not cover it, say so rather than guess.\n";
/// An upper bound of [`GROUNDING`]'s tokens.
const GROUNDING_TOKENS: i64 = 60;

fn passage_block(n: usize, p: &Passage) -> String {
    let title = if p.heading.is_empty() {
        p.name.clone()
    } else {
        format!("{} — {}", p.name, p.heading)
    };
    format!("\n[{n}] {title}\n{}\n", p.text)
}

/// How many agents the clinic has.
pub async fn count(db: &Db, tenant: TenantId) -> Result<i64> {
    let mut tx = db.begin_tenant(tenant).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// The plan's agent limit for a clinic (`None`: unlimited).
pub async fn max_agents(db: &Db, tenant: TenantId) -> Result<Option<i32>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let max: Option<i32> =
        sqlx::query_scalar(
            "SELECT COALESCE(t.limit_max_agents, p.max_agents) FROM tenants t JOIN plans p ON p.id = t.plan",
        )
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_body_gets_the_agents_settings_and_keeps_its_parts() {
        use serde_json::{json, Value};
        let agent = Agent {
            id: Uuid::nil(),
            slug: "desk".into(),
            name: "Desk".into(),
            description: String::new(),
            system_prompt: "You are the front desk.".into(),
            model: "gpt-4o-mini".into(),
            temperature_pct: 30,
            max_reply_tokens: 100,
            context_tokens: 500,
            knowledge_enabled: false,
            knowledge_top_k: 5,
            knowledge_min_score: 0,
            knowledge_tags: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        let old = "word ".repeat(600);
        let mut body = Body::parse(
            json!({
                "model": "agent:desk",
                "max_tokens": 5000,
                "seed": 3,
                "messages": [
                    { "role": "developer", "content": "Answer in French." },
                    { "role": "user", "content": old },
                    { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function", "function": { "name": "f", "arguments": "{}" } }] },
                    { "role": "tool", "tool_call_id": "c1", "content": "done" },
                    { "role": "user", "content": [{ "type": "text", "text": "And now?" }, { "type": "image_url", "image_url": { "url": "https://example.org/a.png" } }] },
                ],
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let (used, limit) = apply_body(&agent, &mut body, &[]).unwrap();
        assert_eq!((used, limit), (0, 100));
        let out: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(
            out["max_tokens"], 100,
            "the caller's limit, lowered to the agent's"
        );
        assert_eq!(out["seed"], 3, "other fields as they came");
        assert!((out["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(
            messages[0]["content"],
            "You are the front desk.\n\nAnswer in French."
        );
        // The long old question did not fit the budget; the reply and tool result that followed
        // it are dropped with it rather than left without their question.
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[1]["content"][1]["type"], "image_url");
    }

    #[test]
    fn slugs_are_friendly() {
        assert_eq!(slugify("Front Desk Helper"), "front-desk-helper");
        assert_eq!(slugify("  Triage -- Nurse!! "), "triage-nurse");
        assert_eq!(slugify("Ärztin"), "rztin");
        assert_eq!(slugify("!!!"), "agent");
    }

    #[test]
    fn input_is_checked_with_messages() {
        let ok = AgentInput {
            name: "Triage".into(),
            model: "gpt-4o-mini".into(),
            ..Default::default()
        };
        let v = validate(&ok).unwrap();
        assert_eq!(
            (v.temperature_pct, v.max_reply_tokens, v.context_tokens),
            (70, 1024, 8000)
        );
        let bad_temp = AgentInput {
            temperature: "3".into(),
            ..ok.clone()
        };
        assert!(validate(&bad_temp)
            .unwrap_err()
            .to_string()
            .contains("Temperature"));
        let no_model = AgentInput {
            model: " ".into(),
            ..ok.clone()
        };
        // No model: the clinic's default model (the `default_model` flag) when it answers.
        assert_eq!(validate(&no_model).unwrap().model, "");
        let spaced = AgentInput {
            model: "gpt 4o".into(),
            ..ok.clone()
        };
        assert!(validate(&spaced).is_err());
        let bad_ctx = AgentInput {
            context_tokens: "10".into(),
            ..ok
        };
        assert!(validate(&bad_ctx)
            .unwrap_err()
            .to_string()
            .contains("Context budget"));
    }

    proptest::proptest! {
        #[test]
        fn any_form_is_an_agent_or_a_message(
            name in ".{0,100}",
            model in ".{0,30}",
            temperature in ".{0,8}",
            max_reply_tokens in ".{0,12}",
            context_tokens in ".{0,12}",
        ) {
            let input = AgentInput {
                name,
                model,
                temperature,
                max_reply_tokens,
                context_tokens,
                ..Default::default()
            };
            match validate(&input) {
                Ok(v) => {
                    proptest::prop_assert!((0..=200).contains(&v.temperature_pct));
                    proptest::prop_assert!((1..=32_000).contains(&v.max_reply_tokens));
                    proptest::prop_assert!((500..=200_000).contains(&v.context_tokens));
                }
                Err(e) => proptest::prop_assert!(matches!(e, Error::Invalid(_))),
            }
            let _ = slugify(&input.name);
        }
    }
}
