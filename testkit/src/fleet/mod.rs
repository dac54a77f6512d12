//! A whole Shardline on loopback, started one way by every suite: real etcd, a model
//! store (a `file://` directory, or moto's S3), workers and routers — real processes, or
//! the suite's own `serve()` in the test process ([`FleetBuilder::in_process`]) — and
//! tenants and models published through the control plane.
//!
//! Layout: this file is the builder and the running [`TestFleet`]; [`node`] is one worker
//! or router (its argument list, process or in-process start, handle); `tenants.rs`
//! creates tenants and publishes models; `score.rs` scores and reads `/metrics`;
//! `load.rs` is steady load; [`ctl`] runs `shardctl`; [`bulk`] writes thousands of
//! tenants straight into etcd.
//!
//! ```no_run
//! # use shardline_testkit::fleet::{Launch, Launcher, TestFleet};
//! # async fn example(launch_worker: Launcher) {
//! let fleet = TestFleet::builder()
//!     .workers(3)
//!     .routers(1)
//!     .s3()
//!     .in_process(Launch::workers(launch_worker))
//!     .start()
//!     .await;
//! let key = fleet.placed_model("acme", "risk", 2, 7).await;
//! let reply = fleet.infer(0, &key, "risk", &shardline_testkit::fleet::rows(1, 0)).await;
//! assert_eq!(reply.status, 200);
//! # }
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a set-up step that fails fails the test"
)]

pub mod bulk;
pub mod ctl;
mod load;
pub mod node;
mod score;
mod tenants;

use std::sync::Arc;
use std::time::Duration;

use shardline_artifacts::{ArtifactStore, StoreOptions};
use shardline_control::{ControlPlane, EtcdStore};
use shardline_shared::keys::Prefix;

use crate::{EtcdProcess, S3Process};

pub use crate::TOKEN;
pub use load::{LoadReport, steady_load};
pub use node::{BoxFuture, Launch, Launcher, Node, Role, Spec, Start};
pub use score::{Reply, infer_body, rows};

/// Input width of the models [`TestFleet::publish`] makes.
pub const DIM: usize = 64;

/// How to start a fleet; [`TestFleet::builder`] has the defaults.
#[derive(Debug)]
pub struct FleetBuilder {
    workers: usize,
    routers: usize,
    s3: bool,
    etcd_args: Vec<String>,
    defaults: Defaults,
}

/// What every node the fleet starts gets.
#[derive(Clone, Debug)]
struct Defaults {
    lease_ttl: String,
    memory_budget: String,
    idle_ttl: String,
    router_args: Vec<String>,
    worker_args: Vec<String>,
    launch: Launch,
}

impl FleetBuilder {
    /// Workers started with the fleet, `w-0`… (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Routers started with the fleet, `r-0`… (default 1).
    pub fn routers(mut self, n: usize) -> Self {
        self.routers = n;
        self
    }
    /// Models in moto's S3 rather than a `file://` directory.
    pub fn s3(mut self) -> Self {
        self.s3 = true;
        self
    }
    /// A raw argument for etcd (e.g. `--quota-backend-bytes=…`).
    pub fn etcd_arg(mut self, arg: &str) -> Self {
        self.etcd_args.push(arg.to_owned());
        self
    }
    /// A raw argument for every router.
    pub fn router_arg(mut self, arg: &str) -> Self {
        self.defaults.router_args.push(arg.to_owned());
        self
    }
    /// A raw argument for every worker.
    pub fn worker_arg(mut self, arg: &str) -> Self {
        self.defaults.worker_args.push(arg.to_owned());
        self
    }
    /// Every worker's `--memory-budget` (default 256MiB).
    pub fn memory_budget(mut self, budget: &str) -> Self {
        self.defaults.memory_budget = budget.to_owned();
        self
    }
    /// Every worker's `--idle-ttl` (default 10m).
    pub fn idle_ttl(mut self, ttl: &str) -> Self {
        self.defaults.idle_ttl = ttl.to_owned();
        self
    }
    /// Every worker's `--lease-ttl` (default 3s).
    pub fn lease_ttl(mut self, ttl: &str) -> Self {
        self.defaults.lease_ttl = ttl.to_owned();
        self
    }
    /// Runs the roles `launch` has a [`Launcher`] for in this process, on the same
    /// argument lists; the others stay processes.
    pub fn in_process(mut self, launch: Launch) -> Self {
        self.defaults.launch = launch;
        self
    }

    pub async fn start(self) -> TestFleet {
        let (etcd, s3) = if self.s3 {
            let etcd = EtcdProcess::start_with(&self.etcd_args);
            let (etcd, s3) = tokio::try_join!(etcd, S3Process::start()).unwrap();
            (etcd, Some(s3))
        } else {
            (
                EtcdProcess::start_with(&self.etcd_args).await.unwrap(),
                None,
            )
        };
        let store_dir = tempfile::tempdir().unwrap();
        let (store_url, store_env) = match &s3 {
            Some(s3) => (s3.store_url(), s3.env()),
            None => (format!("file://{}", store_dir.path().display()), vec![]),
        };
        let options = StoreOptions::default().with_env(store_env.clone());
        let store = ArtifactStore::from_url_with(&store_url, options).unwrap();
        let etcd_store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
        let cp = ControlPlane::new(Arc::new(etcd_store), Prefix::default());
        let mut fleet = TestFleet {
            etcd,
            s3,
            store_dir,
            store,
            store_url,
            store_env,
            cp,
            workers: vec![],
            routers: vec![],
            defaults: self.defaults,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for _ in 0..self.workers {
            fleet.add_worker().await;
        }
        for _ in 0..self.routers {
            fleet.add_router().await;
        }
        fleet
    }
}

/// The running fleet; everything stops when it is dropped.
#[derive(Debug)]
pub struct TestFleet {
    pub etcd: EtcdProcess,
    pub s3: Option<S3Process>,
    pub store_dir: tempfile::TempDir,
    pub store: ArtifactStore,
    pub store_url: String,
    /// What a client of the store needs in its environment (S3's `AWS_*`).
    pub store_env: Vec<(String, String)>,
    pub cp: ControlPlane,
    pub workers: Vec<Node>,
    pub routers: Vec<Node>,
    pub http: reqwest::Client,
    defaults: Defaults,
}

impl TestFleet {
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            workers: 2,
            routers: 1,
            s3: false,
            etcd_args: vec![],
            defaults: Defaults {
                lease_ttl: "3s".into(),
                memory_budget: "256MiB".into(),
                idle_ttl: "10m".into(),
                router_args: vec![],
                worker_args: vec![],
                launch: Launch::default(),
            },
        }
    }

    /// The S3 server; panics for a fleet built without [`FleetBuilder::s3`].
    pub fn s3(&mut self) -> &mut S3Process {
        self.s3.as_mut().expect("a fleet built with .s3()")
    }

    /// What worker `id` would be started with: the fleet's etcd, store and defaults.
    /// Change flags with [`Spec::set`] before [`start_node`](Self::start_node).
    pub fn worker_spec(&self, id: &str) -> Spec {
        let d = &self.defaults;
        Spec::worker(id, &self.etcd.endpoint(), &self.store_url)
            .set("--memory-budget", d.memory_budget.as_str())
            .set("--idle-ttl", d.idle_ttl.as_str())
            .set("--lease-ttl", d.lease_ttl.as_str())
            .args(d.worker_args.iter().cloned())
            .envs(&self.store_env)
    }

    /// What router `id` would be started with.
    pub fn router_spec(&self, id: &str) -> Spec {
        Spec::router(id, &self.etcd.endpoint()).args(self.defaults.router_args.iter().cloned())
    }

    /// Starts one node in this fleet's mode for its role (in this process when the
    /// builder was given a launcher for it, else as a process) and waits until it is
    /// ready. The fleet does not keep it: the caller owns (and may stop) it.
    pub async fn start_node(&self, spec: Spec) -> Node {
        let id = spec.id.clone();
        let started = match self.defaults.launch.get(spec.role) {
            Some(launcher) => spec.launch(launcher).await,
            None => spec.spawn(None).await,
        };
        started.unwrap_or_else(|e| panic!("start {id}: {e:#}"))
    }

    /// Starts worker `w-<n>` into [`workers`](Self::workers); returns its index.
    pub async fn add_worker(&mut self) -> usize {
        let n = self.workers.len();
        let node = self.start_node(self.worker_spec(&format!("w-{n}"))).await;
        self.workers.push(node);
        n
    }

    /// Starts router `r-<n>` into [`routers`](Self::routers); returns its index.
    pub async fn add_router(&mut self) -> usize {
        let n = self.routers.len();
        let node = self.start_node(self.router_spec(&format!("r-{n}"))).await;
        self.routers.push(node);
        n
    }
}
