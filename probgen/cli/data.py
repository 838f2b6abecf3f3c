"""``probgen data list`` and ``probgen data fetch``: the data sets probgen knows and their files."""

from __future__ import annotations

import argparse

from probgen.cli._common import UsageError


def _cmd_data(args: argparse.Namespace) -> int:
    from probgen.data import list_datasets

    if args.data_command == "fetch":
        return _cmd_data_fetch(args)

    rows = list_datasets()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from probgen.data import DataFetchError, fetch

    try:
        folder = fetch(args.name, data_dir=args.data_dir, url=args.url)
    except DataFetchError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.name}: files in {folder}")
    return 0
