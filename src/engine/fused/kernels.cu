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
// grid (ceil(E / blockDim.x), B), dynamic shared memory (R + 2N) floats
extern "C" __global__ void mamba_ssm(const float* __restrict__ xc, const float* __restrict__ xz,
                                     const float* __restrict__ dbc, const float* __restrict__ dt_w,
                                     const float* __restrict__ dt_b, const float* __restrict__ A,
                                     const float* __restrict__ D, const float* __restrict__ h0,
                                     float* __restrict__ out, float* __restrict__ hT,
                                     int T, int E, int N, int R) {
    extern __shared__ float row[];  // dbc of the current hop
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    const long b = blockIdx.y;
    const bool live = e < E;
    const int W = R + 2 * N;
    float h[MAX_N], a[MAX_N], dw[MAX_R];
    float bias = 0.0f, d = 0.0f;
    if (live) {
#pragma unroll
        for (int n = 0; n < MAX_N; n++) {
            h[n] = (n < N) ? h0[(b * N + n) * E + e] : 0.0f;
            a[n] = (n < N) ? A[n * E + e] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < MAX_R; r++) dw[r] = (r < R) ? dt_w[r * E + e] : 0.0f;
        bias = dt_b[e];
        d = D[e];
    }
    for (int t = 0; t < T; t++) {
        __syncthreads();
        for (int i = threadIdx.x; i < W; i += blockDim.x) row[i] = dbc[(b * T + t) * W + i];
        __syncthreads();
        if (!live) continue;
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < MAX_R; r++) {
            if (r < R) s += row[r] * dw[r];
        }
        s += bias;
        const float dt = fmaxf(s, 0.0f) + logf(1.0f + expf(-fabsf(s)));
        const long ix = (b * T + t) * E + e;
        const float x = xc[ix];
        const float dtx = dt * x;
        float y = 0.0f;
#pragma unroll
        for (int n = 0; n < MAX_N; n++) {
            if (n < N) {
                h[n] = expf(dt * a[n]) * h[n] + row[R + n] * dtx;
                y += row[R + N + n] * h[n];
            }
        }
        const float z = xz[(b * T + t) * 2 * E + E + e];
        out[ix] = (y + x * d) * (z * sigmoidf_(z));
    }
    if (live) {
#pragma unroll
        for (int n = 0; n < MAX_N; n++) {
            if (n < N) hT[(b * N + n) * E + e] = h[n];
        }
    }
}

// Log-mel front end (CONTRACT.md §4) over T hops, in float64 like the standard graphs:
//   audio [B, S] with S = 240 + T * 160 (the carried history, then the new hops)
//   mel   [257, M] float64 mel filterbank (M <= 256)
//   out   [B, T, M] float32: ln(mel^T |DFT512(hann400 * frame_t)|^2 + 1e-6)
// frame t = audio[b, t*160 : t*160 + 400]. One block of 256 threads per (t, b): the frame is
// windowed into shared memory in bit-reversed order and transformed by a radix-2 complex FFT.
// grid (T, B), block 256
extern "C" __global__ void mamba_logmel(const float* __restrict__ audio, const double* __restrict__ mel,
                                        float* __restrict__ out, int T, int S, int M) {
    __shared__ double re[512];
    __shared__ double im[512];
    const int t = blockIdx.x;
    const long b = blockIdx.y;
    const float* x = audio + b * S + (long)t * 160;
    for (int n = threadIdx.x; n < 512; n += blockDim.x) {
        const int r = __brev(n) >> 23;  // 9-bit reversal
        double v = 0.0;
        if (n < 400) v = (double)x[n] * (0.5 - 0.5 * cospi((double)n / 200.0));
        re[r] = v;
        im[r] = 0.0;
    }
    __syncthreads();
    for (int half = 1; half < 512; half <<= 1) {
        const int i = threadIdx.x;  // one butterfly per thread: 256 per stage
        const int j = i % half;
        const int a = (i / half) * 2 * half + j;
        const int c = a + half;
        double s, co;
        sincospi(-(double)j / (double)half, &s, &co);
        const double tr = re[c] * co - im[c] * s;
        const double ti = re[c] * s + im[c] * co;
        const double ar = re[a], ai = im[a];
        __syncthreads();
        re[a] = ar + tr;
        im[a] = ai + ti;
        re[c] = ar - tr;
        im[c] = ai - ti;
        __syncthreads();
    }
    // power spectrum of bins 0..256 into re[]
    for (int k = threadIdx.x; k < 257; k += blockDim.x) re[k] = re[k] * re[k] + im[k] * im[k];
    __syncthreads();
    for (int m = threadIdx.x; m < M; m += blockDim.x) {
        double acc = 0.0;
        for (int k = 0; k < 257; k++) acc += re[k] * mel[k * M + m];
        out[(b * T + t) * M + m] = (float)log(acc + 1e-6);
    }
}
