"""The training loop: patient-level k-fold cross-validation, then a final model, driven by ``accelerate``.

Recipe (PNEUMOLLM-SPEC "Training recipe"): AdamW betas (0.9, 0.95), lr 3e-4, weight decay 0.02
(none on biases and 1-D norm weights), batch 16 x 2 accumulation steps, per-step linear warm-up
from 5e-7 over 2 epochs then cosine decay to 1e-7, BCE-with-logits on the one-hot
[sick, healthy] pair, frozen backbones in half precision on a GPU, trainable tensors in float32,
model selection by the best validation AVG.

Robustness: after every epoch one checkpoint file (trainable tensors, optimizer, scheduler step,
RNG states, best-so-far tensors, history) is written atomically in the work folder; each
finished fold is stored too. A rerun with the same work folder continues where it stopped and,
on CPU, ends with exactly the tensors of an uninterrupted run. ``cancel()`` is polled every
batch (the CLI wires SIGINT/SIGTERM to it); cancelling keeps the last epoch's checkpoint. A
non-finite loss stops the run at once (:class:`TrainingDivergedError`): the checkpoint of the last
finished epoch, which never saw the bad step, is kept.

Privacy: patient IDs are written (split record, per-fold results, checkpoints) only as keyed
hashes (:mod:`training.privacy`); the work folder holds no path and no raw patient ID.

Several processes: ``torchrun --nproc_per_node N -m training ...`` or ``accelerate launch --multi_gpu
--num_processes N -m training ...`` (gloo on CPU, NCCL on GPUs) run the same code with data
parallelism; only the main process writes files and prints progress. (``accelerate launch --cpu
--num_processes N`` starts ONE process: accelerate's simple launcher ignores the count with --cpu.)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pneumoview.errors import CancelledError, ConfigError, PneumoViewError
from training.checkpoint import (
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    restore_rng,
    rng_tensors,
    save_checkpoint,
    sub_dict,
    with_prefix,
)
from training.crops import remove_stale_temp_files
from training.datacheck import PreparedDataset
from training.metrics import BinaryMetrics, evaluate, summarise
from training.privacy import PatientHasher, load_patient_key, patient_hasher
from training.splits import Fold, folds_from_record, folds_record, patient_kfold

if TYPE_CHECKING:
    from accelerate import Accelerator

    from pneumoview.inference.config import PreprocessingConfig
    from pneumoview.inference.model import PneumoLLM

EventFn = Callable[[dict[str, Any]], None]
CancelFn = Callable[[], bool]


class TrainingDivergedError(PneumoViewError):
    """The loss became non-finite (NaN/Inf): the run stops; the last finished epoch's checkpoint is kept."""


PRESETS: dict[str, dict[str, Any]] = {
    # A look at whether anything learns: one fold of the 5-fold split, few epochs, no final model.
    "quick": {"epochs": 3, "folds": 5, "run_folds": 1, "final_model": False, "warmup_epochs": 0.5},
    # The paper: 100 epochs, 5 folds, then a final model on all data.
    "paper": {"epochs": 100, "folds": 5, "run_folds": None, "final_model": True, "warmup_epochs": 2.0},
}


@dataclass
class TrainConfig:
    """Everything that decides the numbers of a run (recorded in the manifest and the model card)."""

    epochs: int = 100
    folds: int = 5
    run_folds: int | None = None  # train only the first N folds (quick check); None = all
    final_model: bool = True  # after CV, train on all data for the median best epoch count
    batch_size: int = 16
    grad_accum: int = 2
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.02
    warmup_epochs: float = 2.0
    warmup_lr: float = 5e-7
    min_lr: float = 1e-7
    seed: int = 0
    split_seed: int | None = None  # None = seed
    mixed_precision: str = "auto"  # pneumoview.precision.Precision: auto | bf16 | fp16 | fp32 (fp32: none)
    base_dtype: str = "auto"  # pneumoview.precision.Precision: auto | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto | cpu | cuda
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        """Every value checked here, before any data is read or any model loads."""
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be a whole number of at least 1, not {value!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or not 2 <= self.folds <= 100:
            raise ConfigError(f"folds must be a whole number from 2 to 100, not {self.folds!r}")
        if self.run_folds is not None and not 1 <= self.run_folds <= self.folds:
            raise ConfigError(f"run_folds must be between 1 and {self.folds}")
        for name in ("lr", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be a finite number >= 0, not {value!r}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), not {self.betas!r}")
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 0 <= value < 2**32):
                raise ConfigError(f"{name.replace('_', ' ')} must be a whole number from 0 to 2**32 - 1, not {value!r}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> TrainConfig:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r} (choose {', '.join(PRESETS)})")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed


# ---------------------------------------------------------------------------------------------
# Schedule, parameter groups, loss


def lr_at(step: int, *, total_steps: int, warmup_steps: int, lr: float, warmup_lr: float, min_lr: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters: decay on >=2-D weights, none on biases and 1-D (norm) weights."""
    from pneumoview.inference.model import TRAINABLE_MODULES

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for prefix in TRAINABLE_MODULES:
        module = getattr(model, prefix, None)
        if module is None:
            continue
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def bce_one_hot_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy with logits on the one-hot [sick, healthy] pair (paper, eq. 5)."""
    target = F.one_hot(labels.long(), num_classes=logits.shape[-1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def enable_gradient_checkpointing(model: PneumoLLM) -> None:
    """Recompute activations of the frozen towers in the backward pass (less memory, ~30 % slower)."""
    decoder: Any = model.decoder  # a transformers LLaMA model; its method names changed across versions
    if hasattr(decoder, "activation_checkpointing_enable"):  # transformers >= 5
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(decoder, "gradient_checkpointing_enable"):
        decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    visual: Any = model.visual  # an open_clip VisionTransformer
    if hasattr(visual, "set_grad_checkpointing"):
        visual.set_grad_checkpointing(True)


# ---------------------------------------------------------------------------------------------
# Data


class CropDataset(torch.utils.data.Dataset):
    """Cached crops -> normalised tensors [3, S, S] (the inference normalisation), label."""

    def __init__(self, data: PreparedDataset, indices: Sequence[int], preprocessing: PreprocessingConfig) -> None:
        self.data = data
        self.indices = list(indices)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from pneumoview.inference.transforms import preprocess_tensor

        j = self.indices[i]
        crop = self.data.images[j].load_crop()
        return preprocess_tensor(crop, self.preprocessing)[0], self.data.samples[j].label


def epoch_order(indices: Sequence[int], *, seed: int, fold: int, epoch: int) -> list[int]:
    """Shuffled order of one epoch, a pure function of (seed, fold, epoch): resumable without state."""
    rng = np.random.default_rng([seed, fold + 1000, epoch])
    return [indices[k] for k in rng.permutation(len(indices))]


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class FoldResult:
    fold: int  # -1 = final model on all data
    best_epoch: int  # 1-based
    metrics: dict[str, Any] | None  # BinaryMetrics.to_dict() of the best epoch (None for the final model)
    history: list[dict[str, Any]]
    val_scores: list[float] = field(default_factory=list)  # softmax p(pneumoconiosis) at the best epoch
    val_labels: list[int] = field(default_factory=list)
    val_patients: list[str] = field(default_factory=list)  # keyed hashes (training.privacy), never raw IDs
    seconds: float = 0.0


@dataclass
class RunResult:
    config: TrainConfig
    folds: list[FoldResult]
    summary: dict[str, dict[str, float]]
    split: dict[str, Any]
    trainable: dict[str, Tensor]  # the tensors that go into the bundle
    trainable_source: str  # "final" or "fold-0"
    final: FoldResult | None
    comparison: dict[str, Any] | None
    device: str
    mixed_precision: str
    base_dtype: str
    seconds: float
    epochs_per_fold_seconds: list[float]
    world_size: int = 1  # data-parallel processes


@dataclass
class _FoldState:
    """Where a fold's training stands: optimizer steps, next epoch, history, best epoch so far."""

    step: int = 0
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"avg": -math.inf, "epoch": 0, "metrics": None, "scores": [], "tensors": None}
    )


# ---------------------------------------------------------------------------------------------
# Trainer


class Trainer:
    """Runs the folds and the final model for one :class:`TrainConfig` on one data set.

    ``model`` is a PneumoLLM (frozen backbones already loaded); its trainable tensors at the
    start are the initial state of every fold (stored in the work folder, so a resume uses it too).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: PreparedDataset,
        model: PneumoLLM,
        work_dir: str | Path,
        *,
        run_identity: dict[str, Any] | None = None,
        on_event: EventFn | None = None,
        cancel: CancelFn | None = None,
        stop_after_epochs: int | None = None,
        compare_trainable: dict[str, Tensor] | None = None,
        split_record: dict[str, Any] | None = None,
        accelerator: Accelerator | None = None,
        patient_hasher: PatientHasher | None = None,
    ) -> None:
        from accelerate import Accelerator

        self.config = config
        self.data = data
        self.work_dir = Path(work_dir)
        self.on_event = on_event or (lambda event: None)
        self.cancel = cancel or (lambda: False)
        self.stop_after_epochs = stop_after_epochs
        self.compare_trainable = compare_trainable
        self.split_record = split_record  # e.g. another bundle's manifest["training"]["split"]: same folds
        self._epochs_this_process = 0
        self._epoch_seconds: list[float] = []
        self._patient_hasher = patient_hasher  # None: this installation's key, loaded when first needed

        cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        mp = {"fp32": "no", "float32": "no"}.get(config.mixed_precision, config.mixed_precision)  # accelerate's word
        if mp == "auto":
            mp = "bf16" if (not cpu and torch.cuda.is_bf16_supported()) else "no"
        self.accelerator = accelerator or Accelerator(
            cpu=cpu, mixed_precision=mp, gradient_accumulation_steps=config.grad_accum
        )
        self.mixed_precision = mp
        self.is_main = self.accelerator.is_main_process

        from pneumoview.inference.model import trainable_state_dict

        self.raw_model = model
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.preprocessing = model.config.preprocessing
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            remove_stale_temp_files(self.work_dir, older_than=0.0)  # left by a killed run
        self.identity = self._check_identity(run_identity or {})
        init_path = self.work_dir / "init.safetensors"
        if init_path.exists():
            init, _ = load_checkpoint(init_path)
            self.init_state = sub_dict(init, "model")
        else:
            self.init_state = trainable_state_dict(model)
            if self.is_main:
                save_checkpoint(init_path, with_prefix(self.init_state, "model"), {"kind": "init"})
        self.optimizer = torch.optim.AdamW(
            param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)

    # --- identity: a resume must be the same run --------------------------------------------
    def _check_identity(self, identity: dict[str, Any]) -> dict[str, Any]:
        path = self.work_dir / "run.json"
        wanted = {"config": self.config.to_dict(), **identity}
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored != json.loads(json.dumps(wanted)):
                changed = sorted(
                    k for k in set(stored) | set(wanted) if stored.get(k) != json.loads(json.dumps(wanted)).get(k)
                )
                raise ConfigError(
                    f"the work folder holds another run (differs in: {', '.join(changed)}); "
                    "resume with the same data and settings, or start afresh (--restart)",
                    path=self.work_dir,
                )
        elif self.is_main:
            from pneumoview.atomic import atomic_write_text

            atomic_write_text(path, json.dumps(wanted, indent=2, sort_keys=True))
        return wanted

    def hash_patient(self, patient_id: str) -> str:
        """Keyed hash of a patient ID (what the split record, fold results and model card hold)."""
        if self._patient_hasher is None:
            self._patient_hasher = _default_hasher()
        return self._patient_hasher(patient_id)

    def _emit(self, event: dict[str, Any]) -> None:
        if self.is_main:
            self.on_event(event)

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        from pneumoview.inference.model import load_trainable_state_dict

        cfg = self.config
        start = time.perf_counter()
        folds = self._folds()
        split = folds_record(
            folds, seed=int((self.split_record or {}).get("seed", cfg.effective_split_seed)), hasher=self.hash_patient
        )
        n_run = cfg.run_folds or cfg.folds
        self._total_epochs = n_run * cfg.epochs + (cfg.epochs if cfg.final_model else 0)
        self._done_epochs = 0
        self._emit(
            {
                "event": "start",
                "folds": n_run,
                "of_folds": cfg.folds,
                "epochs": cfg.epochs,
                "final_model": cfg.final_model,
                "n_images": len(self.data),
                "device": str(self.accelerator.device),
                "mixed_precision": self.mixed_precision,
                "total_epochs": self._total_epochs,
                "world_size": self.accelerator.num_processes,
            }
        )
        results: list[FoldResult] = []
        for fold in folds[:n_run]:
            results.append(self._run_fold(fold.index, fold.train, fold.val, cfg.epochs))
        final: FoldResult | None = None
        if cfg.final_model:
            best_epochs = sorted(r.best_epoch for r in results)
            final_epochs = max(1, int(np.median(best_epochs) + 0.5)) if best_epochs else cfg.epochs
            self._total_epochs = self._total_epochs - cfg.epochs + final_epochs
            final = self._run_fold(-1, tuple(range(len(self.data))), (), final_epochs)
            trainable = self._load_result_tensors(-1)
            source = "final"
        else:
            trainable = self._load_result_tensors(results[0].fold)
            source = f"fold-{results[0].fold}"
        comparison = None
        if self.compare_trainable is not None:
            comparison = self._compare(folds[:n_run])
            load_trainable_state_dict(self.raw_model, trainable)
        per_fold = [BinaryMetrics(**r.metrics) for r in results if r.metrics is not None]
        summary = summarise(per_fold)
        self._emit({"event": "cv_done", "summary": summary})
        return RunResult(
            config=cfg,
            folds=results,
            summary=summary,
            split=split,
            trainable=trainable,
            trainable_source=source,
            final=final,
            comparison=comparison,
            device=str(self.accelerator.device),
            mixed_precision=self.mixed_precision,
            base_dtype=str(self.raw_model.base_dtype).replace("torch.", ""),
            seconds=time.perf_counter() - start,
            epochs_per_fold_seconds=list(self._epoch_seconds),
            world_size=self.accelerator.num_processes,
        )

    def train_on_all(self, epochs: int) -> FoldResult:
        """Train on every sample for ``epochs`` (no validation): the final model, or a benchmark."""
        self._total_epochs = getattr(self, "_total_epochs", 0) + epochs
        self._done_epochs = getattr(self, "_done_epochs", 0)
        return self._run_fold(-1, tuple(range(len(self.data))), (), epochs)

    @property
    def epoch_seconds(self) -> list[float]:
        """Wall time of each epoch run by this process (training + validation + checkpoint)."""
        return list(self._epoch_seconds)

    def _folds(self) -> list[Fold]:
        record_path = self.work_dir / "split.json"
        if record_path.exists():
            return folds_from_record(
                json.loads(record_path.read_text(encoding="utf-8")), self.data.patients, self.hash_patient
            )
        if self.split_record is not None:
            folds = folds_from_record(self.split_record, self.data.patients, self.hash_patient)
            if len(folds) != self.config.folds:
                raise ConfigError(f"the given split has {len(folds)} folds, not {self.config.folds}")
            seed = int(self.split_record.get("seed", self.config.effective_split_seed))
        else:
            seed = self.config.effective_split_seed
            folds = patient_kfold(self.data.patients, self.data.labels, self.config.folds, seed=seed)
        if self.is_main:
            from pneumoview.atomic import atomic_write_text

            atomic_write_text(
                record_path, json.dumps(folds_record(folds, seed=seed, hasher=self.hash_patient), indent=1)
            )
        return folds

    def _result_path(self, fold: int) -> Path:
        return self.work_dir / ("final.safetensors" if fold < 0 else f"fold{fold}.safetensors")

    def _load_result_tensors(self, fold: int) -> dict[str, Tensor]:
        tensors, _ = load_checkpoint(self._result_path(fold))
        return sub_dict(tensors, "best")

    def _run_fold(self, fold: int, train_idx: Sequence[int], val_idx: Sequence[int], epochs: int) -> FoldResult:
        cfg = self.config
        result_path = self._result_path(fold)
        if result_path.exists():  # finished before a resume
            _, saved = load_checkpoint(result_path)
            self._done_epochs += epochs
            self._emit({"event": "fold_skipped", "fold": fold, "reason": "already finished (resumed run)"})
            return FoldResult(**saved["result"])

        batches_per_epoch = math.ceil(len(train_idx) / (cfg.batch_size * self.accelerator.num_processes))
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
        schedule = {"total_steps": steps_per_epoch * epochs, "warmup_steps": round(cfg.warmup_epochs * steps_per_epoch)}
        inner = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        state = self._restore_fold(fold, inner)
        self._done_epochs += state.start_epoch

        fold_start = time.perf_counter()
        for epoch in range(state.start_epoch, epochs):
            t0 = time.perf_counter()
            losses, lr = self._train_epoch(fold, epoch, train_idx, state, schedule, inner)
            train_loss = float(np.mean(losses)) if losses else math.nan
            self._stop_if_weights_diverged(fold=fold, epoch=epoch + 1, batch=len(losses))
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
            self._validate_epoch(epoch, val_idx, record, state)
            state.history.append(record)
            self._save_epoch_checkpoint(
                self.work_dir / "checkpoint.safetensors", fold, epoch + 1, state.step, state.history, state.best, inner
            )
            self._epoch_done(fold, epochs, record, time.perf_counter() - t0)

        result = FoldResult(
            fold=fold,
            best_epoch=state.best["epoch"],
            metrics=state.best["metrics"],
            history=state.history,
            val_scores=[float(s) for s in state.best["scores"]],
            val_labels=[self.data.samples[i].label for i in val_idx],
            val_patients=sorted({self.hash_patient(self.data.samples[i].patient_id) for i in val_idx}),
            seconds=time.perf_counter() - fold_start,
        )
        if self.is_main:
            save_checkpoint(result_path, with_prefix(state.best["tensors"], "best"), {"result": asdict(result)})
        self.accelerator.wait_for_everyone()
        self._emit({"event": "fold_done", "fold": fold, "best_epoch": result.best_epoch, "metrics": result.metrics})
        return result

    def _restore_fold(self, fold: int, inner: torch.optim.Optimizer) -> _FoldState:
        """The fold's state from the epoch checkpoint when it belongs to this fold (a resume), else a fresh start."""
        from pneumoview.inference.model import load_trainable_state_dict

        ckpt_path = self.work_dir / "checkpoint.safetensors"
        tensors, saved = load_checkpoint(ckpt_path) if ckpt_path.exists() else ({}, {})
        if saved.get("fold") == fold:
            load_trainable_state_dict(self.raw_model, sub_dict(tensors, "model"))
            optimizer_from_tensors(inner, tensors, saved["param_groups"])
            restore_rng(tensors)
            self._emit({"event": "resumed", "fold": fold, "epoch": saved["epoch"]})
            return _FoldState(
                step=saved["step"],
                start_epoch=saved["epoch"],
                history=saved["history"],
                best={**saved["best"], "tensors": sub_dict(tensors, "best") or None},
            )
        load_trainable_state_dict(self.raw_model, self.init_state)
        inner.state.clear()
        torch.manual_seed(self.config.seed * 1000 + fold + 1)
        return _FoldState()

    def _train_epoch(
        self,
        fold: int,
        epoch: int,
        train_idx: Sequence[int],
        state: _FoldState,
        schedule: dict[str, int],
        inner: torch.optim.Optimizer,
    ) -> tuple[list[float], float]:
        """One pass over the fold's training part; returns the batch losses and the last learning rate."""
        cfg = self.config
        order = epoch_order(list(train_idx), seed=cfg.seed, fold=fold, epoch=epoch)
        loader = torch.utils.data.DataLoader(
            CropDataset(self.data, order, self.preprocessing), batch_size=cfg.batch_size, shuffle=False
        )
        loader = self.accelerator.prepare_data_loader(loader)
        self.model.train()
        losses: list[float] = []
        lr = cfg.lr
        for b, (pixels, labels) in enumerate(loader):
            if self.cancel():
                raise CancelledError(
                    f"training cancelled in fold {fold}, epoch {epoch + 1}; "
                    "the checkpoint of the last finished epoch is kept"
                )
            # ``step`` counts optimizer steps, so every micro-batch of one step sees the same lr.
            lr = lr_at(
                state.step,
                total_steps=schedule["total_steps"],
                warmup_steps=schedule["warmup_steps"],
                lr=cfg.lr,
                warmup_lr=cfg.warmup_lr,
                min_lr=cfg.min_lr,
            )
            for g in inner.param_groups:
                g["lr"] = lr
            with self.accelerator.accumulate(self.model):
                with self.accelerator.autocast():
                    logits = self.model(pixels)
                loss = bce_one_hot_loss(logits, labels)
                self._stop_if_diverged(loss, fold=fold, epoch=epoch + 1, batch=b + 1)
                self.accelerator.backward(loss)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.accelerator.sync_gradients:
                    state.step += 1
            losses.append(float(loss.detach()))
            self._emit(
                {
                    "event": "step",
                    "fold": fold,
                    "epoch": epoch + 1,
                    "batch": b + 1,
                    "batches": len(loader),
                    "loss": losses[-1],
                    "lr": lr,
                }
            )
        return losses, lr

    def _validate_epoch(self, epoch: int, val_idx: Sequence[int], record: dict[str, Any], state: _FoldState) -> None:
        """Validation metrics into ``record``; the best epoch (by AVG) into ``state.best``."""
        from pneumoview.inference.model import trainable_state_dict

        if not len(val_idx):  # final model: the last epoch is the model
            state.best = {
                "avg": math.nan,
                "epoch": epoch + 1,
                "metrics": None,
                "scores": [],
                "tensors": trainable_state_dict(self.raw_model),
            }
            return
        probs, labels_np, val_loss = self._predict(val_idx)
        m = evaluate(probs, labels_np)
        record.update({"val_loss": val_loss, **m.to_dict()})
        if m.avg > state.best["avg"] or state.best["tensors"] is None:  # ties keep the earlier epoch
            state.best = {
                "avg": m.avg,
                "epoch": epoch + 1,
                "metrics": m.to_dict(),
                "scores": probs[:, 0].tolist(),
                "tensors": trainable_state_dict(self.raw_model),
            }

    def _epoch_done(self, fold: int, epochs: int, record: dict[str, Any], seconds: float) -> None:
        """Timing, ETA and the ``epoch`` event; honours ``stop_after_epochs``."""
        self._epoch_seconds.append(seconds)
        self._done_epochs += 1
        self._epochs_this_process += 1
        remaining = self._total_epochs - self._done_epochs
        eta = float(np.mean(self._epoch_seconds[-5:])) * remaining
        self._emit(
            {
                "event": "epoch",
                "fold": fold,
                "epoch": record["epoch"],
                "epochs": epochs,
                "seconds": seconds,
                "eta_s": eta,
                "done_epochs": self._done_epochs,
                "total_epochs": self._total_epochs,
                **{k: v for k, v in record.items() if k != "epoch"},
            }
        )
        if self.stop_after_epochs is not None and self._epochs_this_process >= self.stop_after_epochs:
            raise CancelledError(f"stopped after {self._epochs_this_process} epoch(s) as asked; rerun to resume")

    def _stop_if_diverged(self, loss: Tensor, *, fold: int, epoch: int, batch: int) -> None:
        """Raise :class:`TrainingDivergedError` when the loss of any process is NaN or infinite.

        The flag is summed over the processes so that all of them stop at the same step.
        """
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if float(bad.sum()) > 0:
            where = "final model" if fold < 0 else f"fold {fold + 1}"
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch} step {batch}; last good checkpoint kept "
                f"({where}: the loss is {float(loss.detach()):g}; try a lower --lr)"
            )

    def _stop_if_weights_diverged(self, *, fold: int, epoch: int, batch: int) -> None:
        """The last update of an epoch can make the weights non-finite although its loss was finite:
        refuse to checkpoint such weights."""
        from pneumoview.inference.model import trainable_state_dict

        if all(bool(torch.isfinite(t).all()) for t in trainable_state_dict(self.raw_model).values()):
            return
        where = "final model" if fold < 0 else f"fold {fold + 1}"
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch} step {batch}; last good checkpoint kept "
            f"({where}: the weights became non-finite; try a lower --lr)"
        )

    def _save_epoch_checkpoint(
        self, path: Path, fold: int, epoch: int, step: int, history: list, best: dict, inner: torch.optim.Optimizer
    ) -> None:
        from pneumoview.inference.model import trainable_state_dict

        if not self.is_main:
            return
        opt_tensors, groups = optimizer_to_tensors(inner)
        groups = [{k: v for k, v in g.items()} for g in groups]
        tensors = {**with_prefix(trainable_state_dict(self.raw_model), "model"), **opt_tensors, **rng_tensors()}
        if best["tensors"] is not None:
            tensors.update(with_prefix(best["tensors"], "best"))
        state = {
            "fold": fold,
            "epoch": epoch,
            "step": step,
            "history": history,
            "param_groups": groups,
            "best": {k: v for k, v in best.items() if k != "tensors"},
        }
        save_checkpoint(path, tensors, state)

    @torch.no_grad()
    def _predict(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
        """Softmax probabilities [N, 2], labels [N] and mean loss on ``indices`` (eval mode, no dropout)."""
        loader = torch.utils.data.DataLoader(
            CropDataset(self.data, list(indices), self.preprocessing),
            batch_size=self.config.eval_batch_size,
            shuffle=False,
        )
        loader = self.accelerator.prepare_data_loader(loader)
        self.model.eval()
        all_logits, all_labels = [], []
        for pixels, labels in loader:
            with self.accelerator.autocast():
                logits = self.model(pixels).float()
            logits, labels = self.accelerator.gather_for_metrics((logits, labels))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
        logits = torch.cat(all_logits)
        labels = torch.cat(all_labels)
        loss = float(bce_one_hot_loss(logits, labels))
        return torch.softmax(logits, dim=-1).numpy(), labels.numpy(), loss

    def _compare(self, folds: Sequence[Fold]) -> dict[str, Any]:
        """The other (active) bundle's metrics on the same validation folds."""
        from pneumoview.inference.model import load_trainable_state_dict

        assert self.compare_trainable is not None  # run() calls this only when there is a model to compare
        load_trainable_state_dict(self.raw_model, self.compare_trainable)
        per_fold = []
        for fold in folds:
            probs, labels, _ = self._predict(fold.val)
            per_fold.append(evaluate(probs, labels))
        return {"folds": [m.to_dict() for m in per_fold], "summary": summarise(per_fold)}


def _default_hasher() -> PatientHasher:
    """Keyed patient hashes with this installation's pseudonymisation key (created on first use)."""
    return patient_hasher(load_patient_key())
