"""Fuzzing the readers of untrusted files: recipes and checkpoints (issue 12).

Valid files are mutated at random (bytes flipped, cut off, inserted, deleted,
fragments of other valid files spliced in) and fed to the readers. The
properties:

* recipes (:func:`prunefw.recipes.load_recipe`, :meth:`Recipe.from_toml`): a
  recipe, or a :class:`~prunefw.errors.RecipeError`; never another exception;
* checkpoints (:func:`prunefw.cli._reading.read_checkpoint`, ``.pt``,
  ``.safetensors`` and model directories written by prunefw): a
  :class:`~prunefw.errors.CheckpointError`, or exactly the tensors that were
  written (keys, dtypes, shapes and bytes); never another exception, never other
  tensor values while the checksums are in the file.

The number of examples is bounded (the whole file runs in seconds; set
``PRUNEFW_FUZZ_EXAMPLES`` to fuzz longer); hypothesis shrinks any failure to a
small mutation and prints it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunefw.cli._checksums import CHECKSUM_KEY
from prunefw.cli._reading import read_checkpoint
from prunefw.cli._writing import write_checkpoint, write_directory, write_shards
from prunefw.errors import CheckpointError, RecipeError
from prunefw.history import HistoryEntry, PruningHistory
from prunefw.recipes import Recipe, load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = [
    *sorted((ROOT / "docs" / "recipes").glob("*.toml")),
    ROOT / "tests" / "data" / "report_recipe.toml",
]
SOURCES = {path.name: path.read_bytes() for path in RECIPES}
#: Examples per fuzz test; ``PRUNEFW_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` fuzzes longer.
EXAMPLES = int(os.environ.get("PRUNEFW_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- mutations --------------------------------------------------------------------------------

FRAGMENTS = [text[i : i + n] for text in SOURCES.values() for i, n in ((0, 40), (60, 25))] + [
    b"[[layer]]\n",
    b"[global]\n",
    b'criteria = [{ name = "magnitude", amount = 0.5 }]\n',
    b"\x00",
    b"\xff\xfe",
    b'"""',
    b"[" * 200,
    b"1e400",
    b"-0",
    b"nan",
    b"99999999999999999999999999",
]


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, float, int, bytes]]:
    """1 to 4 edits: (kind, relative position, size or byte, inserted bytes)."""
    edit = st.tuples(
        st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]),
        st.floats(0, 1, allow_nan=False),
        st.integers(0, 255),
        st.sampled_from(FRAGMENTS) | st.binary(min_size=1, max_size=16),
    )
    return draw(st.lists(edit, min_size=1, max_size=4))


def mutate(data: bytes, edits: list[tuple[str, float, int, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, number, inserted in edits:
        at = min(int(where * len(buffer)), max(len(buffer) - 1, 0))
        if kind == "flip" and buffer:
            buffer[at] ^= 1 << (number % 8)
        elif kind == "set" and buffer:
            buffer[at] = number
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "insert":
            buffer[at:at] = bytes([number])
        elif kind == "delete":
            del buffer[at : at + 1 + number % 8]
        elif kind == "splice":
            buffer[at:at] = inserted
    return bytes(buffer)


# --- recipes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory(prefix="prunefw-fuzz-") as directory:
        yield Path(directory)


@FUZZ
@given(name=st.sampled_from(sorted(SOURCES)), edits=mutations())
def test_mutated_recipes_give_a_recipe_or_a_recipe_error(scratch, name, edits):
    data = mutate(SOURCES[name], edits)
    path = scratch / name
    path.write_bytes(data)
    for read in (
        lambda: load_recipe(path),
        lambda: Recipe.from_toml(data.decode("utf-8", errors="replace"), source=name),
    ):
        try:
            recipe = read()
        except RecipeError:
            continue
        except Exception as exc:  # the property: nothing but RecipeError
            pytest.fail(
                f"{type(exc).__name__} escaped the recipe parser: {exc!r}\n"
                f"recipe ({name} mutated by {edits!r}):\n{data!r}"
            )
        assert isinstance(recipe, Recipe)


def test_the_recipe_seeds_are_valid():
    for name, data in SOURCES.items():
        assert isinstance(Recipe.from_toml(data.decode(), source=name), Recipe), name


# --- checkpoints ------------------------------------------------------------------------------


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "0.weight_orig": torch.randn(24, 16, generator=generator),
        "0.weight_mask": (torch.rand(24, 16, generator=generator) > 0.5).float(),
        "0.bias": torch.randn(24, generator=generator),
        "2.weight": torch.randn(4, 24, generator=generator).to(torch.bfloat16),
        "2.bias": torch.arange(4, dtype=torch.int64),
    }


HISTORY = PruningHistory({"0.weight": (HistoryEntry("magnitude", {"amount": 0.5}, "global"),)})


@pytest.fixture(scope="module")
def written(scratch) -> dict[str, bytes]:
    """The bytes of a .pt and a .safetensors file prunefw wrote, by suffix."""
    result = {}
    for suffix in (".pt", ".safetensors"):
        path = scratch / f"original{suffix}"
        write_checkpoint(path, _state(), HISTORY)
        result[suffix] = path.read_bytes()
    return result


def _same_tensors(state: object) -> bool:
    expected = _state()
    return set(state) == set(expected) and all(
        isinstance(state[key], torch.Tensor)
        and state[key].dtype == value.dtype
        and state[key].shape == value.shape
        and torch.equal(state[key].view(torch.uint8), value.view(torch.uint8))
        for key, value in expected.items()
    )


def _check_read(path: Path, data: bytes, description: str) -> None:
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError:
        return
    except Exception as exc:  # the property: nothing but CheckpointError
        pytest.fail(f"{type(exc).__name__} escaped the checkpoint reader: {exc!r}\n{description}")
    if CHECKSUM_KEY.encode() in data:  # checksums present: the tensors must be the ones written
        assert _same_tensors(checkpoint.state_dict), f"corrupted tensors accepted\n{description}"


@FUZZ
@given(suffix=st.sampled_from([".pt", ".safetensors"]), edits=mutations())
def test_mutated_checkpoints_give_the_written_tensors_or_a_checkpoint_error(
    scratch, written, suffix, edits
):
    data = mutate(written[suffix], edits)
    path = scratch / f"mutated{suffix}"
    path.write_bytes(data)
    _check_read(path, data, f"{suffix} mutated by {edits!r}")


def _tensor_spans(data: bytes) -> list[tuple[str, int, int]]:
    """Where each tensor's bytes are in a written file: (key, start, end)."""
    spans = []
    for key, value in _state().items():
        raw = value.contiguous().view(torch.uint8).numpy().tobytes()
        start = data.find(raw)
        assert start >= 0 and data.find(raw, start + 1) < 0, key
        spans.append((key, start, start + len(raw)))
    return spans


@FUZZ
@given(
    suffix=st.sampled_from([".pt", ".safetensors"]),
    tensor=st.integers(0, len(_state()) - 1),
    where=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
)
def test_any_flipped_bit_of_any_tensor_is_refused_naming_it(
    scratch, written, suffix, tensor, where, bit
):
    data = bytearray(written[suffix])
    key, start, end = _tensor_spans(bytes(data))[tensor]
    data[start + int(where * (end - start))] ^= 1 << bit
    path = scratch / f"flipped{suffix}"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value).startswith(f"{path} is corrupt: the tensor {key!r} does not match")


@pytest.fixture(scope="module")
def directory(scratch) -> dict[str, bytes]:
    """A sharded model directory prunefw wrote: its files' bytes, by name."""
    pytest.importorskip("huggingface_hub")
    path = scratch / "model"
    write_directory(path, HISTORY, lambda tmp: write_shards(tmp, _state(), 1200))
    names = sorted(os.listdir(path))
    assert "model.safetensors.index.json" in names and len(names) > 3
    return {name: (path / name).read_bytes() for name in names}


@FUZZ
@given(file=st.integers(0, 100), edits=mutations())
def test_mutated_model_directories_give_the_written_tensors_or_a_checkpoint_error(
    scratch, directory, file, edits
):
    names = sorted(directory)
    target = names[file % len(names)]
    path = scratch / "mutated-model"
    path.mkdir(exist_ok=True)
    for name, data in directory.items():
        (path / name).write_bytes(mutate(data, edits) if name == target else data)
    mutated = (path / target).read_bytes()
    intact = target.endswith(".json") or CHECKSUM_KEY.encode() in mutated
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError:
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} escaped the directory reader: {exc!r}\n{target}")
    if intact:
        assert _same_tensors(checkpoint.state_dict), f"{target} mutated by {edits!r}"
