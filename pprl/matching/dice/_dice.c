/*
 * Native Dice-coefficient kernel for pprl.matching.dice.similarity.
 *
 * What: for a block of rows of a left encoding array (rows sorted by
 * popcount), find every row of the right array (also sorted by popcount,
 * restricted to a per-row popcount window computed in Python) whose Dice
 * coefficient 2|A & B| / (|A| + |B|) reaches a threshold; optionally keep only
 * the best k per left row.
 *
 * Why native: the comparison loop is the whole cost of linkage.  Here it is a
 * tight loop over 64-bit words with hardware popcount, four left rows at a
 * time so each right row is read once per four comparisons, with the GIL
 * released so Python threads can run blocks on every core.
 *
 * Exactness: a pair is kept iff |A & B| >= need[|A| + |B|], where need[s] is
 * the smallest intersection with (double)(2 * I) / (double)s >= threshold,
 * found with that very double expression; the similarity reported is that
 * expression too.  So results are bit-identical to anonlink's C++ and to the
 * numpy path (no fast-math, no FP contraction: see setup.py).
 *
 * Portability: plain C99 plus GCC/Clang builtins.  On x86-64 the variant is
 * picked at run time with __builtin_cpu_supports: AVX-512 VPOPCNTDQ, else the
 * POPCNT instruction, else portable code; other architectures (aarch64, ...)
 * get the portable code, which their compilers turn into native popcounts.
 * No hand-written assembly.
 *
 * Interface (private; pprl.matching.dice.similarity validates dtypes and shapes):
 *   isas() -> tuple[str, ...]        variants usable on this CPU, best last
 *   need_table(threshold, nbits) -> bytes   uint32[2 * nbits + 1]
 *   pairs(a, a_cnt, a_idx, b, b_cnt, b_rest, b_idx, lo, hi, need, nwords, r0, r1,
 *         delta, k, isa) -> (bytes i, bytes j, bytes sim)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define PPRL_GNUC 1
#define PPRL_INLINE static inline __attribute__((always_inline))
#define PPRL_NOINLINE static __attribute__((noinline))
#define PPRL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define PPRL_GNUC 0
#define PPRL_INLINE static inline
#define PPRL_NOINLINE static
#define PPRL_UNLIKELY(x) (x)
#endif

#if PPRL_GNUC && defined(__x86_64__)
#define PPRL_X86 1
#include <immintrin.h>
#else
#define PPRL_X86 0
#endif

/* AVX-512 VPOPCNTDQ needs GCC >= 8 or Clang >= 6 for the target attribute. */
#if PPRL_X86 && (defined(__clang__) ? (__clang_major__ >= 6) : (__GNUC__ >= 8))
#define PPRL_AVX512 1
#define PPRL_TARGET_AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))
#else
#define PPRL_AVX512 0
#endif

enum { ISA_GENERIC = 0, ISA_POPCNT = 1, ISA_AVX512 = 2 };
static const char *const ISA_NAMES[] = {"generic", "popcnt", "avx512"};

#define NEVER UINT32_MAX /* need[] entry: no intersection reaches the threshold */
#define GROUP 4          /* left rows compared together against each right row */
/* The AVX-512 path packs four counts into 16-bit fields: rows of at most
 * 1023 words (65472 bits) cannot overflow them. */
#define AVX512_MAX_WORDS 1023

/* ------------------------------------------------------------------------ */
/* Popcount of one word.                                                     */

PPRL_INLINE uint64_t
popcount64(uint64_t x)
{
#if PPRL_GNUC
    return (uint64_t)__builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (x * 0x0101010101010101ULL) >> 56;
#endif
}

/* ------------------------------------------------------------------------ */
/* Inputs, outputs and the per-row top-k heaps.                              */

typedef struct {
    const uint64_t *a, *b;         /* rows in popcount order, nwords each */
    const uint32_t *a_cnt, *b_cnt; /* popcounts, same order */
    const uint32_t *b_rest;        /* popcounts of words nwords/2 .. nwords-1 */
    const int64_t *a_idx, *b_idx;  /* original row numbers, same order */
    const int64_t *lo, *hi;        /* per left row: right rows [lo, hi) */
    const uint32_t *need;          /* need[|A| + |B|] */
    Py_ssize_t nwords;
    double delta; /* anonlink's 1/t - 1 for its popcount window; < 0: none */
    Py_ssize_t k; /* best k per left row; < 0: all */
} Ctx;

typedef struct {
    int64_t *i, *j;
    double *s;
    size_t n, cap;
    int oom;
} Out;

typedef struct {
    double *s;
    int64_t *j;
    Py_ssize_t n;
} Heap;

static void
out_free(Out *o)
{
    free(o->i);
    free(o->j);
    free(o->s);
    o->i = o->j = NULL;
    o->s = NULL;
}

static void
out_push(Out *o, int64_t i, int64_t j, double s)
{
    if (o->oom)
        return;
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 1024;
        int64_t *ni = (int64_t *)realloc(o->i, cap * sizeof(int64_t));
        if (ni == NULL) {
            o->oom = 1;
            return;
        }
        o->i = ni;
        int64_t *nj = (int64_t *)realloc(o->j, cap * sizeof(int64_t));
        if (nj == NULL) {
            o->oom = 1;
            return;
        }
        o->j = nj;
        double *ns = (double *)realloc(o->s, cap * sizeof(double));
        if (ns == NULL) {
            o->oom = 1;
            return;
        }
        o->s = ns;
        o->cap = cap;
    }
    o->i[o->n] = i;
    o->j[o->n] = j;
    o->s[o->n] = s;
    o->n++;
}

/* Heap order: the root is the worst kept pair (lowest similarity, then the
 * highest right index), so the best k by (-sim, j) survive, as anonlink's
 * priority queue keeps them. */
static inline int
heap_worse(double s1, int64_t j1, double s2, int64_t j2)
{
    return s1 < s2 || (s1 == s2 && j1 > j2);
}

static void
heap_offer(Heap *h, Py_ssize_t k, double s, int64_t j)
{
    Py_ssize_t pos;
    if (h->n < k) {
        pos = h->n++;
        while (pos > 0) {
            Py_ssize_t up = (pos - 1) / 2;
            if (!heap_worse(s, j, h->s[up], h->j[up]))
                break;
            h->s[pos] = h->s[up];
            h->j[pos] = h->j[up];
            pos = up;
        }
    }
    else if (k > 0 && heap_worse(h->s[0], h->j[0], s, j)) {
        pos = 0;
        for (;;) {
            Py_ssize_t c = 2 * pos + 1;
            if (c >= h->n)
                break;
            if (c + 1 < h->n && heap_worse(h->s[c + 1], h->j[c + 1], h->s[c], h->j[c]))
                c++;
            if (!heap_worse(h->s[c], h->j[c], s, j))
                break;
            h->s[pos] = h->s[c];
            h->j[pos] = h->j[c];
            pos = c;
        }
    }
    else {
        return;
    }
    h->s[pos] = s;
    h->j[pos] = j;
}

/* A pair that reached the threshold: apply anonlink's window if asked, then
 * record it (or offer it to the row's heap).  Rare, so kept out of line. */
PPRL_NOINLINE void
accept(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, Py_ssize_t jj, uint64_t inter)
{
    uint32_t pa = c->a_cnt[r], pb = c->b_cnt[jj];
    if (c->delta >= 0.0) {
        /* anonlink: abs_diff(pa, pb) <= (uint32_t)(2 * pa * (1/t - 1)); the
         * conversion overflows (undefined in C++) from 2**32 on: no window. */
        double limit = (double)(2u * pa) * c->delta;
        if (limit < 4294967296.0) {
            uint32_t diff = pa > pb ? pa - pb : pb - pa;
            if (diff > (uint32_t)limit)
                return;
        }
    }
    uint64_t total = (uint64_t)pa + pb;
    double sim = total ? (double)(2 * inter) / (double)total : 0.0;
    if (c->k < 0)
        out_push(o, c->a_idx[r], c->b_idx[jj], sim);
    else
        heap_offer(h, c->k, sim, c->b_idx[jj]);
}

static void
flush_heap(const Ctx *c, Out *o, Heap *h, Py_ssize_t r)
{
    for (Py_ssize_t e = 0; e < h->n; e++)
        out_push(o, c->a_idx[r], h->j[e], h->s[e]);
    h->n = 0;
}

/* Right rows any of left rows r..r+g-1 can match. */
static inline void
group_window(const Ctx *c, Py_ssize_t r, int g, Py_ssize_t *lo, Py_ssize_t *hi)
{
    Py_ssize_t l = (Py_ssize_t)c->lo[r], u = (Py_ssize_t)c->hi[r];
    for (int q = 1; q < g; q++) {
        if ((Py_ssize_t)c->lo[r + q] < l)
            l = (Py_ssize_t)c->lo[r + q];
        if ((Py_ssize_t)c->hi[r + q] > u)
            u = (Py_ssize_t)c->hi[r + q];
    }
    *lo = l;
    *hi = u;
}

/* ------------------------------------------------------------------------ */
/* Scalar kernels: four left rows against each right row, then one left row. */
/* Written once, inlined into each target-specific block function below so   */
/* the compiler emits POPCNT (or NEON, ...) there and specialises W.          */

/* Early exit: after the first H = W / 2 words, a pair can gain at most
 * min(popcount of the rest of A, popcount of the rest of B) more common bits;
 * when that cannot reach need[] for any row of the group, the second half is
 * skipped.  At the usual thresholds (0.7 and up) this skips most of it. */
#define PPRL_MIN(x, y) ((x) < (y) ? (x) : (y))

PPRL_INLINE uint32_t
rest_popcount(const uint64_t *row, Py_ssize_t h, Py_ssize_t w)
{
    uint64_t cnt = 0;
    for (Py_ssize_t i = h; i < w; i++)
        cnt += popcount64(row[i]);
    return (uint32_t)cnt;
}

PPRL_INLINE void
scan4_scalar(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    const Py_ssize_t H = W >= 4 ? W / 2 : W;
    const uint64_t *a0 = c->a + r * W, *a1 = a0 + W, *a2 = a1 + W, *a3 = a2 + W;
    const uint32_t *n0 = c->need + c->a_cnt[r], *n1 = c->need + c->a_cnt[r + 1];
    const uint32_t *n2 = c->need + c->a_cnt[r + 2], *n3 = c->need + c->a_cnt[r + 3];
    const uint64_t ra0 = rest_popcount(a0, H, W), ra1 = rest_popcount(a1, H, W);
    const uint64_t ra2 = rest_popcount(a2, H, W), ra3 = rest_popcount(a3, H, W);
    Py_ssize_t lo, hi;
    group_window(c, r, GROUP, &lo, &hi);
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
        for (Py_ssize_t w = 0; w < H; w++) {
            const uint64_t x = bj[w];
            c0 += popcount64(a0[w] & x);
            c1 += popcount64(a1[w] & x);
            c2 += popcount64(a2[w] & x);
            c3 += popcount64(a3[w] & x);
        }
        const uint32_t pb = c->b_cnt[j];
        if (H < W) {
            const uint64_t rb = c->b_rest[j];
            const int alive =
                (c0 + PPRL_MIN(ra0, rb) >= n0[pb]) | (c1 + PPRL_MIN(ra1, rb) >= n1[pb]) |
                (c2 + PPRL_MIN(ra2, rb) >= n2[pb]) | (c3 + PPRL_MIN(ra3, rb) >= n3[pb]);
            if (!alive)
                continue;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
            for (Py_ssize_t w = H; w < W; w++) {
                const uint64_t x = bj[w];
                c0 += popcount64(a0[w] & x);
                c1 += popcount64(a1[w] & x);
                c2 += popcount64(a2[w] & x);
                c3 += popcount64(a3[w] & x);
            }
        }
        if (PPRL_UNLIKELY(c0 >= n0[pb]))
            accept(c, o, h + 0, r + 0, j, c0);
        if (PPRL_UNLIKELY(c1 >= n1[pb]))
            accept(c, o, h + 1, r + 1, j, c1);
        if (PPRL_UNLIKELY(c2 >= n2[pb]))
            accept(c, o, h + 2, r + 2, j, c2);
        if (PPRL_UNLIKELY(c3 >= n3[pb]))
            accept(c, o, h + 3, r + 3, j, c3);
    }
}

PPRL_INLINE void
scan1_scalar(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    const Py_ssize_t H = W >= 4 ? W / 2 : W;
    const uint64_t *a0 = c->a + r * W;
    const uint32_t *n0 = c->need + c->a_cnt[r];
    const uint64_t ra0 = rest_popcount(a0, H, W);
    const Py_ssize_t lo = (Py_ssize_t)c->lo[r], hi = (Py_ssize_t)c->hi[r];
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        uint64_t c0 = 0, c1 = 0;
        Py_ssize_t w = 0;
        for (; w + 1 < H; w += 2) {
            c0 += popcount64(a0[w] & bj[w]);
            c1 += popcount64(a0[w + 1] & bj[w + 1]);
        }
        if (w < H)
            c0 += popcount64(a0[w] & bj[w]);
        c0 += c1;
        const uint32_t pb = c->b_cnt[j];
        if (H < W) {
            if (c0 + PPRL_MIN(ra0, (uint64_t)c->b_rest[j]) < n0[pb])
                continue;
            for (w = H; w < W; w++)
                c0 += popcount64(a0[w] & bj[w]);
        }
        if (PPRL_UNLIKELY(c0 >= n0[pb]))
            accept(c, o, h, r, j, c0);
    }
}

/* Rows r0..r1-1 (popcount order) in groups of four, then the remainder. */
#define PPRL_BLOCK_BODY(SCAN4, SCAN1, W)                                     \
    do {                                                                     \
        Py_ssize_t r = r0;                                                   \
        for (; r + GROUP <= r1; r += GROUP) {                                \
            SCAN4(c, o, h, r, W);                                            \
            if (c->k >= 0)                                                   \
                for (int q = 0; q < GROUP; q++)                              \
                    flush_heap(c, o, h + q, r + q);                          \
        }                                                                    \
        for (; r < r1; r++) {                                                \
            SCAN1(c, o, h, r, W);                                            \
            if (c->k >= 0)                                                   \
                flush_heap(c, o, h, r);                                      \
        }                                                                    \
    } while (0)

/* Specialise the common CLK lengths (512, 1024, 2048, 4096 bits). */
#define PPRL_BLOCK_DISPATCH(SCAN4, SCAN1)                                    \
    switch (c->nwords) {                                                     \
    case 8:                                                                  \
        PPRL_BLOCK_BODY(SCAN4, SCAN1, 8);                                    \
        break;                                                               \
    case 16:                                                                 \
        PPRL_BLOCK_BODY(SCAN4, SCAN1, 16);                                   \
        break;                                                               \
    case 32:                                                                 \
        PPRL_BLOCK_BODY(SCAN4, SCAN1, 32);                                   \
        break;                                                               \
    case 64:                                                                 \
        PPRL_BLOCK_BODY(SCAN4, SCAN1, 64);                                   \
        break;                                                               \
    default:                                                                 \
        PPRL_BLOCK_BODY(SCAN4, SCAN1, c->nwords);                            \
    }

static void
block_generic(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BLOCK_DISPATCH(scan4_scalar, scan1_scalar)
}

#if PPRL_X86
__attribute__((target("popcnt"))) static void
block_popcnt(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BLOCK_DISPATCH(scan4_scalar, scan1_scalar)
}
#endif

/* ------------------------------------------------------------------------ */
/* AVX-512 VPOPCNTDQ: eight words per instruction; the four counts of a      */
/* group are packed into 16-bit fields so one horizontal sum serves four.    */

#if PPRL_AVX512
PPRL_TARGET_AVX512 PPRL_INLINE __m512i
and_popcnt(__m512i acc, __m512i x, __m512i y)
{
    return _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_and_si512(x, y)));
}

PPRL_TARGET_AVX512 PPRL_INLINE void
scan4_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    const Py_ssize_t V = W / 8;
    const unsigned tail = (unsigned)(W % 8);
    const __mmask8 tm = (__mmask8)((1u << tail) - 1u);
    const uint64_t *a0 = c->a + r * W, *a1 = a0 + W, *a2 = a1 + W, *a3 = a2 + W;
    const uint32_t *n0 = c->need + c->a_cnt[r], *n1 = c->need + c->a_cnt[r + 1];
    const uint32_t *n2 = c->need + c->a_cnt[r + 2], *n3 = c->need + c->a_cnt[r + 3];
    Py_ssize_t lo, hi;
    group_window(c, r, GROUP, &lo, &hi);
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
        for (Py_ssize_t v = 0; v < V; v++) {
            const __m512i x = _mm512_loadu_si512((const void *)(bj + 8 * v));
            s0 = and_popcnt(s0, x, _mm512_loadu_si512((const void *)(a0 + 8 * v)));
            s1 = and_popcnt(s1, x, _mm512_loadu_si512((const void *)(a1 + 8 * v)));
            s2 = and_popcnt(s2, x, _mm512_loadu_si512((const void *)(a2 + 8 * v)));
            s3 = and_popcnt(s3, x, _mm512_loadu_si512((const void *)(a3 + 8 * v)));
        }
        if (tail) {
            const __m512i x = _mm512_maskz_loadu_epi64(tm, bj + 8 * V);
            s0 = and_popcnt(s0, x, _mm512_maskz_loadu_epi64(tm, a0 + 8 * V));
            s1 = and_popcnt(s1, x, _mm512_maskz_loadu_epi64(tm, a1 + 8 * V));
            s2 = and_popcnt(s2, x, _mm512_maskz_loadu_epi64(tm, a2 + 8 * V));
            s3 = and_popcnt(s3, x, _mm512_maskz_loadu_epi64(tm, a3 + 8 * V));
        }
        const __m512i packed = _mm512_or_si512(
            _mm512_or_si512(s0, _mm512_slli_epi64(s1, 16)),
            _mm512_or_si512(_mm512_slli_epi64(s2, 32), _mm512_slli_epi64(s3, 48)));
        const uint64_t sums = (uint64_t)_mm512_reduce_add_epi64(packed);
        const uint64_t c0 = sums & 0xFFFF, c1 = (sums >> 16) & 0xFFFF;
        const uint64_t c2 = (sums >> 32) & 0xFFFF, c3 = sums >> 48;
        const uint32_t pb = c->b_cnt[j];
        if (PPRL_UNLIKELY(c0 >= n0[pb]))
            accept(c, o, h + 0, r + 0, j, c0);
        if (PPRL_UNLIKELY(c1 >= n1[pb]))
            accept(c, o, h + 1, r + 1, j, c1);
        if (PPRL_UNLIKELY(c2 >= n2[pb]))
            accept(c, o, h + 2, r + 2, j, c2);
        if (PPRL_UNLIKELY(c3 >= n3[pb]))
            accept(c, o, h + 3, r + 3, j, c3);
    }
}

PPRL_TARGET_AVX512 PPRL_INLINE void
scan1_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    const Py_ssize_t V = W / 8;
    const unsigned tail = (unsigned)(W % 8);
    const __mmask8 tm = (__mmask8)((1u << tail) - 1u);
    const uint64_t *a0 = c->a + r * W;
    const uint32_t *n0 = c->need + c->a_cnt[r];
    const Py_ssize_t lo = (Py_ssize_t)c->lo[r], hi = (Py_ssize_t)c->hi[r];
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        __m512i s0 = _mm512_setzero_si512();
        for (Py_ssize_t v = 0; v < V; v++)
            s0 = and_popcnt(s0, _mm512_loadu_si512((const void *)(bj + 8 * v)),
                            _mm512_loadu_si512((const void *)(a0 + 8 * v)));
        if (tail)
            s0 = and_popcnt(s0, _mm512_maskz_loadu_epi64(tm, bj + 8 * V),
                            _mm512_maskz_loadu_epi64(tm, a0 + 8 * V));
        const uint64_t c0 = (uint64_t)_mm512_reduce_add_epi64(s0);
        if (PPRL_UNLIKELY(c0 >= n0[c->b_cnt[j]]))
            accept(c, o, h, r, j, c0);
    }
}

PPRL_TARGET_AVX512 static void
block_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BLOCK_DISPATCH(scan4_avx512, scan1_avx512)
}
#endif

/* ------------------------------------------------------------------------ */
/* Run-time dispatch.                                                        */

static int
isa_supported(int isa)
{
    switch (isa) {
    case ISA_GENERIC:
        return 1;
#if PPRL_X86
    case ISA_POPCNT:
        __builtin_cpu_init();
        return __builtin_cpu_supports("popcnt") != 0;
#endif
#if PPRL_AVX512
    case ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
    default:
        return 0;
    }
}

static PyObject *
py_isas(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int isa = ISA_GENERIC; isa <= ISA_AVX512; isa++) {
        if (!isa_supported(isa))
            continue;
        PyObject *name = PyUnicode_FromString(ISA_NAMES[isa]);
        if (name == NULL || PyList_Append(out, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *tuple = PyList_AsTuple(out);
    Py_DECREF(out);
    return tuple;
}

/* need[s] for s = 0 .. 2 * nbits: the smallest I with
 * (double)(2 * I) / (double)s >= t (I <= s / 2), or NEVER.  s = 0 (two empty
 * filters) has similarity 0.0. */
static PyObject *
py_need_table(PyObject *self, PyObject *args)
{
    (void)self;
    double t;
    Py_ssize_t nbits;
    if (!PyArg_ParseTuple(args, "dn:need_table", &t, &nbits))
        return NULL;
    if (!(t >= 0.0 && t <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "threshold must be in [0, 1]");
        return NULL;
    }
    if (nbits < 0 || nbits > (Py_ssize_t)(UINT32_MAX / 4)) {
        PyErr_SetString(PyExc_ValueError, "nbits out of range");
        return NULL;
    }
    Py_ssize_t size = 2 * nbits + 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size * (Py_ssize_t)sizeof(uint32_t));
    if (out == NULL)
        return NULL;
    uint32_t *need = (uint32_t *)PyBytes_AS_STRING(out);
    need[0] = 0.0 >= t ? 0 : NEVER;
    for (Py_ssize_t s = 1; s < size; s++) {
        const uint64_t half = (uint64_t)s / 2;
        double guess = t * (double)s / 2.0;
        uint64_t i = guess <= 0.0 ? 0 : (uint64_t)guess;
        if (i > half)
            i = half;
        while (i > 0 && (double)(2 * (i - 1)) / (double)s >= t)
            i--;
        while (i <= half && !((double)(2 * i) / (double)s >= t))
            i++;
        need[s] = i <= half ? (uint32_t)i : NEVER;
    }
    return out;
}

/* A buffer must hold exactly `items` items and be aligned for them. */
static int
check_len(const Py_buffer *buf, Py_ssize_t items, Py_ssize_t itemsize, const char *name)
{
    if (buf->len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s has %zd bytes, expected %zd", name, buf->len,
                     items * itemsize);
        return -1;
    }
    if ((uintptr_t)buf->buf % (uintptr_t)itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s is not aligned to %zd bytes", name, itemsize);
        return -1;
    }
    return 0;
}

static PyObject *
py_pairs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer a = {0}, a_cnt = {0}, a_idx = {0}, b = {0}, b_cnt = {0}, b_rest = {0}, b_idx = {0};
    Py_buffer lo = {0}, hi = {0}, need = {0};
    Py_ssize_t nwords, r0, r1, k;
    double delta;
    int isa;
    PyObject *result = NULL;
    Out out = {0};
    Heap heaps[GROUP] = {{0}};
    double *heap_s = NULL;
    int64_t *heap_j = NULL;

    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*nnndni:pairs", &a, &a_cnt, &a_idx, &b,
                          &b_cnt, &b_rest, &b_idx, &lo, &hi, &need, &nwords, &r0, &r1, &delta, &k,
                          &isa))
        return NULL;

    if (nwords < 1 || nwords > (Py_ssize_t)(UINT32_MAX / 256)) {
        PyErr_SetString(PyExc_ValueError, "nwords out of range");
        goto done;
    }
    const Py_ssize_t n = a_cnt.len / (Py_ssize_t)sizeof(uint32_t);
    const Py_ssize_t m = b_cnt.len / (Py_ssize_t)sizeof(uint32_t);
    const uint32_t nbits = (uint32_t)(64 * nwords);
    if (check_len(&a, n * nwords, 8, "a") || check_len(&a_cnt, n, 4, "a_cnt") ||
        check_len(&a_idx, n, 8, "a_idx") || check_len(&lo, n, 8, "lo") ||
        check_len(&hi, n, 8, "hi") || check_len(&b, m * nwords, 8, "b") ||
        check_len(&b_cnt, m, 4, "b_cnt") || check_len(&b_rest, m, 4, "b_rest") ||
        check_len(&b_idx, m, 8, "b_idx") ||
        check_len(&need, 2 * (Py_ssize_t)nbits + 1, 4, "need"))
        goto done;
    if (r0 < 0 || r1 < r0 || r1 > n) {
        PyErr_SetString(PyExc_ValueError, "row range out of bounds");
        goto done;
    }
    if (!isa_supported(isa) || (isa == ISA_AVX512 && nwords > AVX512_MAX_WORDS)) {
        PyErr_Format(PyExc_ValueError, "kernel variant %d is not usable here", isa);
        goto done;
    }
    /* Everything the loops index with must be in range. */
    const uint32_t *ac = (const uint32_t *)a_cnt.buf, *bc = (const uint32_t *)b_cnt.buf;
    const int64_t *los = (const int64_t *)lo.buf, *his = (const int64_t *)hi.buf;
    for (Py_ssize_t r = r0; r < r1; r++) {
        if (ac[r] > nbits || los[r] < 0 || his[r] < los[r] || his[r] > m) {
            PyErr_SetString(PyExc_ValueError, "popcount or window out of range");
            goto done;
        }
    }
    const uint32_t *brest = (const uint32_t *)b_rest.buf;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (bc[j] > nbits || brest[j] > bc[j]) {
            PyErr_SetString(PyExc_ValueError, "popcount out of range");
            goto done;
        }
    }
    if (k >= m)
        k = -1; /* the best m of m is all of them */
    if (k > 0) {
        heap_s = (double *)malloc((size_t)(GROUP * k) * sizeof(double));
        heap_j = (int64_t *)malloc((size_t)(GROUP * k) * sizeof(int64_t));
        if (heap_s == NULL || heap_j == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (int q = 0; q < GROUP; q++) {
            heaps[q].s = heap_s + q * k;
            heaps[q].j = heap_j + q * k;
        }
    }

    const Ctx ctx = {
        .a = (const uint64_t *)a.buf,
        .b = (const uint64_t *)b.buf,
        .a_cnt = ac,
        .b_cnt = bc,
        .b_rest = brest,
        .a_idx = (const int64_t *)a_idx.buf,
        .b_idx = (const int64_t *)b_idx.buf,
        .lo = los,
        .hi = his,
        .need = (const uint32_t *)need.buf,
        .nwords = nwords,
        .delta = delta,
        .k = k,
    };

    if (k != 0) {
        Py_BEGIN_ALLOW_THREADS
        switch (isa) {
#if PPRL_AVX512
        case ISA_AVX512:
            block_avx512(&ctx, &out, heaps, r0, r1);
            break;
#endif
#if PPRL_X86
        case ISA_POPCNT:
            block_popcnt(&ctx, &out, heaps, r0, r1);
            break;
#endif
        default:
            block_generic(&ctx, &out, heaps, r0, r1);
        }
        Py_END_ALLOW_THREADS
    }
    if (out.oom) {
        PyErr_NoMemory();
        goto done;
    }
    {
        const Py_ssize_t cnt = (Py_ssize_t)out.n;
        PyObject *bi = PyBytes_FromStringAndSize((const char *)out.i, cnt * 8);
        PyObject *bj = PyBytes_FromStringAndSize((const char *)out.j, cnt * 8);
        PyObject *bs = PyBytes_FromStringAndSize((const char *)out.s, cnt * 8);
        if (bi != NULL && bj != NULL && bs != NULL)
            result = PyTuple_Pack(3, bi, bj, bs);
        Py_XDECREF(bi);
        Py_XDECREF(bj);
        Py_XDECREF(bs);
    }

done:
    out_free(&out);
    free(heap_s);
    free(heap_j);
    PyBuffer_Release(&a);
    PyBuffer_Release(&a_cnt);
    PyBuffer_Release(&a_idx);
    PyBuffer_Release(&b);
    PyBuffer_Release(&b_cnt);
    PyBuffer_Release(&b_rest);
    PyBuffer_Release(&b_idx);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    PyBuffer_Release(&need);
    return result;
}

static PyMethodDef methods[] = {
    {"isas", py_isas, METH_NOARGS,
     "isas() -> tuple of str\n\nKernel variants usable on this CPU, best last."},
    {"need_table", py_need_table, METH_VARARGS,
     "need_table(threshold, nbits) -> bytes\n\n"
     "uint32 need[s], s = 0..2*nbits: smallest intersection reaching the threshold."},
    {"pairs", py_pairs, METH_VARARGS,
     "pairs(a, a_cnt, a_idx, b, b_cnt, b_rest, b_idx, lo, hi, need, nwords, r0, r1, delta, k,"
     " isa)"
     " -> (i, j, sim) as bytes\n\n"
     "Dice pairs of left rows r0..r1-1 (popcount order) reaching the threshold."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_dice",
    "Native Dice-coefficient kernel for pprl.matching.dice.similarity (private).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__dice(void)
{
    return PyModule_Create(&module);
}
