#!/usr/bin/env bash
# The prepared GPU check (see benchmarks/gpu/gpu_check.py for what it measures).
#
#   bash benchmarks/gpu/run.sh            # on a bare H100/H200 machine: python3 with torch (CUDA)
#   bash benchmarks/gpu/run.sh --smoke    # the same code on the CPU, tiny shapes, under a minute
#
# No pip install: the working tree's root goes on PYTHONPATH. The interpreter is $PYTHON
# if set; else, with --smoke, the project's .venv where there is one; else python3.
# Results: $OUT/gpu.json when OUT is set, else benchmarks/results/gpu.json (gpu-smoke.json
# with --smoke). After GPU_CHECK_TIMEOUT seconds (default 420, 150 with --smoke) the run
# gets SIGINT and still prints and writes what it measured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$(pwd)"

smoke=0
for arg in "$@"; do
    if [ "$arg" = "--smoke" ]; then smoke=1; fi
done

py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ "$smoke" = 1 ] && [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
limit="${GPU_CHECK_TIMEOUT:-$([ "$smoke" = 1 ] && echo 150 || echo 420)}"

export PYTHONUNBUFFERED=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if command -v timeout >/dev/null 2>&1; then
    exec timeout -s INT -k 10 "$limit" "$py" benchmarks/gpu/gpu_check.py "$@"
fi
exec "$py" benchmarks/gpu/gpu_check.py "$@"
