"""Every configuration key vidformer knows, with its default and what it means.

Keys and sections follow PySlowFast (slowfast/config/defaults.py) so that users' configs and
scripts keep working: a YAML file holds only its differences from these defaults, and
command-line `KEY VALUE` pairs override both. A key that is not defined here is an error.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# Folder for checkpoints, logs, the resolved config and test metrics.
_C.OUTPUT_DIR = "./output"
# Seed for python, numpy and torch; each data-loader worker derives its own from it.
_C.RNG_SEED = 0
# Number of processes per node (informational; torchrun/srun decide the real world size).
_C.NUM_GPUS = 1
# Print a progress line every this many iterations.
_C.LOG_PERIOD = 10
# Use deterministic algorithms (needed for bit-exact resume; slower on GPU).
_C.DETERMINISTIC = False

# ---------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Registry name, one of vidformer.list_models().
_C.MODEL.MODEL_NAME = "mvitv2_s"
# Number of classes of the classifier head.
_C.MODEL.NUM_CLASSES = 400
# Dropout before the classifier (MViTv2 uses 0.5).
_C.MODEL.DROPOUT_RATE = 0.5
# Stochastic depth rate, increased linearly from 0 over the blocks.
_C.MODEL.DROPPATH_RATE = 0.1
# Recompute each block's activations in the backward pass to save memory.
_C.MODEL.ACT_CHECKPOINT = False
# Extra keyword arguments for the model builder, as a YAML/Python dict string, e.g. "{'embed_dim': 32}".
_C.MODEL.OVERRIDES = "{}"
# torch.compile the forward pass of training and of the test views (`--compile`); checkpoints keep the plain
# model's keys. The first steps are slower while the graph compiles (a recompile per new input shape).
_C.MODEL.COMPILE = False
# torch.compile backend: "inductor" (generated kernels), "cudagraphs", or the debugging backends "aot_eager"
# (graph capture and autograd tracing with eager kernels) and "eager" (graph capture only).
_C.MODEL.COMPILE_BACKEND = "inductor"
# inductor's mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune" (searches kernel configs, CUDA
# graphs), "max-autotune-no-cudagraphs"; other backends take only "default".
_C.MODEL.COMPILE_MODE = "default"

# ---------------------------------------------------------------------------------------------
_C.TRAIN = CfgNode()
# Run training.
_C.TRAIN.ENABLE = True
# Total batch size over all processes of one node (PySlowFast's meaning); divided by the local world size.
_C.TRAIN.BATCH_SIZE = 64
# Validate every this many epochs (single view per video).
_C.TRAIN.EVAL_PERIOD = 10
# Save a checkpoint every this many epochs (and always after the last one).
_C.TRAIN.CHECKPOINT_PERIOD = 10
# Resume from the latest checkpoint in OUTPUT_DIR/checkpoints if there is one.
_C.TRAIN.AUTO_RESUME = True
# Weights to start from (a native, PySlowFast, torchvision, timm or official checkpoint); "" for none.
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# How 2-D kernels are inflated into 3-D ones when the checkpoint is an image model: "center" or "average".
_C.TRAIN.CHECKPOINT_INFLATE = "average"
# True: take only the weights of TRAIN.CHECKPOINT_FILE_PATH and start at epoch 0 (fine-tuning).
# False: continue that training checkpoint's run (epoch, optimizer, schedule, RNG).
_C.TRAIN.CHECKPOINT_EPOCH_RESET = True
# Initial weights that fill less of the model than LoadReport.check_fit asks (`vidformer train --allow-partial`).
_C.TRAIN.ALLOW_PARTIAL = False
# Mixed precision: "none", "bf16" or "fp16" (fp16 uses loss scaling).
_C.TRAIN.MIXED_PRECISION = "none"
# Keep attention (softmax and the matmuls around it) in fp32 under autocast.
_C.TRAIN.ATTENTION_FP32 = False
# Accumulate gradients over this many iterations per optimizer step.
_C.TRAIN.GRAD_ACCUM_STEPS = 1
# Keep an exponential moving average of the weights with this decay (0 disables it).
_C.TRAIN.EMA_DECAY = 0.0
# Stop after this many consecutive skipped steps (non-finite loss or gradients; each one is logged).
_C.TRAIN.MAX_NONFINITE_STEPS = 5
# Also write a mid-epoch checkpoint when this many minutes passed since the last one (0 disables it).
_C.TRAIN.CHECKPOINT_MINUTES = 0.0
# Keep only the newest this many checkpoints; 0 keeps every epoch checkpoint and the newest 2 mid-epoch ones.
_C.TRAIN.CHECKPOINT_KEEP = 0

# ---------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
# Run the multi-view test after training (or alone with `vidformer test`).
_C.TEST.ENABLE = True
# Batch size in views for the test forward passes.
_C.TEST.BATCH_SIZE = 8
# Weights to test; "" means the last checkpoint in OUTPUT_DIR.
_C.TEST.CHECKPOINT_FILE_PATH = ""
# Temporal clips per video.
_C.TEST.NUM_ENSEMBLE_VIEWS = 5
# Spatial crops per clip (1: center crop after short side -> DATA.TRAIN_JITTER_SCALES[0]; 3: left/center/right).
_C.TEST.NUM_SPATIAL_CROPS = 1
# How per-view outputs are combined per video: "sum" (of softmax), "logits" (sum of logits) or "max".
_C.TEST.ENSEMBLE_METHOD = "sum"
# Save per-video scores and per-view logits to OUTPUT_DIR/test_scores.pt (`vidformer test --save-scores`).
_C.TEST.SAVE_RESULTS = False
# Test weights that fill less of the model than LoadReport.check_fit asks (`vidformer test --allow-partial`).
_C.TEST.ALLOW_PARTIAL = False
# Dataset split file the test reads ("test" reads test.csv; Kinetics users often point it at "val").
_C.TEST.SPLIT = "val"
# Adaptive views: a video's views run in order and stop once the mean of their softmax reaches this
# confidence (any model; 0 = off, every view runs). test_metrics.json reports the average views used.
_C.TEST.ADAPTIVE_VIEWS = 0.0

# ---------------------------------------------------------------------------------------------
# Early exit through a cascade (the DVT models) at test time: set THRESHOLDS or GFLOPS_BUDGET.
_C.DVT = CfgNode()
# Confidence thresholds (max softmax) of exits 1 .. K-1: a view leaves at the first exit reaching its
# threshold, the last exit takes the rest. Empty: no early exit (unless GFLOPS_BUDGET is set).
_C.DVT.THRESHOLDS = []
# Target average GFLOPs per view; thresholds are searched for it on the calibration split (0 = off).
_C.DVT.GFLOPS_BUDGET = 0.0
# Split ("train", "val" or "test") the thresholds are searched on, with the test-time views.
_C.DVT.CALIBRATION_SPLIT = "train"
# Folder holding the calibration split ("" = DATA.PATH_TO_DATA_DIR), for a held-out set of its own.
_C.DVT.CALIBRATION_DATA_DIR = ""

# ---------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Dataset layout: "kinetics" (CSV), "ssv2" (JSON), "folder" (folder per class), "imagefolder" (images),
# "framelist" (PySlowFast frame lists), "rawframes" (mmaction2 frame folders), "ucf101", "hmdb51" (official splits).
_C.DATA.DATASET = "kinetics"
# Folder holding train.csv / val.csv / test.csv (or the SSv2 JSON files, or class folders).
_C.DATA.PATH_TO_DATA_DIR = ""
# Prefix joined in front of every relative video path in the lists ("": relative to PATH_TO_DATA_DIR).
_C.DATA.PATH_PREFIX = ""
# Separator between path and label in the CSV lists ("" means any whitespace or a comma).
_C.DATA.PATH_LABEL_SEPARATOR = ""
# File with one class name per line (index = line number); "" uses the dataset's shipped list if any.
_C.DATA.LABEL_NAMES_FILE = ""
# Frames per clip fed to the model.
_C.DATA.NUM_FRAMES = 16
# Stride between sampled frames, in frames of a video at DATA.TARGET_FPS.
_C.DATA.SAMPLING_RATE = 4
# Frame rate that SAMPLING_RATE refers to.
_C.DATA.TARGET_FPS = 30
# Short-side range for random scale jitter during training.
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
# Use Inception-style RandomResizedCrop with these relative scales (empty: short-side jitter + crop).
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.08, 1.0]
# Aspect ratio range for RandomResizedCrop.
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]
# Crop size for training.
_C.DATA.TRAIN_CROP_SIZE = 224
# Crop size for testing.
_C.DATA.TEST_CROP_SIZE = 224
# Per-channel mean and std of the input after scaling to [0, 1].
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.STD = [0.225, 0.225, 0.225]
# Random horizontal flip in training (off for SSv2, where left/right is part of the label).
_C.DATA.RANDOM_FLIP = True
# Video decoder: "pyav", "decord" or "torchcodec".
_C.DATA.DECODING_BACKEND = "pyav"
# Sample frames TSN-style, one per equal segment (SSv2) instead of a dense clip.
_C.DATA.SEGMENT_SAMPLING = False
# Stop with an error when more than this fraction of the distinct videos read so far failed to decode
# (each broken file counted once per run however often it is drawn; over all processes).
_C.DATA.MAX_FAILED_FRACTION = 0.05
# Official split of UCF101 / HMDB51 (DATA.DATASET ucf101 or hmdb51): 1, 2 or 3.
_C.DATA.SPLIT_ID = 1
# File name of frame N in a "rawframes" folder, a Python format string (mmaction2's filename_tmpl).
_C.DATA.FRAME_TEMPLATE = "img_{:05d}.jpg"
# Number of the first frame in a "rawframes" folder (mmaction2 starts at 1).
_C.DATA.FRAME_START_INDEX = 1
# Rate the frames of "framelist" / "rawframes" videos were stored at; 0 means DATA.TARGET_FPS, so
# DATA.SAMPLING_RATE counts stored frames (mmaction2's frame_interval).
_C.DATA.FRAMES_FPS = 0.0

# ---------------------------------------------------------------------------------------------
_C.AUG = CfgNode()
# Apply RandAugment (same ops and magnitudes on every frame of a clip).
_C.AUG.ENABLE = False
# RandAugment policy string (timm style), e.g. "rand-m7-n4-mstd0.5-inc1".
_C.AUG.AA_TYPE = "rand-m7-n4-mstd0.5-inc1"
# Augmented copies of each decoded clip per iteration (repeated augmentation).
_C.AUG.NUM_SAMPLE = 1
# Random erasing probability (same box in every frame).
_C.AUG.RE_PROB = 0.0
# Random erasing fill: "pixel" (per-pixel normal noise) or "const".
_C.AUG.RE_MODE = "pixel"
# Colour jitter strength (ignored when RandAugment is on).
_C.AUG.COLOR_JITTER = 0.0

# ---------------------------------------------------------------------------------------------
_C.MIXUP = CfgNode()
# Apply mixup / cutmix on training batches.
_C.MIXUP.ENABLE = False
# Beta-distribution alpha for mixup.
_C.MIXUP.ALPHA = 0.8
# Beta-distribution alpha for cutmix.
_C.MIXUP.CUTMIX_ALPHA = 1.0
# Probability of mixing a batch at all.
_C.MIXUP.PROB = 1.0
# Probability of cutmix instead of mixup when both are on.
_C.MIXUP.SWITCH_PROB = 0.5
# Label smoothing of the targets (also used without mixup).
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1

# ---------------------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
# "adamw" or "sgd".
_C.SOLVER.OPTIMIZING_METHOD = "adamw"
# Learning rate for TRAIN.BATCH_SIZE clips per iteration (see SOLVER.LR_SCALE_BY_BATCH).
_C.SOLVER.BASE_LR = 1e-4
# Multiply BASE_LR, WARMUP_START_LR and COSINE_END_LR by (global batch / SOLVER.REFERENCE_BATCH).
_C.SOLVER.LR_SCALE_BY_BATCH = False
# The global batch size BASE_LR was tuned for.
_C.SOLVER.REFERENCE_BATCH = 512
# Epochs of training.
_C.SOLVER.MAX_EPOCH = 200
# Epochs of linear warmup from WARMUP_START_LR.
_C.SOLVER.WARMUP_EPOCHS = 30.0
_C.SOLVER.WARMUP_START_LR = 1e-6
# Learning rate at the end of the cosine schedule.
_C.SOLVER.COSINE_END_LR = 1e-6
# Weight decay (not applied to 1-D parameters, biases and the model's no_weight_decay() names).
_C.SOLVER.WEIGHT_DECAY = 0.05
# Apply zero weight decay to 1-D parameters (norms, biases).
_C.SOLVER.ZERO_WD_1D_PARAM = True
# SGD momentum and Nesterov switch.
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = True
# AdamW betas.
_C.SOLVER.BETAS = [0.9, 0.999]
# Clip the gradient L2 norm to this value (0 disables clipping).
_C.SOLVER.CLIP_GRAD_L2NORM = 1.0
# Layer-wise learning-rate decay factor (1.0 disables it).
_C.SOLVER.LAYER_DECAY = 1.0

# ---------------------------------------------------------------------------------------------
_C.BN = CfgNode()
# Convert BatchNorm layers to SyncBatchNorm under distributed training.
_C.BN.SYNC = True

# ---------------------------------------------------------------------------------------------
_C.DATA_LOADER = CfgNode()
# Worker processes per data loader.
_C.DATA_LOADER.NUM_WORKERS = 4
# Pin host memory for faster copies to the GPU.
_C.DATA_LOADER.PIN_MEMORY = True


def get_defaults() -> CfgNode:
    """A fresh copy of the defaults (safe to modify)."""
    return _C.clone()
