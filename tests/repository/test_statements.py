"""Every SQL statement the service runs is planned against the migrated schema.

The statements are found, not listed: every upper-case module-level string of
the repository's modules, the wake-up and the migration runner whose text is SQL. So a statement
added with a typo fails here, before any test happens to run it. Each must
also be one literal (never assembled with ``format``, an f-string or ``+``)
with a one-line description comment directly above it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType

import asyncpg
import pytest

import service.repository
from service.repository.reassign import UPDATE_TASKS, UPDATE_TASKS_ONCE

_MODULES = [
    *(
        importlib.import_module(f"service.repository.{info.name}")
        for info in pkgutil.iter_modules(service.repository.__path__)
    ),
    importlib.import_module("service.delivery.wakeup"),
    importlib.import_module("service.migrations"),
]

_CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
_SQL_COMMENT_LINE = re.compile(r"^\s*--.*$", re.MULTILINE)
_PLANNABLE = re.compile(r"^(SELECT|WITH|INSERT|UPDATE|DELETE|VALUES)\b")
# Statements EXPLAIN does not take: run instead, in a transaction rolled back.
_UTILITY = re.compile(r"^(SET|LISTEN|UNLISTEN|NOTIFY|CREATE)\b")

# Upper-case strings of those modules that are not SQL.
_NOT_STATEMENTS = {"service.delivery.wakeup.CHANNEL"}


@dataclass(frozen=True)
class _Constant:
    qualified_name: str
    text: str
    # The assignment's value as written, and the source line above it.
    value_node: ast.expr
    line_above: str
    two_lines_above: str

    @property
    def sql(self) -> str:
        """The text without its SQL comment lines, from its first keyword."""
        return _SQL_COMMENT_LINE.sub("", self.text).strip()


def _string_constants(module: ModuleType) -> list[_Constant]:
    source = inspect.getsource(module)
    lines = ["", "", *source.splitlines()]  # lines[n + 1] is source line n
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and _CONSTANT_NAME.match(target.id)):
            continue
        text = getattr(module, target.id)
        if isinstance(text, str):
            found.append(
                _Constant(
                    qualified_name=f"{module.__name__}.{target.id}",
                    text=text,
                    value_node=value,
                    line_above=lines[node.lineno],
                    two_lines_above=lines[node.lineno - 1],
                )
            )
    return found


_CONSTANTS = [constant for module in _MODULES for constant in _string_constants(module)]
_STATEMENTS = [c for c in _CONSTANTS if c.qualified_name not in _NOT_STATEMENTS]
_IDS = [c.qualified_name for c in _STATEMENTS]


def test_statements_are_found() -> None:
    names = {c.qualified_name.rsplit(".", 1)[1] for c in _STATEMENTS}
    assert {"UPDATE_TASKS", "CLAIM_BY_IDS", "LIST_NOTIFICATIONS", "KEEP_ALIVE"} <= names


@pytest.mark.parametrize("constant", _STATEMENTS, ids=_IDS)
def test_a_statement_is_one_literal_with_a_description(constant: _Constant) -> None:
    assert isinstance(constant.value_node, ast.Constant), "assembled, not one literal"
    assert _PLANNABLE.match(constant.sql) or _UTILITY.match(constant.sql), (
        "not a statement: if it is not SQL, add it to _NOT_STATEMENTS"
    )
    assert re.match(r"^# \S", constant.line_above), "no description comment directly above"
    assert not constant.two_lines_above.lstrip().startswith("#"), "a description is one line"


@pytest.fixture(scope="module")
async def schema(migrated_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the migrated database; the tests here change nothing in it."""
    conn = await asyncpg.connect(migrated_database)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize("constant", _STATEMENTS, ids=_IDS)
async def test_a_statement_plans_against_the_schema(
    schema: asyncpg.Connection, constant: _Constant
) -> None:
    transaction = schema.transaction()
    await transaction.start()
    try:
        if _UTILITY.match(constant.sql):
            await schema.execute(constant.text)
        else:
            # Planned with every parameter NULL: EXPLAIN without ANALYZE runs nothing.
            explain = await schema.prepare("EXPLAIN " + constant.text)
            plan = await explain.fetch(*[None] * len(explain.get_parameters()))
            assert plan
    finally:
        await transaction.rollback()


def _without_comments(statement: str) -> list[str]:
    return [line for line in _SQL_COMMENT_LINE.sub("", statement).splitlines() if line.strip()]


def test_the_keyed_update_is_the_plain_one_with_the_key_added() -> None:
    # The two reassigning statements must do the same update; UPDATE_TASKS_ONCE
    # only adds its key's lines to those of UPDATE_TASKS, in the same order.
    keyed = iter(_without_comments(UPDATE_TASKS_ONCE))
    first_missing = next(
        (line for line in _without_comments(UPDATE_TASKS) if line not in keyed), None
    )
    assert first_missing is None, "a line of UPDATE_TASKS missing from UPDATE_TASKS_ONCE"
