#!/usr/bin/env bash
# make bench driver (placeholder until the benchmarks exist).
echo "bench: no benchmarks yet"
exit 0
