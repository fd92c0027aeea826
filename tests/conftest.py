"""One intra-op thread for the unit tests: their tensors are small, and on a busy 2-core machine
(CI, or chapters running beside the tests) thread hand-offs cost more than they save."""

import torch

torch.set_num_threads(1)
