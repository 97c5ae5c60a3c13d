//! The SAM template (`infra/template.yaml`) and `samconfig.toml` against the code they deploy.
//!
//! - The table is exactly the store's definition (`shared::store::dynamo::table_definition`).
//! - The scheduler's Input, with a concrete time, is the fixture the tick handler parses.
//! - Each function's role grants exactly what `shared::store::dynamo::permissions` declares
//!   (DynamoDB actions and indexes, secrets), plus its own log group, nothing else — and that
//!   declaration covers every request the DynamoDB adapter really sends: the store conformance
//!   suite runs against moto_server through an SDK interceptor that maps each request to the
//!   IAM action it needs, attributed to the store operation that sent it.
//! - Each role grants exactly what its function's request paths send (`call_paths`): the
//!   three functions wired as their `main.rs` wires them, driven through every path, every
//!   DynamoDB and Secrets Manager request recorded as the grant it needs.
//! - Builds, environment, routes, alarms and the samconfig environments agree with the code.
//!
//! The template is parsed with serde_norway, which keeps CloudFormation's short tags
//! (`!Ref`, `!GetAtt`, `!Sub`, `!If`) as tagged values; they are turned into the long JSON form
//! (`{"Ref": ...}`, `{"Fn::GetAtt": [...]}`) so both spellings compare equal.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use futures::future::BoxFuture;
use integration_tests::moto::{sdk_config, unique_name};
use integration_tests::request_cost::Recorded;
use integration_tests::store_suite::{self, Fixture, StoreUnderTest};
use shared::secrets::{SecretIds, SecretKind, SecretSource, SecretsManagerSource};
use shared::store::dynamo::permissions::{DynamoGrant, LambdaFunction};
use shared::store::dynamo::{PARTITION_KEY, TABLE_ENV, create_table, table_definition};
use shared::store::{
    DynamoStore, StoreDecorator, StoreError, StoreOperation, StoreResult, StoreSettings,
    TriggerStore,
};
use shared::triggers::scheduled::TickEvent;

mod call_paths;

// ============================================================================ the template

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The template in CloudFormation's long JSON form.
fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let yaml: serde_norway::Value = serde_norway::from_str(&read("infra/template.yaml"))
            .unwrap_or_else(|error| panic!("infra/template.yaml is not YAML: {error}"));
        long_form(&yaml)
    })
}

/// YAML to JSON, short intrinsic tags to their long form.
fn long_form(value: &serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => json!(flag),
        Yaml::Number(number) => {
            if let Some(int) = number.as_i64() {
                json!(int)
            } else {
                json!(number.as_f64())
            }
        }
        Yaml::String(text) => json!(text),
        Yaml::Sequence(items) => Value::Array(items.iter().map(long_form).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key = key
                        .as_str()
                        .unwrap_or_else(|| panic!("non-string key {key:?}"));
                    (key.to_owned(), long_form(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = long_form(&tagged.value);
            match (name, inner) {
                ("Ref", inner) => json!({ "Ref": inner }),
                // `!GetAtt Resource.Attribute` is `["Resource", "Attribute"]`.
                ("GetAtt", Value::String(path)) => {
                    let (resource, attribute) = path
                        .split_once('.')
                        .unwrap_or_else(|| panic!("!GetAtt {path} names no attribute"));
                    json!({ "Fn::GetAtt": [resource, attribute] })
                }
                (name, inner) => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

fn get_att(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

fn resource(logical_id: &str) -> &'static Value {
    let found = &template()["Resources"][logical_id];
    assert!(
        found.is_object(),
        "the template has no resource {logical_id}"
    );
    found
}

fn properties(logical_id: &str) -> &'static Value {
    &resource(logical_id)["Properties"]
}

fn resources_of_type(kind: &str) -> Vec<(&'static str, &'static Value)> {
    template()["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, resource)| resource["Type"] == kind)
        .map(|(id, resource)| (id.as_str(), resource))
        .collect()
}

/// A value that may be one item or a list of them, as IAM and SAM allow.
fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    }
}

fn logical_id(function: LambdaFunction) -> &'static str {
    match function {
        LambdaFunction::Scheduled => "ScheduledFunction",
        LambdaFunction::Webhooks => "WebhookFunction",
        LambdaFunction::Chained => "ChainedFunction",
        LambdaFunction::Http => "HttpFunction",
    }
}

/// SAM's Globals merged under the function's own properties (maps merge, scalars override).
fn function_properties(function: LambdaFunction) -> Value {
    fn merge(global: &Value, local: &Value) -> Value {
        match (global, local) {
            (Value::Object(global), Value::Object(local)) => {
                let mut merged = global.clone();
                for (key, value) in local {
                    let combined = match merged.get(key) {
                        Some(existing) => merge(existing, value),
                        None => value.clone(),
                    };
                    merged.insert(key.clone(), combined);
                }
                Value::Object(merged)
            }
            (_, local) => local.clone(),
        }
    }
    let id = logical_id(function);
    assert_eq!(resource(id)["Type"], "AWS::Serverless::Function", "{id}");
    merge(&template()["Globals"]["Function"], properties(id))
}

/// Which template parameter carries which secret's ARN, and the environment variable the
/// function reads it from.
fn secret_wiring(kind: SecretKind) -> (&'static str, &'static str) {
    match kind {
        SecretKind::CircleCiTokens => ("TokensSecretArn", SecretIds::TOKENS_ENV),
        SecretKind::WebhookSigningSecrets => ("WebhookSecretsSecretArn", SecretIds::WEBHOOK_ENV),
        SecretKind::ClientKeyHashes => ("ClientKeysSecretArn", SecretIds::CLIENT_KEYS_ENV),
        // Not deployed yet (`SecretKind::ALL` leaves it out): `serve` sends notifications.
        SecretKind::NotifySecrets => ("NotifySecretsSecretArn", SecretIds::NOTIFY_ENV),
    }
}

// ============================================================================ storage

#[test]
fn the_table_is_exactly_the_stores_definition() {
    let table = resource("TriggersTable");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let mut deployed = table["Properties"].clone();
    let deployed_map = deployed.as_object_mut().unwrap();
    // The one addition: deletion protection, from a parameter.
    assert_eq!(
        deployed_map.remove("DeletionProtectionEnabled"),
        Some(json!({ "Fn::If": ["ProtectTable", true, false] }))
    );
    assert_eq!(
        template()["Conditions"]["ProtectTable"],
        json!({ "Fn::Equals": [reference("DeletionProtection"), "true"] })
    );
    assert!(
        !deployed_map.contains_key("TableName"),
        "a fixed table name would stop a second stack in the same account"
    );
    assert_eq!(
        deployed,
        table_definition().cloudformation_properties(),
        "infra/template.yaml's TriggersTable drifted from shared::store::dynamo::table_definition()"
    );
    // And the committed JSON copy is the same (the store's own unit test keeps it current).
    let committed: Value = serde_json::from_str(&read("infra/table.json")).unwrap();
    assert_eq!(committed, deployed);
    // History outlives the stack.
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    assert!(
        matches!(
            table["DeletionPolicy"].as_str(),
            Some("Retain" | "RetainExceptOnCreate")
        ),
        "{}",
        table["DeletionPolicy"]
    );
}

// ============================================================================ scheduler

#[test]
fn the_tick_input_is_the_fixture_the_handler_parses() {
    const PLACEHOLDER: &str = "<aws.scheduler.scheduled-time>";
    let schedule = properties("TickSchedule");
    assert_eq!(resource("TickSchedule")["Type"], "AWS::Scheduler::Schedule");
    assert_eq!(schedule["ScheduleExpression"], "cron(* * * * ? *)");
    assert_eq!(schedule["FlexibleTimeWindow"]["Mode"], "OFF");
    assert_eq!(schedule["State"], "ENABLED");
    let target = &schedule["Target"];
    assert_eq!(target["Arn"], get_att("ScheduledFunction", "Arn"));

    let input = target["Input"]
        .as_str()
        .expect("the tick Input is a string");
    assert_eq!(
        input.matches(PLACEHOLDER).count(),
        1,
        "the Input must carry the scheduled time: {input}"
    );
    let fixture_text = read("functions/scheduled/fixtures/scheduler-input.json");
    let fixture: Value = serde_json::from_str(&fixture_text).unwrap();
    let time = fixture["scheduled_time"]
        .as_str()
        .expect("the fixture has a scheduled_time");
    let substituted: Value = serde_json::from_str(&input.replace(PLACEHOLDER, time))
        .unwrap_or_else(|error| panic!("the Input with a time substituted is not JSON: {error}"));
    assert_eq!(
        substituted, fixture,
        "functions/scheduled/fixtures/scheduler-input.json is not the template's Input"
    );

    // The handler takes the tick instant from it.
    let at: DateTime<Utc> = time.parse().unwrap();
    match TickEvent::parse(fixture) {
        Ok(shared::triggers::scheduled::TickRequest::Tick { at: parsed }) => assert_eq!(parsed, at),
        other => panic!("the scheduled handler does not read the fixture as a tick: {other:?}"),
    }
}

#[test]
fn a_tick_that_never_ran_is_kept_and_not_retried_by_lambda() {
    let schedule = properties("TickSchedule");
    let dlq = get_att("TickDeadLetterQueue", "Arn");
    assert_eq!(schedule["Target"]["DeadLetterConfig"]["Arn"], dlq);
    let retries = &schedule["Target"]["RetryPolicy"];
    assert!(retries["MaximumRetryAttempts"].as_i64().unwrap() <= 2);
    assert!(retries["MaximumEventAgeInSeconds"].as_i64().unwrap() <= 300);

    let function = function_properties(LambdaFunction::Scheduled);
    let invoke = &function["EventInvokeConfig"];
    assert_eq!(
        invoke["MaximumRetryAttempts"], 0,
        "the next tick catches up; Lambda must not replay a failed tick"
    );
    assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Type"], "SQS");
    assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Destination"], dlq);

    // The scheduler's role: invoke the tick and write the DLQ, for this stack's group only.
    let group = get_att("TickScheduleGroup", "Arn");
    assert_eq!(schedule["GroupName"], reference("TickScheduleGroup"));
    assert_eq!(
        schedule["Target"]["RoleArn"],
        get_att("SchedulerInvokeRole", "Arn")
    );
    let role = properties("SchedulerInvokeRole");
    let trust = &role["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(one_or_many(trust).len(), 1);
    assert_eq!(trust[0]["Principal"]["Service"], "scheduler.amazonaws.com");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceArn"],
        group
    );
    assert_eq!(
        grants_of_role("SchedulerInvokeRole"),
        BTreeSet::from([
            "lambda:InvokeFunction on ScheduledFunction".to_owned(),
            "sqs:SendMessage on TickDeadLetterQueue".to_owned(),
        ])
    );
}

// ============================================================================ functions

#[test]
fn every_function_is_an_arm64_cargo_lambda_build_of_its_binary() {
    let root = workspace_root();
    let mut binaries = BTreeSet::new();
    for member in ["scheduled", "chained", "http"] {
        // `chained` builds two binaries: `webhooks` (the acceptor) and `chained` (the worker).
        let manifest: toml::Table = read(&format!("functions/{member}/Cargo.toml"))
            .parse()
            .unwrap();
        for bin in manifest
            .get("bin")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            binaries.insert(bin["name"].as_str().unwrap().to_owned());
        }
    }
    for function in LambdaFunction::ALL {
        let id = logical_id(function);
        let props = function_properties(function);
        assert_eq!(props["Runtime"], "provided.al2023", "{id}");
        assert_eq!(props["Architectures"], json!(["arm64"]), "{id}");
        assert_eq!(props["Handler"], "bootstrap", "{id}");
        let code_uri = props["CodeUri"].as_str().expect("CodeUri");
        let code_dir = root.join("infra").join(code_uri);
        let workspace: toml::Table = std::fs::read_to_string(code_dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            workspace.contains_key("workspace"),
            "{id}: CodeUri must be the workspace root"
        );
        let metadata = &resource(id)["Metadata"];
        assert_eq!(metadata["BuildMethod"], "rust-cargolambda", "{id}");
        let binary = metadata["BuildProperties"]["Binary"].as_str().unwrap();
        assert_eq!(binary, function.binary(), "{id}");
        assert!(
            binaries.contains(binary),
            "{id} builds `{binary}`, which no functions/*/Cargo.toml declares ({binaries:?})"
        );
        let logging = &props["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{id}");
        // EMF metric lines have no level (Lambda counts them as INFO): a filter above INFO
        // would drop the metrics the alarms watch. RUST_LOG does the filtering.
        assert!(
            matches!(
                logging["ApplicationLogLevel"].as_str(),
                None | Some("TRACE" | "DEBUG" | "INFO")
            ),
            "{id}: {}",
            logging["ApplicationLogLevel"]
        );
        let memory = props["MemorySize"].as_i64().unwrap();
        assert!((128..=1024).contains(&memory), "{id}: {memory} MB");
    }
}

#[test]
fn timeouts_fit_the_callers_and_stay_under_the_claim_lease() {
    let lease = shared::engine::EngineSettings::default().lease;
    for function in LambdaFunction::ALL {
        let props = function_properties(function);
        let timeout = Duration::from_secs(props["Timeout"].as_u64().unwrap());
        // A live holder must never be overtaken: its lease outlasts the invocation.
        assert!(
            timeout < lease,
            "{function:?}: {timeout:?} vs lease {lease:?}"
        );
        let limit = match function {
            // One tick a minute; at most two alive at once.
            LambdaFunction::Scheduled => Duration::from_secs(60),
            // CircleCI waits 10 s for the acceptor's answer.
            LambdaFunction::Webhooks => Duration::from_secs(10),
            // The worker answers no caller; its lease bounds it (above).
            LambdaFunction::Chained => lease,
            // HTTP API integrations time out at 30 s.
            LambdaFunction::Http => Duration::from_secs(29),
        };
        assert!(timeout <= limit, "{function:?}: {timeout:?} > {limit:?}");
    }
    // A batch still being worked on must not come back: visibility ≥ 6 × the timeout
    // (AWS's advice for event source mappings), and the worker's retry limit is the queue's.
    let worker = function_properties(LambdaFunction::Chained);
    let queue = properties("WebhookDeliveryQueue");
    assert!(
        queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * worker["Timeout"].as_u64().unwrap()
    );
    assert_eq!(
        queue["RedrivePolicy"]["maxReceiveCount"].as_u64(),
        Some(u64::from(shared::triggers::chained::queue::MAX_RECEIVES))
    );
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"],
        get_att("WebhookDeadLetterQueue", "Arn")
    );
    assert!(
        function_properties(LambdaFunction::Scheduled)["ReservedConcurrentExecutions"]
            .as_i64()
            .is_some_and(|n| (1..=2).contains(&n))
    );
}

#[test]
fn each_function_is_configured_with_its_table_environment_and_only_its_secrets() {
    for function in LambdaFunction::ALL {
        let variables = function_properties(function)["Environment"]["Variables"].clone();
        // The table and the queue only where the function uses them.
        let table = (!function.store_operations().is_empty()).then(|| reference("TriggersTable"));
        assert_eq!(variables.get(TABLE_ENV).cloned(), table, "{function:?}");
        let queue = (!function.sqs_actions().is_empty()).then(|| reference("WebhookDeliveryQueue"));
        assert_eq!(
            variables
                .get(shared::triggers::chained::queue::sqs::QUEUE_URL_ENV)
                .cloned(),
            queue,
            "{function:?}"
        );
        // shared::telemetry::emit_metric puts this in the Environment dimension.
        assert_eq!(
            variables["TRIGGERS_ENVIRONMENT"],
            reference("Environment"),
            "{function:?}"
        );
        for kind in SecretKind::ALL {
            let (parameter, env) = secret_wiring(kind);
            if function.secrets().contains(&kind) {
                assert_eq!(variables[env], reference(parameter), "{function:?} {kind}");
            } else {
                assert!(
                    variables.get(env).is_none(),
                    "{function:?} is given {env} but does not read the {kind} secret"
                );
            }
        }
    }
}

// ============================================================================ IAM

/// Every grant of a role's inline policies as "action on resource [if condition] [when ...]".
/// Resources are named by what they are (`table`, `index/<name>`, a logical id, a parameter);
/// anything else — a wildcard, a literal ARN — fails the test.
fn grants_of_role(role_id: &str) -> BTreeSet<String> {
    let role = resource(role_id);
    assert_eq!(role["Type"], "AWS::IAM::Role", "{role_id}");
    let props = &role["Properties"];
    assert!(
        props.get("ManagedPolicyArns").is_none(),
        "{role_id}: managed policies grant more than the code uses"
    );
    let mut grants = BTreeSet::new();
    for policy in one_or_many(&props["Policies"]) {
        for statement in one_or_many(&policy["PolicyDocument"]["Statement"]) {
            match statement.get("Fn::If") {
                Some(branches) => {
                    let condition = branches[0].as_str().unwrap();
                    assert_eq!(branches[2], reference("AWS::NoValue"), "{role_id}");
                    grants.extend(statement_grants(role_id, &branches[1], Some(condition)));
                }
                None => grants.extend(statement_grants(role_id, statement, None)),
            }
        }
    }
    grants
}

fn statement_grants(role_id: &str, statement: &Value, condition: Option<&str>) -> Vec<String> {
    assert_eq!(statement["Effect"], "Allow", "{role_id}: {statement}");
    assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none());
    let mut suffix = String::new();
    if let Some(condition) = condition {
        suffix.push_str(&format!(" [if {condition}]"));
    }
    if let Some(when) = statement.get("Condition")
        && leading_keys_condition(when).is_none()
    {
        suffix.push_str(&format!(" [when {when}]"));
    }
    let mut grants = Vec::new();
    for action in one_or_many(&statement["Action"]) {
        let action = action.as_str().expect("actions are strings");
        assert!(!action.contains('*'), "{role_id}: wildcard action {action}");
        for resource in one_or_many(&statement["Resource"]) {
            grants.push(format!(
                "{action} on {}{suffix}",
                resource_name(role_id, resource)
            ));
        }
    }
    grants
}

/// The patterns of a `ForAllValues:StringLike` / `dynamodb:LeadingKeys` condition, when that
/// is the whole condition.
fn leading_keys_condition(when: &Value) -> Option<BTreeSet<String>> {
    let operators = when.as_object()?;
    let keys = operators.get("ForAllValues:StringLike")?.as_object()?;
    if operators.len() != 1 || keys.len() != 1 {
        return None;
    }
    Some(
        one_or_many(keys.get("dynamodb:LeadingKeys")?)
            .into_iter()
            .map(|pattern| pattern.as_str().expect("patterns are strings").to_owned())
            .collect(),
    )
}

/// For each statement of the role on the table itself (not its indexes): its
/// `dynamodb:LeadingKeys` patterns, `None` when it has no such condition.
fn table_leading_keys(role_id: &str) -> Vec<Option<BTreeSet<String>>> {
    let table = get_att("TriggersTable", "Arn");
    one_or_many(&properties(role_id)["Policies"])
        .into_iter()
        .flat_map(|policy| one_or_many(&policy["PolicyDocument"]["Statement"]))
        .filter(|statement| one_or_many(&statement["Resource"]).contains(&&table))
        .map(|statement| statement.get("Condition").and_then(leading_keys_condition))
        .collect()
}

/// Whether `key` matches an IAM `StringLike` pattern (only a trailing `*` is used here).
fn like(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

fn resource_name(role_id: &str, resource: &Value) -> String {
    const INDEX_PREFIX: &str = "${TriggersTable.Arn}/index/";
    if let Some([name, attribute]) = resource["Fn::GetAtt"].as_array().map(Vec::as_slice) {
        assert_eq!(attribute, "Arn", "{role_id}: {resource}");
        let name = name.as_str().unwrap();
        return if name == "TriggersTable" {
            "table".to_owned()
        } else {
            name.to_owned()
        };
    }
    if let Some(text) = resource["Fn::Sub"].as_str()
        && let Some(index) = text.strip_prefix(INDEX_PREFIX)
    {
        assert!(
            !index.is_empty() && !index.contains(['*', '/']),
            "{role_id}: {text}"
        );
        return format!("index/{index}");
    }
    if let Some(parameter) = resource["Ref"].as_str() {
        return parameter.to_owned();
    }
    panic!("{role_id}: a resource the test does not recognise (wildcard or literal?): {resource}");
}

fn grant_name(grant: &DynamoGrant) -> String {
    match grant {
        DynamoGrant::Table(action) => format!("{action} on table"),
        DynamoGrant::QueryIndex(index) => format!("dynamodb:Query on index/{index}"),
    }
}

/// What a function's role must grant: its store operations, its secrets, its own log group,
/// its on-failure destination, and KMS only through Secrets Manager when a key is given.
fn expected_grants(function: LambdaFunction) -> BTreeSet<String> {
    let props = function_properties(function);
    let mut expected: BTreeSet<String> =
        function.dynamodb_grants().iter().map(grant_name).collect();
    for kind in function.secrets() {
        expected.insert(format!(
            "secretsmanager:GetSecretValue on {}",
            secret_wiring(*kind).0
        ));
    }
    for action in function.sqs_actions() {
        expected.insert(format!("{action} on WebhookDeliveryQueue"));
    }
    let log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{function:?} writes to a log group of its own"));
    expected.insert(format!("logs:CreateLogStream on {log_group}"));
    expected.insert(format!("logs:PutLogEvents on {log_group}"));
    if let Some(destination) =
        props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"]
            .as_array()
    {
        expected.insert(format!(
            "sqs:SendMessage on {}",
            destination[0].as_str().unwrap()
        ));
    }
    let via_secrets_manager = json!({
        "StringEquals": {
            "kms:ViaService": { "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com" }
        }
    });
    expected.insert(format!(
        "kms:Decrypt on SecretsKmsKeyArn [if HasSecretsKmsKey] [when {via_secrets_manager}]"
    ));
    expected
}

#[test]
fn each_role_grants_exactly_what_its_function_uses() {
    for function in LambdaFunction::ALL {
        let id = logical_id(function);
        let props = function_properties(function);
        assert!(
            props.get("Policies").is_none(),
            "{id}: SAM policies would create a second, broader role"
        );
        let role_id = props["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{id} has a role of its own (Role: !GetAtt <role>.Arn)"));
        let trust = &properties(role_id)["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(one_or_many(trust).len(), 1, "{role_id}");
        assert_eq!(trust[0]["Principal"]["Service"], "lambda.amazonaws.com");
        assert_eq!(trust[0]["Action"], "sts:AssumeRole");

        // Item access is narrowed to the function's own partitions on every table statement.
        let declared: BTreeSet<String> = function
            .leading_keys()
            .iter()
            .map(|pattern| (*pattern).to_owned())
            .collect();
        let narrowed = table_leading_keys(role_id);
        assert_eq!(
            narrowed.is_empty(),
            function.store_operations().is_empty(),
            "{role_id}: a table statement exactly when the function uses the table"
        );
        for keys in narrowed {
            assert_eq!(
                keys.as_ref(),
                Some(&declared),
                "{role_id}: each statement on the table carries ForAllValues:StringLike \
                 dynamodb:LeadingKeys = LambdaFunction::leading_keys"
            );
        }

        let granted = grants_of_role(role_id);
        let expected = expected_grants(function);
        let extra: Vec<_> = granted.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&granted).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{role_id} drifted from shared/src/store/dynamo/permissions.rs ({function:?}):\n  \
             granted but not used: {extra:#?}\n  used but not granted: {missing:#?}"
        );
    }
}

#[test]
fn no_two_functions_share_a_role_or_a_log_group() {
    let mut roles = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for function in LambdaFunction::ALL {
        let props = function_properties(function);
        assert!(roles.insert(props["Role"].to_string()), "{function:?}");
        assert!(
            groups.insert(props["LoggingConfig"]["LogGroup"].to_string()),
            "{function:?}"
        );
    }
}

#[test]
fn secret_parameters_take_full_arns_only() {
    let example =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:circleci-triggers/prod/tokens-Ab12Cd";
    for kind in SecretKind::ALL {
        let (parameter, _) = secret_wiring(kind);
        let pattern = template()["Parameters"][parameter]["AllowedPattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{parameter} has no AllowedPattern"));
        let pattern = regex::Regex::new(pattern).unwrap();
        assert!(pattern.is_match(example), "{parameter}");
        // A partial ARN (no random suffix) would make the IAM resource match nothing.
        assert!(
            !pattern.is_match("arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokens"),
            "{parameter}"
        );
        assert!(!pattern.is_match("<dev-tokens-secret-arn>"), "{parameter}");
    }
}

// ----------------------------------------------------------------- the adapter's real requests

tokio::task_local! {
    /// The store operation whose requests the interceptor is seeing.
    static CURRENT_OPERATION: StoreOperation;
}

/// Maps every DynamoDB request to the IAM grants it needs, attributed to the store operation
/// that sent it.
#[derive(Debug, Clone, Default)]
struct IamAudit {
    observed: Arc<Mutex<BTreeMap<StoreOperation, BTreeSet<String>>>>,
    /// The partition key of every item request on the table (IAM's `dynamodb:LeadingKeys`).
    leading_keys: Arc<Mutex<BTreeSet<String>>>,
    unattributed: Arc<Mutex<Vec<String>>>,
    /// The grants of requests sent outside every store operation: the notification
    /// outbox's (`notify::DynamoOutbox`), which the call-path test counts too.
    outside: Arc<Mutex<BTreeSet<String>>>,
}

impl Intercept for IamAudit {
    fn name(&self) -> &'static str {
        "IamAudit"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Recorded { operation, body } = Recorded::of(context)?;
        let grants = iam_grants(&operation, &body);
        self.leading_keys
            .lock()
            .unwrap()
            .extend(leading_keys(&operation, &body));
        match CURRENT_OPERATION.try_with(|current| *current) {
            Ok(current) => self
                .observed
                .lock()
                .unwrap()
                .entry(current)
                .or_default()
                .extend(grants),
            Err(_) => {
                self.outside.lock().unwrap().extend(grants);
                self.unattributed.lock().unwrap().push(operation);
            }
        }
        Ok(())
    }
}

/// The IAM actions a request needs. A transaction has no action of its own: each item is
/// authorised as the single-item action it performs.
fn iam_grants(operation: &str, body: &Value) -> Vec<String> {
    match operation {
        "TransactWriteItems" | "TransactGetItems" => one_or_many(&body["TransactItems"])
            .into_iter()
            .flat_map(|item| item.as_object().unwrap().keys())
            .map(|kind| {
                let action = match kind.as_str() {
                    "Put" => "PutItem",
                    "Update" => "UpdateItem",
                    "Delete" => "DeleteItem",
                    "ConditionCheck" => "ConditionCheckItem",
                    "Get" => "GetItem",
                    other => panic!("unknown transaction item {other}"),
                };
                format!("dynamodb:{action} on table")
            })
            .collect(),
        "Query" | "Scan" => match body["IndexName"].as_str() {
            Some(index) => vec![format!("dynamodb:{operation} on index/{index}")],
            None => vec![format!("dynamodb:{operation} on table")],
        },
        other => vec![format!("dynamodb:{other} on table")],
    }
}

/// The partition keys an item request names on the table (none for index queries and
/// scans): what IAM evaluates `dynamodb:LeadingKeys` against.
fn leading_keys(operation: &str, body: &Value) -> Vec<String> {
    let partition = |item: &Value| {
        item["Key"][PARTITION_KEY]["S"]
            .as_str()
            .or_else(|| item["Item"][PARTITION_KEY]["S"].as_str())
            .map(str::to_owned)
    };
    match operation {
        "TransactWriteItems" | "TransactGetItems" => one_or_many(&body["TransactItems"])
            .into_iter()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(partition)
            .collect(),
        "Query" if body["IndexName"].is_null() => body["ExpressionAttributeValues"][":pk"]["S"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
        "Query" | "Scan" => Vec::new(),
        _ => partition(body).into_iter().collect(),
    }
}

async fn audited<T>(operation: StoreOperation, call: impl Future<Output = T>) -> T {
    CURRENT_OPERATION.scope(operation, call).await
}

/// The DynamoDB store with every call labelled for the audit (`StoreDecorator` labels each
/// port method with its `StoreOperation`, whose IAM declaration in permissions.rs is an
/// exhaustive match: a new method fails to compile until it is declared).
struct AuditedStore(DynamoStore, StoreFaults);

/// Store failures a call-path test injects to reach the paths that only failures take.
#[derive(Debug, Clone, Default)]
struct StoreFaults {
    /// The next N `open_trigger` calls answer `Unavailable` (nothing is claimed or sent).
    failing_open: Arc<AtomicU32>,
}

impl StoreFaults {
    fn fail_next_open(&self) {
        self.failing_open.fetch_add(1, Ordering::SeqCst);
    }

    fn take_open_failure(&self) -> bool {
        self.failing_open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl StoreDecorator for AuditedStore {
    fn inner(&self) -> &dyn TriggerStore {
        &self.0
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        operation: StoreOperation,
        call: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        if operation == StoreOperation::OpenTrigger && self.1.take_open_failure() {
            return Box::pin(async {
                Err(StoreError::Unavailable {
                    message: "injected: the table is busy".into(),
                })
            });
        }
        Box::pin(audited(operation, call))
    }
}

/// The conformance suite's adapter with the audit in between.
struct AuditedDynamo(IamAudit);

#[async_trait]
impl StoreUnderTest for AuditedDynamo {
    async fn fixture_with(&self, settings: StoreSettings) -> Fixture {
        // moto applies a conditional write without a lock, so racing writes can both pass;
        // the serializing proxy makes each write atomic, as DynamoDB is.
        let (config, proxy) = store_suite::serialized_moto().await;
        let table = unique_name("iam-audit");
        create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
            .await
            .unwrap();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .interceptor(self.0.clone())
                .build(),
        );
        let clock = Arc::new(shared::clock::ManualClock::new(store_suite::start_time()));
        let store = DynamoStore::new(client, table, clock.clone()).with_settings(settings);
        Fixture::new(
            Arc::new(AuditedStore(store, StoreFaults::default())),
            clock,
            Some(Box::new(proxy)),
        )
    }
}

/// Runs the whole store conformance suite on moto_server and checks, request by request,
/// that permissions.rs declares every IAM action the adapter needs — and, per function,
/// that nothing declared goes unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_declared_permissions_cover_every_request_the_store_sends() {
    let audit = IamAudit::default();
    let adapter = AuditedDynamo(audit.clone());
    store_suite::a_trigger_is_opened_and_settled_with_its_claim(&adapter).await;
    store_suite::a_taken_over_holder_cannot_settle(&adapter).await;
    store_suite::a_settle_on_a_changed_record_is_stale(&adapter).await;
    store_suite::concurrent_claims_have_exactly_one_winner(&adapter).await;
    store_suite::a_different_fingerprint_conflicts(&adapter).await;
    store_suite::an_expired_lease_is_taken_over_before_sending(&adapter).await;
    store_suite::a_sending_claim_is_never_taken_over(&adapter).await;
    store_suite::a_slow_sending_holder_still_completes(&adapter).await;
    store_suite::a_stale_owner_cannot_complete(&adapter).await;
    store_suite::a_replay_after_completion_returns_the_stored_result(&adapter).await;
    store_suite::release_lets_the_next_attempt_win(&adapter).await;
    store_suite::a_join_fires_once_under_concurrent_duplicates(&adapter).await;
    store_suite::a_failed_upstream_closes_the_join(&adapter).await;
    store_suite::a_join_window_expiry_opens_a_new_generation(&adapter).await;
    store_suite::retention_hides_and_purges_expired_items(&adapter).await;
    store_suite::listings_are_newest_first_and_paged(&adapter).await;
    store_suite::origin_and_pipeline_lookups(&adapter).await;
    store_suite::record_updates_are_versioned(&adapter).await;
    store_suite::the_sweep_finds_due_schedule_and_chain_records(&adapter).await;
    store_suite::secret_parameters_are_redacted(&adapter).await;
    store_suite::scheduler_state_only_moves_forward(&adapter).await;
    store_suite::schedule_definitions_are_saved_with_their_state(&adapter).await;
    store_suite::pause_flags_are_set_listed_and_cleared(&adapter).await;
    store_suite::rate_tickets_are_counted_per_window(&adapter).await;
    store_suite::invalid_requests_are_refused_without_retry(&adapter).await;

    assert!(
        audit.unattributed.lock().unwrap().is_empty(),
        "requests outside any store operation: {:?}",
        audit.unattributed.lock().unwrap()
    );
    let observed = audit.observed.lock().unwrap().clone();

    // Nothing the adapter sends is missing from the declaration (it would be AccessDenied).
    let mut undeclared = Vec::new();
    for (operation, grants) in &observed {
        let access = operation.access();
        let declared: BTreeSet<String> = access
            .table_actions
            .iter()
            .map(|action| format!("{action} on table"))
            .chain(
                access
                    .queried_indexes
                    .iter()
                    .map(|index| format!("dynamodb:Query on index/{index}")),
            )
            .collect();
        for grant in grants.difference(&declared) {
            undeclared.push(format!("{}: {grant}", operation.name()));
        }
    }
    assert!(
        undeclared.is_empty(),
        "the store sends requests permissions.rs does not declare:\n{undeclared:#?}"
    );

    // The suite reaches every operation the functions use...
    let used: BTreeSet<StoreOperation> = LambdaFunction::ALL
        .iter()
        .flat_map(|function| function.store_operations())
        .collect();
    let unexercised: Vec<_> = used
        .iter()
        .filter(|operation| !observed.contains_key(operation))
        .map(|operation| operation.name())
        .collect();
    assert!(
        unexercised.is_empty(),
        "the suite never calls {unexercised:?}: their declarations are unchecked"
    );
    // ...and each function's grants are all needed by some request of its operations.
    for function in LambdaFunction::ALL {
        let needed: BTreeSet<String> = function
            .store_operations()
            .iter()
            .filter_map(|operation| observed.get(operation))
            .flatten()
            .cloned()
            .collect();
        // The notification outbox's requests are not the store port's: the call-path test
        // (call_paths.rs) records those.
        let outbox: BTreeSet<String> = function
            .outbox_actions()
            .iter()
            .map(|action| grant_name(&DynamoGrant::Table(action)))
            .collect();
        let granted: BTreeSet<String> = function
            .dynamodb_grants()
            .iter()
            .map(grant_name)
            .filter(|grant| !outbox.contains(grant) || needed.contains(grant))
            .collect();
        let unneeded: Vec<_> = granted.difference(&needed).collect();
        assert!(
            unneeded.is_empty(),
            "{function:?} is granted {unneeded:?}, which none of its store operations sent"
        );
    }
}

/// Every Secrets Manager request as (`X-Amz-Target`, `SecretId`), in order.
#[derive(Debug, Clone, Default)]
struct SecretsAudit(Arc<Mutex<Vec<(String, String)>>>);
impl Intercept for SecretsAudit {
    fn name(&self) -> &'static str {
        "SecretsAudit"
    }
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or("")
            .to_owned();
        let body: Value = serde_json::from_slice(request.body().bytes().unwrap_or(b"{}"))?;
        let id = body["SecretId"].as_str().unwrap_or("").to_owned();
        self.0.lock().unwrap().push((target, id));
        Ok(())
    }
}

/// The secrets port sends `GetSecretValue` and nothing else, for exactly the configured id:
/// the one action and resource each role is granted per secret.
#[tokio::test]
async fn reading_a_secret_is_one_get_secret_value_on_its_arn() {
    let config = sdk_config().await;
    let admin = aws_sdk_secretsmanager::Client::new(&config);
    let mut arns = BTreeMap::new();
    for (kind, value) in [
        (SecretKind::CircleCiTokens, r#"{"default": "token"}"#),
        (SecretKind::WebhookSigningSecrets, r#"["current"]"#),
        (
            SecretKind::ClientKeyHashes,
            r#"{"bot": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}"#,
        ),
        (
            SecretKind::NotifySecrets,
            r#"{"hook-url": "https://example.test/hook"}"#,
        ),
    ] {
        let created = admin
            .create_secret()
            .name(unique_name(&format!("iam-{kind}")))
            .secret_string(value)
            .send()
            .await
            .unwrap();
        arns.insert(kind.to_string(), created.arn().unwrap().to_owned());
    }
    let audit = SecretsAudit::default();
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&config)
            .interceptor(audit.clone())
            .build(),
    );
    let source = SecretsManagerSource::new(
        client,
        SecretIds {
            circleci_tokens: Some(arns["circleci-tokens"].clone()),
            webhook_signing_secrets: Some(arns["webhook-signing-secrets"].clone()),
            client_key_hashes: Some(arns["client-key-hashes"].clone()),
            notify_secrets: Some(arns[&SecretKind::NotifySecrets.to_string()].clone()),
        },
    );
    for kind in SecretKind::ALL {
        source.fetch(kind).await.unwrap();
    }
    let requests = audit.0.lock().unwrap().clone();
    let expected: Vec<(String, String)> = SecretKind::ALL
        .iter()
        .map(|kind| {
            (
                "secretsmanager.GetSecretValue".to_owned(),
                arns[&kind.to_string()].clone(),
            )
        })
        .collect();
    assert_eq!(requests, expected);
}

// ============================================================================ HTTP API

#[test]
fn routes_reach_the_right_functions_on_the_default_stage_with_throttling() {
    let api = properties("TriggersApi");
    assert_eq!(resource("TriggersApi")["Type"], "AWS::Serverless::HttpApi");
    // A named stage would put /<stage> in front of every path the axum routers see.
    assert_eq!(api["StageName"], "$default");
    assert_eq!(
        api["DefaultRouteSettings"]["ThrottlingRateLimit"],
        reference("ApiThrottleRate")
    );
    assert_eq!(
        api["DefaultRouteSettings"]["ThrottlingBurstLimit"],
        reference("ApiThrottleBurst")
    );
    assert_eq!(
        api["AccessLogSettings"]["DestinationArn"],
        get_att("ApiAccessLogGroup", "Arn")
    );

    let mut routes = BTreeMap::new();
    for function in LambdaFunction::ALL {
        let events = function_properties(function)["Events"].clone();
        for (name, event) in events.as_object().into_iter().flatten() {
            if event["Type"] == "SQS" {
                // The worker: fed by the delivery queue, reporting per-message failures,
                // without a batching window (deliveries start within seconds).
                assert_eq!(function, LambdaFunction::Chained, "{name}");
                let source = &event["Properties"];
                assert_eq!(source["Queue"], get_att("WebhookDeliveryQueue", "Arn"));
                assert_eq!(
                    source["FunctionResponseTypes"],
                    json!(["ReportBatchItemFailures"])
                );
                assert_eq!(source["MaximumBatchingWindowInSeconds"], 0);
                continue;
            }
            assert_eq!(event["Type"], "HttpApi", "{function:?} {name}");
            assert_eq!(event["Properties"]["ApiId"], reference("TriggersApi"));
            let route = format!(
                "{} {}",
                event["Properties"]["Method"].as_str().unwrap(),
                event["Properties"]["Path"].as_str().unwrap()
            );
            assert!(
                routes
                    .insert(route.clone(), (function, event.clone()))
                    .is_none(),
                "{route}"
            );
        }
    }
    let webhook_route = format!("POST {}", shared::triggers::chained::WEBHOOK_PATH);
    let names: BTreeMap<&str, LambdaFunction> = routes
        .iter()
        .map(|(route, (function, _))| (route.as_str(), *function))
        .collect();
    assert_eq!(
        names,
        BTreeMap::from([
            (webhook_route.as_str(), LambdaFunction::Webhooks),
            ("ANY /v1/{proxy+}", LambdaFunction::Http),
            ("GET /healthz", LambdaFunction::Http),
        ])
    );
    let (_, webhook) = &routes[&webhook_route];
    assert_eq!(
        webhook["Properties"]["RouteSettings"],
        json!({
            "ThrottlingRateLimit": reference("WebhookThrottleRate"),
            "ThrottlingBurstLimit": reference("WebhookThrottleBurst"),
        })
    );
    let outputs = &template()["Outputs"];
    assert_eq!(
        outputs["WebhookUrl"]["Value"]["Fn::Sub"],
        format!(
            "https://${{TriggersApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}{}",
            shared::triggers::chained::WEBHOOK_PATH
        )
    );
    assert_eq!(
        outputs["ApiUrl"]["Value"]["Fn::Sub"],
        "https://${TriggersApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    );
}

// ============================================================================ alarms

/// (namespace, metric, dimensions) of every metric an alarm watches.
fn watched_metrics(alarm: &Value) -> Vec<(String, String, Value)> {
    let props = &alarm["Properties"];
    if props.get("MetricName").is_some() {
        return vec![(
            props["Namespace"].as_str().unwrap().to_owned(),
            props["MetricName"].as_str().unwrap().to_owned(),
            props["Dimensions"].clone(),
        )];
    }
    one_or_many(&props["Metrics"])
        .into_iter()
        .filter_map(|query| query.get("MetricStat"))
        .map(|stat| {
            let metric = &stat["Metric"];
            (
                metric["Namespace"].as_str().unwrap().to_owned(),
                metric["MetricName"].as_str().unwrap().to_owned(),
                metric["Dimensions"].clone(),
            )
        })
        .collect()
}

#[test]
fn alarms_watch_what_the_code_emits_and_notify_the_topic() {
    let alarms = resources_of_type("AWS::CloudWatch::Alarm");
    let environment = json!([{ "Name": "Environment", "Value": reference("Environment") }]);
    let mut watched = BTreeSet::new();
    for (id, alarm) in &alarms {
        let props = &alarm["Properties"];
        assert_eq!(
            props["AlarmActions"],
            json!([reference("AlarmTopic")]),
            "{id}"
        );
        assert!(props["AlarmDescription"].as_str().is_some(), "{id}");
        for (namespace, metric, dimensions) in watched_metrics(alarm) {
            if namespace == shared::telemetry::METRICS_NAMESPACE {
                // emit_metric always publishes the [Environment] dimension set.
                assert_eq!(dimensions, environment, "{id}");
            }
            watched.insert((namespace, metric, dimensions.to_string()));
        }
        // In metric math a missing data point in one series hides the others' points.
        if let Some(expression) = one_or_many(&props["Metrics"])
            .into_iter()
            .find_map(|query| query["Expression"].as_str())
        {
            for query in one_or_many(&props["Metrics"]) {
                if query.get("MetricStat").is_some() {
                    let id_ = query["Id"].as_str().unwrap();
                    assert!(
                        expression.contains(&format!("FILL({id_}, 0)")),
                        "{id}: {expression} must FILL({id_}, 0)"
                    );
                }
            }
        }
    }

    let custom = |metric: &str| {
        (
            shared::telemetry::METRICS_NAMESPACE.to_owned(),
            metric.to_owned(),
            environment.to_string(),
        )
    };
    for metric in [
        "TriggersFailed",
        "TriggersAmbiguous",
        shared::triggers::chained::http::SIGNATURE_FAILURE_METRIC,
        shared::triggers::scheduled::lambda::TICK_SUCCEEDED_METRIC,
        shared::notify::GIVEN_UP_METRIC,
    ] {
        assert!(watched.contains(&custom(metric)), "no alarm on {metric}");
    }
    for function in LambdaFunction::ALL {
        let dimensions =
            json!([{ "Name": "FunctionName", "Value": reference(logical_id(function)) }])
                .to_string();
        for metric in ["Errors", "Throttles"] {
            assert!(
                watched.contains(&(
                    "AWS/Lambda".to_owned(),
                    metric.to_owned(),
                    dimensions.clone()
                )),
                "no {metric} alarm for {function:?}"
            );
        }
    }
    for (metric, queue) in [
        ("ApproximateNumberOfMessagesVisible", "TickDeadLetterQueue"),
        // A webhook delivery not settled after its last attempt; and a worker falling behind.
        (
            "ApproximateNumberOfMessagesVisible",
            "WebhookDeadLetterQueue",
        ),
        ("ApproximateAgeOfOldestMessage", "WebhookDeliveryQueue"),
    ] {
        assert!(
            watched.contains(&(
                "AWS/SQS".to_owned(),
                metric.to_owned(),
                json!([{ "Name": "QueueName", "Value": get_att(queue, "QueueName") }]).to_string()
            )),
            "no {metric} alarm on {queue}"
        );
    }

    // The dead-man's switch: five minutes without a successful tick is an alarm, and so is
    // no data at all.
    let (id, switch) = alarms
        .iter()
        .find(|(_, alarm)| {
            alarm["Properties"]["MetricName"]
                == shared::triggers::scheduled::lambda::TICK_SUCCEEDED_METRIC
        })
        .unwrap();
    let props = &switch["Properties"];
    assert_eq!(props["TreatMissingData"], "breaching", "{id}");
    assert_eq!(props["ComparisonOperator"], "LessThanThreshold", "{id}");
    assert_eq!(props["Threshold"], 1, "{id}");
    let window = props["Period"].as_i64().unwrap() * props["EvaluationPeriods"].as_i64().unwrap();
    assert!(window <= 300, "{id}: {window} s");

    // Under alias/aws/sns CloudWatch cannot publish: the alarms would be silent.
    assert!(properties("AlarmTopic").get("KmsMasterKeyId").is_none());
}

/// The alarms select on the `[Environment]` dimension set: every EMF line must publish it.
#[test]
fn every_metric_line_publishes_the_environment_dimension_set() {
    let line = shared::telemetry::metric_line(
        "TriggersFailed",
        1.0,
        &[("Source", "schedule")],
        Utc::now(),
    );
    let line: Value = serde_json::from_str(&line).unwrap();
    let metrics = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(metrics["Namespace"], shared::telemetry::METRICS_NAMESPACE);
    assert!(
        one_or_many(&metrics["Dimensions"]).contains(&&json!(["Environment"])),
        "{metrics}"
    );
    assert!(line["Environment"].is_string());
}

// ============================================================================ samconfig.toml

#[test]
fn samconfig_builds_arm64_from_the_template_and_overrides_only_real_parameters() {
    let config: toml::Table = read("samconfig.toml").parse().unwrap();
    let parameters = template()["Parameters"].as_object().unwrap();
    let mut stacks = BTreeSet::new();
    for environment in ["default", "dev", "prod"] {
        let section = config[environment].as_table().unwrap();
        let global = section["global"]["parameters"].as_table().unwrap();
        assert_eq!(
            global["beta_features"].as_bool(),
            Some(true),
            "{environment}"
        );
        assert!(stacks.insert(global["stack_name"].as_str().unwrap().to_owned()));
        let build = section["build"]["parameters"].as_table().unwrap();
        assert_eq!(
            build["template_file"].as_str(),
            Some("infra/template.yaml"),
            "{environment}"
        );
        assert_eq!(
            build["beta_features"].as_bool(),
            Some(true),
            "{environment}"
        );
        let validate = section["validate"]["parameters"].as_table().unwrap();
        assert_eq!(validate["lint"].as_bool(), Some(true), "{environment}");
        let deploy = section["deploy"]["parameters"].as_table().unwrap();
        assert_eq!(deploy["capabilities"].as_str(), Some("CAPABILITY_IAM"));
        let overrides: Vec<&str> = match deploy.get("parameter_overrides") {
            Some(toml::Value::Array(items)) => items.iter().map(|v| v.as_str().unwrap()).collect(),
            Some(toml::Value::String(text)) => text.split_whitespace().collect(),
            None => Vec::new(),
            Some(other) => panic!("{environment}: parameter_overrides {other}"),
        };
        for assignment in &overrides {
            let (name, _) = assignment.split_once('=').unwrap();
            assert!(
                parameters.contains_key(name),
                "{environment} overrides {name}, which the template does not declare"
            );
        }
        if environment != "default" {
            assert!(
                overrides.contains(&format!("Environment={environment}").as_str()),
                "{environment}"
            );
            for kind in SecretKind::ALL {
                let (parameter, _) = secret_wiring(kind);
                assert!(
                    overrides
                        .iter()
                        .any(|o| o.starts_with(&format!("{parameter}="))),
                    "{environment} does not set {parameter}"
                );
            }
        }
    }
}
