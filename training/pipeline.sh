#!/usr/bin/env bash
# Reproduce kvscope's shipped models on one CUDA GPU (see training/README.md).
#   corpus/  must exist (python3 training/prepare_corpus.py --out corpus, on a Debian machine)
# Writes runs/ (checkpoints, logs) and, by default, static/models/ and tests/fixtures/tiny-model/.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_STEPS=${TARGET_STEPS:-5000}
DRAFT_STEPS=${DRAFT_STEPS:-1500}
MODELS=${MODELS:-static/models}
FIXTURE=${FIXTURE:-tests/fixtures/tiny-model}
RUNS=${RUNS:-runs}
export PYTHONUNBUFFERED=1
py() { python3 "training/$@"; }

[ -f "$RUNS/tokenizer.json" ] || py train_tokenizer.py --corpus corpus --vocab 4096 --out "$RUNS/tokenizer.json"
py train.py --preset tiny --tokenizer "$RUNS/tokenizer.json" --out "$RUNS/tiny"
py export.py --hf "$RUNS/tiny" --out "$FIXTURE" --id tiny-fixture --name "Tiny random fixture (tests only)" --role target
[ -f "$RUNS/target/model.safetensors" ] || py train.py --preset target --steps "$TARGET_STEPS" --tokenizer "$RUNS/tokenizer.json" --cache "$RUNS/cache" --out "$RUNS/target"
[ -f "$RUNS/draft/model.safetensors" ] || py train.py --preset draft --steps "$DRAFT_STEPS" --tokenizer "$RUNS/tokenizer.json" --cache "$RUNS/cache" --out "$RUNS/draft"
py export.py --hf "$RUNS/target" --out "$MODELS/kvscope-llama-8l" --id kvscope-llama-8l --name "kvscope Llama 8L (7.1M)" --role target --draft kvscope-draft-2l
py export.py --hf "$RUNS/draft" --out "$MODELS/kvscope-draft-2l" --id kvscope-draft-2l --name "kvscope draft 2L (0.9M)" --role draft
py check_hf.py --hf "$RUNS/target" --graph "$MODELS/kvscope-llama-8l" | tee "$RUNS/check_hf.json"
py evaluate.py --hf "$RUNS/target" --draft "$RUNS/draft" --corpus corpus --trials "${EVAL_TRIALS:-50}" --out "$RUNS/eval.json"
