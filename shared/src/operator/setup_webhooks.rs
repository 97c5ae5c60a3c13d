//! `circleci-triggers setup-webhooks --url URL`: registers the receiver on every project the
//! triggers file names, through CircleCI's webhook API, idempotently.
//!
//! - **Which projects**: every exact project of a chain's upstream matchers (with the
//!   events those matchers listen to) and of every target — chain actions, schedules and
//!   HTTP endpoints (`workflow-completed`, for the closed loop). Project globs (`gh/acme/*`) cannot be
//!   registered and are listed for the operator.
//! - **Which webhook is ours**: CircleCI masks signing secrets when listing, so ours is the
//!   one with our URL. Its name carries the secret's version,
//!   `circleci-triggers v<first 8 hex digits of SHA-256(secret)>`, so a rotated secret shows
//!   up as a name that differs, and the update sets the new secret. An equal webhook is left
//!   alone. Matching on the URL (rather than URL and events) turns a change of events into an
//!   update instead of a second webhook, which would also count against the limit.
//! - **Limit**: CircleCI allows 5 webhooks per project; a project that has 5 others is
//!   reported with a clear error and left as it is.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::circleci::{CircleCi, NewWebhook, Webhook, WebhookEvent, WebhookUpdate};
use crate::config::chain::EventKind;
use crate::config::{ProjectSlug, TriggersFile};

/// Every webhook this tool manages has a name starting with this.
pub const WEBHOOK_NAME_PREFIX: &str = "circleci-triggers";
/// CircleCI's limit of webhooks per project.
pub const MAX_WEBHOOKS_PER_PROJECT: usize = 5;

/// The name that identifies the signing secret a webhook was registered with, without
/// revealing it (a short prefix of its SHA-256).
pub fn webhook_name(secret: &SecretString) -> String {
    let digest = hex::encode(Sha256::digest(secret.expose_secret().as_bytes()));
    format!("{WEBHOOK_NAME_PREFIX} v{}", &digest[..8])
}

/// The projects to register on, and the events each needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookProjects {
    /// Canonical slug → events (workflow-completed first).
    pub projects: BTreeMap<String, Vec<WebhookEvent>>,
    /// Matcher patterns that name no single project (register those by hand).
    pub patterns: Vec<String>,
}

/// Collects the projects the triggers file names.
pub fn webhook_projects(file: &TriggersFile) -> WebhookProjects {
    let mut events: BTreeMap<String, BTreeSet<EventOrder>> = BTreeMap::new();
    let mut patterns = BTreeSet::new();
    let mut add = |project: &str, event: EventKind| match exact_project(project) {
        Some(slug) => {
            events
                .entry(slug)
                .or_default()
                .insert(EventOrder::from(event));
        }
        None => {
            patterns.insert(project.to_owned());
        }
    };
    for chain in &file.chain {
        for matcher in chain.upstreams() {
            for project in matcher.project.iter() {
                add(project, matcher.event_kind());
            }
        }
        for action in &chain.then {
            add(&action.project, EventKind::WorkflowCompleted);
        }
    }
    for schedule in &file.schedule {
        for target in schedule.targets() {
            add(&target.project, EventKind::WorkflowCompleted);
        }
    }
    for endpoint in &file.endpoint {
        add(&endpoint.target.project, EventKind::WorkflowCompleted);
    }
    WebhookProjects {
        projects: events
            .into_iter()
            .map(|(project, kinds)| (project, kinds.into_iter().map(EventOrder::wire).collect()))
            .collect(),
        patterns: patterns.into_iter().collect(),
    }
}

/// Sorts workflow-completed before job-completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventOrder {
    Workflow,
    Job,
}

impl From<EventKind> for EventOrder {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::WorkflowCompleted => EventOrder::Workflow,
            EventKind::JobCompleted => EventOrder::Job,
        }
    }
}

impl EventOrder {
    fn wire(self) -> WebhookEvent {
        match self {
            EventOrder::Workflow => WebhookEvent::WorkflowCompleted,
            EventOrder::Job => WebhookEvent::JobCompleted,
        }
    }
}

fn exact_project(pattern: &str) -> Option<String> {
    if pattern.contains(['*', '?', '[', '{']) {
        return None;
    }
    pattern
        .parse::<ProjectSlug>()
        .ok()
        .map(|slug| slug.canonical())
}

/// What to register.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    /// The receiver's public URL (`https://…/webhooks/circleci`).
    pub url: String,
    /// The CircleCI token (by name) that manages the webhooks.
    pub token: String,
    /// The current signing secret (the first of the configured ones).
    pub secret: SecretString,
    pub verify_tls: bool,
}

/// What setup-webhooks will do (or did) on one project.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectPlan {
    pub project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    pub events: Vec<WebhookEvent>,
    pub change: Change,
    /// Further webhooks with our URL (duplicates deliver twice; harmless, but worth removing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Create {
        name: String,
    },
    Update {
        webhook_id: Uuid,
        name: String,
        /// What differs: `name/secret`, `events`, `verify-tls`.
        differences: Vec<String>,
    },
    Unchanged {
        webhook_id: Uuid,
    },
    /// Nothing can be done here; the reason says why.
    Blocked {
        reason: String,
    },
}

impl ProjectPlan {
    pub fn is_blocked(&self) -> bool {
        matches!(self.change, Change::Blocked { .. })
    }
}

/// Reads every project's webhooks and decides what to change. Sends nothing.
pub async fn plan(
    circleci: &dyn CircleCi,
    request: &SetupRequest,
    projects: &WebhookProjects,
) -> Vec<ProjectPlan> {
    let mut plans = Vec::new();
    for (project, events) in &projects.projects {
        plans.push(plan_project(circleci, request, project, events).await);
    }
    plans
}

async fn plan_project(
    circleci: &dyn CircleCi,
    request: &SetupRequest,
    project: &str,
    events: &[WebhookEvent],
) -> ProjectPlan {
    let mut plan = ProjectPlan {
        project: project.to_owned(),
        project_id: None,
        events: events.to_vec(),
        change: Change::Blocked {
            reason: String::new(),
        },
        duplicates: Vec::new(),
    };
    let blocked = |reason: String| Change::Blocked { reason };
    let slug = match project.parse::<ProjectSlug>() {
        Ok(slug) => slug,
        Err(error) => {
            plan.change = blocked(format!("not a project slug: {error}"));
            return plan;
        }
    };
    let project_id = match circleci.get_project(&request.token, &slug).await {
        Ok(found) => found.id,
        Err(error) => {
            plan.change = blocked(format!("cannot read the project: {error}"));
            return plan;
        }
    };
    plan.project_id = Some(project_id);
    let existing = match circleci.list_webhooks(&request.token, project_id).await {
        Ok(hooks) => hooks,
        Err(error) => {
            plan.change = blocked(format!("cannot list the project's webhooks: {error}"));
            return plan;
        }
    };
    let mut ours: Vec<&Webhook> = existing.iter().filter(|h| h.url == request.url).collect();
    // Prefer one this tool named, then the oldest.
    ours.sort_by_key(|h| (!h.name.starts_with(WEBHOOK_NAME_PREFIX), h.created_at));
    let name = webhook_name(&request.secret);
    plan.change = match ours.split_first() {
        None if existing.len() >= MAX_WEBHOOKS_PER_PROJECT => {
            let names: Vec<&str> = existing.iter().map(|h| h.name.as_str()).collect();
            blocked(format!(
                "the project already has {} webhooks, CircleCI's limit is {MAX_WEBHOOKS_PER_PROJECT}: delete one \
                 in Project Settings → Webhooks, then run again (existing: {})",
                existing.len(),
                names.join(", ")
            ))
        }
        None => Change::Create { name },
        Some((hook, rest)) => {
            plan.duplicates = rest.iter().map(|h| h.id).collect();
            let mut differences = Vec::new();
            if hook.name != name {
                differences.push("name/secret".to_owned());
            }
            if !same_events(&hook.events, events) {
                differences.push("events".to_owned());
            }
            if hook.verify_tls != request.verify_tls {
                differences.push("verify-tls".to_owned());
            }
            if differences.is_empty() {
                Change::Unchanged {
                    webhook_id: hook.id,
                }
            } else {
                Change::Update {
                    webhook_id: hook.id,
                    name,
                    differences,
                }
            }
        }
    };
    plan
}

fn same_events(have: &[WebhookEvent], want: &[WebhookEvent]) -> bool {
    have.iter().all(|e| want.contains(e)) && want.iter().all(|e| have.contains(e))
}

/// What applying one project's plan did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub project: String,
    pub change: Change,
    /// `created <id>`, `updated <id>`, `unchanged <id>`, or why it failed.
    pub result: Result<String, String>,
}

/// Applies the plans: creates and updates webhooks (a create or update always sends the
/// current secret, since CircleCI never reveals the one it has).
pub async fn apply(
    circleci: &dyn CircleCi,
    request: &SetupRequest,
    plans: &[ProjectPlan],
) -> Vec<Applied> {
    let mut applied = Vec::new();
    for plan in plans {
        let result = match (&plan.change, plan.project_id) {
            (Change::Create { name }, Some(project_id)) => circleci
                .create_webhook(
                    &request.token,
                    &NewWebhook {
                        name: name.clone(),
                        url: request.url.clone(),
                        events: plan.events.clone(),
                        verify_tls: request.verify_tls,
                        signing_secret: request.secret.clone(),
                        project_id,
                    },
                )
                .await
                .map(|hook| format!("created {}", hook.id))
                .map_err(|error| format!("create failed: {error}")),
            (
                Change::Update {
                    webhook_id,
                    name,
                    differences,
                },
                _,
            ) => {
                let update = WebhookUpdate {
                    name: Some(name.clone()),
                    url: None,
                    events: differences
                        .iter()
                        .any(|d| d == "events")
                        .then(|| plan.events.clone()),
                    verify_tls: Some(request.verify_tls),
                    signing_secret: Some(request.secret.clone()),
                };
                circleci
                    .update_webhook(&request.token, *webhook_id, &update)
                    .await
                    .map(|hook| format!("updated {}", hook.id))
                    .map_err(|error| format!("update failed: {error}"))
            }
            (Change::Unchanged { webhook_id }, _) => Ok(format!("unchanged {webhook_id}")),
            (Change::Blocked { reason }, _) => Err(reason.clone()),
            (Change::Create { .. }, None) => Err("the project id is unknown".to_owned()),
        };
        applied.push(Applied {
            project: plan.project.clone(),
            change: plan.change.clone(),
            result,
        });
    }
    applied
}

/// The plan as lines for `--dry-run` and the summary.
pub fn describe(plan: &ProjectPlan) -> String {
    let events: Vec<&str> = plan
        .events
        .iter()
        .map(|e| match e {
            WebhookEvent::WorkflowCompleted => "workflow-completed",
            WebhookEvent::JobCompleted => "job-completed",
        })
        .collect();
    let events = events.join(", ");
    let mut line = match &plan.change {
        Change::Create { name } => format!("{}: create `{name}` for {events}", plan.project),
        Change::Update {
            webhook_id,
            name,
            differences,
        } => format!(
            "{}: update {webhook_id} to `{name}` for {events} ({} differ)",
            plan.project,
            differences.join(", ")
        ),
        Change::Unchanged { webhook_id } => format!("{}: unchanged ({webhook_id})", plan.project),
        Change::Blocked { reason } => format!("{}: ERROR {reason}", plan.project),
    };
    if !plan.duplicates.is_empty() {
        let ids: Vec<String> = plan.duplicates.iter().map(Uuid::to_string).collect();
        line.push_str(&format!(
            "; note: {} more webhook(s) with this URL ({}) deliver every event again",
            ids.len(),
            ids.join(", ")
        ));
    }
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::circleci::WebhookEvent as HookEvent;
    use crate::config::parse_str;

    #[test]
    fn webhook_names_carry_a_short_version_of_the_secret_only() {
        let one = webhook_name(&SecretString::from("s3cret-one".to_owned()));
        let two = webhook_name(&SecretString::from("s3cret-two".to_owned()));
        assert!(one.starts_with(&format!("{WEBHOOK_NAME_PREFIX} v")));
        assert_eq!(one.len(), WEBHOOK_NAME_PREFIX.len() + 2 + 8);
        assert_ne!(one, two);
        assert!(!one.contains("s3cret"));
        assert_eq!(
            one,
            webhook_name(&SecretString::from("s3cret-one".to_owned()))
        );
    }

    #[test]
    fn webhook_projects_merge_events_and_set_patterns_aside() {
        let file = parse_str(
            r#"
    [[schedule]]
    name = "n"
    cron = "0 2 * * *"
    timezone = "UTC"
    targets = [{ project = "github/acme/api", branch = "main" }, { project = "gh/acme/web", branch = "main" }]

    [[chain]]
    name = "jobs"
    when = { project = "gh/acme/api", job = "lint" }
    [[chain.then]]
    action = "pipeline"
    project = "gh/acme/deploy"
    branch = "main"

    [[endpoint]]
    name = "release"
    action = "pipeline"
    target = { project = "gh/acme/release", branch = "main" }

    [[chain]]
    name = "globs"
    when = { project = ["gh/acme/svc-*", "gh/acme/web"], workflow = "build" }
    [[chain.then]]
    action = "pipeline"
    project = "gh/acme/deploy"
    branch = "main"
    "#,
            "t.toml",
        )
        .unwrap();
        let projects = webhook_projects(&file);
        assert_eq!(
            projects.projects["gh/acme/api"],
            vec![HookEvent::WorkflowCompleted, HookEvent::JobCompleted],
            "github/ and gh/ are one project; both events, workflow-completed first"
        );
        assert_eq!(
            projects.projects["gh/acme/web"],
            vec![HookEvent::WorkflowCompleted]
        );
        assert_eq!(
            projects.projects["gh/acme/release"],
            vec![HookEvent::WorkflowCompleted],
            "endpoint targets too"
        );
        assert_eq!(projects.projects.len(), 4);
        assert_eq!(projects.patterns, vec!["gh/acme/svc-*".to_owned()]);
    }
}
