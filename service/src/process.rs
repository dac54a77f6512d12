//! What every Shardline binary does the same way at start and stop: parse its command
//! line (one-line errors, a usage exit status) and wait for SIGINT or SIGTERM.

/// Parses the command line as `T`. `--help` and `--version` print and exit 0; a usage
/// error prints one line, prefixed with `program`, and exits with `usage_exit`.
pub fn parse_args<T: clap::Parser>(program: &str, usage_exit: i32) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{program}: {}", first.trim_start_matches("error: "));
            std::process::exit(usage_exit);
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
