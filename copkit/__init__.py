"""copkit: the library behind the executable book of "The Collapse of Patches" (arXiv 2511.22281).

Each module holds one piece of the method, usable on its own:

- :mod:`copkit.data`     Fashion-MNIST (IDX files), scikit-image photos, Gaussian random fields
- :mod:`copkit.tokens`   images <-> patch tokens, grid coordinates, flipping orders
- :mod:`copkit.entropy`  exact conditional entropies of a Gaussian token model (Eq. 1, Def. 1 / Eq. 8)
- :mod:`copkit.comae`    CoMAE: selector, noise injection, reconstructor, losses, masks (Eq. 2-7)
- :mod:`copkit.train`    the shared training loop: schedule, EMA, safetensors checkpoints, resume
- :mod:`copkit.rank`     PageRank on the mask graph and collapse orders (Sec. 3.2, Eq. 11-15)
- :mod:`copkit.orders`   collapse orders of a whole data set, in resumable shards
- :mod:`copkit.profiles` the sizes of the ``smoke``, ``cpu`` and ``gpu`` profiles, device selection
- :mod:`copkit.results`  the results files every chapter writes
- :mod:`copkit.viz`      the book's figures
"""

__version__ = "0.1.0"
