"""Topology half of the ``invariant`` space: SELFIES tokens of a molecule's 2D graph and the
GRU autoencoder ``tokens <-> z_topo`` (LDM-3DG's topology AE).

The molecule's canonical, stereo-free, heavy-atom SMILES (RDKit canonicalisation, so
permutation-invariant by construction) is written as SELFIES tokens; any token string
decodes to a molecule, so decoding never fails chemically.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.types import MolRecord
from spaces._regularizers import drop_tokens, info_nce, uniformity_loss

#: warnings of the invariant space's encode go to its logger, as before the move here
log = logging.getLogger("spaces.invariant")

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
#: every vocabulary starts with SPECIAL_TOKENS, so [EOS] always has this id
EOS_ID = SPECIAL_TOKENS.index(EOS)


# -- tokens ----------------------------------------------------------------------------------
def record_smiles(record: MolRecord) -> str | None:
    """Canonical stereo-free heavy-atom SMILES of a record's graph (bonds, charges), or None
    when RDKit cannot sanitise it. Independent of atom order by construction."""
    from harness.core.chem import canonical_smiles, record_to_mol

    if record.n_atoms == 0:
        return None
    try:
        mol = record_to_mol(record)
    except Exception:  # RDKit raises several types for bad graphs
        return None
    return canonical_smiles(mol, stereo=False, remove_hs=True)


def smiles_to_tokens(smiles: str | None) -> list[str]:
    """SELFIES tokens of a SMILES (``[]`` for None/empty). SELFIES' kekulisation failures
    fall back to non-strict encoding, which may not round-trip (counted as unknowns later)."""
    import selfies as sf

    if not smiles:
        return []
    try:
        text = sf.encoder(smiles)
    except Exception:
        try:
            text = sf.encoder(smiles, strict=False)
        except Exception:
            return []
    return list(sf.split_selfies(text)) if text else []


def tokens_to_smiles(tokens: Sequence[str]) -> str:
    """SELFIES tokens -> SMILES (may be ``""`` when the tokens place no atom)."""
    import selfies as sf

    try:
        return sf.decoder("".join(tokens)) or ""
    except Exception:
        return ""


_TOKEN_ELEMENT = re.compile(r"^\[[=#/\\]?([A-Z][a-z]?)")


def token_element(token: str) -> str | None:
    """Element symbol a SELFIES atom token places (``"[=N+1]" -> "N"``), None for
    branch/ring/special tokens."""
    if "Branch" in token or "Ring" in token or token in SPECIAL_TOKENS:
        return None
    match = _TOKEN_ELEMENT.match(token)
    return match.group(1) if match else None


def default_alphabet(elements: Sequence[str]) -> list[str]:
    """SELFIES' semantically robust alphabet restricted to ``elements`` (plus branch and ring
    tokens): the vocabulary of an unfitted space."""
    import selfies as sf

    keep = []
    for token in sorted(sf.get_semantic_robust_alphabet()):
        element = token_element(token)
        if element is None or element in elements:
            keep.append(token)
    return keep

def token_table(token_lists: Sequence[Sequence[str]], vocab: Sequence[str], max_len: int
                ) -> tuple[np.ndarray, int]:
    """``[M, max_len + 2]`` ids (``[BOS] .. [EOS]``, 0-padded; longer strings are truncated)
    and the number of unknown tokens."""
    index = {t: k for k, t in enumerate(vocab)}
    unk, bos, eos = index[UNK], index[BOS], index[EOS]
    width = max_len + 2
    table = np.zeros((len(token_lists), width), np.int64)
    unknown = 0
    for m, tokens in enumerate(token_lists):
        ids = [index.get(t, unk) for t in tokens[: max_len]]
        unknown += sum(i == unk for i in ids)
        row = [bos, *ids, eos]
        table[m, : len(row)] = row
    return table, unknown


def table_strings(table: np.ndarray, vocab: Sequence[str]) -> list[str]:
    """Token-id rows -> SELFIES strings (up to ``[EOS]``; specials dropped)."""
    index = {t: k for k, t in enumerate(vocab)}
    eos = index[EOS]
    out = []
    for row in table:
        tokens = []
        for i in row.tolist()[1:] if row[0] == index[BOS] else row.tolist():
            if i == eos or i == 0:
                break
            if vocab[i] not in SPECIAL_TOKENS:
                tokens.append(vocab[i])
        out.append("".join(tokens))
    return out


@torch.no_grad()
def encode_selfies(net: "TopologyAutoencoder", smiles: Sequence[str | None], names: Sequence[str],
                   vocab: Sequence[str], max_len: int) -> tuple[torch.Tensor, dict[str, int]]:
    """SMILES -> ``z_topo [B, width]`` through their SELFIES tokens; strings longer than
    ``max_len`` encode as the empty graph (warned). Returns the latents and counts
    (``unknown_tokens``, ``too_long``)."""
    token_lists = [smiles_to_tokens(s) for s in smiles]
    too_long = [k for k, t in enumerate(token_lists) if len(t) > max_len]
    if too_long:
        log.warning("invariant.encode: %d of %d molecules (e.g. %s) have SELFIES longer than "
                    "max_selfies_len=%d (longest %d) and are encoded as the empty graph; "
                    "refit with a larger max_selfies_len", len(too_long), len(smiles),
                    names[too_long[0]] or f"#{too_long[0]}", max_len,
                    max(len(token_lists[k]) for k in too_long))
        for k in too_long:
            token_lists[k] = []
    table, unknown = token_table(token_lists, vocab, max_len)
    length = max(2, int((table != 0).sum(1).max())) if len(table) else 2
    device = next(net.parameters()).device
    z = net.encode(torch.from_numpy(table[:, :length]).to(device))
    return z, {"unknown_tokens": int(unknown), "too_long": len(too_long)}


# -- batches ---------------------------------------------------------------------------------
@dataclass
class TokenBatch:
    """``tokens: [B, L]`` long: ``[BOS] t_1 .. t_k [EOS] [PAD] ..`` per row."""

    tokens: torch.Tensor

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.tokens.to(device))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class TokenCollate:
    """indices -> :class:`TokenBatch` from a ``[M, L]`` token table (picklable)."""

    def __init__(self, table: np.ndarray):
        self.table = table

    def __call__(self, indices) -> TokenBatch:
        rows = self.table[np.asarray(indices)]
        length = int((rows != 0).sum(1).max())
        return TokenBatch(torch.from_numpy(rows[:, :length].copy()))


# -- the network -----------------------------------------------------------------------------
class TopologyAutoencoder(nn.Module):
    """SELFIES tokens <-> ``z_topo [B, width]`` in [-1, 1].

    Encoder: embedding -> bidirectional GRU (``layers``) -> last layer's final states of both
    directions -> Linear -> tanh. Decoder: GRU whose initial state is ``tanh(Linear(z))`` and
    whose input at each step is ``[embedding(previous token), z]`` -> Linear -> token logits.
    """

    def __init__(self, vocab_size: int, width: int, hidden: int, layers: int,
                 embed_dim: int = 64, uniformity_weight: float = 0.0, latent_noise: float = 0.0,
                 gssl_weight: float = 0.0):
        super().__init__()
        self.vocab_size, self.width, self.hidden, self.layers = vocab_size, width, hidden, layers
        self.uniformity_weight, self.latent_noise = uniformity_weight, latent_noise
        self.gssl_weight = gssl_weight
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.encoder_rnn = nn.GRU(embed_dim, hidden, num_layers=layers, batch_first=True,
                                  bidirectional=True)
        self.to_latent = nn.Linear(2 * hidden, width)
        self.from_latent = nn.Linear(width, layers * hidden)
        self.decoder_rnn = nn.GRU(embed_dim + width, hidden, num_layers=layers, batch_first=True)
        self.readout = nn.Linear(hidden, vocab_size)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens: [B, L]`` (``[BOS] .. [EOS] [PAD]..``) -> ``z_topo [B, width]``."""
        body = tokens[:, 1:]                                          # drop [BOS]
        lengths = (body != 0).sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(body), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        _, h_n = self.encoder_rnn(packed)                             # [layers * 2, B, H]
        last = torch.cat([h_n[-2], h_n[-1]], -1)
        return torch.tanh(self.to_latent(last))

    def _initial_state(self, z: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.from_latent(z)).view(z.shape[0], self.layers, self.hidden)
        return h0.transpose(0, 1).contiguous()

    def logits(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, L - 1, V]`` predicting ``tokens[:, 1:]``."""
        inputs = self.embed(tokens[:, :-1])
        cond = z[:, None, :].expand(-1, inputs.shape[1], -1)
        out, _ = self.decoder_rnn(torch.cat([inputs, cond], -1), self._initial_state(z))
        return self.readout(out)

    def loss(self, batch: TokenBatch) -> dict[str, torch.Tensor]:
        tokens = batch.tokens
        z = self.encode(tokens)
        z_dec = z + self.latent_noise * torch.randn_like(z) if self.training and self.latent_noise else z
        logits = self.logits(z_dec, tokens)
        target = tokens[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1), ignore_index=0)
        with torch.no_grad():
            real = target != 0
            hit = (logits.argmax(-1) == target) | ~real
            out = {"token_acc": hit[real].float().mean() if real.any() else ce.new_zeros(()),
                   "exact": hit.all(1).float().mean()}
        loss = ce
        if self.uniformity_weight:
            uni = uniformity_loss(z)
            out["uniformity"] = uni.detach()
            loss = loss + self.uniformity_weight * uni
        if self.gssl_weight and self.training:
            # augmented view: 20 % of the SELFIES tokens dropped (node dropping on the string)
            nce = info_nce(z, self.encode(drop_tokens(tokens, EOS_ID)))
            out["gssl"] = nce.detach()
            loss = loss + self.gssl_weight * nce
        return {"loss": loss, "ce": ce.detach(), **out}

    @torch.no_grad()
    def greedy_decode(self, z: torch.Tensor, max_len: int, bos: int, eos: int,
                      banned: Sequence[int]) -> torch.Tensor:
        """Batched greedy decoding -> ``[B, <= max_len]`` token ids (``[EOS]`` then 0s at the
        end of each row). ``banned`` ids are never emitted; ``[EOS]`` not as the first token."""
        B = z.shape[0]
        state = self._initial_state(z)
        prev = torch.full((B,), bos, dtype=torch.long, device=z.device)
        done = torch.zeros(B, dtype=torch.bool, device=z.device)
        ban = torch.zeros(self.vocab_size, dtype=torch.bool, device=z.device)
        ban[list(banned)] = True
        out = []
        for step in range(max_len):
            step_in = torch.cat([self.embed(prev), z], -1)[:, None, :]
            hidden, state = self.decoder_rnn(step_in, state)
            logits = self.readout(hidden[:, 0]).masked_fill(ban, float("-inf"))
            if step == 0:
                logits[:, eos] = float("-inf")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            out.append(nxt)
            done = done | (nxt == eos)
            prev = nxt
            if bool(done.all()):
                break
        return torch.stack(out, 1) if out else torch.zeros(B, 0, dtype=torch.long)

    def greedy_decode_chunked(self, z: torch.Tensor, max_len: int, bos: int, eos: int,
                              banned: Sequence[int], chunk: int = 512) -> torch.Tensor:
        """:meth:`greedy_decode` over ``chunk`` rows at a time, on CPU -> ``[B, <= max_len]``.
        Each chunk stops at its own longest string, so tables are zero-padded to the widest
        before they are joined."""
        parts = [self.greedy_decode(z[s:s + chunk], max_len, bos, eos, banned).cpu()
                 for s in range(0, len(z), chunk)]
        if not parts:
            return torch.zeros(0, 0, dtype=torch.long)
        width = max(p.shape[1] for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])

