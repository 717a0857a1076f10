"""Values every layer shares (labels, normalisation, inference sizes); this module imports nothing."""

IGNORE_INDEX = 255  # label id of unlabelled pixels: left out of training and of every metric
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # per-channel RGB mean of ImageNet (inputs are normalised with it)
IMAGENET_STD = [0.229, 0.224, 0.225]  # per-channel RGB standard deviation of ImageNet
DEFAULT_MAX_WHOLE_PIXELS = 4_194_304  # 2048 x 2048: larger (scaled) images are predicted in tiles
