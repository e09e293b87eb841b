//! Rounds of a full compile on a generated mesh (view, shared clusters and endpoints, one
//! sidecar class's listeners and routes, snapshot), each phase timed: a plain loop for
//! profilers that criterion's sampling does not suit, such as
//! `valgrind --tool=callgrind --toggle-collect='meshpilot_compile::compile_shared' …`, whose
//! instruction counts do not depend on how busy the machine is.
//!
//! `cargo bench --bench compile_rounds -- [SERVICES [ROUNDS]]`: SERVICES × 10 endpoints
//! (default 10,000) and ROUNDS rounds (default 10). Under `cargo test`, a hundredth of the
//! services and one round, as a smoke check.

mod common;

use std::time::{Duration, Instant};

use meshpilot_snapshot::XdsType;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let benching = std::env::args().any(|a| a == "--bench");
    let services = args.first().copied().unwrap_or(10_000) / common::scale();
    let rounds = if benching {
        args.get(1).copied().unwrap_or(10)
    } else {
        1
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_mesh, index) = common::index(dir.path(), services.max(1), 10);
    let proxy = common::proxy();
    let mut spent = [Duration::ZERO; 5];
    let mut made = String::new();
    for _ in 0..rounds {
        let mut marks = [Instant::now(); 6];
        let view = common::view(&index);
        marks[1] = Instant::now();
        let shared = meshpilot_compile::compile_shared(&view).expect("consistent");
        marks[2] = Instant::now();
        let class = meshpilot_compile::compile_class(&view, &proxy);
        marks[3] = Instant::now();
        let snapshot =
            meshpilot_compile::assemble(proxy.class_key(), &shared, &class).expect("consistent");
        marks[4] = Instant::now();
        // What was compiled, so runs of two builds can be checked to make the same snapshot.
        made = format!(
            "snapshot {}: {} clusters, {} assignments, {} listeners, {} route configurations",
            snapshot.version,
            snapshot.get(XdsType::Cluster).items.len(),
            snapshot.get(XdsType::Endpoint).items.len(),
            snapshot.get(XdsType::Listener).items.len(),
            snapshot.get(XdsType::Route).items.len(),
        );
        drop(std::hint::black_box((snapshot, class, shared, view)));
        marks[5] = Instant::now();
        for (i, s) in spent.iter_mut().enumerate() {
            *s += marks[i + 1] - marks[i];
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / rounds.max(1) as f64;
    println!(
        "compile_rounds {services}x10, {rounds} rounds, ms per round: view {:.1}, shared {:.1}, \
         class {:.1}, assemble {:.1}, drop {:.1}, total {:.1}",
        ms(spent[0]),
        ms(spent[1]),
        ms(spent[2]),
        ms(spent[3]),
        ms(spent[4]),
        ms(spent.iter().sum()),
    );
    println!("{made}");
}
