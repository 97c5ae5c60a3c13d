//! The notification outbox suite (tests/integration/src/outbox_suite.rs) against both
//! adapters, and the sweeper over each with a real HTTP receiver and an injected clock.

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    integration_tests::outbox_suite::$case(&integration_tests::outbox_suite::Sqlite).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    integration_tests::outbox_suite::$case(&integration_tests::outbox_suite::Dynamo).await;
                }
            )*
        }
    };
}

conformance!(
    enqueue_is_deduplicated_per_trigger_status_and_sink,
    due_entries_come_earliest_first_and_only_when_due,
    take_is_exclusive_and_moves_the_entry,
    remove_keeps_the_dedup_key,
    a_500_then_200_is_retried_once_and_delivered_once,
    eight_failures_are_given_up_on_the_backoff_schedule,
    two_sweepers_send_a_notification_once,
);
