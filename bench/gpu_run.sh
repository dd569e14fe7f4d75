#!/usr/bin/env bash
# Everything the GPU proof of issue 4 needs, in one script run from the repository root on a CUDA machine.
#
#   bash bench/gpu_run.sh PHASE...      phases: setup data ckpt bench memory paper fp16   (or: all)
#
# setup   install the carried wheels (.whl/, made by bench/make_wheels.sh) into /tmp/site when present
# data    synthetic CLEVR-like data through the real data stage (paper profile, data.source = synthetic)
# ckpt    a random-weight PaliGemma-3B of the real architecture + processor in $CKPT (bench/make_random_3b.py)
# bench   bench/bench_vlm.py: QLoRA r16 seq 280, b8/b32 × suffix/full loss × gradient checkpointing on/off (samples/s,
#         peak, the memory estimate of `train.grad_ckpt = auto`), the finetune loop vs the bench step at b8 × accum 2
#         (one process), eval batched vs plain generate vs one-by-one at batch 32 (≈ 3 min on an H200)
# evalprof  bench/eval_profile.py: where the eval stage's batched generation loses time against plain generate
# memory  `build.py memory` with memory.measure = true on the random 3B checkpoint
# paper   the paper profile end to end: 4-bit load, suffix-only loss training, a kill after the first
#         checkpoint + resume, batched eval of base and fine-tuned
# fp16    the T4 path once: train.compute_dtype = fp16 (fp32 LoRA weights, grad scaler); the loss must stay finite
# estimate  `build.py doctor --steps 3` then a real finetune with the same settings (STEPS, default 24 → set
#         STEPS=200 for a meaningful run): bench/estimate_vs_run.py records both (±25% is the target)
#
# TINY=1 (CPU dry run of the script's logic): the tiny demo model stands in for the 3B checkpoint.
# Issue 15's measurements in ≈ 7 min of an H200 (setup ≈ 1, data < 1, ckpt ≈ 1.5, bench ≈ 3):
#   BUDGET_S=660 bash bench/gpu_run.sh setup data ckpt bench
# (add `paper` after `bench` to rerun the kill + resume paper path with the new loop, ≈ 2–3 min more.)
# Results go to $OUT (the device tool's folder; default bench/results/run) — at most 8 files:
# bench_<device>.json, memory_measured_<device>.json, memory.json, paper_path_<device>.md, log_<phases>.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TQDM_MININTERVAL=20
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-bench/results/run}
CKPT=${CKPT:-/tmp/tamrin-paligemma-3b-random}
PY=${PY:-python3}
mkdir -p "$OUT"
PHASES=("$@")
[ ${#PHASES[@]} -eq 0 ] || [ "${PHASES[0]}" = all ] && PHASES=(setup data ckpt memory bench evalprof paper fp16)
LOG="$OUT/log_$(IFS=-; echo "${PHASES[*]}").txt"
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
say() { echo "[gpu_run +$(( $(date +%s) - T0 ))s] $*"; }

# The paper profile on synthetic data and the random checkpoint (sizes chosen to finish in minutes).
DATA_SET=(--set data.source=synthetic --set data.n_scenes=160 --set data.questions_per_scene=5
          --set data.max_test=64)
PAPER_SET=("${DATA_SET[@]}" --set "model.id=$CKPT" --set train.max_steps=${STEPS:-24} --set train.save_every=${SAVE_EVERY:-8}
           --set eval.max_examples=64)

slug() { $PY -c "import torch,re; print(re.sub(r'[^a-z0-9]+','-',torch.cuda.get_device_name().lower()).strip('-') if torch.cuda.is_available() else 'cpu')"; }

phase_setup() {
  if [ -d /tmp/site/transformers-5.24.0.dist-info ]; then  # installed by an earlier call on this warm machine
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  elif ls .whl/*.whl >/dev/null 2>&1; then
    # huggingface_hub only when the machine's is older than transformers 5.24 needs
    local hub_ok
    hub_ok=$($PY -c "import huggingface_hub as h; from packaging.version import Version as V; print(int(V(h.__version__) >= V('1.31')))" 2>/dev/null || echo 0)
    local wheels=(.whl/*.whl)
    [ "$hub_ok" = 1 ] && wheels=($(ls .whl/*.whl | grep -v huggingface_hub))
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" || return 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  $PY - <<'EOF'
import torch, transformers, peft, accelerate, bitsandbytes
print("torch", torch.__version__, "cuda", torch.version.cuda, "|",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU", "|",
      "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__,
      "bitsandbytes", bitsandbytes.__version__)
EOF
}

phase_data() { $PY build.py data --profile paper "${DATA_SET[@]}"; }

phase_ckpt() { $PY bench/make_random_3b.py "$CKPT" --data results/data ${TINY:+--tiny --device cpu}; }

phase_bench() {
  $PY bench/bench_vlm.py --checkpoint "$CKPT" --data results/data --out "$OUT/bench_$(slug).json"
  cp "$OUT/bench_$(slug).json" "bench/results/$(slug).json" 2>/dev/null || true
}

phase_evalprof() {
  $PY bench/eval_profile.py --checkpoint "$CKPT" --data results/data --out "$OUT/eval_profile_$(slug).json" --repeats 3
}

phase_memory() {
  $PY build.py memory --profile paper --set memory.measure=true --set "memory.checkpoint=$CKPT" || return 1
  cp results/memory/memory.json "$OUT/memory.json"
  $PY -c "import json; m=json.load(open('results/memory/memory.json'))['measured']; json.dump(m, open('$OUT/memory_measured_$(slug).json','w'), indent=2)"
}

finetune_killed_after_first_checkpoint() {
  # Start the paper finetune, SIGKILL it (its own PID) once a complete checkpoint exists, as a crash would.
  $PY build.py finetune --profile paper "${PAPER_SET[@]}" "$@" &
  local pid=$! waited=0
  while kill -0 $pid 2>/dev/null; do
    if [ -n "$(find results/.work/finetune -path '*/ckpt-*/complete.json' 2>/dev/null)" ]; then
      sleep 2; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
      say "killed finetune (pid $pid) after its first checkpoint: $(find results/.work/finetune -maxdepth 2 -name 'ckpt-*' | tr '\n' ' ')"
      return 0
    fi
    sleep 1; waited=$((waited + 1))
    [ $waited -gt 400 ] && { kill -9 $pid; say "no checkpoint within 400 s"; return 1; }
  done
  say "finetune ended before it could be killed"; return 1
}

phase_paper() {
  rm -rf results/finetune results/eval results/.work/finetune results/.work/eval
  finetune_killed_after_first_checkpoint || return 1
  $PY build.py finetune --profile paper "${PAPER_SET[@]}" || return 1   # resumes from the checkpoint
  $PY build.py eval --profile paper "${PAPER_SET[@]}" || return 1
  $PY bench/paper_path_report.py --run "bf16 (paper profile, kill + resume)" --out "$OUT/paper_path_$(slug).md" \
      --log "$LOG" --cmd "build.py finetune|eval --profile paper ${PAPER_SET[*]}"
}

phase_fp16() {
  $PY build.py finetune --profile paper "${PAPER_SET[@]}" --set train.compute_dtype=fp16 --set train.max_steps=12 \
    || return 1
  $PY bench/paper_path_report.py --run "fp16 (T4 path: fp16 compute, fp32 LoRA weights, grad scaler)" \
      --out "$OUT/paper_path_$(slug).md" --append --no-eval \
      --cmd "build.py finetune --profile paper ${PAPER_SET[*]} --set train.compute_dtype=fp16 --set train.max_steps=12"
}

phase_estimate() {
  rm -rf results/finetune results/.work/finetune results/.work/doctor
  # doctor exits non-zero on this bench image (it lacks the report's packages: typst, nbformat, …), but its timed
  # steps and estimate are what this phase compares: go on when it wrote them.
  $PY build.py doctor --profile paper "${PAPER_SET[@]}" --steps 3
  [ -f results/.work/doctor/estimate.json ] || return 1
  $PY build.py finetune --profile paper "${PAPER_SET[@]}" --force finetune || return 1
  $PY bench/estimate_vs_run.py --out "$OUT/estimate_vs_run_$(slug).json"
}

status=0
BUDGET_S=${BUDGET_S:-100000}  # skip the phases still to come once this many seconds have passed
for p in "${PHASES[@]}"; do
  if [ $(( $(date +%s) - T0 )) -gt "$BUDGET_S" ]; then say "phase $p SKIPPED: over BUDGET_S=$BUDGET_S"; status=1; continue; fi
  say "phase $p"
  if ! "phase_$p"; then say "phase $p FAILED"; status=1; [ "$p" = setup ] && exit 1; fi
done
say "done (status $status)"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
exit $status
