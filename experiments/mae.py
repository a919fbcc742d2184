r"""MAE pre-training (He et al. 2022) on the embedded digits, scored by frozen-feature probes.

A small ViT encoder on 2x2 patches of the 8x8 digits (16 patches; 75 % masked, so the
encoder sees 4) and a narrow decoder, trained with the paper's recipe (Sec. A.1, Table 8):
AdamW with b2 = 0.95, weight decay 0.05 on weights only (no decay on biases and norms,
`weight_decay_mask="no_bias_norm"`), lr = base_lr x batch / 256 with a linear warmup then
cosine decay per step. The representation is the encoder's class token
(`mae.Model.features`), scored every 1,000 steps and at the end by few-shot ridge
regression (1/5/10/25 shots), a weighted kNN and a linear probe, each next to the same
probe on raw pixels and on the randomly initialized encoder; `mae_images` writes the
reconstruction grids (`plots/mae_reconstructions_step<N>.png`).

Launch:

  python -m ssl_gen.train.main --config=experiments/mae.py --workdir=runs/mae

then fine-tune from it (`experiments/vit_finetune.py`):

  python -m ssl_gen.train.main --config=experiments/vit_finetune.py:init=runs/mae \
    --workdir=runs/mae_finetune

Variants:
  digits     the default: 8x8 digits, patch 2, width-128 depth-4 encoder
  photos     `labelled_photos` (32x32 crops of ten photos, labelled by photo), patch 4
  cifar10    tfds `cifar10` (prepare it first), MAE-ViT-S/4, the paper's recipe at 800 epochs
  imagenet   tfds `imagenet2012` (prepare it first), MAE-base at 224 px, the paper's recipe
  runlocal   tiny encoder and decoder, a few steps (seconds; the tests use it)

`:photos` pre-trains on the embedded labelled photo set: 32x32 RGB crops of ten photographs,
train and test crops from disjoint regions of each photo; 64 patches of 4x4, 16 seen by the
encoder; the probes classify a test crop's photograph:

  python -m ssl_gen.main --config=experiments/mae.py:photos --workdir=runs/mae_photos

Measured (2,000 steps, seed 0, 2,000 test crops): linear probe 0.678 (raw pixels 0.462,
random-init encoder 0.599), kNN k=10 0.749 (0.564, 0.722), 5-shot 0.433 (0.393, 0.329).

`photo_patches` (unlabelled crops of two photos) has no labels for the probes; `:photos` is
the labelled natural-image set.

`:cifar10` is for users who have tfds `cifar10` prepared (`tfds build cifar10
--data_dir=DIR --file_format=array_record` where there is network; nothing is downloaded at
run time) and an accelerator: a ViT-S/4 encoder (64 patches of 4x4 at 32 px) and the paper's
decoder (512 wide, 8 blocks), He et al. 2022's pre-training recipe (Table 8) with its epochs
counted on CIFAR's 50,000 images: batch 4096, base_lr 1.5e-4 (lr 2.4e-3), AdamW b2 0.95,
wd 0.05, 40 warmup epochs of 800 (488 and 9,766 steps), mask 0.75, norm_pix_loss,
random resized crops (0.2, 1) and flips, bf16 compute:

  python -m ssl_gen.main --config=experiments/mae.py:cifar10 --workdir=runs/mae_cifar10 \
    --config.dataset.data_dir=DIR

then `experiments/vit_finetune.py:cifar10,init=runs/mae_cifar10`.

`:imagenet` is the paper's ViT-B run on tfds `imagenet2012` (prepared by the user, as above):
MAE-base (ViT-B/16 encoder, decoder 512 x 8), 224 px, the recipe of Table 8 (batch 4096,
lr 2.4e-3, 40 warmup epochs of 800: 12,511 and 250,227 steps), random resized crops
(0.2, 1) and flips on images of their own sizes (`preprocess.apply` crops them one at a
time), ImageNet's mean and std; evaluation images are the central 87.5 % resized to 224.
Only the reconstruction figures are evaluated during pre-training (the probes would read
the 1.28M training images each time); evaluate with `vit_finetune.py:imagenet,init=DIR`.
Decoding and cropping run in `config.dataset.num_workers` grain processes (16 here; raise
it until the input keeps up):

  python -m ssl_gen.main --config=experiments/mae.py:imagenet --workdir=runs/mae_imagenet \
    --config.dataset.data_dir=DIR

Override anything:
`--config.num_train_steps=500 --config.objective.kwargs.mask_ratio=0.6`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg

# The encoder, shared with experiments/vit_finetune.py so a fine-tune loads it unchanged.
# 128 wide, 4 blocks: big enough to beat raw pixels, small enough to train in minutes on
# two CPU cores. ("tiny" is models.vit's test variant: 32 wide, 2 blocks.)
ENCODER = dict(width=128, depth=4, num_heads=4, mlp_dim=512)
DECODER = dict(decoder_width=64, decoder_depth=2, decoder_heads=4)
TINY_ENCODER = dict(width=32, depth=2, num_heads=2, mlp_dim=64)
TINY_DECODER = dict(decoder_width=32, decoder_depth=1, decoder_heads=2)
# `:cifar10`: ViT-S (vit.VARIANTS["S"]) with 4x4 patches, and the paper's decoder.
CIFAR_ENCODER = dict(width=384, depth=12, num_heads=6, mlp_dim=1536)
CIFAR_DECODER = dict(decoder_width=512, decoder_depth=8, decoder_heads=16)
CIFAR_PREPROCESS = ({"name": "normalize", "scale": 1 / 255},
                    {"name": "random_resized_crop", "size": 32, "scale": (0.2, 1.0)},
                    {"name": "flip"})


# `:imagenet`: MAE's pre-training augmentation (main_pretrain.py: RandomResizedCrop(224,
# scale=(0.2, 1.0)), flip, ImageNet's mean and std); evaluation: the central 87.5 %.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_NORM = {"name": "normalize", "scale": 1 / 255, "mean": IMAGENET_MEAN,
                  "std": IMAGENET_STD}
IMAGENET_PREPROCESS = ({"name": "random_resized_crop", "size": 224, "scale": (0.2, 1.0)},
                       {"name": "flip"}, IMAGENET_NORM)
IMAGENET_EVAL = ({"name": "random_resized_crop", "size": 224, "eval_crop": 0.875},
                 IMAGENET_NORM)
IMAGENET_RANGE = (-0.485 / 0.229, (1 - 0.406) / 0.225)  # what [0, 1] pixels become


def encoder(runlocal: bool = False, photos: bool = False, cifar10: bool = False) -> dict:
    """The encoder fields of mae.Model (the same names as vit.Model's)."""
    size = (dict(image_size=32, patch_size=4) if photos or cifar10
            else dict(image_size=8, patch_size=2))
    return dict(TINY_ENCODER if runlocal else CIFAR_ENCODER if cifar10 else ENCODER, **size)


def probes(every: int, *, runlocal: bool = False) -> ml_collections.ConfigDict:
    """The frozen-feature evaluations, shared by every SSL family's digits config."""
    return ml_collections.ConfigDict(dict(
        few_shot=dict(every_steps=every, kwargs=dict(shots=(1, 5, 10, 25))),
        knn=dict(every_steps=every, kwargs=dict(ks=(10, 20))),
        linear_probe=dict(every_steps=every, kwargs=dict(epochs=10 if runlocal else 90)),
    ))


def get_config(arg=None):
    arg = parse_arg(arg, digits=False, photos=False, cifar10=False, imagenet=False,
                    runlocal=False)
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Pixels to [0, 1]: the grey levels 0..16 divided by 16 (evaluations read the same).
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir=placeholder(str), train_split="train", eval_split="test",
        preprocess=({"name": "normalize", "scale": 1 / 16},)))
    c.batch_size = 128
    c.eval_batch_size = 120
    # ~360 epochs of the 1,437 training digits: about 20 minutes on 2 shared CPU cores.
    # (At 1,500 steps the features were still short of raw pixels at 5 and 10 shots.)
    c.num_train_steps = 4_000

    c.model = ml_collections.ConfigDict(dict(name="mae", input_key="image", kwargs=dict(
        variant="tiny", channels=3 if arg.photos else 1, **encoder(arg.runlocal, arg.photos),
        **(TINY_DECODER if arg.runlocal else DECODER))))
    # norm_pix_loss off: a 2x2 grey patch has 4 pixels, and normalizing each patch by its own
    # mean and variance throws away its mean intensity, most of what it holds (the paper's
    # norm_pix gain is for 16x16x3 patches).
    c.objective = ml_collections.ConfigDict(dict(name="mae", kwargs=dict(
        mask_ratio=0.75, norm_pix_loss=False, input_key="image")))

    # The recipe (He et al. 2022, Table 8): AdamW b1 0.9, b2 0.95, wd 0.05, lr = base_lr x
    # batch / 256, warmup then cosine. The paper's base_lr 1.5e-4 is for 800 epochs at batch
    # 4096; this short run uses a larger one (a few thousand updates instead of 250k).
    base_lr = 1.5e-3
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=base_lr * c.batch_size / 256, b1=0.9, b2=0.95,
        weight_decay=0.05, weight_decay_mask="no_bias_norm", schedule="warmup_cosine",
        warmup_steps=100, end_lr_factor=0.0, grad_clip_norm=None))

    every = 1_000
    c.evals = probes(every, runlocal=arg.runlocal)
    c.evals.mae_images = dict(every_steps=every, kwargs=dict(
        num=16, mask_ratio=0.75, norm_pix_loss=False, value_range=(0.0, 1.0)))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1_000
    c.keep_checkpoints = 2
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True
    if arg.photos:
        # 0..255 to [0, 1]; 10,000 training crops, so 2,000 steps are ~26 epochs.
        c.dataset.update(name="labelled_photos", preprocess=(
            {"name": "normalize", "scale": 1 / 255},))
        c.eval_batch_size = 200
        c.num_train_steps = 2_000
    if arg.cifar10:
        batch, epoch_steps = 4096, 50_000 / 4096
        c.dataset.update(name="cifar10", preprocess=CIFAR_PREPROCESS)
        c.model.kwargs.update(channels=3, dtype="bfloat16",
                              **encoder(arg.runlocal, cifar10=True),
                              **(TINY_DECODER if arg.runlocal else CIFAR_DECODER))
        c.objective.kwargs.norm_pix_loss = True  # 4x4x3 = 48 values per patch
        c.evals.mae_images.kwargs.norm_pix_loss = True
        c.batch_size, c.eval_batch_size = batch, 1000
        c.num_train_steps = round(800 * epoch_steps)  # 9,766
        c.optimizer.update(learning_rate=1.5e-4 * batch / 256,
                           warmup_steps=round(40 * epoch_steps))
        for ev in c.evals.values():
            ev.every_steps = 1_000
        c.checkpoint_every_steps = 500
    if arg.imagenet:
        batch, epoch_steps = 4096, 1_281_167 / 4096
        c.dataset.update(name="imagenet2012", train_split="train", eval_split="validation",
                         preprocess=IMAGENET_PREPROCESS, eval_preprocess=IMAGENET_EVAL,
                         num_workers=16)
        c.model.kwargs = dict(variant="base", image_size=224, channels=3, dtype="bfloat16")
        c.objective.kwargs.norm_pix_loss = True
        c.batch_size, c.eval_batch_size = batch, 1024
        c.num_train_steps = round(800 * epoch_steps)
        c.optimizer.update(learning_rate=1.5e-4 * batch / 256,
                           warmup_steps=round(40 * epoch_steps))
        c.evals = ml_collections.ConfigDict(dict(mae_images=dict(every_steps=10_000, kwargs=dict(
            num=16, mask_ratio=0.75, norm_pix_loss=True, value_range=IMAGENET_RANGE))))
        c.log_every_steps = 500
        c.checkpoint_every_steps = 2_000
    if arg.runlocal:
        c.batch_size = 32
        c.num_train_steps = 20
        c.optimizer.update(learning_rate=base_lr * 32 / 256, warmup_steps=5)
        for ev in c.evals.values():
            ev.every_steps = 10
        c.evals.few_shot.kwargs.shots = (1, 5)
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
