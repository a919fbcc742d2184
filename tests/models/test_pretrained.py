"""Published-checkpoint import (`ssl_gen.models.pretrained`, `vit.load`, `mae.load`).

The truth is an independent implementation: Hugging Face transformers' PyTorch ViT and
ViTMAE (CPU torch), with random weights perturbed off their initial values (biases, norms
and tokens non-zero, so a transposed or swapped tensor shows). The checkpoints are written
here the way their sources write them: `save_pretrained` (the Hub's names, safetensors with
config.json), `torch.save(state_dict())` (transformers 5's names, a .pth zip), and timm / the
MAE release's names with a fused qkv, built from the same tensors (`{"model": ...}`).
Tolerance: 1e-5 absolute on float32 outputs of size ~1 (what the issue asks); the remaining
difference is float32 rounding. The reference models keep Hugging Face's LayerNorm eps 1e-12:
the Hub files carry it in config.json (read by the loader); for files without one the tests
set `layer_norm_eps=1e-12` on our model, as a user would (at our default 1e-6 the logits
move by ~1.2e-5).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the `parity` extra (make install has it): pip install -e '.[parity]'
from safetensors.numpy import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from ssl_gen.models import mae, pretrained, vit
from ssl_gen.models.weights import WeightFileError

IMAGE, PATCH, BATCH = 8, 2, 3
TOL = 1e-5
HF_EPS = 1e-12  # transformers' ViT / ViTMAE LayerNorm default


def _perturb(model, seed: int, *, skip=()):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not any(s in name for s in skip):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def hf_vit():
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=IMAGE, patch_size=PATCH, num_channels=3,
                    num_labels=5)
    return _perturb(ViTForImageClassification(cfg), 1)


@pytest.fixture(scope="module")
def hf_mae():
    torch.manual_seed(0)
    cfg = ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, image_size=IMAGE, patch_size=PATCH,
                       num_channels=3, decoder_hidden_size=16, decoder_num_hidden_layers=2,
                       decoder_num_attention_heads=2, decoder_intermediate_size=48,
                       norm_pix_loss=True, mask_ratio=0.75)
    model = _perturb(ViTMAEForPreTraining(cfg), 2, skip=("position_embeddings", "pos_embed"))
    # The fixed sin-cos tables, as transformers' `initialize_weights` builds them (its table,
    # halves rotated to the MAE release's layout); the loader should recognise them.
    for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
        t = build_2d_sinusoidal_position_embedding(height=IMAGE // PATCH, width=IMAGE // PATCH,
                                                   embed_dim=table.shape[-1], cls_token=True)
        half = t.shape[-1] // 2
        with torch.no_grad():
            table.copy_(torch.cat([t[..., half:], t[..., :half]], -1)[None])
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(BATCH, IMAGE, IMAGE, 3)).astype(np.float32)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _sd(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _timm_names(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face (transformers 5) names -> timm / MAE-release names, qkv fused as timm."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("vit.")
        k = (k.replace("embeddings.cls_token", "cls_token")
              .replace("embeddings.position_embeddings", "pos_embed")
              .replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
              .replace("decoder.decoder_layers.", "decoder_blocks.")
              .replace("decoder.", "").replace("layers.", "blocks.")
              .replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
              .replace("attention.o_proj", "attn.proj"))
        k = {"layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
             "classifier.weight": "head.weight", "classifier.bias": "head.bias"}.get(k, k)
        out[k] = v
    for key in [k for k in out if ".attention.q_proj." in k]:
        fused = key.replace(".attention.q_proj.", ".attn.qkv.")
        parts = [out.pop(key.replace("q_proj", p)) for p in ("q_proj", "k_proj", "v_proj")]
        out[fused] = np.concatenate(parts, axis=0)
    return out


def _vit_logits(path, images, **kw):
    variables, kwargs = vit.load(path, with_config=True, **kw)
    kwargs.setdefault("layer_norm_eps", HF_EPS)  # files without config.json: set by hand
    logits, _ = vit.Model(**kwargs).apply(variables, jnp.asarray(images))
    return np.asarray(logits), kwargs


# ------------------------------------------------------------------------------- the ViT


def test_vit_hub_safetensors_matches_transformers(hf_vit, images, tmp_path):
    hf_vit.save_pretrained(tmp_path / "hub")  # model.safetensors (Hub names) + config.json
    ours, kwargs = _vit_logits(str(tmp_path / "hub" / "model.safetensors"), images)
    with torch.no_grad():
        ref = hf_vit(pixel_values=_nchw(images)).logits.numpy()
    assert kwargs["num_heads"] == 2 and kwargs["num_classes"] == 5  # heads from config.json
    assert kwargs["layer_norm_eps"] == HF_EPS  # and the epsilon
    assert kwargs["image_size"] == (IMAGE, IMAGE) and kwargs["patch_size"] == (PATCH, PATCH)
    assert np.abs(ref).max() > 0.5  # a real signal, not ~0
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_vit_torch_pth_and_timm_names_match_transformers(hf_vit, images, tmp_path):
    with torch.no_grad():
        ref = hf_vit(pixel_values=_nchw(images)).logits.numpy()
    pth = tmp_path / "vit.pth"  # transformers 5's in-memory names, torch's zip format
    torch.save(hf_vit.state_dict(), pth)
    np.testing.assert_allclose(_vit_logits(str(pth), images, num_heads=2)[0], ref, atol=TOL,
                               rtol=0)
    timm = _timm_names(_sd(hf_vit))
    assert "blocks.0.attn.qkv.weight" in timm and timm["blocks.0.attn.qkv.weight"].shape == (96, 32)
    timm_pth = tmp_path / "timm.pth"  # a training checkpoint: weights under "state_dict"
    torch.save({"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in timm.items()},
                "epoch": 3, "args": argparse.Namespace(lr=0.1)}, timm_pth)
    np.testing.assert_allclose(_vit_logits(str(timm_pth), images, num_heads=2)[0], ref,
                               atol=TOL, rtol=0)
    st = tmp_path / "timm.safetensors"
    save_file(timm, str(st))
    np.testing.assert_allclose(_vit_logits(str(st), images, num_heads=2)[0], ref, atol=TOL,
                               rtol=0)


def test_vit_load_errors_are_one_line(hf_vit, tmp_path):
    pth = tmp_path / "vit.pth"
    torch.save(hf_vit.state_dict(), pth)
    with pytest.raises(WeightFileError, match="not a standard ViT width.*num_heads="):
        vit.load(str(pth))  # width 32, no config.json beside it
    sd = _timm_names(_sd(hf_vit))
    del sd["blocks.1.mlp.fc2.weight"]
    bad = tmp_path / "missing.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(WeightFileError, match="no tensor 'blocks.1.mlp.fc2.weight'"):
        vit.load(str(bad), num_heads=2)
    sd = _timm_names(_sd(hf_vit))
    sd["fc_norm.weight"] = np.ones(32, np.float32)
    save_file(sd, str(bad))
    with pytest.raises(WeightFileError, match="global-pool"):
        vit.load(str(bad), num_heads=2)
    sd = _timm_names(_sd(hf_vit))
    sd["blocks.0.attn.proj.weight"] = sd["blocks.0.attn.proj.weight"][:, :16]
    save_file(sd, str(bad))
    with pytest.raises(WeightFileError, match=r"'blocks.0.attn.proj.weight' has shape \(32, 16\)"):
        vit.load(str(bad), num_heads=2)


def test_own_files_still_round_trip(tmp_path):
    model = vit.Model(variant="tiny/2", image_size=IMAGE, num_classes=3)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, IMAGE, IMAGE, 3)))
    vit.save(str(tmp_path / "ours.safetensors"), variables)
    back, kwargs = vit.load(str(tmp_path / "ours.safetensors"), with_config=True)
    assert kwargs is None
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables), back)


# ------------------------------------------------------------------- reading torch files


def test_torch_zip_reader_layouts_dtypes_and_no_torch(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    tensors = {"t": base.t(),  # non-contiguous: a strided view of the storage
               "slice": base[1:3, 2:],  # storage offset and strides
               "bf16": torch.randn(5, generator=g).to(torch.bfloat16),
               "half": torch.randn(2, 3, generator=g).half(),
               "long": torch.arange(7), "scalar": torch.tensor(2.5),
               "shared_a": base, "shared_b": base.view(24)}  # one storage, two tensors
    path = tmp_path / "mixed.pth"
    torch.save(tensors, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` would now fail
    got = pretrained.read_state_dict(str(path))
    monkeypatch.undo()
    for k, t in tensors.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got[k].shape == tuple(t.shape), k
        np.testing.assert_array_equal(np.asarray(got[k], want.dtype), want, err_msg=k)
    assert str(got["bf16"].dtype) == "bfloat16" and got["long"].dtype == np.int64


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_reader_runs_no_code_from_the_pickle(tmp_path):
    target = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.target = target
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "payload": exploit}, path)
    got = pretrained.read_state_dict(str(path))
    assert not target.exists()
    np.testing.assert_array_equal(got["w"], np.ones(2, np.float32))


def test_reader_refuses_the_legacy_format_and_junk(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightFileError, match="legacy"):
        pretrained.read_state_dict(str(legacy))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightFileError, match="neither safetensors nor"):
        pretrained.read_state_dict(str(junk))


# ------------------------------------------------------------------------------- the MAE


def _mae_reference(hf_mae, images, key):
    noise = np.array(jax.random.uniform(key, (BATCH, (IMAGE // PATCH) ** 2)))
    with torch.no_grad():
        out = hf_mae(pixel_values=_nchw(images), noise=torch.from_numpy(noise))
    return out


def _mae_ours(path, images, key, **kw):
    variables, kwargs = mae.load(path, with_config=True, **kw)
    kwargs.setdefault("layer_norm_eps", HF_EPS)
    model = mae.Model(**kwargs)
    pred, aux = model.apply(variables, jnp.asarray(images), key=key, mask_ratio=0.75)
    loss = mae.reconstruction_loss(images, pred, aux["mask"], PATCH, norm_pix_loss=True)
    return np.asarray(pred), aux, float(loss), kwargs


@pytest.mark.parametrize("layout", ["hub", "mae_release"])
def test_mae_matches_transformers(hf_mae, images, tmp_path, layout):
    key = jax.random.PRNGKey(7)
    ref = _mae_reference(hf_mae, images, key)
    if layout == "hub":
        hf_mae.save_pretrained(tmp_path / "hub")
        path, kw = str(tmp_path / "hub" / "model.safetensors"), {}
    else:  # the MAE release: {"model": state_dict} in timm's names, torch's zip format
        path, kw = str(tmp_path / "mae_visualize.pth"), dict(num_heads=2, decoder_heads=2)
        torch.save({"model": {k: torch.from_numpy(v)
                              for k, v in _timm_names(_sd(hf_mae)).items()}}, path)
    pred, aux, loss, kwargs = _mae_ours(path, images, key, **kw)
    assert kwargs["posemb"] == "sincos2d"  # HF's tables are MAE's sin-cos: recognised
    assert kwargs["decoder_width"] == 16 and kwargs["decoder_mlp_dim"] == 48
    np.testing.assert_array_equal(np.asarray(aux["mask"]), ref.mask.numpy())
    np.testing.assert_array_equal(np.asarray(aux["ids_restore"]), ref.ids_restore.numpy())
    np.testing.assert_allclose(pred, ref.logits.numpy(), atol=TOL, rtol=0)
    assert abs(loss - float(ref.loss)) < TOL


def test_mae_learned_tables_are_kept(hf_mae, images, tmp_path):
    sd = _timm_names(_sd(hf_mae))
    rng = np.random.default_rng(3)
    for k in ("pos_embed", "decoder_pos_embed"):
        sd[k] = sd[k] + 0.1 * rng.normal(size=sd[k].shape).astype(np.float32)
    path = tmp_path / "learned.safetensors"
    save_file(sd, str(path))
    variables, kwargs = mae.load(str(path), num_heads=2, decoder_heads=2, with_config=True)
    assert kwargs["posemb"] == "learn"
    np.testing.assert_array_equal(variables["params"]["decoder_pos_embedding"],
                                  sd["decoder_pos_embed"])
    np.testing.assert_array_equal(variables["params"]["encoder"]["pos_embedding"],
                                  sd["pos_embed"])


def test_mae_release_encoder_loads_into_vit(hf_mae, images, tmp_path):
    """The fine-tuning path: vit.load of an MAE checkpoint gives its encoder; the class
    token's output equals transformers' (independent of the masking shuffle at ratio 0)."""
    sd = _timm_names(_sd(hf_mae))
    path = tmp_path / "mae.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    variables, kwargs = vit.load(str(path), num_heads=2, with_config=True)
    assert "head" not in variables["params"] and kwargs["num_classes"] == 0
    ours = vit.Model(**kwargs, layer_norm_eps=HF_EPS).apply(variables, jnp.asarray(images),
                                     method=vit.Model.features)
    hf_mae.config.mask_ratio = 0.0
    try:
        with torch.no_grad():
            ref = hf_mae.vit(pixel_values=_nchw(images)).last_hidden_state[:, 0].numpy()
    finally:
        hf_mae.config.mask_ratio = 0.75
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL, rtol=0)
    encoder_only = tmp_path / "mae_pretrain.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith(("decoder", "mask"))},
              str(encoder_only))
    with pytest.raises(WeightFileError, match="no MAE decoder.*vit.load"):
        mae.load(str(encoder_only), num_heads=2)


def test_init_from_a_published_checkpoint_at_another_resolution(hf_vit, tmp_path):
    """`config.init_from` with a timm-format .pth: the run's ViT (12x12 images: a 6x6 grid
    where the checkpoint has 4x4) loads every tensor, the position table interpolated by
    vit.resize_loaded (its grid rows equal to a direct resize_posemb of the file's table).
    init_from passes no num_heads: a width outside the standard table needs a config.json
    beside the file, which the loader reads."""
    import json

    from ssl_gen.train import init
    from tests.train.test_init import _state

    sd = _timm_names(_sd(hf_vit))
    path = tmp_path / "timm_b.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    with pytest.raises(init.ConfigError, match="pass num_heads="):
        init.initialize_from(str(path), _state({}), model_name="vit")
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 2}))
    run = vit.Model(variant=None, width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=PATCH,
                    image_size=12, num_classes=5)
    fresh = jax.device_get(run.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 3)))["params"])
    state, report = init.initialize_from(str(path), _state(fresh), model_name="vit")
    got = state["params"]["params"]
    assert "read by ssl_gen.models.vit.load" in report
    np.testing.assert_array_equal(got["head"]["kernel"], sd["head.weight"].T)
    np.testing.assert_array_equal(got["cls"], sd["cls_token"])
    want = vit.resize_posemb(sd["pos_embed"], (6, 6), num_prefix=1)
    assert got["pos_embedding"].shape == (1, 37, 32)
    np.testing.assert_allclose(got["pos_embedding"], want, atol=1e-6)

