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
 * time (eight in the AVX2 and AVX-512 variants) so each right row is read
 * once per four (eight) comparisons, with the GIL released so Python threads
 * can run blocks on every core.
 *
 * Early exit: after the first `split` words of a pair, at most
 * min(popcount of the rest of A, popcount of the rest of B) more bits can be
 * in common; when that cannot reach the threshold for any row of a group,
 * the rest is skipped.  The caller picks `split` (pprl.matching.dice.native
 * measures on a sample where pruning pays: half-way at t = 0.8, later at
 * t = 0.5, none where it never prunes) and passes the right rows' popcounts
 * of words split .. nwords-1 as b_rest.  The test is exact: results never
 * depend on `split`.
 *
 * Exactness: a pair is kept iff |A & B| >= need[|A| + |B|], where need[s] is
 * the smallest intersection with (double)(2 * I) / (double)s >= threshold,
 * found with that very double expression; the similarity reported is that
 * expression too.  So results are bit-identical to anonlink's C++ and to the
 * numpy path (no fast-math, no FP contraction: see setup.py).
 *
 * Variants (ISAs), all giving identical results, in the same order:
 *   generic  portable C99 (any CPU; the compiler's own popcount)
 *   popcnt   the same code built for the x86 POPCNT instruction
 *   avx2     x86 AVX2: nibble lookup with vpshufb, bytes summed with
 *            vpsadbw, eight left rows per pass over each right row
 *   avx512   x86 AVX-512 VPOPCNTDQ: eight words per instruction, eight
 *            left rows per pass
 *   neon     aarch64 NEON: vcntq_u8 on 128 bits, summed with vpadalq_u8
 * Bit-sliced filter (a second path, chosen per job by pprl.matching.dice.native,
 * off with PPRL_NO_BITSLICE): the right rows transposed into blocks of 256,
 * all 256 intersections of a block counted at once with carry-save adders,
 * only the pairs that can reach the threshold counted exactly; AVX2 on the
 * avx2 variant, AVX-512VL on avx512 (AVX2 without VL), portable C on the
 * others (see its section below).
 * On x86-64 the variant is picked at run time from CPUID (pprl/_cpu.h: GCC's
 * __builtin_cpu_supports reports nothing on Hygon and Zhaoxin CPUs);
 * aarch64 gets neon (every aarch64 CPU has it) and generic; other
 * architectures the portable code, which their compilers turn into native
 * popcounts.  Intrinsics only, no hand-written assembly.
 *
 * Interface (private; pprl.matching.dice.similarity validates dtypes and shapes):
 *   isas() -> tuple[str, ...]        variants usable on this CPU, best last
 *   need_table(threshold, nbits) -> bytes   uint32[2 * nbits + 1]
 *   pairs(a, a_cnt, a_idx, b, b_cnt, b_rest, b_idx, lo, hi, need, nwords, r0, r1,
 *         delta, k, isa[, split[, bt]]) -> (bytes i, bytes j, bytes sim)
 *   transpose(b, nwords, out) -> None       the right rows for the filter (bt)
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
#include "../../_cpu.h"
#else
#define PPRL_X86 0
#endif

/* AVX-512 VPOPCNTDQ needs GCC >= 8 or Clang >= 6 for the target attribute. */
#if PPRL_X86 && (defined(__clang__) ? (__clang_major__ >= 6) : (__GNUC__ >= 8))
#define PPRL_AVX512 1
#define PPRL_TARGET_AVX512 __attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
#else
#define PPRL_AVX512 0
#endif

/* AVX2 with the target attribute: GCC >= 4.9, Clang >= 3.8. */
#if PPRL_X86 && (defined(__clang__) ? (__clang_major__ * 100 + __clang_minor__ >= 308)     \
                                    : (__GNUC__ * 100 + __GNUC_MINOR__ >= 409))
#define PPRL_AVX2 1
#define PPRL_TARGET_AVX2 __attribute__((target("avx2,popcnt")))
#else
#define PPRL_AVX2 0
#endif

/* aarch64 always has Advanced SIMD (NEON). */
#if PPRL_GNUC && defined(__aarch64__) && defined(__ARM_NEON)
#define PPRL_NEON 1
#include <arm_neon.h>
#else
#define PPRL_NEON 0
#endif

enum { ISA_GENERIC = 0, ISA_POPCNT = 1, ISA_AVX2 = 2, ISA_AVX512 = 3, ISA_NEON = 4, ISA_COUNT = 5 };
static const char *const ISA_NAMES[] = {"generic", "popcnt", "avx2", "avx512", "neon"};
/* A split (early-exit checkpoint) other than nwords must be a multiple of
 * this many words for the variant (its vector width). */
static const Py_ssize_t ISA_SPLIT_STEP[] = {1, 1, 4, 8, 1};

#define NEVER UINT32_MAX /* need[] entry: no intersection reaches the threshold */
#define GROUP 4          /* left rows compared together against each right row */
#define MAX_GROUP 8      /* the most any variant compares together (avx2, avx512) */
#define HEAP_ROWS 32     /* top-k heaps per call: MAX_GROUP, or BS_GROUP (bitslice) */
/* The vector variants (avx2, avx512, neon) run rows of at most 1023 words
 * (65472 bits): AVX-512 packs counts into 16-bit fields, NEON sums bytes
 * into 16-bit lanes, and AVX2 and AVX-512 keep a table of 32 bytes per right
 * popcount.  Longer rows run on popcnt or generic. */
#define WIDE_MAX_WORDS 1023

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
    Py_ssize_t split; /* early-exit checkpoint after this many words; nwords: none */
    double delta;     /* anonlink's 1/t - 1 for its popcount window; < 0: none */
    Py_ssize_t k;     /* best k per left row; < 0: all */
    struct Scratch *scr; /* the vector variants' scratch space, or NULL */
    const uint64_t *bt;  /* bitslice: the right rows transposed (transpose()), or NULL */
} Ctx;

/* Scratch space of the avx2 and avx512 variants, allocated per call (never
 * shared between threads). */
typedef struct Scratch {
    void *mem;
    void *nibbles;  /* avx2: the group's left rows split for lookups, 32-byte aligned */
    int32_t *thr;   /* per right popcount pb: need[pa_q + pb] - 1, eight int32 (32-byte aligned) */
    uint32_t key[10]; /* pa of the rows (NEVER past the group), first and last pb thr holds */
    uint32_t *bs_idx;   /* bitslice: the set bits of eight left rows, nbits + 16 each */
} Scratch;

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

/* Early exit: after the first H = c->split words, a pair can gain at most
 * min(popcount of the rest of A, popcount of the rest of B) more common bits;
 * when that cannot reach need[] for any row of the group, the rest is
 * skipped (H = W: no checkpoint). */
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
    const Py_ssize_t H = c->split < W ? c->split : W; /* <= W: the compiler can peel */
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
    const Py_ssize_t H = c->split < W ? c->split : W;
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

/* The vector variants: groups of eight rows, then one of four, then single rows. */
#define PPRL_BLOCK8_BODY(SCAN8, SCAN4, SCAN1, W)                             \
    do {                                                                     \
        Py_ssize_t r = r0;                                                   \
        for (; r + MAX_GROUP <= r1; r += MAX_GROUP) {                        \
            SCAN8(c, o, h, r, W);                                            \
            if (c->k >= 0)                                                   \
                for (int q = 0; q < MAX_GROUP; q++)                          \
                    flush_heap(c, o, h + q, r + q);                          \
        }                                                                    \
        if (r + GROUP <= r1) {                                               \
            SCAN4(c, o, h, r, W);                                            \
            if (c->k >= 0)                                                   \
                for (int q = 0; q < GROUP; q++)                              \
                    flush_heap(c, o, h + q, r + q);                          \
            r += GROUP;                                                      \
        }                                                                    \
        for (; r < r1; r++) {                                                \
            SCAN1(c, o, h, r, W);                                            \
            if (c->k >= 0)                                                   \
                flush_heap(c, o, h, r);                                      \
        }                                                                    \
    } while (0)

#define PPRL_BLOCK8_DISPATCH(SCAN8, SCAN4, SCAN1)                            \
    switch (c->nwords) {                                                     \
    case 8:                                                                  \
        PPRL_BLOCK8_BODY(SCAN8, SCAN4, SCAN1, 8);                            \
        break;                                                               \
    case 16:                                                                 \
        PPRL_BLOCK8_BODY(SCAN8, SCAN4, SCAN1, 16);                           \
        break;                                                               \
    case 32:                                                                 \
        PPRL_BLOCK8_BODY(SCAN8, SCAN4, SCAN1, 32);                           \
        break;                                                               \
    case 64:                                                                 \
        PPRL_BLOCK8_BODY(SCAN8, SCAN4, SCAN1, 64);                           \
        break;                                                               \
    default:                                                                 \
        PPRL_BLOCK8_BODY(SCAN8, SCAN4, SCAN1, c->nwords);                    \
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

#if PPRL_AVX2 || PPRL_AVX512
/* ------------------------------------------------------------------------ */
/* Thresholds of a group of g <= 8 left rows, per right popcount: a signed   */
/* compare count > thr is count >= need (NEVER becomes INT32_MAX: never).    */
/* Eight entries per popcount whatever g.  Consecutive groups of sorted rows */
/* usually share their popcounts and window, so the table is rebuilt only    */
/* when those change.                                                        */

#define THR_ROWS 8

static const int32_t *
group_thresholds(const Ctx *c, Py_ssize_t r, int g, Py_ssize_t lo, Py_ssize_t hi)
{
    Scratch *s = c->scr;
    uint32_t key[THR_ROWS + 2];
    for (int q = 0; q < THR_ROWS; q++)
        key[q] = q < g ? c->a_cnt[r + q] : NEVER;
    key[THR_ROWS] = c->b_cnt[lo];
    key[THR_ROWS + 1] = c->b_cnt[hi - 1];
    if (memcmp(key, s->key, sizeof key) != 0) {
        int32_t *t = s->thr;
        for (uint32_t pb = key[THR_ROWS]; pb <= key[THR_ROWS + 1]; pb++, t += THR_ROWS) {
            for (int q = 0; q < THR_ROWS; q++) {
                const uint32_t n = q < g ? c->need[key[q] + pb] : NEVER;
                t[q] = n == NEVER ? INT32_MAX : (int32_t)n - 1;
            }
        }
        memcpy(s->key, key, sizeof key);
    }
    return s->thr;
}

/* The rows of a group with a set bit in mask (bit q: row r + q) reached the
 * threshold against right row j with the counts in cnt[]. */
static void
accept_mask(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, Py_ssize_t j, const uint32_t *cnt,
            int mask)
{
    for (int q = 0; mask; q++, mask >>= 1)
        if (mask & 1)
            accept(c, o, h + q, r + q, j, cnt[q]);
}
#endif

/* ------------------------------------------------------------------------ */
/* AVX2: popcount by nibble lookup (vpshufb), eight (or four) left rows per  */
/* right row.  The group's left rows are prepared for the lookups once, so  */
/* a right vector costs one shift, then per left row two ANDs, two lookups  */
/* and two byte adds.  Bytes grow by at most 8 per vector and are summed (vpsadbw)  */
/* at least every 31 vectors; the counts then sit in one register and are   */
/* compared with the group's thresholds in one instruction.                 */

#if PPRL_AVX2
#define AVX2_CHUNK 31 /* vectors per byte accumulation: 31 * 8 = 248 < 256 */
#define AVX2_BATCH 64 /* right rows per pass up to the checkpoint */

/* Lanes 0 .. tail-1 of four 64-bit lanes (tail = W % 4 words). */
PPRL_TARGET_AVX2 PPRL_INLINE __m256i
tail_mask_avx2(Py_ssize_t W)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(W % 4)),
                              _mm256_setr_epi64x(0, 1, 2, 3));
}

/* g rows of a (W words each) split for lookups, zero-padded to whole vectors:
 * A[2 g v + 2 q] = vector v of row q without bit 7 of each byte,
 * A[2 g v + 2 q + 1] = its high nibbles moved to bits 0-3.  A right vector x
 * then needs no masking: vpshufb looks up bits 0-3 of A[..] & x (bits 4-6
 * are ignored, and bit 7, which would zero the result, is clear), and of
 * A[..+1] & (x >> 4) (the shift's stray bits land in 4-7, where A is 0). */
PPRL_TARGET_AVX2 PPRL_INLINE void
split_nibbles_avx2(__m256i *A, const uint64_t *a, const Py_ssize_t W, const int g,
                   const __m256i tm)
{
    const Py_ssize_t full = W / 4, V = (W + 3) / 4;
    const __m256i m7 = _mm256_set1_epi8(0x7f), m4 = _mm256_set1_epi8(0x0f);
    for (int q = 0; q < g; q++) {
        const uint64_t *row = a + q * W;
        for (Py_ssize_t v = 0; v < V; v++) {
            const __m256i x =
                v < full ? _mm256_loadu_si256((const __m256i *)(row + 4 * v))
                         : _mm256_maskload_epi64((const long long *)(row + 4 * v), tm);
            A[2 * g * v + 2 * q] = _mm256_and_si256(x, m7);
            A[2 * g * v + 2 * q + 1] = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
        }
    }
}

/* Left row q's share of one right vector (lo_: the vector, hi_: shifted right by 4). */
#define PPRL_AVX2_ROW(S, p, q)                                                             \
    S = _mm256_add_epi8(S, _mm256_shuffle_epi8(lut, _mm256_and_si256((p)[2 * (q)], lo_)));     \
    S = _mm256_add_epi8(S, _mm256_shuffle_epi8(lut, _mm256_and_si256((p)[2 * (q) + 1], hi_)))

#define PPRL_AVX2_NIBBLES(x)                                                               \
    const __m256i lo_ = (x);                                                               \
    const __m256i hi_ = _mm256_srli_epi16((x), 4)

/* Sum the bytes of each of four accumulators: [sum s0, sum s1, sum s2, sum s3]. */
PPRL_TARGET_AVX2 PPRL_INLINE __m128i
fold4_avx2(__m256i s0, __m256i s1, __m256i s2, __m256i s3)
{
    const __m256i z = _mm256_setzero_si256();
    /* 64-bit lanes of partial sums, two rows per lane (32 bits each). */
    const __m256i t =
        _mm256_or_si256(_mm256_sad_epu8(s0, z), _mm256_slli_epi64(_mm256_sad_epu8(s1, z), 32));
    const __m256i u =
        _mm256_or_si256(_mm256_sad_epu8(s2, z), _mm256_slli_epi64(_mm256_sad_epu8(s3, z), 32));
    const __m256i v = _mm256_add_epi32(_mm256_unpacklo_epi64(t, u), _mm256_unpackhi_epi64(t, u));
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

/* Bits right row b has in common with each of the group's rows over vectors
 * v0 .. v1-1 (vector `full` is the partial last one, when W % 4): four rows
 * (count4: [c0, c1, c2, c3]) or eight (count8: [c0, ..., c7]). */
PPRL_TARGET_AVX2 PPRL_INLINE __m128i
count4_avx2(const __m256i *A, const uint64_t *b, Py_ssize_t v0, const Py_ssize_t v1,
            const Py_ssize_t full, const __m256i tm, const __m256i lut)
{
    __m128i total = _mm_setzero_si128();
    while (v0 < v1) {
        const Py_ssize_t e = v1 - v0 > AVX2_CHUNK ? v0 + AVX2_CHUNK : v1;
        const Py_ssize_t ef = e < full ? e : full;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (Py_ssize_t v = v0; v < e; v++) {
            const __m256i x = v < ef ? _mm256_loadu_si256((const __m256i *)(b + 4 * v))
                                     : _mm256_maskload_epi64((const long long *)(b + 4 * v), tm);
            PPRL_AVX2_NIBBLES(x);
            const __m256i *p = A + 8 * v;
            PPRL_AVX2_ROW(s0, p, 0);
            PPRL_AVX2_ROW(s1, p, 1);
            PPRL_AVX2_ROW(s2, p, 2);
            PPRL_AVX2_ROW(s3, p, 3);
        }
        total = _mm_add_epi32(total, fold4_avx2(s0, s1, s2, s3));
        v0 = e;
    }
    return total;
}

PPRL_TARGET_AVX2 PPRL_INLINE __m256i
count8_avx2(const __m256i *A, const uint64_t *b, Py_ssize_t v0, const Py_ssize_t v1,
            const Py_ssize_t full, const __m256i tm, const __m256i lut)
{
    __m256i total = _mm256_setzero_si256();
    while (v0 < v1) {
        const Py_ssize_t e = v1 - v0 > AVX2_CHUNK ? v0 + AVX2_CHUNK : v1;
        const Py_ssize_t ef = e < full ? e : full;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        __m256i s4 = s0, s5 = s0, s6 = s0, s7 = s0;
        for (Py_ssize_t v = v0; v < e; v++) {
            const __m256i x = v < ef ? _mm256_loadu_si256((const __m256i *)(b + 4 * v))
                                     : _mm256_maskload_epi64((const long long *)(b + 4 * v), tm);
            PPRL_AVX2_NIBBLES(x);
            const __m256i *p = A + 16 * v;
            PPRL_AVX2_ROW(s0, p, 0);
            PPRL_AVX2_ROW(s1, p, 1);
            PPRL_AVX2_ROW(s2, p, 2);
            PPRL_AVX2_ROW(s3, p, 3);
            PPRL_AVX2_ROW(s4, p, 4);
            PPRL_AVX2_ROW(s5, p, 5);
            PPRL_AVX2_ROW(s6, p, 6);
            PPRL_AVX2_ROW(s7, p, 7);
        }
        const __m128i f0 = fold4_avx2(s0, s1, s2, s3), f1 = fold4_avx2(s4, s5, s6, s7);
        total = _mm256_add_epi32(total, _mm256_inserti128_si256(_mm256_castsi128_si256(f0), f1, 1));
        v0 = e;
    }
    return total;
}

PPRL_TARGET_AVX2 PPRL_INLINE int
reaches4_avx2(__m128i cnt, const int32_t *thr)
{
    return _mm_movemask_ps(
        _mm_castsi128_ps(_mm_cmpgt_epi32(cnt, _mm_load_si128((const __m128i *)thr))));
}

PPRL_TARGET_AVX2 PPRL_INLINE int
reaches8_avx2(__m256i cnt, const int32_t *thr)
{
    return _mm256_movemask_ps(
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(cnt, _mm256_load_si256((const __m256i *)thr))));
}

#define PPRL_AVX2_LUT                                                                      \
    _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, \
                     2, 2, 3, 2, 3, 3, 4)

/* One pass of g = 4 (G = 4) or 8 (G = 8) left rows from r over their window. */
#define PPRL_AVX2_SCAN(G, VEC, SETR, COUNT, REACHES, STORE)                                   \
    do {                                                                                     \
        Py_ssize_t lo, hi;                                                                   \
        group_window(c, r, G, &lo, &hi);                                                     \
        if (lo >= hi)                                                                        \
            return;                                                                          \
        const Py_ssize_t full = W / 4, V = (W + 3) / 4;                                      \
        const Py_ssize_t H = c->split;                                                       \
        const Py_ssize_t V1 = H < W ? H / 4 : V; /* vectors before the checkpoint */        \
        const __m256i tm = tail_mask_avx2(W), lut = PPRL_AVX2_LUT;                           \
        const uint64_t *a0 = c->a + r * W;                                                   \
        __m256i *A = (__m256i *)c->scr->nibbles;                                             \
        split_nibbles_avx2(A, a0, W, G, tm);                                              \
        const int32_t *thr = group_thresholds(c, r, G, lo, hi);                              \
        const uint32_t pb0 = c->b_cnt[lo];                                                   \
        int32_t rest[G];                                                                     \
        for (int q = 0; q < G; q++)                                                          \
            rest[q] = V1 < V ? (int32_t)rest_popcount(a0 + q * W, H, W) : 0;                 \
        const VEC ra = SETR(rest);                                                           \
        if (V1 >= V) { /* no checkpoint */                                                \
            /* V, but a bound the compiler cannot see (only that it is <= V):  */          \
            /* it then peels the loop with an exit test per vector; knowing V */           \
            /* it unrolls, hoists every lookup ahead of its add and spills.   */           \
            Py_ssize_t nv = V;                                                               \
            __asm__("" : "+r"(nv));                                                          \
            nv = nv < V ? nv : V;                                                            \
            const uint64_t *bj = c->b + lo * W;                                              \
            for (Py_ssize_t j = lo; j < hi; j++, bj += W) {                                  \
                const VEC cnt = COUNT(A, bj, 0, nv, full, tm, lut);                          \
                PPRL_AVX2_ACCEPT(G, VEC, REACHES, STORE, j, cnt);                            \
            }                                                                                \
            break;                                                                           \
        }                                                                                    \
        /* With a checkpoint: the first V1 vectors of a batch of right rows,   */          \
        /* the survivors' partial counts kept in a list, then the rest of the  */          \
        /* survivors only (no branch per right row to mispredict).             */          \
        VEC part[AVX2_BATCH];                                                                \
        Py_ssize_t live[AVX2_BATCH];                                                         \
        for (Py_ssize_t jb = lo; jb < hi; jb += AVX2_BATCH) {                                \
            const Py_ssize_t je = hi - jb > AVX2_BATCH ? jb + AVX2_BATCH : hi;               \
            int n_live = 0;                                                                  \
            const uint64_t *bj = c->b + jb * W;                                              \
            for (Py_ssize_t j = jb; j < je; j++, bj += W) {                                  \
                const int32_t *tj = thr + THR_ROWS * (size_t)(c->b_cnt[j] - pb0);           \
                const VEC cnt = COUNT(A, bj, 0, V1, full, tm, lut);                          \
                const VEC bound = ADD32_##G(cnt, MINU32_##G(ra, SET1_##G((int)c->b_rest[j]))); \
                part[n_live] = cnt;                                                          \
                live[n_live] = j;                                                            \
                n_live += REACHES(bound, tj) != 0;                                           \
            }                                                                                \
            for (int k = 0; k < n_live; k++) {                                               \
                const Py_ssize_t j = live[k];                                                \
                const VEC cnt =                                                              \
                    ADD32_##G(part[k], COUNT(A, c->b + j * W, V1, V, full, tm, lut));        \
                PPRL_AVX2_ACCEPT(G, VEC, REACHES, STORE, j, cnt);                            \
            }                                                                                \
        }                                                                                    \
    } while (0)

/* Right row j against the group, with the counts cnt: record what reaches the threshold. */
#define PPRL_AVX2_ACCEPT(G, VEC, REACHES, STORE, j, cnt)                                     \
    do {                                                                                     \
        const int mask_ = REACHES(cnt, thr + THR_ROWS * (size_t)(c->b_cnt[j] - pb0));       \
        if (PPRL_UNLIKELY(mask_)) {                                                          \
            uint32_t counts_[G];                                                             \
            STORE((VEC *)counts_, cnt);                                                      \
            accept_mask(c, o, h, r, j, counts_, mask_);                                      \
        }                                                                                    \
    } while (0)

#define ADD32_4 _mm_add_epi32
#define MINU32_4 _mm_min_epu32
#define SET1_4 _mm_set1_epi32
#define ADD32_8 _mm256_add_epi32
#define MINU32_8 _mm256_min_epu32
#define SET1_8 _mm256_set1_epi32
#define PPRL_SETR4(x) _mm_loadu_si128((const __m128i *)(x))
#define PPRL_SETR8(x) _mm256_loadu_si256((const __m256i *)(x))

PPRL_TARGET_AVX2 PPRL_INLINE void
scan4_avx2(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    PPRL_AVX2_SCAN(4, __m128i, PPRL_SETR4, count4_avx2, reaches4_avx2, _mm_storeu_si128);
}

PPRL_TARGET_AVX2 PPRL_INLINE void
scan8_avx2(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    PPRL_AVX2_SCAN(8, __m256i, PPRL_SETR8, count8_avx2, reaches8_avx2, _mm256_storeu_si256);
}

PPRL_TARGET_AVX2 static void
block_avx2(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BLOCK8_DISPATCH(scan8_avx2, scan4_avx2, scan1_scalar)
}
#endif

/* ------------------------------------------------------------------------ */
/* aarch64 NEON: vcntq_u8 counts the bits of 16 bytes, vpadalq_u8 adds them */
/* pairwise into 16-bit lanes (at most 16 per lane per vector: no overflow  */
/* below WIDE_MAX_WORDS).  Four left rows per right row, as above.          */
/* Not tested on hardware by the authors: the tests run it where it builds. */

#if PPRL_NEON
PPRL_INLINE void
count4_neon(const uint64_t *a0, const uint64_t *b, Py_ssize_t w0, const Py_ssize_t w1,
            const Py_ssize_t W, uint64_t cnt[GROUP])
{
    const uint64_t *a1 = a0 + W, *a2 = a1 + W, *a3 = a2 + W;
    uint16x8_t s0 = vdupq_n_u16(0), s1 = s0, s2 = s0, s3 = s0;
    Py_ssize_t w = w0;
    for (; w + 2 <= w1; w += 2) {
        const uint8x16_t x = vld1q_u8((const uint8_t *)(b + w));
        s0 = vpadalq_u8(s0, vcntq_u8(vandq_u8(x, vld1q_u8((const uint8_t *)(a0 + w)))));
        s1 = vpadalq_u8(s1, vcntq_u8(vandq_u8(x, vld1q_u8((const uint8_t *)(a1 + w)))));
        s2 = vpadalq_u8(s2, vcntq_u8(vandq_u8(x, vld1q_u8((const uint8_t *)(a2 + w)))));
        s3 = vpadalq_u8(s3, vcntq_u8(vandq_u8(x, vld1q_u8((const uint8_t *)(a3 + w)))));
    }
    cnt[0] += vaddlvq_u16(s0);
    cnt[1] += vaddlvq_u16(s1);
    cnt[2] += vaddlvq_u16(s2);
    cnt[3] += vaddlvq_u16(s3);
    if (w < w1) {
        cnt[0] += popcount64(a0[w] & b[w]);
        cnt[1] += popcount64(a1[w] & b[w]);
        cnt[2] += popcount64(a2[w] & b[w]);
        cnt[3] += popcount64(a3[w] & b[w]);
    }
}

PPRL_INLINE void
scan4_neon(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    const Py_ssize_t H = c->split < W ? c->split : W;
    const uint64_t *a0 = c->a + r * W;
    const uint32_t *n[GROUP];
    uint64_t ra[GROUP];
    for (int q = 0; q < GROUP; q++) {
        n[q] = c->need + c->a_cnt[r + q];
        ra[q] = rest_popcount(a0 + q * W, H, W);
    }
    Py_ssize_t lo, hi;
    group_window(c, r, GROUP, &lo, &hi);
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        uint64_t cnt[GROUP] = {0, 0, 0, 0};
        count4_neon(a0, bj, 0, H, W, cnt);
        const uint32_t pb = c->b_cnt[j];
        if (H < W) {
            const uint64_t rb = c->b_rest[j];
            int alive = 0;
            for (int q = 0; q < GROUP; q++)
                alive |= cnt[q] + PPRL_MIN(ra[q], rb) >= n[q][pb];
            if (!alive)
                continue;
            count4_neon(a0, bj, H, W, W, cnt);
        }
        for (int q = 0; q < GROUP; q++)
            if (PPRL_UNLIKELY(cnt[q] >= n[q][pb]))
                accept(c, o, h + q, r + q, j, cnt[q]);
    }
}

static void
block_neon(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BLOCK_DISPATCH(scan4_neon, scan1_scalar)
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

/* The four rows' bits in common with right row b over vectors v0 .. v1-1,
 * and the partial vector v1 when `tail` (words 8 v1 .. 8 v1 + tail - 1),
 * packed into 16-bit fields: row q in bits 16 q .. 16 q + 15. */
PPRL_TARGET_AVX512 PPRL_INLINE uint64_t
sums4_avx512(const uint64_t *a0, const Py_ssize_t W, const uint64_t *b, Py_ssize_t v0,
             const Py_ssize_t v1, const unsigned tail)
{
    const uint64_t *a1 = a0 + W, *a2 = a1 + W, *a3 = a2 + W;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (Py_ssize_t v = v0; v < v1; v++) {
        const __m512i x = _mm512_loadu_si512((const void *)(b + 8 * v));
        s0 = and_popcnt(s0, x, _mm512_loadu_si512((const void *)(a0 + 8 * v)));
        s1 = and_popcnt(s1, x, _mm512_loadu_si512((const void *)(a1 + 8 * v)));
        s2 = and_popcnt(s2, x, _mm512_loadu_si512((const void *)(a2 + 8 * v)));
        s3 = and_popcnt(s3, x, _mm512_loadu_si512((const void *)(a3 + 8 * v)));
    }
    if (tail) {
        const __mmask8 tm = (__mmask8)((1u << tail) - 1u);
        const __m512i x = _mm512_maskz_loadu_epi64(tm, b + 8 * v1);
        s0 = and_popcnt(s0, x, _mm512_maskz_loadu_epi64(tm, a0 + 8 * v1));
        s1 = and_popcnt(s1, x, _mm512_maskz_loadu_epi64(tm, a1 + 8 * v1));
        s2 = and_popcnt(s2, x, _mm512_maskz_loadu_epi64(tm, a2 + 8 * v1));
        s3 = and_popcnt(s3, x, _mm512_maskz_loadu_epi64(tm, a3 + 8 * v1));
    }
    const __m512i packed =
        _mm512_or_si512(_mm512_or_si512(s0, _mm512_slli_epi64(s1, 16)),
                        _mm512_or_si512(_mm512_slli_epi64(s2, 32), _mm512_slli_epi64(s3, 48)));
    return (uint64_t)_mm512_reduce_add_epi64(packed);
}

#define PPRL_FIELD(sums, q) (((sums) >> (16 * (q))) & 0xFFFF)

PPRL_TARGET_AVX512 PPRL_INLINE void
scan4_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    const Py_ssize_t V = W / 8;
    const unsigned tail = (unsigned)(W % 8);
    const Py_ssize_t H = c->split; /* a multiple of 8 when < W */
    const Py_ssize_t V1 = H < W ? H / 8 : V;
    const uint64_t *a0 = c->a + r * W;
    const uint32_t *n[GROUP];
    uint64_t ra[GROUP];
    for (int q = 0; q < GROUP; q++) {
        n[q] = c->need + c->a_cnt[r + q];
        ra[q] = H < W ? rest_popcount(a0 + q * W, H, W) : 0;
    }
    Py_ssize_t lo, hi;
    group_window(c, r, GROUP, &lo, &hi);
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        const uint32_t pb = c->b_cnt[j];
        uint64_t sums;
        if (H < W) {
            sums = sums4_avx512(a0, W, bj, 0, V1, 0);
            const uint64_t rb = c->b_rest[j];
            const int alive = (PPRL_FIELD(sums, 0) + PPRL_MIN(ra[0], rb) >= n[0][pb]) |
                              (PPRL_FIELD(sums, 1) + PPRL_MIN(ra[1], rb) >= n[1][pb]) |
                              (PPRL_FIELD(sums, 2) + PPRL_MIN(ra[2], rb) >= n[2][pb]) |
                              (PPRL_FIELD(sums, 3) + PPRL_MIN(ra[3], rb) >= n[3][pb]);
            if (!alive)
                continue;
            sums += sums4_avx512(a0, W, bj, V1, V, tail); /* fields cannot carry: W <= 1023 */
        }
        else {
            sums = sums4_avx512(a0, W, bj, 0, V, tail);
        }
        for (int q = 0; q < GROUP; q++)
            if (PPRL_UNLIKELY(PPRL_FIELD(sums, q) >= n[q][pb]))
                accept(c, o, h + q, r + q, j, PPRL_FIELD(sums, q));
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

/* Eight rows: their bits in common with right row b over vectors v0 .. v1-1
 * (and the partial vector v1 when `tail`), as eight uint32 [c0, ..., c7].
 * The 64-bit lane sums of rows 0-3 and 4-7 are packed into 16-bit fields
 * (no carries: W <= 1023) and reduced together. */
PPRL_TARGET_AVX512 PPRL_INLINE __m256i
counts8_avx512(const uint64_t *a0, const Py_ssize_t W, const uint64_t *b, Py_ssize_t v0,
               const Py_ssize_t v1, const unsigned tail)
{
    const uint64_t *a1 = a0 + W, *a2 = a1 + W, *a3 = a2 + W, *a4 = a3 + W, *a5 = a4 + W;
    const uint64_t *a6 = a5 + W, *a7 = a6 + W;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0,
            s7 = s0;
#define PPRL_AVX512_ROWS(LOAD, v)                                                          \
    do {                                                                                   \
        const __m512i x = LOAD(b, v);                                                      \
        s0 = and_popcnt(s0, x, LOAD(a0, v));                                               \
        s1 = and_popcnt(s1, x, LOAD(a1, v));                                               \
        s2 = and_popcnt(s2, x, LOAD(a2, v));                                               \
        s3 = and_popcnt(s3, x, LOAD(a3, v));                                               \
        s4 = and_popcnt(s4, x, LOAD(a4, v));                                               \
        s5 = and_popcnt(s5, x, LOAD(a5, v));                                               \
        s6 = and_popcnt(s6, x, LOAD(a6, v));                                               \
        s7 = and_popcnt(s7, x, LOAD(a7, v));                                               \
    } while (0)
#define PPRL_LOAD_FULL(p, v) _mm512_loadu_si512((const void *)((p) + 8 * (v)))
#define PPRL_LOAD_TAIL(p, v) _mm512_maskz_loadu_epi64(tm, (p) + 8 * (v))
    for (Py_ssize_t v = v0; v < v1; v++)
        PPRL_AVX512_ROWS(PPRL_LOAD_FULL, v);
    if (tail) {
        const __mmask8 tm = (__mmask8)((1u << tail) - 1u);
        PPRL_AVX512_ROWS(PPRL_LOAD_TAIL, v1);
    }
#undef PPRL_AVX512_ROWS
#undef PPRL_LOAD_FULL
#undef PPRL_LOAD_TAIL
    const __m512i p0 =
        _mm512_or_si512(_mm512_or_si512(s0, _mm512_slli_epi64(s1, 16)),
                        _mm512_or_si512(_mm512_slli_epi64(s2, 32), _mm512_slli_epi64(s3, 48)));
    const __m512i p1 =
        _mm512_or_si512(_mm512_or_si512(s4, _mm512_slli_epi64(s5, 16)),
                        _mm512_or_si512(_mm512_slli_epi64(s6, 32), _mm512_slli_epi64(s7, 48)));
    /* Lanes alternate rows 0-3 and 4-7; fold 512 -> 256 -> 128 bits. */
    const __m512i t = _mm512_add_epi64(_mm512_unpacklo_epi64(p0, p1), _mm512_unpackhi_epi64(p0, p1));
    const __m256i u = _mm256_add_epi64(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    const __m128i w = _mm_add_epi64(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    return _mm256_cvtepu16_epi32(w);
}

PPRL_TARGET_AVX512 PPRL_INLINE int
reaches8_avx512(__m256i cnt, const int32_t *thr)
{
    return _mm256_movemask_ps(
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(cnt, _mm256_load_si256((const __m256i *)thr))));
}

PPRL_TARGET_AVX512 PPRL_INLINE void
scan8_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r, const Py_ssize_t W)
{
    Py_ssize_t lo, hi;
    group_window(c, r, MAX_GROUP, &lo, &hi);
    if (lo >= hi)
        return;
    const Py_ssize_t V = W / 8;
    const unsigned tail = (unsigned)(W % 8);
    const Py_ssize_t H = c->split; /* a multiple of 8 when < W */
    const Py_ssize_t V1 = H < W ? H / 8 : V;
    const uint64_t *a0 = c->a + r * W;
    const int32_t *thr = group_thresholds(c, r, MAX_GROUP, lo, hi);
    const uint32_t pb0 = c->b_cnt[lo];
    int32_t rest[MAX_GROUP];
    for (int q = 0; q < MAX_GROUP; q++)
        rest[q] = H < W ? (int32_t)rest_popcount(a0 + q * W, H, W) : 0;
    const __m256i ra = _mm256_loadu_si256((const __m256i *)rest);
    const uint64_t *bj = c->b + lo * W;
    for (Py_ssize_t j = lo; j < hi; j++, bj += W) {
        const int32_t *tj = thr + THR_ROWS * (size_t)(c->b_cnt[j] - pb0);
        __m256i cnt;
        if (H < W) {
            cnt = counts8_avx512(a0, W, bj, 0, V1, 0);
            const __m256i rb = _mm256_set1_epi32((int)c->b_rest[j]);
            if (!reaches8_avx512(_mm256_add_epi32(cnt, _mm256_min_epu32(ra, rb)), tj))
                continue;
            cnt = _mm256_add_epi32(cnt, counts8_avx512(a0, W, bj, V1, V, tail));
        }
        else {
            cnt = counts8_avx512(a0, W, bj, 0, V, tail);
        }
        const int mask = reaches8_avx512(cnt, tj);
        if (PPRL_UNLIKELY(mask)) {
            uint32_t counts[MAX_GROUP];
            _mm256_storeu_si256((__m256i *)counts, cnt);
            accept_mask(c, o, h, r, j, counts, mask);
        }
    }
}

PPRL_TARGET_AVX512 static void
block_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BLOCK8_DISPATCH(scan8_avx512, scan4_avx512, scan1_avx512)
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
        return pprl_cpu_has(PPRL_CPU_POPCNT);
#endif
#if PPRL_AVX2
    case ISA_AVX2:
        return pprl_cpu_has(PPRL_CPU_AVX2 | PPRL_CPU_POPCNT);
#endif
#if PPRL_AVX512
    case ISA_AVX512:
        return pprl_cpu_has(PPRL_CPU_AVX512F | PPRL_CPU_AVX512VPOPCNTDQ | PPRL_CPU_POPCNT);
#endif
#if PPRL_NEON
    case ISA_NEON:
        return 1;
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
    for (int isa = ISA_GENERIC; isa < ISA_COUNT; isa++) {
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

/* ------------------------------------------------------------------------ */
/* Bit-sliced filter ("bitslice"): a vertical counter across right rows.     */
/*                                                                          */
/* The right rows are transposed once per job, in blocks of 256 rows       */
/* (pprl.matching.dice.native builds the layout with transpose() below):   */
/* column i of a block is bit i of each of its 256 rows, four uint64 lanes  */
/* (lane l, bit x: row 64 l + x of the block), nbits columns and one more,  */
/* all zero, to pad with.  |A & B_j| for the 256 rows of a block is then the */
/* sum, over the set bits i of A, of column i: added into bit-sliced        */
/* counters with carry-save adders (Harley-Seal: sixteen columns per step,  */
/* 15 adders of five logic ops, the carries out of the fourth level rippled */
/* into the upper planes), about five logic ops per set bit of A for 256    */
/* pairs.  The counts are compared, still bit-sliced, with the lowest       */
/* need[] any pair of the block could have (need[] is non-decreasing where  */
/* finite, and the block's rows are sorted by popcount); only the rows that */
/* reach it are counted exactly, and those go through the usual accept().   */
/* So results are those of the other paths: each left row's pairs in        */
/* increasing j (the same offers to its heap), row order of the heaps'      */
/* flushes kept; without k, rows of a group of eight interleave by block.   */
/* Variants: AVX2, AVX-512VL (below: ternary logic), portable (four uint64). */

#define BS_ROWS 256                /* right rows per transposed block */
#define BS_LANES 4                 /* uint64 per column */
#define BS_GROUP 32                /* left rows per pass over the blocks (<= HEAP_ROWS) */
#define BS_PLANES 12               /* upper counter planes: sums of up to 65535 */
#define PPRL_MAX(x, y) ((x) > (y) ? (x) : (y))

PPRL_INLINE int
ctz64(uint64_t x)
{
#if PPRL_GNUC
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

/* The smallest finite need[s] for s in [s0, s1] (need[] is non-decreasing
 * where finite), or NEVER. */
static inline uint32_t
block_need(const uint32_t *need, uint32_t s0, uint32_t s1)
{
    for (uint32_t s = s0; s <= s1; s++)
        if (need[s] != NEVER)
            return need[s];
    return NEVER;
}

/* The set bits of a row of W words as byte offsets of their columns in a
 * block, padded with the zero column (nbits) to a multiple of 16; returns
 * how many, with the number of set bits in *nset. */
static Py_ssize_t
bit_columns(const uint64_t *row, Py_ssize_t W, uint32_t *idx, Py_ssize_t *nset)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t w = 0; w < W; w++) {
        uint64_t x = row[w];
        while (x) {
            idx[n++] = ((uint32_t)(64 * w) + (uint32_t)ctz64(x)) * (uint32_t)(8 * BS_LANES);
            x &= x - 1;
        }
    }
    *nset = n;
    while (n % 16)
        idx[n++] = (uint32_t)(64 * W) * (uint32_t)(8 * BS_LANES);
    return n;
}

#define PPRL_CSA(h, l, a, b, c)                                                             \
    do {                                                                                   \
        const VT u_ = VXOR(a, b);                                                          \
        h = VOR(VAND(a, b), VAND(u_, c));                                                  \
        l = VXOR(u_, c);                                                                   \
    } while (0)

/* Counts of block `col` against the columns at byte offsets idx[0 .. nidx-1]
 * (a multiple of 16; nset of them real) compared with T (0 < T <= nset):
 * the rows whose count reaches T, as four uint64 in ge_out[]; returns 0,
 * and leaves ge_out alone, when none does.  Early exit: once fewer than T
 * columns are left, a row needs count >= T - left; when no row of the
 * block has that, the block is done. */
#define PPRL_BS_GE(ge, X)                                                                  \
    do {                                                                                   \
        const VT low_[4] = {ones, twos, fours, eights};                                    \
        ge = VONES;                                                                        \
        for (int k_ = 0; k_ < 4 + planes; k_++) {                                          \
            const VT ck_ = k_ < 4 ? low_[k_] : up[k_ - 4];                                 \
            ge = ((X) >> k_) & 1u ? VAND(ck_, ge) : VOR(ck_, ge);                          \
        }                                                                                  \
    } while (0)

#define PPRL_BS_COUNT_BODY                                                                  \
    VT ones = VZERO, twos = VZERO, fours = VZERO, eights = VZERO;                          \
    VT up[BS_PLANES];                                                                      \
    int planes = 0;                                                                        \
    while (((Py_ssize_t)1 << planes) <= nidx / 16)                                         \
        planes++;                                                                          \
    for (int k = 0; k < planes; k++)                                                       \
        up[k] = VZERO;                                                                     \
    for (Py_ssize_t n = 0; n < nidx; n += 16) {                                            \
        const uint32_t *p = idx + n;                                                       \
        VT twosA, twosB, foursA, foursB, eightsA, eightsB, sixteens;                       \
        PPRL_CSA(twosA, ones, ones, VLOAD(col, p[0]), VLOAD(col, p[1]));                    \
        PPRL_CSA(twosB, ones, ones, VLOAD(col, p[2]), VLOAD(col, p[3]));                    \
        PPRL_CSA(foursA, twos, twos, twosA, twosB);                                         \
        PPRL_CSA(twosA, ones, ones, VLOAD(col, p[4]), VLOAD(col, p[5]));                    \
        PPRL_CSA(twosB, ones, ones, VLOAD(col, p[6]), VLOAD(col, p[7]));                    \
        PPRL_CSA(foursB, twos, twos, twosA, twosB);                                         \
        PPRL_CSA(eightsA, fours, fours, foursA, foursB);                                    \
        PPRL_CSA(twosA, ones, ones, VLOAD(col, p[8]), VLOAD(col, p[9]));                    \
        PPRL_CSA(twosB, ones, ones, VLOAD(col, p[10]), VLOAD(col, p[11]));                  \
        PPRL_CSA(foursA, twos, twos, twosA, twosB);                                         \
        PPRL_CSA(twosA, ones, ones, VLOAD(col, p[12]), VLOAD(col, p[13]));                  \
        PPRL_CSA(twosB, ones, ones, VLOAD(col, p[14]), VLOAD(col, p[15]));                  \
        PPRL_CSA(foursB, twos, twos, twosA, twosB);                                         \
        PPRL_CSA(eightsB, fours, fours, foursA, foursB);                                    \
        PPRL_CSA(sixteens, eights, eights, eightsA, eightsB);                               \
        for (int k = 0; k < planes; k++) {                                                 \
            const VT carry = VAND(up[k], sixteens);                                        \
            up[k] = VXOR(up[k], sixteens);                                                 \
            sixteens = carry;                                                              \
        }                                                                                  \
        const Py_ssize_t left = nset - (n + 16);                                           \
        if (left > 0 && left < (Py_ssize_t)T) {                                            \
            VT alive;                                                                      \
            PPRL_BS_GE(alive, T - (uint32_t)left);                                         \
            if (VNONE(alive))                                                              \
                return 0;                                                                  \
        }                                                                                  \
    }                                                                                      \
    /* count >= T, from the lowest plane up: ge = c_k & ge where T has bit k, */            \
    /* c_k | ge where it has not (ge starts true: 0 >= 0). */                               \
    VT ge;                                                                                 \
    PPRL_BS_GE(ge, T);                                                                     \
    if (VNONE(ge))                                                                         \
        return 0;                                                                          \
    VSTORE(ge_out, ge);                                                                    \
    return 1

/* The driver: rows r0..r1-1 in groups of up to eight, each group over the
 * blocks its windows touch; survivors counted exactly (POPCOUNT) and
 * accepted in increasing j per row. */
#define PPRL_BS_BLOCK_BODY(COUNT_GE)                                                        \
    do {                                                                                   \
        const Py_ssize_t W = c->nwords;                                                    \
        const uint32_t nbits = (uint32_t)(64 * W);                                         \
        const size_t bstride = (size_t)(nbits + 1) * BS_LANES;                             \
        uint32_t *idx = c->scr->bs_idx;                                                    \
        const Py_ssize_t istride = (Py_ssize_t)nbits + 16;                                 \
        for (Py_ssize_t r = r0; r < r1; r += BS_GROUP) {                                   \
            const int g = r1 - r < BS_GROUP ? (int)(r1 - r) : BS_GROUP;                    \
            Py_ssize_t nidx[BS_GROUP], nset[BS_GROUP];                                     \
            Py_ssize_t lo = PY_SSIZE_T_MAX, hi = 0;                                        \
            for (int q = 0; q < g; q++) {                                                  \
                nidx[q] = bit_columns(c->a + (r + q) * W, W, idx + q * istride, nset + q);  \
                if (c->lo[r + q] < c->hi[r + q]) {                                         \
                    lo = PPRL_MIN(lo, (Py_ssize_t)c->lo[r + q]);                           \
                    hi = hi > (Py_ssize_t)c->hi[r + q] ? hi : (Py_ssize_t)c->hi[r + q];    \
                }                                                                          \
            }                                                                              \
            for (Py_ssize_t blk = lo < hi ? lo / BS_ROWS : 0; lo < hi && blk * BS_ROWS < hi; \
                 blk++) {                                                                  \
                const uint64_t *col = c->bt + (size_t)blk * bstride;                       \
                for (int q = 0; q < g; q++) {                                              \
                    const Py_ssize_t jl = PPRL_MAX((Py_ssize_t)c->lo[r + q], blk * BS_ROWS); \
                    const Py_ssize_t jh =                                                  \
                        PPRL_MIN((Py_ssize_t)c->hi[r + q], (blk + 1) * BS_ROWS);           \
                    if (jl >= jh)                                                          \
                        continue;                                                          \
                    const uint32_t pa = c->a_cnt[r + q];                                   \
                    const uint32_t T = block_need(c->need, pa + c->b_cnt[jl], pa + c->b_cnt[jh - 1]); \
                    if (T == NEVER || T > pa)                                              \
                        continue;                                                          \
                    uint64_t ge[BS_LANES] = {~0ull, ~0ull, ~0ull, ~0ull};                  \
                    if (T > 0 && !COUNT_GE(col, idx + q * istride, nidx[q], nset[q], T, ge))   \
                        continue;                                                          \
                    const uint64_t *aq = c->a + (r + q) * W;                               \
                    for (Py_ssize_t j = jl; j < jh;) {                                     \
                        /* the lane of row j, cut to rows jl .. jh-1 */                    \
                        const Py_ssize_t off = j - blk * BS_ROWS;                          \
                        const int lane = (int)(off / 64);                                  \
                        const Py_ssize_t lane_end = blk * BS_ROWS + 64 * (lane + 1);       \
                        const Py_ssize_t je = PPRL_MIN(jh, lane_end);                      \
                        uint64_t bits = ge[lane] >> (off % 64);                            \
                        if (je - j < 64)                                                   \
                            bits &= ((uint64_t)1 << (je - j)) - 1;                         \
                        while (bits) {                                                     \
                            const Py_ssize_t jj = j + ctz64(bits);               \
                            bits &= bits - 1;                                              \
                            const uint64_t *bj = c->b + jj * W;                            \
                            uint64_t cnt = 0;                                              \
                            for (Py_ssize_t w = 0; w < W; w++)                             \
                                cnt += popcount64(aq[w] & bj[w]);                          \
                            if (cnt >= c->need[pa + c->b_cnt[jj]])                         \
                                accept(c, o, h + q, r + q, jj, cnt);                       \
                        }                                                                  \
                        j = je;                                                            \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            if (c->k >= 0)                                                                 \
                for (int q = 0; q < g; q++)                                                \
                    flush_heap(c, o, h + q, r + q);                                        \
        }                                                                                  \
    } while (0)

/* Portable: a column as four uint64. */
typedef struct {
    uint64_t x[BS_LANES];
} bsv;

PPRL_INLINE bsv
bsv_and(bsv a, bsv b)
{
    bsv r;
    for (int l = 0; l < BS_LANES; l++)
        r.x[l] = a.x[l] & b.x[l];
    return r;
}

PPRL_INLINE bsv
bsv_or(bsv a, bsv b)
{
    bsv r;
    for (int l = 0; l < BS_LANES; l++)
        r.x[l] = a.x[l] | b.x[l];
    return r;
}

PPRL_INLINE bsv
bsv_xor(bsv a, bsv b)
{
    bsv r;
    for (int l = 0; l < BS_LANES; l++)
        r.x[l] = a.x[l] ^ b.x[l];
    return r;
}

PPRL_INLINE bsv
bsv_load(const uint64_t *col, uint32_t off)
{
    bsv r;
    memcpy(r.x, (const char *)col + off, sizeof r.x);
    return r;
}

PPRL_INLINE int
bsv_none(bsv a)
{
    return (a.x[0] | a.x[1] | a.x[2] | a.x[3]) == 0;
}

#define VT bsv
#define VAND bsv_and
#define VOR bsv_or
#define VXOR bsv_xor
#define VLOAD bsv_load
#define VZERO ((bsv){{0, 0, 0, 0}})
#define VONES ((bsv){{~0ull, ~0ull, ~0ull, ~0ull}})
#define VSTORE(out, v) memcpy((out), (v).x, sizeof(v).x)
#define VNONE bsv_none

PPRL_INLINE int
count_ge_portable(const uint64_t *col, const uint32_t *idx, Py_ssize_t nidx, Py_ssize_t nset, uint32_t T,
                  uint64_t *ge_out)
{
    PPRL_BS_COUNT_BODY;
}

#undef VT
#undef VAND
#undef VOR
#undef VXOR
#undef VLOAD
#undef VZERO
#undef VONES
#undef VSTORE
#undef VNONE

PPRL_NOINLINE void
bitslice_generic(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BS_BLOCK_BODY(count_ge_portable);
}

#if PPRL_X86
__attribute__((target("popcnt"))) static void
bitslice_popcnt(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BS_BLOCK_BODY(count_ge_portable);
}
#endif

#if PPRL_AVX2
#define VT __m256i
#define VAND _mm256_and_si256
#define VOR _mm256_or_si256
#define VXOR _mm256_xor_si256
#define VLOAD(col, off) _mm256_loadu_si256((const __m256i *)((const char *)(col) + (off)))
#define VNONE(v) _mm256_testz_si256((v), (v))
#define VZERO _mm256_setzero_si256()
#define VONES _mm256_set1_epi64x(-1)
#define VSTORE(out, v) _mm256_storeu_si256((__m256i *)(out), (v))

PPRL_TARGET_AVX2 PPRL_INLINE int
count_ge_avx2(const uint64_t *col, const uint32_t *idx, Py_ssize_t nidx, Py_ssize_t nset, uint32_t T,
              uint64_t *ge_out)
{
    PPRL_BS_COUNT_BODY;
}

#undef VT
#undef VAND
#undef VOR
#undef VXOR
#undef VLOAD
#undef VZERO
#undef VONES
#undef VSTORE
#undef VNONE

PPRL_TARGET_AVX2 static void
bitslice_avx2(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BS_BLOCK_BODY(count_ge_avx2);
}
#endif

/* AVX-512VL: the same 256-bit columns, each carry-save adder two vpternlogq
 * (majority 0xE8, three-way XOR 0x96) instead of five AVX2 logic ops. */
#if PPRL_AVX512
#define PPRL_TARGET_AVX512VL __attribute__((target("avx512f,avx512vl,avx2,popcnt")))
#define VT __m256i
#define VAND _mm256_and_si256
#define VOR _mm256_or_si256
#define VXOR _mm256_xor_si256
#define VLOAD(col, off) _mm256_loadu_si256((const __m256i *)((const char *)(col) + (off)))
#define VNONE(v) _mm256_testz_si256((v), (v))
#define VZERO _mm256_setzero_si256()
#define VONES _mm256_set1_epi64x(-1)
#define VSTORE(out, v) _mm256_storeu_si256((__m256i *)(out), (v))
#undef PPRL_CSA
#define PPRL_CSA(h, l, a, b, c)                                                             \
    do {                                                                                   \
        const VT a_ = (a), b_ = (b), c_ = (c);                                             \
        h = _mm256_ternarylogic_epi64(a_, b_, c_, 0xE8);                                   \
        l = _mm256_ternarylogic_epi64(a_, b_, c_, 0x96);                                   \
    } while (0)

PPRL_TARGET_AVX512VL PPRL_INLINE int
count_ge_avx512(const uint64_t *col, const uint32_t *idx, Py_ssize_t nidx, Py_ssize_t nset,
                uint32_t T, uint64_t *ge_out)
{
    PPRL_BS_COUNT_BODY;
}

#undef VT
#undef VAND
#undef VOR
#undef VXOR
#undef VLOAD
#undef VZERO
#undef VONES
#undef VSTORE
#undef VNONE

PPRL_TARGET_AVX512VL static void
bitslice_avx512(const Ctx *c, Out *o, Heap *h, Py_ssize_t r0, Py_ssize_t r1)
{
    PPRL_BS_BLOCK_BODY(count_ge_avx512);
}

static int
have_avx512vl(void)
{
    return pprl_cpu_has(PPRL_CPU_AVX512F | PPRL_CPU_AVX512VL | PPRL_CPU_POPCNT);
}
#endif

/* transpose(b, nwords, out): the right rows b (m rows of nwords words, in
 * popcount order) as blocks of 256 rows, column-wise (see above), into out:
 * ceil(m / 256) * (64 * nwords + 1) * 4 uint64. */
static PyObject *
py_transpose(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer b = {0}, out = {0};
    Py_ssize_t nwords;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*nw*:transpose", &b, &nwords, &out))
        return NULL;
    if (nwords < 1 || nwords > WIDE_MAX_WORDS) {
        PyErr_SetString(PyExc_ValueError, "nwords out of range");
        goto done;
    }
    if (b.len % (nwords * 8) != 0 || (uintptr_t)b.buf % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "b is not a whole number of aligned rows");
        goto done;
    }
    {
        const Py_ssize_t m = b.len / (nwords * 8);
        const Py_ssize_t nblocks = (m + BS_ROWS - 1) / BS_ROWS;
        const size_t bstride = (size_t)(64 * nwords + 1) * BS_LANES;
        if (check_len(&out, nblocks * (Py_ssize_t)bstride, 8, "out"))
            goto done;
        const uint64_t *rows = (const uint64_t *)b.buf;
        uint64_t *t = (uint64_t *)out.buf;
        Py_BEGIN_ALLOW_THREADS
        memset(t, 0, (size_t)out.len);
        for (Py_ssize_t j = 0; j < m; j++) {
            uint64_t *blk = t + (size_t)(j / BS_ROWS) * bstride + (j % BS_ROWS) / 64;
            const uint64_t bit = (uint64_t)1 << (j % 64);
            for (Py_ssize_t w = 0; w < nwords; w++) {
                uint64_t x = rows[j * nwords + w];
                while (x) {
                    blk[(size_t)BS_LANES * (size_t)(64 * w + ctz64(x))] |= bit;
                    x &= x - 1;
                }
            }
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&b);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *
py_pairs(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer a = {0}, a_cnt = {0}, a_idx = {0}, b = {0}, b_cnt = {0}, b_rest = {0}, b_idx = {0};
    Py_buffer lo = {0}, hi = {0}, need = {0}, bt = {0};
    Py_ssize_t nwords, r0, r1, k, split = -1;
    double delta;
    int isa;
    PyObject *result = NULL;
    Out out = {0};
    Heap heaps[HEAP_ROWS] = {{0}};
    double *heap_s = NULL;
    int64_t *heap_j = NULL;
    Scratch scratch = {0};
    uint32_t *bs_idx = NULL;

    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*nnndni|ny*:pairs", &a, &a_cnt, &a_idx, &b,
                          &b_cnt, &b_rest, &b_idx, &lo, &hi, &need, &nwords, &r0, &r1, &delta, &k,
                          &isa, &split, &bt))
        return NULL;
    const int bitslice = bt.buf != NULL && bt.len > 0;

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
    if (isa < 0 || isa >= ISA_COUNT || !isa_supported(isa)) {
        PyErr_Format(PyExc_ValueError, "kernel variant %d is not usable on this CPU", isa);
        goto done;
    }
    if (isa != ISA_GENERIC && isa != ISA_POPCNT && nwords > WIDE_MAX_WORDS) {
        PyErr_Format(PyExc_ValueError, "kernel variant %s takes rows of at most %d words",
                     ISA_NAMES[isa], WIDE_MAX_WORDS);
        goto done;
    }
    /* The checkpoint: by default half-way (as b_rest of pprl.matching.dice.rows
     * assumes), none where the variant cannot stop there. */
    const Py_ssize_t step = ISA_SPLIT_STEP[isa];
    if (split == -1) {
        split = nwords >= 4 ? nwords / 2 : nwords;
        if (split % step != 0)
            split = nwords;
    }
    if (split < 1 || split > nwords || (split != nwords && split % step != 0)) {
        PyErr_Format(PyExc_ValueError, "split %zd is not usable with variant %s and %zd words",
                     split, ISA_NAMES[isa], nwords);
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
    if (bitslice) {
        if (nwords > WIDE_MAX_WORDS) {
            PyErr_Format(PyExc_ValueError, "the bit-sliced filter takes rows of at most %d words",
                         WIDE_MAX_WORDS);
            goto done;
        }
        const Py_ssize_t nblocks = (m + BS_ROWS - 1) / BS_ROWS;
        if (check_len(&bt, nblocks * (Py_ssize_t)(nbits + 1) * BS_LANES, 8, "bt"))
            goto done;
        bs_idx = (uint32_t *)malloc((size_t)BS_GROUP * ((size_t)nbits + 16) * sizeof(uint32_t));
        if (bs_idx == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        scratch.bs_idx = bs_idx;
    }
    if (k >= m)
        k = -1; /* the best m of m is all of them */
    if (k > 0) {
        const int rows = bitslice ? BS_GROUP : MAX_GROUP;
        heap_s = (double *)malloc((size_t)(rows * k) * sizeof(double));
        heap_j = (int64_t *)malloc((size_t)(rows * k) * sizeof(int64_t));
        if (heap_s == NULL || heap_j == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (int q = 0; q < rows; q++) {
            heaps[q].s = heap_s + q * k;
            heaps[q].j = heap_j + q * k;
        }
    }

#if PPRL_AVX2 || PPRL_AVX512
    if (isa == ISA_AVX2 || isa == ISA_AVX512) {
        /* avx2: nibbles of eight rows (whole 256-bit vectors); both: 32 bytes
         * of thresholds per right popcount 0 .. nbits; 32-byte aligned. */
        const size_t nib =
            isa == ISA_AVX2 ? (size_t)2 * MAX_GROUP * (size_t)((nwords + 3) / 4) * 32 : 0;
        const size_t thr = ((size_t)nbits + 1) * THR_ROWS * sizeof(int32_t);
        scratch.mem = malloc(nib + thr + 64);
        if (scratch.mem == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        char *base = (char *)(((uintptr_t)scratch.mem + 31) & ~(uintptr_t)31);
        scratch.nibbles = base;
        scratch.thr = (int32_t *)(base + nib);
        scratch.key[THR_ROWS] = 1; /* pb range [1, 0]: no table yet */
    }
#endif

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
        .split = split,
        .delta = delta,
        .k = k,
        .scr = &scratch,
        .bt = bitslice ? (const uint64_t *)bt.buf : NULL,
    };

    if (k != 0 && bitslice) {
        Py_BEGIN_ALLOW_THREADS
#if PPRL_AVX512
        if (isa == ISA_AVX512 && have_avx512vl())
            bitslice_avx512(&ctx, &out, heaps, r0, r1);
        else
#endif
#if PPRL_AVX2
        if ((isa == ISA_AVX2 || isa == ISA_AVX512) && isa_supported(ISA_AVX2))
            bitslice_avx2(&ctx, &out, heaps, r0, r1);
        else
#endif
#if PPRL_X86
        if (isa != ISA_GENERIC)
            bitslice_popcnt(&ctx, &out, heaps, r0, r1);
        else
#endif
            bitslice_generic(&ctx, &out, heaps, r0, r1);
        Py_END_ALLOW_THREADS
    }
    else if (k != 0) {
        Py_BEGIN_ALLOW_THREADS
        switch (isa) {
#if PPRL_AVX512
        case ISA_AVX512:
            block_avx512(&ctx, &out, heaps, r0, r1);
            break;
#endif
#if PPRL_AVX2
        case ISA_AVX2:
            block_avx2(&ctx, &out, heaps, r0, r1);
            break;
#endif
#if PPRL_NEON
        case ISA_NEON:
            block_neon(&ctx, &out, heaps, r0, r1);
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
    free(scratch.mem);
    free(bs_idx);
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
    PyBuffer_Release(&bt);
    return result;
}

static PyMethodDef methods[] = {
    {"isas", py_isas, METH_NOARGS,
     "isas() -> tuple of str\n\nKernel variants usable on this CPU, best last."},
    {"transpose", py_transpose, METH_VARARGS,
     "transpose(b, nwords, out) -> None\n\n"
     "The right rows b as blocks of 256 rows, column-wise, for the bit-sliced filter:\n"
     "out holds ceil(m / 256) * (64 * nwords + 1) * 4 uint64."},
    {"need_table", py_need_table, METH_VARARGS,
     "need_table(threshold, nbits) -> bytes\n\n"
     "uint32 need[s], s = 0..2*nbits: smallest intersection reaching the threshold."},
    {"pairs", py_pairs, METH_VARARGS,
     "pairs(a, a_cnt, a_idx, b, b_cnt, b_rest, b_idx, lo, hi, need, nwords, r0, r1, delta, k,"
     " isa[, split[, bt]])"
     " -> (i, j, sim) as bytes\n\n"
     "Dice pairs of left rows r0..r1-1 (popcount order) reaching the threshold; b_rest holds\n"
     "the right rows' popcounts of words split..nwords-1 (split: nwords // 2 by default);\n"
     "with bt (transpose()'s layout of b) the bit-sliced filter runs, with identical results."},
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
