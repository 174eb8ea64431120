"""The HDF5 feature store: ragged (CSR) arrays per feature set, crash-safe shards, provenance.

One dataset per array (``values``, ``offsets``, ``clip_ids``, ``timestamps``, ``mask``,
``status``, ``message``) instead of one group per clip: reads are ~10x faster and a whole
feature set loads with one read per array. Extraction writes shards under a temporary name and
renames them into place only when complete, so a killed run never leaves a corrupt file and a
rerun resumes from the committed shards.

Layout: row arrays are stored *contiguous* and uncompressed by default. Every file here is
written once with known sizes (shards and the consolidated file alike), so chunking buys
nothing, while a contiguous dataset is read with one ``pread`` and can be memory-mapped
(``FeatureFile(path, mmap=True)``). Pass ``compression="gzip"|"lzf"`` (e.g. for uint8 face
crops) to get chunked, compressed datasets instead; those load with one read per array but
cannot be memory-mapped.

Modules by job: ``format`` (array names, statuses, ``ClipFeatures``, the per-clip checksum),
``provenance`` (what made a file, its hash, mismatch checks), ``files`` (fsync and rename,
disk-full), ``reader`` (``FeatureFile``), ``summary`` (what ``avemo inspect`` prints), ``writer``
(``FeatureWriter``, ``write_clips``). Import from here: ``from avemo.data.store import X``.
"""

from avemo.data.store.files import disk_full
from avemo.data.store.format import (
    CLIP_ARRAYS,
    FORMAT_VERSION,
    MISSING_MODALITY,
    ROW_ARRAYS,
    STATUSES,
    ClipFeatures,
    RaggedArrays,
    clip_digest,
)
from avemo.data.store.provenance import (
    PROVENANCE_KEYS,
    ConfigMismatchError,
    _flatten,  # noqa: F401  (workflows/predict.py flattens configs the way mismatches are named)
    check_provenance,
    config_hash,
    diff_provenance,
    expectation_diffs,
    make_provenance,
    read_provenance,
)
from avemo.data.store.reader import (
    FeatureFile,
    FeatureFileError,
    MissingFeatureFileError,
    verify_file,
)
from avemo.data.store.summary import describe
from avemo.data.store.writer import FeatureWriter, write_clips

__all__ = [
    "CLIP_ARRAYS",
    "FORMAT_VERSION",
    "MISSING_MODALITY",
    "PROVENANCE_KEYS",
    "ROW_ARRAYS",
    "STATUSES",
    "ClipFeatures",
    "ConfigMismatchError",
    "FeatureFile",
    "FeatureFileError",
    "FeatureWriter",
    "MissingFeatureFileError",
    "RaggedArrays",
    "check_provenance",
    "clip_digest",
    "config_hash",
    "describe",
    "diff_provenance",
    "disk_full",
    "expectation_diffs",
    "make_provenance",
    "read_provenance",
    "verify_file",
    "write_clips",
]
