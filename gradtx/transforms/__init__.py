"""Building blocks, one module per family (scaling, momentum, adaptive, decay, clipping, ...),
and the ``gradtx.transforms`` namespace with the names optax users reach for as
``optax.transforms.X``.

Every public name is gathered in :mod:`gradtx`; ``gradtx.transforms.clip`` is
``gradtx.clip``. The wrappers that optax files under ``transforms`` (``masked``, ``partition``,
``apply_if_finite``, ``MultiSteps``, ...) are defined in gradtx's own modules and reached here
by name, so this package imports nothing at load time.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AddNoiseState",
    "ApplyIfFiniteState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "EmaState",
    "MaskedNode",
    "MaskedState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "NonNegativeParamsState",
    "PartitionState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "TraceState",
    "ZeroNansState",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "apply_if_finite",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "conditionally_mask",
    "conditionally_transform",
    "ema",
    "flatten",
    "freeze",
    "keep_params_nonnegative",
    "masked",
    "measure_with_ema",
    "monitor",
    "named_chain",
    "partition",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "selective_transform",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
    "trace",
    "unitwise_clip",
    "unitwise_norm",
    "zero_nans",
]


def __getattr__(name: str) -> Any:
    # Resolved on first use: the family modules of this package are imported by gradtx's own
    # modules, so importing those from here at load time would be circular.
    if name in __all__:
        import gradtx

        return getattr(gradtx, name)
    raise AttributeError(f"module 'gradtx.transforms' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
