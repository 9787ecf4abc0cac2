"""Describe a database's schema as its backend reports it, to compare two databases."""

from __future__ import annotations

from typing import Any

import peewee

from pydynflow.storage.database import is_postgres

Schema = dict[str, dict[str, Any]]


def describe_schema(database: peewee.Database) -> Schema:
    """Return every table of ``database``: its columns, primary key, foreign keys and indexes.

    Columns map their name to ``(type, not null, default)``; their position is left out,
    since ``ALTER TABLE ... ADD COLUMN`` appends where a ``CREATE TABLE`` may not.
    """
    if is_postgres(database):
        return _postgres_schema(database)
    return _sqlite_schema(database)


def without_defaults(schema: Schema) -> Schema:
    """Return ``schema`` with every column's default left out."""
    return {
        table: {
            **parts,
            "columns": {name: column[:2] for name, column in parts["columns"].items()},
        }
        for table, parts in schema.items()
    }


def _rows(database: peewee.Database, sql: str) -> list[tuple[Any, ...]]:
    return list(database.execute_sql(sql).fetchall())


def _sqlite_schema(database: peewee.Database) -> Schema:
    schema: Schema = {}
    tables = _rows(
        database,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' "
        "ESCAPE '!'",
    )
    for (table,) in tables:
        info = _rows(database, f'PRAGMA table_info("{table}")')
        keys: dict[int, list[tuple[Any, ...]]] = {}
        for row in _rows(database, f'PRAGMA foreign_key_list("{table}")'):
            keys.setdefault(row[0], []).append(row)
        foreign_keys = []
        for parts in keys.values():
            parts.sort(key=lambda row: row[1])  # by seq
            foreign_keys.append(
                (
                    tuple(row[3] for row in parts),  # from
                    parts[0][2],  # the referenced table
                    tuple(row[4] for row in parts),  # to
                    parts[0][6],  # on_delete
                )
            )
        indexes = {}
        for _seq, name, unique, origin, partial in _rows(database, f'PRAGMA index_list("{table}")'):
            columns = sorted(_rows(database, f'PRAGMA index_info("{name}")'))  # by seqno
            indexes[name] = (tuple(row[2] for row in columns), bool(unique), origin, partial)
        schema[table] = {
            "columns": {
                name: (type_, bool(notnull), default)
                for _cid, name, type_, notnull, default, _pk in info
            },
            "primary_key": tuple(row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]),
            "foreign_keys": sorted(foreign_keys),
            "indexes": indexes,
        }
    return schema


def _postgres_schema(database: peewee.Database) -> Schema:
    tables = _rows(
        database,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    schema: Schema = {
        table: {"columns": {}, "primary_key": (), "foreign_keys": [], "indexes": {}}
        for (table,) in tables
    }
    for table, name, type_, length, nullable, default in _rows(
        database,
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, "
        "column_default FROM information_schema.columns WHERE table_schema = current_schema()",
    ):
        type_ = f"{type_}({length})" if length is not None else type_
        schema[table]["columns"][name] = (type_, nullable == "NO", default)
    for table, constraint, column in _rows(
        database,
        "SELECT tc.table_name, tc.constraint_name, kcu.column_name "
        "FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu "
        "ON kcu.constraint_schema = tc.constraint_schema "
        "AND kcu.constraint_name = tc.constraint_name AND kcu.table_name = tc.table_name "
        "WHERE tc.table_schema = current_schema() AND tc.constraint_type = 'PRIMARY KEY' "
        "ORDER BY tc.table_name, kcu.ordinal_position",
    ):
        name, columns = schema[table]["primary_key"] or (constraint, ())
        schema[table]["primary_key"] = (name, (*columns, column))
    keys: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for table, constraint, column, parent, parent_column, on_delete in _rows(
        database,
        "SELECT kcu.table_name, rc.constraint_name, kcu.column_name, ref.table_name, "
        "ref.column_name, rc.delete_rule FROM information_schema.referential_constraints rc "
        "JOIN information_schema.key_column_usage kcu "
        "ON kcu.constraint_schema = rc.constraint_schema "
        "AND kcu.constraint_name = rc.constraint_name "
        "JOIN information_schema.key_column_usage ref "
        "ON ref.constraint_schema = rc.unique_constraint_schema "
        "AND ref.constraint_name = rc.unique_constraint_name "
        "AND ref.ordinal_position = kcu.position_in_unique_constraint "
        "WHERE rc.constraint_schema = current_schema() "
        "ORDER BY kcu.table_name, rc.constraint_name, kcu.ordinal_position",
    ):
        keys.setdefault((table, constraint), []).append((column, parent, parent_column, on_delete))
    for (table, constraint), parts in keys.items():
        schema[table]["foreign_keys"].append(
            (
                constraint,
                tuple(part[0] for part in parts),
                parts[0][1],
                tuple(part[2] for part in parts),
                parts[0][3],
            )
        )
    for table in schema:
        schema[table]["foreign_keys"].sort()
    for table, name, definition in _rows(
        database,
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
    ):
        schema[table]["indexes"][name] = definition
    return schema
