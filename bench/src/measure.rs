//! What the benchmarks measure with: a server, thread CPU time, percentiles, units.

use std::time::Duration;

/// A huddle_server on loopback, on a runtime of `workers` threads: the runtime (keep it, and enter
/// it for the plugin's embedded needs), the server, and its base URL.
pub fn loopback_server(
    workers: usize,
) -> (
    tokio::runtime::Runtime,
    huddle_server::RunningServer,
    String,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let server = {
        let _g = rt.enter();
        huddle_server::start(huddle_server::ServerConfig::loopback()).expect("server")
    };
    let base = format!("ws://{}", server.local_addr());
    (rt, server, base)
}

/// The time of CPU clock `clock`.
fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, a valid timespec we own.
    let _ = unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time this process has used so far (every thread).
#[allow(
    dead_code,
    reason = "the media bench's; plugin_bench shares this module"
)]
pub fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The `p` percentile (0..=1) of `samples` (sorts them); zero for no samples.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len().saturating_sub(1)) as f64 * p).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
