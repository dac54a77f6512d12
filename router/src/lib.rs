//! Shardline's router: the authenticated Open Inference Protocol front door that maps a
//! tenant's request onto its shard of workers, and `shardctl`, the operator CLI.

pub mod controller;
