//! CUDA kernels of the fused ops: `kernels.ptx` (built from `kernels.cu` by
//! scripts/build-ptx.py, embedded here) loaded through the CUDA driver API (`libcuda.so.1`,
//! opened at run time like ONNX Runtime itself) and launched on ONNX Runtime's compute stream,
//! so they run inside its CUDA graphs too.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex, OnceLock};

use ort::operator::{ComputeContext, Kernel};
use ort::value::DynTensorValueType;

use super::{err, gather, ConvDims, LogMelDims, SsmDims, F32, F64};

const PTX: &str = concat!(include_str!("kernels.ptx"), "\0");
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
    Conv = 0,
    Ssm = 1,
    LogMel = 2,
}

/// The kernels' names in `kernels.cu`, indexed by [`Which`].
const ENTRY_POINTS: [&std::ffi::CStr; 3] = [c"mamba_conv", c"mamba_ssm", c"mamba_logmel"];

/// The loaded PTX module of one device: its context and the kernels, indexed by [`Which`].
struct Module {
    ctx: CuContext,
    functions: [CuFunction; 3],
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
            (d.module_load_data)(&mut module, PTX.as_ptr().cast()),
            "cuModuleLoadData (fused Mamba kernels)",
        )?;
        let mut functions = [std::ptr::null_mut(); 3];
        for (f, name) in functions.iter_mut().zip(ENTRY_POINTS) {
            d.check(
                (d.module_get_function)(f, module, name.as_ptr()),
                &format!("cuModuleGetFunction {}", name.to_string_lossy()),
            )?;
        }
        Arc::new(Module { ctx, functions })
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

/// Launches `which` on the op's stream: grid `(x, batch)`, `threads` per block, `shared` bytes
/// of dynamic shared memory; the kernel's parameters are the device pointers `ptrs`, then the
/// sizes `ints` (as C ints).
#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &ComputeContext,
    m: &Module,
    which: Which,
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
        let name = ENTRY_POINTS[which as usize].to_string_lossy();
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
            m.functions[which as usize],
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

/// The CUDA kernel of one fused op (the module is loaded once per device).
pub struct CudaKernel {
    module: Arc<Module>,
    which: Which,
}

impl CudaKernel {
    pub fn new(device_id: i32, which: Which) -> ort::Result<Self> {
        Ok(Self {
            module: module(device_id)?,
            which,
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
                launch(ctx, m, Which::Conv, grid, THREADS, 0, p, &[d.t, d.e, d.k])
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
                let shared = (dm.r + 2 * dm.n) * 4;
                let sizes = [dm.t, dm.e, dm.n, dm.r];
                launch(ctx, m, Which::Ssm, grid, THREADS, shared, p, &sizes)
            }
            Which::LogMel => {
                let (ins, shapes) = gather(ctx, "MambaLogMel", [F32, F64])?;
                let d = LogMelDims::check(&shapes)?;
                if d.m > 256 {
                    return Err(err(format!("MambaLogMel (CUDA): {} mel bands > 256", d.m)));
                }
                let p = pointers(ctx, ins, &[d.out()])?;
                // one block of 256 threads per frame: the FFT does 256 butterflies per stage
                launch(
                    ctx,
                    m,
                    Which::LogMel,
                    (d.t, d.b),
                    256,
                    0,
                    p,
                    &[d.t, d.s, d.m],
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
}

impl Copier {
    pub fn new(device_id: i32) -> ort::Result<Self> {
        Ok(Self {
            module: module(device_id)?,
        })
    }

    /// `bytes` from host `src` to device `dst`.
    ///
    /// # Safety
    /// `src` must be readable and `dst` a device allocation writable for `bytes` bytes.
    pub unsafe fn to_device(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
    ) -> ort::Result<()> {
        let d = driver()?;
        enter(d, &self.module)?;
        d.check(
            unsafe { (d.memcpy_htod)(dst as u64, src, bytes) },
            "cuMemcpyHtoD",
        )
    }

    /// `bytes` from device `src` to host `dst`.
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
        d.check(
            unsafe { (d.memcpy_dtoh)(dst, src as u64, bytes) },
            "cuMemcpyDtoH",
        )
    }
}
