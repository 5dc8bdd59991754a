//! Chat: the person's conversations with the clinic's agents, laid out as chat products are: a
//! sidebar with the conversations (newest first, searchable, "New chat"; a drawer at phone
//! width) beside the conversation. Replies stream in from `/chat/replies/<id>` (server-sent
//! events) and keep generating when the page is closed or reloaded: opening the conversation
//! again shows what has come so far and follows the rest. Stop asks the server to stop it; the
//! server keeps (and charges) what was generated. Conversations are private: anyone else gets
//! 404.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use tessera_types::{MessageRole, MessageStatus};

use crate::api::chat::{
    edit_last_message, get_chat_home, get_conversation, list_conversations, rate_reply,
    regenerate_reply, send_message, stop_reply, ChatHome, ConversationRow, ConversationView,
    DeleteConversation, MessageView, RenameConversation, StartConversation,
};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};

/// Bumped when the person's list of conversations may have changed (a message sent, a title
/// renamed), so the sidebar reads it again.
#[derive(Clone, Copy)]
struct ChatListChanged(RwSignal<u32>);

fn list_changed() {
    if let Some(ChatListChanged(v)) = use_context::<ChatListChanged>() {
        v.update(|n| *n += 1);
    }
}

/// The sidebar's data: the search and the list it gives, with what makes it read again. Made
/// by the page before the signed-in check's suspense, so the server and the browser create
/// them in the same order (hydration relies on it).
#[derive(Clone, Copy)]
struct ChatList {
    query: RwSignal<String>,
    changed: RwSignal<u32>,
    rows: Resource<Result<Vec<ConversationRow>, crate::error::AppError>>,
}

impl ChatList {
    fn new() -> Self {
        let query_map = use_query_map();
        let query = RwSignal::new(query_map.get_untracked().get("q").unwrap_or_default());
        let changed = RwSignal::new(0u32);
        let rows = Resource::new(
            move || (query.get(), changed.get()),
            |(q, _)| list_conversations(q),
        );
        Self {
            query,
            changed,
            rows,
        }
    }
}

/// The chat's frame: the sidebar of conversations and, beside it, the page's own content.
#[component]
fn ChatLayout(
    list: ChatList,
    /// The conversation open beside the sidebar, if any.
    #[prop(into)]
    current: Signal<Option<String>>,
    children: Children,
) -> impl IntoView {
    let ChatList {
        query,
        changed,
        rows: list,
    } = list;
    provide_context(ChatListChanged(changed));
    let drawer = RwSignal::new(false);
    // Escape closes the drawer and gives the focus back to its button.
    let toggle = NodeRef::<leptos::html::Button>::new();
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" && drawer.get_untracked() {
            drawer.set(false);
            if let Some(button) = toggle.get_untracked() {
                let _ = button.focus();
            }
        }
    };
    view! {
        <div class="chat-layout" class:drawer-open=move || drawer.get() on:keydown=on_keydown>
            <button type="button" class="secondary drawer-toggle" aria-controls="chat-sidebar"
                node_ref=toggle aria-expanded=move || drawer.get().to_string()
                on:click=move |_| drawer.update(|o| *o = !*o)>
                {move || if drawer.get() { "Close conversations" } else { "Conversations" }}
            </button>
            <aside id="chat-sidebar" class="chat-sidebar" aria-label="Conversations">
                <A href="/chat" attr:class="button new-chat" attr:data-testid="new-chat" on:click=move |_| drawer.set(false)>"+ New chat"</A>
                <form role="search" class="chat-search" action="/chat" method="get" on:submit=move |ev| ev.prevent_default()>
                    <label for="chat-search" class="visually-hidden">"Search conversations"</label>
                    <input id="chat-search" type="search" name="q" placeholder="Search conversations"
                        autocomplete="off" prop:value=move || query.get()
                        on:input=move |ev| query.set(event_target_value(&ev))/>
                </form>
                <Transition fallback=|| view! { <p class="muted small">"Loading…"</p> }>
                    {move || Suspend::new(async move {
                        match list.await {
                            Ok(rows) => view! { <ConversationList rows current searching=!query.get_untracked().trim().is_empty() on_open=move || drawer.set(false)/> }.into_any(),
                            Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                        }
                    })}
                </Transition>
            </aside>
            <div class="chat-main">{children()}</div>
        </div>
    }
}

#[component]
fn ConversationList(
    rows: Vec<ConversationRow>,
    current: Signal<Option<String>>,
    searching: bool,
    on_open: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    if rows.is_empty() {
        let empty = if searching {
            "No conversation has those words."
        } else {
            "No conversations yet. Start one with an agent."
        };
        return view! { <p class="muted small" data-testid="no-conversations">{empty}</p> }
            .into_any();
    }
    view! {
        <ul class="conversation-list">
            {rows.into_iter().map(|c| {
                let id = c.id.clone();
                let is_current = move || current.get().as_deref() == Some(id.as_str());
                view! {
                    <li data-testid="conversation-row">
                        <A href=format!("/chat/{}", c.id) on:click=move |_| on_open()
                            attr:aria-current=move || if is_current() { "page" } else { "false" }>
                            <span class="conversation-title">{c.title.clone()}</span>
                            <span class="muted small">{c.agent_name.clone().unwrap_or_else(|| "Deleted agent".into())} " · " {c.updated.clone()}</span>
                            {c.snippet.clone().map(|s| view! { <span class="snippet small" data-testid="snippet">{s}</span> })}
                        </A>
                    </li>
                }
            }).collect_view()}
        </ul>
    }
    .into_any()
}

#[component]
pub fn ChatHomePage() -> impl IntoView {
    let list = ChatList::new();
    let data = Resource::new(|| (), |_| get_chat_home());
    view! {
        <Title text="Chat"/>
        <Protected>
            <ChatLayout list current=Signal::derive(|| None::<String>)>
                {admin_data(data, move |home| view! { <NewChat home/> })}
            </ChatLayout>
        </Protected>
    }
}

/// A new chat: the agent to talk to at the top, the composer at the bottom. Also a plain form,
/// so it works before the page is interactive.
#[component]
fn NewChat(home: ChatHome) -> impl IntoView {
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
    if home.agents.is_empty() {
        return view! {
            <div class="chat new-chat-pane">
                <h1>"New chat"</h1>
                <p class="muted empty-state" data-testid="no-agents">"This clinic has no agents yet. An admin creates one under Agents, and it appears here."</p>
            </div>
        }
        .into_any();
    }
    let agents = home.agents.clone();
    let chosen = RwSignal::new(agents.first().map(|a| a.id.clone()).unwrap_or_default());
    let about = move || {
        let id = chosen.get();
        agents
            .iter()
            .find(|a| a.id == id)
            .map(|a| (a.name.clone(), a.description.clone()))
    };
    view! {
        <div class="chat new-chat-pane">
            <ActionForm action=start attr:class="new-chat-form">
                <div class="chat-head">
                    <h1>"New chat"</h1>
                    <div class="field agent-picker">
                        <label for="agent">"Agent"</label>
                        <select id="agent" name="agent_id" required on:change=move |ev| chosen.set(event_target_value(&ev))>
                            {home.agents.iter().map(|a| view! {
                                <option value=a.id.clone()>{a.name.clone()}{(!a.description.is_empty()).then(|| format!(" — {}", a.description))}</option>
                            }).collect_view()}
                        </select>
                    </div>
                </div>
                <div class="empty-state" data-testid="new-chat-intro">
                    {move || about().map(|(name, description)| view! {
                        <p class="empty-title">{format!("Ask {name} anything.")}</p>
                        {(!description.is_empty()).then(|| view! { <p class="muted">{description}</p> })}
                    })}
                    <p class="muted small">"Your conversations are private to you. Replies keep coming if you close the page."</p>
                </div>
                <div class="composer">
                    <label for="first-message" class="visually-hidden">"Message"</label>
                    <textarea id="first-message" name="text" rows="1" required maxlength="32000"
                        placeholder="Message the agent — Enter sends, Shift+Enter adds a line"
                        on:keydown=move |ev| {
                            if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                                ev.prevent_default();
                                submit_form_of(&ev);
                            }
                        }></textarea>
                    <button type="submit" disabled=start.pending()>"Start"</button>
                </div>
            </ActionForm>
            <ActionError value=start.value()/>
        </div>
    }
    .into_any()
}

/// Submits the form the event's element is in, as its submit button would.
fn submit_form_of(ev: &leptos::ev::KeyboardEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        if let Some(form) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
            .and_then(|t| t.form())
        {
            let _ = form.request_submit();
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ev;
}

#[component]
pub fn ConversationPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let list = ChatList::new();
    let data = Resource::new(id, get_conversation);
    view! {
        <Title text="Conversation"/>
        <Protected>
            <ChatLayout list current=Signal::derive(move || Some(id()))>
                {admin_data(data, move |c| view! { <Conversation c/> })}
            </ChatLayout>
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

    /// A page left (another conversation opened) closes its stream: its handlers go with it.
    impl Drop for Live {
        fn drop(&mut self) {
            self.source.close();
        }
    }

    fn text_of(e: &MessageEvent) -> String {
        e.data()
            .as_string()
            .and_then(|s| serde_json::from_str::<String>(&s).ok())
            .unwrap_or_default()
    }

    /// What the page does with a reply's events.
    pub struct Handlers {
        pub sources: Box<dyn Fn(Vec<crate::api::chat::SourceView>)>,
        /// The whole text so far.
        pub text: Box<dyn Fn(String)>,
        pub delta: Box<dyn Fn(String)>,
        pub done: Box<dyn Fn()>,
        pub failed: Box<dyn Fn(String)>,
        pub stopped: Box<dyn Fn()>,
        /// The server would not stream it (it has ended meanwhile).
        pub refused: Box<dyn Fn()>,
    }

    /// Opens the reply's stream. A connection lost part-way is made again by the browser, and
    /// the server then sends the whole text so far.
    pub fn open(url: &str, h: Handlers) -> Option<Live> {
        let source = EventSource::new(url).ok()?;
        let h = std::rc::Rc::new(h);
        let mut handlers = Vec::new();
        let mut on = |name: &str, f: Box<dyn FnMut(MessageEvent)>| -> Option<()> {
            let c = Closure::<dyn FnMut(MessageEvent)>::new(f);
            source
                .add_event_listener_with_callback(name, c.as_ref().unchecked_ref())
                .ok()?;
            handlers.push(c);
            Some(())
        };
        let x = h.clone();
        on(
            "sources",
            Box::new(move |e: MessageEvent| {
                let cited = e
                    .data()
                    .as_string()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                (x.sources)(cited)
            }),
        )?;
        let x = h.clone();
        on("text", Box::new(move |e| (x.text)(text_of(&e))))?;
        let x = h.clone();
        on("delta", Box::new(move |e| (x.delta)(text_of(&e))))?;
        let (x, src) = (h.clone(), source.clone());
        on(
            "done",
            Box::new(move |_| {
                src.close();
                (x.done)()
            }),
        )?;
        let (x, src) = (h.clone(), source.clone());
        on(
            "failed",
            Box::new(move |e| {
                src.close();
                (x.failed)(text_of(&e))
            }),
        )?;
        let (x, src) = (h.clone(), source.clone());
        on(
            "stopped",
            Box::new(move |_| {
                src.close();
                (x.stopped)()
            }),
        )?;
        let (x, src) = (h.clone(), source.clone());
        // Refused (404, 409: the browser has closed it already): read what the server saved.
        // Broken part-way: the browser connects again by itself.
        let on_error = Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if src.ready_state() == EventSource::CLOSED {
                (x.refused)();
            }
        });
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Some(Live {
            source,
            _handlers: handlers,
            _on_error: on_error,
        })
    }
}

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
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

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn edit_message(messages: RwSignal<Vec<MessageView>>, id: &str, f: impl FnOnce(&mut MessageView)) {
    messages.update(|ms| {
        if let Some(m) = ms.iter_mut().find(|m| m.id == id) {
            f(m)
        }
    });
}

/// A reply waiting for its first word.
fn pending_reply(id: String) -> MessageView {
    MessageView {
        id,
        role: MessageRole::Assistant,
        content: String::new(),
        status: MessageStatus::Pending,
        error: None,
        sources: Vec::new(),
        at: String::new(),
        at_text: String::new(),
        rating: None,
        rating_comment: String::new(),
    }
}

/// The reply a conversation page is streaming, and how it starts, stops and resumes.
#[derive(Clone, Copy)]
struct ReplyStream {
    messages: RwSignal<Vec<MessageView>>,
    /// The reply being streamed, if any.
    streaming: RwSignal<Option<String>>,
    /// Stop was pressed and the server has not yet said the reply stopped.
    stopping: RwSignal<bool>,
    /// The page's error line.
    error: RwSignal<Option<String>>,
    /// The sidebar's list, read again when a reply ends.
    list: Option<ChatListChanged>,
    conversation: StoredValue<String>,
    #[cfg(feature = "hydrate")]
    live: StoredValue<Option<live::Live>, leptos::prelude::LocalStorage>,
}

impl ReplyStream {
    fn new(conversation: &ConversationView) -> Self {
        Self {
            messages: RwSignal::new(conversation.messages.clone()),
            streaming: RwSignal::new(None),
            stopping: RwSignal::new(false),
            error: RwSignal::new(None),
            list: use_context::<ChatListChanged>(),
            conversation: StoredValue::new(conversation.id.clone()),
            #[cfg(feature = "hydrate")]
            live: StoredValue::new_local(None),
        }
    }

    /// Opens the stream of `reply` (one waiting, or one being generated, which is then
    /// followed): text is shown as it comes; the end, a failure or a stop settle the bubble.
    fn start(self, reply: String) {
        self.streaming.set(Some(reply.clone()));
        #[cfg(feature = "hydrate")]
        {
            let Self {
                messages,
                streaming,
                stopping,
                live,
                ..
            } = self;
            let settle = move || {
                streaming.set(None);
                stopping.set(false);
            };
            let r = reply.clone();
            let handlers = live::Handlers {
                sources: Box::new({
                    let r = r.clone();
                    move |cited| edit_message(messages, &r, |m| m.sources = cited)
                }),
                text: Box::new({
                    let r = r.clone();
                    move |text| {
                        edit_message(messages, &r, |m| {
                            m.content = text;
                            m.status = MessageStatus::Generating;
                        })
                    }
                }),
                delta: Box::new({
                    let r = r.clone();
                    move |text| {
                        edit_message(messages, &r, |m| {
                            m.content.push_str(&text);
                            m.status = MessageStatus::Generating;
                        })
                    }
                }),
                done: Box::new({
                    let r = r.clone();
                    move || {
                        set_status(messages, &r, MessageStatus::Complete, None);
                        settle();
                        self.list_changed();
                    }
                }),
                failed: Box::new({
                    let r = r.clone();
                    move |message| {
                        set_status(messages, &r, MessageStatus::Failed, Some(message));
                        settle();
                    }
                }),
                stopped: Box::new({
                    let r = r.clone();
                    move || {
                        set_status(messages, &r, MessageStatus::Stopped, None);
                        settle();
                    }
                }),
                refused: Box::new(move || {
                    settle();
                    self.reload();
                }),
            };
            let opened = live::open(&format!("/chat/replies/{reply}"), handlers);
            live.set_value(opened);
        }
    }

    fn list_changed(self) {
        if let Some(ChatListChanged(v)) = self.list {
            v.update(|n| *n += 1);
        }
    }

    /// Reads the conversation as saved.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn reload(self) {
        let id = self.conversation.get_value();
        let messages = self.messages;
        spawn_local(async move {
            if let Ok(c) = get_conversation(id).await {
                messages.set(c.messages);
            }
        });
    }

    /// Stop: the server stops the reply and keeps (and charges) what was generated; the stream
    /// then says it stopped. Should the stream not say so, the page settles after a while.
    fn stop(self) {
        let Some(id) = self.streaming.get_untracked() else {
            return;
        };
        self.stopping.set(true);
        let error = self.error;
        spawn_local(async move {
            match stop_reply(id.clone()).await {
                Ok(()) => {
                    #[cfg(feature = "hydrate")]
                    leptos::leptos_dom::helpers::set_timeout(
                        move || {
                            if self.streaming.get_untracked().as_deref() == Some(id.as_str()) {
                                self.live.with_value(|l| {
                                    if let Some(l) = l {
                                        l.close()
                                    }
                                });
                                set_status(self.messages, &id, MessageStatus::Stopped, None);
                                self.streaming.set(None);
                                self.stopping.set(false);
                            }
                        },
                        std::time::Duration::from_secs(5),
                    );
                }
                Err(e) => {
                    self.stopping.set(false);
                    error.set(Some(e.to_string()));
                }
            }
        });
    }

    /// When the page opens: a reply waiting for its first word starts now; one being generated
    /// (by the page before a reload, or in another tab) is followed.
    fn resume(self) {
        let last = self.messages.with_untracked(|ms| {
            ms.last()
                .filter(|m| m.role == MessageRole::Assistant && m.status.in_progress())
                .map(|m| m.id.clone())
        });
        if let Some(id) = last {
            self.start(id);
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
                at: String::new(),
                at_text: String::new(),
                rating: None,
                rating_comment: String::new(),
            });
            ms.push(pending_reply(reply.clone()));
        });
        self.list_changed();
        self.start(reply);
    }

    /// The last reply is being generated again as `reply`.
    fn regenerated(self, reply: String) {
        self.messages.update(|ms| {
            if ms.last().is_some_and(|m| m.role == MessageRole::Assistant) {
                ms.pop();
            }
            ms.push(pending_reply(reply.clone()));
        });
        self.start(reply);
    }

    /// The last question now reads `text`, and `reply` answers it.
    fn edited(self, text: String, reply: String) {
        self.messages.update(|ms| {
            let Some(q) = ms.iter().rposition(|m| m.role == MessageRole::User) else {
                return;
            };
            ms.truncate(q + 1);
            ms[q].content = text;
            ms.push(pending_reply(reply.clone()));
        });
        self.start(reply);
    }
}

/// The conversation page's error line (a send, stop, regenerate or edit that failed).
#[derive(Clone, Copy)]
struct ChatError(RwSignal<Option<String>>);

#[component]
fn Conversation(c: ConversationView) -> impl IntoView {
    let stream = ReplyStream::new(&c);
    let (messages, streaming) = (stream.messages, stream.streaming);
    let draft = RwSignal::new(String::new());
    let error = stream.error;
    provide_context(ChatError(error));
    provide_context(stream);
    let agent = c
        .agent_name
        .clone()
        .unwrap_or_else(|| "Deleted agent".into());
    provide_context(AgentName(agent));
    Effect::new(move |ran: Option<()>| {
        if ran.is_none() {
            stream.resume();
        }
    });
    let send = move || {
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        if streaming.get_untracked().is_some() {
            // The draft stays; nothing typed is lost.
            error.set(Some(
                "The agent is still answering. Wait for the reply or press Stop.".into(),
            ));
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
    // The last message of each role: only those offer regenerate and edit.
    let last_of = move |role: MessageRole| {
        messages.with(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.role == role)
                .map(|m| m.id.clone())
        })
    };
    let last_reply = Memo::new(move |_| {
        messages.with(|ms| {
            ms.last()
                .filter(|m| m.role == MessageRole::Assistant)
                .map(|m| m.id.clone())
        })
    });
    let last_question = Memo::new(move |_| last_of(MessageRole::User));

    view! {
        <div class="chat">
            <ConversationHead c=c.clone()/>
            <div class="messages" role="log" aria-live="polite" aria-label="Conversation" data-testid="messages"
                on:click=copy_code_block>
                {move || messages.with(|ms| ms.is_empty()).then(|| view! { <p class="muted empty-state">"No messages yet."</p> })}
                <For each=move || messages.get() key=|m| (m.id.clone(), m.status, m.content.len(), m.sources.len(), m.rating.clone(), m.rating_comment.len()) let:m>
                    <Bubble m last_reply last_question/>
                </For>
            </div>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
                <label for="composer-text" class="visually-hidden">"Message"</label>
                <textarea
                    id="composer-text"
                    rows="1"
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
                    let stopping = stream.stopping;
                    view! { <button type="button" class="danger" disabled=move || stopping.get() on:click=move |_| stream.stop()>{move || if stopping.get() { "Stopping…" } else { "Stop" }}</button> }.into_any()
                } else {
                    view! { <button type="submit">"Send"</button> }.into_any()
                }}
            </form>
        </div>
    }
}

/// The conversation's agent, for the replies' headings.
#[derive(Clone)]
struct AgentName(String);

/// A click on a code block's Copy button (the buttons are part of the rendered Markdown).
fn copy_code_block(ev: leptos::ev::MouseEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(button) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .filter(|e| e.class_list().contains("copy-code"))
        else {
            return;
        };
        let code = button
            .closest(".code-block")
            .ok()
            .flatten()
            .and_then(|b| b.query_selector("code").ok().flatten())
            .and_then(|c| c.text_content())
            .unwrap_or_default();
        copy_text(&code);
        button.set_text_content(Some("Copied"));
        leptos::leptos_dom::helpers::set_timeout(
            move || button.set_text_content(Some("Copy")),
            std::time::Duration::from_secs(2),
        );
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ev;
}

/// Puts `text` on the clipboard.
fn copy_text(text: &str) {
    #[cfg(feature = "hydrate")]
    {
        let _ = window().navigator().clipboard().write_text(text);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = text;
}

/// The conversation's title (renamed in place), its agent, and deleting it.
#[component]
fn ConversationHead(c: ConversationView) -> impl IntoView {
    let title = RwSignal::new(c.title.clone());
    let new_title = RwSignal::new(c.title.clone());
    let editing = RwSignal::new(false);
    let rename = ServerAction::<RenameConversation>::new();
    let delete = ServerAction::<DeleteConversation>::new();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(())) = delete.value().get() {
            list_changed();
            navigate("/chat", Default::default());
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = rename.value().get() {
            title.set(new_title.get_untracked());
            editing.set(false);
            list_changed();
        }
    });
    let agent = c.agent_name.unwrap_or_else(|| "Deleted agent".into());
    let (rename_id, delete_id) = (c.id.clone(), c.id);
    view! {
        <div class="page-head chat-head">
            {move || if editing.get() {
                let rename_id = rename_id.clone();
                view! {
                    <ActionForm action=rename attr:class="inline-form rename-form">
                        <input type="hidden" name="id" value=rename_id/>
                        <label for="rename-title" class="visually-hidden">"Title"</label>
                        <input id="rename-title" type="text" name="title" required maxlength="120" autofocus
                            prop:value=move || new_title.get_untracked()
                            on:input=move |ev| new_title.set(event_target_value(&ev))
                            on:keydown=move |ev| if ev.key() == "Escape" { editing.set(false) }/>
                        <button type="submit" class="small">"Save"</button>
                        <button type="button" class="secondary small" on:click=move |_| editing.set(false)>"Cancel"</button>
                    </ActionForm>
                }.into_any()
            } else {
                view! {
                    <h1 data-testid="conversation-title">{move || title.get()}</h1>
                    <button type="button" class="link small" aria-label="Rename conversation"
                        on:click=move |_| { new_title.set(title.get_untracked()); editing.set(true); }>"Rename"</button>
                }.into_any()
            }}
            <span class="muted">"with " {agent}</span>
            <ActionForm action=delete attr:class="inline-form delete-conversation">
                <input type="hidden" name="id" value=delete_id/>
                <ConfirmButton label="Delete" aria_label="Delete conversation" class="secondary small" question="Delete this conversation? It cannot be brought back."/>
            </ActionForm>
            <ActionError value=rename.value()/>
            <ActionError value=delete.value()/>
        </div>
    }
}

/// A message's time, in the reader's own time zone once the page is interactive (UTC before).
#[component]
fn LocalTime(at: String, text: String) -> impl IntoView {
    let shown = RwSignal::new(text);
    #[cfg(feature = "hydrate")]
    {
        let at = at.clone();
        Effect::new(move |_| {
            let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_str(&at));
            if !date.get_time().is_nan() {
                let options = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&options, &"dateStyle".into(), &"medium".into());
                let _ = js_sys::Reflect::set(&options, &"timeStyle".into(), &"short".into());
                shown.set(String::from(date.to_locale_string("default", &options)));
            }
        });
    }
    view! { <time datetime=at>{move || shown.get()}</time> }
}

#[component]
fn Bubble(
    m: MessageView,
    last_reply: Memo<Option<String>>,
    last_question: Memo<Option<String>>,
) -> impl IntoView {
    let stream = expect_context::<ReplyStream>();
    let error = expect_context::<ChatError>().0;
    let agent = expect_context::<AgentName>().0;
    let class = format!("bubble {} {}", m.role, m.status);
    let is_reply = m.role == MessageRole::Assistant;
    let ended = !m.status.in_progress();
    let id = StoredValue::new(m.id.clone());
    let content = StoredValue::new(m.content.clone());
    let idle = move || stream.streaming.get().is_none();
    let is_last_reply = move || last_reply.get().as_deref() == Some(id.get_value().as_str());
    let is_last_question = move || last_question.get().as_deref() == Some(id.get_value().as_str());
    let editing = RwSignal::new(false);
    let edit_text = RwSignal::new(m.content.clone());

    let body = if is_reply {
        let html = crate::markdown::render(&m.content);
        view! { <div class="md" inner_html=html></div> }.into_any()
    } else {
        view! {
            <Show when=move || editing.get() fallback=move || view! { <div class="text">{content.get_value()}</div> }>
                <form class="edit-form" on:submit=move |ev| {
                    ev.prevent_default();
                    let text = edit_text.get_untracked();
                    let conversation = stream.conversation.get_value();
                    error.set(None);
                    spawn_local(async move {
                        match edit_last_message(conversation, text.clone()).await {
                            Ok(sent) => { editing.set(false); stream.edited(text, sent.reply_id); }
                            Err(e) => error.set(Some(e.to_string())),
                        }
                    });
                }>
                    <label for="edit-question" class="visually-hidden">"Edit your question"</label>
                    <textarea id="edit-question" rows="3" maxlength="32000" prop:value=move || edit_text.get()
                        on:input=move |ev| edit_text.set(event_target_value(&ev))></textarea>
                    <div class="actions">
                        <button type="submit" class="small">"Save and send"</button>
                        <button type="button" class="secondary small" on:click=move |_| editing.set(false)>"Cancel"</button>
                    </div>
                </form>
            </Show>
        }
        .into_any()
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
    let who = if is_reply { agent } else { "You".to_string() };
    let time = (!m.at.is_empty())
        .then(|| view! { " · " <LocalTime at=m.at.clone() text=m.at_text.clone()/> }.into_any());
    let copied = RwSignal::new(false);
    let copy = move |_| {
        copy_text(&content.get_value());
        copied.set(true);
        set_timeout(move || copied.set(false), std::time::Duration::from_secs(2));
    };
    let regenerate = move |_| {
        let conversation = stream.conversation.get_value();
        error.set(None);
        spawn_local(async move {
            match regenerate_reply(conversation).await {
                Ok(sent) => stream.regenerated(sent.reply_id),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let reply_actions = (is_reply && ended).then(|| view! {
        <div class="message-actions" role="group" aria-label="Reply actions">
            <button type="button" class="link small" on:click=copy>{move || if copied.get() { "Copied" } else { "Copy" }}</button>
            <Show when=move || is_last_reply() && idle()>
                <button type="button" class="link small" on:click=regenerate>"Regenerate"</button>
            </Show>
            <Feedback reply=id.get_value() rating=m.rating.clone() comment=m.rating_comment.clone()/>
        </div>
    }.into_any());
    let question_actions = (!is_reply).then(|| view! {
        <Show when=move || is_last_question() && idle() && !editing.get() && !id.get_value().starts_with("local-")>
            <div class="message-actions">
                <button type="button" class="link small" on:click=move |_| { edit_text.set(content.get_value()); editing.set(true); }>"Edit"</button>
            </div>
        </Show>
    }.into_any());
    view! {
        <div class=class data-testid=format!("message-{}", m.role)>
            <p class="byline muted small">{who}{time}</p>
            {body}
            {sources}
            {note}
            {reply_actions}
            {question_actions}
        </div>
    }
}

/// Thumbs up or down on a reply, with an optional comment that the clinic's admins see.
#[component]
fn Feedback(reply: String, rating: Option<String>, comment: String) -> impl IntoView {
    let rating = RwSignal::new(rating);
    let comment = RwSignal::new(comment);
    let asking = RwSignal::new(false);
    let thanked = RwSignal::new(false);
    let error = expect_context::<ChatError>().0;
    let reply = StoredValue::new(reply);
    let send = move |value: Option<String>, text: String| {
        let before = rating.get_untracked();
        rating.set(value.clone());
        spawn_local(async move {
            let r = rate_reply(
                reply.get_value(),
                value.clone().unwrap_or_default(),
                Some(text),
            )
            .await;
            if let Err(e) = r {
                rating.set(before);
                error.set(Some(e.to_string()));
            }
        });
    };
    let thumb = move |value: &'static str| {
        move |_| {
            if rating.get_untracked().as_deref() == Some(value) {
                // Pressed again: taken back.
                send(None, String::new());
                asking.set(false);
            } else {
                send(Some(value.to_string()), comment.get_untracked());
                asking.set(true);
                thanked.set(false);
            }
        }
    };
    view! {
        <button type="button" class="link small thumb" aria-label="Good reply" data-testid="thumb-up"
            aria-pressed=move || (rating.get().as_deref() == Some("up")).to_string() on:click=thumb("up")>"👍"</button>
        <button type="button" class="link small thumb" aria-label="Bad reply" data-testid="thumb-down"
            aria-pressed=move || (rating.get().as_deref() == Some("down")).to_string() on:click=thumb("down")>"👎"</button>
        <Show when=move || asking.get()>
            <form class="feedback-form" on:submit=move |ev| {
                ev.prevent_default();
                send(rating.get_untracked(), comment.get_untracked());
                asking.set(false);
                thanked.set(true);
            }>
                <label for=format!("feedback-{}", reply.get_value())>"What made it good or bad? (optional; the clinic's admins see your rating and comment, not the conversation)"</label>
                <textarea id=format!("feedback-{}", reply.get_value()) rows="2" maxlength="2000" prop:value=move || comment.get()
                    on:input=move |ev| comment.set(event_target_value(&ev))></textarea>
                <div class="actions">
                    <button type="submit" class="small">"Send feedback"</button>
                    <button type="button" class="secondary small" on:click=move |_| asking.set(false)>"Skip"</button>
                </div>
            </form>
        </Show>
        <Show when=move || thanked.get()>
            <span class="muted small" role="status" data-testid="feedback-thanks">"Thanks for the feedback."</span>
        </Show>
    }
}
