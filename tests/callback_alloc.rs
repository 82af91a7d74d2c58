//! The audio callback's work must not allocate: the body (`push_converted`) and the wake-up
//! (`Thread::unpark`) run under a counting global allocator. Only the test's own thread is
//! counted: the test harness's other threads may allocate at any time (a clean-clone run once
//! counted 4 such allocations while the callback made none).
#![cfg(feature = "mic")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use mambatag::live::capture::push_converted;
use mambatag::live::SourceStats;
use ringbuf::traits::{Consumer, Split};
use ringbuf::HeapRb;

struct Counting;

thread_local! {
    /// Set on the thread whose allocations are counted (const-initialised: reading it does
    /// not allocate).
    static ARMED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn count_if_armed() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count_if_armed();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count_if_armed();
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn the_callback_body_does_not_allocate() {
    let stats = SourceStats::default();
    let (mut prod, mut cons) = HeapRb::<f32>::new(48_000).split();
    let i16_data: Vec<i16> = (0..1024).map(|i| (i * 37) as i16).collect();
    let f32_data: Vec<f32> = (0..1024).map(|i| i as f32 / 1024.0).collect();
    let me = std::thread::current();
    let mut sink = vec![0.0f32; 4096];
    ARMED.set(true);
    for _ in 0..100 {
        push_converted(&i16_data, &mut prod, &stats);
        push_converted(&f32_data, &mut prod, &stats);
        me.unpark();
        // Overflow path too: the ring fills up.
        let _ = cons.pop_slice(&mut sink[..1024]);
    }
    ARMED.set(false);
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "the callback allocated");
    assert!(stats.overflow_samples.load(Ordering::Relaxed) > 0);
}
