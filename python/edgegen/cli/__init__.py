"""``edgegen`` command line (also ``python -m edgegen``):

    edgegen train CONFIG [--preset P] [--set key=value ...] [--resume] [--run-dir DIR]
    edgegen compress CONFIG ...          (a config with a compress section: prune / QAT in training)
    edgegen compress --from RUN_DIR CONFIG  (prune / quantize a trained run without training)
    edgegen sweep CONFIG --seeds 0 1 2   (every variant x seed as nested runs; statistics table)
    edgegen eval RUN_DIR [--metrics fid,ssim,ppl,bleu] [--profile] [--device-profile rpi4]
    edgegen compare RUN_DIR... [--metrics ...] [--out DIR]
    edgegen reproduce TABLE|all [--preset cpu-smoke|cpu-small|paper] [--seeds 0 1 2] [--out DIR]
"""

from edgegen.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
