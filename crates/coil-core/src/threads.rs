//! A small persistent thread pool for the compute kernels.
//!
//! Per-token work (a matrix-vector product of a few hundred microseconds or less) cannot afford to
//! spawn threads or go through a general-purpose scheduler, so the pool keeps `n_threads - 1`
//! workers alive that spin briefly on an atomic "generation" counter after each job (and then park
//! on a condition variable, so an idle pool costs nothing). [`ThreadPool::run`] publishes a job,
//! takes part in it on the calling thread, and returns when every task has finished. Tasks are
//! handed out from an atomic counter, so which thread runs a task is not deterministic — kernels
//! that need deterministic results make each output element the product of exactly one task.
//!
//! * Panics inside a task are caught on the thread that ran it; the job still runs to completion
//!   (the other tasks run) and the first panic is then re-raised on the caller of `run`.
//! * A `run` from inside a task (nested), or while another thread is running a job on the same
//!   pool, executes all its tasks inline on the calling thread: never a deadlock.
//! * On wasm32 there are no threads: `run` always executes inline and `n_threads()` is 1.

#[cfg(not(target_arch = "wasm32"))]
use std::sync::Arc;

/// Native default thread count: the number of physical cores this process may use (on Linux read
/// from `/sys/devices/system/cpu/*/topology`, else `/proc/cpuinfo` core ids; capped by
/// `available_parallelism`, which honours CPU affinity and cgroup quotas). Other systems:
/// `available_parallelism`. Always 1 on wasm32.
pub fn physical_cores() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let avail = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
        #[cfg(target_os = "linux")]
        {
            if let Some(p) = linux_physical_cores() {
                return p.clamp(1, avail);
            }
        }
        avail
    }
}

#[cfg(all(not(target_arch = "wasm32"), target_os = "linux"))]
fn linux_physical_cores() -> Option<usize> {
    use std::collections::HashSet;
    // The CPUs this process may run on (affinity), from /proc/self/status "Cpus_allowed_list".
    let allowed: Option<HashSet<usize>> = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .and_then(|l| parse_cpu_list(l.split(':').nth(1)?.trim()))
    });
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok().and_then(|s| parse_cpu_list(s.trim()));
    if let Some(online) = online {
        let mut cores = HashSet::new();
        let mut seen_any = false;
        for cpu in online {
            if let Some(a) = &allowed {
                if !a.contains(&cpu) {
                    continue;
                }
            }
            let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
            let core = std::fs::read_to_string(format!("{base}/core_id")).ok();
            let pkg = std::fs::read_to_string(format!("{base}/physical_package_id")).ok();
            match (core, pkg) {
                (Some(c), Some(p)) => {
                    seen_any = true;
                    cores.insert((p.trim().to_string(), c.trim().to_string()));
                }
                _ => {
                    seen_any = false;
                    break;
                }
            }
        }
        if seen_any && !cores.is_empty() {
            return Some(cores.len());
        }
    }
    // /proc/cpuinfo: unique (physical id, core id) pairs.
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None::<String>, None::<String>);
    for line in info.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(c) = core.take() {
                cores.insert((phys.take().unwrap_or_default(), c));
            }
            phys = None;
            continue;
        }
        let mut kv = line.splitn(2, ':');
        let k = kv.next().unwrap_or("").trim();
        let v = kv.next().unwrap_or("").trim().to_string();
        match k {
            "physical id" => phys = Some(v),
            "core id" => core = Some(v),
            _ => {}
        }
    }
    if cores.is_empty() {
        None
    } else {
        Some(cores.len())
    }
}

/// Parses a Linux CPU list such as "0-3,8,10-11".
#[cfg(all(not(target_arch = "wasm32"), target_os = "linux"))]
fn parse_cpu_list(s: &str) -> Option<std::collections::HashSet<usize>> {
    let mut out = std::collections::HashSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().ok()?);
            }
        }
    }
    Some(out)
}

std::thread_local! {
    /// Set while this thread runs tasks of some pool: a nested `run` then executes inline.
    static IN_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A fixed set of worker threads that run `Fn(usize)` tasks. `Send + Sync`.
pub struct ThreadPool {
    n_threads: usize,
    #[cfg(not(target_arch = "wasm32"))]
    shared: Option<Arc<native::Shared>>,
    #[cfg(not(target_arch = "wasm32"))]
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("n_threads", &self.n_threads).finish()
    }
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all: the caller of `run` plus `n_threads - 1` workers
    /// (0 is treated as 1). On wasm32 no thread is started.
    pub fn new(n_threads: usize) -> ThreadPool {
        let n = n_threads.max(1);
        #[cfg(target_arch = "wasm32")]
        {
            let _ = n;
            ThreadPool { n_threads: 1 }
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            if n == 1 {
                return ThreadPool { n_threads: 1, shared: None, handles: Vec::new() };
            }
            let shared = Arc::new(native::Shared::new(n - 1));
            let mut handles = Vec::with_capacity(n - 1);
            for i in 0..n - 1 {
                let s = shared.clone();
                let h = std::thread::Builder::new()
                    .name(format!("coil-worker-{i}"))
                    .spawn(move || native::worker(s))
                    .expect("failed to spawn a coil worker thread");
                handles.push(h);
            }
            ThreadPool { n_threads: n, shared: Some(shared), handles }
        }
    }

    /// Threads that take part in a job (including the caller of `run`).
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `f(task)` for every `task` in `0..n_tasks` across the pool's threads and returns when
    /// all have finished. The order and the thread a task runs on are unspecified. A panic in `f`
    /// is re-raised here after the other tasks have run. Calls from inside a task run inline.
    pub fn run<F: Fn(usize) + Sync>(&self, n_tasks: usize, f: F) {
        if n_tasks == 0 {
            return;
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            if let Some(shared) = &self.shared {
                if n_tasks > 1 && !IN_POOL.with(|c| c.get()) {
                    if let Some(r) = shared.try_run(n_tasks, &f) {
                        if let Err(p) = r {
                            std::panic::resume_unwind(p);
                        }
                        return;
                    }
                }
            }
        }
        run_inline(n_tasks, &f);
    }
}

fn run_inline(n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let was = IN_POOL.with(|c| c.replace(true));
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            let v = self.0;
            IN_POOL.with(|c| c.set(v));
        }
    }
    let _reset = Reset(was);
    for i in 0..n_tasks {
        f(i);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            if let Some(s) = &self.shared {
                s.shutdown();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    //! Job protocol. `state` packs `[generation: 32 bits][closed: 1 bit][active workers: 31 bits]`.
    //! The caller writes the job, then publishes a new generation (open, 0 active). A worker that
    //! sees it *joins* with a CAS that increments `active` only if the generation still matches
    //! and the job is not closed; it then takes tasks from `next` and leaves (decrements
    //! `active`). After running out of tasks itself, the caller closes the job and waits only for
    //! the workers that joined. A worker that was descheduled and wakes late finds the job closed
    //! and never touches it, so it cannot hold the caller up.
    use super::IN_POOL;
    use std::any::Any;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// How long an idle worker keeps checking for the next job before parking: first busy
    /// spinning, then yielding its time slice (polite when cores are oversubscribed).
    const SPIN: Duration = Duration::from_micros(50);
    const YIELD: Duration = Duration::from_micros(2000);

    const CLOSED: u64 = 1 << 31;
    const ACTIVE: u64 = CLOSED - 1;

    type Job = *const (dyn Fn(usize) + Sync);
    type Panic = Box<dyn Any + Send + 'static>;

    pub(super) struct Shared {
        state: AtomicU64,
        /// The current job; written before the generation is published.
        job: std::cell::UnsafeCell<(usize, Job)>,
        next: AtomicUsize,
        /// Serialises jobs from different caller threads.
        busy: Mutex<()>,
        panic: Mutex<Option<Panic>>,
        panicked: AtomicBool,
        sleeping: AtomicUsize,
        park: Mutex<()>,
        wake: Condvar,
        stop: AtomicBool,
    }

    // SAFETY: `job` is written only by the thread holding `busy`, before the Release store that
    // publishes a generation, and read by a worker only after it joined that generation (CAS,
    // Acquire) and before it leaves; the caller does not return (ending the job's borrow) or
    // write `job` again until every joined worker has left.
    unsafe impl Sync for Shared {}
    unsafe impl Send for Shared {}

    impl Shared {
        pub(super) fn new(_n_workers: usize) -> Shared {
            Shared {
                state: AtomicU64::new(CLOSED),
                job: std::cell::UnsafeCell::new((0, std::ptr::null::<fn(usize)>() as *const (dyn Fn(usize) + Sync))),
                next: AtomicUsize::new(0),
                busy: Mutex::new(()),
                panic: Mutex::new(None),
                panicked: AtomicBool::new(false),
                sleeping: AtomicUsize::new(0),
                park: Mutex::new(()),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
            }
        }

        /// Runs the job on the pool, or returns None when another thread is using the pool.
        pub(super) fn try_run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) -> Option<Result<(), Panic>> {
            let _guard = match self.busy.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::WouldBlock) => return None,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            };
            // SAFETY: see `unsafe impl Sync`. The lifetime is erased; the job is only used by
            // workers that joined, and this function waits for all of them to leave.
            unsafe {
                let job: Job = std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _);
                *self.job.get() = (n_tasks, job);
            }
            self.next.store(0, Ordering::Relaxed);
            self.panicked.store(false, Ordering::Relaxed);
            let gen = match (self.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF {
                0 => 1, // 0 means "no job yet" to a starting worker
                g => g,
            };
            self.state.store(gen << 32, Ordering::SeqCst);
            if self.sleeping.load(Ordering::SeqCst) > 0 {
                let _p = self.park.lock().unwrap_or_else(|p| p.into_inner());
                self.wake.notify_all();
            }
            let was = IN_POOL.with(|c| c.replace(true));
            self.work(n_tasks, f);
            IN_POOL.with(|c| c.set(was));
            // Close the job, then wait for the workers that joined it to finish their tasks.
            let mut s = self.state.fetch_or(CLOSED, Ordering::AcqRel) | CLOSED;
            let mut spins = 0u32;
            while s & ACTIVE != 0 {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                s = self.state.load(Ordering::Acquire);
            }
            let p = if self.panicked.load(Ordering::Relaxed) {
                self.panic.lock().unwrap_or_else(|p| p.into_inner()).take()
            } else {
                None
            };
            Some(match p {
                Some(p) => Err(p),
                None => Ok(()),
            })
        }

        fn work(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
            loop {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= n_tasks {
                    break;
                }
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))) {
                    let mut slot = self.panic.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(p);
                    }
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
        }

        /// Joins generation `gen` if it is still open.
        fn join(&self, gen: u64) -> bool {
            let mut s = self.state.load(Ordering::Acquire);
            loop {
                if s >> 32 != gen || s & CLOSED != 0 {
                    return false;
                }
                match self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return true,
                    Err(now) => s = now,
                }
            }
        }

        pub(super) fn shutdown(&self) {
            self.stop.store(true, Ordering::SeqCst);
            let _p = self.park.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_all();
        }
    }

    pub(super) fn worker(s: std::sync::Arc<Shared>) {
        IN_POOL.with(|c| c.set(true));
        // Generation 0 is "no job yet" (a job may be published before this thread starts).
        let mut seen = 0u64;
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            let gen = loop {
                let g = s.state.load(Ordering::Acquire) >> 32;
                if g != seen {
                    break g;
                }
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(32) {
                    let e = start.elapsed();
                    if e > YIELD {
                        // Park. Re-check under the lock so a notify cannot be missed.
                        let mut guard = s.park.lock().unwrap_or_else(|p| p.into_inner());
                        s.sleeping.fetch_add(1, Ordering::SeqCst);
                        while s.state.load(Ordering::SeqCst) >> 32 == seen && !s.stop.load(Ordering::SeqCst) {
                            guard = s.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
                        }
                        s.sleeping.fetch_sub(1, Ordering::SeqCst);
                        drop(guard);
                        continue;
                    } else if e > SPIN {
                        std::thread::yield_now();
                        continue;
                    }
                }
                std::hint::spin_loop();
            };
            seen = gen;
            if !s.join(gen) {
                continue;
            }
            // SAFETY: joined: the job stays valid until this worker leaves.
            let (n_tasks, job) = unsafe { *s.job.get() };
            let f: &(dyn Fn(usize) + Sync) = unsafe { &*job };
            s.work(n_tasks, f);
            s.state.fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_task_once() {
        for n in [1usize, 2, 3, 5] {
            let pool = ThreadPool::new(n);
            for tasks in [0usize, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn nested_runs_inline() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        pool.run(4, |_| {
            pool.run(5, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn panics_are_reraised_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(8, |i| {
                if i == 3 {
                    panic!("task 3");
                }
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(10, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn concurrent_callers_share_a_pool() {
        let pool = std::sync::Arc::new(ThreadPool::new(2));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let p = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let n = AtomicUsize::new(0);
                        p.run(16, |_| {
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(n.load(Ordering::Relaxed), 16);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let n = AtomicUsize::new(0);
        pool.run(64, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn physical_cores_is_positive() {
        assert!(physical_cores() >= 1);
    }
}
