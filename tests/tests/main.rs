//! The end-to-end tests, one binary (one link instead of one per file; the tests of every file
//! run in parallel, each with its own in-process gateway): each former `tests/*.rs` file is a
//! module. The tests of the `sluice` process itself are in `crates/gateway/tests`.

mod access_guards;
mod azure_and_headers;
mod bad_requests;
mod browser_chat;
mod browser_persist;
mod browser_teams;
mod disconnect_policy;
mod error_messages;
mod eventsource_client;
mod first_token_failover;
mod hostile_inputs;
mod long_answers;
mod messages_api;
mod metrics;
mod operations;
mod proxy_stream;
mod redis_hardening;
mod redis_lease_restore;
mod responses_api;
mod responses_retention;
mod resume_http;
mod routes_failover;
mod sdk_anthropic;
mod sdk_node;
mod sdk_python;
mod sdk_responses;
mod shared_limits;
mod shared_streams;
mod slow_bodies;
mod stalled_clients;
mod stream_token_budget;
mod teams;
mod teams_hardening;
mod teams_sdk_python;
mod thinking_signatures;
mod timeouts_and_cancel;
mod ui_stream;
mod upstream_failures;
mod upstream_quirks;
mod upstream_sse_edges;
mod web_markdown;
