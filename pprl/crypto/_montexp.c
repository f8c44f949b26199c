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
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
}

/* Little-endian bytes -> L limbs of 52 bits (bits beyond 52 L are dropped). */
static void bytes_to_limbs(const uint8_t *src, size_t nbytes, uint64_t *limbs, int L)
{
    memset(limbs, 0, sizeof(uint64_t) * (size_t)L);
    for (size_t i = 0; i < nbytes; i++) {
        const size_t bit = 8 * i, j = bit / 52, off = bit % 52;
        if (j >= (size_t)L)
            break;
        limbs[j] |= ((uint64_t)src[i] << off) & MASK52;
        if (off > 44 && j + 1 < (size_t)L)
            limbs[j + 1] |= (uint64_t)src[i] >> (52 - off);
    }
}

/* L normalised limbs -> nbytes little-endian bytes (the value must fit). */
static void limbs_to_bytes(const uint64_t *limbs, int L, uint8_t *dst, size_t nbytes)
{
    for (size_t i = 0; i < nbytes; i++) {
        const size_t bit = 8 * i, j = bit / 52, off = bit % 52;
        uint64_t v = j < (size_t)L ? limbs[j] >> off : 0;
        if (off > 44 && j + 1 < (size_t)L)
            v |= limbs[j + 1] << (52 - off);
        dst[i] = (uint8_t)(v & 0xff);
    }
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

static PyMethodDef montexp_methods[] = {
    {"available", montexp_available, METH_NOARGS,
     "available() -> bool: the CPU and OS support AVX-512F and AVX-512 IFMA."},
    {"powmod_batch", montexp_powmod_batch, METH_VARARGS,
     "powmod_batch(bases, exponent, modulus, r2, k0, limbs) -> bytes: base^exponent mod modulus "
     "for each len(modulus)-byte little-endian base (< modulus); see pprl/crypto/montexp.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef montexp_module = {
    PyModuleDef_HEAD_INIT, "_montexp",
    "Batched modular exponentiation with AVX-512 IFMA (Paillier CRT decryption).", -1,
    montexp_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__montexp(void) { return PyModule_Create(&montexp_module); }
