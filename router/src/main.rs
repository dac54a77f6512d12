//! The `router` binary.
fn main() {}
