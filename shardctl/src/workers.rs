//! `shardctl drain | cordon | uncordon`: set a worker's admin state. Draining hands the
//! work to the placement controller, which moves the worker's shards away with
//! prefetch-before-swap; `drain` then watches etcd and shows progress until no
//! assignment names the worker (as a member or as a `previous` member still serving).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use shardline_control::{ControlMetrics, SnapshotWatcher};
use shardline_shared::ids::WorkerId;
use shardline_shared::records::AdminState;
use shardline_shared::snapshot::Snapshot;

use super::context::{Ctx, Output, parse_id};
use super::error::CliError;

/// Shards naming `worker`: as a member, plus those where it is only in `previous`.
pub fn shards_on(snap: &Snapshot, worker: &WorkerId) -> (usize, usize) {
    let mut members = 0;
    let mut previous = 0;
    for a in snap.assignments().values() {
        if a.value.workers.contains(worker) {
            members += 1;
        } else if a.value.previous.contains(worker) {
            previous += 1;
        }
    }
    (members, previous)
}

async fn set(ctx: &Ctx, worker: &WorkerId, state: AdminState) -> Result<(), CliError> {
    ctx.cp.set_worker_admin(worker, state).await?;
    Ok(())
}

/// `cordon W`.
pub async fn cordon(ctx: &Ctx, worker: &str) -> Result<Output, CliError> {
    let worker: WorkerId = parse_id(worker)?;
    set(ctx, &worker, AdminState::Cordoned).await?;
    Output::new(
        format!("{worker} cordoned: it keeps its shards and takes no new ones"),
        &json!({"worker": worker, "state": "cordoned"}),
    )
}

/// `uncordon W`.
pub async fn uncordon(ctx: &Ctx, worker: &str) -> Result<Output, CliError> {
    let worker: WorkerId = parse_id(worker)?;
    set(ctx, &worker, AdminState::Active).await?;
    Output::new(
        format!("{worker} active: it takes shards again (`shardctl rebalance` moves some onto it)"),
        &json!({"worker": worker, "state": "active"}),
    )
}

/// `drain W`: marks it draining, then (with `wait`) waits until it holds no shard.
pub async fn drain(ctx: &Ctx, worker: &str, wait: Option<Duration>) -> Result<Output, CliError> {
    let worker: WorkerId = parse_id(worker)?;
    set(ctx, &worker, AdminState::Draining).await?;
    let Some(timeout) = wait else {
        let (members, previous) = shards_on(&ctx.snapshot().await?, &worker);
        return Output::new(
            format!("{worker} draining: the controller is moving its {members} shards away"),
            &json!({"worker": worker, "state": "draining", "drained": false,
                    "shards": members, "previous": previous}),
        );
    };
    let metrics = ControlMetrics::unregistered()
        .map_err(|e| CliError::failed(format!("cannot set up the etcd watch: {e}")))?;
    let watcher = SnapshotWatcher::spawn(ctx.store.clone(), ctx.prefix.clone(), metrics);
    let mut rx = watcher.subscribe();
    let first = watcher.ready().await;
    let (start, _) = shards_on(&first, &worker);
    let bar = progress(ctx, &worker, start);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snap = rx.borrow_and_update().clone();
        let (members, previous) = shards_on(&snap, &worker);
        bar.set_length(start.max(members) as u64);
        bar.set_position(start.saturating_sub(members) as u64);
        bar.set_message(if previous > 0 {
            format!("{previous} still serving until the new members are warm")
        } else {
            String::new()
        });
        if members == 0 && previous == 0 {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(CliError::failed("the etcd watch stopped")),
            Err(_) => {
                bar.abandon();
                return Err(CliError::failed(format!(
                    "{worker} still holds {members} shards ({previous} as previous) after {}; \
                     it stays draining (is a router with the placement controller running?)",
                    humantime::format_duration(timeout)
                )));
            }
        }
    }
    bar.finish_and_clear();
    let took = Duration::from_millis(started.elapsed().as_millis() as u64);
    Output::new(
        format!(
            "{worker} drained: {start} shards moved away in {}; it can be stopped now",
            humantime::format_duration(took)
        ),
        &json!({"worker": worker, "state": "draining", "drained": true, "shards": 0,
                "previous": 0, "moved": start, "seconds": took.as_secs_f64()}),
    )
}

fn progress(ctx: &Ctx, worker: &WorkerId, shards: usize) -> ProgressBar {
    let target = if ctx.show_progress() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(shards as u64), target);
    let style = ProgressStyle::with_template(&format!(
        "draining {worker} [{{bar:30}}] {{pos}}/{{len}} shards moved {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::World;

    #[test]
    fn counts_members_and_previous_separately() {
        let snap = World::new()
            .worker("w-0")
            .worker("w-1")
            .assignment("acme", "a", &["w-0", "w-1"], &[])
            .assignment("acme", "b", &["w-1"], &["w-0"])
            .assignment("acme", "c", &["w-1"], &[])
            .snapshot();
        let w = |s: &str| WorkerId::new(s).unwrap();
        assert_eq!(shards_on(&snap, &w("w-0")), (1, 1));
        assert_eq!(shards_on(&snap, &w("w-1")), (3, 0));
        assert_eq!(shards_on(&snap, &w("w-9")), (0, 0));
    }
}
