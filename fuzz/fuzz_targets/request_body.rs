//! HTTP endpoint request bodies: `api::request::parse_body`, then `validate` against each
//! endpoint's declared parameter schema, branch/tag policy and selection.
//!
//! Beyond "no panic":
//! - every refusal says what is wrong and where (a JSON pointer for body problems);
//! - an accepted call holds only declared parameters that pass their schema, every required
//!   parameter, CircleCI's parameter limits, and a ref the endpoint's policy allows;
//! - validation and the idempotency fingerprint are deterministic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shared::triggers::http::Catalog;
use shared::triggers::http::request::{BodyError, MAX_FIELD_ERRORS, parse_body, validate};
use shared::circleci::GitRef;
use triggers_config::rules::{self, check_git_ref};
use triggers_config::{FieldPath, Problems};

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let file = triggers_config::parse_str(include_str!("endpoints.toml"), "endpoints.toml")
        .expect("the fuzz endpoints are valid");
    Catalog::new(&file).expect("the fuzz endpoints compile")
});

fuzz_target!(|data: &[u8]| {
    let input = match parse_body(data) {
        Ok(input) => input,
        Err(BodyError::Malformed(reason)) => {
            assert!(!reason.is_empty());
            return;
        }
        Err(BodyError::Invalid(errors)) => {
            assert!(!errors.is_empty());
            for error in &errors {
                assert!(error.pointer.is_some(), "{error:?} names no member");
                assert!(!error.detail.is_empty());
            }
            return;
        }
    };
    for endpoint in CATALOG.endpoints() {
        let result = validate(endpoint, &input);
        assert_eq!(
            result,
            validate(endpoint, &input),
            "validation is deterministic"
        );
        let call = match result {
            Ok(call) => call,
            Err(errors) => {
                assert!(!errors.is_empty() && errors.len() <= MAX_FIELD_ERRORS);
                for error in &errors {
                    assert!(!error.detail.is_empty());
                    assert!(error.pointer.is_some(), "{error:?} says not where");
                }
                continue;
            }
        };
        assert_eq!(call.fingerprint(endpoint), call.fingerprint(endpoint));
        for (name, value) in &call.parameters {
            let schema = endpoint
                .parameters
                .get(name)
                .unwrap_or_else(|| panic!("undeclared parameter {name:?} accepted"));
            let violations = schema.violations(value);
            assert!(violations.is_empty(), "{name}: {violations:?}");
        }
        for (name, schema) in &endpoint.parameters {
            if schema.schema.required {
                assert!(
                    call.parameters.contains_key(name),
                    "required {name} missing"
                );
            }
        }
        let mut problems = Problems::default();
        rules::parameters(
            &call.parameters,
            &FieldPath::root().key("parameters"),
            &mut problems,
        );
        assert!(
            problems.is_empty(),
            "accepted parameters CircleCI would refuse"
        );
        let target = &endpoint.spec.target;
        match &call.git_ref {
            Some(GitRef::Branch(branch)) => {
                assert!(check_git_ref(branch).is_ok(), "{branch:?}");
                assert!(
                    target.branch.as_deref() == Some(branch.as_str())
                        || endpoint.branches.iter().any(|p| p.matches(branch)),
                    "branch {branch:?} outside the policy of {}",
                    endpoint.name()
                );
                assert!(input.branch.is_none() || input.branch.as_ref() == Some(branch));
            }
            Some(GitRef::Tag(tag)) => {
                assert!(check_git_ref(tag).is_ok(), "{tag:?}");
                assert!(
                    target.tag.as_deref() == Some(tag.as_str())
                        || endpoint.tags.iter().any(|p| p.matches(tag)),
                    "tag {tag:?} outside the policy of {}",
                    endpoint.name()
                );
                assert!(input.tag.is_none() || input.tag.as_ref() == Some(tag));
            }
            None => assert!(input.branch.is_none() && input.tag.is_none()),
        }
    }
});
