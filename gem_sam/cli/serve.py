"""Command line: a Label Studio ML backend that answers with gem_sam's masks.

python -m gem_sam.serve --vocab vocab.txt --document-root /data/photos [labelling options]

Label Studio reaches it at http://HOST:PORT (Settings > Model > Connect model).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

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
            "label-studio' writes, scored so that the least sure images sort first. The models load once, with "
            "the labelling options of gem_sam.label. Environment: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
            "(images uploaded to Label Studio are fetched from its exact origin with the key); "
            "BASIC_AUTH_USER and BASIC_AUTH_PASS (HTTP basic auth on every route, as set in the model's settings "
            "in Label Studio)."
        ),
    )
    server = parser.add_argument_group("server")
    add_vocabulary_argument(server)
    server.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}, this machine only). Any other address needs "
        "BASIC_AUTH_USER and BASIC_AUTH_PASS, or --no-auth",
    )
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    server.add_argument(
        "--no-auth",
        action="store_true",
        help="listen on a non-loopback --host without basic auth (anyone who reaches the port can use the models)",
    )
    server.add_argument(
        "--document-root",
        metavar="DIR",
        help="the folder Label Studio serves local files from (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), to read "
        "/data/local-files/ URLs",
    )
    server.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also fetch task images from this host (HOST, HOST:PORT, or *.DOMAIN for its subdomains, which must "
        "resolve to public addresses); repeat it for several. Without it, images are read from --document-root "
        "or fetched from LABEL_STUDIO_URL's origin only",
    )
    server.add_argument(
        "--max-tasks",
        type=int,
        default=100,
        metavar="N",
        help="tasks per prediction request (default: 100; Label Studio sends all the tasks selected for "
        "'Retrieve Predictions' in one request)",
    )
    server.add_argument(
        "--max-image-mb", type=float, default=200.0, metavar="MB", help="largest image download (default: 200)"
    )
    server.add_argument(
        "--fetch-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a whole image download may take, redirects included (default: 60)",
    )
    add_labeller_arguments(parser)
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens on this machine only (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def basic_auth_from_environment(host: str, *, no_auth: bool):  # noqa: ANN201 - BasicAuth | None
    """Basic auth from ``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``; refuses a non-loopback ``host`` without
    it unless ``no_auth``."""
    from ..review.backend import BasicAuth

    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    if bool(user) != bool(password):
        raise ValueError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
    if user and password:
        return BasicAuth(user, password)
    if not is_loopback(host) and not no_auth:
        raise ValueError(
            f"--host {host} exposes the backend beyond this machine, and without authentication anyone who reaches "
            "it can run the models and make it fetch images: set BASIC_AUTH_USER and BASIC_AUTH_PASS (and the same "
            "in the model's settings in Label Studio), or pass --no-auth"
        )
    return None


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.serve") -> int:
    args = build_parser(prog=prog).parse_args(argv)
    try:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port {args.port} must lie in 1..65535")
        for name, value in (("--max-tasks", args.max_tasks), ("--max-image-mb", args.max_image_mb),
                            ("--fetch-timeout", args.fetch_timeout)):  # fmt: skip
            if value <= 0:
                raise ValueError(f"{name} {value:g} must be positive")
        from ..review.backend import BackendLimits, LabelStudioSource, PredictionService, create_app
        from ..review.fetch import FetchPolicy
        from ..review.label_studio import model_version

        auth = basic_auth_from_environment(args.host, no_auth=args.no_auth)
        policy = FetchPolicy(
            label_studio_url=os.environ.get("LABEL_STUDIO_URL") or None,
            api_key=os.environ.get("LABEL_STUDIO_API_KEY") or None,
            allowed_hosts=tuple(args.allow_host),
            max_bytes=int(args.max_image_mb * 2**20),
            deadline_seconds=args.fetch_timeout,
        )
        spec = labeller_spec_from_args(args)
        import uvicorn

        service = PredictionService(
            spec.build(),
            source=LabelStudioSource(
                document_root=Path(args.document_root) if args.document_root else None, policy=policy
            ),
            version=model_version(spec.settings()),
        )
    except (*USER_ERRORS, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    protection = "basic auth" if auth else "no auth (loopback)" if is_loopback(args.host) else "no auth (--no-auth)"
    print(
        f"gem_sam ML backend for Label Studio at http://{args.host}:{args.port} ({service.version}; {protection})",
        flush=True,
    )
    app = create_app(service, auth=auth, limits=BackendLimits(max_tasks=args.max_tasks))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
