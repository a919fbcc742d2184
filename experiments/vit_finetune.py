r"""Fine-tune a ViT classifier on the digits, from an MAE pre-training run or from scratch.

The encoder is `experiments/mae.py`'s (same widths, patch 2, MAE initializers, fixed sin-cos
position table); `init=PATH` loads its weights from that run's newest checkpoint through
`config.init_from`, mapping the MAE's `encoder/...` subtrees onto the classifier's
(embedding, class token, blocks and final norm); the head starts fresh. Without `init` the
same classifier trains from its random initialization: the supervised baseline the
fine-tuned number is read against.

The recipe is MAE's fine-tuning (He et al. 2022, Table 9), shortened: AdamW (b2 0.999),
weight decay 0.05 on weights only, lr = base_lr x batch / 256, warmup then cosine,
layer-wise lr decay 0.75 (the block i of L gets 0.75^(L - i) of the head's lr, the
embeddings 0.75^(L + 1); MAE's `param_groups_lrd`), drop path 0.1, label smoothing 0.1,
average pooling of the patch tokens (MAE's `global_pool`; its extra fc_norm LayerNorm is
not used: the encoder's final norm is loaded instead). No mixup / cutmix / RandAugment.
Test accuracy on the 360 held-out digits (`evals/accuracy.py`).

Launch (after `python -m ssl_gen.train.main --config=experiments/mae.py --workdir=runs/mae`):

  python -m ssl_gen.train.main --config=experiments/vit_finetune.py:init=runs/mae \
    --workdir=runs/mae_finetune
  python -m ssl_gen.train.main --config=experiments/vit_finetune.py --workdir=runs/vit_scratch

Variants:
  digits     the default (with init=PATH: from that MAE run; without: from scratch)
  cifar10    tfds `cifar10`: from `mae.py:cifar10` (init=DIR) or a published ViT (pretrained=FILE)
  imagenet   tfds `imagenet2012`: ViT-B/16 from `mae.py:imagenet` (init=DIR), MAE's recipe
  runlocal   the tiny encoder of `mae.py:runlocal`, a few steps (combine: `runlocal,init=DIR`)

`:cifar10` fine-tunes `mae.py:cifar10`'s encoder with MAE's ViT-B recipe (Table 9): batch
1024, base_lr 5e-4, layer decay 0.65, 100 epochs with 5 of warmup (4,883 and 244 steps),
drop path 0.1, label smoothing 0.1, random resized crops (0.08, 1) and flips, bf16 compute:

  python -m ssl_gen.main --config=experiments/vit_finetune.py:cifar10,init=runs/mae_cifar10 \
    --workdir=runs/mae_cifar10_ft --config.dataset.data_dir=DIR

`pretrained=FILE` starts from a published checkpoint read by `ssl_gen.models.vit.load`
(`models/pretrained.py`: timm `.safetensors` / `.pth`, a Hugging Face `model.safetensors`
with its config.json, the MAE release's `mae_pretrain_vit_base.pth`), no PyTorch needed: a
ViT-B/16 at 224 px with a learned position table; its embedding, class token, position table
and blocks load, the head starts fresh; images are upsampled to 224 by the crops and
normalized with ImageNet's mean and std, as those checkpoints were trained. With `cifar10`:

  python -m ssl_gen.main --workdir=runs/vitb_cifar10 --config.dataset.data_dir=DIR \
    --config=experiments/vit_finetune.py:cifar10,pretrained=mae_pretrain_vit_base.pth

`:imagenet` is MAE's ViT-B fine-tuning (Table 9: batch 1024, base_lr 5e-4, layer decay 0.65,
100 epochs, 5 of warmup: 125,114 and 6,256 steps; drop path 0.1, label smoothing 0.1) on
tfds `imagenet2012` prepared by the user, without mixup, cutmix, RandAugment or random
erasing (not implemented here: expect below the paper's 83.6 %); evaluation on the central
87.5 % at 224 px:

  python -m ssl_gen.main --config=experiments/vit_finetune.py:imagenet,init=runs/mae_imagenet \
    --workdir=runs/mae_imagenet_ft --config.dataset.data_dir=DIR

Another size: `--config.model.kwargs.variant=L/16` (init_from checks every shape before
anything compiles, in one line).

Override anything: `--config.num_train_steps=1000 --config.optimizer.layer_decay=1.0`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
    from experiments.mae import IMAGENET_EVAL, IMAGENET_MEAN, IMAGENET_NORM, IMAGENET_STD, encoder
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg
    from ssl_gen_experiments.mae import (
        IMAGENET_EVAL,
        IMAGENET_MEAN,
        IMAGENET_NORM,
        IMAGENET_STD,
        encoder,
    )

# MAE's `encoder/...` subtrees -> the classifier's (the head is not in the MAE).
ENCODER_MAPPING = {"embedding": "encoder/embedding", "cls": "encoder/cls",
                   "Transformer": "encoder/Transformer"}
# A published ViT's (vit.load's names are the classifier's own; the head is not loaded).
PRETRAINED_MAPPING = {k: k for k in ("embedding", "cls", "pos_embedding", "Transformer")}


def get_config(arg=None):
    arg = parse_arg(arg, digits=False, cifar10=False, imagenet=False, runlocal=False, init="",
                    pretrained="")
    if arg.init and arg.pretrained:
        raise ValueError("vit_finetune: give init=DIR (an MAE run) or pretrained=FILE, not both")
    enc = encoder(arg.runlocal, cifar10=arg.cifar10)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir=placeholder(str), train_split="train", eval_split="test",
        preprocess=({"name": "normalize", "scale": 1 / 16},)))  # as the pre-training
    c.batch_size = 128
    c.eval_batch_size = 120
    c.num_train_steps = 300  # ~27 epochs: a few minutes on 2 shared CPU cores

    c.model = ml_collections.ConfigDict(dict(name="vit", input_key="image", kwargs=dict(
        variant="tiny/2", num_classes=10, pool="gap", class_token=True, posemb="sincos2d",
        sincos_layout="mae", weight_init="mae", drop_path=0.1, **enc)))
    c.objective = ml_collections.ConfigDict(dict(name="classification", kwargs=dict(
        label_smoothing=0.1, input_key="image", label_key="label")))
    base_lr = 1e-3
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=base_lr * c.batch_size / 256, b1=0.9, b2=0.999,
        weight_decay=0.05, weight_decay_mask="no_bias_norm", schedule="warmup_cosine",
        warmup_steps=30, end_lr_factor=0.0,
        layer_decay=0.75, num_layers=enc["depth"], layer_pattern=r"encoderblock_(\d+)",
        layer_embed_pattern=r"embedding|params/cls$"))
    if arg.init:
        c.init_from = ml_collections.ConfigDict(dict(path=arg.init, mapping=ENCODER_MAPPING))
    if arg.pretrained:
        c.init_from = ml_collections.ConfigDict(dict(path=arg.pretrained,
                                                     mapping=PRETRAINED_MAPPING))
    c.evals = ml_collections.ConfigDict(dict(accuracy=dict(every_steps=100, kwargs=dict())))
    c.log_every_steps = 50
    c.checkpoint_every_steps = 300
    c.keep_checkpoints = 1
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True
    if arg.cifar10:
        batch, epoch_steps = 1024, 50_000 / 1024
        c.dataset.update(name="cifar10", preprocess=(
            {"name": "normalize", "scale": 1 / 255},
            {"name": "random_resized_crop", "size": 32, "scale": (0.08, 1.0)},
            {"name": "flip"}))
        c.model.kwargs.update(dtype="bfloat16")
        c.batch_size, c.eval_batch_size = batch, 1000
        c.num_train_steps = round(100 * epoch_steps)
        c.optimizer.update(learning_rate=5e-4 * batch / 256, warmup_steps=round(5 * epoch_steps),
                           layer_decay=0.65)
        c.evals.accuracy.every_steps = 500
        c.checkpoint_every_steps = 500
    if arg.imagenet:
        batch, epoch_steps = 1024, 1_281_167 / 1024
        c.dataset.update(name="imagenet2012", eval_split="validation", num_workers=16,
                         preprocess=({"name": "random_resized_crop", "size": 224,
                                      "scale": (0.08, 1.0)}, {"name": "flip"}, IMAGENET_NORM),
                         eval_preprocess=IMAGENET_EVAL)
        c.model.kwargs = dict(variant="B/16", image_size=224, num_classes=1000, pool="gap",
                              class_token=True, posemb="sincos2d", sincos_layout="mae",
                              weight_init="mae", drop_path=0.1, dtype="bfloat16")
        c.batch_size, c.eval_batch_size = batch, 1000
        c.num_train_steps = round(100 * epoch_steps)
        c.optimizer.update(learning_rate=5e-4 * batch / 256, warmup_steps=round(5 * epoch_steps),
                           layer_decay=0.65, num_layers=12)
        c.evals.accuracy.every_steps = 5_000
        c.log_every_steps = 500
        c.checkpoint_every_steps = 2_000
    if arg.pretrained:
        c.model.kwargs.update(posemb="learn", weight_init="vit")
        if not arg.runlocal:  # runlocal keeps its tiny model: the tests' checkpoint is tiny
            c.model.kwargs.update(variant="B/16", image_size=224, patch_size=None, width=None,
                                  depth=None, num_heads=None, mlp_dim=None)
            c.optimizer.update(num_layers=12)
            if not (arg.cifar10 or arg.imagenet):
                raise ValueError("vit_finetune: pretrained=FILE is a 3-channel ImageNet model; "
                                 "combine it with cifar10 or imagenet (or runlocal, for the "
                                 "tests)")
        if arg.cifar10 and not arg.runlocal:
            c.dataset.preprocess = (
                {"name": "normalize", "scale": 1 / 255, "mean": IMAGENET_MEAN,
                 "std": IMAGENET_STD},
                {"name": "random_resized_crop", "size": 224, "scale": (0.08, 1.0)},
                {"name": "flip"})
    if arg.runlocal:
        c.batch_size = 32
        c.num_train_steps = 10
        c.optimizer.update(learning_rate=base_lr * 32 / 256, warmup_steps=2)
        c.evals.accuracy.every_steps = 5
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
