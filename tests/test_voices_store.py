"""Custom-voice store: CRUD, persistence across restarts, ownership, limits, crash safety,
pre-loaded embedding files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import kanitts.voices.files as voice_files
from kanitts.voices import (
    Requester,
    VoiceAmbiguousError,
    VoiceInvalidError,
    VoiceLimitError,
    VoiceNameConflictError,
    VoiceNotFoundError,
    VoicePermissionError,
    VoiceStore,
    VoiceStoreLimits,
)

DIM = 128
ALICE = Requester(owner="key:aaaa")
BOB = Requester(owner="key:bbbb")
ADMIN = Requester(owner="key:admin", admin=True)
OPEN = Requester()  # API keys off


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_create_list_get_delete_and_restart(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, DIM)
    a = store.create("  Alice ", vec(1), ALICE)
    b = store.create("bob", vec(2)[None, :], ALICE)  # [1, D] is accepted
    assert a.name == "Alice" and a.owner == ALICE.owner and not a.shared
    assert a.id.startswith("voice_") and a.id != b.id
    assert [v.id for v in store.list(ALICE)] == [a.id, b.id]
    assert store.get(a.id, ALICE).embedding.tolist() == vec(1).tolist()
    assert not store.get(a.id, ALICE).embedding.flags.writeable

    reopened = VoiceStore(tmp_path, DIM)
    assert [v.meta() for v in reopened.list(ALICE)] == [a.meta(), b.meta()]
    assert np.array_equal(reopened.get(b.id, ALICE).embedding, vec(2))

    reopened.delete(a.id, ALICE)
    with pytest.raises(VoiceNotFoundError):
        reopened.get(a.id, ALICE)
    with pytest.raises(VoiceNotFoundError):
        reopened.delete(a.id, ALICE)
    assert [v.id for v in VoiceStore(tmp_path, DIM).list(ALICE)] == [b.id]
    assert files_in(tmp_path) == [f"{b.id}.safetensors"]


def test_names_are_case_insensitive_and_unique_per_owner(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, DIM)
    mine = store.create("Narrator", vec(1), ALICE)
    with pytest.raises(VoiceNameConflictError, match="already have"):
        store.create("nArRaToR", vec(2), ALICE)
    theirs = store.create("NARRATOR", vec(3), BOB)  # another owner may reuse it
    assert store.find("narrator ", ALICE).id == mine.id
    assert store.find("Narrator", BOB).id == theirs.id
    with pytest.raises(VoiceNotFoundError):
        store.find("nobody", ALICE)


@pytest.mark.parametrize("name", ["", "   ", "a(b)", "x+y", "a/b", "tab\there", "x" * 65])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(VoiceInvalidError):
        VoiceStore(tmp_path, DIM).create(name, vec(1), ALICE)


@pytest.mark.parametrize("embedding", [np.zeros(64), np.zeros((2, DIM)), np.full(DIM, np.nan)])
def test_bad_embeddings(tmp_path: Path, embedding: np.ndarray) -> None:
    with pytest.raises(VoiceInvalidError):
        VoiceStore(tmp_path, DIM).create("x", embedding, ALICE)


def test_ownership(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, DIM)
    a = store.create("secret", vec(1), ALICE)
    # another key can neither see, use, nor delete it
    assert store.list(BOB) == []
    for call in (lambda: store.get(a.id, BOB), lambda: store.find("secret", BOB), lambda: store.delete(a.id, BOB)):
        with pytest.raises(VoiceNotFoundError):
            call()
    # only an admin shares
    with pytest.raises(VoicePermissionError):
        store.set_shared(a.id, True, ALICE)
    with pytest.raises(VoicePermissionError):
        store.create("public", vec(2), ALICE, shared=True)
    assert store.set_shared(a.id, True, ADMIN).shared
    assert VoiceStore(tmp_path, DIM).get(a.id, BOB).shared  # persisted
    assert [v.id for v in store.list(BOB)] == [a.id]
    assert store.find("SECRET", BOB).id == a.id
    with pytest.raises(VoicePermissionError):
        store.delete(a.id, BOB)  # shared means usable, not deletable
    # an admin sees and deletes anything
    b = store.create("private", vec(3), BOB)
    assert {v.id for v in store.list(ADMIN)} == {a.id, b.id}
    store.delete(b.id, ADMIN)
    assert store.list(BOB) == [store.get(a.id, BOB)]


def test_shared_names_can_be_ambiguous(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, DIM)
    store.create("host", vec(1), ALICE, shared=False)
    for who in (ALICE, BOB):
        v = store.find("host", who) if who is ALICE else store.create("host", vec(2), BOB)
        store.set_shared(v.id, True, ADMIN)
    with pytest.raises(VoiceAmbiguousError, match="use the voice id"):
        store.find("host", ADMIN)
    assert store.find("host", ALICE).owner == ALICE.owner  # own voice first


def test_keys_off_everyone_is_one_owner(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, DIM)
    v = store.create("v", vec(1), OPEN)
    assert v.owner is None
    assert store.find("V", OPEN).id == v.id
    store.delete(v.id, OPEN)


def test_count_limits(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, DIM, VoiceStoreLimits(max_voices=3, max_voices_per_owner=2))
    store.create("a1", vec(1), ALICE)
    store.create("a2", vec(2), ALICE)
    with pytest.raises(VoiceLimitError, match="maximum of 2"):
        store.create("a3", vec(3), ALICE)
    store.create("b1", vec(4), BOB)
    with pytest.raises(VoiceLimitError, match="maximum of 3"):
        store.create("b2", vec(5), BOB)
    # deleting frees a place; limits also hold after a restart
    store.delete(store.find("a1", ALICE).id, ALICE)
    store.create("b2", vec(5), BOB)
    again = VoiceStore(tmp_path, DIM, VoiceStoreLimits(max_voices=3, max_voices_per_owner=2))
    with pytest.raises(VoiceLimitError):
        again.create("c", vec(6), Requester("key:cccc"))
    with pytest.raises(ValueError):
        VoiceStoreLimits(max_voices=0)


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_a_failed_write_stores_nothing_and_damages_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    store = VoiceStore(tmp_path, DIM)
    kept = store.create("kept", vec(1), ALICE)
    before = (tmp_path / f"{kept.id}.safetensors").read_bytes()
    calls = {"n": 0}
    real = {"write": os.write, "fsync": os.fsync, "replace": os.replace}[fail_at]

    def crash(*args: object) -> object:
        calls["n"] += 1
        if fail_at == "write" and calls["n"] == 1:
            real(args[0], bytes(args[1])[:100])  # half the bytes reach the disk, then the crash
        raise OSError(5, f"simulated failure at {fail_at}")

    monkeypatch.setattr(voice_files.os, fail_at, crash)
    with pytest.raises(OSError, match="simulated"):
        store.create("lost", vec(2), ALICE)
    with pytest.raises(OSError, match="simulated"):
        store.set_shared(kept.id, True, ADMIN)
    monkeypatch.undo()
    assert calls["n"] >= 2
    assert [v.name for v in store.list(ALICE)] == ["kept"] and not store.get(kept.id, ALICE).shared
    assert files_in(tmp_path) == [f"{kept.id}.safetensors"]
    assert (tmp_path / f"{kept.id}.safetensors").read_bytes() == before
    reopened = VoiceStore(tmp_path, DIM)
    assert [v.meta() for v in reopened.list(ALICE)] == [kept.meta()]
    reopened.create("lost", vec(2), ALICE)  # the name was never taken


def test_a_crash_mid_write_is_cleaned_up_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = VoiceStore(tmp_path, DIM)
    kept = store.create("kept", vec(1), ALICE)
    good = (tmp_path / f"{kept.id}.safetensors").read_bytes()
    # what a killed process can leave: an unfinished temp file ...
    (tmp_path / ".voice_dead.safetensors.0a1b2c.tmp").write_bytes(good[: len(good) // 2])
    # ... and, on a file system without atomic rename, a torn or foreign file
    (tmp_path / "voice_torn.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "voice_other.safetensors").write_bytes(good)  # holds another id
    with caplog.at_level(logging.WARNING, logger="kanitts.voices"):
        reopened = VoiceStore(tmp_path, DIM)
    assert [v.id for v in reopened.list(ADMIN)] == [kept.id]
    assert not list(tmp_path.glob(".*.tmp"))
    assert "voice_torn.safetensors" in caplog.text and "voice_other.safetensors" in caplog.text
    assert (tmp_path / "voice_torn.safetensors").exists()  # skipped, never deleted


def test_preload_pt_and_npy(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    torch.save(torch.from_numpy(vec(1)), files / "andrew.pt")  # [128]
    torch.save(torch.from_numpy(vec(2))[None].to(torch.bfloat16), files / "Katie.pt")  # [1, 128]
    np.save(files / "nova.npy", vec(3)[None])
    store = VoiceStore(tmp_path / "store", DIM)
    added = store.preload([files / "andrew.pt", files / "Katie.pt"])
    added += store.preload({"Star": files / "nova.npy"})
    assert [v.name for v in added] == ["andrew", "Katie", "Star"]
    assert np.array_equal(store.find("ANDREW", BOB).embedding, vec(1))
    assert np.abs(store.find("katie", ALICE).embedding - vec(2)).max() < 1e-2  # bf16
    assert np.array_equal(store.get(added[2].id, OPEN).embedding, vec(3))
    # stable ids, visible to every key, read-only, names reserved
    other = VoiceStore(tmp_path / "other", DIM)
    assert [v.id for v in other.preload({"Andrew": files / "andrew.pt"})] == [added[0].id]
    assert [v.name for v in store.list(BOB)] == ["andrew", "Katie", "Star"]
    with pytest.raises(VoicePermissionError):
        store.delete(added[0].id, ADMIN)
    with pytest.raises(VoicePermissionError):
        store.set_shared(added[0].id, False, ADMIN)
    with pytest.raises(VoiceNameConflictError, match="built-in"):
        store.create("STAR", vec(4), ALICE)
    with pytest.raises(VoiceNameConflictError, match="twice"):
        store.preload({"star": files / "andrew.pt"})
    assert list((tmp_path / "store").iterdir()) == []  # not persisted


def test_preload_rejects_bad_files(tmp_path: Path) -> None:
    torch.save(torch.zeros(2, DIM), tmp_path / "two.pt")
    torch.save({"emb": torch.zeros(DIM)}, tmp_path / "dict.pt")
    np.save(tmp_path / "short.npy", np.zeros(10, np.float32))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (tmp_path / "voice.wav").write_bytes(b"RIFF")
    store = VoiceStore(tmp_path / "store", DIM)
    for name, match in [("two.pt", r"shape \[2, 128\]"), ("dict.pt", "dict, not a tensor"),
                        ("short.npy", r"shape \[10\]"), ("junk.pt", "cannot be read"),
                        ("voice.wav", "expected one of"), ("missing.npy", "cannot be read")]:
        with pytest.raises(VoiceInvalidError, match=match):
            store.preload([tmp_path / name])
    assert store.list(ADMIN) == []
