//! `MVNET_TIMING=1`: where one command's time goes, phase by phase. A front end calls
//! `begin` when the command starts and prints `take` at its end; the engine marks the ends
//! of its phases on the way. Off (one thread-local check) unless begun with the variable set.

use std::cell::RefCell;
use std::time::Instant;

type Phases = (Instant, Vec<(&'static str, f64)>);

thread_local! {
    static PHASES: RefCell<Option<Phases>> = const { RefCell::new(None) };
}

/// Starts timing this thread's command, if `MVNET_TIMING` is set.
pub fn begin() {
    begin_if(std::env::var_os("MVNET_TIMING").is_some());
}

fn begin_if(on: bool) {
    PHASES.with(|p| *p.borrow_mut() = on.then(|| (Instant::now(), Vec::new())));
}

/// Ends phase `what`: the time since the previous mark (or `begin`).
pub fn mark(what: &'static str) {
    PHASES.with(|p| {
        if let Some((t, v)) = p.borrow_mut().as_mut() {
            v.push((what, t.elapsed().as_secs_f64() * 1e3));
            *t = Instant::now();
        }
    });
}

/// The phases so far (milliseconds each), and timing off.
pub fn take() -> Vec<(&'static str, f64)> {
    PHASES.with(|p| p.borrow_mut().take().map(|(_, v)| v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn marks_only_between_begin_and_take() {
        super::mark("before");
        assert!(super::take().is_empty());
        super::begin_if(true);
        super::mark("a");
        super::mark("b");
        let v = super::take();
        assert_eq!(v.iter().map(|(w, _)| *w).collect::<Vec<_>>(), ["a", "b"]);
        super::mark("after");
        assert!(super::take().is_empty());
    }
}
