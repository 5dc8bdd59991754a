//! Admin -> Agents: create, edit and delete the clinic's agents, within the plan's limit.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::agents::{get_agents_page, AgentRow, AgentsPage, DeleteAgent, SaveAgent};
use crate::api::chat::{get_agent_feedback, AgentFeedbackView};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};

#[component]
pub fn AgentsAdminPage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let create = ServerAction::<SaveAgent>::new();
    let save = ServerAction::<SaveAgent>::new();
    let delete = ServerAction::<DeleteAgent>::new();
    let data = Resource::new(
        move || {
            (
                create.version().get(),
                save.version().get(),
                delete.version().get(),
            )
        },
        |_| get_agents_page(),
    );
    let feedback = Resource::new(|| (), |_| get_agent_feedback());
    view! {
        <Title text="Agents"/>
        <Protected>
            {admin_data(data, move |page| view! { <Agents page create save delete/> })}
            {admin_data(feedback, move |feedback| view! { <AgentFeedback feedback/> })}
        </Protected>
    }
}

/// The fields of an agent, empty for a new one.
#[component]
fn AgentFields(
    agent: Option<AgentRow>,
    models: Vec<String>,
    tags: Vec<String>,
    prefix: String,
    default_model: String,
) -> impl IntoView {
    let a = agent.clone().unwrap_or(AgentRow {
        id: String::new(),
        slug: String::new(),
        name: String::new(),
        description: String::new(),
        system_prompt: String::new(),
        model: default_model.clone(),
        temperature: "0.7".into(),
        max_reply_tokens: 1024,
        context_tokens: 8000,
        knowledge_enabled: true,
        top_k: 5,
        min_score: 0,
        knowledge_tags: String::new(),
    });
    let id = |f: &str| format!("{prefix}-{f}");
    let list = id("models");
    let tag_list = id("tags");
    view! {
        <input type="hidden" name="id" value=a.id.clone()/>
        <div class="field">
            <label for=id("name")>"Name"</label>
            <input id=id("name") type="text" name="name" required maxlength="80" value=a.name.clone() placeholder="Front desk"/>
        </div>
        <div class="field">
            <label for=id("description")>"Description"</label>
            <input id=id("description") type="text" name="description" maxlength="500" value=a.description.clone() placeholder="Answers questions about opening hours and bookings"/>
        </div>
        <div class="field">
            <label for=id("prompt")>"Instructions (system prompt)"</label>
            <textarea id=id("prompt") name="system_prompt" rows="4" maxlength="20000">{a.system_prompt.clone()}</textarea>
        </div>
        <div class="field-row">
            <div class="field">
                <label for=id("model")>"Model"</label>
                <input id=id("model") type="text" name="model" list=list.clone() value=a.model.clone()
                    placeholder=format!("the clinic's default ({default_model})") aria-describedby=id("model-hint")/>
                <span class="hint" id=id("model-hint")>{format!("Empty: the clinic's default model, now {default_model}.")}</span>
                <datalist id=list>
                    {models.into_iter().map(|m| view! { <option value=m.clone()></option> }).collect_view()}
                </datalist>
            </div>
            <div class="field">
                <label for=id("temperature")>"Temperature (0–2)"</label>
                <input id=id("temperature") type="text" inputmode="decimal" name="temperature" value=a.temperature.clone()/>
            </div>
            <div class="field">
                <label for=id("max")>"Max reply tokens"</label>
                <input id=id("max") type="text" inputmode="numeric" name="max_reply_tokens" value=a.max_reply_tokens.to_string()/>
            </div>
            <div class="field">
                <label for=id("context")>"Context budget (tokens)"</label>
                <input id=id("context") type="text" inputmode="numeric" name="context_tokens" value=a.context_tokens.to_string()/>
            </div>
        </div>
        <fieldset class="field-row">
            <legend>"Knowledge"</legend>
            <div class="field">
                <label for=id("knowledge")>"Answers from documents"</label>
                <select id=id("knowledge") name="knowledge">
                    <option value="on" selected=a.knowledge_enabled>"On"</option>
                    <option value="off" selected=!a.knowledge_enabled>"Off"</option>
                </select>
            </div>
            <div class="field">
                <label for=id("topk")>"Passages per question (1–20)"</label>
                <input id=id("topk") type="text" inputmode="numeric" name="top_k" value=a.top_k.to_string()/>
            </div>
            <div class="field">
                <label for=id("minscore")>"Lowest relevance (0–100)"</label>
                <input id=id("minscore") type="text" inputmode="numeric" name="min_score" value=a.min_score.to_string()/>
            </div>
            <div class="field">
                <label for=id("ktags")>"Collections (tags; empty: all documents)"</label>
                <input id=id("ktags") type="text" name="knowledge_tags" list=tag_list.clone() value=a.knowledge_tags.clone() placeholder="all documents"/>
                <datalist id=tag_list>
                    {tags.into_iter().map(|t| view! { <option value=t.clone()></option> }).collect_view()}
                </datalist>
            </div>
        </fieldset>
    }
}

#[component]
fn Agents(
    page: AgentsPage,
    create: ServerAction<SaveAgent>,
    save: ServerAction<SaveAgent>,
    delete: ServerAction<DeleteAgent>,
) -> impl IntoView {
    // A created agent empties the form, ready for the next one (the message says what was
    // made).
    let new_form = NodeRef::<leptos::html::Form>::new();
    Effect::watch(
        move || create.version().get(),
        move |_, _, _| {
            #[cfg(feature = "hydrate")]
            if matches!(create.value().get_untracked(), Some(Ok(_))) {
                if let Some(form) = new_form.get_untracked() {
                    form.reset();
                }
            }
        },
        false,
    );
    let count = page.agents.len();
    let limit = match page.max_agents {
        Some(max) => format!("{count} of {max} agents on the {} plan.", page.plan_name),
        None => format!("{count} agents; the {} plan has no limit.", page.plan_name),
    };
    let full = page.max_agents.is_some_and(|max| count as i32 >= max);
    let models = StoredValue::new(page.models.clone());
    let tags = StoredValue::new(page.tags.clone());
    let default_model = StoredValue::new(page.default_model.clone());
    view! {
        <div class="page-head"><h1>"Agents"</h1></div>
        <p class="muted">"Agents are the assistants your staff chat with. The API reaches one as the model " <code>"agent:<name>"</code> "."</p>
        <p data-testid="agent-limit">{limit}</p>
        <ActionError value=save.value()/>
        <ActionError value=delete.value()/>
        {move || save.value().get().and_then(|r| r.ok()).map(|a| view! {
            <p class="notice" role="status">{format!("Saved {}.", a.name)}</p>
        })}
        {move || create.value().get().and_then(|r| r.ok()).map(|a| view! {
            <p class="notice" role="status" data-testid="agent-created">
                {format!("Created the agent {}. Staff can choose it in Chat now; the API reaches it as ", a.name)}
                <code>{format!("agent:{}", a.slug)}</code> "."
            </p>
        })}
        <section class="card" aria-labelledby="new-agent-heading">
            <h2 id="new-agent-heading">"New agent"</h2>
            {full.then(|| view! {
                <p class="notice warn" data-testid="agent-limit-reached">"This plan's agent limit is reached. Upgrade the plan under Billing, or delete an agent, to add another."</p>
            })}
            <ActionError value=create.value()/>
            <ActionForm action=create node_ref=new_form attr:class="stack-form">
                <AgentFields agent=None models=models.get_value() tags=tags.get_value() prefix="new".to_string() default_model=default_model.get_value()/>
                <button type="submit" disabled=create.pending()>"Create agent"</button>
            </ActionForm>
        </section>
        <section class="card" aria-labelledby="agents-heading">
            <h2 id="agents-heading">"Agents"</h2>
            {if page.agents.is_empty() {
                view! { <p class="muted">"No agents yet."</p> }.into_any()
            } else {
                page.agents.into_iter().map(|a| {
                    let id = a.id.clone();
                    let prefix = format!("agent-{}", a.slug);
                    let name = a.name.clone();
                    view! {
                        <article class="agent" data-testid="agent-row">
                            <h3>{a.name.clone()} " " <code class="muted small">{format!("agent:{}", a.slug)}</code></h3>
                            <p class="muted">
                                {(!a.description.is_empty()).then(|| format!("{} · ", a.description))}
                                {if a.model.is_empty() { format!("default model ({})", default_model.get_value()) } else { a.model.clone() }}
                                {if a.knowledge_enabled {
                                    if a.knowledge_tags.is_empty() { " · answers from all documents".to_string() } else { format!(" · answers from {}", a.knowledge_tags) }
                                } else { " · knowledge off".to_string() }}
                            </p>
                            <details>
                                <summary>"Edit"</summary>
                                <ActionForm action=save attr:class="stack-form">
                                    <AgentFields agent=Some(a.clone()) models=models.get_value() tags=tags.get_value() prefix=prefix default_model=default_model.get_value()/>
                                    <button type="submit">"Save changes"</button>
                                </ActionForm>
                            </details>
                            <ActionForm action=delete attr:class="row-form">
                                <input type="hidden" name="id" value=id/>
                                <ConfirmButton label="Delete" aria_label=format!("Delete {name}")
                                    question=format!("Delete the agent {name}? Its conversations stay, but nobody can chat with it any more.")/>
                            </ActionForm>
                        </article>
                    }
                }).collect_view().into_any()
            }}
        </section>
    }
}

/// What staff think of each agent's replies: thumbs up and down, and the latest comments. A
/// signal of which instructions work. The conversations themselves stay private.
#[component]
fn AgentFeedback(feedback: Vec<AgentFeedbackView>) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="feedback-heading" data-testid="agent-feedback">
            <h2 id="feedback-heading">"Feedback on replies"</h2>
            <p class="muted small">"Ratings and comments people gave replies in the chat. Conversations stay private to the people who had them."</p>
            {if feedback.is_empty() {
                view! { <p class="muted" data-testid="no-feedback">"No feedback yet. People rate replies with 👍 or 👎 in the chat."</p> }.into_any()
            } else {
                view! {
                    <table class="table">
                        <thead><tr><th scope="col">"Agent"</th><th scope="col">"👍 Good"</th><th scope="col">"👎 Bad"</th><th scope="col">"Latest comments"</th></tr></thead>
                        <tbody>
                            {feedback.into_iter().map(|f| view! {
                                <tr data-testid="feedback-row">
                                    <th scope="row">{f.agent.clone()}</th>
                                    <td data-testid="feedback-up">{f.up}</td>
                                    <td data-testid="feedback-down">{f.down}</td>
                                    <td>
                                        {if f.comments.is_empty() {
                                            view! { <span class="muted">"—"</span> }.into_any()
                                        } else {
                                            view! {
                                                <ul class="plain">
                                                    {f.comments.into_iter().map(|c| view! {
                                                        <li data-testid="feedback-comment">
                                                            <span aria-label=if c.up { "Good" } else { "Bad" }>{if c.up { "👍 " } else { "👎 " }}</span>
                                                            {c.comment.clone()}
                                                            <span class="muted small">" · " {c.date.clone()}</span>
                                                        </li>
                                                    }).collect_view()}
                                                </ul>
                                            }.into_any()
                                        }}
                                    </td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}
