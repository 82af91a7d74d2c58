// Fused Mamba kernels for ONNX Runtime's CUDA execution provider (custom ops in the
// `ai.mambatag` domain, see models/CONTRACT.md §7). Compiled to PTX by scripts/build-ptx.py
// (NVRTC, no CUDA headers needed); the PTX is committed next to this file and loaded with the
// CUDA driver API at session start, so neither nvcc nor NVRTC is needed at run time.
//
// Both kernels work for any T (hops per call): the step graph calls them with T = 1, the chunk
// graph with T = its chunk length. One thread owns one (batch row, channel) pair and walks the T
// hops in order, so the recurrent state stays in registers for the whole call: the state is
// read once and written once per call, however long T is.
//
// The arithmetic mirrors the standard-op graphs that models/export.py writes (same formulas,
// same order of the sums), so scores agree with them to float32 rounding.

#define MAX_K 8   // d_conv
#define MAX_N 16  // d_state
#define MAX_R 32  // dt_rank

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// Causal depthwise conv + SiLU.
//   xz    [B, T, 2E]  in_proj output; the conv reads channels [0, E)
//   state [B, K-1, E] the last K-1 inputs before this call
//   w     [K, E], bias [E]
//   xc    [B, T, E]   SiLU(conv)
//   next  [B, K-1, E] the last K-1 inputs after this call
// grid (ceil(E / blockDim.x), B)
extern "C" __global__ void mamba_conv(const float* __restrict__ xz, const float* __restrict__ state,
                                      const float* __restrict__ w, const float* __restrict__ bias,
                                      float* __restrict__ xc, float* __restrict__ next,
                                      int T, int E, int K) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    const long b = blockIdx.y;
    if (e >= E) return;
    // The window is right-aligned in MAX_K - 1 registers (static indices only, so it never
    // spills): win[MAX_K - 1 - (K - 1) + k] holds input k of the last K - 1; the unused front
    // slots hold 0 with weight 0, which adds exact zeros before the real terms (same sum order).
    const int o = MAX_K - K;
    float win[MAX_K - 1];
    float wk[MAX_K];
#pragma unroll
    for (int j = 0; j < MAX_K; j++) {
        const int k = j - o;
        if (j < MAX_K - 1) win[j] = (k >= 0) ? state[(b * (K - 1) + k) * E + e] : 0.0f;
        wk[j] = (k >= 0) ? w[k * E + e] : 0.0f;
    }
    const float bb = bias[e];
    for (int t = 0; t < T; t++) {
        const float x = xz[(b * T + t) * 2 * E + e];
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < MAX_K - 1; j++) acc += wk[j] * win[j];
        acc += wk[MAX_K - 1] * x;
        acc += bb;
#pragma unroll
        for (int j = 0; j < MAX_K - 2; j++) win[j] = win[j + 1];
        win[MAX_K - 2] = x;
        xc[(b * T + t) * E + e] = acc * sigmoidf_(acc);
    }
#pragma unroll
    for (int j = 0; j < MAX_K - 1; j++) {
        const int k = j - o;
        if (k >= 0) next[(b * (K - 1) + k) * E + e] = win[j];
    }
}

// Selective SSM over T hops, with dt_proj + softplus in front and the D skip + SiLU(z) gate
// behind:
//   dt   = softplus(dbc[:R] @ dt_w + dt_b)                  (per channel)
//   h'   = exp(dt * A) * h + B * (dt * x),   y = C . h'     (per channel, N states)
//   out  = (y + D * x) * SiLU(z)
//   xc [B, T, E], xz [B, T, 2E] (z = channels [E, 2E)), dbc [B, T, R + 2N] (dt_low, B, C),
//   dt_w [R, E], dt_b [E], A [N, E], D [E], h0 [B, N, E]  ->  out [B, T, E], hT [B, N, E]
// The hops are taken SSM_HOPS at a time: the block first loads the group's dbc rows (one
// contiguous run) and each thread its x and z for all of the group's hops, all loads in flight
// at once, then walks the group from shared memory (one barrier pair per group). The arithmetic
// per hop is that of the per-hop version, so are the results. (Also measured, 2026-11-29, and
// left out: computing the group's dt first, and exp2 with A pre-scaled by log2 e; no faster on
// the chunk graph and 8-20 % slower on the step graph at 1,024-10,240 streams.)
// grid (ceil(E / blockDim.x), B), dynamic shared memory 4 G (R + 2N + 2 blockDim.x) bytes with
// G = min(T, SSM_HOPS). (The loops over r < R and n < N leave early; predicated iterations
// instead timed the same, 2026-12-06, BENCHMARKS.md.)
#define SSM_HOPS 16
// The body is a template over dt_rank and d_state: 0 means "given at run time, at most MAX_R /
// MAX_N" (`mamba_ssm`); the default model's shape (R 8, N 16) has its own entry point,
// `mamba_ssm_r8n16`, whose loops unroll fully and whose dt_proj row takes 8 registers instead of
// MAX_R = 32 (more resident warps). Same arithmetic in the same order either way.
// A block walks its hops in groups of G = min(T, SSM_HOPS), and the host gives it shared memory
// for G hops: a one-hop step (T = 1) asks for 1/16 of what a chunk does, so shared memory does
// not limit the resident blocks there.
template <int RC>
__device__ __forceinline__ float ssm_dt(const float* row, const float* dw, float bias, int R) {
    constexpr int RR = RC ? RC : MAX_R;
    float s = 0.0f;
#pragma unroll
    for (int r = 0; r < RR; r++) {
        if (r >= R) break;
        s += row[r] * dw[r];
    }
    s += bias;
    return fmaxf(s, 0.0f) + logf(1.0f + expf(-fabsf(s)));
}

template <int RC, int NC>
__device__ __forceinline__ void ssm_body(const float* __restrict__ xc, const float* __restrict__ xz,
                                         const float* __restrict__ dbc, const float* __restrict__ dt_w,
                                         const float* __restrict__ dt_b, const float* __restrict__ A,
                                         const float* __restrict__ D, const float* __restrict__ h0,
                                         float* __restrict__ out, float* __restrict__ hT,
                                         int T, int E, int Nrt, int Rrt) {
    constexpr int NR = NC ? NC : MAX_N;
    constexpr int RR = RC ? RC : MAX_R;
    const int N = NC ? NC : Nrt, R = RC ? RC : Rrt;
    extern __shared__ float smem[];
    const int W = R + 2 * N;
    const int G = min(T, SSM_HOPS);
    const int bd = blockDim.x, tid = threadIdx.x;
    float* rows = smem;           // [G][W]    dbc of the group's hops
    float* xs = smem + G * W;     // [G][bd]   x
    float* zs = xs + G * bd;      // [G][bd]   z
    const int e = blockIdx.x * bd + tid;
    const long b = blockIdx.y;
    const bool live = e < E;
    float h[NR], a[NR], dw[RR];
    float bias = 0.0f, d = 0.0f;
    if (live) {
#pragma unroll
        for (int n = 0; n < NR; n++) {
            h[n] = (n < N) ? h0[(b * N + n) * E + e] : 0.0f;
            a[n] = (n < N) ? A[n * E + e] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < RR; r++) dw[r] = (r < R) ? dt_w[r * E + e] : 0.0f;
        bias = dt_b[e];
        d = D[e];
    }
    for (int t0 = 0; t0 < T; t0 += G) {
        const int hops = min(G, T - t0);
        __syncthreads();  // the previous group's rows are no longer read
        const float* src = dbc + (b * T + t0) * W;
        for (int i = tid; i < hops * W; i += bd) rows[i] = src[i];
        if (live) {
#pragma unroll
            for (int j = 0; j < SSM_HOPS; j++) {
                if (j < hops) {
                    const long ix = (b * T + t0 + j) * E + e;
                    xs[j * bd + tid] = xc[ix];
                    zs[j * bd + tid] = xz[(b * T + t0 + j) * 2 * E + E + e];
                }
            }
        }
        __syncthreads();
        if (!live) continue;
        for (int j = 0; j < hops; j++) {
            const float* row = rows + j * W;
            const float dt = ssm_dt<RC>(row, dw, bias, R);
            const float x = xs[j * bd + tid];
            const float dtx = dt * x;
            float y = 0.0f;
#pragma unroll
            for (int n = 0; n < NR; n++) {
                if (n >= N) break;
                h[n] = expf(dt * a[n]) * h[n] + row[R + n] * dtx;
                y += row[R + N + n] * h[n];
            }
            const float z = zs[j * bd + tid];
            out[(b * T + t0 + j) * E + e] = (y + x * d) * (z * sigmoidf_(z));
        }
    }
    if (live) {
#pragma unroll
        for (int n = 0; n < NR; n++) {
            if (n < N) hT[(b * N + n) * E + e] = h[n];
        }
    }
}

#define SSM_PARAMS                                                                                 \
    const float* __restrict__ xc, const float* __restrict__ xz, const float* __restrict__ dbc,     \
        const float* __restrict__ dt_w, const float* __restrict__ dt_b,                            \
        const float* __restrict__ A, const float* __restrict__ D, const float* __restrict__ h0,    \
        float* __restrict__ out, float* __restrict__ hT, int T, int E, int N, int R
extern "C" __global__ void mamba_ssm(SSM_PARAMS) {
    ssm_body<0, 0>(xc, xz, dbc, dt_w, dt_b, A, D, h0, out, hT, T, E, N, R);
}
// (Built with -DSSM_NO_SPECIAL for A/B timing: the same entry point running the generic body.)
// SSM_MIN_BLOCKS: resident 128-thread blocks per SM asked of the compiler, which caps the
// registers per thread to fit (8: 64 registers). Without a bound it took 127 registers, i.e. 4
// blocks and 25 % occupancy, stalled on shared-memory loads (Nsight Compute, H100, 2026-12-06);
// with 8 the chunk graph ran 9.7 % faster and the 10,240-stream step 8 % (6 and 10 were
// slower than 8; scripts/gpu/run-ptxab.sh, BENCHMARKS.md).
#ifndef SSM_MIN_BLOCKS
#define SSM_MIN_BLOCKS 8
#endif
extern "C" __global__ void __launch_bounds__(128, SSM_MIN_BLOCKS) mamba_ssm_r8n16(SSM_PARAMS) {
#ifdef SSM_NO_SPECIAL
    ssm_body<0, 0>(xc, xz, dbc, dt_w, dt_b, A, D, h0, out, hT, T, E, N, R);
#else
    ssm_body<8, 16>(xc, xz, dbc, dt_w, dt_b, A, D, h0, out, hT, T, E, N, R);
#endif
}

// Log-mel front end (CONTRACT.md §4) over T hops, in float64 like the standard graphs:
//   audio [B, S] with S = 240 + T * 160 (the carried history, then the new hops)
//   bands, wts: the op's `mel [257, M]` float64 filterbank (M <= 256) as its band table (below)
//   out   [B, T, M] float32: ln(mel^T |DFT512(hann400 * frame_t)|^2 + 1e-6)
// frame t = audio[b, t*160 : t*160 + 400]. One block of 256 threads per (F frames, g, b).
// The Hann window and the FFT twiddles are tables made once per module (`mamba_tables`, launched
// when the module is loaded); a block copies the twiddles to shared memory (a step's block the
// window too, and its bands' weights when they fit), with its bands' rows of the
// filterbank's band table (see below; a mel filterbank is triangles: a band reads ~10 weights
// instead of all 257). Its frames are transformed two at a time: frame t
// as the real part and frame t+1 as the imaginary part of one 512-point complex FFT (radix 2, its
// 9 stages in 3 passes of 3 through shared memory; a chunk's block transforms 4 pairs at once),
// whose spectrum Z splits into the two real spectra by symmetry:
//   |X_t[k]|^2 = ((Zr[k] + Zr[-k])^2 + (Zi[k] - Zi[-k])^2) / 4
//   |X_t+1[k]|^2 = ((Zi[k] + Zi[-k])^2 + (Zr[k] - Zr[-k])^2) / 4.
// The block computes bands [g*mb, (g+1)*mb) of the M, mb = ceil(M / G). The host picks F > 1
// when there are many frames (the set-up is then paid once per F frames) and G > 1 when there
// are few (several SMs share the work of one frame). Each band sums its bins in MEL_PARTS fixed
// ranges of MEL_BINS, added in order; the bins outside [lo, hi) have weight 0 and would add exact
// zeros, so skipping them changes nothing and the result depends on neither F nor G.
// The band table (made on the host from `mel [257, M]` once per op: cuda.rs `band_table`):
//   bands [3M + 1] int: lo[M], then hi[M], then off[M + 1]; band m's weights for bins [lo, hi)
//   are wts[off[m] .. off[m] + hi - lo) (interior zeros included), an empty band has lo = hi.
// A step's block copies its bands' weights into shared memory when they fit (MEL_W); a chunk's
// block, and a step's when they do not fit, reads them where they are (through L1); either way
// the same products are added in the same order.
// grid (ceil(T / F) * G, B), block 256
#define MEL_PARTS 8
#define MEL_BINS 33  // MEL_PARTS * MEL_BINS >= 257
#ifndef MEL_W  // filterbank weights a block keeps in shared memory (-D MEL_W=0: none, a test build
#define MEL_W 1024  // whose blocks all read them from global memory, as a larger filterbank's do)
#endif
__device__ double g_hann[400];
__device__ double g_tc[512];  // tw[half + j] = exp(-pi i j / half), j < half: the stage of span
__device__ double g_ts[512];  // `half` reads [half, 2 half), consecutive words for consecutive j

// The window and twiddle tables; one block of 512 threads, once per module load.
extern "C" __global__ void mamba_tables() {
    const int k = threadIdx.x;
    if (k < 400) g_hann[k] = 0.5 - 0.5 * cospi((double)k / 200.0);
    if (k >= 1 && k < 512) {
        const int half = 1 << (31 - __clz(k)), j = k - half;
        sincospi(-(double)j / (double)half, &g_ts[k], &g_tc[k]);
    }
}

// One radix-2 butterfly of the FFT: (a, c) <- (a + w c, a - w c), w = co + i s. The roundings
// are spelled out (which product is fused into an FMA), so the spectrum is the same bits
// whatever the compiler makes of the code around it.
__device__ __forceinline__ void fft_bfly(double& ar, double& ai, double& cr, double& ci, double co, double s) {
    const double tr = __dmul_rn(cr, co) - __dmul_rn(ci, s);
    const double ti = fma(cr, s, __dmul_rn(ci, co));
    cr = ar - tr;
    ci = ai - ti;
    ar = ar + tr;
    ai = ai + ti;
}
// Three radix-2 stages (spans h, 2h, 4h) on the 8 values v[m] = element a0 + m h of a group of
// 8h elements (a0 = the group's start + j, j < h); tw[half + j'] = exp(-pi i j' / half).
__device__ __forceinline__ void fft_pass(double (&vr)[8], double (&vi)[8], const double* tc, const double* ts,
                                         int h, int j) {
#pragma unroll
    for (int m = 0; m < 8; m += 2) fft_bfly(vr[m], vi[m], vr[m + 1], vi[m + 1], tc[h + j], ts[h + j]);
#pragma unroll
    for (int m = 0; m < 8; m++) {
        if ((m & 2) == 0) {
            const int k = 2 * h + j + (m & 1) * h;
            fft_bfly(vr[m], vi[m], vr[m + 2], vi[m + 2], tc[k], ts[k]);
        }
    }
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int k = 4 * h + j + m * h;
        fft_bfly(vr[m], vi[m], vr[m + 4], vi[m + 4], tc[k], ts[k]);
    }
}
// The FFT buffers hold element e at FFT_PAD(e) (a gap after every 8), so that the 16 lanes of a
// half-warp reading or writing 8-strided (pass 1) or 8-strided in groups of 64 (pass 2) elements
// hit 16 different shared-memory banks.
#define FFT_PAD(e) ((e) + ((e) >> 3))
#define FFT_LEN FFT_PAD(512)
__device__ __forceinline__ void fft_load(double (&vr)[8], double (&vi)[8], const double* re, const double* im,
                                         int a0, int h) {
#pragma unroll
    for (int m = 0; m < 8; m++) {
        vr[m] = re[FFT_PAD(a0 + m * h)];
        vi[m] = im[FFT_PAD(a0 + m * h)];
    }
}
__device__ __forceinline__ void fft_store(const double (&vr)[8], const double (&vi)[8], double* re, double* im,
                                          int a0, int h) {
#pragma unroll
    for (int m = 0; m < 8; m++) {
        re[FFT_PAD(a0 + m * h)] = vr[m];
        im[FFT_PAD(a0 + m * h)] = vi[m];
    }
}

// HIST (`mamba_logmel_step`, `MambaLogMelStep`): the row's H samples of history [B, H] come
// before its audio [B, S], as if concatenated, and block x = 0 of each row writes the last H
// samples of that concatenation to `hist_out`. Else (`mamba_logmel`, `MambaLogMel`): audio
// [B, S] holds the history; `hist`, `hist_out` and H are unused.
template <bool HIST>
__device__ __forceinline__ void logmel_rows(const float* __restrict__ audio, const int* __restrict__ bands,
                                            const double* __restrict__ wts,
                                            float* __restrict__ out, const float* __restrict__ hist,
                                            float* __restrict__ hist_out, int T, int S, int M, int G, int F,
                                            int H, int B, int RB) {
    // NP pairs of frames per round, one per 64 threads: a step (HIST) has one frame per row, a
    // chunk transforms 4 pairs (8 frames) at once on all 256 threads.
    constexpr int NP = HIST ? 1 : 4;
    // The FFT buffers, element e at FFT_PAD(e). A step ping-pongs between two (its pass 1 reads
    // the samples, 2 and 3 read buffer 1 and 0 and write 0 and 1: Z ends in buffer 1); a chunk's
    // pair p works in place in buffer p (each thread of a pass writes back exactly the 8
    // elements it read: Z ends in buffer p). The power spectra then overwrite Z in place: bin k
    // of the pair's first frame in re, of its second in im.
    __shared__ double re2[HIST ? 2 : NP][FFT_LEN];
    __shared__ double im2[HIST ? 2 : NP][FFT_LEN];
    auto zbuf = [](int q) -> int { return HIST ? 1 : q; };  // the buffer where pair q's Z ends
    __shared__ double tc[512];
    __shared__ double ts[512];
    // the window and the bands' weights: in shared memory for a step; a chunk's 4 pairs leave
    // no room under the 48 KB of static shared memory, so it reads them through the L1 cache
    __shared__ double hann_sh[HIST ? 400 : 1];
    __shared__ int lo[256];
    __shared__ int hi[256];
    __shared__ int off[256];  // band's first weight, relative to the block's first (w0)
    __shared__ double wsh[HIST && MEL_W > 0 ? MEL_W : 1];
    const int tb = blockIdx.x / G, g = blockIdx.x % G;
    const int mb = (M + G - 1) / G, m0 = g * mb, m1 = min(M, m0 + mb), nb = max(0, m1 - m0);
    // the block's bands' weights: wts[w0 .. w0 + nw), in shared memory if they fit
    const int w0 = bands[2 * M + min(m0, M)], nw = bands[2 * M + min(m0, M) + nb] - w0;
    const bool in_shared = HIST && nw <= MEL_W;
    if (HIST) {
        for (int n = threadIdx.x; n < 400; n += blockDim.x) hann_sh[n] = g_hann[n];
    }
    const double* hann = HIST ? hann_sh : g_hann;
    for (int k = threadIdx.x; k < 512; k += blockDim.x) {
        tc[k] = g_tc[k];
        ts[k] = g_ts[k];
    }
    for (int i = threadIdx.x; i < nb; i += blockDim.x) {
        lo[i] = bands[m0 + i];
        hi[i] = bands[M + m0 + i];
        off[i] = bands[2 * M + m0 + i] - w0;
    }
    if (in_shared) {
        for (int i = threadIdx.x; i < nw; i += blockDim.x) wsh[i] = wts[w0 + i];
    }
    const double* wb = in_shared ? wsh : wts + w0;
    // The block's rows [b0, b0 + RB) (RB = 1 unless T = 1: a step) and frames [t0, t1) of each
    // (its set-up above is paid once). Frames t0 + 2j and t0 + 2j + 1 of a row are a pair
    // (only a row's own frames share an FFT, so a row's spectra do not depend on other rows);
    // pair v of the block is pair v % PR of row b0 + v / PR, and a round takes NP pairs.
    const long b0 = (long)blockIdx.y * RB;
    const int rows = (int)max(0L, min((long)B, b0 + RB) - b0);
    const int t0 = tb * F, nt = max(0, min(T, t0 + F) - t0), PR = (nt + 1) / 2;
    // sample i of row b's (history ++ audio)
    auto smp = [&](long b, long i) -> float {
        if (HIST) return i < H ? hist[b * H + i] : audio[b * S + i - H];
        return audio[b * S + i];
    };
    if (HIST && blockIdx.x == 0) {
        for (int r = 0; r < rows; r++) {
            for (int k = threadIdx.x; k < H; k += blockDim.x) {
                hist_out[(b0 + r) * H + k] = smp(b0 + r, (long)T * 160 + k);
            }
        }
    }
    for (int v0 = 0; v0 < rows * PR; v0 += NP) {
        const int np = min(NP, rows * PR - v0);  // pairs in this round
        // pair q's row, first frame and whether it has a second
        auto pair_b = [&](int q) -> long { return b0 + (v0 + q) / PR; };
        auto pair_t = [&](int q) -> int { return t0 + 2 * ((v0 + q) % PR); };
        __syncthreads();  // set-up done / the previous round's spectra read
        // The FFT: the 9 radix-2 stages as 3 passes of 3 stages (spans 1-2-4, 8-16-32,
        // 64-128-256). In a pass, thread i of a pair's 64 holds in registers the 8 values that
        // one group of butterflies of those 3 stages reads and writes, so a pass needs one
        // barrier instead of three; the butterflies and their arithmetic are those of one stage
        // at a time. A step's block (HIST: one pair, few blocks; latency-bound) leaves 192
        // threads idle. Until session 17 a chunk ran one stage at a time on all 256 threads (9
        // barriers per pair, 4 shared-memory accesses per butterfly), since one pair per block
        // on 64 threads had been 2 % slower; 4 pairs per block keep the threads busy with 3
        // barriers per round. Either way the same butterflies with the same roundings on the
        // same pairs: the spectra are the same bits.
        const int p = threadIdx.x >> 6, i = threadIdx.x & 63;
        const bool busy = p < np;
        const long b = busy ? pair_b(p) : 0;
        const int t = busy ? pair_t(p) : 0;
        const bool two = t + 1 < t0 + nt;  // the pair has a second frame
        const long x = (long)t * 160;
        double* re_a = re2[zbuf(p)];  // pass 1's and 3's output
        double* im_a = im2[zbuf(p)];
        double* re_b = re2[HIST ? 0 : p];  // pass 2's output
        double* im_b = im2[HIST ? 0 : p];
        if (busy) {
            double vr[8], vi[8];
            // pass 1 reads the windowed samples: element 8i + m is sample rev9(8i + m)
#pragma unroll
            for (int m = 0; m < 8; m++) {
                const int n = __brev(8 * i + m) >> 23;
                vr[m] = (n < 400) ? (double)smp(b, x + n) * hann[n] : 0.0;
                vi[m] = (n < 400 && two) ? (double)smp(b, x + n + 160) * hann[n] : 0.0;
            }
            fft_pass(vr, vi, tc, ts, 1, 0);
            fft_store(vr, vi, re_a, im_a, 8 * i, 1);
        }
        __syncthreads();
        if (busy) {
            const int j = i & 7, a0 = ((i >> 3) << 6) + j;  // span 8: groups of 64
            double vr[8], vi[8];
            fft_load(vr, vi, re_a, im_a, a0, 8);
            fft_pass(vr, vi, tc, ts, 8, j);
            fft_store(vr, vi, re_b, im_b, a0, 8);
        }
        __syncthreads();
        if (busy) {  // span 64: one group of 512
            double vr[8], vi[8];
            fft_load(vr, vi, re_b, im_b, i, 64);
            fft_pass(vr, vi, tc, ts, 64, i);
            fft_store(vr, vi, re_a, im_a, i, 64);
        }
        __syncthreads();
        // Power spectra of bins 0..256 of both frames of each pair, in place: item (q, k) reads
        // Z[k] and Z[-k] of pair q and writes bin k, which no other item reads.
        for (int n = threadIdx.x; n < 257 * np; n += blockDim.x) {
            const int q = n / 257, k = n - 257 * q;
            double* zre = re2[zbuf(q)];
            double* zim = im2[zbuf(q)];
            const int pk = FFT_PAD(k), pq = FFT_PAD((512 - k) & 511);
            const double zr = zre[pk], zi = zim[pk], wr = zre[pq], wi = zim[pq];
            zre[pk] = ((zr + wr) * (zr + wr) + (zi - wi) * (zi - wi)) * 0.25;
            zim[pk] = ((zi + wi) * (zi + wi) + (zr - wr) * (zr - wr)) * 0.25;
        }
        __syncthreads();
        // item (f, m): band m of frame f & 1 of pair f >> 1
        for (int n = threadIdx.x; n < 2 * np * nb; n += blockDim.x) {
            const int f = n / nb, m = m0 + n - f * nb, q = f >> 1;
            const int tf = pair_t(q) + (f & 1);
            if (tf >= t0 + nt) continue;  // a pair's missing second frame
            const double* pw = (f & 1) ? im2[zbuf(q)] : re2[zbuf(q)];
            const int k0 = lo[m - m0], k1 = hi[m - m0];
            const double* w = wb + off[m - m0] - k0;  // w[k]: bin k's weight in band m
            double acc = 0.0, part = 0.0;
            int r = k0 / MEL_BINS;
            for (int k = k0; k < k1; k++) {
                if (k / MEL_BINS != r) {  // the next fixed range: its partial sum starts at 0
                    acc += part;
                    part = 0.0;
                    r = k / MEL_BINS;
                }
                part += pw[FFT_PAD(k)] * w[k];
            }
            acc += part;
            out[(pair_b(q) * T + tf) * M + m] = (float)log(acc + 1e-6);
        }
    }
}

// grid (ceil(T / F) * G, ceil(B / RB))
// 4 resident blocks per SM (its 48 KB of shared memory allow 4): 64 registers, no spills
// (ptxas 13.0.88, sm_90; 120 without the bound, which leaves room for only 2 blocks)
#ifndef LOGMEL_MIN_BLOCKS
#define LOGMEL_MIN_BLOCKS 4
#endif
extern "C" __global__ void __launch_bounds__(256, LOGMEL_MIN_BLOCKS) mamba_logmel(const float* audio, const int* bands, const double* wts, float* out,
                                        int T, int S, int M, int G, int F, int B, int RB) {
    logmel_rows<false>(audio, bands, wts, out, nullptr, nullptr, T, S, M, G, F, 0, B, RB);
}
// grid (G, ceil(B / RB)) for one hop: audio [B, S = 160] after hist [B, H = 240]
extern "C" __global__ void mamba_logmel_step(const float* audio, const int* bands, const double* wts,
                                             float* out, const float* hist, float* hist_out, int T, int S,
                                             int M, int G, int F, int H, int B, int RB) {
    logmel_rows<true>(audio, bands, wts, out, hist, hist_out, T, S, M, G, F, H, B, RB);
}

// ---------------------------------------------------------------------------------------------
// One whole residual Mamba block for one hop (`MambaLayer`, the layer step graph
// `step-layer.onnx`), as three launches (small batches: two, `mamba_dense1` + `layer_mixout1`
// at the end of this file; middle batches mix with `layer_mixh1` / `layer_mixh2`, also there):
//   layer_in:  u = RMSNorm(x) * norm_w;  xz = u @ in_w                 [B, 2E]
//   layer_mix: xc = SiLU(causal conv(xz[:, :E]) + conv_b)  (conv state [K-1, E])
//              dbc = xc @ x_w;  y = MambaSsm(xc, z = xz[:, E:], dbc, ...)   [B, E]
//   layer_out: x' = x + y @ out_w                                      [B, D]
// (xz and y are outputs of the op, so ONNX Runtime owns that memory.) The projections are
// spread over many blocks (column tiles), so at batch 1 the weights are read by many SMs at
// once instead of one. Each kernel takes RB rows per block: RB = 1 for small batches (lowest
// latency), 8 for larger ones (the weights are read once per RB rows; cuda.rs
// `projection_rows` picks). A row's arithmetic and rounding are the same whatever RB is, so a
// stream's scores do not depend on the batch it is in.

#define UNROLL 16
#define NORM_REGS 4  // layer_in: x values per lane held in registers (all of them up to d_model 128)
#define ROW_REGS 8   // layer_out: loads per thread in flight while filling shared memory
#define IN_COLS 64   // layer_in: 256 threads = 64 columns x 4 input splits
#define OUT_COLS 32  // layer_out: 256 threads = 32 columns x 8 input splits

// Column tile of a row-block matrix product: thread (s, c) sums in[r][i] * W[i][j0 + c] over
// its split of i (UNROLL weights loaded at a time) for the RB rows; part[s][r][c].
template <int RB, int UN = UNROLL>
__device__ __forceinline__ void tile_partial(const float* in, int is, const float* __restrict__ W,
                                             int nin, int nc, int j, int s, int splits,
                                             float* part, int cols, int c) {
    const int per = (nin + splits - 1) / splits;
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; r++) acc[r] = 0.0f;
    if (j < nc) {
        const int i1 = min(nin, (s + 1) * per);
        // UN loads in flight, then their multiply-adds in order
        int i = s * per;
        for (; i + UN <= i1; i += UN) {
            float w[UN];
#pragma unroll
            for (int u = 0; u < UN; u++) w[u] = W[(long)(i + u) * nc + j];
#pragma unroll
            for (int u = 0; u < UN; u++) {
#pragma unroll
                for (int r = 0; r < RB; r++) acc[r] += in[r * is + i + u] * w[u];
            }
        }
        if (i < i1) {  // the tail the same way (a plain loop would wait for each load in turn)
            float w[UN];
#pragma unroll
            for (int u = 0; u < UN; u++) w[u] = (i + u < i1) ? W[(long)(i + u) * nc + j] : 0.0f;
#pragma unroll
            for (int u = 0; u < UN; u++) {
                if (i + u < i1) {
#pragma unroll
                    for (int r = 0; r < RB; r++) acc[r] += in[r * is + i + u] * w[u];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RB; r++) part[(s * RB + r) * cols + c] = acc[r];
}

// grid (ceil(2E / IN_COLS), ceil(B / RB)), block 256, dynamic shared RB * D floats
template <int RB>
__device__ __forceinline__ void layer_in_rows(const float* __restrict__ x, const float* __restrict__ norm_w,
                                              const float* __restrict__ in_w, const float* __restrict__ eps_p,
                                              float* __restrict__ xz, int B, int Dm, int E2) {
    extern __shared__ float u[];  // [RB][Dm]
    __shared__ float part[4 * RB * IN_COLS];
    const long b0 = (long)blockIdx.y * RB;
    const int rows = (int)min((long)RB, B - b0);
    const float eps = *eps_p;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int r = warp; r < RB; r += warps) {
        if (r < rows) {
            const float* xr = x + (b0 + r) * Dm;
            // the row's loads (x and the norm weight, up to NORM_REGS per lane) issued first
            float xv[NORM_REGS], wv[NORM_REGS];
#pragma unroll
            for (int q = 0; q < NORM_REGS; q++) {
                const int i = lane + 32 * q;
                xv[q] = (i < Dm) ? xr[i] : 0.0f;
                wv[q] = (i < Dm) ? norm_w[i] : 0.0f;
            }
            float ss = 0.0f;
#pragma unroll
            for (int q = 0; q < NORM_REGS; q++)
                if (lane + 32 * q < Dm) ss += xv[q] * xv[q];
            for (int i = lane + 32 * NORM_REGS; i < Dm; i += 32) ss += xr[i] * xr[i];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            const float inv = 1.0f / sqrtf(ss / (float)Dm + eps);
#pragma unroll
            for (int q = 0; q < NORM_REGS; q++) {
                const int i = lane + 32 * q;
                if (i < Dm) u[r * Dm + i] = xv[q] * inv * wv[q];
            }
            for (int i = lane + 32 * NORM_REGS; i < Dm; i += 32) u[r * Dm + i] = xr[i] * inv * norm_w[i];
        } else {
            for (int i = lane; i < Dm; i += 32) u[r * Dm + i] = 0.0f;
        }
    }
    __syncthreads();
    const int c = threadIdx.x % IN_COLS, s = threadIdx.x / IN_COLS;
    const int j0 = blockIdx.x * IN_COLS;
    tile_partial<RB, (RB > 1 ? 2 * UNROLL : UNROLL)>(u, Dm, in_w, Dm, E2, j0 + c, s, 4, part, IN_COLS, c);
    __syncthreads();
    for (int k = threadIdx.x; k < rows * IN_COLS; k += blockDim.x) {
        const int r = k / IN_COLS, cc = k % IN_COLS, j = j0 + cc;
        if (j < E2) {
            const float* p = part + r * IN_COLS + cc;
            const int st = RB * IN_COLS;
            xz[(b0 + r) * E2 + j] = ((p[0] + p[st]) + p[2 * st]) + p[3 * st];
        }
    }
}

// grid (ceil(D / OUT_COLS), ceil(B / RB)), block 256, dynamic shared RB * E floats
template <int RB>
__device__ __forceinline__ void layer_out_rows(const float* __restrict__ x, const float* __restrict__ y,
                                               const float* __restrict__ out_w, float* __restrict__ x_out,
                                               int B, int Dm, int E) {
    extern __shared__ float ys[];  // [RB][E]
    __shared__ float part[8 * RB * OUT_COLS];
    const long b0 = (long)blockIdx.y * RB;
    const int rows = (int)min((long)RB, B - b0);
    const int j0 = blockIdx.x * OUT_COLS;
    // the residual of this thread's first output, fetched while the rest runs
    const int k0 = threadIdx.x, r0 = k0 / OUT_COLS, jj0 = j0 + k0 % OUT_COLS;
    const float x0 = (k0 < rows * OUT_COLS && jj0 < Dm) ? x[(b0 + r0) * Dm + jj0] : 0.0f;
    // the block's rows of y are contiguous: ROW_REGS loads per thread in flight per round
    const int n = rows * E;
    for (int k = threadIdx.x; k < RB * E; k += ROW_REGS * blockDim.x) {
        float v[ROW_REGS];
#pragma unroll
        for (int q = 0; q < ROW_REGS; q++) {
            const int kq = k + q * blockDim.x;
            v[q] = (kq < n) ? y[b0 * E + kq] : 0.0f;
        }
#pragma unroll
        for (int q = 0; q < ROW_REGS; q++) {
            const int kq = k + q * blockDim.x;
            if (kq < RB * E) ys[kq] = v[q];
        }
    }
    __syncthreads();
    const int c = threadIdx.x % OUT_COLS, s = threadIdx.x / OUT_COLS;
    tile_partial<RB, (RB > 1 ? 2 * UNROLL : UNROLL)>(ys, E, out_w, E, Dm, j0 + c, s, 8, part, OUT_COLS, c);
    __syncthreads();
    for (int k = threadIdx.x; k < rows * OUT_COLS; k += blockDim.x) {
        const int r = k / OUT_COLS, cc = k % OUT_COLS, j = j0 + cc;
        if (j < Dm) {
            const float* p = part + r * OUT_COLS + cc;
            const int st = RB * OUT_COLS;
            float v = 0.0f;
#pragma unroll
            for (int q = 0; q < 8; q++) v += p[q * st];
            const long o = (b0 + r) * Dm + j;
            x_out[o] = (k == k0 ? x0 : x[o]) + v;
        }
    }
}

// x_proj of RB rows inside one block: dbc[r][j] = sum_i xc[r][i] * W[i][j] (j < nc <= 256),
// the input axis split S = blockDim / nc ways, partial sums added in order.
template <int RB>
__device__ __forceinline__ void block_xproj(const float* xc, int E, const float* __restrict__ W, int nc,
                                            float* dbc, int rows, float* scratch) {
    const int S = blockDim.x / nc;
    const int s = threadIdx.x / nc, c = threadIdx.x % nc;
    if (s < S) tile_partial<RB>(xc, E, W, E, nc, c, s, S, scratch, nc, c);
    __syncthreads();
    for (int k = threadIdx.x; k < rows * nc; k += blockDim.x) {
        const int r = k / nc, cc = k % nc;
        float v = 0.0f;
        for (int q = 0; q < S; q++) v += scratch[(q * RB + r) * nc + cc];
        dbc[r * nc + cc] = v;
    }
    __syncthreads();
}

// One channel's SSM update, shared by layer_mix_rows and mixout_row: dt = softplus(dbc[0:R] .
// dw + dtb), h'[n] = exp(dt a[n]) h[n] + dbc[R + n] dt x (stored to h1 when `write`), and the
// return value y = sum_n dbc[R + N + n] h'[n]. dbc: the row's x_proj output (dt, B, C); dtb and
// x are read where the sums need them (the callers' load order, so their code is unchanged).
template <int NR>
__device__ __forceinline__ float ssm_channel(const float* dbc, const float (&dw)[NR], const float* dtb,
                                             const float* x,
                                             const float (&a)[MAX_N], const float (&hv)[MAX_N], int R, int N,
                                             bool write, float* __restrict__ h1, long b, int E, int e) {
    float s = 0.0f;
#pragma unroll
    for (int q = 0; q < NR; q++) {
        if (q < R) s += dbc[q] * dw[q];
    }
    s += *dtb;
    const float dt = fmaxf(s, 0.0f) + logf(1.0f + expf(-fabsf(s)));
    const float dtx = dt * *x;
    float y = 0.0f;
#pragma unroll
    for (int n = 0; n < MAX_N; n++) {
        if (n < N) {
            const float h = expf(dt * a[n]) * hv[n] + dbc[R + n] * dtx;
            if (write) h1[(b * N + n) * E + e] = h;
            y += dbc[R + N + n] * h;
        }
    }
    return y;
}

// grid (ceil(B / RB)), block 256, dynamic shared RB * (E + R + 2N) + 256 * RB floats
template <int RB>
__device__ __forceinline__ void layer_mix_rows(
    const float* __restrict__ xz, const float* __restrict__ conv0, const float* __restrict__ h0,
    const float* __restrict__ conv_w, const float* __restrict__ conv_b, const float* __restrict__ x_w,
    const float* __restrict__ dt_w, const float* __restrict__ dt_b, const float* __restrict__ A,
    const float* __restrict__ Dskip, float* __restrict__ y_out, float* __restrict__ conv1,
    float* __restrict__ h1, int B, int E, int N, int R, int K) {
    extern __shared__ float sh[];
    const int W = R + 2 * N;
    const long b0 = (long)blockIdx.x * RB;
    const int rows = (int)min((long)RB, B - b0);
    float* xc = sh;               // [RB][E]
    float* dbc = xc + RB * E;     // [RB][W]
    float* scratch = dbc + RB * W;  // [blockDim * RB]
    for (int k = threadIdx.x; k < RB * E; k += blockDim.x) {
        const int r = k / E, e = k % E;
        if (r >= rows) {
            xc[k] = 0.0f;
            continue;
        }
        const long b = b0 + r;
        float win[MAX_K - 1], wk[MAX_K - 1];
#pragma unroll
        for (int j = 0; j < MAX_K - 1; j++) {
            win[j] = (j < K - 1) ? conv0[(b * (K - 1) + j) * E + e] : 0.0f;
            wk[j] = (j < K - 1) ? conv_w[j * E + e] : 0.0f;
        }
        const float xv = xz[b * 2 * E + e];
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < MAX_K - 1; j++) {
            if (j < K - 1) {
                acc += wk[j] * win[j];
                if (j > 0) conv1[(b * (K - 1) + j - 1) * E + e] = win[j];
            }
        }
        acc += conv_w[(K - 1) * E + e] * xv;
        acc += conv_b[e];
        if (K > 1) conv1[(b * (K - 1) + K - 2) * E + e] = xv;
        xc[k] = acc * sigmoidf_(acc);
    }
    __syncthreads();
    block_xproj<RB>(xc, E, x_w, W, dbc, rows, scratch);
    for (int k = threadIdx.x; k < rows * E; k += blockDim.x) {
        const int r = k / E, e = k % E;
        const long b = b0 + r;
        const float* row = dbc + r * W;
        float dw[MAX_R], a[MAX_N], hv[MAX_N];
#pragma unroll
        for (int q = 0; q < MAX_R; q++) dw[q] = (q < R) ? dt_w[q * E + e] : 0.0f;
#pragma unroll
        for (int n = 0; n < MAX_N; n++) {
            a[n] = (n < N) ? A[n * E + e] : 0.0f;
            hv[n] = (n < N) ? h0[(b * N + n) * E + e] : 0.0f;
        }
        const float y = ssm_channel(row, dw, dt_b + e, &xc[r * E + e], a, hv, R, N, true, h1, b, E, e);
        const float xv = xc[r * E + e];
        const float z = xz[b * 2 * E + E + e];
        y_out[b * E + e] = (y + xv * Dskip[e]) * (z * sigmoidf_(z));
    }
}

extern "C" __global__ void layer_in1(const float* x, const float* norm_w, const float* in_w, const float* eps_p,
                                     float* xz, int B, int Dm, int E2) {
    layer_in_rows<1>(x, norm_w, in_w, eps_p, xz, B, Dm, E2);
}
#ifdef PROJ_MIN_BLOCKS  // A/B variant (-D PROJ_MIN_BLOCKS=3): the 8-row projections' occupancy
#define PROJ_BOUNDS __launch_bounds__(256, PROJ_MIN_BLOCKS)
#else
#define PROJ_BOUNDS
#endif
extern "C" __global__ void PROJ_BOUNDS layer_in8(const float* x, const float* norm_w, const float* in_w, const float* eps_p,
                                     float* xz, int B, int Dm, int E2) {
    layer_in_rows<8>(x, norm_w, in_w, eps_p, xz, B, Dm, E2);
}
extern "C" __global__ void layer_out1(const float* x, const float* y, const float* out_w, float* x_out,
                                      int B, int Dm, int E) {
    layer_out_rows<1>(x, y, out_w, x_out, B, Dm, E);
}
extern "C" __global__ void PROJ_BOUNDS layer_out8(const float* x, const float* y, const float* out_w, float* x_out,
                                      int B, int Dm, int E) {
    layer_out_rows<8>(x, y, out_w, x_out, B, Dm, E);
}
#define MIX_ENTRY(NAME, RB)                                                                       \
    extern "C" __global__ void NAME(const float* xz, const float* conv0, const float* h0,         \
                                    const float* conv_w, const float* conv_b, const float* x_w,   \
                                    const float* dt_w, const float* dt_b, const float* A,         \
                                    const float* Dskip, float* y_out, float* conv1, float* h1,    \
                                    int B, int E, int N, int R, int K) {                          \
        layer_mix_rows<RB>(xz, conv0, h0, conv_w, conv_b, x_w, dt_w, dt_b, A, Dskip, y_out,       \
                           conv1, h1, B, E, N, R, K);                                             \
    }
MIX_ENTRY(layer_mix1, 1)
MIX_ENTRY(layer_mix4, 4)

// ---------------------------------------------------------------------------------------------
// Small batches (a few blocks per row fill the SMs): `layer_mixout1` does layer_mix and
// layer_out of one row in one launch. Each of the row's ceil(D / OUT_COLS) blocks repeats the
// row's whole mix (conv, x_proj, SSM update: one block's latency-bound work, so repeating it
// costs no time) and then its OUT_COLS columns of out_proj + residual; block 0 writes the
// states and y. Every global load the block needs is issued first, into registers (they do not
// depend on one another), so the block waits for memory once instead of once per phase. The
// sums run in the same order as layer_mix_rows<1> / layer_out_rows<1>, so the results are the
// same bits. Limits (checked by the launcher): E <= 256 threads, K <= FAST_K, R <= FAST_R,
// N <= MAX_N, ceil(E / (256 / W)) <= FAST_XW, ceil(E / 8) <= FAST_OW.
#define FAST_K 4
#define FAST_R 16
#define FAST_XW 48
#define FAST_OW 32

// sum_u in[i0 + u] * w[u] over u < NW, i0 + u < i1, in order (w: weights held in registers)
template <int NW>
__device__ __forceinline__ float dot_held(const float* in, int i0, int i1, const float (&w)[NW]) {
    float acc = 0.0f;
#pragma unroll
    for (int u = 0; u < NW; u++) {
        if (i0 + u < i1) acc += in[i0 + u] * w[u];
    }
    return acc;
}

// grid (ceil(D / OUT_COLS), B), block 256
// OUT = false (`layer_mixh1`, grid (1, B)): the mix alone, for the three-launch path's middle
// batches (layer_out_rows follows); its loads are issued first as well.
template <bool OUT>
__device__ __forceinline__ void mixout_row(
    const float* __restrict__ xz, const float* __restrict__ conv0, const float* __restrict__ h0,
    const float* __restrict__ conv_w, const float* __restrict__ conv_b, const float* __restrict__ x_w,
    const float* __restrict__ dt_w, const float* __restrict__ dt_b, const float* __restrict__ A,
    const float* __restrict__ Dskip, const float* __restrict__ x, const float* __restrict__ out_w,
    float* __restrict__ y_out, float* __restrict__ conv1, float* __restrict__ h1, float* __restrict__ x_out,
    int B, int E, int N, int R, int K, int Dm) {
    __shared__ float xc[256];
    __shared__ float dbc[256];
    __shared__ float part[256];  // x_proj partial sums [S][W], then out_proj's [8][OUT_COLS]
    __shared__ float ys[256];
    const int tid = threadIdx.x;
    const long b = blockIdx.y;
    const bool lead = blockIdx.x == 0;
    const bool ch = tid < E;
    const int e = tid;
    const int W = R + 2 * N;
    // --- 1. all loads up front
    float win[FAST_K - 1], wk[FAST_K - 1], wl = 0.0f, xv = 0.0f, cb = 0.0f;
#pragma unroll
    for (int j = 0; j < FAST_K - 1; j++) {
        win[j] = (ch && j < K - 1) ? conv0[(b * (K - 1) + j) * E + e] : 0.0f;
        wk[j] = (ch && j < K - 1) ? conv_w[j * E + e] : 0.0f;
    }
    if (ch) {
        wl = conv_w[(K - 1) * E + e];
        xv = xz[b * 2 * E + e];
        cb = conv_b[e];
    }
    const int S = 256 / W;
    const int s = tid / W, c = tid % W;
    const int per = (E + S - 1) / S;
    const int i0 = s * per, i1 = min(E, i0 + per);
    float xw[FAST_XW];
#pragma unroll
    for (int u = 0; u < FAST_XW; u++) xw[u] = (s < S && i0 + u < i1) ? x_w[(long)(i0 + u) * W + c] : 0.0f;
    float dw[FAST_R], a[MAX_N], hv[MAX_N], dtb = 0.0f, dsk = 0.0f, z = 0.0f;
#pragma unroll
    for (int q = 0; q < FAST_R; q++) dw[q] = (ch && q < R) ? dt_w[q * E + e] : 0.0f;
#pragma unroll
    for (int n = 0; n < MAX_N; n++) {
        a[n] = (ch && n < N) ? A[n * E + e] : 0.0f;
        hv[n] = (ch && n < N) ? h0[(b * N + n) * E + e] : 0.0f;
    }
    if (ch) {
        dtb = dt_b[e];
        dsk = Dskip[e];
        z = xz[b * 2 * E + E + e];
    }
    const int oc = tid % OUT_COLS, os = tid / OUT_COLS;  // 8 splits of the input axis
    const int j = blockIdx.x * OUT_COLS + oc;
    const int oper = (E + 7) / 8, o0 = os * oper, o1 = min(E, o0 + oper);
    float ow[FAST_OW];
#pragma unroll
    for (int u = 0; u < FAST_OW; u++) ow[u] = (OUT && j < Dm && o0 + u < o1) ? out_w[(long)(o0 + u) * Dm + j] : 0.0f;
    const float xres = (OUT && tid < OUT_COLS && j < Dm) ? x[b * Dm + j] : 0.0f;
    // --- 2. conv + SiLU
    if (ch) {
        float acc = 0.0f;
#pragma unroll
        for (int q = 0; q < FAST_K - 1; q++) {
            if (q < K - 1) {
                acc += wk[q] * win[q];
                if (lead && q > 0) conv1[(b * (K - 1) + q - 1) * E + e] = win[q];
            }
        }
        acc += wl * xv;
        acc += cb;
        if (lead && K > 1) conv1[(b * (K - 1) + K - 2) * E + e] = xv;
        xc[e] = acc * sigmoidf_(acc);
    }
    __syncthreads();
    // --- 3. x_proj: dbc = xc @ x_w
    if (s < S) part[s * W + c] = dot_held(xc, i0, i1, xw);
    __syncthreads();
    if (tid < W) {
        float v = 0.0f;
        for (int q = 0; q < S; q++) v += part[q * W + tid];
        dbc[tid] = v;
    }
    __syncthreads();
    // --- 4. dt, the state update, the D skip and the gate
    if (ch) {
        const float y = ssm_channel(dbc, dw, &dtb, &xc[e], a, hv, R, N, lead, h1, b, E, e);
        const float xe = xc[e];
        const float yv = (y + xe * dsk) * (z * sigmoidf_(z));
        if (OUT) ys[e] = yv;
        if (lead) y_out[b * E + e] = yv;
    }
    if (!OUT) return;
    __syncthreads();
    // --- 5. out_proj columns + residual
    part[os * OUT_COLS + oc] = dot_held(ys, o0, o1, ow);
    __syncthreads();
    if (tid < OUT_COLS && j < Dm) {
        float v = 0.0f;
#pragma unroll
        for (int q = 0; q < 8; q++) v += part[q * OUT_COLS + tid];
        x_out[b * Dm + j] = xres + v;
    }
}
// The trailing arguments are the launch bounds. `layer_mixh1`'s (256 threads) let it take 182
// registers (ptxas 13.0, sm_90): one block per SM, so a batch above the SM count runs in two
// waves. `layer_mixh2` asks for 2 blocks per SM (128 registers, 8 bytes spilled): the same
// code and sums for those batches.
#define MIXOUT_ENTRY(NAME, OUT, ...)                                                              \
    extern "C" __global__ void __launch_bounds__(__VA_ARGS__) NAME(                                  \
        const float* __restrict__ xz, const float* __restrict__ conv0, const float* __restrict__ h0,  \
        const float* __restrict__ conv_w, const float* __restrict__ conv_b,                          \
        const float* __restrict__ x_w, const float* __restrict__ dt_w, const float* __restrict__ dt_b, \
        const float* __restrict__ A, const float* __restrict__ Dskip, const float* __restrict__ x,    \
        const float* __restrict__ out_w, float* __restrict__ y_out, float* __restrict__ conv1,        \
        float* __restrict__ h1, float* __restrict__ x_out, int B, int E, int N, int R, int K, int Dm) { \
        mixout_row<OUT>(xz, conv0, h0, conv_w, conv_b, x_w, dt_w, dt_b, A, Dskip, x, out_w, y_out,    \
                        conv1, h1, x_out, B, E, N, R, K, Dm);                                         \
    }
MIXOUT_ENTRY(layer_mixout1, true, 256)
MIXOUT_ENTRY(layer_mixh1, false, 256)
MIXOUT_ENTRY(layer_mixh2, false, 256, 2)

// One row of a small dense layer per block row, with the same up-front loads: `out = act(u @ w +
// b)` for `u = x` or `u = RMSNorm(x) · norm_w` (norm_w not null); act = sigmoid when `sig`, b may
// be null. It is `MambaLayer`'s in_proj for small batches (norm, no bias: the same sums in the
// same order as layer_in_rows<1>, so the same bits) and `MambaEmbed` / `MambaHead`. The block's
// first FAST_IW weights per thread go into registers before the norm waits for x.
#define FAST_IW 32

// grid (ceil(O / IN_COLS), B), block 256 (IN_COLS columns x 4 input splits), dynamic shared I floats
extern "C" __global__ void __launch_bounds__(256) mamba_dense1(
    const float* __restrict__ x, const float* __restrict__ norm_w, const float* __restrict__ eps_p,
    const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ out,
    int B, int I, int O, int sig) {
    extern __shared__ float du[];  // [I]
    __shared__ float part[4 * IN_COLS];
    const int tid = threadIdx.x, lane = tid & 31;
    const long b = blockIdx.y;
    const int c = tid % IN_COLS, s = tid / IN_COLS;
    const int j = blockIdx.x * IN_COLS + c;
    const int per = (I + 3) / 4, i0 = s * per, i1 = min(I, i0 + per);
    float wr[FAST_IW];
#pragma unroll
    for (int q = 0; q < FAST_IW; q++) wr[q] = (j < O && i0 + q < i1) ? w[(long)(i0 + q) * O + j] : 0.0f;
    const float* xr = x + b * I;
    if (norm_w == nullptr) {
        for (int i = tid; i < I; i += blockDim.x) du[i] = xr[i];
    } else if (tid < 32) {
        const float eps = *eps_p;
        float ss = 0.0f;
        for (int i = lane; i < I; i += 32) ss += xr[i] * xr[i];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float inv = 1.0f / sqrtf(ss / (float)I + eps);
        for (int i = lane; i < I; i += 32) du[i] = xr[i] * inv * norm_w[i];
    }
    __syncthreads();
    float acc = dot_held(du, i0, i1, wr);
    for (int i = i0 + FAST_IW; i < i1; i++) acc += du[i] * ((j < O) ? w[(long)i * O + j] : 0.0f);
    part[s * IN_COLS + c] = acc;
    __syncthreads();
    if (tid < IN_COLS && j < O) {
        const float* p = part + tid;
        float v = ((p[0] + p[IN_COLS]) + p[2 * IN_COLS]) + p[3 * IN_COLS];
        if (bias != nullptr) v += bias[j];
        if (sig) v = sigmoidf_(v);
        out[b * O + j] = v;
    }
}
