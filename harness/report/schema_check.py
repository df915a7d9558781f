"""A small JSON Schema validator for the subset the harness's schemas use
(``leaderboard.schema.json``), so no ``jsonschema`` dependency is needed.

Supported keywords: ``type`` (a name or a list: object, array, string, number, integer,
boolean, null), ``properties``, ``required``, ``additionalProperties`` (bool or schema),
``items`` (one schema), ``minItems``, ``maxItems``, ``enum``, ``const``, ``minimum``,
``maximum``, ``pattern`` (``re.search``), ``$ref`` to ``#/$defs/<name>`` (or
``#/definitions/<name>``). Annotations (``title``, ``description``, ``$id``, ``$schema``)
are ignored. Any other keyword is an error (a schema that asks for more than is checked
must not pass silently).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "definitions", "$comment",
               "default", "examples"}
KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "minItems",
            "maxItems", "enum", "const", "minimum", "maximum", "pattern", "$ref"}


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"schema: unknown type {name!r}")


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            name = ref[len(prefix):]
            defs = root.get(prefix[2:-1]) or {}
            if name not in defs:
                raise ValueError(f"schema: $ref {ref!r} names no definition")
            return defs[name]
    raise ValueError(f"schema: only local $ref '#/$defs/NAME' is supported, got {ref!r}")


def errors(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
           path: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``instance``, each as ``"<json path>: <why>"``."""
    root = schema if root is None else root
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise ValueError(f"schema at {path}: unsupported keyword(s) {sorted(unknown)}")
    out: list[str] = []
    if "$ref" in schema:
        out += errors(instance, _resolve(schema["$ref"], root), root, path)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(instance, n) for n in names):
            return out + [f"{path}: expected {' or '.join(names)}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        out.append(f"{path}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        out.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            out.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            out.append(f"{path}: {instance} > maximum {schema['maximum']}")
    if isinstance(instance, str) and "pattern" in schema and not re.search(schema["pattern"], instance):
        out.append(f"{path}: {instance!r} does not match {schema['pattern']!r}")
    if isinstance(instance, list):
        if "minItems" in schema and len(instance) < schema["minItems"]:
            out.append(f"{path}: {len(instance)} items < minItems {schema['minItems']}")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            out.append(f"{path}: {len(instance)} items > maxItems {schema['maxItems']}")
        if "items" in schema:
            for i, item in enumerate(instance):
                out += errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        props = schema.get("properties") or {}
        out += [f"{path}: missing required key {k!r}" for k in schema.get("required", [])
                if k not in instance]
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            where = f"{path}.{key}"
            if key in props:
                out += errors(value, props[key], root, where)
            elif extra is False:
                out.append(f"{where}: key not allowed by the schema")
            elif isinstance(extra, Mapping):
                out += errors(value, extra, root, where)
    return out


def validate(instance: Any, schema: Mapping[str, Any], what: str = "document") -> None:
    """Raise ``ValueError`` listing the first violations (one line each) when ``instance``
    does not match ``schema``."""
    found = errors(instance, schema)
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise ValueError(f"{what} does not match its schema: " + "; ".join(found[:5]) + more)
