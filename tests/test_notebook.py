"""vit_jax.ipynb runs end to end on CPU (a tiny model, a few steps), so it cannot rot."""

import base64
import io
import os
import re

import nbformat
from nbclient import NotebookClient
from PIL import Image

from conftest import REPO

NOTEBOOK = REPO / 'vit_jax.ipynb'


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert "if 'google.colab' in sys.modules:" in code[0].source  # Colab set-up: no-op here


def test_notebook_executes_end_to_end(tmp_path, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # The kernel is this interpreter (the venv), with the repository importable.
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])]))
  monkeypatch.setenv('VIT_NB_STEPS', '4')
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
  client = NotebookClient(nb, timeout=120, kernel_name='python3',
                          resources={'metadata': {'path': str(REPO)}})
  client.execute()

  text = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                   for o in c.outputs if o.output_type == 'stream' and o.name == 'stdout')
  assert re.search(r'church.*\.JPEG: .+ \(\d+\.\d%\)', text) or re.search(
      r'n03028079.*: .+ \(\d+\.\d%\)', text), text
  m = re.search(r'imagenette: eval accuracy (\d\.\d+) after 4 steps', text)
  assert m, text
  assert 0 <= float(m[1]) <= 1
  # The fine-tuned model's names are the dataset's (Imagenette folder names = wnids).
  assert re.search(r': n\d{8} \(\d+\.\d%\), n\d{8}', text), text
  pngs = [o['data']['image/png'] for c in nb.cells if c.cell_type == 'code'
          for o in c.outputs if o.output_type == 'display_data' and 'image/png' in o['data']]
  assert len(pngs) == 4  # attention, patch PCs, position similarity, attention after tuning
  sizes = [Image.open(io.BytesIO(base64.b64decode(p))).size for p in pngs]
  # Inline figures are cropped to their content ('tight'): attention ones are 3:2-ish.
  assert all(w > 1.2 * h for w, h in (sizes[0], sizes[3])), sizes
  assert all(min(s) > 200 for s in sizes), sizes
