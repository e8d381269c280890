"""How far one run's whole config travels: the calls under ``peftlab.training.run.train`` that receive the
RunConfig itself (an argument that is it), counted per function, for issue 51's "one entrance per domain".

    python scripts/config_walk.py configs/downstream.yaml model.pretrained=none model.depth=2 \
        train.max_steps=4 train.reproducible=false

A short real run in a temporary directory (train.reproducible=false: the arithmetic pin needs the
peftlab command). Prints the total, the functions and the modules, then one line per function.
"""

from __future__ import annotations

import collections
import sys
import tempfile

from peftlab.config.schema import RunConfig, load_config


def walk(config: str, overrides: list[str]) -> collections.Counter:
    from peftlab.training.run import train

    cfg = load_config(config, overrides)
    functions: collections.Counter = collections.Counter()

    def profile(frame, event, arg):
        code = frame.f_code
        if event != "call" or "peftlab" not in code.co_filename:
            return
        arguments = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        if any(isinstance(frame.f_locals.get(name), RunConfig) for name in arguments):
            functions[f"{code.co_filename.split('src/peftlab/')[-1]}:{code.co_name}"] += 1

    with tempfile.TemporaryDirectory() as out:
        sys.setprofile(profile)
        try:
            train(cfg, run_dir=out, progress=False)
        finally:
            sys.setprofile(None)
    return functions


def main(argv: list[str]) -> None:
    functions = walk(argv[0], argv[1:])
    modules = {name.split(":")[0] for name in functions}
    total = sum(functions.values())
    print(f"calls that receive the whole config: {total}, in {len(functions)} functions of {len(modules)} modules")
    for name, count in sorted(functions.items()):
        print(f"  {count:3d}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
