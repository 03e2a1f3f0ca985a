"""Training and evaluation data: speaker/noise corpora, dynamic mixing, LibriMix,
speaker-disjoint splits, mu-law packs and batching.

Importing this package needs only NumPy and torch; soundfile and soxr are imported
when an audio file is actually read or written.
"""

from usef.data.collate import collate_examples
from usef.data.dynamic_mix import (
    Crop,
    DynamicMixConfig,
    DynamicMixDataset,
    MixPlan,
    make_fixed_examples,
    speed_perturb,
    synthetic_rir,
    write_eval_set,
)
from usef.data.librimix import (
    Enrollment,
    LibriMixRow,
    make_enrollment_list,
    metadata_path,
    read_enrollment_list,
    read_metadata,
    write_enrollment_list,
)
from usef.data.librimix_dataset import Libri2MixTSE
from usef.data.pack import (
    NoiseCorpus,
    Pack,
    SpeakerCorpus,
    load_audio,
    mulaw_decode,
    mulaw_encode,
    read_pack,
    write_pack,
)
from usef.data.splits import (
    corpus_of,
    read_speaker_list,
    spanning_dev_speakers,
    speaker_disjoint_split,
    write_speaker_list,
)

__all__ = [
    "Crop",
    "DynamicMixConfig",
    "DynamicMixDataset",
    "Enrollment",
    "Libri2MixTSE",
    "LibriMixRow",
    "MixPlan",
    "NoiseCorpus",
    "Pack",
    "SpeakerCorpus",
    "collate_examples",
    "corpus_of",
    "load_audio",
    "make_enrollment_list",
    "make_fixed_examples",
    "metadata_path",
    "mulaw_decode",
    "mulaw_encode",
    "read_enrollment_list",
    "read_metadata",
    "read_pack",
    "read_speaker_list",
    "spanning_dev_speakers",
    "speaker_disjoint_split",
    "speed_perturb",
    "synthetic_rir",
    "write_enrollment_list",
    "write_eval_set",
    "write_pack",
    "write_speaker_list",
]
