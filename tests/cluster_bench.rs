//! Keeps the cluster bench (`benches/cluster.rs`, included here by path) from rotting: its
//! arguments are checked, and one tiny run (one node of the binary on its own
//! `redis-server`, 10,000 lines) accounts for every line.

#[path = "../benches/cluster.rs"]
#[allow(dead_code)]
mod cluster_bench;

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn the_cluster_bench_refuses_bad_arguments() {
    for bad in [
        "udp",
        "tcp --redis sentinel",
        "tcp --log sometimes",
        "tcp --nodes 3 --conns 2",
        "tcp --nodez 3",
    ] {
        let e = cluster_bench::bench(argv(bad)).expect_err(bad);
        assert!(!e.is_empty(), "{bad}");
    }
}

#[test]
fn a_tiny_cluster_bench_run_accounts_for_every_line() {
    if !cluster_bench::tc::need("redis-server", "apt-get install redis-server") {
        return;
    }
    let v = cluster_bench::bench(argv("tcp --nodes 1 --conns 2 --count 10000"))
        .expect("the bench runs")
        .expect("redis-server is there");
    assert_eq!(v["sent"], 10_000, "{v}");
    assert_eq!(v["ingested"], 10_000, "{v}");
    let published = v["published"].as_u64().unwrap_or(0);
    let unpublished = v["unpublished"].as_u64().unwrap_or(0);
    assert_eq!(published + unpublished, 10_000, "{v}");
    assert!(
        v["redis_commands"]["xadd"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    assert!(v["msgs_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert_eq!(v["per_node"][0]["msgs"], 10_000, "{v}");
}
