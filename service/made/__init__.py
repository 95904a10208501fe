"""Pure PyTorch MADE: masks, network, output distributions, samplers and checkpoint I/O (no web code)."""

from .checkpoint import CheckpointError, load_model, read_card, save_model
from .config import MADEConfig
from .distributions import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Bernoulli,
    DiscretizedLogistic,
    OutputDistribution,
    check_temperature,
    distribution_from_spec,
)
from .merge import pool
from .network import MADE, MaskedLinear
from .sampling import (
    CachedPlan,
    SampleResult,
    build_plan,
    choose_components,
    draw_uniforms,
    final_params,
    pick_components,
    prefill,
    prefix_log_probs,
    sample_cached,
    sample_reference,
    seeded_uniforms,
)
from .verify import AutoregressiveViolation, verify_autoregressive

__all__ = [
    "MADE",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "AutoregressiveViolation",
    "Bernoulli",
    "CachedPlan",
    "CheckpointError",
    "DiscretizedLogistic",
    "MADEConfig",
    "MaskedLinear",
    "OutputDistribution",
    "SampleResult",
    "build_plan",
    "check_temperature",
    "choose_components",
    "distribution_from_spec",
    "draw_uniforms",
    "final_params",
    "load_model",
    "pick_components",
    "pool",
    "prefill",
    "prefix_log_probs",
    "read_card",
    "sample_cached",
    "sample_reference",
    "save_model",
    "seeded_uniforms",
    "verify_autoregressive",
]
