//! Outbound webhooks: `workflow-completed` and `job-completed` payloads in both of
//! CircleCI's families, HMAC signing, and delivery over real HTTP.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::model::PayloadStyle;
use crate::render::{self, ts};
use crate::state::{PendingDelivery, State};

/// Event type of a finished workflow.
pub const WORKFLOW_COMPLETED: &str = "workflow-completed";
/// Event type of a finished job.
pub const JOB_COMPLETED: &str = "job-completed";

/// `v1=<hex HMAC-SHA256(secret, body)>`, the `circleci-signature` header value.
pub fn signature_header(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl State {
    pub(crate) fn emit_workflow_completed(&mut self, workflow: usize) {
        self.emit(workflow, None);
    }

    pub(crate) fn emit_job_completed(&mut self, workflow: usize, job: usize) {
        // Approval jobs do not produce job-completed events.
        if self.workflows[workflow].jobs[job].kind == crate::model::JobKind::Approval {
            return;
        }
        self.emit(workflow, Some(job));
    }

    fn emit(&mut self, workflow: usize, job: Option<usize>) {
        let event_type = if job.is_some() {
            JOB_COMPLETED
        } else {
            WORKFLOW_COMPLETED
        };
        let project_id = self.projects[self.workflows[workflow].project].spec.id;
        let hooks: Vec<_> = self
            .webhooks
            .iter()
            .filter(|h| h.scope_id == project_id && h.events.iter().any(|e| e == event_type))
            .cloned()
            .collect();
        for hook in hooks {
            let event_id = Uuid::new_v4();
            let body = self.event_body(workflow, job, event_id, hook.id, &hook.name);
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let signature = signature_header(&hook.secret, &bytes);
            self.pending.push_back(PendingDelivery {
                webhook_id: hook.id,
                url: hook.url.clone(),
                event_type,
                event_id,
                body: bytes,
                signature,
                copies: if self.faults.duplicate_deliveries {
                    2
                } else {
                    1
                },
                retries: self.faults.redeliver_failed,
                verify_tls: hook.verify_tls,
            });
        }
    }

    fn event_body(
        &self,
        workflow: usize,
        job: Option<usize>,
        event_id: Uuid,
        hook_id: Uuid,
        hook_name: &str,
    ) -> Value {
        let w = &self.workflows[workflow];
        let p = &self.pipelines[w.pipeline];
        let project = &self.projects[w.project];
        let style = project.spec.effective_payload_style();
        let mut pipeline = json!({
            "id": p.id,
            "number": p.number,
            "created_at": ts(p.created_at),
            "trigger": {"type": "api"},
        });
        match style {
            PayloadStyle::Oauth => pipeline["vcs"] = render::vcs(self, w.pipeline, true),
            PayloadStyle::App => {
                pipeline["trigger_parameters"] = render::trigger_parameters(self, w.pipeline)
            }
        }
        let workflow_url = format!(
            "https://app.circleci.com/pipelines/{}/{}/workflows/{}",
            project.slug.long(),
            p.number,
            w.id
        );
        let mut body = json!({
            "id": event_id,
            "type": if job.is_some() { JOB_COMPLETED } else { WORKFLOW_COMPLETED },
            "happened_at": ts(self.now()),
            "webhook": {"id": hook_id, "name": hook_name},
            "project": {"id": project.spec.id, "name": project.name(), "slug": project.slug.long()},
            "organization": {"id": project.spec.organization_id, "name": project.organization_name()},
            "pipeline": pipeline,
        });
        match job {
            None => {
                body["workflow"] = json!({
                    "id": w.id,
                    "name": w.name,
                    "created_at": ts(w.created_at),
                    "stopped_at": w.stopped_at.map(ts),
                    "url": workflow_url,
                    "status": w.status.as_str(),
                });
            }
            Some(job) => {
                let j = &w.jobs[job];
                let mut job_json = json!({
                    "id": j.id,
                    "name": j.name,
                    "started_at": j.started_at.map(ts),
                    "stopped_at": j.stopped_at.map(ts),
                    "status": j.status.as_str(),
                });
                if let Some(number) = j.job_number {
                    job_json["number"] = json!(number);
                }
                body["job"] = job_json;
                if style == PayloadStyle::Oauth {
                    body["workflow"] = json!({
                        "id": w.id,
                        "name": w.name,
                        "created_at": ts(w.created_at),
                        "stopped_at": w.stopped_at.map(ts),
                        "url": workflow_url,
                    });
                }
            }
        }
        body
    }
}
