//! The test binary's one global allocator. Per thread, it counts what is asked for while
//! [`measure`] runs (refusing any single request above [`REFUSE_ABOVE`] meanwhile), and the bytes
//! live and their peak (for [`peak_of`]), so that a test bounds what its own calls allocate while
//! other tests run on other threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// While measuring, a single request above this is refused (the test process aborts with "memory
/// allocation of N bytes failed", as a master under a memory limit does) instead of taking
/// gigabytes of the shared machine's memory.
const REFUSE_ABOVE: usize = 256 << 20;

thread_local! {
    static METERING: Cell<bool> = const { Cell::new(false) };
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

struct Meter;

/// Counts a request of `size` bytes; false when it is to be refused.
fn admit(size: usize) -> bool {
    METERING
        .try_with(|on| {
            if on.get() {
                REQUESTED.with(|r| r.set(r.get().saturating_add(size)));
                size <= REFUSE_ABOVE
            } else {
                true
            }
        })
        .unwrap_or(true)
}

/// Follows the bytes live on this thread, and their peak.
fn live(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed to `System` unchanged, or refused with a null pointer (which
// `GlobalAlloc` allows); only thread-local counters are updated besides.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            live(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            live(layout.size() as isize);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation here is).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            live(new_size as isize - layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `realloc`.
        unsafe { System.dealloc(ptr, layout) };
        live(-(layout.size() as isize));
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns its result with the bytes this thread asked for meanwhile (a realloc
/// counts its whole new size).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    REQUESTED.with(|r| r.set(0));
    METERING.with(|on| on.set(true));
    let out = f();
    METERING.with(|on| on.set(false));
    (out, REQUESTED.with(Cell::get))
}

/// The most bytes `f` had allocated at once on this thread, beyond what was live before it.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let result = f();
    let peak = PEAK.with(Cell::get) - start;
    (usize::try_from(peak).unwrap_or(0), result)
}
