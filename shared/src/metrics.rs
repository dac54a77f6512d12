//! Prometheus metric names shared by code, dashboards and alerts.
//!
//! Components register their metrics into a registry they are given; the names are
//! constants here so that `deploy/` and the code cannot drift apart.

/// Control plane (every component that watches etcd).
pub const CONTROL_SNAPSHOT_REVISION: &str = "shardline_control_snapshot_revision";
pub const CONTROL_SNAPSHOT_AGE_SECONDS: &str = "shardline_control_snapshot_age_seconds";
pub const CONTROL_WATCH_CONNECTED: &str = "shardline_control_watch_connected";
pub const CONTROL_RESYNCS_TOTAL: &str = "shardline_control_resyncs_total";
pub const CONTROL_INVALID_VALUES_TOTAL: &str = "shardline_control_invalid_values_total";
/// Values read with fields (or enum values) this release does not know: written by a
/// newer release, used without them (`docs/etcd-layout.md`, schema evolution).
pub const CONTROL_IGNORED_FIELDS_TOTAL: &str = "shardline_control_ignored_fields_total";
pub const CONTROL_LEASE_REGISTRATIONS_TOTAL: &str = "shardline_control_lease_registrations_total";

/// Router.
pub const ROUTER_REQUESTS_TOTAL: &str = "shardline_router_requests_total";
pub const ROUTER_REQUEST_DURATION_SECONDS: &str = "shardline_router_request_duration_seconds";
pub const ROUTER_RETRIES_TOTAL: &str = "shardline_router_retries_total";
pub const ROUTER_UPSTREAM_DURATION_SECONDS: &str = "shardline_router_upstream_duration_seconds";
pub const ROUTER_UPSTREAM_REQUESTS_TOTAL: &str = "shardline_router_upstream_requests_total";
pub const ROUTER_RETRIES_REFUSED_TOTAL: &str = "shardline_router_retries_refused_total";
pub const ROUTER_CLIENT_DEADLINE_TIMEOUTS_TOTAL: &str =
    "shardline_router_client_deadline_timeouts_total";
pub const ROUTER_IN_FLIGHT: &str = "shardline_router_in_flight";
pub const ROUTER_SHADOW_REQUESTS_TOTAL: &str = "shardline_router_shadow_requests_total";
pub const ROUTER_SHADOW_ABS_DIFF: &str = "shardline_router_shadow_abs_diff";
pub const ROUTER_SHADOW_ABS_DIFF_MAX: &str = "shardline_router_shadow_abs_diff_max";
pub const ROUTER_TENANT_LIMITED_TOTAL: &str = "shardline_router_tenant_limited_total";
pub const ROUTER_INFLIGHT_BODY_BYTES: &str = "shardline_router_inflight_body_bytes";
pub const ROUTER_INFLIGHT_BYTES_REFUSED_TOTAL: &str =
    "shardline_router_inflight_bytes_refused_total";
pub const ROUTER_SERVING_THREADS_ACTIVE: &str = "shardline_router_serving_threads_active";
pub const ROUTER_TLS_RELOADS_TOTAL: &str = "shardline_router_tls_reloads_total";
pub const ROUTER_CONNECTION_MOVES_TOTAL: &str = "shardline_router_connection_moves_total";

/// Placement controller (the elected router replica).
pub const PLACEMENT_LEADER: &str = "shardline_placement_leader";
pub const PLACEMENT_MOVES_TOTAL: &str = "shardline_placement_moves_total";
pub const PLACEMENT_PREFETCH_TOTAL: &str = "shardline_placement_prefetch_total";
pub const PLACEMENT_RECONCILE_DURATION_SECONDS: &str =
    "shardline_placement_reconcile_duration_seconds";
pub const PLACEMENT_WRITES_TOTAL: &str = "shardline_placement_writes_total";
pub const PLACEMENT_VIOLATIONS: &str = "shardline_placement_violations";
pub const PLACEMENT_SHARDS: &str = "shardline_placement_shards";
pub const PLACEMENT_MAX_OVERLAP: &str = "shardline_placement_max_overlap";
pub const PLACEMENT_SLOTS_MAX: &str = "shardline_placement_slots_max";
pub const PLACEMENT_SLOTS_MIN: &str = "shardline_placement_slots_min";
/// Members added by balancing swaps (the controller's own moves towards an even load).
pub const PLACEMENT_BALANCE_MOVES_TOTAL: &str = "shardline_placement_balance_moves_total";
/// Most and fewest slots on one worker that may take shards, over the average.
pub const PLACEMENT_LOAD_MAX_RATIO: &str = "shardline_placement_load_max_ratio";
pub const PLACEMENT_LOAD_MIN_RATIO: &str = "shardline_placement_load_min_ratio";
/// Per worker (label `worker`, bounded by the fleet size): current members of stored
/// assignments it holds.
pub const PLACEMENT_WORKER_SLOTS: &str = "shardline_placement_worker_slots";

/// Worker.
pub const WORKER_MODEL_LOADS_TOTAL: &str = "shardline_worker_model_loads_total";
pub const WORKER_MODEL_LOAD_DURATION_SECONDS: &str = "shardline_worker_model_load_duration_seconds";
pub const WORKER_COLD_START_WAIT_SECONDS: &str = "shardline_worker_cold_start_wait_seconds";
pub const WORKER_MODELS_RESIDENT: &str = "shardline_worker_models_resident";
pub const WORKER_RESIDENT_BYTES: &str = "shardline_worker_resident_bytes";
pub const WORKER_CAPACITY_BYTES: &str = "shardline_worker_capacity_bytes";
pub const WORKER_EVICTIONS_TOTAL: &str = "shardline_worker_evictions_total";
pub const WORKER_INFERENCE_DURATION_SECONDS: &str = "shardline_worker_inference_duration_seconds";
pub const WORKER_IN_FLIGHT: &str = "shardline_worker_in_flight";
pub const WORKER_ACTIVATION_BYTES: &str = "shardline_worker_activation_bytes";
pub const WORKER_ACTIVATION_REFUSALS_TOTAL: &str = "shardline_worker_activation_refusals_total";
pub const WORKER_BLOCKING_WORK: &str = "shardline_worker_blocking_work";
pub const WORKER_BLOCKING_REFUSED_TOTAL: &str = "shardline_worker_blocking_refused_total";

/// Client connections of a router or worker (`shardline_service::conn`).
pub const CONNECTIONS_OPEN: &str = "shardline_connections_open";
pub const CONNECTIONS_MAX: &str = "shardline_connections_max";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "shardline_connections_refused_total";
/// Label `reason`: header_timeout, body_timeout, idle_timeout, write_timeout,
/// body_unread, shutdown.
pub const CONNECTIONS_CLOSED_TOTAL: &str = "shardline_connections_closed_total";

/// Every component.
pub const BUILD_INFO: &str = "shardline_build_info";
