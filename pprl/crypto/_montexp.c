/*
 * pprl.crypto._montexp -- batched modular exponentiation base^e mod M for an
 * odd M of up to 4158 bits, with AVX-512 IFMA (vpmadd52luq / vpmadd52huq).
 *
 * Why: Paillier CRT decryption is two exponentiations per ciphertext,
 * c^(p-1) mod p^2 and c^(q-1) mod q^2, with the same exponent and modulus for
 * a whole batch.  GMP's mpz_powm does one 2048-bit / 1024-bit exponentiation
 * in ~1.3 ms here; the 52-bit multiply-accumulate lanes of IFMA do it several
 * times faster.
 *
 * How:
 *   - Numbers are L limbs of 52 bits in 64-bit lanes, L a multiple of 8
 *     (NV = L/8 zmm registers), with R = 2^(52 L) > 4M.
 *   - Almost Montgomery Multiplication, word by word: for i = 0..L-1
 *         acc += lo52(A * b_i);  y = acc_0 * k0 mod 2^52  (k0 = -M^-1 mod 2^52)
 *         acc += lo52(M * y);    (now acc_0 = 0 mod 2^52)
 *         acc  = acc >> 52 bits: lanes move down by one (valignq), the
 *                old lane 0's carry acc_0 >> 52 is added to the new lane 0;
 *         acc += hi52(A * b_i) + hi52(M * y)   (limb j's high half belongs to
 *                limb j+1, which after the shift sits in lane j).
 *     The result is (A B + M Y) / R with Y < R, so A, B < 2M gives a result
 *     < 4M^2/R + M < 2M: products stay below 2M without any subtraction.
 *     Lanes are not normalised inside the loop: a value stays at most L
 *     iterations in the accumulator and gains < 4 * 2^52 per iteration, so
 *     lanes stay below 4 L 2^52 <= 2^61.  One scalar carry pass at the end
 *     brings the limbs back to 52 bits (vpmadd52 reads only 52 bits of each
 *     operand, so every input must be normalised).
 *   - Several bases (KK) are multiplied in lockstep in one loop: the step
 *     acc_0 -> y -> acc is a latency chain, and independent products fill it.
 *     The exponent is shared, so the same squarings and table multiplications
 *     happen for every base of a group.
 *   - Fixed 5-bit windows over the exponent from the top, a table of
 *     base^0..base^31 in Montgomery form; in with AMM(a, R^2 mod M), out with
 *     AMM(x, 1) (which is <= M) and one conditional subtraction.
 *
 * Not constant time, like mpz_powm which it replaces: the table index is a
 * window of the exponent (as in any fixed-window method) and the final
 * subtraction is a branch.  Every window, zero or not, costs one table
 * multiplication, so the operation count depends only on the exponent's
 * length.
 *
 * powmod_batch(bases, exponent, modulus, r2, k0, limbs) -> bytes
 *     bases:    k numbers of len(modulus) bytes each, little endian, each < M
 *     exponent: little endian, any length
 *     modulus:  little endian, odd
 *     r2:       R^2 mod M, len(modulus) bytes, little endian
 *     k0:       -M^-1 mod 2^52
 *     limbs:    L, a multiple of 8 with 52 L >= bits(M) + 2, at most 80
 *   returns the k results, len(modulus) bytes each, little endian, fully
 *   reduced.  The GIL is released while the batch runs.
 * available() -> bool: True when the CPU (and OS) support AVX-512F + IFMA.
 *
 * DJN encryption (pprl/crypto/paillier/djn.py) needs instead many fixed-base
 * products h^a = prod_i T[i][digit_i(a)], one random exponent a each, over a
 * table of h^(j 2^(w i)) mod n^2: build_table makes that table directly in
 * Montgomery form, table_products multiplies one entry per row for several
 * exponents in lockstep, to_montgomery / from_montgomery convert tables
 * (from disk, for the gmpy2 fallback).  See the comments at each function.
 *
 * The Python wrapper pprl/crypto/montexp.py computes L, R^2 and k0.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* MONTEXP_GENERIC: build the no-IFMA stub on x86-64 too (to check that it compiles). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MONTEXP_GENERIC)
#define MONTEXP_X86 1
#include <immintrin.h>
#include "../_cpu.h"
#endif

#define MASK52 ((uint64_t)0xfffffffffffffULL)
#define MAX_LIMBS 80
#define WIN 5
#define TABLE (1 << WIN)
#define GROUP 4 /* most bases per lockstep group */

#ifdef MONTEXP_X86

#define TGT __attribute__((target("avx512f,avx512ifma")))

typedef void (*amm_fn)(uint64_t *const *out, const uint64_t *const *a, const uint64_t *const *b,
                       const uint64_t *m, uint64_t k0);

/* out[k] = AMM(a[k], b[k]) for k < KK; out may alias a or b. */
static inline TGT __attribute__((always_inline)) void
amm_body(uint64_t *const *out, const uint64_t *const *a, const uint64_t *const *b,
         const uint64_t *m, uint64_t k0, const int NV, const int KK)
{
    const int L = 8 * NV;
    /* Fixed (largest) sizes rather than [KK][NV]: no variable-length arrays;
     * NV and KK are constants after inlining, so only the used entries stay. */
    __m512i acc[GROUP][MAX_LIMBS / 8], A[GROUP][MAX_LIMBS / 8], M[MAX_LIMBS / 8];
    const __m512i zero = _mm512_setzero_si512();
    const uint64_t m0 = m[0];
    for (int j = 0; j < NV; j++)
        M[j] = _mm512_loadu_si512((const void *)(m + 8 * j));
    for (int k = 0; k < KK; k++)
        for (int j = 0; j < NV; j++) {
            A[k][j] = _mm512_loadu_si512((const void *)(a[k] + 8 * j));
            acc[k][j] = zero;
        }
    for (int i = 0; i < L; i++) {
        for (int k = 0; k < KK; k++) {
            const __m512i Bi = _mm512_set1_epi64((long long)b[k][i]);
            for (int j = 0; j < NV; j++)
                acc[k][j] = _mm512_madd52lo_epu64(acc[k][j], A[k][j], Bi);
            const uint64_t r0 = (uint64_t)_mm_cvtsi128_si64(_mm512_castsi512_si128(acc[k][0]));
            const uint64_t y = (r0 * k0) & MASK52;
            const __m512i Y = _mm512_set1_epi64((long long)y);
            for (int j = 0; j < NV; j++)
                acc[k][j] = _mm512_madd52lo_epu64(acc[k][j], M[j], Y);
            const uint64_t carry = (r0 + ((m0 * y) & MASK52)) >> 52;
            for (int j = 0; j < NV - 1; j++)
                acc[k][j] = _mm512_alignr_epi64(acc[k][j + 1], acc[k][j], 1);
            acc[k][NV - 1] = _mm512_alignr_epi64(zero, acc[k][NV - 1], 1);
            acc[k][0] = _mm512_add_epi64(acc[k][0], _mm512_maskz_set1_epi64(1, (long long)carry));
            for (int j = 0; j < NV; j++) {
                acc[k][j] = _mm512_madd52hi_epu64(acc[k][j], A[k][j], Bi);
                acc[k][j] = _mm512_madd52hi_epu64(acc[k][j], M[j], Y);
            }
        }
    }
    for (int k = 0; k < KK; k++) {
        uint64_t tmp[MAX_LIMBS] __attribute__((aligned(64)));
        for (int j = 0; j < NV; j++)
            _mm512_store_si512((void *)(tmp + 8 * j), acc[k][j]);
        uint64_t c = 0;
        for (int j = 0; j < L; j++) {
            const uint64_t v = tmp[j] + c;
            out[k][j] = v & MASK52;
            c = v >> 52;
        }
    }
}

#define DEFINE_AMM(NV, KK)                                                                          \
    static TGT void amm_##NV##_##KK(uint64_t *const *out, const uint64_t *const *a,                \
                                    const uint64_t *const *b, const uint64_t *m, uint64_t k0)      \
    {                                                                                              \
        amm_body(out, a, b, m, k0, NV, KK);                                                        \
    }

#define DEFINE_AMM_NV(NV) DEFINE_AMM(NV, 1) DEFINE_AMM(NV, 2) DEFINE_AMM(NV, 3) DEFINE_AMM(NV, 4)
DEFINE_AMM_NV(1)
DEFINE_AMM_NV(2)
DEFINE_AMM_NV(3)
DEFINE_AMM_NV(4)
DEFINE_AMM_NV(5)
DEFINE_AMM_NV(6)
DEFINE_AMM_NV(7)
DEFINE_AMM_NV(8)
DEFINE_AMM_NV(9)
DEFINE_AMM_NV(10)

static const amm_fn AMM1[11] = {NULL, amm_1_1, amm_2_1, amm_3_1, amm_4_1, amm_5_1,
                                amm_6_1, amm_7_1, amm_8_1, amm_9_1, amm_10_1};
static const amm_fn AMM2[11] = {NULL, amm_1_2, amm_2_2, amm_3_2, amm_4_2, amm_5_2,
                                amm_6_2, amm_7_2, amm_8_2, amm_9_2, amm_10_2};
static const amm_fn AMM3[11] = {NULL, amm_1_3, amm_2_3, amm_3_3, amm_4_3, amm_5_3,
                                amm_6_3, amm_7_3, amm_8_3, amm_9_3, amm_10_3};
static const amm_fn AMM4[11] = {NULL, amm_1_4, amm_2_4, amm_3_4, amm_4_4, amm_5_4,
                                amm_6_4, amm_7_4, amm_8_4, amm_9_4, amm_10_4};

static int cpu_ok(void)
{
    return pprl_cpu_has(PPRL_CPU_AVX512F | PPRL_CPU_AVX512IFMA);
}

/* Scratch size for the byte <-> limb conversions: 52 L / 8 + 8 bytes of words, or the
 * longest accepted modulus (52 L + 64 bits), whichever is larger, with room to spare. */
#define CONV_BYTES (MAX_LIMBS * 52 / 8 + 64)

/* Little-endian bytes -> L limbs of 52 bits (bits beyond 52 L are dropped). */
static void bytes_to_limbs(const uint8_t *src, size_t nbytes, uint64_t *limbs, int L)
{
    uint8_t buf[CONV_BYTES];
    const size_t n = nbytes < CONV_BYTES - 8 ? nbytes : CONV_BYTES - 8;
    memcpy(buf, src, n);
    memset(buf + n, 0, CONV_BYTES - n);
    for (int j = 0; j < L; j++) {
        const size_t bit = 52 * (size_t)j;
        uint64_t v;
        memcpy(&v, buf + (bit >> 3), 8);
        limbs[j] = (v >> (bit & 7)) & MASK52;
    }
}

/* L normalised limbs -> nbytes little-endian bytes (the value must fit). */
static void limbs_to_bytes(const uint64_t *limbs, int L, uint8_t *dst, size_t nbytes)
{
    uint8_t buf[CONV_BYTES];
    memset(buf, 0, CONV_BYTES);
    for (int j = 0; j < L; j++) {
        const size_t bit = 52 * (size_t)j;
        uint64_t v;
        memcpy(&v, buf + (bit >> 3), 8);
        v |= limbs[j] << (bit & 7);
        memcpy(buf + (bit >> 3), &v, 8);
    }
    const size_t n = nbytes < CONV_BYTES ? nbytes : CONV_BYTES;
    memcpy(dst, buf, n);
    if (n < nbytes)
        memset(dst + n, 0, nbytes - n);
}

/* x -= M if x >= M (normalised limbs). */
static void cond_sub(uint64_t *x, const uint64_t *m, int L)
{
    int j = L - 1;
    while (j >= 0 && x[j] == m[j])
        j--;
    if (j >= 0 && x[j] < m[j])
        return;
    uint64_t borrow = 0;
    for (int i = 0; i < L; i++) {
        const uint64_t v = x[i] - m[i] - borrow;
        borrow = v >> 63;
        x[i] = v & MASK52;
    }
}

static unsigned exp_window(const uint8_t *e, size_t pos, size_t width)
{
    unsigned w = 0;
    for (size_t t = 0; t < width; t++)
        w |= (unsigned)((e[(pos + t) >> 3] >> ((pos + t) & 7)) & 1) << t;
    return w;
}

typedef struct {
    int L, NV;
    const uint64_t *m, *r2, *one;
    uint64_t k0;
    const uint8_t *e;
    size_t ebits;
} ctx_t;

/* KK bases (limbs, each < M) -> KK results (limbs, fully reduced), in lockstep. */
static void powmod_group(const ctx_t *c, int KK, uint64_t *table, uint64_t *const *x)
{
    const int L = c->L;
    const amm_fn amm = KK == 4 ? AMM4[c->NV] : KK == 3 ? AMM3[c->NV] : KK == 2 ? AMM2[c->NV] : AMM1[c->NV];
    uint64_t *o[GROUP];
    const uint64_t *a[GROUP], *b[GROUP];
#define T(k, w) (table + ((size_t)(k) * TABLE + (size_t)(w)) * (size_t)L)
    for (int k = 0; k < KK; k++) {
        o[k] = T(k, 1); a[k] = x[k]; b[k] = c->r2;
    }
    amm(o, a, b, c->m, c->k0);                     /* base R */
    for (int k = 0; k < KK; k++) {
        o[k] = T(k, 0); a[k] = c->one; b[k] = c->r2;
    }
    amm(o, a, b, c->m, c->k0);                     /* R mod M */
    for (int w = 2; w < TABLE; w++) {
        for (int k = 0; k < KK; k++) {
            o[k] = T(k, w); a[k] = T(k, w - 1); b[k] = T(k, 1);
        }
        amm(o, a, b, c->m, c->k0);
    }
    const size_t nw = (c->ebits + WIN - 1) / WIN;
    unsigned top = 0;
    if (nw > 0)
        top = exp_window(c->e, WIN * (nw - 1), c->ebits - WIN * (nw - 1));
    for (int k = 0; k < KK; k++)
        memcpy(x[k], T(k, top), sizeof(uint64_t) * (size_t)L);
    for (int k = 0; k < KK; k++) {
        o[k] = x[k]; a[k] = x[k];
    }
    for (size_t wi = nw > 0 ? nw - 1 : 0; wi-- > 0;) {
        for (int s = 0; s < WIN; s++)
            amm(o, a, (const uint64_t *const *)a, c->m, c->k0);
        const unsigned w = exp_window(c->e, WIN * wi, WIN);
        for (int k = 0; k < KK; k++)
            b[k] = T(k, w);
        amm(o, a, b, c->m, c->k0);
    }
    for (int k = 0; k < KK; k++)
        b[k] = c->one;
    amm(o, a, b, c->m, c->k0);                     /* out of Montgomery form: <= M */
    for (int k = 0; k < KK; k++)
        cond_sub(x[k], c->m, L);
#undef T
}


/* Validates L and an odd modulus of at most 52 L - 2 bits; fills m (L limbs). -1 with an exception set. */
static int load_modulus(const Py_buffer *modulus, int L, uint64_t *m)
{
    const size_t nbytes = (size_t)modulus->len;
    if (!cpu_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU lacks AVX-512 IFMA");
        return -1;
    }
    if (L < 8 || L > MAX_LIMBS || L % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "limbs must be a multiple of 8 in [8, 80]");
        return -1;
    }
    if (nbytes == 0 || (((const uint8_t *)modulus->buf)[0] & 1) == 0 || 8 * nbytes > (size_t)52 * (size_t)L + 64) {
        PyErr_SetString(PyExc_ValueError, "bad modulus length or even modulus");
        return -1;
    }
    bytes_to_limbs(modulus->buf, nbytes, m, L);
    int top = L - 1;
    while (top > 0 && m[top] == 0)
        top--;
    const size_t bits = 52 * (size_t)top + (size_t)(64 - __builtin_clzll(m[top] | 1));
    if (bits + 2 > 52 * (size_t)L) {
        PyErr_SetString(PyExc_ValueError, "modulus too large for this limb count");
        return -1;
    }
    return 0;
}

static amm_fn amm_for(int KK, int NV)
{
    return KK == 4 ? AMM4[NV] : KK == 3 ? AMM3[NV] : KK == 2 ? AMM2[NV] : AMM1[NV];
}

/* Lockstep group size for NV zmm registers per number (see powmod_batch). */
static size_t group_for(int NV) { return NV <= 3 ? 4 : NV <= 6 ? 3 : 2; }

/* Bits [pos, pos + width) of a little-endian number of ebytes bytes (bits beyond it are 0). */
static unsigned exp_window_bounded(const uint8_t *e, size_t ebytes, size_t pos, size_t width)
{
    unsigned w = 0;
    for (size_t t = 0; t < width; t++) {
        const size_t bit = pos + t;
        if ((bit >> 3) >= ebytes)
            break;
        w |= (unsigned)((e[bit >> 3] >> (bit & 7)) & 1) << t;
    }
    return w;
}
#else /* not x86-64 */

static int cpu_ok(void) { return 0; }

#endif /* MONTEXP_X86 */

static PyObject *montexp_available(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyBool_FromLong(cpu_ok());
}

static PyObject *montexp_powmod_batch(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer bases, exponent, modulus, r2;
    unsigned long long k0;
    int L;
    if (!PyArg_ParseTuple(args, "y*y*y*y*Ki", &bases, &exponent, &modulus, &r2, &k0, &L))
        return NULL;
    PyObject *result = NULL;
#ifdef MONTEXP_X86
    uint64_t *work = NULL;
    const size_t nbytes = (size_t)modulus.len;
    if (!cpu_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU lacks AVX-512 IFMA");
        goto done;
    }
    if (L < 8 || L > MAX_LIMBS || L % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "limbs must be a multiple of 8 in [8, 80]");
        goto done;
    }
    if (nbytes == 0 || (((const uint8_t *)modulus.buf)[0] & 1) == 0 || (size_t)r2.len != nbytes ||
        (size_t)bases.len % nbytes != 0 || 8 * nbytes > (size_t)52 * (size_t)L + 64) {
        PyErr_SetString(PyExc_ValueError, "bad modulus / r2 / bases lengths or even modulus");
        goto done;
    }
    {
        const size_t count = (size_t)bases.len / nbytes;
        const size_t Lz = (size_t)L;
        /* m, r2, one, x[GROUP], table[GROUP][TABLE] */
        const size_t words = Lz * (3 + GROUP + (size_t)GROUP * TABLE);
        work = aligned_alloc(64, words * sizeof(uint64_t));
        if (work == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        uint64_t *m = work, *r2l = work + Lz, *one = work + 2 * Lz, *xs = work + 3 * Lz;
        uint64_t *table = work + (3 + GROUP) * Lz;
        bytes_to_limbs(modulus.buf, nbytes, m, L);
        bytes_to_limbs(r2.buf, nbytes, r2l, L);
        memset(one, 0, sizeof(uint64_t) * Lz);
        one[0] = 1;
        /* bits(M) + 2 <= 52 L, else R > 4M fails */
        {
            int top = L - 1;
            while (top > 0 && m[top] == 0)
                top--;
            size_t bits = 52 * (size_t)top + (size_t)(64 - __builtin_clzll(m[top] | 1));
            if (bits + 2 > 52 * Lz) {
                PyErr_SetString(PyExc_ValueError, "modulus too large for this limb count");
                goto done;
            }
        }
        size_t ebits = 0;
        const uint8_t *e = exponent.buf;
        for (size_t i = (size_t)exponent.len; i-- > 0;)
            if (e[i]) {
                ebits = 8 * i + (size_t)(32 - __builtin_clz((unsigned)e[i]));
                break;
            }
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * nbytes));
        if (result == NULL)
            goto done;
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        const uint8_t *in = bases.buf;
        ctx_t c = {L, L / 8, m, r2l, one, (uint64_t)k0 & MASK52, e, ebits};
        Py_BEGIN_ALLOW_THREADS
        /* Lockstep group size: enough products to cover the y latency chain,
         * few enough that accumulators and operands stay in the 32 zmm
         * registers (measured on Zen 4: 4 for <= 3 zmm, 3 up to 6, then 2). */
        const size_t group = c.NV <= 3 ? 4 : c.NV <= 6 ? 3 : 2;
        for (size_t i = 0; i < count; i += group) {
            const int kk = count - i >= group ? (int)group : (int)(count - i);
            uint64_t *x[GROUP];
            for (int k = 0; k < kk; k++) {
                x[k] = xs + (size_t)k * Lz;
                bytes_to_limbs(in + (i + (size_t)k) * nbytes, nbytes, x[k], L);
            }
            powmod_group(&c, kk, table, x);
            for (int k = 0; k < kk; k++)
                limbs_to_bytes(x[k], L, out + (i + (size_t)k) * nbytes, nbytes);
        }
        Py_END_ALLOW_THREADS
    }
done:
    free(work);
#else
    (void)k0; (void)L;
    PyErr_SetString(PyExc_RuntimeError, "_montexp needs x86-64 with AVX-512 IFMA");
#endif
    PyBuffer_Release(&bases);
    PyBuffer_Release(&exponent);
    PyBuffer_Release(&modulus);
    PyBuffer_Release(&r2);
    return result;
}

#ifdef MONTEXP_X86
/* value limbs of count numbers (each normalised, < 2M) -> op(x) in lockstep groups:
 * AMM(x, r2) (into Montgomery form) when r2 is given, else AMM(x, 1) + cond_sub (out of it). */
static void amm_each(const uint64_t *in, uint64_t *out, size_t count, int L, const uint64_t *m,
                     const uint64_t *r2, uint64_t k0)
{
    const int NV = L / 8;
    const size_t group = group_for(NV);
    uint64_t one[MAX_LIMBS] = {1};
    for (size_t i = 0; i < count; i += group) {
        const int kk = count - i >= group ? (int)group : (int)(count - i);
        uint64_t *o[GROUP];
        const uint64_t *a[GROUP], *b[GROUP];
        for (int k = 0; k < kk; k++) {
            o[k] = out + (i + (size_t)k) * (size_t)L;
            a[k] = in + (i + (size_t)k) * (size_t)L;
            b[k] = r2 != NULL ? r2 : one;
        }
        amm_for(kk, NV)(o, a, b, m, k0);
        if (r2 == NULL)
            for (int k = 0; k < kk; k++)
                cond_sub(o[k], m, L);
    }
}
#endif

/* to_montgomery(values, modulus, r2, k0, limbs, big_endian=False) -> bytes: count numbers
 * of len(modulus) bytes each (little endian unless big_endian) -> count * L native uint64
 * limbs of x R mod M (< 2M).  ValueError unless every x is in [1, M): table entries are
 * units, and a file loaded from disk is checked with it. */
static PyObject *montexp_to_montgomery(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer values, modulus, r2;
    unsigned long long k0;
    int L, big_endian = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*Ki|p", &values, &modulus, &r2, &k0, &L, &big_endian))
        return NULL;
    PyObject *result = NULL;
#ifdef MONTEXP_X86
    uint64_t m[MAX_LIMBS], r2l[MAX_LIMBS], *in = NULL;
    const size_t nbytes = (size_t)modulus.len;
    if (load_modulus(&modulus, L, m) < 0)
        goto done;
    if ((size_t)r2.len != nbytes || (size_t)values.len % nbytes != 0) {
        PyErr_SetString(PyExc_ValueError, "bad r2 / values lengths");
        goto done;
    }
    bytes_to_limbs(r2.buf, nbytes, r2l, L);
    {
        const size_t count = (size_t)values.len / nbytes, Lz = (size_t)L;
        in = malloc((count ? count : 1) * Lz * sizeof(uint64_t));
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * Lz * sizeof(uint64_t)));
        if (in == NULL || result == NULL) {
            Py_CLEAR(result);
            if (in == NULL)
                PyErr_NoMemory();
            goto done;
        }
        uint64_t *out = (uint64_t *)PyBytes_AS_STRING(result);
        const uint8_t *src = values.buf;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        uint8_t rev[CONV_BYTES];
        for (size_t i = 0; i < count; i++) {
            const uint8_t *x = src + i * nbytes;
            if (big_endian) {
                const size_t n = nbytes < CONV_BYTES ? nbytes : CONV_BYTES;
                for (size_t t = 0; t < n; t++)
                    rev[t] = x[nbytes - 1 - t];
                x = rev;
            }
            uint64_t *xl = in + i * Lz;
            bytes_to_limbs(x, big_endian && nbytes > CONV_BYTES ? CONV_BYTES : nbytes, xl, L);
            int j = L - 1;
            while (j > 0 && xl[j] == m[j])
                j--;
            uint64_t any = 0;
            for (int t = 0; t < L; t++)
                any |= xl[t];
            bad |= any == 0 || xl[j] >= m[j];
            if (8 * nbytes > 52 * Lz) /* bits bytes_to_limbs dropped */
                bad |= (x[nbytes - 1] >> (52 * Lz - 8 * (nbytes - 1))) != 0;
        }
        if (!bad)
            amm_each(in, out, count, L, m, r2l, (uint64_t)k0 & MASK52);
        Py_END_ALLOW_THREADS
        if (bad) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_ValueError, "a value is 0 or not below the modulus");
        }
    }
done:
    free(in);
#else
    (void)k0; (void)L; (void)big_endian;
    PyErr_SetString(PyExc_RuntimeError, "_montexp needs x86-64 with AVX-512 IFMA");
#endif
    PyBuffer_Release(&values);
    PyBuffer_Release(&modulus);
    PyBuffer_Release(&r2);
    return result;
}

/* from_montgomery(data, modulus, k0, limbs) -> bytes: the inverse of to_montgomery,
 * len(modulus) little-endian bytes per number, fully reduced. */
static PyObject *montexp_from_montgomery(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer data, modulus;
    unsigned long long k0;
    int L;
    if (!PyArg_ParseTuple(args, "y*y*Ki", &data, &modulus, &k0, &L))
        return NULL;
    PyObject *result = NULL;
#ifdef MONTEXP_X86
    uint64_t m[MAX_LIMBS], *tmp = NULL;
    const size_t nbytes = (size_t)modulus.len, Lz = (size_t)L;
    if (load_modulus(&modulus, L, m) < 0)
        goto done;
    if ((size_t)data.len % (Lz * sizeof(uint64_t)) != 0 || ((uintptr_t)data.buf & 7) != 0) {
        PyErr_SetString(PyExc_ValueError, "data must be whole, 8-byte aligned entries of limbs * 8 bytes");
        goto done;
    }
    {
        const size_t count = (size_t)data.len / (Lz * sizeof(uint64_t));
        tmp = malloc((count ? count : 1) * Lz * sizeof(uint64_t));
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * nbytes));
        if (tmp == NULL || result == NULL) {
            Py_CLEAR(result);
            if (tmp == NULL)
                PyErr_NoMemory();
            goto done;
        }
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        const uint64_t *in = data.buf;
        Py_BEGIN_ALLOW_THREADS
        amm_each(in, tmp, count, L, m, NULL, (uint64_t)k0 & MASK52);
        for (size_t i = 0; i < count; i++)
            limbs_to_bytes(tmp + i * Lz, L, out + i * nbytes, nbytes);
        Py_END_ALLOW_THREADS
    }
done:
    free(tmp);
#else
    (void)k0; (void)L;
    PyErr_SetString(PyExc_RuntimeError, "_montexp needs x86-64 with AVX-512 IFMA");
#endif
    PyBuffer_Release(&data);
    PyBuffer_Release(&modulus);
    return result;
}

/* build_table(base, window, rows, modulus, r2, k0, limbs) -> bytes: the table_products
 * table of base (len(modulus) little-endian bytes, < M) built directly in Montgomery
 * form: row starts s_i = base^(2^(window i)) by squaring, then T[i][j] = T[i][j-1] s_i,
 * several rows in lockstep.  One multiplication per entry, like the gmpy2 build, but
 * each is an IFMA Montgomery multiplication instead of a GMP multiply and divide. */
static PyObject *montexp_build_table(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer base, modulus, r2;
    int window, rows, L;
    unsigned long long k0;
    if (!PyArg_ParseTuple(args, "y*iiy*y*Ki", &base, &window, &rows, &modulus, &r2, &k0, &L))
        return NULL;
    PyObject *result = NULL;
#ifdef MONTEXP_X86
    uint64_t m[MAX_LIMBS], r2l[MAX_LIMBS];
    const size_t nbytes = (size_t)modulus.len, Lz = (size_t)L;
    if (load_modulus(&modulus, L, m) < 0)
        goto done;
    if ((size_t)r2.len != nbytes || (size_t)base.len != nbytes || window < 1 || window > 16 || rows < 1) {
        PyErr_SetString(PyExc_ValueError, "bad base / r2 lengths, window or rows");
        goto done;
    }
    bytes_to_limbs(r2.buf, nbytes, r2l, L);
    {
        const size_t entries = (size_t)1 << window, R = (size_t)rows;
        if (R * entries * Lz * sizeof(uint64_t) > (size_t)PY_SSIZE_T_MAX) {
            PyErr_NoMemory();
            goto done;
        }
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(R * entries * Lz * sizeof(uint64_t)));
        if (result == NULL)
            goto done;
        uint64_t *T = (uint64_t *)PyBytes_AS_STRING(result);
        const uint64_t k0m = (uint64_t)k0 & MASK52;
        const int NV = L / 8;
        const size_t group = group_for(NV);
        const uint8_t *bb = base.buf;
        Py_BEGIN_ALLOW_THREADS
#define E(i, j) (T + ((size_t)(i) * entries + (size_t)(j)) * Lz)
        uint64_t x[MAX_LIMBS] __attribute__((aligned(64))), one[MAX_LIMBS] = {1};
        uint64_t *o[GROUP];
        const uint64_t *a[GROUP], *b[GROUP];
        const amm_fn amm1 = AMM1[NV];
        bytes_to_limbs(bb, nbytes, x, L);
        o[0] = E(0, 1); a[0] = x; b[0] = r2l;
        amm1(o, a, b, m, k0m);                            /* s_0 = base R */
        for (size_t i = 0; i < R; i++) {
            o[0] = E(i, 0); a[0] = one; b[0] = r2l;
            amm1(o, a, b, m, k0m);                        /* R mod M */
            if (i + 1 < R) {
                memcpy(x, E(i, 1), Lz * sizeof(uint64_t));
                o[0] = x; a[0] = x; b[0] = x;
                for (int s = 0; s < window; s++)
                    amm1(o, a, b, m, k0m);
                memcpy(E(i + 1, 1), x, Lz * sizeof(uint64_t));
            }
        }
        for (size_t i = 0; i < R; i += group) {
            const int kk = R - i >= group ? (int)group : (int)(R - i);
            const amm_fn amm = amm_for(kk, NV);
            for (size_t j = 2; j < entries; j++) {
                for (int k = 0; k < kk; k++) {
                    o[k] = E(i + (size_t)k, j);
                    a[k] = E(i + (size_t)k, j - 1);
                    b[k] = E(i + (size_t)k, 1);
                }
                amm(o, a, b, m, k0m);
            }
        }
#undef E
        Py_END_ALLOW_THREADS
    }
done:
#else
    (void)window; (void)rows; (void)k0; (void)L;
    PyErr_SetString(PyExc_RuntimeError, "_montexp needs x86-64 with AVX-512 IFMA");
#endif
    PyBuffer_Release(&base);
    PyBuffer_Release(&modulus);
    PyBuffer_Release(&r2);
    return result;
}

/* table_products(table, window, rows, exponents, ebytes, modulus, k0, limbs) -> bytes
 *     table:     rows * 2^window entries of limbs native uint64 each (to_montgomery
 *                output): entry (i, j) = base^(j 2^(window i)) R mod M, entry (i, 0) = R mod M
 *     exponents: count numbers of ebytes little-endian bytes each
 *   returns, per exponent e, prod_i T[i][digit_i(e)] = base^(e mod 2^(window rows)) mod M,
 *   len(modulus) little-endian bytes, fully reduced.  Every row costs one multiplication
 *   whatever the digit (a zero digit multiplies by R mod M), plus one to leave Montgomery
 *   form; several exponents run in lockstep.  The table index is a secret digit: not
 *   constant time (cache timing), like the gmpy2 table it replaces. */
static PyObject *montexp_table_products(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer table, exponents, modulus;
    int window, rows, L;
    Py_ssize_t ebytes;
    unsigned long long k0;
    if (!PyArg_ParseTuple(args, "y*iiy*ny*Ki", &table, &window, &rows, &exponents, &ebytes, &modulus, &k0, &L))
        return NULL;
    PyObject *result = NULL;
#ifdef MONTEXP_X86
    uint64_t m[MAX_LIMBS];
    const size_t nbytes = (size_t)modulus.len, Lz = (size_t)L;
    if (load_modulus(&modulus, L, m) < 0)
        goto done;
    if (window < 1 || window > 16 || rows < 1 || ebytes < 1 || (size_t)exponents.len % (size_t)ebytes != 0 ||
        (size_t)table.len != (size_t)rows * ((size_t)1 << window) * Lz * sizeof(uint64_t) ||
        ((uintptr_t)table.buf & 7) != 0) {
        PyErr_SetString(PyExc_ValueError, "bad window / rows / table or exponent lengths");
        goto done;
    }
    {
        const size_t count = (size_t)exponents.len / (size_t)ebytes, entries = (size_t)1 << window;
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * nbytes));
        if (result == NULL)
            goto done;
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        const uint64_t *T = table.buf;
        const uint8_t *E = exponents.buf;
        const uint64_t k0m = (uint64_t)k0 & MASK52;
        const int NV = L / 8;
        const size_t group = group_for(NV), eb = (size_t)ebytes, w = (size_t)window;
        Py_BEGIN_ALLOW_THREADS
        uint64_t xs[GROUP][MAX_LIMBS] __attribute__((aligned(64)));
        uint64_t one[MAX_LIMBS] = {1};
        for (size_t i = 0; i < count; i += group) {
            const int kk = count - i >= group ? (int)group : (int)(count - i);
            const amm_fn amm = amm_for(kk, NV);
            uint64_t *o[GROUP];
            const uint64_t *a[GROUP], *b[GROUP];
            for (int k = 0; k < kk; k++) {
                const uint8_t *e = E + (i + (size_t)k) * eb;
                const size_t d = exp_window_bounded(e, eb, 0, w);
                memcpy(xs[k], T + d * Lz, Lz * sizeof(uint64_t));
                o[k] = xs[k];
                a[k] = xs[k];
            }
            for (size_t r = 1; r < (size_t)rows; r++) {
                for (int k = 0; k < kk; k++) {
                    const uint8_t *e = E + (i + (size_t)k) * eb;
                    const size_t d = exp_window_bounded(e, eb, r * w, w);
                    b[k] = T + (r * entries + d) * Lz;
                }
                amm(o, a, b, m, k0m);
            }
            for (int k = 0; k < kk; k++)
                b[k] = one;
            amm(o, a, b, m, k0m);              /* out of Montgomery form: <= M */
            for (int k = 0; k < kk; k++) {
                cond_sub(xs[k], m, L);
                limbs_to_bytes(xs[k], L, out + (i + (size_t)k) * nbytes, nbytes);
            }
        }
        Py_END_ALLOW_THREADS
    }
done:
#else
    (void)window; (void)rows; (void)ebytes; (void)k0; (void)L;
    PyErr_SetString(PyExc_RuntimeError, "_montexp needs x86-64 with AVX-512 IFMA");
#endif
    PyBuffer_Release(&table);
    PyBuffer_Release(&exponents);
    PyBuffer_Release(&modulus);
    return result;
}

static PyMethodDef montexp_methods[] = {
    {"available", montexp_available, METH_NOARGS,
     "available() -> bool: the CPU and OS support AVX-512F and AVX-512 IFMA."},
    {"powmod_batch", montexp_powmod_batch, METH_VARARGS,
     "powmod_batch(bases, exponent, modulus, r2, k0, limbs) -> bytes: base^exponent mod modulus "
     "for each len(modulus)-byte little-endian base (< modulus); see pprl/crypto/montexp.py."},
    {"to_montgomery", montexp_to_montgomery, METH_VARARGS,
     "to_montgomery(values, modulus, r2, k0, limbs, big_endian=False) -> bytes: x R mod M as limbs "
     "native uint64 per value."},
    {"from_montgomery", montexp_from_montgomery, METH_VARARGS,
     "from_montgomery(data, modulus, k0, limbs) -> bytes: the inverse of to_montgomery, fully reduced."},
    {"build_table", montexp_build_table, METH_VARARGS,
     "build_table(base, window, rows, modulus, r2, k0, limbs) -> bytes: the table_products table of base."},
    {"table_products", montexp_table_products, METH_VARARGS,
     "table_products(table, window, rows, exponents, ebytes, modulus, k0, limbs) -> bytes: fixed-base "
     "table products base^e mod modulus, one per exponent; see pprl/crypto/montexp.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef montexp_module = {
    PyModuleDef_HEAD_INIT, "_montexp",
    "Batched modular exponentiation with AVX-512 IFMA (Paillier CRT decryption).", -1,
    montexp_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__montexp(void) { return PyModule_Create(&montexp_module); }
