"""``quantize_``: replace layers in place according to a config."""

from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import Tensor, nn

from edgegen.quant.config import (
    Bf16Config,
    DynamicPrecisionConfig,
    Fp16Config,
    Int4DynamicConfig,
    Int4WeightOnlyConfig,
    Int8DynamicConfig,
    Int8StaticConfig,
    QATConfig,
    QuantConfig,
)
from edgegen.quant.modules import Int4Embedding, Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Embedding, Int8Linear
from edgegen.transform import FilterFn, Handlers, check_filter_fn, check_model, weight_read_by_parent

_HANDLERS = Handlers("quantize_")


def register_quantize_handler(config_type: type):
    """``@register_quantize_handler(ConfigType)`` on ``handler(model, config, filter_fn)``
    (optionally also taking ``calibration``): ``quantize_`` then applies configs of that type. The
    handler replaces modules in place and returns how many it changed."""
    return _HANDLERS.register(config_type)


class LowPrecision(nn.Module):
    """Runs ``module`` in ``dtype``: its parameters are stored in it, inputs are cast in and
    outputs cast back to the input's dtype. The precision is the quantization: ``model.float()``
    / ``.half()`` / ``.to(dtype)`` leave the wrapped layer in ``dtype`` (as the integer modules
    keep their float32 scales); devices still change."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        # In place: a Parameter shared with another layer (GPT-2's embedding tied to its head)
        # is converted for both, and stored once (quantize_ warns when that happens).
        self.module = module.to(dtype)
        self.dtype = dtype
        self.training = module.training  # the mode of the layer it replaces

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.module.to(self.dtype)  # in place again, a shared Parameter included
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(self.dtype)).to(x.dtype)


def _replace(model: nn.Module, kinds: tuple, make: Callable[[nn.Module], nn.Module],
             filter_fn: FilterFn | None) -> int:
    return _replace_all(model, [(kinds, make, filter_fn)])


def _wrappers() -> tuple:
    """edgegen's quantization wrappers: a layer inside one has been prepared or quantized already."""
    from edgegen.quant.mixed import SwitchablePrecision
    from edgegen.quant.qat import QATModule

    return (LowPrecision, QATModule, SwitchablePrecision)


def check_not_wrapped(model: nn.Module, name: str, wrappers: tuple | None = None,
                      reasons: dict[type, str] | None = None) -> None:
    """A ValueError when the layer ``name`` sits inside one of edgegen's quantization wrappers
    (``wrappers``, default all). ``reasons`` ({wrapper type: why and what to do}) names the
    wrappers instead, each with its own message (a transform that only some wrappers break)."""
    kinds = tuple(reasons) if reasons else (wrappers or _wrappers())
    parts = name.split(".")
    for i in range(1, len(parts)):
        where = ".".join(parts[:i])
        outer = model.get_submodule(where)
        if not isinstance(outer, kinds):
            continue
        if reasons:
            why = next(r for t, r in reasons.items() if isinstance(outer, t))
            raise ValueError(f"model: layer {name!r} is inside a {type(outer).__name__} ({where!r}), {why}")
        raise ValueError(f"model: layer {name!r} is inside a {type(outer).__name__} ({where!r}): the model was "
                         "prepared or quantized before; start from the float model (after prepare_qat_, convert "
                         "with QATConfig(step='convert') / convert_)")


def _replace_all(model: nn.Module, stages: list[tuple[tuple, Callable[[nn.Module], nn.Module], FilterFn | None]]
                 ) -> int:
    """Every stage's (kinds, make, filter_fn) replacements built first, then swapped in: a layer
    that cannot be converted raises before the model is touched. A layer registered under several
    names is converted once and replaced under each (filter_fn sees its first name). Layers inside
    edgegen's wrappers (quantized or prepared before) are refused, naming the layer; layers whose
    parent reads their ``.weight`` (PyTorch's attention and transformer layers) stay as they are,
    with a warning."""
    wrappers = _wrappers()
    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if name:
            names.setdefault(id(m), []).append(name)
    plan, seen, kept = [], set(), []
    for kinds, make, filter_fn in stages:
        for name, m in model.named_modules():
            if (not name or id(m) in seen or not isinstance(m, kinds)
                    or not (filter_fn is None or filter_fn(m, name))):
                continue
            if any(weight_read_by_parent(model, n) for n in names[id(m)]):
                kept.append(name)
                continue
            for n in names[id(m)]:
                check_not_wrapped(model, n, wrappers)
            seen.add(id(m))
            plan.append((names[id(m)], make(m)))
    if kept:
        import warnings

        warnings.warn(f"quantize_: {len(kept)} layer(s) stay as they are because their parent reads their weight "
                      f"directly (PyTorch's MultiheadAttention / Transformer layers; e.g. {kept[0]!r})", UserWarning,
                      stacklevel=4)
    for layer_names, q in plan:
        for name in layer_names:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, q)
    return len(plan)


_INT8_KINDS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _int8_module(m: nn.Module, act_qparams=None) -> nn.Module:
    if isinstance(m, nn.Linear):
        return Int8Linear.from_float(m, act_qparams)
    if isinstance(m, nn.Conv2d):
        return Int8Conv2d.from_float(m, act_qparams)
    return Int8ConvTranspose2d.from_float(m, act_qparams)


def _int8_filter(filter_fn: FilterFn | None, model: nn.Module | None = None) -> FilterFn:
    """Convolutions the INT8 path cannot take stay in floating point: grouped (depthwise) ones
    silently (documented), those with a padding mode other than zeros or string padding with a
    warning that names them (when ``model`` is given)."""
    def unsupported_padding(m: nn.Module) -> bool:
        return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and (m.padding_mode != "zeros" or
                                                                   isinstance(m.padding, str))

    if model is not None:
        odd = [n for n, m in model.named_modules() if unsupported_padding(m) and getattr(m, "groups", 1) == 1
               and (filter_fn is None or filter_fn(m, n))]
        if odd:
            import warnings

            warnings.warn(f"quantize_: {len(odd)} convolution(s) with a padding mode other than 'zeros' or string "
                          f"padding stay in floating point (e.g. {odd[0]!r}); the INT8 kernels pad with zeros by "
                          "explicit sizes", UserWarning, stacklevel=4)

    def keep(m: nn.Module, name: str) -> bool:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and (m.groups != 1 or unsupported_padding(m)):
            return False
        return filter_fn is None or filter_fn(m, name)
    return keep


def _int4_filter(filter_fn: FilterFn | None, model: nn.Module, group_size: int) -> FilterFn:
    """INT4 packs Linear layers whose input width is a multiple of 64 and of the group size; the
    others stay in floating point, with a warning that says how many."""
    step = max(64, group_size)
    chosen = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, n))]
    skipped = [n for n, m in chosen if m.in_features % step]
    if skipped:
        import warnings

        warnings.warn(f"quantize_: {len(skipped)} of {len(chosen)} Linear layers have an input width that is not a "
                      f"multiple of {step} and stay in floating point (e.g. {skipped[0]!r})", UserWarning, stacklevel=3)

    def keep(m: nn.Module, name: str) -> bool:
        return m.in_features % step == 0 and (filter_fn is None or filter_fn(m, name))
    return keep


def _tied_heads(model: nn.Module) -> list[tuple[str, str]]:
    """(embedding name, linear name) pairs whose weights are the same Parameter (GPT-2's head)."""
    owners = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding):
            owners[id(m.weight)] = name
    return [(owners[id(m.weight)], name) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m.weight) in owners]


def _retie(model: nn.Module, tied: list[tuple[str, str]]) -> None:
    """Where both sides of a tie became int8 (or int4) with identical contents, share the buffers
    again (the saved file then holds the table once)."""
    for emb_name, lin_name in tied:
        emb, lin = model.get_submodule(emb_name), model.get_submodule(lin_name)
        if isinstance(emb, Int8Embedding) and isinstance(lin, Int8Linear) and torch.equal(
                emb.weight_int8, lin.weight_int8) and torch.equal(emb.weight_scale, lin.weight_scale):
            lin.weight_int8, lin.weight_scale = emb.weight_int8, emb.weight_scale
            lin.repack()
        elif (isinstance(emb, Int4Embedding) and isinstance(lin, Int4Linear) and emb.group_size == lin.group_size
              and all(torch.equal(getattr(emb, b), getattr(lin, b)) for b in ("packed_weight", "scale", "zero_point"))):
            lin.packed_weight, lin.scale, lin.zero_point = emb.packed_weight, emb.scale, emb.zero_point


def _calibrate(model: nn.Module, config: Int8StaticConfig, calibration, filter_fn: FilterFn | None) -> dict[str, tuple]:
    from edgegen.prune.graph import eval_mode
    from edgegen.quant.observers import OBSERVERS

    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, _INT8_KINDS) and n and filter_fn(m, n)]
    observers, hooks, reached = {}, [], set()
    for name, m in targets:
        obs = OBSERVERS[config.observer](quant_min=0, quant_max=127)
        observers[name] = obs
        def record(mod, args, obs=obs, name=name) -> None:  # returns None: the inputs pass unchanged
            obs(args[0])
            reached.add(name)

        hooks.append(m.register_forward_pre_hook(record))
    seen = 0
    try:
        with eval_mode(model), torch.no_grad():  # each module's own mode back afterwards
            # islice: a generator is never asked for a batch beyond the ones used
            for batch in itertools.islice(calibration, config.batches or config.DEFAULT_BATCHES):
                model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
                seen += 1
    finally:
        for h in hooks:
            h.remove()
    if seen == 0:
        raise ValueError("calibration: yielded no batches")
    missed = [name for name in observers if name not in reached]
    if missed:
        raise ValueError(f"calibration: the batches never reached layer {missed[0]!r} ({len(missed)} selected layer(s) "
                         "unused by the forward pass have no activation range); exclude it with filter_fn")
    out = {}
    for name, obs in observers.items():
        scale, zp = obs.calculate_qparams()
        out[name] = (float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]))
    return out


@register_quantize_handler(Int8DynamicConfig)
def _int8_dynamic(model: nn.Module, config: Int8DynamicConfig, filter_fn: FilterFn | None) -> int:
    tied = _tied_heads(model)
    stages = [(_INT8_KINDS, _int8_module, _int8_filter(filter_fn, model))]
    if config.embeddings:
        stages.append(((nn.Embedding,), Int8Embedding.from_float, filter_fn))
    n = _replace_all(model, stages)
    _retie(model, tied)
    return n


@register_quantize_handler(Int8StaticConfig)
def _int8_static(model: nn.Module, config: Int8StaticConfig, filter_fn: FilterFn | None, calibration=None) -> int:
    if calibration is None:
        raise ValueError("calibration: Int8StaticConfig needs calibration data (quantize_(model, config, "
                         "calibration=batches): an iterable of model inputs)")
    keep = _int8_filter(filter_fn, model)
    qparams = _calibrate(model, config, calibration, keep)
    names = {id(m): n for n, m in model.named_modules()}
    return _replace(model, _INT8_KINDS, lambda m: _int8_module(m, qparams[names[id(m)]]), keep)


@register_quantize_handler(Int4WeightOnlyConfig)
@register_quantize_handler(Int4DynamicConfig)
def _int4(model: nn.Module, config, filter_fn: FilterFn | None) -> int:
    act = "int8" if isinstance(config, Int4DynamicConfig) else "float"
    tied = _tied_heads(model)
    stages = [((nn.Linear,), lambda m: Int4Linear.from_float(m, config.group_size, act),
               _int4_filter(filter_fn, model, config.group_size))]
    if config.embeddings:
        # Tables whose width the packing cannot take stay in floating point (no warning: they are
        # not what the config names); max_norm / sparse tables are refused, as INT8 refuses them.
        def packable(m: nn.Module, name: str) -> bool:
            return (m.embedding_dim % 64 == 0 and m.embedding_dim % config.group_size == 0
                    and (filter_fn is None or filter_fn(m, name)))
        stages.append(((nn.Embedding,), lambda m: Int4Embedding.from_float(m, config.group_size), packable))
    n = _replace_all(model, stages)
    _retie(model, tied)
    return n


@register_quantize_handler(Fp16Config)
@register_quantize_handler(Bf16Config)
def _low_precision(model: nn.Module, config, filter_fn: FilterFn | None) -> int:
    dtype = torch.float16 if isinstance(config, Fp16Config) else torch.bfloat16
    tied = [(e, h) for e, h in _tied_heads(model) if filter_fn is None or filter_fn(model.get_submodule(h), h)]
    if tied:
        import warnings

        warnings.warn(f"quantize_: {tied[0][1]!r} shares its weight with the embedding {tied[0][0]!r} (tied): the "
                      f"shared table is converted to {str(dtype).removeprefix('torch.')} and stored once, so the "
                      "embedding looks up 16-bit values too", UserWarning, stacklevel=4)
    return _replace(model, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d), lambda m: LowPrecision(m, dtype), filter_fn)


@register_quantize_handler(QATConfig)
def _qat(model: nn.Module, config: QATConfig, filter_fn: FilterFn | None) -> int:
    from edgegen.quant.qat import QATModule, convert_

    if config.step == "prepare":
        n = _replace(model, _INT8_KINDS, lambda m: QATModule(m, config), _int8_filter(filter_fn, model))
        if n == 0:
            raise ValueError("model: nothing to prepare (no Linear/Conv2d/ConvTranspose2d selected by filter_fn)")
        return n
    if filter_fn is not None:
        raise ValueError("filter_fn: QATConfig(step='convert') converts every QATModule; select layers at the "
                         "prepare step")
    n = sum(isinstance(m, QATModule) for m in model.modules())
    convert_(model)  # raises when there is no QATModule to convert
    return n


@register_quantize_handler(DynamicPrecisionConfig)
def _dynamic_precision(model: nn.Module, config: DynamicPrecisionConfig, filter_fn: FilterFn | None) -> int:
    from edgegen.quant.mixed import SwitchablePrecision, enable_precision_switch_

    enable_precision_switch_(model, config.low, filter_fn)
    return sum(isinstance(m, SwitchablePrecision) for m in model.modules())


def quantize_(model: nn.Module, config, filter_fn: FilterFn | None = None, *, calibration=None) -> nn.Module:
    """Quantize ``model`` in place (``filter_fn(module, name)`` selects layers) and return it.
    ``config`` is a config object or the dict of its ``to_dict()``.

    * :class:`Int8DynamicConfig`: nn.Linear / Conv2d / ConvTranspose2d (groups=1) -> :class:`Int8Linear`,
      :class:`Int8Conv2d`, :class:`Int8ConvTranspose2d` (integer GEMM kernels; activations per call).
    * :class:`Int8StaticConfig`: the same with activation parameters calibrated on
      ``calibration`` (an iterable of model inputs: tensors, or tuples of positional arguments).
    * :class:`Int4WeightOnlyConfig`: nn.Linear -> :class:`Int4Linear` (layers whose input width is
      not a multiple of 64 and of the group size stay in floating point, with a warning).
    * :class:`Int4DynamicConfig`: the same 4-bit weights with activations quantized per call to
      int8 per group (W4A8: integer dot products).
    * :class:`Fp16Config` / :class:`Bf16Config`: nn.Linear and convolutions run in 16-bit.
    * :class:`QATConfig`: ``step='prepare'`` wraps layers for quantization-aware training,
      ``step='convert'`` turns the trained wrappers into the integer modules.
    * :class:`DynamicPrecisionConfig`: layers kept both in full and low precision, switched per
      generation step (``edgegen.models.generate_dynamic``).

    Other config types plug in through :func:`register_quantize_handler`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
        >>> x = torch.randn(4, 64)
        >>> ref = model(x)
        >>> _ = quantize_(model, Int8DynamicConfig())
        >>> type(model[0]).__name__
        'Int8Linear'
        >>> bool((model(x) - ref).abs().max() < 0.05 * ref.abs().max())
        True
    """
    if isinstance(config, dict):
        config = QuantConfig.from_dict(config)
    check_model(model)
    check_filter_fn(filter_fn)
    n = _HANDLERS(model, config, filter_fn, calibration=calibration)
    if n == 0:
        raise ValueError("model: nothing to quantize (no layer of a supported kind was selected by filter_fn, or "
                         "the selected ones must stay as they are: see the warnings)")
    return model
