//! A tiny `{{ variable }}` template language for chain actions.
//!
//! Templates are parsed when the triggers file is checked (unknown variables and unbalanced
//! braces are configuration errors) and rendered against the normalised webhook event.
//! There is deliberately nothing else: no expressions, filters, loops or code — a template
//! is literal text with named holes, so what a rule sends is obvious from reading it.

use std::borrow::Cow;
use std::fmt;

/// A value a template can refer to, taken from the normalised upstream event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variable {
    /// The commit the upstream pipeline built.
    Revision,
    /// The upstream pipeline's branch (absent for tag pipelines).
    Branch,
    /// The upstream pipeline's tag (absent for branch pipelines).
    Tag,
    WorkflowId,
    WorkflowName,
    /// Only on `job-completed` events.
    JobName,
    PipelineId,
    PipelineNumber,
    /// The upstream project in CircleCI's short spelling (`gh/acme/api`).
    ProjectSlug,
    /// The completed workflow's status (`workflow-completed`) or job's (`job-completed`).
    Status,
}

impl Variable {
    pub const ALL: [Variable; 10] = [
        Variable::Revision,
        Variable::Branch,
        Variable::Tag,
        Variable::WorkflowId,
        Variable::WorkflowName,
        Variable::JobName,
        Variable::PipelineId,
        Variable::PipelineNumber,
        Variable::ProjectSlug,
        Variable::Status,
    ];

    /// The name written between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Variable::Revision => "revision",
            Variable::Branch => "branch",
            Variable::Tag => "tag",
            Variable::WorkflowId => "workflow.id",
            Variable::WorkflowName => "workflow.name",
            Variable::JobName => "job.name",
            Variable::PipelineId => "pipeline.id",
            Variable::PipelineNumber => "pipeline.number",
            Variable::ProjectSlug => "project.slug",
            Variable::Status => "status",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|variable| variable.name() == name)
    }

    fn known_names() -> String {
        Self::ALL
            .iter()
            .map(|variable| variable.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where rendered values come from (the webhook event implements it in `shared`).
pub trait TemplateContext {
    /// The variable's value, or `None` when the event does not carry it.
    fn lookup(&self, variable: Variable) -> Option<Cow<'_, str>>;
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Variable(Variable),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Why a template does not parse. Positions are 0-based character offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` at character {at} is never closed with `}}}}`")]
    Unclosed { at: usize },
    #[error("empty `{{{{ }}}}` at character {at}: put a variable name inside")]
    Empty { at: usize },
    #[error("unknown template variable `{name}` (known: {known})", known = Variable::known_names())]
    UnknownVariable { name: String },
    #[error(
        "`{{{{ {text} }}}}` at character {at}: only a variable name may stand between the braces \
         (no expressions, filters or code)"
    )]
    NotAVariable { text: String, at: usize },
}

/// Why a parsed template could not be rendered for an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the event has no `{0}` for the template")]
    Missing(Variable),
}

const OPEN: &str = "{{";
const CLOSE: &str = "}}";
/// Longest text kept from a malformed hole in an error message.
const MAX_ECHO: usize = 40;

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut consumed = 0; // bytes of `source` before `rest`
        // A `}}` outside a hole is plain text, so JSON-ish values such as `{"a":{"b":1}}`
        // need no escaping; only `{{` opens a hole.
        while let Some(open) = rest.find(OPEN) {
            push_text(&mut pieces, &rest[..open]);
            let at = char_offset(source, consumed + open);
            let inside_start = open + OPEN.len();
            let Some(length) = rest[inside_start..].find(CLOSE) else {
                return Err(TemplateError::Unclosed { at });
            };
            let inside = rest[inside_start..inside_start + length].trim();
            pieces.push(Piece::Variable(variable(inside, at)?));
            let next = inside_start + length + CLOSE.len();
            consumed += next;
            rest = &rest[next..];
        }
        push_text(&mut pieces, rest);
        Ok(Self { pieces })
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The variables used, in order of appearance (repeats included).
    pub fn variables(&self) -> impl Iterator<Item = Variable> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Variable(variable) => Some(*variable),
            Piece::Text(_) => None,
        })
    }

    /// True when the template has no variables, i.e. it renders to a fixed text.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// The fixed text of a template without variables.
    pub fn literal(&self) -> Option<String> {
        self.is_literal().then(|| {
            self.pieces
                .iter()
                .filter_map(|piece| match piece {
                    Piece::Text(text) => Some(text.as_str()),
                    Piece::Variable(_) => None,
                })
                .collect()
        })
    }

    pub fn render(&self, context: &dyn TemplateContext) -> Result<String, RenderError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Variable(variable) => {
                    let value = context
                        .lookup(*variable)
                        .ok_or(RenderError::Missing(*variable))?;
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

fn push_text(pieces: &mut Vec<Piece>, text: &str) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_owned()));
    }
}

fn variable(inside: &str, at: usize) -> Result<Variable, TemplateError> {
    if inside.is_empty() {
        return Err(TemplateError::Empty { at });
    }
    let name_like = inside
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if !name_like {
        return Err(TemplateError::NotAVariable {
            text: inside.chars().take(MAX_ECHO).collect(),
            at,
        });
    }
    Variable::from_name(inside).ok_or_else(|| TemplateError::UnknownVariable {
        name: inside.chars().take(MAX_ECHO).collect(),
    })
}

fn char_offset(source: &str, byte_offset: usize) -> usize {
    source
        .get(..byte_offset)
        .map_or(byte_offset, |prefix| prefix.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Values(BTreeMap<Variable, &'static str>);

    impl TemplateContext for Values {
        fn lookup(&self, variable: Variable) -> Option<Cow<'_, str>> {
            self.0.get(&variable).map(|value| Cow::Borrowed(*value))
        }
    }

    fn values() -> Values {
        Values(BTreeMap::from([
            (Variable::Revision, "1dc6aa69"),
            (Variable::Branch, "main"),
            (Variable::PipelineNumber, "130"),
            (Variable::WorkflowName, "build"),
        ]))
    }

    #[test]
    fn renders_variables_between_literal_text() {
        let template =
            Template::parse("sha={{ revision }}/{{branch}} #{{  pipeline.number  }}").unwrap();
        assert_eq!(
            template.variables().collect::<Vec<_>>(),
            [
                Variable::Revision,
                Variable::Branch,
                Variable::PipelineNumber
            ]
        );
        assert_eq!(
            template.render(&values()).unwrap(),
            "sha=1dc6aa69/main #130"
        );
        assert!(!template.is_literal());
    }

    #[test]
    fn text_without_holes_is_literal_and_single_braces_are_text() {
        let template = Template::parse("a {b} c}").unwrap();
        assert!(template.is_literal());
        assert_eq!(template.literal().as_deref(), Some("a {b} c}"));
        assert_eq!(template.render(&values()).unwrap(), "a {b} c}");
        assert_eq!(Template::parse("").unwrap().literal().as_deref(), Some(""));
        // A closing pair outside a hole is text: JSON values need no escaping.
        let json = Template::parse(r#"{"sha":{"v":"{{ revision }}"}}"#).unwrap();
        assert_eq!(
            json.render(&values()).unwrap(),
            r#"{"sha":{"v":"1dc6aa69"}}"#
        );
    }

    #[test]
    fn every_variable_name_round_trips() {
        for variable in Variable::ALL {
            let template = Template::parse(&format!("{{{{ {} }}}}", variable.name())).unwrap();
            assert_eq!(template.variables().collect::<Vec<_>>(), [variable]);
        }
    }

    #[test]
    fn a_variable_the_event_lacks_is_a_render_error() {
        let template = Template::parse("v{{ tag }}").unwrap();
        assert_eq!(
            template.render(&values()),
            Err(RenderError::Missing(Variable::Tag))
        );
    }

    #[test]
    fn parse_errors_name_the_problem_and_position() {
        assert_eq!(
            Template::parse("x {{ branch"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            Template::parse("é {{ branch"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            Template::parse("{{   }}"),
            Err(TemplateError::Empty { at: 0 })
        );
        assert!(matches!(
            Template::parse("{{ revison }}"),
            Err(TemplateError::UnknownVariable { name }) if name == "revison"
        ));
        for code in [
            "{{ branch | upper }}",
            "{{ env.HOME }}x{{ branch + 1 }}",
            "{{ {{ branch }} }}",
            "{{{ branch }}}",
            "{{ for x in y }}",
        ] {
            let error = Template::parse(code).unwrap_err();
            assert!(
                matches!(
                    error,
                    TemplateError::NotAVariable { .. } | TemplateError::UnknownVariable { .. }
                ),
                "{code}: {error:?}"
            );
        }
    }

    #[test]
    fn error_messages_list_known_variables_and_cap_echoed_text() {
        let message = Template::parse("{{ nope }}").unwrap_err().to_string();
        assert!(message.contains("`nope`"), "{message}");
        assert!(message.contains("revision, branch, tag"), "{message}");
        let long = format!("{{{{ {} }}}}", "x".repeat(10_000));
        let message = Template::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 400, "{}", message.len());
    }
}
