//! Support of the router's integration suites that is theirs alone (the fleet itself
//! comes from `shardline_testkit::fleet`).

pub mod prometheus;
