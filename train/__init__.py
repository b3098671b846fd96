"""Paddle 3D-ResNet family, training loop, evaluation, export and predict."""

import warnings

# Paddle warns on every import that no C++ compiler cache exists, and on every BatchNorm forward in
# training mode that it tracks running statistics; neither concerns users of this package.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean")
