//! CircleCI webhook bodies (`workflow-completed`, `job-completed`): parsing.
//!
//! Beyond "no panic":
//! - an accepted event re-parses to itself from its own JSON (`raw`);
//! - a signed delivery received at the event's own time is accepted as exactly that event
//!   (the receiver's order: signature, parse, replay window);
//! - a refusal names the field at fault and never echoes a large part of the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use shared::triggers::chained::webhook::{EventError, ReplayWindow, parse_event, receive, sign_v1};

/// Longest refusal message: field paths and echoes are capped well below this.
const MAX_ERROR_LEN: usize = 1024;

fuzz_target!(|data: &[u8]| {
    match parse_event(data) {
        Ok(event) => {
            let again = serde_json::to_vec(event.raw()).expect("a parsed body serialises");
            assert_eq!(parse_event(&again).as_ref(), Ok(&event));
            assert!(!event.id().is_empty());
            // Accessors used by rule matching and templates.
            let _ = (
                event.kind(),
                event.project_slug().to_string(),
                event.revision(),
                event.branch(),
                event.tag(),
                event.workflow(),
                event.job(),
                event.status().known(),
            );
            let secret = SecretString::from("fuzz-secret".to_owned());
            let signature = sign_v1(data, &secret);
            let received = receive(
                Some(&signature),
                data,
                &[secret],
                event.happened_at(),
                &ReplayWindow::default(),
            );
            assert_eq!(received, Ok(event));
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
            assert!(
                message.chars().count() <= MAX_ERROR_LEN,
                "{} characters: {message:.200}",
                message.len()
            );
            if let EventError::Field { path, .. } = &error {
                assert!(!path.is_empty(), "{error:?} names no field");
            }
        }
    }
});
