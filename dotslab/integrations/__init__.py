"""Scale-out integrations: dotslab's selection, prediction and replay on existing distributed engines.

The round logic they drive is :class:`dotslab.planner.RoundPlanner`, shared with dotslab's own trainer.

- :mod:`dotslab.integrations.trl`: Hugging Face TRL's GRPOTrainer (accelerate, DeepSpeed/FSDP, vLLM);
  needs the ``trl`` extra and is imported only when asked for.

Nothing here is imported by ``import dotslab``.
"""
