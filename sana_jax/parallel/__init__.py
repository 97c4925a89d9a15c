"""Sharded execution on a device mesh: mesh construction, logical-axis rules, sharded model entry points (``dit``),
Ulysses context-parallel softmax attention (``ulysses``)."""

from sana_jax.parallel.mesh import AXES, initialize_distributed, make_mesh, parse_mesh_spec
from sana_jax.parallel.rules import FSDP_RULES, INFERENCE_RULES, param_shardings, shard_state, spec_for

__all__ = ["AXES", "FSDP_RULES", "INFERENCE_RULES", "initialize_distributed", "make_mesh", "param_shardings",
           "parse_mesh_spec", "shard_state", "spec_for"]
