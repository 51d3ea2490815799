"""Scale-out integrations: dotslab's selection, prediction and replay on existing distributed engines.

- :mod:`dotslab.integrations.planner`: framework-free step planner (DOTS rounds, replay picks), the
  part that must be identical on every process.
- :mod:`dotslab.integrations.trl`: Hugging Face TRL's GRPOTrainer (accelerate, DeepSpeed/FSDP, vLLM);
  needs the ``trl`` extra and is imported only when asked for.

Nothing here is imported by ``import dotslab``.
"""
