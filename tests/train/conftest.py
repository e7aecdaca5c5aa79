import os

import torch

# The machine's cores are shared; one thread keeps these tests small and deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
