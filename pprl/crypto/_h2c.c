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
 *
 * The module also holds PSI's exponentiation, X25519 in batches (see
 * "X25519 (RFC 7748), in batches" below): x25519(key, points, isa), and
 * hash_to_u_x25519(messages, dst, key, isa), which hashes and exponentiates
 * in one call and runs the Elligator exponentiations of 32 messages side by
 * side on the same vector path.  Paths: portable C, AVX2, AVX-512 IFMA, picked
 * by the caller among those cpu_isa() reports (checked at run time with
 * CPUID, pprl/_cpu.h; the vector functions carry target attributes, so
 * one build runs on any x86-64).  -DPPRL_X25519_GENERIC builds the portable
 * path only, as on other architectures.
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

/* Elligator 2 in two halves around its one exponentiation, so that a batch can
 * run the exponentiations of many maps side by side (pow22523_batch). */
typedef struct { fe u, xd, x1n, x2n, gn, gd, gd3, t; } ell_state;

/* Up to t = gn gd^7, the input of the exponentiation. */
static void elligator2_begin(ell_state *s, const fe *u)
{
    fe tv, t, t2, gd7;

    s->u = *u;
    fe_sq(&tv, u);
    fe_add(&tv, &tv, &tv);               /* tv = Z u^2 = 2 u^2 */
    fe_add(&s->xd, &FE_ONE, &tv);        /* 1 + 2u^2: never 0, since -1/2 is not a square */
    fe_neg(&s->x1n, &FE_A);              /* x1 = -A / xd */
    fe_mul(&s->x2n, &s->x1n, &tv);       /* x2 = 2u^2 x1 = -x1 - A */

    /* gx1 = gn / gd = (x1n^3 + A x1n^2 xd + x1n xd^2) / xd^3 */
    fe_sq(&t2, &s->xd);                  /* xd^2 */
    fe_mul(&s->gd, &t2, &s->xd);         /* xd^3 */
    fe_mul_small(&t, &s->xd, CURVE_A);
    fe_add(&t, &t, &s->x1n);             /* x1n + A xd */
    fe_mul(&t, &t, &s->x1n);             /* x1n^2 + A x1n xd */
    fe_add(&t, &t, &t2);                 /* ... + xd^2 */
    fe_mul(&s->gn, &t, &s->x1n);

    /* r = gn gd^3 (gn gd^7)^((p-5)/8): here t = gn gd^7 */
    fe_sq(&t, &s->gd);
    fe_mul(&s->gd3, &t, &s->gd);
    fe_sq(&t, &t);
    fe_mul(&gd7, &t, &s->gd3);
    fe_mul(&s->t, &s->gn, &gd7);
}

/* The rest, given pw = t^((p-5)/8): the Montgomery point (xn / xd, y). */
static void elligator2_finish(fe *xn, fe *xd, fe *y, const ell_state *s, const fe *pw)
{
    fe t, r, chk, neg_n, i_n, y1, y2, ry;
    uint64_t e1, e2, e3, square, flip;

    fe_mul(&t, pw, &s->gn);
    fe_mul(&r, &t, &s->gd3);

    fe_sq(&chk, &r);
    fe_mul(&chk, &chk, &s->gd);          /* r^2 gd = gn * (fourth root of unity) */
    fe_neg(&neg_n, &s->gn);
    fe_mul(&i_n, &s->gn, &FE_SQRT_M1);
    e1 = fe_eq_mask(&chk, &s->gn);
    e2 = fe_eq_mask(&chk, &neg_n);
    e3 = fe_eq_mask(&chk, &i_n);
    square = e1 | e2;

    fe_mul(&y1, &r, &FE_SQRT_M1);
    fe_cmov(&y1, &r, e1);                /* sqrt(gx1) */
    fe_mul(&ry, &r, &s->u);
    fe_mul(&y2, &ry, &FE_ONE_PLUS_I);
    fe_mul(&t, &ry, &FE_ONE_MINUS_I);
    fe_cmov(&y2, &t, e3);                /* sqrt(gx2) */

    *xd = s->xd;
    *xn = s->x2n;
    fe_cmov(xn, &s->x1n, square);
    *y = y2;
    fe_cmov(y, &y1, square);
    /* sgn0(y) must be 1 for x1, 0 for x2 */
    flip = fe_sgn0(y) ^ (square & 1);
    fe_neg(&t, y);
    fe_cmov(y, &t, (uint64_t)0 - flip);
}

/* map_to_curve_elligator2_curve25519(u) as the Montgomery point (xn / xd, y). */
static void elligator2(fe *xn, fe *xd, fe *y, const fe *u)
{
    ell_state s;
    fe pw;
    elligator2_begin(&s, u);
    fe_pow22523(&pw, &s.t);
    elligator2_finish(xn, xd, y, &s, &pw);
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

/* hash_point in two halves: the two maps' states, then (given their
 * exponentiations) the point. */
static void hash_point_begin(ell_state s[2], const uint8_t in[96])
{
    fe u;
    fe_from_be48(&u, in);
    elligator2_begin(&s[0], &u);
    fe_from_be48(&u, in + 48);
    elligator2_begin(&s[1], &u);
}

static void hash_point_finish(ge *p, const ell_state s[2], const fe pw[2])
{
    fe xn, xd, y;
    ge q0, q1;
    elligator2_finish(&xn, &xd, &y, &s[0], &pw[0]);
    montgomery_to_edwards(&q0, &xn, &xd, &y);
    elligator2_finish(&xn, &xd, &y, &s[1], &pw[1]);
    montgomery_to_edwards(&q1, &xn, &xd, &y);
    ge_add(p, &q0, &q1);
    ge_dbl(p, p);
    ge_dbl(p, p);
    ge_dbl(p, p);
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

/* ------------------------------------------------------------------ X25519 (RFC 7748), in batches
 *
 * Why here: PSI spends most of its time in X25519 (two per element), and
 * libsodium's crypto_scalarmult does one ladder at a time, with one inversion
 * each, behind a Python call per element.  x25519_batch(out, key, in, n) is crypto_scalarmult(key, in_i) for n
 * u-coordinates with one key, byte for byte as libsodium computes it:
 * the key clamped, bit 255 of u ignored, non-canonical u (>= p) reduced,
 * the Montgomery ladder over bits 254..0 (a24 = 121665), output X2 / Z2
 * encoded canonically, and 0 where Z2 = 0 (libsodium's X2 * Z2^(p-2)).  An
 * all-zero output is what libsodium refuses (it checks the output, and its
 * small-order input list only holds inputs that give a zero output); the
 * caller refuses it too.
 *
 * Paths (same results; tests/test_x25519.py checks every one against the others,
 * libsodium and RFC 7748):
 *   - portable: radix 2^51 as above, one ladder at a time;
 *   - AVX2: four independent ladders per 256-bit vector (one per 64-bit lane),
 *     radix 2^25.5 (ten limbs of 26/25 bits), 32x32->64-bit vpmuludq, ref10's
 *     product layout, unsigned limbs (a subtraction adds 2p first);
 *   - AVX-512 IFMA: eight ladders per 512-bit vector (one per 64-bit lane),
 *     radix 2^51 as in the portable path, products from vpmadd52luq /
 *     vpmadd52huq (details at fe8_mul).
 * Every path ends in Montgomery's trick: one inversion per batch instead of one
 * per element.  The ladder's conditional swaps are masked XORs; the scalar is
 * the same for all lanes; no branch or memory index depends on the key or the
 * points.
 */

#define X25519_ISA_PORTABLE 0
#define X25519_ISA_AVX2 1
#define X25519_ISA_IFMA 2

static void fe_frombytes_u(fe *h, const uint8_t s[32])
{
    uint8_t le[40] = {0};
    memcpy(le, s, 32);
    le[31] &= 0x7f;                      /* RFC 7748: the top bit is ignored */
    for (int k = 0; k < 5; k++) h->v[k] = bits51(le, 51 * k);
}

static inline void fe_cswap(fe *f, fe *g, uint64_t mask)
{
    for (int i = 0; i < 5; i++) {
        uint64_t t = mask & (f->v[i] ^ g->v[i]);
        f->v[i] ^= t;
        g->v[i] ^= t;
    }
}

static void clamp_key(uint8_t k[32], const uint8_t key[32])
{
    memcpy(k, key, 32);
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
}

static inline uint64_t key_bit(const uint8_t k[32], int t) { return (uint64_t)((k[t >> 3] >> (t & 7)) & 1); }

/* The ladder's lazy add and subtract: no carry (fe_mul and fe_sq take limbs
 * up to 2^54: 19 * 2^54 * 2^54 * 5 < 2^128); f - g + 4p for g below 2^52. */
static inline void fe_add_lazy(fe *h, const fe *f, const fe *g)
{
    for (int i = 0; i < 5; i++) h->v[i] = f->v[i] + g->v[i];
}

static inline void fe_sub_lazy(fe *h, const fe *f, const fe *g)
{
    h->v[0] = f->v[0] + 0x1fffffffffffb4ULL - g->v[0];
    for (int i = 1; i < 5; i++) h->v[i] = f->v[i] + 0x1ffffffffffffcULL - g->v[i];
}

/* (X2 : Z2) = k * u on the x-line, RFC 7748 section 5. */
static void ladder51(fe *xo, fe *zo, const uint8_t k[32], const uint8_t u[32])
{
    fe x1, x2 = FE_ONE, z2 = FE_ZERO, x3, z3 = FE_ONE, a, aa, b, bb, e, c, d, da, cb, t;
    uint64_t swap = 0;
    fe_frombytes_u(&x1, u);
    x3 = x1;
    for (int i = 254; i >= 0; i--) {
        uint64_t bit = key_bit(k, i);
        swap ^= bit;
        fe_cswap(&x2, &x3, (uint64_t)0 - swap);
        fe_cswap(&z2, &z3, (uint64_t)0 - swap);
        swap = bit;
        fe_add_lazy(&a, &x2, &z2);
        fe_sq(&aa, &a);
        fe_sub_lazy(&b, &x2, &z2);
        fe_sq(&bb, &b);
        fe_sub_lazy(&e, &aa, &bb);
        fe_add_lazy(&c, &x3, &z3);
        fe_sub_lazy(&d, &x3, &z3);
        fe_mul(&da, &d, &a);
        fe_mul(&cb, &c, &b);
        fe_add_lazy(&t, &da, &cb);
        fe_sq(&x3, &t);
        fe_sub_lazy(&t, &da, &cb);
        fe_sq(&t, &t);
        fe_mul(&z3, &x1, &t);
        fe_mul(&x2, &aa, &bb);
        fe_mul_small(&t, &e, 121665);
        fe_add_lazy(&t, &aa, &t);
        fe_mul(&z2, &e, &t);
    }
    fe_cswap(&x2, &x3, (uint64_t)0 - swap);
    fe_cswap(&z2, &z3, (uint64_t)0 - swap);
    *xo = x2;
    *zo = z2;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PPRL_X25519_GENERIC)
#define X25519_X86 1
#include <immintrin.h>
#include "../_cpu.h"
#if defined(__clang__)
#define TGT_AVX2 __attribute__((target("avx2")))
#define TGT_IFMA __attribute__((target("avx2,avx512f,avx512ifma")))
#else
/* GCC otherwise computes all 100 products of a multiplication before adding
 * them and spills most of them: pressure-aware scheduling makes the AVX2
 * ladder ~25% faster (19.4 -> 15.1 us per element, Zen 4). */
#define TGT_AVX2 __attribute__((target("avx2"), optimize("schedule-insns", "sched-pressure")))
#define TGT_IFMA __attribute__((target("avx2,avx512f,avx512ifma"), optimize("schedule-insns", "sched-pressure")))
#endif

/* ---------------- AVX2: 4 lanes, radix 2^25.5 */

typedef struct { __m256i v[10]; } fe4;

#define M(a, b) _mm256_mul_epu32((a), (b))
#define A(a, b) _mm256_add_epi64((a), (b))
#define X19(x) M((x), _mm256_set1_epi64x(19))    /* x < 2^32 */
#define X19W(x) A(A((x), _mm256_slli_epi64((x), 1)), _mm256_slli_epi64((x), 4))   /* any x < 2^59 */
#define X38(x) M((x), _mm256_set1_epi64x(38))

/* Limb i holds 26 bits (even i) or 25 bits (odd i).  "Carried": limbs below
 * 2^26 / 2^25 + 2^17.  fe4_mul and fe4_sq take limbs below 3 * 2^26 (even) /
 * 3 * 2^25 (odd) -- a sum of two carried values, or a difference with 2p
 * added -- so every multiplier (up to 38 times a limb) stays below 2^32 and
 * every 64-bit column sum below 2^63; they return carried limbs. */
TGT_AVX2 static inline void fe4_carry(fe4 *h, __m256i h0, __m256i h1, __m256i h2, __m256i h3, __m256i h4,
                                      __m256i h5, __m256i h6, __m256i h7, __m256i h8, __m256i h9)
{
    const __m256i m26 = _mm256_set1_epi64x(0x3ffffff), m25 = _mm256_set1_epi64x(0x1ffffff);
    __m256i c;
#define CARRY(x, y, bits, mask) c = _mm256_srli_epi64(x, bits); x = _mm256_and_si256(x, mask); y = A(y, c)
    CARRY(h0, h1, 26, m26); CARRY(h4, h5, 26, m26);
    CARRY(h1, h2, 25, m25); CARRY(h5, h6, 25, m25);
    CARRY(h2, h3, 26, m26); CARRY(h6, h7, 26, m26);
    CARRY(h3, h4, 25, m25); CARRY(h7, h8, 25, m25);
    CARRY(h4, h5, 26, m26); CARRY(h8, h9, 26, m26);
    c = _mm256_srli_epi64(h9, 25); h9 = _mm256_and_si256(h9, m25); h0 = A(h0, X19W(c));
    CARRY(h0, h1, 26, m26);
#undef CARRY
    h->v[0] = h0; h->v[1] = h1; h->v[2] = h2; h->v[3] = h3; h->v[4] = h4;
    h->v[5] = h5; h->v[6] = h6; h->v[7] = h7; h->v[8] = h8; h->v[9] = h9;
}

TGT_AVX2 static void fe4_mul(fe4 *h, const fe4 *f, const fe4 *g)
{
    __m256i g19[10];
    for (int j = 1; j < 10; j++) g19[j] = X19(g->v[j]);
    __m256i fi, fi2;
    fi = f->v[0];
    __m256i h0 = M(fi, g->v[0]);
    __m256i h1 = M(fi, g->v[1]);
    __m256i h2 = M(fi, g->v[2]);
    __m256i h3 = M(fi, g->v[3]);
    __m256i h4 = M(fi, g->v[4]);
    __m256i h5 = M(fi, g->v[5]);
    __m256i h6 = M(fi, g->v[6]);
    __m256i h7 = M(fi, g->v[7]);
    __m256i h8 = M(fi, g->v[8]);
    __m256i h9 = M(fi, g->v[9]);
    fi = f->v[1];
    fi2 = A(fi, fi);
    h1 = A(h1, M(fi, g->v[0]));
    h2 = A(h2, M(fi2, g->v[1]));
    h3 = A(h3, M(fi, g->v[2]));
    h4 = A(h4, M(fi2, g->v[3]));
    h5 = A(h5, M(fi, g->v[4]));
    h6 = A(h6, M(fi2, g->v[5]));
    h7 = A(h7, M(fi, g->v[6]));
    h8 = A(h8, M(fi2, g->v[7]));
    h9 = A(h9, M(fi, g->v[8]));
    h0 = A(h0, M(fi2, g19[9]));
    fi = f->v[2];
    h2 = A(h2, M(fi, g->v[0]));
    h3 = A(h3, M(fi, g->v[1]));
    h4 = A(h4, M(fi, g->v[2]));
    h5 = A(h5, M(fi, g->v[3]));
    h6 = A(h6, M(fi, g->v[4]));
    h7 = A(h7, M(fi, g->v[5]));
    h8 = A(h8, M(fi, g->v[6]));
    h9 = A(h9, M(fi, g->v[7]));
    h0 = A(h0, M(fi, g19[8]));
    h1 = A(h1, M(fi, g19[9]));
    fi = f->v[3];
    fi2 = A(fi, fi);
    h3 = A(h3, M(fi, g->v[0]));
    h4 = A(h4, M(fi2, g->v[1]));
    h5 = A(h5, M(fi, g->v[2]));
    h6 = A(h6, M(fi2, g->v[3]));
    h7 = A(h7, M(fi, g->v[4]));
    h8 = A(h8, M(fi2, g->v[5]));
    h9 = A(h9, M(fi, g->v[6]));
    h0 = A(h0, M(fi2, g19[7]));
    h1 = A(h1, M(fi, g19[8]));
    h2 = A(h2, M(fi2, g19[9]));
    fi = f->v[4];
    h4 = A(h4, M(fi, g->v[0]));
    h5 = A(h5, M(fi, g->v[1]));
    h6 = A(h6, M(fi, g->v[2]));
    h7 = A(h7, M(fi, g->v[3]));
    h8 = A(h8, M(fi, g->v[4]));
    h9 = A(h9, M(fi, g->v[5]));
    h0 = A(h0, M(fi, g19[6]));
    h1 = A(h1, M(fi, g19[7]));
    h2 = A(h2, M(fi, g19[8]));
    h3 = A(h3, M(fi, g19[9]));
    fi = f->v[5];
    fi2 = A(fi, fi);
    h5 = A(h5, M(fi, g->v[0]));
    h6 = A(h6, M(fi2, g->v[1]));
    h7 = A(h7, M(fi, g->v[2]));
    h8 = A(h8, M(fi2, g->v[3]));
    h9 = A(h9, M(fi, g->v[4]));
    h0 = A(h0, M(fi2, g19[5]));
    h1 = A(h1, M(fi, g19[6]));
    h2 = A(h2, M(fi2, g19[7]));
    h3 = A(h3, M(fi, g19[8]));
    h4 = A(h4, M(fi2, g19[9]));
    fi = f->v[6];
    h6 = A(h6, M(fi, g->v[0]));
    h7 = A(h7, M(fi, g->v[1]));
    h8 = A(h8, M(fi, g->v[2]));
    h9 = A(h9, M(fi, g->v[3]));
    h0 = A(h0, M(fi, g19[4]));
    h1 = A(h1, M(fi, g19[5]));
    h2 = A(h2, M(fi, g19[6]));
    h3 = A(h3, M(fi, g19[7]));
    h4 = A(h4, M(fi, g19[8]));
    h5 = A(h5, M(fi, g19[9]));
    fi = f->v[7];
    fi2 = A(fi, fi);
    h7 = A(h7, M(fi, g->v[0]));
    h8 = A(h8, M(fi2, g->v[1]));
    h9 = A(h9, M(fi, g->v[2]));
    h0 = A(h0, M(fi2, g19[3]));
    h1 = A(h1, M(fi, g19[4]));
    h2 = A(h2, M(fi2, g19[5]));
    h3 = A(h3, M(fi, g19[6]));
    h4 = A(h4, M(fi2, g19[7]));
    h5 = A(h5, M(fi, g19[8]));
    h6 = A(h6, M(fi2, g19[9]));
    fi = f->v[8];
    h8 = A(h8, M(fi, g->v[0]));
    h9 = A(h9, M(fi, g->v[1]));
    h0 = A(h0, M(fi, g19[2]));
    h1 = A(h1, M(fi, g19[3]));
    h2 = A(h2, M(fi, g19[4]));
    h3 = A(h3, M(fi, g19[5]));
    h4 = A(h4, M(fi, g19[6]));
    h5 = A(h5, M(fi, g19[7]));
    h6 = A(h6, M(fi, g19[8]));
    h7 = A(h7, M(fi, g19[9]));
    fi = f->v[9];
    fi2 = A(fi, fi);
    h9 = A(h9, M(fi, g->v[0]));
    h0 = A(h0, M(fi2, g19[1]));
    h1 = A(h1, M(fi, g19[2]));
    h2 = A(h2, M(fi2, g19[3]));
    h3 = A(h3, M(fi, g19[4]));
    h4 = A(h4, M(fi2, g19[5]));
    h5 = A(h5, M(fi, g19[6]));
    h6 = A(h6, M(fi2, g19[7]));
    h7 = A(h7, M(fi, g19[8]));
    h8 = A(h8, M(fi2, g19[9]));
    fe4_carry(h, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9);
}

TGT_AVX2 static void fe4_sq(fe4 *h, const fe4 *f)
{
    const __m256i f0=f->v[0],f1=f->v[1],f2=f->v[2],f3=f->v[3],f4=f->v[4],f5=f->v[5],f6=f->v[6],f7=f->v[7],f8=f->v[8],f9=f->v[9];
    const __m256i f0_2 = _mm256_add_epi64(f0, f0);
    const __m256i f1_2 = _mm256_add_epi64(f1, f1);
    const __m256i f2_19 = X19(f2);
    const __m256i f2_2 = _mm256_add_epi64(f2, f2);
    const __m256i f3_2 = _mm256_add_epi64(f3, f3);
    const __m256i f4_19 = X19(f4);
    const __m256i f4_2 = _mm256_add_epi64(f4, f4);
    const __m256i f5_2 = _mm256_add_epi64(f5, f5);
    const __m256i f5_38 = X38(f5);
    const __m256i f6_19 = X19(f6);
    const __m256i f6_2 = _mm256_add_epi64(f6, f6);
    const __m256i f7_2 = _mm256_add_epi64(f7, f7);
    const __m256i f7_38 = X38(f7);
    const __m256i f8_19 = X19(f8);
    const __m256i f9_2 = _mm256_add_epi64(f9, f9);
    const __m256i f9_38 = X38(f9);
    __m256i h0 = M(f0, f0);
    h0 = A(h0, M(f1_2, f9_38));
    h0 = A(h0, M(f2_2, f8_19));
    h0 = A(h0, M(f3_2, f7_38));
    h0 = A(h0, M(f4_2, f6_19));
    h0 = A(h0, M(f5, f5_38));
    __m256i h1 = M(f0_2, f1);
    h1 = A(h1, M(f9_2, f2_19));
    h1 = A(h1, M(f3_2, f8_19));
    h1 = A(h1, M(f7_2, f4_19));
    h1 = A(h1, M(f5_2, f6_19));
    __m256i h2 = M(f0_2, f2);
    h2 = A(h2, M(f1_2, f1));
    h2 = A(h2, M(f3_2, f9_38));
    h2 = A(h2, M(f4_2, f8_19));
    h2 = A(h2, M(f5_2, f7_38));
    h2 = A(h2, M(f6, f6_19));
    __m256i h3 = M(f0_2, f3);
    h3 = A(h3, M(f1_2, f2));
    h3 = A(h3, M(f9_2, f4_19));
    h3 = A(h3, M(f5_2, f8_19));
    h3 = A(h3, M(f7_2, f6_19));
    __m256i h4 = M(f0_2, f4);
    h4 = A(h4, M(f1_2, f3_2));
    h4 = A(h4, M(f2, f2));
    h4 = A(h4, M(f5_2, f9_38));
    h4 = A(h4, M(f6_2, f8_19));
    h4 = A(h4, M(f7, f7_38));
    __m256i h5 = M(f0_2, f5);
    h5 = A(h5, M(f1_2, f4));
    h5 = A(h5, M(f2_2, f3));
    h5 = A(h5, M(f9_2, f6_19));
    h5 = A(h5, M(f7_2, f8_19));
    __m256i h6 = M(f0_2, f6);
    h6 = A(h6, M(f1_2, f5_2));
    h6 = A(h6, M(f2_2, f4));
    h6 = A(h6, M(f3_2, f3));
    h6 = A(h6, M(f7_2, f9_38));
    h6 = A(h6, M(f8, f8_19));
    __m256i h7 = M(f0_2, f7);
    h7 = A(h7, M(f1_2, f6));
    h7 = A(h7, M(f2_2, f5));
    h7 = A(h7, M(f3_2, f4));
    h7 = A(h7, M(f9_2, f8_19));
    __m256i h8 = M(f0_2, f8);
    h8 = A(h8, M(f1_2, f7_2));
    h8 = A(h8, M(f2_2, f6));
    h8 = A(h8, M(f3_2, f5_2));
    h8 = A(h8, M(f4, f4));
    h8 = A(h8, M(f9, f9_38));
    __m256i h9 = M(f0_2, f9);
    h9 = A(h9, M(f1_2, f8));
    h9 = A(h9, M(f2_2, f7));
    h9 = A(h9, M(f3_2, f6));
    h9 = A(h9, M(f4_2, f5));

    fe4_carry(h, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9);
}

TGT_AVX2 static inline void fe4_add(fe4 *h, const fe4 *f, const fe4 *g)
{
    for (int i = 0; i < 10; i++) h->v[i] = A(f->v[i], g->v[i]);
}

/* f - g + 2p, for carried g. */
TGT_AVX2 static inline void fe4_sub(fe4 *h, const fe4 *f, const fe4 *g)
{
    const __m256i p0 = _mm256_set1_epi64x(0x7ffffda), pe = _mm256_set1_epi64x(0x7fffffe),
                  po = _mm256_set1_epi64x(0x3fffffe);
    h->v[0] = _mm256_sub_epi64(A(f->v[0], p0), g->v[0]);
    for (int i = 1; i < 10; i++) h->v[i] = _mm256_sub_epi64(A(f->v[i], (i & 1) ? po : pe), g->v[i]);
}

/* 121665 f for f below 3 * 2^26 / 3 * 2^25 per limb, carried. */
TGT_AVX2 static inline void fe4_mul121665(fe4 *h, const fe4 *f)
{
    const __m256i c = _mm256_set1_epi64x(121665);
    fe4_carry(h, M(f->v[0], c), M(f->v[1], c), M(f->v[2], c), M(f->v[3], c), M(f->v[4], c),
              M(f->v[5], c), M(f->v[6], c), M(f->v[7], c), M(f->v[8], c), M(f->v[9], c));
}

TGT_AVX2 static inline void fe4_cswap(fe4 *f, fe4 *g, __m256i mask)
{
    for (int i = 0; i < 10; i++) {
        __m256i t = _mm256_and_si256(mask, _mm256_xor_si256(f->v[i], g->v[i]));
        f->v[i] = _mm256_xor_si256(f->v[i], t);
        g->v[i] = _mm256_xor_si256(g->v[i], t);
    }
}

/* Four ladders at once: (xo[j] : zo[j]) = k * u_j for the 32-byte u_j at u + 32 j. */
TGT_AVX2 static void ladder4(fe *xo, fe *zo, const uint8_t k[32], const uint8_t *u)
{
    fe4 x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb, t;
    uint64_t limbs[4][10];
    for (int j = 0; j < 4; j++) {
        fe f;
        fe_frombytes_u(&f, u + 32 * j);
        for (int i = 0; i < 5; i++) {
            limbs[j][2 * i] = f.v[i] & 0x3ffffff;
            limbs[j][2 * i + 1] = f.v[i] >> 26;
        }
    }
    for (int i = 0; i < 10; i++) {
        x1.v[i] = _mm256_set_epi64x((long long)limbs[3][i], (long long)limbs[2][i], (long long)limbs[1][i],
                                    (long long)limbs[0][i]);
        x2.v[i] = _mm256_set1_epi64x(i == 0);
        z2.v[i] = _mm256_setzero_si256();
        z3.v[i] = x2.v[i];
    }
    x3 = x1;
    uint64_t swap = 0;
    for (int i = 254; i >= 0; i--) {
        uint64_t bit = key_bit(k, i);
        swap ^= bit;
        __m256i mask = _mm256_set1_epi64x((long long)((uint64_t)0 - swap));
        fe4_cswap(&x2, &x3, mask);
        fe4_cswap(&z2, &z3, mask);
        swap = bit;
        fe4_add(&a, &x2, &z2);
        fe4_sub(&b, &x2, &z2);
        fe4_add(&c, &x3, &z3);
        fe4_sub(&d, &x3, &z3);
        fe4_sq(&aa, &a);
        fe4_sq(&bb, &b);
        fe4_mul(&da, &d, &a);
        fe4_mul(&cb, &c, &b);
        fe4_sub(&e, &aa, &bb);
        fe4_mul(&x2, &aa, &bb);
        fe4_mul121665(&t, &e);
        fe4_add(&t, &aa, &t);
        fe4_mul(&z2, &e, &t);
        fe4_add(&t, &da, &cb);
        fe4_sq(&x3, &t);
        fe4_sub(&t, &da, &cb);
        fe4_sq(&t, &t);
        fe4_mul(&z3, &x1, &t);
    }
    __m256i mask = _mm256_set1_epi64x((long long)((uint64_t)0 - swap));
    fe4_cswap(&x2, &x3, mask);
    fe4_cswap(&z2, &z3, mask);
    uint64_t xs[10][4], zs[10][4];
    for (int i = 0; i < 10; i++) {
        _mm256_storeu_si256((__m256i *)xs[i], x2.v[i]);
        _mm256_storeu_si256((__m256i *)zs[i], z2.v[i]);
    }
    for (int j = 0; j < 4; j++) {
        for (int i = 0; i < 5; i++) {
            xo[j].v[i] = xs[2 * i][j] + (xs[2 * i + 1][j] << 26);
            zo[j].v[i] = zs[2 * i][j] + (zs[2 * i + 1][j] << 26);
        }
        fe_carry(&xo[j]);
        fe_carry(&zo[j]);
    }
}
#undef M
#undef A
#undef X19
#undef X19W
#undef X38

/* ---------------- AVX-512 IFMA: 8 lanes, radix 2^51 in 52-bit multipliers
 *
 * vpmadd52luq / vpmadd52huq read only the low 52 bits of each operand, so
 * every input of fe8_mul / fe8_sq must be below 2^52: they take (and return)
 * carried limbs (below 2^51 + 2), and fe8_add / fe8_sub carry too.  A product
 * f_i g_j = lo + hi 2^52 sits at limb i + j (lo) and i + j + 1 (2 hi, since
 * 2^52 = 2 * 2^51); limbs 5..9 fold into 0..4 times 19. */

typedef struct { __m512i v[5]; } fe8;

#define LO(acc, a, b) _mm512_madd52lo_epu64((acc), (a), (b))
#define HI(acc, a, b) _mm512_madd52hi_epu64((acc), (a), (b))
#define ADD8(a, b) _mm512_add_epi64((a), (b))
#define X19W8(x) ADD8(ADD8((x), _mm512_slli_epi64((x), 1)), _mm512_slli_epi64((x), 4))

/* Limbs below 2^63 -> carried. */
TGT_IFMA static inline void fe8_carry(fe8 *h, __m512i h0, __m512i h1, __m512i h2, __m512i h3, __m512i h4)
{
    const __m512i m = _mm512_set1_epi64((long long)MASK51);
    __m512i c;
    c = _mm512_srli_epi64(h0, 51); h0 = _mm512_and_si512(h0, m); h1 = ADD8(h1, c);
    c = _mm512_srli_epi64(h1, 51); h1 = _mm512_and_si512(h1, m); h2 = ADD8(h2, c);
    c = _mm512_srli_epi64(h2, 51); h2 = _mm512_and_si512(h2, m); h3 = ADD8(h3, c);
    c = _mm512_srli_epi64(h3, 51); h3 = _mm512_and_si512(h3, m); h4 = ADD8(h4, c);
    c = _mm512_srli_epi64(h4, 51); h4 = _mm512_and_si512(h4, m); h0 = ADD8(h0, X19W8(c));
    c = _mm512_srli_epi64(h0, 51); h0 = _mm512_and_si512(h0, m); h1 = ADD8(h1, c);
    h->v[0] = h0; h->v[1] = h1; h->v[2] = h2; h->v[3] = h3; h->v[4] = h4;
}

/* t_k = l_k + 2 u_k (each below 15 * 2^52), then h_k = t_k + 19 t_(k+5): below 2^61. */
TGT_IFMA static inline void fe8_fold(fe8 *h, __m512i l0, __m512i l1, __m512i l2, __m512i l3, __m512i l4,
                                     __m512i l5, __m512i l6, __m512i l7, __m512i l8, __m512i l9,
                                     __m512i u1, __m512i u2, __m512i u3, __m512i u4, __m512i u5,
                                     __m512i u6, __m512i u7, __m512i u8, __m512i u9)
{
#define T(l, u) ADD8((l), ADD8((u), (u)))
    __m512i t5 = T(l5, u5), t6 = T(l6, u6), t7 = T(l7, u7), t8 = T(l8, u8), t9 = T(l9, u9);
    fe8_carry(h, ADD8(l0, X19W8(t5)), ADD8(T(l1, u1), X19W8(t6)), ADD8(T(l2, u2), X19W8(t7)),
              ADD8(T(l3, u3), X19W8(t8)), ADD8(T(l4, u4), X19W8(t9)));
#undef T
}

TGT_IFMA static inline __attribute__((always_inline)) void fe8_mul(fe8 *h, const fe8 *f, const fe8 *g)
{
    const __m512i f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    const __m512i g0 = g->v[0], g1 = g->v[1], g2 = g->v[2], g3 = g->v[3], g4 = g->v[4];
    const __m512i z = _mm512_setzero_si512();
    __m512i l0 = z, l1 = z, l2 = z, l3 = z, l4 = z, l5 = z, l6 = z, l7 = z, l8 = z;
    __m512i u1 = z, u2 = z, u3 = z, u4 = z, u5 = z, u6 = z, u7 = z, u8 = z, u9 = z;
    l0 = LO(l0, f0, g0); u1 = HI(u1, f0, g0);
    l1 = LO(l1, f0, g1); u2 = HI(u2, f0, g1);
    l2 = LO(l2, f0, g2); u3 = HI(u3, f0, g2);
    l3 = LO(l3, f0, g3); u4 = HI(u4, f0, g3);
    l4 = LO(l4, f0, g4); u5 = HI(u5, f0, g4);
    l1 = LO(l1, f1, g0); u2 = HI(u2, f1, g0);
    l2 = LO(l2, f1, g1); u3 = HI(u3, f1, g1);
    l3 = LO(l3, f1, g2); u4 = HI(u4, f1, g2);
    l4 = LO(l4, f1, g3); u5 = HI(u5, f1, g3);
    l5 = LO(l5, f1, g4); u6 = HI(u6, f1, g4);
    l2 = LO(l2, f2, g0); u3 = HI(u3, f2, g0);
    l3 = LO(l3, f2, g1); u4 = HI(u4, f2, g1);
    l4 = LO(l4, f2, g2); u5 = HI(u5, f2, g2);
    l5 = LO(l5, f2, g3); u6 = HI(u6, f2, g3);
    l6 = LO(l6, f2, g4); u7 = HI(u7, f2, g4);
    l3 = LO(l3, f3, g0); u4 = HI(u4, f3, g0);
    l4 = LO(l4, f3, g1); u5 = HI(u5, f3, g1);
    l5 = LO(l5, f3, g2); u6 = HI(u6, f3, g2);
    l6 = LO(l6, f3, g3); u7 = HI(u7, f3, g3);
    l7 = LO(l7, f3, g4); u8 = HI(u8, f3, g4);
    l4 = LO(l4, f4, g0); u5 = HI(u5, f4, g0);
    l5 = LO(l5, f4, g1); u6 = HI(u6, f4, g1);
    l6 = LO(l6, f4, g2); u7 = HI(u7, f4, g2);
    l7 = LO(l7, f4, g3); u8 = HI(u8, f4, g3);
    l8 = LO(l8, f4, g4); u9 = HI(u9, f4, g4);
    __m512i l9 = z;
    fe8_fold(h, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, u1, u2, u3, u4, u5, u6, u7, u8, u9);

}

TGT_IFMA static inline __attribute__((always_inline)) void fe8_sq(fe8 *h, const fe8 *f)
{
    const __m512i f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    const __m512i z = _mm512_setzero_si512();
    __m512i l0 = z, l1 = z, l2 = z, l3 = z, l4 = z, l5 = z, l6 = z, l7 = z, l8 = z;
    __m512i u1 = z, u2 = z, u3 = z, u4 = z, u5 = z, u6 = z, u7 = z, u8 = z, u9 = z;
    l1 = LO(l1, f0, f1); u2 = HI(u2, f0, f1);
    l2 = LO(l2, f0, f2); u3 = HI(u3, f0, f2);
    l3 = LO(l3, f0, f3); u4 = HI(u4, f0, f3);
    l4 = LO(l4, f0, f4); u5 = HI(u5, f0, f4);
    l3 = LO(l3, f1, f2); u4 = HI(u4, f1, f2);
    l4 = LO(l4, f1, f3); u5 = HI(u5, f1, f3);
    l5 = LO(l5, f1, f4); u6 = HI(u6, f1, f4);
    l5 = LO(l5, f2, f3); u6 = HI(u6, f2, f3);
    l6 = LO(l6, f2, f4); u7 = HI(u7, f2, f4);
    l7 = LO(l7, f3, f4); u8 = HI(u8, f3, f4);
    l0 = _mm512_add_epi64(l0, l0);
    l1 = _mm512_add_epi64(l1, l1);
    l2 = _mm512_add_epi64(l2, l2);
    l3 = _mm512_add_epi64(l3, l3);
    l4 = _mm512_add_epi64(l4, l4);
    l5 = _mm512_add_epi64(l5, l5);
    l6 = _mm512_add_epi64(l6, l6);
    l7 = _mm512_add_epi64(l7, l7);
    l8 = _mm512_add_epi64(l8, l8);
    u1 = _mm512_add_epi64(u1, u1);
    u2 = _mm512_add_epi64(u2, u2);
    u3 = _mm512_add_epi64(u3, u3);
    u4 = _mm512_add_epi64(u4, u4);
    u5 = _mm512_add_epi64(u5, u5);
    u6 = _mm512_add_epi64(u6, u6);
    u7 = _mm512_add_epi64(u7, u7);
    u8 = _mm512_add_epi64(u8, u8);
    u9 = _mm512_add_epi64(u9, u9);
    l0 = LO(l0, f0, f0); u1 = HI(u1, f0, f0);
    l2 = LO(l2, f1, f1); u3 = HI(u3, f1, f1);
    l4 = LO(l4, f2, f2); u5 = HI(u5, f2, f2);
    l6 = LO(l6, f3, f3); u7 = HI(u7, f3, f3);
    l8 = LO(l8, f4, f4); u9 = HI(u9, f4, f4);
    __m512i l9 = z;
    fe8_fold(h, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, u1, u2, u3, u4, u5, u6, u7, u8, u9);

}

TGT_IFMA static inline void fe8_add(fe8 *h, const fe8 *f, const fe8 *g)
{
    fe8_carry(h, ADD8(f->v[0], g->v[0]), ADD8(f->v[1], g->v[1]), ADD8(f->v[2], g->v[2]),
              ADD8(f->v[3], g->v[3]), ADD8(f->v[4], g->v[4]));
}

/* f - g + 4p, carried (g carried, so no lane goes negative). */
TGT_IFMA static inline void fe8_sub(fe8 *h, const fe8 *f, const fe8 *g)
{
    const __m512i p0 = _mm512_set1_epi64(0x1fffffffffffb4LL), pi = _mm512_set1_epi64(0x1ffffffffffffcLL);
    fe8_carry(h, _mm512_sub_epi64(ADD8(f->v[0], p0), g->v[0]), _mm512_sub_epi64(ADD8(f->v[1], pi), g->v[1]),
              _mm512_sub_epi64(ADD8(f->v[2], pi), g->v[2]), _mm512_sub_epi64(ADD8(f->v[3], pi), g->v[3]),
              _mm512_sub_epi64(ADD8(f->v[4], pi), g->v[4]));
}

/* 121665 f for carried f: lo at limb i, 2 hi at limb i + 1 (hi < 2^18). */
TGT_IFMA static inline void fe8_mul121665(fe8 *h, const fe8 *f)
{
    const __m512i c = _mm512_set1_epi64(121665), z = _mm512_setzero_si512();
    __m512i u0 = HI(z, f->v[4], c);
    fe8_carry(h, ADD8(LO(z, f->v[0], c), X19W8(ADD8(u0, u0))),
              LO(ADD8(HI(z, f->v[0], c), HI(z, f->v[0], c)), f->v[1], c),
              LO(ADD8(HI(z, f->v[1], c), HI(z, f->v[1], c)), f->v[2], c),
              LO(ADD8(HI(z, f->v[2], c), HI(z, f->v[2], c)), f->v[3], c),
              LO(ADD8(HI(z, f->v[3], c), HI(z, f->v[3], c)), f->v[4], c));
}

TGT_IFMA static inline void fe8_cswap(fe8 *f, fe8 *g, __m512i mask)
{
    for (int i = 0; i < 5; i++) {
        __m512i t = _mm512_and_si512(mask, _mm512_xor_si512(f->v[i], g->v[i]));
        f->v[i] = _mm512_xor_si512(f->v[i], t);
        g->v[i] = _mm512_xor_si512(g->v[i], t);
    }
}

/* Eight ladders at once: (xo[j] : zo[j]) = k * u_j for the 32-byte u_j at u + 32 j. */
TGT_IFMA static void ladder8(fe *xo, fe *zo, const uint8_t k[32], const uint8_t *u)
{
    fe8 x1, x2, z2, x3, z3, a, aa, b, bb, e, c, d, da, cb, t;
    uint64_t limbs[5][8];
    for (int j = 0; j < 8; j++) {
        fe f;
        fe_frombytes_u(&f, u + 32 * j);
        for (int i = 0; i < 5; i++) limbs[i][j] = f.v[i];
    }
    for (int i = 0; i < 5; i++) {
        x1.v[i] = _mm512_loadu_si512((const void *)limbs[i]);
        x2.v[i] = _mm512_set1_epi64(i == 0);
        z2.v[i] = _mm512_setzero_si512();
        z3.v[i] = x2.v[i];
    }
    x3 = x1;
    uint64_t swap = 0;
    for (int i = 254; i >= 0; i--) {
        uint64_t bit = key_bit(k, i);
        swap ^= bit;
        __m512i mask = _mm512_set1_epi64((long long)((uint64_t)0 - swap));
        fe8_cswap(&x2, &x3, mask);
        fe8_cswap(&z2, &z3, mask);
        swap = bit;
        fe8_add(&a, &x2, &z2);
        fe8_sub(&b, &x2, &z2);
        fe8_add(&c, &x3, &z3);
        fe8_sub(&d, &x3, &z3);
        fe8_sq(&aa, &a);
        fe8_sq(&bb, &b);
        fe8_mul(&da, &d, &a);
        fe8_mul(&cb, &c, &b);
        fe8_sub(&e, &aa, &bb);
        fe8_mul(&x2, &aa, &bb);
        fe8_mul121665(&t, &e);
        fe8_add(&t, &aa, &t);
        fe8_mul(&z2, &e, &t);
        fe8_add(&t, &da, &cb);
        fe8_sq(&x3, &t);
        fe8_sub(&t, &da, &cb);
        fe8_sq(&t, &t);
        fe8_mul(&z3, &x1, &t);
    }
    __m512i mask = _mm512_set1_epi64((long long)((uint64_t)0 - swap));
    fe8_cswap(&x2, &x3, mask);
    fe8_cswap(&z2, &z3, mask);
    uint64_t xs[5][8], zs[5][8];
    for (int i = 0; i < 5; i++) {
        _mm512_storeu_si512((void *)xs[i], x2.v[i]);
        _mm512_storeu_si512((void *)zs[i], z2.v[i]);
    }
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 5; i++) {
            xo[j].v[i] = xs[i][j];
            zo[j].v[i] = zs[i][j];
        }
}
#undef LO
#undef HI
#undef ADD8
#undef X19W8

/* z^((p-5)/8) for four (AVX2) or eight (IFMA) field elements at once: the
 * exponentiation of Elligator 2, the same chain as fe_pow2_250_1 + fe_pow22523. */
#define POW22523_CHAIN(FE, SQ, MUL)                                                                     \
    do {                                                                                                \
        FE z2, z9, z11, t, a, b, c;                                                                     \
        SQ(&z2, z);                                                                                     \
        SQ(&t, &z2); SQ(&t, &t);                                     /* z^8 */                          \
        MUL(&z9, &t, z);                                                                                \
        MUL(&z11, &z9, &z2);                                                                            \
        SQ(&t, &z11);                                                                                   \
        MUL(&a, &t, &z9);                                            /* z^(2^5 - 1) */                  \
        SQ(&t, &a); for (int i = 1; i < 5; i++) SQ(&t, &t);                                             \
        MUL(&b, &t, &a);                                             /* z^(2^10 - 1) */                 \
        SQ(&t, &b); for (int i = 1; i < 10; i++) SQ(&t, &t);                                            \
        MUL(&c, &t, &b);                                             /* z^(2^20 - 1) */                 \
        SQ(&t, &c); for (int i = 1; i < 20; i++) SQ(&t, &t);                                            \
        MUL(&t, &t, &c);                                             /* z^(2^40 - 1) */                 \
        for (int i = 0; i < 10; i++) SQ(&t, &t);                                                        \
        MUL(&a, &t, &b);                                             /* z^(2^50 - 1) */                 \
        SQ(&t, &a); for (int i = 1; i < 50; i++) SQ(&t, &t);                                            \
        MUL(&b, &t, &a);                                             /* z^(2^100 - 1) */                \
        SQ(&t, &b); for (int i = 1; i < 100; i++) SQ(&t, &t);                                           \
        MUL(&t, &t, &b);                                             /* z^(2^200 - 1) */                \
        for (int i = 0; i < 50; i++) SQ(&t, &t);                                                        \
        MUL(&t, &t, &a);                                             /* z^(2^250 - 1) */                \
        SQ(&t, &t); SQ(&t, &t);                                                                         \
        MUL(out, &t, z);                                             /* z^(2^252 - 3) */                \
    } while (0)

TGT_AVX2 static void fe4_pow22523(fe4 *out, const fe4 *z) { POW22523_CHAIN(fe4, fe4_sq, fe4_mul); }
TGT_IFMA static void fe8_pow22523(fe8 *out, const fe8 *z) { POW22523_CHAIN(fe8, fe8_sq, fe8_mul); }

/* Four carried field elements in and out of the lanes of an fe4 (radix 2^25.5). */
TGT_AVX2 static void pow22523_x4(fe *out, const fe *in)
{
    fe4 z, r;
    uint64_t l[10][4];
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 5; i++) {
            l[2 * i][j] = in[j].v[i] & 0x3ffffff;
            l[2 * i + 1][j] = in[j].v[i] >> 26;
        }
    for (int i = 0; i < 10; i++) z.v[i] = _mm256_loadu_si256((const __m256i *)l[i]);
    fe4_pow22523(&r, &z);
    for (int i = 0; i < 10; i++) _mm256_storeu_si256((__m256i *)l[i], r.v[i]);
    for (int j = 0; j < 4; j++) {
        for (int i = 0; i < 5; i++) out[j].v[i] = l[2 * i][j] + (l[2 * i + 1][j] << 26);
        fe_carry(&out[j]);
    }
}

TGT_IFMA static void pow22523_x8(fe *out, const fe *in)
{
    fe8 z, r;
    uint64_t l[5][8];
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 5; i++) l[i][j] = in[j].v[i];
    for (int i = 0; i < 5; i++) z.v[i] = _mm512_loadu_si512((const void *)l[i]);
    fe8_pow22523(&r, &z);
    for (int i = 0; i < 5; i++) _mm512_storeu_si512((void *)l[i], r.v[i]);
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 5; i++) out[j].v[i] = l[i][j];
}

static int x25519_cpu_isa(void)
{
    if (pprl_cpu_has(PPRL_CPU_AVX512F | PPRL_CPU_AVX512IFMA)) return X25519_ISA_IFMA;
    if (pprl_cpu_has(PPRL_CPU_AVX2)) return X25519_ISA_AVX2;
    return X25519_ISA_PORTABLE;
}
#else
#define X25519_X86 0
static int x25519_cpu_isa(void) { return X25519_ISA_PORTABLE; }
#endif

/* crypto_scalarmult(key, in_i) for n elements into out (32 bytes each; out may
 * be in).  scratch: 3 n field elements. */
static void x25519_batch(uint8_t *out, const uint8_t key[32], const uint8_t *in, size_t n, fe *scratch, int isa)
{
    fe *num = scratch, *den = scratch + n, *pre = scratch + 2 * n;
    uint8_t k[32];
    size_t i = 0;
    clamp_key(k, key);
#if X25519_X86
    if (isa >= X25519_ISA_IFMA)
        for (; i + 8 <= n; i += 8) ladder8(num + i, den + i, k, in + 32 * i);
    if (isa >= X25519_ISA_AVX2)
        for (; i + 4 <= n; i += 4) ladder4(num + i, den + i, k, in + 32 * i);
#else
    (void)isa;
#endif
    for (; i < n; i++) ladder51(&num[i], &den[i], k, in + 32 * i);
    batch_to_u(out, num, den, pre, n);
    memset(k, 0, sizeof k);
}

/* pow22523 of n carried field elements, isa lanes at a time. */
static void pow22523_batch(fe *out, const fe *in, size_t n, int isa)
{
    size_t i = 0;
#if X25519_X86
    if (isa >= X25519_ISA_IFMA)
        for (; i + 8 <= n; i += 8) pow22523_x8(out + i, in + i);
    if (isa >= X25519_ISA_AVX2)
        for (; i + 4 <= n; i += 4) pow22523_x4(out + i, in + i);
#else
    (void)isa;
#endif
    for (; i < n; i++) fe_pow22523(&out[i], &in[i]);
}

/* hash_batch with the Elligator exponentiations of HBLOCK messages (2 each)
 * run side by side on the vector path isa; the same bytes as hash_batch. */
#define HBLOCK 32
static void hash_batch_isa(uint8_t *out, const xmd_ctx *x, const uint8_t *const *msgs, const size_t *lens,
                           fe *scratch, size_t n, int isa)
{
    fe *num = scratch, *den = scratch + n, *pre = scratch + 2 * n;
    ell_state st[2 * HBLOCK];
    fe tv[2 * HBLOCK], pw[2 * HBLOCK];
    uint8_t field[96];
    ge p;
    for (size_t b = 0; b < n; b += HBLOCK) {
        size_t m = n - b < HBLOCK ? n - b : HBLOCK;
        for (size_t i = 0; i < m; i++) {
            xmd96(field, x, msgs[b + i], lens[b + i]);
            hash_point_begin(&st[2 * i], field);
            tv[2 * i] = st[2 * i].t;
            tv[2 * i + 1] = st[2 * i + 1].t;
        }
        pow22523_batch(pw, tv, 2 * m, isa);
        for (size_t i = 0; i < m; i++) {
            hash_point_finish(&p, &st[2 * i], &pw[2 * i]);
            fe_add(&num[b + i], &p.Z, &p.Y);
            fe_sub(&den[b + i], &p.Z, &p.Y);
        }
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

/* ------------------------------------------------------------------ Python: X25519 */

static int check_isa(int isa)
{
    if (isa < X25519_ISA_PORTABLE || isa > X25519_ISA_IFMA) {
        PyErr_SetString(PyExc_ValueError, "x25519: unknown instruction-set path");
        return -1;
    }
    if (isa > x25519_cpu_isa()) {
        PyErr_SetString(PyExc_ValueError, "x25519: this CPU lacks the instruction set of that path");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(x25519_doc,
"x25519(key, points, isa, /) -> bytes\n--\n\n"
"libsodium's crypto_scalarmult(key, u) for every 32-byte u of ``points`` (one\n"
"32-byte key for all), concatenated; where libsodium refuses (an all-zero result)\n"
"the output holds 32 zero bytes.  isa: 0 portable, 1 AVX2, 2 AVX-512 IFMA (at\n"
"most cpu_isa()).\n"
"  Constant time in the key and the points; releases the GIL.");

static PyObject *py_x25519(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer key, in;
    int isa;
    PyObject *res = NULL;
    if (!PyArg_ParseTuple(args, "y*y*i:x25519", &key, &in, &isa)) return NULL;
    if (key.len != 32 || in.len % 32) {
        PyErr_SetString(PyExc_ValueError, "x25519: a 32-byte key and whole 32-byte points are needed");
        goto done;
    }
    if (check_isa(isa) < 0) goto done;
    {
        size_t n = (size_t)in.len / 32, chunk = n < CHUNK ? n : CHUNK;
        fe *scratch = PyMem_RawMalloc((chunk ? 3 * chunk : 1) * sizeof(fe));
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(32 * n));
        if (res != NULL) {
            uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
            const uint8_t *src = (const uint8_t *)in.buf, *k = (const uint8_t *)key.buf;
            Py_BEGIN_ALLOW_THREADS
            for (size_t s = 0; s < n; s += chunk) {
                size_t m = n - s < chunk ? n - s : chunk;
                x25519_batch(out + 32 * s, k, src + 32 * s, m, scratch, isa);
            }
            Py_END_ALLOW_THREADS
        }
        PyMem_RawFree(scratch);
    }
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&in);
    return res;
}

PyDoc_STRVAR(hash_to_u_x25519_doc,
"hash_to_u_x25519(messages, dst, key, isa, /) -> bytes\n--\n\n"
"x25519(key, hash_to_u(messages, dst), isa) in one call: hashing, the ladders\n"
"and the encoding in C with the GIL released.  The neutral element (from the\n"
"hash) and libsodium's refusals come out as 32 zero bytes.");

static PyObject *py_hash_to_u_x25519(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *seq, *items = NULL, *res = NULL;
    Py_buffer dst, key;
    const uint8_t **ptrs = NULL;
    size_t *lens = NULL;
    fe *scratch = NULL;
    xmd_ctx x;
    int isa;
    uint8_t k[32];
    if (!PyArg_ParseTuple(args, "Oy*y*i:hash_to_u_x25519", &seq, &dst, &key, &isa)) return NULL;
    if (dst.len < 1 || dst.len > 255 || key.len != 32) {
        PyBuffer_Release(&dst);
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "hash_to_u_x25519: the DST must be 1 to 255 bytes, the key 32");
        return NULL;
    }
    xmd_init(&x, (const uint8_t *)dst.buf, (size_t)dst.len);
    memcpy(k, key.buf, 32);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&key);
    if (check_isa(isa) < 0) goto done;
    items = PySequence_Tuple(seq);     /* owns the messages while the GIL is released */
    if (items == NULL) goto done;
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
            PyErr_Format(PyExc_TypeError, "hash_to_u_x25519: message at position %zu is not bytes", i + 1);
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
            hash_batch_isa(out + 32 * s, &x, ptrs + s, lens + s, scratch, m, isa);
            x25519_batch(out + 32 * s, k, out + 32 * s, m, scratch, isa);
        }
        Py_END_ALLOW_THREADS
    }
done:
    memset(k, 0, sizeof k);
    PyMem_RawFree(ptrs);
    PyMem_RawFree(lens);
    PyMem_RawFree(scratch);
    Py_XDECREF(items);
    return res;
}

PyDoc_STRVAR(cpu_isa_doc,
"cpu_isa() -> int\n--\n\n"
"The fastest X25519 path this CPU (and OS) runs: 0 portable, 1 AVX2, 2 AVX-512 IFMA.");

static PyObject *py_cpu_isa(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(x25519_cpu_isa());
}

static PyMethodDef methods[] = {
    {"hash_to_u", py_hash_to_u, METH_VARARGS, hash_to_u_doc},
    {"expand_message_xmd96", py_expand_message_xmd96, METH_VARARGS, expand_message_xmd96_doc},
    {"map_to_u", py_map_to_u, METH_O, map_to_u_doc},
    {"map_to_point", py_map_to_point, METH_O, map_to_point_doc},
    {"elligator2", py_elligator2, METH_O, elligator2_doc},
    {"x25519", py_x25519, METH_VARARGS, x25519_doc},
    {"hash_to_u_x25519", py_hash_to_u_x25519, METH_VARARGS, hash_to_u_x25519_doc},
    {"cpu_isa", py_cpu_isa, METH_NOARGS, cpu_isa_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h2c",
    "RFC 9380 curve25519_XMD:SHA-512_ELL2_RO_ in constant time: messages (or hash_to_field output) to X25519 u.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h2c(void) { return PyModule_Create(&module); }
