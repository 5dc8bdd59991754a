//! Admin -> Knowledge: upload documents (several at once, a progress bar per file; a plain
//! multipart form before the page is interactive), watch each one's ingestion live, retry,
//! re-tag and delete, and see the storage used against the plan.

use leptos::html;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use tessera_types::DocumentStatus;

use crate::api::knowledge::{
    get_knowledge_page, DeleteDocument, DocumentRow, KnowledgePage, RetryDocument,
    SetEmbeddingModel, TagDocument, ACCEPT, UPLOAD_URL,
};
use crate::components::{admin_data, ActionError, ConfirmButton, Protected};

#[component]
pub fn KnowledgePage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let delete = ServerAction::<DeleteDocument>::new();
    let retry = ServerAction::<RetryDocument>::new();
    let tag = ServerAction::<TagDocument>::new();
    let model = ServerAction::<SetEmbeddingModel>::new();
    let refresh = RwSignal::new(0u32);
    let uploads = RwSignal::new(Vec::<Upload>::new());
    let data = Resource::new(
        move || {
            (
                refresh.get(),
                delete.version().get(),
                retry.version().get(),
                tag.version().get(),
                model.version().get(),
            )
        },
        |_| get_knowledge_page(),
    );
    view! {
        <Title text="Knowledge"/>
        <Protected>
            {
            view! {
                <div class="page-head"><h1>"Knowledge"</h1></div>
                <p class="muted">"Documents your agents answer from: protocols, price lists, leaflets. Agents cite the passages they use."</p>
                <Flash/>
                <ActionError value=delete.value()/>
                <ActionError value=retry.value()/>
                <ActionError value=tag.value()/>
                <ActionError value=model.value()/>
                {admin_data(data, move |page| {
                    // While a document is being read, look again shortly (the page shows each status live).
                    #[cfg(feature = "hydrate")]
                    if page.in_progress() {
                        leptos::leptos_dom::helpers::set_timeout(
                            move || refresh.update(|n| *n += 1),
                            std::time::Duration::from_millis(1500),
                        );
                    }
                    view! { <Knowledge page uploads refresh delete retry tag model/> }
                })}
            }
            }
        </Protected>
    }
}

/// One file being uploaded from this page.
#[derive(Clone, Debug, PartialEq)]
struct Upload {
    key: usize,
    name: String,
    /// 0 to 1.
    progress: f64,
    /// `None` while it goes; then what the server said, and whether it was accepted.
    outcome: Option<(bool, String)>,
}

/// What the plain upload form came back with.
#[component]
fn Flash() -> impl IntoView {
    let query = use_query_map();
    move || {
        let q = query.read();
        let notice = q
            .get("notice")
            .map(|n| view! { <p class="notice" role="status" data-testid="upload-notice">{n}</p> });
        let error = q
            .get("error")
            .map(|e| view! { <p class="error" role="alert" data-testid="upload-error">{e}</p> });
        (notice, error)
    }
}

#[component]
fn Knowledge(
    page: KnowledgePage,
    uploads: RwSignal<Vec<Upload>>,
    refresh: RwSignal<u32>,
    delete: ServerAction<DeleteDocument>,
    retry: ServerAction<RetryDocument>,
    tag: ServerAction<TagDocument>,
    model: ServerAction<SetEmbeddingModel>,
) -> impl IntoView {
    let default_model = page.default_model.clone();
    let model_placeholder = format!("{default_model} (default)");
    let mode = match &page.embedding_model {
        Some(model) => format!("Passages are found by meaning (embeddings by {model}) and by their words."),
        None => "No embedding provider: passages are found by their words only. Add an OpenAI key under Provider keys for search by meaning.".into(),
    };
    view! {
        <section class="card" aria-labelledby="upload-heading">
            <h2 id="upload-heading">"Upload documents"</h2>
            <p class="muted small">
                {format!("Text, Markdown, HTML, PDF and Word (.docx) files, up to {} each. A file uploaded again under the same name replaces the earlier version.", page.max_upload)}
            </p>
            <UploadForm uploads refresh/>
        </section>
        <section class="card" aria-labelledby="documents-heading">
            <h2 id="documents-heading">"Documents"</h2>
            <p data-testid="storage">"Storage: " {page.storage.clone()}
                {page.storage_percent.map(|p| view! { " " <meter min="0" max="100" value=p.to_string() aria-label="Storage used">{format!("{p}%")}</meter> })}
            </p>
            <p class="muted small" data-testid="retrieval-mode">{mode}</p>
            <details class="embedding">
                <summary>"Embedding model"</summary>
                <ActionForm action=model attr:class="inline-form">
                    <label for="embedding-model">"Model that embeds passages and questions"</label>
                    <input id="embedding-model" type="text" name="model" value=page.chosen_model.clone() placeholder=model_placeholder/>
                    <button type="submit" class="small">"Save"</button>
                </ActionForm>
                <p class="muted small">"Empty uses OpenAI's " {default_model} " when the clinic can call OpenAI. With an OpenAI-compatible endpoint (such as Ollama), name the embedding model it serves. Changing it indexes every document again."</p>
                {move || model.value().get().and_then(|r| r.ok()).map(|n| view! {
                    <p class="notice" role="status">{format!("Saved. {n} documents are being indexed again.")}</p>
                })}
            </details>
            {if page.documents.is_empty() {
                view! { <p class="muted" data-testid="no-documents">"No documents yet. Upload the files your staff look things up in; agents will answer from them."</p> }.into_any()
            } else {
                view! {
                    <div class="table-wrap" tabindex="0" role="region" aria-label="Documents">
                        <table class="table documents">
                            <thead><tr>
                                <th scope="col">"Document"</th>
                                <th scope="col">"Status"</th>
                                <th scope="col">"Size"</th>
                                <th scope="col">"Passages"</th>
                                <th scope="col">"Uploaded"</th>
                                <th scope="col">"Collections"</th>
                                <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                            </tr></thead>
                            <tbody>
                                {page.documents.into_iter().map(|d| view! { <DocumentLine d delete retry tag/> }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            }}
        </section>
    }
}

#[component]
fn DocumentLine(
    d: DocumentRow,
    delete: ServerAction<DeleteDocument>,
    retry: ServerAction<RetryDocument>,
    tag: ServerAction<TagDocument>,
) -> impl IntoView {
    let status_class = format!("status {}", d.status);
    let pages = d.pages.map(|p| format!(" · {p} pages")).unwrap_or_default();
    let (retry_id, delete_id, tag_id) = (d.id.clone(), d.id.clone(), d.id.clone());
    let name = d.name.clone();
    let retry_name = d.name.clone();
    let failed = d.status == DocumentStatus::Failed;
    view! {
        <tr data-testid="document" data-status=d.status.to_string()>
            <th scope="row">
                <span data-testid="document-name">{d.name.clone()}</span>
                <span class="muted small">{format!(" {}{pages}", d.kind.label())}</span>
            </th>
            <td>
                <span class=status_class data-testid="document-status">{d.status.label()}</span>
                {d.error.clone().map(|e| view! { <p class="small" class:error=failed data-testid="document-error">{e}</p> })}
                {failed.then(|| view! {
                    <ActionForm action=retry attr:class="row-form">
                        <input type="hidden" name="id" value=retry_id/>
                        <button type="submit" class="small" aria-label=format!("Retry {}", retry_name)>"Retry"</button>
                    </ActionForm>
                })}
            </td>
            <td>{d.size.clone()}</td>
            <td data-testid="document-chunks">{d.chunks}</td>
            <td class="small">{format!("{} by {}", d.uploaded, d.uploaded_by)}</td>
            <td>
                <ActionForm action=tag attr:class="inline-form">
                    <input type="hidden" name="id" value=tag_id/>
                    <label class="visually-hidden" for=format!("tags-{}", d.id)>{format!("Collections of {}", d.name)}</label>
                    <input id=format!("tags-{}", d.id) type="text" name="tags" value=d.tags.clone() placeholder="none" size="12"/>
                    <button type="submit" class="small">"Save"</button>
                </ActionForm>
            </td>
            <td>
                <ActionForm action=delete attr:class="row-form">
                    <input type="hidden" name="id" value=delete_id/>
                    <ConfirmButton label="Delete" aria_label=format!("Delete {name}")
                        question=format!("Delete {name}? Agents stop citing it at once.")/>
                </ActionForm>
            </td>
        </tr>
    }
}

/// The upload form: a plain multipart post that the server answers with a redirect back here;
/// once the page is interactive, each chosen file is sent on its own with a progress bar.
#[component]
fn UploadForm(uploads: RwSignal<Vec<Upload>>, refresh: RwSignal<u32>) -> impl IntoView {
    let files: NodeRef<html::Input> = NodeRef::new();
    let tags: NodeRef<html::Input> = NodeRef::new();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        #[cfg(feature = "hydrate")]
        {
            ev.prevent_default();
            send::all(files, tags, uploads, refresh);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, files, tags, refresh);
    };
    view! {
        <form method="post" action=UPLOAD_URL enctype="multipart/form-data" class="stack-form" data-testid="upload-form" on:submit=on_submit>
            <div class="field">
                <label for="upload-tags">"Collections (optional, comma-separated)"</label>
                <input id="upload-tags" type="text" name="tags" node_ref=tags placeholder="price lists, protocols"/>
            </div>
            <div class="field">
                <label for="upload-files">"Files"</label>
                <input id="upload-files" type="file" name="files" multiple required accept=ACCEPT node_ref=files/>
            </div>
            <button type="submit">"Upload"</button>
        </form>
        <ul class="uploads" aria-label="Uploads" data-testid="uploads">
            <For each=move || uploads.get() key=|u| (u.key, (u.progress * 100.0) as u32, u.outcome.is_some()) let:u>
                <li data-testid="upload">
                    <span>{u.name.clone()}</span>
                    " "
                    <progress max="1" value=u.progress.to_string() aria-label=format!("Uploading {}", u.name)></progress>
                    {u.outcome.clone().map(|(ok, message)| view! {
                        <span class=if ok { "small" } else { "small error" } role=if ok { "status" } else { "alert" } data-testid="upload-outcome">{message}</span>
                    })}
                </li>
            </For>
        </ul>
    }
}

/// Sending files from the browser, one request per file, with its progress.
#[cfg(feature = "hydrate")]
mod send {
    use leptos::html;
    use leptos::prelude::*;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{FormData, ProgressEvent, XmlHttpRequest};

    use super::Upload;
    use crate::api::knowledge::UPLOAD_URL;

    #[derive(serde::Deserialize)]
    struct Outcome {
        ok: bool,
        message: String,
    }

    #[derive(serde::Deserialize)]
    struct Answer {
        results: Vec<Outcome>,
    }

    pub fn all(
        files: NodeRef<html::Input>,
        tags: NodeRef<html::Input>,
        uploads: RwSignal<Vec<Upload>>,
        refresh: RwSignal<u32>,
    ) {
        let Some(input) = files.get_untracked() else {
            return;
        };
        let tags = tags.get_untracked().map(|t| t.value()).unwrap_or_default();
        let Some(list) = input.files() else { return };
        let start = uploads.with_untracked(|u| u.len());
        for i in 0..list.length() {
            let Some(file) = list.get(i) else { continue };
            let key = start + i as usize;
            uploads.update(|u| {
                u.push(Upload {
                    key,
                    name: file.name(),
                    progress: 0.0,
                    outcome: None,
                })
            });
            one(file, &tags, key, uploads, refresh);
        }
        input.set_value("");
    }

    fn set(uploads: RwSignal<Vec<Upload>>, key: usize, f: impl FnOnce(&mut Upload)) {
        uploads.update(|u| {
            if let Some(x) = u.iter_mut().find(|x| x.key == key) {
                f(x)
            }
        });
    }

    fn one(
        file: web_sys::File,
        tags: &str,
        key: usize,
        uploads: RwSignal<Vec<Upload>>,
        refresh: RwSignal<u32>,
    ) {
        let failed = move |message: String| {
            set(uploads, key, |u| u.outcome = Some((false, message)));
        };
        let (Ok(xhr), Ok(form)) = (XmlHttpRequest::new(), FormData::new()) else {
            failed(
                "This browser cannot upload files from here; reload the page and try again.".into(),
            );
            return;
        };
        let _ = form.append_with_str("tags", tags);
        let _ = form.append_with_blob_and_filename("files", &file, &file.name());
        if xhr.open("POST", UPLOAD_URL).is_err() {
            failed("The upload could not start.".into());
            return;
        }
        let _ = xhr.set_request_header("Accept", "application/json");
        let progress = Closure::<dyn FnMut(ProgressEvent)>::new(move |e: ProgressEvent| {
            if e.length_computable() && e.total() > 0.0 {
                let p = e.loaded() / e.total();
                set(uploads, key, |u| u.progress = p.min(1.0));
            }
        });
        if let Ok(upload) = xhr.upload() {
            upload.set_onprogress(Some(progress.as_ref().unchecked_ref()));
        }
        let req = xhr.clone();
        let loaded = Closure::<dyn FnMut()>::new(move || {
            let text = req.response_text().ok().flatten().unwrap_or_default();
            let outcome = match serde_json::from_str::<Answer>(&text) {
                Ok(a) => a
                    .results
                    .into_iter()
                    .next()
                    .map(|o| (o.ok, o.message))
                    .unwrap_or((false, "The server did not say what happened.".into())),
                Err(_) if req.status().unwrap_or(0) == 413 => {
                    (false, "The file is too large to upload.".into())
                }
                Err(_) => (
                    false,
                    format!(
                        "The upload failed ({}). Try again.",
                        req.status().unwrap_or(0)
                    ),
                ),
            };
            set(uploads, key, |u| {
                u.progress = 1.0;
                u.outcome = Some(outcome);
            });
            refresh.update(|n| *n += 1);
        });
        xhr.set_onload(Some(loaded.as_ref().unchecked_ref()));
        let errored = Closure::<dyn FnMut()>::new(move || {
            failed("The connection was lost during the upload. Try again.".into())
        });
        xhr.set_onerror(Some(errored.as_ref().unchecked_ref()));
        if xhr.send_with_opt_form_data(Some(&form)).is_err() {
            failed("The upload could not start.".into());
        }
        // The request holds its handlers until it ends; they are small, and one per file.
        progress.forget();
        loaded.forget();
        errored.forget();
    }
}
