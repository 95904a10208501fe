"""The inference engine: batches MADE's sequential sampling loop across concurrent requests.

Iteration-level scheduling (vLLM style): every active row, whatever its request, advances one
dimension per step with the cached sampler; requests join between chunks and rows leave as soon as
they finish. See :mod:`.scheduler` (model-free bookkeeping), :mod:`.runner_numba` / :mod:`.runner_torch`
(per-row model state, :mod:`.kernels` for the compiled step), :mod:`.loop` (the asyncio sampling loop),
:mod:`.logprob` (micro-batched likelihoods) and :mod:`.engine` (the public class). :mod:`.process` runs
the engines in a process of their own and :mod:`.client` reaches them from HTTP front-end processes
with the same interface (:mod:`.ipc`: the messages between them).
"""

from .engine import Engine
from .types import (
    EngineConfig,
    EngineError,
    EngineFull,
    EngineMetrics,
    EngineStats,
    EngineStopped,
    EngineTimeout,
    LogProbOutput,
    NullMetrics,
    SampleOutput,
)

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineFull",
    "EngineMetrics",
    "EngineStats",
    "EngineStopped",
    "EngineTimeout",
    "LogProbOutput",
    "NullMetrics",
    "SampleOutput",
]
