//! Evicted models give their memory back to the operating system: the resident set size
//! of a real `worker` process (read from /proc) falls after unloading, not just the
//! worker's own accounting; and the binary runs with the environment it re-executes
//! itself for.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use shardline_testkit::TOKEN;
use shardline_testkit::models::MlpArtifact;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_rss_drops_after_models_are_evicted() {
    let fleet = support::fleet().await;
    // Four ~17 MB models, each with a 16 MB layer: below glibc's largest mmap
    // threshold, the case where freed memory tends to stay in the process.
    let models: Vec<MlpArtifact> = (0..4)
        .map(|i| MlpArtifact::random(&[64, 2048, 2048, 1], 20 + i))
        .collect();
    for (i, m) in models.iter().enumerate() {
        fleet
            .publish_model("acme", &format!("big{i}"), "1", m)
            .await;
    }
    // The real binary (this crate's build of it), on the fleet's one argument list.
    let spec = fleet.worker_spec("w-rss").set("--memory-budget", "1GiB");
    let worker = spec
        .spawn(Some(env!("CARGO_BIN_EXE_worker").into()))
        .await
        .unwrap();
    let base = worker.url.clone();
    let pid = worker.pid().unwrap();
    // The binary re-executed itself with its allocator setting and candle's thread count
    // (without which candle parses /proc/cpuinfo on every matmul).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let threads = vars
        .iter()
        .find_map(|v| v.strip_prefix("RAYON_NUM_THREADS="))
        .unwrap_or_else(|| panic!("no RAYON_NUM_THREADS in the worker's environment"));
    assert!(threads.parse::<usize>().unwrap() >= 1, "{threads}");
    assert!(
        vars.iter()
            .any(|v| v.starts_with("GLIBC_TUNABLES=") && v.contains("mmap_threshold")),
        "no malloc tunable in {vars:?}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |what: &'static str, i: usize| {
        http.post(format!("{base}/v2/repository/models/acme.big{i}/{what}"))
            .header("x-shardline-token", TOKEN)
            .send()
    };
    let before = rss_bytes(pid);
    for i in 0..4 {
        assert_eq!(call("load", i).await.unwrap().status(), 200);
    }
    let loaded = rss_bytes(pid);
    for i in 0..4 {
        assert_eq!(call("unload", i).await.unwrap().status(), 200);
    }
    // Give the allocator a moment to return freed pages.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rss_bytes(pid);
    let model_bytes: u64 = models.iter().map(MlpArtifact::resident_bytes).sum();
    eprintln!(
        "worker rss: before {} MiB, 4 models loaded {} MiB, after evicting them {} MiB (models {} MiB)",
        before >> 20,
        loaded >> 20,
        after >> 20,
        model_bytes >> 20
    );
    assert!(
        loaded >= before + model_bytes * 3 / 4,
        "the models were resident"
    );
    let kept = after.saturating_sub(before);
    assert!(
        kept <= model_bytes / 4,
        "after evicting every model the worker still holds {} MiB more than before",
        kept >> 20
    );
}
