"""The ``kubediffusers`` command.

kubediffusers operator                 run the operator (configured by KUBEDIFFUSERS_OPERATOR_* variables)
kubediffusers render FILE [-n NS]      print the objects each InferencePipeline in FILE becomes
kubediffusers local FILE [--port N]    run the pipeline in FILE on this machine
kubediffusers crd                      print the CustomResourceDefinition
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from .spec import SpecError

EXIT_INVALID = 2


def _render(args: argparse.Namespace) -> int:
    from .builders import build_children
    from .manifests import dump_all, load_pipelines
    from .settings import OperatorSettings

    settings = OperatorSettings()
    objects = [obj for p in load_pipelines(args.file, args.namespace) for obj in build_children(p, settings)]
    sys.stdout.write(dump_all(objects))
    return 0


def _local(args: argparse.Namespace) -> int:
    from . import local
    from .manifests import load_pipelines

    pipelines = load_pipelines(args.file)
    if len(pipelines) > 1 and not args.name:
        raise SpecError(f"{args.file} holds {len(pipelines)} pipelines: pick one with --name")
    chosen = [p for p in pipelines if not args.name or p.name == args.name]
    if not chosen:
        raise SpecError(f"{args.file}: no InferencePipeline named {args.name!r}")
    plan = local.plan(chosen[0], model_dir=Path(args.model_dir).resolve(), host=args.host, port=args.port, device=args.device, environ=os.environ)
    if args.dry_run:
        print("# fetch: " + " ".join(plan.fetch))
        for key, value in sorted(plan.fetch_env.items()):
            print(f"{key}={'***' if 'TOKEN' in key else value}")
        print("# serve: " + " ".join(plan.serve))
        for key, value in sorted(plan.serve_env.items()):
            print(f"{key}={'***' if 'TOKEN' in key else value}")
        return 0
    return local.run(plan, os.environ)


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)
    from .runtime import Runtime
    from .settings import OperatorSettings

    settings = OperatorSettings()
    kopf.configure(
        debug=settings.log_level == "debug",
        verbose=settings.log_level in ("debug", "info"),
        quiet=settings.log_level in ("warning", "error"),
        log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}[settings.log_format],
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        memo=kopf.Memo(runtime=Runtime(settings)),
    )
    return 0


def _crd(args: argparse.Namespace) -> int:
    from .crd import build_crd

    sys.stdout.write(yaml.safe_dump(build_crd(), sort_keys=False))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kubediffusers", description="Serve Hugging Face diffusers pipelines on Kubernetes.")
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("operator", help="run the operator").set_defaults(fn=_operator)
    render = sub.add_parser("render", help="print the objects the pipelines in FILE become (no cluster needed)")
    render.add_argument("file", help="InferencePipeline manifest(s), '-' for stdin")
    render.add_argument("-n", "--namespace", default="default", help="namespace for manifests that name none")
    render.set_defaults(fn=_render)
    loc = sub.add_parser("local", help="run the pipeline in FILE on this machine (see docs/operator.md)")
    loc.add_argument("file", nargs="?", help="InferencePipeline manifest")
    loc.add_argument("-f", "--filename", dest="file_opt", help="same as FILE (kubectl style)")
    loc.add_argument("--name", help="which pipeline, when FILE holds several")
    loc.add_argument("--model-dir", default=".cache/models", help="Hugging Face cache directory (default .cache/models)")
    loc.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    loc.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    loc.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: auto)")
    loc.add_argument("--dry-run", action="store_true", help="print the commands and environment, run nothing (tokens masked)")
    loc.set_defaults(fn=_local)
    sub.add_parser("crd", help="print the InferencePipeline CustomResourceDefinition").set_defaults(fn=_crd)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "local":
        args.file = args.file or args.file_opt
        if not args.file:
            parser().error("local: a manifest is needed: kubediffusers local FILE")
    try:
        return int(args.fn(args) or 0)
    except SpecError as exc:
        print(f"kubediffusers {args.command}: invalid manifest: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as exc:  # LocalError and friends: one line, no traceback
        from .local import LocalError

        if isinstance(exc, LocalError):
            print(f"kubediffusers {args.command}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        raise


if __name__ == "__main__":
    logging.basicConfig()
    sys.exit(main())
