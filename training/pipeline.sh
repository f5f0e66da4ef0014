#!/usr/bin/env bash
# Reproduce kvscope's shipped models on one CUDA GPU (see training/README.md).
#   corpus/  must exist (python3 training/prepare_corpus.py --out corpus, on a Debian machine)
# Writes runs/ (checkpoints, logs) and, by default, static/models/ and tests/fixtures/tiny-model/.
# STAGE=target stops after the target checkpoint (a GPU lease of 10 minutes per command fits
# the target in one call and the rest in the next); a stage whose checkpoint exists is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_STEPS=${TARGET_STEPS:-9595}
TARGET2_STEPS=${TARGET2_STEPS:-6162}
DRAFT_STEPS=${DRAFT_STEPS:-2272}
MODELS=${MODELS:-static/models}
FIXTURE=${FIXTURE:-tests/fixtures/tiny-model}
RUNS=${RUNS:-runs}
CORPUS=${CORPUS:-corpus}
STAGE=${STAGE:-all}
export PYTHONUNBUFFERED=1
py() { python3 "training/$@"; }
# TARGET_SECONDS / DRAFT_SECONDS train for a time budget instead of a step count (the log records the steps).
target_len=${TARGET_SECONDS:+--seconds $TARGET_SECONDS}
target2_len=${TARGET2_SECONDS:+--seconds $TARGET2_SECONDS}
draft_len=${DRAFT_SECONDS:+--seconds $DRAFT_SECONDS}

# The tokenizer is kept across model versions (train_tokenizer.py made it from the v1 corpus), so
# every shipped model, fixture and trace shares its token ids.
[ -f "$RUNS/tokenizer.json" ] || { mkdir -p "$RUNS"; cp "$MODELS/kvscope-llama-8l/tokenizer.json" "$RUNS/tokenizer.json"; }
if [ "${SKIP_FIXTURE:-0}" != 1 ]; then
  py train.py --preset tiny --tokenizer "$RUNS/tokenizer.json" --out "$RUNS/tiny"
  py export.py --hf "$RUNS/tiny" --out "$FIXTURE" --id tiny-fixture --name "Tiny random fixture (tests only)" --role target
fi
# Target, stage 1: from scratch, associative recall of variety 1 (retrieval.py).
[ -f "$RUNS/target-base/model.safetensors" ] || py train.py --preset target --steps "$TARGET_STEPS" $target_len --corpus "$CORPUS" \
  --tokenizer "$RUNS/tokenizer.json" --cache "$RUNS/cache" --out "$RUNS/target-base"
[ "$STAGE" = target-base ] && exit 0
# Stage 2: continued at half the learning rate with more and more varied recall rows (variety 2).
[ -f "$RUNS/target/model.safetensors" ] || py train.py --preset target --init "$RUNS/target-base" --lr 1e-3 --warmup 100 \
  --steps "$TARGET2_STEPS" $target2_len --recall-variety 2 --retrieval-rows 0.22 --passkey-rows 0.05 --repeat-rows 0.06 \
  --seed 1 --corpus "$CORPUS" --tokenizer "$RUNS/tokenizer.json" --cache "$RUNS/cache" --out "$RUNS/target"
[ "$STAGE" = target ] && exit 0
[ -f "$RUNS/draft/model.safetensors" ] || py train.py --preset draft --steps "$DRAFT_STEPS" $draft_len --corpus "$CORPUS" \
  --teacher "$RUNS/target" --tokenizer "$RUNS/tokenizer.json" --cache "$RUNS/cache" --out "$RUNS/draft"
py export.py --hf "$RUNS/target" --out "$MODELS/kvscope-llama-8l" --id kvscope-llama-8l --name "kvscope Llama 8L v2 (7.1M)" --role target --draft kvscope-draft-2l
py export.py --hf "$RUNS/draft" --out "$MODELS/kvscope-draft-2l" --id kvscope-draft-2l --name "kvscope draft 2L v2 (0.9M)" --role draft
py check_hf.py --hf "$RUNS/target" --graph "$MODELS/kvscope-llama-8l" | tee "$RUNS/check_hf.json"
py evaluate.py --hf "$RUNS/target" --draft "$RUNS/draft" --corpus "$CORPUS" --trials "${EVAL_TRIALS:-50}" --out "$RUNS/eval.json"
