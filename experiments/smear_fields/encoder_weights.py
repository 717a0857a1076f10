"""Write the encoder of a trained smp model's checkpoint as a state dict for model.encoder_weights=PATH.

Usage: python experiments/smear_fields/encoder_weights.py RUN/checkpoints/last.ckpt OUT.pt
(the fine-tuning part of run_cpu.sh: the synthetic run's encoder starts the real-field training).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bloodseg.training.checkpoints import read_checkpoint


def main(checkpoint: str, out: str) -> None:
    """Keep the checkpoint's ``...encoder.*`` weights under ``encoder.*`` names and save them."""
    state = read_checkpoint(Path(checkpoint))["state_dict"]
    encoder = {"encoder." + k.split(".encoder.", 1)[1]: v for k, v in state.items() if ".encoder." in k}
    if not encoder:
        raise SystemExit(f"{checkpoint} holds no encoder weights (not an smp model?)")
    torch.save(encoder, out)
    print(f"{len(encoder)} encoder tensors from {checkpoint} -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
