/* Weight-only int8 linear layer for x86-64 CPUs with AVX512-BF16: y = x W^T, W = q * scale.
 *
 *   x      bf16  [M, K]  row-major (the layer input, M = tokens)
 *   q      int8  [N, K]  row-major (the prepared-weights cache's layout, unchanged)
 *   scale  bf16  [N]     one symmetric scale per output row
 *   y      fp32  [M, N]  y[m, n] = scale[n] * sum_k x[m, k] * q[n, k]
 *
 * int8 values are exact in bf16 (8 significant bits), so each 32 weights of a row are widened to
 * bf16 once (int8 -> int32 -> fp32 -> bf16, all exact) and multiplied with up to 12 input rows by
 * VDPBF16PS (products exact, fp32 accumulation): the conversion is paid once per weight and per
 * block of 12 rows, not once per row. Each output is one dot product accumulated in the same order
 * whatever M is, so a row's result does not depend on the other rows of the batch.
 *
 * Output rows are split between `threads` OpenMP threads. Imported after torch, this module's
 * libgomp.so.1 is the one torch loaded (same soname), so the kernel runs on PyTorch's own thread
 * pool: a private pool would compete with PyTorch's workers, which spin for a while after each
 * operation (measured: twice the time with POSIX threads of its own).
 * The Python wrapper (pneumoview/inference/quant_cpu.py) checks dtypes, shapes, contiguity,
 * K % 32 == 0 and available() before passing data pointers; here only the sizes and the
 * processor are checked again.
 *
 * Built by setup.py as an optional extension: where it does not compile (no C compiler, MSVC,
 * another architecture), or the processor lacks the instructions, torch._weight_int8pack_mm runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>

#define ROWS 12 /* input rows per block: 12 x 2 accumulators + 2 weight registers of 32 */
#define TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

TARGET static inline __m512bh widen(const int8_t *p) {
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
    return _mm512_cvtne2ps_pbh(hi, lo); /* [lo 16, hi 16]: the weights' own order */
}

static inline float bf16_to_float(uint16_t v) {
    union { uint32_t u; float f; } c = {(uint32_t)v << 16};
    return c.f;
}

/* `rows` (<= ROWS) input rows times `cols` (1 or 2) weight rows starting at n. */
TARGET __attribute__((always_inline)) static inline void block(const uint16_t *x, const int8_t *q,
                                                               const uint16_t *scale, float *y, int rows,
                                                               int cols, int K, int N, int n) {
    __m512 acc[ROWS][2];
    for (int m = 0; m < rows; m++)
        for (int j = 0; j < cols; j++) acc[m][j] = _mm512_setzero_ps();
    /* The next rows' weights, one cache line per 64 weights ahead of use: a row (K bytes) is a page
       or two, so the hardware prefetcher alone would restart on every row and leave DRAM idle. */
    const int8_t *next = q + (size_t)(n + 2 * cols <= N ? n + cols : n) * K;
    for (int k = 0; k < K; k += 32) {
        if ((k & 63) == 0)
            for (int j = 0; j < cols; j++) _mm_prefetch((const char *)(next + (size_t)j * K + k), _MM_HINT_T0);
        __m512bh w[2];
        for (int j = 0; j < cols; j++) w[j] = widen(q + (size_t)(n + j) * K + k);
        for (int m = 0; m < rows; m++) {
            __m512bh a = (__m512bh)_mm512_loadu_si512((const void *)(x + (size_t)m * K + k));
            for (int j = 0; j < cols; j++) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], a, w[j]);
        }
    }
    for (int m = 0; m < rows; m++)
        for (int j = 0; j < cols; j++)
            y[(size_t)m * N + n + j] = _mm512_reduce_add_ps(acc[m][j]) * bf16_to_float(scale[n + j]);
}

/* Row and column counts as constants, so that each case is unrolled into registers. */
#define CASE2(r)                                    \
    case r:                                         \
        block(xb, q, scale, yb, r, 2, K, N, n);     \
        break;
#define CASE1(r)                                    \
    case r:                                         \
        block(xb, q, scale, yb, r, 1, K, N, n);     \
        break;

typedef struct {
    const uint16_t *x;
    const int8_t *q;
    const uint16_t *scale;
    float *y;
    int M, K, N, first, last; /* output rows [first, last) */
} Share;

/* Weight rows outside, input rows inside: a batch of more than 12 rows reads each weight row from
   memory once (then from L1 for the next 12 rows), not once per 12 rows. */
TARGET static void run_share(const Share *s) {
    const int8_t *q = s->q;
    const uint16_t *scale = s->scale;
    int K = s->K, N = s->N;
    for (int n = s->first; n < s->last; n += 2) {
        int cols = s->last - n >= 2 ? 2 : 1;
        for (int m0 = 0; m0 < s->M; m0 += ROWS) {
            int rows = s->M - m0 < ROWS ? s->M - m0 : ROWS;
            const uint16_t *xb = s->x + (size_t)m0 * K;
            float *yb = s->y + (size_t)m0 * N;
            if (cols == 2) {
                switch (rows) {
                    CASE2(1) CASE2(2) CASE2(3) CASE2(4) CASE2(5) CASE2(6)
                    CASE2(7) CASE2(8) CASE2(9) CASE2(10) CASE2(11) CASE2(12)
                }
            } else {
                switch (rows) {
                    CASE1(1) CASE1(2) CASE1(3) CASE1(4) CASE1(5) CASE1(6)
                    CASE1(7) CASE1(8) CASE1(9) CASE1(10) CASE1(11) CASE1(12)
                }
            }
        }
    }
}

static int cpu_has_kernel(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

static PyObject *available(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(cpu_has_kernel());
}

static PyObject *linear(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, q, scale, y;
    int M, K, N, threads;
    if (!PyArg_ParseTuple(args, "KKKKiiii", &x, &q, &scale, &y, &M, &K, &N, &threads)) return NULL;
    if (M < 1 || N < 1 || K < 32 || K % 32 || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "int8 kernel: M, N, threads >= 1 and K a positive multiple of 32");
        return NULL;
    }
    if (!cpu_has_kernel()) {
        PyErr_SetString(PyExc_RuntimeError, "int8 kernel: this processor lacks AVX512-BF16");
        return NULL;
    }
    if (threads > N) threads = N;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), team = omp_get_num_threads();
        Share s = {(const uint16_t *)(uintptr_t)x, (const int8_t *)(uintptr_t)q,
                   (const uint16_t *)(uintptr_t)scale, (float *)(uintptr_t)y, M, K, N,
                   (int)((long long)N * t / team), (int)((long long)N * (t + 1) / team)};
        run_share(&s);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "True when this processor has the kernel's instructions (AVX512-BF16)."},
    {"linear", linear, METH_VARARGS,
     "linear(x, q, scale, y, M, K, N, threads): y fp32 [M, N] = x bf16 [M, K] @ (q int8 [N, K] * scale bf16 [N])^T,"
     " given data pointers; checked by pneumoview.inference.quant_cpu."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_int8_cpu", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__int8_cpu(void) { return PyModule_Create(&module); }
