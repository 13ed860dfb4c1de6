"""Fuzz the image loader: any bytes give an RGB image or a DataError, never a hang or a crash."""

from __future__ import annotations

import io
import signal
import struct
import zlib
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipft.data.images import load_rgb
from clipft.errors import DataError

SECONDS_PER_IMAGE = 5


@contextmanager
def no_hang(seconds: int = SECONDS_PER_IMAGE):
    """Fail (instead of hanging the test run) if decoding one file takes longer than ``seconds``."""

    def _timeout(signum, frame):
        raise AssertionError(f"load_rgb hung for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color=128 if mode in ("L", "P", "I;16", "I") else (200, 30, 30)[: len(mode)]).save(buf, format=fmt)
    return buf.getvalue()


VALID = {name: encoded(fmt) for name, fmt in [("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("gif", "GIF"), ("webp", "WEBP")]}


def check_loader(path) -> None:
    """The contract: an RGB image, or the framework's DataError naming the file."""
    with no_hang():
        try:
            img = load_rgb(path)
        except DataError as exc:
            assert str(path) in str(exc)
            return
    assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


settings.register_profile("clipft-fuzz", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(settings.get_profile("clipft-fuzz"))
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".webp", ".tif"]))
def test_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    check_loader(path)


@settings(settings.get_profile("clipft-fuzz"))
@given(kind=st.sampled_from(sorted(VALID)), cut=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_files(tmp_path, kind, cut):
    data = VALID[kind]
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: int(len(data) * cut)])
    check_loader(path)


@settings(settings.get_profile("clipft-fuzz"))
@given(kind=st.sampled_from(sorted(VALID)), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_bytes(tmp_path, kind, flips):
    data = bytearray(VALID[kind])
    for pos, value in flips:
        data[pos % len(data)] = value
    path = tmp_path / f"flip.{kind}"
    path.write_bytes(bytes(data))
    check_loader(path)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header announcing a huge image, with no pixel data behind it (a decompression bomb)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_a_data_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(100_000, 100_000))
    with no_hang(), pytest.raises(DataError, match="bomb.png"):
        load_rgb(path)


def test_headers_only(tmp_path):
    for name, header in {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a", "bmp": b"BM"}.items():
        path = tmp_path / f"header.{name}"
        path.write_bytes(header)
        with no_hang(), pytest.raises(DataError, match=f"header.{name}"):
            load_rgb(path)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "I", "1", "CMYK"])
def test_odd_modes_become_rgb(tmp_path, mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode in ("I;16", "I") else "PNG")
    path = tmp_path / f"odd {mode.replace(';', '_')}.{fmt.lower()}"
    path.write_bytes(encoded(fmt, mode))
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (8, 6)
