# Sourced by .ci/run: a PostgreSQL server on 127.0.0.1 for the registry tests (Debian's package).
# Exports PPRL_TEST_POSTGRES (the URL the tests use) and PPRL_REQUIRE_POSTGRES=1 (its absence fails them).
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
pg_lsclusters -h | grep -q "^${pg_version} main" || pg_createcluster "${pg_version}" main >/dev/null
pg_ctlcluster "${pg_version}" main start 2>/dev/null || true   # already running is fine
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
if ! su postgres -c "psql -Atqc \"SELECT 1 FROM pg_roles WHERE rolname = 'pprl'\"" | grep -q 1; then
    su postgres -c "psql -q -c \"CREATE ROLE pprl LOGIN PASSWORD 'pprl' CREATEDB\""
fi
export PPRL_TEST_POSTGRES=postgresql://pprl:pprl@127.0.0.1:5432/postgres
export PPRL_REQUIRE_POSTGRES=1
