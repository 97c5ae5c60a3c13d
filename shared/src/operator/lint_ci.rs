//! `lint-ci`: does a project's `.circleci/config.yml` do what the triggers file assumes?
//!
//! `workflow = "x"` on a target is sugar for the string pipeline parameter
//! `[circleci].workflow_parameter` (default `run-workflow`) set to `"x"`
//! (`actions::Target::resolve`); running *only* workflow `x` depends on every workflow of the
//! config being gated on that parameter with `when:` / `unless:`. Nothing in CircleCI checks
//! that, so this lint evaluates each workflow's condition for each target the way CircleCI
//! would, and reports:
//!
//! - **also-runs**: a workflow other than `x` that runs too (no condition on the parameter);
//!   `may-also-run` when the answer depends on a value only known at run time;
//! - **not-gated-in**: workflow `x` itself does not run for `workflow = "x"`;
//! - **missing-workflow**: no workflow named `x` in the config;
//! - **undeclared-parameter**: a parameter the target sends that `parameters:` does not
//!   declare (CircleCI errors the pipeline: "Unexpected argument(s)");
//! - **type-mismatch**: a value of another type than declared, or outside an `enum`.
//!
//! Conditions follow CircleCI's logic statements: a literal (falsy: `false`, `null`, `0`,
//! `""`), `<< pipeline.parameters.x >>` and other `<< pipeline.* >>` values (a whole-value
//! reference keeps the parameter's type; inside text it is substituted as text), `equal`,
//! `and`, `or`, `not`, `matches: {pattern, value}`; and the expression form
//! (`pipeline.parameters.x == "nightly" and not pipeline.git.branch == "main"`). A trigger's
//! pipeline knows its parameters (sent, else their defaults), its branch or tag (when the
//! target names one), `pipeline.trigger_source` (`api`) and an empty `pipeline.schedule.*`;
//! anything else is unknown, and a condition that depends on it is reported as "may".

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_norway::Value as Yaml;

use crate::config::endpoint::ParameterType;
use crate::config::{ActionKind, ParameterValue, TriggersFile};

/// Why the config could not be linted at all.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("not YAML: {0}")]
    Yaml(String),
    #[error("not a CircleCI config: {0}")]
    Shape(String),
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The pipeline will do something the triggers file does not intend (or error).
    Error,
    /// It might, depending on values known only when the pipeline runs.
    Warning,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `also-runs`, `may-also-run`, `not-gated-in`, `missing-workflow`,
    /// `undeclared-parameter`, `type-mismatch`.
    pub kind: &'static str,
    /// Which trigger of the triggers file (`schedule nightly → gh/acme/api`).
    pub trigger: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{level}[{}]: {}: {}",
            self.kind, self.trigger, self.message
        )
    }
}

/// A value a trigger sends, by type (templates render to strings).
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Known(Scalar),
    /// A string decided at run time (a template, or an endpoint caller's string).
    AnyString,
    AnyInteger,
    AnyBoolean,
}

/// One trigger that starts pipelines of a project.
#[derive(Debug, Clone)]
struct Trigger {
    label: String,
    workflow: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    parameters: BTreeMap<String, Sent>,
}

/// Every pipeline-starting trigger of the file, for `project` (any project when `None`).
fn triggers_of(file: &TriggersFile, project: Option<&str>) -> Vec<Trigger> {
    let wanted = |slug: &str| project.is_none_or(|p| same_project(p, slug));
    let workflow_parameter = &file.circleci.workflow_parameter;
    let mut found = Vec::new();
    let mut push = |label: String,
                    project: &str,
                    workflow: &Option<String>,
                    branch: &Option<String>,
                    tag: &Option<String>,
                    mut parameters: BTreeMap<String, Sent>| {
        if !wanted(project) {
            return;
        }
        let workflow = workflow.as_ref().map(|w| {
            parameters.insert(
                workflow_parameter.clone(),
                Sent::Known(Scalar::Str(w.clone())),
            );
            w.clone()
        });
        found.push(Trigger {
            label,
            workflow,
            branch: branch.clone(),
            tag: tag.clone(),
            parameters,
        });
    };
    for schedule in &file.schedule {
        if schedule.action != ActionKind::Pipeline {
            continue;
        }
        for target in schedule.targets() {
            push(
                format!("schedule {} → {}", schedule.name, target.project),
                &target.project,
                &target.workflow,
                &target.branch,
                &target.tag,
                fixed(&target.parameters),
            );
        }
    }
    for chain in &file.chain {
        for (index, action) in chain.then.iter().enumerate() {
            if action.action != ActionKind::Pipeline {
                continue;
            }
            let templated = |text: &Option<String>| text.clone().filter(|t| !t.contains("{{"));
            push(
                format!("chain {} then[{index}] → {}", chain.name, action.project),
                &action.project,
                &action.workflow.clone().filter(|w| !w.contains("{{")),
                &templated(&action.branch),
                &templated(&action.tag),
                fixed(&action.parameters),
            );
        }
    }
    for endpoint in &file.endpoint {
        if endpoint.action != ActionKind::Pipeline {
            continue;
        }
        let target = &endpoint.target;
        let mut parameters = fixed(&target.parameters);
        for (name, schema) in &endpoint.parameters {
            let sent = match (&schema.allowed, schema.kind) {
                (Some(values), _) if values.len() == 1 => Sent::Known(scalar(&values[0])),
                (_, ParameterType::String) => Sent::AnyString,
                (_, ParameterType::Integer) => Sent::AnyInteger,
                (_, ParameterType::Boolean) => Sent::AnyBoolean,
            };
            parameters.insert(name.clone(), sent);
        }
        push(
            format!("endpoint {} → {}", endpoint.name, target.project),
            &target.project,
            &target.workflow,
            &target.branch,
            &target.tag,
            parameters,
        );
    }
    found
}

fn same_project(a: &str, b: &str) -> bool {
    match (
        a.parse::<crate::config::ProjectSlug>(),
        b.parse::<crate::config::ProjectSlug>(),
    ) {
        (Ok(a), Ok(b)) => a.canonical() == b.canonical(),
        _ => a == b,
    }
}

fn fixed(parameters: &BTreeMap<String, ParameterValue>) -> BTreeMap<String, Sent> {
    parameters
        .iter()
        .map(|(name, value)| {
            let sent = match value {
                ParameterValue::String(text) if text.contains("{{") => Sent::AnyString,
                other => Sent::Known(scalar(other)),
            };
            (name.clone(), sent)
        })
        .collect()
}

fn scalar(value: &ParameterValue) -> Scalar {
    match value {
        ParameterValue::String(text) => Scalar::Str(text.clone()),
        ParameterValue::Integer(number) => Scalar::Num(*number as f64),
        ParameterValue::Boolean(flag) => Scalar::Bool(*flag),
    }
}

/// A YAML scalar as CircleCI compares it.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Scalar {
    fn truthy(&self) -> bool {
        match self {
            Scalar::Null => false,
            Scalar::Bool(flag) => *flag,
            Scalar::Num(number) => *number != 0.0 && !number.is_nan(),
            Scalar::Str(text) => !text.is_empty(),
        }
    }

    fn text(&self) -> String {
        match self {
            Scalar::Null => String::new(),
            Scalar::Bool(flag) => flag.to_string(),
            Scalar::Num(number) if number.fract() == 0.0 => format!("{number:.0}"),
            Scalar::Num(number) => number.to_string(),
            Scalar::Str(text) => text.clone(),
        }
    }
}

/// Three-valued: what a condition is for a trigger, `None` when it depends on an unknown.
type Truth = Option<bool>;

/// A declared pipeline parameter.
#[derive(Debug, Clone)]
struct Declared {
    kind: String,
    default: Option<Scalar>,
    allowed: Vec<Scalar>,
}

/// What a trigger's pipeline knows when CircleCI evaluates `when:`.
struct Context<'a> {
    declared: &'a BTreeMap<String, Declared>,
    trigger: &'a Trigger,
}

impl Context<'_> {
    /// The value of `pipeline.…` (`name` without the `pipeline.` prefix), `None` if unknown.
    fn pipeline_value(&self, name: &str) -> Option<Scalar> {
        if let Some(parameter) = name.strip_prefix("parameters.") {
            return match self.trigger.parameters.get(parameter) {
                Some(Sent::Known(value)) => Some(value.clone()),
                Some(_) => None,
                None => self.declared.get(parameter).and_then(|d| d.default.clone()),
            };
        }
        match name {
            "git.branch" => match (&self.trigger.branch, &self.trigger.tag) {
                (Some(branch), _) => Some(Scalar::Str(branch.clone())),
                (None, Some(_)) => Some(Scalar::Str(String::new())),
                (None, None) => None,
            },
            "git.tag" => match (&self.trigger.tag, &self.trigger.branch) {
                (Some(tag), _) => Some(Scalar::Str(tag.clone())),
                (None, Some(_)) => Some(Scalar::Str(String::new())),
                (None, None) => None,
            },
            "trigger_source" => Some(Scalar::Str("api".to_owned())),
            "schedule.name" | "schedule.id" => Some(Scalar::Str(String::new())),
            _ => None,
        }
    }

    /// A YAML value with `<< pipeline.… >>` substituted.
    fn value(&self, yaml: &Yaml) -> Option<Scalar> {
        match yaml {
            Yaml::Null => Some(Scalar::Null),
            Yaml::Bool(flag) => Some(Scalar::Bool(*flag)),
            Yaml::Number(number) => number.as_f64().map(Scalar::Num),
            Yaml::String(text) => self.interpolate(text),
            Yaml::Tagged(tagged) => self.value(&tagged.value),
            Yaml::Sequence(_) | Yaml::Mapping(_) => None,
        }
    }

    fn interpolate(&self, text: &str) -> Option<Scalar> {
        let trimmed = text.trim();
        if let Some(inner) = whole_reference(trimmed) {
            return self.reference(inner);
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = rest.find("<<") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after.find(">>")?;
            out.push_str(&self.reference(after[..close].trim())?.text());
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        Some(Scalar::Str(out))
    }

    fn reference(&self, inner: &str) -> Option<Scalar> {
        inner
            .strip_prefix("pipeline.")
            .and_then(|name| self.pipeline_value(name))
    }

    /// A logic statement (the value of `when:` / `unless:`).
    fn truth(&self, yaml: &Yaml) -> Truth {
        match yaml {
            Yaml::Mapping(map) if map.len() == 1 => {
                let (key, value) = map.iter().next()?;
                match key.as_str()? {
                    "and" => all(value.as_sequence()?.iter().map(|v| self.truth(v))),
                    "or" => any(value.as_sequence()?.iter().map(|v| self.truth(v))),
                    "not" => self.truth(value).map(|t| !t),
                    "equal" => {
                        let items = value.as_sequence()?;
                        let values: Option<Vec<Scalar>> =
                            items.iter().map(|v| self.value(v)).collect();
                        let values = values?;
                        Some(values.windows(2).all(|pair| equal(&pair[0], &pair[1])))
                    }
                    "matches" => {
                        let pattern = self.value(value.get("pattern")?)?.text();
                        let subject = self.value(value.get("value")?)?.text();
                        let regex = regex::Regex::new(&format!("^(?:{pattern})$")).ok()?;
                        Some(regex.is_match(&subject))
                    }
                    "condition" => self.truth(value),
                    _ => None,
                }
            }
            Yaml::String(text) if looks_like_expression(text) => {
                Expression::parse(text).and_then(|e| e.truth(self))
            }
            other => self.value(other).map(|v| v.truthy()),
        }
    }
}

fn whole_reference(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("<<")?.strip_suffix(">>")?;
    (!inner.contains("<<") && !inner.contains(">>")).then(|| inner.trim())
}

fn equal(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Num(x), Scalar::Num(y)) => x == y,
        _ => a == b,
    }
}

fn all(items: impl Iterator<Item = Truth>) -> Truth {
    let mut unknown = false;
    for item in items {
        match item {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    (!unknown).then_some(true)
}

fn any(items: impl Iterator<Item = Truth>) -> Truth {
    let mut unknown = false;
    for item in items {
        match item {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    (!unknown).then_some(false)
}

fn looks_like_expression(text: &str) -> bool {
    !text.contains("<<")
        && (text.contains("==")
            || text.contains("!=")
            || text.trim_start().starts_with("pipeline."))
}

/// The expression form of a condition:
/// `pipeline.parameters.x == "v" and (not pipeline.git.branch == "main" or true)`.
#[derive(Debug, Clone, PartialEq)]
enum Expression {
    Literal(Scalar),
    Reference(String),
    Not(Box<Expression>),
    And(Box<Expression>, Box<Expression>),
    Or(Box<Expression>, Box<Expression>),
    Equal(Box<Expression>, Box<Expression>, bool),
}

impl Expression {
    fn parse(text: &str) -> Option<Self> {
        let tokens = tokenize(text)?;
        let mut parser = ExpressionParser {
            tokens: &tokens,
            at: 0,
        };
        let expression = parser.or()?;
        (parser.at == tokens.len()).then_some(expression)
    }

    fn value(&self, context: &Context<'_>) -> Option<Scalar> {
        match self {
            Expression::Literal(value) => Some(value.clone()),
            Expression::Reference(name) => context.pipeline_value(name.strip_prefix("pipeline.")?),
            other => other.truth(context).map(Scalar::Bool),
        }
    }

    fn truth(&self, context: &Context<'_>) -> Truth {
        match self {
            Expression::Not(inner) => inner.truth(context).map(|t| !t),
            Expression::And(a, b) => all([a.truth(context), b.truth(context)].into_iter()),
            Expression::Or(a, b) => any([a.truth(context), b.truth(context)].into_iter()),
            Expression::Equal(a, b, same) => {
                let (a, b) = (a.value(context)?, b.value(context)?);
                Some(equal(&a, &b) == *same)
            }
            other => other.value(context).map(|v| v.truthy()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Op(&'static str),
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(Token::Op(if c == '(' { "(" } else { ")" }));
            }
            '=' | '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return None;
                }
                tokens.push(Token::Op(if c == '=' { "==" } else { "!=" }));
            }
            '"' | '\'' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        q if q == c => break,
                        other => text.push(other),
                    }
                }
                tokens.push(Token::Str(text));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if word.is_empty() {
                    return None;
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Some(tokens)
}

struct ExpressionParser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl ExpressionParser<'_> {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w == word)
    }

    fn or(&mut self) -> Option<Expression> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            left = Expression::Or(Box::new(left), Box::new(self.and()?));
        }
        Some(left)
    }

    fn and(&mut self) -> Option<Expression> {
        let mut left = self.not()?;
        while self.peek_word("and") {
            self.at += 1;
            left = Expression::And(Box::new(left), Box::new(self.not()?));
        }
        Some(left)
    }

    fn not(&mut self) -> Option<Expression> {
        if self.peek_word("not") {
            self.at += 1;
            return Some(Expression::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Option<Expression> {
        let left = self.atom()?;
        match self.tokens.get(self.at) {
            Some(Token::Op(op @ ("==" | "!="))) => {
                let same = *op == "==";
                self.at += 1;
                let right = self.atom()?;
                Some(Expression::Equal(Box::new(left), Box::new(right), same))
            }
            _ => Some(left),
        }
    }

    fn atom(&mut self) -> Option<Expression> {
        let token = self.tokens.get(self.at)?.clone();
        self.at += 1;
        match token {
            Token::Op("(") => {
                let inner = self.or()?;
                match self.tokens.get(self.at) {
                    Some(Token::Op(")")) => {
                        self.at += 1;
                        Some(inner)
                    }
                    _ => None,
                }
            }
            Token::Op(_) => None,
            Token::Str(text) => Some(Expression::Literal(Scalar::Str(text))),
            Token::Word(word) => Some(match word.as_str() {
                "true" => Expression::Literal(Scalar::Bool(true)),
                "false" => Expression::Literal(Scalar::Bool(false)),
                "null" => Expression::Literal(Scalar::Null),
                _ if word.starts_with("pipeline.") => Expression::Reference(word),
                _ => Expression::Literal(match word.parse::<f64>() {
                    Ok(number) => Scalar::Num(number),
                    Err(_) => return None,
                }),
            }),
        }
    }
}

/// The parts of a CircleCI config the lint reads.
struct Config {
    declared: BTreeMap<String, Declared>,
    /// Workflow name → (`when`, `unless`).
    workflows: BTreeMap<String, (Option<Yaml>, Option<Yaml>)>,
}

fn read_config(text: &str) -> Result<Config, LintError> {
    let yaml: Yaml =
        serde_norway::from_str(text).map_err(|error| LintError::Yaml(error.to_string()))?;
    let Some(root) = yaml.as_mapping() else {
        return Err(LintError::Shape("the top level is not a mapping".into()));
    };
    let mut declared = BTreeMap::new();
    if let Some(parameters) = root.get("parameters").and_then(Yaml::as_mapping) {
        for (name, spec) in parameters {
            let Some(name) = name.as_str() else { continue };
            let kind = spec
                .get("type")
                .and_then(Yaml::as_str)
                .unwrap_or("string")
                .to_owned();
            let plain = Context {
                declared: &BTreeMap::new(),
                trigger: &Trigger {
                    label: String::new(),
                    workflow: None,
                    branch: None,
                    tag: None,
                    parameters: BTreeMap::new(),
                },
            };
            let default = spec.get("default").and_then(|d| plain.value(d));
            let allowed = spec
                .get("enum")
                .and_then(Yaml::as_sequence)
                .map(|values| values.iter().filter_map(|v| plain.value(v)).collect())
                .unwrap_or_default();
            declared.insert(
                name.to_owned(),
                Declared {
                    kind,
                    default,
                    allowed,
                },
            );
        }
    }
    let Some(workflows) = root.get("workflows").and_then(Yaml::as_mapping) else {
        return Err(LintError::Shape("no `workflows:` mapping".into()));
    };
    let mut found = BTreeMap::new();
    for (name, workflow) in workflows {
        let Some(name) = name.as_str() else { continue };
        // `version: 2` inside `workflows:` (2.0 configs) is not a workflow.
        let Some(workflow) = workflow.as_mapping() else {
            continue;
        };
        found.insert(
            name.to_owned(),
            (
                workflow.get("when").cloned(),
                workflow.get("unless").cloned(),
            ),
        );
    }
    Ok(Config {
        declared,
        workflows: found,
    })
}

/// Lints `config_text` (a `.circleci/config.yml`) against the triggers of `file` that start
/// pipelines of `project` (every project when `None`). Findings in a stable order.
pub fn lint(
    file: &TriggersFile,
    config_text: &str,
    project: Option<&str>,
) -> Result<Vec<Finding>, LintError> {
    let config = read_config(config_text)?;
    let mut findings = Vec::new();
    for trigger in triggers_of(file, project) {
        let context = Context {
            declared: &config.declared,
            trigger: &trigger,
        };
        check_parameters(&config, &trigger, &mut findings);
        let Some(named) = &trigger.workflow else {
            continue;
        };
        let parameter = &file.circleci.workflow_parameter;
        if !config.workflows.contains_key(named) {
            let known: Vec<&str> = config.workflows.keys().map(String::as_str).collect();
            findings.push(Finding {
                severity: Severity::Error,
                kind: "missing-workflow",
                trigger: trigger.label.clone(),
                message: format!(
                    "`workflow = \"{named}\"` names no workflow of the config (workflows: {})",
                    known.join(", ")
                ),
            });
        }
        for (name, (when, unless)) in &config.workflows {
            let runs = runs(&context, when.as_ref(), unless.as_ref());
            let gate = describe_gate(when.as_ref(), unless.as_ref(), parameter);
            match (name == named, runs) {
                (true, Some(false)) => findings.push(Finding {
                    severity: Severity::Error,
                    kind: "not-gated-in",
                    trigger: trigger.label.clone(),
                    message: format!(
                        "workflow `{name}` does not run for `workflow = \"{named}\"`: its condition is false when `{parameter}` is \"{named}\"{gate}"
                    ),
                }),
                (false, Some(true)) => findings.push(Finding {
                    severity: Severity::Error,
                    kind: "also-runs",
                    trigger: trigger.label.clone(),
                    message: format!(
                        "workflow `{name}` also runs for `workflow = \"{named}\"`{gate}; gate it, e.g. `when: {{ equal: [ {name}, << pipeline.parameters.{parameter} >> ] }}`"
                    ),
                }),
                (false, None) => findings.push(Finding {
                    severity: Severity::Warning,
                    kind: "may-also-run",
                    trigger: trigger.label.clone(),
                    message: format!(
                        "workflow `{name}` may also run for `workflow = \"{named}\"`: its condition depends on values known only when the pipeline runs{gate}"
                    ),
                }),
                _ => {}
            }
        }
    }
    findings.sort_by(|a, b| {
        (a.severity, &a.trigger, a.kind, &a.message)
            .cmp(&(b.severity, &b.trigger, b.kind, &b.message))
    });
    findings.dedup();
    Ok(findings)
}

fn runs(context: &Context<'_>, when: Option<&Yaml>, unless: Option<&Yaml>) -> Truth {
    let when = when.map_or(Some(true), |w| context.truth(w));
    let unless = unless.map_or(Some(false), |u| context.truth(u));
    all([when, unless.map(|u| !u)].into_iter())
}

fn describe_gate(when: Option<&Yaml>, unless: Option<&Yaml>, parameter: &str) -> String {
    let mentions = |yaml: Option<&Yaml>| {
        yaml.and_then(|y| serde_norway::to_string(y).ok())
            .is_some_and(|text| text.contains(&format!("parameters.{parameter}")))
    };
    match (when, unless) {
        (None, None) => " (it has no `when:`)".to_owned(),
        _ if !mentions(when) && !mentions(unless) => {
            format!(" (its `when:` does not look at `{parameter}`)")
        }
        _ => String::new(),
    }
}

fn check_parameters(config: &Config, trigger: &Trigger, findings: &mut Vec<Finding>) {
    for (name, sent) in &trigger.parameters {
        let Some(declared) = config.declared.get(name) else {
            findings.push(Finding {
                severity: Severity::Error,
                kind: "undeclared-parameter",
                trigger: trigger.label.clone(),
                message: format!(
                    "sends pipeline parameter `{name}`, which the config's `parameters:` does not declare (CircleCI errors the pipeline)"
                ),
            });
            continue;
        };
        let sent_kind = match sent {
            Sent::Known(Scalar::Str(_)) | Sent::AnyString => "string",
            Sent::Known(Scalar::Num(_)) | Sent::AnyInteger => "integer",
            Sent::Known(Scalar::Bool(_)) | Sent::AnyBoolean => "boolean",
            Sent::Known(Scalar::Null) => "null",
        };
        let fits = match declared.kind.as_str() {
            "string" => sent_kind == "string",
            "boolean" => sent_kind == "boolean",
            "integer" => sent_kind == "integer",
            "enum" => sent_kind == "string",
            _ => true,
        };
        if !fits {
            findings.push(Finding {
                severity: Severity::Error,
                kind: "type-mismatch",
                trigger: trigger.label.clone(),
                message: format!(
                    "sends `{name}` as {sent_kind}, but the config declares it `type: {}`",
                    declared.kind
                ),
            });
            continue;
        }
        if declared.kind == "enum"
            && let Sent::Known(value) = sent
            && !declared.allowed.iter().any(|allowed| equal(allowed, value))
        {
            let allowed: Vec<String> = declared.allowed.iter().map(Scalar::text).collect();
            findings.push(Finding {
                severity: Severity::Error,
                kind: "type-mismatch",
                trigger: trigger.label.clone(),
                message: format!(
                    "sends `{name}` = \"{}\", which is not in the config's `enum: [{}]`",
                    value.text(),
                    allowed.join(", ")
                ),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn context_truth(yaml: &str, parameters: &[(&str, Scalar)], branch: Option<&str>) -> Truth {
        let declared = BTreeMap::new();
        let trigger = Trigger {
            label: "t".into(),
            workflow: None,
            branch: branch.map(str::to_owned),
            tag: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Sent::Known(v.clone())))
                .collect(),
        };
        let context = Context {
            declared: &declared,
            trigger: &trigger,
        };
        let value: Yaml = serde_norway::from_str(yaml).unwrap();
        context.truth(&value)
    }

    fn s(text: &str) -> Scalar {
        Scalar::Str(text.into())
    }

    #[test]
    fn logic_statements_follow_circleci() {
        let p = [("run-workflow", s("nightly"))];
        assert_eq!(
            context_truth(
                "{ equal: [ nightly, << pipeline.parameters.run-workflow >> ] }",
                &p,
                None
            ),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "{ equal: [ build, << pipeline.parameters.run-workflow >> ] }",
                &p,
                None
            ),
            Some(false)
        );
        assert_eq!(
            context_truth("<< pipeline.parameters.run-workflow >>", &p, None),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "{ not: { equal: [ '', << pipeline.parameters.run-workflow >> ] } }",
                &p,
                None
            ),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "{ and: [ true, { equal: [ main, << pipeline.git.branch >> ] } ] }",
                &p,
                None
            ),
            None
        );
        assert_eq!(
            context_truth(
                "{ and: [ false, { equal: [ main, << pipeline.git.branch >> ] } ] }",
                &p,
                None
            ),
            Some(false)
        );
        assert_eq!(
            context_truth(
                "{ or: [ { equal: [ main, << pipeline.git.branch >> ] }, << pipeline.parameters.run-workflow >> ] }",
                &p,
                None
            ),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "{ equal: [ main, << pipeline.git.branch >> ] }",
                &p,
                Some("main")
            ),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "{ matches: { pattern: 'night.*', value: << pipeline.parameters.run-workflow >> } }",
                &p,
                None
            ),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "{ equal: [ api, << pipeline.trigger_source >> ] }",
                &p,
                None
            ),
            Some(true)
        );
        assert_eq!(
            context_truth("\"x-<< pipeline.parameters.run-workflow >>\"", &p, None),
            Some(true)
        );
        assert_eq!(context_truth("''", &p, None), Some(false));
        assert_eq!(context_truth("0", &p, None), Some(false));
        assert_eq!(
            context_truth("pipeline.parameters.run-workflow == \"nightly\"", &p, None),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "pipeline.parameters.run-workflow == 'nightly' and not (pipeline.git.branch != \"main\")",
                &p,
                Some("main")
            ),
            Some(true)
        );
        assert_eq!(
            context_truth(
                "pipeline.parameters.run-workflow != \"nightly\" or pipeline.git.branch == \"x\"",
                &p,
                None
            ),
            None
        );
    }
}
