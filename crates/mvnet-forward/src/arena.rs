//! A bump allocator in front of another, for processes that mostly live about a
//! millisecond: the CNI forwarder, and the `mvnet` CLI (whose `network connect` is one).
//!
//! Why: musl's allocator gives freed memory back to the kernel at once, so the forwarder
//! paid an `mmap` and a `munmap` for its few buffers; on this project's VM those two system
//! calls were 0.18 ms of the forwarder's 1.4 ms of CPU per ADD (`scripts/flamegraph.sh`).
//! Here, memory comes from one static array (in .bss: a page costs nothing until it is
//! touched) and is never freed: the process exits before that matters. Requests that do not
//! fit go to the allocator behind, as does freeing them; a long-lived process (an agent)
//! so wastes at most the arena's size once.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The arena's size: more than a forwarded command needs (its config, the request and the
/// answer), so the allocator behind is only the fallback.
const SIZE: usize = 256 << 10;

#[repr(C, align(4096))]
struct Space(UnsafeCell<[u8; SIZE]>);

// SAFETY: the allocator hands out disjoint ranges of the array (`USED` only grows, by
// compare-and-swap), so no two threads ever share a byte of it.
unsafe impl Sync for Space {}

static SPACE: Space = Space(UnsafeCell::new([0; SIZE]));
/// Bytes of `SPACE` handed out so far.
static USED: AtomicUsize = AtomicUsize::new(0);

/// The allocator, with the one behind it: `#[global_allocator] static A: Arena = Arena(System);`
/// (one arena per process: every `Arena` shares it).
pub struct Arena<B: GlobalAlloc>(pub B);

fn base() -> usize {
    SPACE.0.get() as usize
}

fn in_arena(ptr: *mut u8) -> bool {
    (base()..base() + SIZE).contains(&(ptr as usize))
}

/// Takes `size` bytes aligned to `align` from the arena, or None when they do not fit.
fn bump(size: usize, align: usize) -> Option<*mut u8> {
    let mut used = USED.load(Ordering::Relaxed);
    loop {
        let start = (base() + used).checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end > base() + SIZE {
            return None;
        }
        match USED.compare_exchange_weak(used, end - base(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(start as *mut u8),
            Err(now) => used = now,
        }
    }
}

// SAFETY: every pointer handed out is valid for its layout (aligned, inside the array or
// from the system allocator) and not handed out again; the system allocator's pointers go
// back to it.
unsafe impl<B: GlobalAlloc> GlobalAlloc for Arena<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match bump(layout.size(), layout.align()) {
            Some(p) => p,
            None => self.0.alloc(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !in_arena(ptr) {
            self.0.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_arena(ptr) {
            return self.0.realloc(ptr, layout, new_size);
        }
        // The last block handed out grows (or shrinks) in place.
        let (start, end) = (ptr as usize - base(), ptr as usize - base() + layout.size());
        if start + new_size <= SIZE
            && USED
                .compare_exchange(end, start + new_size, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return ptr;
        }
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn blocks_are_aligned_disjoint_grow_in_place_and_overflow_to_the_system() {
        let a = Arena(System);
        // SAFETY: blocks used within their layouts, freed with the layouts they were made
        // with (or left, as the arena's are).
        unsafe {
            let l = Layout::from_size_align(100, 64).unwrap();
            let p = a.alloc(l);
            let q = a.alloc(l);
            assert!(in_arena(p) && in_arena(q));
            assert_eq!((p as usize % 64, q as usize % 64), (0, 0));
            assert!(q as usize >= p as usize + 100);
            p.write_bytes(1, 100);
            q.write_bytes(2, 100);
            // The last block grows where it is, keeping its bytes.
            let q2 = a.realloc(q, l, 5000);
            assert_eq!(q2, q);
            assert_eq!(*q2.add(99), 2);
            // An earlier one moves, with its bytes.
            let p2 = a.realloc(p, l, 300);
            assert_ne!(p2, p);
            assert_eq!((*p2, *p2.add(99)), (1, 1));
            assert_eq!(*q2.add(0), 2, "the other block is untouched");
            // Too big for what is left: the one behind's, and freed there.
            let big = Layout::from_size_align(SIZE, 8).unwrap();
            let s = a.alloc(big);
            assert!(!s.is_null() && !in_arena(s));
            s.write_bytes(3, SIZE);
            a.dealloc(s, big);
            a.dealloc(p2, Layout::from_size_align(300, 64).unwrap());
        }
    }
}
