/* CPU features for run-time dispatch, read from CPUID and XGETBV: the same answer on every x86 vendor.
 *
 * GCC 12's __builtin_cpu_supports fills its feature bits only for Intel and AMD; on a HygonGenuine
 * (Hygon Dhyana, an AVX2 CPU common in Chinese data centres) or CentaurHauls/Shanghai (Zhaoxin) CPU it
 * reports no feature at all, so every fast path stayed off there (found by tests/test_isa_emulated.py
 * under qemu's Dhyana model). These checks look at the feature bits themselves, and for the vector
 * extensions also at whether the operating system saves their registers (XCR0): a CPU with AVX2 under a
 * kernel that does not enable the YMM state must not get the AVX2 path.
 *
 * Included by each C extension (pprl/crypto/_montexp.c, _avx2exp.c, _h2c.c, pprl/matching/dice/_dice.c);
 * everything is static, so each gets its own copy and its own cache. */
#ifndef PPRL_CPU_H
#define PPRL_CPU_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PPRL_CPU_X86 1
#include <cpuid.h>
#include <stdint.h>

enum {
    PPRL_CPU_POPCNT = 1,
    PPRL_CPU_AVX2 = 2,
    PPRL_CPU_AVX512F = 4,
    PPRL_CPU_AVX512VPOPCNTDQ = 8,
    PPRL_CPU_AVX512IFMA = 16,
    PPRL_CPU_AVX512VL = 32,
};

static uint64_t
pprl_xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int
pprl_cpu_detect(void)
{
    unsigned a, b, c, d;
    int f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (c & (1u << 23))
        f |= PPRL_CPU_POPCNT;
    if (!(c & (1u << 27)) || !(c & (1u << 28))) /* OSXSAVE and AVX */
        return f;
    const uint64_t xcr0 = pprl_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* the OS saves XMM and YMM state */
        return f;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return f;
    if (b & (1u << 5))
        f |= PPRL_CPU_AVX2;
    if ((xcr0 & 0xe6) == 0xe6 && (b & (1u << 16))) { /* opmask and ZMM state; AVX512F */
        f |= PPRL_CPU_AVX512F;
        if (b & (1u << 21))
            f |= PPRL_CPU_AVX512IFMA;
        if (c & (1u << 14))
            f |= PPRL_CPU_AVX512VPOPCNTDQ;
        if (b & (1u << 31))
            f |= PPRL_CPU_AVX512VL;
    }
    return f;
}

/* Whether the CPU has every feature in `want` (PPRL_CPU_* bits, or-ed). Detected once; a race between
 * threads only detects twice. */
static int
pprl_cpu_has(int want)
{
    static int features = -1;
    if (features < 0)
        features = pprl_cpu_detect();
    return (features & want) == want;
}
#else
#define PPRL_CPU_X86 0
#endif

#endif /* PPRL_CPU_H */
