"""LibriMix as a target speaker extraction dataset (each talker in turn is the target).

The layout, the metadata and the enrollment lists (usef's CSV and SpeakerBeam's
``map_mixture2enrollment``) are read by :mod:`usef.data.librimix`; see its docstring.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from usef.data import librimix as meta
from usef.data.librimix import LibriMixRow, PathLike
from usef.data.pack import load_audio

logger = logging.getLogger(__name__)

__all__ = ["Libri2MixTSE"]


class Libri2MixTSE(Dataset):
    """LibriMix mixtures with each talker as the target: item ``i`` is mixture
    ``i // n_src`` with target source ``i % n_src``.

    Items: ``mixture``, ``target``, ``interferer`` (sum of the other sources),
    ``noise`` (zeros without a noise column) float32 (T,); ``reference`` float32
    (T_ref,); ``speaker`` (LibriSpeech id), ``mixture_id`` str; ``target_index``
    and ``speaker_index`` (position in the split's sorted speaker list) int.
    ``segment_seconds`` crops a random window (training; zero-padded if shorter),
    ``None`` keeps whole utterances (evaluation). ``reference_seconds`` likewise
    crops references. Pass ``enrollment`` (a list path) for fixed dev/test references:
    the list is read if the file exists (usef's CSV or SpeakerBeam's
    ``map_mixture2enrollment``, detected), else made with ``seed`` and written there.
    ``enrollment_source`` says which references are used, for summaries: ``"speakerbeam"``,
    ``"usef"`` (a seeded usef list) or ``"random"`` (a fresh draw per epoch, training);
    ``enrollment_path`` is the list's path or None.
    """

    def __init__(self, root: PathLike, split: str = "dev", sample_rate: int = 8000, mode: str = "min",
                 mixture_type: str = "mix_clean", segment_seconds: float | None = None,
                 reference_seconds: float | None = None, enrollment: PathLike | None = None,
                 seed: int = 0, epoch: int = 0, metadata: PathLike | None = None) -> None:
        self.root = Path(root).resolve()  # relative roots would be applied twice to listed paths
        self.sample_rate = int(sample_rate)
        csv_path = metadata or meta.metadata_path(root, sample_rate, mode, split, mixture_type)
        self.rows = meta.read_metadata(csv_path, self.root)
        self.n_src = len(self.rows[0].sources)
        self.speakers = sorted({s for row in self.rows for s in row.speakers})
        self._speaker_index = {s: i for i, s in enumerate(self.speakers)}
        for name, value in (("segment_seconds", segment_seconds), ("reference_seconds", reference_seconds)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.segment_seconds, self.reference_seconds = segment_seconds, reference_seconds
        self.seed, self.epoch = int(seed), int(epoch)
        self._pool = meta._utterance_pool(self.rows)
        self.metadata = Path(csv_path)
        self._enrollment: dict[tuple[str, int], Path] | None = None
        self.enrollment_source = "random"
        self.enrollment_path: Path | None = None
        if enrollment is not None:
            self.enrollment_path = Path(enrollment)
            self._enrollment = self._load_enrollment(self.enrollment_path)

    def _load_enrollment(self, path: Path) -> dict[tuple[str, int], Path]:
        if path.exists():
            self.enrollment_source = meta.enrollment_list_format(path)
            entries = meta.read_enrollment_list(path, rows=self.rows)
        else:
            self.enrollment_source = "usef"
            entries = meta.make_enrollment_list(self.rows, self.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            meta.write_enrollment_list(path, entries, self.root)
            logger.info("wrote enrollment list %s (%d entries)", path, len(entries))
        logger.info("enrollment: %s list %s", self.enrollment_source, path)
        table = {(e.mixture_id, e.target_index): meta._resolve(e.reference_path, self.root) for e in entries}
        missing = [(r.mixture_id, k) for r in self.rows for k in range(self.n_src) if (r.mixture_id, k) not in table]
        if missing:
            raise ValueError(f"enrollment {path} has no reference for {len(missing)} targets, e.g. {missing[0]}")
        return table

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def missing_files(self) -> list[Path]:
        """Listed files that do not exist: every row's :meth:`LibriMixRow.all_paths` (noise
        included) and the fixed enrollment references, in listing order without repeats."""
        paths = [p for row in self.rows for p in row.all_paths()]
        if self._enrollment is not None:
            paths += list(self._enrollment.values())
        return [p for p in dict.fromkeys(paths) if not p.exists()]

    def _load(self, path: Path, role: str, row: LibriMixRow) -> np.ndarray:
        try:
            return load_audio(path, self.sample_rate)
        except (OSError, RuntimeError) as exc:  # soundfile's errors are RuntimeError subclasses
            if not path.exists():
                # name the role and the metadata: a bare decoder error does not say which list is stale
                raise FileNotFoundError(f"{role} file of mixture {row.mixture_id} listed in {self.metadata} "
                                        f"does not exist: {path}") from exc
            raise

    def __len__(self) -> int:
        return len(self.rows) * self.n_src

    def _crop(self, arrays: list[np.ndarray], seconds: float | None, rng, pad: bool = True) -> list[np.ndarray]:
        """Same random window of every array (all of one length), zero-padded if short and ``pad``."""
        if seconds is None:
            return arrays
        n = round(seconds * self.sample_rate)
        length = len(arrays[0])
        start = int(rng.integers(0, max(0, length - n) + 1))
        return [np.pad(a[start : start + n], (0, max(0, n - length) if pad else 0)) for a in arrays]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        row, k = self.rows[index // self.n_src], index % self.n_src
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if self._enrollment is not None:
            ref_path = self._enrollment[(row.mixture_id, k)]
        else:
            ref_path = meta._other_utterance(self._pool, row.utterances[k], rng)
        sources = [self._load(p, f"source {j + 1}", row) for j, p in enumerate(row.sources)]
        mixture = self._load(row.mixture_path, "mixture", row)
        length = min([len(mixture)] + [len(s) for s in sources])  # guard against off-by-one files
        noise = self._load(row.noise_path, "noise", row) if row.noise_path else np.zeros(length, np.float32)
        arrays = [a[:length] for a in [mixture, noise] + sources]
        interferer = sum((s for j, s in enumerate(arrays[2:]) if j != k), np.zeros(length, np.float32))
        mixture, noise, target, interferer = self._crop(arrays[:2] + [arrays[2 + k], interferer],
                                                        self.segment_seconds, rng)
        reference = self._crop([self._load(ref_path, f"enrollment of target {k + 1}", row)],
                               self.reference_seconds, rng, pad=False)[0]
        speaker = row.speakers[k]
        return {
            "mixture": mixture.astype(np.float32), "target": target.astype(np.float32),
            "reference": reference.astype(np.float32), "interferer": interferer.astype(np.float32),
            "noise": noise.astype(np.float32), "speaker": speaker,
            "speaker_index": self._speaker_index[speaker], "target_index": k, "mixture_id": row.mixture_id,
        }
