# The `liveact` console entry: dispatches subcommands to their modules, imported only when used.
from __future__ import annotations

import importlib
import sys
from typing import Optional

COMMANDS = {
    "flops": ("liveact_model.flops", "FLOPs per frame, KV-cache bytes and a labelled H100/H200 projection"),
    "train": ("liveact_model.train", "Neighbor Forcing training"),
    "generate": ("liveact_model.generate", "generate a talking-head video from an image and an audio file"),
    "eval": ("liveact_model.evaluate", "lip-sync, stability and speed measurements"),
}


def _usage() -> str:
    lines = ["usage: liveact <command> [options]", "", "commands:"]
    lines += [f"  {name:9s} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`liveact <command> --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"liveact: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    mod_name = COMMANDS[cmd][0]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            print(f"liveact {cmd}: module {mod_name} is not part of this installation", file=sys.stderr)
            return 2
        raise
    return int(mod.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
