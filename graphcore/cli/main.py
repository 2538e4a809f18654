"""The ``netcanvas`` command line.

Exit status: 0 on success, 1 on a user error (one line per problem, naming the node; no
traceback), 2 on bad arguments. Wherever a graph file is taken, a template name works too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from graphcore.cli.export import add_export_arguments, add_import_arguments, export_command, import_command
from graphcore.cli.play import add_play_arguments, play_command
from graphcore.cli.sample import add_sample_arguments, sample_command
from graphcore.cli.train import add_train_arguments, train_command
from graphcore.core.analysis import Analysis
from graphcore.core.diagnostics import GraphError, errors
from graphcore.core.gallery import open_graph, templates
from graphcore.core.subgraphs import standalone
from graphcore.core.summary import summary
from graphcore.runtime.workspace import Workspace, reason

EDITOR_ENTRY_POINTS = "netcanvas.editor"
GRAPH_SUFFIXES = (".json", ".onnx")  # what the editor's argument opens as a graph rather than as a workspace
Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: its help line, its arguments and its handler."""
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (help_text, arguments, handler)
        return handler
    return register


def _graph_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help="graph JSON file or template name")


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    _graph_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the diagnostics as JSON")


@command("validate", "check a graph and list its problems", _validate_arguments)
def validate_command(args: argparse.Namespace) -> int:
    try:
        doc = open_graph(args.graph)
        diagnostics = Analysis(doc).diagnostics
    except GraphError as exc:
        if not args.json:
            raise
        doc, diagnostics = None, exc.diagnostics
    failed = bool(errors(diagnostics))
    if args.json:
        print(json.dumps({"graph": doc.name if doc else args.graph, "ok": not failed,
                          "diagnostics": [d.to_dict() for d in diagnostics]}, indent=2))
    else:
        for diagnostic in diagnostics:
            print(diagnostic, file=sys.stderr if diagnostic.severity == "error" else sys.stdout)
        if not failed:
            print(f"{doc.name}: OK ({len(doc.nodes)} nodes, {len(doc.edges)} edges)")
    return 1 if failed else 0


def _summary_arguments(parser: argparse.ArgumentParser) -> None:
    _graph_argument(parser)
    parser.add_argument("--subgraph", metavar="NAME", help="only this subgraph of the file (a GAN's generator)")


@command("summary", "print each node's output shape, parameters and MACs", _summary_arguments)
def summary_command(args: argparse.Namespace) -> int:
    doc = open_graph(args.graph)
    print(summary(standalone(doc, args.subgraph) if args.subgraph else doc))
    return 0


@command("templates", "list the bundled templates", lambda parser: None)
def templates_command(args: argparse.Namespace) -> int:
    print("\n".join(templates()))
    return 0


command("train", "train a graph on a dataset into a run folder (runs/NAME)", add_train_arguments)(train_command)
command("sample", "draw samples from a trained diffusion or GAN run", add_sample_arguments)(sample_command)
command("play", "play a game against a trained alphazero or muzero run", add_play_arguments)(play_command)
command("export", "write a graph as standalone Python or verified ONNX", add_export_arguments)(export_command)
command("import", "open an ONNX model or a PyTorch module as a graph and its weights",
        add_import_arguments)(import_command)


def editor(argv: list[str]) -> int:
    """``netcanvas [--host H] [--port P] [--token T | --token-file F] [--native] [DIR | G.json | M.onnx]``:
    start the editor on the workspace DIR (default: the current folder), or on a graph file with the
    current folder as the workspace."""
    parser = _editor_parser()
    args = parser.parse_args(argv)
    token = _read_token(parser, args.token_file) if args.token_file else args.token
    refusal = _cannot_listen(args.host, args.port)
    if refusal:  # found now, in one line, rather than after the server has said it is ready
        print(f"netcanvas: {refusal}", file=sys.stderr)
        return 2
    workspace, graph = _editor_target(parser, args.target)
    opens = {"graph": graph} if graph else {}  # else the editor's own default
    start = _editor_entry_point()
    start(workspace=workspace, **opens, host=args.host, port=args.port, token=token or None, native=args.native)
    return 0


def _editor_target(parser: argparse.ArgumentParser, target: str) -> tuple[str, str | None]:
    """(workspace folder, graph to open or None) for the editor's argument: a folder is the workspace
    (made, with graphs/ and runs/, if absent); a graph file or a template name opens in the current folder."""
    path = Path(target).expanduser()
    opens_file = path.suffix.lower() in GRAPH_SUFFIXES
    if opens_file or (not path.exists() and target in templates()):
        if opens_file and not path.is_file():
            parser.error(f"{target}: no such graph file")
        return str(Path.cwd()), (str(path.resolve()) if opens_file else target)
    if path.exists() and not path.is_dir():
        parser.error(f"{target}: not a folder, a .json graph or an .onnx model")
    try:
        workspace = Workspace(path).create()
    except GraphError as exc:
        parser.error(reason(exc))
    return str(workspace.root), None


def _editor_parser() -> argparse.ArgumentParser:
    """The editor's arguments; its help (``netcanvas -h``) also lists the commands."""
    commands = "\n".join(f"  {name:<10} {help_text}" for name, (help_text, _, _) in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="netcanvas", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="NetCanvas: compose neural networks visually. With no "
                                                 "command, start the editor (netcanvas [DIR]) and open it in a "
                                                 "browser at http://HOST:PORT.",
                                     epilog=f"commands (netcanvas COMMAND -h):\n{commands}")
    parser.add_argument("target", nargs="?", default=".", metavar="DIR | G.json | M.onnx",
                        help="the workspace folder that holds your graphs/ and runs/ (default: the current folder; "
                             "made if absent), or a graph file or .onnx model (or a template name) to open with "
                             "the current folder as the workspace")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=_port, default=8080, help="port to listen on, 1-65535 (default: 8080)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", default=os.environ.get("NETCANVAS_TOKEN"),
                       help="access token (a long random string) the page asks for; required for a --host other "
                            "than loopback. Default: $NETCANVAS_TOKEN. A token given here shows in ps: prefer "
                            "$NETCANVAS_TOKEN or --token-file")
    token.add_argument("--token-file", metavar="PATH", help="read the access token from this file (one line)")
    parser.add_argument("--native", action="store_true", help="open in a desktop window (needs pywebview)")
    return parser


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _read_token(parser: argparse.ArgumentParser, path: str) -> str:
    """The access token in the file ``path`` (so that it needn't show in ``ps``)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"--token-file {path}: {getattr(exc, 'strerror', None) or exc}")
    if not token:
        parser.error(f"--token-file {path} is empty")
    if "\n" in token:
        parser.error(f"--token-file {path}: the token must be one line")
    return token


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the editor could not listen on ``host:port`` (the port taken, no such address), or None:
    found by binding a socket there as the server will."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
            probe.bind(address)
    except OSError as exc:  # socket.gaierror included
        return f"cannot listen on {where}: {exc.strerror or exc}"
    return None


def _editor_entry_point() -> Callable[..., None]:
    """The editor's start function, which the UI package registers under ``netcanvas.editor``:
    the CLI finds it at run time, so nothing in ``graphcore`` imports the UI."""
    found = list(entry_points(group=EDITOR_ENTRY_POINTS))
    if not found:
        raise GraphError("the editor is not installed: no package registers a 'netcanvas.editor' entry point "
                         "(reinstall NetCanvas with pip install -e .)")
    return found[0].load()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netcanvas", description="NetCanvas command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, arguments, handler) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        arguments(sub_parser)
        sub_parser.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in COMMANDS:
            args = build_parser().parse_args(argv)
            return args.handler(args)
        return editor(argv)
    except GraphError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

