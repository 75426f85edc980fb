//! The store churn tool: the delivery queue's write pattern, run through the
//! project's own [`Store`] trait against sled or redb, to measure how each
//! store's disk size, memory and throughput behave under long churn.
//!
//! ```sh
//! cargo run --release --example store_churn -- --store redb --events 1000000
//! cargo run --release --example store_churn -- --store sled --events 1000000 --every 50000
//! ```
//!
//! Everything lives in the `delivery` tree. Per event (in batches of
//! [`BATCH`] events, one `apply_batch` followed by a durable `flush`):
//!
//! * `e:<36-char event id>` → an 8-byte marker,
//! * `t:<8-byte BE ms><event id>` → empty,
//! * `j:<8-byte BE due ms><8-byte BE job id>` → a ~900-byte job (the job id
//!   comes from [`Store::next_id`], as the daemon's do).
//!
//! After each batch, the jobs of the *previous* batch complete in one
//! `apply_batch` without a flush: `j:` removed, `l:<ms><job id><attempt>`
//! inserted with a ~250-byte log value. Every [`RET_EVERY`] events retention
//! keeps the newest [`L_KEEP`] `l:` entries and the `e:`/`t:` entries of the
//! newest [`E_KEEP`] events. So the live set levels off at about 500,000 keys,
//! and any growth of the files after that is the store's own.
//!
//! Every `--every` events one line: events, live keys (the tool's
//! bookkeeping: `Store::count` over the tree checks it once, at the end, as
//! a full count of 500,000 keys takes sled about 1.5 s, a quarter of a
//! 50,000-event interval), the sum of the file sizes, the blocks allocated, the
//! store's own `size_on_disk`, VmRSS and VmHWM, events/s over the interval,
//! the process's CPU seconds (user + system) and the 1-minute load average.
//! A summary line at the end gives the growth in bytes per event after the
//! first plateau of the file sizes, if there was one.
//!
//! Unlike the standalone experiment this follows the store as the daemon
//! has it: `RedbStore` commits every batch without fsync and makes it
//! durable at `flush` (an empty durable commit), its background thread adds
//! a durable commit every 500 ms after writes, and its `next_id` reserves
//! ids 1,000 at a time with one more durable commit. sled's `next_id` is
//! sled's `generate_id`. Both stores keep a 32 MiB page cache.
//!
//! The machine's other load shows in the rates: read them with the load
//! average beside them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use pushwerk::store::{RedbStore, SledStore, Store, StoreError};

/// Events per `apply_batch` + `flush`.
const BATCH: u64 = 100;
/// Retention runs every this many events.
const RET_EVERY: u64 = 50_000;
/// Retention keeps this many of the newest `l:` entries.
const L_KEEP: u64 = 100_000;
/// Retention keeps the `e:`/`t:` entries of this many of the newest events.
const E_KEEP: u64 = 200_000;
/// The timestamp (unix ms) of event 0; event `n` happens at `T0_MS + n`.
const T0_MS: u64 = 1_780_000_000_000;
/// Bytes of a job value.
const JOB_LEN: usize = 900;
/// Bytes of a delivery-log value.
const LOG_LEN: usize = 250;
/// The one tree everything goes to, as in the daemon.
const TREE: &str = pushwerk::store::trees::DELIVERY;
/// Retention deletes in batches of at most this many keys.
const DELETE_CHUNK: usize = 20_000;
/// A report counts as a plateau when the file sizes grew by at most this
/// fraction since the previous report.
const PLATEAU_GROWTH: f64 = 0.01;
/// Clock ticks per second in `/proc/self/stat` (USER_HZ on Linux).
const TICKS_PER_S: f64 = 100.0;

/// Churns the delivery tree of a sled or redb store and reports its size,
/// memory and rate.
#[derive(Debug, Parser)]
#[command(name = "store_churn")]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum)]
    store: Kind,
    /// Events to write.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Print a report line every this many events (a multiple of 100).
    #[arg(long, default_value_t = 100_000)]
    every: u64,
    /// The data directory (must be empty or absent; default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The stores the tool can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// sled 0.34 ([`SledStore`]).
    Sled,
    /// redb ([`RedbStore`]).
    Redb,
}

// ---------- deterministic data ----------

/// A 64-bit mixer (splitmix64): deterministic pseudo-random data.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The UUID-shaped id of event `i`.
fn event_id(i: u64) -> [u8; 36] {
    let hex = format!(
        "{:016x}{:016x}",
        splitmix(i),
        splitmix(i ^ 0xdead_beef_cafe)
    );
    let s = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let mut out = [0u8; 36];
    out.copy_from_slice(s.as_bytes());
    out
}

/// The time (unix ms) of event `i`.
fn ms_of(i: u64) -> u64 {
    T0_MS + i
}

/// When the job of event `i` is due: up to a second after the event.
fn due_of(i: u64) -> u64 {
    ms_of(i) + splitmix(i * 7 + 3) % 1000
}

/// `prefix` followed by `parts`, as one key.
fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The event record's key: `e:<event id>`.
fn k_e(id: &[u8]) -> Vec<u8> {
    key(b"e:", &[id])
}

/// The event's time-index key: `t:<ms><event id>`.
fn k_t(ms: u64, id: &[u8]) -> Vec<u8> {
    key(b"t:", &[&ms.to_be_bytes(), id])
}

/// The queued job's key: `j:<due ms><job id>`.
fn k_j(due: u64, job: u64) -> Vec<u8> {
    key(b"j:", &[&due.to_be_bytes(), &job.to_be_bytes()])
}

/// The delivery log entry's key: `l:<ms><job id><attempt>`.
fn k_l(ms: u64, job: u64, attempt: u32) -> Vec<u8> {
    key(
        b"l:",
        &[
            &ms.to_be_bytes(),
            &job.to_be_bytes(),
            &attempt.to_be_bytes(),
        ],
    )
}

/// Closes the JSON object `s` with a `pad` field of pseudo-random hex so
/// that it is exactly `len` bytes (and pages do not compress trivially).
fn pad_json(mut s: String, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    s.push_str(",\"pad\":\"");
    while s.len() < len - 2 {
        x = splitmix(x);
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(len - 2);
    s.push_str("\"}");
    s.into_bytes()
}

/// The ~900-byte job value of event `i` (job `job`), event included.
fn job_val(i: u64, job: u64, id: &[u8]) -> Vec<u8> {
    let s = format!(
        "{{\"job\":{job},\"sub\":\"sub-{}\",\"url\":\"https://hooks.example.invalid/recv/{}\",\"attempt\":0,\"event\":{{\"id\":\"{}\",\"type\":\"order.created\",\"ts\":{},\"data\":{{\"order\":{},\"amount\":{},\"currency\":\"EUR\"}}}}",
        i % 97,
        i % 13,
        String::from_utf8_lossy(id),
        ms_of(i),
        i * 3,
        i % 10000
    );
    pad_json(s, JOB_LEN, i)
}

/// The ~250-byte delivery-log value of job `job` (event `i`).
fn log_val(i: u64, job: u64) -> Vec<u8> {
    let s = format!(
        "{{\"job\":{job},\"status\":200,\"latency_ms\":{},\"ts\":{}",
        i % 500,
        ms_of(i) + 5
    );
    pad_json(s, LOG_LEN, i ^ 0x55)
}

// ---------- measurement ----------

/// The sum of the file sizes below `p` and the bytes of their allocated
/// blocks.
fn dir_sizes(p: &Path) -> (u64, u64) {
    let mut apparent = 0;
    let mut alloc = 0;
    for e in fs::read_dir(p).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = dir_sizes(&e.path());
            apparent += a;
            alloc += b;
        } else {
            apparent += m.len();
            alloc += m.blocks() * 512;
        }
    }
    (apparent, alloc)
}

/// A `kB` field of `/proc/self/status` (VmRSS, VmHWM), in KiB.
fn status_kib(field: &str) -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The process's CPU seconds so far, user + system, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let s = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces: count from after its `)`.
    // utime and stime are fields 14 and 15, so 11 and 12 after the `)`.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / TICKS_PER_S
}

/// The 1-minute load average.
fn load1() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// Bytes as MiB.
fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

/// One report line's sizes, kept for the plateau in the summary.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Events written so far.
    events: u64,
    /// Live keys in the tree.
    live: u64,
    /// Sum of the file sizes.
    apparent: u64,
    /// Bytes of the allocated blocks.
    alloc: u64,
}

/// The summary of the growth: the first plateau is the first report at
/// which the live set had stopped growing and the file sizes had grown by at
/// most [`PLATEAU_GROWTH`] since the report before; the growth is in bytes
/// per event from there to the last report, of the file sizes and of the
/// allocated blocks.
fn growth_after_plateau(samples: &[Sample]) -> String {
    let plateau = samples.windows(2).find_map(|w| {
        let limit = w[0].apparent as f64 * (1.0 + PLATEAU_GROWTH);
        (w[1].live <= w[0].live && w[1].apparent as f64 <= limit).then_some(w[1])
    });
    let (Some(plateau), Some(last)) = (plateau, samples.last()) else {
        return "no plateau of the file sizes with a steady live set".to_string();
    };
    let events = last.events - plateau.events;
    if events == 0 {
        return format!(
            "first plateau at the last report ({} events, {:.1} MiB): no growth measured after it",
            plateau.events,
            mib(plateau.apparent)
        );
    }
    let per_event = |a: u64, b: u64| (b as f64 - a as f64) / events as f64;
    format!(
        "growth after the first plateau ({} events, {:.1} MiB in file sizes, {:.1} MiB allocated) to {} events: {:.1} B/event in file sizes, {:.1} B/event allocated",
        plateau.events,
        mib(plateau.apparent),
        mib(plateau.alloc),
        last.events,
        per_event(plateau.apparent, last.apparent),
        per_event(plateau.alloc, last.alloc)
    )
}

// ---------- the workload ----------

/// Deletes `keys` in batches of [`DELETE_CHUNK`], without a flush.
fn delete(store: &dyn Store, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
    let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys.into_iter().map(|k| (k, None)).collect();
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(DELETE_CHUNK));
        store.apply_batch(TREE, ops)?;
        ops = rest;
    }
    Ok(())
}

/// Runs the workload and prints the report lines and the summary.
fn run(args: &Args, store: &dyn Store, dir: &Path) -> Result<(), StoreError> {
    println!(
        "# store={:?} events={} every={} batch={BATCH} retention_every={RET_EVERY} l_keep={L_KEEP} e_keep={E_KEEP} dir={} pid={}",
        args.store,
        args.events,
        args.every,
        dir.display(),
        std::process::id()
    );
    println!(
        "events\tlive_keys\tapparent_MiB\talloc_MiB\tstore_MiB\trss_MiB\thwm_MiB\tev_per_s\tcpu_s\tload1"
    );

    // Live keys by bookkeeping, checked against the store's count at the end.
    let mut live_e: u64 = 0; // e: and t: each
    let mut live_j: u64 = 0;
    let mut live_l: u64 = 0;
    let mut samples = Vec::new();

    let start = Instant::now();
    let mut last = start;
    let mut last_i: u64 = 0;
    let mut i: u64 = 0;
    // The previous batch: (first event, job ids), completed after the next.
    let mut prev: Option<(u64, Vec<u64>)> = None;
    while i < args.events {
        // 1. New events, durable.
        let lo = i;
        let hi = (i + BATCH).min(args.events);
        let mut ops = Vec::with_capacity(((hi - lo) * 3) as usize);
        let mut jobs = Vec::with_capacity((hi - lo) as usize);
        for n in lo..hi {
            let id = event_id(n);
            let job = store.next_id()?;
            jobs.push(job);
            ops.push((k_e(&id), Some(n.to_be_bytes().to_vec())));
            ops.push((k_t(ms_of(n), &id), Some(Vec::new())));
            ops.push((k_j(due_of(n), job), Some(job_val(n, job, &id))));
        }
        store.apply_batch(TREE, ops)?;
        store.flush()?;
        live_e += hi - lo;
        live_j += hi - lo;

        // 2. Completions of the previous batch, not flushed.
        if let Some((plo, pjobs)) = prev.take() {
            let mut ops = Vec::with_capacity(pjobs.len() * 2);
            for (n, &job) in (plo..).zip(&pjobs) {
                ops.push((k_j(due_of(n), job), None));
                ops.push((k_l(ms_of(n) + 5, job, 1), Some(log_val(n, job))));
            }
            store.apply_batch(TREE, ops)?;
            live_j -= pjobs.len() as u64;
            live_l += pjobs.len() as u64;
        }
        prev = Some((lo, jobs));
        i = hi;

        // 3. Retention.
        if i.is_multiple_of(RET_EVERY) {
            if live_l > L_KEEP {
                let excess = (live_l - L_KEEP) as usize;
                let keys = store.keys(TREE, b"l:", b"l;", excess)?;
                assert_eq!(keys.len(), excess, "l: entries missing");
                delete(store, keys)?;
                live_l -= excess as u64;
            }
            if i > E_KEEP {
                let cutoff = k_t(ms_of(i - E_KEEP), b"");
                let t_keys = store.keys(TREE, b"t:", &cutoff, usize::MAX)?;
                let n = t_keys.len() as u64;
                let mut keys: Vec<Vec<u8>> = t_keys.iter().map(|k| k_e(&k[10..])).collect();
                keys.extend(t_keys);
                delete(store, keys)?;
                live_e -= n;
            }
        }

        // 4. Report.
        if i.is_multiple_of(args.every) || i == args.events {
            let rate = (i - last_i) as f64 / last.elapsed().as_secs_f64();
            let (apparent, alloc) = dir_sizes(dir);
            let live = 2 * live_e + live_j + live_l;
            samples.push(Sample {
                events: i,
                live,
                apparent,
                alloc,
            });
            println!(
                "{i}\t{live}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{rate:.0}\t{:.1}\t{}",
                mib(apparent),
                mib(alloc),
                mib(store.size_on_disk()?),
                status_kib("VmRSS") as f64 / 1024.0,
                status_kib("VmHWM") as f64 / 1024.0,
                cpu_seconds(),
                load1()
            );
            last = Instant::now();
            last_i = i;
        }
    }
    let total_s = start.elapsed().as_secs_f64();

    let t = Instant::now();
    let counted = store.count(TREE, b"", b"\xff")?;
    let count_s = t.elapsed().as_secs_f64();
    let expected = 2 * live_e + live_j + live_l;
    let plateau = growth_after_plateau(&samples);
    println!(
        "# done: {} events in {total_s:.1}s = {:.0} ev/s, {:.1} CPU s, peak RSS {:.1} MiB; live keys counted {counted} in {count_s:.2}s (bookkeeping {expected}); {plateau}",
        args.events,
        args.events as f64 / total_s,
        cpu_seconds(),
        status_kib("VmHWM") as f64 / 1024.0,
    );
    assert_eq!(
        counted as u64, expected,
        "live keys differ from bookkeeping"
    );
    Ok(())
}

/// Opens the store in `--dir` (or a temporary directory), runs the
/// workload and reports the file sizes after the store is closed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.every == 0 || !args.every.is_multiple_of(BATCH) {
        return Err(format!("--every must be a positive multiple of {BATCH}").into());
    }
    // A temporary directory unless one is given; it must not hold data,
    // which the counts would otherwise include.
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
                return Err(format!("{} is not empty", dir.display()).into());
            }
            dir.clone()
        }
        None => {
            temp = tempfile::TempDir::new()?;
            temp.path().to_path_buf()
        }
    };
    let store: Box<dyn Store> = match args.store {
        Kind::Sled => Box::new(SledStore::open(&dir)?),
        Kind::Redb => Box::new(RedbStore::open(&dir)?),
    };
    run(&args, store.as_ref(), &dir)?;
    drop(store);
    let (apparent, alloc) = dir_sizes(&dir);
    println!(
        "# after close: {:.1} MiB in file sizes, {:.1} MiB allocated",
        mib(apparent),
        mib(alloc)
    );
    Ok(())
}
