"""copkit: the library behind the executable book of "The Collapse of Patches" (arXiv 2511.22281).

Each module holds one piece of the method, usable on its own.

The method:

- :mod:`copkit.tokens`      images <-> patch tokens, the book's patch size and grid, gathering,
  flips
- :mod:`copkit.entropy`     exact conditional entropies of a Gaussian token model (Eq. 1, Def. 1 /
  Eq. 8)
- :mod:`copkit.comae`       CoMAE: selector, noise injection, reconstructor, losses, masks (Eq. 2-7)
- :mod:`copkit.planted`     planted truths that score a CoMAE's selector: a mirror, image-specific
  pairs
- :mod:`copkit.rank`        PageRank on the mask graph and collapse orders (Sec. 3.2, Eq. 11-15)
- :mod:`copkit.orders`      collapse orders of a whole data set, in resumable shards
- :mod:`copkit.diffusion`   Gaussian diffusion for MAR's head: schedule, posterior, respacing, L_vlb
- :mod:`copkit.diffloss`    MAR's per-token diffusion head: timestep embedding, AdaLN MLP, DiffLoss
- :mod:`copkit.cmar`        MAR and CMAR: orders, training loss, generation (Sec. 3.3)
- :mod:`copkit.cvit`        CViT, RViT and the pruning baseline: keeping the top of the order (Sec.
  3.4)
- :mod:`copkit.curves`      accuracy over mask ratios, AuC and the Kneedle knee (Table 5, Fig. 8)
- :mod:`copkit.efficiency`  FLOPs, operator counts, timing and throughput (Sec. 5)
- :mod:`copkit.metrics`     top-k accuracy, the feature network, FID and precision/recall

Training and running:

- :mod:`copkit.recipe`      what a model hands to training: Recipe, TrainConfig, optimisers, a
  step's batch
- :mod:`copkit.step`        one training step: schedule, precision, clipping, update, EMA
- :mod:`copkit.train`       the one training loop (resume, checkpoints, divergence) and fit
- :mod:`copkit.checkpoint`  a run's files: its folder, safetensors checkpoints, metrics lines
- :mod:`copkit.pretrained`  the base models: trained once (``make pretrain``), shipped, loaded
- :mod:`copkit.dist`        torchrun: process groups, shards of the global batch
- :mod:`copkit.profiles`    the sizes of the ``smoke``, ``cpu`` and ``gpu`` profiles, device
  selection
- :mod:`copkit.config`      strict YAML/TOML configuration files
- :mod:`copkit.stages`      the method's stages as configured runs (``python -m copkit <stage>``)
- :mod:`copkit.cli`         the command line
- :mod:`copkit.mar_weights` MAR's released checkpoints -> run folders (weights only, no code)

Data:

- :mod:`copkit.data`        Fashion-MNIST (IDX files), scikit-image photos
- :mod:`copkit.imagefolder` a folder tree of images (ImageNet) read from disk
- :mod:`copkit.tokenizer`   pixel patches, or MAR's KL-16 VAE latents

The book:

- :mod:`copkit.results`     the results file every chapter writes, claims and verdicts, and their
  text (mean ± sd, tables, prose)
- :mod:`copkit.fmt`         one rule for every number the book prints, and comparison sentences
  written from their numbers
- :mod:`copkit.findings`    the paper's claims by name, and the "What we found" box written from
  the results files
- :mod:`copkit.stats`       tests, intervals, Holm, verdicts, power: the rules a verdict follows
- :mod:`copkit.viz`         the book's figures
- :mod:`copkit.io`          atomic writes
"""

__version__ = "0.1.0"
