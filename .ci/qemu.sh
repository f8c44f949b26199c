# Sourced by .ci/run: Debian's qemu-user, whose qemu-x86_64 runs the venv's Python on emulated CPUs without
# AVX-512 or AVX (tests/test_isa_emulated.py). Exports PPRL_REQUIRE_QEMU=1 (its absence then fails those
# tests instead of skipping them).
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-user >/dev/null
fi
export PPRL_REQUIRE_QEMU=1
