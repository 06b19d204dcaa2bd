"""Push a checkpoint folder to a Hugging Face model repo (private unless --public), with a model card.

    python -m checkpoint_tools.push_to_hf checkpoints/my_run/step_00050000 my-org/trm-arc1
    python -m checkpoint_tools.push_to_hf checkpoints/my_run my-org/trm-arc1 --public   # newest step_* in the run
    HF_TOKEN=... python -m checkpoint_tools.push_to_hf <folder> <org/repo> --exclude 'train_state.*'

The token comes from --token, HF_TOKEN, HUGGING_FACE_HUB_TOKEN or the cached `hf auth login`; it is never
printed, whatever its prefix.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.hub import push_checkpoint, redact, resolve_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder (step_*) or run folder (newest step_* is pushed)")
    parser.add_argument("repo_id", help="Hub model repo, org/name")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the cached login)")
    parser.add_argument("--public", action="store_true", help="create the repo public (default private)")
    parser.add_argument("--exclude", action="append", default=[], help="glob of files to leave out (repeatable)")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--message", default=None, help="commit message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from pathlib import Path

    if not Path(args.checkpoint).expanduser().exists():
        print(f"error: no such folder: {args.checkpoint}", file=sys.stderr)
        return 2
    try:
        folder = resolve_checkpoint(args.checkpoint)
        url = push_checkpoint(folder, args.repo_id, token=args.token, private=not args.public,
                              retries=args.retries, exclude=tuple(args.exclude), commit_message=args.message)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {redact(exc, args.token)}", file=sys.stderr)
        return 1
    print(f"pushed {folder} -> {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
