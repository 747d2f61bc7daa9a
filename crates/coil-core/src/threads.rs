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
//! * On wasm32 without the `atomics` target feature (the default module) there are no threads:
//!   `run` always executes inline and `n_threads()` is 1.
//! * On wasm32 with `atomics` (the threaded module) threads cannot be spawned from Rust: the
//!   JavaScript host creates one process-wide pool with [`wasm_pool::create`], starts a Web Worker /
//!   `worker_threads` Worker per worker, each instantiating the module on the same shared memory
//!   and calling [`wasm_pool::worker`] (which returns only at shutdown), and every `ThreadPool`
//!   then uses that pool, capped at its own thread count. The job protocol is the native one; as
//!   the caller only ever waits for workers that *joined* a job, workers that are still starting
//!   (or never start) cost nothing but their share of the work.

#[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
use std::sync::Arc;

/// Native default thread count: the number of physical cores this process may use (on Linux read
/// from `/sys/devices/system/cpu/*/topology`, else `/proc/cpuinfo` core ids; capped by
/// `available_parallelism`, which honours CPU affinity and cgroup quotas). Other systems:
/// `available_parallelism`. On wasm32: 1, or the threaded module's pool size (workers + 1).
pub fn physical_cores() -> usize {
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    {
        1
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
    {
        wasm_pool::threads()
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
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
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
    /// (0 is treated as 1). On wasm32 no thread is started: the single-threaded module runs
    /// everything on the caller, the threaded one uses the host's pool (at most its size).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n = n_threads.max(1);
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        {
            let _ = n;
            ThreadPool { n_threads: 1 }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
        {
            match wasm_pool::shared() {
                Some(s) if n > 1 => {
                    let n = n.min(wasm_pool::threads());
                    ThreadPool { n_threads: n, shared: (n > 1).then_some(s) }
                }
                _ => ThreadPool { n_threads: 1, shared: None },
            }
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
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        {
            if let Some(shared) = &self.shared {
                if n_tasks > 1 && !IN_POOL.with(|c| c.get()) {
                    if let Some(r) = shared.try_run(n_tasks, self.n_threads - 1, &f) {
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

/// The threaded wasm module's process-wide pool, created and staffed by the JavaScript host.
#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
pub mod wasm_pool {
    use super::native::Shared;
    use std::sync::{Arc, OnceLock};

    static POOL: OnceLock<Arc<Shared>> = OnceLock::new();

    /// Creates the pool for `n_workers` workers (once; later calls return the same pool) and
    /// returns its address, which the host hands to each worker's [`worker`].
    pub fn create(n_workers: usize) -> usize {
        let p = POOL.get_or_init(|| Arc::new(Shared::new(n_workers.clamp(1, 255))));
        Arc::as_ptr(p) as usize
    }

    pub(super) fn shared() -> Option<Arc<Shared>> {
        POOL.get().cloned()
    }

    /// Threads a job can use: the workers plus the calling thread (1 without a pool).
    pub fn threads() -> usize {
        POOL.get().map_or(1, |p| p.n_workers() + 1)
    }

    fn get(addr: usize) -> Option<&'static Arc<Shared>> {
        POOL.get().filter(|p| Arc::as_ptr(p) as usize == addr)
    }

    /// Runs one worker of the pool at `addr` on the calling (Worker) thread; returns at shutdown
    /// or at once for an unknown address.
    pub fn worker(addr: usize) {
        if let Some(p) = get(addr) {
            super::native::worker(p.clone());
        }
    }

    /// Address of the pool's "broken" flag (an aligned u32): the host stores 1 there with
    /// `Atomics.store` when a worker's instance failed (it cannot call into a failed instance),
    /// so jobs stop waiting for workers and run on the caller from then on: a broken worker can
    /// never make the caller wait forever.
    pub fn broken_flag(addr: usize) -> usize {
        get(addr).map_or(0, |p| p.broken_flag_addr())
    }

    /// Tasks the pool's workers have run so far (0 without a pool).
    pub fn worker_tasks() -> u64 {
        POOL.get().map_or(0, |p| p.worker_tasks())
    }
}

#[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
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
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    /// How long an idle worker keeps checking for the next job before parking: first busy
    /// spinning, then yielding its time slice (polite when cores are oversubscribed).
    #[cfg(not(target_arch = "wasm32"))]
    const SPIN: std::time::Duration = std::time::Duration::from_micros(50);
    #[cfg(not(target_arch = "wasm32"))]
    const YIELD: std::time::Duration = std::time::Duration::from_micros(2000);
    /// wasm32 has no clock in std (and no yield): spin a number of checks (a few ms), then park.
    #[cfg(target_arch = "wasm32")]
    const PARK_AFTER_SPINS: u32 = 1 << 22;

    /// What an idle worker does next.
    enum Idle {
        Spin,
        #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
        Yield,
        Park,
    }

    /// Measures a worker's idle time (wall clock natively, checks on wasm32).
    struct IdleTimer {
        #[cfg(not(target_arch = "wasm32"))]
        start: std::time::Instant,
        spins: u32,
    }

    impl IdleTimer {
        fn new() -> IdleTimer {
            IdleTimer {
                #[cfg(not(target_arch = "wasm32"))]
                start: std::time::Instant::now(),
                spins: 0,
            }
        }

        fn next(&mut self) -> Idle {
            self.spins = self.spins.wrapping_add(1);
            #[cfg(not(target_arch = "wasm32"))]
            {
                if self.spins.is_multiple_of(32) {
                    let e = self.start.elapsed();
                    if e > YIELD {
                        return Idle::Park;
                    } else if e > SPIN {
                        return Idle::Yield;
                    }
                }
                Idle::Spin
            }
            #[cfg(target_arch = "wasm32")]
            {
                if self.spins >= PARK_AFTER_SPINS {
                    Idle::Park
                } else {
                    Idle::Spin
                }
            }
        }
    }

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
        /// Workers the current job may take (the caller's pool size minus one).
        limit: AtomicU64,
        n_workers: usize,
        /// Set (to 1) by the wasm host when a worker's instance failed (at `broken_flag_addr`);
        /// never set natively.
        broken: AtomicU32,
        /// Tasks run by workers (not callers) since the pool started: evidence the workers work.
        worker_tasks: AtomicU64,
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
        pub(super) fn new(n_workers: usize) -> Shared {
            Shared {
                state: AtomicU64::new(CLOSED),
                job: std::cell::UnsafeCell::new((0, std::ptr::null::<fn(usize)>() as *const (dyn Fn(usize) + Sync))),
                next: AtomicUsize::new(0),
                busy: Mutex::new(()),
                limit: AtomicU64::new(0),
                n_workers,
                broken: AtomicU32::new(0),
                worker_tasks: AtomicU64::new(0),
                panic: Mutex::new(None),
                panicked: AtomicBool::new(false),
                sleeping: AtomicUsize::new(0),
                park: Mutex::new(()),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
            }
        }

        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(super) fn n_workers(&self) -> usize {
            self.n_workers
        }

        /// Address of the broken flag, for a host that sets it with an atomic store of 1 (a failed
        /// wasm instance cannot be called into any more).
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(super) fn broken_flag_addr(&self) -> usize {
            &self.broken as *const AtomicU32 as usize
        }

        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        pub(super) fn worker_tasks(&self) -> u64 {
            self.worker_tasks.load(Ordering::Relaxed)
        }

        fn is_broken(&self) -> bool {
            self.broken.load(Ordering::Relaxed) != 0
        }

        /// Runs the job on the pool with at most `max_workers` workers, or returns None when
        /// another thread is using the pool (or the pool is broken).
        pub(super) fn try_run(
            &self,
            n_tasks: usize,
            max_workers: usize,
            f: &(dyn Fn(usize) + Sync),
        ) -> Option<Result<(), Panic>> {
            if self.is_broken() {
                return None;
            }
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
            self.limit.store(max_workers as u64, Ordering::Relaxed);
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
                if self.is_broken() {
                    // A worker that joined died in the job: its tasks may not have run.
                    let mut slot = self.panic.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(Box::new("a coil worker thread failed during a job"));
                    }
                    self.panicked.store(true, Ordering::Relaxed);
                    break;
                }
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

        fn work(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) -> u64 {
            let mut ran = 0;
            loop {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= n_tasks {
                    return ran;
                }
                ran += 1;
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
                if s >> 32 != gen || s & CLOSED != 0 || s & ACTIVE >= self.limit.load(Ordering::Relaxed) {
                    return false;
                }
                match self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return true,
                    Err(now) => s = now,
                }
            }
        }

        #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
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
            let mut idle = IdleTimer::new();
            let gen = loop {
                let g = s.state.load(Ordering::Acquire) >> 32;
                if g != seen {
                    break g;
                }
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                match idle.next() {
                    Idle::Park => {
                        // Park. Re-check under the lock so a notify cannot be missed.
                        let mut guard = s.park.lock().unwrap_or_else(|p| p.into_inner());
                        s.sleeping.fetch_add(1, Ordering::SeqCst);
                        while s.state.load(Ordering::SeqCst) >> 32 == seen && !s.stop.load(Ordering::SeqCst) {
                            guard = s.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
                        }
                        s.sleeping.fetch_sub(1, Ordering::SeqCst);
                        drop(guard);
                        idle = IdleTimer::new();
                    }
                    Idle::Yield => std::thread::yield_now(),
                    Idle::Spin => std::hint::spin_loop(),
                }
            };
            seen = gen;
            if !s.join(gen) {
                continue;
            }
            // SAFETY: joined: the job stays valid until this worker leaves.
            let (n_tasks, job) = unsafe { *s.job.get() };
            let f: &(dyn Fn(usize) + Sync) = unsafe { &*job };
            let ran = s.work(n_tasks, f);
            s.worker_tasks.fetch_add(ran, Ordering::Relaxed);
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
