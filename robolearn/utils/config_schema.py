"""The schema of the experiment configs: types, defaults and allowed ranges of every key.

Why OmegaConf structured configs (dataclasses in Hydra's ``ConfigStore``) and not pydantic: Hydra
composes and type-checks them natively. Each group file names its schema first in its defaults list
(Hydra's schema-extension pattern: ``configs/train/default.yaml`` starts with
``- /schema/train@_here_``), so the YAML files inherit the defaults below and hold only what differs,
an override of the wrong type (``train.lr=abc``) fails while Hydra composes, and the result is still
the ``DictConfig`` every caller reads. Pydantic would validate only after Hydra had composed plain
dicts, so the YAML files could not inherit its defaults and there would be two sources of them.
Ranges are not types: each field carries its allowed values as :class:`Bounds` in its metadata, and
cross-field rules (the horizon rules) are functions registered with :func:`rule`;
:func:`check_config` applies both to a composed config and also refuses keys that no schema knows
(Hydra adds ``+key=value`` overrides even into a structured config).

One source of defaults: the values below. ``configs/**.yaml`` hold only what differs from them;
the policy classes' constructor defaults are the same numbers (``tests/test_config.py`` checks that
they agree: the model code does not import the config layer). Units are in the field comments.

Schemas in the ``ConfigStore`` (:data:`SCHEMAS`, :func:`register_schemas`), name -> class (used by):

* ``experiment`` -> :class:`ExperimentConfig` (``configs/config.yaml``)
* ``schema/task/mujoco`` -> :class:`MujocoTaskConfig` (``task/pusht.yaml``)
* ``schema/task/insertion`` -> :class:`InsertionTaskConfig` (``task/insertion.yaml``)
* ``schema/task/robosuite`` -> :class:`RobosuiteTaskConfig` (``task/lift.yaml``, ``can``, ``square``)
* ``schema/task/robosuite_variant`` -> :class:`RobosuiteVariantTaskConfig` (``task/lift_image.yaml``)
* ``schema/task/gym_pusht`` -> :class:`GymPushTTaskConfig` (``task/gym_pusht.yaml``, ``gym_pusht_image``)
* ``schema/task/so101_pick`` -> :class:`So101PickTaskConfig` (``task/so101_pick.yaml``, ``so101_pick_image``)
* ``schema/policy/diffusion`` -> :class:`DiffusionPolicyConfig` (``policy/diffusion.yaml``, ``diffusion_large``)
* ``schema/policy/diffusion_image`` -> :class:`DiffusionImagePolicyConfig` (``policy/diffusion_image.yaml``)
* ``schema/policy/act`` -> :class:`ACTPolicyConfig` (``policy/act.yaml``, ``act_small``)
* ``schema/train`` -> :class:`TrainConfig` (``train/default.yaml``, ``long``)
* ``schema/distill`` -> :class:`DistillConfig` (``distill/default.yaml``)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

# ------------------------------------------------------------------ bounds of one field


@dataclass(frozen=True)
class Bounds:
    """The values a field allows beyond its type (``None``: no limit of that kind).

    Attributes:
        ge, gt, le, lt: numeric limits (``>=``, ``>``, ``<=``, ``<``).
        choices: the only allowed values.
        pattern: a regular expression a string must match fully; ``pattern_doc`` says it in words.
        nonempty: a string or list that must not be empty.
        length: exact list length.
        unique: list items must be distinct.
        items: the bounds of each list item.
        why: the reason, said after the allowed values.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    pattern: str | None = None
    pattern_doc: str | None = None
    nonempty: bool = False
    length: int | None = None
    unique: bool = False
    items: Bounds | None = None
    why: str | None = None

    def ok(self, value: Any) -> bool:
        """Whether ``value`` (already of the field's type, not ``None``) is within these bounds."""
        if isinstance(value, (list, tuple, ListConfig)):
            items = list(value)
            if (self.nonempty and not items) or (self.length is not None and len(items) != self.length):
                return False
            if self.unique and len(set(map(str, items))) != len(items):
                return False
            return self.items is None or all(v is not None and self.items.ok(v) for v in items)
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, str):
            return not (self.nonempty and not value) and (self.pattern is None or bool(re.fullmatch(self.pattern, value)))
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def range_text(self) -> str:
        """The numeric limits in words: ``">= 1"``, ``"in [0, 1)"``, or ``""``."""
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        for op, limit in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if limit is not None:
                return f"{op} {_num(limit)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "booleans")}


def describe(tp: Any, bounds: Bounds | None) -> str:
    """The allowed values of a field of type ``tp`` with ``bounds`` in words, e.g.
    ``"an integer >= 1"``, ``"null or an integer >= 1"``, ``"a non-empty list of distinct strings"``."""
    b = bounds or Bounds()
    if b.why:
        return f"{describe(tp, dataclasses.replace(b, why=None))} ({b.why})"
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return "null or " + describe(inner, bounds)
    if typing.get_origin(tp) in (list, List):
        item_tp = args[0] if args else Any
        ib = b.items or Bounds()
        noun = _NOUNS.get(item_tp, ("a value", "values"))[1]
        if ib.nonempty and item_tp is str:
            noun = "non-empty strings"
        extra = ib.range_text()
        size = f"{b.length} " if b.length is not None else ""
        return (f"a {'non-empty ' if b.nonempty else ''}list of {size}{'distinct ' if b.unique else ''}{noun}"
                f"{' ' + extra if extra else ''}")
    if b.choices is not None:
        return str(b.choices[0]) if len(b.choices) == 1 else "one of " + ", ".join(str(c) for c in b.choices)
    noun = _NOUNS.get(tp, ("a value", "values"))[0]
    if tp is str and b.nonempty:
        noun = "a non-empty string"
    if b.pattern_doc:
        return f"{noun}: {b.pattern_doc}"
    extra = b.range_text()
    return f"{noun} {extra}" if extra else noun


def setting(default: Any = MISSING, **bounds: Any) -> Any:
    """A dataclass field with ``default`` (``MISSING``: the group file must set it) and
    :class:`Bounds` ``bounds`` (keyword arguments of :class:`Bounds`) in its metadata."""
    meta = {"bounds": Bounds(**bounds)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _pos_int(default: Any = MISSING) -> Any:
    return setting(default, ge=1)


# ------------------------------------------------------------------ the schemas


@dataclass
class TaskConfig:
    """A task (``configs/task/*.yaml``): the environment, its rate and what the policy observes."""

    name: str = setting(nonempty=True)                 # task name (an environment of robolearn.envs.TASKS)
    type: str = setting(choices=("mujoco", "robosuite", "gym_pusht"))
    control_freq: float = setting(gt=0)                # Hz
    max_episode_steps: int = _pos_int()                # control steps before truncation
    obs_keys: List[str] = setting(nonempty=True, unique=True, items=Bounds(nonempty=True))  # store keys the policy sees
    action_key: str = setting("action", nonempty=True)
    cameras: List[str] = setting([], unique=True, items=Bounds(nonempty=True))  # camera images added to observations as <camera>_image
    image_size: List[int] = setting([84, 84], length=2, items=Bounds(ge=1))  # camera image height, width (pixels)
    image_codec: str = setting("webp", choices=("webp", "png", "jpeg", "jpeg2k"))  # store codec of image keys: webp or png (lossless), jpeg or jpeg2k
    render_camera: str = setting(nonempty=True)        # video camera of `robolearn eval`


_TASK_TYPE = "the type of this task file's schema; another task is another file: task=<file>"


@dataclass
class MujocoTaskConfig(TaskConfig):
    """A task of our own plain-MuJoCo environments (``sim/*.xml``)."""

    type: str = setting("mujoco", choices=("mujoco",), why=_TASK_TYPE)


@dataclass
class InsertionTaskConfig(MujocoTaskConfig):
    """The insertion task: success must hold for ``hold_steps``."""

    hold_steps: int = _pos_int()                       # control steps the peg must stay inserted


@dataclass
class So101PickTaskConfig(MujocoTaskConfig):
    """Pick and place on the SO-101 arm (:class:`robolearn.envs.so101_pick.So101PickEnv`); ``env``
    names the environment and scripted expert when the file's name differs (``so101_pick_image``)."""

    env: str = setting("so101_pick", choices=("so101_pick",))
    robot: str = setting("so101", choices=("so101",))  # the arm (stored with demonstrations)


@dataclass
class GymPushTTaskConfig(TaskConfig):
    """gym-pusht's PushT (:class:`robolearn.envs.gym_pusht.GymPushTEnv`); ``env`` names the
    environment and scripted expert when the file's name differs (``gym_pusht_image``)."""

    type: str = setting("gym_pusht", choices=("gym_pusht",), why=_TASK_TYPE)
    env: str = setting("gym_pusht", choices=("gym_pusht",))


@dataclass
class RobosuiteTaskConfig(TaskConfig):
    """A robosuite task (through :class:`robolearn.envs.robosuite_env.RobosuiteEnv`)."""

    type: str = setting("robosuite", choices=("robosuite",), why=_TASK_TYPE)
    robot: str = setting(nonempty=True)                # robosuite robot model, e.g. Panda


@dataclass
class RobosuiteVariantTaskConfig(RobosuiteTaskConfig):
    """Another view of a robosuite task: ``env`` names the environment and scripted expert."""

    env: str = setting(nonempty=True)


@dataclass
class PolicyConfig:
    """What every policy has: the chunk it predicts (``configs/policy/*.yaml``).

    Rules (:func:`_chunk_rules`): ``n_obs_steps <= horizon`` and
    ``1 <= n_action_steps <= horizon - n_obs_steps + 1`` (the chunk from the current step on).
    """

    name: str = setting(nonempty=True)                 # policy type (robolearn.policies.POLICIES)
    horizon: int = _pos_int()                          # predicted chunk length T (control steps)
    n_obs_steps: int = _pos_int()                      # observation history To (control steps)
    n_action_steps: int = _pos_int()                   # actions executed per chunk Ta


_OTHER_POLICY = "the policy of this group file; another policy is another file: policy=<file>"


@dataclass
class DiffusionPolicyConfig(PolicyConfig):
    """Diffusion Policy, CNN variant (:class:`robolearn.policies.diffusion.policy.DiffusionPolicy`).

    Rules (:func:`_diffusion_rules`): ``horizon`` divisible by ``2 ** (len(down_dims) - 1)``, every
    ``down_dims`` entry divisible by ``n_groups``, odd ``kernel_size``, even ``step_embed_dim``,
    ``num_inference_steps <= num_train_timesteps``.
    """

    name: str = setting("diffusion", choices=("diffusion",), why=_OTHER_POLICY)
    horizon: int = _pos_int(16)
    n_obs_steps: int = _pos_int(2)
    n_action_steps: int = _pos_int(8)
    down_dims: List[int] = setting([64, 128, 256], nonempty=True, items=Bounds(ge=1))  # U-Net channels per level
    kernel_size: int = _pos_int(5)                     # temporal convolution kernel (control steps)
    n_groups: int = _pos_int(8)                        # GroupNorm groups
    step_embed_dim: int = _pos_int(128)                # diffusion-step embedding size
    num_train_timesteps: int = _pos_int(100)           # DDPM training chain length
    num_inference_steps: int = _pos_int(10)            # DDIM steps at inference
    beta_schedule: str = setting("squaredcos_cap_v2", choices=("linear", "scaled_linear", "squaredcos_cap_v2"))


@dataclass
class VisionConfig:
    """Image encoder settings (:data:`robolearn.policies.vision.VISION_DEFAULTS` are these defaults).

    Rule (:func:`_vision_rules`): every ResNet stage width ``c = width * (1, 2, 4, 8)`` divisible by
    its GroupNorm groups (``c // 16``, at least 1); a ``crop`` no larger than ``task.image_size`` of a task with
    cameras.
    """

    width: int = _pos_int(64)                          # ResNet-18 stage widths width x (1, 2, 4, 8) (64 = ResNet-18)
    crop: Optional[List[int]] = setting(None, length=2, items=Bounds(ge=1))  # [h, w] pixels: random crop in training, centre crop in evaluation
    pooling: str = setting("spatial_softmax", choices=("spatial_softmax", "avg"))
    num_keypoints: int = _pos_int(32)                  # spatial-softmax keypoints
    feature_dim: int = _pos_int(64)                    # features per camera
    share: bool = False                                # one encoder for every camera (else one per camera)


@dataclass
class DiffusionImagePolicyConfig(DiffusionPolicyConfig):
    """Diffusion Policy with camera observations: :class:`DiffusionPolicyConfig` plus ``vision``."""

    vision: VisionConfig = field(default_factory=VisionConfig)


@dataclass
class ACTPolicyConfig(PolicyConfig):
    """ACT (:class:`robolearn.policies.act.policy.ACTPolicy`).

    Rules: ``n_obs_steps`` is 1, ``n_action_steps <= horizon`` (:func:`_chunk_rules`), ``dim_model``
    divisible by ``n_heads`` (:func:`_act_rules`).
    """

    name: str = setting("act", choices=("act",), why=_OTHER_POLICY)
    horizon: int = _pos_int(20)                        # chunk size k
    n_obs_steps: int = setting(1, choices=(1,), why="ACT conditions on the current observation")
    n_action_steps: int = _pos_int(10)                 # executed per query without temporal ensembling
    dim_model: int = _pos_int(256)                     # transformer width
    n_heads: int = _pos_int(8)
    dim_feedforward: int = _pos_int(1024)
    n_encoder_layers: int = _pos_int(4)
    n_decoder_layers: int = _pos_int(4)
    n_vae_encoder_layers: int = _pos_int(4)
    latent_dim: int = _pos_int(32)                     # CVAE latent size
    kl_weight: float = setting(10.0, ge=0)
    dropout: float = setting(0.1, ge=0, lt=1)
    temporal_ensemble_k: Optional[float] = setting(None, ge=0)  # 0.01 in the paper: query every step and average overlapping predictions


@dataclass
class TrainConfig:
    """The training schedule (``configs/train/*.yaml``), sized for the quickstart on a 2-core CPU
    (about 9 minutes). ``lr`` is 10x Diffusion Policy's 1e-4: their schedule runs for hours on a GPU;
    on a 3000-step CPU schedule 1e-4 leaves the policy undertrained (Lift: 38 % success vs 90 % with
    1e-3, same data)."""

    steps: int = _pos_int(3000)                        # optimizer steps
    batch_size: int = _pos_int(128)                    # windows per step
    lr: float = setting(1.0e-3, gt=0)                  # peak learning rate (AdamW), after linear warm-up, cosine decay
    weight_decay: float = setting(1.0e-6, ge=0)
    warmup_steps: int = setting(200, ge=0)             # linear warm-up (optimizer steps)
    grad_clip: float = setting(1.0, gt=0)              # gradient-norm clip
    ema_power: float = setting(0.75, gt=0)             # EMA warm-up power (Diffusion Policy's value)
    ema_max_decay: float = setting(0.9999, ge=0, le=1)
    val_every: int = _pos_int(500)                     # steps between validation losses
    ckpt_every: int = _pos_int(500)                    # steps between checkpoints
    log_every: int = _pos_int(20)                      # steps between logged losses
    num_threads: Optional[int] = setting(None, ge=1)   # torch threads (null = torch's default)
    # auto: CUDA where available, else CPU; under torchrun each process takes cuda:<LOCAL_RANK>
    device: str = setting("auto", pattern=r"auto|cpu|mps|cuda(:\d+)?", pattern_doc="auto, cpu, cuda, cuda:<index> or mps")
    bf16: bool = False                                 # bfloat16 autocast of the loss forward (changes the numbers; robolearn/train/fast_step.py)
    compile: bool = False                              # torch.compile the loss forward+backward (same numbers; eager fallback; one process only)
    num_workers: int = setting(0, ge=0)                # DataLoader processes gathering batches ahead (0: in the training process)


@dataclass
class DataConfig:
    """The episode store to train on."""

    path: str = setting("data/${task.name}_demos.zarr", nonempty=True)  # Zarr episode store
    val_ratio: float = setting(0.05, ge=0, lt=1)       # fraction of episodes held out for validation loss
    max_episodes: Optional[int] = setting(None, ge=1)  # use only the first N episodes (null = all)


@dataclass
class CollectConfig:
    """Scripted demonstrations (the quickstart's collection)."""

    episodes: int = _pos_int(100)                      # demonstrations the quickstart collects
    seed_start: int = setting(0, ge=0)                 # demo seeds are seed_start, seed_start+1, ...


@dataclass
class EvalConfig:
    """Held-out evaluation."""

    episodes: int = _pos_int(50)
    seed_start: int = setting(100000, ge=0)            # far from the demo seeds: held-out initial states
    n_envs: int = _pos_int(2)                          # parallel env processes
    videos: int = setting(2, ge=0)                     # first episodes recorded as MP4 in the report


@dataclass
class ExperimentConfig:
    """One experiment: one task x one policy x one training schedule, plus data, collect, eval."""

    task: TaskConfig = MISSING
    policy: PolicyConfig = MISSING
    train: TrainConfig = MISSING
    seed: int = setting(0, ge=0)                       # seeds torch, numpy and the train/val split
    run_dir: str = setting("runs/${task.name}_${policy.name}", nonempty=True)  # checkpoints, tensorboard logs, metrics
    data: DataConfig = field(default_factory=DataConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class ResidualConfig:
    """The residual actor-critic of residual RL (ResiP, Ankile et al. 2024)."""

    hidden: List[int] = setting([256, 256], nonempty=True, items=Bounds(ge=1))  # MLP layers of actor and critic (ReLU)
    scale: float = setting(0.1, gt=0)                  # residual scale in the [-1, 1]-normalized action space
    dim_scale: Optional[List[float]] = setting(None, nonempty=True, items=Bounds(gt=0))  # per action dimension factors on scale (null: all 1)
    fine_scale: Optional[float] = setting(None, gt=0)  # also feed symlog(obs / fine_scale) (raw units, e.g. 0.01 m; null: off)
    log_std_init: float = setting(-1.0, ge=-10, le=2)  # log std of the residual's Gaussian
    learn_log_std: bool = False                        # ResiP keeps it fixed


@dataclass
class PPOConfig:
    """PPO hyperparameters (ResiP's, Ankile et al. 2024; epochs and minibatches sized for 2 cores)."""

    gamma: float = setting(0.999, gt=0, le=1)          # discount per control step
    gae_lambda: float = setting(0.95, ge=0, le=1)
    clip: float = setting(0.2, gt=0)                   # the ratio's clip range
    target_kl: Optional[float] = setting(0.1, gt=0)    # stop the update before a minibatch whose approximate KL exceeds 1.5 x this (null: never)
    actor_lr: float = setting(3.0e-4, gt=0)
    critic_lr: float = setting(5.0e-3, gt=0)
    max_grad_norm: float = setting(1.0, gt=0)
    update_epochs: int = _pos_int(4)                   # passes over each rollout
    n_minibatches: int = _pos_int(4)                   # minibatches per pass
    normalize_advantages: bool = True                  # per minibatch


@dataclass
class RLConfig:
    """A residual-RL run (``configs/rl/*.yaml``, ``robolearn rl BASE rl.<key>=value``), sized for a 2-core CPU."""

    n_envs: int = _pos_int(16)                         # parallel environments
    vector_env: str = setting("sync", choices=("sync", "async"))  # sync: all in this process; async: one process per env
    collect_threads: int = _pos_int(2)                 # groups of envs collected at once, one thread each (overlaps one group's base forward with another's env steps)
    steps_per_rollout: int = _pos_int(200)             # steps per env per PPO iteration
    total_env_steps: int = _pos_int(2000000)           # stop after this many env steps (all sessions)
    max_wall_s: Optional[float] = setting(None, gt=0)  # or after this many seconds of RL wall time (all sessions)
    base_inference_steps: Optional[int] = setting(4, ge=1)  # DDIM steps of a diffusion base while acting (null: the base's)
    base_noise: str = setting("zero", choices=("zero", "random"))  # a diffusion base's initial noise: zero (deterministic chunks) or random
    use_ema: bool = True                               # start from the base's EMA weights
    num_threads: Optional[int] = setting(1, ge=1)      # torch threads (null: torch's default)
    seed: int = setting(0, ge=0)                       # residual init and noise, base noise, minibatch order
    seed_start: int = setting(10000000, ge=0)          # RL episode seeds: seed_start on (disjoint from demos and eval: checked)
    eval_every: int = setting(10, ge=0)                # PPO iterations between validation evaluations (0: never)
    eval_episodes: int = _pos_int(32)                  # validation episodes (deterministic residual)
    eval_seed_start: int = setting(5000000, ge=0)      # validation seeds (disjoint from the others: checked)
    final_eval_episodes: int = _pos_int(50)            # held-out episodes of the base vs base + residual comparison
    ckpt_every: int = _pos_int(1)                      # PPO iterations between checkpoints
    reward: str = setting("sparse", choices=("sparse", "shaped"))  # sparse: success only; shaped: + potential-based shaping (rl/rewards.py)
    align_chunks: bool = True                          # finished envs wait for the next chunk boundary (one base query per chunk for all)
    residual: ResidualConfig = field(default_factory=ResidualConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)


@dataclass
class RLFileConfig:
    """What composing ``configs/rl/<name>.yaml`` gives: its settings under ``rl``."""

    rl: RLConfig = field(default_factory=RLConfig)


@dataclass
class DistillConfig:
    """A consistency-distillation run (``configs/distill/*.yaml``, ``robolearn distill TEACHER distill.<key>=value``):
    consistency distillation of a diffusion teacher (Song et al. 2023, Alg. 2, in the DDPM/DDIM form of
    Luo et al. 2023; :mod:`robolearn.train.distill`), sized for a 2-core CPU; or direct distillation of
    the teacher's DDIM sampler (``method: direct``, Luhman & Luhman 2021).

    Rules (:func:`_distill_rules`): ``num_inference_steps <= teacher_steps`` when ``teacher_steps`` is
    set; ``num_inference_steps == 1`` with ``method: direct``.
    """

    # consistency: consistency distillation (Song et al. 2023); direct: regression of the student's one
    # evaluation on the teacher's full DDIM sample from the same noise (Luhman & Luhman 2021)
    method: str = setting("consistency", choices=("consistency", "direct"))
    steps: int = _pos_int(3000)                        # optimizer steps
    batch_size: int = _pos_int(128)                    # windows per step
    lr: float = setting(1.0e-3, gt=0)                  # peak learning rate (AdamW), after linear warm-up, cosine decay (the teacher's training lr)
    weight_decay: float = setting(1.0e-6, ge=0)
    warmup_steps: int = setting(100, ge=0)             # linear warm-up (optimizer steps)
    grad_clip: float = setting(1.0, gt=0)              # gradient-norm clip
    target_ema: float = setting(0.95, ge=0, lt=1)      # EMA rate of the target network (Song et al. 2023: 0.95)
    ema_power: float = setting(0.75, gt=0)             # warm-up power of the evaluation EMA (as training)
    ema_max_decay: float = setting(0.9999, ge=0, le=1)
    teacher_steps: Optional[int] = setting(None, ge=1)  # DDIM steps of the teacher chain distilled (null: the teacher's num_inference_steps)
    num_inference_steps: int = setting(1, ge=1)        # student evaluations per chunk (1-3 intended)
    sigma_data: float = setting(0.5, gt=0)             # boundary scalings (LCM's values)
    timestep_scaling: float = setting(10.0, gt=0)
    use_ema: bool = True                               # the teacher's EMA weights (as robolearn eval uses them)
    data_path: Optional[str] = setting(None, nonempty=True)  # Zarr store of observations (null: the teacher's data.path)
    val_every: int = _pos_int(250)                     # steps between validation gaps (student vs teacher samples)
    val_windows: int = _pos_int(256)                   # held-out windows of the validation gap
    ckpt_every: int = _pos_int(250)                    # steps between checkpoints
    log_every: int = _pos_int(20)                      # steps between logged losses
    num_threads: Optional[int] = setting(None, ge=1)   # torch threads (null = torch's default)
    device: str = setting("cpu", pattern=r"auto|cpu|mps|cuda(:\d+)?", pattern_doc="auto, cpu, cuda, cuda:<index> or mps")
    seed: int = setting(0, ge=0)                       # student noise, batch order, validation noise


@dataclass
class DistillFileConfig:
    """What composing ``configs/distill/<name>.yaml`` gives: its settings under ``distill``."""

    distill: DistillConfig = field(default_factory=DistillConfig)


#: ConfigStore entries: (group or None, name) -> schema.
SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "experiment"): ExperimentConfig,
    ("schema/task", "mujoco"): MujocoTaskConfig,
    ("schema/task", "insertion"): InsertionTaskConfig,
    ("schema/task", "so101_pick"): So101PickTaskConfig,
    ("schema/task", "robosuite"): RobosuiteTaskConfig,
    ("schema/task", "robosuite_variant"): RobosuiteVariantTaskConfig,
    ("schema/task", "gym_pusht"): GymPushTTaskConfig,
    ("schema/policy", "diffusion"): DiffusionPolicyConfig,
    ("schema/policy", "diffusion_image"): DiffusionImagePolicyConfig,
    ("schema/policy", "act"): ACTPolicyConfig,
    ("schema", "train"): TrainConfig,
    ("schema", "rl"): RLConfig,
    ("schema", "distill"): DistillConfig,
}


def register_schemas() -> None:
    """Store every schema of :data:`SCHEMAS` in Hydra's ``ConfigStore`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)


# ------------------------------------------------------------------ cross-field rules

#: schema class -> rules; a rule yields ``(key relative to the node, value, what is allowed)``.
_RULES: dict[type, list[Callable[[DictConfig, DictConfig], Iterator[tuple[str, Any, str]]]]] = {}


def rule(cls: type):
    """Register the decorated ``fn(node, root) -> iterator of (key, value, allowed)`` for schema
    ``cls`` and its subclasses (``node``: the config section of that schema; ``root``: the whole
    config)."""

    def deco(fn):
        _RULES.setdefault(cls, []).append(fn)
        return fn

    return deco


@rule(PolicyConfig)
def _chunk_rules(p: DictConfig, root: DictConfig) -> Iterator[tuple[str, Any, str]]:
    if p.n_obs_steps > p.horizon:
        yield "n_obs_steps", p.n_obs_steps, f"an integer in [1, {p.horizon}] (at most horizon {p.horizon})"
    else:
        most = p.horizon - p.n_obs_steps + 1
        if p.n_action_steps > most:
            yield ("n_action_steps", p.n_action_steps,
                   f"an integer in [1, {most}] (horizon {p.horizon} - n_obs_steps {p.n_obs_steps} + 1: "
                   f"the chunk from the current step on)")


@rule(DiffusionPolicyConfig)
def _diffusion_rules(p: DictConfig, root: DictConfig) -> Iterator[tuple[str, Any, str]]:
    factor = 2 ** (len(p.down_dims) - 1)
    if p.horizon % factor:
        yield ("horizon", p.horizon, f"a multiple of {factor} (the U-Net halves the time axis "
                                     f"len(down_dims) - 1 = {len(p.down_dims) - 1} times)")
    if any(d % p.n_groups for d in p.down_dims):
        yield "down_dims", list(p.down_dims), f"multiples of n_groups {p.n_groups} (GroupNorm groups)"
    if p.kernel_size % 2 == 0:
        yield "kernel_size", p.kernel_size, "an odd integer >= 1 (a same-length convolution)"
    if p.step_embed_dim % 2:
        yield "step_embed_dim", p.step_embed_dim, "an even integer >= 2 (sine and cosine halves)"
    if p.num_inference_steps > p.num_train_timesteps:
        yield ("num_inference_steps", p.num_inference_steps,
               f"an integer in [1, {p.num_train_timesteps}] (at most num_train_timesteps)")


@rule(VisionConfig)
def _vision_rules(v: DictConfig, root: DictConfig) -> Iterator[tuple[str, Any, str]]:
    stages = [v.width * m for m in (1, 2, 4, 8)]
    if any(c % max(1, c // 16) for c in stages):
        yield ("width", v.width, f"a width whose stage widths {stages} are each divisible by their GroupNorm "
                                 f"groups (c // 16), e.g. 16, 32 or 64")
    task = root.get("task")
    if v.crop is not None and task is not None and task.get("cameras"):
        size = list(task.image_size)
        if len(size) == 2 and (v.crop[0] > size[0] or v.crop[1] > size[1]):
            yield "crop", list(v.crop), f"null or a crop no larger than task.image_size {size}"


@rule(ACTPolicyConfig)
def _act_rules(p: DictConfig, root: DictConfig) -> Iterator[tuple[str, Any, str]]:
    if p.dim_model % p.n_heads:
        yield "dim_model", p.dim_model, f"a multiple of n_heads {p.n_heads}"


@rule(DistillConfig)
def _distill_rules(d: DictConfig, root: DictConfig) -> Iterator[tuple[str, Any, str]]:
    if d.method == "direct" and d.num_inference_steps != 1:
        yield ("num_inference_steps", d.num_inference_steps,
               "1 with distill.method=direct (it distils the one-evaluation map only)")
    if d.teacher_steps is not None and d.num_inference_steps > d.teacher_steps:
        yield ("num_inference_steps", d.num_inference_steps,
               f"an integer in [1, {d.teacher_steps}] (at most teacher_steps, the chain it was distilled on)")


# ------------------------------------------------------------------ checking a composed config


def show(value: Any) -> str:
    """A value as it is written in an override: ``-5``, ``abc``, ``[]``, ``[a, b]``, ``null``."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def _fields(cls: type) -> dict[str, tuple[Any, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls)}


def is_schema(tp: Any) -> bool:
    """Whether ``tp`` is one of this module's schema dataclasses."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp.__module__ == __name__


def check_config(cfg: DictConfig, schema: type | None = None) -> list[str]:
    """Every problem of a composed experiment config (or of a config of another root ``schema``, e.g.
    :class:`RLFileConfig`), one line each (empty: the config is valid).

    Checks each key against its schema (the dataclass its section was built from): keys the schema
    does not have (added with ``+``), missing values, values outside their :class:`Bounds`, then
    the cross-field rules of :func:`rule`. Types were checked when Hydra composed the config.

    Args:
        cfg: a config composed by :func:`robolearn.utils.config.load_config` (resolved).

    Returns:
        Lines ``"<key>=<value>: must be <allowed>"`` or ``"<key>: unknown key ..."``.
    """
    problems: list[str] = []

    def walk(node: DictConfig, cls: type, path: str) -> None:
        fields = _fields(cls)
        before = len(problems)
        problems.extend(unknown_key(f"{path}{key}", cls) for key in node.keys() if key not in fields)
        for name, (tp, f) in fields.items():
            key = f"{path}{name}"
            bounds = f.metadata.get("bounds")
            if OmegaConf.is_missing(node, name):
                problems.append(f"{key}: missing value (must be {describe(tp, bounds)})")
                continue
            value = node[name]
            if isinstance(value, DictConfig):  # a section: typed by its schema (or a subclass of it)
                walk(value, OmegaConf.get_type(value), key + ".")
            elif value is not None and bounds is not None and not bounds.ok(value):
                problems.append(f"{key}={show(value)}: must be {describe(tp, bounds)}")
        if len(problems) == before:  # the rules assume every value of the section is in range
            for base in cls.__mro__:
                for fn in _RULES.get(base, []):
                    for k, v, allowed in fn(node, cfg):
                        problems.append(f"{path}{k}={show(v)}: must be {allowed}")

    walk(cfg, schema or ExperimentConfig, "")
    return problems


def unknown_key(key: str, cls: type) -> str:
    """The line for dotted ``key``, which schema ``cls`` (of its section) does not have: its keys and
    the nearest one."""
    fields = list(_fields(cls))
    section, _, name = key.rpartition(".")
    near = difflib.get_close_matches(name, fields, n=1)
    hint = f"; did you mean {section + '.' if section else ''}{near[0]}?" if near else ""
    return f"{key}: unknown key (the {cls.__name__} schema has {', '.join(fields)}){hint}"


def field_schema(key: str, root: type | None = None) -> tuple[Any, Bounds | None] | None:
    """Type and bounds of the field at dotted ``key`` (list indices ``[i]`` name the item's field) of
    schema ``root`` (default :class:`ExperimentConfig`), searched in every schema that section may
    have; ``None`` if no schema has it."""
    tp: Any = root or ExperimentConfig
    found = None
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if not is_schema(tp):
            return None
        kinds = [tp, *(s for s in SCHEMAS.values() if issubclass(s, tp))]  # e.g. every task schema for task.*
        found = next((fields[part] for c in kinds if part in (fields := _fields(c))), None)
        if found is None:
            return None
        tp = found[0]
    return found[0], found[1].metadata.get("bounds")
