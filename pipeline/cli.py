"""The ``sensorcast`` command line.

Every subcommand lives in its own module and registers itself here. A user
mistake (bad flag, missing file, unusable snapshot) ends in one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pipeline import (
    bench,
    check_config,
    daemon,
    demo,
    evaluate,
    kernels,
    nab,
    nab_score,
    precompile,
    replay,
    state_cmd,
    train_cmd,
)
from pipeline.errors import SensorcastError, SnapshotError, UserError

SIGNED = re.compile(r"-\.?\d")  # "-5s", "-.5m": a signed value, never one of our flags


class _Parser(argparse.ArgumentParser):
    """argparse, with its mistakes in the one-line form of every other user mistake."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sensorcast: error: {message}; see {self.prog} --help\n")

    def parse_known_args(  # type: ignore[override]  # (typeshed overloads it by namespace type)
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        argv = sys.argv[1:] if args is None else args
        return super().parse_known_args(self._attach_signed(argv), namespace)

    def _attach_signed(self, args: Sequence[str]) -> list[str]:
        """``--window -5s`` as ``--window=-5s``: argparse takes ``-5s`` for a flag and says
        only "expected one argument"; the flag's own check says what is wrong with it."""
        out: list[str] = []
        for arg in args:
            if out and SIGNED.match(arg) and self._takes_a_value(out[-1]) and "--" not in out:
                out[-1] += f"={arg}" if out[-1].startswith("--") else arg
            else:
                out.append(arg)
        return out

    def _takes_a_value(self, arg: str) -> bool:
        action = self._option_string_actions.get(arg)
        return action is not None and action.nargs is None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sensorcast",
        description="Streaming sensor forecasts with intervals and anomaly flags.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    daemon.register(commands)
    replay.register(commands)
    evaluate.register(commands)
    nab.register(commands)
    nab_score.register(commands)
    demo.register(commands)
    train_cmd.register(commands)
    check_config.register(commands)
    bench.register(commands)
    state_cmd.register(commands)
    precompile.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _one_blas_thread()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if kernels.chosen:  # a replay, a bench or the daemon runs slower kernels: say so
        logging.getLogger("pipeline.kernels").warning("%s", kernels.chosen)
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a reader gone away shows here, not in the flush at exit
        return code
    except (UserError, SnapshotError) as exc:
        print(f"sensorcast: error: {exc}", file=sys.stderr)
        return 2
    except SensorcastError as exc:  # not the user's doing: a disk, a broker
        print(f"sensorcast: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as cat does
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


def _one_blas_thread() -> None:
    """One OpenBLAS thread for this process. The GRU's products each step are small
    (3H x H by H x streams): a second thread gains little on them (docs/benchmarks.md)
    and spins on a core that the broker and the MQTT threads need."""
    import numpy  # noqa: F401  (its OpenBLAS must be loaded to be limited)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot raise
    the same BrokenPipeError again (Python's documented way out of SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
