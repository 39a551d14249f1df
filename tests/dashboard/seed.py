"""An hour of plausible delivery history, written straight into the outbox.

Used for the README's screenshot and for checking the activity query: rows
with chosen timestamps cannot be made through the API, which stamps now().
The random parts are seeded, so every run draws the same picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

_PEOPLE = [
    ("ada@example.com", "Ada Lovelace"),
    ("grace@example.com", "Grace Hopper"),
    ("linus@example.com", "Linus Torvalds"),
    ("barbara@example.com", "Barbara Liskov"),
    ("ken@example.com", "Ken Thompson"),
    ("margaret@example.com", "Margaret Hamilton"),
    ("dennis@example.com", "Dennis Ritchie"),
    ("frances@example.com", "Frances Allen"),
    ("edsger@example.com", "Edsger Dijkstra"),
    ("radia@example.com", "Radia Perlman"),
    ("old.intern@example.com", "Former Intern"),
    ("typo@exmaple.com", "Typo Address"),
]

_USERS = """
INSERT INTO users (email, name) SELECT * FROM unnest($1::text[], $2::text[]) RETURNING id
"""

# One row per message: minute i of the hour gets rates[i] rows, spread over
# that minute (never past now), each with a latency of a few hundred ms and
# an occasional slow one. random() in a select list is drawn per row.
_SENT = """
WITH messages AS (
    SELECT r.minute, g, random() AS spread, random() AS quick, random() AS slow
    FROM unnest($1::int[]) WITH ORDINALITY AS r(n, minute)
    CROSS JOIN LATERAL generate_series(1, r.n) AS g
), timed AS (
    SELECT g,
           least(now(), date_trunc('minute', now())
                        - make_interval(mins => ($2 - minute)::int)
                        + spread * interval '1 minute') AS at,
           make_interval(secs => 0.25 + quick * 0.9
                         + CASE WHEN slow < 0.04 THEN slow * 150 ELSE 0 END) AS latency
    FROM messages
)
INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, status,
                           attempts, created_at, sent_at, finished_at, provider_message_id)
SELECT u.id, u.email, u.name,
       jsonb_build_array(jsonb_build_object('id', 1, 'title', 'Review the budget',
                                            'status', 'open', 'due_at', NULL)),
       'sent', 1, t.at - t.latency, t.at, t.at, 'pm-' || md5(t.at::text || t.g)
FROM timed t
JOIN users u ON u.id = ($3::bigint[])[1 + (t.g % array_length($3::bigint[], 1))]
"""

_DEAD = """
WITH dead AS (
    INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, status,
                               attempts, created_at, finished_at, last_error)
    SELECT u.id, u.email, u.name,
           jsonb_build_array(jsonb_build_object('id', 2, 'title', 'Fix the login bug',
                                                'status', 'in_progress', 'due_at', NULL)),
           'dead', d.attempts, now() - d.age - make_interval(secs => d.attempts * 40 + 2),
           now() - d.age, d.error
    FROM unnest($1::text[], $2::int[], $3::interval[], $4::text[])
        AS d(email, attempts, age, error)
    JOIN users u ON u.email = d.email
    RETURNING id, attempts, last_error, finished_at
)
INSERT INTO notification_attempts (notification_id, attempt, outcome, error, at)
SELECT id, a, CASE WHEN a = attempts THEN 'dead' ELSE 'retry' END,
       CASE WHEN a = attempts THEN last_error
            ELSE 'http_503: postmark HTTP 503: Service Unavailable' END,
       finished_at - make_interval(secs => (attempts - a) * 40)
FROM dead CROSS JOIN LATERAL generate_series(1, attempts) AS a
"""

_PENDING = """
INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, status,
                           attempts, created_at, next_attempt_at, last_error)
SELECT u.id, u.email, u.name,
       jsonb_build_array(jsonb_build_object('id', 3, 'title', 'Write the release notes',
                                            'status', 'open', 'due_at', NULL)),
       'pending', 2, now() - interval '95 seconds', now() + interval '10 minutes',
       'http_429: postmark HTTP 429: Rate limit exceeded'
FROM users u WHERE u.email = ANY($1::text[])
"""

_DEAD_LETTERS = [
    (
        "old.intern@example.com",
        1,
        timedelta(minutes=3),
        "rejected: 406: postmark 406: You tried to send to recipient(s) that have been "
        "marked as inactive.",
    ),
    (
        "typo@exmaple.com",
        1,
        timedelta(minutes=17),
        "rejected: 300: postmark 300: Invalid 'To' address.",
    ),
    (
        "radia@example.com",
        8,
        timedelta(minutes=41),
        "gave up after 8 attempts: http_503: postmark HTTP 503: Service Unavailable",
    ),
]
_PENDING_RECIPIENTS = ["grace@example.com", "ken@example.com"]


@dataclass(frozen=True, slots=True)
class Seeded:
    sent: int
    dead: int
    pending: int


def hour_of_traffic() -> list[int]:
    """Sent per minute, oldest first: a steady load, a burst, and a short provider outage."""
    rates = []
    for minute in range(60):
        rate = 34 + 14 * math.sin(minute / 7) + 6 * math.sin(minute * 1.7)
        if 20 <= minute <= 23:
            rate += (120, 150, 90, 40)[minute - 20]  # a bulk reassignment
        if 41 <= minute <= 43:
            rate = 0  # the provider was halted
        if minute == 44:
            rate += 80  # the backlog drains
        rates.append(max(0, round(rate)))
    rates[-1] //= 3  # the current minute has only begun
    return rates


async def seed_tour(db: asyncpg.Connection) -> Seeded:
    await db.execute("SELECT setseed(0.42)")
    emails, names = zip(*_PEOPLE, strict=True)
    user_ids = [row["id"] for row in await db.fetch(_USERS, list(emails), list(names))]
    rates = hour_of_traffic()
    regular = user_ids[:10]  # the last two only ever fail
    await db.execute(_SENT, rates, len(rates), regular)
    await db.execute(
        _DEAD,
        [d[0] for d in _DEAD_LETTERS],
        [d[1] for d in _DEAD_LETTERS],
        [d[2] for d in _DEAD_LETTERS],
        [d[3] for d in _DEAD_LETTERS],
    )
    await db.execute(_PENDING, _PENDING_RECIPIENTS)
    return Seeded(sent=sum(rates), dead=len(_DEAD_LETTERS), pending=len(_PENDING_RECIPIENTS))
