"""``trainer.keep_host_memory`` measured: CPU training steps with glibc keeping freed memory, and returning it.

    python -m scripts.bench.host_memory [--model airbench] [--batch 1000] [--steps 10] [--repeats 2] [--inference]

Each case runs in a process of its own (the allocator setting lasts a process's life), the two alternating
``--repeats`` times so that the machine's drift falls on both: ``--steps`` training steps (forward, backward,
nesterov SGD) of ``--model`` on random 3x32x32 batches, in the precision ``precision=auto`` picks, channels_last,
after 2 unmeasured ones; with ``--inference``, forward passes in eval mode without gradients instead (what
``cnnbench-eval`` and ``cnnbench-predict`` run, under the run's setting). Prints images/s, the process's kernel
(system) and user CPU time over the measured steps, its minor page faults and its resident size at the end.
Figures, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from scripts.runs import ROOT


def child(mode: str, model: str, batch: int, steps: int, inference: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from cnnbench.engine.host_memory import keep_freed_memory
    from cnnbench.engine.runtime import resolve_precision
    from cnnbench.models.registry import build_model

    if mode == "keep" and not keep_freed_memory():
        sys.exit("this C library has no mallopt: nothing to compare")
    precision = resolve_precision("auto", torch.device("cpu"))
    net = build_model(model, 10, 3, 32).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-4, momentum=0.85, nesterov=True,
                          foreach=True)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        if inference:
            with torch.no_grad(), precision.autocast():
                net(x)
            return
        with precision.autocast():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    net.train(not inference)
    for _ in range(2):
        step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * resource.getpagesize()
    return {"images_per_s": steps * batch / elapsed, "system_s": after.ru_stime - before.ru_stime,
            "user_s": after.ru_utime - before.ru_utime, "faults": after.ru_minflt - before.ru_minflt,
            "rss_gb": rss / 1e9}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        mode, model, batch, steps, inference = sys.argv[2:7]
        print(json.dumps(child(mode, model, int(batch), int(steps), inference == "1")))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="airbench")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--inference", action="store_true", help="forward passes in eval mode, no gradients")
    args = parser.parse_args()
    import torch

    from cnnbench.engine.hardware import machine_name
    from cnnbench.engine.runtime import resolve_precision

    cpu = torch.device("cpu")
    print(f"{machine_name(cpu)}, precision {resolve_precision('auto', cpu).name}; {args.model}, batch "
          f"{args.batch}, {args.steps} {'forward passes' if args.inference else 'steps'} per case")
    print("| glibc | images/s | kernel time | user time | page faults | resident |\n|---|---:|---:|---:|---:|---:|")
    for i in range(args.repeats):
        for mode in ("return", "keep") if i % 2 == 0 else ("keep", "return"):
            command = [sys.executable, "-m", "scripts.bench.host_memory", "--child", mode, args.model, str(args.batch),
                       str(args.steps), str(int(args.inference))]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
            r = json.loads(out.splitlines()[-1])
            label = "keeps freed memory" if mode == "keep" else "returns it (glibc's default)"
            print(f"| {label} | {r['images_per_s']:.0f} | {r['system_s']:.1f} s | {r['user_s']:.1f} s | "
                  f"{r['faults']:,} | {r['rss_gb']:.2f} GB |", flush=True)


if __name__ == "__main__":
    main()
