//! What every Shardline binary does the same way at start and stop: parse its command
//! line (one-line errors, a usage exit status), set the environment glibc reads only at
//! start-up (by re-executing itself once), and wait for SIGINT or SIGTERM.

/// glibc's malloc raises its mmap threshold (and its trim threshold with it) after each
/// large free, so later large buffers land in the heap and their memory stays in the
/// process after they are freed. A fixed threshold keeps every allocation above 128 KiB
/// in its own mapping, returned on free, and the heap's free top trimmed: the worker's
/// evicted weights (`worker/tests/rss.rs`). The router runs without it: it saved 5 MB
/// of a 100,000-tenant listing and made the listing 0.8 s (40 %) slower, a mapping and
/// unmapping for every page buffer.
pub const MALLOC_TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

/// `GLIBC_TUNABLES` with [`MALLOC_TUNABLE`] added, if the process does not have it yet
/// (and runs on glibc).
pub fn missing_malloc_tunable() -> Option<(&'static str, String)> {
    if !cfg!(target_env = "gnu") {
        return None;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.mmap_threshold") {
        return None;
    }
    let tunables = if current.is_empty() {
        MALLOC_TUNABLE.to_owned()
    } else {
        format!("{current}:{MALLOC_TUNABLE}")
    };
    Some(("GLIBC_TUNABLES", tunables))
}

/// Re-executes this program once with `missing` added to its environment: glibc reads its
/// tunables only at start-up, and changing the environment of a running process takes
/// `unsafe` (forbidden here). Returns (and the program runs as it is) when nothing is
/// missing or the exec fails.
pub fn reexec_with(program: &str, missing: &[(&'static str, String)]) {
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(missing.iter().map(|(k, v)| (k, v)))
            .exec();
        // Only reached if exec failed: run as we are.
        eprintln!("{program}: could not re-execute with {missing:?} ({err}); continuing");
    }
}

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
            eprintln!("{program}: {}", usage_line(&e.to_string()));
            std::process::exit(usage_exit);
        }
    }
}

/// clap's usage error as one line: its first paragraph (which may list the missing
/// arguments on lines of their own), without the usage and help hints after it.
fn usage_line(text: &str) -> String {
    let line = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    match line.trim_start_matches("error: ") {
        "" => "invalid arguments".to_owned(),
        l => l.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::usage_line;

    #[test]
    fn a_usage_error_is_one_line_that_names_what_is_missing() {
        let missing = "error: the following required arguments were not provided:\n  --percent <PERCENT>\n\nUsage: shardctl canary --percent <PERCENT>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(missing),
            "the following required arguments were not provided: --percent <PERCENT>"
        );
        let plain = "error: unexpected argument '--x' found\n\nUsage: shardctl\n";
        assert_eq!(usage_line(plain), "unexpected argument '--x' found");
        assert_eq!(usage_line(""), "invalid arguments");
    }
}
