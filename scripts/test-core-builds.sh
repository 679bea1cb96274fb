#!/usr/bin/env bash
# Builds the compiled core once per CPU target, each in a clean build directory,
# and runs the core tests against every build (make test calls it).
#
#   scripts/test-core-builds.sh PYTHON [TARGET...]
#
# TARGETs default to: native x86-64 x86-64-v3 x86-64-v4. A target this CPU cannot
# run (x86-64-v4 without AVX-512, x86-64-v3 without AVX2) is built but its tests
# are not run, and the summary says so. The compiler may vectorise each target
# differently, so a bug can hide in one build and not another: every build must
# pass. Each build lives in build/cores/TARGET (a copy of the sources, built
# with --force so no object of another target is reused); its log is beside it.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${1:?usage: test-core-builds.sh PYTHON [TARGET...]}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, the venv's own (not its target)
shift
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(native x86-64 x86-64-v3 x86-64-v4)
ROOT=$PWD/build/cores
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
FLAGS=" $(sed -n 's/^flags[[:space:]]*: //p' /proc/cpuinfo | head -1) "

# Whether this CPU runs code built for a target (the x86-64 psABI levels).
cpu_runs() {
    local need=()
    case $1 in
        x86-64-v4) need=(avx512f avx512bw avx512cd avx512dq avx512vl avx2 bmi2 fma movbe) ;;
        x86-64-v3) need=(avx2 bmi1 bmi2 fma movbe f16c lzcnt) ;;
        x86-64-v2) need=(sse4_2 popcnt ssse3 cx16) ;;
    esac
    # lzcnt shows as abm on older kernels and AMD CPUs
    local flag
    for flag in "${need[@]}"; do
        [[ $FLAGS == *" $flag "* ]] && continue
        [[ $flag == lzcnt && $FLAGS == *" abm "* ]] && continue
        echo "$flag"
        return 1
    done
    return 0
}

build() {
    local target=$1 dir=$ROOT/$1
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    cp -r setup.py pyproject.toml README.md labmig "$dir"/
    find "$dir/labmig" \( -name '*.so' -o -name '_fastcopy.c' -o -name __pycache__ \) -prune -exec rm -rf {} +
    (cd "$dir" && LABMIG_MARCH=$target "$PY" setup.py build_ext --inplace --force) >"$dir/build.log" 2>&1
}

# One target: build it, then run the core tests against it unless this CPU
# cannot run its code. Writes TARGET/result (one line) and TARGET/pytest.log;
# exits non-zero on a failure.
run_target() {
    local target=$1 dir=$ROOT/$1 missing
    if ! build "$target"; then
        echo "build failed (see $dir/build.log)" >"$dir/result"
        return 1
    fi
    if ! missing=$(cpu_runs "$target"); then
        echo "built; tests not run: this CPU lacks $missing" >"$dir/result"
        return 0
    fi
    # -P: the build directory, not the source tree, provides labmig
    LABMIG_EXPECT_CORE=$target PYTHONPATH=$dir \
        "$PY" -P -m pytest -q -p no:cacheprovider tests/core >"$dir/pytest.log" 2>&1
    local rc=$?
    tail -1 "$dir/pytest.log" | sed 's/=//g; s/^ *//; s/ *$//' >"$dir/result"
    return $rc
}

# Targets run JOBS at a time (default: one per core, at most 2): the tests are
# mostly single-threaded Python.
JOBS=${JOBS:-$(nproc)}
((JOBS > 2)) && JOBS=2
status=0
rm -f "$ROOT"/*.rc
echo "core builds: ${TARGETS[*]} ($JOBS at a time), in $ROOT"
running=0
for target in "${TARGETS[@]}"; do
    if ((running >= JOBS)); then
        wait -n
        running=$((running - 1))
    fi
    { run_target "$target"; echo $? >"$ROOT/$target.rc"; } &
    running=$((running + 1))
done
while ((running > 0)); do
    wait -n
    running=$((running - 1))
done

for target in "${TARGETS[@]}"; do
    if [[ $(cat "$ROOT/$target.rc" 2>/dev/null) != 0 ]]; then
        status=1
        echo "---- core build $target: ----"
        tail -60 "$ROOT/$target/pytest.log" "$ROOT/$target/build.log" 2>/dev/null
    fi
done
echo
echo "Core builds on: $CPU"
for target in "${TARGETS[@]}"; do
    printf '  %-10s %s\n' "$target" "$(cat "$ROOT/$target/result" 2>/dev/null || echo "no result")"
done
exit $status
