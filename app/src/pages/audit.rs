//! Settings -> Audit log: who changed what in the clinic, when and from where, filtered by
//! person, kind and date, with a CSV export of the same entries.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use tessera_types::AUDIT_AREAS;

use crate::api::audit::{clinic_audit, AuditRow, EXPORT_URL};
use crate::components::{admin_data, Protected};

#[component]
pub fn AuditPage() -> impl IntoView {
    // The page's actions and data are made here, before the signed-in check's suspense, so
    // the server and the browser create them in the same order (hydration relies on it).
    let query = AuditQuery::read();
    let data = Resource::new(
        move || query.get(),
        |q| clinic_audit(q.person, q.area, q.from, q.to),
    );
    view! {
        <Title text="Audit log"/>
        <Protected>
            {
            admin_data(data, move |rows| {
                let q = query.get_untracked();
                let export = format!("{EXPORT_URL}?{}", q.to_query());
                view! {
                    <div class="page-head"><h1>"Audit log"</h1></div>
                    <p class="muted">"Every sensitive change in this clinic: who made it, when and from which address. Entries cannot be changed or deleted."</p>
                    <AuditFilter action="/settings/audit" q=q/>
                    <p><a href=export download="" data-testid="audit-export">"Download these entries (CSV)"</a></p>
                    <AuditTable rows show_clinic=false/>
                }
            })
            }
        </Protected>
    }
}

/// The filter in the page's address: `?person=&area=&from=&to=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub person: String,
    pub area: String,
    pub from: String,
    pub to: String,
}

impl AuditQuery {
    pub fn read() -> Memo<AuditQuery> {
        let query = use_query_map();
        Memo::new(move |_| {
            let q = query.read();
            let get = |k: &str| q.get(k).unwrap_or_default();
            AuditQuery {
                person: get("person"),
                area: get("area"),
                from: get("from"),
                to: get("to"),
            }
        })
    }

    /// The same filter as a query string.
    pub fn to_query(&self) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        format!(
            "person={}&area={}&from={}&to={}",
            enc(&self.person),
            enc(&self.area),
            enc(&self.from),
            enc(&self.to)
        )
    }
}

/// The filter form (a plain GET form: the filter lives in the address).
#[component]
pub fn AuditFilter(action: &'static str, q: AuditQuery) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="audit-filter-heading">
            <h2 id="audit-filter-heading" class="visually-hidden">"Filter"</h2>
            <form method="get" action=action class="inline-form audit-filter">
                <div class="field">
                    <label for="audit-person">"Person"</label>
                    <input id="audit-person" type="search" name="person" value=q.person placeholder="Email or key name"/>
                </div>
                <div class="field">
                    <label for="audit-area">"Kind"</label>
                    <select id="audit-area" name="area">
                        <option value="" selected=q.area.is_empty()>"All kinds"</option>
                        {AUDIT_AREAS.iter().map(|(value, label)| {
                            let selected = q.area == *value;
                            view! { <option value=*value selected=selected>{*label}</option> }
                        }).collect_view()}
                    </select>
                </div>
                <div class="field">
                    <label for="audit-from">"From"</label>
                    <input id="audit-from" type="date" name="from" value=q.from/>
                </div>
                <div class="field">
                    <label for="audit-to">"To"</label>
                    <input id="audit-to" type="date" name="to" value=q.to/>
                </div>
                <button type="submit" class="secondary">"Filter"</button>
            </form>
        </section>
    }
}

/// Entries, newest first.
#[component]
pub fn AuditTable(rows: Vec<AuditRow>, show_clinic: bool) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="muted" data-testid="audit-empty">"No entries match."</p> }
            .into_any();
    }
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="Audit log entries">
            <table class="table audit">
                <thead>
                    <tr>
                        <th>"When"</th>
                        {show_clinic.then(|| view! { <th>"Clinic"</th> })}
                        <th>"Who"</th><th>"What"</th><th>"Of"</th><th>"From"</th><th>"Change"</th>
                    </tr>
                </thead>
                <tbody>
                    {rows.into_iter().map(|r| {
                        let change = match (r.before.is_empty(), r.after.is_empty()) {
                            (true, true) => String::new(),
                            (true, false) => r.after.clone(),
                            (false, true) => format!("was {}", r.before),
                            (false, false) => format!("{} → {}", r.before, r.after),
                        };
                        view! {
                            <tr data-testid="audit-row" data-action=r.action.clone()>
                                <td class="nowrap">{r.at.clone()}</td>
                                {show_clinic.then(|| view! { <td>{r.clinic.clone()}</td> })}
                                <td>{r.actor.clone()}{(r.actor_kind != "person").then(|| format!(" ({})", r.actor_kind.replace('_', " ")))}</td>
                                <td><code>{r.action.clone()}</code></td>
                                <td>{r.target.clone()}</td>
                                <td>{r.address.clone()}</td>
                                <td class="audit-change"><code>{change}</code></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}
