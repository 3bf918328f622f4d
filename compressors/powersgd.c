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
 * Every sum below is one chain of double adds in the order powersgd.h documents. The AVX2
 * kernels never split a sum: they run independent sums side by side, one per lane, and
 * several vectors of them at once so that the add's latency is hidden behind the other
 * chains. A product of two floats is exact in double, so lane for lane they compute the
 * same bits as the scalar loops (so would a fused multiply-add; the kernels keep mul then
 * add all the same, and -std=c11 keeps the compiler from contracting them).
 *
 *   M Q     rank 3 up: lanes are 4 rank-columns of one row; 8 rows go along their whole
 *           length at once (8 sequential streams of M), each element broadcast to the 4
 *           lanes from a widened copy of a slice of its row.
 *           rank 1, 2: lanes are 4 rows (4 x 4 blocks of M transposed), times Q[j,k]
 *           broadcast from a widened copy of a slice of Q that 32 rows share.
 *   M^T P   lanes are 4 columns of M; a tile of 8 to 32 columns times up to 4 rank-columns
 *           keeps its sums in registers over 8 rows, and in acc (a block of columns, in
 *           L1) down all n rows, so that each block streams its slice of M once. More rows
 *           per visit would save loads and stores of the sums but read M in more streams
 *           at once, which measured slower.
 *   P Q^T   lanes are 4 columns of the output; a tile of 16 columns times 2 rows runs over
 *           the rank with a block of Q transposed and widened in acc (in L1).
 *
 * The scalar loops are the reference (TERSE_SIMD=scalar, CPUs without AVX2, the tests'
 * other side): the AVX2 ones must match them bit for bit. */

/* The AVX2 kernels' scratch (acc), after up to 3 doubles that align it to 32 bytes:
 *   block: POWERSGD_BLOCK doubles (32 KiB, in L1 beside the rows being streamed), or 32 per
 *          rank-column when the rank is too large for that: M^T P's sums of a block of
 *          columns, P Q^T's block of Q^T, rank-1/2 M Q's slice of Q broadcast;
 *   rows:  M Q's 8 slices of rows widened (8 x POWERSGD_MQ_COLS) and its rows' sums (at
 *          most POWERSGD_ROWS x 4 per chunk of 4 rank-columns), or rows of P widened.
 * The scalar loops use the first POWERSGD_BLOCK doubles, or r when r is larger. */
#define POWERSGD_BLOCK 4096
#define POWERSGD_ROWS 32
#define POWERSGD_MQ_COLS 256

static size_t block_doubles(size_t r) { return 32 * r > POWERSGD_BLOCK ? 32 * r : POWERSGD_BLOCK; }

size_t powersgd_acc_doubles(size_t r)
{
    return 3 + block_doubles(r) + 8 * POWERSGD_MQ_COLS + POWERSGD_ROWS * 4 * ((r + 3) / 4);
}

/* The scalar products keep four rank-columns' sums in registers at a time (k0 .. k0+3), the
 * rest one by one; each sum still runs in the documented order. */
static void mul_scalar(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                       float *restrict P, double *restrict acc)
{
    for (size_t i = 0; i < n; i++) {
        const float *row = M + i * m;
        size_t k0 = 0;
        for (; k0 + 4 <= r; k0 += 4) {
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            for (size_t j = 0; j < m; j++) {
                const double v = row[j];
                const float *q = Q + j * r + k0;
                a0 += v * (double)q[0];
                a1 += v * (double)q[1];
                a2 += v * (double)q[2];
                a3 += v * (double)q[3];
            }
            P[i * r + k0] = (float)a0;
            P[i * r + k0 + 1] = (float)a1;
            P[i * r + k0 + 2] = (float)a2;
            P[i * r + k0 + 3] = (float)a3;
        }
        if (k0 == r) continue;
        for (size_t k = k0; k < r; k++) acc[k] = 0.0;
        for (size_t j = 0; j < m; j++) {
            const double v = row[j];
            const float *q = Q + j * r;
            for (size_t k = k0; k < r; k++) acc[k] += v * (double)q[k];
        }
        for (size_t k = k0; k < r; k++) P[i * r + k] = (float)acc[k];
    }
}

static void mul_t_scalar(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                         float *restrict Q, double *restrict acc)
{
    /* a block of b columns of M: its b x r sums run down all n rows, reading each row's
     * b contiguous floats, so M is streamed once however many blocks there are */
    const size_t b = r >= POWERSGD_BLOCK ? 1 : POWERSGD_BLOCK / r;
    for (size_t j0 = 0; j0 < m; j0 += b) {
        const size_t w = m - j0 < b ? m - j0 : b;
        for (size_t t = 0; t < w * r; t++) acc[t] = 0.0;
        for (size_t i = 0; i < n; i++) {
            const float *row = M + i * m + j0, *p = P + i * r;
            size_t k0 = 0;
            for (; k0 + 4 <= r; k0 += 4) {
                const double p0 = p[k0], p1 = p[k0 + 1], p2 = p[k0 + 2], p3 = p[k0 + 3];
                for (size_t j = 0; j < w; j++) {
                    const double v = row[j];
                    double *a = acc + j * r + k0;
                    a[0] += v * p0;
                    a[1] += v * p1;
                    a[2] += v * p2;
                    a[3] += v * p3;
                }
            }
            for (size_t j = 0; k0 < r && j < w; j++) {
                const double v = row[j];
                double *a = acc + j * r;
                for (size_t k = k0; k < r; k++) a[k] += v * (double)p[k];
            }
        }
        for (size_t t = 0; t < w * r; t++) Q[j0 * r + t] = (float)acc[t];
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
            double s = 0.0;
            size_t k = 0;
            for (; k + 4 <= r; k += 4) {
                s += (double)p[k] * (double)q[k];
                s += (double)p[k + 1] * (double)q[k + 1];
                s += (double)p[k + 2] * (double)q[k + 2];
                s += (double)p[k + 3] * (double)q[k + 3];
            }
            for (; k < r; k++) s += (double)p[k] * (double)q[k];
            if (add)
                a[j] += (float)s;
            else
                a[j] = (float)s;
        }
    }
}

#if SIMD_X86
/* The tiles multiply and add with one FMA where the scalar loops round a product, then a
 * sum: the same bits, because every product is of two floats widened to double, which a
 * double holds exactly (24 + 24 significant bits), so only the sum is ever rounded. */
/* The tiles take their shape as constants so that, inlined, their arrays of vectors become
 * registers and their inner loops unroll. */
#define POWERSGD_TILE SIMD_AVX2_FN static inline __attribute__((always_inline))
/* Rows of M per load and store of M^T P's sums: 8 streams of M at once. */
#define POWERSGD_MT_ROWS 8
/* P Q^T asks for the rows it will update this many rows ahead: a column block reads and
 * writes each row in one short slice, too short for the hardware prefetcher to catch. */
#define POWERSGD_AHEAD 4

static double *aligned_block(double *acc) { return (double *)(((uintptr_t)acc + 31) & ~(uintptr_t)31); }

/* The first min(n, 4) lanes of a float mask. */
POWERSGD_TILE __m128i lanes_below(size_t n)
{
    return _mm_cmpgt_epi32(_mm_set1_epi32(n < 4 ? (int)n : 4), _mm_setr_epi32(0, 1, 2, 3));
}

/* M Q, ranks 1 and 2, on 8 rows (x: at column j0) over len columns: lanes are 4 rows, so
 * each 4 x 4 block of M is transposed, and its column j times Q[j,k] is added to the rows'
 * sums for k (POWERSGD_ROWS apart in sums). qb holds the slice of Q widened and broadcast,
 * 4 copies per element, so that the products read it straight from memory. */
POWERSGD_TILE void mul_rows_tile(const float *const *x, size_t len, const double *qb, double *sums, const int K)
{
    __m256d s[4];
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < K; k++) s[h * K + k] = _mm256_loadu_pd(sums + k * POWERSGD_ROWS + 4 * h);
    size_t j = 0;
    for (; j + 4 <= len; j += 4, qb += 4 * 4 * K)
        for (int h = 0; h < 2; h++) {
            const float *const *xh = x + 4 * h;
            __m128 c0 = _mm_loadu_ps(xh[0] + j), c1 = _mm_loadu_ps(xh[1] + j);
            __m128 c2 = _mm_loadu_ps(xh[2] + j), c3 = _mm_loadu_ps(xh[3] + j);
            _MM_TRANSPOSE4_PS(c0, c1, c2, c3);
            const __m256d c[4] = {_mm256_cvtps_pd(c0), _mm256_cvtps_pd(c1), _mm256_cvtps_pd(c2),
                                  _mm256_cvtps_pd(c3)};
            for (int t = 0; t < 4; t++)
                for (int k = 0; k < K; k++) {
                    const __m256d q = _mm256_load_pd(qb + 4 * (t * K + k));
                    s[h * K + k] = _mm256_fmadd_pd(c[t], q, s[h * K + k]);
                }
        }
    for (; j < len; j++, qb += 4 * K)
        for (int h = 0; h < 2; h++) {
            const float *const *xh = x + 4 * h;
            const __m256d c = _mm256_cvtps_pd(_mm_setr_ps(xh[0][j], xh[1][j], xh[2][j], xh[3][j]));
            for (int k = 0; k < K; k++)
                s[h * K + k] = _mm256_fmadd_pd(c, _mm256_load_pd(qb + 4 * k), s[h * K + k]);
        }
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < K; k++) _mm256_storeu_pd(sums + k * POWERSGD_ROWS + 4 * h, s[h * K + k]);
}

/* M Q, rank 3 up, on 8 rows over len columns, for the 4 rank-columns at q (Q: row j0,
 * column k0; FULL: all 4 are below r, else mask says which): lanes are rank-columns. Each
 * element of M is needed in all 4 lanes: x holds the rows' slices widened (POWERSGD_MQ_COLS
 * apart) and the element is broadcast from there, a load, where widening it alone would
 * take a conversion, which competes with the adds. */
POWERSGD_TILE void mul_ranks_tile(const double *x, size_t len, const float *q, size_t r, __m128i mask,
                                  double *sums, const int FULL)
{
    __m256d s[8];
    for (int g = 0; g < 8; g++) s[g] = _mm256_loadu_pd(sums + 4 * g);
    for (size_t j = 0; j < len; j++, q += r) {
        const __m256d qj = _mm256_cvtps_pd(FULL ? _mm_loadu_ps(q) : _mm_maskload_ps(q, mask));
        for (int g = 0; g < 8; g++)
            s[g] = _mm256_fmadd_pd(_mm256_broadcast_sd(x + g * POWERSGD_MQ_COLS + j), qj, s[g]);
    }
    for (int g = 0; g < 8; g++) _mm256_storeu_pd(sums + 4 * g, s[g]);
}

SIMD_AVX2_FN static void mul_avx2(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                                  float *restrict P, double *restrict acc)
{
    const size_t chunks = (r + 3) / 4, J = POWERSGD_MQ_COLS;
    double *qb = aligned_block(acc), *x = qb + block_doubles(r), *sums = x + 8 * POWERSGD_MQ_COLS;
    if (r <= 2) {
        /* a block of POWERSGD_ROWS rows runs over slices of J columns: each slice of Q is
         * broadcast once per block, then each tile of 8 rows keeps its sums in registers
         * over it. Rows past the block repeat its last one: their lanes are thrown away. */
        for (size_t i0 = 0; i0 < n; i0 += POWERSGD_ROWS) {
            const size_t nb = n - i0 < POWERSGD_ROWS ? n - i0 : POWERSGD_ROWS;
            memset(sums, 0, r * POWERSGD_ROWS * sizeof *sums);
            for (size_t j0 = 0; j0 < m; j0 += J) {
                const size_t len = m - j0 < J ? m - j0 : J;
                for (size_t t = 0; t < len * r; t++) _mm256_store_pd(qb + 4 * t, _mm256_set1_pd(Q[j0 * r + t]));
                for (size_t g = 0; g < nb; g += 8) {
                    const float *xr[8];
                    for (size_t l = 0; l < 8; l++) xr[l] = M + (i0 + (g + l < nb ? g + l : nb - 1)) * m + j0;
                    if (r == 1)
                        mul_rows_tile(xr, len, qb, sums + g, 1);
                    else
                        mul_rows_tile(xr, len, qb, sums + g, 2);
                }
            }
            for (size_t g = 0; g < nb; g++)
                for (size_t k = 0; k < r; k++) P[(i0 + g) * r + k] = (float)sums[k * POWERSGD_ROWS + g];
        }
        return;
    }
    /* 8 rows at a time (the last ones repeated past n, their lanes thrown away) run along
     * their whole length, so M streams in 8 sequential runs. Each slice of J columns is
     * widened once, asking for the next slice meanwhile (the widening is a burst of misses
     * with no arithmetic to hide them), then every chunk of 4 rank-columns runs over it. */
    for (size_t i0 = 0; i0 < n; i0 += 8) {
        memset(sums, 0, 32 * chunks * sizeof *sums);
        for (size_t j0 = 0; j0 < m; j0 += J) {
            const size_t len = m - j0 < J ? m - j0 : J;
            for (size_t l = 0; l < 8; l++) {
                const float *row = M + (i0 + l < n ? i0 + l : n - 1) * m + j0;
                double *xl = x + l * J;
                size_t j = 0;
                for (size_t t = 0; t < J && j0 + len + t < m; t += 16)
                    _mm_prefetch((const char *)(row + len + t), _MM_HINT_T0);
                for (; j + 4 <= len; j += 4) _mm256_storeu_pd(xl + j, _mm256_cvtps_pd(_mm_loadu_ps(row + j)));
                for (; j < len; j++) xl[j] = row[j];
            }
            for (size_t c = 0; c < chunks; c++) {
                const float *q = Q + j0 * r + 4 * c;
                if (4 * c + 4 <= r)
                    mul_ranks_tile(x, len, q, r, _mm_setzero_si128(), sums + 32 * c, 1);
                else
                    mul_ranks_tile(x, len, q, r, lanes_below(r - 4 * c), sums + 32 * c, 0);
            }
        }
        for (size_t g = 0; g < 8 && i0 + g < n; g++)
            for (size_t k = 0; k < r; k++) P[(i0 + g) * r + k] = (float)sums[32 * (k / 4) + 4 * g + k % 4];
    }
}

/* M^T P on a tile of JV x 4 columns (M: row i0, column j) and K rank-columns, over rows
 * i0 .. i0+G-1 (p: those rows of P widened, at column k0); a: the block's sums at (k0, j),
 * one rank-column every w doubles. */
POWERSGD_TILE void mul_t_tile(const float *M, size_t m, size_t G, const double *p, size_t r, double *a,
                              size_t w, const int JV, const int K)
{
    __m256d s[8];
    for (int k = 0; k < K; k++)
        for (int v = 0; v < JV; v++) s[k * JV + v] = _mm256_loadu_pd(a + k * w + 4 * v);
    for (size_t g = 0; g < G; g++, M += m, p += r) {
        __m256d x[8];
        for (int v = 0; v < JV; v++) x[v] = _mm256_cvtps_pd(_mm_loadu_ps(M + 4 * v));
        for (int k = 0; k < K; k++) {
            const __m256d b = _mm256_broadcast_sd(p + k);
            for (int v = 0; v < JV; v++) s[k * JV + v] = _mm256_fmadd_pd(x[v], b, s[k * JV + v]);
        }
    }
    for (int k = 0; k < K; k++)
        for (int v = 0; v < JV; v++) _mm256_storeu_pd(a + k * w + 4 * v, s[k * JV + v]);
}

SIMD_AVX2_FN static void mul_t_avx2(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                                    float *restrict Q, double *restrict acc)
{
    /* a tile keeps 6 to 8 sums going: 8 column vectors at rank 1, 4 at rank 2, else 2 */
    const size_t JV = r == 1 ? 8 : r == 2 ? 4 : 2, tw = 4 * JV;
    const size_t w = block_doubles(r) / r / tw * tw;
    double *sums = aligned_block(acc), *pd = sums + block_doubles(r);
    for (size_t j0 = 0; j0 < m; j0 += w) {
        const size_t bw = m - j0 < w ? m - j0 : w;
        memset(sums, 0, w * r * sizeof *sums);
        for (size_t i0 = 0; i0 < n; i0 += POWERSGD_MT_ROWS) {
            const size_t G = n - i0 < POWERSGD_MT_ROWS ? n - i0 : POWERSGD_MT_ROWS;
            for (size_t t = 0; t < G * r; t++) pd[t] = P[i0 * r + t];
            const float *row = M + i0 * m + j0;
            size_t j = 0;
            for (; j + tw <= bw; j += tw)
                for (size_t k0 = 0; k0 < r; k0 += 4) {
                    const size_t K = r - k0 < 4 ? r - k0 : 4;
                    double *a = sums + k0 * w + j;
                    switch (JV * 4 + K) {
                    case 33: mul_t_tile(row + j, m, G, pd + k0, r, a, w, 8, 1); break;
                    case 18: mul_t_tile(row + j, m, G, pd + k0, r, a, w, 4, 2); break;
                    case 9: mul_t_tile(row + j, m, G, pd + k0, r, a, w, 2, 1); break;
                    case 10: mul_t_tile(row + j, m, G, pd + k0, r, a, w, 2, 2); break;
                    case 11: mul_t_tile(row + j, m, G, pd + k0, r, a, w, 2, 3); break;
                    default: mul_t_tile(row + j, m, G, pd + k0, r, a, w, 2, 4); break;
                    }
                }
            /* the block's last columns, fewer than a tile, one sum at a time */
            for (; j < bw; j++)
                for (size_t g = 0; g < G; g++) {
                    const double v = row[g * m + j];
                    for (size_t k = 0; k < r; k++) sums[k * w + j] += v * pd[g * r + k];
                }
        }
        for (size_t j = 0; j < bw; j++)
            for (size_t k = 0; k < r; k++) Q[(j0 + j) * r + k] = (float)sums[k * w + j];
    }
}

/* P Q^T on R rows (p: those rows of P widened) and JV x 4 columns (A: at row i, column j;
 * qt: the block of Q transposed and widened, one rank-column every w doubles). */
POWERSGD_TILE void outer_tile(const double *p, const double *qt, size_t w, size_t r, float *A, size_t m,
                              int add, const int R, const int JV)
{
    __m256d s[8];
    for (int t = 0; t < R * JV; t++) s[t] = _mm256_setzero_pd();
    for (size_t k = 0; k < r; k++) {
        __m256d q[4];
        for (int v = 0; v < JV; v++) q[v] = _mm256_loadu_pd(qt + k * w + 4 * v);
        for (int g = 0; g < R; g++) {
            const __m256d b = _mm256_broadcast_sd(p + g * r + k);
            for (int v = 0; v < JV; v++) s[g * JV + v] = _mm256_fmadd_pd(b, q[v], s[g * JV + v]);
        }
    }
    for (int g = 0; g < R; g++)
        for (int v = 0; v < JV; v++) {
            float *a = A + g * m + 4 * v;
            __m128 f = _mm256_cvtpd_ps(s[g * JV + v]);
            if (add) f = _mm_add_ps(_mm_loadu_ps(a), f);
            _mm_storeu_ps(a, f);
        }
}

SIMD_AVX2_FN static void outer_avx2(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                                    float *restrict A, int add, double *restrict acc)
{
    const size_t w = block_doubles(r) / r / 16 * 16;
    double *qt = aligned_block(acc), *pd = qt + block_doubles(r);
    for (size_t j0 = 0; j0 < m; j0 += w) {
        const size_t bw = m - j0 < w ? m - j0 : w;
        for (size_t j = 0; j < bw; j++)
            for (size_t k = 0; k < r; k++) qt[k * w + j] = Q[(j0 + j) * r + k];
        for (size_t i = 0; i < n;) {
            const size_t R = n - i >= 2 ? 2 : 1;
            for (size_t t = 0; t < R * r; t++) pd[t] = P[i * r + t];
            float *a = A + i * m + j0;
            const float *ahead = i + POWERSGD_AHEAD + 2 <= n ? a + POWERSGD_AHEAD * m : NULL;
            size_t j = 0;
            for (; j + 16 <= bw; j += 16) {
                if (ahead) {
                    _mm_prefetch((const char *)(ahead + j), _MM_HINT_T0);
                    _mm_prefetch((const char *)(ahead + m + j), _MM_HINT_T0);
                }
                if (R == 2)
                    outer_tile(pd, qt + j, w, r, a + j, m, add, 2, 4);
                else
                    outer_tile(pd, qt + j, w, r, a + j, m, add, 1, 4);
            }
            for (; j + 4 <= bw; j += 4)
                if (R == 2)
                    outer_tile(pd, qt + j, w, r, a + j, m, add, 2, 1);
                else
                    outer_tile(pd, qt + j, w, r, a + j, m, add, 1, 1);
            for (; j < bw; j++)
                for (size_t g = 0; g < R; g++) {
                    double s = 0.0;
                    for (size_t k = 0; k < r; k++) s += pd[g * r + k] * qt[k * w + j];
                    if (add)
                        a[g * m + j] += (float)s;
                    else
                        a[g * m + j] = (float)s;
                }
            i += R;
        }
    }
}
#endif

void powersgd_mul(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                  float *restrict P, double *restrict acc)
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
                    float *restrict Q, double *restrict acc)
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
                    float *restrict A, int add, double *restrict acc)
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

void powersgd_orthogonalize(float *a, size_t len, size_t r)
{
    for (size_t i = 0; i < r; i++) {
        double ss = 0.0;
        for (size_t t = 0; t < len; t++) ss += (double)a[t * r + i] * (double)a[t * r + i];
        /* eps on the norm, not under the root: a zero column divides by eps and stays 0 */
        const double d = sqrt(ss) + POWERSGD_EPS;
        for (size_t t = 0; t < len; t++) a[t * r + i] = (float)((double)a[t * r + i] / d);
        for (size_t j = i + 1; j < r; j++) {
            double s = 0.0;
            for (size_t t = 0; t < len; t++) s += (double)a[t * r + i] * (double)a[t * r + j];
            for (size_t t = 0; t < len; t++) a[t * r + j] = (float)((double)a[t * r + j] - s * (double)a[t * r + i]);
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
    return r ? powersgd_acc_doubles(r) * sizeof(double) : 0;
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
