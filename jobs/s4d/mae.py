"""S4D's dual-modal masked autoencoder (VideoMAE): tube masking at a high ratio, a light
decoder that sees the visible tokens plus mask tokens, MSE on the normalised pixels of the
masked tubelets only. Static images are two-frame clips, so one model learns from both."""

from __future__ import annotations

import torch
from torch import nn

from jobs.s4d.video_vit import Block, VideoViT, sincos_table


def tube_mask(batch: int, time_tokens: int, spatial: int, ratio: float, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tube masking: the same spatial positions are hidden in every temporal token row, so a patch
    cannot be copied from its neighbour in time. Returns (keep, masked) flat token indices."""
    n_keep = max(1, int(round(spatial * (1 - ratio))))
    order = torch.rand(batch, spatial, generator=generator).argsort(dim=1)
    rows = torch.arange(time_tokens)[None, :, None] * spatial

    def flat(idx: torch.Tensor) -> torch.Tensor:
        return (rows + idx[:, None, :]).reshape(batch, -1)

    return flat(order[:, :n_keep].sort(1).values), flat(order[:, n_keep:].sort(1).values)


class VideoMAE(nn.Module):
    def __init__(self, encoder: VideoViT, decoder_dim: int = 64, decoder_depth: int = 1, decoder_heads: int = 4,
                 mask_ratio: float = 0.9) -> None:
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        self.to_decoder = nn.Linear(encoder.dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos", sincos_table(encoder.pos.shape[0], decoder_dim), persistent=False)
        self.blocks = nn.ModuleList(Block(decoder_dim, decoder_heads) for _ in range(decoder_depth))
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, encoder.tubelet * encoder.patch**2)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def targets(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-tubelet pixels, each normalised by its own mean and std (VideoMAE's target)."""
        enc = self.encoder
        if clips.shape[1] == 1:
            clips = clips.repeat(1, enc.tubelet, 1, 1)
        b, t, h, w = clips.shape
        p, q = enc.patch, enc.tubelet
        x = clips.reshape(b, t // q, q, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, q * p * p)
        return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()

    def forward(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The reconstruction loss of one batch of clips (or images, (B, 1, H, W))."""
        enc = self.encoder
        time_tokens = max(clips.shape[1], enc.tubelet) // enc.tubelet
        keep, masked = tube_mask(clips.shape[0], time_tokens, enc.spatial, self.mask_ratio, generator)
        visible = self.to_decoder(enc(clips, keep))
        b, n = clips.shape[0], time_tokens * enc.spatial
        full = self.mask_token.expand(b, n, -1).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, full.shape[-1]), visible)
        x = full + self.pos[:n]
        for block in self.blocks:
            x = block(x)
        pred = self.head(self.norm(x))
        idx = masked[..., None].expand(-1, -1, pred.shape[-1])
        return ((torch.gather(pred, 1, idx) - torch.gather(self.targets(clips), 1, idx)) ** 2).mean()
