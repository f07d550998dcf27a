"""Command-line pieces shared by the entry scripts: flag groups, resume and run setup."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ground.errors import UserError
from utils import distributed
from utils.checkpoint import CHECKPOINT_NAME, load_checkpoint
from utils.run import (ARGS_FILE, acquire_run_lock, explicit_flags, load_args, make_run_dir, release_run_locks,
                       save_args, seed_everything, str2bool)

if TYPE_CHECKING:
    from utils.train import TrainConfig

# Flags that may change when a run is resumed; everything else comes from the run's args.yaml.
RUNTIME_FLAGS = ("epochs", "max_steps", "num_workers", "device", "eval_batch_size", "checkpoint_every",
                 "timeout", "skip_nonfinite", "max_skipped_steps", "max_skipped_fraction", "amp", "compile")
# Flags that say which run to continue rather than how to train.
RESUME_FLAGS = ("resume", "checkpoint_path", "auto_resume")
# Flags that hold for one invocation only: on resume they are taken from the command line, never
# from the run's args.yaml (an opt-in to unsafe loading must be typed again each time).
INVOCATION_FLAGS = ("trust_checkpoint",)
# Smallest sensible value of common integer flags (checked when a script has the flag), so that a
# 0 fails with one line before any work instead of deep inside a model or a division.
MIN_VALUES = {
    "batch_size": 1, "eval_batch_size": 1, "epochs": 1, "eval_every": 1, "num_workers": 0, "checkpoint_every": 0,
    "max_steps": 1, "train_samples": 1, "val_samples": 1, "image_size": 1, "num_slots": 1, "slot_size": 1,
    "num_iterations": 1, "mlp_hidden_size": 1, "lr_warmup_steps": 0, "seed": 0, "data_seed": 0,
}
# Seeds feed NumPy, whose seeds are 32-bit unsigned integers.
MAX_SEED = 2**32 - 1


def add_data_args(parser: argparse.ArgumentParser) -> None:
    from datasets import DATASETS, EVAL_PROTOCOLS

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="shapes", help=f"one of {', '.join(DATASETS)}")
    group.add_argument("--data_path", default=None, help="dataset root (optional for shapes: a folder of train.h5/val.h5; clevr*: clevr_with_masks.h5 or its folder; tetrominoes: tetrominoes.h5 or its folder; clevrtex*: the extracted PNG folder; clevr_images, shapes3d, ravens, sketchy: see docs/data.md)")
    group.add_argument("--image_size", type=int, default=224, help="model input side (train and val)")
    group.add_argument("--val_image_size", type=int, default=None, help="must equal --image_size (kept for SPOT commands)")
    group.add_argument("--val_mask_size", type=int, default=None, help="metric resolution (default: 320 COCO/VOC/MOVi as SPOT's code, whose MOVi commands pass 128; "
                            "128 CLEVR/ClevrTex, 35 Tetrominoes, image size for shapes)")
    group.add_argument("--train_samples", type=int, default=None, help="use only the first N training samples (shapes: number of scenes)")
    group.add_argument("--val_samples", type=int, default=None, help="use only the first N validation samples")
    group.add_argument("--num_workers", type=int, default=default_num_workers(),
                       help="DataLoader workers (default: the usable CPU cores, at most 16)")
    group.add_argument("--eval_protocol", default="spot", choices=EVAL_PROTOCOLS,
                       help="COCO/VOC ground truth: spot (crowd kept, VOC boundaries = background) or dinosaur "
                            "(no crowd, VOC boundaries ignored in prediction and GT); recorded in metrics")
    group.add_argument("--strict_data", action="store_true",
                       help="unreadable images are an error (default: skipped with a warning)")
    group.add_argument("--predefined_movi_json_paths", default=None,
                       help="reuse the MOVi training frames of a run (its train_movi_paths.json)")
    group.add_argument("--sbd_path", default=None,
                       help="SBD benchmark_RELEASE folder, to generate VOC's trainaug list when trainaug.txt is absent")
    # Options of the seed's other image datasets (docs/data.md); None = the dataset's (the seed's) default.
    group.add_argument("--max_n_objects", type=int, default=None,
                       help="clevr_images, ravens: keep scenes with at most N objects (the seed used num_slots - 1)")
    group.add_argument("--alternative_crop", type=str2bool, default=None,
                       help="ravens: True (default) = the lower 238x540 band and the front camera; False = centre 480x500")
    group.add_argument("--ravens_camera", default=None, choices=("front", "left", "right", "all"),
                       help="ravens: views to use (default: front with --alternative_crop, all without)")
    group.add_argument("--shapes3d_splits", default=None, choices=("seed", "shuffled"),
                       help="shapes3d: seed (default) = the seed's index ranges (val/test are other floor colours); "
                            "shuffled = same sizes from a fixed permutation")


def default_num_workers() -> int:
    """DataLoader workers by default: the CPU cores this process may use, at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def data_options(args: argparse.Namespace, run_dir: Path | None = None) -> dict[str, Any]:
    """Keyword arguments of ``build_dataset`` from the data flags (``add_data_args``).

    Pass ``run_dir`` for the training split, so a MOVi run records its frame list there.
    """
    return {
        "eval_protocol": getattr(args, "eval_protocol", "spot"),
        "strict": getattr(args, "strict_data", False),
        "predefined_movi_json_paths": getattr(args, "predefined_movi_json_paths", None),
        "sbd_path": getattr(args, "sbd_path", None),
        "run_dir": run_dir,
        **{key: getattr(args, flag, None) for key, flag in (
            ("max_objects", "max_n_objects"), ("alternative_crop", "alternative_crop"),
            ("ravens_camera", "ravens_camera"), ("shapes3d_splits", "shapes3d_splits"))},
    }


def build_datasets(args: argparse.Namespace, run_dir: Path | None) -> tuple[Any, Any]:
    """(training set, validation set) that the data flags ask for; layout errors surface here.

    Every training script calls this before building its model, so a wrong ``--data_path``
    stops the run before any weights are loaded. ``--data_seed`` picks the synthetic scenes and
    the MOVi frame sampling, so seed sweeps can share one validation set. With
    ``--cache_features DIR`` the training set is the checked feature cache (``utils.feature_cache``).
    """
    from datasets import build_dataset, limit

    seed = getattr(args, "data_seed", None)
    seed = args.seed if seed is None else seed
    common = (args.image_size, args.val_mask_size, args.data_path)
    if getattr(args, "cache_features", None):  # precomputed frozen features: no training image is read
        from utils.feature_cache import open_training_cache

        train_set = open_training_cache(args)
        if args.dataset == "movi" and run_dir is not None:
            # Record the cached frames in the run folder as image training does (its frame list is
            # only listed, no image is read): stage 2 reuses it via --predefined_movi_json_paths.
            build_dataset(args.dataset, "train", *common, args.train_samples, seed, **data_options(args, run_dir))
    else:
        train_set = build_dataset(args.dataset, "train", *common, args.train_samples, seed, **data_options(args, run_dir))
        train_set = limit(train_set, args.train_samples)
    val_set = build_dataset(args.dataset, "val", *common, args.val_samples, seed, **data_options(args))
    return train_set, limit(val_set, args.val_samples)


def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("encoder")
    group.add_argument("--which_encoder", "--encoder", dest="which_encoder", default="dino_vitb16",
                       help="timm ViT name or short name (dino_vitb16, dino-vitb-16, dinov2_vitb14, ...)")
    group.add_argument("--encoder_weights", "--pretrained_encoder_weights", dest="encoder_weights", default=None,
                       help="local weights file for the encoder (no download)")
    group.add_argument("--no_pretrained", action="store_true", help="random encoder weights (tests, offline quickstart)")
    group.add_argument("--finetune_blocks_after", type=int, default=100, help="encoder blocks with index >= this are trained")
    group.add_argument("--encoder_final_norm", type=str2bool, default=False, help="apply the ViT's final LayerNorm")


def add_train_args(parser: argparse.ArgumentParser, lr: float = 4e-4, lr_min: float = 4e-7) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order and sampling")
    group.add_argument("--data_seed", type=int, default=None,
                       help="seed of the data itself (shapes scenes); default: --seed. Fix it in a seed sweep "
                            "to evaluate every seed on the same scenes")
    group.add_argument("--batch_size", type=int, default=64,
                       help="training batch per process (per GPU); under torchrun the global batch is "
                            "batch_size x number of processes")
    group.add_argument("--eval_batch_size", type=int, default=32)
    group.add_argument("--epochs", type=int, default=100)
    group.add_argument("--lr_main", type=float, default=lr, help="peak learning rate")
    group.add_argument("--lr_min", type=float, default=lr_min, help="final learning rate of the cosine")
    group.add_argument("--lr_warmup_steps", type=int, default=10000, help="warm-up, rounded down to whole epochs as in SPOT")
    group.add_argument("--clip", type=float, default=0.3, help="gradient clip on the infinity norm (max |g|)")
    group.add_argument("--eval_viz_percent", type=float, default=0.2, help="save mask pictures every this fraction of the epochs")
    group.add_argument("--eval_every", type=int, default=1, help="evaluate every N epochs (and at the end)")
    group.add_argument("--log_path", default="logs", help="parent folder of the timestamped run folder")
    group.add_argument("--run_name", default=None, help="suffix of the run folder name")
    group.add_argument("--checkpoint_path", default=None, help="resume from this checkpoint file (its run folder continues)")
    group.add_argument("--resume", default=None, help="resume the run in this run folder")
    group.add_argument("--auto_resume", action="store_true",
                       help="resume the newest run folder in --log_path (named --run_name, if given); "
                            "start a new run when there is none (for preemptible jobs and sweeps)")
    add_stop_args(group)
    add_trust_arg(group)
    group.add_argument("--max_steps", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    group.add_argument("--checkpoint_every", type=int, default=0, help="also checkpoint every N steps (0: per epoch)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    add_speed_args(group)


def add_trust_arg(group: argparse._ActionsContainer, *aliases: str) -> None:
    """``--trust_checkpoint``: the only opt-in to fully unpickling a file the user names (see
    docs/checkpoints.md); for this invocation only, never taken from a resumed run's args.yaml."""
    group.add_argument("--trust_checkpoint", *aliases, dest="trust_checkpoint", action="store_true",
                       help="fully unpickle checkpoint/weights files that need it (this can run code stored in "
                            "them: only for files from a source you trust); by default such files are refused")


def add_speed_args(group: argparse._ActionsContainer) -> None:
    """--amp and --compile (and --no-amp, --no-compile), read by the shared loop from the run's flags; both may
    change on resume (they change the speed, not the model or the checkpoint)."""
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                       help="mixed precision on CUDA: bf16 autocast where the GPU supports it, else fp16 with "
                            "loss scaling (slot-attention softmax and norms stay fp32); no effect on the CPU")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile the training forward on CUDA (slow first steps; evaluation stays "
                            "eager; checkpoints load with or without it); no effect on the CPU, where it gained nothing reliable")


def add_stop_args(group: argparse._ActionsContainer) -> None:
    """--timeout, --skip_nonfinite and its bounds, which the shared loop reads from every training script's flags."""
    from utils.train import SKIP_FRACTION_MIN_STEPS

    group.add_argument("--timeout", default=None,
                       help="stop cleanly with a checkpoint after this long (seconds, H:MM:SS, 90m, 2h): "
                            "set it below the job's time limit")
    group.add_argument("--skip_nonfinite", action="store_true",
                       help="skip steps whose loss or gradient is NaN/inf (counted in the logs) instead of stopping")
    group.add_argument("--max_skipped_steps", type=int, default=10,
                       help="with --skip_nonfinite: stop with an error after this many skipped steps in a row "
                            "(the model has diverged); 0: no bound")
    group.add_argument("--max_skipped_fraction", type=float, default=0.05,
                       help="with --skip_nonfinite: stop with an error when more than this fraction of the steps "
                            f"so far were skipped (checked from step {SKIP_FRACTION_MIN_STEPS} on); 1: no bound")


def check_skip_bounds(args: argparse.Namespace) -> None:
    """Refuse --max_skipped_steps / --max_skipped_fraction values that mean nothing."""
    steps, fraction = getattr(args, "max_skipped_steps", 0), getattr(args, "max_skipped_fraction", 1.0)
    if steps is not None and steps < 0:
        raise UserError(f"--max_skipped_steps {steps} must be >= 0 (0: no bound)")
    if fraction is not None and not 0 <= fraction <= 1:
        raise UserError(f"--max_skipped_fraction {fraction} must be between 0 and 1 (1: no bound)")


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse report a bad flag as a :class:`UserError` (one line) instead of usage text."""

    def error(message: str) -> None:
        raise UserError(f"{message} (see {parser.prog} --help)")

    parser.error = error  # type: ignore[method-assign]


def check_ranges(args: argparse.Namespace) -> None:
    """Refuse out-of-range values of the common flags (see ``MIN_VALUES``), a non-positive or infinite LR,
    NaN anywhere, seeds outside NumPy's range and meaningless skip bounds."""
    for name, low in MIN_VALUES.items():
        value = getattr(args, name, None)
        if isinstance(value, int) and value < low:
            raise UserError(f"--{name} {value} must be at least {low}")
    lr = getattr(args, "lr_main", None)
    if isinstance(lr, float) and not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"--lr_main {lr} must be positive and finite")
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and math.isnan(value):
            raise UserError(f"--{name} nan is not a number; pass a value")
        if isinstance(value, float) and (name.startswith("lr") or name.endswith("_lr")) and not math.isfinite(value):
            raise UserError(f"--{name} {value} must be a finite learning rate")
        if name in ("seed", "data_seed") and isinstance(value, int) and value > MAX_SEED:
            raise UserError(f"--{name} {value} must be at most {MAX_SEED} (2**32 - 1)")
    check_skip_bounds(args)


def newest_run(log_path: str, run_name: str | None) -> str | None:
    """The newest run folder (``args.yaml`` present) in ``log_path``, named ``*_<run_name>`` if given."""
    root = Path(log_path)
    if not root.is_dir():
        return None
    runs = sorted(
        p for p in root.iterdir()
        if p.is_dir() and (p / ARGS_FILE).is_file() and (not run_name or p.name.endswith(f"_{run_name}"))
    )
    return str(runs[-1]) if runs else None


def _run_folder(path: str) -> Path:
    """The run folder named by a --resume/--checkpoint_path value (a folder or its checkpoint)."""
    resolved = Path(path).resolve()
    return resolved if resolved.is_dir() else resolved.parent


def check_record_matches_checkpoint(run_dir: Path, recorded: dict[str, Any], stored: dict[str, Any] | None,
                                    runtime: tuple[str, ...]) -> None:
    """Refuse a resume whose ``args.yaml`` differs from the flags stored in its checkpoint.

    The checkpoint's record is the authority (it is what the weights were trained with); a
    hand-edited ``args.yaml`` would otherwise change the model or recipe silently. Flags that may
    change on resume (``runtime``, and which run to resume) are exempt. Checkpoints without a
    record of their flags are not checked.
    """
    if not isinstance(stored, dict):
        return
    exempt = {*runtime, *RESUME_FLAGS}
    missing = object()
    differences = [
        f"{name}: {_shown(recorded.get(name, missing))} in {ARGS_FILE} vs {_shown(stored.get(name, missing))} "
        "in the checkpoint"
        for name in sorted(set(recorded) | set(stored))
        if name not in exempt and recorded.get(name, missing) != stored.get(name, missing)
    ]
    if differences:
        raise UserError(
            f"{run_dir / ARGS_FILE} differs from the flags stored in its checkpoint ({'; '.join(differences)}); "
            f"the checkpoint is the record of how the run was trained: undo the edit (to change a setting, start "
            f"a new run; only {', '.join('--' + f for f in runtime)} may change on resume, typed as flags)"
        )


def _shown(value: Any) -> str:
    return "(absent)" if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)


def _new_run(args: argparse.Namespace) -> Path:
    run_dir = make_run_dir(args.log_path, args.run_name)
    acquire_run_lock(run_dir)  # before the first file: the folder has one writer from the start
    save_args(run_dir, args)
    return run_dir


def _device_to_join(args: argparse.Namespace, typed: set[str]) -> str:
    """The ``--device`` the process group is joined with: on resume, the run's recorded one unless typed.

    The process group (gloo or NCCL, one GPU per rank) must be joined before the resumed flags are
    merged, so a resumed run's device is read here; every rank reads the same ``args.yaml``.
    """
    if "device" in typed:
        return args.device
    resume_from = args.resume or args.checkpoint_path
    if args.auto_resume and not resume_from:
        resume_from = newest_run(args.log_path, args.run_name)
    if not resume_from:
        return args.device
    run_dir = _run_folder(resume_from)
    if not (run_dir / ARGS_FILE).is_file():
        return args.device  # the resume itself reports the missing run folder
    return str(load_args(run_dir).get("device", args.device))


def parse_train_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, extra_runtime_flags: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, Path, dict | None]:
    """Parse flags; on resume, take the run's recorded flags (plus runtime overrides).

    ``extra_runtime_flags`` names a method's own flags that may also change on resume.

    Returns (args, run folder, checkpoint or None). A fresh run gets a new timestamped folder
    with ``args.yaml``; a resumed run continues in its own folder (from step 0 when it was
    stopped before its first checkpoint). Under torchrun this also joins the process group;
    rank 0 alone creates or chooses the folder and the other ranks receive its name.
    On resume, ``args.yaml`` is updated by ``Trainer.fit`` (from ``checkpoint_meta["args"]``).
    """
    release_run_locks()  # a run started earlier in this process (tests, notebooks) is over
    one_line_errors(parser)
    args = parser.parse_args(argv)
    check_ranges(args)
    typed = explicit_flags(parser, argv)
    distributed.init(_device_to_join(args, typed))
    if args.timeout is not None:
        distributed.parse_duration(str(args.timeout))  # refuse a malformed value before any work
    if args.resume and args.checkpoint_path and _run_folder(args.resume) != _run_folder(args.checkpoint_path):
        raise UserError("--resume and --checkpoint_path name different runs; pass only one of them")
    if args.auto_resume and (args.resume or args.checkpoint_path):
        raise UserError("--auto_resume chooses the run folder itself; drop --resume/--checkpoint_path, or drop --auto_resume")
    resume_from = args.resume or args.checkpoint_path
    if args.auto_resume:
        resume_from = distributed.run_on_main(lambda: newest_run(args.log_path, args.run_name))
    if not resume_from:
        if args.val_image_size not in (None, args.image_size):
            raise UserError("--val_image_size must equal --image_size: the decoder's token count is fixed by it")
        args.val_image_size = args.image_size
        if hasattr(args, "data_seed") and args.data_seed is None:
            args.data_seed = args.seed
        seed_everything(args.seed)
        if hasattr(args, "dataset"):  # a wrong data layout stops here, before the run folder exists
            from datasets import check_layout

            check_layout(args.dataset, getattr(args, "data_path", None))
        run_dir = distributed.run_on_main(lambda: _new_run(args))
        return args, Path(run_dir), None
    ckpt_file = Path(resume_from)
    if ckpt_file.is_dir():
        ckpt_file = ckpt_file / CHECKPOINT_NAME
    run_dir = ckpt_file.parent
    recorded = load_args(run_dir)
    # One writer per run folder (rank 0 holds the lock): a second process resuming it stops here.
    distributed.run_on_main(lambda: acquire_run_lock(run_dir))
    known = {action.dest for action in parser._actions}  # noqa: SLF001 - argparse has no public accessor
    foreign = sorted(set(recorded) - known)
    if foreign:
        raise UserError(
            f"{run_dir} was written by another training script (flags {', '.join('--' + f for f in foreign[:3])} "
            f"are unknown here); resume it with the script that trained it"
        )
    # Stopped before its first checkpoint: start again in the same folder.
    trust = bool(getattr(args, "trust_checkpoint", False))
    checkpoint = load_checkpoint(ckpt_file, trust=trust, training=True) \
        if ckpt_file.exists() or not Path(resume_from).is_dir() else None
    runtime = (*RUNTIME_FLAGS, *INVOCATION_FLAGS, *extra_runtime_flags)
    if checkpoint is not None:
        check_record_matches_checkpoint(run_dir, recorded, checkpoint.get("args"), runtime)
    for name in sorted(typed - set(runtime) - set(RESUME_FLAGS)):
        if recorded.get(name) != getattr(args, name):
            raise UserError(
                f"--{name} {getattr(args, name)} differs from the resumed run ({recorded.get(name)}); "
                f"only {', '.join('--' + f for f in runtime)} may change on resume"
            )
    merged: dict[str, Any] = dict(recorded)
    for name in runtime:
        if hasattr(args, name) and (name in typed or name not in merged):  # a script may lack a shared flag
            merged[name] = getattr(args, name)
    for name in vars(args):  # flags added to the script after the run was started
        merged.setdefault(name, getattr(args, name))
    if "max_steps" not in typed:
        merged["max_steps"] = None
    if "data_seed" in merged and merged["data_seed"] is None:
        merged["data_seed"] = merged["seed"]
    for name in INVOCATION_FLAGS:
        if hasattr(args, name):
            merged[name] = getattr(args, name)
    merged["resume"], merged["checkpoint_path"] = str(run_dir), str(ckpt_file)
    merged["auto_resume"] = args.auto_resume
    args = argparse.Namespace(**merged)
    if checkpoint is None:
        seed_everything(args.seed)
    # args.yaml is rewritten by Trainer.fit once the checkpoint has been checked against the
    # model: a mistaken resume leaves the run folder untouched.
    return args, run_dir, checkpoint


def encoder_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder record stored in checkpoints (enough to rebuild the same encoder)."""
    return {
        "name": args.which_encoder,
        "pretrained": not args.no_pretrained,
        "weights_path": str(Path(args.encoder_weights).resolve()) if args.encoder_weights else None,
        "finetune_blocks_after": args.finetune_blocks_after,
        "final_norm": args.encoder_final_norm,
    }


def train_config(args: argparse.Namespace, **overrides: Any) -> "TrainConfig":
    """The shared loop's settings from the common training flags (``add_train_args``).

    ``overrides`` (method-specific settings such as ``clip_norm_type``) win. ``--clip 0`` means
    no clipping; pictures are saved every ``--eval_viz_percent`` of the epochs.
    """
    from utils.train import TrainConfig

    epochs = overrides.pop("epochs", args.epochs)
    values: dict[str, Any] = dict(
        epochs=epochs,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
        clip=args.clip if args.clip > 0 else math.inf,
        seed=args.seed,
        eval_every=args.eval_every,
        viz_every=every_n_epochs(args.eval_viz_percent, epochs),
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
    )
    values.update(overrides)
    return TrainConfig(**values)


def every_n_epochs(fraction: float, epochs: int) -> int:
    """SPOT's ``int(epochs * fraction)`` visualisation period, never zero (SPOT crashes on < 5 epochs)."""
    return max(1, int(epochs * fraction))


def add_flag_aliases(parser: argparse.ArgumentParser, aliases: dict[str, str]) -> None:
    """Let other projects' flag names (``--root``) set this project's flags (``data_path``).

    ``aliases`` maps an alias (with dashes) to the ``dest`` of an existing flag; the alias then
    behaves exactly like that flag (same type, help, resume checks) and is shown in ``--help``.
    """
    by_dest = {action.dest: action for action in parser._actions}  # noqa: SLF001 - no public accessor
    for alias, dest in aliases.items():
        if alias in parser._option_string_actions:  # noqa: SLF001
            raise ValueError(f"flag {alias} already exists")
        action = by_dest[dest]
        action.option_strings.append(alias)
        parser._option_string_actions[alias] = action  # noqa: SLF001


class ResizeTo(argparse.Action):
    """``--resize_to H W`` (or one value) of other projects' commands: sets the square image size."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if not 1 <= len(values) <= 2 or len(set(values)) != 1:
            raise UserError(f"{option_string} {' '.join(map(str, values))}: only square images are supported; "
                            "pass one size, e.g. --resize_to 224 224")
        setattr(namespace, self.dest, values[0])
