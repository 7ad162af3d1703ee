"""Token files: exact round trips (plain and bit-packed), refusal of other models and damaged files."""

from fractions import Fraction

import pytest
import torch

from magvit2.tokens import (
    TokenFile,
    TokenFileError,
    load_tokens,
    model_fingerprint,
    pack_ids,
    save_tokens,
    unpack_ids,
)


def _tf(bits=18, shape=(3, 4, 5)):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2**bits, shape, generator=g)
    return TokenFile(
        ids=ids,
        model="abc123",
        vocabulary=2**bits,
        frames=9,
        height=30,
        width=40,
        pad_bottom=2,
        pad_right=0,
        fps=Fraction(30000, 1001),
        source="clip.mp4",
    )


@pytest.mark.parametrize("bits", [1, 5, 18, 33])
def test_pack_unpack_exact(bits):
    ids = torch.randint(0, 2**bits, (101,), dtype=torch.int64)
    packed = pack_ids(ids, bits)
    assert packed.numel() == (101 * bits + 7) // 8  # exactly `bits` bits per id
    assert torch.equal(unpack_ids(packed, bits, 101), ids)


def test_pack_bit_order():
    # two 3-bit ids 5 (101) and 3 (011) -> bits 101011 + padding -> 0b10101100
    assert pack_ids(torch.tensor([5, 3]), 3).tolist() == [0b10101100]


@pytest.mark.parametrize("packed", [False, True])
def test_round_trip(tmp_path, packed):
    tf = _tf()
    save_tokens(tmp_path / "t.safetensors", tf, packed=packed)
    back = load_tokens(tmp_path / "t.safetensors", expect_model="abc123")
    assert torch.equal(back.ids, tf.ids)
    assert (back.frames, back.height, back.width, back.pad_bottom, back.fps, back.source) == (
        9,
        30,
        40,
        2,
        Fraction(30000, 1001),
        "clip.mp4",
    )


def test_packed_is_smaller(tmp_path):
    tf = _tf(shape=(5, 16, 16))
    save_tokens(tmp_path / "a.safetensors", tf)
    save_tokens(tmp_path / "b.safetensors", tf, packed=True)
    assert (tmp_path / "b.safetensors").stat().st_size < 0.7 * (tmp_path / "a.safetensors").stat().st_size


def test_refuses_other_model_and_damage(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tokens(path, _tf())
    with pytest.raises(TokenFileError, match="another model"):
        load_tokens(path, expect_model="different")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TokenFileError, match="cut.safetensors"):
        load_tokens(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(TokenFileError, match="junk.safetensors"):
        load_tokens(tmp_path / "junk.safetensors")


def test_refuses_unknown_version(tmp_path, monkeypatch):
    import magvit2.tokens.format as fmt

    monkeypatch.setattr(fmt, "FORMAT_VERSION", 99)
    save_tokens(tmp_path / "v99.safetensors", _tf())
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 1)
    with pytest.raises(TokenFileError, match="version '99'"):
        load_tokens(tmp_path / "v99.safetensors")


def test_out_of_range_ids_rejected(tmp_path):
    tf = _tf(bits=4)
    tf.ids[0, 0, 0] = 16
    with pytest.raises(ValueError):
        save_tokens(tmp_path / "p.safetensors", tf, packed=True)
    save_tokens(tmp_path / "u.safetensors", tf)  # int32 storage accepts it, loading refuses it
    with pytest.raises(TokenFileError, match="out of range"):
        load_tokens(tmp_path / "u.safetensors")


def test_fingerprint_depends_on_weights_and_config():
    sd = {"w": torch.ones(3)}
    a = model_fingerprint({"c": 1}, sd)
    assert a == model_fingerprint({"c": 1}, {"w": torch.ones(3)})
    assert a != model_fingerprint({"c": 2}, sd)
    assert a != model_fingerprint({"c": 1}, {"w": torch.tensor([1.0, 1.0, 1.0001])})


def test_written_files_follow_the_umask(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        save_tokens(tmp_path / "t.safetensors", _tf())
    finally:
        os.umask(mask)
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o644


def test_shard_row_round_trip(tmp_path):
    """A TokenFile written as a shard row (token_row + write_shard) reads back equal (read_row),
    padding recovered from the recorded spatial factor; another model and bad rows are refused."""
    from magvit2.tokens.shards import read_row, token_row, write_shard

    g = torch.Generator().manual_seed(0)
    clips = [
        TokenFile(ids=torch.randint(0, 1024, (3, 5, 6), generator=g), model="m1", vocabulary=1024, frames=9,
                  height=37, width=45, pad_bottom=3, pad_right=3, fps=Fraction(30000, 1001), source="a.mp4",
                  encoding="refined steps=2 lr=0.2"),
        TokenFile(ids=torch.randint(0, 1024, (1, 2, 2), generator=g), model="m1", vocabulary=1024, frames=1,
                  height=16, width=16, fps=Fraction(1), source="b.png", encoding="refined steps=2 lr=0.2"),
    ]  # fmt: skip
    path = tmp_path / "shard.parquet"
    write_shard(path, [token_row(tf) for tf in clips], model="m1", vocabulary=1024, spatial_factor=8,
                encoding="refined steps=2 lr=0.2")  # fmt: skip
    for i, tf in enumerate(clips):
        got = read_row(path, i, expect_model="m1")
        assert torch.equal(got.ids, tf.ids)
        assert {**got.__dict__, "ids": None} == {**tf.__dict__, "ids": None}
    with pytest.raises(TokenFileError, match="another model"):
        read_row(path, 0, expect_model="m2")
    with pytest.raises(ValueError, match="--row K"):
        read_row(path, None)
    bad = token_row(clips[1])
    bad["ids"][0] = 5000
    write_shard(tmp_path / "bad.parquet", [bad], model="m1", vocabulary=1024, spatial_factor=8)
    with pytest.raises(TokenFileError, match="out of range"):
        read_row(tmp_path / "bad.parquet", 0)


def test_round_trip_keeps_every_field_with_unequal_padding(tmp_path):
    """Height and width padded differently (2 and 3 rows/columns): no field borrows another's value."""
    tf = TokenFile(
        ids=torch.randint(0, 2**10, (3, 4, 5)), model="abc", vocabulary=2**10, frames=9, height=30,
        width=37, pad_bottom=2, pad_right=3, fps=Fraction(30000, 1001), source="c.mp4",
    )  # fmt: skip
    for packed in (False, True):
        save_tokens(tmp_path / f"t{packed}.safetensors", tf, packed=packed)
        back = load_tokens(tmp_path / f"t{packed}.safetensors")
        assert torch.equal(back.ids, tf.ids)
        assert {**back.__dict__, "ids": None} == {**tf.__dict__, "ids": None}


def test_shard_row_keeps_unequal_padding(tmp_path):
    from magvit2.tokens.shards import read_row, token_row, write_shard

    tf = TokenFile(
        ids=torch.randint(0, 1024, (2, 5, 6)), model="m1", vocabulary=1024, frames=5, height=37,
        width=43, pad_bottom=3, pad_right=5, fps=Fraction(25), source="a.mp4",
    )  # fmt: skip
    write_shard(tmp_path / "s.parquet", [token_row(tf)], model="m1", vocabulary=1024, spatial_factor=8)
    got = read_row(tmp_path / "s.parquet", 0)
    assert (got.height, got.width, got.pad_bottom, got.pad_right) == (37, 43, 3, 5)
    assert torch.equal(got.ids, tf.ids)


def _flip_first_id_bit(path) -> None:
    """Flip the lowest bit of the first stored byte of a safetensors file's data (the first id stays in
    range): the damage a bad disk or copy does, which no range check can see."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("packed", [False, True])
def test_flipped_byte_in_ids_is_refused_as_damaged(tmp_path, packed):
    """A token file whose ids changed after writing (ids still in range) is refused as damaged; so is
    one whose header field that decoding uses changed; a file from before checksums still reads."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_tokens(path, _tf(bits=10), packed=packed)
    _flip_first_id_bit(path)
    with pytest.raises(TokenFileError, match=r"t\.safetensors: damaged token file"):
        load_tokens(path)
    save_tokens(path, _tf(bits=10), packed=packed)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**meta, "height": "29"})
    with pytest.raises(TokenFileError, match="damaged"):
        load_tokens(path)
    old = {k: v for k, v in meta.items() if k != "checksum"}
    save_file(tensors, str(path), metadata={**old, "height": "29"})
    assert load_tokens(path).height == 29  # no checksum, nothing to verify


def test_changed_shard_row_is_refused_as_damaged(tmp_path):
    """A shard row whose ids changed after writing is refused as damaged by read_row and verify_shard
    (which ``magvit2 info`` runs); a shard without the checksum column (older) still reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from magvit2.tokens.shards import read_row, token_row, verify_shard, write_shard

    path = tmp_path / "s.parquet"
    rows = [token_row(_tf(bits=10)), token_row(_tf(bits=10, shape=(1, 2, 2)))]
    write_shard(path, rows, model="abc123", vocabulary=1024, spatial_factor=8)
    assert verify_shard(path) == 2
    table = pq.read_table(path)
    ids = table.column("ids").to_pylist()
    ids[1][0] ^= 1
    pq.write_table(
        table.set_column(table.schema.get_field_index("ids"), "ids", pa.array(ids, pa.list_(pa.int32()))),
        path,
    )
    assert read_row(path, 0).frames == 9
    for check in (lambda: read_row(path, 1), lambda: verify_shard(path)):
        with pytest.raises(TokenFileError, match=r"s\.parquet row 1: damaged shard row"):
            check()
    pq.write_table(table.drop_columns(["checksum"]), path)
    assert verify_shard(path) == 0 and read_row(path, 1).ids.shape == (1, 2, 2)
