"""The command line's own set-up steps."""

from __future__ import annotations

import gc

from service.__main__ import _settle_heap


def test_start_up_objects_are_frozen_out_of_full_collections() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        _settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test process collects as usual
