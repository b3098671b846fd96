"""Paddle 3D-ResNet family, training loop, evaluation, export and predict."""
