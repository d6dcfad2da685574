"""Data loading with provenance: official files, the shipped offline CIFAR-10 subset, the JPEG copy.

Every loader can report where its pixels came from (:class:`~msparse.data.info.DataInfo`); results must carry it.

* ``load_data("cifar10", "test", n=1000)`` -> ``(x, y)``: ``x`` float32 (N, 3, 32, 32) in [0, 1],
  ``y`` int64 (N,).  Source: the official ``cifar-10-batches-py`` files if they are found (``data_dir``,
  ``$MSPARSE_DATA_DIR`` or ``./data``), else the offline subset shipped in ``msparse/assets``
  (exact official pixels: test images 0..999, training images 0..2999), sha256-verified on load.
* ``load_data(..., source="jpeg", data_dir="/path/with/cifar10_jpeg_train.npz")``: the lossy JPEG copy of
  all 50 000 + 10 000 images (for training only; never ship it, never compare test numbers from it).
* ``load_data("cifar100" | "imagenet", ..., data_dir=...)``: torchvision / RobustBench loaders on folders
  the user supplies.  Nothing is downloaded unless ``download=True`` is passed.
* :class:`~msparse.data.batches.ImageBatches`: an in-memory uint8 dataset that yields augmented float batches
  (random crop with 4-pixel zero padding + horizontal flip), deterministic per (seed, epoch).

The official CIFAR batch files are pickles, and whatever sits in ``data_dir``, ``$MSPARSE_DATA_DIR`` or
``./data`` is read, so they are never handed to ``pickle.load``: :mod:`msparse.data.official` resolves only the
numpy array globals the official files reference and refuses any other (a planted file cannot run code).
CIFAR-100 goes through torchvision, which checks each file's MD5 against the official one before unpickling.

One module per concern, and no names here (import them from their module; ``msparse.load_data`` is exported by
:mod:`msparse` itself):

* :mod:`~msparse.data.loading` -- ``load_data`` and ``load_uint8``: the front door, which picks the source;
* :mod:`~msparse.data.info` -- :class:`~msparse.data.info.DataInfo`, where a loaded array came from;
* :mod:`~msparse.data.offline` -- the exact CIFAR-10 subset shipped in ``msparse/assets``, sha256-verified;
* :mod:`~msparse.data.official` -- the official ``cifar-10-batches-py`` files, unpickled without running code;
* :mod:`~msparse.data.jpeg` -- the lossy JPEG copy of CIFAR-10 (training only);
* :mod:`~msparse.data.folders` -- CIFAR-100 and ImageNet from folders the user supplies (torchvision, RobustBench);
* :mod:`~msparse.data.batches` -- training and statistics batches: :class:`~msparse.data.batches.ImageBatches`,
  ``batches``, ``image_folder_loader``.
"""
