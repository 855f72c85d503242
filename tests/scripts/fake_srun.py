"""A stand-in for SLURM's `srun` on a machine without SLURM, installed as `srun` on PATH by tests.

With FAKE_SRUN_RECORD=path it only writes its arguments (JSON) there. Otherwise it does what srun
does for `--nodes=N --ntasks-per-node=1 CMD...`: runs N copies of CMD on this machine, copy i with
srun's per-task environment (SLURM_NODEID=i, SLURM_NNODES=N, SLURM_JOB_NODELIST, ...) and its output
in the --output file (%j job id, %n node, %t task, %x job name expanded). Per-node extra variables
come from FAKE_SRUN_NODE<i>_<NAME>=value (NAME=value for copy i only), since nodes of a real job
differ while these copies share a machine. Exits with the largest exit status of the copies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """srun options given as --name=value (the only form our scripts use), then the command."""
    options: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return options, argv[i:]
        name, _, value = arg.lstrip("-").partition("=")
        options[name] = value
    raise SystemExit("fake srun: no command given")


def main() -> int:
    if os.environ.get("FAKE_SRUN_RECORD"):
        with open(os.environ["FAKE_SRUN_RECORD"], "w") as f:
            json.dump(sys.argv[1:], f)
        return 0
    options, command = parse(sys.argv[1:])
    nnodes, job_id, name = int(options.get("nodes", "1")), "4242", options.get("job-name", "job")
    procs = []
    for node in range(nnodes):
        env = dict(os.environ, SLURM_NODEID=str(node), SLURM_PROCID=str(node), SLURM_NNODES=str(nnodes),
                   SLURM_JOB_NUM_NODES=str(nnodes), SLURM_JOB_NODELIST=f"fake[0-{nnodes - 1}]",
                   SLURM_JOB_ID=job_id, SLURM_JOB_NAME=name)
        prefix = f"FAKE_SRUN_NODE{node}_"
        env.update({k[len(prefix):]: v for k, v in os.environ.items() if k.startswith(prefix)})
        pattern = options.get("output")
        out = None
        if pattern:
            path = pattern.replace("%j", job_id).replace("%n", str(node)).replace("%t", str(node)).replace("%x", name)
            out = open(path, "w")  # noqa: SIM115 - closed when the copy ends
        procs.append((subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None), out))

    def forward(signum: int, _frame: object) -> None:  # srun passes SIGTERM/SIGINT on to its tasks
        for p, _ in procs:
            p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = 0
    for p, out in procs:
        rc = max(rc, p.wait())
        if out:
            out.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
