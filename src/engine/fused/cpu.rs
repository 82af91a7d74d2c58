//! CPU kernels of the fused ops: the same arithmetic as `kernels.cu`, vectorised over the
//! channel axis (the innermost axis of every tensor). `exp`/`ln` are branch-free Cephes
//! polynomials (≈1e-7 relative error) so that the channel loops vectorise; the
//! `avx2,fma`-enabled copy is picked at run time where the CPU has it.

use std::cell::RefCell;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::{ConvDims, LayerDims, LogMelDims, SsmDims, HOP, N_FFT, WIN};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x`, clamped to the normal range (`e^-87.3` … `e^88`).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_f::<false>(x)
}

#[inline(always)]
fn exp_f<const F: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = madd::<F>(-k, LN2_LO, madd::<F>(-k, LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = madd::<F>(p, r, 1.398_199_9e-3);
    p = madd::<F>(p, r, 8.333_452e-3);
    p = madd::<F>(p, r, 4.166_579_6e-2);
    p = madd::<F>(p, r, 0.166_666_65);
    p = madd::<F>(p, r, 0.5);
    let y = madd::<F>(p * r, r, r) + 1.0;
    // SAFETY: k is integral and within i32 range after the clamp.
    let ki = unsafe { k.to_int_unchecked::<i32>() };
    y * f32::from_bits(((ki + 127) << 23) as u32)
}

/// `a * b + c`, as one fused multiply-add where the caller was compiled with FMA (`F`).
#[inline(always)]
fn madd<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^x` for `x <= 0` (the SSM decay `exp(dt·A) = 2^(dt·A·log2 e)`, `dt > 0 > A`, with
/// `A·log2 e` computed once per call): a degree-6 polynomial of the fraction (≈1e-7 relative),
/// fused multiply-adds where available.
#[inline(always)]
fn exp2_decay<const F: bool>(x: f32) -> f32 {
    let x = x.max(-126.0);
    let k = (x + ROUND) - ROUND;
    let f = x - k; // [-0.5, 0.5], exact
    let mut p = 1.546_974_1e-4_f32;
    p = madd::<F>(p, f, 1.340_044_2e-3);
    p = madd::<F>(p, f, 9.618_025e-3);
    p = madd::<F>(p, f, 5.550_327e-2);
    p = madd::<F>(p, f, 0.240_226_5);
    p = madd::<F>(p, f, std::f32::consts::LN_2);
    p = madd::<F>(p, f, 1.0);
    // SAFETY: k is integral and within [-126, 0].
    let ki = unsafe { k.to_int_unchecked::<i32>() };
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

/// `ln x` for normal positive `x`.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    ln_f::<false>(x)
}

#[inline(always)]
fn ln_f<const F: bool>(x: f32) -> f32 {
    let bits = x.to_bits();
    let e0 = ((bits >> 23) & 0xff) as i32 - 126;
    let m0 = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m0 < std::f32::consts::FRAC_1_SQRT_2;
    let e = (e0 - small as i32) as f32;
    let m = if small { m0 + m0 - 1.0 } else { m0 - 1.0 };
    let z = m * m;
    let mut y = 7.037_683_6e-2_f32;
    y = madd::<F>(y, m, -0.115_146_1);
    y = madd::<F>(y, m, 0.116_769_98);
    y = madd::<F>(y, m, -0.124_201_41);
    y = madd::<F>(y, m, 0.142_493_23);
    y = madd::<F>(y, m, -0.166_680_57);
    y = madd::<F>(y, m, 0.200_007_15);
    y = madd::<F>(y, m, -0.249_999_94);
    y = madd::<F>(y, m, 0.333_333_3);
    y = y * m * z;
    y = madd::<F>(LN2_LO, e, y);
    y = madd::<F>(-0.5, z, y);
    madd::<F>(LN2_HI, e, m + y)
}

#[inline(always)]
fn silu<const F: bool>(x: f32) -> f32 {
    x * (1.0 / (1.0 + exp_f::<F>(-x)))
}

/// `Relu(x) + Log(1 + Exp(-|x|))`, the exporter's softplus.
#[inline(always)]
fn softplus<const F: bool>(x: f32) -> f32 {
    x.max(0.0) + ln_f::<F>(1.0 + exp_f::<F>(-x.abs()))
}

/// Weights of the conv op: `w [K, E]`, `bias [E]`.
pub struct ConvWeights<'a> {
    pub w: &'a [f32],
    pub bias: &'a [f32],
}

/// One batch row of the conv op: `xz [T, 2E]`, `state [K-1, E]` -> `xc [T, E]`, `next [K-1, E]`.
#[inline(always)]
fn conv_row_impl(
    d: &ConvDims,
    xz: &[f32],
    state: &[f32],
    wt: &ConvWeights,
    xc: &mut [f32],
    next: &mut [f32],
    acc: &mut [f32],
) {
    let (t_len, e_len, k_len) = (d.t, d.e, d.k);
    let (w, bias) = (wt.w, wt.bias);
    // input j of the row, j < 0 reaching back into the state (the last K-1 inputs, oldest
    // first): read where it lies, so no window is rolled per hop
    let input = |j: isize| -> &[f32] {
        if j < 0 {
            let i = (k_len as isize - 1 + j) as usize;
            &state[i * e_len..(i + 1) * e_len]
        } else {
            let j = j as usize;
            &xz[j * 2 * e_len..j * 2 * e_len + e_len]
        }
    };
    for t in 0..t_len {
        let x = input(t as isize);
        acc.fill(0.0);
        for k in 0..k_len - 1 {
            let wk = &w[k * e_len..(k + 1) * e_len];
            let wi = input(t as isize + 1 - k_len as isize + k as isize);
            for ((a, &wv), &xv) in acc.iter_mut().zip(wk).zip(wi) {
                *a += wv * xv;
            }
        }
        let wl = &w[(k_len - 1) * e_len..k_len * e_len];
        let out = &mut xc[t * e_len..(t + 1) * e_len];
        for ((((o, &a), &wv), &xv), &bv) in out.iter_mut().zip(&*acc).zip(wl).zip(x).zip(bias) {
            *o = silu::<false>(a + wv * xv + bv);
        }
    }
    // the next state: the last K-1 inputs
    for i in 0..k_len - 1 {
        let j = t_len as isize + 1 - k_len as isize + i as isize;
        next[i * e_len..(i + 1) * e_len].copy_from_slice(input(j));
    }
}

/// Scratch of one SSM row: dt, dt·x and y per channel.
#[derive(Default)]
pub struct SsmScratch {
    dt: Vec<f32>,
    dtx: Vec<f32>,
    y: Vec<f32>,
}

// Per-thread scratch of the row kernels, kept between calls so that a step allocates nothing
// (rows run on the calling thread or on ONNX Runtime's intra-op pool). Every buffer is fully
// overwritten before it is read.
thread_local! {
    static SSM_SCRATCH: RefCell<SsmScratch> = RefCell::new(SsmScratch::default());
    static CONV_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SPEC_SCRATCH: RefCell<SpecScratch> = RefCell::new(SpecScratch::default());
    static LAYER_SCRATCH: RefCell<LayerScratch> = RefCell::new(LayerScratch::default());
    static DENSE_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Per-row inputs of the SSM op (slices of one batch row).
pub struct SsmRow<'a> {
    pub xc: &'a [f32],
    pub xz: &'a [f32],
    pub dbc: &'a [f32],
}

/// Weights of the SSM op.
pub struct SsmWeights<'a> {
    pub dt_w: &'a [f32],
    pub dt_b: &'a [f32],
    /// `A · log2 e` (`[N, E]`), so that the decay is a power of two.
    pub a2: &'a [f32],
    pub d: &'a [f32],
}

#[inline(always)]
fn ssm_row_impl<const F: bool>(
    dm: &SsmDims,
    row: &SsmRow,
    wt: &SsmWeights,
    h0: &[f32],
    out: &mut [f32],
    h: &mut [f32],
    s: &mut SsmScratch,
) {
    let (t_len, e_len, n_len, r_len) = (dm.t, dm.e, dm.n, dm.r);
    let width = r_len + 2 * n_len;
    h.copy_from_slice(h0);
    for t in 0..t_len {
        let dbc = &row.dbc[t * width..(t + 1) * width];
        let x = &row.xc[t * e_len..(t + 1) * e_len];
        let z = &row.xz[t * 2 * e_len + e_len..(t + 1) * 2 * e_len];
        ssm_dt::<F>(&dbc[..r_len], x, wt, &mut s.dt, &mut s.dtx);
        s.y.fill(0.0);
        for n in 0..n_len {
            let (bn, cn) = (dbc[r_len + n], dbc[r_len + n_len + n]);
            let hn = &mut h[n * e_len..(n + 1) * e_len];
            let an = &wt.a2[n * e_len..(n + 1) * e_len];
            for ((((hv, &av), &dt), &dtx), y) in hn
                .iter_mut()
                .zip(an)
                .zip(&s.dt)
                .zip(&s.dtx)
                .zip(s.y.iter_mut())
            {
                *y = state_step::<F>(hv, av, dt, bn * dtx, cn, *y);
            }
        }
        ssm_gate::<F>(&s.y, x, z, wt.d, &mut out[t * e_len..(t + 1) * e_len]);
    }
}

/// One state of one channel for one hop: `h' = 2^(dt·A·log2 e)·h + B·dt·x` (`bdtx` = B·dt·x),
/// returning `y + C·h'`. (The AVX-512 kernel does the same operations on 16 lanes.)
#[inline(always)]
fn state_step<const F: bool>(h: &mut f32, a2: f32, dt: f32, bdtx: f32, c: f32, y: f32) -> f32 {
    let v = madd::<F>(exp2_decay::<F>(dt * a2), *h, bdtx);
    *h = v;
    madd::<F>(c, v, y)
}

/// `dt = softplus(dt_low @ dt_w + dt_b)` and `dt·x` for one hop (`dt_low`: the hop's first R
/// `dbc` values).
#[inline(always)]
fn ssm_dt<const F: bool>(
    dt_low: &[f32],
    x: &[f32],
    wt: &SsmWeights,
    dt: &mut [f32],
    dtx: &mut [f32],
) {
    let e_len = x.len();
    dt[..e_len].fill(0.0);
    for (&c, wr) in dt_low.iter().zip(wt.dt_w.chunks_exact(e_len)) {
        for (a, &wv) in dt.iter_mut().zip(wr) {
            *a += c * wv;
        }
    }
    for (((dt, dtx), &b), &xv) in dt.iter_mut().zip(dtx.iter_mut()).zip(wt.dt_b).zip(x) {
        *dt = softplus::<F>(*dt + b);
        *dtx = *dt * xv;
    }
}

/// The SSM's output for one hop: `(y + x·D) · silu(z)`.
#[inline(always)]
fn ssm_gate<const F: bool>(y: &[f32], x: &[f32], z: &[f32], d: &[f32], out: &mut [f32]) {
    for ((((ov, &yv), &xv), &dv), &zv) in out.iter_mut().zip(y).zip(x).zip(d).zip(z) {
        *ov = (yv + xv * dv) * silu::<F>(zv);
    }
}

/// Hops per tile of [`ssm_row_avx512`]: its dt, dt·x and y scratch is `[min(T, SSM_TILE), E]`
/// each (sized by [`ssm_row_with`]).
const SSM_TILE: usize = 16;

/// [`ssm_row_impl`] for AVX-512 CPUs and `d_state` 16, the same arithmetic in the same order
/// (so bit-identical to the AVX2 build): per tile of [`SSM_TILE`] hops, dt and dt·x for the
/// tile first, then per block of 16 channels the block's 16 state rows are carried in a local
/// array of 16 vectors across the tile's hops, `y` in a register (the plain kernel loads and
/// stores `h [N, E]` and `y [E]` for every hop and state row), then the gated output. (The
/// compiler keeps that array on the stack, in L1; a hand-unrolled form that kept it in registers
/// measured no faster.) Channels past the last full block run the plain per-channel maths.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
fn ssm_row_avx512(
    dm: &SsmDims,
    row: &SsmRow,
    wt: &SsmWeights,
    h0: &[f32],
    out: &mut [f32],
    h: &mut [f32],
    s: &mut SsmScratch,
) {
    use std::arch::x86_64::*;
    const N: usize = 16;
    let (t_len, e_len, r_len) = (dm.t, dm.e, dm.r);
    let width = r_len + 2 * N;
    let blocks = e_len / 16;
    // the bounds the unsafe block relies on (the safe indexing elsewhere checks its own)
    let tile = SSM_TILE.min(t_len) * e_len;
    assert!(dm.n == N && h0.len() == N * e_len && wt.a2.len() >= N * e_len);
    assert!(s.dt.len() >= tile && s.dtx.len() >= tile && s.y.len() >= tile);
    h.copy_from_slice(h0);
    let mut t0 = 0;
    while t0 < t_len {
        let tn = SSM_TILE.min(t_len - t0);
        // dt = softplus(dt_low @ dt_w + dt_b), dt·x: as ssm_row_impl, per hop of the tile
        for i in 0..tn {
            let t = t0 + i;
            ssm_dt::<true>(
                &row.dbc[t * width..t * width + r_len],
                &row.xc[t * e_len..(t + 1) * e_len],
                wt,
                &mut s.dt[i * e_len..(i + 1) * e_len],
                &mut s.dtx[i * e_len..(i + 1) * e_len],
            );
        }
        // the scan, 16 channels at a time, their 16 state vectors carried across the tile
        for blk in 0..blocks {
            let e0 = blk * 16;
            // SAFETY: every pointer below indexes a slice at n * e_len + e0 + 0..16 or
            // i * e_len + e0 + 0..16 with n < 16 = N, i < tn <= min(T, SSM_TILE), e0 + 16 <=
            // e_len: in bounds of h [N, E], a2 [N, E] and the scratch (asserted above).
            unsafe {
                let mut hr = [_mm512_setzero_ps(); N];
                for (n, r) in hr.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(h.as_ptr().add(n * e_len + e0));
                }
                for i in 0..tn {
                    let bc = &row.dbc[(t0 + i) * width + r_len..(t0 + i + 1) * width];
                    let dt = _mm512_loadu_ps(s.dt.as_ptr().add(i * e_len + e0));
                    let dtx = _mm512_loadu_ps(s.dtx.as_ptr().add(i * e_len + e0));
                    // the hop's 16 decays first: 16 independent polynomial chains, which the
                    // core overlaps; interleaved with the state updates and the serial sum into
                    // y, they ran 7-15 % slower (`ssm_row` bench, A/B in one binary)
                    let mut decay = [_mm512_setzero_ps(); N];
                    for (n, d) in decay.iter_mut().enumerate() {
                        let av = _mm512_loadu_ps(wt.a2.as_ptr().add(n * e_len + e0));
                        *d = exp2_decay_avx512(_mm512_mul_ps(dt, av));
                    }
                    let mut y = _mm512_setzero_ps();
                    for (n, hn) in hr.iter_mut().enumerate() {
                        let bdtx = _mm512_mul_ps(_mm512_set1_ps(bc[n]), dtx);
                        let v = _mm512_fmadd_ps(decay[n], *hn, bdtx);
                        *hn = v;
                        y = _mm512_fmadd_ps(_mm512_set1_ps(bc[N + n]), v, y);
                    }
                    _mm512_storeu_ps(s.y.as_mut_ptr().add(i * e_len + e0), y);
                }
                for (n, r) in hr.iter().enumerate() {
                    _mm512_storeu_ps(h.as_mut_ptr().add(n * e_len + e0), *r);
                }
            }
        }
        // the channels past the last full block: ssm_row_impl's maths, one channel at a time
        for c in blocks * 16..e_len {
            for i in 0..tn {
                let bc = &row.dbc[(t0 + i) * width + r_len..(t0 + i + 1) * width];
                let (dt, dtx) = (s.dt[i * e_len + c], s.dtx[i * e_len + c]);
                let mut y = 0.0;
                for n in 0..N {
                    let a = wt.a2[n * e_len + c];
                    y = state_step::<true>(&mut h[n * e_len + c], a, dt, bc[n] * dtx, bc[N + n], y);
                }
                s.y[i * e_len + c] = y;
            }
        }
        // out = (y + x·D) · silu(z)
        for i in 0..tn {
            let t = t0 + i;
            ssm_gate::<true>(
                &s.y[i * e_len..(i + 1) * e_len],
                &row.xc[t * e_len..(t + 1) * e_len],
                &row.xz[t * 2 * e_len + e_len..(t + 1) * 2 * e_len],
                wt.d,
                &mut out[t * e_len..(t + 1) * e_len],
            );
        }
        t0 += tn;
    }
}

/// [`exp2_decay`] on 16 lanes, bit for bit: the same operations, with AVX-512's round and scale
/// instructions in place of the add-subtract rounding and the exponent-bit construction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
#[inline]
fn exp2_decay_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_max_ps(x, _mm512_set1_ps(-126.0));
    // round to nearest even: what `(x + ROUND) - ROUND` gives, in one instruction
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let f = _mm512_sub_ps(x, k);
    let mut p = _mm512_set1_ps(1.546_974_1e-4);
    for c in [
        1.340_044_2e-3,
        9.618_025e-3,
        5.550_327e-2,
        0.240_226_5,
        std::f32::consts::LN_2,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    // p · 2^k in one instruction (k is an integer in [-126, 0] here, so 2^k is normal and this
    // is the same product the other levels form by building 2^k's exponent bits)
    _mm512_scalef_ps(p, k)
}

/// A value computed from a constant input of an op (a graph initializer) on the first call and
/// kept: computed again only if ORT hands over a different buffer (address or length).
pub struct Derived<T> {
    key: (usize, usize),
    value: Option<T>,
}

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Self {
            key: (0, 0),
            value: None,
        }
    }
}

impl<T> Derived<T> {
    pub fn get<S>(&mut self, src: &[S], make: impl FnOnce(&[S]) -> T) -> &T {
        let key = (src.as_ptr() as usize, src.len());
        if self.key != key {
            self.value = None;
            self.key = key;
        }
        self.value.get_or_insert_with(|| make(src))
    }
}

/// `A · log2 e` of an SSM's constant `A` (`[N, E]`), so that the decay `exp(dt·A)` is a power
/// of two ([`exp2_decay`]); made on the first call and kept ([`Derived`]).
#[derive(Default)]
pub struct DecayScale(Derived<Vec<f32>>);

impl DecayScale {
    pub fn get(&mut self, a: &[f32]) -> &[f32] {
        self.0.get(a, |a| a.iter().map(|a| a * LOG2E).collect())
    }
}

/// One nonzero filterbank weight: `(bin, band, weight)`.
pub type MelWeight = (u32, u32, f64);

/// CPU kernel of `MambaLogMel`: a 512-point real FFT of each Hann-windowed frame (float64;
/// the same power spectrum as the standard graphs' folded DFT to ~1e-13).
#[derive(Default)]
pub struct LogMelCpu {
    spectrum: Spectrum,
    /// The filterbank input (a constant of the graph) as its nonzero weights.
    sparse: Derived<Vec<MelWeight>>,
}

impl LogMelCpu {
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-row transform and the filterbank `mel [257, M]` as its nonzero weights
    /// `(bin, band, weight)` (a mel filterbank has ~2 per bin: triangles).
    pub fn parts(&mut self, d: &LogMelDims, mel: &[f64]) -> (&Spectrum, &[MelWeight]) {
        let m = d.m;
        let sparse = self.sparse.get(mel, |mel| nonzeros(m, mel));
        (&self.spectrum, sparse)
    }
}

fn nonzeros(m: usize, mel: &[f64]) -> Vec<MelWeight> {
    mel.chunks_exact(m)
        .enumerate()
        .flat_map(|(k, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, &w)| w != 0.0)
                .map(move |(j, &w)| (k as u32, j as u32, w))
        })
        .collect()
}

/// Buffers of one [`Spectrum::row`] call (per thread, see `SPEC_SCRATCH`).
#[derive(Default)]
struct SpecScratch {
    buf: Vec<f64>,
    spec: Vec<Complex<f64>>,
    fft: Vec<Complex<f64>>,
    power: Vec<f64>,
    acc: Vec<f64>,
}

/// Windowed power spectrum + sparse filterbank + log, one batch row at a time.
pub struct Spectrum {
    fft: Arc<dyn RealToComplex<f64>>,
    hann: Vec<f64>,
}

impl Default for Spectrum {
    fn default() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let hann = (0..WIN)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / WIN as f64).cos())
            .collect();
        Self { fft, hann }
    }
}

impl Spectrum {
    /// One batch row: `x [S]` -> `out [T, M]`; `mel` from [`LogMelCpu::parts`] (summed over
    /// bins in order, as the dense product would).
    pub fn row(&self, d: &LogMelDims, x: &[f32], mel: &[MelWeight], out: &mut [f32]) {
        SPEC_SCRATCH.with_borrow_mut(|s| {
            s.buf.resize(N_FFT, 0.0);
            s.spec.resize(N_FFT / 2 + 1, Complex::new(0.0, 0.0));
            s.fft
                .resize(self.fft.get_scratch_len(), Complex::new(0.0, 0.0));
            s.power.resize(N_FFT / 2 + 1, 0.0);
            s.acc.resize(d.m, 0.0);
            self.row_with(d, x, mel, out, s)
        })
    }

    fn row_with(
        &self,
        d: &LogMelDims,
        x: &[f32],
        mel: &[MelWeight],
        out: &mut [f32],
        s: &mut SpecScratch,
    ) {
        let SpecScratch {
            buf,
            spec,
            fft: scratch,
            power,
            acc,
        } = s;
        for t in 0..d.t {
            let frame = &x[t * HOP..t * HOP + WIN];
            for ((b, &v), &w) in buf.iter_mut().zip(frame).zip(&self.hann) {
                *b = v as f64 * w;
            }
            buf[WIN..].fill(0.0);
            // the buffer sizes are the plan's, so this cannot fail
            let _ = self.fft.process_with_scratch(buf, spec, scratch);
            for (p, c) in power.iter_mut().zip(spec.iter()) {
                *p = c.re * c.re + c.im * c.im;
            }
            acc.fill(0.0);
            for &(k, j, w) in mel {
                acc[j as usize] += power[k as usize] * w;
            }
            for (o, &a) in out[t * d.m..(t + 1) * d.m].iter_mut().zip(acc.iter()) {
                *o = (a + 1e-6).ln() as f32;
            }
        }
    }
}

/// The widest vector unit the row kernels use. Every level runs the same per-channel arithmetic
/// (lanes are channels; no reduction crosses lanes), so all levels give bit-identical results;
/// only the vector width differs (`tests`: `simd_levels_are_bit_identical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Scalar,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512 F/VL + FMA (512-bit).
    Avx512,
}

impl Simd {
    /// What this CPU has (checked once per process).
    pub fn detected() -> Simd {
        static HAVE: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *HAVE.get_or_init(Simd::probe)
    }

    fn probe() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
            {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }

    /// The level the kernels run at: [`Simd::detected`], lowered by `MAMBATAG_CPU_SIMD`
    /// (`scalar`, `avx2` or `avx512`; for A/B benchmarks in one binary) when that is set to a
    /// level at or below it; any other value is reported on stderr and ignored. Read once per
    /// process.
    pub fn current() -> Simd {
        static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            let have = Simd::detected();
            let Ok(v) = std::env::var("MAMBATAG_CPU_SIMD") else {
                return have;
            };
            match Simd::parse(&v) {
                Some(want) if want <= have => want,
                Some(_) => {
                    eprintln!("mambatag: MAMBATAG_CPU_SIMD={v}: this CPU has only {have:?}; using {have:?}");
                    have
                }
                None => {
                    eprintln!(
                        "mambatag: MAMBATAG_CPU_SIMD={v:?} is not one of scalar, avx2, avx512; using {have:?}"
                    );
                    have
                }
            }
        })
    }

    pub fn parse(s: &str) -> Option<Simd> {
        match s {
            "scalar" => Some(Simd::Scalar),
            "avx2" => Some(Simd::Avx2),
            "avx512" => Some(Simd::Avx512),
            _ => None,
        }
    }
}

/// `$name_at(level, args)`: `$body` (an `#[inline(always)]` kernel call) compiled three times,
/// for the scalar baseline, AVX2+FMA and AVX-512, and picked by `level`, capped at
/// [`Simd::detected`] (so no level can run instructions the CPU lacks).
macro_rules! simd_dispatch {
    ($name:ident, ($($arg:ident: $ty:ty),*), |$f:ident| $body:expr) => {
        #[allow(clippy::too_many_arguments)]
        pub fn $name(level: Simd, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    const $f: bool = true;
                    $body
                }
                #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
                unsafe fn avx512($($arg: $ty),*) {
                    const $f: bool = true;
                    $body
                }
                match level.min(Simd::detected()) {
                    // SAFETY: capped at what the CPU has (Simd::detected).
                    Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    Simd::Scalar => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = level;
            const $f: bool = false;
            $body
        }
    };
}

simd_dispatch!(
    conv_row_at,
    (d: &ConvDims, xz: &[f32], state: &[f32], wt: &ConvWeights, xc: &mut [f32], next: &mut [f32], acc: &mut [f32]),
    |_F| conv_row_impl(d, xz, state, wt, xc, next, acc)
);

simd_dispatch!(
    ssm_rows_at,
    (dm: &SsmDims, row: &SsmRow, wt: &SsmWeights, h0: &[f32], out: &mut [f32], h: &mut [f32], s: &mut SsmScratch),
    |F| ssm_row_impl::<F>(dm, row, wt, h0, out, h, s)
);

simd_dispatch!(vecmat_at, (x: &[f32], w: &[f32], out: &mut [f32]), |_F| vecmat(x, w, out));

/// The conv op for one batch row (see [`conv_row_impl`]).
pub fn conv_row(
    d: &ConvDims,
    xz: &[f32],
    state: &[f32],
    wt: &ConvWeights,
    xc: &mut [f32],
    next: &mut [f32],
) {
    CONV_SCRATCH.with_borrow_mut(|acc| {
        acc.resize(d.e, 0.0);
        conv_row_at(Simd::current(), d, xz, state, wt, xc, next, acc)
    })
}

/// The SSM op for one batch row.
pub fn ssm_row(
    dm: &SsmDims,
    row: &SsmRow,
    wt: &SsmWeights,
    h0: &[f32],
    out: &mut [f32],
    h: &mut [f32],
) {
    ssm_row_with(Simd::current(), dm, row, wt, h0, out, h)
}

/// Deterministic values in [-1, 1) (xorshift32 from `seed`): inputs for the kernels' tests and
/// benchmarks.
#[doc(hidden)]
pub fn test_signal(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// One batch row of the SSM op with its weights, owned and deterministic ([`test_signal`]; `A`
/// negative, as trained models have it): what the kernels' unit test and the `ssm_row`
/// benchmark run.
#[doc(hidden)]
pub struct SsmCase {
    pub dims: SsmDims,
    pub xc: Vec<f32>,
    pub xz: Vec<f32>,
    pub dbc: Vec<f32>,
    pub dt_w: Vec<f32>,
    pub dt_b: Vec<f32>,
    pub a2: Vec<f32>,
    pub d: Vec<f32>,
    pub h0: Vec<f32>,
}

impl SsmCase {
    pub fn new(t: usize, e: usize, n: usize, r: usize) -> Self {
        let v = test_signal;
        SsmCase {
            dims: SsmDims {
                b: 1,
                t,
                e,
                n,
                r,
                rank3: true,
            },
            xc: v(t * e, 11),
            xz: v(t * 2 * e, 1),
            dbc: v(t * (r + 2 * n), 5),
            dt_w: v(r * e, 6),
            dt_b: v(e, 7),
            a2: v(n * e, 9).iter().map(|x| -(x.abs() + 0.1) * 5.0).collect(),
            d: v(e, 8),
            h0: v(n * e, 10),
        }
    }

    /// [`ssm_row_with`] on this case: `out [T, E]`, `h [N, E]`.
    pub fn run(&self, level: Simd, out: &mut [f32], h: &mut [f32]) {
        let row = SsmRow {
            xc: &self.xc,
            xz: &self.xz,
            dbc: &self.dbc,
        };
        let wt = SsmWeights {
            dt_w: &self.dt_w,
            dt_b: &self.dt_b,
            a2: &self.a2,
            d: &self.d,
        };
        ssm_row_with(level, &self.dims, &row, &wt, &self.h0, out, h)
    }
}

/// [`ssm_row`] at a given [`Simd`] level (capped at [`Simd::detected`]).
pub fn ssm_row_with(
    level: Simd,
    dm: &SsmDims,
    row: &SsmRow,
    wt: &SsmWeights,
    h0: &[f32],
    out: &mut [f32],
    h: &mut [f32],
) {
    let tiled =
        cfg!(target_arch = "x86_64") && level.min(Simd::detected()) == Simd::Avx512 && dm.n == 16;
    // the scratch holds one hop (plain kernel) or one tile of hops (tiled kernel); sized here
    // once for the kernel that runs, so that a step does not refill a tile's worth
    let rows = if tiled { SSM_TILE.min(dm.t) } else { 1 };
    SSM_SCRATCH.with_borrow_mut(|s| {
        for v in [&mut s.dt, &mut s.dtx, &mut s.y] {
            v.resize(rows * dm.e, 0.0);
        }
        #[cfg(target_arch = "x86_64")]
        if tiled {
            // SAFETY: capped at what the CPU has (Simd::detected): AVX-512 F/VL and FMA.
            return unsafe { ssm_row_avx512(dm, row, wt, h0, out, h, s) };
        }
        ssm_rows_at(level, dm, row, wt, h0, out, h, s)
    })
}

/// Weights of the whole-layer op (`MambaLayer`).
pub struct LayerWeights<'a> {
    pub norm_w: &'a [f32],
    /// `[D, 2E]`
    pub in_w: &'a [f32],
    pub conv: ConvWeights<'a>,
    /// `[E, R + 2N]`
    pub x_w: &'a [f32],
    pub ssm: SsmWeights<'a>,
    /// `[E, D]`
    pub out_w: &'a [f32],
    pub eps: f32,
}

/// Intermediates of one layer row: u, xc, dbc.
#[derive(Default)]
struct LayerScratch {
    u: Vec<f32>,
    xc: Vec<f32>,
    dbc: Vec<f32>,
}

/// One row of `MambaLayer`'s outputs: `x' [D]`, `conv_state' [K-1, E]`, `h' [N, E]`, and the
/// intermediates `xz [2E]` (in_proj) and `y [E]` (gated SSM output).
pub struct LayerOut<'a> {
    pub x: &'a mut [f32],
    pub conv: &'a mut [f32],
    pub h: &'a mut [f32],
    pub xz: &'a mut [f32],
    pub y: &'a mut [f32],
}

/// `out = x @ w` for `w [x.len(), out.len()]` (row-major), summed over `x` in order.
#[inline(always)]
fn vecmat(x: &[f32], w: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (&xi, row) in x.iter().zip(w.chunks_exact(out.len())) {
        for (o, &wv) in out.iter_mut().zip(row) {
            *o += xi * wv;
        }
    }
}

fn vecmat_any(x: &[f32], w: &[f32], out: &mut [f32]) {
    vecmat_at(Simd::current(), x, w, out)
}

/// `u = x / sqrt(mean(x²) + eps) · w` (the layers' and the head's RMSNorm).
fn rms_norm(x: &[f32], w: &[f32], eps: f32, u: &mut [f32]) {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((u, &xv), &nw) in u.iter_mut().zip(x).zip(w) {
        *u = xv * inv * nw;
    }
}

/// One batch row of `MambaLayer`: `x [D]`, `conv0 [K-1, E]`, `h0 [N, E]` -> `out`.
pub fn layer_row(
    d: &LayerDims,
    w: &LayerWeights,
    x: &[f32],
    conv0: &[f32],
    h0: &[f32],
    out: LayerOut,
) {
    LAYER_SCRATCH.with_borrow_mut(|s| {
        s.u.resize(d.dm, 0.0);
        s.xc.resize(d.e, 0.0);
        s.dbc.resize(d.r + 2 * d.n, 0.0);
        rms_norm(x, w.norm_w, w.eps, &mut s.u);
        vecmat_any(&s.u, w.in_w, out.xz);
        conv_row(&d.conv(), out.xz, conv0, &w.conv, &mut s.xc, out.conv);
        vecmat_any(&s.xc, w.x_w, &mut s.dbc);
        let row = SsmRow {
            xc: &s.xc,
            xz: out.xz,
            dbc: &s.dbc,
        };
        ssm_row(&d.ssm(), &row, &w.ssm, h0, out.y, out.h);
        vecmat_any(out.y, w.out_w, out.x);
        for (o, &xv) in out.x.iter_mut().zip(x) {
            *o += xv;
        }
    })
}

/// The RMSNorm of `MambaEmbed`/`MambaHead`: `norm_w [I]` and `eps`.
pub struct DenseNorm<'a> {
    pub w: &'a [f32],
    pub eps: f32,
}

/// One batch row of `MambaEmbed` (`norm` None, `sigmoid` false) or `MambaHead`: `out =
/// act(RMSNorm(x) · norm_w @ w + b)` for `w [x.len(), out.len()]`; the norm is `layer_row`'s.
pub fn dense_row(
    x: &[f32],
    norm: Option<&DenseNorm>,
    w: &[f32],
    b: &[f32],
    sigmoid: bool,
    out: &mut [f32],
) {
    let Some(nm) = norm else {
        vecmat_any(x, w, out);
        return finish_dense(b, sigmoid, out);
    };
    DENSE_SCRATCH.with_borrow_mut(|u| {
        u.resize(x.len(), 0.0);
        rms_norm(x, nm.w, nm.eps, u);
        vecmat_any(u, w, out);
    });
    finish_dense(b, sigmoid, out)
}

fn finish_dense(b: &[f32], sigmoid: bool, out: &mut [f32]) {
    for (o, &bv) in out.iter_mut().zip(b) {
        *o += bv;
        if sigmoid {
            *o = 1.0 / (1.0 + exp(-*o));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AVX-512's decay rounds and scales with its own instructions: the same bits as the FMA
    /// scalar form over the whole input range, the clamp and special values included.
    #[test]
    fn avx512_decay_matches_the_scalar_form_bitwise() {
        if Simd::detected() < Simd::Avx512 {
            println!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let mut xs: Vec<f32> = (0..=2_000_000).map(|i| -130.0 * i as f32 / 2e6).collect();
        xs.extend([
            -126.0,
            -125.5,
            -126.5,
            -0.5,
            0.5,
            -0.0,
            f32::NAN,
            f32::NEG_INFINITY,
            -1e-30,
        ]);
        xs.resize(xs.len().next_multiple_of(16), 0.0);
        for c in xs.chunks(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: AVX-512 F is present (checked above); both pointers address 16 floats.
            unsafe {
                use std::arch::x86_64::*;
                let v = exp2_decay_avx512(_mm512_loadu_ps(c.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (&x, g) in c.iter().zip(got) {
                let want = exp2_decay::<true>(x);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "2^{x}: AVX-512 {g} vs scalar {want}"
                );
            }
        }
    }

    #[test]
    fn simd_levels_are_bit_identical() {
        // The default model's shapes, 37 channels more than a multiple of 16 so that every
        // vector width also runs its remainder loop.
        let (t, e, n, r, k) = (40, 293, 16, 8, 4);
        let levels: Vec<Simd> = [Simd::Scalar, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|l| *l <= Simd::detected())
            .collect();
        println!("comparing {levels:?} (this CPU: {:?})", Simd::detected());
        let case = SsmCase::new(t, e, n, r);
        let (cw, cb, cs) = (
            test_signal(k * e, 2),
            test_signal(e, 3),
            test_signal((k - 1) * e, 4),
        );
        let run = |level: Simd| {
            let cd = ConvDims {
                b: 1,
                t,
                e,
                k,
                rank3: true,
            };
            let (mut xc, mut next, mut acc) =
                (vec![0.0; t * e], vec![0.0; (k - 1) * e], vec![0.0; e]);
            let wt = ConvWeights { w: &cw, bias: &cb };
            conv_row_at(level, &cd, &case.xz, &cs, &wt, &mut xc, &mut next, &mut acc);
            let (mut y, mut h) = (vec![0.0; t * e], vec![0.0; n * e]);
            case.run(level, &mut y, &mut h);
            let mut v = vec![0.0; e];
            vecmat_at(level, &y[..n], &h, &mut v);
            [xc, next, y, h, v].map(|a| a.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
        };
        let names = ["conv out", "conv state", "ssm out", "ssm state", "vecmat"];
        let scalar = run(Simd::Scalar);
        assert!(
            scalar[2].iter().any(|&b| b != 0),
            "the SSM output is all zero: the test is vacuous"
        );
        // The vector levels use fused multiply-adds where the scalar build cannot: same maths,
        // float rounding apart.
        let fma: Vec<Simd> = levels.into_iter().filter(|l| *l > Simd::Scalar).collect();
        let Some((&first, rest)) = fma.split_first() else {
            return;
        };
        let base = run(first);
        for (i, name) in names.iter().enumerate() {
            for (&a, &b) in base[i].iter().zip(&scalar[i]) {
                let (a, b) = (f32::from_bits(a), f32::from_bits(b));
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{name}: {first:?} {a} vs scalar {b}"
                );
            }
        }
        // Wider vectors run the same per-lane arithmetic: bit for bit.
        for &level in rest {
            let got = run(level);
            for (i, name) in names.iter().enumerate() {
                assert_eq!(got[i], base[i], "{name}: {level:?} differs from {first:?}");
            }
        }
    }

    #[test]
    fn exp_and_ln_match_std_to_float_rounding() {
        let mut worst_exp = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst_exp = worst_exp.max(rel);
            x += 0.0137;
        }
        assert!(worst_exp < 3e-7, "exp rel err {worst_exp}");
        let mut worst_ln = 0.0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            let want = (x as f64).ln();
            let err = (ln(x) as f64 - want).abs() / want.abs().max(1.0);
            worst_ln = worst_ln.max(err);
            x *= 1.0173;
        }
        assert!(worst_ln < 3e-7, "ln err {worst_ln}");
        let mut worst_exp2 = 0.0f64;
        let mut x = -126.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp2();
            worst_exp2 = worst_exp2.max(((exp2_decay::<false>(x) as f64 - want) / want).abs());
            worst_exp2 = worst_exp2.max(((exp2_decay::<true>(x) as f64 - want) / want).abs());
            x += 0.00731;
        }
        assert!(worst_exp2 < 3e-7, "exp2 rel err {worst_exp2}");
        // the softplus range the SSM uses: 1 + e^-|x| in (1, 2]
        for i in 0..1000 {
            let u = 1.0 + i as f32 / 1000.0;
            assert!((ln(u) as f64 - (u as f64).ln()).abs() < 1e-7);
        }
    }
}
