# Sourced by .ci/run: Debian's chromium for the browser test of the regulator's report.
# Exports PPRL_REQUIRE_CHROMIUM=1 (its absence then fails that test instead of skipping it).
if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
export PPRL_REQUIRE_CHROMIUM=1
