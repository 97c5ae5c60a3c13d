//! Example request values generated from an endpoint's own declarations, so what the
//! sandbox banner (or any documentation) prints is accepted by the endpoint it names.
//!
//! A value is derived from the schema (a default, the first `enum` value, a bound, a
//! string drawn from the `pattern`'s syntax tree) and then checked with the same
//! [`CompiledParameter::violations`] the endpoint applies: an example is only returned
//! when the endpoint would accept it.

use regex_syntax::hir::{Class, Hir, HirKind};

use crate::endpoint::{EndpointSpec, ParameterSchema, ParameterType, check_plain_text};
use crate::target::ParameterValue;

/// The most times one repetition is unrolled in a sample (`a{1000}` is not a useful example).
const MAX_REPEAT: u32 = 64;

/// A value `schema` accepts, or `None` when none can be derived (a pattern built from
/// look-arounds the sampler does not satisfy, a too-short `max_length`).
pub fn example_value(schema: &ParameterSchema) -> Option<ParameterValue> {
    let compiled = schema.compile().ok()?;
    let accepted = |value: ParameterValue| compiled.violations(&value).is_empty().then_some(value);
    if let Some(value) = schema.default.clone().and_then(accepted) {
        return Some(value);
    }
    if let Some(allowed) = &schema.allowed {
        return allowed.iter().cloned().find_map(accepted);
    }
    let candidate = match schema.kind {
        ParameterType::Boolean => ParameterValue::Boolean(true),
        ParameterType::Integer => {
            let low = schema.minimum.unwrap_or(i64::MIN);
            let high = schema.maximum.unwrap_or(i64::MAX);
            ParameterValue::Integer(1_i64.clamp(low, high.max(low)))
        }
        ParameterType::String => match &schema.pattern {
            Some(pattern) => ParameterValue::String(sample_pattern(pattern)?),
            None => ParameterValue::String("example".to_owned()),
        },
    };
    accepted(candidate)
}

/// A string matching `pattern`, built from its syntax tree: the first alternative of
/// every alternation, the smallest non-zero repetition, a letter or digit of every class.
pub fn sample_pattern(pattern: &str) -> Option<String> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut out = String::new();
    sample(&hir, &mut out)?;
    Some(out)
}

fn sample(hir: &Hir, out: &mut String) -> Option<()> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(literal) => out.push_str(std::str::from_utf8(&literal.0).ok()?),
        HirKind::Class(Class::Unicode(class)) => {
            let ranges = class.ranges();
            let chars = ranges.iter().flat_map(|r| {
                // Look at most a few characters of each range for a readable one.
                (u32::from(r.start())..=u32::from(r.end()))
                    .take(128)
                    .filter_map(char::from_u32)
            });
            let readable = chars.clone().find(char::is_ascii_alphanumeric);
            let plain = chars
                .clone()
                .find(|c| check_plain_text(&c.to_string()).is_ok());
            out.push(readable.or(plain).or_else(|| chars.clone().next())?);
        }
        HirKind::Class(Class::Bytes(class)) => {
            let byte = class
                .ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .find(u8::is_ascii_alphanumeric)
                .or_else(|| class.ranges().first().map(|r| r.start()))?;
            if !byte.is_ascii() {
                return None;
            }
            out.push(char::from(byte));
        }
        HirKind::Repetition(repetition) => {
            let most = repetition.max.unwrap_or(u32::MAX);
            let times = repetition.min.max(1).min(most);
            if times > MAX_REPEAT {
                return None;
            }
            for _ in 0..times {
                sample(&repetition.sub, out)?;
            }
        }
        HirKind::Capture(capture) => sample(&capture.sub, out)?,
        HirKind::Concat(parts) => {
            for part in parts {
                sample(part, out)?;
            }
        }
        HirKind::Alternation(choices) => sample(choices.first()?, out)?,
    }
    Some(())
}

/// A branch the endpoint accepts from a caller who must or may name one: its first
/// literal `branches` entry, else its first glob with each wildcard written as `x`.
/// `None` when the endpoint fixes its ref (nothing to send).
pub fn example_branch(endpoint: &EndpointSpec) -> Option<String> {
    let target = &endpoint.target;
    if target.branch.is_some() || target.tag.is_some() {
        return None;
    }
    let literal = |b: &&String| !b.contains(['*', '?', '[', '{']);
    target
        .branches
        .iter()
        .find(literal)
        .or_else(|| target.branches.first())
        .map(|glob| {
            glob.replace("**", "x")
                .replace(['*', '?'], "x")
                .replace(['[', ']', '{', '}'], "")
        })
}

/// The parameters of an example request: every required parameter without a default,
/// each with a value its schema accepts. `Err` names a parameter no value could be
/// derived for.
pub fn example_parameters(
    endpoint: &EndpointSpec,
) -> Result<Vec<(String, ParameterValue)>, String> {
    endpoint
        .parameters
        .iter()
        .filter(|(_, schema)| schema.required && schema.default.is_none())
        .map(|(name, schema)| {
            example_value(schema)
                .map(|value| (name.clone(), value))
                .ok_or_else(|| name.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(kind: ParameterType) -> ParameterSchema {
        ParameterSchema::bare(kind, true)
    }

    fn accepted(schema: &ParameterSchema, value: &ParameterValue) -> bool {
        schema
            .compile()
            .map(|c| c.violations(value).is_empty())
            .unwrap_or(false)
    }

    #[test]
    fn pattern_samples_match_their_patterns() {
        for pattern in [
            r"^\d+\.\d+\.\d+$",
            r"^v[0-9]{1,3}(\.[0-9]+)?-(rc|beta)\d*$",
            r"^[a-z][a-z0-9-]{2,30}$",
            r"^(?i)release-\w+$",
            r"^[A-Z]{3}-\d{4}$",
            r"\bfoo\b",
            r"^[^\s]+@example\.com$",
        ] {
            let value = sample_pattern(pattern).unwrap();
            let regex = regex::Regex::new(pattern).unwrap();
            assert!(regex.is_match(&value), "{pattern} ⇏ {value}");
            let mut schema = schema(ParameterType::String);
            schema.pattern = Some(pattern.to_owned());
            assert_eq!(
                example_value(&schema),
                Some(ParameterValue::String(value)),
                "{pattern}"
            );
        }
        assert_eq!(sample_pattern(r"^\d+\.\d+\.\d+$").unwrap(), "0.0.0");
    }

    #[test]
    fn every_kind_gets_a_value_its_schema_accepts() {
        let mut bounded = schema(ParameterType::Integer);
        bounded.minimum = Some(5);
        bounded.maximum = Some(9);
        let mut listed = schema(ParameterType::String);
        listed.allowed = Some(vec![
            ParameterValue::String("blue".into()),
            ParameterValue::String("green".into()),
        ]);
        let mut short = schema(ParameterType::String);
        short.max_length = Some(3);
        for schema in [
            bounded,
            listed,
            schema(ParameterType::Boolean),
            schema(ParameterType::String),
        ] {
            let value = example_value(&schema).unwrap();
            assert!(accepted(&schema, &value), "{schema:?}: {value:?}");
        }
        // "example" is longer than 3 characters: no value rather than a wrong one.
        assert_eq!(example_value(&short), None);
    }
}
