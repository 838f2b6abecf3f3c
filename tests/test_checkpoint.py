"""Tests of probgen.checkpoint: round trips, refusal of unsafe / damaged / foreign files, atomic writes."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

import probgen
from probgen import checkpoint as ckpt
from probgen.checkpoint import (
    FAMILIES,
    CheckpointError,
    CheckpointWriteError,
    load,
    read_checkpoint,
    save,
    write_checkpoint,
)


class ToyModel(nn.Module):
    """A tiny savable model: family + JSON-safe config()."""

    family = "toy"

    def __init__(self, dim: int = 3, hidden: int = 5, activation: str = "tanh"):
        super().__init__()
        self.dim, self.hidden, self.activation = dim, hidden, activation
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "activation": self.activation}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).pow(2).mean()


class ToyModelOtherShape(nn.Module):
    """Same config keys as ToyModel, different architecture: stands for a class that changed."""

    family = "toy"

    def __init__(self, dim: int = 3, hidden: int = 5, activation: str = "tanh"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden + 1), nn.Tanh(), nn.Linear(hidden + 1, 1))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))


class NoConfigModel(nn.Module):
    family = "toy"

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


class CustomNetModel(nn.Module):
    """config() refuses (like a ScoreSDE with a user network): load needs model=."""

    family = "toy"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def config(self) -> dict:
        raise ValueError("config() is unavailable for a custom net; use load(path, model=...)")


class Evil:
    """Unpickling this creates ``path`` (stands for arbitrary code execution)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


TOY = {"toy": ToyModel}


def _toy(seed: int = 0, **kw) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(**kw)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------------------
# round trips


def test_families_table_is_the_documented_one():
    assert FAMILIES == {
        "flow": "probgen.flows:Flow", "image-flow": "probgen.flows:ImageFlow", "score-sde": "probgen.diffusion:ScoreSDE", "ddpm": "probgen.diffusion:DDPM",
        "vae": "probgen.vae:VAE", "cvae": "probgen.vae:ConditionalVAE", "ebm": "probgen.ebm:EBM",
        "rbm": "probgen.ebm:BernoulliRBM",
        "gaussian-rbm": "probgen.ebm:GaussianBernoulliRBM", "made": "probgen.flows:MADE",
        "gan": "probgen.gan:GAN", "wgan-gp": "probgen.gan:WGANGP",
        "fm": "probgen.flows:FlowMatching", "edm": "probgen.diffusion:EDM",
        "standardized": "probgen.ops.standardize:Standardized", "whitened": "probgen.ops.standardize:Whitened",
    }
    assert probgen.load is load and probgen.save is save


def test_save_load_round_trip_rebuilds_from_config(tmp_path):
    model = _toy(hidden=7)
    model.calls.fill_(5)
    path = save(tmp_path / "run" / "model.pt", model, extra={"note": "x", "scores": [1.0, 2.0]})
    assert path == tmp_path / "run" / "model.pt" and path.is_file()
    loaded = load(path, families=TOY)
    assert type(loaded) is ToyModel and loaded.config() == model.config()
    assert not loaded.training  # returned in eval mode
    _assert_same_weights(model, loaded)
    raw = read_checkpoint(path)
    assert raw["format"] == "probgen-checkpoint" and raw["format_version"] == 1
    assert raw["family"] == "toy" and raw["extra"] == {"note": "x", "scores": [1.0, 2.0]}
    assert raw["versions"]["torch"] == str(torch.__version__) and raw["training"] is None


def test_folder_path_means_checkpoint_pt_inside(tmp_path):
    model = _toy()
    written = save(tmp_path, model)  # an existing folder
    assert written == tmp_path / "checkpoint.pt"
    _assert_same_weights(load(tmp_path, families=TOY), model)
    new_folder = save(f"{tmp_path}/new_run/", model)  # a trailing separator names a folder to create
    assert new_folder == tmp_path / "new_run" / "checkpoint.pt" and new_folder.is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoint.pt"):
        load(empty, families=TOY)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.pt")


def test_families_override_accepts_import_path(tmp_path):
    save(tmp_path, _toy())
    loaded = load(tmp_path, families={"toy": f"{ToyModel.__module__}:ToyModel"})
    assert type(loaded) is ToyModel


def test_model_without_config_needs_model_argument(tmp_path):
    torch.manual_seed(1)
    model = NoConfigModel()
    save(tmp_path, model)
    with pytest.raises(CheckpointError, match=r"without a config .*load\(path, model=your_model\)"):
        load(tmp_path, families={"toy": NoConfigModel})
    target = NoConfigModel()
    assert load(tmp_path, model=target) is target
    _assert_same_weights(target, model)


def test_config_that_raises_is_recorded_and_model_argument_works(tmp_path):
    model = CustomNetModel(nn.Linear(2, 3))
    save(tmp_path, model)
    raw = read_checkpoint(tmp_path)
    assert raw["config"] is None and "custom net" in raw["config_error"]
    with pytest.raises(CheckpointError, match="custom net"):
        load(tmp_path, families={"toy": CustomNetModel})
    fresh = CustomNetModel(nn.Linear(2, 3))
    _assert_same_weights(load(tmp_path, model=fresh), model)


# ---------------------------------------------------------------------------------------------
# refusals: family, config, registry


def test_expected_family_mismatch(tmp_path):
    save(tmp_path, _toy())
    with pytest.raises(CheckpointError, match=r"holds a 'toy' model; expected 'ddpm'"):
        load(tmp_path, expected_family="ddpm", families=TOY)
    assert isinstance(load(tmp_path, expected_family="toy", families=TOY), ToyModel)


def test_given_model_of_other_family_is_refused(tmp_path):
    save(tmp_path, _toy())

    class Other(ToyModel):
        family = "flow"

    with pytest.raises(CheckpointError, match=r"holds a 'toy' model; the model passed is a 'flow' model"):
        load(tmp_path, model=Other())


def test_unknown_and_unimportable_families(tmp_path):
    save(tmp_path, _toy())
    with pytest.raises(CheckpointError, match=r"unknown model family 'toy'; known families: .*'ddpm'"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match=r"registered as probgen\.no_such_module:Toy but it cannot be imported"):
        load(tmp_path, families={"toy": "probgen.no_such_module:Toy"})


def test_config_no_longer_matching_state_dict(tmp_path):
    save(tmp_path, _toy())
    with pytest.raises(CheckpointError, match=r"weights in .* do not match the ToyModelOtherShape.*size mismatch"):
        load(tmp_path, families={"toy": ToyModelOtherShape})

    class Renamed(nn.Module):
        family = "toy"

        def __init__(self, dim: int = 3):  # lost the 'hidden' and 'activation' arguments
            super().__init__()

    with pytest.raises(CheckpointError, match=r"saved config no longer builds a Renamed"):
        load(tmp_path, families={"toy": Renamed})


def test_save_refuses_non_plain_data(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint\['extra'\]\['obj'\] is a builtins\.object"):
        save(tmp_path / "a.pt", _toy(), extra={"obj": object()})

    class BadConfig(ToyModel):
        def config(self):
            return {"net": nn.Linear(1, 1)}

    with pytest.raises(CheckpointError, match=r"BadConfig\.config\(\)\['net'\] is a torch\.nn.*JSON-safe"):
        save(tmp_path / "b.pt", BadConfig())
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        save(tmp_path / "c.pt", object())


# ---------------------------------------------------------------------------------------------
# refusals: foreign, newer, damaged, malicious files


def test_not_a_probgen_checkpoint(tmp_path):
    torch.save({"state_dict": _toy().state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="is not a probgen checkpoint"):
        load(tmp_path / "plain.pt", families=TOY)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated, corrupted or not a torch checkpoint"):
        load(tmp_path / "text.pt", families=TOY)


def test_bad_map_location_is_an_argument_error(tmp_path):
    save(tmp_path, _toy())
    with pytest.raises(ValueError, match="map_location 'gpu0' is not a torch device"):
        load(tmp_path, map_location="gpu0", families=TOY)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="map_location 'cuda' needs CUDA, which is not available"):
            read_checkpoint(tmp_path, map_location="cuda")


def test_newer_format_version_is_refused(tmp_path):
    torch.save({"format": "probgen-checkpoint", "format_version": 2, "state_dict": {}, "versions": {}},
               tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"newer probgen \(checkpoint format 2; this version reads up to 1\)"):
        read_checkpoint(tmp_path / "new.pt")


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.25, 0.5, 0.75, 0.99])
def test_truncated_checkpoint_is_refused(tmp_path, fraction):
    path = save(tmp_path / "m.pt", _toy())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError):
        load(path, families=TOY)


def test_flipped_byte_in_weights_is_detected(tmp_path):
    # torch.load does not check zip CRCs, so only the digest catches a flipped weight byte.
    model = _toy()
    path = save(tmp_path / "m.pt", model)
    data = bytearray(path.read_bytes())
    weight_bytes = model.net[0].weight.detach().numpy().tobytes()
    offset = bytes(data).find(weight_bytes)
    assert offset > 0
    data[offset + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its SHA-256 digest"):
        load(path, families=TOY)


def test_byte_flips_anywhere_never_load_silently(tmp_path):
    """Every flip is refused or (in zip padding / headers torch ignores) leaves the content unchanged."""
    model = _toy()
    path = save(tmp_path / "m.pt", model)
    original = path.read_bytes()
    reference = read_checkpoint(path)
    refused = 0
    for offset in range(0, len(original), 61):
        data = bytearray(original)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            record = read_checkpoint(path)
        except CheckpointError:
            refused += 1
            continue
        assert ckpt._digest(record) == ckpt._digest(reference), f"flip at {offset} loaded silently"
    assert refused > 0


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil_zip = tmp_path / "evil.pt"
    torch.save({"format": "probgen-checkpoint", "format_version": 1, "payload": Evil(str(marker))}, evil_zip)
    evil_legacy = tmp_path / "evil_legacy.pt"
    with open(evil_legacy, "wb") as f:
        pickle.dump({"format": "probgen-checkpoint", "payload": Evil(str(marker))}, f, protocol=2)
    for path in (evil_zip, evil_legacy):
        with pytest.raises(CheckpointError, match="refused to load"):
            load(path, families=TOY)
        with pytest.raises(CheckpointError, match="refused to load"):
            read_checkpoint(path)
    assert not marker.exists()
    # the file is genuinely malicious: an unrestricted unpickler would have run the payload
    other = tmp_path / "proof"
    torch.save({"payload": Evil(str(other))}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)["payload"].close()
    assert other.exists()


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    first = _toy(seed=0)
    path = save(tmp_path / "m.pt", first)
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")  # half-written, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*m\.pt.*No space left") as info:
        save(path, _toy(seed=1))
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same_weights(load(path, families=TOY), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_interrupted_write_removes_temp_and_reraises(tmp_path, monkeypatch):
    path = save(tmp_path / "m.pt", _toy())
    before = path.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"xx")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(path, _toy(seed=3))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions; the monkeypatched tests cover this case")
def test_read_only_folder(tmp_path):
    path = save(tmp_path / "m.pt", _toy())
    before = path.read_bytes()
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(CheckpointWriteError, match="could not write checkpoint"):
            save(path, _toy(seed=2))
    finally:
        os.chmod(tmp_path, 0o755)
    assert path.read_bytes() == before


def test_write_checkpoint_stamps_marker_and_digest(tmp_path):
    path = write_checkpoint(tmp_path / "raw.pt", {"state_dict": {}, "versions": {}, "format": "spoofed"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "probgen-checkpoint" and len(raw["sha256"]) == 64
    assert read_checkpoint(path)["state_dict"] == {}
