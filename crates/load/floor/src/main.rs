//! The machine's floor for meshpilot's fan-out benchmarks (BENCHMARKS.md, W2 and W4).
//!
//! The same shape of work as a push of one edit or one endpoint change — a server writes one message to each of N
//! connections and waits for each connection's small reply — as raw length-prefixed frames on
//! loopback TCP: no HTTP/2, no gRPC, no protobuf, no xDS state. Two processes, as in the real
//! benchmarks: this one serves and measures; it starts itself again as the client, which holds
//! the N connections, reads each message (in reads of up to 64 KiB, as meshpilot-load does) and
//! answers it. What a round costs here, the kernel's TCP and tokio's wake-ups, is what any
//! xDS server written on tokio pays on this machine before doing any work of its own.
//!
//!   meshpilot-floor --proxies 1000 --bytes 450 --ack-bytes 100 --rounds 1000 --rate 100
//!   meshpilot-floor --proxies 2000 --bytes 310000 --ack-bytes 100 --rounds 5
//!
//! Without `--rate`, rounds run one after another (each starts when the last is ACKed by all).
//! With it, rounds start on a clock; a connection still busy sends only the newest round when it
//! is free (as meshpilot's per-stream slots do), and that answer counts for every round it
//! skipped. A round's time is its start → the last connection's reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

struct Args {
    proxies: usize,
    bytes: usize,
    ack_bytes: usize,
    rounds: usize,
    rate: Option<f64>,
}

fn parse(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        proxies: 1000,
        bytes: 450,
        ack_bytes: 100,
        rounds: 100,
        rate: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--proxies" => a.proxies = value.parse().context("--proxies")?,
            "--bytes" => a.bytes = value.parse().context("--bytes")?,
            "--ack-bytes" => a.ack_bytes = value.parse().context("--ack-bytes")?,
            "--rounds" => a.rounds = value.parse().context("--rounds")?,
            "--rate" => a.rate = Some(value.parse().context("--rate")?),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.proxies == 0 || a.rounds == 0 {
        bail!("--proxies and --rounds must be at least 1");
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(first) = args.next() {
        if first == "client" {
            let addr = args.next().context("client ADDR N ACK_BYTES")?;
            let n: usize = args.next().context("N")?.parse()?;
            let ack: usize = args.next().context("ACK_BYTES")?.parse()?;
            return runtime.block_on(client(addr, n, ack));
        }
        let a = parse(std::iter::once(first).chain(args))?;
        return runtime.block_on(serve(a));
    }
    runtime.block_on(serve(parse(std::iter::empty())?))
}

/// Frame: 4-byte big-endian length, then the body.
fn frame(len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + len);
    f.extend_from_slice(&(len as u32).to_be_bytes());
    f.extend((0..len).map(|i| (i % 251) as u8));
    f
}

async fn client(addr: String, n: usize, ack_bytes: usize) -> anyhow::Result<()> {
    let ack = Arc::new(frame(ack_bytes));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(&addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let ack = ack.clone();
        tasks.push(tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::with_capacity(64 * 1024, rd);
            let mut body = vec![0u8; 64 * 1024];
            loop {
                let mut len = [0u8; 4];
                if rd.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut left = u32::from_be_bytes(len) as usize;
                while left > 0 {
                    let want = left.min(body.len());
                    match rd.read(&mut body[..want]).await {
                        Ok(0) | Err(_) => return,
                        Ok(got) => left -= got,
                    }
                }
                if wr.write_all(&ack).await.is_err() {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Rounds {
    base: Instant,
    started: Vec<AtomicU64>,
    acked: Vec<AtomicUsize>,
    finished: Vec<AtomicU64>,
    complete: AtomicUsize,
    written: AtomicU64,
    done: Notify,
}

impl Rounds {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// One connection replied to round `to`, its last reply having been to round `from`: that
    /// reply counts for every round in between.
    fn acked(&self, from: usize, to: usize, n: usize) {
        for r in from + 1..=to {
            if self.acked[r].fetch_add(1, Ordering::AcqRel) + 1 == n {
                self.finished[r].store(self.now(), Ordering::Release);
                self.complete.fetch_add(1, Ordering::AcqRel);
                self.done.notify_waiters();
            }
        }
    }

    /// Waits until `n` rounds are complete or `deadline` has passed.
    async fn until_complete(&self, n: usize, deadline: Instant) {
        while self.complete.load(Ordering::Acquire) < n && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(50), self.done.notified()).await;
        }
    }
}

async fn serve(a: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "client",
            &addr,
            &a.proxies.to_string(),
            &a.ack_bytes.to_string(),
        ])
        .spawn()
        .context("start the client process")?;
    let client_pid = child.id();

    let rounds = Arc::new(Rounds {
        base: Instant::now(),
        started: (0..=a.rounds).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..=a.rounds).map(|_| AtomicUsize::new(0)).collect(),
        finished: (0..=a.rounds).map(|_| AtomicU64::new(0)).collect(),
        complete: AtomicUsize::new(0),
        written: AtomicU64::new(0),
        done: Notify::new(),
    });
    let push = Arc::new(frame(a.bytes));
    let (tx, rx) = watch::channel(0usize);
    for _ in 0..a.proxies {
        let (stream, _) = listener.accept().await.context("accept")?;
        stream.set_nodelay(true)?;
        let (mut rx, push, rounds, n, ack_len) = (
            rx.clone(),
            push.clone(),
            rounds.clone(),
            a.proxies,
            a.ack_bytes,
        );
        tokio::spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let mut ack = vec![0u8; 4 + ack_len];
            let mut last = 0;
            while rx.changed().await.is_ok() {
                let r = *rx.borrow_and_update();
                if wr.write_all(&push).await.is_err() || rd.read_exact(&mut ack).await.is_err() {
                    return;
                }
                rounds.written.fetch_add(1, Ordering::Relaxed);
                rounds.acked(last, r, n);
                last = r;
            }
        });
    }
    // Every connection's task is waiting on the channel: the measured phase starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cpu_server, cpu_client) = (cpu_seconds(std::process::id()), cpu_seconds(client_pid));
    let wall = Instant::now();
    let deadline = wall + Duration::from_secs(120);
    let period = a.rate.map(|hz| Duration::from_secs_f64(1.0 / hz));
    for r in 1..=a.rounds {
        if let Some(p) = period {
            tokio::time::sleep_until((wall + p * (r as u32 - 1)).into()).await;
        }
        rounds.started[r].store(rounds.now(), Ordering::Release);
        tx.send_replace(r);
        if period.is_none() {
            rounds.until_complete(r, deadline).await;
        }
    }
    rounds.until_complete(a.rounds, deadline).await;
    let wall = wall.elapsed().as_secs_f64();
    let cpu_server = cpu_seconds(std::process::id()) - cpu_server;
    let cpu_client = cpu_seconds(client_pid) - cpu_client;
    let _ = child.kill();
    let _ = child.wait();

    let mut ms: Vec<f64> = (1..=a.rounds)
        .filter_map(|r| {
            let end = rounds.finished[r].load(Ordering::Acquire);
            (end > 0).then(|| (end - rounds.started[r].load(Ordering::Acquire)) as f64 / 1e6)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
    };
    // Pushes actually written: rounds a busy connection skipped were answered by a later one.
    let pairs = rounds.written.load(Ordering::Relaxed) as f64;
    println!(
        "floor: {} proxies, {} B pushes, {} B replies, {} rounds{}: {} of {} complete in {:.2} s",
        a.proxies,
        a.bytes,
        a.ack_bytes,
        a.rounds,
        a.rate.map(|r| format!(" at {r}/s")).unwrap_or_default(),
        ms.len(),
        a.rounds,
        wall,
    );
    println!(
        "  round -> all replied: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5).unwrap_or(f64::NAN),
        pct(0.99).unwrap_or(f64::NAN),
        ms.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "  {pairs} pushes written; CPU: server {cpu_server:.2} s, client {cpu_client:.2} s; per push and reply: server {:.1} us, client {:.1} us",
        cpu_server / pairs * 1e6,
        cpu_client / pairs * 1e6,
    );
    if ms.len() < a.rounds {
        bail!("{} rounds never completed", a.rounds - ms.len());
    }
    Ok(())
}
