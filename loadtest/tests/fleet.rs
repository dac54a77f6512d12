//! `loadtest fleet`: a real detached fleet (etcd, a worker, a router) comes up, serves,
//! and `down` stops exactly the recorded processes — not a process that merely has a
//! recorded PID with another start time.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use shardline_loadtest::fleet::{self, FleetOptions, FleetState, is_ours};

/// `target/debug` (or the profile directory) holding the workspace's binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for bin in ["router", "worker", "shardctl"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: build the workspace's binaries first (`just test` does)",
            dir.join(bin).display()
        );
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_stops_exactly_what_up_started() {
    let run = tempfile::tempdir().unwrap();
    let options = FleetOptions {
        run_dir: run.path().to_owned(),
        workers: 1,
        routers: 1,
        memory_budget: 64 << 20,
        idle_ttl: "10m".into(),
        s3: false,
        detach: false,
        bin_dir: bin_dir(),
        router_args: Vec::new(),
        worker_args: Vec::new(),
        etcd_args: Vec::new(),
    };
    let state = fleet::up(&options, |_| {}).await.unwrap();
    let _guard = DownOnDrop(run.path().to_owned());
    assert_eq!(state.processes().len(), 3);
    assert!(state.processes().iter().all(|p| is_ours(p)));

    // It serves: the router is ready, and a tenant can be made through shardctl.
    let ready = reqwest::get(format!("{}/v2/health/ready", state.routers[0].url))
        .await
        .unwrap();
    assert!(ready.status().is_success());
    let key = fleet::create_tenant(&state, "acme", Some(1)).unwrap();
    assert!(key.starts_with("sl_"), "{key}");

    // A second `up` on the same run directory is refused while the first runs.
    let again = fleet::up(&options, |_| {}).await.unwrap_err();
    assert!(again.to_string().contains("already running"), "{again}");

    // A stranger whose PID is recorded with another start time must survive `down`.
    let mut stranger = Command::new("sleep").arg("60").spawn().unwrap();
    let mut recorded = FleetState::load(run.path()).unwrap();
    let mut fake = recorded.workers[0].clone();
    fake.name = "stranger".into();
    fake.pid = stranger.id();
    fake.start_time = 1;
    recorded.workers.push(fake);
    std::fs::write(
        run.path().join(fleet::STATE_FILE),
        serde_json::to_vec(&recorded).unwrap(),
    )
    .unwrap();

    let stopped = fleet::down(run.path()).unwrap();
    let mut names = stopped.clone();
    names.sort();
    assert_eq!(names, ["etcd", "r-0", "w-0"], "{stopped:?}");
    for p in state.processes() {
        assert!(!is_ours(p), "{} still runs", p.name);
    }
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "down signalled a process it did not start"
    );
    stranger.kill().unwrap();
    let _ = stranger.wait();
    // The record is gone, so `down` again has nothing to stop.
    assert!(fleet::down(run.path()).is_err());

    // The same run directory comes up again as a fresh fleet (the tenant is not there).
    let state = fleet::up(&options, |_| {}).await.unwrap();
    let again = fleet::create_tenant(&state, "acme", Some(1)).unwrap();
    assert_ne!(again, key);
    fleet::down(run.path()).unwrap();
}

/// Stops the fleet if the test fails half-way (its processes are detached).
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = fleet::down(&self.0);
    }
}
