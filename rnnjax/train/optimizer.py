"""Optimizers for the training engine: one typed config, one schedule, one gradient transformation.

The contract, stated once:

    OptimizerConfig(...)            # frozen, hashable, validated at construction (before anything compiles)
    make_schedule(config)           # step -> learning rate, an `optax.Schedule`; jit-safe on a traced int step
    make_optimizer(config)          # optax.chain(clip_by_global_norm(max_grad_norm), sgd | adam | adamw)
    global_norm(grads)              # the pre-clip L2 norm over all leaves, which the engine logs every step

Clipping is always the first link of the chain, so every optimizer (momentum and Adam's moments included) sees
gradients of global norm at most `max_grad_norm` (Pascanu et al. 2013; Zaremba et al. 2014 clip at 5). The
schedule is passed to optax as the learning rate, so optax counts the steps: step `k` is the `k+1`-th update,
and the engine can call `make_schedule(config)(k)` to log the rate that update used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np
import optax

from rnnjax import _checks

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """What the training engine optimizes with. Every field has a default; invalid combinations raise here.

    Optimizers (all after `clip_by_global_norm(max_grad_norm)`, with `lr_t = make_schedule(self)(t)`):

        sgd:    u = -lr_t g                                   (momentum None)
                m = momentum m + g;  u = -lr_t m              (heavy ball; nesterov: u = -lr_t (g + momentum m))
        adam:   Kingma & Ba 2015, bias-corrected, `eps` outside the square root
        adamw:  u = -lr_t (adam(g) + weight_decay p)          (decoupled decay, Loshchilov & Hutter 2019; the
                                                               decay is scaled by lr_t and applies to every leaf)

    Schedules (step t counts updates from 0; E = steps_per_epoch):

        constant:    lr_t = learning_rate
        step_decay:  lr_t = learning_rate * decay_factor ** max(t // E + 1 - decay_start_epoch, 0)
                     (Zaremba et al. 2014: decay_start_epoch=4 keeps the rate for 4 epochs, then halves it)
        cosine:      lr_t = learning_rate * t / W                                        for t < W = warmup_steps
                     lr_t = f + (learning_rate - f) * (1 + cos(pi (t - W) / (T - W))) / 2  for W <= t <= T
                     lr_t = f                                                            for t > T
                     (Loshchilov & Hutter 2017; f = final_learning_rate, T = total_steps)

    >>> config = OptimizerConfig(optimizer="sgd", learning_rate=1.0, schedule="step_decay", steps_per_epoch=10,
    ...                          decay_start_epoch=4)
    >>> [float(make_schedule(config)(step)) for step in (0, 39, 40, 50)]
    [1.0, 1.0, 0.5, 0.25]
    >>> OptimizerConfig(optimizer="adam", momentum=0.9)
    Traceback (most recent call last):
    ...
    ValueError: momentum applies only to optimizer='sgd' (Adam keeps its own moments via b1), got optimizer='adam'
    """

    optimizer: str = "adam"  # "sgd" | "adam" | "adamw"
    learning_rate: float = 1e-3  # peak rate: the constant value, step decay's start, cosine's post-warmup value
    momentum: float | None = None  # sgd only; None = plain SGD, a value in [0, 1) = heavy-ball momentum
    nesterov: bool = False  # sgd with momentum only: Nesterov's look-ahead form (Sutskever et al. 2013)
    weight_decay: float = 0.0  # adamw only: decoupled decay coefficient (optax's own default is 1e-4)
    b1: float = 0.9  # adam/adamw first-moment decay (Kingma & Ba 2015)
    b2: float = 0.999  # adam/adamw second-moment decay (Kingma & Ba 2015)
    eps: float = 1e-8  # adam/adamw denominator term, added outside the square root (Kingma & Ba 2015)
    max_grad_norm: float = 5.0  # global-norm clip, always applied first (Zaremba et al. 2014 use 5)
    schedule: str = "constant"  # "constant" | "step_decay" | "cosine"
    steps_per_epoch: int | None = None  # step_decay: updates per epoch, so epoch = step // steps_per_epoch
    decay_start_epoch: int = 1  # step_decay: epochs at the full rate; each later epoch multiplies by decay_factor
    decay_factor: float = 0.5  # step_decay: factor per epoch once decay has started, in (0, 1]
    warmup_steps: int = 0  # cosine: linear warmup from 0 to learning_rate over this many steps
    total_steps: int | None = None  # cosine: step at which the rate reaches final_learning_rate (> warmup_steps)
    final_learning_rate: float = 0.0  # cosine: rate at and after total_steps, in [0, learning_rate]

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("sgd", "adam", "adamw")
    SCHEDULES: ClassVar[tuple[str, ...]] = ("constant", "step_decay", "cosine")

    def __post_init__(self):
        _checks.check_choice("optimizer", self.optimizer, self.OPTIMIZERS)
        _checks.check_choice("schedule", self.schedule, self.SCHEDULES)
        # Numbers are stored as plain Python floats/ints, so equal configs hash equal and serialize to JSON.
        floats = {
            "learning_rate": _checks.check_positive_float("learning_rate", self.learning_rate),
            "max_grad_norm": _checks.check_positive_float("max_grad_norm", self.max_grad_norm),
            "eps": _checks.check_positive_float("eps", self.eps),
            "b1": _checks.check_rate("b1", self.b1),
            "b2": _checks.check_rate("b2", self.b2),
            "weight_decay": _checks.check_finite_float("weight_decay", self.weight_decay),
            "decay_factor": _checks.check_finite_float("decay_factor", self.decay_factor),
            "final_learning_rate": _checks.check_finite_float("final_learning_rate", self.final_learning_rate),
        }
        ints = {
            "decay_start_epoch": _checks.check_positive_int("decay_start_epoch", self.decay_start_epoch),
            "warmup_steps": _checks.check_nonnegative_int("warmup_steps", self.warmup_steps),
        }
        for name in ("steps_per_epoch", "total_steps"):
            if getattr(self, name) is not None:
                ints[name] = _checks.check_positive_int(name, getattr(self, name))
        if self.momentum is not None:
            floats["momentum"] = _checks.check_rate("momentum", self.momentum)
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(self.nesterov).__name__} {self.nesterov!r}")
        for name, value in {**floats, **ints, "nesterov": bool(self.nesterov)}.items():
            object.__setattr__(self, name, value)
        self._check_optimizer_fields()
        self._check_schedule_fields()

    def _check_optimizer_fields(self):
        # A knob the chosen optimizer would silently ignore is a configuration error, not a no-op.
        if self.momentum is not None and self.optimizer != "sgd":
            raise ValueError(
                f"momentum applies only to optimizer='sgd' (Adam keeps its own moments via b1), "
                f"got optimizer={self.optimizer!r}"
            )
        if self.nesterov and self.momentum is None:
            raise ValueError(
                f"nesterov=True needs optimizer='sgd' with a momentum, got optimizer={self.optimizer!r}, momentum=None"
            )
        if self.weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.weight_decay != 0.0 and self.optimizer != "adamw":
            raise ValueError(
                f"weight_decay applies only to optimizer='adamw' (decoupled decay), got optimizer={self.optimizer!r} "
                f"with weight_decay={self.weight_decay}"
            )

    def _check_schedule_fields(self):
        # Ranges are checked whatever the schedule, so a typo fails even in a field the schedule does not read.
        if not 0.0 < self.decay_factor <= 1.0:
            raise ValueError(f"decay_factor must be in (0, 1], got {self.decay_factor}")
        if not 0.0 <= self.final_learning_rate <= self.learning_rate:
            raise ValueError(
                f"final_learning_rate must be in [0, learning_rate={self.learning_rate}], "
                f"got {self.final_learning_rate}"
            )
        if self.schedule == "step_decay" and self.steps_per_epoch is None:
            raise ValueError("schedule='step_decay' needs steps_per_epoch (an int >= 1), got None")
        if self.schedule == "cosine":
            if self.total_steps is None:
                raise ValueError("schedule='cosine' needs total_steps (an int > warmup_steps), got None")
            if self.total_steps <= self.warmup_steps:
                raise ValueError(
                    f"schedule='cosine' needs total_steps > warmup_steps={self.warmup_steps}, "
                    f"got total_steps={self.total_steps}"
                )
        else:
            # Warmup and a final rate are cosine-only; ignoring them silently would train a different run.
            for name in ("warmup_steps", "final_learning_rate"):
                if getattr(self, name) != 0:
                    raise ValueError(
                        f"{name} applies only to schedule='cosine', got schedule={self.schedule!r} with "
                        f"{name}={getattr(self, name)}"
                    )


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
    """The learning rate as a function of the update count `step` (0 for the first update); see `OptimizerConfig`
    for the three formulas. Works on Python ints and on traced int arrays inside `jit`, elementwise.

    `cosine` is `optax.warmup_cosine_decay_schedule(0, learning_rate, warmup_steps, total_steps,
    final_learning_rate)`, whose `decay_steps` counts the warmup: the cosine spans `total_steps - warmup_steps`.
    Note the first update of a warmup has rate 0.

    >>> schedule = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="cosine", warmup_steps=10,
    ...                                          total_steps=110))
    >>> [round(float(schedule(step)), 4) for step in (0, 5, 10, 60, 110, 500)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    if not isinstance(config, OptimizerConfig):
        raise TypeError(f"make_schedule expects an OptimizerConfig, got {type(config).__name__}")
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "step_decay":
        # Zaremba's epoch decay is optax's staircase exponential decay starting after decay_start_epoch - 1 epochs.
        return optax.exponential_decay(
            init_value=config.learning_rate,
            transition_steps=config.steps_per_epoch,
            decay_rate=config.decay_factor,
            transition_begin=(config.decay_start_epoch - 1) * config.steps_per_epoch,
            staircase=True,
        )
    # warmup_steps=0 is fine here: optax joins the (constant-0) warmup at boundary 0, so step 0 is already cosine.
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps,  # optax: the whole schedule's length, warmup included
        end_value=config.final_learning_rate,
    )


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """`optax.chain(optax.clip_by_global_norm(max_grad_norm), optimizer(make_schedule(config)))`.

    Clipping: `g <- g * min(1, max_grad_norm / ||g||)` with `||g||` the global L2 norm over all leaves (Pascanu et
    al. 2013), before any optimizer state sees `g`. The optimizer is `optax.sgd(schedule, momentum, nesterov)`,
    `optax.adam(schedule, b1, b2, eps)` or `optax.adamw(schedule, b1, b2, eps, weight_decay=weight_decay)`; the
    chain's state is `(clip_state, optimizer_state)`.

    >>> import jax.numpy as jnp
    >>> optimizer = make_optimizer(OptimizerConfig(optimizer="sgd", learning_rate=1.0, max_grad_norm=1.0))
    >>> params = {"w": jnp.zeros(2)}
    >>> updates, state = optimizer.update({"w": jnp.array([30.0, 40.0])}, optimizer.init(params), params)
    >>> [round(float(u), 4) for u in updates["w"]]  # norm 50 clipped to 1, then -learning_rate * g
    [-0.6, -0.8]
    """
    if not isinstance(config, OptimizerConfig):
        raise TypeError(f"make_optimizer expects an OptimizerConfig, got {type(config).__name__}")
    schedule = make_schedule(config)
    if config.optimizer == "sgd":
        optimizer = optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)
    elif config.optimizer == "adam":
        optimizer = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    else:
        # optax.adamw decays every leaf (mask=None), biases included, and scales the decay by the schedule.
        optimizer = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optimizer)


def global_norm(tree: Any) -> Array:
    """`sqrt(sum over leaves of sum(leaf ** 2))`, the global L2 norm `clip_by_global_norm` compares with its
    threshold; call it on the raw gradients to log the pre-clip norm. (`optax.global_norm` is deprecated in
    favour of `optax.tree.norm`, which this wraps.)

    >>> import jax.numpy as jnp
    >>> float(global_norm({"a": jnp.array([3.0]), "b": (jnp.array([[4.0, 12.0]]),)}))
    13.0
    """
    return optax.tree.norm(tree)
