//! A resident worker's helper thread: runs one piece of a request beside the worker, so
//! that two independent waits overlap (an attach reserves its address in the store while
//! the kernel creates its link). Only threads that turn it on (`enable_on_this_thread`, the
//! agent's workers) get a helper; elsewhere `join` runs both parts one after the other,
//! so a short-lived process never pays for starting a thread.
//!
//! Why a kept thread and not `std::thread::scope`: starting a thread costs tens of
//! microseconds (clone, a stack, its teardown), about what the overlap saves.
//!
//! The helper sleeps between jobs. Waking it costs 60 to 80 µs on this virtual machine
//! before it runs; the reservation it then makes still ends before the link is created.
//! (Waking it earlier and keeping it spinning until the job came was measured too: no
//! faster, as the spinning thread slowed the worker beside it.)

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::mpsc::{channel, Receiver, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Helper {
    jobs: Sender<Job>,
    done: Receiver<()>,
}

/// Where a helper thread lives: its network namespace, and the CPUs it may run on (empty:
/// those of the thread that starts it).
struct Home {
    ns: RawFd,
    cpus: Vec<usize>,
}

thread_local! {
    /// None: no helper (the default); Some((home, None)): on, not started yet.
    static HELPER: RefCell<Option<(Home, Option<Helper>)>> = const { RefCell::new(None) };
}

/// Gives the calling thread a helper from its first `join` on. The helper lives in the
/// network namespace `home_ns` (an fd that stays open for the process's life: the agent's
/// own namespace), not in whichever one the worker visits when it starts it: a thread
/// keeps its namespace alive, and a caller's must be free to go.
/// `cpus`: the CPUs the helper may run on (a worker bound to one CPU gives the others, so
/// that its helper runs beside it); empty: the worker's own.
pub fn enable_on_this_thread(home_ns: RawFd, cpus: Vec<usize>) {
    HELPER.with(|h| *h.borrow_mut() = Some((Home { ns: home_ns, cpus }, None)));
}

/// Whether `join` runs its two parts at once on this thread.
pub fn enabled() -> bool {
    HELPER.with(|h| h.borrow().is_some())
}

/// Runs `beside` on the helper thread while `here` runs on this one, and returns both
/// results once both are done. Without a helper: `beside`, then `here`. A panic in
/// `beside` is raised again here, after `here` has finished. Not reentrant: neither part
/// may call `join` (the helper runs one job at a time, and says only that one is done).
pub fn join<A: Send, B>(beside: impl FnOnce() -> A + Send, here: impl FnOnce() -> B) -> (A, B) {
    let Some((jobs, done)) = HELPER.with(|h| {
        let mut h = h.borrow_mut();
        let (home, slot) = h.as_mut()?;
        let helper = slot.get_or_insert_with(|| start(home));
        Some((helper.jobs.clone(), std::ptr::from_ref(&helper.done)))
    }) else {
        let a = beside();
        return (a, here());
    };
    let mut result: Option<std::thread::Result<A>> = None;
    let slot = &mut result;
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        *slot = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            beside,
        )));
    });
    // SAFETY: the job borrows `result` and what `beside` captured, all of which outlive this
    // call; `Waiter` below blocks until the helper reports the job done (even while this
    // thread unwinds), so nothing it borrows is touched after this function returns.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    if let Err(std::sync::mpsc::SendError(job)) = jobs.send(job) {
        // The helper is gone (it only ends with this thread's channel): do it here.
        job();
        let a = result.take().expect("the job ran");
        let b = here();
        return match a {
            Ok(a) => (a, b),
            Err(panic) => std::panic::resume_unwind(panic),
        };
    }
    struct Waiter(*const Receiver<()>);
    impl Drop for Waiter {
        fn drop(&mut self) {
            // SAFETY: the receiver lives in this thread's HELPER slot, which is only
            // replaced by `enable_on_this_thread`, never while a join runs.
            let _ = unsafe { &*self.0 }.recv();
        }
    }
    let waiter = Waiter(done);
    let b = here();
    drop(waiter);
    match result.take().expect("the helper ran the job") {
        Ok(a) => (a, b),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn start(home: &Home) -> Helper {
    let (jobs, rx) = channel::<Job>();
    let (tx, done) = channel::<()>();
    let (home_ns, cpus) = (home.ns, home.cpus.clone());
    std::thread::Builder::new()
        .name("mvnet-helper".into())
        .spawn(move || {
            // SAFETY: setns(2) of this new thread to an fd the process keeps open.
            unsafe { libc::setns(home_ns, libc::CLONE_NEWNET) };
            crate::os::run_this_thread_on(&cpus);
            // Ends when its worker thread does (the sender goes with the thread-local).
            for job in rx {
                job();
                if tx.send(()).is_err() {
                    return;
                }
            }
        })
        .expect("start the helper thread");
    Helper { jobs, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_ns() -> RawFd {
        use std::os::fd::IntoRawFd;
        // Kept open for the test process's life, as the agent keeps its own.
        std::fs::File::open("/proc/self/ns/net")
            .unwrap()
            .into_raw_fd()
    }

    #[test]
    fn without_a_helper_both_parts_run_here_in_order() {
        let order = std::sync::Mutex::new(Vec::new());
        let (a, b) = join(
            || {
                order.lock().unwrap().push("beside");
                std::thread::current().id()
            },
            || {
                order.lock().unwrap().push("here");
                std::thread::current().id()
            },
        );
        assert_eq!(a, b);
        assert_eq!(*order.lock().unwrap(), ["beside", "here"]);
    }

    #[test]
    fn with_a_helper_the_parts_overlap_and_borrow_from_the_caller() {
        std::thread::spawn(|| {
            enable_on_this_thread(own_ns(), Vec::new());
            for round in 0..3 {
                let mut borrowed = vec![round];
                let gate = std::sync::Barrier::new(2);
                // Each part waits for the other: this only returns if they run at once.
                let (a, b) = join(
                    || {
                        gate.wait();
                        borrowed.push(7);
                        std::thread::current().id()
                    },
                    || {
                        gate.wait();
                        std::thread::current().id()
                    },
                );
                assert_ne!(a, b);
                assert_eq!(borrowed, [round, 7]);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_panic_beside_is_raised_here_after_both_parts_ended() {
        std::thread::spawn(|| {
            enable_on_this_thread(own_ns(), Vec::new());
            let here_done = std::sync::atomic::AtomicBool::new(false);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                join(
                    || panic!("beside failed"),
                    || {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        here_done.store(true, std::sync::atomic::Ordering::SeqCst);
                    },
                )
            }));
            assert!(caught.is_err());
            assert!(here_done.load(std::sync::atomic::Ordering::SeqCst));
            // The helper still serves.
            assert_eq!(join(|| 1, || 2), (1, 2));
        })
        .join()
        .unwrap();
    }
}
