"""Short-time Fourier transform codec on ``torch.stft`` / ``torch.istft``."""

from __future__ import annotations

import torch
from torch import nn


class STFTCodec(nn.Module):
    """Waveform <-> stacked real/imaginary spectrogram.

    A Hann window with ``center=True`` is used so that ``decode(encode(x), len(x))``
    reconstructs ``x`` up to float rounding (the window satisfies the COLA/NOLA
    condition for any hop <= n_fft / 2).

    Args:
        n_fft: FFT size; ``F = n_fft // 2 + 1`` bins.
        hop_length: frame shift in samples.
        win_length: window length in samples (defaults to ``n_fft``).

    Shape:
        - encode: ``(B, T)`` -> ``(B, 2, T_frames, F)`` with channel 0 real, 1 imaginary.
        - decode: ``(B, 2, T_frames, F)`` -> ``(B, T)``.
    """

    def __init__(self, n_fft: int = 256, hop_length: int = 128, win_length: int | None = None) -> None:
        super().__init__()
        win_length = win_length or n_fft
        if not 0 < hop_length <= win_length <= n_fft:
            raise ValueError(
                f"STFT needs 0 < hop_length <= win_length <= n_fft, got hop_length={hop_length}, "
                f"win_length={win_length}, n_fft={n_fft}"
            )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        # Not a parameter and not saved: the window is a pure function of the config.
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (``center=True``)."""
        return num_samples // self.hop_length + 1

    def spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(B, T)`` -> ``(B, F, T_frames)`` (what :meth:`encode` stacks)."""
        return torch.stft(
            wave.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            return_complex=True,
        )

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`spectrum`: complex ``(B, F, T_frames)`` -> ``(B, length)``."""
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            length=length,
        )

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        # (B, T)
        spec = self.spectrum(wave)
        # (B, F, T_frames) complex -> (B, 2, T_frames, F) real
        return torch.stack((spec.real, spec.imag), dim=1).transpose(2, 3).contiguous()

    def decode(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        # (B, 2, T_frames, F)
        complex_spec = torch.complex(spec[:, 0].float(), spec[:, 1].float()).transpose(1, 2)
        # (B, F, T_frames) -> (B, T)
        return self.inverse(complex_spec, length)
