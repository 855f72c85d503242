"""Ray single controller: a resource pool and a group of worker actors the driver calls as one.

The driver writes `group.generate(batch)` as if the workers were local; the verb's dispatch
mode decides how arguments are spread and results gathered. A worker that raises surfaces
its traceback in the driver, and the rest of the group is killed, so a collective that
waits for the dead rank never hangs the run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from longrl.controller.dispatch import Dispatch, collect_from_ranks, dispatch_mode, split_for_ranks

logger = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A worker raised, died or hung; the message names its rank, node, process and verb, with the remote
    traceback when there is one."""


class ClusterResourceError(RuntimeError):
    """The Ray cluster lacks the slots the config asks for."""


def _where(_actor: Any) -> dict[str, Any]:
    """Run inside a worker (via __ray_call__): where it lives, for error messages that name it."""
    return {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid()}


def _free_port() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind(("", 0))
        return ray.util.get_node_ip_address(), s.getsockname()[1]


class ResourcePool:
    """`nnodes` bundles of `per_node` worker slots, one bundle per node (strictly spread)."""

    def __init__(self, nnodes: int, per_node: int, use_gpu: bool, cpus_per_worker: float = 1.0,
                 timeout_s: float = 60.0):
        self.nnodes, self.per_node, self.use_gpu = nnodes, per_node, use_gpu
        self.cpus_per_worker = cpus_per_worker
        bundle = {"CPU": per_node * cpus_per_worker, **({"GPU": per_node} if use_gpu else {})}
        strategy = "STRICT_SPREAD" if nnodes > 1 else "STRICT_PACK"
        shortfall = capacity_shortfall(ray.nodes(), nnodes, bundle)
        if shortfall:  # the slots do not exist: say so now instead of waiting out the placement timeout
            raise ClusterResourceError(shortfall)
        self.pg: PlacementGroup = placement_group([dict(bundle) for _ in range(nnodes)], strategy=strategy)
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            remove_placement_group(self.pg)
            raise ClusterResourceError(self._missing_message(bundle, strategy, timeout_s))

    def _missing_message(self, bundle: dict[str, float], strategy: str, timeout_s: float) -> str:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        have = [{k: v for k, v in n["Resources"].items() if k in bundle} for n in nodes]
        return (f"the Ray cluster cannot place {self.nnodes} node(s) x {bundle} ({strategy}) within {timeout_s:.0f} s: "
                f"it has {len(nodes)} alive node(s) with {have}. Lower trainer.nnodes / trainer.n_gpus_per_node, "
                f"or add nodes to the cluster")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.per_node

    def strategy(self, rank: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=rank // self.per_node)


def capacity_shortfall(nodes: list[dict[str, Any]], nnodes: int, bundle: dict[str, float]) -> str | None:
    """What is missing for `nnodes` distinct nodes to each hold `bundle`, or None when enough exist.

    `nodes` are `ray.nodes()` entries; a node counts when its *total* resources cover the bundle, so
    this tells at once that the cluster is too small (busy nodes are left to the placement timeout).
    """
    alive = [n for n in nodes if n.get("Alive")]
    fits = [n for n in alive if all(n["Resources"].get(k, 0.0) >= v for k, v in bundle.items())]
    if len(fits) >= nnodes:
        return None
    too_small = [f"{n.get('NodeManagerAddress', '?')} ({n.get('NodeID', '?')[:8]}) has "
                 f"{ {k: n['Resources'].get(k, 0.0) for k in bundle} }" for n in alive if n not in fits]
    small = f"; too small: {', '.join(too_small)}" if too_small else ""
    return (f"the Ray cluster is missing {nnodes - len(fits)} node(s) with {bundle} each: trainer.nnodes={nnodes} needs "
            f"{nnodes} distinct nodes of that size (one per node, trainer.n_gpus_per_node workers each), and the "
            f"cluster has {len(alive)} alive node(s), {len(fits)} of them large enough{small}. Lower trainer.nnodes or "
            f"trainer.n_gpus_per_node, or join more nodes (`ray start --address=<head>:<port>` on each)")


class WorkerGroup:
    """Ray actors of one worker class, one per slot of the pool, joined in one torch.distributed world."""

    def __init__(self, worker_cls: type, pool: ResourcePool, sp_size: int, env: dict[str, str],
                 args: tuple = (), call_timeout_s: float | None = None):
        self.worker_cls, self.pool, self.sp_size = worker_cls, pool, sp_size
        self.world_size = pool.world_size
        self.dp_size = self.world_size // sp_size
        self.call_timeout_s = call_timeout_s
        addr, port = ray.get(ray.remote(num_cpus=0)(_free_port).options(scheduling_strategy=pool.strategy(0)).remote())
        remote_cls = ray.remote(worker_cls)
        self.workers = []
        for rank in range(self.world_size):
            rank_env = {**env, "MASTER_ADDR": addr, "MASTER_PORT": str(port), "RANK": str(rank),
                        "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(rank % pool.per_node)}
            options = dict(num_cpus=pool.cpus_per_worker, num_gpus=1 if pool.use_gpu else 0,
                           scheduling_strategy=pool.strategy(rank), runtime_env={"env_vars": rank_env},
                           max_concurrency=1)
            self.workers.append(remote_cls.options(**options).remote(*args))
        # Starting worker processes may take longer than a verb is allowed to (imports, a busy node).
        self.placement: list[dict[str, Any]] = []  # node ip/id and pid per rank, once the workers answer
        self.placement = self._gather([w.__ray_call__.remote(_where) for w in self.workers],
                                                            "__init__", timeout_s=max(self.call_timeout_s or 0, 300))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        mode = dispatch_mode(self.worker_cls, name)
        if mode is None:
            raise AttributeError(f"{self.worker_cls.__name__}.{name} is not a worker verb (decorate it with @verb)")

        def call(*args: Any, **kwargs: Any) -> Any:
            if mode is Dispatch.ALL:
                return self._gather([getattr(w, name).remote(*args, **kwargs) for w in self.workers], name)
            parts, pad = split_for_ranks(args[0], self.dp_size, self.sp_size, tag=mode is Dispatch.SPLIT_SAMPLES)
            refs = [getattr(w, name).remote(part, *args[1:], **kwargs) for w, part in zip(self.workers, parts)]
            return collect_from_ranks(self._gather(refs, name), self.sp_size, pad, rows=len(args[0]) + pad)

        return call

    def _describe(self, rank: int) -> str:
        if rank >= len(self.placement):  # still starting: placement is not known yet
            return f"rank {rank}"
        where = self.placement[rank]
        return f"rank {rank} (node {where['node_ip']} {where['node_id'][:8]}, pid {where['pid']})"

    def _gather(self, refs: list[ray.ObjectRef], verb: str, timeout_s: float | None = None) -> list[Any]:
        """Results in rank order; on the first failure, kill the group and raise naming the rank, its node and
        the verb, with the worker's traceback. `timeout_s` defaults to the group's call timeout."""
        timeout_s = timeout_s or self.call_timeout_s
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        results: dict[int, Any] = {}
        pending = list(refs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=min(5.0, timeout_s or 5.0))
            for ref in ready:
                try:
                    results[rank_of[ref]] = ray.get(ref)
                except Exception:  # noqa: BLE001 - any remote failure ends the run
                    raise self._failure(refs, rank_of, verb) from None
            if pending and deadline is not None and time.monotonic() > deadline:
                self.shutdown()
                raise WorkerError(f"worker {', '.join(self._describe(rank_of[r]) for r in pending)} did not finish "
                                  f"{verb} within {timeout_s:.0f} s (trainer.worker_timeout_s); the group "
                                  f"was stopped (raise the timeout if the step is just slow)")
        return [results[rank] for rank in range(len(refs))]

    def _failure(self, refs: list[ray.ObjectRef], rank_of: dict, verb: str) -> WorkerError:
        """Stop the group and describe what failed. The peers of a dead rank fail soon after it in their
        collectives, so wait a moment and blame the rank that died rather than the first error to arrive."""
        ray.wait(refs, num_returns=len(refs), timeout=3.0)
        errors: dict[int, Exception] = {}
        for ref in refs:
            try:
                ray.get(ref, timeout=0)
            except GetTimeoutError:
                pass
            except Exception as e:  # noqa: BLE001
                errors[rank_of[ref]] = e
        self.shutdown()
        died = [r for r, e in errors.items() if isinstance(e, RayActorError)]
        rank = min(died) if died else min(errors)
        what = "died (its process exited)" if died else "failed"
        others = sorted(set(errors) - {rank})
        also = f" (ranks {others} failed after it)" if others else ""
        return WorkerError(f"worker {self._describe(rank)} {what} while running {verb}{also}:\n{errors[rank]}")

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []


def init_cluster(address: str | None, device: str, world: int) -> bool:
    """Attach to (or start) the Ray cluster; whether the workers get GPUs (trainer.device, decided from the
    cluster's resources, not from the driver's own GPUs)."""
    from longrl.parallel.device import resolve_device

    # a local cluster gets at least a slot per worker plus the reward tasks, even on a 2-core machine
    init_ray(address, num_cpus=max(os.cpu_count() or 1, world + 2))
    return resolve_device(device, ray.cluster_resources().get("GPU", 0.0)) == "cuda"


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Attach to `address` (or RAY_ADDRESS), else start a local cluster with `num_cpus` logical CPUs."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_", "TOKENIZERS_"))}
    runtime_env = {"env_vars": env_vars}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=True)
