from __future__ import annotations

import pytest

from service.email.base import BatchLimits, EmailMessage
from service.email.batching import estimate_bytes, size_bound, split_batches
from tests.support.messages import MessageFactory


def _ids(batches: list[list[EmailMessage]]) -> list[list[str]]:
    return [[m.notification_id for m in batch] for batch in batches]


def test_empty_input_gives_no_batches() -> None:
    assert split_batches([], BatchLimits(max_messages=3)) == []


@pytest.mark.parametrize(("count", "sizes"), [(5, [5]), (6, [5, 1]), (10, [5, 5]), (11, [5, 5, 1])])
def test_splits_by_count_at_the_limit(
    make_message: MessageFactory, count: int, sizes: list[int]
) -> None:
    messages = [make_message(i) for i in range(count)]

    batches = split_batches(messages, BatchLimits(max_messages=5))

    assert [len(b) for b in batches] == sizes
    assert [m for b in batches for m in b] == messages


def test_splits_by_bytes_at_the_limit(make_message: MessageFactory) -> None:
    messages = [make_message(i, html="x" * 1000) for i in range(4)]
    size = estimate_bytes(messages[0])
    assert all(estimate_bytes(m) == size for m in messages)

    exactly_two = split_batches(messages, BatchLimits(max_messages=100, max_bytes=2 * size))
    one_byte_short = split_batches(messages, BatchLimits(max_messages=100, max_bytes=2 * size - 1))

    assert _ids(exactly_two) == [["n-0", "n-1"], ["n-2", "n-3"]]
    assert _ids(one_byte_short) == [["n-0"], ["n-1"], ["n-2"], ["n-3"]]


def test_oversized_message_goes_alone_and_order_is_kept(make_message: MessageFactory) -> None:
    small = [make_message(i) for i in range(4)]
    huge = make_message(9, html="x" * 10_000)
    messages = [small[0], small[1], huge, small[2], small[3]]
    limit = 3 * estimate_bytes(small[0])

    batches = split_batches(messages, BatchLimits(max_messages=100, max_bytes=limit))

    assert _ids(batches) == [["n-0", "n-1"], ["n-9"], ["n-2", "n-3"]]


def test_estimate_counts_json_escaping(make_message: MessageFactory) -> None:
    plain = make_message(html="a" * 100)
    quoted = make_message(html='"' * 100)

    assert estimate_bytes(quoted) >= estimate_bytes(plain) + 100


@pytest.mark.parametrize(
    "text", ["plain", '"' * 50, "\x01\x1f" * 50, "caf\u00e9 \u4e2d\u6587 \U0001f600" * 20, ""]
)
def test_the_size_bound_is_never_below_the_estimate(
    make_message: MessageFactory, text: str
) -> None:
    # split_batches skips measuring a batch whose bound fits: an under-estimate
    # would let an oversized request through.
    message = make_message(html=text, text=text)

    assert size_bound(message) >= estimate_bytes(message)


def test_a_batch_far_below_the_byte_limit_splits_by_count_only(
    make_message: MessageFactory,
) -> None:
    messages = [make_message(i) for i in range(6)]

    batches = split_batches(messages, BatchLimits(max_messages=4, max_bytes=10_000_000))

    assert _ids(batches) == [["n-0", "n-1", "n-2", "n-3"], ["n-4", "n-5"]]
