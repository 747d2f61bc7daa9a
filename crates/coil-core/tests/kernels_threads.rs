//! The thread pool as the kernels use it: every task exactly once, any thread count, results
//! independent of the thread count, nested and concurrent use, panics, idle/wake cycles.

use coil_core::threads::{physical_cores, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn every_task_runs_exactly_once_for_any_thread_count() {
    for n in 1..=5 {
        let pool = ThreadPool::new(n);
        assert_eq!(pool.n_threads(), n);
        for tasks in [0usize, 1, 2, 3, 16, 257] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{n} threads, {tasks} tasks");
        }
    }
    assert_eq!(ThreadPool::new(0).n_threads(), 1);
}

#[test]
fn many_short_jobs_back_to_back_and_after_idling() {
    let pool = ThreadPool::new(3);
    let total = AtomicUsize::new(0);
    for round in 0..2000 {
        pool.run(4, |i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
        if round % 500 == 0 {
            // Long enough for the workers to park.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(total.load(Ordering::Relaxed), 2000 * 10);
}

#[test]
fn writes_from_all_threads_are_visible_after_run() {
    let pool = ThreadPool::new(2);
    let mut out = vec![0u64; 4096];
    for k in 1..50u64 {
        let p = out.as_mut_ptr() as usize;
        pool.run(64, |t| {
            for i in t * 64..(t + 1) * 64 {
                // SAFETY: each task writes its own 64 elements.
                unsafe { *(p as *mut u64).add(i) = i as u64 * k };
            }
        });
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as u64 * k));
    }
}

#[test]
fn nested_and_concurrent_runs_complete() {
    let pool = std::sync::Arc::new(ThreadPool::new(2));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let p = pool.clone();
            std::thread::spawn(move || {
                let n = AtomicUsize::new(0);
                for _ in 0..100 {
                    p.run(3, |_| {
                        p.run(4, |_| {
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                    });
                }
                n.load(Ordering::Relaxed)
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 1200);
    }
}

#[test]
fn a_panicking_task_is_reported_to_the_caller_and_the_pool_keeps_working() {
    let pool = ThreadPool::new(3);
    for _ in 0..3 {
        let ran = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(32, |i| {
                ran.fetch_add(1, Ordering::Relaxed);
                if i == 17 {
                    panic!("task 17 failed");
                }
            })
        }));
        let msg = r.unwrap_err().downcast::<&str>().map(|s| s.to_string()).unwrap_or_default();
        assert_eq!(msg, "task 17 failed");
        assert_eq!(ran.load(Ordering::Relaxed), 32, "the other tasks still run");
    }
    let n = AtomicUsize::new(0);
    pool.run(8, |_| {
        n.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(n.load(Ordering::Relaxed), 8);
}

#[test]
fn pools_can_be_created_and_dropped_repeatedly() {
    for _ in 0..50 {
        let pool = ThreadPool::new(4);
        pool.run(4, |_| {});
        drop(pool);
    }
    let cores = physical_cores();
    assert!(cores >= 1 && cores <= std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
}
