//! docs/operations.md lists each failure mode an operator may meet. This keeps the link between
//! its rows and the tests that show them checkable: every row of its two failure tables must
//! name at least one test here, and every test named must exist.

use std::collections::BTreeSet;

/// Each row's first cell and the tests (`module::function`) that provoke it and assert what
/// the row says: status and detail, and where the test can see them, the log line and metric.
const ROWS: &[(&str, &[&str])] = &[
    (
        "Pool exhausted (every connection busy)",
        &[
            "faults::a_locked_table_and_an_exhausted_pool_answer_503_fast_then_recover",
            "metrics::an_exhausted_pool_shows_in_use_connections_waits_and_timeouts",
        ],
    ),
    (
        "Slow or blocked statement (locked table, sick server)",
        &["faults::a_locked_table_and_an_exhausted_pool_answer_503_fast_then_recover"],
    ),
    (
        "Database down (connections refused)",
        &[
            "faults::a_database_outage_gets_fast_503s_and_the_service_recovers_alone",
            "faults::a_restarted_database_costs_one_failed_request_not_one_per_connection",
        ],
    ),
    (
        "Database silent (host frozen, network partition: no answer, no reset)",
        &["faults::a_database_that_stops_answering_gets_503_within_the_deadline"],
    ),
    (
        "Permanent database error (missing table, permission denied, e.g. a wrong `--no-migrate` target)",
        &["faults::a_permanent_database_error_is_500_without_retry_after"],
    ),
    (
        "Database down when `serve` starts",
        &["faults::serve_starts_unready_while_the_database_is_down_and_becomes_ready"],
    ),
    (
        "Migrations fail for another reason (checksum changed, no permission)",
        &["process::a_permanent_migration_failure_exits_non_zero"],
    ),
    (
        "A client sends its body too slowly",
        &["faults::a_slow_body_gets_408_and_never_holds_an_in_flight_slot"],
    ),
    (
        "A second instauth on the same `--data-dir`",
        &["embedded::a_cluster_is_created_owned_alone_stopped_and_restarted"],
    ),
    (
        "instauth killed (SIGKILL) with its embedded cluster running",
        &["embedded::a_server_left_by_a_killed_owner_is_adopted_and_stopped"],
    ),
    (
        "More than `--max-in-flight` auth requests at once",
        &[
            "faults::requests_beyond_the_in_flight_bound_are_shed_at_once",
            "metrics::answers_given_by_admission_are_counted_too",
        ],
    ),
    (
        "The lookup queue longer than the database answers within `--db-acquire-timeout` (queue ÷ (`--db-batch-max` × connections), times the recent round trip)",
        &["faults::a_lookup_queue_longer_than_the_acquire_timeout_is_refused_at_once"],
    ),
    (
        "One source above `--rate-limit-per-minute`",
        &[
            "faults::a_per_ip_rate_limit_answers_429_with_retry_after",
            "faults::the_rate_limit_is_per_source_and_refills",
        ],
    ),
    (
        "Body over 64 KiB",
        &[
            "contract::oversized_bodies_are_413_json",
            "http_fuzz::a_chunked_body_over_64_kib_is_413",
        ],
    ),
    (
        "Malformed HTTP (bad request line, 200 KiB header)",
        &["http_fuzz::malformed_and_truncated_requests_do_not_hurt_the_server"],
    ),
    (
        "Bad chunking in a body",
        &["http_fuzz::malformed_and_truncated_requests_do_not_hurt_the_server"],
    ),
    (
        "SIGTERM / SIGINT",
        &[
            "process::sigterm_stops_accepting_and_finishes_in_flight_requests",
            "process::sigint_stops_accepting_and_finishes_in_flight_requests",
            "embedded::serve_starts_its_own_database_and_stops_it_on_sigterm",
        ],
    ),
    // The table of metrics.
    (
        "Pool exhausted",
        &["metrics::an_exhausted_pool_shows_in_use_connections_waits_and_timeouts"],
    ),
    (
        "Slow or blocked statement, database down or silent",
        &[
            "faults::a_locked_table_and_an_exhausted_pool_answer_503_fast_then_recover",
            "faults::a_database_outage_gets_fast_503s_and_the_service_recovers_alone",
            "faults::a_database_that_stops_answering_gets_503_within_the_deadline",
        ],
    ),
    (
        "Permanent database error",
        &["faults::a_permanent_database_error_is_500_without_retry_after"],
    ),
    (
        "Overload, rate limit, slow or oversize body",
        &[
            "metrics::answers_given_by_admission_are_counted_too",
            "metrics::every_exposed_outcome_moves_for_a_request_that_produces_it",
            "faults::requests_beyond_the_in_flight_bound_are_shed_at_once",
            "faults::a_lookup_queue_longer_than_the_acquire_timeout_is_refused_at_once",
        ],
    ),
    (
        "An instance id claimed by agents of several workspaces (a template copying another's id)",
        &[
            "process::an_instance_claimed_by_two_workspaces_is_logged_with_their_ids",
            "metrics::every_exposed_outcome_moves_for_a_request_that_produces_it",
        ],
    ),
    (
        "Azure intermediates rotated",
        &[
            "azure::a_missing_intermediate_is_fetched_and_the_retry_authenticates",
            "azure::a_fetched_certificate_that_does_not_chain_to_the_pinned_roots_is_not_used",
        ],
    ),
    ("Not ready", &["contract::health_and_readiness"]),
    (
        "Request bodies being received already fill `--max-buffered-body-bytes` (default 32 MiB; slow senders hold their declared length until the body is parsed, times out or they hang up)",
        &[
            "memory::slow_bodies_hold_at_most_the_budget_the_next_gets_503_and_every_ending_gives_it_back",
        ],
    ),
    (
        "Body budget full",
        &[
            "memory::slow_bodies_hold_at_most_the_budget_the_next_gets_503_and_every_ending_gives_it_back",
        ],
    ),
    (
        "`--max-connections` open connections (default 1024)",
        &["memory::beyond_max_connections_a_connection_waits_unaccepted_until_one_closes"],
    ),
    (
        "Connection limit reached",
        &["memory::beyond_max_connections_a_connection_waits_unaccepted_until_one_closes"],
    ),
    (
        "A replica (`--replica-url`) down, refusing the check (missing database or tables, permission denied), or not a standby",
        &["replicas::replicas_that_cannot_serve_are_skipped_from_the_start"],
    ),
    (
        "A replica whose replay lags more than `--replica-max-lag`",
        &[
            "replicas::lookups_land_on_the_standby_and_replication_lag_never_turns_an_agent_away",
            "replicas::a_standby_cut_off_from_its_primary_is_skipped_after_the_max_lag",
        ],
    ),
    (
        "A replica skipped, lagging or failing lookups",
        &[
            "replicas::a_full_replica_pool_sends_one_lookup_to_the_primary_and_keeps_the_replica",
            "replicas::lookups_land_on_the_standby_and_replication_lag_never_turns_an_agent_away",
            "replicas::with_the_standby_stopped_auths_still_succeed",
        ],
    ),
    (
        "A replica that goes silent while in use",
        &[
            "replicas::a_standby_that_goes_silent_in_use_costs_one_request_the_acquire_timeout_at_most",
        ],
    ),
    (
        "The primary down, a replica usable",
        &["replicas::ready_while_a_replica_answers_with_the_primary_stopped"],
    ),
];

/// Rows no test provokes yet; listed so the gap is visible and checked to still be a row.
const UNTESTED: &[&str] = &[];

/// The first cell of every row of the failure tables (those headed `| Failure |`).
fn documented_rows() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    let mut rows = BTreeSet::new();
    let mut in_table = false;
    for line in doc.lines() {
        if line.starts_with("| Failure |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if in_table && !line.starts_with("|---") {
            let first = line
                .trim_start_matches('|')
                .split(" | ")
                .next()
                .unwrap_or_default();
            rows.insert(first.trim().to_owned());
        }
    }
    rows
}

#[test]
fn every_operations_row_names_an_existing_test() {
    let documented = documented_rows();
    assert!(documented.len() >= 20, "{documented:#?}");
    let mapped: BTreeSet<String> = ROWS.iter().map(|(row, _)| (*row).to_owned()).collect();
    let untested: BTreeSet<String> = UNTESTED.iter().map(|row| (*row).to_owned()).collect();
    assert!(
        mapped.is_disjoint(&untested),
        "a row is both mapped and listed as untested: {:?}",
        mapped.intersection(&untested).collect::<Vec<_>>()
    );
    assert_eq!(
        documented,
        mapped.union(&untested).cloned().collect::<BTreeSet<_>>(),
        "rows of docs/operations.md (left) and the rows mapped to tests or listed as untested here (right)"
    );
    for (row, tests) in ROWS {
        assert!(!tests.is_empty(), "{row}: no test");
        for test in *tests {
            let (module, function) = test.split_once("::").expect("module::function");
            let path = format!("{}/tests/api/{module}.rs", env!("CARGO_MANIFEST_DIR"));
            let source =
                std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
            assert!(
                source.contains(&format!("async fn {function}()"))
                    || source.contains(&format!("\nfn {function}()")),
                "{row}: no test {test}"
            );
        }
    }
}
