//! The fused Mamba operators of the `ai.mambatag` domain (models/CONTRACT.md §7).
//!
//! A standard-op step graph spends ~36 ONNX Runtime kernels per Mamba layer, ~11 of them
//! elementwise passes over the whole `[B, N, E]` SSM state. The fused graphs
//! (`step-fused.onnx`, `chunk-fused.onnx`, written by models/export.py next to the standard
//! ones) replace the conv and the selective-state update of each layer with two operators:
//!
//! * `MambaConv(xz, conv_state, w, b) -> (xc, conv_state')`: causal depthwise conv + SiLU over
//!   `T` hops (`xz [B, T, 2E]`, channels `[0, E)`; `w [K, E]`).
//! * `MambaSsm(xc, xz, dbc, dt_w, dt_b, A, D, h) -> (y, h')`: dt_proj + softplus, the selective
//!   scan over `T` hops, the `D` skip and the `SiLU(z)` gate (`z` = channels `[E, 2E)` of
//!   `xz`; `dbc [B, T, R + 2N]` = x_proj output).
//!
//! * `MambaLogMel(audio, mel) -> logmel`: the contract's front end (§4) for `T` hops: frames of
//!   400 samples every 160 from `audio [B, 240 + 160·T]` (history first), periodic Hann
//!   window, 512-point power spectrum, `mel [257, M]` filterbank, `ln(· + 1e-6)`, in float64.
//!
//! * `MambaLayer(x, conv_state, h, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w,
//!   eps) -> (x', conv_state', h')`: a whole residual block for one hop (`x [B, D]`): RMSNorm,
//!   in_proj, the conv, x_proj, the SSM update and gate, out_proj and the residual add. The
//!   layer step graph (`step-layer.onnx`) is one of these per layer, so a step on the GPU is
//!   about a dozen kernel launches instead of ~38.
//!
//! * `MambaLogMelStep(history, audio, mel) -> (logmel, history')`: `MambaLogMel` for one hop of
//!   `audio [B, 160]` after `history [B, 240]`, and the next history (the layer step graph's
//!   front end, instead of ORT's concat + slice around `MambaLogMel`).
//!
//! * `MambaEmbed(x, w, b) -> x @ w + b` and `MambaHead(x, norm_w, eps, w, b) ->
//!   sigmoid(RMSNorm(x) · norm_w @ w + b)`: the layer step graph's embedding and head (`[B, I]`
//!   in, `[B, O]` out), one launch each on a GPU instead of two and four of ORT's.
//!
//! `T` is taken from the inputs, so the conv, SSM and log-mel ops serve the step graph
//! (`T = 1`) and the chunk graph. Each has a CPU kernel (Rust, [`cpu`]) and, with `--features cuda`, a CUDA
//! kernel (`kernels.cu`, loaded as PTX through the driver API, [`cuda`]); both walk the hops
//! with the state in registers/cache, reading and writing it once per call.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use ort::operator::ShapeInferenceContext;
use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::{DynTensorValueType, Shape, SymbolicDimensions, TensorElementType, ValueType};

/// The ONNX domain of the fused ops.
pub const DOMAIN: &str = "ai.mambatag";

/// Which execution provider a kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ep {
    Cpu,
    /// CUDA device id.
    #[cfg(feature = "cuda")]
    Cuda(i32),
}

/// Output types for ORT's shape inference: knowing the outputs' ranks lets ORT fuse the
/// MatMul + Add after an op into a Gemm (the step graph's out_proj + residual).
fn tensor_parts(t: &ValueType) -> Option<(Vec<i64>, Vec<String>)> {
    match t {
        ValueType::Tensor {
            shape,
            dimension_symbols,
            ..
        } => Some((shape.to_vec(), dimension_symbols.iter().cloned().collect())),
        _ => None,
    }
}

fn f32_tensor(dims: Vec<i64>, syms: Vec<String>) -> ValueType {
    ValueType::Tensor {
        ty: TensorElementType::Float32,
        shape: Shape::new(dims),
        dimension_symbols: SymbolicDimensions::new(syms),
    }
}

/// Output `i` has the type of input `j`.
fn same_as(ctx: &mut ShapeInferenceContext, pairs: &[(usize, usize)]) -> ort::Result<()> {
    let ins = ctx.inputs();
    for &(o, i) in pairs {
        if let Some(t) = ins.get(i) {
            ctx.set_output(o, t)?;
        }
    }
    Ok(())
}

/// The op domain with the CPU kernels, plus the CUDA ones when `cuda_device` is given.
pub fn domain(cuda_device: Option<i32>) -> ort::Result<OperatorDomain> {
    let d = OperatorDomain::new(DOMAIN)?
        .add(ConvOp(Ep::Cpu))?
        .add(SsmOp(Ep::Cpu))?
        .add(LogMelOp(Ep::Cpu))?
        .add(LogMelStepOp(Ep::Cpu))?
        .add(LayerOp(Ep::Cpu))?
        .add(DenseOp::embed(Ep::Cpu))?
        .add(DenseOp::head(Ep::Cpu))?;
    #[cfg(feature = "cuda")]
    if let Some(id) = cuda_device {
        return d
            .add(ConvOp(Ep::Cuda(id)))?
            .add(SsmOp(Ep::Cuda(id)))?
            .add(LogMelOp(Ep::Cuda(id)))?
            .add(LogMelStepOp(Ep::Cuda(id)))?
            .add(LayerOp(Ep::Cuda(id)))?
            .add(DenseOp::embed(Ep::Cuda(id)))?
            .add(DenseOp::head(Ep::Cuda(id)));
    }
    let _ = cuda_device;
    Ok(d)
}

fn err(msg: impl std::fmt::Display) -> ort::Error {
    ort::Error::new(msg.to_string())
}

fn dims_of(
    v: &ort::value::ValueRef<'_>,
    what: &str,
    want: TensorElementType,
) -> ort::Result<Vec<usize>> {
    match v.dtype() {
        ValueType::Tensor { ty, shape, .. } if *ty == want => {
            Ok(shape.iter().map(|&d| d.max(0) as usize).collect())
        }
        other => Err(err(format!(
            "{what}: expected a {want} tensor, got {other}"
        ))),
    }
}

/// The `N` inputs of one op call and their shapes, checked against the element types `tys`
/// (shared by the CPU and CUDA kernels).
fn gather<'a, const N: usize>(
    ctx: &'a ComputeContext,
    op: &str,
    tys: [TensorElementType; N],
) -> ort::Result<(Vec<ort::value::ValueRef<'a>>, [Vec<usize>; N])> {
    let mut vals = Vec::with_capacity(N);
    let mut dims: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
    for (i, (d, ty)) in dims.iter_mut().zip(tys).enumerate() {
        let v = input(ctx, i, op)?;
        *d = dims_of(&v, op, ty)?;
        vals.push(v);
    }
    Ok((vals, dims))
}

/// Runs `row` for every batch row: inline for one row, on ORT's intra-op pool otherwise.
fn for_rows(ctx: &ComputeContext, b: usize, row: impl Fn(usize) + Sync + Send) -> ort::Result<()> {
    if b <= 1 {
        (0..b).for_each(row);
        Ok(())
    } else {
        ctx.par_for(b, b, row)
    }
}

fn input<'a>(
    ctx: &'a ComputeContext,
    i: usize,
    what: &str,
) -> ort::Result<ort::value::ValueRef<'a>> {
    ctx.input(i)?
        .ok_or_else(|| err(format!("{what}: input {i} is missing")))
}

fn expect(what: &str, got: &[usize], want: &[usize]) -> ort::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(err(format!("{what}: shape {got:?}, expected {want:?}")))
    }
}

/// `[B, T, X]`, or `[B, X]` with `T = 1` (rank-2 inputs give rank-2 outputs: the step graph's
/// residual stream is 2-D so that ORT fuses out_proj + residual Add into one Gemm).
fn bt(x: &[usize]) -> Option<(usize, usize, usize)> {
    match *x {
        [b, t, w] => Some((b, t, w)),
        [b, w] => Some((b, 1, w)),
        _ => None,
    }
}

/// The shape `[B, T, w]` (or `[B, w]` when the inputs were rank 2).
fn out_shape(rank3: bool, b: usize, t: usize, w: usize) -> Vec<i64> {
    if rank3 {
        vec![b as i64, t as i64, w as i64]
    } else {
        vec![b as i64, w as i64]
    }
}

/// Sizes of one `MambaConv` call.
#[derive(Debug, Clone, Copy)]
pub struct ConvDims {
    pub b: usize,
    pub t: usize,
    pub e: usize,
    pub k: usize,
    /// Inputs were `[B, T, …]` (else `[B, …]`, `T = 1`).
    pub rank3: bool,
}

impl ConvDims {
    /// `xc`'s shape.
    pub fn out(&self) -> Vec<i64> {
        out_shape(self.rank3, self.b, self.t, self.e)
    }
    /// `conv_state'`'s shape.
    pub fn state(&self) -> Vec<i64> {
        vec![self.b as i64, self.k as i64 - 1, self.e as i64]
    }
}

impl ConvDims {
    fn check([xz, state, w, bias]: &[Vec<usize>; 4]) -> ort::Result<Self> {
        if w.len() != 2 || w[0] == 0 {
            return Err(err(format!(
                "MambaConv: weight shape {w:?}, expected [K, E]"
            )));
        }
        let (k, e) = (w[0], w[1]);
        let Some((b, t, w2)) = bt(xz) else {
            return Err(err(format!(
                "MambaConv: xz shape {xz:?}, expected [B, T, 2E] or [B, 2E]"
            )));
        };
        expect("MambaConv xz width", &[w2], &[2 * e])?;
        expect("MambaConv conv_state", state, &[b, k - 1, e])?;
        expect("MambaConv bias", bias, &[e])?;
        Ok(Self {
            b,
            t,
            e,
            k,
            rank3: xz.len() == 3,
        })
    }
}

/// Sizes of one `MambaSsm` call.
#[derive(Debug, Clone, Copy)]
pub struct SsmDims {
    pub b: usize,
    pub t: usize,
    pub e: usize,
    pub n: usize,
    pub r: usize,
    pub rank3: bool,
}

impl SsmDims {
    /// `y`'s shape.
    pub fn out(&self) -> Vec<i64> {
        out_shape(self.rank3, self.b, self.t, self.e)
    }
    /// `h'`'s shape.
    pub fn state(&self) -> Vec<i64> {
        vec![self.b as i64, self.n as i64, self.e as i64]
    }
}

impl SsmDims {
    fn check(s: &[Vec<usize>; 8]) -> ort::Result<Self> {
        let [xc, xz, dbc, dt_w, dt_b, a, d, h] = s;
        // sizes from the recurrent state (checked against the contract at load) and dt_w
        if h.len() != 3 || dt_w.len() != 2 || bt(xc).is_none() {
            return Err(err(format!(
                "MambaSsm: h {h:?} / dt_w {dt_w:?} / xc {xc:?} must be [B, N, E] / [R, E] / [B, T, E]"
            )));
        }
        let (b, n, e, r) = (h[0], h[1], h[2], dt_w[0]);
        let t = bt(xc).map_or(1, |x| x.1);
        let rank3 = xc.len() == 3;
        let shape = |w: usize| -> Vec<usize> {
            if rank3 {
                vec![b, t, w]
            } else {
                vec![b, w]
            }
        };
        expect("MambaSsm A", a, &[n, e])?;
        expect("MambaSsm xc", xc, &shape(e))?;
        expect("MambaSsm xz", xz, &shape(2 * e))?;
        expect("MambaSsm dbc", dbc, &shape(r + 2 * n))?;
        expect("MambaSsm dt_w", dt_w, &[r, e])?;
        expect("MambaSsm dt_b", dt_b, &[e])?;
        expect("MambaSsm D", d, &[e])?;
        Ok(Self {
            b,
            t,
            e,
            n,
            r,
            rank3,
        })
    }
}

/// Front-end sizes (CONTRACT.md §4).
pub const WIN: usize = 400;
pub const HOP: usize = 160;
pub const N_FFT: usize = 512;
pub const HISTORY: usize = WIN - HOP;

/// Sizes of one `MambaLogMel` call.
#[derive(Debug, Clone, Copy)]
pub struct LogMelDims {
    pub b: usize,
    /// Samples per row: `HISTORY + T·HOP`.
    pub s: usize,
    pub t: usize,
    /// Mel bands.
    pub m: usize,
}

impl LogMelDims {
    fn check([audio, mel]: &[Vec<usize>; 2]) -> ort::Result<Self> {
        if audio.len() != 2 || audio[1] < HISTORY || !(audio[1] - HISTORY).is_multiple_of(HOP) {
            return Err(err(format!(
                "MambaLogMel: audio shape {audio:?}, expected [B, {HISTORY} + T*{HOP}]"
            )));
        }
        Ok(Self {
            b: audio[0],
            s: audio[1],
            t: (audio[1] - HISTORY) / HOP,
            m: mel_bands("MambaLogMel", mel)?,
        })
    }
    /// `logmel`'s shape.
    pub fn out(&self) -> Vec<i64> {
        vec![self.b as i64, self.t as i64, self.m as i64]
    }
}

/// The number of bands `M` of a filterbank input `mel [257, M]` of `op`.
fn mel_bands(op: &str, mel: &[usize]) -> ort::Result<usize> {
    match *mel {
        [k, m] if k == N_FFT / 2 + 1 && m > 0 => Ok(m),
        _ => Err(err(format!(
            "{op}: mel shape {mel:?}, expected [{}, M]",
            N_FFT / 2 + 1
        ))),
    }
}

/// `MambaLogMel`.
pub struct LogMelOp(pub Ep);

/// Sizes of one `MambaLogMelStep` call: `history [B, 240]`, `audio [B, 160]`, `mel [257, M]`.
#[derive(Debug, Clone, Copy)]
pub struct LogMelStepDims {
    pub b: usize,
    pub m: usize,
}

impl LogMelStepDims {
    fn check([hist, audio, mel]: &[Vec<usize>; 3]) -> ort::Result<Self> {
        let &[b, HISTORY] = hist.as_slice() else {
            return Err(err(format!(
                "MambaLogMelStep: history shape {hist:?}, expected [B, {HISTORY}]"
            )));
        };
        expect("MambaLogMelStep audio", audio, &[b, HOP])?;
        let m = mel_bands("MambaLogMelStep", mel)?;
        Ok(Self { b, m })
    }
    /// The same hop as a `MambaLogMel` call on the concatenated `[B, 400]` frame.
    pub fn frame(&self) -> LogMelDims {
        LogMelDims {
            b: self.b,
            s: WIN,
            t: 1,
            m: self.m,
        }
    }
    /// `logmel`'s shape, `[B, M]`.
    pub fn out(&self) -> Vec<i64> {
        vec![self.b as i64, self.m as i64]
    }
    /// `history'`'s shape.
    pub fn history(&self) -> Vec<i64> {
        vec![self.b as i64, HISTORY as i64]
    }
}

/// `MambaLogMelStep`: one hop of the front end from the audio history and the new hop, giving
/// the log-mel `[B, M]` and the next history (the layer step graph's front end).
pub struct LogMelStepOp(pub Ep);

impl Operator for LogMelStepOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "MambaLogMelStep"
    }

    fn execution_provider_type(&self) -> Option<&str> {
        ep_name(self.0)
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(F32),
            OperatorInput::required(F32),
            OperatorInput::required(F64),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(F32), OperatorOutput::required(F32)]
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        let ins = ctx.inputs();
        if let (Some((h, hs)), Some((m, _))) = (
            ins.first().and_then(tensor_parts),
            ins.get(2).and_then(tensor_parts),
        ) {
            let b = h.first().copied().unwrap_or(-1);
            let bs = hs.first().cloned().unwrap_or_default();
            let mm = m.get(1).copied().unwrap_or(-1);
            ctx.set_output(0, &f32_tensor(vec![b, mm], vec![bs, String::new()]))?;
        }
        same_as(ctx, &[(1, 0)])
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        match self.0 {
            Ep::Cpu => Ok(Box::new(LogMelStepCpu(cpu::LogMelCpu::new()))),
            #[cfg(feature = "cuda")]
            Ep::Cuda(id) => Ok(Box::new(cuda::CudaKernel::new(
                id,
                cuda::Which::LogMelStep,
            )?)),
        }
    }
}

/// CPU kernel of `MambaLogMelStep`: `MambaLogMel`'s on the concatenated frame.
struct LogMelStepCpu(cpu::LogMelCpu);

impl Kernel for LogMelStepCpu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let (ins, shapes) = gather(ctx, "MambaLogMelStep", [F32, F32, F64])?;
        let d = LogMelStepDims::check(&shapes)?;
        let hist = host_slice(&ins[0], "MambaLogMelStep history")?;
        let audio = host_slice(&ins[1], "MambaLogMelStep audio")?;
        let mel = ins[2]
            .try_extract_tensor::<f64>()
            .map(|(_, s)| s)
            .map_err(|e| err(format!("MambaLogMelStep mel: {e}")))?;
        let lm = SendPtr::of(&host_out(ctx, 0, d.out())?);
        let ho = SendPtr::of(&host_out(ctx, 1, d.history())?);
        let fd = d.frame();
        let (spectrum, mel) = self.0.parts(&fd, mel);
        for_rows(ctx, d.b, |i| {
            let mut frame = [0.0f32; WIN];
            frame[..HISTORY].copy_from_slice(&hist[i * HISTORY..(i + 1) * HISTORY]);
            frame[HISTORY..].copy_from_slice(&audio[i * HOP..(i + 1) * HOP]);
            // SAFETY: row i's ranges of the two outputs, disjoint across rows.
            let (o, h) = unsafe { (lm.row(i, d.m), ho.row(i, HISTORY)) };
            spectrum.row(&fd, &frame, mel, o);
            h.copy_from_slice(&frame[HOP..]);
        })
    }
}

impl Operator for LogMelOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "MambaLogMel"
    }

    fn execution_provider_type(&self) -> Option<&str> {
        ep_name(self.0)
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(F32), OperatorInput::required(F64)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(F32)]
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        let ins = ctx.inputs();
        if let (Some((a, asy)), Some((m, _))) = (
            ins.first().and_then(tensor_parts),
            ins.get(1).and_then(tensor_parts),
        ) {
            let b = a.first().copied().unwrap_or(-1);
            let bs = asy.first().cloned().unwrap_or_default();
            let t = a
                .get(1)
                .filter(|&&s| s >= HISTORY as i64)
                .map_or(-1, |&s| (s - HISTORY as i64) / HOP as i64);
            let mm = m.get(1).copied().unwrap_or(-1);
            ctx.set_output(
                0,
                &f32_tensor(vec![b, t, mm], vec![bs, String::new(), String::new()]),
            )?;
        }
        Ok(())
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        match self.0 {
            Ep::Cpu => Ok(Box::new(cpu::LogMelCpu::new())),
            #[cfg(feature = "cuda")]
            Ep::Cuda(id) => Ok(Box::new(cuda::CudaKernel::new(id, cuda::Which::LogMel)?)),
        }
    }
}

impl Kernel for cpu::LogMelCpu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let (ins, shapes) = gather(ctx, "MambaLogMel", [F32, F64])?;
        let d = LogMelDims::check(&shapes)?;
        let x = host_slice(&ins[0], "MambaLogMel audio")?;
        let mel = ins[1]
            .try_extract_tensor::<f64>()
            .map(|(_, s)| s)
            .map_err(|e| err(format!("MambaLogMel mel: {e}")))?;
        let out = SendPtr::of(&host_out(ctx, 0, d.out())?);
        let rt = d.t * d.m;
        let (spectrum, mel) = self.parts(&d, mel);
        for_rows(ctx, d.b, |i| {
            // SAFETY: row i's range of the output, disjoint across rows.
            let o = unsafe { out.row(i, rt) };
            spectrum.row(&d, &x[i * d.s..(i + 1) * d.s], mel, o);
        })
    }
}

/// `MambaConv`.
pub struct ConvOp(pub Ep);
/// `MambaSsm`.
pub struct SsmOp(pub Ep);

fn ep_name(ep: Ep) -> Option<&'static str> {
    match ep {
        Ep::Cpu => None,
        #[cfg(feature = "cuda")]
        Ep::Cuda(_) => Some("CUDAExecutionProvider"),
    }
}

pub(crate) const F32: TensorElementType = TensorElementType::Float32;
pub(crate) const F64: TensorElementType = TensorElementType::Float64;

impl Operator for ConvOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "MambaConv"
    }

    fn execution_provider_type(&self) -> Option<&str> {
        ep_name(self.0)
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        std::iter::repeat_with(|| OperatorInput::required(F32)).take(4)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        std::iter::repeat_with(|| OperatorOutput::required(F32)).take(2)
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        let ins = ctx.inputs();
        let (Some((mut d, mut sy)), Some((w, _))) = (
            ins.first().and_then(tensor_parts),
            ins.get(2).and_then(tensor_parts),
        ) else {
            return Ok(());
        };
        if let (Some(last), Some(&e)) = (d.last_mut(), w.get(1)) {
            *last = e;
        }
        if let Some(l) = sy.last_mut() {
            l.clear();
        }
        ctx.set_output(0, &f32_tensor(d, sy))?;
        same_as(ctx, &[(1, 1)])
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        match self.0 {
            Ep::Cpu => Ok(Box::new(ConvCpu)),
            #[cfg(feature = "cuda")]
            Ep::Cuda(id) => Ok(Box::new(cuda::CudaKernel::new(id, cuda::Which::Conv)?)),
        }
    }
}

impl Operator for SsmOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "MambaSsm"
    }

    fn execution_provider_type(&self) -> Option<&str> {
        ep_name(self.0)
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        std::iter::repeat_with(|| OperatorInput::required(F32)).take(8)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        std::iter::repeat_with(|| OperatorOutput::required(F32)).take(2)
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        same_as(ctx, &[(0, 0), (1, 7)])
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        match self.0 {
            Ep::Cpu => Ok(Box::new(SsmCpu::default())),
            #[cfg(feature = "cuda")]
            Ep::Cuda(id) => Ok(Box::new(cuda::CudaKernel::new(id, cuda::Which::Ssm)?)),
        }
    }
}

/// Raw output pointer shared by the per-row closures of `par_for` (rows are disjoint).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each closure call writes only its own batch row's range.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The data of an output tensor ORT allocated for this call.
    fn of(t: &ort::value::ValueRefMut<'_, DynTensorValueType>) -> Self {
        Self(t.data_ptr().cast_mut().cast())
    }

    /// Row `i` of `n` floats (a method, so closures capture the whole `Sync` wrapper).
    ///
    /// # Safety
    /// The tensor holds at least `(i + 1) · n` floats and no other live slice overlaps the row.
    unsafe fn row<'a>(self, i: usize, n: usize) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(i * n), n) }
    }
}

fn host_slice<'a>(v: &'a ort::value::ValueRef<'_>, what: &str) -> ort::Result<&'a [f32]> {
    v.try_extract_tensor::<f32>()
        .map(|(_, s)| s)
        .map_err(|e| err(format!("{what}: {e}")))
}

fn host_out(
    ctx: &ComputeContext,
    i: usize,
    shape: Vec<i64>,
) -> ort::Result<ort::value::ValueRefMut<'_, DynTensorValueType>> {
    let v = ctx
        .output(i, shape)?
        .ok_or_else(|| err(format!("output {i} could not be allocated")))?;
    v.downcast()
}

struct ConvCpu;

impl Kernel for ConvCpu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let (ins, shapes) = gather(ctx, "MambaConv", [F32; 4])?;
        let d = ConvDims::check(&shapes)?;
        let xz = host_slice(&ins[0], "MambaConv xz")?;
        let st = host_slice(&ins[1], "MambaConv conv_state")?;
        let wt = cpu::ConvWeights {
            w: host_slice(&ins[2], "MambaConv weight")?,
            bias: host_slice(&ins[3], "MambaConv bias")?,
        };
        let xc = SendPtr::of(&host_out(ctx, 0, d.out())?);
        let nx = SendPtr::of(&host_out(ctx, 1, d.state())?);
        let (rt, rs) = (d.t * d.e, (d.k - 1) * d.e);
        for_rows(ctx, d.b, |i| {
            // SAFETY: row i's ranges of the two outputs, disjoint across rows.
            let (xc_r, nx_r) = unsafe { (xc.row(i, rt), nx.row(i, rs)) };
            let (xz_r, st_r) = (&xz[i * 2 * rt..(i + 1) * 2 * rt], &st[i * rs..(i + 1) * rs]);
            cpu::conv_row(&d, xz_r, st_r, &wt, xc_r, nx_r);
        })
    }
}

/// CPU kernel of `MambaSsm`; keeps `A · log2 e` of the constant `A` between calls.
#[derive(Default)]
struct SsmCpu {
    a2: cpu::DecayScale,
}

impl Kernel for SsmCpu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let (ins, shapes) = gather(ctx, "MambaSsm", [F32; 8])?;
        let dm = SsmDims::check(&shapes)?;
        let names = ["xc", "xz", "dbc", "dt_w", "dt_b", "A", "D", "h"];
        let sl: Vec<&[f32]> = ins
            .iter()
            .zip(names)
            .map(|(v, n)| host_slice(v, n))
            .collect::<ort::Result<_>>()?;
        let y = SendPtr::of(&host_out(ctx, 0, dm.out())?);
        let h = SendPtr::of(&host_out(ctx, 1, dm.state())?);
        let (rt, rw, rh) = (dm.t * dm.e, dm.t * (dm.r + 2 * dm.n), dm.n * dm.e);
        let a2 = self.a2.get(sl[5]);
        let wt = cpu::SsmWeights {
            dt_w: sl[3],
            dt_b: sl[4],
            a2,
            d: sl[6],
        };
        for_rows(ctx, dm.b, |i| {
            // SAFETY: row i's ranges of the two outputs, disjoint across rows.
            let (y_r, h_r) = unsafe { (y.row(i, rt), h.row(i, rh)) };
            let r = cpu::SsmRow {
                xc: &sl[0][i * rt..(i + 1) * rt],
                xz: &sl[1][i * 2 * rt..(i + 1) * 2 * rt],
                dbc: &sl[2][i * rw..(i + 1) * rw],
            };
            let h0 = &sl[7][i * rh..(i + 1) * rh];
            cpu::ssm_row(&dm, &r, &wt, h0, y_r, h_r);
        })
    }
}

/// Sizes of one `MambaLayer` call.
#[derive(Debug, Clone, Copy)]
pub struct LayerDims {
    pub b: usize,
    /// d_model.
    pub dm: usize,
    /// d_inner.
    pub e: usize,
    pub n: usize,
    pub r: usize,
    pub k: usize,
}

/// `MambaLayer`'s inputs, in order.
pub const LAYER_INPUTS: [&str; 14] = [
    "x",
    "conv_state",
    "h",
    "norm_w",
    "in_w",
    "conv_w",
    "conv_b",
    "x_w",
    "dt_w",
    "dt_b",
    "A",
    "D",
    "out_w",
    "eps",
];

impl LayerDims {
    fn check(s: &[Vec<usize>; 14]) -> ort::Result<Self> {
        let [x, conv, h, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, a, d, out_w, eps] = s;
        if x.len() != 2 || conv_w.len() != 2 || conv_w[0] == 0 || a.len() != 2 || dt_w.len() != 2 {
            return Err(err(format!(
                "MambaLayer: x {x:?} / conv_w {conv_w:?} / A {a:?} / dt_w {dt_w:?} must be \
                 [B, D] / [K, E] / [N, E] / [R, E]"
            )));
        }
        let (b, dm, k, e, n, r) = (x[0], x[1], conv_w[0], conv_w[1], a[0], dt_w[0]);
        expect("MambaLayer conv_state", conv, &[b, k - 1, e])?;
        expect("MambaLayer h", h, &[b, n, e])?;
        expect("MambaLayer norm_w", norm_w, &[dm])?;
        expect("MambaLayer in_w", in_w, &[dm, 2 * e])?;
        expect("MambaLayer conv_b", conv_b, &[e])?;
        expect("MambaLayer x_w", x_w, &[e, r + 2 * n])?;
        expect("MambaLayer dt_w", dt_w, &[r, e])?;
        expect("MambaLayer dt_b", dt_b, &[e])?;
        expect("MambaLayer A", a, &[n, e])?;
        expect("MambaLayer D", d, &[e])?;
        expect("MambaLayer out_w", out_w, &[e, dm])?;
        expect("MambaLayer eps", eps, &[1])?;
        Ok(Self { b, dm, e, n, r, k })
    }
    /// `x'`'s shape.
    pub fn out(&self) -> Vec<i64> {
        vec![self.b as i64, self.dm as i64]
    }
    /// `conv_state'`'s shape.
    pub fn conv_state(&self) -> Vec<i64> {
        vec![self.b as i64, self.k as i64 - 1, self.e as i64]
    }
    /// `h'`'s shape.
    pub fn ssm_state(&self) -> Vec<i64> {
        vec![self.b as i64, self.n as i64, self.e as i64]
    }
    /// The shapes of the five outputs: `x'`, `conv_state'`, `h'`, `xz [B, 2E]`, `y [B, E]`.
    pub fn outputs(&self) -> [Vec<i64>; 5] {
        let b = self.b as i64;
        [
            self.out(),
            self.conv_state(),
            self.ssm_state(),
            vec![b, 2 * self.e as i64],
            vec![b, self.e as i64],
        ]
    }
    /// The per-row sizes of the conv and SSM parts (`T = 1`).
    pub fn conv(&self) -> ConvDims {
        ConvDims {
            b: 1,
            t: 1,
            e: self.e,
            k: self.k,
            rank3: false,
        }
    }
    pub fn ssm(&self) -> SsmDims {
        SsmDims {
            b: 1,
            t: 1,
            e: self.e,
            n: self.n,
            r: self.r,
            rank3: false,
        }
    }
}

/// `MambaLayer`.
pub struct LayerOp(pub Ep);

impl Operator for LayerOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "MambaLayer"
    }

    fn execution_provider_type(&self) -> Option<&str> {
        ep_name(self.0)
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        std::iter::repeat_with(|| OperatorInput::required(F32)).take(LAYER_INPUTS.len())
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        std::iter::repeat_with(|| OperatorOutput::required(F32)).take(5)
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        same_as(ctx, &[(0, 0), (1, 1), (2, 2)])?;
        // xz [B, 2E] and y [B, E]: the batch of x, the widths of in_w and A
        let ins = ctx.inputs();
        if let (Some((x, xs)), Some((w, _)), Some((a, _))) = (
            ins.first().and_then(tensor_parts),
            ins.get(4).and_then(tensor_parts),
            ins.get(10).and_then(tensor_parts),
        ) {
            let b = x.first().copied().unwrap_or(-1);
            let bs = xs.first().cloned().unwrap_or_default();
            let (e2, e) = (
                w.get(1).copied().unwrap_or(-1),
                a.get(1).copied().unwrap_or(-1),
            );
            ctx.set_output(3, &f32_tensor(vec![b, e2], vec![bs.clone(), String::new()]))?;
            ctx.set_output(4, &f32_tensor(vec![b, e], vec![bs, String::new()]))?;
        }
        Ok(())
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        match self.0 {
            Ep::Cpu => Ok(Box::new(LayerCpu::default())),
            #[cfg(feature = "cuda")]
            Ep::Cuda(id) => Ok(Box::new(cuda::CudaKernel::new(id, cuda::Which::Layer)?)),
        }
    }
}

/// CPU kernel of `MambaLayer`; keeps `A · log2 e` between calls like [`SsmCpu`].
#[derive(Default)]
struct LayerCpu {
    a2: cpu::DecayScale,
}

impl Kernel for LayerCpu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let (ins, shapes) = gather(ctx, "MambaLayer", [F32; 14])?;
        let d = LayerDims::check(&shapes)?;
        let sl: Vec<&[f32]> = ins
            .iter()
            .zip(LAYER_INPUTS)
            .map(|(v, n)| host_slice(v, n))
            .collect::<ort::Result<_>>()?;
        let [s0, s1, s2, s3, s4] = d.outputs();
        let xo = SendPtr::of(&host_out(ctx, 0, s0)?);
        let co = SendPtr::of(&host_out(ctx, 1, s1)?);
        let ho = SendPtr::of(&host_out(ctx, 2, s2)?);
        let xzo = SendPtr::of(&host_out(ctx, 3, s3)?);
        let yo = SendPtr::of(&host_out(ctx, 4, s4)?);
        let a2 = self.a2.get(sl[10]);
        let w = cpu::LayerWeights {
            norm_w: sl[3],
            in_w: sl[4],
            conv: cpu::ConvWeights {
                w: sl[5],
                bias: sl[6],
            },
            x_w: sl[7],
            ssm: cpu::SsmWeights {
                dt_w: sl[8],
                dt_b: sl[9],
                a2,
                d: sl[11],
            },
            out_w: sl[12],
            eps: sl[13][0],
        };
        let (rc, rh) = ((d.k - 1) * d.e, d.n * d.e);
        for_rows(ctx, d.b, |i| {
            // SAFETY: row i's ranges of the five outputs, disjoint across rows.
            let out = unsafe {
                cpu::LayerOut {
                    x: xo.row(i, d.dm),
                    conv: co.row(i, rc),
                    h: ho.row(i, rh),
                    xz: xzo.row(i, 2 * d.e),
                    y: yo.row(i, d.e),
                }
            };
            let x0 = &sl[0][i * d.dm..(i + 1) * d.dm];
            let c0 = &sl[1][i * rc..(i + 1) * rc];
            let h0 = &sl[2][i * rh..(i + 1) * rh];
            cpu::layer_row(&d, &w, x0, c0, h0, out);
        })
    }
}

/// Sizes of one `MambaEmbed` / `MambaHead` call: `x [B, I]`, `w [I, O]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseDims {
    pub b: usize,
    pub i: usize,
    pub o: usize,
}

impl DenseDims {
    /// `norm_w` is `MambaHead`'s (None for `MambaEmbed`).
    fn check(
        op: &str,
        x: &[usize],
        w: &[usize],
        bias: &[usize],
        norm: Option<(&[usize], &[usize])>,
    ) -> ort::Result<Self> {
        let (&[b, i], &[_, o]) = (x, w) else {
            return Err(err(format!(
                "{op}: x {x:?} / w {w:?} must be [B, I] / [I, O]"
            )));
        };
        expect(&format!("{op} w"), w, &[i, o])?;
        expect(&format!("{op} b"), bias, &[o])?;
        if let Some((norm_w, eps)) = norm {
            expect(&format!("{op} norm_w"), norm_w, &[i])?;
            expect(&format!("{op} eps"), eps, &[1])?;
        }
        Ok(Self { b, i, o })
    }

    /// The output's shape, `[B, O]`.
    pub fn out(&self) -> Vec<i64> {
        vec![self.b as i64, self.o as i64]
    }
}

/// `MambaEmbed` (`head` false: `x, w, b`) or `MambaHead` (`x, norm_w, eps, w, b`).
pub struct DenseOp {
    ep: Ep,
    head: bool,
}

impl DenseOp {
    pub fn embed(ep: Ep) -> Self {
        Self { ep, head: false }
    }
    pub fn head(ep: Ep) -> Self {
        Self { ep, head: true }
    }
    fn n_inputs(&self) -> usize {
        if self.head {
            5
        } else {
            3
        }
    }
}

/// The inputs of one `MambaEmbed` / `MambaHead` call (shared by the CPU and CUDA kernels):
/// `x`, `w`, `b`, and for the head `norm_w` and `eps`, with the call's sizes.
pub(crate) struct DenseCall<'a> {
    pub d: DenseDims,
    pub x: ort::value::ValueRef<'a>,
    pub w: ort::value::ValueRef<'a>,
    pub b: ort::value::ValueRef<'a>,
    pub norm: Option<(ort::value::ValueRef<'a>, ort::value::ValueRef<'a>)>,
}

impl<'a> DenseCall<'a> {
    pub(crate) fn gather(ctx: &'a ComputeContext, head: bool) -> ort::Result<Self> {
        if head {
            let (ins, s) = gather(ctx, "MambaHead", [F32; 5])?;
            let d = DenseDims::check("MambaHead", &s[0], &s[3], &s[4], Some((&s[1], &s[2])))?;
            let [x, norm_w, eps, w, b]: [_; 5] = ins
                .try_into()
                .map_err(|_| err("MambaHead: 5 inputs expected"))?;
            Ok(Self {
                d,
                x,
                w,
                b,
                norm: Some((norm_w, eps)),
            })
        } else {
            let (ins, s) = gather(ctx, "MambaEmbed", [F32; 3])?;
            let d = DenseDims::check("MambaEmbed", &s[0], &s[1], &s[2], None)?;
            let [x, w, b]: [_; 3] = ins
                .try_into()
                .map_err(|_| err("MambaEmbed: 3 inputs expected"))?;
            Ok(Self {
                d,
                x,
                w,
                b,
                norm: None,
            })
        }
    }
}

impl Operator for DenseOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        if self.head {
            "MambaHead"
        } else {
            "MambaEmbed"
        }
    }

    fn execution_provider_type(&self) -> Option<&str> {
        ep_name(self.ep)
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        std::iter::repeat_with(|| OperatorInput::required(F32)).take(self.n_inputs())
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(F32)]
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        // [B, O]: the batch of x, the width of w
        let ins = ctx.inputs();
        let wi = if self.head { 3 } else { 1 };
        if let (Some((x, xs)), Some((w, _))) = (
            ins.first().and_then(tensor_parts),
            ins.get(wi).and_then(tensor_parts),
        ) {
            let b = x.first().copied().unwrap_or(-1);
            let bs = xs.first().cloned().unwrap_or_default();
            let o = w.get(1).copied().unwrap_or(-1);
            ctx.set_output(0, &f32_tensor(vec![b, o], vec![bs, String::new()]))?;
        }
        Ok(())
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        match self.ep {
            Ep::Cpu => Ok(Box::new(DenseCpu { head: self.head })),
            #[cfg(feature = "cuda")]
            Ep::Cuda(id) => Ok(Box::new(cuda::CudaKernel::new(
                id,
                if self.head {
                    cuda::Which::Head
                } else {
                    cuda::Which::Embed
                },
            )?)),
        }
    }
}

/// CPU kernel of `MambaEmbed` / `MambaHead`.
struct DenseCpu {
    head: bool,
}

impl Kernel for DenseCpu {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let c = DenseCall::gather(ctx, self.head)?;
        let d = c.d;
        let x = host_slice(&c.x, "x")?;
        let w = host_slice(&c.w, "w")?;
        let b = host_slice(&c.b, "b")?;
        let norm = match &c.norm {
            Some((nw, eps)) => Some(cpu::DenseNorm {
                w: host_slice(nw, "norm_w")?,
                eps: host_slice(eps, "eps")?[0],
            }),
            None => None,
        };
        let out = SendPtr::of(&host_out(ctx, 0, d.out())?);
        for_rows(ctx, d.b, |r| {
            // SAFETY: row r of the output, disjoint across rows.
            let o = unsafe { out.row(r, d.o) };
            cpu::dense_row(
                &x[r * d.i..(r + 1) * d.i],
                norm.as_ref(),
                w,
                b,
                self.head,
                o,
            );
        })
    }
}
