"""Constants shared by several packages."""
from __future__ import annotations

# ImageNet channel statistics of torchvision/timm encoders (and of the pretrained ViTs' preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
