#!/usr/bin/env bash
# DOTS + rollout replay at the paper's scale (arXiv 2506.05316 §5, dotslab.config.paper()):
# Qwen2.5-Math-1.5B on DeepScaleR, B=512 questions x G=8, K=256, mu=2, delta=0.5, C=512,
# 3072-token completions, lr 1e-6, 60 steps; one node of 8 x 80 GB GPUs, DeepSpeed ZeRO-2, vLLM colocated.
#
# Once, on a machine with the hub: pip install 'dotslab[trl,gpu]' deepspeed, then fetch the policy, the
# predictor's encoder (loaded with local_files_only) and the data into the HF cache:
#   huggingface-cli download Qwen/Qwen2.5-Math-1.5B
#   huggingface-cli download Qwen/Qwen2.5-Math-1.5B-Instruct
#   huggingface-cli download --repo-type dataset agentica-org/DeepScaleR-Preview-Dataset
#
# Usage: recipes/paper_dots_rr.sh [extra -p/-t arguments]     e.g. METHOD=grpo recipes/paper_dots_rr.sh -p seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
# the predictor's question embeddings, once, in one process (the launch's ranks then read the cache)
python recipes/train_trl.py -p preset paper -p method "${METHOD:-dots_rr}" --embed-only
exec accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/train_trl.py \
    -p preset paper -p method "${METHOD:-dots_rr}" \
    -t use_vllm true -t vllm_mode colocate -t vllm_gpu_memory_utilization 0.3 \
    -t gradient_checkpointing true "$@"
