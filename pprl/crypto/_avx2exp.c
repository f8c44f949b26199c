/*
 * pprl.crypto._avx2exp -- the no-IFMA counterpart of _montexp: batched modular
 * exponentiation base^e mod M (Paillier CRT decryption) and DJN's fixed-base
 * table products prod_i T[i][digit_i(a)] mod n^2 (encryption), for an odd M of
 * up to 4318 bits, with AVX2 (vpmuludq), four numbers in lockstep.
 *
 * Why: CPUs without AVX-512 IFMA (Hygon, Zen 2/3, pre-Ice-Lake Xeons) fell back
 * to gmpy2: one GMP multiply and divide per table entry plus Python overhead
 * per entry (~5.3 us a step at 4096 bits), and mpz_powm for decryption.
 *
 * How:
 *   - Numbers are L limbs of 27 bits, R = 2^(27 L) > 4M.  Four numbers travel
 *     together, limb j of lane k at [4 j + k] (64-bit slots): one ymm holds limb
 *     j of all four, and vpmuludq multiplies four 27-bit limbs at once into
 *     54-bit products.
 *   - Almost Montgomery Multiplication in product-scanning (column) order
 *     (Koc et al.'s FIPS): column k sums a_j b_(k-j) + q_j m_(k-j) into one
 *     64-bit accumulator per lane; q_k = t_k k0 mod 2^27 (k0 = -M^-1 mod
 *     2^27) clears the column's low 27 bits, and t >> 27 carries into the
 *     next column.  A column holds at most 2L products < 2^54 plus a carry
 *     < 2^37: below 2^64 for L <= 512, so no carry handling inside a column.
 *     Output limbs come out exact (27 bits); with A, B < 2M the result
 *     (A B + Q M) / R is < 2M, so products chain without any subtraction.
 *   - Two columns per pass: each loaded a_j, q_j is multiplied twice and each
 *     loaded b, m limb is reused by the next j (loads, not multiplies, bound
 *     the one-column loop).
 *   - Table products: all four lanes multiply by entries of the same row,
 *     gathered (transposed) into a scratch number per row.  powmod: the
 *     exponent is shared, so the same fixed 5-bit window schedule runs for all
 *     four lanes, as in _montexp.
 *
 * Not constant time, like the gmpy2 code it replaces: table indexes are
 * exponent digits (cache timing) and the final subtraction is a branch.  The
 * operation count depends only on the exponent's (table's) length.
 *
 * Table format (build_table, to_montgomery): L native uint32 per entry, each
 * a 27-bit limb of x R mod M (< 2M); entry (i, 0) of a table is R mod M.
 * 608 bytes per entry at a 4096-bit modulus, against 512 plain.
 *
 * Functions mirror _montexp's (same arguments; limbs = L of 27 bits, k0 mod
 * 2^27); pprl/crypto/montexp.py computes L, R^2 mod M and k0.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(AVX2EXP_GENERIC)
#define AVX2EXP_X86 1
#include <immintrin.h>
#include "../_cpu.h"
#endif

#define RADIX 27
#define MASK27 ((uint32_t)((1u << RADIX) - 1))
#define MAX_LIMBS 160 /* 27 * 160 - 2 = 4318 bits */
#define LANES 4
#define WIN 5
#define TABLE (1 << WIN)

/* ---- scalar helpers (any CPU) -------------------------------------------------------- */

/* Little-endian bytes -> L limbs of 27 bits (bits beyond 27 L are dropped). */
static void bytes_to_limbs(const uint8_t *src, size_t nbytes, uint32_t *dst, int L)
{
    uint64_t acc = 0;
    int have = 0, j = 0;
    for (size_t i = 0; i < nbytes && j < L; i++) {
        acc |= (uint64_t)src[i] << have;
        have += 8;
        while (have >= RADIX && j < L) {
            dst[j++] = (uint32_t)acc & MASK27;
            acc >>= RADIX;
            have -= RADIX;
        }
    }
    while (j < L) {
        dst[j++] = (uint32_t)acc & MASK27;
        acc >>= RADIX;
    }
}

/* L limbs of 27 bits (each < 2^27) -> nbytes little-endian bytes (higher bits dropped). */
static void limbs_to_bytes(const uint32_t *src, int L, uint8_t *dst, size_t nbytes)
{
    uint64_t acc = 0;
    int have = 0, j = 0;
    for (size_t i = 0; i < nbytes; i++) {
        while (have < 8 && j < L) {
            acc |= (uint64_t)src[j++] << have;
            have += RADIX;
        }
        dst[i] = (uint8_t)acc;
        acc >>= 8;
        have = have >= 8 ? have - 8 : 0;
    }
}

/* x >= m ? x - m : x, on normalised 27-bit limbs. */
static void cond_sub(uint32_t *x, const uint32_t *m, int L)
{
    int j = L - 1;
    while (j > 0 && x[j] == m[j])
        j--;
    if (x[j] < m[j])
        return;
    int64_t borrow = 0;
    for (int i = 0; i < L; i++) {
        int64_t d = (int64_t)x[i] - (int64_t)m[i] - borrow;
        borrow = d < 0;
        x[i] = (uint32_t)(d & MASK27);
    }
}

/* No bit at or above 27 L is set in the little-endian number (bytes_to_limbs would drop it). */
static int high_bits_zero(const uint8_t *v, size_t nbytes, int L)
{
    const size_t lim = (size_t)RADIX * (size_t)L;
    for (size_t t = lim / 8; t < nbytes; t++) {
        const unsigned byte = t * 8 >= lim ? v[t] : (unsigned)v[t] >> (lim - t * 8);
        if (byte != 0)
            return 0;
    }
    return 1;
}

static int bits_of(const uint32_t *m, int L)
{
    int top = L - 1;
    while (top > 0 && m[top] == 0)
        top--;
    return RADIX * top + (32 - __builtin_clz(m[top] | 1));
}

/* The modulus as limbs; ValueError (-1) unless odd, 2 <= limbs <= MAX_LIMBS and bits + 2 <= 27 L. */
static int load_modulus(const Py_buffer *modulus, int L, uint32_t *m)
{
    const uint8_t *mb = modulus->buf;
    if (L < 2 || L > MAX_LIMBS || modulus->len == 0 || (mb[0] & 1) == 0 ||
        (size_t)modulus->len * 8 > (size_t)RADIX * (size_t)L + 64) {
        PyErr_SetString(PyExc_ValueError, "bad limb count or modulus (must be odd and fit the limbs)");
        return -1;
    }
    bytes_to_limbs(mb, (size_t)modulus->len, m, L);
    for (size_t i = (size_t)RADIX * (size_t)L / 8 + 1; i < (size_t)modulus->len; i++)
        if (mb[i]) {
            PyErr_SetString(PyExc_ValueError, "modulus too large for this limb count");
            return -1;
        }
    if (bits_of(m, L) + 2 > RADIX * L) {
        PyErr_SetString(PyExc_ValueError, "modulus too large for this limb count");
        return -1;
    }
    return 0;
}

#ifdef AVX2EXP_X86

#define TGT __attribute__((target("avx2")))
#define MUL _mm256_mul_epu32
#define ADD _mm256_add_epi64
#define LD(p) _mm256_load_si256(p)

/* out = AMM(a, b) for four lanes; a, b, out interleaved (4 L uint64, 32-byte aligned), out may
 * alias a or b (column k reads only limbs > k - L, and writes limb k - L); mb = M's limbs, each
 * repeated four times. */
static TGT void amm4(uint64_t *out, const uint64_t *a, const uint64_t *b, const uint64_t *mb, uint32_t k0,
                     int L)
{
    /* clean upper state on entry: legacy-SSE code in the caller (memcpy, CPython) may have left
     * it dirty, which cost ~25% here */
    _mm256_zeroupper();
    __m256i q[MAX_LIMBS + 1];
    const __m256i K0 = _mm256_set1_epi64x((long long)k0), MK = _mm256_set1_epi64x((long long)MASK27);
    const __m256i *A = (const __m256i *)a, *B = (const __m256i *)b, *M = (const __m256i *)mb;
    __m256i *O = (__m256i *)out;
    __m256i t = _mm256_setzero_si256();
    /* pairs of columns (k, k+1); the last is (2L-2, 2L-1), and its carry out is 0 (result < R) */
    for (int k = 0; k < 2 * L; k += 2) {
        const int lo0 = k - L + 1 > 0 ? k - L + 1 : 0, lo1 = k + 2 - L > 0 ? k + 2 - L : 0;
        const int hi = k - 1 < L - 1 ? k - 1 : L - 1;
        __m256i t2 = _mm256_setzero_si256(), u = t2, u2 = t2;
        if (lo0 < lo1 && lo0 <= hi) { /* j = lo0 belongs to column k only */
            t = ADD(t, MUL(LD(A + lo0), LD(B + k - lo0)));
            t2 = ADD(t2, MUL(q[lo0], LD(M + k - lo0)));
        }
        if (lo1 <= hi) { /* k + 1 - lo1 <= L - 1 always */
            __m256i b1 = LD(B + k + 1 - lo1), m1 = LD(M + k + 1 - lo1);
            for (int j = lo1; j <= hi; j++) {
                const __m256i b0 = LD(B + k - j), m0 = LD(M + k - j), aj = LD(A + j), qj = q[j];
                t = ADD(t, MUL(aj, b0));
                t2 = ADD(t2, MUL(qj, m0));
                u = ADD(u, MUL(aj, b1));
                u2 = ADD(u2, MUL(qj, m1));
                b1 = b0;
                m1 = m0;
            }
        }
        t = ADD(t, t2);
        u = ADD(u, u2);
        if (k < L) {
            t = ADD(t, MUL(LD(A + k), LD(B)));
            const __m256i qk = _mm256_and_si256(MUL(t, K0), MK);
            q[k] = qk;
            t = ADD(t, MUL(qk, LD(M)));
            u = ADD(u, ADD(MUL(LD(A + k), LD(B + 1)), MUL(qk, LD(M + 1)))); /* L >= 2 */
        } else {
            O[k - L] = _mm256_and_si256(t, MK);
        }
        u = ADD(u, _mm256_srli_epi64(t, RADIX));
        if (k + 1 < L) {
            u = ADD(u, MUL(LD(A + k + 1), LD(B)));
            const __m256i qk = _mm256_and_si256(MUL(u, K0), MK);
            q[k + 1] = qk;
            u = ADD(u, MUL(qk, LD(M)));
        } else {
            O[k + 1 - L] = _mm256_and_si256(u, MK);
        }
        t = _mm256_srli_epi64(u, RADIX);
    }
}

static int cpu_ok(void)
{
    return pprl_cpu_has(PPRL_CPU_AVX2);
}

#else

static int cpu_ok(void) { return 0; }

#endif /* AVX2EXP_X86 */

/* ---- lane layout helpers ------------------------------------------------------------- */

static void put_lane(uint64_t *x4, int lane, const uint32_t *limbs, int L)
{
    for (int j = 0; j < L; j++)
        x4[LANES * j + lane] = limbs[j];
}

static void get_lane(const uint64_t *x4, int lane, uint32_t *limbs, int L)
{
    for (int j = 0; j < L; j++)
        limbs[j] = (uint32_t)x4[LANES * j + lane];
}

static void bcast(uint64_t *x4, const uint32_t *limbs, int L)
{
    for (int k = 0; k < LANES; k++)
        put_lane(x4, k, limbs, L);
}

typedef struct {
    int L;
    uint32_t m[MAX_LIMBS];
    uint64_t *mb;  /* M broadcast, 4 L */
    uint64_t *one; /* 1 broadcast */
    uint64_t *r2;  /* R^2 mod M broadcast */
    uint32_t k0;
    uint64_t *mem;
} ctx_t;

/* 32-byte aligned scratch of `count` interleaved numbers after the context's own three. */
static int ctx_init(ctx_t *c, const Py_buffer *modulus, const Py_buffer *r2, unsigned long long k0, int L,
                    size_t count, uint64_t **scratch)
{
    c->mem = NULL;
    if (load_modulus(modulus, L, c->m) < 0)
        return -1;
    if (r2 != NULL && (size_t)r2->len != (size_t)modulus->len) {
        PyErr_SetString(PyExc_ValueError, "r2 must be as long as the modulus");
        return -1;
    }
    c->L = L;
    c->k0 = (uint32_t)k0 & MASK27;
    const size_t words = (size_t)LANES * (size_t)L;
    c->mem = aligned_alloc(32, (3 + count) * words * sizeof(uint64_t));
    if (c->mem == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->mb = c->mem;
    c->one = c->mem + words;
    c->r2 = c->mem + 2 * words;
    bcast(c->mb, c->m, L);
    memset(c->one, 0, words * sizeof(uint64_t));
    for (int k = 0; k < LANES; k++)
        c->one[k] = 1;
    if (r2 != NULL) {
        uint32_t r2l[MAX_LIMBS];
        bytes_to_limbs(r2->buf, (size_t)r2->len, r2l, L);
        bcast(c->r2, r2l, L);
    }
    *scratch = c->mem + 3 * words;
    return 0;
}

#ifdef AVX2EXP_X86
static void amm(const ctx_t *c, uint64_t *out, const uint64_t *a, const uint64_t *b)
{
    amm4(out, a, b, c->mb, c->k0, c->L);
}
#else
static void amm(const ctx_t *c, uint64_t *out, const uint64_t *a, const uint64_t *b)
{
    (void)c; (void)out; (void)a; (void)b;
}
#endif

/* lanes of x (Montgomery form, < 2M) -> fully reduced little-endian bytes: AMM(x, 1), then <= M. */
static void leave(const ctx_t *c, uint64_t *x, uint8_t *const *dst, int lanes, size_t nbytes)
{
    uint32_t limbs[MAX_LIMBS];
    amm(c, x, x, c->one);
    for (int k = 0; k < lanes; k++) {
        get_lane(x, k, limbs, c->L);
        cond_sub(limbs, c->m, c->L);
        limbs_to_bytes(limbs, c->L, dst[k], nbytes);
    }
}

static int check_cpu(void)
{
    if (!cpu_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "_avx2exp needs x86-64 with AVX2");
        return -1;
    }
    return 0;
}

static PyObject *avx2exp_available(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyBool_FromLong(cpu_ok());
}

static unsigned exp_window(const uint8_t *e, size_t ebytes, size_t pos, size_t width)
{
    unsigned v = 0;
    for (size_t b = 0; b < width; b++) {
        const size_t bit = pos + b, byte = bit >> 3;
        if (byte < ebytes)
            v |= (unsigned)((e[byte] >> (bit & 7)) & 1) << b;
    }
    return v;
}

/* powmod_batch(bases, exponent, modulus, r2, k0, limbs) -> bytes: base^exponent mod M for each
 * len(modulus)-byte little-endian base (< M), fully reduced; the GIL is released. */
static PyObject *avx2exp_powmod_batch(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer bases, exponent, modulus, r2;
    unsigned long long k0;
    int L;
    if (!PyArg_ParseTuple(args, "y*y*y*y*Ki", &bases, &exponent, &modulus, &r2, &k0, &L))
        return NULL;
    PyObject *result = NULL;
    ctx_t c = {0};
    uint64_t *scratch = NULL;
    const size_t nbytes = (size_t)modulus.len;
    if (check_cpu() < 0 || ctx_init(&c, &modulus, &r2, k0, L, 1 + TABLE, &scratch) < 0)
        goto done;
    if ((size_t)bases.len % nbytes != 0) {
        PyErr_SetString(PyExc_ValueError, "bases must be whole numbers of len(modulus) bytes");
        goto done;
    }
    {
        const size_t count = (size_t)bases.len / nbytes, words = (size_t)LANES * (size_t)L;
        const uint8_t *e = exponent.buf, *in = bases.buf;
        const size_t eb = (size_t)exponent.len;
        size_t ebits = 0;
        for (size_t i = eb; i-- > 0;)
            if (e[i]) {
                ebits = 8 * i + (size_t)(32 - __builtin_clz((unsigned)e[i]));
                break;
            }
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * nbytes));
        if (result == NULL)
            goto done;
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        uint64_t *x = scratch, *tab = scratch + words;
        uint32_t limbs[MAX_LIMBS];
        for (size_t i = 0; i < count; i += LANES) {
            const int kk = count - i >= LANES ? LANES : (int)(count - i);
            for (int k = 0; k < LANES; k++) { /* idle lanes repeat lane 0 */
                bytes_to_limbs(in + (i + (size_t)(k < kk ? k : 0)) * nbytes, nbytes, limbs, L);
                put_lane(x, k, limbs, L);
            }
            amm(&c, tab, c.one, c.r2);             /* R mod M */
            amm(&c, tab + words, x, c.r2);         /* base R mod M */
            for (int d = 2; d < TABLE; d++)
                amm(&c, tab + (size_t)d * words, tab + (size_t)(d - 1) * words, tab + words);
            /* fixed windows from the top; the first (partial) window is a table entry */
            size_t pos = ebits == 0 ? 0 : (ebits - 1) / WIN * WIN;
            memcpy(x, tab + (size_t)exp_window(e, eb, pos, WIN) * words, words * sizeof(uint64_t));
            while (pos > 0) {
                pos -= WIN;
                for (int s = 0; s < WIN; s++)
                    amm(&c, x, x, x);
                amm(&c, x, x, tab + (size_t)exp_window(e, eb, pos, WIN) * words);
            }
            uint8_t *dst[LANES];
            for (int k = 0; k < kk; k++)
                dst[k] = out + (i + (size_t)k) * nbytes;
            leave(&c, x, dst, kk, nbytes);
        }
        Py_END_ALLOW_THREADS
    }
done:
    free(c.mem);
    PyBuffer_Release(&bases);
    PyBuffer_Release(&exponent);
    PyBuffer_Release(&modulus);
    PyBuffer_Release(&r2);
    return result;
}

/* to_montgomery(values, modulus, r2, k0, limbs, big_endian=False) -> bytes: count numbers of
 * len(modulus) bytes each -> count * L native uint32 limbs of x R mod M (< 2M).  ValueError
 * unless every x is in [1, M) (table entries are units; a file read from disk is checked). */
static PyObject *avx2exp_to_montgomery(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer values, modulus, r2;
    unsigned long long k0;
    int L, big_endian = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*Ki|p", &values, &modulus, &r2, &k0, &L, &big_endian))
        return NULL;
    PyObject *result = NULL;
    ctx_t c = {0};
    uint64_t *x = NULL;
    uint8_t *rev = NULL;
    const size_t nbytes = (size_t)modulus.len;
    if (check_cpu() < 0 || ctx_init(&c, &modulus, &r2, k0, L, 1, &x) < 0)
        goto done;
    if ((size_t)values.len % nbytes != 0) {
        PyErr_SetString(PyExc_ValueError, "values must be whole numbers of len(modulus) bytes");
        goto done;
    }
    rev = malloc(nbytes);
    if (rev == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    {
        const size_t count = (size_t)values.len / nbytes, Lz = (size_t)L;
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * Lz * sizeof(uint32_t)));
        if (result == NULL)
            goto done;
        uint32_t *out = (uint32_t *)PyBytes_AS_STRING(result);
        const uint8_t *src = values.buf;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        uint32_t limbs[MAX_LIMBS];
        for (size_t i = 0; i < count && !bad; i += LANES) {
            const int kk = count - i >= LANES ? LANES : (int)(count - i);
            for (int k = 0; k < LANES; k++) {
                const uint8_t *v = src + (i + (size_t)(k < kk ? k : 0)) * nbytes;
                if (big_endian) {
                    for (size_t t = 0; t < nbytes; t++)
                        rev[t] = v[nbytes - 1 - t];
                    v = rev;
                }
                bytes_to_limbs(v, nbytes, limbs, L);
                /* in [1, M): not all zero, below M, and no bits beyond the limbs */
                int j = L - 1;
                while (j > 0 && limbs[j] == c.m[j])
                    j--;
                uint32_t any = 0;
                for (int t = 0; t < L; t++)
                    any |= limbs[t];
                bad |= any == 0 || limbs[j] >= c.m[j];
                bad |= !high_bits_zero(v, nbytes, L);
                put_lane(x, k, limbs, L);
            }
            if (bad)
                break;
            amm(&c, x, x, c.r2);
            for (int k = 0; k < kk; k++)
                get_lane(x, k, out + (i + (size_t)k) * Lz, L);
        }
        Py_END_ALLOW_THREADS
        if (bad) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_ValueError, "a value is 0 or not below the modulus");
        }
    }
done:
    free(rev);
    free(c.mem);
    PyBuffer_Release(&values);
    PyBuffer_Release(&modulus);
    PyBuffer_Release(&r2);
    return result;
}

/* from_montgomery(data, modulus, k0, limbs) -> bytes: the inverse of to_montgomery, len(modulus)
 * little-endian bytes per number, fully reduced.  Limbs must be 27-bit values (ValueError). */
static PyObject *avx2exp_from_montgomery(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer data, modulus;
    unsigned long long k0;
    int L;
    if (!PyArg_ParseTuple(args, "y*y*Ki", &data, &modulus, &k0, &L))
        return NULL;
    PyObject *result = NULL;
    ctx_t c = {0};
    uint64_t *x = NULL;
    const size_t nbytes = (size_t)modulus.len;
    if (check_cpu() < 0 || ctx_init(&c, &modulus, NULL, k0, L, 1, &x) < 0)
        goto done;
    if ((size_t)data.len % ((size_t)L * sizeof(uint32_t)) != 0 || ((uintptr_t)data.buf & 3) != 0) {
        PyErr_SetString(PyExc_ValueError, "data must be whole, aligned entries of limbs * 4 bytes");
        goto done;
    }
    {
        const size_t count = (size_t)data.len / ((size_t)L * sizeof(uint32_t));
        const uint32_t *in = data.buf;
        for (size_t i = 0; i < count * (size_t)L; i++)
            if (in[i] > MASK27) {
                PyErr_SetString(PyExc_ValueError, "a limb is wider than 27 bits");
                goto done;
            }
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * nbytes));
        if (result == NULL)
            goto done;
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        for (size_t i = 0; i < count; i += LANES) {
            const int kk = count - i >= LANES ? LANES : (int)(count - i);
            uint8_t *dst[LANES];
            for (int k = 0; k < LANES; k++)
                put_lane(x, k, in + (i + (size_t)(k < kk ? k : 0)) * (size_t)L, L);
            for (int k = 0; k < kk; k++)
                dst[k] = out + (i + (size_t)k) * nbytes;
            leave(&c, x, dst, kk, nbytes);
        }
        Py_END_ALLOW_THREADS
    }
done:
    free(c.mem);
    PyBuffer_Release(&data);
    PyBuffer_Release(&modulus);
    return result;
}

/* build_table(base, window, rows, modulus, r2, k0, limbs) -> bytes: the table_products table of
 * base (len(modulus) little-endian bytes, < M) in Montgomery form: row starts s_i =
 * base^(2^(window i)) by squaring, then T[i][j] = T[i][j-1] s_i, four rows in lockstep. */
static PyObject *avx2exp_build_table(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer base, modulus, r2;
    int window, rows, L;
    unsigned long long k0;
    if (!PyArg_ParseTuple(args, "y*iiy*y*Ki", &base, &window, &rows, &modulus, &r2, &k0, &L))
        return NULL;
    PyObject *result = NULL;
    ctx_t c = {0};
    uint64_t *s = NULL;
    const size_t nbytes = (size_t)modulus.len;
    if (check_cpu() < 0 || ctx_init(&c, &modulus, &r2, k0, L, 3, &s) < 0)
        goto done;
    if ((size_t)base.len != nbytes || window < 1 || window > 16 || rows < 1) {
        PyErr_SetString(PyExc_ValueError, "bad base length, window or rows");
        goto done;
    }
    {
        const size_t entries = (size_t)1 << window, R = (size_t)rows, Lz = (size_t)L;
        const size_t words = (size_t)LANES * Lz;
        if (R * entries * Lz * sizeof(uint32_t) > (size_t)PY_SSIZE_T_MAX) {
            PyErr_NoMemory();
            goto done;
        }
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(R * entries * Lz * sizeof(uint32_t)));
        if (result == NULL)
            goto done;
        uint32_t *T = (uint32_t *)PyBytes_AS_STRING(result);
        const uint8_t *bb = base.buf;
        Py_BEGIN_ALLOW_THREADS
#define E(i, j) (T + ((size_t)(i) * entries + (size_t)(j)) * Lz)
        uint64_t *x = s, *step = s + words, *acc = s + 2 * words;
        uint32_t limbs[MAX_LIMBS];
        bytes_to_limbs(bb, nbytes, limbs, L);
        bcast(x, limbs, L);
        amm(&c, x, x, c.r2);                      /* s_0 = base R (all lanes) */
        amm(&c, acc, c.one, c.r2);                /* R mod M */
        get_lane(acc, 0, limbs, L);
        for (size_t i = 0; i < R; i++) {
            memcpy(E(i, 0), limbs, Lz * sizeof(uint32_t));
            get_lane(x, 0, E(i, 1), L);
            if (i + 1 < R)
                for (int t = 0; t < window; t++)
                    amm(&c, x, x, x);
        }
        for (size_t i = 0; i < R; i += LANES) {
            const int kk = R - i >= LANES ? LANES : (int)(R - i);
            for (int k = 0; k < LANES; k++)
                put_lane(step, k, E(i + (size_t)(k < kk ? k : 0), 1), L);
            memcpy(acc, step, words * sizeof(uint64_t));
            for (size_t j = 2; j < entries; j++) {
                amm(&c, acc, acc, step);
                for (int k = 0; k < kk; k++)
                    get_lane(acc, k, E(i + (size_t)k, j), L);
            }
        }
#undef E
        Py_END_ALLOW_THREADS
    }
done:
    free(c.mem);
    PyBuffer_Release(&base);
    PyBuffer_Release(&modulus);
    PyBuffer_Release(&r2);
    return result;
}

/* table_products(table, window, rows, exponents, ebytes, modulus, k0, limbs) -> bytes: per
 * exponent e, prod_i T[i][digit_i(e)] = base^(e mod 2^(window rows)) mod M, len(modulus)
 * little-endian bytes, fully reduced.  Every row costs one multiplication whatever the digit (a
 * zero digit multiplies by R mod M), plus one to leave Montgomery form; four exponents in
 * lockstep, the GIL released. */
static PyObject *avx2exp_table_products(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer table, exponents, modulus;
    int window, rows, L;
    Py_ssize_t ebytes;
    unsigned long long k0;
    if (!PyArg_ParseTuple(args, "y*iiy*ny*Ki", &table, &window, &rows, &exponents, &ebytes, &modulus, &k0, &L))
        return NULL;
    PyObject *result = NULL;
    ctx_t c = {0};
    uint64_t *s = NULL;
    const size_t nbytes = (size_t)modulus.len, Lz = (size_t)L;
    if (check_cpu() < 0 || ctx_init(&c, &modulus, NULL, k0, L, 2, &s) < 0)
        goto done;
    if (window < 1 || window > 16 || rows < 1 || ebytes < 1 || (size_t)exponents.len % (size_t)ebytes != 0 ||
        (size_t)table.len != (size_t)rows * ((size_t)1 << window) * Lz * sizeof(uint32_t) ||
        ((uintptr_t)table.buf & 3) != 0) {
        PyErr_SetString(PyExc_ValueError, "bad window / rows / table or exponent lengths");
        goto done;
    }
    {
        const size_t count = (size_t)exponents.len / (size_t)ebytes, entries = (size_t)1 << window;
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * nbytes));
        if (result == NULL)
            goto done;
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        const uint32_t *T = table.buf;
        const uint8_t *E = exponents.buf;
        const size_t eb = (size_t)ebytes, w = (size_t)window, words = (size_t)LANES * Lz;
        Py_BEGIN_ALLOW_THREADS
        uint64_t *x = s, *y = s + words;
        for (size_t i = 0; i < count; i += LANES) {
            const int kk = count - i >= LANES ? LANES : (int)(count - i);
            for (size_t r = 0; r < (size_t)rows; r++) {
                uint64_t *dst = r == 0 ? x : y;
                for (int k = 0; k < LANES; k++) {
                    const uint8_t *e = E + (i + (size_t)(k < kk ? k : 0)) * eb;
                    const size_t d = exp_window(e, eb, r * w, w);
                    const uint32_t *src = T + (r * entries + d) * Lz;
                    for (size_t j = 0; j < Lz; j++)
                        dst[LANES * j + (size_t)k] = src[j];
                }
                if (r > 0)
                    amm(&c, x, x, y);
            }
            uint8_t *dst[LANES];
            for (int k = 0; k < kk; k++)
                dst[k] = out + (i + (size_t)k) * nbytes;
            leave(&c, x, dst, kk, nbytes);
        }
        Py_END_ALLOW_THREADS
    }
done:
    free(c.mem);
    PyBuffer_Release(&table);
    PyBuffer_Release(&exponents);
    PyBuffer_Release(&modulus);
    return result;
}

static PyMethodDef avx2exp_methods[] = {
    {"available", avx2exp_available, METH_NOARGS, "available() -> bool: the CPU (and OS) support AVX2."},
    {"powmod_batch", avx2exp_powmod_batch, METH_VARARGS,
     "powmod_batch(bases, exponent, modulus, r2, k0, limbs) -> bytes: base^exponent mod modulus "
     "for each len(modulus)-byte little-endian base (< modulus); see pprl/crypto/montexp.py."},
    {"to_montgomery", avx2exp_to_montgomery, METH_VARARGS,
     "to_montgomery(values, modulus, r2, k0, limbs, big_endian=False) -> bytes: x R mod M as limbs "
     "native uint32 (27-bit limbs) per value."},
    {"from_montgomery", avx2exp_from_montgomery, METH_VARARGS,
     "from_montgomery(data, modulus, k0, limbs) -> bytes: the inverse of to_montgomery, fully reduced."},
    {"build_table", avx2exp_build_table, METH_VARARGS,
     "build_table(base, window, rows, modulus, r2, k0, limbs) -> bytes: the table_products table of base."},
    {"table_products", avx2exp_table_products, METH_VARARGS,
     "table_products(table, window, rows, exponents, ebytes, modulus, k0, limbs) -> bytes: fixed-base "
     "table products base^e mod modulus, one per exponent; see pprl/crypto/montexp.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef avx2exp_module = {
    PyModuleDef_HEAD_INIT, "_avx2exp",
    "Batched Montgomery arithmetic with AVX2, four numbers in lockstep (Paillier without IFMA).", -1,
    avx2exp_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__avx2exp(void) { return PyModule_Create(&avx2exp_module); }
