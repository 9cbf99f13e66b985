"""``privagg split``: ``run`` trains one split-learning configuration (test accuracy, bytes per
step; ``--fedavg``: FedAvg on the same partition); ``attack`` runs every attack x defense over
seeds (label leakage on breast-cancer, inversion on digits): the leak-against-utility report.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from privagg.cli._console import names_help
from privagg.errors import ConfigurationError

__all__ = ["add_parser"]

_EXAMPLES = """examples:
  privagg split run                                   # vanilla, breast-cancer, one client
  privagg split run --mode u-shaped --topology splitfed --clients 4 --fedavg
  privagg split attack --seeds 0,1,2                  # norm + direction x every defense
  privagg split attack --dataset digits --attacks decoder --defenses none,nopeek --cut 3"""


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _seeds(text: str) -> tuple[int, ...]:
    if not all(s.isdigit() for s in _names(text)):
        raise ConfigurationError(f"not a list of seeds: {text!r}", field="--seeds")
    return tuple(int(s) for s in _names(text))


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "split",
        help="split learning: training runs and the label/input leakage study",
        description=__doc__,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inner = p.add_subparsers(dest="split_command", metavar="{run,attack}", parser_class=type(p))
    for name, helptext in (
        ("run", "train one split-learning configuration"),
        ("attack", "every attack x defense over seeds, with a report"),
    ):
        q = inner.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--dataset", action=names_help("dataset: {names}", "protocols.datasets:DATASETS.names"))
        q.add_argument("--cut", type=int, help="modules in the client part (default: to the last hidden layer)")
        q.add_argument("--epochs", type=int, help="training epochs (default 10)")
        q.add_argument("--hidden", help="MLP widths, comma-separated (default 32,16; digits 64)")
        q.add_argument("--optimizer", choices=("sgd", "adam"), help="parties' optimiser (default sgd)")
        q.add_argument("--lr", type=float, help="learning rate (default 0.05)")
        q.add_argument("--out", metavar="DIR", help="write the report to DIR")
        q.add_argument("--json", action="store_true", help="print report.json to stdout")
        if name == "run":
            q.add_argument("--mode", choices=("vanilla", "u-shaped"), default="vanilla", help="where the labels live")
            topologies = ("single", "sequential", "splitfed")
            q.add_argument("--topology", choices=topologies, default="single", help="how clients take turns")
            q.add_argument("--clients", type=int, default=1, help="number of clients (default 1)")
            q.add_argument("--defense", default="none", help="split defense configuration (see `attack --defenses`)")
            q.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
            q.add_argument("--fedavg", action="store_true", help="also train FedAvg on the same partition")
            q.set_defaults(func=_run)
        else:
            q.add_argument("--attacks", help="comma-separated: norm, direction, decoder, fsha (default: per dataset)")
            q.add_argument("--defenses", help="comma-separated split defenses (default: all)")
            q.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default %(default)s)")
            q.add_argument("--fedavg", action="store_true", help="also train FedAvg on the same partition")
            q.set_defaults(func=_attack)

    def _usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_usage)


def _base(args: argparse.Namespace, **more: Any) -> Any:
    import torch

    from protocols.split import SplitConfig

    torch.set_num_threads(1)  # small models: threads cost more than they give

    dataset = args.dataset or "breast-cancer"
    image = dataset != "breast-cancer"
    hidden = tuple(int(h) for h in _names(args.hidden)) if args.hidden else ((64,) if image else (32, 16))
    ushaped = more.get("mode") == "u-shaped"
    cut = args.cut if args.cut is not None else 2 * len(hidden) + (-1 if ushaped else 1)
    extra: dict[str, Any] = {"lr": 0.05, "momentum": 0.9} if image else {}
    if args.optimizer == "adam":
        extra.update(optimizer="adam", momentum=0.0)
    if args.lr is not None:
        extra["lr"] = args.lr
    return SplitConfig(dataset=dataset, hidden=hidden, cut=cut, epochs=args.epochs or 10, **extra, **more)


def _emit(report: Any, args: argparse.Namespace) -> None:
    if args.out:
        report.write(Path(args.out))
    if args.json:
        print(report.to_json())


def _run(args: argparse.Namespace) -> int:
    from attacks.split.study import SPLIT_DEFENSES
    from privagg.cli import command_line, utc_now
    from privagg.report.split import split_run_report
    from protocols.split import fedavg_baseline, run_split

    started = utc_now()
    cfg = _base(args, mode=args.mode, topology=args.topology, num_clients=args.clients, seed=args.seed)
    cfg = SPLIT_DEFENSES.get(args.defense, field="--defense").apply(cfg)
    result = run_split(cfg)
    fed = fedavg_baseline(cfg) if args.fedavg else None
    _emit(split_run_report(result, command=command_line(args), timestamp=started, fedavg_accuracy=fed), args)
    if not args.json:
        b = result.bytes
        line = f"test accuracy {result.accuracy:.4f}, {b.per_step:.0f} bytes/step over {b.steps} steps"
        print(line + (f"; FedAvg on the same partition {fed:.4f}" if fed is not None else ""))
    return 0


def _attack(args: argparse.Namespace) -> int:
    from attacks.split.study import SplitStudyConfig, run_split_study
    from privagg.cli import command_line, utc_now
    from privagg.cli._console import print_table
    from privagg.report.split import STUDY_HEADER, split_study_report, study_rows

    started = utc_now()
    base = _base(args)
    image = base.dataset != "breast-cancer"
    attacks = _names(args.attacks) if args.attacks else (("decoder",) if image else ("norm", "direction"))
    defaults = ("none", "nopeek") if image else ("none", "noise", "max-norm", "marvell", "nopeek", "u-shaped")
    defenses = _names(args.defenses) if args.defenses else defaults
    study = SplitStudyConfig(
        base=base, defenses=defenses, attacks=attacks, seeds=_seeds(args.seeds), fedavg=args.fedavg
    )
    result = run_split_study(study)
    report = split_study_report(result, command=command_line(args), timestamp=started)
    _emit(report, args)
    if not args.json:
        from rich.console import Console

        print_table(Console(), "split learning: leak against utility", STUDY_HEADER, study_rows(result))
        if result.fedavg_accuracy:
            print(f"FedAvg accuracy per seed {result.fedavg_accuracy}; split {result.accuracy.get('none')}")
    return 0
