"""`python -m stark_lsp [--tcp HOST:PORT] [--log-file PATH] [--log-level LEVEL]`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {value!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stark_lsp", description=__doc__)
    parser.add_argument(
        "--tcp", type=_host_port, metavar="HOST:PORT", help="serve over TCP instead of stdio"
    )
    parser.add_argument("--log-file", help="write the server log here (default: stderr)")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pygls logs every message body at INFO; keep request bodies out of logs unless asked.
    logging.getLogger("pygls").setLevel(max(logging.WARNING, getattr(logging, args.log_level)))

    from stark_lsp import config
    from stark_lsp.app import create_server
    from stark_lsp.core import UserError

    def not_a_user_error(record: logging.LogRecord) -> bool:
        """A bad request is answered with an error; its traceback is noise in the log."""
        cause = record.exc_info[1].__cause__ if record.exc_info and record.exc_info[1] else None
        return not isinstance(cause, UserError)

    logging.getLogger("pygls.protocol.json_rpc").addFilter(not_a_user_error)

    server = create_server()

    def secrets() -> list[str]:
        values = [server.settings.api_key or ""]
        values += [os.environ.get(name, "") for name in ("STARK_API_KEY", "OPENAI_API_KEY")]
        return [v for v in values if v]

    secret_filter = config.SecretFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(secret_filter)

    def on_sigterm(signum: int, _frame: object) -> None:
        """Editors stop servers with SIGTERM; jobs live in their own sessions, so end them.
        Then leave at once: a normal exit would wait for the thread blocked reading stdin."""
        server.jobs.kill_all_now()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if args.tcp:
            server.start_tcp(*args.tcp)
        else:
            server.start_io()
    finally:
        server.watcher.stop()
        server.jobs.kill_all_now()
    return 0


if __name__ == "__main__":
    sys.exit(main())
