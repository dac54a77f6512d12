//! Shardline's router: the authenticated Open Inference Protocol front door that maps a
//! tenant's request onto its shard of workers, and `shardctl`, the operator CLI.
//!
//! The request path, failover and the placement controller land with the router issue;
//! the control-plane pieces they use live in `shardline-control` and `shardline-shared`.
