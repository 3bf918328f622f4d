/* PowerSGD's low-rank codec (ALGORITHMS.md §8): one step of power iteration from a random
 * start turns a rows x cols matrix M into P (rows x r') and Q (cols x r'), with
 * r' = min(rows, cols, rank), and P Q^T approximates M.
 *
 * Standalone, one rank at a time (the kernel bench, the registry test), encode is
 *   Q0 ~ N(0,1) from the stream key, orthogonalised;  P = orth(M Q0);  Q = M^T P
 * and decode adds P Q^T. Inside the engine the layer runs through the low-rank protocol
 * instead (collectives/powersgd_lowrank.c), which allreduces P before orthogonalising it and
 * Q after, and keeps Q between calls; it uses the linear algebra below, not encode/decode.
 *
 * Wire format (host byte order): uint32 rows | uint32 cols | uint32 r' | float P[rows*r'] |
 * float Q[cols*r'], both factors row-major. The codec views its input as ctx's rows x cols,
 * or as count x 1 when ctx is NULL or its shape does not hold count elements; decode
 * accepts any shape of count elements with the r' the parameters give it. */
#include <math.h>
#include <string.h>

#include "powersgd.h"
#include "rng.h"
#include "simd.h"

#if SIMD_X86
#include <immintrin.h>
#endif

const param_def_t powersgd_params[POWERSGD_N_PARAMS] = {
    {"rank", 4.0, 1.0, 1024.0, 0, 1, NULL},
    {"start", 0.0, 0.0, 1e15, 0, 1, NULL},
    {"min_rate", 2.0, 1.0, 1e9, 0, 0, NULL},
    {"warm_start", 1.0, 0.0, 1.0, 0, 1, NULL},
    {"seed", 0.0, 0.0, 4294967295.0, 0, 1, NULL},
};

size_t powersgd_rank(const double *p, size_t rows, size_t cols)
{
    size_t r = (size_t)p[POWERSGD_RANK];
    if (rows < r) r = rows;
    if (cols < r) r = cols;
    return r;
}

/* ---- The linear algebra ------------------------------------------------------------------
 *
 * Every sum is a chain of fused multiply-adds in float, s = fmaf(a, b, s) from +0.0f, in the
 * order powersgd.h documents (M Q: eight chains per sum, then a fixed tree). The AVX2
 * kernels never reorder a chain: lanes hold independent chains, and several vectors of them
 * run at once so that the FMA's latency is hidden behind the others. A vector FMA rounds
 * once, as fmaf does, so lane for lane they compute the scalar loops' bits.
 *
 *   M Q     lanes are the 8 chains (j mod 8) of one row and rank-column. A block of
 *           POWERSGD_ROWS rows runs over slices of columns with the slice of Q transposed
 *           in acc, so that a row's 8 columns meet 8 consecutive Q values of one
 *           rank-column; 2 rows x 4 rank-columns keep 8 chains going in registers.
 *   M^T P   lanes are 8 columns of M; a tile of 16 columns times up to 4 rank-columns keeps
 *           its sums in registers over 8 rows, and in acc (a block of columns, in L1) down
 *           all n rows, so that each block streams its slice of M once.
 *   P Q^T   lanes are 8 columns of the output; a tile of 32 columns times 2 rows runs over
 *           the rank with a block of Q transposed in acc.
 *
 * The scalar loops are the reference (TERSE_SIMD=scalar, CPUs without AVX2, the tests'
 * other side): the AVX2 ones must match them bit for bit. */

/* The chains of one M Q sum, and how they are added up at the end. */
#define POWERSGD_CHAINS 8
static float chains_total(const float s[POWERSGD_CHAINS])
{
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* acc, in floats, after up to 7 that align it to 32 bytes:
 *   block: POWERSGD_BLOCK floats (32 KiB), or 16 per rank-column when the rank is too large
 *          for that: M Q's and P Q^T's slice of Q transposed, M^T P's sums of a block of
 *          columns;
 *   rows:  M Q's chains of a block of rows, POWERSGD_ROWS x r x 8. */
#define POWERSGD_BLOCK 16384
#define POWERSGD_ROWS 32

static size_t block_floats(size_t r) { return 16 * r > POWERSGD_BLOCK ? 16 * r : POWERSGD_BLOCK; }

size_t powersgd_acc_floats(size_t r)
{
    return 7 + block_floats(r) + POWERSGD_ROWS * POWERSGD_CHAINS * r;
}

/* Columns per block of a k-major block of r rank-columns: a multiple of 8, at least 8. */
static size_t block_cols(size_t r) { return block_floats(r) / r / 8 * 8; }

static void mul_scalar(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                       float *restrict P, float *restrict acc)
{
    for (size_t i = 0; i < n; i++) {
        const float *row = M + i * m;
        for (size_t k = 0; k < r; k++) {
            float s[POWERSGD_CHAINS] = {0};
            for (size_t j = 0; j < m; j++) s[j % POWERSGD_CHAINS] = fmaf(row[j], Q[j * r + k], s[j % POWERSGD_CHAINS]);
            P[i * r + k] = chains_total(s);
        }
    }
    (void)acc;
}

static void mul_t_scalar(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                         float *restrict Q, float *restrict acc)
{
    /* a block of b columns of M: its b x r sums run down all n rows, reading each row's
     * b contiguous floats, so M is streamed once however many blocks there are */
    const size_t b = block_cols(r);
    for (size_t j0 = 0; j0 < m; j0 += b) {
        const size_t w = m - j0 < b ? m - j0 : b;
        for (size_t t = 0; t < w * r; t++) acc[t] = 0.0f;
        for (size_t i = 0; i < n; i++) {
            const float *row = M + i * m + j0, *p = P + i * r;
            for (size_t j = 0; j < w; j++)
                for (size_t k = 0; k < r; k++) acc[j * r + k] = fmaf(row[j], p[k], acc[j * r + k]);
        }
        memcpy(Q + j0 * r, acc, w * r * sizeof *acc);
    }
}

static void outer_scalar(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                         float *restrict A, int add)
{
    for (size_t i = 0; i < n; i++) {
        const float *p = P + i * r;
        float *a = A + i * m;
        for (size_t j = 0; j < m; j++) {
            const float *q = Q + j * r;
            float s = 0.0f;
            for (size_t k = 0; k < r; k++) s = fmaf(p[k], q[k], s);
            if (add)
                a[j] += s;
            else
                a[j] = s;
        }
    }
}

#if SIMD_X86
/* The tiles take their shape as constants so that, inlined, their arrays of vectors become
 * registers and their inner loops unroll. */
#define POWERSGD_TILE SIMD_AVX2_FN static inline __attribute__((always_inline))
/* Rows of M per load and store of M^T P's sums. */
#define POWERSGD_MT_ROWS 8
/* P Q^T asks for the rows it will update this many rows ahead: a column block reads and
 * writes each row in one short slice, too short for the hardware prefetcher to catch. */
#define POWERSGD_AHEAD 4
/* M Q asks for the columns it will read this many floats ahead in each of its rows. */
#define POWERSGD_MQ_AHEAD 256

static float *aligned_block(float *acc) { return (float *)(((uintptr_t)acc + 31) & ~(uintptr_t)31); }

/* The first n lanes of a float mask (n <= 8). */
POWERSGD_TILE __m256i lanes_below(size_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Q's columns j0 .. j0+len-1 transposed, k-major, w apart: qt[k * w + j] = Q[j0 + j, k]. */
static void transpose_slice(const float *Q, size_t j0, size_t len, size_t r, float *qt, size_t w)
{
    for (size_t j = 0; j < len; j++)
        for (size_t k = 0; k < r; k++) qt[k * w + j] = Q[(j0 + j) * r + k];
}

/* M Q on R rows (x: at column j0, m apart) over len columns (a multiple of 8, or the last
 * slice: then mask covers its last group) for K rank-columns of the slice of Q^T qt (w
 * apart): s holds the chains, 8 per rank-column, a row's rs floats apart. */
POWERSGD_TILE void mul_tile(const float *x, size_t m, size_t len, const float *qt, size_t w, float *s, size_t rs,
                            __m256i mask, const int R, const int K)
{
    __m256 a[8];
    for (int g = 0; g < R; g++)
        for (int k = 0; k < K; k++) a[g * K + k] = _mm256_load_ps(s + g * rs + 8 * k);
    size_t j = 0;
    for (; j + 8 <= len; j += 8) {
        if (j % 16 == 0)
            for (int g = 0; g < R; g++) _mm_prefetch((const char *)(x + g * m + j + POWERSGD_MQ_AHEAD), _MM_HINT_T0);
        for (int k = 0; k < K; k++) {
            const __m256 q = _mm256_load_ps(qt + k * w + j);
            for (int g = 0; g < R; g++) a[g * K + k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + g * m + j), q, a[g * K + k]);
        }
    }
    if (j < len)
        for (int k = 0; k < K; k++) {
            const __m256 q = _mm256_load_ps(qt + k * w + j);
            for (int g = 0; g < R; g++) {
                const __m256 f = _mm256_fmadd_ps(_mm256_maskload_ps(x + g * m + j, mask), q, a[g * K + k]);
                a[g * K + k] = _mm256_blendv_ps(a[g * K + k], f, _mm256_castsi256_ps(mask));
            }
        }
    for (int g = 0; g < R; g++)
        for (int k = 0; k < K; k++) _mm256_store_ps(s + g * rs + 8 * k, a[g * K + k]);
}

SIMD_AVX2_FN static void mul_avx2(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                                  float *restrict P, float *restrict acc)
{
    /* row i's chains for rank-column k at chains[(i - i0) * rs + 8 k]; a slice of Q^T that
     * holds all of Q is transposed once, not once per block of rows */
    const size_t w = block_cols(r), rs = POWERSGD_CHAINS * r;
    float *qt = aligned_block(acc), *chains = qt + block_floats(r);
    if (m <= w) transpose_slice(Q, 0, m, r, qt, w);
    for (size_t i0 = 0; i0 < n; i0 += POWERSGD_ROWS) {
        const size_t nb = n - i0 < POWERSGD_ROWS ? n - i0 : POWERSGD_ROWS;
        memset(chains, 0, nb * rs * sizeof *chains);
        for (size_t j0 = 0; j0 < m; j0 += w) {
            const size_t len = m - j0 < w ? m - j0 : w;
            if (m > w) transpose_slice(Q, j0, len, r, qt, w);
            const __m256i mask = lanes_below(len % 8 ? len % 8 : 8);
            for (size_t g = 0; g < nb; g += 2)
                for (size_t k0 = 0; k0 < r; k0 += 4) {
                    const float *x = M + (i0 + g) * m + j0, *q = qt + k0 * w;
                    float *s = chains + g * rs + POWERSGD_CHAINS * k0;
                    const size_t R = nb - g >= 2 ? 2 : 1, K = r - k0 < 4 ? r - k0 : 4;
                    switch (4 * R + K) {
                    case 5: mul_tile(x, m, len, q, w, s, rs, mask, 1, 1); break;
                    case 6: mul_tile(x, m, len, q, w, s, rs, mask, 1, 2); break;
                    case 7: mul_tile(x, m, len, q, w, s, rs, mask, 1, 3); break;
                    case 8: mul_tile(x, m, len, q, w, s, rs, mask, 1, 4); break;
                    case 9: mul_tile(x, m, len, q, w, s, rs, mask, 2, 1); break;
                    case 10: mul_tile(x, m, len, q, w, s, rs, mask, 2, 2); break;
                    case 11: mul_tile(x, m, len, q, w, s, rs, mask, 2, 3); break;
                    default: mul_tile(x, m, len, q, w, s, rs, mask, 2, 4); break;
                    }
                }
        }
        for (size_t g = 0; g < nb; g++)
            for (size_t k = 0; k < r; k++) P[(i0 + g) * r + k] = chains_total(chains + g * rs + POWERSGD_CHAINS * k);
    }
}

/* M^T P on a tile of JV x 8 columns (M: row i0, column j) and K rank-columns, over rows
 * i0 .. i0+G-1 (p: those rows of P, at column k0); a: the block's sums at (k0, j), one
 * rank-column every w floats. */
POWERSGD_TILE void mul_t_tile(const float *M, size_t m, size_t G, const float *p, size_t r, float *a, size_t w,
                              const int JV, const int K)
{
    __m256 s[8];
    for (int k = 0; k < K; k++)
        for (int v = 0; v < JV; v++) s[k * JV + v] = _mm256_loadu_ps(a + k * w + 8 * v);
    for (size_t g = 0; g < G; g++, M += m, p += r) {
        __m256 x[8];
        for (int v = 0; v < JV; v++) x[v] = _mm256_loadu_ps(M + 8 * v);
        for (int k = 0; k < K; k++) {
            const __m256 b = _mm256_broadcast_ss(p + k);
            for (int v = 0; v < JV; v++) s[k * JV + v] = _mm256_fmadd_ps(x[v], b, s[k * JV + v]);
        }
    }
    for (int k = 0; k < K; k++)
        for (int v = 0; v < JV; v++) _mm256_storeu_ps(a + k * w + 8 * v, s[k * JV + v]);
}

SIMD_AVX2_FN static void mul_t_avx2(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                                    float *restrict Q, float *restrict acc)
{
    /* a tile keeps 8 sums going: 8 column vectors at rank 1, 4 at rank 2, else 2 */
    const size_t JV = r == 1 ? 8 : r == 2 ? 4 : 2, tw = 8 * JV;
    const size_t w = block_cols(r) / tw * tw;
    float *sums = aligned_block(acc);
    for (size_t j0 = 0; j0 < m; j0 += w) {
        const size_t bw = m - j0 < w ? m - j0 : w;
        memset(sums, 0, w * r * sizeof *sums);
        for (size_t i0 = 0; i0 < n; i0 += POWERSGD_MT_ROWS) {
            const size_t G = n - i0 < POWERSGD_MT_ROWS ? n - i0 : POWERSGD_MT_ROWS;
            const float *row = M + i0 * m + j0, *p = P + i0 * r;
            size_t j = 0;
            for (; j + tw <= bw; j += tw)
                for (size_t k0 = 0; k0 < r; k0 += 4) {
                    const size_t K = r - k0 < 4 ? r - k0 : 4;
                    float *a = sums + k0 * w + j;
                    switch (JV * 4 + K) {
                    case 33: mul_t_tile(row + j, m, G, p + k0, r, a, w, 8, 1); break;
                    case 18: mul_t_tile(row + j, m, G, p + k0, r, a, w, 4, 2); break;
                    case 9: mul_t_tile(row + j, m, G, p + k0, r, a, w, 2, 1); break;
                    case 10: mul_t_tile(row + j, m, G, p + k0, r, a, w, 2, 2); break;
                    case 11: mul_t_tile(row + j, m, G, p + k0, r, a, w, 2, 3); break;
                    default: mul_t_tile(row + j, m, G, p + k0, r, a, w, 2, 4); break;
                    }
                }
            /* the block's last columns, fewer than a tile, one sum at a time */
            for (; j < bw; j++)
                for (size_t g = 0; g < G; g++)
                    for (size_t k = 0; k < r; k++) sums[k * w + j] = fmaf(row[g * m + j], p[g * r + k], sums[k * w + j]);
        }
        for (size_t j = 0; j < bw; j++)
            for (size_t k = 0; k < r; k++) Q[(j0 + j) * r + k] = sums[k * w + j];
    }
}

/* P Q^T on R rows (p: those rows of P) and JV x 8 columns (A: at row i, column j; qt: the
 * block of Q transposed, one rank-column every w floats). */
POWERSGD_TILE void outer_tile(const float *p, const float *qt, size_t w, size_t r, float *A, size_t m, int add,
                              const int R, const int JV)
{
    __m256 s[8];
    for (int t = 0; t < R * JV; t++) s[t] = _mm256_setzero_ps();
    for (size_t k = 0; k < r; k++) {
        __m256 q[4];
        for (int v = 0; v < JV; v++) q[v] = _mm256_load_ps(qt + k * w + 8 * v);
        for (int g = 0; g < R; g++) {
            const __m256 b = _mm256_broadcast_ss(p + g * r + k);
            for (int v = 0; v < JV; v++) s[g * JV + v] = _mm256_fmadd_ps(b, q[v], s[g * JV + v]);
        }
    }
    for (int g = 0; g < R; g++)
        for (int v = 0; v < JV; v++) {
            float *a = A + g * m + 8 * v;
            __m256 f = s[g * JV + v];
            if (add) f = _mm256_add_ps(_mm256_loadu_ps(a), f);
            _mm256_storeu_ps(a, f);
        }
}

SIMD_AVX2_FN static void outer_avx2(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                                    float *restrict A, int add, float *restrict acc)
{
    /* whole tiles of 32 columns where the block holds one, else 8 */
    const size_t w = block_cols(r) >= 32 ? block_cols(r) / 32 * 32 : block_cols(r);
    float *qt = aligned_block(acc);
    for (size_t j0 = 0; j0 < m; j0 += w) {
        const size_t bw = m - j0 < w ? m - j0 : w;
        transpose_slice(Q, j0, bw, r, qt, w);
        for (size_t i = 0; i < n;) {
            const size_t R = n - i >= 2 ? 2 : 1;
            const float *p = P + i * r;
            float *a = A + i * m + j0;
            const float *ahead = i + POWERSGD_AHEAD + 2 <= n ? a + POWERSGD_AHEAD * m : NULL;
            size_t j = 0;
            for (; j + 32 <= bw; j += 32) {
                if (ahead) {
                    _mm_prefetch((const char *)(ahead + j), _MM_HINT_T0);
                    _mm_prefetch((const char *)(ahead + m + j), _MM_HINT_T0);
                }
                if (R == 2)
                    outer_tile(p, qt + j, w, r, a + j, m, add, 2, 4);
                else
                    outer_tile(p, qt + j, w, r, a + j, m, add, 1, 4);
            }
            for (; j + 8 <= bw; j += 8)
                if (R == 2)
                    outer_tile(p, qt + j, w, r, a + j, m, add, 2, 1);
                else
                    outer_tile(p, qt + j, w, r, a + j, m, add, 1, 1);
            for (; j < bw; j++)
                for (size_t g = 0; g < R; g++) {
                    float s = 0.0f;
                    for (size_t k = 0; k < r; k++) s = fmaf(p[g * r + k], qt[k * w + j], s);
                    if (add)
                        a[g * m + j] += s;
                    else
                        a[g * m + j] = s;
                }
            i += R;
        }
    }
}
#endif

void powersgd_mul(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                  float *restrict P, float *restrict acc)
{
    if (r == 0) return;
#if SIMD_X86
    if (simd_level() == SIMD_AVX2) {
        mul_avx2(M, n, m, Q, r, P, acc);
        return;
    }
#endif
    mul_scalar(M, n, m, Q, r, P, acc);
}

void powersgd_mul_t(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                    float *restrict Q, float *restrict acc)
{
    if (r == 0) return;
#if SIMD_X86
    if (simd_level() == SIMD_AVX2) {
        mul_t_avx2(M, n, m, P, r, Q, acc);
        return;
    }
#endif
    mul_t_scalar(M, n, m, P, r, Q, acc);
}

void powersgd_outer(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                    float *restrict A, int add, float *restrict acc)
{
#if SIMD_X86
    /* rank 0 is the scalar loop's: it adds 0.0f, which turns -0 into +0 */
    if (r > 0 && simd_level() == SIMD_AVX2) {
        outer_avx2(P, n, Q, m, r, A, add, acc);
        return;
    }
#endif
    (void)acc;
    outer_scalar(P, n, Q, m, r, A, add);
}

/* The later columns are handled ORTHO_BLOCK at a time: one pass over the rows gathers their
 * sums s_j (each its own chain in increasing t, as in the definition) and one pass updates
 * them, so the inner loops run along a row and vectorise. Column j's update touches only
 * column j, so doing all of a block's sums first gives the bits of the column-by-column
 * definition. */
#define ORTHO_BLOCK 32

void powersgd_orthogonalize(float *a, size_t len, size_t r)
{
    double s[ORTHO_BLOCK];
    for (size_t i = 0; i < r; i++) {
        double ss = 0.0;
        for (size_t t = 0; t < len; t++) ss += (double)a[t * r + i] * (double)a[t * r + i];
        /* eps on the norm, not under the root: a zero column divides by eps and stays 0 */
        const double d = sqrt(ss) + POWERSGD_EPS;
        for (size_t t = 0; t < len; t++) a[t * r + i] = (float)((double)a[t * r + i] / d);
        for (size_t j0 = i + 1; j0 < r; j0 += ORTHO_BLOCK) {
            const size_t nb = r - j0 < ORTHO_BLOCK ? r - j0 : ORTHO_BLOCK;
            for (size_t j = 0; j < nb; j++) s[j] = 0.0;
            for (size_t t = 0; t < len; t++) {
                const double ai = (double)a[t * r + i];
                const float *row = a + t * r + j0;
                for (size_t j = 0; j < nb; j++) s[j] += ai * (double)row[j];
            }
            for (size_t t = 0; t < len; t++) {
                const double ai = (double)a[t * r + i];
                float *row = a + t * r + j0;
                for (size_t j = 0; j < nb; j++) row[j] = (float)((double)row[j] - s[j] * ai);
            }
        }
    }
}

void powersgd_random(uint64_t key, size_t m, size_t r, float *Q)
{
    for (size_t t = 0; t < m * r; t++) Q[t] = (float)rng_normal(key, t);
}

/* ---- The standalone codec --------------------------------------------------------------- */

static size_t message_bytes(size_t rows, size_t cols, size_t r)
{
    return POWERSGD_HEADER + 4 * r * (rows + cols);
}

/* The largest message over every shape of count elements a ctx may give: the divisor pairs
 * a x (count / a), a <= count / a (a transposed shape has the same size). */
static size_t powersgd_max_bytes(const double *p, size_t count)
{
    size_t best = message_bytes(0, 0, 0);
    for (size_t a = 1; a <= count / a; a++) {
        if (count % a) continue;
        size_t bytes = message_bytes(a, count / a, powersgd_rank(p, a, count / a));
        if (bytes > best) best = bytes;
    }
    return best;
}

static size_t powersgd_scratch_bytes(const double *p, size_t count)
{
    size_t r = powersgd_rank(p, count, count);
    return r ? powersgd_acc_floats(r) * sizeof(float) : 0;
}

static size_t powersgd_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                              size_t count, void *restrict msg, void *restrict scratch)
{
    size_t rows = count, cols = 1;
    if (ctx && ctx->rows * ctx->cols == count) {
        rows = ctx->rows;
        cols = ctx->cols;
    }
    const size_t r = powersgd_rank(p, rows, cols);
    const uint32_t hdr[3] = {(uint32_t)rows, (uint32_t)cols, (uint32_t)r};
    unsigned char *b = msg;
    memcpy(b, hdr, sizeof hdr);
    if (r == 0) return POWERSGD_HEADER;
    float *P = (float *)(b + POWERSGD_HEADER), *Q = P + rows * r;
    const uint64_t key = rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[POWERSGD_SEED] * 0x9e3779b97f4a7c15ull));
    /* Q0 lives where Q will: M^T P overwrites it once P no longer needs it */
    powersgd_random(key, cols, r, Q);
    powersgd_orthogonalize(Q, cols, r);
    powersgd_mul(in, rows, cols, Q, r, P, scratch);
    powersgd_orthogonalize(P, rows, r);
    powersgd_mul_t(in, rows, cols, P, r, Q, scratch);
    return message_bytes(rows, cols, r);
}

static terse_status_t powersgd_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                          size_t count, float *restrict out, void *restrict scratch)
{
    if (bytes < POWERSGD_HEADER) return TERSE_ERR_MISMATCH;
    uint32_t hdr[3];
    memcpy(hdr, msg, sizeof hdr);
    const size_t rows = hdr[0], cols = hdr[1], r = hdr[2];
    if ((uint64_t)rows * cols != count || r != powersgd_rank(p, rows, cols) ||
        bytes != message_bytes(rows, cols, r))
        return TERSE_ERR_MISMATCH;
    if (r == 0) return TERSE_OK;
    const float *P = (const float *)((const unsigned char *)msg + POWERSGD_HEADER), *Q = P + rows * r;
    powersgd_outer(P, rows, Q, cols, r, out, 1, scratch);
    return TERSE_OK;
}

/* PyTorch's rule (§8.2): compress only when (rows + cols) r' min_rate < rows cols, so
 * vectors (rows x 1, 1 x cols) always go dense. */
static int powersgd_goes_dense(const double *p, size_t rows, size_t cols)
{
    if (rows <= 1 || cols <= 1) return 1;
    const double r = (double)powersgd_rank(p, rows, cols);
    return ((double)rows + (double)cols) * r * p[POWERSGD_MIN_RATE] >= (double)rows * (double)cols;
}

const codec_ops_t codec_powersgd_ops = {
    sizeof(codec_ops_t), "powersgd", CODEC_PROTO_POWERSGD,
    NULL, powersgd_max_bytes, powersgd_scratch_bytes, powersgd_encode, powersgd_decode_add,
    powersgd_goes_dense, 0,
};
