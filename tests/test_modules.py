"""Blocks: shapes, reconstruction, masking."""

import pytest
import torch

from usef.modules.conformer import ConformerSeparator
from usef.modules.cross_attention import FullBandAttention
from usef.modules.encoder import FeatureEncoder, valid_mask
from usef.modules.fusion import EmbeddingFusion
from usef.modules.speaker_encoder import SpeakerEncoder
from usef.modules.stft import STFTCodec
from usef.modules.tfgridnet import TFGridNetSeparator
from usef.modules.tfgridnet_reference import reference_forward


@pytest.mark.parametrize("n_fft,hop", [(128, 64), (256, 128), (512, 128)])
def test_stft_round_trip_reconstructs(n_fft, hop):
    codec = STFTCodec(n_fft, hop)
    wave = torch.randn(3, 8001, generator=torch.Generator().manual_seed(0))
    spec = codec.encode(wave)
    assert spec.shape == (3, 2, codec.num_frames(8001), n_fft // 2 + 1)
    assert torch.allclose(codec.decode(spec, 8001), wave, atol=1e-5)


def test_stft_rejects_bad_hop():
    with pytest.raises(ValueError, match="hop_length"):
        STFTCodec(128, 256)


def test_encoder_shape():
    assert FeatureEncoder(8)(torch.randn(2, 2, 10, 33)).shape == (2, 8, 10, 33)


def test_cross_attention_shapes_and_any_frequency_size():
    attention = FullBandAttention(channels=8, num_heads=2, qk_channels=3)
    for bins in (33, 65):  # no weight depends on F
        out = attention(torch.randn(2, 8, 7, bins), torch.randn(2, 8, 11, bins))
        assert out.shape == (2, 8, 7, bins)


def test_cross_attention_mask_ignores_padded_frames():
    torch.manual_seed(0)
    attention = FullBandAttention(channels=8, num_heads=2, qk_channels=3).eval()
    query = torch.randn(1, 8, 5, 17)
    reference = torch.randn(1, 8, 6, 17)
    padded = torch.cat((reference, 100 * torch.randn(1, 8, 4, 17)), dim=2)
    mask = ~valid_mask(torch.tensor([6]), 10)
    expected = attention(query, reference)
    assert torch.allclose(attention(query, padded, mask), expected, atol=1e-5)
    assert not torch.allclose(attention(query, padded), expected, atol=1e-3)


def test_self_attention_residual():
    attention = FullBandAttention(channels=4, num_heads=2, qk_channels=2, residual=True)
    x = torch.randn(1, 4, 3, 9)
    assert attention(x, x).shape == x.shape


def test_separator_shapes():
    x = torch.randn(2, 8, 6, 17)
    assert TFGridNetSeparator(8, 8, num_blocks=1, hidden=4, num_heads=2, qk_channels=2)(x).shape == (2, 2, 6, 17)
    assert TFGridNetSeparator(8, 16, num_blocks=1, hidden=4, num_heads=2, qk_channels=2)(x).shape == (2, 2, 6, 17)
    conformer = ConformerSeparator(8, 17, dim=16, num_layers=1, num_heads=2, ffn_dim=16, kernel_size=3)
    assert conformer(x).shape == (2, 2, 6, 17)
    with pytest.raises(ValueError, match="F=17"):
        conformer(torch.randn(2, 8, 6, 33))


@pytest.mark.parametrize("batch", [1, 3])
def test_tfgridnet_channels_last_equals_plain_reference(batch):
    torch.manual_seed(0)
    separator = TFGridNetSeparator(8, 16, num_blocks=2, hidden=8, num_heads=2, qk_channels=3).eval()
    with torch.no_grad():  # move every norm/PReLU off its identity init so each term is exercised
        for parameter in separator.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
        x = torch.randn(batch, 8, 11, 9)
        fast, plain = separator(x), reference_forward(separator, x)
    assert fast.shape == plain.shape == (batch, 2, 11, 9)
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-5 * plain.abs().max().item())


def test_tfgridnet_bf16_autocast_stays_close_to_fp32():
    from usef.models import build_model

    torch.manual_seed(0)
    model = build_model("usef_tfgridnet").eval()  # the released size: six blocks, D = H = 256
    generator = torch.Generator().manual_seed(1)
    mixture, reference = torch.randn(1, 2400, generator=generator), torch.randn(1, 2000, generator=generator)
    with torch.inference_mode():
        full = model(mixture, reference)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(mixture, reference).float()
    snr_db = 10 * torch.log10(full.pow(2).sum() / (half - full).pow(2).sum())
    assert snr_db >= 35.0, f"bf16 output only {snr_db:.1f} dB from fp32"


@pytest.mark.parametrize("fusion,channels", [("film", 8), ("multiply", 8), ("concat", 16)])
def test_fusion_shapes(fusion, channels):
    layer = EmbeddingFusion(fusion, 8, 5)
    assert layer(torch.randn(2, 8, 4, 9), torch.randn(2, 5)).shape == (2, channels, 4, 9)
    assert layer.out_channels == channels


def test_film_starts_as_identity():
    layer = EmbeddingFusion("film", 8, 5)
    x = torch.randn(2, 8, 4, 9)
    assert torch.equal(layer(x, torch.randn(2, 5)), x)


def test_unknown_fusion():
    with pytest.raises(ValueError, match="film, multiply, concat"):
        EmbeddingFusion("add", 8, 5)


def test_speaker_encoder_masked_pooling():
    encoder = SpeakerEncoder(4, 9, hidden=8, embedding_dim=6, num_blocks=0).eval()
    features = torch.randn(1, 4, 5, 9)
    padded = torch.cat((features, torch.randn(1, 4, 3, 9)), dim=2)
    expected = encoder(features)
    assert expected.shape == (1, 6)
    assert torch.allclose(encoder(padded, torch.tensor([5])), expected, atol=1e-5)
