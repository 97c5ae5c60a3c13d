//! [`Target`]: a triggers-file target resolved into what the CircleCI client sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ActionError;
use crate::circleci::{
    GitRef, PipelineRequest, RunOptions, check_parameters, parameters_from_json,
};
use crate::config::rules::check_git_ref;
use crate::config::{CircleCiSettings, GitRefSpec, ParameterValue, ProjectSlug, TargetSpec, Vcs};
use crate::store::TriggerTarget;

/// Where an action is aimed, with every default applied: the project, its ref, the
/// parameters (the `workflow` sugar already folded in), the endpoint options and the token.
///
/// Serialised with the slug in its canonical spelling and parameters as plain JSON values,
/// so a stored target reads like the triggers file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "TargetRepr", try_from = "TargetRepr")]
pub struct Target {
    pub project: ProjectSlug,
    /// Branch or tag; `None` means the project's default branch.
    pub git_ref: Option<GitRef>,
    /// Pipeline parameters as sent, including the workflow parameter when `workflow` is set.
    pub parameters: BTreeMap<String, ParameterValue>,
    /// `Some` → `pipeline/run`; `None` → the legacy trigger endpoint.
    pub run: Option<RunOptions>,
    /// The token's name in the tokens secret (never the token).
    pub token: String,
    /// The `workflow = "x"` sugar, kept for history and as the default workflow name an
    /// approve/rerun/cancel on this target looks for.
    pub workflow: Option<String>,
}

impl Target {
    /// Applies the `[circleci]` defaults to a target of the triggers file:
    /// - `workflow = "x"` sets the string parameter `settings.workflow_parameter` to `"x"`;
    ///   an explicit parameter of that name as well is a conflict (which one would win is
    ///   not obvious to a reader of the file), so it is refused;
    /// - no `token` → `settings.token`;
    /// - `definition_id`, `config` or `checkout`, or a `circleci/...` project (the legacy
    ///   endpoint refuses those) → `pipeline/run`.
    ///
    /// Everything CircleCI would reject for its shape is refused here, before any call.
    pub fn resolve(spec: &TargetSpec, settings: &CircleCiSettings) -> Result<Target, ActionError> {
        let project: ProjectSlug = spec
            .project
            .parse()
            .map_err(|error| ActionError::invalid_target(format!("project: {error}")))?;
        let git_ref = match (&spec.branch, &spec.tag) {
            (Some(_), Some(_)) => {
                return Err(ActionError::invalid_target(
                    "set either `branch` or `tag`, not both",
                ));
            }
            (Some(branch), None) => Some(GitRef::Branch(branch.clone())),
            (None, Some(tag)) => Some(GitRef::Tag(tag.clone())),
            (None, None) => None,
        };
        if let Some(git_ref) = &git_ref {
            check_ref("", git_ref)?;
        }

        let mut parameters = spec.parameters.clone();
        if let Some(workflow) = &spec.workflow {
            if workflow.is_empty() {
                return Err(ActionError::invalid_target("`workflow` cannot be empty"));
            }
            let name = &settings.workflow_parameter;
            if parameters.contains_key(name) {
                return Err(ActionError::invalid_target(format!(
                    "`workflow = \"{}\"` sets the pipeline parameter `{name}`, which `parameters` sets as well; keep one of them",
                    workflow.escape_debug()
                )));
            }
            parameters.insert(name.clone(), ParameterValue::String(workflow.clone()));
        }
        check_parameters(&parameters)
            .map_err(|error| ActionError::invalid_target(error.to_string()))?;

        let definition_id = spec
            .definition_id
            .as_deref()
            .map(|text| {
                Uuid::parse_str(text).map_err(|_| {
                    ActionError::invalid_target(format!(
                        "definition_id `{}` is not a UUID",
                        text.escape_debug()
                    ))
                })
            })
            .transpose()?;
        let config = spec
            .config
            .as_ref()
            .map(|spec| git_ref_of("config", spec))
            .transpose()?;
        let checkout = spec
            .checkout
            .as_ref()
            .map(|spec| git_ref_of("checkout", spec))
            .transpose()?;
        let wants_run = definition_id.is_some()
            || config.is_some()
            || checkout.is_some()
            || project.vcs == Vcs::CircleCi;
        let run = wants_run.then_some(RunOptions {
            definition_id,
            config,
            checkout,
        });

        let token = spec.token.clone().unwrap_or_else(|| settings.token.clone());
        if token.is_empty() {
            return Err(ActionError::invalid_target(
                "the token name cannot be empty",
            ));
        }
        let target = Target {
            project,
            git_ref,
            parameters,
            run,
            token,
            workflow: spec.workflow.clone(),
        };
        target
            .pipeline_request()
            .validate()
            .map_err(|error| ActionError::invalid_target(error.to_string()))?;
        Ok(target)
    }

    /// The create request for this target.
    pub fn pipeline_request(&self) -> PipelineRequest {
        PipelineRequest {
            project: self.project.clone(),
            git_ref: self.git_ref.clone(),
            parameters: self.parameters.clone(),
            run: self.run.clone(),
        }
    }

    /// The target as trigger history shows it.
    pub fn record_target(&self) -> TriggerTarget {
        TriggerTarget {
            project: self.project.canonical(),
            branch: self.branch().map(str::to_owned),
            tag: self.tag().map(str::to_owned),
            workflow: self.workflow.clone(),
            job: None,
            definition_id: self
                .run
                .as_ref()
                .and_then(|run| run.definition_id)
                .map(|id| id.to_string()),
        }
    }

    pub fn branch(&self) -> Option<&str> {
        match &self.git_ref {
            Some(GitRef::Branch(branch)) => Some(branch),
            _ => None,
        }
    }

    pub fn tag(&self) -> Option<&str> {
        match &self.git_ref {
            Some(GitRef::Tag(tag)) => Some(tag),
            _ => None,
        }
    }

    /// The ref a pipeline created for this target builds: `pipeline/run`'s checkout ref
    /// when set, else the target's own. `None`: the project's default branch.
    pub fn checkout_ref(&self) -> Option<&GitRef> {
        self.run
            .as_ref()
            .and_then(|run| run.checkout.as_ref())
            .or(self.git_ref.as_ref())
    }
}

fn git_ref_of(field: &str, spec: &GitRefSpec) -> Result<GitRef, ActionError> {
    let git_ref = match (&spec.branch, &spec.tag) {
        (Some(branch), None) => GitRef::Branch(branch.clone()),
        (None, Some(tag)) => GitRef::Tag(tag.clone()),
        _ => {
            return Err(ActionError::invalid_target(format!(
                "`{field}`: set exactly one of `branch` or `tag`"
            )));
        }
    };
    check_ref(field, &git_ref)?;
    Ok(git_ref)
}

fn check_ref(field: &str, git_ref: &GitRef) -> Result<(), ActionError> {
    let (kind, name) = match git_ref {
        GitRef::Branch(name) => ("branch", name),
        GitRef::Tag(name) => ("tag", name),
    };
    check_git_ref(name).map_err(|reason| {
        let prefix = if field.is_empty() {
            String::new()
        } else {
            format!("`{field}`: ")
        };
        ActionError::invalid_target(format!(
            "{prefix}`{}` is not a valid {kind} name: {reason}",
            name.escape_debug()
        ))
    })
}

// ----- serde: the stored shape ---------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetRepr {
    project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<RunRepr>,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workflow: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    definition_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<RefRepr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkout: Option<RefRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RefRepr {
    Branch(String),
    Tag(String),
}

impl From<&GitRef> for RefRepr {
    fn from(git_ref: &GitRef) -> Self {
        match git_ref {
            GitRef::Branch(name) => RefRepr::Branch(name.clone()),
            GitRef::Tag(name) => RefRepr::Tag(name.clone()),
        }
    }
}

impl From<RefRepr> for GitRef {
    fn from(repr: RefRepr) -> Self {
        match repr {
            RefRepr::Branch(name) => GitRef::Branch(name),
            RefRepr::Tag(name) => GitRef::Tag(name),
        }
    }
}

impl From<Target> for TargetRepr {
    fn from(target: Target) -> Self {
        let (branch, tag) = match &target.git_ref {
            Some(GitRef::Branch(name)) => (Some(name.clone()), None),
            Some(GitRef::Tag(name)) => (None, Some(name.clone())),
            None => (None, None),
        };
        let parameters = target
            .parameters
            .iter()
            .map(|(name, value)| {
                let json = match value {
                    ParameterValue::Boolean(flag) => Value::Bool(*flag),
                    ParameterValue::Integer(number) => Value::from(*number),
                    ParameterValue::String(text) => Value::String(text.clone()),
                };
                (name.clone(), json)
            })
            .collect();
        TargetRepr {
            project: target.project.canonical(),
            branch,
            tag,
            parameters,
            run: target.run.as_ref().map(|run| RunRepr {
                definition_id: run.definition_id,
                config: run.config.as_ref().map(RefRepr::from),
                checkout: run.checkout.as_ref().map(RefRepr::from),
            }),
            token: target.token,
            workflow: target.workflow,
        }
    }
}

impl TryFrom<TargetRepr> for Target {
    type Error = String;

    fn try_from(repr: TargetRepr) -> Result<Self, Self::Error> {
        let project = repr
            .project
            .parse::<ProjectSlug>()
            .map_err(|error| error.to_string())?;
        let git_ref = match (repr.branch, repr.tag) {
            (Some(_), Some(_)) => return Err("a target has a branch or a tag, not both".into()),
            (Some(branch), None) => Some(GitRef::Branch(branch)),
            (None, Some(tag)) => Some(GitRef::Tag(tag)),
            (None, None) => None,
        };
        let parameters =
            parameters_from_json(&repr.parameters).map_err(|error| error.to_string())?;
        Ok(Target {
            project,
            git_ref,
            parameters,
            run: repr.run.map(|run| RunOptions {
                definition_id: run.definition_id,
                config: run.config.map(GitRef::from),
                checkout: run.checkout.map(GitRef::from),
            }),
            token: repr.token,
            workflow: repr.workflow,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(project: &str) -> TargetSpec {
        TargetSpec {
            project: project.into(),
            branch: Some("main".into()),
            ..TargetSpec::default()
        }
    }

    fn settings() -> CircleCiSettings {
        CircleCiSettings {
            token: "ci-bot".into(),
            workflow_parameter: "run-workflow".into(),
            ..CircleCiSettings::default()
        }
    }

    #[test]
    fn workflow_sugar_sets_the_configured_string_parameter_and_the_default_token() {
        let mut spec = spec("github/acme/api");
        spec.workflow = Some("nightly".into());
        spec.parameters
            .insert("shards".into(), ParameterValue::Integer(4));
        let target = Target::resolve(&spec, &settings()).unwrap();
        assert_eq!(target.project.canonical(), "gh/acme/api");
        assert_eq!(target.token, "ci-bot");
        assert_eq!(
            target.parameters.get("run-workflow"),
            Some(&ParameterValue::String("nightly".into()))
        );
        assert_eq!(
            target.parameters.get("shards"),
            Some(&ParameterValue::Integer(4))
        );
        assert_eq!(target.run, None, "a gh/ project uses the legacy endpoint");
        let request = target.pipeline_request();
        assert_eq!(
            request.body(),
            serde_json::json!({"branch": "main", "parameters": {"run-workflow": "nightly", "shards": 4}})
        );

        let custom = CircleCiSettings {
            workflow_parameter: "only".into(),
            ..settings()
        };
        let target = Target::resolve(&spec, &custom).unwrap();
        assert!(target.parameters.contains_key("only"));
        assert!(!target.parameters.contains_key("run-workflow"));
    }

    #[test]
    fn workflow_sugar_and_an_explicit_parameter_of_the_same_name_conflict() {
        let mut spec = spec("gh/acme/api");
        spec.workflow = Some("nightly".into());
        spec.parameters.insert(
            "run-workflow".into(),
            ParameterValue::String("nightly".into()),
        );
        let error = Target::resolve(&spec, &settings()).unwrap_err();
        assert!(
            matches!(error, ActionError::InvalidTarget { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("run-workflow"), "{error}");
        // A parameter of another name is fine.
        spec.parameters.clear();
        spec.parameters
            .insert("other".into(), ParameterValue::Boolean(true));
        assert!(Target::resolve(&spec, &settings()).is_ok());
    }

    #[test]
    fn a_named_token_wins_over_the_default() {
        let mut spec = spec("gh/acme/api");
        spec.token = Some("deployer".into());
        assert_eq!(
            Target::resolve(&spec, &settings()).unwrap().token,
            "deployer"
        );
    }

    #[test]
    fn run_options_come_from_definition_and_refs_and_app_projects_always_use_run() {
        let definition = Uuid::from_u128(42);
        let mut with_run = spec("gh/acme/api");
        with_run.definition_id = Some(definition.to_string());
        with_run.checkout = Some(GitRefSpec {
            branch: None,
            tag: Some("v1.0.0".into()),
        });
        let target = Target::resolve(&with_run, &settings()).unwrap();
        let run = target.run.clone().unwrap();
        assert_eq!(run.definition_id, Some(definition));
        assert_eq!(run.checkout, Some(GitRef::Tag("v1.0.0".into())));
        assert_eq!(target.checkout_ref(), Some(&GitRef::Tag("v1.0.0".into())));
        assert_eq!(
            target.record_target().definition_id.as_deref(),
            Some(definition.to_string().as_str())
        );

        let app = spec("circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat");
        let target = Target::resolve(&app, &settings()).unwrap();
        assert_eq!(target.run, Some(RunOptions::default()));
    }

    #[test]
    fn malformed_targets_are_refused_before_any_call() {
        type Change = Box<dyn Fn(&mut TargetSpec)>;
        let cases: Vec<(&str, Change)> = vec![
            ("slug", Box::new(|s| s.project = "acme/api".into())),
            ("both refs", Box::new(|s| s.tag = Some("v1".into()))),
            ("bad branch", Box::new(|s| s.branch = Some("a..b".into()))),
            (
                "empty workflow",
                Box::new(|s| s.workflow = Some(String::new())),
            ),
            (
                "definition",
                Box::new(|s| s.definition_id = Some("not-a-uuid".into())),
            ),
            (
                "config ref",
                Box::new(|s| {
                    s.config = Some(GitRefSpec {
                        branch: Some("main".into()),
                        tag: Some("v1".into()),
                    })
                }),
            ),
            (
                "parameter name",
                Box::new(|s| {
                    s.parameters
                        .insert("1bad".into(), ParameterValue::Boolean(true));
                }),
            ),
            (
                "parameter value",
                Box::new(|s| {
                    s.parameters
                        .insert("long".into(), ParameterValue::String("x".repeat(513)));
                }),
            ),
            ("token", Box::new(|s| s.token = Some(String::new()))),
        ];
        for (what, change) in cases {
            let mut spec = spec("gh/acme/api");
            change(&mut spec);
            let error = Target::resolve(&spec, &settings())
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(
                matches!(error, ActionError::InvalidTarget { .. }),
                "{what}: {error}"
            );
            assert!(!error.is_retryable(), "{what}");
        }
    }

    #[test]
    fn a_target_round_trips_through_its_stored_shape() {
        let mut spec = spec("github/acme/api");
        spec.workflow = Some("nightly".into());
        spec.parameters
            .insert("dry_run".into(), ParameterValue::Boolean(false));
        spec.parameters
            .insert("shards".into(), ParameterValue::Integer(-3));
        spec.definition_id = Some(Uuid::from_u128(5).to_string());
        spec.config = Some(GitRefSpec {
            branch: Some("ci-config".into()),
            tag: None,
        });
        let target = Target::resolve(&spec, &settings()).unwrap();
        let json = serde_json::to_value(&target).unwrap();
        assert_eq!(json["project"], "gh/acme/api");
        assert_eq!(json["branch"], "main");
        assert_eq!(json["parameters"]["shards"], -3);
        assert_eq!(
            json["run"]["config"],
            serde_json::json!({"branch": "ci-config"})
        );
        let back: Target = serde_json::from_value(json).unwrap();
        assert_eq!(back, target);

        let broken = serde_json::json!({"project": "nope", "token": "default"});
        assert!(serde_json::from_value::<Target>(broken).is_err());
    }
}
