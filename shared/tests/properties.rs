//! Property tests of what `shared` reads from the outside: webhook signatures and bodies,
//! HTTP request bodies, and the slots a cron expression produces.
//!
//! Bounded (256 cases per property) and seeded (`PROPTEST_RNG_SEED` overrides the seed, and
//! `PROPTEST_CASES` the number of cases) so a run is reproducible and cannot flake.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, LocalResult, TimeZone, Timelike, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use secrecy::SecretString;
use serde_json::{Map, Value};
use shared::triggers::chained::webhook::{
    EventError, SignatureError, parse_event, sign_v1, verify_signature,
};
use shared::triggers::http::Catalog;
use shared::triggers::http::request::{BodyError, parse_body, validate};
use shared::triggers::scheduled::calendar::{ScheduleTiming, SlotKind, next_slots};

/// The seed used unless `PROPTEST_RNG_SEED` is set.
const DEFAULT_SEED: u64 = 0x7368_6172_6564_7031;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        cases: 256,
        // Failures are reported with their minimal input; no files written next to the tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    config
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        Just(Value::String(String::new())),
        Just(Value::String("x".repeat(3000))),
        Just(Value::String("2026-03-29T01:00:00Z".to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,8}", inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

// ----- webhook signatures -----------------------------------------------------------------

/// Headers shaped like `circleci-signature`: scheme=value elements, some of them broken.
fn signature_header() -> impl Strategy<Value = String> {
    let element = prop_oneof![
        "[0-9a-f]{64}".prop_map(|hex| format!("v1={hex}")),
        "[0-9a-fA-F]{0,70}".prop_map(|hex| format!("v1={hex}")),
        "[0-9a-f]{64}".prop_map(|hex| format!("v2={hex}")),
        "\\PC{0,12}".prop_map(|text| format!("v1={text}")),
        "\\PC{0,12}",
        Just(" v1 = ".to_owned()),
        Just("=".to_owned()),
        Just(String::new()),
    ];
    prop::collection::vec(element, 0..5).prop_map(|elements| elements.join(","))
}

// ----- webhook bodies ---------------------------------------------------------------------

/// Our own webhook samples, written to the shape CircleCI documents.
fn webhook_fixtures() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/integration/fixtures/webhooks");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path: PathBuf| {
            let body = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_slice(&body).unwrap())
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        found.len() >= 4,
        "expected the webhook samples in {}",
        dir.display()
    );
    found
}

/// Every JSON pointer below the root of `value` (objects and arrays alike).
fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                let pointer = format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(pointer.clone());
                pointers(member, &pointer, out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let pointer = format!("{prefix}/{index}");
                out.push(pointer.clone());
                pointers(item, &pointer, out);
            }
        }
        _ => {}
    }
}

/// `body` with the value at `pointer` removed (`None`) or replaced.
fn mutate(body: &mut Value, pointer: &str, replacement: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match body.pointer_mut(parent).unwrap() {
        Value::Object(members) => match replacement {
            Some(value) => {
                members.insert(key.replace("~1", "/").replace("~0", "~"), value);
            }
            None => {
                members.remove(&key.replace("~1", "/").replace("~0", "~"));
            }
        },
        Value::Array(items) => {
            let index: usize = key.parse().unwrap();
            match replacement {
                Some(value) => items[index] = value,
                None => {
                    items.remove(index);
                }
            }
        }
        _ => unreachable!("a pointer's parent is a container"),
    }
}

/// `pipeline.vcs.revision` for `/pipeline/vcs/revision`.
fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// Whether two dotted paths are the same field or one contains the other.
fn related(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner == outer || inner.starts_with(&format!("{outer}.")) || outer.is_empty()
    };
    inside(a, b) || inside(b, a)
}

// ----- cron expressions -------------------------------------------------------------------

/// One valid field: `*`, `*/n`, `a`, `a-b`, `a-b/n`, or a list of those.
fn cron_field(low: u32, high: u32) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("*".to_owned()),
        (1..=high).prop_map(|step| format!("*/{step}")),
        (low..=high).prop_map(|value| value.to_string()),
        (low..=high, low..=high).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (low..=high, low..=high, 1..=high).prop_map(|(a, b, step)| format!(
            "{}-{}/{step}",
            a.min(b),
            a.max(b)
        )),
    ];
    prop::collection::vec(piece, 1..4).prop_map(|pieces| pieces.join(","))
}

fn valid_timing() -> impl Strategy<Value = ScheduleTiming> {
    let zone = prop::sample::select(vec![
        "UTC",
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Apia",
        "America/Santiago",
        "Europe/London",
    ]);
    (
        cron_field(0, 59),
        cron_field(0, 23),
        cron_field(1, 31),
        cron_field(1, 12),
        cron_field(0, 7),
        zone,
    )
        .prop_filter_map(
            "expressions that never fire are rejected by the parser",
            |(minute, hour, day, month, weekday, zone)| {
                ScheduleTiming::new(&format!("{minute} {hour} {day} {month} {weekday}"), zone).ok()
            },
        )
}

// ----- request bodies ---------------------------------------------------------------------

const ENDPOINTS: &str = r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy", branch = "main", branches = ["release/*"] }
parameters.version = { type = "string", pattern = '^\d+\.\d+\.\d+$', required = true }
parameters.dry_run = { type = "boolean", default = false }
parameters.shards = { type = "integer", minimum = 1, maximum = 8 }

[[endpoint]]
name = "any-branch"
target = { project = "gh/acme/web", branches = ["*"], tags = ["v*"] }

[[endpoint]]
name = "approve-latest"
action = "approve"
job = "hold"
select = "latest"
target = { project = "gh/acme/deploy", branches = ["main"] }

[[endpoint]]
name = "rerun"
action = "rerun"
from_failed = true
target = { project = "gh/acme/e2e", branch = "main" }
"#;

fn catalog() -> Catalog {
    Catalog::new(&shared::config::parse_str(ENDPOINTS, "endpoints.toml").unwrap()).unwrap()
}

/// Objects shaped like a request body: the documented members (and others) with any values.
fn request_object() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("branch".to_owned()),
        Just("tag".to_owned()),
        Just("select".to_owned()),
        Just("parameters".to_owned()),
        "\\PC{0,8}",
    ];
    let text = prop_oneof![
        Just("main".to_owned()),
        Just("release/1.4".to_owned()),
        Just("v1.2.3".to_owned()),
        Just("latest".to_owned()),
        Just("trigger:0190b8c2-6c0e-7d4e-8a51-1f0e4c3b2a19".to_owned()),
        Just("pipeline:not-a-uuid".to_owned()),
        Just("revision:0123abc".to_owned()),
        Just("0190b8c2-6c0e-7d4e-8a51-1f0e4c3b2a19".to_owned()),
        Just("refs/heads/../x".to_owned()),
        "\\PC{0,300}",
    ];
    let parameters = prop::collection::vec(
        (
            prop_oneof![
                Just("version".to_owned()),
                Just("dry_run".to_owned()),
                Just("shards".to_owned()),
                "\\PC{0,80}",
            ],
            prop_oneof![
                Just(Value::from("1.2.3")),
                Just(Value::from(4)),
                Just(Value::from(9)),
                Just(Value::from(true)),
                json_value(),
            ],
        ),
        0..6,
    )
    .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>()));
    let value = prop_oneof![text.prop_map(Value::String), parameters, json_value(),];
    prop::collection::vec((key, value), 0..6)
        .prop_map(|members| Value::Object(members.into_iter().collect()))
}

proptest! {
    #![proptest_config(config())]

    // ----- webhook signatures -----

    #[test]
    fn verify_signature_never_panics_on_arbitrary_headers(
        header in prop::option::of(prop_oneof!["\\PC{0,200}", signature_header()]),
        body in prop::collection::vec(any::<u8>(), 0..256),
        secrets in prop::collection::vec("\\PC{0,24}", 0..3),
    ) {
        let secrets: Vec<SecretString> = secrets.iter().map(|text| secret(text)).collect();
        let result = verify_signature(header.as_deref(), &body, &secrets);
        if header.is_none() {
            prop_assert_eq!(result, Err(SignatureError::Missing));
        }
    }

    #[test]
    fn a_signed_body_verifies_with_its_secret_only(
        body in prop::collection::vec(any::<u8>(), 0..512),
        signing in "\\PC{0,40}",
        other in "\\PC{0,40}",
        extra_scheme in "[0-9a-f]{64}",
    ) {
        prop_assume!(signing != other);
        let header = sign_v1(&body, &secret(&signing));
        prop_assert_eq!(verify_signature(Some(&header), &body, &[secret(&signing)]), Ok(()));
        // Other schemes and spaces around elements do not matter.
        let padded = format!(" v2={extra_scheme} , {header} ");
        prop_assert_eq!(verify_signature(Some(&padded), &body, &[secret(&signing)]), Ok(()));
        // Rotation: the signing secret among others.
        prop_assert_eq!(
            verify_signature(Some(&header), &body, &[secret(&other), secret(&signing)]),
            Ok(())
        );
        prop_assert_eq!(
            verify_signature(Some(&header), &body, &[secret(&other)]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_single_byte_change_of_a_signed_body_is_a_mismatch(
        body in prop::collection::vec(any::<u8>(), 1..512),
        signing in "\\PC{0,40}",
        index in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let header = sign_v1(&body, &secret(&signing));
        let mut changed = body.clone();
        changed[index.index(body.len())] ^= flip;
        prop_assert_eq!(
            verify_signature(Some(&header), &changed, &[secret(&signing)]),
            Err(SignatureError::Mismatch)
        );
    }

    // ----- webhook bodies -----

    #[test]
    fn parse_event_never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = parse_event(&body);
    }

    #[test]
    fn parse_event_never_panics_on_arbitrary_json(value in json_value()) {
        let _ = parse_event(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn mutated_samples_parse_or_name_the_field(
        sample in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        replacement in prop::option::of(json_value()),
    ) {
        let samples = webhook_fixtures();
        let (name, original) = &samples[sample.index(samples.len())];
        let mut paths = Vec::new();
        pointers(original, "", &mut paths);
        let pointer = &paths[at.index(paths.len())];
        let mut body = original.clone();
        mutate(&mut body, pointer, replacement.clone());
        match parse_event(&serde_json::to_vec(&body).unwrap()) {
            Ok(_) => {}
            Err(EventError::Field { path, .. }) => {
                prop_assert!(
                    related(&path, &dotted(pointer)),
                    "{name}: changing {pointer} to {replacement:?} blamed `{path}`"
                );
            }
            Err(EventError::UnsupportedType(_)) => prop_assert_eq!(pointer.as_str(), "/type"),
            Err(other) => prop_assert!(false, "{name}: {pointer} -> {replacement:?}: {other}"),
        }
    }

    // ----- request bodies -----

    #[test]
    fn parse_body_never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_request_body(&body)?;
    }

    #[test]
    fn parse_body_and_validate_never_panic_on_arbitrary_json(value in json_value()) {
        check_request_body(&serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn parse_body_and_validate_never_panic_on_request_shaped_objects(value in request_object()) {
        check_request_body(&serde_json::to_vec(&value).unwrap())?;
    }

    // ----- cron slots -----

    #[test]
    fn next_slots_ascend_strictly_and_match_the_expression(
        timing in valid_timing(),
        after_seconds in 0i64..4_102_444_800,
        count in 1usize..24,
    ) {
        let after = DateTime::<Utc>::from_timestamp(after_seconds, 0).unwrap();
        let slots = next_slots(&timing, after, count);
        prop_assert!(slots.len() <= count);
        let mut previous = after;
        for slot in &slots {
            prop_assert!(slot.at > previous, "{} not after {previous}: {slots:?}", slot.at);
            previous = slot.at;
            let local = slot.local;
            prop_assert!(
                timing.cron.matches_date(local.date())
                    && timing.cron.matches_time(local.hour(), local.minute())
                    && local.second() == 0,
                "{local} does not match `{}`", timing.cron
            );
            match (slot.kind, timing.zone.from_local_datetime(&local)) {
                (SlotKind::Normal, LocalResult::Single(at)) => prop_assert_eq!(at.to_utc(), slot.at),
                (SlotKind::ShiftedFromGap, LocalResult::None) => {}
                (
                    SlotKind::RepeatedFirstOnly | SlotKind::RepeatedFirst,
                    LocalResult::Ambiguous(a, b),
                ) => prop_assert_eq!(a.to_utc().min(b.to_utc()), slot.at),
                (SlotKind::RepeatedSecond, LocalResult::Ambiguous(a, b)) => {
                    prop_assert_eq!(a.to_utc().max(b.to_utc()), slot.at);
                }
                (kind, resolved) => prop_assert!(
                    false,
                    "{local} in {} is {resolved:?} but the slot is {kind:?}", timing.zone
                ),
            }
        }
        // None is skipped: in UTC (no transitions) every matching minute up to the last slot
        // is a slot. Checked minute by minute when that span is short.
        if let (chrono_tz::Tz::UTC, Some(last)) = (timing.zone, slots.last())
            && last.at - after <= chrono::Duration::days(3)
        {
            let mut minute = after.with_second(0).unwrap() + chrono::Duration::minutes(1);
            let mut expected = Vec::new();
            while minute <= last.at {
                let naive = minute.naive_utc();
                if timing.cron.matches_date(naive.date())
                    && timing.cron.matches_time(naive.hour(), naive.minute())
                {
                    expected.push(minute);
                }
                minute += chrono::Duration::minutes(1);
            }
            let found: Vec<DateTime<Utc>> = slots.iter().map(|slot| slot.at).collect();
            prop_assert_eq!(found, expected, "`{}` after {}", timing.cron, after);
        }
    }
}

/// `parse_body`, then `validate` against every endpoint: no panic, and every error says
/// what is wrong and where.
fn check_request_body(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_body(body) {
        Ok(input) => {
            for endpoint in catalog().endpoints() {
                if let Err(errors) = validate(endpoint, &input) {
                    prop_assert!(!errors.is_empty());
                    for error in &errors {
                        prop_assert!(!error.detail.is_empty());
                        prop_assert!(
                            error.pointer.is_some()
                                || error.header.is_some()
                                || error.parameter.is_some(),
                            "{error:?} says not where"
                        );
                    }
                }
            }
        }
        Err(BodyError::Malformed(reason)) => prop_assert!(!reason.is_empty()),
        Err(BodyError::Invalid(errors)) => {
            prop_assert!(!errors.is_empty());
            for error in &errors {
                prop_assert!(error.pointer.is_some(), "{error:?} names no member");
            }
        }
    }
    Ok(())
}

#[test]
fn the_samples_parse() {
    for (name, body) in webhook_fixtures() {
        if let Err(error) = parse_event(&serde_json::to_vec(&body).unwrap()) {
            panic!("{name}: {error}");
        }
    }
}
