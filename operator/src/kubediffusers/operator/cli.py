"""The ``kubediffusers`` command.

kubediffusers operator                 run the operator (configured by KUBEDIFFUSERS_OPERATOR_* variables)
kubediffusers render FILE [-n NS]      print the objects each InferencePipeline in FILE becomes
kubediffusers local FILE [--port N]    run the pipeline in FILE on this machine
kubediffusers crd                      print the CustomResourceDefinition
kubediffusers crd --apply              server-side apply it (the chart's pre-upgrade hook Job)
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

    if not args.apply:
        sys.stdout.write(yaml.safe_dump(build_crd(), sort_keys=False))
        return 0
    import asyncio

    return asyncio.run(_apply_crd(build_crd()))


async def _apply_crd(crd: dict[str, object]) -> int:
    """Server-side apply with the pod's service account (or a kubeconfig), as the hook Job does.

    Needs only `patch` on this one CustomResourceDefinition (the chart's hook ClusterRole).
    """
    import kopf

    from .kube import ApiError, Kube, path_of

    settings = kopf.OperatorSettings()
    try:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    except (kopf.LoginError, OSError, KeyError) as exc:
        print(f"kubediffusers crd: cannot log in: {exc!r}", file=sys.stderr)
        return 1
    if info is None:
        print("kubediffusers crd: no Kubernetes credentials (not in a pod, no kubeconfig)", file=sys.stderr)
        return 1
    kube = Kube(info)
    try:
        await kube.apply(crd)
    except ApiError as exc:
        print(f"kubediffusers crd: could not apply {path_of(crd)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await kube.close()
    name = crd["metadata"]["name"]  # type: ignore[index]
    print(f"customresourcedefinition {name} applied (server-side)")
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
    crd = sub.add_parser("crd", help="print the InferencePipeline CustomResourceDefinition")
    crd.add_argument("--apply", action="store_true", help="server-side apply it to the cluster instead (service account or kubeconfig)")
    crd.set_defaults(fn=_crd)
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
