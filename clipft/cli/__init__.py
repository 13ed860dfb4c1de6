"""Inference command lines that need only a checkpoint (argparse + rich, no Hydra).

``clipft-predict`` classifies images with a checkpoint's own classes; ``clipft-ask`` matches
images against free text with a CLIP-style checkpoint.
"""
