"""Command line: a Label Studio ML backend that answers with gem_sam's masks.

python -m gem_sam.serve --vocab vocab.txt --document-root /data/photos [labelling options]

Label Studio reaches it at http://HOST:PORT (Settings > Model > Connect model).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .args import USER_ERRORS
from .label import add_labeller_arguments, add_vocabulary_argument, labeller_spec_from_args

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9090


def build_parser(*, prog: str = "python -m gem_sam.serve") -> argparse.ArgumentParser:
    """The options; ``prog`` names the command in the help (``gem-sam serve`` or the module)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "A Label Studio ML backend: Label Studio asks it for predictions of its tasks (as they arrive, or "
            "all at once) and gets gem_sam's masks as brush predictions, the same as 'gem_sam.export --to "
            "label-studio' writes. The models load once, with the labelling options of gem_sam.label."
        ),
    )
    server = parser.add_argument_group("server")
    add_vocabulary_argument(server)
    server.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; 0.0.0.0 exposes it to the network)",
    )
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    server.add_argument(
        "--document-root",
        metavar="DIR",
        help="the folder Label Studio serves local files from (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), to read "
        "/data/local-files/ URLs; other URLs are fetched, with LABEL_STUDIO_API_KEY for LABEL_STUDIO_URL's host",
    )
    add_labeller_arguments(parser)
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.serve") -> int:
    args = build_parser(prog=prog).parse_args(argv)
    try:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port {args.port} must lie in 1..65535")
        spec = labeller_spec_from_args(args)
        import uvicorn

        from ..review.backend import LabelStudioSource, PredictionService, create_app
        from ..review.label_studio import model_version

        service = PredictionService(
            spec.build(),
            source=LabelStudioSource.from_environment(args.document_root),
            version=model_version(spec.settings()),
        )
    except (*USER_ERRORS, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"gem_sam ML backend for Label Studio at http://{args.host}:{args.port} ({service.version})", flush=True)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    return 0
