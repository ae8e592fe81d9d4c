"""Heads trained on the feature cache (Keras heads and scikit-learn baselines)."""
