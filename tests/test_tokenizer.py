"""Tokenizers: pixel patches, and MAR's KL-16 VAE through diffusers, loaded from files the tests
make (diffusers' layout and the original LDM layout MAR's kl16.ckpt uses)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

diffusers = pytest.importorskip("diffusers")

from copkit.cmar import MAR, MARConfig, mar_step_fn
from copkit.dist import Shard
from copkit.recipe import step_generator
from copkit.tokenizer import (
    KL16_CONFIG,
    MAR_LATENT_SCALE,
    KLTokenizer,
    PixelTokenizer,
    TokenSource,
    kl16_vae,
    load_kl16,
)

#: MAR's KL-16 layout (5 levels: stride 16, 2 residual blocks per level, 16 latent channels),
#: narrower so that the test is fast.
TINY = {**KL16_CONFIG, "block_out_channels": [8, 8, 16, 16, 32], "norm_num_groups": 4,
        "sample_size": 32}


def to_ldm(state: dict[str, torch.Tensor], levels: int = 5) -> dict[str, torch.Tensor]:
    """diffusers' AutoencoderKL keys -> the original LDM keys (the inverse of diffusers' converter,
    written out here from the two code bases' module names)."""
    out = {}
    for k, v in state.items():
        n = k
        n = re.sub(r"^(encoder|decoder)\.conv_norm_out", r"\1.norm_out", n)
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", n)
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample",
                   n)
        n = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)",
                   lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}", n)
        n = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0",
                   lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample", n)
        n = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)",
                   lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}", n)
        n = n.replace("conv_shortcut", "nin_shortcut")
        attn = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\."
                        r"(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)$", n)
        if attn:
            part = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                    "to_out.0": "proj_out"}[attn[2]]
            n = f"{attn[1]}.mid.attn_1.{part}.{attn[3]}"
            if part != "norm" and attn[3] == "weight":
                v = v[:, :, None, None]  # LDM's attention projections are 1 x 1 convolutions
        out[n] = v
    return out


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return kl16_vae(TINY).eval()


def outputs(model, x):
    with torch.no_grad():
        latents = model.encode(x).latent_dist.mode()
        return latents, model.decode(latents).sample


def test_pixel_tokenizer_round_trip():
    t = PixelTokenizer(patch=8, channels=3)
    x = torch.rand(2, 3, 32, 32)
    tokens = t.encode(x)
    assert tokens.shape == (2, 16, 192) and t.token_dim == 192 and t.stride == 8
    assert torch.equal(tokens[0, 5], x[0, :, 8:16, 8:16].reshape(-1))  # token 5: row 1, column 1
    assert torch.equal(t.decode(tokens, (4, 4)), x)


def test_loads_diffusers_and_original_layouts(tmp_path, vae):
    from safetensors.torch import save_file

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    want = outputs(vae, x)
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(state, tmp_path / "diffusers.safetensors")
    ldm = to_ldm(state)
    assert (any(k.startswith("encoder.down.0.block.0.") for k in ldm)
            and "encoder.mid.attn_1.q.weight" in ldm)
    save_file({"first_stage_model." + k: v.contiguous() for k, v in ldm.items()},
              tmp_path / "ldm.safetensors")
    for name in ("diffusers", "ldm"):
        got = outputs(load_kl16(tmp_path / f"{name}.safetensors", TINY), x)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_kl_tokenizer_scales_latents_as_mar(vae):
    tok = KLTokenizer(vae)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    tokens = tok.encode(x)
    assert tok.stride == 16 and tok.token_dim == 16 and tokens.shape == (3, 4, 16)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    # token 1: row 0, column 1
    torch.testing.assert_close(tokens[:, 1], z[:, :, 0, 1] * MAR_LATENT_SCALE)
    with torch.no_grad():
        torch.testing.assert_close(tok.decode(tokens, (2, 2)), vae.decode(z).sample, rtol=1e-5,
                                   atol=1e-5)
    src = TokenSource(x, tok)
    assert len(src) == 3 and torch.equal(src[torch.tensor([2, 0])], tok.encode(x[[2, 0]]))


def test_kl_tokenizer_encodes_in_float32_under_a_bf16_training_step(vae):
    tok = KLTokenizer(vae)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # copkit.train's step with precision "bf16"
        inside = tok.encode(x, torch.Generator().manual_seed(0))
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, tok.encode(x, torch.Generator().manual_seed(0)), rtol=0,
                               atol=0)


class PlantedVAE(nn.Module):
    """A stand-in for the VAE with a planted posterior: the same mean and log-variance (c, h, w) for
    every image, returned as diffusers' DiagonalGaussianDistribution (what AutoencoderKL
    returns)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.logvar = mean, logvar
        self.config = SimpleNamespace(latent_channels=mean.shape[0], block_out_channels=[1] * 5)

    def encode(self, x: torch.Tensor):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        params = torch.cat([self.mean, self.logvar])[None].expand(len(x), -1, -1, -1)
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(params))


def planted() -> tuple[KLTokenizer, torch.Tensor, torch.Tensor]:
    """The tokenizer of a planted VAE (3 channels on a 2 x 2 grid), and the tokens' mean and sd (N,
    c)."""
    mean = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0))
    logvar = torch.linspace(-3.0, 1.0, 12).reshape(3, 2, 2)
    mu = mean.flatten(1).T * MAR_LATENT_SCALE
    sd = torch.exp(0.5 * logvar).flatten(1).T * MAR_LATENT_SCALE
    return KLTokenizer(PlantedVAE(mean, logvar)), mu, sd


def test_kl_tokens_are_posterior_draws_with_a_generator_and_the_mode_without():
    tok, mu, sd = planted()
    x = torch.zeros(20000, 3, 1, 1)  # the planted VAE ignores the pixels
    # no generator: the mode, deterministic
    assert torch.equal(tok.encode(x[:5]), mu.expand(5, -1, -1))
    draws = tok.encode(x, torch.Generator().manual_seed(1))
    z = (draws - mu) / sd  # MAR's posterior.sample() * 0.2325: (mean + std * eps) * 0.2325
    assert z.mean(0).abs().max() < 5 / 20000 ** 0.5
    assert (z.std(0) - 1).abs().max() < 0.03
    from scipy import stats

    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    # the same generator, the same draws
    assert torch.equal(draws, tok.encode(x, torch.Generator().manual_seed(1)))
    # a process's rows of a global batch get the rows one process drawing the whole batch would
    whole = tok.encode(x[:16], torch.Generator().manual_seed(2))
    torch.testing.assert_close(tok.encode(x[4:8], torch.Generator().manual_seed(2),
                                          Shard(4, 8, 16)), whole[4:8],
                               rtol=0, atol=0)


def test_mar_trains_on_posterior_draws_from_the_step_generator():
    tok, mu, _ = planted()
    seen = []

    def encode(images, generator=None, shard=None):
        tokens = tok.encode(images, generator, shard)
        seen.append(tokens)
        return tokens

    torch.manual_seed(0)
    model = MAR(MARConfig(grid=(2, 2), token_dim=3, n_classes=2, width=16, enc_depth=1, dec_depth=1,
                          heads=2, buffer=1, head_width=16, head_depth=1, diffusion_steps=10))
    images, labels = torch.zeros(8, 3, 32, 32), torch.tensor([0, 1] * 4)
    step = mar_step_fn(model, images, labels, 4, seed=0, tokenizer=encode, stride=16)
    loss_a = step(3, step_generator(0, 3, "cpu"))[0]
    loss_b = step(3, step_generator(0, 3, "cpu"))[0]
    # resumable: the step's generator decides
    assert torch.equal(loss_a, loss_b) and torch.equal(seen[0], seen[1])
    step(4, step_generator(0, 4, "cpu"))
    assert not torch.equal(seen[0], seen[2])  # another step, other draws
    assert not torch.allclose(seen[0], mu.expand(4, -1, -1))  # not the mode


def test_errors_and_the_ckpt_conversion(tmp_path, vae):
    from copkit.cli import main

    with pytest.raises(FileNotFoundError, match="convert-vae"):
        load_kl16(tmp_path / "none.safetensors", TINY)
    ldm = to_ldm(vae.state_dict())
    torch.save({"model": ldm}, tmp_path / "kl16.ckpt")  # MAR's file: {"model": state dict}
    with pytest.raises(ValueError, match="never unpickled"):
        load_kl16(tmp_path / "kl16.ckpt", TINY)
    assert (main(["convert-vae", str(tmp_path / "kl16.ckpt"),
                  str(tmp_path / "kl16.safetensors")]) == 0)
    x = torch.rand(1, 3, 32, 32)
    for a, b in zip(outputs(load_kl16(tmp_path / "kl16.safetensors", TINY), x), outputs(vae, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    from safetensors.torch import save_file

    save_file({"encoder.conv_in.weight": torch.zeros(1)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="does not fit the VAE layout"):
        load_kl16(tmp_path / "wrong.safetensors", TINY)
