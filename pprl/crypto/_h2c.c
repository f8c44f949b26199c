/*
 * pprl.crypto._h2c -- the map half of RFC 9380 hash_to_curve for the suite
 * curve25519_XMD:SHA-512_ELL2_RO_, in constant time.
 *
 * hash_to_u(messages, dst) runs the whole suite: expand_message_xmd with
 * SHA-512 (_sha512.h) to 96 bytes, i.e. the two 48-byte big-endian
 * hash_to_field outputs u0 || u1; map_to_u(field_bytes) starts from those
 * 96 bytes.  For each message:
 *
 *     Q0 = elligator2(u0), Q1 = elligator2(u1)        (Montgomery form)
 *     P  = 8 * (Q0 + Q1)                               (clear_cofactor, h_eff = 8)
 *
 * Output: P's Montgomery u-coordinate, 32 bytes little-endian, the group
 * element X25519 exponentiates.
 *
 * How:
 *   - GF(2^255 - 19) in radix 2^51 (five 64-bit limbs, 128-bit products).
 *   - Elligator 2 with one exponentiation per map.  For p = 5 (mod 8) and a
 *     candidate ratio gx1 = n/d, r = n d^3 (n d^7)^((p-5)/8) satisfies
 *     r^2 d = n * c with c a fourth root of unity (c = n d^7 to the (p-1)/4).
 *     c = +1: y1 = r;  c = -1: y1 = r * sqrt(-1);  both mean gx1 is square.
 *     c = +-sqrt(-1): gx1 is not a square, and since g(x2) = 2 u^2 g(x1)
 *     (x2 = 2 u^2 x1 and x1 + x2 = -A give x^2 + A x + 1 the same value at
 *     x1 and x2), y2 = r u (1 -+ sqrt(-1)) because (1 -+ i)^2 (+-i) = 2.
 *     All four candidates are computed and the right one picked with masks.
 *   - The point moves to edwards25519 by RFC 9380's rational map (x = c1 s/t,
 *     y = (s - 1)/(s + 1), c1 = sqrt(-486664)); its exceptional inputs
 *     (t = 0 or s = -1) are points of order 1, 2 or 4 and go to the identity,
 *     which clear_cofactor makes harmless.  Addition and the three doublings
 *     use the complete twisted-Edwards formulas (a = -1, d non-square) in
 *     extended coordinates.
 *   - Back to Montgomery: u = (Z + Y) / (Z - Y), every inverse of a batch
 *     from one exponentiation (Montgomery's trick).  The neutral element
 *     (probability ~2^-252) comes out as u = 0, which the caller refuses.
 *
 * Constant time: no branch or memory index depends on the data; selections
 * are masked moves, equality tests compare canonical encodings with OR.
 * The GIL is released while a batch is mapped.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_sha512.h"

typedef unsigned __int128 u128;
typedef struct { uint64_t v[5]; } fe;

#define MASK51 ((uint64_t)0x7ffffffffffffULL)

static const fe FE_ZERO = {{0, 0, 0, 0, 0}};
static const fe FE_ONE = {{1, 0, 0, 0, 0}};
/* sqrt(-1) = 2^((p-1)/4) */
static const fe FE_SQRT_M1 = {{0x61b274a0ea0b0ULL, 0xd5a5fc8f189dULL, 0x7ef5e9cbd0c60ULL,
                               0x78595a6804c9eULL, 0x2b8324804fc1dULL}};
static const fe FE_ONE_PLUS_I = {{0x61b274a0ea0b1ULL, 0xd5a5fc8f189dULL, 0x7ef5e9cbd0c60ULL,
                                  0x78595a6804c9eULL, 0x2b8324804fc1dULL}};
static const fe FE_ONE_MINUS_I = {{0x1e4d8b5f15f3eULL, 0x72a5a0370e762ULL, 0x10a16342f39fULL,
                                   0x7a6a597fb361ULL, 0x547cdb7fb03e2ULL}};
/* c1 = sqrt(-486664), the root with sgn0 = 0 */
static const fe FE_SQRT_M486664 = {{0x604aaff457e06ULL, 0x2296fa350598dULL, 0x7f13dfb16874fULL,
                                    0x35de93d846e01ULL, 0xf26edf460a00ULL}};
/* 2d, d = -121665/121666 */
static const fe FE_D2 = {{0x69b9426b2f159ULL, 0x35050762add7aULL, 0x3cf44c0038052ULL,
                          0x6738cc7407977ULL, 0x2406d9dc56dffULL}};
#define CURVE_A 486662
static const fe FE_A = {{CURVE_A, 0, 0, 0, 0}};

/* ------------------------------------------------------------------ field */

/* Limbs back under 2^51 (limb 0 may exceed it by a little). */
static inline void fe_carry(fe *h)
{
    uint64_t c;
    c = h->v[0] >> 51; h->v[0] &= MASK51; h->v[1] += c;
    c = h->v[1] >> 51; h->v[1] &= MASK51; h->v[2] += c;
    c = h->v[2] >> 51; h->v[2] &= MASK51; h->v[3] += c;
    c = h->v[3] >> 51; h->v[3] &= MASK51; h->v[4] += c;
    c = h->v[4] >> 51; h->v[4] &= MASK51; h->v[0] += 19 * c;
}

static inline void fe_add(fe *h, const fe *f, const fe *g)
{
    for (int i = 0; i < 5; i++) h->v[i] = f->v[i] + g->v[i];
    fe_carry(h);
}

/* f - g + 4p, so no limb goes negative for carried inputs. */
static inline void fe_sub(fe *h, const fe *f, const fe *g)
{
    h->v[0] = f->v[0] + 0x1fffffffffffb4ULL - g->v[0];
    for (int i = 1; i < 5; i++) h->v[i] = f->v[i] + 0x1ffffffffffffcULL - g->v[i];
    fe_carry(h);
}

static inline void fe_neg(fe *h, const fe *f) { fe_sub(h, &FE_ZERO, f); }

static inline void fe_reduce128(fe *h, u128 r0, u128 r1, u128 r2, u128 r3, u128 r4)
{
    uint64_t c;
    r1 += (uint64_t)(r0 >> 51);
    r2 += (uint64_t)(r1 >> 51);
    r3 += (uint64_t)(r2 >> 51);
    r4 += (uint64_t)(r3 >> 51);
    c = (uint64_t)(r4 >> 51);
    h->v[0] = ((uint64_t)r0 & MASK51) + 19 * c;
    h->v[1] = (uint64_t)r1 & MASK51;
    h->v[2] = (uint64_t)r2 & MASK51;
    h->v[3] = (uint64_t)r3 & MASK51;
    h->v[4] = (uint64_t)r4 & MASK51;
    c = h->v[0] >> 51; h->v[0] &= MASK51; h->v[1] += c;
}

static inline void fe_mul(fe *h, const fe *f, const fe *g)
{
    const uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    const uint64_t g0 = g->v[0], g1 = g->v[1], g2 = g->v[2], g3 = g->v[3], g4 = g->v[4];
    const uint64_t g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
    u128 r0 = (u128)f0 * g0 + (u128)f1 * g4_19 + (u128)f2 * g3_19 + (u128)f3 * g2_19 + (u128)f4 * g1_19;
    u128 r1 = (u128)f0 * g1 + (u128)f1 * g0 + (u128)f2 * g4_19 + (u128)f3 * g3_19 + (u128)f4 * g2_19;
    u128 r2 = (u128)f0 * g2 + (u128)f1 * g1 + (u128)f2 * g0 + (u128)f3 * g4_19 + (u128)f4 * g3_19;
    u128 r3 = (u128)f0 * g3 + (u128)f1 * g2 + (u128)f2 * g1 + (u128)f3 * g0 + (u128)f4 * g4_19;
    u128 r4 = (u128)f0 * g4 + (u128)f1 * g3 + (u128)f2 * g2 + (u128)f3 * g1 + (u128)f4 * g0;
    fe_reduce128(h, r0, r1, r2, r3, r4);
}

static inline void fe_sq(fe *h, const fe *f)
{
    const uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    const uint64_t f0_2 = 2 * f0, f1_2 = 2 * f1, f2_2 = 2 * f2, f3_2 = 2 * f3;
    const uint64_t f3_19 = 19 * f3, f4_19 = 19 * f4;
    u128 r0 = (u128)f0 * f0 + (u128)f1_2 * f4_19 + (u128)f2_2 * f3_19;
    u128 r1 = (u128)f0_2 * f1 + (u128)f2_2 * f4_19 + (u128)f3 * f3_19;
    u128 r2 = (u128)f0_2 * f2 + (u128)f1 * f1 + (u128)f3_2 * f4_19;
    u128 r3 = (u128)f0_2 * f3 + (u128)f1_2 * f2 + (u128)f4 * f4_19;
    u128 r4 = (u128)f0_2 * f4 + (u128)f1_2 * f3 + (u128)f2 * f2;
    fe_reduce128(h, r0, r1, r2, r3, r4);
}

static inline void fe_sqn(fe *h, const fe *f, int n)
{
    fe_sq(h, f);
    for (int i = 1; i < n; i++) fe_sq(h, h);
}

static inline void fe_mul_small(fe *h, const fe *f, uint64_t c)
{
    fe_reduce128(h, (u128)f->v[0] * c, (u128)f->v[1] * c, (u128)f->v[2] * c,
                 (u128)f->v[3] * c, (u128)f->v[4] * c);
}

/* z^(2^250 - 1), the common head of the two exponentiations; also returns z^11. */
static void fe_pow2_250_1(fe *out, fe *z11, const fe *z)
{
    fe z2, z9, t, a, b, c;
    fe_sq(&z2, z);                 /* z^2 */
    fe_sqn(&t, &z2, 2);            /* z^8 */
    fe_mul(&z9, &t, z);            /* z^9 */
    fe_mul(z11, &z9, &z2);         /* z^11 */
    fe_sq(&t, z11);                /* z^22 */
    fe_mul(&a, &t, &z9);           /* z^(2^5 - 1) */
    fe_sqn(&t, &a, 5);
    fe_mul(&b, &t, &a);            /* z^(2^10 - 1) */
    fe_sqn(&t, &b, 10);
    fe_mul(&c, &t, &b);            /* z^(2^20 - 1) */
    fe_sqn(&t, &c, 20);
    fe_mul(&t, &t, &c);            /* z^(2^40 - 1) */
    fe_sqn(&t, &t, 10);
    fe_mul(&a, &t, &b);            /* z^(2^50 - 1) */
    fe_sqn(&t, &a, 50);
    fe_mul(&b, &t, &a);            /* z^(2^100 - 1) */
    fe_sqn(&t, &b, 100);
    fe_mul(&t, &t, &b);            /* z^(2^200 - 1) */
    fe_sqn(&t, &t, 50);
    fe_mul(out, &t, &a);           /* z^(2^250 - 1) */
}

/* z^(p - 2) = z^(2^255 - 21): the inverse (0 for 0). */
static void fe_invert(fe *out, const fe *z)
{
    fe t, z11;
    fe_pow2_250_1(&t, &z11, z);
    fe_sqn(&t, &t, 5);
    fe_mul(out, &t, &z11);
}

/* z^((p - 5) / 8) = z^(2^252 - 3). */
static void fe_pow22523(fe *out, const fe *z)
{
    fe t, z11;
    fe_pow2_250_1(&t, &z11, z);
    fe_sqn(&t, &t, 2);
    fe_mul(out, &t, z);
}

/* The canonical value (< p) in limbs. */
static void fe_canonical(uint64_t t[5], const fe *f)
{
    fe h = *f;
    uint64_t q, c;
    fe_carry(&h);
    fe_carry(&h);
    q = (h.v[0] + 19) >> 51;
    q = (h.v[1] + q) >> 51;
    q = (h.v[2] + q) >> 51;
    q = (h.v[3] + q) >> 51;
    q = (h.v[4] + q) >> 51;          /* 1 iff h >= p */
    h.v[0] += 19 * q;
    c = h.v[0] >> 51; h.v[0] &= MASK51; h.v[1] += c;
    c = h.v[1] >> 51; h.v[1] &= MASK51; h.v[2] += c;
    c = h.v[2] >> 51; h.v[2] &= MASK51; h.v[3] += c;
    c = h.v[3] >> 51; h.v[3] &= MASK51; h.v[4] += c;
    h.v[4] &= MASK51;                /* drops q * 2^255 */
    memcpy(t, h.v, sizeof h.v);
}

static void fe_tobytes(uint8_t s[32], const fe *f)
{
    uint64_t t[5];
    fe_canonical(t, f);
    uint64_t w[4] = {
        t[0] | (t[1] << 51),
        (t[1] >> 13) | (t[2] << 38),
        (t[2] >> 26) | (t[3] << 25),
        (t[3] >> 39) | (t[4] << 12),
    };
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) s[8 * i + j] = (uint8_t)(w[i] >> (8 * j));
}

static inline uint64_t load64_le(const uint8_t *p)
{
    uint64_t r = 0;
    for (int i = 7; i >= 0; i--) r = (r << 8) | p[i];
    return r;
}

static inline uint64_t bits51(const uint8_t *le, unsigned offset)
{
    return (load64_le(le + offset / 8) >> (offset % 8)) & MASK51;
}

/* A 48-byte big-endian integer (hash_to_field's output) reduced mod p:
 * v = lo + 2^255 hi = lo + 19 hi, with lo < 2^255 and hi < 2^129. */
static void fe_from_be48(fe *h, const uint8_t in[48])
{
    uint8_t le[56] = {0};
    for (int i = 0; i < 48; i++) le[i] = in[47 - i];
    for (int k = 0; k < 5; k++) h->v[k] = bits51(le, 51 * k);
    for (int k = 0; k < 3; k++) h->v[k] += 19 * bits51(le, 255 + 51 * k);
    fe_carry(h);
    fe_carry(h);
}

/* All-ones if f == g (mod p), else zero. */
static inline uint64_t fe_eq_mask(const fe *f, const fe *g)
{
    uint8_t a[32], b[32];
    uint32_t d = 0;
    fe_tobytes(a, f);
    fe_tobytes(b, g);
    for (int i = 0; i < 32; i++) d |= (uint32_t)(a[i] ^ b[i]);
    return (uint64_t)0 - (((uint64_t)d - 1) >> 63);
}

static inline uint64_t fe_iszero_mask(const fe *f) { return fe_eq_mask(f, &FE_ZERO); }

static inline uint64_t fe_sgn0(const fe *f)
{
    uint8_t s[32];
    fe_tobytes(s, f);
    return s[0] & 1;
}

/* f = mask ? g : f */
static inline void fe_cmov(fe *f, const fe *g, uint64_t mask)
{
    for (int i = 0; i < 5; i++) f->v[i] ^= mask & (f->v[i] ^ g->v[i]);
}

/* ------------------------------------------------------------------ Elligator 2 */

/* map_to_curve_elligator2_curve25519(u) as the Montgomery point (xn / xd, y). */
static void elligator2(fe *xn, fe *xd, fe *y, const fe *u)
{
    fe tv, x1n, x2n, gn, gd, t, t2, gd3, gd7, r, chk, neg_n, i_n, y1, y2, ry;
    uint64_t e1, e2, e3, square, flip;

    fe_sq(&tv, u);
    fe_add(&tv, &tv, &tv);               /* tv = Z u^2 = 2 u^2 */
    fe_add(xd, &FE_ONE, &tv);            /* 1 + 2u^2: never 0, since -1/2 is not a square */
    fe_neg(&x1n, &FE_A);                 /* x1 = -A / xd */
    fe_mul(&x2n, &x1n, &tv);             /* x2 = 2u^2 x1 = -x1 - A */

    /* gx1 = gn / gd = (x1n^3 + A x1n^2 xd + x1n xd^2) / xd^3 */
    fe_sq(&t2, xd);                      /* xd^2 */
    fe_mul(&gd, &t2, xd);                /* xd^3 */
    fe_mul_small(&t, xd, CURVE_A);
    fe_add(&t, &t, &x1n);                /* x1n + A xd */
    fe_mul(&t, &t, &x1n);                /* x1n^2 + A x1n xd */
    fe_add(&t, &t, &t2);                 /* ... + xd^2 */
    fe_mul(&gn, &t, &x1n);

    /* r = gn gd^3 (gn gd^7)^((p-5)/8) */
    fe_sq(&t, &gd);
    fe_mul(&gd3, &t, &gd);
    fe_sq(&t, &t);
    fe_mul(&gd7, &t, &gd3);
    fe_mul(&t, &gn, &gd7);
    fe_pow22523(&t, &t);
    fe_mul(&t, &t, &gn);
    fe_mul(&r, &t, &gd3);

    fe_sq(&chk, &r);
    fe_mul(&chk, &chk, &gd);             /* r^2 gd = gn * (fourth root of unity) */
    fe_neg(&neg_n, &gn);
    fe_mul(&i_n, &gn, &FE_SQRT_M1);
    e1 = fe_eq_mask(&chk, &gn);
    e2 = fe_eq_mask(&chk, &neg_n);
    e3 = fe_eq_mask(&chk, &i_n);
    square = e1 | e2;

    fe_mul(&y1, &r, &FE_SQRT_M1);
    fe_cmov(&y1, &r, e1);                /* sqrt(gx1) */
    fe_mul(&ry, &r, u);
    fe_mul(&y2, &ry, &FE_ONE_PLUS_I);
    fe_mul(&t, &ry, &FE_ONE_MINUS_I);
    fe_cmov(&y2, &t, e3);                /* sqrt(gx2) */

    *xn = x2n;
    fe_cmov(xn, &x1n, square);
    *y = y2;
    fe_cmov(y, &y1, square);
    /* sgn0(y) must be 1 for x1, 0 for x2 */
    flip = fe_sgn0(y) ^ (square & 1);
    fe_neg(&t, y);
    fe_cmov(y, &t, (uint64_t)0 - flip);
}

/* ------------------------------------------------------------------ edwards25519 */

typedef struct { fe X, Y, Z, T; } ge;

/* The rational map curve25519 -> edwards25519 of RFC 9380 (x = c1 s/t,
 * y = (s-1)/(s+1)), into extended coordinates; exceptional points -> identity. */
static void montgomery_to_edwards(ge *p, const fe *xn, const fe *xd, const fe *y)
{
    fe a, b, c, d;
    uint64_t exc;
    fe_mul(&a, &FE_SQRT_M486664, xn);    /* x_e = a / b */
    fe_mul(&b, xd, y);
    fe_sub(&c, xn, xd);                  /* y_e = c / d */
    fe_add(&d, xn, xd);
    fe_mul(&p->X, &a, &d);
    fe_mul(&p->Y, &c, &b);
    fe_mul(&p->Z, &b, &d);
    fe_mul(&p->T, &a, &c);
    exc = fe_iszero_mask(&p->Z);
    fe_cmov(&p->X, &FE_ZERO, exc);
    fe_cmov(&p->Y, &FE_ONE, exc);
    fe_cmov(&p->Z, &FE_ONE, exc);
    fe_cmov(&p->T, &FE_ZERO, exc);
}

/* Complete addition on -x^2 + y^2 = 1 + d x^2 y^2 (Hisil-Wong-Carter-Dawson, a = -1). */
static void ge_add(ge *r, const ge *p, const ge *q)
{
    fe a, b, c, d, e, f, g, h, t;
    fe_sub(&a, &p->Y, &p->X);
    fe_sub(&t, &q->Y, &q->X);
    fe_mul(&a, &a, &t);
    fe_add(&b, &p->Y, &p->X);
    fe_add(&t, &q->Y, &q->X);
    fe_mul(&b, &b, &t);
    fe_mul(&c, &p->T, &q->T);
    fe_mul(&c, &c, &FE_D2);
    fe_mul(&d, &p->Z, &q->Z);
    fe_add(&d, &d, &d);
    fe_sub(&e, &b, &a);
    fe_sub(&f, &d, &c);
    fe_add(&g, &d, &c);
    fe_add(&h, &b, &a);
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->T, &e, &h);
    fe_mul(&r->Z, &f, &g);
}

/* Doubling (a = -1); T is not read. */
static void ge_dbl(ge *r, const ge *p)
{
    fe a, b, c, e, f, g, h, t;
    fe_sq(&a, &p->X);
    fe_sq(&b, &p->Y);
    fe_sq(&c, &p->Z);
    fe_add(&c, &c, &c);
    fe_add(&t, &p->X, &p->Y);
    fe_sq(&e, &t);
    fe_sub(&e, &e, &a);
    fe_sub(&e, &e, &b);                  /* 2XY */
    fe_sub(&g, &b, &a);                  /* -A + B */
    fe_sub(&f, &g, &c);
    fe_add(&h, &a, &b);
    fe_neg(&h, &h);                      /* -A - B */
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->T, &e, &h);
    fe_mul(&r->Z, &f, &g);
}

/* 8 * (elligator2(u0) + elligator2(u1)) for 96 bytes of field input. */
static void hash_point(ge *p, const uint8_t in[96])
{
    fe u, xn, xd, y;
    ge q0, q1;
    fe_from_be48(&u, in);
    elligator2(&xn, &xd, &y, &u);
    montgomery_to_edwards(&q0, &xn, &xd, &y);
    fe_from_be48(&u, in + 48);
    elligator2(&xn, &xd, &y, &u);
    montgomery_to_edwards(&q1, &xn, &xd, &y);
    ge_add(p, &q0, &q1);
    ge_dbl(p, p);
    ge_dbl(p, p);
    ge_dbl(p, p);
}

/* Montgomery u = (Z + Y) / (Z - Y) for n points, with one inversion for all
 * (Montgomery's trick); the neutral element (Z = Y) gives u = 0.
 * num, den, pre: n elements each; num and den are overwritten. */
static void batch_to_u(uint8_t *out, fe *num, fe *den, fe *pre, size_t n)
{
    fe acc = FE_ONE, inv, inv_i, u;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = fe_iszero_mask(&den[i]);
        fe_cmov(&num[i], &FE_ZERO, z);
        fe_cmov(&den[i], &FE_ONE, z);
        fe_mul(&acc, &acc, &den[i]);
        pre[i] = acc;                    /* den[0] ... den[i] */
    }
    fe_invert(&inv, &acc);               /* 1 / (den[0] ... den[n-1]) */
    for (size_t i = n; i-- > 0;) {
        if (i > 0) {                     /* public loop index, not data */
            fe_mul(&inv_i, &inv, &pre[i - 1]);
            fe_mul(&inv, &inv, &den[i]);
        } else {
            inv_i = inv;
        }
        fe_mul(&u, &num[i], &inv_i);
        fe_tobytes(out + 32 * i, &u);
    }
}

static void map_batch(uint8_t *out, const uint8_t *in, fe *scratch, size_t n)
{
    fe *num = scratch, *den = scratch + n, *pre = scratch + 2 * n;
    ge p;
    for (size_t i = 0; i < n; i++) {
        hash_point(&p, in + 96 * i);
        fe_add(&num[i], &p.Z, &p.Y);
        fe_sub(&den[i], &p.Z, &p.Y);
    }
    batch_to_u(out, num, den, pre, n);
}

/* ------------------------------------------------------------------ expand_message_xmd */

/* SHA-512 after the 128-byte zero block Z_pad, and DST' = DST || I2OSP(len(DST), 1). */
typedef struct {
    sha512_ctx zpad;
    uint8_t dst_prime[256];
    size_t dst_prime_len;
} xmd_ctx;

static void xmd_init(xmd_ctx *x, const uint8_t *dst, size_t dst_len)   /* dst_len <= 255 */
{
    static const uint8_t zero[128] = {0};
    sha512_init(&x->zpad);
    sha512_update(&x->zpad, zero, sizeof zero);
    memcpy(x->dst_prime, dst, dst_len);
    x->dst_prime[dst_len] = (uint8_t)dst_len;
    x->dst_prime_len = dst_len + 1;
}

/* expand_message_xmd(msg, DST, 96) = b1 || b2[0:32] (RFC 9380 5.3.1, ell = 2). */
static void xmd96(uint8_t out[96], const xmd_ctx *x, const uint8_t *msg, size_t len)
{
    static const uint8_t len_zero[3] = {0, 96, 0};   /* I2OSP(96, 2) || I2OSP(0, 1) */
    uint8_t b0[64], b1[64], b2[64], t[64], idx;
    sha512_ctx c = x->zpad;
    sha512_update(&c, msg, len);
    sha512_update(&c, len_zero, sizeof len_zero);
    sha512_update(&c, x->dst_prime, x->dst_prime_len);
    sha512_final(&c, b0);
    idx = 1;
    sha512_init(&c);
    sha512_update(&c, b0, 64);
    sha512_update(&c, &idx, 1);
    sha512_update(&c, x->dst_prime, x->dst_prime_len);
    sha512_final(&c, b1);
    for (int i = 0; i < 64; i++) t[i] = b0[i] ^ b1[i];
    idx = 2;
    sha512_init(&c);
    sha512_update(&c, t, 64);
    sha512_update(&c, &idx, 1);
    sha512_update(&c, x->dst_prime, x->dst_prime_len);
    sha512_final(&c, b2);
    memcpy(out, b1, 64);
    memcpy(out + 64, b2, 32);
}

static void hash_batch(uint8_t *out, const xmd_ctx *x, const uint8_t *const *msgs, const size_t *lens,
                       fe *scratch, size_t n)
{
    fe *num = scratch, *den = scratch + n, *pre = scratch + 2 * n;
    uint8_t field[96];
    ge p;
    for (size_t i = 0; i < n; i++) {
        xmd96(field, x, msgs[i], lens[i]);
        hash_point(&p, field);
        fe_add(&num[i], &p.Z, &p.Y);
        fe_sub(&den[i], &p.Z, &p.Y);
    }
    batch_to_u(out, num, den, pre, n);
}

/* ------------------------------------------------------------------ Python */

/* Elements mapped per scratch allocation (3 field elements each). */
#define CHUNK 4096

PyDoc_STRVAR(map_to_u_doc,
"map_to_u(field_bytes, /) -> bytes\n--\n\n"
"For each 96-byte record (u0 || u1, two 48-byte big-endian hash_to_field\n"
"outputs), the Montgomery u-coordinate of 8 * (elligator2(u0) + elligator2(u1)),\n"
"32 bytes little-endian; the neutral element comes out as 32 zero bytes.\n"
"Constant time; releases the GIL.");

static PyObject *py_map_to_u(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len % 96) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "map_to_u: input is not a whole number of 96-byte records");
        return NULL;
    }
    size_t n = (size_t)in.len / 96;
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(32 * n));
    if (res == NULL) {
        PyBuffer_Release(&in);
        return NULL;
    }
    size_t chunk = n < CHUNK ? n : CHUNK;
    fe *scratch = chunk ? PyMem_RawMalloc(3 * chunk * sizeof(fe)) : NULL;
    if (chunk && scratch == NULL) {
        Py_DECREF(res);
        PyBuffer_Release(&in);
        return PyErr_NoMemory();
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    const uint8_t *src = (const uint8_t *)in.buf;
    Py_BEGIN_ALLOW_THREADS
    for (size_t s = 0; s < n; s += chunk) {
        size_t m = n - s < chunk ? n - s : chunk;
        map_batch(out + 32 * s, src + 96 * s, scratch, m);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyBuffer_Release(&in);
    return res;
}

PyDoc_STRVAR(hash_to_u_doc,
"hash_to_u(messages, dst, /) -> bytes\n--\n\n"
"RFC 9380 hash_to_curve, suite curve25519_XMD:SHA-512_ELL2_RO_, for each bytes\n"
"object in the sequence ``messages`` with the DST ``dst`` (1 to 255 bytes): the\n"
"Montgomery u-coordinates, 32 bytes little-endian each, concatenated; the neutral\n"
"element comes out as 32 zero bytes. Releases the GIL for the whole computation.");

static PyObject *py_hash_to_u(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *seq, *items, *res = NULL;
    Py_buffer dst;
    const uint8_t **ptrs = NULL;
    size_t *lens = NULL;
    fe *scratch = NULL;
    xmd_ctx x;
    if (!PyArg_ParseTuple(args, "Oy*:hash_to_u", &seq, &dst)) return NULL;
    if (dst.len < 1 || dst.len > 255) {
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "hash_to_u: the DST must be 1 to 255 bytes");
        return NULL;
    }
    xmd_init(&x, (const uint8_t *)dst.buf, (size_t)dst.len);
    PyBuffer_Release(&dst);
    items = PySequence_Tuple(seq);     /* owns the messages while the GIL is released */
    if (items == NULL) return NULL;
    size_t n = (size_t)PyTuple_GET_SIZE(items);
    size_t chunk = n < CHUNK ? n : CHUNK;
    ptrs = PyMem_RawMalloc((n ? n : 1) * sizeof *ptrs);
    lens = PyMem_RawMalloc((n ? n : 1) * sizeof *lens);
    scratch = PyMem_RawMalloc((chunk ? 3 * chunk : 1) * sizeof(fe));
    if (ptrs == NULL || lens == NULL || scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *m = PyTuple_GET_ITEM(items, (Py_ssize_t)i);
        if (!PyBytes_Check(m)) {
            PyErr_Format(PyExc_TypeError, "hash_to_u: message at position %zu is not bytes", i + 1);
            goto done;
        }
        ptrs[i] = (const uint8_t *)PyBytes_AS_STRING(m);
        lens[i] = (size_t)PyBytes_GET_SIZE(m);
    }
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(32 * n));
    if (res == NULL) goto done;
    {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
        Py_BEGIN_ALLOW_THREADS
        for (size_t s = 0; s < n; s += chunk) {
            size_t m = n - s < chunk ? n - s : chunk;
            hash_batch(out + 32 * s, &x, ptrs + s, lens + s, scratch, m);
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyMem_RawFree(ptrs);
    PyMem_RawFree(lens);
    PyMem_RawFree(scratch);
    Py_DECREF(items);
    return res;
}

PyDoc_STRVAR(expand_message_xmd96_doc,
"expand_message_xmd96(message, dst, /) -> bytes\n--\n\n"
"expand_message_xmd(message, dst, 96) with SHA-512, as hash_to_u uses it. For tests.");

static PyObject *py_expand_message_xmd96(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer msg, dst;
    xmd_ctx x;
    uint8_t out[96];
    if (!PyArg_ParseTuple(args, "y*y*:expand_message_xmd96", &msg, &dst)) return NULL;
    if (dst.len < 1 || dst.len > 255) {
        PyBuffer_Release(&msg);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "expand_message_xmd96: the DST must be 1 to 255 bytes");
        return NULL;
    }
    xmd_init(&x, (const uint8_t *)dst.buf, (size_t)dst.len);
    xmd96(out, &x, (const uint8_t *)msg.buf, (size_t)msg.len);
    PyBuffer_Release(&msg);
    PyBuffer_Release(&dst);
    return PyBytes_FromStringAndSize((const char *)out, 96);
}

static PyObject *pair_bytes(const fe *a, const fe *b)
{
    uint8_t sa[32], sb[32];
    fe_tobytes(sa, a);
    fe_tobytes(sb, b);
    return Py_BuildValue("(y#y#)", (const char *)sa, (Py_ssize_t)32, (const char *)sb, (Py_ssize_t)32);
}

static int get_exact(Py_buffer *buf, PyObject *arg, Py_ssize_t len, const char *what)
{
    if (PyObject_GetBuffer(arg, buf, PyBUF_SIMPLE) < 0) return -1;
    if (buf->len != len) {
        PyBuffer_Release(buf);
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes", what, len);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(map_to_point_doc,
"map_to_point(field_bytes, /) -> (u, v)\n--\n\n"
"For one 96-byte record, the full point 8 * (elligator2(u0) + elligator2(u1)) on\n"
"Curve25519 as (u, v), each 32 bytes little-endian. For tests against the RFC\n"
"vectors: the v recovery uses an ordinary inversion and fails on the neutral element.");

static PyObject *py_map_to_point(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer in;
    ge p;
    fe num, den, inv, u, v;
    if (get_exact(&in, arg, 96, "map_to_point") < 0) return NULL;
    hash_point(&p, (const uint8_t *)in.buf);
    PyBuffer_Release(&in);
    fe_add(&num, &p.Z, &p.Y);
    fe_sub(&den, &p.Z, &p.Y);
    fe_mul(&den, &den, &p.X);            /* (Z - Y) X */
    if (fe_iszero_mask(&den)) {
        PyErr_SetString(PyExc_ValueError, "map_to_point: the neutral element");
        return NULL;
    }
    fe_invert(&inv, &den);
    fe_mul(&u, &num, &inv);
    fe_mul(&u, &u, &p.X);                /* u = (Z + Y) / (Z - Y) */
    fe_mul(&v, &num, &inv);
    fe_mul(&v, &v, &p.Z);
    fe_mul(&v, &v, &FE_SQRT_M486664);    /* v = c1 u / x_e = c1 (Z + Y) Z / ((Z - Y) X) */
    return pair_bytes(&u, &v);
}

PyDoc_STRVAR(elligator2_doc,
"elligator2(field_element, /) -> (s, t)\n--\n\n"
"map_to_curve_elligator2_curve25519 of one 48-byte big-endian field element:\n"
"the Montgomery point (s, t), each 32 bytes little-endian. For tests.");

static PyObject *py_elligator2(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer in;
    fe u, xn, xd, y, inv, s;
    if (get_exact(&in, arg, 48, "elligator2") < 0) return NULL;
    fe_from_be48(&u, (const uint8_t *)in.buf);
    PyBuffer_Release(&in);
    elligator2(&xn, &xd, &y, &u);
    fe_invert(&inv, &xd);
    fe_mul(&s, &xn, &inv);
    return pair_bytes(&s, &y);
}

static PyMethodDef methods[] = {
    {"hash_to_u", py_hash_to_u, METH_VARARGS, hash_to_u_doc},
    {"expand_message_xmd96", py_expand_message_xmd96, METH_VARARGS, expand_message_xmd96_doc},
    {"map_to_u", py_map_to_u, METH_O, map_to_u_doc},
    {"map_to_point", py_map_to_point, METH_O, map_to_point_doc},
    {"elligator2", py_elligator2, METH_O, elligator2_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h2c",
    "RFC 9380 curve25519_XMD:SHA-512_ELL2_RO_ in constant time: messages (or hash_to_field output) to X25519 u.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h2c(void) { return PyModule_Create(&module); }
