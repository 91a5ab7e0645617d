#!/usr/bin/env python
"""List the released Mask DINO models, show one, or download its checkpoint into the cache.

    python tools/model_zoo.py list [--task instance|panoptic|semantic]
    python tools/model_zoo.py info maskdino_r50_coco_instance_seg_50ep
    python tools/model_zoo.py download maskdino_r50_coco_instance_seg_50ep [more names] [--all]

Cache: $DETREX_CACHE/checkpoints (default ~/.cache/detrex_ext). DETREX_OFFLINE=1 never uses the
network; DETREX_ZOO_MIRROR=<base URL or directory> fetches the same file names from elsewhere.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tabulate import tabulate

from detrex_ext import model_zoo
from detrex_ext.checkpoint.download import get_cache_dir, is_url, read_recorded_sha256


def _cache_file(entry: model_zoo.ModelZooEntry):
    return get_cache_dir() / "checkpoints" / entry.filename


def _metrics_text(entry: model_zoo.ModelZooEntry) -> str:
    return ", ".join(f"{key} {value:.1f}" for key, value in entry.metrics.items())


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in model_zoo.list_models(args.task):
        entry = model_zoo.get_entry(name)
        cached = "yes" if _cache_file(entry).is_file() else ""
        rows.append([name, entry.task, entry.backbone, entry.dataset, _metrics_text(entry), cached])
    print(
        tabulate(
            rows, headers=["name", "task", "backbone", "dataset", "reported metrics", "cached"]
        )
    )
    print(f"\n{len(rows)} models; cache: {get_cache_dir() / 'checkpoints'}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    entry = model_zoo.get_entry(args.name)
    cache_file = _cache_file(entry)
    if cache_file.is_file():
        recorded = read_recorded_sha256(cache_file)
        cached = f"yes, {cache_file.stat().st_size / 2**20:.1f} MiB" + (
            f", sha256 {recorded}" if recorded else ", sha256 not recorded yet"
        )
    else:
        cached = "no"
    rows = [
        ("name", entry.name),
        ("task", entry.task),
        ("dataset", entry.dataset),
        ("backbone", entry.backbone),
        ("config", entry.config_path),
        ("url", model_zoo.get_checkpoint_url(entry.name)),
        ("sha256", entry.sha256 or "not published (recorded in the cache at first download)"),
        ("reported metrics", _metrics_text(entry)),
        ("parameters", f"{entry.params_m:.1f}M" if entry.params_m else "not reported"),
        ("cache file", str(cache_file)),
        ("cached", cached),
    ]
    if entry.notes:
        rows.append(("notes", entry.notes))
    print(tabulate(rows, tablefmt="plain"))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    names = model_zoo.list_models() if args.all else args.names
    if not names:
        print("give one or more model names, or --all", file=sys.stderr)
        return 2
    for name in names:
        path = model_zoo.get_checkpoint(name, progress=not args.no_progress)
        url = model_zoo.get_checkpoint_url(name)
        where = "cache" if is_url(url) else "mirror directory"
        print(f"{model_zoo.get_entry(name).name}: {path} ({where})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="the released models")
    p_list.add_argument("--task", choices=["instance", "panoptic", "semantic"])
    p_list.set_defaults(func=cmd_list)
    p_info = sub.add_parser("info", help="everything about one model")
    p_info.add_argument("name")
    p_info.set_defaults(func=cmd_info)
    p_download = sub.add_parser("download", help="download checkpoints into the cache")
    p_download.add_argument("names", nargs="*")
    p_download.add_argument("--all", action="store_true", help="every released model")
    p_download.add_argument("--no-progress", action="store_true")
    p_download.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, FileNotFoundError, model_zoo.DownloadError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
