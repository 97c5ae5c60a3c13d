//! JSON bodies of API responses, shaped like CircleCI's (see the spec tests).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::model::{JobKind, PayloadStyle};
use crate::state::{State, WebhookRec};

/// CircleCI's timestamp format: RFC 3339, milliseconds, `Z`.
pub(crate) fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_ts(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// `GET /me`.
pub(crate) fn user(st: &State, user: usize) -> Value {
    let u = &st.users[user];
    json!({
        "id": u.id,
        "login": u.login,
        "name": u.login,
        "avatar_url": format!("https://avatars.example.invalid/{}", u.login),
    })
}

/// `GET /project/{slug}`.
pub(crate) fn project(st: &State, project: usize) -> Value {
    let p = &st.projects[project];
    json!({
        "slug": p.slug.short(),
        "name": p.name(),
        "id": p.spec.id,
        "organization_name": p.organization_name(),
        "organization_slug": p.slug.organization_slug(),
        "organization_id": p.spec.organization_id,
        "vcs_info": {
            "vcs_url": p.slug.repository_url(),
            "provider": p.slug.provider_display(),
            "default_branch": p.spec.default_branch,
        },
    })
}

/// The `vcs` block shared by the API and OAuth-style webhooks.
pub(crate) fn vcs(st: &State, pipeline: usize, for_webhook: bool) -> Value {
    let p = &st.pipelines[pipeline];
    let slug = &st.projects[p.project].slug;
    let url = slug.repository_url();
    let provider = if for_webhook {
        match slug.provider {
            crate::slug::Provider::Bitbucket => "bitbucket",
            _ => "github",
        }
    } else {
        match slug.provider {
            crate::slug::Provider::Bitbucket => "Bitbucket",
            _ => "GitHub",
        }
    };
    let subject = format!("Simulated commit for pipeline {}", p.number);
    let mut vcs = Map::new();
    vcs.insert("provider_name".into(), json!(provider));
    vcs.insert("origin_repository_url".into(), json!(url));
    vcs.insert("target_repository_url".into(), json!(url));
    vcs.insert("revision".into(), json!(p.revision));
    if for_webhook {
        let author = json!({"name": st.users[p.user].login, "email": format!("{}@example.invalid", st.users[p.user].login)});
        vcs.insert(
            "commit".into(),
            json!({
                "subject": subject,
                "body": "",
                "author": author,
                "authored_at": ts(p.created_at),
                "committer": author,
                "committed_at": ts(p.created_at),
            }),
        );
    } else {
        vcs.insert("commit".into(), json!({"subject": subject, "body": ""}));
    }
    if let Some(branch) = &p.branch {
        vcs.insert("branch".into(), json!(branch));
    }
    if let Some(tag) = &p.tag {
        vcs.insert("tag".into(), json!(tag));
    }
    Value::Object(vcs)
}

/// The `trigger_parameters` block of App-style projects.
pub(crate) fn trigger_parameters(st: &State, pipeline: usize) -> Value {
    let p = &st.pipelines[pipeline];
    let slug = &st.projects[p.project].slug;
    let reference = match (&p.tag, &p.branch) {
        (Some(tag), _) => format!("refs/tags/{tag}"),
        (None, Some(branch)) => format!("refs/heads/{branch}"),
        (None, None) => String::new(),
    };
    json!({
        "git": {
            "tag": p.tag.clone().unwrap_or_default(),
            "branch": p.branch.clone().unwrap_or_default(),
            "ref": reference,
            "checkout_sha": p.revision,
            "checkout_url": format!("{}.git", slug.repository_url()),
        },
        "circleci": {
            "event_time": ts(p.created_at),
            "actor_id": st.users[p.user].id,
            "event_type": "api",
            "trigger_type": "api",
        },
    })
}

/// `GET /pipeline/{id}` and the items of pipeline lists.
pub(crate) fn pipeline(st: &State, pipeline: usize) -> Value {
    let p = &st.pipelines[pipeline];
    let project = &st.projects[p.project];
    let mut out = json!({
        "id": p.id,
        "errors": p.errors.iter().map(|e| json!({"type": e.kind, "message": e.message})).collect::<Vec<_>>(),
        "project_slug": project.slug.short(),
        "updated_at": ts(p.created_at),
        "number": p.number,
        "state": p.state.as_str(),
        "created_at": ts(p.created_at),
        "trigger": {
            "type": "api",
            "received_at": ts(p.created_at),
            "actor": {
                "login": st.users[p.user].login,
                "avatar_url": Value::Null,
            },
        },
        "vcs": vcs(st, pipeline, false),
    });
    if project.spec.effective_payload_style() == PayloadStyle::App {
        out["trigger_parameters"] = trigger_parameters(st, pipeline);
    }
    out
}

/// A workflow of `GET /workflow/{id}` and workflow lists.
pub(crate) fn workflow(st: &State, workflow: usize) -> Value {
    let w = &st.workflows[workflow];
    let p = &st.pipelines[w.pipeline];
    let mut out = json!({
        "pipeline_id": p.id,
        "id": w.id,
        "name": w.name,
        "project_slug": st.projects[w.project].slug.short(),
        "status": w.status.as_str(),
        "started_by": st.users[w.started_by].id,
        "pipeline_number": p.number,
        "created_at": ts(w.created_at),
        "stopped_at": opt_ts(w.stopped_at),
    });
    if let Some(user) = w.canceled_by {
        out["canceled_by"] = json!(st.users[user].id);
    }
    out
}

/// One item of `GET /workflow/{id}/job`.
pub(crate) fn job(st: &State, workflow: usize, job: usize) -> Value {
    let w = &st.workflows[workflow];
    let j = &w.jobs[job];
    let dependencies: Vec<Value> = j
        .requires
        .iter()
        .filter_map(|name| {
            w.jobs
                .iter()
                .find(|other| &other.name == name)
                .map(|other| json!(other.id))
        })
        .collect();
    let mut out = json!({
        "id": j.id,
        "name": j.name,
        "dependencies": dependencies,
        "project_slug": st.projects[w.project].slug.short(),
        "status": j.status.as_str(),
        "type": match j.kind { JobKind::Build => "build", JobKind::Approval => "approval" },
        "started_at": opt_ts(j.started_at),
        "stopped_at": opt_ts(j.stopped_at),
    });
    if let Some(number) = j.job_number {
        out["job_number"] = json!(number);
    }
    if let Some(id) = j.approval_request_id {
        out["approval_request_id"] = json!(id);
    }
    if let Some(user) = j.approved_by {
        out["approved_by"] = json!(st.users[user].id);
    }
    if let Some(user) = j.canceled_by {
        out["canceled_by"] = json!(st.users[user].id);
    }
    out
}

/// A webhook; the signing secret is always masked, as CircleCI does.
pub(crate) fn webhook(hook: &WebhookRec) -> Value {
    json!({
        "id": hook.id,
        "name": hook.name,
        "url": hook.url,
        "verify-tls": hook.verify_tls,
        "signing-secret": mask(&hook.secret),
        "events": hook.events,
        "scope": {"id": hook.scope_id, "type": "project"},
        "created-at": ts(hook.created_at),
        "updated-at": ts(hook.updated_at),
    })
}

/// `****` plus the last four characters (all of it masked when shorter than 8).
pub(crate) fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 8 {
        return "****".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("****{tail}")
}
