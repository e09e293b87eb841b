//! The `meshpilot` command: `serve` runs the control plane; `bootstrap` prints an Envoy bootstrap
//! for one proxy; `proxy-status` and `proxy-config` ask a running server what its proxies were
//! sent. Errors are printed to stderr and exit with a non-zero status.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use meshpilot::cli;
use meshpilot::config::{Cli, Command};

/// jemalloc, with its background threads purging freed pages: glibc's malloc kept the peak of
/// a connection storm (about 300 MB for 5,000 proxies) long after they left.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Freed pages go back to the system within jemalloc's decay time even while the process is
    // idle (no allocation activity to trigger purging).
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    return_freed_pages_within_a_second();
    meshpilot_telemetry::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshpilot: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Freed dirty pages are returned after 1 s instead of jemalloc's 10 s, and without the "muzzy"
/// second stage: after a connection storm the server is back near its baseline within seconds
/// (5,000 proxies: 1.4x the warm baseline, steadily, instead of 1.36-1.52x; docs/reliability.md).
/// Set for every arena, the ones already made and those made later; a failure only leaves
/// jemalloc's defaults.
fn return_freed_pages_within_a_second() {
    use tikv_jemalloc_ctl::{Access, AsName};
    const DIRTY_MS: isize = 1_000;
    const MUZZY_MS: isize = 0;
    let _ = b"arenas.dirty_decay_ms\0".name().write(DIRTY_MS);
    let _ = b"arenas.muzzy_decay_ms\0".name().write(MUZZY_MS);
    let arenas = tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(0);
    for i in 0..arenas {
        let _ = format!("arena.{i}.dirty_decay_ms\0")
            .as_bytes()
            .name()
            .write(DIRTY_MS);
        let _ = format!("arena.{i}.muzzy_decay_ms\0")
            .as_bytes()
            .name()
            .write(MUZZY_MS);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bootstrap(args) => {
            let bootstrap = meshpilot::bootstrap::render(&args)?;
            let text = serde_json::to_string_pretty(&bootstrap).context("encode bootstrap")?;
            println!("{text}");
            Ok(())
        }
        Command::Serve(args) => {
            let config = args.into_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("meshpilot")
                .build()
                .context("start the tokio runtime")?;
            runtime.block_on(meshpilot::app::run(config))
        }
        Command::Agent(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .thread_name("meshpilot-agent")
                .build()
                .context("start the tokio runtime")?;
            runtime.block_on(meshpilot::agent::run(args))
        }
        Command::Analyze(args) => {
            let found = meshpilot::analyze::analyze(&args.dirs, &args.domain);
            let (text, fails) = meshpilot::analyze::report(&args, &found);
            print!("{text}");
            if fails {
                std::process::exit(i32::from(meshpilot::analyze::FOUND_ISSUES_EXIT));
            }
            Ok(())
        }
        Command::ProxyStatus(args) => {
            print!("{}", client_runtime()?.block_on(cli::proxy_status(&args))?);
            Ok(())
        }
        Command::ProxyConfig(args) => {
            print!("{}", client_runtime()?.block_on(cli::proxy_config(&args))?);
            Ok(())
        }
    }
}

/// A small runtime for the client subcommands (one HTTP request each).
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")
}
