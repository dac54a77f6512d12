//! `shardctl`, the operator's admin CLI: inspect the control plane, manage tenants and
//! model versions, drain and cordon workers, and rebalance shards.
//!
//! Layout: this file holds the command tree (clap derive, every flag also read from
//! `SHARDLINE_<FLAG>`) and the dispatch; [`run`] returns an [`Output`] (a text form and
//! a JSON form) or a [`CliError`] that carries the exit status.
//! - `inspect.rs`, `blast.rs`: pure rows and reports from one etcd listing;
//! - `table.rs`: the text-table renderer;
//! - `tenants.rs`: create, rotate-key, delete;
//! - `publish.rs`: local validation with the worker's own model code, upload with a
//!   progress bar, registration; `models.rs`: activate, rollback, unpublish;
//! - `workers.rs`: drain (waits and shows progress), cordon, uncordon;
//! - `rebalance.rs`: the plan as a diff (pure) and its execution through the
//!   controller's executor (prefetch before swap, one compare-and-swap per write);
//! - `context.rs`: the etcd connection and snapshot reads; `error.rs`: exit statuses.

mod blast;
mod compare;
mod context;
mod error;
#[cfg(test)]
mod fixture;
mod inspect;
mod models;
mod publish;
mod rebalance;
mod rollouts;
mod table;
mod tenants;
mod workers;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shardline_shared::units::parse_duration;

pub use blast::{BlastRadius, blast_radius, hypergeometric, random_figures};
pub use context::{Ctx, Output};
pub use error::{CliError, EXIT_CONFLICT, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
pub use rebalance::{RebalancePlan, plan_rebalance};

const EXAMPLES: &str = "Examples:
  export SHARDLINE_ETCD=http://etcd-0:2379,http://etcd-1:2379
  shardctl workers
  shardctl tenant create acme --shard-size 4 --json
  shardctl publish --tenant acme --model risk --version 2 --store s3://models ./risk-v2
  shardctl rollback --tenant acme --model risk
  shardctl drain w-3
  shardctl rebalance                      # show the plan
  shardctl rebalance --apply --max-moves 50

Exit status: 0 ok, 1 the operation failed, 2 bad usage, 3 conflict (a concurrent
change won a compare-and-swap: re-run the command).";

/// Shardline's operator CLI: inspect workers, tenants, models and assignments; create
/// tenants; publish, activate and roll back model versions; drain and cordon workers;
/// rebalance shards.
#[derive(Debug, Clone, Parser)]
#[command(name = "shardctl", version, after_help = EXAMPLES)]
pub struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        global = true,
        env = "SHARDLINE_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(
        long,
        global = true,
        env = "SHARDLINE_PREFIX",
        default_value = "/shardline"
    )]
    pub prefix: String,
    /// Print one JSON document on stdout instead of tables and text.
    #[arg(long, global = true, env = "SHARDLINE_JSON")]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Workers: address, admin state, liveness, resident models, memory, shard slots.
    #[command(after_help = "Example:\n  shardctl workers --json | jq '.workers[] | select(.live)'")]
    Workers,
    /// Tenants: shard size, models, limits and how many keys (never the keys).
    #[command(after_help = "Example:\n  shardctl tenants")]
    Tenants,
    /// Models: versions, live version, size, sha256 prefix, assignment.
    #[command(after_help = "Example:\n  shardctl models --tenant acme")]
    Models {
        /// Only this tenant's models.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Stored assignments: members, epoch, members being replaced.
    #[command(after_help = "Example:\n  shardctl assignments --tenant acme --json")]
    Assignments {
        /// Only this tenant's models.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Overlap statistics of the stored assignments against random shards.
    #[command(after_help = "Example:\n  shardctl blast-radius")]
    BlastRadius,
    /// Create a tenant, rotate its key, delete it.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Validate a model directory, upload it, register the version and make it live.
    #[command(
        after_help = "Example:\n  shardctl publish --tenant acme --model risk --version 2 \\\n    --store s3://models/prod ./risk-v2   # holds config.json and model.safetensors"
    )]
    Publish(PublishArgs),
    /// Make a published version the live one.
    #[command(after_help = "Example:\n  shardctl activate --tenant acme --model risk --version 2")]
    Activate(VersionArgs),
    /// Make the version published before the live one live again (or `--to V`).
    #[command(after_help = "Example:\n  shardctl rollback --tenant acme --model risk")]
    Rollback {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        model: String,
        /// The version to go back to (default: the one published before the live one).
        #[arg(long)]
        to: Option<String>,
    },
    /// Give a candidate version a share of the requests that name no version (or end it).
    #[command(
        after_help = "Examples:\n  shardctl canary --tenant acme --model risk --version 3 --percent 10 --sticky\n  shardctl activate --tenant acme --model risk --version 3   # promote\n  shardctl canary --tenant acme --model risk --clear          # abort"
    )]
    Canary(rollouts::CanaryArgs),
    /// Copy a sample of the requests that name no version to another version, after
    /// their answer, and compare the scores (or end it).
    #[command(
        after_help = "Examples:\n  shardctl shadow --tenant acme --model risk --version 3 --percent 100\n  shardctl shadow --tenant acme --model risk --clear"
    )]
    Shadow(rollouts::ShadowArgs),
    /// How a model's shadow scores against the served version, from the routers' metrics.
    #[command(
        after_help = "Example:\n  shardctl compare --tenant acme --model risk --router http://r-0:9090 --router http://r-1:9090"
    )]
    Compare(compare::CompareArgs),
    /// Remove a version that is not live from the registry (its objects stay).
    #[command(after_help = "Example:\n  shardctl unpublish --tenant acme --model risk --version 1")]
    Unpublish(VersionArgs),
    /// Move a worker's shards away (prefetching first); waits until it holds none.
    #[command(after_help = "Example:\n  shardctl drain w-3 && systemctl stop shardline-worker")]
    Drain {
        worker: String,
        /// Return once the worker is marked draining.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for the worker to hold no shard.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        timeout: Duration,
    },
    /// Stop placing new shards on a worker (it keeps its current ones).
    #[command(after_help = "Example:\n  shardctl cordon w-3")]
    Cordon { worker: String },
    /// Let a cordoned or draining worker take shards again.
    #[command(after_help = "Example:\n  shardctl uncordon w-3")]
    Uncordon { worker: String },
    /// Show the moves that would balance slot load; `--apply` carries them out.
    #[command(
        after_help = "Examples:\n  shardctl rebalance\n  SHARDLINE_INTERNAL_TOKEN=... shardctl rebalance --apply --max-moves 20"
    )]
    Rebalance(RebalanceArgs),
}

/// `shardctl tenant ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its API key (the only time it is shown).
    #[command(
        after_help = "Example:\n  shardctl tenant create acme --shard-size 4 --rate 100 --json"
    )]
    Create {
        name: String,
        /// Workers per shard (default: the placement default).
        #[arg(long)]
        shard_size: Option<u32>,
        /// Requests per second per router (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Concurrent requests per router (0 = unlimited).
        #[arg(long, default_value_t = 256)]
        max_in_flight: u32,
    },
    /// Replace the tenant's keys by a new one (old keys stop within seconds).
    #[command(after_help = "Example:\n  shardctl tenant rotate-key acme --json")]
    RotateKey { name: String },
    /// Delete a tenant; refused while it has models unless `--force`.
    #[command(after_help = "Example:\n  shardctl tenant delete acme --force")]
    Delete {
        name: String,
        /// Also delete its models and assignments.
        #[arg(long)]
        force: bool,
    },
}

/// `shardctl publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: String,
    /// Artifact store URL (`file:///dir` or `s3://bucket[/prefix]`, AWS_* variables).
    #[arg(long, env = "SHARDLINE_STORE")]
    pub store: String,
    /// Register the version without making it live.
    #[arg(long)]
    pub no_activate: bool,
    /// Directory holding `config.json` and `model.safetensors`.
    pub dir: PathBuf,
}

/// One version of one model.
#[derive(Debug, Clone, clap::Args)]
pub struct VersionArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: String,
}

/// `shardctl rebalance`.
#[derive(Debug, Clone, clap::Args)]
pub struct RebalanceArgs {
    /// Carry the plan out (prefetch on new members, then compare-and-swap writes).
    #[arg(long)]
    pub apply: bool,
    /// Most balancing moves (repairs are always planned).
    #[arg(long)]
    pub max_moves: Option<usize>,
    /// Shared secret presented to workers when prefetching (needed by `--apply`).
    #[arg(long, env = "SHARDLINE_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Longest wait for one worker to load a model before its swap.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub prefetch_timeout: Duration,
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<Output, CliError> {
    // Reads the routers, not etcd.
    if let Command::Compare(args) = cli.command {
        return compare::run(args).await;
    }
    let ctx = Ctx::connect(&cli.etcd, &cli.prefix, cli.json).await?;
    match cli.command {
        Command::Workers => {
            let rows = inspect::workers(&ctx.snapshot().await?);
            Output::rows("workers", &rows, inspect::workers_table(&rows))
        }
        Command::Tenants => {
            let rows = inspect::tenants(&ctx.snapshot().await?);
            Output::rows("tenants", &rows, inspect::tenants_table(&rows))
        }
        Command::Models { tenant } => {
            let tenant = tenant.map(|t| context::parse_id(&t)).transpose()?;
            let rows = inspect::models(&ctx.snapshot().await?, tenant.as_ref());
            Output::rows("models", &rows, inspect::models_table(&rows))
        }
        Command::Assignments { tenant } => {
            let tenant = tenant.map(|t| context::parse_id(&t)).transpose()?;
            let rows = inspect::assignments(&ctx.snapshot().await?, tenant.as_ref());
            Output::rows("assignments", &rows, inspect::assignments_table(&rows))
        }
        Command::BlastRadius => {
            let report = blast_radius(&ctx.snapshot().await?);
            Output::new(blast::render(&report), &report)
        }
        Command::Tenant(cmd) => tenants::run(&ctx, cmd).await,
        Command::Publish(args) => publish::run(&ctx, args).await,
        Command::Activate(v) => models::activate(&ctx, &v.tenant, &v.model, &v.version).await,
        Command::Rollback { tenant, model, to } => {
            models::rollback(&ctx, &tenant, &model, to.as_deref()).await
        }
        Command::Canary(args) => rollouts::canary(&ctx, args).await,
        Command::Shadow(args) => rollouts::shadow(&ctx, args).await,
        Command::Compare(args) => compare::run(args).await,
        Command::Unpublish(v) => models::unpublish(&ctx, &v.tenant, &v.model, &v.version).await,
        Command::Drain {
            worker,
            no_wait,
            timeout,
        } => workers::drain(&ctx, &worker, (!no_wait).then_some(timeout)).await,
        Command::Cordon { worker } => workers::cordon(&ctx, &worker).await,
        Command::Uncordon { worker } => workers::uncordon(&ctx, &worker).await,
        Command::Rebalance(args) => rebalance::run(&ctx, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_tree_is_consistent_and_globals_work_after_the_subcommand() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["shardctl", "models", "--tenant", "acme", "--json"]).unwrap();
        assert!(cli.json);
        let err = Cli::try_parse_from(["shardctl", "tenant", "create"]).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE);
    }
}
