//! The allocator: the system's, with a small per-thread cache of large blocks on the resident
//! agent's worker threads.
//!
//! Why: the package ships a static musl build, which starts in a third of the time of a
//! glibc one (what every forwarded command pays), but musl's allocator gives a freed group
//! of blocks back to the kernel at once. The agent then did about ten mmap/munmap pairs per
//! request (page faults, TLB flushes), for the same buffers each time. Keeping a few freed
//! blocks of 4 KiB and more per worker thread ends that. Other threads and processes use
//! the system allocator as it is. (mimalloc would do it too, but it costs every process
//! 0.3 ms at start, more than the plugin's whole start here.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Blocks of 2^12 .. 2^(12 + CLASSES - 1) bytes are rounded up to a power of two.
const MIN_SHIFT: u32 = 12;
const CLASSES: usize = 7; // up to 256 KiB
const PER_CLASS: usize = 8;

pub struct CachingAlloc;

struct Cache {
    on: Cell<bool>,
    blocks: [[Cell<*mut u8>; PER_CLASS]; CLASSES],
    len: [Cell<u8>; CLASSES],
}

thread_local! {
    // No destructor and constant initialisation: safe to use from inside the allocator.
    static CACHE: Cache = const {
        Cache {
            on: Cell::new(false),
            blocks: [const { [const { Cell::new(std::ptr::null_mut()) }; PER_CLASS] }; CLASSES],
            len: [const { Cell::new(0) }; CLASSES],
        }
    };
}

/// Turns the cache on for the calling thread (a long-lived worker).
pub fn cache_on_this_thread() {
    CACHE.with(|c| c.on.set(true));
}

/// The class of a layout whose size is rounded up, or None for small or odd ones.
fn class(layout: &Layout) -> Option<usize> {
    if layout.align() > 16 || layout.size() < (1 << MIN_SHIFT) {
        return None;
    }
    let shift = layout.size().next_power_of_two().trailing_zeros();
    let c = (shift - MIN_SHIFT) as usize;
    (c < CLASSES).then_some(c)
}

fn rounded(c: usize) -> Layout {
    Layout::from_size_align(1 << (MIN_SHIFT as usize + c), 16).expect("a valid layout")
}

// SAFETY: every block handed out comes from System with the layout it is given back with
// (classed sizes are always allocated and freed rounded up), and a cached block is only
// reused for a request of its own class.
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            None => System.alloc(layout),
            Some(c) => {
                let cached = CACHE
                    .try_with(|cache| {
                        let n = cache.len[c].get() as usize;
                        if !cache.on.get() || n == 0 {
                            return std::ptr::null_mut();
                        }
                        cache.len[c].set((n - 1) as u8);
                        cache.blocks[c][n - 1].replace(std::ptr::null_mut())
                    })
                    .unwrap_or(std::ptr::null_mut());
                if cached.is_null() {
                    System.alloc(rounded(c))
                } else {
                    cached
                }
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(&layout) {
            None => System.dealloc(ptr, layout),
            Some(c) => {
                let kept = CACHE
                    .try_with(|cache| {
                        let n = cache.len[c].get() as usize;
                        if !cache.on.get() || n == PER_CLASS {
                            return false;
                        }
                        cache.blocks[c][n].set(ptr);
                        cache.len[c].set((n + 1) as u8);
                        true
                    })
                    .unwrap_or(false);
                if !kept {
                    System.dealloc(ptr, rounded(c));
                }
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class(&layout), class(&new_layout)) {
            (None, None) => System.realloc(ptr, layout, new_size),
            // Still fits the block it has.
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_into_power_of_two_classes() {
        let l = |n| Layout::from_size_align(n, 8).unwrap();
        assert_eq!(class(&l(100)), None);
        assert_eq!(class(&l(4096)), Some(0));
        assert_eq!(class(&l(4097)), Some(1));
        assert_eq!(class(&l(65536)), Some(4));
        assert_eq!(class(&l(69632)), Some(5));
        assert_eq!(class(&l(1 << 20)), None);
        assert_eq!(class(&Layout::from_size_align(8192, 64).unwrap()), None);
    }

    #[test]
    fn a_cached_block_is_reused_and_growth_within_a_class_keeps_the_block() {
        std::thread::spawn(|| {
            cache_on_this_thread();
            let a = CachingAlloc;
            let l = Layout::from_size_align(5000, 8).unwrap();
            // SAFETY: allocations freed with the layouts they were made with.
            unsafe {
                let p = a.alloc(l);
                a.dealloc(p, l);
                let q = a.alloc(Layout::from_size_align(8000, 8).unwrap());
                assert_eq!(p, q, "the same 8 KiB block");
                let r = a.realloc(q, Layout::from_size_align(8000, 8).unwrap(), 8192);
                assert_eq!(r, q);
                a.dealloc(r, Layout::from_size_align(8192, 8).unwrap());
            }
        })
        .join()
        .unwrap();
    }
}
