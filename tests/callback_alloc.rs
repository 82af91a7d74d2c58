//! The audio callback's work must not allocate: the body (`push_converted`) and the wake-up
//! (`Thread::unpark`) run under a counting global allocator.
#![cfg(feature = "mic")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mambatag::live::capture::push_converted;
use mambatag::live::SourceStats;
use ringbuf::traits::{Consumer, Split};
use ringbuf::HeapRb;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
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
    ARMED.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        push_converted(&i16_data, &mut prod, &stats);
        push_converted(&f32_data, &mut prod, &stats);
        me.unpark();
        // Overflow path too: the ring fills up.
        let _ = cons.pop_slice(&mut sink[..1024]);
    }
    ARMED.store(false, Ordering::SeqCst);
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "the callback allocated");
    assert!(stats.overflow_samples.load(Ordering::Relaxed) > 0);
}
