"""Command line: `run` (the daemon), `check` (probes once, as a report), `config validate|show`.

Exit codes: 0 success, 1 a probe failed (check), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

import yaml

from monitor import __version__
from monitor.alerting.rules import add_parser as add_rules_parser
from monitor.alerting.rules import run_rules
from monitor.clients import make_client
from monitor.config import Config, ConfigError, load_config, parse_listen
from monitor.culprit import TargetCulprit
from monitor.fleet import identity
from monitor.http.client import redact_url
from monitor.logsetup import Redactor, configure_logging
from monitor.pipeline import CrossCheck, Pipeline, Redact
from monitor.report import RENDERERS, ProbeRuns, ReportHeader, TargetLine, render_html
from monitor.results import ProbeResult
from monitor.scenario.registry import KINDS, SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.slo.command import add_parser as add_slo_parser
from monitor.slo.command import run_slo

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
READ_ONLY_HELP = "skip every probe that writes to its target (as the config key read_only: true)"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), as every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="synthetic-monitor",
        # The plug-ins say what they probe: the core names no kind of service.
        description="Synthetic monitor for " + "; ".join(k.description for k in KINDS.values() if k.description) + ".",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon: scheduled probes, /metrics, alerts")
    run.add_argument("--config", help="YAML config file (default: $SYNTHETIC_MONITOR_CONFIG, else built-in defaults)")
    run.add_argument(
        "--listen", help="HOST:PORT for /metrics and friends (default: config, 0.0.0.0:9356; port 0: any free port)"
    )
    run.add_argument(
        "--port-file",
        metavar="FILE",
        help="write the bound port to FILE once the server listens (for --listen HOST:0)",
    )
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web configuration: TLS (tls_server_config) and basic auth (basic_auth_users)",
    )
    run.add_argument(
        "--web.enable-lifecycle",
        dest="web_enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload (as Prometheus; SIGHUP always reloads)",
    )
    run.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)

    check = sub.add_parser("check", help="run the probes once (or N times) and print a report")
    check.add_argument("--config", help="YAML config file")
    check.add_argument("--probe", action="append", help="only this probe (repeatable)")
    check.add_argument("--repeat", type=int, default=1, help="run each probe N times, with latency statistics")
    check.add_argument("--format", choices=sorted([*RENDERERS, "html"]), default="table")
    check.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP)

    sub.add_parser(
        "demo", help="start a local demo stack (servers, stand-ins) and the daemon (see `demo --help`)", add_help=False
    )

    add_slo_parser(sub)
    add_rules_parser(sub)

    config = sub.add_parser("config", help="validate or show a configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    validate = config_sub.add_parser("validate", help="exit 0 if FILE is valid, else 2 with the problem")
    validate.add_argument("file", nargs="?", help="config file (or --config FILE)")
    validate.add_argument("--config", dest="config_file", metavar="FILE", help="config file (as run and check take it)")
    validate.add_argument("--all", action="store_true", help="list every problem, one per line, not only the first")
    show = config_sub.add_parser("show", help="print the effective configuration, secrets redacted")
    show.add_argument("file", nargs="?", help="config file (default: $SYNTHETIC_MONITOR_CONFIG or defaults)")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        try:
            from tests.standin.demo import run_demo
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("tests.standin"):
                raise
            # The wheel and the image ship no stand-ins (monitor/standin is excluded).
            print(
                "synthetic-monitor demo: the demo runs from a clone of the repository"
                " (./deploy/local/demo.sh); the installed package carries no stand-ins",
                file=sys.stderr,
            )
            return 2
        return run_demo(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args)
        if args.command == "config":
            return _config(args)
        if args.command == "slo":
            return run_slo(args)
        if args.command == "rules":
            return run_rules(args)
    except ConfigError as exc:
        print(f"synthetic-monitor: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon

    config = load_config(args.config, read_only=args.read_only)
    if args.listen:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            raise ConfigError(f"--listen {exc}") from None
    web_config = None
    if args.web_config_file:
        from monitor.web.webconfig import load_web_config

        web_config = load_web_config(args.web_config_file)
        if web_config.tls is not None and config.tls is not None:
            raise ConfigError(
                "tls: set both in the config file and in --web.config.file (tls_server_config); keep only the latter"
            )
    configure_logging(config.log.level, config.log.format, config.secret_values())
    daemon = Daemon(
        config,
        args.config,
        args.listen,
        web_config=web_config,
        enable_lifecycle=args.web_enable_lifecycle,
        port_file=args.port_file,
        read_only=args.read_only,
    )
    return asyncio.run(daemon.run())


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config, read_only=args.read_only)
    if args.repeat < 1 or args.repeat > 10000:
        print("synthetic-monitor: --repeat must be between 1 and 10000", file=sys.stderr)
        return EXIT_USAGE
    names = [p.name for p in config.probes]
    wanted = args.probe or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"synthetic-monitor: unknown probe {unknown[0]!r}; configured: {', '.join(names)}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("error", "json", config.secret_values(), stream=sys.stderr)
    # Said before anything runs; on stderr when stdout carries JSON or Markdown.
    print(writes_line(config, wanted), file=sys.stdout if args.format == "table" else sys.stderr, flush=True)
    probes = asyncio.run(run_check(config, wanted, args.repeat))
    if args.format == "html":  # the status page: it carries the fleet identity itself
        print(render_html(probes, config))
    else:
        print(with_fleet(RENDERERS[args.format](probes, report_header(config, probes)), args.format, config, wanted))
    return EXIT_OK if all(p.ok for p in probes) else EXIT_FAILED


def writes_line(config: Config, names: Sequence[str]) -> str:
    """Which of these probes write, and where: the first line of `check`."""
    writers = [p for p in config.probes if p.name in names and SCENARIOS[p.scenario].writes]
    if not writers:
        return "read-only: no selected probe writes" + (" (read_only is on)" if config.read_only else "")
    where = ", ".join(f"{p.name} -> {redact_url(config.target(p.target).url)}" for p in writers)
    return f"writes: {where} (they create and clean up test data there; --read-only skips them)"


def report_header(config: Config, probes: Sequence[ProbeRuns]) -> ReportHeader:
    """The report's header: the monitor, where and when it ran, and each probed target as last seen."""
    lines = []
    for target in config.targets:
        results = [r for p in probes if p.target == target.name for r in p.runs]
        if not results:
            continue
        versions = [r.facts.target_version for r in results if r.facts.target_version]
        certificates = [r.certificate for r in results if r.certificate is not None]
        lines.append(
            TargetLine(
                target.name,
                target.kind,
                redact_url(target.url),
                versions[-1] if versions else None,
                certificates[-1].earliest_not_after if certificates else None,
            )
        )
    who = identity(config)
    return ReportHeader(
        __version__,
        dt.datetime.now(dt.UTC),
        config.location,
        who.get("replica") if config.fleet else None,
        tuple(lines),
        config.alerting.runbook_url,
    )


def with_fleet(report: str, fmt: str, config: Config, names: Sequence[str]) -> str:
    """The report plus where it ran from and, when sharded, which members run each probe."""
    who = identity(config)
    members = config.assignment()
    if fmt == "json":
        data = json.loads(report)
        data.update(who)
        for entry in data["probes"]:
            entry["members"] = members.get(entry["name"])
        return json.dumps(data, indent=2)
    if config.location is None and not config.fleet:
        return report  # a lone daemon's report stays as it was
    line = f"location: {who['location'] or '(not set)'}, replica: {who['replica']}"
    if config.shard is not None:
        line += f", shard member {config.shard.index} of {config.shard.count}"
        line += " (members per probe: " + ", ".join(f"{n}={members[n]}" for n in names) + ")"
    return f"{report}\n{line}"


async def run_check(config: Config, names: Sequence[str], repeat: int = 1) -> list[ProbeRuns]:
    """Run the named probes one after another, `repeat` times, on one client per target."""
    selected = [p for p in config.probes if p.name in names]
    clients = {t.name: make_client(t) for t in config.targets if any(p.target == t.name for p in selected)}
    runs: dict[str, list[ProbeResult]] = {p.name: [] for p in selected}
    # The daemon's pipeline, with the report as its one sink.
    pipeline = Pipeline(
        [Redact(Redactor(config.secret_values()).scrub), CrossCheck(config), TargetCulprit(config)], [ReportSink(runs)]
    )
    try:
        for _ in range(repeat):
            for probe in selected:
                pipeline.handle(
                    await run_probe(
                        SCENARIOS[probe.scenario],
                        clients[probe.target],
                        probe.options,
                        probe=probe.name,
                        target=probe.target,
                        timeout=probe.deadline,
                        step_timeout=probe.step_timeout,
                    )
                )
    finally:
        for client in clients.values():
            await client.aclose()
    return [
        ProbeRuns(
            p.name,
            p.target,
            config.target(p.target).kind,
            p.scenario,
            tuple(runs[p.name]),
            SCENARIOS[p.scenario].steps_for(p.options),
        )
        for p in selected
    ]


class ReportSink:
    """Collects each probe's enriched results for the `check` report."""

    name = "report"
    takes_monitor_faults = True  # the report shows every run

    def __init__(self, runs: dict[str, list[ProbeResult]]) -> None:
        self.runs = runs

    def handle(self, result: ProbeResult) -> None:
        self.runs[result.probe].append(result)


def _config(args: argparse.Namespace) -> int:
    if args.config_command == "validate":
        file = args.file or args.config_file
        if not file or (args.file and args.config_file):
            print("synthetic-monitor: config validate takes one file: FILE or --config FILE", file=sys.stderr)
            return EXIT_USAGE
        try:
            config = load_config(file)
        except ConfigError as exc:
            if not args.all:
                raise
            for problem in exc.problems:
                print(f"synthetic-monitor: config error: {problem}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{file}: ok ({len(config.targets)} targets, {len(config.probes)} probes)")
        return EXIT_OK
    config = load_config(args.file)
    data = config.redacted()
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK
