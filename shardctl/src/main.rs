//! The `shardctl` binary: parse (bad usage exits 2 with one line), run the command on a
//! single-threaded runtime, print its text or `--json` output, and map errors to exit
//! statuses (1 failed, 3 conflict: re-run). See `shardline_shardctl`.

use shardline_shardctl::{self as admin, Cli, EXIT_FAILED, EXIT_USAGE};

fn main() {
    let cli: Cli = shardline_service::process::parse_args("shardctl", EXIT_USAGE);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHARDCTL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardctl: cannot start the runtime: {e}");
            std::process::exit(EXIT_FAILED);
        }
    };
    let json = cli.json;
    match runtime.block_on(admin::run(cli)) {
        Ok(out) => print!("{}", out.render(json)),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            }
            eprintln!("shardctl: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
