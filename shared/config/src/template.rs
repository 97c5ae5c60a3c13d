//! A tiny `{{ variable }}` template language for chain actions and schedule parameters.
//!
//! Templates are parsed when the triggers file is checked (unknown variables and unbalanced
//! braces are configuration errors) and rendered against the normalised webhook event
//! (chains) or the slot being fired (schedules). Each variable belongs to one [`Scope`]; a
//! template parsed for a scope refuses the other scope's variables ([`Template::parse_in`]).
//! There is deliberately nothing else: no expressions, filters, loops or code — a template
//! is literal text with named holes, so what a rule sends is obvious from reading it.
//!
//! **Values are data, not code.** Every variable has one declared [`ValueClass`]; a value
//! outside it (a branch named `$(id)`, a job name with a newline, a look-alike Unicode
//! letter, 10 KB of anything) is a [`RenderError::OutOfClass`] and the action is refused:
//! whatever the downstream `config.yml` does with a parameter, it only ever sees text of
//! the declared shape. The value itself is never echoed in the error.

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
    /// Schedules: the slot's instant in UTC, [`SLOT_UTC_FORMAT`] (`2026-03-29T01:00:00Z`).
    SlotUtc,
    /// Schedules: the slot's wall time in the schedule's zone with its offset,
    /// [`SLOT_LOCAL_FORMAT`] (`2026-03-29T03:00:00+02:00`).
    SlotLocal,
    /// Schedules: the slot's calendar date in the schedule's zone, [`SLOT_DATE_FORMAT`]
    /// (`2026-03-29`).
    SlotDate,
}

/// The declared format of `{{ slot.utc }}` (chrono `strftime`): RFC 3339, seconds, `Z`.
pub const SLOT_UTC_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
/// The declared format of `{{ slot.local }}`: RFC 3339 in the zone, with its UTC offset.
pub const SLOT_LOCAL_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%:z";
/// The declared format of `{{ slot.date }}`: the zone-local calendar date.
pub const SLOT_DATE_FORMAT: &str = "%Y-%m-%d";

/// Where a template is rendered, which decides the variables it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A chain action: values of the upstream webhook event.
    Event,
    /// A schedule target's parameters: values of the slot being fired.
    Slot,
}

impl Scope {
    fn describe(self) -> &'static str {
        match self {
            Scope::Event => "chain actions (webhook event values)",
            Scope::Slot => "schedule parameters (slot values)",
        }
    }
}

impl Variable {
    pub const ALL: [Variable; 13] = [
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
        Variable::SlotUtc,
        Variable::SlotLocal,
        Variable::SlotDate,
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
            Variable::SlotUtc => "slot.utc",
            Variable::SlotLocal => "slot.local",
            Variable::SlotDate => "slot.date",
        }
    }

    /// Where this variable has a value.
    pub fn scope(self) -> Scope {
        match self {
            Variable::SlotUtc | Variable::SlotLocal | Variable::SlotDate => Scope::Slot,
            _ => Scope::Event,
        }
    }

    /// The one class of values this variable may render.
    pub fn class(self) -> ValueClass {
        match self {
            Variable::Revision => ValueClass::Revision,
            Variable::Branch | Variable::Tag => ValueClass::GitRef,
            Variable::WorkflowId | Variable::PipelineId => ValueClass::Uuid,
            Variable::PipelineNumber => ValueClass::Number,
            Variable::WorkflowName
            | Variable::JobName
            | Variable::ProjectSlug
            | Variable::Status => ValueClass::Name,
            Variable::SlotUtc | Variable::SlotLocal => ValueClass::Timestamp,
            Variable::SlotDate => ValueClass::Date,
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

    fn known_in(scope: Scope) -> String {
        Self::ALL
            .iter()
            .filter(|variable| variable.scope() == scope)
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

/// The shape a template value must have. Each [`Variable`] declares one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueClass {
    /// A full commit SHA: exactly 40 hexadecimal digits.
    Revision,
    /// A decimal number: 1 to 20 ASCII digits.
    Number,
    /// A UUID: 8-4-4-4-12 hexadecimal digits.
    Uuid,
    /// A branch or tag: git's ref rules, and only ASCII letters, digits and `. _ / + -`
    /// ([`crate::rules::check_git_ref`]).
    GitRef,
    /// A name (workflow, job, project slug, status): 1 to [`MAX_NAME_LEN`] ASCII letters,
    /// digits and `. _ / -`, not starting with `-`.
    Name,
    /// An RFC 3339 instant with seconds and `Z` or a `±HH:MM` offset (the slot formats).
    Timestamp,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
}

/// Longest value of the [`ValueClass::Name`] class.
pub const MAX_NAME_LEN: usize = 255;

impl ValueClass {
    /// A short description for messages and documentation.
    pub fn describe(self) -> &'static str {
        match self {
            ValueClass::Revision => "a commit SHA (40 hex digits)",
            ValueClass::Number => "a number (digits)",
            ValueClass::Uuid => "a UUID",
            ValueClass::GitRef => "a branch or tag name (ASCII letters, digits and `. _ / + -`)",
            ValueClass::Name => "a name (ASCII letters, digits and `. _ / -`)",
            ValueClass::Timestamp => "an RFC 3339 time (YYYY-MM-DDTHH:MM:SS and Z or ±HH:MM)",
            ValueClass::Date => "a date (YYYY-MM-DD)",
        }
    }

    /// Why `value` is not of this class, if it is not. The reason never quotes the value.
    pub fn check(self, value: &str) -> Result<(), &'static str> {
        match self {
            ValueClass::Revision => {
                if value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(())
                } else {
                    Err("must be exactly 40 hexadecimal digits")
                }
            }
            ValueClass::Number => {
                if (1..=20).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(())
                } else {
                    Err("must be 1 to 20 digits")
                }
            }
            ValueClass::Uuid => {
                if crate::rules::looks_like_uuid(value) {
                    Ok(())
                } else {
                    Err("must be a UUID (8-4-4-4-12 hex digits)")
                }
            }
            ValueClass::GitRef => crate::rules::check_git_ref(value),
            ValueClass::Name => check_name(value),
            ValueClass::Timestamp => check_timestamp(value),
            ValueClass::Date => check_date(value),
        }
    }
}

/// `digits` positions hold ASCII digits and every other position the given byte.
fn shaped(value: &[u8], shape: &[u8]) -> bool {
    value.len() == shape.len()
        && value.iter().zip(shape).all(|(v, s)| match s {
            b'9' => v.is_ascii_digit(),
            other => v == other,
        })
}

fn check_date(value: &str) -> Result<(), &'static str> {
    if shaped(value.as_bytes(), b"9999-99-99") {
        Ok(())
    } else {
        Err("must be YYYY-MM-DD")
    }
}

fn check_timestamp(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    let (Some(date_time), Some(offset)) = (bytes.get(..19), bytes.get(19..)) else {
        return Err("must be YYYY-MM-DDTHH:MM:SS followed by Z or ±HH:MM");
    };
    let offset_ok = offset == b"Z"
        || (offset.len() == 6
            && matches!(offset[0], b'+' | b'-')
            && shaped(&offset[1..], b"99:99"));
    if shaped(date_time, b"9999-99-99T99:99:99") && offset_ok {
        Ok(())
    } else {
        Err("must be YYYY-MM-DDTHH:MM:SS followed by Z or ±HH:MM")
    }
}

fn check_name(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err("must be 1 to 255 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return Err("may only contain ASCII letters, digits and `. _ / -`");
    }
    if value.starts_with('-') {
        return Err("must not start with `-`");
    }
    Ok(())
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
    /// A known variable used where it has no value (`{{ revision }}` in a schedule).
    #[error(
        "template variable `{variable}` has no value in {where_} (known there: {known})",
        where_ = scope.describe(),
        known = Variable::known_in(*scope)
    )]
    OutOfScope { variable: Variable, scope: Scope },
    /// An unknown name, for a template parsed in one scope.
    #[error("unknown template variable `{name}` (known: {known})")]
    OutOfScopeUnknown { name: String, known: String },
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
    /// The event's value is not of the variable's class: the action is refused.
    #[error(
        "the event's `{variable}` is not {class} ({reason}); refused, nothing is sent",
        class = variable.class().describe()
    )]
    OutOfClass {
        variable: Variable,
        reason: &'static str,
    },
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

    /// Parses a template rendered in `scope`: variables of the other scope are refused, and
    /// an unknown name lists only this scope's variables.
    pub fn parse_in(source: &str, scope: Scope) -> Result<Self, TemplateError> {
        let template = Self::parse(source).map_err(|error| match error {
            TemplateError::UnknownVariable { name } => TemplateError::OutOfScopeUnknown {
                name,
                known: Variable::known_in(scope),
            },
            other => other,
        })?;
        if let Some(variable) = template.variables().find(|v| v.scope() != scope) {
            return Err(TemplateError::OutOfScope { variable, scope });
        }
        Ok(template)
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
                    variable
                        .class()
                        .check(&value)
                        .map_err(|reason| RenderError::OutOfClass {
                            variable: *variable,
                            reason,
                        })?;
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

    const REVISION: &str = "1dc6aa69d4c3a0d7b8e92d6f2f0a3c9e5b7d1e40";

    fn values() -> Values {
        Values(BTreeMap::from([
            (Variable::Revision, REVISION),
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
            format!("sha={REVISION}/main #130")
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
            format!(r#"{{"sha":{{"v":"{REVISION}"}}}}"#)
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

    /// A context where every variable has the same value.
    struct Everywhere(String);

    impl TemplateContext for Everywhere {
        fn lookup(&self, _: Variable) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(&self.0))
        }
    }

    fn render_one(variable: Variable, value: &str) -> Result<String, RenderError> {
        Template::parse(&format!("x-{{{{ {} }}}}", variable.name()))
            .unwrap()
            .render(&Everywhere(value.to_owned()))
    }

    #[test]
    fn every_variable_has_a_class_and_hostile_values_are_refused() {
        let hostile = [
            "$(id)".to_owned(),
            "`id`".to_owned(),
            "main;id".to_owned(),
            "main\nid".to_owned(),
            "main && id".to_owned(),
            "ma\u{0456}n".to_owned(),      // Cyrillic і for i
            "\u{0661}\u{0662}".to_owned(), // Arabic-Indic digits
            "\u{ff10}".repeat(40),         // fullwidth zeros
            "a".repeat(10 * 1024),
            "1".repeat(10 * 1024),
            "-rf".to_owned(),
            String::new(),
        ];
        for variable in Variable::ALL {
            for value in &hostile {
                let error = render_one(variable, value).unwrap_err();
                assert!(
                    matches!(error, RenderError::OutOfClass { variable: v, .. } if v == variable),
                    "{variable} accepted {:?}",
                    value.chars().take(20).collect::<String>()
                );
                let message = error.to_string();
                assert!(message.len() < 300, "{message}");
                if value.len() > 3 {
                    assert!(
                        !message.contains(value.as_str()),
                        "the value is echoed: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_class_accepts_its_shape_and_nothing_else() {
        let uuid = "5034460f-c7c4-4c43-9457-de07e2029e7b";
        let cases: [(Variable, &[&str], &[&str]); 6] = [
            (
                Variable::Revision,
                &[REVISION],
                &["1dc6aa69", &"g".repeat(40), uuid],
            ),
            (
                Variable::PipelineNumber,
                &["1", "130"],
                &["1.0", "-1", "0x1F", "12a"],
            ),
            (
                Variable::PipelineId,
                &[uuid],
                &["5034460f", "5034460f-c7c4-4c43-9457-de07e2029e7z"],
            ),
            (
                Variable::Branch,
                &["main", "release/1.4", "dependabot/npm_and_yarn/x-4.17.21"],
                &["attacker/$(id)", "a..b", "feature/#12", "it's", "a b"],
            ),
            (
                Variable::Tag,
                &["v1.4.2", "v1.0.0+build.7"],
                &["v1;id", "v1\u{2024}2"],
            ),
            (
                Variable::WorkflowName,
                &["build", "e2e-nightly", "deploy_prod.v2"],
                &["build test", "build|x", "build:x", "build\u{00a0}"],
            ),
        ];
        for (variable, good, bad) in cases {
            for value in good {
                assert_eq!(
                    render_one(variable, value).as_deref(),
                    Ok(format!("x-{value}").as_str()),
                    "{variable} refused {value:?}"
                );
            }
            for value in bad {
                assert!(
                    render_one(variable, value).is_err(),
                    "{variable} accepted {value:?}"
                );
            }
        }
        assert_eq!(
            render_one(Variable::ProjectSlug, "gh/acme/api").as_deref(),
            Ok("x-gh/acme/api")
        );
        assert_eq!(
            render_one(Variable::Status, "not_run").as_deref(),
            Ok("x-not_run")
        );
        assert_eq!(
            render_one(Variable::Status, "terminated-unknown").as_deref(),
            Ok("x-terminated-unknown")
        );
        // Literal text around a variable is the author's, not the event's.
        let template = Template::parse("a b;c {{ branch }}").unwrap();
        assert_eq!(template.render(&values()).unwrap(), "a b;c main");
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
