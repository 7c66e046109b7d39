"""Shared test settings: quiet TensorFlow, paths to the real data in ../shared."""

import os
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
