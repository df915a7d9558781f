"""The invariant space's ``topology: hiervae`` option (spaces/_hiervae*.py): motif
decomposition and assembly, vocabulary fallbacks, overfit reconstruction, deterministic
greedy decoding, configuration errors, conformance."""
import numpy as np
import pytest
import torch

from harness.core.registry import SPACES
from spaces._hiervae import HierVAE, build_vocab, fit_hiervae
from spaces._hiervae_motifs import Builder, candidates, decompose, tree_smiles
from spaces._hiervae_vocab import MotifVocab, featurize

SMALL = dict(width=16, hidden=48, depth=2, latent=8, kl=(10 ** 9, 1, 0.0, 0.0), max_steps=60)


@pytest.fixture(scope="module")
def sample_smiles():
    from rdkit import Chem

    from harness.core.data import QM9_SAMPLE_SDF

    return [Chem.MolToSmiles(m, isomericSmiles=False)
            for m in Chem.SDMolSupplier(str(QM9_SAMPLE_SDF)) if m is not None]


def _canonical(smiles):
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def test_decompose_assemble_round_trip(sample_smiles):
    """Every sample molecule (cages and fused rings included) is cut into motifs and put back
    to the same canonical SMILES; the true assembly is always among the candidates."""
    assert len(sample_smiles) == 200
    for s in sample_smiles + ["C", "CC", "c1ccccc1", "C1CC2CCC1C2", "O=[N+]([O-])c1ccccc1"]:
        tree = decompose(s)
        assert tree is not None, s
        assert tree_smiles(tree) == _canonical(s), s
        build = Builder()
        for k, key in enumerate(tree.keys):
            if k:
                p = tree.parent[k]
                assert tree.targets[k] in candidates(tree.keys[p], build.where[p], build.labels,
                                                     key, *tree.shared[k]), (s, k)
            build.add(key, tree.shared[k][0] + tree.shared[k][1], tree.targets[k])


def test_vocabulary_covers_training_molecules(sample_smiles):
    vocab, counts = build_vocab(sample_smiles[:160])
    assert counts["train_undecomposable"] == 0
    for s in sample_smiles[:160]:
        arrays = featurize(decompose(s), vocab)
        assert arrays.known and arrays.unknown == 0, s
    assert vocab.motifs[0] == vocab.attachments[0] == vocab.labels[0] == "<unk>"
    assert MotifVocab.from_state(vocab.state()).attachments == vocab.attachments


def test_unseen_motifs_never_raise(sample_smiles):
    """A vocabulary of chains only: a ring molecule, an unseen element and an unparsable
    SMILES encode (through <unk> / as zeros, counted) and decoding still returns strings."""
    vocab, _ = build_vocab(["CCO", "CCN", "CC(C)O"])
    arrays = featurize(decompose("c1ccccc1CF"), vocab)
    assert not arrays.known and arrays.unknown > 0
    torch.manual_seed(0)
    model = HierVAE(vocab, **SMALL).eval()
    z, info = model.encode_smiles(["c1ccccc1CF", "CCO", "not a smiles", None])
    assert z.shape == (4, 16) and torch.isfinite(z).all()
    assert info["undecomposable"] == 1 and info["unknown_motifs"] > 0
    assert torch.equal(z[2], torch.zeros(16)) and torch.equal(z[3], torch.zeros(16))
    out = model.decode_smiles(torch.rand(5, 16) * 2 - 1)
    assert len(out) == 5 and all(isinstance(x, str) for x in out)
    # an unfitted model (vocabulary of <unk> only) decodes to invalid molecules, no error
    assert HierVAE(MotifVocab(), **SMALL).decode_smiles(torch.zeros(2, 16)) == ["", ""]


def test_user_vocabulary_file_adds_motifs(tmp_path, sample_smiles):
    path = tmp_path / "extra.smi"
    path.write_text("# extra motifs\nc1ccc2ccccc2c1 naphthalene\nC1CCCCCCC1\n")
    plain, _ = build_vocab(sample_smiles[:20])
    merged, counts = build_vocab(sample_smiles[:20], str(path))
    assert counts["file_molecules"] == 2
    assert "C1CCCCCCC1" in merged.motifs and "C1CCCCCCC1" not in plain.motifs
    assert set(plain.motifs) <= set(merged.motifs)


@pytest.fixture(scope="module")
def overfit(sample_smiles):
    torch.manual_seed(0)
    train = sample_smiles[:8]
    model, stats = fit_hiervae(dict(SMALL, hidden=64), train, [], None, epochs=150, lr=3e-3,
                               batch_size=8, seed=0, progress=False, trainer_kwargs=None)
    return model, stats, train


def test_overfit_reconstructs_training_molecules(overfit):
    model, stats, train = overfit
    assert stats["vocabulary"]["train_used"] == 8
    assert stats["final"]["assm_acc"] > 0.9 and stats["final"]["topo_acc"] > 0.9
    assert model.exact_rate(train) >= 0.75, stats["final"]


def test_greedy_decoding_is_deterministic_and_batch_independent(overfit):
    model, _, train = overfit
    z, _ = model.encode_smiles(train)
    first = model.decode_smiles(z)
    assert model.decode_smiles(z) == first
    assert [model.decode_smiles(z[k:k + 1])[0] for k in range(len(z))] == first
    assert model.decode_smiles(z[:0]) == []


def test_root_vector_still_tells_molecules_apart_after_training(sample_smiles):
    """Regression: without the LayerNorm before the root ``tanh``, 25 Adam updates at the CPU
    default lr (5e-3) drive the pre-activation to |x| ~ 10; the ``tanh`` saturates (half the
    entries here, all of them after a few hundred updates), the root vector is nearly the same
    for every molecule and the decoder collapses onto one molecule."""
    from spaces._hiervae_vocab import collate

    torch.manual_seed(0)
    train = sample_smiles[:128]
    trees = [decompose(s) for s in train]
    vocab, _ = build_vocab(train, None, trees)
    model = HierVAE(vocab, 64, hidden=96, depth=3, latent=32, kl=(10 ** 9, 1, 0.0, 0.0))
    items = [x for x in (featurize(t, vocab) for t in trees if t is not None) if x.known]
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        batch = collate([items[k] for k in rng.choice(len(items), 32, replace=False)])
        opt.zero_grad()
        model.loss(batch)["loss"].backward()
        opt.step()
    z, _ = model.encode_smiles(train)
    assert float(z.std(0).mean()) > 0.1
    assert float((z.abs() > 0.999).float().mean()) < 0.05     # the tanh is not saturated


def test_kl_schedule_follows_the_papers_shape():
    model = HierVAE(MotifVocab(["C"], ["CC"], []), width=8, hidden=8, depth=1, latent=4,
                    kl=(10, 5, 0.1, 0.25))
    betas = []
    for step in (0, 9, 10, 14, 15, 20, 100):
        model.steps.fill_(step)
        betas.append(round(model.beta(), 6))
    assert betas == [0.0, 0.0, 0.1, 0.1, 0.2, 0.25, 0.25]


@pytest.mark.parametrize("options, message", [
    ({"topology": "jtvae"}, "topology must be 'selfies' or 'hiervae'"),
    ({"topology": "hiervae", "hier_hidden": 0}, "hier_hidden must be an integer >= 1"),
    ({"topology": "hiervae", "hier_max_steps": 1.5}, "hier_max_steps must be an integer >= 1"),
    ({"topology": "hiervae", "hier_kl": [1, 2]}, "hier_kl must be [warmup_steps"),
    ({"topology": "hiervae", "hier_lr": 0}, "hier_lr must be a number > 0"),
    ({"topology": "hiervae", "hier_vocab": "/nonexistent/motifs.smi"}, "is not a file"),
])
def test_configuration_errors_are_clear(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        SPACES.get("invariant")(**options)


def test_hiervae_invariant_space_conforms():
    """The space conformance suite with ``topology: hiervae`` (fit, symmetry, save/load,
    decode, reconstruction rows)."""
    from harness.checks.spaces import run_conformance

    report = run_conformance(SPACES.get("invariant"), options={
        "topology": "hiervae", "hier_hidden": 32, "hier_depth": 2, "hier_latent": 8,
        "epochs_topo": 3})
    print(report.table())
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert not failed, "\n".join(failed)


def test_fitted_space_reports_topology_figures(tmp_path):
    """fit -> stats carry the motif vocabulary and a validation exact-match rate; the saved
    space loads with its motif vocabulary and decodes the same molecules."""
    from harness.core.data import QM9_SAMPLE_SDF, load_dataset
    from spaces.base import Space

    data = load_dataset("sdf", path=QM9_SAMPLE_SDF, elements=("H", "C", "N", "O", "F"), report=False)
    space = SPACES.get("invariant")(data.elements, **{
        **SPACES.get("invariant").test_options(), "topology": "hiervae", "hier_hidden": 32,
        "hier_depth": 2, "hier_latent": 8, "epochs_topo": 2, "epochs_geo": 1, "max_val": 8})
    stats = space.fit(data.split("train"), data.split("val"), progress=False)
    assert stats["topology"]["vocabulary"]["motifs"] > 10
    assert 0.0 <= stats["val"]["topology_exact_match"] <= 1.0
    batch = data.split("test").batch(np.arange(6))
    latent = space.encode(batch)
    assert latent.h.shape == (6, space.topo_width + space.geo_width)
    assert "unknown_motifs" in space.last_encode_info
    space.save(tmp_path / "s")
    loaded = Space.load(tmp_path / "s")
    assert loaded.topology.vocab.motifs == space.topology.vocab.motifs
    assert torch.equal(loaded.encode(batch).h, latent.h)
    space.decode(latent)
    smiles = space.last_decode_info["smiles"]
    loaded.decode(latent)
    assert loaded.last_decode_info["smiles"] == smiles
