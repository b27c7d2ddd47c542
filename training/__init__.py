"""How a model is made: data, augmentation, fitting, the paper's protocols, recipe selection.

Everything here reads AMi-Br train only (``training.trainset`` opens no other folder), so the
held-out sets cannot enter training, model selection, thresholds or early stopping.
"""
