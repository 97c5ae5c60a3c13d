//! The status page: one read-only HTML document rendered on the server from the triggers
//! file and the store. No script: it reloads itself every few seconds, so a cascade shows
//! up as it happens without a build chain or a client-side app.
//!
//! Sections: schedules (next fire times in their zone and UTC, pause, last outcome), what
//! needs attention (rejected, failed, ambiguous, a failed workflow), recent triggers as
//! origin trees with each workflow's outcome and a link to the pipeline, and the chain
//! rules as a graph (which project's completion starts what).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};

use super::{Node, build_forest, by_origin, outcome_cell, pipeline_cell, workflow_failed};
use crate::clock::Clock;
use crate::config::TriggersFile;
use crate::store::{
    PageRequest, PauseScope, SharedStore, StoreResult, TriggerRecord, TriggerSource, TriggerStatus,
};
use crate::triggers::scheduled::calendar::next_slots;

/// Where `serve` mounts the page.
pub const STATUS_PATH: &str = "/";
/// How many recent records the page reads.
const RECENT: u32 = 200;
/// How many next fire times each schedule shows.
const NEXT: usize = 3;
/// Seconds between the page's own reloads.
const REFRESH_SECONDS: u32 = 2;

/// What the page is rendered from.
#[derive(Clone)]
pub struct StatusPage {
    pub triggers: Arc<TriggersFile>,
    pub store: SharedStore,
    pub clock: Arc<dyn Clock>,
}

/// `GET /`: the page (no authentication: mount it only where the listener is the
/// operator's, as `serve` is).
pub fn status_router(page: StatusPage) -> Router {
    Router::new()
        .route(STATUS_PATH, get(serve_page))
        .with_state(page)
}

async fn serve_page(State(page): State<StatusPage>) -> Response {
    respond(&page).await
}

/// The rendered page as a response; 503 when the store cannot be read.
pub async fn respond(page: &StatusPage) -> Response {
    match page.render().await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "status page: the store could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the trigger store could not be read; try again",
            )
                .into_response()
        }
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The CircleCI page of the pipeline a record started or acted on: the URL CircleCI
/// returned, else the app's pipeline URL built from the project slug and number.
fn pipeline_link(record: &TriggerRecord) -> Option<String> {
    if let Some(url) = record.pipeline.as_ref().and_then(|p| p.url.clone()) {
        return Some(url);
    }
    let number = match (&record.pipeline, &record.detail.outcome) {
        (Some(pipeline), _) => pipeline.number?,
        (None, Some(outcome)) => outcome.pipeline_number(),
        (None, None) => return None,
    };
    let slug = record
        .target
        .project
        .replacen("gh/", "github/", 1)
        .replacen("bb/", "bitbucket/", 1);
    Some(format!(
        "https://app.circleci.com/pipelines/{slug}/{number}"
    ))
}

fn status_class(record: &TriggerRecord) -> &'static str {
    match record.status {
        TriggerStatus::Rejected | TriggerStatus::Failed | TriggerStatus::NotTriggered => "bad",
        TriggerStatus::Ambiguous | TriggerStatus::Received => "warn",
        TriggerStatus::Skipped => "muted",
        TriggerStatus::Triggered if workflow_failed(record) => "bad",
        TriggerStatus::Triggered => "good",
    }
}

/// Whether an operator should look at it.
pub fn needs_attention(record: &TriggerRecord) -> bool {
    matches!(
        record.status,
        TriggerStatus::Rejected | TriggerStatus::Failed | TriggerStatus::Ambiguous
    ) || workflow_failed(record)
}

impl StatusPage {
    /// The whole document.
    pub async fn render(&self) -> StoreResult<String> {
        let now = self.clock.now();
        let recent = self
            .store
            .list_recent(PageRequest::first(RECENT))
            .await?
            .items;
        let pauses = self.store.pause_flags().await?;
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
             <link rel=\"icon\" href=\"data:,\">\
             <title>circleci-triggers</title><style>{STYLE}</style></head><body>\
             <h1>circleci-triggers</h1><p class=\"muted\">{} UTC · reloads every {REFRESH_SECONDS} s</p>",
            now.format("%Y-%m-%d %H:%M:%S")
        );
        if let Some(all) = pauses.iter().find(|p| p.scope == PauseScope::All) {
            let _ = write!(
                html,
                "<p class=\"bad\" id=\"global-pause\">Everything is paused: {}</p>",
                escape(all.reason.as_deref().unwrap_or("no reason given"))
            );
        }
        self.schedules(&mut html, &recent, &pauses, now);
        attention(&mut html, &recent);
        trees(&mut html, recent);
        self.chains(&mut html);
        html.push_str("</body></html>\n");
        Ok(html)
    }

    fn schedules(
        &self,
        html: &mut String,
        recent: &[TriggerRecord],
        pauses: &[crate::store::PauseFlag],
        now: DateTime<Utc>,
    ) {
        html.push_str(
            "<section id=\"schedules\"><h2>Schedules</h2><table><tr><th>schedule</th>\
             <th>cron</th><th>next (zone)</th><th>next (UTC)</th><th>paused</th>\
             <th>last outcome</th></tr>",
        );
        for spec in &self.triggers.schedule {
            let (local, utc) = match spec.timing() {
                Ok(timing) => {
                    let slots = next_slots(&timing, now, NEXT);
                    let local: Vec<String> = slots
                        .iter()
                        .map(|s| {
                            s.at.with_timezone(&timing.zone)
                                .format("%Y-%m-%d %H:%M %Z")
                                .to_string()
                        })
                        .collect();
                    let utc: Vec<String> = slots
                        .iter()
                        .map(|s| s.at.format("%Y-%m-%d %H:%M").to_string())
                        .collect();
                    (local.join("<br>"), utc.join("<br>"))
                }
                Err(error) => (escape(&error.to_string()), String::new()),
            };
            let paused = pauses
                .iter()
                .find(|p| p.scope == PauseScope::Schedule(spec.name.clone()))
                .map_or_else(
                    || "no".to_owned(),
                    |p| {
                        format!(
                            "<span class=\"warn\">paused</span>: {}",
                            escape(p.reason.as_deref().unwrap_or("no reason given"))
                        )
                    },
                );
            let source = TriggerSource::new(crate::store::SourceKind::Schedule, &spec.name);
            let last = recent
                .iter()
                .filter(|r| r.source == source)
                .max_by_key(|r| r.created_at);
            let last = last.map_or_else(
                || "<span class=\"muted\">none yet</span>".to_owned(),
                |r| {
                    format!(
                        "<span class=\"{}\">{}</span> {} {}",
                        status_class(r),
                        r.status,
                        escape(&r.target.project),
                        escape(&outcome_cell(r))
                    )
                },
            );
            let _ = write!(
                html,
                "<tr><td>{}</td><td><code>{}</code> {}</td><td>{local}</td><td>{utc}</td>\
                 <td>{paused}</td><td>{last}</td></tr>",
                escape(&spec.name),
                escape(&spec.cron),
                escape(&spec.timezone)
            );
        }
        html.push_str("</table></section>");
    }

    fn chains(&self, html: &mut String) {
        html.push_str(
            "<section id=\"chains\"><h2>Chain rules</h2>\
             <p class=\"muted\">which project's completion starts what</p><ul class=\"graph\">",
        );
        for chain in &self.triggers.chain {
            let upstreams: Vec<String> = chain
                .upstreams()
                .iter()
                .map(|m| {
                    let projects: Vec<&str> = m.project.iter().map(String::as_str).collect();
                    let workflows: Vec<&str> = m
                        .workflow
                        .iter()
                        .flat_map(|w| w.iter())
                        .map(String::as_str)
                        .collect();
                    if workflows.is_empty() {
                        escape(&projects.join(" | "))
                    } else {
                        format!(
                            "{} <span class=\"muted\">({})</span>",
                            escape(&projects.join(" | ")),
                            escape(&workflows.join(" | "))
                        )
                    }
                })
                .collect();
            let join = if chain.after.is_empty() { "" } else { " and " };
            let actions: Vec<String> = chain
                .then
                .iter()
                .map(|a| {
                    let what = match &a.job {
                        Some(job) => format!("{} {}", a.action.as_str(), job),
                        None => a.action.as_str().to_owned(),
                    };
                    format!("{} {}", escape(&what), escape(&a.project))
                })
                .collect();
            let _ = write!(
                html,
                "<li class=\"edge\"><span class=\"node\">{}</span> ⟶ <b>{}</b> ⟶ \
                 <span class=\"node\">{}</span></li>",
                upstreams.join(if join.is_empty() { " or " } else { join }),
                escape(&chain.name),
                actions.join(", ")
            );
        }
        html.push_str("</ul></section>");
    }
}

fn row(record: &TriggerRecord, depth: usize) -> String {
    let pipeline = match pipeline_link(record) {
        Some(url) => format!(
            "<a href=\"{}\">{}</a>",
            escape(&url),
            escape(&pipeline_cell(record))
        ),
        None => escape(&pipeline_cell(record)),
    };
    let workflows: String = if record.workflows.is_empty() {
        escape(&outcome_cell(record))
    } else {
        record
            .workflows
            .iter()
            .map(|w| {
                let class = match w.status.as_str() {
                    "success" => "good",
                    "failed" | "error" | "failing" | "canceled" => "bad",
                    _ => "warn",
                };
                format!(
                    "<span class=\"wf {class}\">{}: {}</span>",
                    escape(&w.name),
                    escape(&w.status)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<tr class=\"trigger\" data-id=\"{id}\" data-depth=\"{depth}\"><td style=\"padding-left:{pad}em\">{arrow}{source}</td>\
         <td class=\"{class}\">{status}</td><td>{action}</td><td>{project}</td><td>{pipeline}</td>\
         <td class=\"outcome\">{workflows}</td><td class=\"muted\">{created}</td><td class=\"muted\">{reason}</td></tr>",
        id = record.id,
        pad = f64::from(u32::try_from(depth).unwrap_or(8)) * 1.5 + 0.3,
        arrow = if depth > 0 { "↳ " } else { "" },
        source = escape(&record.source.to_string()),
        class = status_class(record),
        status = record.status,
        action = record.action.as_str(),
        project = escape(&record.target.project),
        created = record.created_at.format("%H:%M:%S"),
        reason = escape(record.reason.as_deref().unwrap_or("")),
    )
}

const ROW_HEADER: &str = "<tr><th>source</th><th>status</th><th>action</th><th>project</th>\
    <th>pipeline</th><th>outcome</th><th>created (UTC)</th><th>reason</th></tr>";

fn attention(html: &mut String, recent: &[TriggerRecord]) {
    let flagged: Vec<&TriggerRecord> = recent.iter().filter(|r| needs_attention(r)).collect();
    let _ = write!(
        html,
        "<section id=\"attention\"><h2>Needs attention ({})</h2>",
        flagged.len()
    );
    if flagged.is_empty() {
        html.push_str("<p class=\"muted\">nothing rejected, failed or ambiguous</p>");
    } else {
        html.push_str("<table>");
        html.push_str(ROW_HEADER);
        for record in flagged {
            html.push_str(&row(record, 0));
        }
        html.push_str("</table>");
    }
    html.push_str("</section>");
}

fn trees(html: &mut String, recent: Vec<TriggerRecord>) {
    html.push_str("<section id=\"recent\"><h2>Recent triggers</h2>");
    let groups = by_origin(recent);
    if groups.is_empty() {
        html.push_str("<p class=\"muted\">no triggers yet</p>");
    }
    for (origin, records) in groups {
        let _ = write!(
            html,
            "<table class=\"tree\" data-origin=\"{origin}\"><caption>origin {origin}</caption>{ROW_HEADER}"
        );
        fn visit(html: &mut String, nodes: &[Node], depth: usize) {
            for node in nodes {
                html.push_str(&row(&node.record, depth));
                visit(html, &node.children, depth + 1);
            }
        }
        visit(html, &build_forest(records), 0);
        html.push_str("</table>");
    }
    html.push_str("</section>");
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.2em;width:100%}\
th,td{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}\
caption{text-align:left;color:#666;font-size:12px}\
.good{color:#17692a}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00}.muted{color:#777}\
.wf{display:inline-block;border:1px solid #ccc;border-radius:3px;padding:0 .3em;margin:0 .2em .1em 0}\
.graph{list-style:none;padding:0}.edge{margin:.3em 0}\
.node{display:inline-block;border:1px solid #99a;border-radius:4px;padding:.1em .4em;background:#f4f5fa}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            escape(r#"<b a="1">'x' & y</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;x&#39; &amp; y&lt;/b&gt;"
        );
    }
}
