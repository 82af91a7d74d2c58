//! CUDA kernels of the fused ops: `kernels.ptx` (built from `kernels.cu` by
//! scripts/build-ptx.py, embedded here) loaded through the CUDA driver API (`libcuda.so.1`,
//! opened at run time like ONNX Runtime itself) and launched on ONNX Runtime's compute stream,
//! so they run inside its CUDA graphs too.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex, OnceLock};

use ort::operator::{ComputeContext, Kernel};
use ort::value::DynTensorValueType;

use super::{
    err, gather, ConvDims, DenseCall, LayerDims, LogMelDims, LogMelStepDims, SsmDims, F32, F64,
    HISTORY, HOP, N_FFT,
};

const PTX: &str = concat!(include_str!("kernels.ptx"), "\0");
/// Threads per block of the conv and scan kernels (kernels.cu compiles `mamba_ssm_r8n16` with
/// `__launch_bounds__(128, ...)`: it cannot launch with more).
const THREADS: u32 = 128;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
type CuFunction = *mut c_void;

struct Driver {
    _lib: libloading::Library,
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_attribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    ctx_get_current: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    module_load_data: unsafe extern "C" fn(*mut CuModule, *const c_void) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    host_register: unsafe extern "C" fn(*mut c_void, usize, c_uint) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
    host_unregister: unsafe extern "C" fn(*mut c_void) -> CuResult,
    stream_create: unsafe extern "C" fn(*mut *mut c_void, c_uint) -> CuResult,
    stream_destroy: unsafe extern "C" fn(*mut c_void) -> CuResult,
    memcpy_htod_async: unsafe extern "C" fn(u64, *const c_void, usize, *mut c_void) -> CuResult,
    memcpy_dtoh_async: unsafe extern "C" fn(*mut c_void, u64, usize, *mut c_void) -> CuResult,
    stream_sync: unsafe extern "C" fn(*mut c_void) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(u64) -> CuResult,
}

// SAFETY: the driver API is thread-safe; the struct only holds function pointers.
unsafe impl Send for Driver {}
unsafe impl Sync for Driver {}

impl Driver {
    fn load() -> Result<Self, String> {
        // SAFETY: loading the CUDA driver library runs no unexpected initialisers.
        let lib = unsafe { libloading::Library::new("libcuda.so.1") }
            .map_err(|e| format!("cannot open the CUDA driver libcuda.so.1: {e}"))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol has the documented driver-API signature.
                *unsafe { lib.get($name) }.map_err(|e| {
                    format!("libcuda.so.1 lacks {}: {e}", String::from_utf8_lossy($name))
                })?
            };
        }
        Ok(Self {
            init: sym!(b"cuInit"),
            device_get: sym!(b"cuDeviceGet"),
            device_attribute: sym!(b"cuDeviceGetAttribute"),
            primary_ctx_retain: sym!(b"cuDevicePrimaryCtxRetain"),
            ctx_get_current: sym!(b"cuCtxGetCurrent"),
            ctx_set_current: sym!(b"cuCtxSetCurrent"),
            module_load_data: sym!(b"cuModuleLoadData"),
            module_get_function: sym!(b"cuModuleGetFunction"),
            launch: sym!(b"cuLaunchKernel"),
            error_string: sym!(b"cuGetErrorString"),
            host_register: sym!(b"cuMemHostRegister_v2"),
            memcpy_htod: sym!(b"cuMemcpyHtoD_v2"),
            memcpy_dtoh: sym!(b"cuMemcpyDtoH_v2"),
            host_unregister: sym!(b"cuMemHostUnregister"),
            stream_create: sym!(b"cuStreamCreate"),
            stream_destroy: sym!(b"cuStreamDestroy_v2"),
            memcpy_htod_async: sym!(b"cuMemcpyHtoDAsync_v2"),
            memcpy_dtoh_async: sym!(b"cuMemcpyDtoHAsync_v2"),
            stream_sync: sym!(b"cuStreamSynchronize"),
            mem_alloc: sym!(b"cuMemAlloc_v2"),
            mem_free: sym!(b"cuMemFree_v2"),
            _lib: lib,
        })
    }

    fn check(&self, rc: CuResult, what: &str) -> ort::Result<()> {
        if rc == 0 {
            return Ok(());
        }
        let mut s: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorString writes a pointer to a static string.
        let msg = if unsafe { (self.error_string)(rc, &mut s) } == 0 && !s.is_null() {
            // SAFETY: NUL-terminated static string from the driver.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        } else {
            format!("CUresult {rc}")
        };
        Err(err(format!("{what}: {msg}")))
    }
}

fn driver() -> ort::Result<&'static Driver> {
    static D: OnceLock<Result<Driver, String>> = OnceLock::new();
    D.get_or_init(Driver::load)
        .as_ref()
        .map_err(|e| err(e.clone()))
}

/// Which fused op a [`CudaKernel`] runs.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Conv,
    Ssm,
    LogMel,
    LogMelStep,
    Layer,
    Embed,
    Head,
}

/// The kernels of `kernels.cu`, in [`ENTRY_POINTS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Conv,
    Ssm,
    LogMel,
    /// `MambaLayer`'s three launches, with 1 or more rows per block.
    In1,
    In8,
    Mix1,
    Mix4,
    Out1,
    Out8,
    /// The log-mel kernel's window and twiddle tables, once per module.
    Tables,
    /// `mamba_ssm` compiled for dt_rank 8 and d_state 16 (the default model's shape).
    SsmR8N16,
    /// Small batches: `layer_mix` + `layer_out` as one launch (see [`launch_layer`]).
    MixOut1,
    /// One row of a dense layer per block row (optional RMSNorm, bias, sigmoid): `layer_in`
    /// for small batches, `MambaEmbed`, `MambaHead`.
    Dense1,
    /// `MambaLogMelStep`: `mamba_logmel` reading the history and the hop from two tensors.
    LogMelStep,
    /// `layer_mixout1`'s mix alone, one row per block (the three-launch path's middle batches).
    MixH1,
    /// `layer_mixh1` compiled for 2 blocks per SM (batches above the SM count).
    MixH2,
}

const ENTRY_POINTS: [&std::ffi::CStr; 16] = [
    c"mamba_conv",
    c"mamba_ssm",
    c"mamba_logmel",
    c"layer_in1",
    c"layer_in8",
    c"layer_mix1",
    c"layer_mix4",
    c"layer_out1",
    c"layer_out8",
    c"mamba_tables",
    c"mamba_ssm_r8n16",
    c"layer_mixout1",
    c"mamba_dense1",
    c"mamba_logmel_step",
    c"layer_mixh1",
    c"layer_mixh2",
];

/// Hops per shared-memory group of `mamba_ssm` (kernels.cu's `SSM_HOPS`).
const SSM_HOPS: usize = 16;

/// Dynamic shared memory of a `mamba_ssm` block over `t` hops: kernels.cu's group of
/// G = min(t, SSM_HOPS) hops holds G dbc rows (dt_rank + 2 d_state floats) and each thread's x
/// and z for G hops. Sized by G, not SSM_HOPS, so that a one-hop step does not reserve 16 hops
/// of shared memory per block (which would cap the resident blocks per SM).
fn ssm_shared_bytes(t: usize, r: usize, n: usize) -> usize {
    t.clamp(1, SSM_HOPS) * (r + 2 * n + 2 * THREADS as usize) * 4
}

/// How `mamba_logmel` splits `b` rows of `t` frames over blocks of 256 threads: `(F, G)`, F
/// frames per block and G band groups per frame. Many frames: up to 32 frames per block (the
/// block's set-up, window and twiddle tables and its bands' filterbank weights, is then paid
/// once per 32 frames) while there are still 4 blocks per SM. Fewer frames than SMs: one frame
/// per block and 8 band groups (at most one per band), so that several SMs share each frame's
/// filterbank sums.
fn logmel_split(b: usize, t: usize, bands: usize, sms: usize) -> (usize, usize) {
    let frames = b * t;
    if frames < sms {
        return (1, 8.min(bands).max(1));
    }
    (t.min(32).min(frames / (4 * sms)).max(1), 1)
}

/// How `mamba_logmel_step` (and `mamba_logmel` for one hop) splits `b` rows (one frame each)
/// over blocks: `(G, RB)`, G band groups per row and RB rows per block. A block's set-up (the
/// window and twiddle tables, its bands' filterbank weights) is paid once per block, and
/// cost more than its frame's FFT while it scanned the whole filterbank (session 14's split):
/// with fewer rows than SMs, G groups share a row's bands so that about 2 blocks per SM run
/// (each repeats the row's FFT); from 2 rows per SM on, a block takes RB = ceil(b / SMs) rows
/// (at most 2) one after another, so the set-up is paid once per RB rows. In between, one row
/// per block: two blocks per SM run at once, and 2 rows per block measured slower at 256
/// streams on an H100 (154.7 vs 147.4 us per step). With the band table (session 15), 2 rows
/// per block were 1–5 % faster than 4 and 8 at 512–1,024 streams and even at 4,096–10,240.
/// `MAMBATAG_LOGMEL_G` / `MAMBATAG_LOGMEL_RB` override them (A/B timing only: a row's
/// arithmetic is the same for any split).
fn logmel_step_split(b: usize, bands: usize, sms: usize) -> (usize, usize) {
    let b = b.max(1);
    let (g, rb) = if b < sms {
        ((2 * sms / b).clamp(1, 8), 1)
    } else if b < 2 * sms {
        (1, 1)
    } else {
        (1, b.div_ceil(sms).min(2))
    };
    // read once per process, as the other A/B switches: this runs at every step's launch
    static FORCED: OnceLock<(Option<usize>, Option<usize>)> = OnceLock::new();
    let (fg, frb) = *FORCED.get_or_init(|| {
        (
            env_usize("MAMBATAG_LOGMEL_G"),
            env_usize("MAMBATAG_LOGMEL_RB"),
        )
    });
    (fg.unwrap_or(g).min(bands).max(1), frb.unwrap_or(rb).max(1))
}

/// A kernel A/B switch's number from the environment (callers read it once, into a `OnceLock`).
fn env_usize(var: &str) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// Threads per block of the layer kernels, and their column tiles (`IN_COLS`, `OUT_COLS`).
const LAYER_THREADS: u32 = 256;
const IN_COLS: usize = 64;
const OUT_COLS: usize = 32;
/// Dynamic shared memory a block may use without opting in.
const SHARED_LIMIT: usize = 48 * 1024;
/// CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
const ATTR_SM_COUNT: c_int = 16;

/// The loaded PTX module of one device: its context and the kernels, indexed by [`Which`].
struct Module {
    ctx: CuContext,
    functions: [CuFunction; ENTRY_POINTS.len()],
    /// Streaming multiprocessors of the device.
    sms: usize,
}

// SAFETY: driver handles may be used from any thread.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

fn module(device_id: i32) -> ort::Result<Arc<Module>> {
    static MODULES: OnceLock<Mutex<HashMap<i32, Arc<Module>>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = map.get(&device_id) {
        return Ok(m.clone());
    }
    let d = driver()?;
    // Kernel development only: MAMBATAG_PTX=FILE loads that PTX (same entry points and
    // parameters) instead of the embedded one, so that variants can be timed with one binary.
    let ptx = match std::env::var_os("MAMBATAG_PTX") {
        Some(f) => std::ffi::CString::new(std::fs::read(&f).map_err(|e| {
            err(format!(
                "MAMBATAG_PTX {}: {e}",
                std::path::Path::new(&f).display()
            ))
        })?)
        .map_err(|_| err("MAMBATAG_PTX: the file holds a NUL byte".to_string()))?,
        None => CStr::from_bytes_with_nul(PTX.as_bytes())
            .map_err(|e| err(format!("the embedded PTX: {e}")))?
            .to_owned(),
    };
    // SAFETY: plain driver-API calls with valid out-pointers; the PTX is NUL-terminated.
    let m = unsafe {
        d.check((d.init)(0), "cuInit")?;
        let mut dev: CuDevice = 0;
        d.check((d.device_get)(&mut dev, device_id), "cuDeviceGet")?;
        // ONNX Runtime's CUDA EP works in the device's primary context (runtime API).
        let mut ctx: CuContext = std::ptr::null_mut();
        d.check(
            (d.primary_ctx_retain)(&mut ctx, dev),
            "cuDevicePrimaryCtxRetain",
        )?;
        d.check((d.ctx_set_current)(ctx), "cuCtxSetCurrent")?;
        let mut module: CuModule = std::ptr::null_mut();
        d.check(
            (d.module_load_data)(&mut module, ptx.as_ptr().cast()),
            "cuModuleLoadData (fused Mamba kernels)",
        )?;
        let mut sms: c_int = 0;
        d.check(
            (d.device_attribute)(&mut sms, ATTR_SM_COUNT, dev),
            "cuDeviceGetAttribute",
        )?;
        let mut functions = [std::ptr::null_mut(); ENTRY_POINTS.len()];
        for (f, name) in functions.iter_mut().zip(ENTRY_POINTS) {
            d.check(
                (d.module_get_function)(f, module, name.as_ptr()),
                &format!("cuModuleGetFunction {}", name.to_string_lossy()),
            )?;
        }
        // the constant tables of `mamba_logmel` (window, FFT twiddles), before any session runs
        let mut none: [*mut c_void; 0] = [];
        d.check(
            (d.launch)(
                functions[Entry::Tables as usize],
                1,
                1,
                1,
                512,
                1,
                1,
                0,
                std::ptr::null_mut(),
                none.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            "cuLaunchKernel mamba_tables",
        )?;
        d.check(
            (d.stream_sync)(std::ptr::null_mut()),
            "cuStreamSynchronize (mamba_tables)",
        )?;
        Arc::new(Module {
            ctx,
            functions,
            sms: sms.max(1) as usize,
        })
    };
    map.insert(device_id, m.clone());
    Ok(m)
}

/// Makes the module's context current on this thread (the run thread normally has it already).
fn enter(d: &Driver, m: &Module) -> ort::Result<()> {
    let mut cur: CuContext = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    unsafe { d.check((d.ctx_get_current)(&mut cur), "cuCtxGetCurrent")? };
    if cur != m.ctx {
        // SAFETY: the context was retained in `module`.
        unsafe { d.check((d.ctx_set_current)(m.ctx), "cuCtxSetCurrent")? };
    }
    Ok(())
}

/// Whether a `MambaLayer` call takes the two-launch path (`mamba_dense1`, `layer_mixout1`): its
/// shapes fit those kernels' register arrays (kernels.cu's `FAST_*` limits: d_conv <= 4,
/// dt_rank <= 16, d_inner <= 256, d_model <= 128) and the batch is small enough that the
/// mix, repeated by each of a row's `ceil(d_model / OUT_COLS)` blocks, still fits the SMs in
/// one wave. `MAMBATAG_LAYER_FAST=0` turns it off (kernel A/B timing only).
fn fast_layer(d: &LayerDims, sms: usize) -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    if *OFF.get_or_init(|| std::env::var_os("MAMBATAG_LAYER_FAST").is_some_and(|v| v == "0")) {
        return false;
    }
    fast_shapes(d) && d.dm.div_ceil(OUT_COLS) * d.b <= sms
}

/// Whether the layer's shapes fit the register arrays of `layer_mixout1` and `layer_mixh1`.
fn fast_shapes(d: &LayerDims) -> bool {
    let w = d.r + 2 * d.n;
    let per_x = |w: usize| d.e.div_ceil((LAYER_THREADS as usize / w).max(1));
    (1..=4).contains(&d.k)
        && d.r <= 16
        && d.e <= LAYER_THREADS as usize
        && w <= LAYER_THREADS as usize
        && per_x(w) <= 48
        && d.dm <= 128
}

/// The mix kernel of the three-launch path, for shapes that fit `layer_mixh1`'s register arrays:
/// `layer_mixh1` (one row per block, every load issued first) while the batch fits the SMs in
/// one wave, `layer_mixh2` (the same code for 2 blocks per SM) up to 4 rows per SM; past that,
/// and for other shapes, `layer_mix1` (one row per block) while the batch fits the SMs and
/// `layer_mix4` (4 rows per block) above. H100, 2026-12-07: `layer_mixh1` made the step 16 %
/// faster at 64 streams and 25 % at 256, and 10 % slower than `layer_mix4` at 1,024. H200,
/// 2026-12-07, two rounds: `layer_mixh2` took 192 streams from 112–117 to 99–101 µs per step,
/// 256 from 118–123 to 110–113 and 512 from 187–195 to 166–169 (on session 15's H100 it was
/// 2–5 % slower than `layer_mixh1` at 64–128 rows, so it starts above the SM count); at 1,024–
/// 4,096 rows of the layer graph it was no faster than `layer_mix4` (and the fused graph runs
/// there).
/// A/B timing only: `MAMBATAG_LAYER_MIXH=0` turns both off, `=1` leaves `layer_mixh2` out;
/// `MAMBATAG_LAYER_MIXH_MAX=N` moves their upper bound to N rows. All sum in the same order.
fn mix_entry(d: &LayerDims, sms: usize) -> Entry {
    static MODE: OnceLock<(Option<usize>, Option<usize>)> = OnceLock::new();
    let (mode, max) = *MODE.get_or_init(|| {
        (
            env_usize("MAMBATAG_LAYER_MIXH"),
            env_usize("MAMBATAG_LAYER_MIXH_MAX"),
        )
    });
    mix_entry_for(d, sms, mode, max)
}

/// [`mix_entry`]'s rule with its two A/B switches passed in (unit-tested without the environment).
fn mix_entry_for(d: &LayerDims, sms: usize, mode: Option<usize>, max: Option<usize>) -> Entry {
    let held = mode != Some(0) && fast_shapes(d) && d.b <= max.unwrap_or(4 * sms);
    if held && (d.b <= sms || mode == Some(1)) {
        Entry::MixH1
    } else if held {
        Entry::MixH2
    } else if d.b <= sms {
        Entry::Mix1
    } else {
        Entry::Mix4
    }
}

/// Rows per block of the three-launch path's projections (`layer_in*`, `layer_out*`): one (lowest
/// latency) up to half the SM count, else 8 (the weights are read once per 8 rows). H100, two
/// rounds (BENCHMARKS.md, session 15): 8-row projections from 65 rows took 128 streams from
/// 93–96 to 81–89 µs per step and 96 from 85–91 to 81–82; from 33 rows they lost 3–4 µs at 34.
/// 16 rows per block (one wave at 512 streams where 8 take two) were 10–23 % slower at 192–512
/// streams and 1–3 % at 1,024–2,048 (H100, session 16) and were removed.
/// `MAMBATAG_LAYER_ROWS1=N` moves the one-row bound to N rows (A/B timing only: both sum in the
/// same order).
fn projection_rows(b: usize, sms: usize) -> usize {
    static BOUND: OnceLock<Option<usize>> = OnceLock::new();
    let bound = *BOUND.get_or_init(|| env_usize("MAMBATAG_LAYER_ROWS1"));
    projection_rows_for(b, sms, bound)
}

/// [`projection_rows`]' rule with its A/B switch passed in.
fn projection_rows_for(b: usize, sms: usize, one: Option<usize>) -> usize {
    if b <= one.unwrap_or(sms / 2) {
        1
    } else {
        8
    }
}

/// Launches the kernels of `MambaLayer` (see kernels.cu): two (`mamba_dense1`,
/// `layer_mixout1`) for small batches of shapes that fit them ([`fast_layer`]), else three: the
/// projections with [`projection_rows`] rows per block (the weights are read once per block of
/// rows), and the mix as [`mix_entry`] picks. All paths sum in the same order, so a row's scores
/// do not depend on the path. `p`: the op's 14 input pointers, then its 5 outputs (x', conv',
/// h', xz, y).
fn launch_layer(
    ctx: &ComputeContext,
    m: &Module,
    d: &LayerDims,
    p: &[*mut c_void],
) -> ort::Result<()> {
    let w = d.r + 2 * d.n;
    if d.k > 8 || d.n > 16 || d.r > 32 || w > LAYER_THREADS as usize {
        return Err(err(format!(
            "MambaLayer (CUDA): d_conv {} > 8, d_state {} > 16, dt_rank {} > 32 or x_proj width \
             {w} > {LAYER_THREADS} (use the step-fused graph: --kernels fused)",
            d.k, d.n, d.r
        )));
    }
    let q = |i: usize| p[i];
    // the mix kernels' inputs: xz, conv_state, h, conv_w, conv_b, x_w, dt_w, dt_b, A, D
    let mix_in = [17, 1, 2, 5, 6, 7, 8, 9, 10, 11].map(q);
    if fast_layer(d, m.sms) {
        launch(
            ctx,
            m,
            Entry::Dense1,
            ((2 * d.e).div_ceil(IN_COLS), d.b),
            LAYER_THREADS,
            4 * d.dm,
            vec![q(0), q(3), q(13), q(4), std::ptr::null_mut(), q(17)],
            &[d.b, d.dm, 2 * d.e, 0],
        )?;
        return launch(
            ctx,
            m,
            Entry::MixOut1,
            (d.dm.div_ceil(OUT_COLS), d.b),
            LAYER_THREADS,
            0,
            [&mix_in[..], &[q(0), q(12), q(18), q(15), q(16), q(14)]].concat(),
            &[d.b, d.e, d.n, d.r, d.k, d.dm],
        );
    }
    let rb_p = projection_rows(d.b, m.sms);
    let fmix = mix_entry(d, m.sms);
    let rb_m = if fmix == Entry::Mix4 { 4 } else { 1 };
    let (fin, fout) = if rb_p == 1 {
        (Entry::In1, Entry::Out1)
    } else {
        (Entry::In8, Entry::Out8)
    };
    let t = LAYER_THREADS;
    let mix_shared = 4 * (rb_m * (d.e + w) + t as usize * rb_m);
    // the projections' dynamic rows plus their static partial sums (kernels.cu's `part`:
    // 4 * RB * IN_COLS floats in layer_in, 8 * RB * OUT_COLS in layer_out)
    let proj_part = 4 * rb_p * (4 * IN_COLS).max(8 * OUT_COLS);
    if mix_shared > SHARED_LIMIT || 4 * rb_p * d.e.max(d.dm) + proj_part > SHARED_LIMIT {
        return Err(err(format!(
            "MambaLayer (CUDA): d_model {} / d_inner {} need more than {SHARED_LIMIT} bytes of \
             shared memory per block (use the step-fused graph: --kernels fused)",
            d.dm, d.e
        )));
    }
    let rows_p = d.b.div_ceil(rb_p);
    launch(
        ctx,
        m,
        fin,
        ((2 * d.e).div_ceil(IN_COLS), rows_p),
        t,
        4 * rb_p * d.dm,
        vec![q(0), q(3), q(4), q(13), q(17)],
        &[d.b, d.dm, 2 * d.e],
    )?;
    if matches!(fmix, Entry::MixH1 | Entry::MixH2) {
        launch(
            ctx,
            m,
            fmix,
            (1, d.b),
            t,
            0,
            [&mix_in[..], &[q(0), q(12), q(18), q(15), q(16), q(14)]].concat(),
            &[d.b, d.e, d.n, d.r, d.k, d.dm],
        )?;
    } else {
        launch(
            ctx,
            m,
            fmix,
            (d.b.div_ceil(rb_m), 1),
            t,
            mix_shared,
            [&mix_in[..], &[q(18), q(15), q(16)]].concat(),
            &[d.b, d.e, d.n, d.r, d.k],
        )?;
    }
    launch(
        ctx,
        m,
        fout,
        (d.dm.div_ceil(OUT_COLS), rows_p),
        t,
        4 * rb_p * d.e,
        vec![q(0), q(18), q(12), q(14)],
        &[d.b, d.dm, d.e],
    )
}

/// Launches `entry` on the op's stream: grid `(x, y)`, `threads` per block, `shared` bytes
/// of dynamic shared memory; the kernel's parameters are the device pointers `ptrs`, then the
/// sizes `ints` (as C ints).
#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &ComputeContext,
    m: &Module,
    entry: Entry,
    grid: (usize, usize),
    threads: u32,
    shared: usize,
    mut ptrs: Vec<*mut c_void>,
    ints: &[usize],
) -> ort::Result<()> {
    if grid.1 == 0 || grid.0 == 0 {
        return Ok(());
    }
    if grid.1 > 65_535 {
        let name = ENTRY_POINTS[entry as usize].to_string_lossy();
        return Err(err(format!("{name} (CUDA): batch {} > 65535", grid.1)));
    }
    let mut ints: Vec<c_int> = ints.iter().map(|&n| n as c_int).collect();
    let mut args: Vec<*mut c_void> = ptrs
        .iter_mut()
        .map(|p| p as *mut _ as *mut c_void)
        .chain(ints.iter_mut().map(|n| n as *mut _ as *mut c_void))
        .collect();
    let d = driver()?;
    enter(d, m)?;
    let stream = ctx.stream()?.map_or(std::ptr::null_mut(), |s| s.as_ptr());
    // SAFETY: `args` points at live locals with the kernel's parameter types (pointers, ints).
    let rc = unsafe {
        (d.launch)(
            m.functions[entry as usize],
            grid.0 as c_uint,
            grid.1 as c_uint,
            1,
            threads,
            1,
            1,
            shared as c_uint,
            stream,
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    d.check(rc, "cuLaunchKernel")
}

/// The device pointers of an op call's inputs, then of its outputs (allocated with `shapes`).
fn pointers(
    ctx: &ComputeContext,
    ins: Vec<ort::value::ValueRef<'_>>,
    shapes: &[Vec<i64>],
) -> ort::Result<Vec<*mut c_void>> {
    let mut p = Vec::with_capacity(ins.len() + shapes.len());
    for (i, v) in ins.into_iter().enumerate() {
        let t = v
            .downcast::<DynTensorValueType>()
            .map_err(|e| err(format!("input {i}: {e}")))?;
        p.push(t.data_ptr().cast_mut());
    }
    for (i, shape) in shapes.iter().enumerate() {
        let v = ctx
            .output(i, shape.clone())?
            .ok_or_else(|| err(format!("output {i} could not be allocated")))?;
        p.push(v.downcast::<DynTensorValueType>()?.data_ptr().cast_mut());
    }
    Ok(p)
}

/// kernels.cu's band table of a filterbank `mel [257, M]` (row-major, bin by band): `bands`
/// = lo[M], hi[M], off[M + 1] and `wts`, band j's weights of bins lo[j]..hi[j] (from its first
/// nonzero weight to its last, zeros between included) at wts[off[j]..]. An empty band has
/// lo = hi = 0. The kernels' sums read the same weights in the same order as from `mel`.
fn band_table(mel: &[f64], m: usize) -> (Vec<i32>, Vec<f64>) {
    let mut lo = Vec::with_capacity(m);
    let mut hi = Vec::with_capacity(m);
    let mut off = Vec::with_capacity(m + 1);
    let mut wts = Vec::new();
    let bins = mel.len() / m;
    for j in 0..m {
        let w = |k: usize| mel[k * m + j];
        let first = (0..bins).find(|&k| w(k) != 0.0);
        let (l, h) = first.map_or((0, 0), |l| {
            let last = (l..bins).rev().find(|&k| w(k) != 0.0).unwrap_or(l);
            (l, last + 1)
        });
        lo.push(l as i32);
        hi.push(h as i32);
        off.push(wts.len() as i32);
        wts.extend((l..h).map(w));
    }
    off.push(wts.len() as i32);
    ([lo, hi, off].concat(), wts)
}

/// A log-mel op's band table ([`band_table`]) in device memory, made from the op's filterbank
/// input (a graph initializer) on its first call and kept while ORT hands over the same buffer:
/// the kernels then read ~500 weights per block instead of scanning all 257 × M for nonzeros
/// (Nsight Compute, 256 streams: that scan stalled `mamba_logmel_step` on global loads).
struct DeviceBands {
    module: Arc<Module>,
    /// The filterbank's device address and M.
    key: (usize, usize),
    /// One allocation: `bands` (i32), padded to 8 bytes, then `wts` (f64).
    dev: u64,
    wts_at: usize,
}

impl DeviceBands {
    /// Copies `mel [257, m]` (device memory) to the host on the op's stream, makes the table
    /// and uploads it. Runs outside CUDA graph capture: ONNX Runtime runs a session normally
    /// before it captures, and the table is kept from then on.
    fn make(
        module: &Arc<Module>,
        ctx: &ComputeContext,
        mel: *mut c_void,
        m: usize,
    ) -> ort::Result<Self> {
        let d = driver()?;
        enter(d, module)?;
        let stream = ctx.stream()?.map_or(std::ptr::null_mut(), |s| s.as_ptr());
        let mut host = vec![0f64; (N_FFT / 2 + 1) * m];
        let bytes = std::mem::size_of_val(&host[..]);
        // SAFETY: `mel` is the op's input of 257 × m doubles (checked by LogMel*Dims); `host`
        // is as large; the stream is synchronised before `host` is read.
        unsafe {
            d.check(
                (d.memcpy_dtoh_async)(host.as_mut_ptr().cast(), mel as u64, bytes, stream),
                "cuMemcpyDtoHAsync (mel filterbank)",
            )?;
            d.check(
                (d.stream_sync)(stream),
                "cuStreamSynchronize (mel filterbank)",
            )?;
        }
        let (bands, wts) = band_table(&host, m);
        let wts_at = (4 * bands.len()).next_multiple_of(8);
        let mut buf = vec![0u8; wts_at + 8 * wts.len()];
        for (dst, v) in buf.chunks_exact_mut(4).zip(&bands) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
        for (dst, v) in buf[wts_at..].chunks_exact_mut(8).zip(&wts) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
        let mut dev = 0u64;
        // SAFETY: valid out-pointer; `buf` outlives the synchronised copy.
        unsafe {
            d.check(
                (d.mem_alloc)(&mut dev, buf.len()),
                "cuMemAlloc (mel band table)",
            )?;
        }
        let table = Self {
            module: module.clone(),
            key: (mel as usize, m),
            dev,
            wts_at,
        };
        // SAFETY: `dev` holds `buf.len()` bytes; the copy is waited for before `buf` is dropped.
        unsafe {
            d.check(
                (d.memcpy_htod_async)(dev, buf.as_ptr().cast(), buf.len(), stream),
                "cuMemcpyHtoDAsync (mel band table)",
            )?;
            d.check(
                (d.stream_sync)(stream),
                "cuStreamSynchronize (mel band table)",
            )?;
        }
        Ok(table)
    }

    /// The kernels' `bands` and `wts` pointers for the filterbank at `mel` with `m` bands:
    /// `slot`'s table, made first if it is missing or of another filterbank.
    fn get(
        slot: &mut Option<Self>,
        module: &Arc<Module>,
        ctx: &ComputeContext,
        mel: *mut c_void,
        m: usize,
    ) -> ort::Result<[*mut c_void; 2]> {
        if slot.as_ref().map(|t| t.key) != Some((mel as usize, m)) {
            *slot = None; // frees the old table first
            *slot = Some(Self::make(module, ctx, mel, m)?);
        }
        let t = slot
            .as_ref()
            .ok_or_else(|| err("mel band table missing".to_string()))?;
        Ok([
            t.dev as *mut c_void,
            (t.dev + t.wts_at as u64) as *mut c_void,
        ])
    }
}

impl Drop for DeviceBands {
    fn drop(&mut self) {
        if let Ok(d) = driver() {
            if enter(d, &self.module).is_ok() {
                // SAFETY: allocated in `make`; the kernels that read it ran on the op's stream,
                // which ONNX Runtime synchronises before a session (and its ops) is dropped.
                unsafe { (d.mem_free)(self.dev) };
            }
        }
    }
}

/// The CUDA kernel of one fused op (the module is loaded once per device).
pub struct CudaKernel {
    module: Arc<Module>,
    which: Which,
    /// The log-mel ops' filterbank band table.
    bands: Option<DeviceBands>,
}

impl CudaKernel {
    pub fn new(device_id: i32, which: Which) -> ort::Result<Self> {
        Ok(Self {
            module: module(device_id)?,
            which,
            bands: None,
        })
    }
}

impl Kernel for CudaKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let m = &self.module;
        match self.which {
            Which::Conv => {
                let (ins, shapes) = gather(ctx, "MambaConv", [F32; 4])?;
                let d = ConvDims::check(&shapes)?;
                if d.k > 8 {
                    return Err(err(format!("MambaConv (CUDA): d_conv {} > 8", d.k)));
                }
                let p = pointers(ctx, ins, &[d.out(), d.state()])?;
                let grid = (d.e.div_ceil(THREADS as usize), d.b);
                launch(ctx, m, Entry::Conv, grid, THREADS, 0, p, &[d.t, d.e, d.k])
            }
            Which::Ssm => {
                let (ins, shapes) = gather(ctx, "MambaSsm", [F32; 8])?;
                let dm = SsmDims::check(&shapes)?;
                if dm.n > 16 || dm.r > 32 {
                    return Err(err(format!(
                        "MambaSsm (CUDA): d_state {} > 16 or dt_rank {} > 32",
                        dm.n, dm.r
                    )));
                }
                let p = pointers(ctx, ins, &[dm.out(), dm.state()])?;
                let grid = (dm.e.div_ceil(THREADS as usize), dm.b);
                let shared = ssm_shared_bytes(dm.t, dm.r, dm.n);
                let entry = if (dm.r, dm.n) == (8, 16) {
                    Entry::SsmR8N16
                } else {
                    Entry::Ssm
                };
                let sizes = [dm.t, dm.e, dm.n, dm.r];
                launch(ctx, m, entry, grid, THREADS, shared, p, &sizes)
            }
            Which::LogMel => {
                let (ins, shapes) = gather(ctx, "MambaLogMel", [F32, F64])?;
                let d = LogMelDims::check(&shapes)?;
                if d.m > 256 {
                    return Err(err(format!("MambaLogMel (CUDA): {} mel bands > 256", d.m)));
                }
                // [audio, mel, logmel] -> the kernel's [audio, bands, wts, logmel]
                let p = pointers(ctx, ins, &[d.out()])?;
                let [bands, wts] = DeviceBands::get(&mut self.bands, m, ctx, p[1], d.m)?;
                // one hop (the fused step graph): rows per block as MambaLogMelStep
                let (frames, groups, rows) = if d.t == 1 {
                    let (g, rb) = logmel_step_split(d.b, d.m, m.sms);
                    (1, g, rb)
                } else {
                    let (f, g) = logmel_split(d.b, d.t, d.m, m.sms);
                    (f, g, 1)
                };
                launch(
                    ctx,
                    m,
                    Entry::LogMel,
                    (d.t.div_ceil(frames) * groups, d.b.div_ceil(rows)),
                    256,
                    0,
                    vec![p[0], bands, wts, p[2]],
                    &[d.t, d.s, d.m, groups, frames, d.b, rows],
                )
            }
            Which::LogMelStep => {
                let (ins, shapes) = gather(ctx, "MambaLogMelStep", [F32, F32, F64])?;
                let d = LogMelStepDims::check(&shapes)?;
                if d.m > 256 {
                    return Err(err(format!(
                        "MambaLogMelStep (CUDA): {} mel bands > 256",
                        d.m
                    )));
                }
                // [history, audio, mel, logmel, history'] -> the kernel's [audio, bands, wts,
                // logmel, history, history']
                let p = pointers(ctx, ins, &[d.out(), d.history()])?;
                let [bands, wts] = DeviceBands::get(&mut self.bands, m, ctx, p[2], d.m)?;
                let (groups, rows) = logmel_step_split(d.b, d.m, m.sms);
                launch(
                    ctx,
                    m,
                    Entry::LogMelStep,
                    (groups, d.b.div_ceil(rows)),
                    256,
                    0,
                    vec![p[1], bands, wts, p[3], p[0], p[4]],
                    &[1, HOP, d.m, groups, 1, HISTORY, d.b, rows],
                )
            }
            Which::Layer => {
                let (ins, shapes) = gather(ctx, "MambaLayer", [F32; 14])?;
                let d = LayerDims::check(&shapes)?;
                let p = pointers(ctx, ins, &d.outputs())?;
                launch_layer(ctx, m, &d, &p)
            }
            Which::Embed | Which::Head => {
                let c = DenseCall::gather(ctx, matches!(self.which, Which::Head))?;
                let d = c.d;
                if 4 * d.i > SHARED_LIMIT {
                    return Err(err(format!(
                        "MambaEmbed/MambaHead (CUDA): {} inputs need more than {SHARED_LIMIT} \
                         bytes of shared memory per block",
                        d.i
                    )));
                }
                let sig = c.norm.is_some();
                let mut vals = vec![c.x, c.w, c.b];
                if let Some((nw, eps)) = c.norm {
                    vals.extend([nw, eps]);
                }
                // [x, w, b, (norm_w, eps), out] -> the kernel's [x, norm_w, eps, w, b, out]
                let p = pointers(ctx, vals, &[d.out()])?;
                let null = std::ptr::null_mut();
                let (nw, eps) = if sig { (p[3], p[4]) } else { (null, null) };
                launch(
                    ctx,
                    m,
                    Entry::Dense1,
                    (d.o.div_ceil(IN_COLS), d.b),
                    LAYER_THREADS,
                    4 * d.i,
                    vec![p[0], nw, eps, p[1], p[2], p[p.len() - 1]],
                    &[d.b, d.i, d.o, sig as usize],
                )
            }
        }
    }
}

/// Page-locks host buffers for as long as it lives, so that ONNX Runtime's copies between them
/// and device tensors run as DMA transfers instead of through pageable staging (the audio
/// upload at 16,384 streams is 10.5 MB per step). ORT still sees ordinary CPU memory. A buffer
/// that cannot be locked (e.g. it shares a page with one already locked) is left as it is.
pub struct HostPins {
    ptrs: Vec<*mut c_void>,
}

// SAFETY: the pointers are only handed back to the driver on drop.
unsafe impl Send for HostPins {}

impl HostPins {
    /// Locks each `(pointer, bytes)` range; `device_id`'s context must exist (the session
    /// created it). Never fails: returns how many ranges were locked.
    pub fn new(device_id: i32, ranges: &[(*mut c_void, usize)]) -> (Self, usize) {
        let mut pins = Self { ptrs: Vec::new() };
        let (Ok(d), Ok(m)) = (driver(), module(device_id)) else {
            return (pins, 0);
        };
        if enter(d, &m).is_err() {
            return (pins, 0);
        }
        for &(p, n) in ranges {
            if p.is_null() || n == 0 {
                continue;
            }
            // SAFETY: `p..p+n` is a live host allocation owned by the caller, which keeps it
            // alive until this value is dropped. Flags 0 = portable-less plain pinning.
            if unsafe { (d.host_register)(p, n, 0) } == 0 {
                pins.ptrs.push(p);
            }
        }
        let n = pins.ptrs.len();
        (pins, n)
    }
}

impl Drop for HostPins {
    fn drop(&mut self) {
        if let Ok(d) = driver() {
            for &p in &self.ptrs {
                // SAFETY: registered in `new`; the memory is still allocated (see `new`).
                unsafe { (d.host_unregister)(p) };
            }
        }
    }
}

/// Synchronous copies between host memory and device memory through the driver, for the
/// engine's per-step audio upload and scores download: ≈ 5 µs for a few hundred bytes where
/// ORT's `copy_into` takes ≈ 20 µs. Both run between session runs (ORT has synchronised its
/// stream when a run returns), so ordering with the model's kernels is by program order.
pub struct Copier {
    module: Arc<Module>,
    /// The sessions' compute stream ([`Stream`]), if they run on one: uploads are then queued
    /// on it, ahead of the run, without waiting.
    stream: *mut c_void,
}

// SAFETY: driver handles may be used from any thread.
unsafe impl Send for Copier {}

impl Copier {
    /// `stream`: the sessions' compute stream ([`Stream::as_ptr`]) or null.
    pub fn new(device_id: i32, stream: *mut c_void) -> ort::Result<Self> {
        Ok(Self {
            module: module(device_id)?,
            stream,
        })
    }

    /// `bytes` from host `src` to device `dst`.
    ///
    /// # Safety
    /// `src` must be readable and `dst` a device allocation writable for `bytes` bytes.
    /// `queue`: queue the copy on the sessions' stream (if any) without waiting for it.
    pub unsafe fn to_device(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        queue: bool,
    ) -> ort::Result<()> {
        let d = driver()?;
        enter(d, &self.module)?;
        if queue && !self.stream.is_null() {
            // ordered before the next run on the same stream; `src` stays untouched until the
            // run (which synchronises the stream) has returned
            return d.check(
                unsafe { (d.memcpy_htod_async)(dst as u64, src, bytes, self.stream) },
                "cuMemcpyHtoDAsync",
            );
        }
        d.check(
            unsafe { (d.memcpy_htod)(dst as u64, src, bytes) },
            "cuMemcpyHtoD",
        )
    }

    /// Whether copies go through the sessions' stream: the engine then skips ONNX Runtime's
    /// end-of-run synchronisation and [`Copier::to_host`] waits for the stream instead.
    pub fn on_stream(&self) -> bool {
        !self.stream.is_null()
    }

    /// `bytes` from device `src` to host `dst` (after everything queued on the stream).
    ///
    /// # Safety
    /// `src` must be a device allocation readable and `dst` writable for `bytes` bytes.
    pub unsafe fn to_host(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
    ) -> ort::Result<()> {
        let d = driver()?;
        enter(d, &self.module)?;
        if !self.stream.is_null() {
            d.check(
                unsafe { (d.memcpy_dtoh_async)(dst, src as u64, bytes, self.stream) },
                "cuMemcpyDtoHAsync",
            )?;
            return d.check(
                unsafe { (d.stream_sync)(self.stream) },
                "cuStreamSynchronize",
            );
        }
        d.check(
            unsafe { (d.memcpy_dtoh)(dst, src as u64, bytes) },
            "cuMemcpyDtoH",
        )
    }
}

/// A CUDA stream of its own for one engine's sessions (ONNX Runtime's `user_compute_stream`), so
/// that the per-step audio upload can be queued on the stream the model runs on instead of a
/// synchronous copy. Destroyed on drop: drop it after the sessions that use it.
pub struct Stream {
    module: Arc<Module>,
    raw: *mut c_void,
}

// SAFETY: driver handles may be used from any thread.
unsafe impl Send for Stream {}
unsafe impl Sync for Stream {}

impl Stream {
    pub fn new(device_id: i32) -> ort::Result<Self> {
        let m = module(device_id)?;
        let d = driver()?;
        enter(d, &m)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out-pointer; flags 0 = a blocking stream (ordered with the legacy default
        // stream that synchronous copies use)
        d.check(unsafe { (d.stream_create)(&mut raw, 0) }, "cuStreamCreate")?;
        Ok(Self { module: m, raw })
    }

    pub fn as_ptr(&self) -> *mut c_void {
        self.raw
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(d) = driver() {
            if enter(d, &self.module).is_ok() {
                // SAFETY: created in `new`; its users (the sessions) are gone.
                unsafe { (d.stream_destroy)(self.raw) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        band_table, fast_layer, logmel_split, logmel_step_split, mix_entry_for,
        projection_rows_for, ssm_shared_bytes, Entry, LayerDims, SHARED_LIMIT,
    };

    /// The band table gives every band exactly its filterbank column: each bin's weight, read
    /// as the kernels read it (from `wts` inside [lo, hi), 0 outside), is the same bits as in
    /// `mel`, for triangles, an empty band, a band with a zero inside and one that reaches bin
    /// 256.
    #[test]
    fn band_table_holds_each_bands_weights_in_bin_order() {
        let (bins, m) = (257, 40);
        let mut mel = vec![0f64; bins * m];
        for j in 0..m {
            // overlapping triangles over 6 + j / 4 bins each, spread over the spectrum
            let (c, w) = (3 + j * 6, 6 + j / 4);
            for k in c.saturating_sub(w)..(c + w).min(bins) {
                mel[k * m + j] = 1.0 / (1.0 + (k as f64 - c as f64).abs()) / 3.0;
            }
        }
        for k in 0..bins {
            mel[k * m + 7] = 0.0; // empty
        }
        mel[59 * m + 9] = 0.0; // a zero inside band 9's triangle (bins 49..65)
        mel[256 * m + (m - 1)] = 0.25; // the last bin
        let (bands, wts) = band_table(&mel, m);
        assert_eq!(bands.len(), 3 * m + 1);
        let (lo, hi, off) = (&bands[..m], &bands[m..2 * m], &bands[2 * m..]);
        assert_eq!((lo[7], hi[7]), (0, 0), "empty band");
        assert_eq!(hi[m - 1], 257);
        assert!(
            lo[9] < 59 && hi[9] > 59,
            "the interior zero stays inside band 9's range"
        );
        assert_eq!(off[m] as usize, wts.len());
        for j in 0..m {
            assert_eq!(
                off[j + 1] - off[j],
                hi[j] - lo[j],
                "band {j}'s weight count"
            );
            for k in 0..bins {
                let inside = (lo[j]..hi[j]).contains(&(k as i32));
                let w = if inside {
                    wts[(off[j] + k as i32 - lo[j]) as usize]
                } else {
                    0.0
                };
                assert_eq!(w.to_bits(), mel[k * m + j].to_bits(), "bin {k}, band {j}");
            }
        }
    }

    /// Past the two-launch path, the middle batches mix with `layer_mixh1` while they fit the
    /// SMs in one wave and with `layer_mixh2` (2 blocks per SM) up to 4 rows per SM (also in
    /// the GPU tests: 64 and 256 streams).
    #[test]
    fn three_launch_path_mixes_with_mixh1_then_mixh2_up_to_4_rows_per_sm() {
        let d = |b, r| LayerDims {
            b,
            dm: 128,
            e: 256,
            n: 16,
            r,
            k: 4,
        };
        let rule = |b, r| mix_entry_for(&d(b, r), 132, None, None);
        for b in [34, 131, 132] {
            assert_eq!(rule(b, 8), Entry::MixH1, "{b} rows");
        }
        for b in [133, 264, 528] {
            assert_eq!(rule(b, 8), Entry::MixH2, "{b} rows");
        }
        assert_eq!(rule(529, 8), Entry::Mix4);
        // a shape past the mixh kernels' register arrays (dt_rank 17): one row per block while
        // the batch fits the SMs, then 4
        assert_eq!(rule(132, 17), Entry::Mix1);
        assert_eq!(rule(133, 17), Entry::Mix4);
        // the A/B switches: off, mixh1 only, another upper bound
        let with = |b, mode, max| mix_entry_for(&d(b, 8), 132, mode, max);
        assert_eq!(with(64, Some(0), None), Entry::Mix1);
        assert_eq!(with(256, Some(0), None), Entry::Mix4);
        assert_eq!(with(256, Some(1), None), Entry::MixH1);
        assert_eq!(with(1024, None, Some(1024)), Entry::MixH2);
        assert_eq!(with(1025, None, Some(1024)), Entry::Mix4);
    }

    /// The two-launch layer path is taken exactly where its kernels' register arrays hold the
    /// shapes and a row's blocks fit the SMs in one wave; everything else keeps the three
    /// launches (both run in the GPU suite, tests/gpu.rs, which grows batches through the
    /// switch point).
    #[test]
    fn fast_layer_path_takes_small_batches_of_shapes_that_fit() {
        let default = |b| LayerDims {
            b,
            dm: 128,
            e: 256,
            n: 16,
            r: 8,
            k: 4,
        };
        // 4 blocks per row on 132 SMs: up to 33 rows
        assert!(fast_layer(&default(1), 132));
        assert!(fast_layer(&default(33), 132));
        assert!(!fast_layer(&default(34), 132));
        // the test model (d_model 16, d_inner 32, dt_rank 1, d_state 4): one block per row
        let tiny = LayerDims {
            b: 132,
            dm: 16,
            e: 32,
            n: 4,
            r: 1,
            k: 4,
        };
        assert!(fast_layer(&tiny, 132));
        assert!(!fast_layer(&LayerDims { b: 133, ..tiny }, 132));
        // shapes past the register arrays
        assert!(!fast_layer(
            &LayerDims {
                dm: 256,
                e: 512,
                ..default(1)
            },
            132
        ));
        assert!(!fast_layer(&LayerDims { k: 5, ..default(1) }, 132));
        assert!(!fast_layer(
            &LayerDims {
                r: 17,
                ..default(1)
            },
            132
        ));
        // x_proj split: width 40 -> 256 / 40 = 6 ways of 43 inputs (<= 48); width 48 -> 5
        // ways of 52
        assert!(!fast_layer(
            &LayerDims {
                r: 16,
                ..default(1)
            },
            132
        ));
    }

    /// The scan's shared memory follows its hop group: one hop for a step, 16 for a chunk, and
    /// stays under the no-opt-in limit for the largest shapes the launcher accepts (dt_rank 32,
    /// d_state 16).
    #[test]
    fn ssm_shared_memory_follows_the_hop_group() {
        let per_hop = (8 + 2 * 16 + 2 * 128) * 4;
        assert_eq!(ssm_shared_bytes(1, 8, 16), per_hop);
        assert_eq!(ssm_shared_bytes(5, 8, 16), 5 * per_hop);
        assert_eq!(ssm_shared_bytes(16, 8, 16), 16 * per_hop);
        assert_eq!(ssm_shared_bytes(1000, 8, 16), 16 * per_hop);
        assert_eq!(ssm_shared_bytes(0, 8, 16), per_hop);
        assert!(ssm_shared_bytes(usize::MAX, 32, 16) <= SHARED_LIMIT);
    }

    /// One-hop log-mel blocks: band groups below one row per SM, rows per block above.
    #[test]
    fn logmel_step_split_shares_small_batches_and_groups_large_ones() {
        let sms = 132;
        // fewer rows than SMs: band groups for about 2 blocks per SM, at most 8
        assert_eq!(logmel_step_split(1, 64, sms), (8, 1));
        assert_eq!(logmel_step_split(33, 64, sms), (8, 1));
        assert_eq!(logmel_step_split(64, 64, sms), (4, 1));
        assert_eq!(logmel_step_split(131, 64, sms), (2, 1));
        // one row per block below 2 rows per SM, then rows per block, at most 8
        assert_eq!(logmel_step_split(132, 64, sms), (1, 1));
        assert_eq!(logmel_step_split(256, 64, sms), (1, 1));
        assert_eq!(logmel_step_split(264, 64, sms), (1, 2));
        assert_eq!(logmel_step_split(512, 64, sms), (1, 2));
        assert_eq!(logmel_step_split(16_384, 64, sms), (1, 2));
        // never more groups than bands
        assert_eq!(logmel_step_split(1, 3, sms), (3, 1));
    }

    /// The three-launch path's projections take one row per block up to half the SM count and
    /// 8 above; `MAMBATAG_LAYER_ROWS1` moves the bound.
    #[test]
    fn projections_take_8_rows_per_block_from_half_the_sms() {
        let sms = 132;
        let rows = |b| projection_rows_for(b, sms, None);
        assert_eq!((rows(66), rows(67), rows(16_384)), (1, 8, 8));
        assert_eq!(projection_rows_for(128, sms, Some(128)), 1);
    }

    /// Every frame of every row is covered exactly once, and the split follows the rules the
    /// kernel's comment states (the kernel itself runs in the GPU suite, tests/gpu.rs).
    #[test]
    fn logmel_split_covers_every_frame_once() {
        let sms = 132;
        for &(b, t) in &[
            (1, 1),
            (16, 1),
            (131, 1),
            (132, 1),
            (16_384, 1),
            (1, 250),
            (4, 250),
        ] {
            let (f, g) = logmel_split(b, t, 64, sms);
            assert!(f >= 1 && f <= t.max(1), "b {b} t {t}: F {f}");
            assert!(t.div_ceil(f) * f >= t && (t.div_ceil(f) - 1) * f < t);
            assert_eq!(g, if b * t < sms { 8 } else { 1 }, "b {b} t {t}");
        }
        // the offline shape: the longest groups, and still 4 blocks per SM
        assert_eq!(logmel_split(4096, 1000, 64, sms), (32, 1));
        let (f, _) = logmel_split(64, 250, 64, sms);
        assert!(64 * 250usize.div_ceil(f) >= 4 * sms, "F {f}");
        // a filterbank with fewer than 8 bands gets one group per band
        assert_eq!(logmel_split(1, 1, 3, sms), (1, 3));
    }
}
