"""One syntax for lists of identifiers, wherever a list is given.

A list comes as repeated options (``--client-id a --client-id b``), as one comma-separated value
(``--client-id a,b``, ``APPLECONNECT_APP_IDS=a,b``) or both; a TOML list's elements are read the
same way. Spaces around a comma are allowed; an empty element (``a,,b``, a trailing comma) or an
element with a space inside is refused, with an error that shows the accepted forms, instead of
being taken as one odd identifier (a client id ``a,b`` passes no check at Apple).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["list_forms", "split_list"]


def list_forms(option: str | None, variable: str | None, toml_key: str | None = None) -> str:
    """How a list may be written, for an error message: ``--client-id a --client-id b``, …"""
    forms = []
    if option:
        forms += [f"{option} a {option} b", f"{option} a,b"]
    if variable:
        forms.append(f"{variable}=a,b")
    if toml_key:
        forms.append(f'{toml_key} = ["a", "b"] in the config file')
    if not forms:
        forms.append("a,b")
    return "give " + " or ".join(forms)


def split_list(
    values: str | Iterable[str],
    *,
    what: str,
    option: str | None = None,
    variable: str | None = None,
    toml_key: str | None = None,
) -> tuple[str, ...]:
    """The elements of ``values`` (one string or several), each split at commas and stripped.

    Raises ValueError naming ``what``, the element at fault and the accepted forms.
    """
    given = [values] if isinstance(values, str) else list(values)
    items: list[str] = []
    for value in given:
        if not isinstance(value, str):
            raise ValueError(f"{what}: {value!r} is not a string.")
        if not value.strip():
            continue  # an empty value is an empty list (APPLECONNECT_APP_IDS=)
        for element in value.split(","):
            item = element.strip()
            if not item:
                raise ValueError(
                    f"{what}: {value!r} has an empty element; "
                    f"{list_forms(option, variable, toml_key)}."
                )
            if any(c.isspace() or not c.isprintable() for c in item):
                raise ValueError(
                    f"{what}: {item!r} has a space or a control character inside; "
                    f"separate elements with commas or repeat the option: "
                    f"{list_forms(option, variable, toml_key)}."
                )
            items.append(item)
    return tuple(dict.fromkeys(items))
