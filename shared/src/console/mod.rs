//! What an operator looks at: the cells every view of history shares (the CLI's table and
//! `history show`, the status page) and the origin tree of a set of records.
//!
//! A record's **parent** is the trigger whose pipeline caused it: `upstream.trigger_id` for
//! a chained trigger (for a fan-in, each arrival's trigger; the first one present is the
//! parent, the others are listed as joined). Roots are schedule slots, HTTP and CLI calls.
//! Every record of one tree has the same `origin` (ARCHITECTURE, "Trigger records").

pub mod page;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::actions::ActionOutcome;
use crate::store::{TriggerId, TriggerRecord};

/// The pipeline a record started (`#7`), or the one an approve, rerun or cancel acted on
/// (`on #3`); `-` when there is none.
pub fn pipeline_cell(record: &TriggerRecord) -> String {
    if let Some(pipeline) = &record.pipeline {
        return pipeline
            .number
            .map_or_else(|| pipeline.id.clone(), |n| format!("#{n}"));
    }
    match (&record.detail.outcome, record.detail.acted_on_pipeline) {
        (Some(outcome), _) => format!("on #{}", outcome.pipeline_number()),
        (None, Some(id)) => format!("on {id}"),
        (None, None) => "-".to_owned(),
    }
}

/// The id of the pipeline a record started or acted on.
pub fn pipeline_id(record: &TriggerRecord) -> Option<String> {
    record
        .pipeline
        .as_ref()
        .map(|p| p.id.clone())
        .or_else(|| record.detail.acted_on_pipeline.map(|id| id.to_string()))
}

/// What came of it: each workflow's last known status (`e2e:failed`), `running` while a
/// started pipeline has reported no workflow yet, what an approve / rerun / cancel did, or
/// `-` when nothing was sent.
pub fn outcome_cell(record: &TriggerRecord) -> String {
    if !record.workflows.is_empty() {
        return record
            .workflows
            .iter()
            .map(|w| format!("{}:{}", w.name, w.status))
            .collect::<Vec<_>>()
            .join(" ");
    }
    match &record.detail.outcome {
        Some(ActionOutcome::Approved { workflow_name, .. }) => {
            format!("approved in {workflow_name}")
        }
        Some(ActionOutcome::Rerun { workflow_name, .. }) => format!("reran {workflow_name}"),
        Some(ActionOutcome::Canceled { workflow_name, .. }) => format!("canceled {workflow_name}"),
        Some(ActionOutcome::PipelineCreated { .. }) | None if record.pipeline.is_some() => {
            if record.pipeline_final {
                "finished".to_owned()
            } else {
                "running".to_owned()
            }
        }
        _ => "-".to_owned(),
    }
}

/// Whether any workflow of the record ended `failed` (or `error`, `failing`).
pub fn workflow_failed(record: &TriggerRecord) -> bool {
    record
        .workflows
        .iter()
        .any(|w| matches!(w.status.as_str(), "failed" | "error" | "failing"))
}

/// One record and the triggers its pipelines caused.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub record: TriggerRecord,
    /// Other triggers a fan-in waited for besides its parent.
    pub joined: Vec<TriggerId>,
    pub children: Vec<Node>,
}

/// The parent of `record` among `known` ids, and the other fan-in arrivals.
fn parent_of(
    record: &TriggerRecord,
    known: &HashSet<TriggerId>,
) -> (Option<TriggerId>, Vec<TriggerId>) {
    let mut causes: Vec<TriggerId> = Vec::new();
    if let Some(join) = &record.detail.join {
        causes.extend(join.arrived.iter().filter_map(|a| a.trigger_id));
    }
    if let Some(trigger) = record.upstream.as_ref().and_then(|u| u.trigger_id)
        && !causes.contains(&trigger)
    {
        causes.insert(0, trigger);
    }
    causes.retain(|id| *id != record.id);
    let parent = causes.iter().copied().find(|id| known.contains(id));
    let joined = causes
        .into_iter()
        .filter(|id| Some(*id) != parent)
        .collect();
    (parent, joined)
}

/// The records as trees, oldest root first and children oldest first. A record whose
/// parent is not among `records` is a root.
pub fn build_forest(mut records: Vec<TriggerRecord>) -> Vec<Node> {
    records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let known: HashSet<TriggerId> = records.iter().map(|r| r.id).collect();
    let mut children: HashMap<TriggerId, Vec<(TriggerRecord, Vec<TriggerId>)>> = HashMap::new();
    let mut roots = Vec::new();
    for record in records {
        let (parent, joined) = parent_of(&record, &known);
        match parent {
            Some(parent) => children.entry(parent).or_default().push((record, joined)),
            None => roots.push((record, joined)),
        }
    }
    // Cycles cannot come from the store (a parent is always created first), but a tree
    // built from hand-edited data must still end: each record is placed once.
    let mut placed = HashSet::new();
    roots
        .into_iter()
        .filter_map(|(record, joined)| attach(record, joined, &mut children, &mut placed))
        .collect()
}

fn attach(
    record: TriggerRecord,
    joined: Vec<TriggerId>,
    children: &mut HashMap<TriggerId, Vec<(TriggerRecord, Vec<TriggerId>)>>,
    placed: &mut HashSet<TriggerId>,
) -> Option<Node> {
    if !placed.insert(record.id) {
        return None;
    }
    let own = children.remove(&record.id).unwrap_or_default();
    let children = own
        .into_iter()
        .filter_map(|(child, joined)| attach(child, joined, children, placed))
        .collect();
    Some(Node {
        record,
        joined,
        children,
    })
}

/// The subtree rooted at `id` in `forest`, if present.
pub fn find_subtree(forest: &[Node], id: TriggerId) -> Option<&Node> {
    forest.iter().find_map(|node| {
        if node.record.id == id {
            Some(node)
        } else {
            find_subtree(&node.children, id)
        }
    })
}

/// Every node of the forest, depth first, with its depth.
pub fn walk(forest: &[Node]) -> Vec<(usize, &Node)> {
    fn visit<'a>(nodes: &'a [Node], depth: usize, out: &mut Vec<(usize, &'a Node)>) {
        for node in nodes {
            out.push((depth, node));
            visit(&node.children, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    visit(forest, 0, &mut out);
    out
}

/// The forest as text, one line per record, with box-drawing branches:
/// `schedule:nightly-api  triggered  gh/acme/api  #1  nightly:success  <id>`.
pub fn render_tree(forest: &[Node]) -> String {
    fn line(node: &Node) -> String {
        let r = &node.record;
        let mut text = format!(
            "{}  {}  {}  {}  {}  {}",
            r.source,
            r.status,
            r.target.project,
            pipeline_cell(r),
            outcome_cell(r),
            r.id
        );
        if !node.joined.is_empty() {
            let joined: Vec<String> = node.joined.iter().map(ToString::to_string).collect();
            text.push_str(&format!("  (fan-in, also after {})", joined.join(", ")));
        }
        if let Some(reason) = &r.reason {
            text.push_str(&format!("  — {reason}"));
        }
        text
    }
    fn visit(nodes: &[Node], prefix: &str, out: &mut String) {
        for (i, node) in nodes.iter().enumerate() {
            let last = i + 1 == nodes.len();
            out.push_str(prefix);
            out.push_str(if last { "└─ " } else { "├─ " });
            out.push_str(&line(node));
            out.push('\n');
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            visit(&node.children, &deeper, out);
        }
    }
    let mut out = String::new();
    for root in forest {
        out.push_str(&line(root));
        out.push('\n');
        visit(&root.children, "", &mut out);
    }
    out
}

/// Records grouped by origin, newest origin first (the status page's "recent triggers").
pub fn by_origin(records: Vec<TriggerRecord>) -> Vec<(TriggerId, Vec<TriggerRecord>)> {
    let mut groups: BTreeMap<TriggerId, Vec<TriggerRecord>> = BTreeMap::new();
    for record in records {
        groups.entry(record.origin).or_default().push(record);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups
        .sort_by_key(|(_, records)| std::cmp::Reverse(records.iter().map(|r| r.created_at).min()));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ActionKind;
    use crate::store::{
        JoinArrivalNote, JoinNote, PipelineRef, SourceKind, TriggerSource, TriggerStatus,
        TriggerTarget, Upstream, WorkflowOutcome,
    };
    use chrono::{TimeDelta, TimeZone, Utc};

    fn record(kind: SourceKind, name: &str, minute: i64) -> TriggerRecord {
        let at = Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap() + TimeDelta::minutes(minute);
        let mut record = TriggerRecord::new(
            TriggerSource::new(kind, name),
            TriggerTarget::project("gh/acme/api"),
            ActionKind::Pipeline,
            at,
        );
        record.status = TriggerStatus::Triggered;
        record
    }

    fn caused_by(mut record: TriggerRecord, parent: &TriggerRecord) -> TriggerRecord {
        record.origin = parent.origin;
        record.upstream = Some(Upstream {
            project: parent.target.project.clone(),
            pipeline_id: "p".into(),
            workflow_id: None,
            workflow_name: None,
            revision: None,
            event_id: None,
            trigger_id: Some(parent.id),
        });
        record
    }

    #[test]
    fn a_slot_with_two_targets_a_fan_in_and_an_approval_form_one_tree() {
        let api = record(SourceKind::Schedule, "nightly", 0);
        let mut web = record(SourceKind::Schedule, "nightly", 0);
        web.origin = api.origin;
        let mut e2e = caused_by(record(SourceKind::Chain, "e2e", 5), &web);
        e2e.detail.join = Some(JoinNote {
            key: "j".into(),
            generation: 1,
            arrived: [api.id, web.id]
                .map(|id| JoinArrivalNote {
                    upstream: "after".into(),
                    pipeline_id: None,
                    trigger_id: Some(id),
                })
                .to_vec(),
        });
        e2e.workflows.push(WorkflowOutcome {
            id: "w".into(),
            name: "e2e".into(),
            status: "failed".into(),
            stopped_at: None,
        });
        e2e.pipeline = Some(PipelineRef {
            id: "p-e2e".into(),
            number: Some(3),
            url: None,
        });
        let mut gate = caused_by(record(SourceKind::Chain, "gate", 9), &e2e);
        gate.action = ActionKind::Approve;
        gate.detail.acted_on_pipeline = Some(uuid::Uuid::nil());
        let unrelated = record(SourceKind::Http, "deploy", 1);

        let forest = build_forest(vec![
            gate.clone(),
            unrelated.clone(),
            e2e.clone(),
            web.clone(),
            api.clone(),
        ]);
        let roots: Vec<TriggerId> = forest.iter().map(|n| n.record.id).collect();
        assert_eq!(roots.len(), 3, "{forest:#?}");
        assert!(
            roots.contains(&api.id) && roots.contains(&web.id) && roots.contains(&unrelated.id)
        );
        let e2e_node = find_subtree(&forest, e2e.id).unwrap();
        assert_eq!(e2e_node.children[0].record.id, gate.id);
        // The fan-in hangs under its first arrival present, naming the other.
        let api_node = find_subtree(&forest, api.id).unwrap();
        assert_eq!(api_node.children[0].record.id, e2e.id);
        assert_eq!(e2e_node.joined, [web.id]);
        assert_eq!(walk(&forest).len(), 5);

        assert_eq!(outcome_cell(&e2e), "e2e:failed");
        assert!(workflow_failed(&e2e));
        assert_eq!(pipeline_cell(&e2e), "#3");
        assert!(
            pipeline_cell(&gate).starts_with("on "),
            "{}",
            pipeline_cell(&gate)
        );
        let text = render_tree(
            find_subtree(&forest, api.id)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
                .as_slice(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("└─ chain:e2e  triggered"), "{text}");
        assert!(lines[2].starts_with("   └─ chain:gate"), "{text}");
        assert!(lines[1].contains("fan-in, also after"), "{text}");

        let groups = by_origin(vec![api, web, e2e, gate, unrelated.clone()]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, unrelated.id, "newest origin first");
        assert_eq!(groups[1].1.len(), 4);
    }
}
