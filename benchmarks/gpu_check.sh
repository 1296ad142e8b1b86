#!/usr/bin/env bash
# On a GPU machine with torch + triton installed (no network needed): the conformance suite on
# CUDA for both backends, then the benchmarks named in $@ (those with a bench_<name>.py: align, routing). Results go to $OUT.
set -u
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONPATH=packages/align/src:packages/routing/src:packages/experts/src:packages/eplb/src:reference/src:conformance/src
export MOEKIT_COMMIT=${MOEKIT_COMMIT:-unknown}
for impl in "moekit[triton,cuda]" "moekit[torch,cuda]"; do
  python -m pytest -q -p no:cacheprovider -p moekit.conformance.plugin \
    --pyargs moekit.conformance.cases --moekit-impl "$impl" ${PYTEST_ARGS:-} \
    > "$OUT/conformance_${impl//[^a-z]/_}.log" 2>&1
  echo "conformance $impl: $(tail -1 "$OUT/conformance_${impl//[^a-z]/_}.log")"
done
for bench in "$@"; do
  python benchmarks/$bench/bench_$bench.py --out "$OUT/${bench}.json" ${BENCH_ARGS:-}
done
