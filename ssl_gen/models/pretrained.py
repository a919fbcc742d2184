"""Published PyTorch-format ViT and MAE checkpoints, read without PyTorch.

`read_state_dict(path)` reads a checkpoint's tensors as numpy arrays:
- safetensors files (`model.safetensors` of the Hugging Face Hub, timm's `.safetensors`);
- PyTorch's zip format (`torch.save` since torch 1.6: `.pth`, `.pt`, `pytorch_model.bin`).
  There is no library for this without torch itself, so it is read here: the archive holds
  `<name>/data.pkl`, a pickle whose tensors are persistent ids `("storage", <dtype class>,
  key, location, numel)` naming the raw little-endian bytes `<name>/data/<key>`, rebuilt by
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`. The unpickler here
  builds numpy views for those and knows a short list of harmless globals (OrderedDict, the
  numpy array reconstructors, set, slice); any other global (a training checkpoint's
  `argparse.Namespace`, an optimizer class) becomes an inert placeholder that records its
  arguments and runs nothing, so reading a checkpoint never executes code from it. The
  pre-1.6 legacy format is refused in one line.
A checkpoint that wraps its weights (`{"model": ...}` as the MAE and DeiT releases,
`{"state_dict": ...}` as timm's training checkpoints) is unwrapped, and DistributedDataParallel's
`module.` prefix dropped.

`vit_variables(state_dict)` / `mae_variables(state_dict)` map such a state dict onto
`ssl_gen.models.vit.Model` / `ssl_gen.models.mae.Model` and return `(variables, kwargs)`, the
kwargs being the architecture the weights imply (width, depth, heads, patch, image size, head
size, position embeddings). Three naming schemes are understood, each mapped first onto
timm's names:
- timm / the MAE release (`models_mae.py`, `models_vit.py`): `cls_token`, `pos_embed`,
  `patch_embed.proj`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`,
  `head`; MAE adds `mask_token`, `decoder_embed`, `decoder_pos_embed`, `decoder_blocks.{i}`,
  `decoder_norm`, `decoder_pred`. The fused `qkv` (3D, D) splits in the order q, k, v;
- the Hugging Face Hub (`ViTModel`, `ViTForImageClassification`, `ViTMAEForPreTraining`, as
  `save_pretrained` writes them): `[vit.]embeddings.{cls_token, position_embeddings,
  patch_embeddings.projection}`, `encoder.layer.{i}.{layernorm_before,
  attention.attention.{query,key,value}, attention.output.dense, layernorm_after,
  intermediate.dense, output.dense}`, `layernorm`, `classifier`; for MAE `decoder.{mask_token,
  decoder_embed, decoder_pos_embed, decoder_norm, decoder_pred}` and the decoder's layers as
  `decoder.decoder_layers.{i}` (transformers 4) or `decoder.decoder_encoder.layer.{i}` (what
  transformers 5's `save_pretrained` writes);
- transformers 5's in-memory names (`state_dict()` of its models: `layers.{i}.attention.
  {q,k,v,o}_proj`, `mlp.fc1/fc2`).
Layouts: a torch Linear's weight (out, in) is our kernel (in, out), split per head for
attention ((D, H, D/H) and (H, D/H, D)); the patch embedding's Conv2d weight (D, C, p, p)
becomes (p, p, C, D) for NHWC images; LayerNorm weight is our `scale`.

The number of heads is not in the tensors: it comes from the `num_heads` argument, else a
`config.json` beside the file (Hugging Face's, or one written by hand holding
`{"num_attention_heads": H}`: the way to pass it through `config.init_from`), else the
standard width (`STANDARD_HEADS`; the MAE decoder 16, as every released MAE).
Not supported, each said in one line: global-pool checkpoints with timm's `fc_norm` (its
norm follows the pooling, ours precedes it), registers or distillation tokens (DeiT's
`dist_token`), ViT-hybrid stems.
LayerNorm epsilon: 1e-6 (timm's and MAE's) unless a Hugging Face `config.json` beside the file
says otherwise (its ViT configs say 1e-12; run at 1e-6 the tiny parity model's logits move
by 1.2e-5, with it 8e-7), returned in the kwargs as `layer_norm_eps`. Parity with an
independent implementation is proven in tests/models/test_pretrained.py against Hugging
Face transformers' PyTorch ViT and ViTMAE (CPU torch, the `parity` extra), to 1e-5.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any

import ml_dtypes
import numpy as np

from ssl_gen.models.weights import WeightFileError

# torch storage classes -> numpy dtypes (the pickle names them as globals of `torch`).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}
# Heads by width: Ti, S, B, L, H (vit.VARIANTS), SO400M (1152), giant (1408), gigantic (1664).
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1152: 16, 1408: 16, 1664: 16}
MAE_DECODER_HEADS = 16


# ------------------------------------------------------------------------- reading files


class _Opaque:
    """Stands for a global the reader does not know: records what it was given, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *_):
    if not size:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size),
        strides=tuple(s * storage.itemsize for s in stride), writeable=False)
    return np.array(view)  # contiguous copy


def _rebuild_parameter(data, *_):
    return data


_SAFE = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__new__,
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__new__,
}


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self._archive, self._prefix, self._cache = archive, prefix, {}
        self._order = "<" if byteorder == "little" else ">"

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        return type(name, (_Opaque,), {"__module__": f"opaque.{module}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, _numel = pid
        if key not in self._cache:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            dtype = storage_type.dtype.newbyteorder(self._order)
            self._cache[key] = np.frombuffer(raw, dtype).astype(storage_type.dtype, copy=False)
        return self._cache[key]


def _read_torch_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise WeightFileError(f"{path} is a zip file without data.pkl: not a torch.save "
                                  "checkpoint")
        prefix = pkl[0][: -len("/data.pkl")]
        names = set(archive.namelist())
        order = (archive.read(f"{prefix}/byteorder").decode().strip()
                 if f"{prefix}/byteorder" in names else "little")
        with archive.open(pkl[0]) as f:
            return _TorchUnpickler(f, archive, prefix, order).load()


def _unwrap(obj: Any, path: str) -> dict[str, np.ndarray]:
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path} holds a {type(obj).__name__}, not a state dict of "
                              "tensors")
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            out[k[len("module."):] if k.startswith("module.") else k] = v
    if not out:
        raise WeightFileError(f"{path} holds no tensors (keys: {', '.join(list(obj)[:5])})")
    return out


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """{name: numpy array} of a safetensors file or a torch.save zip checkpoint, no torch."""
    if not os.path.isfile(path):
        raise WeightFileError(f"no checkpoint file {path!r}")
    if zipfile.is_zipfile(path):
        return _unwrap(_read_torch_zip(path), path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:3] == b"\x80\x02\x8a":  # pickle protocol 2 and the legacy magic number
        raise WeightFileError(f"{path} is in torch's legacy (pre-1.6) format: re-save it with "
                              "torch.save in a current torch, or as safetensors")
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise WeightFileError(f"{path} is neither safetensors nor a torch.save zip ({e})"
                              ) from None


def hf_config(path: str) -> dict[str, Any]:
    """The Hugging Face `config.json` beside `path`, or {}."""
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.isfile(cfg):
        with open(cfg) as f:
            return json.load(f)
    return {}


def _eps(cfg: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face config's LayerNorm epsilon (1e-12 in its ViT configs), if it has one."""
    return {"layer_norm_eps": float(cfg["layer_norm_eps"])} if "layer_norm_eps" in cfg else {}


def _gelu(cfg: dict[str, Any]) -> dict[str, Any]:
    """The vit.Model GELU switch of a Hugging Face config's `hidden_act`."""
    act = cfg.get("hidden_act", "gelu")
    if act in ("gelu", "gelu_python"):
        return {}
    if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return {"gelu_approximate": True}
    raise WeightFileError(f"config.json hidden_act={act!r}: only GELU ViTs are supported")


def load_vit(path: str, *, num_heads: int | None = None):
    """(variables, vit.Model kwargs) of a published ViT checkpoint file."""
    cfg = hf_config(path)
    variables, kwargs = vit_variables(read_state_dict(path),
                                      num_heads=num_heads or cfg.get("num_attention_heads"))
    return variables, {**kwargs, **_gelu(cfg), **_eps(cfg)}


def load_mae(path: str, *, num_heads: int | None = None, decoder_heads: int | None = None):
    """(variables, mae.Model kwargs) of a published MAE pre-training checkpoint file."""
    cfg = hf_config(path)
    if _gelu(cfg):
        raise WeightFileError(f"config.json hidden_act={cfg['hidden_act']!r}: MAE uses the "
                              "exact GELU")
    variables, kwargs = mae_variables(
        read_state_dict(path), num_heads=num_heads or cfg.get("num_attention_heads"),
        decoder_heads=decoder_heads or cfg.get("decoder_num_attention_heads"))
    return variables, {**kwargs, **_eps(cfg)}


# ----------------------------------------------------------------- names onto timm's names

# Inside one transformer layer: Hugging Face (Hub and transformers 5) -> timm.
_LAYER_RENAMES = (
    ("attention.attention.query.", "attn.q."), ("attention.attention.key.", "attn.k."),
    ("attention.attention.value.", "attn.v."), ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("attention.q_proj.", "attn.q."), ("attention.k_proj.", "attn.k."),
    ("attention.v_proj.", "attn.v."), ("attention.o_proj.", "attn.proj."),
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
)
_TOP_RENAMES = {
    "embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight", "classifier.bias": "head.bias",
    "decoder.mask_token": "mask_token", "decoder.decoder_pos_embed": "decoder_pos_embed",
}
_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.*)$")
_DECODER_LAYER = re.compile(r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.*)$")
_UNSUPPORTED = {"fc_norm": "global-pool checkpoints (timm's fc_norm normalizes after the "
                           "pooling; ssl_gen's 'gap' normalizes before it)",
                "dist_token": "distillation tokens (DeiT)", "reg_token": "register tokens",
                "patch_embed.backbone": "hybrid (ResNet-stem) ViTs"}


def _layer(rest: str) -> str:
    for old, new in _LAYER_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def to_timm_names(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A state dict in timm's names (see the module docstring); fused qkv split into q, k, v;
    the Hugging Face pooler (unused by the classifier) dropped."""
    out = {}
    for key, value in sd.items():
        k = key[len("vit."):] if key.startswith("vit.") else key
        for bad, what in _UNSUPPORTED.items():
            if k.startswith(bad):
                raise WeightFileError(f"checkpoint key {key!r}: {what} are not supported")
        if k.startswith("pooler."):
            continue
        if m := _LAYER.match(k):
            k = f"blocks.{m[1]}.{_layer(m[2])}"
        elif m := _DECODER_LAYER.match(k):
            k = f"decoder_blocks.{m[1]}.{_layer(m[2])}"
        elif k.startswith("decoder.decoder_"):
            k = k[len("decoder."):]
        k = _TOP_RENAMES.get(k, k)
        if ".attn.qkv." in k:
            for name, part in zip("qkv", np.split(value, 3, axis=0), strict=True):
                out[k.replace(".attn.qkv.", f".attn.{name}.")] = part
            continue
        out[k] = value
    return out


# ------------------------------------------------------------ timm names onto ssl_gen's


def _count(sd, prefix: str) -> int:
    ids = {int(m[1]) for k in sd if (m := re.match(rf"^{re.escape(prefix)}\.(\d+)\.", k))}
    if ids and ids != set(range(len(ids))):
        raise WeightFileError(f"checkpoint blocks {prefix}.* are not numbered 0..{len(ids) - 1}")
    return len(ids)


def _need(sd, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """sd[key], checked to exist and (when given) to have `shape`: one line otherwise."""
    if key not in sd:
        raise WeightFileError(f"checkpoint has no tensor {key!r}")
    if shape is not None and tuple(sd[key].shape) != tuple(shape):
        raise WeightFileError(f"checkpoint tensor {key!r} has shape {tuple(sd[key].shape)}, "
                              f"expected {tuple(shape)}")
    return sd[key]


def _blocks(sd, prefix: str, depth: int, heads: int, width: int) -> dict[str, Any]:
    """The `vit.Encoder` parameters of blocks `prefix.{i}` (without the final norm)."""
    if width % heads:
        raise WeightFileError(f"width {width} is not divisible by num_heads={heads}")
    hd, mlp = width // heads, int(_need(sd, f"{prefix}.0.mlp.fc1.weight").shape[0])
    out = {}
    for i in range(depth):
        g = lambda name, *shape, i=i: _need(sd, f"{prefix}.{i}.{name}", shape)
        attn = {}
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
            w = g(f"attn.{theirs}.weight", width, width)
            b = (g(f"attn.{theirs}.bias", width) if f"{prefix}.{i}.attn.{theirs}.bias" in sd
                 else np.zeros(width, w.dtype))  # timm's qkv_bias=False
            attn[ours] = {"kernel": w.T.reshape(width, heads, hd), "bias": b.reshape(heads, hd)}
        attn["out"] = {"kernel": g("attn.proj.weight", width, width).T.reshape(heads, hd, width),
                       "bias": g("attn.proj.bias", width)}
        norm = lambda n, g=g: {"scale": g(f"{n}.weight", width), "bias": g(f"{n}.bias", width)}
        out[f"encoderblock_{i}"] = {
            "LayerNorm_0": norm("norm1"), "MultiHeadDotProductAttention_0": attn,
            "LayerNorm_1": norm("norm2"),
            "MlpBlock_0": {"Dense_0": {"kernel": g("mlp.fc1.weight", mlp, width).T,
                                       "bias": g("mlp.fc1.bias", mlp)},
                           "Dense_1": {"kernel": g("mlp.fc2.weight", width, mlp).T,
                                       "bias": g("mlp.fc2.bias", width)}}}
    return out


def _heads(width: int, given: int | None, what: str) -> int:
    if given:
        return int(given)
    if width in STANDARD_HEADS:
        return STANDARD_HEADS[width]
    raise WeightFileError(f"{what} width {width} is not a standard ViT width "
                          f"({', '.join(map(str, STANDARD_HEADS))}): pass num_heads=")


def _encoder(sd, num_heads: int | None) -> tuple[dict, dict, set[str], int]:
    """(vit params, vit.Model kwargs, the keys used, the image channels)."""
    w = _need(sd, "patch_embed.proj.weight")  # (D, C, p, p)
    width, channels, ph, pw = w.shape
    depth = _count(sd, "blocks")
    if depth == 0:
        raise WeightFileError("checkpoint has no transformer blocks (blocks.0.* / "
                              "encoder.layer.0.*)")
    heads = _heads(width, num_heads, "encoder")
    params = {"embedding": {"kernel": w.transpose(2, 3, 1, 0),
                            "bias": sd.get("patch_embed.proj.bias", np.zeros(width, w.dtype))},
              "Transformer": _blocks(sd, "blocks", depth, heads, width)}
    params["Transformer"]["encoder_norm"] = {"scale": _need(sd, "norm.weight", (width,)),
                                             "bias": _need(sd, "norm.bias", (width,))}
    class_token = "cls_token" in sd
    if class_token:
        params["cls"] = sd["cls_token"].reshape(1, 1, width)
    pos = _need(sd, "pos_embed").reshape(1, -1, width)
    n_grid = pos.shape[1] - int(class_token)
    side = math.isqrt(n_grid)
    if side * side != n_grid:
        raise WeightFileError(f"pos_embed has {n_grid} grid rows, not a square grid")
    params["pos_embedding"] = pos
    kwargs = dict(variant=None, width=width, depth=depth, num_heads=heads,
                  mlp_dim=int(_need(sd, "blocks.0.mlp.fc1.weight").shape[0]),
                  patch_size=(ph, pw), image_size=(side * ph, side * pw),
                  class_token=class_token, pool="cls" if class_token else "gap",
                  posemb="learn", num_classes=0)
    used = {k for k in sd if k.startswith(("blocks.", "patch_embed.", "norm."))}
    used |= {"cls_token", "pos_embed"}
    return params, kwargs, used, channels


def _linear(sd, name: str) -> dict[str, np.ndarray]:
    return {"kernel": _need(sd, f"{name}.weight").T, "bias": _need(sd, f"{name}.bias")}


def _check_all_used(sd, used: set[str], ignored: tuple[str, ...], what: str) -> None:
    left = sorted(k for k in sd if k not in used and not k.startswith(ignored))
    if left:
        raise WeightFileError(f"{what}: checkpoint tensors not understood: "
                              f"{', '.join(left[:4])}{' ...' if len(left) > 4 else ''}")


def vit_variables(sd: dict[str, np.ndarray], *, num_heads: int | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """({"params": ...}, vit.Model kwargs) of a ViT state dict in any of the three naming
    schemes. An MAE checkpoint gives its encoder (the decoder and mask token are not used)."""
    sd = to_timm_names(sd)
    params, kwargs, used, _ = _encoder(sd, num_heads)
    if "head.weight" in sd:
        params["head"] = _linear(sd, "head")
        kwargs["num_classes"] = int(sd["head.weight"].shape[0])
        used |= {"head.weight", "head.bias"}
    _check_all_used(sd, used, ("decoder_", "mask_token"), "vit")
    return {"params": params}, kwargs


def mae_variables(sd: dict[str, np.ndarray], *, num_heads: int | None = None,
                  decoder_heads: int | None = None, atol: float = 1e-5
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """({"params": ...}, mae.Model kwargs) of an MAE pre-training state dict (the MAE
    release's `{"model": ...}` or Hugging Face's ViTMAEForPreTraining). Position tables equal
    to MAE's sin-cos tables within `atol` give posemb="sincos2d" (not parameters); others are
    kept as learned tables (posemb="learn")."""
    from ssl_gen.models import vit

    sd = to_timm_names(sd)
    if "decoder_embed.weight" not in sd:
        raise WeightFileError("the checkpoint has no MAE decoder (decoder_embed.*): an "
                              "encoder-only release such as mae_pretrain_vit_base.pth loads "
                              "with ssl_gen.models.vit.load, for fine-tuning")
    enc, ekw, used, channels = _encoder(sd, num_heads)
    if not ekw["class_token"]:
        raise WeightFileError("an MAE checkpoint needs a cls_token")
    dwidth = int(sd["decoder_embed.weight"].shape[0])
    ddepth = _count(sd, "decoder_blocks")
    dheads = int(decoder_heads or MAE_DECODER_HEADS)
    decoder = _blocks(sd, "decoder_blocks", ddepth, dheads, dwidth)
    decoder["encoder_norm"] = {"scale": _need(sd, "decoder_norm.weight", (dwidth,)),
                               "bias": _need(sd, "decoder_norm.bias", (dwidth,))}
    params = {"encoder": enc, "decoder": decoder,
              "decoder_embed": _linear(sd, "decoder_embed"),
              "decoder_pred": _linear(sd, "decoder_pred"),
              "mask_token": _need(sd, "mask_token").reshape(1, 1, dwidth)}
    used |= {k for k in sd if k.startswith(("decoder_", "mask_token"))}
    _check_all_used(sd, used, (), "mae")
    grid = (ekw["image_size"][0] // ekw["patch_size"][0],
            ekw["image_size"][1] // ekw["patch_size"][1])
    dec_pos = _need(sd, "decoder_pos_embed").reshape(1, -1, dwidth)

    def is_sincos(table, width):
        want = np.concatenate([np.zeros((1, width)), vit.posemb_sincos_2d(*grid, width)])
        return table.shape[1:] == want.shape and np.allclose(table[0], want, atol=atol)

    sincos = is_sincos(enc["pos_embedding"], ekw["width"]) and is_sincos(dec_pos, dwidth)
    if sincos:
        del enc["pos_embedding"]
    else:
        params["decoder_pos_embedding"] = dec_pos
    kwargs = dict(variant=None, image_size=ekw["image_size"], channels=int(channels),
                  patch_size=ekw["patch_size"][0], width=ekw["width"], depth=ekw["depth"],
                  num_heads=ekw["num_heads"], mlp_dim=ekw["mlp_dim"], decoder_width=dwidth,
                  decoder_depth=ddepth, decoder_heads=dheads,
                  decoder_mlp_dim=int(_need(sd, "decoder_blocks.0.mlp.fc1.weight").shape[0]),
                  posemb="sincos2d" if sincos else "learn")
    if ekw["patch_size"][0] != ekw["patch_size"][1]:
        raise WeightFileError(f"MAE with a non-square patch {ekw['patch_size']} is not "
                              "supported")
    return {"params": params}, kwargs


def is_ssl_gen_file(path: str) -> bool:
    """Whether `path` is a safetensors file of ssl_gen's '/'-joined variable keys."""
    if zipfile.is_zipfile(path):
        return False
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="np") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError):
        return True  # let weights.load say what is wrong with it
    return bool(keys) and all("/" in k for k in keys)
