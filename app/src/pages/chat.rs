//! Chat: the person's conversations with the clinic's agents. Replies stream in token by token
//! from `/chat/replies/<id>` (server-sent events); Stop closes the stream, and the server keeps
//! (and charges) only what was generated. Conversations are private: anyone else gets 404.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};

use tessera_types::{MessageRole, MessageStatus};

use crate::api::chat::{
    get_chat_home, get_conversation, send_message, ChatHome, ConversationView, DeleteConversation,
    MessageView, RenameConversation, StartConversation,
};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};

#[component]
pub fn ChatHomePage() -> impl IntoView {
    view! {
        <Title text="Chat"/>
        <Protected>
            <ChatHomeLoader/>
        </Protected>
    }
}

#[component]
fn ChatHomeLoader() -> impl IntoView {
    let data = Resource::new(|| (), |_| get_chat_home());
    admin_data(data, move |home| view! { <ChatStart home/> })
}

#[component]
fn ChatStart(home: ChatHome) -> impl IntoView {
    let start = ServerAction::<StartConversation>::new();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(sent)) = start.value().get() {
            navigate(
                &format!("/chat/{}", sent.conversation_id),
                Default::default(),
            );
        }
    });
    let no_agents = home.agents.is_empty();
    view! {
        <div class="page-head"><h1>"Chat"</h1></div>
        <div class="chat-home">
            <section class="card" aria-labelledby="start-heading">
                <h2 id="start-heading">"New conversation"</h2>
                {if no_agents {
                    view! { <p class="muted" data-testid="no-agents">"This clinic has no agents yet. An admin can create one under Agents."</p> }.into_any()
                } else {
                    view! {
                        <ActionForm action=start attr:class="stack-form">
                            <div class="field">
                                <label for="agent">"Agent"</label>
                                <select id="agent" name="agent_id" required>
                                    {home.agents.iter().map(|a| view! {
                                        <option value=a.id.clone()>{a.name.clone()}{(!a.description.is_empty()).then(|| format!(" — {}", a.description))}</option>
                                    }).collect_view()}
                                </select>
                            </div>
                            <div class="field">
                                <label for="first-message">"Message"</label>
                                <textarea id="first-message" name="text" rows="3" required maxlength="32000" placeholder="Ask the agent…"></textarea>
                            </div>
                            <button type="submit" disabled=start.pending()>"Start"</button>
                        </ActionForm>
                        <ActionError value=start.value()/>
                    }.into_any()
                }}
            </section>
            <section class="card" aria-labelledby="conversations-heading">
                <h2 id="conversations-heading">"Your conversations"</h2>
                {if home.conversations.is_empty() {
                    view! { <p class="muted">"None yet."</p> }.into_any()
                } else {
                    view! {
                        <ul class="conversations">
                            {home.conversations.into_iter().map(|c| view! {
                                <li data-testid="conversation-row">
                                    <A href=format!("/chat/{}", c.id)>{c.title.clone()}</A>
                                    <span class="muted small">{c.agent_name.clone().unwrap_or_else(|| "deleted agent".into())} " · " {c.updated.clone()}</span>
                                </li>
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
            </section>
        </div>
    }
}

#[component]
pub fn ConversationPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let data = Resource::new(id, get_conversation);
    view! {
        <Title text="Conversation"/>
        <Protected>
            {admin_data(data, move |c| view! { <Conversation c/> })}
        </Protected>
    }
}

/// A live reply stream in the browser.
#[cfg(feature = "hydrate")]
mod live {
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{Event, EventSource, MessageEvent};

    pub struct Live {
        source: EventSource,
        _handlers: Vec<Closure<dyn FnMut(MessageEvent)>>,
        _on_error: Closure<dyn FnMut(Event)>,
    }

    impl Live {
        pub fn close(&self) {
            self.source.close();
        }
    }

    fn text_of(e: &MessageEvent) -> String {
        e.data()
            .as_string()
            .and_then(|s| serde_json::from_str::<String>(&s).ok())
            .unwrap_or_default()
    }

    /// Opens the reply's stream. `on_refused` runs when the server would not stream it (it is
    /// being generated for another page, or has ended meanwhile).
    pub fn open(
        url: &str,
        on_sources: impl Fn(Vec<crate::api::chat::SourceView>) + 'static,
        on_delta: impl Fn(String) + 'static,
        on_done: impl Fn() + 'static,
        on_failed: impl Fn(String) + 'static + Clone,
        on_refused: impl Fn() + 'static,
    ) -> Option<Live> {
        let source = EventSource::new(url).ok()?;
        let sources = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let cited = e
                .data()
                .as_string()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            on_sources(cited)
        });
        let delta =
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| on_delta(text_of(&e)));
        let done = Closure::<dyn FnMut(MessageEvent)>::new(move |_e: MessageEvent| on_done());
        let failed_cb = on_failed.clone();
        let failed =
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| failed_cb(text_of(&e)));
        let src = source.clone();
        // Refused (the browser has closed it already): wait for what the server saves. Broken
        // part-way: stop reconnecting and say so.
        let on_error = Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if src.ready_state() == EventSource::CLOSED {
                on_refused();
            } else {
                src.close();
                on_failed(
                    "The connection to the server was lost. Reload the page to see what was saved."
                        .into(),
                );
            }
        });
        source
            .add_event_listener_with_callback("sources", sources.as_ref().unchecked_ref())
            .ok()?;
        source
            .add_event_listener_with_callback("delta", delta.as_ref().unchecked_ref())
            .ok()?;
        source
            .add_event_listener_with_callback("done", done.as_ref().unchecked_ref())
            .ok()?;
        source
            .add_event_listener_with_callback("failed", failed.as_ref().unchecked_ref())
            .ok()?;
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Some(Live {
            source,
            _handlers: vec![sources, delta, done, failed],
            _on_error: on_error,
        })
    }
}

/// Checks back every two seconds until the last reply is no longer waiting or being generated
/// (by another page of this person's, or by the one before a reload), for ten minutes at most.
#[cfg(feature = "hydrate")]
fn poll_until_saved(conversation: String, messages: RwSignal<Vec<MessageView>>, tries: u32) {
    if tries == 0 {
        return;
    }
    leptos::leptos_dom::helpers::set_timeout(
        move || {
            spawn_local(async move {
                if let Ok(c) = get_conversation(conversation.clone()).await {
                    let waiting = c.messages.last().is_some_and(|m| m.status.in_progress());
                    messages.set(c.messages);
                    if waiting {
                        poll_until_saved(conversation, messages, tries - 1);
                    }
                }
            })
        },
        std::time::Duration::from_secs(2),
    );
}

#[cfg(feature = "hydrate")]
const POLL_TRIES: u32 = 300;

fn set_status(
    messages: RwSignal<Vec<MessageView>>,
    id: &str,
    status: MessageStatus,
    error: Option<String>,
) {
    messages.update(|ms| {
        if let Some(m) = ms.iter_mut().find(|m| m.id == id) {
            m.status = status;
            m.error = error;
        }
    });
}

/// The reply a conversation page is streaming, and how it starts, stops and resumes.
#[derive(Clone, Copy)]
struct ReplyStream {
    messages: RwSignal<Vec<MessageView>>,
    /// The reply being streamed, if any.
    streaming: RwSignal<Option<String>>,
    conversation: StoredValue<String>,
    #[cfg(feature = "hydrate")]
    live: StoredValue<Option<live::Live>, leptos::prelude::LocalStorage>,
}

impl ReplyStream {
    fn new(conversation: &ConversationView) -> Self {
        Self {
            messages: RwSignal::new(conversation.messages.clone()),
            streaming: RwSignal::new(None),
            conversation: StoredValue::new(conversation.id.clone()),
            #[cfg(feature = "hydrate")]
            live: StoredValue::new_local(None),
        }
    }

    /// Opens the stream of `reply`: text is appended as it comes; the end, a failure or a
    /// refusal (the reply is generated elsewhere) each settle the bubble.
    fn start(self, reply: String) {
        self.streaming.set(Some(reply.clone()));
        #[cfg(feature = "hydrate")]
        {
            let Self {
                messages,
                streaming,
                conversation,
                live,
            } = self;
            let (r0, r1, r2, r3) = (reply.clone(), reply.clone(), reply.clone(), reply.clone());
            let opened = live::open(
                &format!("/chat/replies/{reply}"),
                move |cited| {
                    messages.update(|ms| {
                        if let Some(m) = ms.iter_mut().find(|m| m.id == r0) {
                            m.sources = cited;
                        }
                    })
                },
                move |text| {
                    messages.update(|ms| {
                        if let Some(m) = ms.iter_mut().find(|m| m.id == r1) {
                            m.content.push_str(&text);
                            m.status = MessageStatus::Generating;
                        }
                    })
                },
                move || {
                    set_status(messages, &r2, MessageStatus::Complete, None);
                    streaming.set(None);
                    self.close();
                },
                move |message| {
                    set_status(messages, &r3, MessageStatus::Failed, Some(message));
                    streaming.set(None);
                },
                move || {
                    streaming.set(None);
                    poll_until_saved(conversation.get_value(), messages, POLL_TRIES);
                },
            );
            live.set_value(opened);
        }
    }

    fn close(self) {
        #[cfg(feature = "hydrate")]
        self.live.with_value(|l| {
            if let Some(l) = l {
                l.close()
            }
        });
    }

    /// Stop: the server keeps (and charges) what was generated.
    fn stop(self) {
        self.close();
        if let Some(id) = self.streaming.get_untracked() {
            set_status(self.messages, &id, MessageStatus::Stopped, None);
        }
        self.streaming.set(None);
    }

    /// When the page opens: a reply waiting for its first token (just after the conversation
    /// started) starts now; one being generated elsewhere (another tab, the page before a
    /// reload) is waited for until it is saved.
    fn resume(self) {
        let last = self.messages.with_untracked(|ms| {
            ms.last()
                .filter(|m| m.role == MessageRole::Assistant)
                .map(|m| (m.id.clone(), m.status))
        });
        match last {
            Some((id, MessageStatus::Pending)) => self.start(id),
            #[cfg(feature = "hydrate")]
            Some((_, MessageStatus::Generating)) => {
                poll_until_saved(self.conversation.get_value(), self.messages, POLL_TRIES)
            }
            _ => {}
        }
    }

    /// Adds a sent message and its pending reply, and starts the reply.
    fn sent(self, text: String, reply: String) {
        self.messages.update(|ms| {
            ms.push(MessageView {
                id: format!("local-{reply}"),
                role: MessageRole::User,
                content: text,
                status: MessageStatus::Complete,
                error: None,
                sources: Vec::new(),
            });
            ms.push(MessageView {
                id: reply.clone(),
                role: MessageRole::Assistant,
                content: String::new(),
                status: MessageStatus::Pending,
                error: None,
                sources: Vec::new(),
            });
        });
        self.start(reply);
    }
}

#[component]
fn Conversation(c: ConversationView) -> impl IntoView {
    let stream = ReplyStream::new(&c);
    let (messages, streaming) = (stream.messages, stream.streaming);
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    Effect::new(move |ran: Option<()>| {
        if ran.is_none() {
            stream.resume();
        }
    });
    let send = move || {
        let text = draft.get_untracked();
        if text.trim().is_empty() || streaming.get_untracked().is_some() {
            return;
        }
        error.set(None);
        let id = stream.conversation.get_value();
        spawn_local(async move {
            match send_message(id, text.clone()).await {
                Ok(sent) => {
                    draft.set(String::new());
                    stream.sent(text, sent.reply_id);
                }
                // The draft stays, so nothing typed is lost.
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };

    view! {
        <div class="chat">
            <ConversationHead c=c.clone()/>
            <div class="messages" role="log" aria-live="polite" aria-label="Conversation" data-testid="messages">
                <For each=move || messages.get() key=|m| (m.id.clone(), m.status, m.content.len(), m.sources.len()) let:m>
                    <Bubble m/>
                </For>
            </div>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
                <label for="composer-text" class="visually-hidden">"Message"</label>
                <textarea
                    id="composer-text"
                    rows="2"
                    maxlength="32000"
                    placeholder="Message the agent — Enter sends, Shift+Enter adds a line"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(event_target_value(&ev))
                    on:keydown=move |ev| {
                        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                            ev.prevent_default();
                            send();
                        }
                    }
                ></textarea>
                {move || if streaming.get().is_some() {
                    view! { <button type="button" class="danger" on:click=move |_| stream.stop()>"Stop"</button> }.into_any()
                } else {
                    view! { <button type="submit">"Send"</button> }.into_any()
                }}
            </form>
        </div>
    }
}

/// The conversation's title, its agent, and renaming or deleting it.
#[component]
fn ConversationHead(c: ConversationView) -> impl IntoView {
    let title = RwSignal::new(c.title.clone());
    let new_title = RwSignal::new(c.title.clone());
    let rename = ServerAction::<RenameConversation>::new();
    let delete = ServerAction::<DeleteConversation>::new();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(())) = delete.value().get() {
            navigate("/chat", Default::default());
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = rename.value().get() {
            title.set(new_title.get_untracked());
        }
    });
    let agent = c.agent_name.unwrap_or_else(|| "deleted agent".into());
    let (rename_id, delete_id) = (c.id.clone(), c.id);
    view! {
        <div class="page-head chat-head">
            <A href="/chat" attr:class="back">"← Conversations"</A>
            <h1 data-testid="conversation-title">{move || title.get()}</h1>
            <span class="muted">"with " {agent}</span>
            <details class="chat-menu">
                <summary>"Rename or delete"</summary>
                <ActionForm action=rename attr:class="inline-form">
                    <input type="hidden" name="id" value=rename_id/>
                    <label for="rename-title" class="visually-hidden">"Title"</label>
                    <input id="rename-title" type="text" name="title" required maxlength="120" value=c.title on:input=move |ev| new_title.set(event_target_value(&ev))/>
                    <button type="submit" class="small">"Rename"</button>
                </ActionForm>
                <ActionForm action=delete attr:class="inline-form">
                    <input type="hidden" name="id" value=delete_id/>
                    <ConfirmButton label="Delete conversation" question="Delete this conversation? It cannot be brought back."/>
                </ActionForm>
                <ActionError value=rename.value()/>
                <ActionError value=delete.value()/>
            </details>
        </div>
    }
}

#[component]
fn Bubble(m: MessageView) -> impl IntoView {
    let class = format!("bubble {} {}", m.role, m.status);
    let body = if m.role == MessageRole::Assistant {
        let html = crate::markdown::render(&m.content);
        view! { <div class="md" inner_html=html></div> }.into_any()
    } else {
        view! { <div class="text">{m.content.clone()}</div> }.into_any()
    };
    let note = match m.status {
        MessageStatus::Pending | MessageStatus::Generating if m.content.is_empty() => Some(view! { <p class="muted small" data-testid="thinking">"Thinking…"</p> }.into_any()),
        MessageStatus::Stopped => Some(view! { <p class="muted small" data-testid="stopped">"Stopped."</p> }.into_any()),
        MessageStatus::Failed => Some(view! { <p class="error" data-testid="reply-error">{m.error.clone().unwrap_or_else(|| "The reply failed. Try again.".into())}</p> }.into_any()),
        _ => None,
    };
    let sources = (!m.sources.is_empty()).then(|| {
        view! {
            <ol class="sources" data-testid="sources" aria-label="Sources">
                {m.sources.iter().enumerate().map(|(i, s)| {
                    let title = if s.heading.is_empty() { s.name.clone() } else { format!("{} — {}", s.name, s.heading) };
                    view! {
                        <li data-testid="source">
                            <details>
                                <summary>{format!("[{}] ", i + 1)}{title}</summary>
                                <blockquote class="passage">{s.text.clone()}</blockquote>
                            </details>
                        </li>
                    }
                }).collect_view()}
            </ol>
        }
        .into_any()
    });
    view! {
        <div class=class data-testid=format!("message-{}", m.role)>
            {body}
            {sources}
            {note}
        </div>
    }
}
