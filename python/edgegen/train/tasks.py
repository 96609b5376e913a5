"""What one optimizer step means for each kind of run: DCGAN (BCE-with-logits, alternating D and
G), Beta-VAE (ELBO with beta), GPT-2 language modelling, and distillation into a GPT-2 student
with edgegen's fused KD loss. A task owns its modules, optimizers and schedulers (what a
checkpoint saves) and turns one global batch into one update."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen.train.checkpoint import load_gpt2
from edgegen.train.config import ExperimentConfig, OptimConfig
from edgegen.train.data import _generator


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: OptimConfig, total_steps: int):
    """Constant, or linear warm-up then cosine decay to min_lr_ratio * lr at total_steps."""
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0 if step >= warm or warm == 0 else (step + 1) / warm
        if warm and step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _micro(batch, parts: int):
    """Split a batch (tensor or tuple of tensors) into ``parts`` micro-batches along dim 0."""
    if parts == 1:
        return [batch]
    if isinstance(batch, tuple):
        cols = [t.chunk(parts) for t in batch]
        return list(zip(*cols))
    return list(batch.chunk(parts))


def _rows(micro_batch) -> int:
    first = micro_batch[0] if isinstance(micro_batch, (tuple, list)) else micro_batch
    return int(first.shape[0]) if isinstance(first, Tensor) and first.dim() else 1


def _mean_over_processes(totals: dict[str, float], rows: int, device: torch.device) -> dict[str, float]:
    """The logged step metrics of the whole global batch: each process's means weighted by its
    rows (one process: unchanged)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return totals
    keys = sorted(totals)
    t = torch.tensor([totals[k] * rows for k in keys] + [float(rows)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


class Task:
    """Base: ``modules`` (saved), ``wrapped`` (the same, wrapped for data parallelism by the
    loop), ``optimizers`` and ``schedulers`` by name. The base owns the optimisation step
    (:meth:`optimize`: zero the gradients, accumulate over micro-batches, clip, step) and
    evaluation mode (:meth:`evaluating`); a task says what its loss is."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device, total_steps: int | None):
        # total_steps (what the LR schedules span) may be set later, before build_optimizers: the
        # loop knows it once the data is read, which needs the model's vocabulary.
        self.cfg, self.device, self.total_steps = cfg, device, total_steps
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, object] = {}

    val_metrics: tuple[str, ...] = ("val_loss",)  # what validate returns (a sweep's metric is one of them)

    def main_model(self) -> nn.Module:
        return self.modules["model"]

    @property
    def vocab_size(self) -> int | None:
        """The token vocabulary the data is read with (None: images)."""
        return None

    def trainable_parameters(self) -> list:
        return list(self.modules["model"].parameters())

    def build_optimizers(self) -> None:
        """One optimizer (and LR schedule) named ``model`` over :meth:`trainable_parameters`."""
        self.optimizers["model"] = make_optimizer(self.trainable_parameters(), self.cfg.optim)
        self.schedulers["model"] = make_scheduler(self.optimizers["model"], self.cfg.optim, self.total_steps)

    def train_step(self, batch, step: int, rank_rows=None, global_batch=None) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        """The validation metrics: the names in ``val_metrics`` (``val_loss`` first)."""
        raise NotImplementedError

    def optimize(self, name: str, micro_batches, loss_fn) -> dict[str, float]:
        """One update of optimizer ``name``: gradients zeroed, ``loss_fn(*micro_batch)`` (a dict
        of scalar tensors with ``loss``) backpropagated for every micro-batch with weight
        1 / count, the gradient norm of ``modules[name]`` clipped to ``optim.grad_clip`` (0: off),
        the optimizer and its schedule stepped. Returns every entry averaged over the micro-batches."""
        micro_batches = list(micro_batches)
        parts = len(micro_batches)
        self.optimizers[name].zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for mb in micro_batches:
            out = loss_fn(*mb)
            (out["loss"] / parts).backward()
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + (v.item() if isinstance(v, Tensor) else float(v)) / parts
        totals = _mean_over_processes(totals, sum(_rows(mb) for mb in micro_batches), self.device)
        if self.cfg.optim.grad_clip > 0:  # the norm of the module's own gradients (not auxiliary heads)
            torch.nn.utils.clip_grad_norm_(self.modules[name].parameters(), self.cfg.optim.grad_clip)
        self.optimizers[name].step()
        if name in self.schedulers:
            self.schedulers[name].step()
        return totals

    @contextlib.contextmanager
    def evaluating(self, *modules: nn.Module):
        """``modules`` in eval mode inside the block, each back in its own previous mode after."""
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    def to(self, batch):
        if isinstance(batch, tuple):
            return tuple(t.to(self.device) for t in batch)
        return batch.to(self.device)


class GANTask(Task):
    val_metrics = ("val_loss", "val_examples")
    def __init__(self, cfg, device, total_steps):
        super().__init__(cfg, device, total_steps)
        g, d = cfg.model.build()
        self.modules = {"generator": g.to(device), "discriminator": d.to(device)}
        self.nz = cfg.model.nz

    def main_model(self):
        return self.modules["generator"]

    def build_optimizers(self):
        for name in ("generator", "discriminator"):
            self.optimizers[name] = make_optimizer(self.modules[name].parameters(), self.cfg.optim)
            self.schedulers[name] = make_scheduler(self.optimizers[name], self.cfg.optim, self.total_steps)

    def noise(self, n: int, step: int, rank_rows=None) -> Tensor:
        z = torch.randn(n, self.nz, 1, 1, generator=_generator(self.cfg.train.seed, 17, step))
        return (z if rank_rows is None else z[rank_rows]).to(self.device)

    def train_step(self, batch, step, rank_rows=None, global_batch=None):
        G, D = self.wrapped["generator"], self.wrapped["discriminator"]
        real = self.to(batch)
        n_global = global_batch or real.shape[0]
        z = self.noise(n_global, step, rank_rows)
        parts = self.cfg.optim.grad_accum
        fakes = []

        def discriminator_loss(r, zz):  # real -> 1, fake -> 0
            fake = G(zz)
            fakes.append(fake)
            lr_, lf_ = D(r), D(fake.detach())
            return {"loss": F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                    + F.binary_cross_entropy_with_logits(lf_, torch.zeros_like(lf_))}

        def generator_loss(fake):  # fool the updated discriminator
            lg = D(fake)
            return {"loss": F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg))}

        loss_d = self.optimize("discriminator", zip(_micro(real, parts), _micro(z, parts)), discriminator_loss)["loss"]
        loss_g = self.optimize("generator", [(f,) for f in fakes], generator_loss)["loss"]
        return {"loss": loss_d + loss_g, "loss_d": loss_d, "loss_g": loss_g}

    @torch.no_grad()
    def validate(self, batches):
        G, D = self.modules["generator"], self.modules["discriminator"]
        total, count = 0.0, 0
        with self.evaluating(G, D):
            for real in batches:
                real = self.to(real)
                # one latent per validation image, seeded by its index: the same whatever the batching
                z = torch.stack([torch.randn(self.nz, 1, 1, generator=_generator(self.cfg.train.seed, 23, count + j))
                                 for j in range(real.shape[0])]).to(self.device)
                lr_, lf_ = D(real), D(G(z))
                n = real.shape[0]  # weighted by images: the same number whatever the batch size
                total += n * (F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                              + F.binary_cross_entropy_with_logits(lf_, torch.zeros_like(lf_))).item()
                count += n
        return {"val_loss": total / max(count, 1), "val_examples": float(count)}


class VAETask(Task):
    val_metrics = ("val_loss", "val_examples")
    def __init__(self, cfg, device, total_steps):
        super().__init__(cfg, device, total_steps)
        self.modules = {"model": cfg.model.build().to(device)}

    def train_step(self, batch, step, rank_rows=None, global_batch=None):
        model = self.wrapped["model"]
        x = self.to(batch)
        # The posterior noise of the whole global batch, drawn once per step: each process takes
        # its rows, each micro-batch its slice, so sharding and accumulation see the same noise.
        latent = self.modules["model"].config.latent_dim
        eps = torch.randn(global_batch or x.shape[0], latent, generator=_generator(self.cfg.train.seed, 29, step))
        eps = (eps if rank_rows is None else eps[rank_rows]).to(self.device, x.dtype)  # the encoder's output dtype

        def elbo(xx, ee):
            out = model(xx, eps=ee)
            return {k: out[k] for k in ("loss", "reconstruction", "kl")}

        parts = self.cfg.optim.grad_accum
        return self.optimize("model", zip(_micro(x, parts), _micro(eps, parts)), elbo)

    @torch.no_grad()
    def validate(self, batches):
        model = self.modules["model"]
        total, count = 0.0, 0
        with self.evaluating(model):
            for x in batches:
                n = x.shape[0]
                # one posterior sample per validation image, seeded by its index (batching does not matter)
                eps = torch.stack([torch.randn(model.config.latent_dim,
                                               generator=_generator(self.cfg.train.seed, 31, count + j))
                                   for j in range(n)]).to(self.device)
                total += n * model(self.to(x), eps=eps)["loss"].item()
                count += n
        return {"val_loss": total / max(count, 1), "val_examples": float(count)}


class LMTask(Task):
    val_metrics = ("val_loss", "val_perplexity", "val_tokens")
    def __init__(self, cfg, device, total_steps):
        super().__init__(cfg, device, total_steps)
        self.modules = {"model": load_gpt2(cfg.model).to(device)}

    @property
    def vocab_size(self) -> int:
        """The model's own (from ``init_from``, the checkpoint's, whatever the section says)."""
        return self.modules["model"].config.vocab_size

    def loss(self, model, x, y):
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def train_step(self, batch, step, rank_rows=None, global_batch=None):
        model = self.wrapped["model"]
        lr = self.optimizers["model"].param_groups[0]["lr"]  # the rate this step uses (optimize steps the schedule)
        out = self.optimize("model", _micro(self.to(batch), self.cfg.optim.grad_accum),
                            lambda x, y: {"loss": self.loss(model, x, y)})
        return {"loss": out["loss"], "lr": lr}

    @torch.no_grad()
    def validate(self, batches):
        model = self.modules["model"]
        total, count = 0.0, 0
        with self.evaluating(model):
            for x, y in batches:  # plain cross-entropy on the data (also for distillation), token-weighted
                n = y.numel()
                total += n * LMTask.loss(self, model, *self.to((x, y))).item()
                count += n
        loss = total / max(count, 1)
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "val_tokens": float(count)}


class DistillTask(LMTask):
    """The student (``model``) learns from frozen teachers with the fused KD loss at temperature
    T (plus cross-entropy on the data, weight 1 - alpha); optionally matching the teacher's final
    hidden states through a learned linear projection (``feature_weight``)."""

    val_metrics = LMTask.val_metrics + ("val_teacher_kl",)

    def __init__(self, cfg, device, total_steps):
        super().__init__(cfg, device, total_steps)
        dc = cfg.distill
        self.teachers = []
        for i, tc in enumerate(dc.teachers):
            t = load_gpt2(tc, f"distill.teachers[{i}].init_from").to(device).eval()
            for p in t.parameters():
                p.requires_grad_(False)
            if t.config.vocab_size != self.vocab_size:
                raise ValueError(f"distill.teachers: vocabulary {t.config.vocab_size} differs from the student's "
                                 f"{self.vocab_size}")
            self.teachers.append(t)
        if dc.fused and len(self.teachers) > 1:
            raise ValueError("distill.fused: the fused hidden-state loss takes one teacher; set fused: false to mix "
                             f"{len(self.teachers)} teachers")
        self.feature_pairs = [tuple(p) for p in dc.feature_layers]
        if dc.feature_weight > 0:
            student, teacher = self.modules["model"], self.teachers[0]
            for si, ti in self.feature_pairs:
                if si >= len(student.h) or ti >= len(teacher.h):
                    raise ValueError(f"distill.feature_layers: pair [{si}, {ti}] is out of range for a "
                                     f"{len(student.h)}-block student and a {len(teacher.h)}-block teacher")
            n = max(1, len(self.feature_pairs))
            self.modules["projection"] = nn.ModuleList(
                nn.Linear(student.config.n_embd, teacher.config.n_embd, bias=False) for _ in range(n)).to(device)

    def trainable_parameters(self):
        params = list(self.modules["model"].parameters())
        if "projection" in self.modules:
            params += list(self.modules["projection"].parameters())
        return params

    def loss(self, model, x, y):
        from edgegen.distill import fused_linear_kd_loss, kd_loss

        dc = self.cfg.distill
        student = self.modules["model"]
        feats = dc.feature_weight > 0 and bool(self.feature_pairs)
        with torch.no_grad(), _block_outputs(self.teachers[0], feats) as t_blocks:
            t_hidden = [t(x, return_hidden=True) for t in self.teachers]
        with _block_outputs(student, feats) as s_blocks:
            s_hidden = model(x, return_hidden=True)
        if dc.fused:
            t = self.teachers[0]
            s_x, s_w = student.head_operands(s_hidden)
            t_x, t_w = t.head_operands(t_hidden[0])
            loss = fused_linear_kd_loss(s_x.reshape(-1, s_x.shape[-1]), s_w, t_x.reshape(-1, t_x.shape[-1]), t_w,
                                        y.reshape(-1), temperature=dc.temperature, alpha=dc.alpha)
        else:
            s_logits = student.lm_head(s_hidden)
            with torch.no_grad():
                t_logits = [t.lm_head(h) for t, h in zip(self.teachers, t_hidden)]
            loss = kd_loss(s_logits.reshape(-1, s_logits.shape[-1]), [tl.reshape(-1, tl.shape[-1]) for tl in t_logits],
                           y.reshape(-1), temperature=dc.temperature, alpha=dc.alpha,
                           teacher_weights=dc.teacher_weights or None)
        if dc.feature_weight > 0:
            proj = self.modules["projection"]
            if feats:
                terms = [F.mse_loss(proj[k](s_blocks[si]), t_blocks[ti]) for k, (si, ti) in enumerate(self.feature_pairs)]
                loss = loss + dc.feature_weight * sum(terms) / len(terms)
            else:
                loss = loss + dc.feature_weight * F.mse_loss(proj[0](s_hidden), t_hidden[0])
        return loss

    @torch.no_grad()
    def teacher_kl(self, batches) -> float:
        """Mean KL(teacher || student) at T=1 over the batches (the distance distillation closes);
        with several teachers the teacher is their mixture (``teacher_weights``, normalised;
        default uniform), the distribution the KD loss mixes."""
        from edgegen.ops._reference import _teacher_log_probs  # the KD loss's own mixture

        student = self.modules["model"]
        total, count = 0.0, 0
        with self.evaluating(student):
            for x, _ in batches:
                x = self.to(x)
                ls = F.log_softmax(student(x), -1)
                lt = _teacher_log_probs([t(x) for t in self.teachers], self.cfg.distill.teacher_weights, 1.0, ls.dtype)
                total += F.kl_div(ls, lt, log_target=True, reduction="sum").item()
                count += x.shape[0] * x.shape[1]  # per token, whatever the batch size
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self, batches):
        batches = list(batches)
        out = super().validate(batches)
        out["val_teacher_kl"] = self.teacher_kl(batches)
        return out


class _block_outputs:
    """Context manager: while active, records the output hidden states of every block of a
    GPT-2 (``model.h[i]``) in a list, indexed by block."""

    def __init__(self, model, enabled: bool):
        self.model, self.enabled, self.outputs, self.handles = model, enabled, {}, []

    def __enter__(self):
        if self.enabled:
            for i, block in enumerate(self.model.h):
                self.handles.append(block.register_forward_hook(
                    lambda mod, inp, out, i=i: self.outputs.__setitem__(i, out[0])))
        return self.outputs

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


TASKS = {"gan": GANTask, "vae": VAETask, "lm": LMTask, "distill": DistillTask}
