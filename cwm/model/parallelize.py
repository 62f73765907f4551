"""Everything that changes how the model runs, not what it computes, applied in one place (as torchtitan does):
activation checkpointing, torch.compile, then FSDP2 over a 1-D device mesh (each decoder layer its own unit,
then the root, so a layer's parameters are gathered just before it runs and freed after), or over a (dp, cp)
mesh flattened, with context parallelism.
"""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def build_mesh(device_type: str, world: int, cp: int = 1) -> DeviceMesh:
    """The device mesh of a run: one data-parallel (FSDP) dimension over every rank, or with context parallelism
    (dp = world / cp, cp), the CP ranks of a DP group consecutive. Meshes are built here only."""
    from torch.distributed.device_mesh import init_device_mesh

    if cp > 1:
        return init_device_mesh(device_type, (world // cp, cp), mesh_dim_names=("dp", "cp"))
    return init_device_mesh(device_type, (world,), mesh_dim_names=("dp",))


def parallelize(model, mesh: DeviceMesh | None, *, bf16: bool, activation_checkpointing: bool,
                compile: bool) -> torch.nn.Module:
    """Apply AC, compile and FSDP2 to a Hugging Face causal LM (Cwm, Llama, Qwen2/3, ...) in place; works on a
    model built on the meta device (then `to_empty` and load, see cwm/model/pretrained.py).

    `mesh=None` (one plain process) skips FSDP; the caller then runs forward under `torch.autocast` for bf16.
    """
    if activation_checkpointing:
        # Recompute each decoder layer in backward: memory O(layers × hidden) instead of all activations.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = model.model.layers
    if compile:
        for layer in layers:
            layer.compile(fullgraph=False)
    if mesh is None:
        return model
    if mesh.ndim == 2 and mesh.mesh_dim_names == ("dp", "cp"):
        # Context parallelism (cwm/model/context_parallel.py): every CP rank holds the same parameters and computes
        # gradients of its share of the rows, so FSDP shards and reduces over dp x cp together (as torchtitan does).
        mesh = mesh._flatten("dp_cp")
    # Parameters stay fp32 (master weights for AdamW); compute in bf16, gradients reduced in fp32.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again at once by backward: keep them gathered.
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=i < len(layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model
