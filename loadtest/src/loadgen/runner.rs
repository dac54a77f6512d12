//! The load generator's I/O: resolving the router, reading the model's metadata, and the
//! open- and closed-loop request loops (see the parent module for how open loop keeps its
//! schedule). Finished requests go over a channel to one collector task. Over gRPC
//! (`--protocol grpc`, `--router` naming the router's gRPC listener) calls share HTTP/2
//! connections: in closed loop [`GRPC_STREAMS_PER_CONNECTION`] tasks per connection, in
//! open loop at most `--connections` connections, each carrying as many calls as due.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::{Semaphore, mpsc};

use super::plan::{self, Schedule, TenantMix};
use super::report::{Outcome, Record, Recorder, Report, Setup};
use super::{DEFAULT_FEATURES, DEFAULT_INPUT, Error, Mix, Mode, Options};
use crate::client::{GRPC_STREAMS_PER_CONNECTION, RequestSpec, Sender, connect, exchange};
use crate::protocol::Protocol;

/// How long to wait before retrying a refused connection in closed loop (so a dead router
/// is not hammered in a busy loop).
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// How much of a failed answer's body the report keeps.
const BODY_EXCERPT: usize = 200;
/// Timeout of the metadata request made before the run.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the load described by `options` and reports what it saw.
///
/// Returns an error only when the options are invalid or the router's host does not
/// resolve; failed requests are counted in the report. Call it on the runtime the load
/// should use (a multi-threaded one for high rates).
pub async fn run(options: &Options) -> Result<Report, Error> {
    options.validate()?;
    let (host, port) = parse_router(&options.router).map_err(Error::Options)?;
    let addr = resolve(&host, port)
        .await
        .map_err(|reason| Error::Resolve {
            router: options.router.clone(),
            reason,
        })?;
    let grpc = options.protocol == Protocol::Grpc;
    let (input, features, metadata_error) = input_shape(options, addr).await;
    let payload = plan::infer_body(
        &input,
        options.batch,
        features,
        options.seed,
        options.protocol,
    );
    let described = Protocol::headers(&payload);
    let mut targets = Vec::with_capacity(options.tenants.len());
    for t in &options.tenants {
        let bearer = format!("Bearer {}", t.key);
        let specs = t
            .models
            .iter()
            .map(|m| {
                if grpc {
                    return RequestSpec::grpc_infer(addr, m, &t.key, &payload.body).map(Arc::new);
                }
                let path = format!("/v2/models/{m}/infer");
                let mut headers = vec![("authorization", bearer.as_str())];
                headers.extend(described.iter().map(|(n, v)| (*n, v.as_str())));
                RequestSpec::post_json(addr, &path, &headers, payload.body.clone()).map(Arc::new)
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| Error::Options(format!("tenant {}: {e:#}", t.tenant)))?;
        targets.push(specs);
    }
    let mix = match options.mix {
        Mix::Zipf(s) => TenantMix::zipf(targets.len(), s),
        Mix::Uniform => TenantMix::uniform(targets.len()),
    }
    .ok_or_else(|| Error::Options("invalid tenant mix".to_owned()))?;
    let setup = Setup {
        mode: options.mode,
        mix: options.mix,
        duration: options.duration,
        batch: options.batch,
        features,
        input,
        protocol: options.protocol,
        metadata_error,
        tenants: options.tenants.iter().map(|t| t.tenant.clone()).collect(),
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let mut recorder = Recorder::new(targets.len());
    let collector = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            recorder.record(r);
        }
        recorder
    });
    let opened = Arc::new(AtomicU64::new(0));
    let load = Load {
        addr,
        targets,
        mix,
        start: Instant::now(),
        duration: options.duration,
        timeout: options.timeout,
        seed: options.seed,
        opened: opened.clone(),
        grpc,
        tx,
    };
    let load = Arc::new(load);
    match options.mode {
        Mode::Open { rate, connections } => open_loop(load.clone(), rate, connections).await,
        Mode::Closed { concurrency } => closed_loop(load.clone(), concurrency).await,
    }
    // The last sender goes with the last request task; then the collector ends.
    drop(load);
    let recorder = collector
        .await
        .map_err(|e| Error::Options(format!("collector failed: {e}")))?;
    Ok(recorder.finish(setup, opened.load(Ordering::Relaxed)))
}

/// What every request task shares.
#[derive(Debug)]
struct Load {
    addr: SocketAddr,
    /// One request per (tenant, model): `targets[tenant][model]`.
    targets: Vec<Vec<Arc<RequestSpec>>>,
    mix: TenantMix,
    start: Instant,
    duration: Duration,
    timeout: Duration,
    seed: u64,
    /// Connections opened so far (read after the last request task is done).
    opened: Arc<AtomicU64>,
    /// gRPC calls over shared HTTP/2 connections, or HTTP/1.1 requests.
    grpc: bool,
    tx: mpsc::UnboundedSender<Record>,
}

impl Load {
    fn pick(&self, rng: &mut fastrand::Rng) -> (usize, Arc<RequestSpec>) {
        let tenant = self.mix.sample(rng);
        let models = &self.targets[tenant];
        (tenant, models[rng.usize(..models.len())].clone())
    }

    /// Opens a connection, counting it.
    async fn connect(&self) -> Result<Sender, Outcome> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        connect(self.addr, self.grpc)
            .await
            .map_err(|e| Outcome::Connect(format!("{e:#}")))
    }

    fn finish(&self, tenant: usize, from: Instant, outcome: Outcome) {
        let now = Instant::now();
        // The collector outlives every task; a send fails only if it panicked.
        let _ = self.tx.send(Record {
            tenant,
            latency: now.saturating_duration_since(from),
            finished: now.saturating_duration_since(self.start),
            outcome,
        });
    }
}

/// Dispatches the schedule: one task per request, spawned at its intended time.
async fn open_loop(load: Arc<Load>, rate: f64, connections: usize) {
    let Some(schedule) = Schedule::new(rate, load.duration) else {
        return;
    };
    let pool = Arc::new(Pool {
        permits: Semaphore::new(if load.grpc {
            connections.saturating_mul(GRPC_STREAMS_PER_CONNECTION)
        } else {
            connections
        }),
        idle: Mutex::new(Vec::new()),
        connections,
        next: AtomicU64::new(0),
    });
    let mut rng = fastrand::Rng::with_seed(load.seed);
    for i in 0..schedule.len() {
        let intended = load.start + schedule.intended(i);
        tokio::time::sleep_until(intended.into()).await;
        let (tenant, spec) = load.pick(&mut rng);
        let (load, pool) = (load.clone(), pool.clone());
        tokio::spawn(async move {
            let deadline = intended + load.timeout;
            let outcome = tokio::time::timeout_at(deadline.into(), pool.send(&load, &spec))
                .await
                .unwrap_or(Outcome::Timeout);
            load.finish(tenant, intended, outcome);
        });
    }
}

/// At most `permits` requests in flight at once. HTTP/1.1: one per connection, idle
/// connections kept for reuse. HTTP/2: up to `connections` connections, shared by every
/// call in turn.
#[derive(Debug)]
struct Pool {
    /// FIFO: requests get connections in the order they were due.
    permits: Semaphore,
    /// HTTP/1.1: the idle connections; HTTP/2: the shared ones.
    idle: Mutex<Vec<Sender>>,
    connections: usize,
    /// The next shared HTTP/2 connection to use.
    next: AtomicU64,
}

impl Pool {
    async fn send(&self, load: &Load, spec: &RequestSpec) -> Outcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::Transport("connection pool closed".to_owned());
        };
        if load.grpc {
            return self.send_shared(load, spec).await;
        }
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut sender = match idle {
            Some(s) if !s.is_closed() => s,
            _ => match load.connect().await {
                Ok(s) => s,
                Err(outcome) => return outcome,
            },
        };
        let outcome = send_one(&mut sender, spec).await;
        if !matches!(outcome, Outcome::Transport(_)) && !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(sender);
        }
        outcome
    }

    /// One call on a shared HTTP/2 connection: the next one in turn, opened when there
    /// are fewer than `connections` or it has closed.
    async fn send_shared(&self, load: &Load, spec: &RequestSpec) -> Outcome {
        let shared = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|s| !s.is_closed());
            if idle.len() < self.connections {
                None
            } else {
                let n = self.next.fetch_add(1, Ordering::Relaxed) as usize;
                idle[n % idle.len()].stream()
            }
        };
        let mut sender = match shared {
            Some(s) => s,
            None => match load.connect().await {
                Ok(s) => {
                    if let Some(copy) = s.stream() {
                        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                        idle.push(copy);
                    }
                    s
                }
                Err(outcome) => return outcome,
            },
        };
        send_one(&mut sender, spec).await
    }
}

/// Connections shared by closed-loop gRPC tasks ([`GRPC_STREAMS_PER_CONNECTION`] per slot).
type Shared = Arc<tokio::sync::Mutex<Option<Sender>>>;

/// A connection for closed-loop task: over gRPC a handle on its group's shared one
/// (opened by the first task that finds it missing or closed), else its own.
async fn checkout(load: &Load, shared: Option<&Shared>) -> Result<Sender, Outcome> {
    let Some(slot) = shared else {
        return load.connect().await;
    };
    let mut slot = slot.lock().await;
    if let Some(s) = slot
        .as_ref()
        .filter(|s| !s.is_closed())
        .and_then(Sender::stream)
    {
        return Ok(s);
    }
    let s = load.connect().await?;
    *slot = s.stream();
    Ok(s)
}

/// `concurrency` tasks, each on its own connection (over gRPC, groups of
/// [`GRPC_STREAMS_PER_CONNECTION`] tasks on one), sending until the duration is over.
async fn closed_loop(load: Arc<Load>, concurrency: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    let groups: Vec<Shared> = if load.grpc {
        let n = concurrency.div_ceil(GRPC_STREAMS_PER_CONNECTION);
        (0..n).map(|_| Shared::default()).collect()
    } else {
        Vec::new()
    };
    for n in 0..concurrency {
        let load = load.clone();
        let shared = groups.get(n / GRPC_STREAMS_PER_CONNECTION).cloned();
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(load.seed.wrapping_add(n as u64));
            let until = load.start + load.duration;
            let mut conn: Option<Sender> = None;
            while Instant::now() < until {
                let (tenant, spec) = load.pick(&mut rng);
                let sent = Instant::now();
                let attempt = async {
                    let sender = match conn.as_mut() {
                        Some(s) if !s.is_closed() => s,
                        _ => conn.insert(checkout(&load, shared.as_ref()).await?),
                    };
                    Ok::<_, Outcome>(send_one(sender, &spec).await)
                };
                let outcome = match tokio::time::timeout(load.timeout, attempt).await {
                    Ok(Ok(o) | Err(o)) => o,
                    Err(_) => Outcome::Timeout,
                };
                let refused = matches!(outcome, Outcome::Connect(_));
                if !matches!(outcome, Outcome::Ok | Outcome::Status(..)) {
                    conn = None;
                }
                load.finish(tenant, sent, outcome);
                if refused {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn send_one(sender: &mut Sender, spec: &RequestSpec) -> Outcome {
    match exchange(sender, spec).await {
        Ok((StatusCode::OK, _)) => Outcome::Ok,
        Ok((status, body)) => {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
            Outcome::Status(status.as_u16(), excerpt.into_owned())
        }
        Err(e) => Outcome::Transport(format!("{e:#}")),
    }
}

/// Host and port of a plain-HTTP router URL (`http://host[:port][/]`).
pub(super) fn parse_router(router: &str) -> Result<(String, u16), String> {
    let uri: http::Uri = router
        .parse()
        .map_err(|e| format!("router {router:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "router {router:?} must be a plain http:// URL (https is not supported)"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("router {router:?} must not have a path"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("router {router:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), uri.port_u16().unwrap_or(80)))
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_owned())
}

/// The input's name and feature count: the options', else the first model's metadata's,
/// else the defaults (with the reason the metadata was not used).
async fn input_shape(options: &Options, addr: SocketAddr) -> (String, usize, Option<String>) {
    if let (Some(input), Some(features)) = (&options.input, options.features) {
        return (input.clone(), features, None);
    }
    if options.protocol == Protocol::Grpc {
        let why = "metadata is read over HTTP, not gRPC: give --input and --features";
        let input = options
            .input
            .clone()
            .unwrap_or_else(|| DEFAULT_INPUT.to_owned());
        return (
            input,
            options.features.unwrap_or(DEFAULT_FEATURES),
            Some(why.to_owned()),
        );
    }
    let first = &options.tenants[0];
    let (meta, error) = match metadata(addr, &first.key, &first.models[0]).await {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    };
    let input = options
        .input
        .clone()
        .or_else(|| meta.as_ref().map(|m| m.0.clone()))
        .unwrap_or_else(|| DEFAULT_INPUT.to_owned());
    let features = options
        .features
        .or(meta.map(|m| m.1))
        .unwrap_or(DEFAULT_FEATURES);
    (input, features, error)
}

async fn metadata(addr: SocketAddr, key: &str, model: &str) -> Result<(String, usize), String> {
    let url = format!("http://{addr}/v2/models/{model}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(METADATA_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
    let status = resp.status();
    if status != StatusCode::OK {
        return Err(format!("GET {url}: {status}"));
    }
    let value: serde_json::Value = resp.json().await.map_err(|e| format!("GET {url}: {e}"))?;
    plan::input_from_metadata(&value)
        .ok_or_else(|| format!("GET {url}: no input with a fixed feature count"))
}

/// An error with its causes, `a: b: c` (reqwest's own message leaves out the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_urls() {
        assert_eq!(
            parse_router("http://127.0.0.1:8080"),
            Ok(("127.0.0.1".to_owned(), 8080))
        );
        assert_eq!(
            parse_router("http://router/"),
            Ok(("router".to_owned(), 80))
        );
        assert_eq!(parse_router("http://[::1]:9"), Ok(("::1".to_owned(), 9)));
        assert!(parse_router("https://r:1").is_err_and(|e| e.contains("plain http")));
        assert!(parse_router("http://r:1/v2").is_err());
        assert!(parse_router("127.0.0.1:8080").is_err());
    }
}
