"""Settings that depend on each other: a default follows, a contradiction is refused.

Every request the settings allow must be servable: a batch is admitted to the queue whole,
an upload must fit the upload budget, the largest image must fit the decoding budget, a
default beam size or length must be one a request may ask for.
"""

from __future__ import annotations

import pytest

from captioner.config import Settings, load_settings
from captioner.errors import ConfigurationError


def test_defaults_follow_the_settings_they_depend_on() -> None:
    assert Settings().max_files_per_batch_request == 32
    assert Settings(max_queue_size=4).max_files_per_batch_request == 4
    assert Settings().max_pending_upload_bytes == 128 * 1024 * 1024
    big = 300 * 1024 * 1024
    assert Settings(max_upload_bytes=big).max_pending_upload_bytes == big
    assert Settings().max_batch_upload_bytes == 64 * 1024 * 1024
    assert Settings(max_upload_bytes=big).max_batch_upload_bytes == big
    assert Settings(max_pending_upload_bytes=20_000_000).max_batch_upload_bytes == 20_000_000
    assert Settings(max_batch_upload_bytes=big).max_pending_upload_bytes == big
    assert Settings().decoding_pixels == 40_000_000
    assert Settings(max_image_pixels=60_000_000).decoding_pixels == 60_000_000
    assert Settings(max_decoding_pixels=90_000_000).decoding_pixels == 90_000_000


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"max_queue_size": 4, "max_files_per_batch_request": 8},
         "max_files_per_batch_request (8) must not exceed max_queue_size (4)"),
        ({"max_upload_bytes": 2_000_000, "max_pending_upload_bytes": 1_000_000},
         "max_upload_bytes (2000000) must not exceed max_pending_upload_bytes (1000000)"),
        ({"max_upload_bytes": 2_000_000, "max_batch_upload_bytes": 1_000_000},
         "max_upload_bytes (2000000) must not exceed max_batch_upload_bytes (1000000)"),
        ({"max_upload_bytes": 500_000, "max_batch_upload_bytes": 2_000_000,
          "max_pending_upload_bytes": 1_000_000},
         "max_batch_upload_bytes (2000000) must not exceed max_pending_upload_bytes (1000000)"),
        ({"max_decoding_pixels": 1_000_000},
         "max_image_pixels (40000000) must not exceed max_decoding_pixels (1000000)"),
        ({"default_max_length": 60},
         "default_max_length (60) must not exceed max_max_length (50)"),
    ],
)  # fmt: skip
def test_contradictions_given_are_refused_in_one_line(given: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(**given)
    assert str(info.value) == f"invalid setting: {message}"


def test_values_from_the_environment_count_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTIONER_MAX_QUEUE_SIZE", "4")
    assert load_settings().max_files_per_batch_request == 4
    monkeypatch.setenv("CAPTIONER_MAX_FILES_PER_BATCH_REQUEST", "8")
    with pytest.raises(ConfigurationError, match="must not exceed max_queue_size"):
        load_settings()
