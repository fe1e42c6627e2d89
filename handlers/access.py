"""Access rules: who may subscribe to what, and which fields they see (pure).

The stack owner declares rules per source in the program; a source with no rule
accepts no subscription (default deny). A rule, as JSON (what the component
hands to the functions)::

    {"key": {"PK": "USER#{sub}"}}                                   own partition only
    {"key": {"PK": "TENANT#{claims.tenant}"}, "fields": ["id", "status"]}
    {"table": true, "when": {"claims.role": "admin"}}                table-wide, admins only

* ``key`` maps key attributes to templates; it must name the partition key and
  may name the sort key. A subscription's key is allowed when every attribute
  the rule names has exactly the filled value (a rule naming only the
  partition key allows the partition and any item in it).
* ``table: true`` allows table-wide subscriptions (and therefore any key).
* ``when`` maps identity paths (``sub``, ``claims.NAME``) to a required value
  or a list of allowed values; a claim that is a list (e.g. groups) needs one
  of them.
* ``fields`` trims what the subscriber sees (``data``, ``old``, snapshots) to
  those top-level attributes plus the key attributes; without it, every field.
* Placeholders are ``{sub}`` and ``{claims.NAME}``. A placeholder whose claim
  is missing, empty or not a string makes the rule not match: never
  ``USER#`` for a missing ``sub``.

The identity is ``{"sub": "...", "claims": {...}}``, built from the verified
token: only the claims the rules name are stored on the connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_RULES = 20
MAX_FIELDS = 100
MAX_TEMPLATE_LENGTH = 1024
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_IDENTITY_PATH = re.compile(r"^(sub|claims\.[A-Za-z0-9_:.\-]{1,128})$")
_ATTRIBUTE = re.compile(r"^[^\s.{}]{1,255}$")
RULE_FIELDS = ("key", "table", "when", "fields")


class InvalidRule(ValueError):
    """A rule the program cannot use; the message says which part and why."""


@dataclass(frozen=True)
class Rule:
    key: tuple[tuple[str, str], ...] | None = None
    """(key attribute, template) pairs; None for a table-wide rule."""
    table: bool = False
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fields: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.key is not None:
            out["key"] = dict(self.key)
        if self.table:
            out["table"] = True
        if self.when:
            out["when"] = {path: list(values) for path, values in self.when}
        if self.fields is not None:
            out["fields"] = list(self.fields)
        return out


@dataclass(frozen=True)
class Grant:
    """What a subscription was allowed: ``fields`` None means every field."""

    fields: frozenset[str] | None


def placeholders(template: str) -> list[str]:
    """The identity paths a template names; raise ``InvalidRule`` on a bad one or a stray brace."""
    names = _PLACEHOLDER.findall(template)
    for name in names:
        if not _IDENTITY_PATH.match(name):
            raise InvalidRule(
                f"placeholder {{{name}}} in {template!r}: use {{sub}} or {{claims.NAME}}"
            )
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise InvalidRule(f"template {template!r} has an unmatched brace")
    return list(names)


def _values(path: str, raw: Any) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise InvalidRule(f"when[{path!r}] must be a non-empty string or list of strings")
    return tuple(values)


def parse_rule(raw: Any, key_schema: Sequence[str] | None = None) -> Rule:
    """Validate one rule (JSON shape); ``key_schema`` is (partition key, [sort key])."""
    if not isinstance(raw, Mapping):
        raise InvalidRule("a rule must be an object with key or table")
    unknown = sorted(str(name) for name in raw if name not in RULE_FIELDS)
    if unknown:
        raise InvalidRule(f"unknown rule field {unknown[0]!r}; known: {', '.join(RULE_FIELDS)}")
    table = raw.get("table", False)
    if not isinstance(table, bool):
        raise InvalidRule("table must be true or false")
    key_raw = raw.get("key")
    if (key_raw is None) == (not table):
        raise InvalidRule("a rule has either a key or table=True (not both, not neither)")
    key = None
    if key_raw is not None:
        if not isinstance(key_raw, Mapping) or not key_raw:
            raise InvalidRule("key must map key attributes to templates")
        pairs = []
        for attribute, template in key_raw.items():
            if not isinstance(template, str) or not 1 <= len(template) <= MAX_TEMPLATE_LENGTH:
                raise InvalidRule(f"key[{attribute!r}] must be a string template")
            placeholders(template)
            pairs.append((str(attribute), template))
        key = tuple(pairs)
        if key_schema is not None:
            names = [name for name, _ in key]
            if key_schema[0] not in names:
                raise InvalidRule(f"key must name the partition key {key_schema[0]!r}")
            extra = [name for name in names if name not in key_schema]
            if extra:
                raise InvalidRule(
                    f"key names {extra[0]!r}, which is not a key attribute"
                    f" ({', '.join(key_schema)})"
                )
    when_raw = raw.get("when") or {}
    if not isinstance(when_raw, Mapping):
        raise InvalidRule("when must map identity paths to values")
    when = []
    for path, value in when_raw.items():
        if not isinstance(path, str) or not _IDENTITY_PATH.match(path):
            raise InvalidRule(f"when names {path!r}: use sub or claims.NAME")
        when.append((path, _values(path, value)))
    fields = raw.get("fields")
    if fields is not None:
        if (
            not isinstance(fields, list)
            or not 1 <= len(fields) <= MAX_FIELDS
            or not all(isinstance(f, str) and _ATTRIBUTE.match(f) for f in fields)
        ):
            raise InvalidRule(
                f"fields must be a list of 1 to {MAX_FIELDS} top-level attribute names"
            )
        fields = tuple(dict.fromkeys(fields))
    return Rule(key=key, table=table, when=tuple(when), fields=fields)


def parse_rules(raw: Any, key_schema: Sequence[str] | None = None) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise InvalidRule(f"access must be a list of at most {MAX_RULES} rules")
    rules = []
    for position, rule in enumerate(raw):
        try:
            rules.append(parse_rule(rule, key_schema))
        except InvalidRule as bad:
            raise InvalidRule(f"access[{position}]: {bad}") from None
    return tuple(rules)


def claims_named(rules: Iterable[Rule]) -> set[str]:
    """The token claims the rules read (besides ``sub``): the only ones stored."""
    paths: list[str] = []
    for rule in rules:
        paths.extend(path for path, _ in rule.when)
        for _, template in rule.key or ():
            paths.extend(placeholders(template))
    return {path.split(".", 1)[1] for path in paths if path.startswith("claims.")}


def identity_value(identity: Mapping[str, Any], path: str) -> Any:
    if path == "sub":
        return identity.get("sub")
    claims = identity.get("claims")
    return claims.get(path.split(".", 1)[1]) if isinstance(claims, Mapping) else None


def fill(template: str, identity: Mapping[str, Any]) -> str | None:
    """The template with each placeholder replaced, or None if any is missing or not a string."""
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        value = identity_value(identity, match.group(1))
        if not isinstance(value, str) or not value:
            missing = True
            return ""
        return value

    filled = _PLACEHOLDER.sub(replace, template)
    return None if missing else filled


def _when_holds(rule: Rule, identity: Mapping[str, Any]) -> bool:
    for path, allowed in rule.when:
        value = identity_value(identity, path)
        if isinstance(value, str):
            if value not in allowed:
                return False
        elif isinstance(value, list):
            if not any(isinstance(v, str) and v in allowed for v in value):
                return False
        else:
            return False
    return True


def allows(rule: Rule, identity: Mapping[str, Any], key: Mapping[str, str] | None) -> bool:
    """Whether one rule allows a subscription to ``key`` (key attribute -> its value as text;
    None: table-wide) for this identity."""
    if not _when_holds(rule, identity):
        return False
    if rule.table:
        return True
    if key is None or rule.key is None:
        return False
    for attribute, template in rule.key:
        filled = fill(template, identity)
        if filled is None or key.get(attribute) != filled:
            return False
    return True


def grant(
    rules: Iterable[Rule], identity: Mapping[str, Any], key: Mapping[str, str] | None
) -> Grant | None:
    """What the rules allow for this subscription: None (refused), or the union of the fields
    every allowing rule grants (None fields: all)."""
    fields: set[str] = set()
    allowed = False
    for rule in rules:
        if allows(rule, identity, key):
            allowed = True
            if rule.fields is None:
                return Grant(None)
            fields.update(rule.fields)
    return Grant(frozenset(fields)) if allowed else None


def union(grants: Iterable[Grant]) -> Grant:
    """The fields one message may carry when several grants apply to one connection."""
    fields: set[str] = set()
    for one in grants:
        if one.fields is None:
            return Grant(None)
        fields.update(one.fields)
    return Grant(frozenset(fields))


def trim(
    image: Mapping[str, Any] | None, fields: frozenset[str] | None, keys: Iterable[str]
) -> Mapping[str, Any] | None:
    """The image with only the granted fields and the key attributes (None stays None)."""
    if image is None or fields is None:
        return image
    keep = fields.union(keys)
    return {name: value for name, value in image.items() if name in keep}
