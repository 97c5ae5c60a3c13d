//! The loader: a valid file, each class of error with its line, unknown keys, build embedding.

use triggers_config::{ConfigError, ConfigIssue, build, load_file, parse_str};

fn issues(source: &str) -> Vec<ConfigIssue> {
    match parse_str(source, "t.toml") {
        Ok(parsed) => panic!("expected errors, got {parsed:?}"),
        Err(error) => error.issues().to_vec(),
    }
}

#[test]
fn a_valid_file_loads_with_defaults_filled_in() {
    let parsed = parse_str("[circleci]\ntoken = \"ci-bot\"\n", "t.toml").unwrap();
    assert_eq!(parsed.circleci.token, "ci-bot");
    assert_eq!(parsed.circleci.api_url, "https://circleci.com/api/v2");
    assert_eq!(parsed.circleci.workflow_parameter, "run-workflow");
    // An empty file is valid: every section has defaults.
    assert_eq!(parse_str("", "t.toml").unwrap().circleci.token, "default");
}

#[test]
fn the_repository_example_file_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../triggers.toml");
    load_file(&root).unwrap();
}

#[test]
fn a_syntax_error_names_its_line() {
    let found = issues("[circleci]\napi_url = \"https://x\"\ntoken = \n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 3, "{found:?}");
    assert_eq!(found[0].file, "t.toml");
}

#[test]
fn an_unknown_key_is_rejected_with_its_line_and_field() {
    let found = issues("[circleci]\ntoken = \"default\"\napi_ulr = \"https://x\"\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 3);
    assert_eq!(found[0].field, "circleci.api_ulr");
    assert!(
        found[0].message.contains("unknown field `api_ulr`"),
        "{}",
        found[0].message
    );
}

#[test]
fn an_unknown_section_is_rejected() {
    let found = issues("[circleci]\n\n[shedule]\nname = \"x\"\n");
    assert_eq!(found[0].line, 3, "{found:?}");
    assert!(found[0].message.contains("unknown field `shedule`"));
}

#[test]
fn a_wrong_type_names_its_line_and_field() {
    let found = issues("[circleci]\n\ntoken = 42\n");
    assert_eq!(found[0].line, 3);
    assert_eq!(found[0].field, "circleci.token");
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let found = issues(
        "[circleci]\napi_url = \"http://circleci.example.com/api/v2\"\ntoken = \"has space\"\nworkflow_parameter = \"1bad\"\n",
    );
    let lines: Vec<(usize, &str)> = found.iter().map(|i| (i.line, i.field.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (2, "circleci.api_url"),
            (3, "circleci.token"),
            (4, "circleci.workflow_parameter")
        ]
    );
    assert!(found[0].message.contains("https"));
    let rendered = ConfigError::Invalid(found.clone()).to_string();
    assert!(
        rendered.contains("t.toml:2:1: circleci.api_url:"),
        "{rendered}"
    );
}

#[test]
fn plain_http_is_allowed_only_for_loopback() {
    parse_str(
        "[circleci]\napi_url = \"http://127.0.0.1:9999/api/v2\"\n",
        "t.toml",
    )
    .unwrap();
    parse_str(
        "[circleci]\napi_url = \"http://localhost/api/v2\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(issues("[circleci]\napi_url = \"ftp://x/y\"\n").len(), 1);
    assert_eq!(issues("[circleci]\napi_url = \"circleci.com\"\n").len(), 1);
}

#[test]
fn a_missing_file_is_a_read_error() {
    let error = load_file(std::path::Path::new("/nonexistent/triggers.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("/nonexistent/triggers.toml"));
}

#[test]
fn build_embedding_copies_a_valid_file_and_refuses_an_invalid_one() {
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("Cargo.lock"), "").unwrap();
    let manifest = workspace.path().join("functions/http");
    std::fs::create_dir_all(&manifest).unwrap();
    let out = tempfile::tempdir().unwrap();

    std::fs::write(
        workspace.path().join("good.toml"),
        "[circleci]\ntoken = \"x\"\n",
    )
    .unwrap();
    let embedded = build::embed_into(&manifest, out.path(), "good.toml".as_ref()).unwrap();
    assert_eq!(embedded, workspace.path().join("good.toml"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("triggers.toml")).unwrap(),
        "[circleci]\ntoken = \"x\"\n"
    );

    std::fs::write(
        workspace.path().join("bad.toml"),
        "[circleci]\ntokn = \"x\"\n",
    )
    .unwrap();
    let refused = build::embed_into(&manifest, out.path(), "bad.toml".as_ref()).unwrap_err();
    assert!(refused.contains("bad.toml:2:1"), "{refused}");
    assert!(build::embed_into(&manifest, out.path(), "absent.toml".as_ref()).is_err());
}
