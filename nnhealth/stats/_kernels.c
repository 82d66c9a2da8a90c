/* Single-pass statistics kernels for host arrays (float32 and float64), compiled when nnhealth is
 * installed; nnhealth/stats/compiled.py wraps them and numpy is the fallback without them.
 *
 * Why C: numpy needs a pass over memory per statistic (a sum, a square, a log for the histogram, a
 * mask per count). These loops read each value once and take every statistic of it while it is in
 * the cache. Built ahead of time they cost nothing at run time: no JIT compile in the training loop,
 * no compiler in the process's memory.
 *
 * Sums vectorise without reassociating anything: independent vector lanes in the data's precision
 * take SPAN values, then add into double. The lanes sum x - c, c the piece's first value, and the
 * totals are taken back in double: data near c with a small spread keeps its variance. Saturation tests are computed in the data's
 * precision, exactly as numpy computes kinds.py's masks (built with -ffp-contract=off: no FMA).
 * The histogram needs no log: a table of the top bits, plus the value's own bits, gives its bucket
 * (see compiled.py's _tables); one load, one add and two shifts a value, the same for either sign.
 * Where a float32 piece is mostly zeros (a ReLU's output), AVX2 packs the other values first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SPAN 256       /* values summed in the data's precision before they are added in double */
#define PIECE 32768    /* values read for every statistic while they are in the core's cache */
#define FIELDS 11      /* summary.HEADER */

/* The hot loops are built twice on x86-64 Linux with GCC, for AVX2 and for any x86-64, and the
 * loader picks one for the machine it runs on; elsewhere once, for the compiler's default target. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#define GCC_X86_64_LINUX 1
#else
#define CLONES
#endif

#if defined(__GNUC__) && !defined(NNHEALTH_SCALAR)
/* helpers inlined into the cloned loops, so they are built for each target too */
#define INLINE static inline __attribute__((always_inline))
/* 32-byte vectors of the data (two per accumulator set: 16 float or 8 double lanes), summed in the
 * data's precision over SPAN values, then in double: no reassociation the compiler must be allowed */
typedef float vfloat __attribute__((vector_size(32)));
typedef double vdouble __attribute__((vector_size(32)));
typedef int32_t vint32 __attribute__((vector_size(32)));
typedef int64_t vint64 __attribute__((vector_size(32)));
#define LOAD(v, p) memcpy(&(v), (p), sizeof(v))

/* (sum, sum of squares, sum of |x|) of p[0..n) added to *S, *Q, *M, its extremes folded into *lo and
 * *hi (NaN never wins a comparison: the sums are what show NaN), its values below zero counted into
 * *neg; a copy into out when given */
#define DEFINE_SUMS(NAME, T, VT, VI, MASK)                                                         \
    INLINE void NAME(const T *p, Py_ssize_t n, T *out, double *S, double *Q, double *M, T *lo,     \
                     T *hi, int64_t *neg)                                                          \
    {                                                                                              \
        enum { W = sizeof(VT) / sizeof(T) };                                                       \
        /* sums of x - c: a layer pinned near c with a small spread keeps its spread (sums of x    \
         * itself would round a variance of 1e-8 away in the lanes); c moderate, so no overflow */ \
        const T c = n > 0 && isfinite(p[0]) && fabs((double)p[0]) < 1e15 ? p[0] : 0;             \
        const VT cv = (VT){0} + c;                                                                 \
        double s_all = 0, q_all = 0, m_all = 0;                                                    \
        int64_t below = 0;                                                                         \
        VT lo0 = (VT){0} + *lo, lo1 = lo0, hi0 = (VT){0} + *hi, hi1 = hi0, a, b, da, db;           \
        Py_ssize_t i = 0;                                                                          \
        for (; i + SPAN <= n; i += SPAN) {                                                         \
            VT s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0}, m0 = {0}, m1 = {0};                         \
            VI n0 = {0}, n1 = {0}, c;                                                              \
            const T *x = p + i;                                                                    \
            if (out) {                                                                             \
                memcpy(out + i, x, SPAN * sizeof(T));                                              \
            }                                                                                      \
            for (int k = 0; k < SPAN; k += 2 * W) {                                                \
                LOAD(a, x + k);                                                                    \
                LOAD(b, x + k + W);                                                                \
                da = a - cv;                                                                       \
                db = b - cv;                                                                       \
                s0 += da;                                                                          \
                s1 += db;                                                                          \
                q0 += da * da;                                                                     \
                q1 += db * db;                                                                     \
                m0 += (VT)((VI)a & MASK);                                                          \
                m1 += (VT)((VI)b & MASK);                                                          \
                n0 += a < 0; /* -1 where true */                                                   \
                n1 += b < 0;                                                                       \
                c = a < lo0;                                                                       \
                lo0 = (VT)(((VI)a & c) | ((VI)lo0 & ~c));                                          \
                c = b < lo1;                                                                       \
                lo1 = (VT)(((VI)b & c) | ((VI)lo1 & ~c));                                          \
                c = a > hi0;                                                                       \
                hi0 = (VT)(((VI)a & c) | ((VI)hi0 & ~c));                                          \
                c = b > hi1;                                                                       \
                hi1 = (VT)(((VI)b & c) | ((VI)hi1 & ~c));                                          \
            }                                                                                      \
            s0 += s1;                                                                              \
            q0 += q1;                                                                              \
            m0 += m1;                                                                              \
            n0 += n1;                                                                              \
            for (int j = 0; j < W; j++) {                                                          \
                s_all += s0[j];                                                                    \
                q_all += q0[j];                                                                    \
                m_all += m0[j];                                                                    \
                below -= n0[j];                                                                    \
            }                                                                                      \
        }                                                                                          \
        for (int j = 0; j < W; j++) {                                                              \
            T l = lo0[j] < lo1[j] ? lo0[j] : lo1[j], h = hi0[j] > hi1[j] ? hi0[j] : hi1[j];        \
            *lo = l < *lo ? l : *lo;                                                               \
            *hi = h > *hi ? h : *hi;                                                               \
        }                                                                                          \
        for (; i < n; i++) {                                                                       \
            T v = p[i];                                                                            \
            if (out) {                                                                             \
                out[i] = v;                                                                        \
            }                                                                                      \
            double d = (double)v - c;                                                              \
            s_all += d;                                                                            \
            q_all += d * d;                                                                        \
            m_all += fabs((double)v);                                                              \
            below += v < 0;                                                                        \
            *lo = v < *lo ? v : *lo;                                                               \
            *hi = v > *hi ? v : *hi;                                                               \
        }                                                                                          \
        *S += s_all + (double)n * c; /* back from x - c, in double */                              \
        *Q += q_all + 2.0 * c * s_all + (double)n * c * c;                                         \
        *M += m_all;                                                                               \
        *neg += below;                                                                             \
    }

/* sum of (a - b)^2 */
#define DEFINE_DIFFERENCE(NAME, T, VT)                                                             \
    CLONES static double NAME(const T *a, const T *b, Py_ssize_t n)                                \
    {                                                                                              \
        enum { W = sizeof(VT) / sizeof(T) };                                                       \
        double total = 0;                                                                          \
        Py_ssize_t i = 0;                                                                          \
        for (; i + SPAN <= n; i += SPAN) {                                                         \
            VT q0 = {0}, q1 = {0}, x, y, z;                                                        \
            for (int k = 0; k < SPAN; k += 2 * W) {                                                \
                LOAD(x, a + i + k);                                                                \
                LOAD(y, b + i + k);                                                                \
                z = x - y;                                                                         \
                q0 += z * z;                                                                       \
                LOAD(x, a + i + k + W);                                                            \
                LOAD(y, b + i + k + W);                                                            \
                z = x - y;                                                                         \
                q1 += z * z;                                                                       \
            }                                                                                      \
            q0 += q1;                                                                              \
            for (int j = 0; j < W; j++) {                                                          \
                total += q0[j];                                                                    \
            }                                                                                      \
        }                                                                                          \
        for (; i < n; i++) {                                                                       \
            double d = (double)a[i] - (double)b[i];                                                \
            total += d * d;                                                                        \
        }                                                                                          \
        return total;                                                                              \
    }

DEFINE_SUMS(sums_f, float, vfloat, vint32, 0x7fffffff)
DEFINE_SUMS(sums_d, double, vdouble, vint64, 0x7fffffffffffffffLL)
DEFINE_DIFFERENCE(difference_f, float, vfloat)
DEFINE_DIFFERENCE(difference_d, double, vdouble)

#else /* other compilers: the same sums, one value at a time, in double */
#define INLINE static inline

#define DEFINE_SUMS(NAME, T)                                                                       \
    INLINE void NAME(const T *p, Py_ssize_t n, T *out, double *S, double *Q, double *M, T *lo,     \
                     T *hi, int64_t *neg)                                                          \
    {                                                                                              \
        for (Py_ssize_t i = 0; i < n; i++) {                                                       \
            T v = p[i];                                                                            \
            if (out) {                                                                             \
                out[i] = v;                                                                        \
            }                                                                                      \
            *S += v;                                                                               \
            *Q += (double)v * v;                                                                   \
            *M += fabs((double)v);                                                                 \
            *neg += v < 0;                                                                         \
            *lo = v < *lo ? v : *lo;                                                               \
            *hi = v > *hi ? v : *hi;                                                               \
        }                                                                                          \
    }

#define DEFINE_DIFFERENCE(NAME, T)                                                                 \
    static double NAME(const T *a, const T *b, Py_ssize_t n)                                       \
    {                                                                                              \
        double total = 0;                                                                          \
        for (Py_ssize_t i = 0; i < n; i++) {                                                       \
            double d = (double)a[i] - (double)b[i];                                                \
            total += d * d;                                                                        \
        }                                                                                          \
        return total;                                                                              \
    }

DEFINE_SUMS(sums_f, float)
DEFINE_SUMS(sums_d, double)
DEFINE_DIFFERENCE(difference_f, float)
DEFINE_DIFFERENCE(difference_d, double)
#endif

/* (sum of squares, sum, sum of |x|, extremes) of a piece at a time, copying into out when given */
#define DEFINE_COLUMNS(NAME, T, SUMS)                                                              \
    CLONES static void NAME(const T *a, Py_ssize_t n, T *out, double *S, double *Q, double *M,     \
                            double *lo, double *hi)                                                \
    {                                                                                              \
        T l = INFINITY, h = -INFINITY;                                                             \
        int64_t neg = 0;                                                                           \
        for (Py_ssize_t start = 0; start < n; start += PIECE) {                                    \
            Py_ssize_t size = n - start < PIECE ? n - start : PIECE;                               \
            SUMS(a + start, size, out ? out + start : NULL, S, Q, M, &l, &h, &neg);                \
        }                                                                                          \
        *lo = l;                                                                                   \
        *hi = h;                                                                                   \
    }

DEFINE_COLUMNS(columns_f, float, sums_f)
DEFINE_COLUMNS(columns_d, double, sums_d)

/* Adds each value's count index to one of 4 interleaved sub-histograms (counts: 4 x 2 slots): a run
 * of equal values (the zeros of a ReLU) does not wait on its own increments. The index is the
 * value's slot (0 for zero, else 1 + its magnitude bucket), plus slots below zero: the table entry
 * of the value's top bits plus its bits, wrapping, carries into the index from the one edge that
 * may fall inside the key (compiled.py's _tables): no sign arithmetic, no second (dependent) load of
 * an edge. The keys of NaN and Inf give the last slot of their sign: any bit pattern lands inside
 * counts (a non-finite one is then refused by the caller). */
#define DEFINE_HISTOGRAM(NAME, U)                                                                  \
    INLINE void NAME(const U *bits, Py_ssize_t n, const U *table, unsigned shift, int64_t *counts,  \
                     Py_ssize_t slots)                                                             \
    {                                                                                              \
        int64_t *c[4];                                                                             \
        for (int k = 0; k < 4; k++) {                                                              \
            c[k] = counts + k * 2 * slots;                                                         \
        }                                                                                          \
        Py_ssize_t i = 0;                                                                          \
        for (; i + 4 <= n; i += 4) {                                                               \
            for (int k = 0; k < 4; k++) {                                                          \
                U b = bits[i + k];                                                                 \
                c[k][(U)(table[b >> shift] + b) >> shift] += 1;                                    \
            }                                                                                      \
        }                                                                                          \
        for (; i < n; i++) {                                                                       \
            U b = bits[i];                                                                         \
            c[0][(U)(table[b >> shift] + b) >> shift] += 1;                                        \
        }                                                                                          \
    }

DEFINE_HISTOGRAM(histogram_f, uint32_t)
DEFINE_HISTOGRAM(histogram_d, uint64_t)

#if defined(GCC_X86_64_LINUX) && !defined(NNHEALTH_SCALAR)
/* A ReLU's output is often half zeros, and the histogram's cost is the load, add and store of a count
 * per value (near the core's limit of memory operations). Where a sample of a float32 piece is a
 * quarter or more zeros, AVX2 packs its other values into a buffer 8 at a time (a lane permutation
 * per mask of zeros) and only those are counted; the zeros are added at once. That takes a quarter
 * off a ReLU layer's time; packing data without zeros would add a fifth, hence the sample. */
#include <immintrin.h>
#define SAMPLE 64
#define CHUNK 2048                   /* values packed at a time, into a buffer on the stack */
static uint8_t nonzero_lanes[256][8]; /* lanes set in each 8-bit mask, in order (PyInit fills it) */
static int packs;                     /* the CPU has AVX2 (and popcnt) */

/* copies the values of bits[0..n) with a nonzero magnitude into out, in order; returns how many */
__attribute__((target("avx2,popcnt"))) static Py_ssize_t
nonzeros_f(const uint32_t *bits, Py_ssize_t n, uint32_t *out)
{
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    Py_ssize_t i = 0, j = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(bits + i));
        __m256i zero = _mm256_cmpeq_epi32(_mm256_and_si256(v, magnitude), _mm256_setzero_si256());
        unsigned kept = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(zero)) & 0xff;
        __m256i lanes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)nonzero_lanes[kept]));
        _mm256_storeu_si256((__m256i *)(out + j), _mm256_permutevar8x32_epi32(v, lanes));
        j += _mm_popcnt_u32(kept);
    }
    for (; i < n; i++) {
        out[j] = bits[i];
        j += (bits[i] & 0x7fffffff) != 0;
    }
    return j;
}

INLINE void histogram_sparse_f(const uint32_t *bits, Py_ssize_t n, const uint32_t *table, unsigned shift,
                               int64_t *counts, Py_ssize_t slots)
{
    int zeros = 0;
    for (int k = 0; packs && n >= 4 * SAMPLE && k < SAMPLE; k++) {
        zeros += (bits[k * n / SAMPLE] & 0x7fffffff) == 0;
    }
    if (zeros < SAMPLE / 4) {
        histogram_f(bits, n, table, shift, counts, slots);
        return;
    }
    uint32_t buffer[CHUNK];
    for (Py_ssize_t i = 0; i < n; i += CHUNK) {
        Py_ssize_t size = n - i < CHUNK ? n - i : CHUNK, kept = nonzeros_f(bits + i, size, buffer);
        histogram_f(buffer, kept, table, shift, counts, slots);
        counts[0] += size - kept; /* slot 0: zero (of either sign) */
    }
}
#else
#define histogram_sparse_f histogram_f
#endif

/* saturation tests by kind code, as kinds.py writes them (o is 1, t the threshold, z 0) */
#define SAT_SIGMOID(y) ((y) * (o - (y)) < t)
#define SAT_TANH(y) (o - (y) * (y) < t)
#define SAT_SOFTSIGN(y) (ABS(y) > t)
#define SAT_HARDTANH(y) (ABS(y) >= o)
#define SAT_HARDSIGMOID(y) (((y) <= z) | ((y) >= o))
#define SAT_RELU6(y) ((y) >= t)
#define FIRES(y) ((y) > z)

/* per-unit counts of the values of rows (flat (rows, units, inner)) passing TEST */
#define COUNT_LOOP(T, TEST, counts)                                                                \
    do {                                                                                           \
        for (Py_ssize_t r = 0; r < nrows; r++) {                                                   \
            const T *row = a + r * units * inner;                                                  \
            if (inner == 1) {                                                                      \
                for (Py_ssize_t u = 0; u < units; u++) {                                           \
                    counts[u] += TEST(row[u]);                                                     \
                }                                                                                  \
                continue;                                                                          \
            }                                                                                      \
            for (Py_ssize_t u = 0; u < units; u++) {                                               \
                const T *seg = row + u * inner;                                                    \
                int64_t c = 0;                                                                     \
                for (Py_ssize_t j = 0; j < inner; j++) {                                           \
                    c += TEST(seg[j]);                                                             \
                }                                                                                  \
                counts[u] += c;                                                                    \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define DEFINE_UNITS(NAME, T)                                                                      \
    INLINE void NAME(const T *a, Py_ssize_t nrows, Py_ssize_t units, Py_ssize_t inner, int code,   \
                     T z, T o, T t, int64_t *fired, int64_t *saturated)                            \
    {                                                                                              \
        COUNT_LOOP(T, FIRES, fired);                                                               \
        switch (code) {                                                                            \
        case 1: COUNT_LOOP(T, SAT_SIGMOID, saturated); break;                                      \
        case 2: COUNT_LOOP(T, SAT_TANH, saturated); break;                                         \
        case 3: COUNT_LOOP(T, SAT_SOFTSIGN, saturated); break;                                     \
        case 4: COUNT_LOOP(T, SAT_HARDTANH, saturated); break;                                     \
        case 5: COUNT_LOOP(T, SAT_HARDSIGMOID, saturated); break;                                  \
        case 6: COUNT_LOOP(T, SAT_RELU6, saturated); break;                                        \
        default: break;                                                                            \
        }                                                                                          \
    }

#define ABS fabsf
DEFINE_UNITS(units_f, float)
#undef ABS
#define ABS fabs
DEFINE_UNITS(units_d, double)
#undef ABS

/* per-unit double sums and sums of squares of rows (flat (rows, units, inner)) */
#define DEFINE_MOMENTS(NAME, T, SUMS)                                                              \
    INLINE void NAME(const T *a, Py_ssize_t nrows, Py_ssize_t units, Py_ssize_t inner,             \
                     double *total, double *squares)                                               \
    {                                                                                              \
        for (Py_ssize_t r = 0; r < nrows; r++) {                                                   \
            const T *row = a + r * units * inner;                                                  \
            if (inner == 1) {                                                                      \
                for (Py_ssize_t u = 0; u < units; u++) {                                           \
                    double x = row[u];                                                             \
                    total[u] += x;                                                                 \
                    squares[u] += x * x;                                                           \
                }                                                                                  \
                continue;                                                                          \
            }                                                                                      \
            for (Py_ssize_t u = 0; u < units; u++) {                                               \
                double m = 0;                                                                      \
                T l = INFINITY, h = -INFINITY;                                                     \
                int64_t below = 0;                                                                 \
                SUMS(row + u * inner, inner, NULL, &total[u], &squares[u], &m, &l, &h, &below);    \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_MOMENTS(moments_f, float, sums_f)
DEFINE_MOMENTS(moments_d, double, sums_d)

/* Every field of the packed vector but samples, for the flat (outer, units, inner) array a, into
 * out (zeroed); scratch holds the per-unit and histogram work (zeroed). Returns whether the data is
 * finite: only then is out right, otherwise the caller measures it another way. */
#define DEFINE_ACTIVATION(NAME, T, U, SUMS, HIST, UNITS, MOMENTS)                                  \
    CLONES static int NAME(const T *a, Py_ssize_t n, Py_ssize_t units, Py_ssize_t inner,           \
                           int per_unit, int code, T z, T o, T t, const U *table, unsigned shift,  \
                           Py_ssize_t slots, int hist,                                             \
                           int moments, int64_t *counts, int64_t *fired, int64_t *saturated,       \
                           double *total, double *squares, double *out)                            \
    {                                                                                              \
        const Py_ssize_t row = units * inner;                                                      \
        Py_ssize_t group = PIECE / row;                                                            \
        group = (group < 1 ? 1 : group) * row; /* whole rows, about a piece */                     \
        double s = 0, q = 0, m = 0;                                                                \
        T lo = INFINITY, hi = -INFINITY;                                                           \
        int64_t negative = 0, positive = 0, sat = 0;                                               \
        for (Py_ssize_t g = 0; g < n; g += group) {                                                \
            Py_ssize_t len = n - g < group ? n - g : group;                                        \
            for (Py_ssize_t start = 0; start < len; start += PIECE) {                              \
                Py_ssize_t size = len - start < PIECE ? len - start : PIECE;                       \
                T pl = INFINITY, ph = -INFINITY; /* this piece's extremes */                       \
                SUMS(a + g + start, size, NULL, &s, &q, &m, &pl, &ph, &negative);                  \
                lo = pl < lo ? pl : lo;                                                            \
                hi = ph > hi ? ph : hi;                                                            \
                if (hist) {                                                                        \
                    HIST((const U *)(a + g + start), size, table, shift, counts, slots);           \
                }                                                                                  \
            }                                                                                      \
            UNITS(a + g, len / row, units, inner, code, z, o, t, fired, saturated);                \
            if (moments) {                                                                         \
                MOMENTS(a + g, len / row, units, inner, total, squares);                           \
            }                                                                                      \
        }                                                                                          \
        /* Inf shows in the extremes, NaN in the sum of magnitudes (finite data cannot make it NaN; \
         * huge data may overflow the sums to Inf, as numpy's do) */                               \
        if (!(isfinite(lo) && isfinite(hi)) || isnan(m)) {                                         \
            return 0;                                                                              \
        }                                                                                          \
        for (Py_ssize_t u = 0; u < units; u++) {                                                   \
            positive += fired[u];                                                                  \
            sat += saturated[u];                                                                   \
        }                                                                                          \
        Py_ssize_t at = FIELDS;                                                                    \
        if (hist) { /* negative slots leftwards from the zero bucket, -0.0's in it */              \
            const Py_ssize_t zero = slots - 1, w = 2 * slots;                                      \
            for (Py_ssize_t v = 0; v < w; v++) {                                                   \
                int64_t sum = counts[v] + counts[w + v] + counts[2 * w + v] + counts[3 * w + v];   \
                out[at + (v < slots ? zero + v : zero - (v - slots))] += (double)sum;              \
            }                                                                                      \
            at += 2 * slots - 1;                                                                   \
        }                                                                                          \
        out[0] = (double)n;                                                                        \
        out[1] = s;                                                                                \
        out[2] = q;                                                                                \
        out[3] = m;                                                                                \
        out[4] = n ? lo : INFINITY;                                                                \
        out[5] = n ? hi : -INFINITY;                                                               \
        out[7] = (double)(n - positive - negative);                                                \
        out[8] = (double)positive;                                                                 \
        out[9] = (double)sat;                                                                      \
        if (per_unit) {                                                                            \
            for (Py_ssize_t u = 0; u < units; u++) {                                               \
                out[at + u] = (double)fired[u];                                                    \
                out[at + units + u] = (double)saturated[u];                                        \
            }                                                                                      \
            if (moments) {                                                                         \
                memcpy(out + at + 2 * units, total, units * sizeof(double));                       \
                memcpy(out + at + 3 * units, squares, units * sizeof(double));                     \
            }                                                                                      \
        }                                                                                          \
        return 1;                                                                                  \
    }

DEFINE_ACTIVATION(activation_f, float, uint32_t, sums_f, histogram_sparse_f, units_f, moments_f)
DEFINE_ACTIVATION(activation_d, double, uint64_t, sums_d, histogram_d, units_d, moments_d)

/* -- Python entry points ------------------------------------------------------------------------ */

static int
width_of(Py_buffer *b, int width, const char *what)
{
    if (width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "%s: width must be 4 (float32) or 8 (float64), got %d", what, width);
        return -1;
    }
    if (b->len % width) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %d-byte values", what, b->len,
                     width);
        return -1;
    }
    return 0;
}

/* releases the buffers of views[0..n) that were taken (obj set) */
static void
release_buffers(Py_buffer *views, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (views != NULL && views[i].obj != NULL) {
            PyBuffer_Release(&views[i]);
        }
    }
}

/* The buffers of the items of a sequence, C-contiguous (writable ones when asked), each a whole number of
 * width-byte values, and of sizes[i] bytes where sizes is given; None items are left untaken (obj NULL)
 * where none_ok. Returns 0, or -1 with an error set and every buffer it took released. */
static int
take_buffers(PyObject *seq, Py_buffer *views, Py_ssize_t n, int width, int writable, const Py_ssize_t *sizes,
             int none_ok, const char *what)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        views[i].obj = NULL;
        views[i].buf = NULL;
        if (item == Py_None && none_ok) {
            continue;
        }
        int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
        int taken = PyObject_GetBuffer(item, &views[i], flags) == 0;
        if (!taken || width_of(&views[i], width, what) < 0 || (sizes && views[i].len != sizes[i])) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError, "%s: item %zd has %zd bytes, expected %zd", what, i, views[i].len,
                             sizes[i]);
            }
            if (taken) {
                PyBuffer_Release(&views[i]);
            }
            views[i].obj = NULL;
            release_buffers(views, i);
            return -1;
        }
    }
    return 0;
}

/* The buffers of two sequences of n items: views[0..n) of first, views[n..2n) of second (when given),
 * each the size of the first's item of the same place; second's writable where asked, and None
 * (untaken) where none_ok. Returns the views, to be released with release_buffers(views, 2 * n) and
 * freed with PyMem_Free; NULL with an error set and nothing held. */
static Py_buffer *
take_pairs(PyObject *first, PyObject *second, Py_ssize_t n, int width, int writable, int none_ok,
           const char *what)
{
    Py_buffer *views = PyMem_Calloc(n ? 2 * n : 1, sizeof(Py_buffer)); /* zeroed: nothing taken */
    Py_ssize_t *sizes = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    if (views == NULL || sizes == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if (take_buffers(first, views, n, width, 0, NULL, 0, what) < 0) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        sizes[i] = views[i].len;
    }
    if (second != NULL && take_buffers(second, views + n, n, width, writable, sizes, none_ok, what) < 0) {
        release_buffers(views, n);
        goto fail;
    }
    PyMem_Free(sizes);
    return views;
fail:
    PyMem_Free(views);
    PyMem_Free(sizes);
    return NULL;
}

/* What columns and difference hold, released: the views of take_pairs (NULL: none), their two sequences
 * and the output buffer; returns result (a new reference to None, or NULL after an error). */
static PyObject *
release_pairs(PyObject *result, Py_buffer *views, Py_ssize_t n, PyObject *first, PyObject *second,
              Py_buffer *out)
{
    if (views != NULL) {
        release_buffers(views, 2 * n);
        PyMem_Free(views);
    }
    Py_XDECREF(first);
    Py_XDECREF(second);
    PyBuffer_Release(out);
    return result;
}

/* row (5 numbers) of columns(): (sum of squares, sum, sum of |x|, min, max) of the n values of width 4
 * or 8 at a, copied into copy as they are read unless copy is NULL */
static void
column_row(const void *a, Py_ssize_t n, void *copy, int width, double *row)
{
    double s = 0, q = 0, m = 0, lo, hi;
    if (width == 4) {
        columns_f((const float *)a, n, (float *)copy, &s, &q, &m, &lo, &hi);
    } else {
        columns_d((const double *)a, n, (double *)copy, &s, &q, &m, &lo, &hi);
    }
    row[0] = q;
    row[1] = s;
    row[2] = m;
    row[3] = lo;
    row[4] = hi;
}

/* The header (summary.HEADER) of n values from their column row c (sum of squares, sum, sum of |x|, min,
 * max): of sum, sum of |x|, min and max only those in mask (bits 1, 2, 4, 8; the others NaN: not
 * measured), zeros and positive not measured, nonfinite 0, or NaN when the sums are not finite (the caller
 * measures those values again: NaN or Inf among them, or sums that overflowed). Returns whether they are. */
static int
header_of(const double *c, int64_t n, int mask, double *row)
{
    int finite = isfinite(c[0]) && isfinite(c[1]) && isfinite(c[2]);
    row[0] = (double)n;
    row[1] = mask & 1 ? c[1] : NAN;
    row[2] = c[0];
    row[3] = mask & 2 ? c[2] : NAN;
    row[4] = mask & 4 ? c[3] : NAN;
    row[5] = mask & 8 ? c[4] : NAN;
    row[6] = finite ? 0 : NAN;
    row[7] = NAN;
    row[8] = NAN;
    row[9] = 0;
    row[10] = (double)n;
    return finite;
}

PyDoc_STRVAR(columns_doc,
"columns(arrays, width, out, copies=None)\n\n"
"For each contiguous float buffer of the sequence arrays (all of width 4: float32, or 8: float64), its\n"
"(sum of squares, sum, sum of |x|, min, max) into row i of out, a writable float64 buffer of\n"
"5 * len(arrays) numbers; with copies (a sequence as long, of buffers the size of each array, or None),\n"
"each array is also copied into its buffer as it is read. NaN shows in the sums only (it never wins a\n"
"comparison). One call for a whole list: a tensor costs no Python of its own.");

static PyObject *
columns(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *arrays, *copies = Py_None, *result = NULL;
    Py_buffer out;
    int width;
    if (!PyArg_ParseTuple(args, "Oiw*|O", &arrays, &width, &out, &copies)) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arrays, "columns: arrays must be a sequence");
    PyObject *into = copies == Py_None ? NULL : PySequence_Fast(copies, "columns: copies must be a sequence");
    Py_buffer *views = NULL;
    Py_ssize_t n = 0;
    if (seq == NULL || (copies != Py_None && into == NULL)) {
        goto done;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    if (out.len != 5 * n * (Py_ssize_t)sizeof(double) || (into && PySequence_Fast_GET_SIZE(into) != n)) {
        PyErr_SetString(PyExc_ValueError, "columns: out must hold 5 numbers per array, copies one per array");
        goto done;
    }
    if ((views = take_pairs(seq, into, n, width, 1, 1, "columns")) == NULL) {
        goto done;
    }
    double *rows = (double *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        /* copy NULL: none asked, or None */
        column_row(views[i].buf, views[i].len / width, views[n + i].buf, width, rows + 5 * i);
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    return release_pairs(result, views, n, seq, into, &out);
}

PyDoc_STRVAR(difference_doc,
"difference(a, b, width, out)\n\n"
"Sum of (a[i] - b[i])^2 into out[i] (a writable float64 buffer of len(a) numbers) for two sequences of\n"
"contiguous float buffers, pairwise of one size, all of one type.");

static PyObject *
difference(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *first, *second, *result = NULL;
    Py_buffer out;
    int width;
    if (!PyArg_ParseTuple(args, "OOiw*", &first, &second, &width, &out)) {
        return NULL;
    }
    PyObject *a = PySequence_Fast(first, "difference: a must be a sequence");
    PyObject *b = a ? PySequence_Fast(second, "difference: b must be a sequence") : NULL;
    Py_buffer *views = NULL;
    Py_ssize_t n = 0;
    if (a == NULL || b == NULL) {
        goto done;
    }
    n = PySequence_Fast_GET_SIZE(a);
    if (PySequence_Fast_GET_SIZE(b) != n || out.len != n * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "difference: a and b must be as long, out hold a number per pair");
        goto done;
    }
    if ((views = take_pairs(a, b, n, width, 0, 0, "difference")) == NULL) {
        goto done;
    }
    double *totals = (double *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const void *x = views[i].buf, *y = views[n + i].buf;
        totals[i] = width == 4 ? difference_f((const float *)x, (const float *)y, views[i].len / 4)
                               : difference_d((const double *)x, (const double *)y, views[i].len / 8);
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    return release_pairs(result, views, n, a, b, &out);
}

/* The arguments of columns_at and difference_at: n arrays, n being the length of the int64 buffers first,
 * other and third (addresses and value counts), of width 4 or 8, with per numbers each in out. Returns n,
 * or -1 with an error set. */
static Py_ssize_t
count_of(Py_buffer *first, Py_buffer *other, Py_buffer *third, int width, Py_buffer *out, Py_ssize_t per,
         const char *what)
{
    if (first->len % 8 || other->len != first->len || third->len != first->len) {
        PyErr_Format(PyExc_ValueError, "%s: addresses and value counts must be int64 buffers of one length",
                     what);
        return -1;
    }
    Py_ssize_t n = first->len / 8;
    if (width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "%s: width must be 4 (float32) or 8 (float64), got %d", what, width);
        return -1;
    }
    if (out->len != per * n * (Py_ssize_t)sizeof(double)) {
        PyErr_Format(PyExc_ValueError, "%s: out must hold %zd number(s) per array", what, per);
        return -1;
    }
    return n;
}

/* numbers per array in out: FIELDS where it holds a header row for each (n arrays), else per */
static Py_ssize_t
per_array(Py_buffer *addresses, Py_buffer *out, Py_ssize_t per)
{
    Py_ssize_t n = addresses->len / 8;
    return n && out->len == FIELDS * n * (Py_ssize_t)sizeof(double) ? FIELDS : per;
}

/* what columns_at and difference_at return: with header rows (per == FIELDS), how many were not finite */
static PyObject *
rows_written(Py_ssize_t per, Py_ssize_t bad)
{
    if (per == FIELDS) {
        return PyLong_FromSsize_t(bad);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(columns_at_doc,
"columns_at(addresses, counts, width, out, copies, fields=15) -> None or not finite\n\n"
"columns() for memory given by address: addresses and counts are int64 buffers (where each array\n"
"starts, how many values of width 4 or 8 it holds), copies an int64 buffer of where each is also\n"
"copied (0: not copied). The caller keeps every address valid, contiguous and of that type for the\n"
"call: an array library's tensors are read without a buffer object made for each. Where out holds\n"
"11 numbers per array, each gets its header row (summary.HEADER) instead, with of sum, sum of |x|,\n"
"min and max those in fields (bits 1, 2, 4, 8; the others NaN), and a NaN non-finite count where its\n"
"sums are not finite (to be measured again); that returns how many are not.");

static PyObject *
columns_at(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer at, counts, out, into;
    int width, mask = 15;
    if (!PyArg_ParseTuple(args, "y*y*iw*y*|i", &at, &counts, &width, &out, &into, &mask)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t per = per_array(&at, &out, 5), bad = 0;
    Py_ssize_t n = count_of(&at, &counts, &into, width, &out, per, "columns_at");
    if (n < 0) {
        goto done;
    }
    const int64_t *address = (const int64_t *)at.buf, *size = (const int64_t *)counts.buf;
    const int64_t *copy = (const int64_t *)into.buf;
    double *rows = (double *)out.buf, c[5];
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double *row = per == 5 ? rows + 5 * i : c;
        column_row((const void *)(intptr_t)address[i], size[i], (void *)(intptr_t)copy[i], width, row);
        if (per == FIELDS) {
            bad += !header_of(c, size[i], mask, rows + FIELDS * i);
        }
    }
    Py_END_ALLOW_THREADS
    result = rows_written(per, bad);
done:
    PyBuffer_Release(&at);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&out);
    PyBuffer_Release(&into);
    return result;
}

PyDoc_STRVAR(difference_at_doc,
"difference_at(a, b, counts, width, out) -> None or not finite\n\n"
"difference() for memory given by address: a, b and counts int64 buffers (the pairs' addresses, and\n"
"how many values of width 4 or 8 each pair holds); the caller keeps them valid for the call. Where out\n"
"holds 11 numbers per pair, each gets the header row of its difference (count, sum of squares,\n"
"non-finite count 0, saturated 0, samples; the rest NaN), its non-finite count NaN where the sum is not\n"
"finite (to be counted again); that returns how many are not.");

static PyObject *
difference_at(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer first, second, counts, out;
    int width;
    if (!PyArg_ParseTuple(args, "y*y*y*iw*", &first, &second, &counts, &width, &out)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t per = per_array(&first, &out, 1), bad = 0;
    Py_ssize_t n = count_of(&first, &second, &counts, width, &out, per, "difference_at");
    if (n < 0) {
        goto done;
    }
    const int64_t *a = (const int64_t *)first.buf, *b = (const int64_t *)second.buf;
    const int64_t *size = (const int64_t *)counts.buf;
    double *totals = (double *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double q = width == 4 ? difference_f((const float *)(intptr_t)a[i], (const float *)(intptr_t)b[i], size[i])
                              : difference_d((const double *)(intptr_t)a[i], (const double *)(intptr_t)b[i],
                                             size[i]);
        if (per == 1) {
            totals[i] = q;
        } else {
            double c[5] = {q, 0, 0, 0, 0}; /* the sum of squares alone */
            bad += !header_of(c, size[i], 0, totals + FIELDS * i);
        }
    }
    Py_END_ALLOW_THREADS
    result = rows_written(per, bad);
done:
    PyBuffer_Release(&first);
    PyBuffer_Release(&second);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(activation_doc,
"activation(a, width, units, inner, per_unit, code, zero, one, threshold, table, shift, slots,\n"
"           hist, moments, out) -> finite\n\n"
"Every field of the packed summary vector but samples, written into the float64 buffer out (sized\n"
"for the layout), for the contiguous float buffer a seen as (outer, units, inner). False when a\n"
"holds NaN or Inf (out is then not to be used).");

static PyObject *
activation(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer a, table, out;
    int width, per_unit, code, hist, moments;
    Py_ssize_t units, inner;
    double z, o, t;
    unsigned int shift;
    Py_ssize_t slots;
    if (!PyArg_ParseTuple(args, "y*innpidddy*Inppw*", &a, &width, &units, &inner, &per_unit, &code, &z, &o, &t,
                          &table, &shift, &slots, &hist, &moments, &out)) {
        return NULL;
    }
    PyObject *result = NULL;
    int64_t *work = NULL;
    int finite = 0;
    Py_ssize_t n = 0, nb = 2 * slots - 1;
    if (width_of(&a, width, "activation") < 0) {
        goto done;
    }
    n = a.len / width;
    /* table: an entry of the data's width per value of the top bits (bits >> shift), each sending
     * every value of its key to an index below 2 * slots (compiled.py checks that as it builds it) */
    unsigned bits = 8 * width;
    if (units < 1 || inner < 1 || n % (units * inner) || slots < 2 || shift >= bits
        || (uint64_t)table.len / width != (UINT64_MAX >> (64 - bits) >> shift) + 1) {
        PyErr_SetString(PyExc_ValueError, "activation: the shape does not divide the data, or bad tables");
        goto done;
    }
    Py_ssize_t need = FIELDS + (hist ? nb : 0) + (per_unit ? units * (2 + 2 * moments) : 0);
    if (out.len != need * (Py_ssize_t)sizeof(double)) {
        PyErr_Format(PyExc_ValueError, "activation: out holds %zd numbers, the layout %zd",
                     out.len / (Py_ssize_t)sizeof(double), need);
        goto done;
    }
    /* 4 sub-histograms of 2 slots, fired, saturated, then two double arrays of units (same size as
     * int64) */
    Py_ssize_t words = (hist ? 8 * slots : 0) + 4 * units;
    work = PyMem_Calloc(words, sizeof(int64_t));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *counts = work, *fired = work + (hist ? 8 * slots : 0), *saturated = fired + units;
    double *total = (double *)(saturated + units), *squares = total + units;
    memset(out.buf, 0, out.len);
    Py_BEGIN_ALLOW_THREADS
    if (width == 4) {
        finite = activation_f((const float *)a.buf, n, units, inner, per_unit, code, (float)z, (float)o, (float)t,
                              (const uint32_t *)table.buf, shift, slots, hist, moments, counts, fired,
                              saturated, total, squares, (double *)out.buf);
    } else {
        finite = activation_d((const double *)a.buf, n, units, inner, per_unit, code, z, o, t,
                              (const uint64_t *)table.buf, shift, slots, hist, moments, counts, fired,
                              saturated, total, squares, (double *)out.buf);
    }
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(finite);
done:
    PyMem_Free(work);
    PyBuffer_Release(&a);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"columns", columns, METH_VARARGS, columns_doc},
    {"difference", difference, METH_VARARGS, difference_doc},
    {"columns_at", columns_at, METH_VARARGS, columns_at_doc},
    {"difference_at", difference_at, METH_VARARGS, difference_at_doc},
    {"activation", activation, METH_VARARGS, activation_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "Single-pass statistics kernels for host arrays.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
#if defined(GCC_X86_64_LINUX) && !defined(NNHEALTH_SCALAR)
    for (int mask = 0; mask < 256; mask++) {
        int k = 0;
        for (int lane = 0; lane < 8; lane++) {
            if (mask >> lane & 1) {
                nonzero_lanes[mask][k++] = (uint8_t)lane;
            }
        }
    }
    __builtin_cpu_init();
    packs = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
    PyObject *m = PyModule_Create(&module);
    /* columns_at and difference_at write header rows (an extension built before them does not) */
    if (m != NULL && PyModule_AddIntConstant(m, "HEADER_ROWS", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
